"""Task families: one typed task id (family, unit, variant) named and parsed in `base`, and the registry the run,
the report, the judge and the cost plan loop over. Each family declares, in its module, how lm-eval gets its tasks,
its per-item measure (a logged sample field, or the judge's verdict with a rubric) and its cost per item. Adding a
family is one module plus one line in REGISTRY (or `register(family)` at run time)."""

from __future__ import annotations

from yapo_bench.families import behaviours, culture, mmlu
from yapo_bench.families.base import (
    JUDGE_SCORE,
    CultureSizes,
    Family,
    TaskId,
    TaskSettings,
    TaskWork,
    WorkSizes,
    family_of,
    get_family,
    register,
    registered,
    unregister,
)

REGISTRY = (*culture.FAMILIES, *behaviours.FAMILIES, *mmlu.FAMILIES)  # in the order tables show them
for _family in REGISTRY:
    register(_family)

# the generated lm-eval YAML of each tasks/ folder, by the module that declares its families
TASK_FOLDERS = {"culture": culture.task_yamls, "bipo": behaviours.task_yamls, "mmlu": mmlu.task_yamls}

__all__ = ["JUDGE_SCORE", "REGISTRY", "TASK_FOLDERS", "CultureSizes", "Family", "TaskId", "TaskSettings", "TaskWork",
           "WorkSizes", "family_of", "get_family", "register", "registered", "unregister"]
