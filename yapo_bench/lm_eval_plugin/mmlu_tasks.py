"""`mmlu_local_<subject>` from MMLU's original CSV layout (data/test/<subject>_test.csv and
data/dev/<subject>_dev.csv: question, A, B, C, D, answer letter; no header), for offline use: 0-shot by
default, 5-shot with `--num_fewshot 5` (examples from dev). Three scorings: the standard letter format in
the original order (`mmlu_local_*`, comparable with lm-eval's `mmlu` and the paper), letters averaged over
option rotations (`mmlu_rotated_*`) and cloze (`mmlu_cloze_*`). The folder is `--metadata
'{"mmlu_dir": ...}'`, $YAPO_BENCH_MMLU, or <data dir>/mmlu/data. The hub `mmlu` stays lm-eval's own task.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from yapo_bench.data import spec as data_spec
from yapo_bench.lm_eval_plugin.mcq import group_yaml, mcq_docs, task_yaml, template_yaml

MMLU_ENV = "YAPO_BENCH_MMLU"
SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics high_school_mathematics "
    "high_school_microeconomics high_school_physics high_school_psychology high_school_statistics "
    "high_school_us_history high_school_world_history human_aging human_sexuality international_law "
    "jurisprudence logical_fallacies machine_learning management marketing medical_genetics miscellaneous "
    "moral_disputes moral_scenarios nutrition philosophy prehistory professional_accounting professional_law "
    "professional_medicine professional_psychology public_relations security_studies sociology "
    "us_foreign_policy virology world_religions"
).split()
FAMILIES = {"mmlu_local": "letter-original", "mmlu_rotated": "letter", "mmlu_cloze": "cloze"}
TEMPLATE = "_mmlu_template.yaml"


def _mmlu_root(explicit: str | None = None) -> Path:
    if explicit or os.environ.get(MMLU_ENV):
        return Path(explicit or os.environ[MMLU_ENV])
    return data_spec.data_dir() / "mmlu" / "data"


def _docs(path: Path, subject: str, scoring: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ValueError(f"mmlu_dir: {path} is missing; expected MMLU's original layout <dir>/test/<subject>_test.csv")
    docs = []
    with open(path, encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle), 1):
            if len(row) != 6 or row[5].strip() not in ("A", "B", "C", "D"):
                raise ValueError(f"{path} row {number}: expected 6 columns (question, A, B, C, D, answer letter)")
            question = f"The following is a question about {subject.replace('_', ' ')}.\n\n{row[0].strip()}"
            docs.extend(mcq_docs(question, [c.strip() for c in row[1:5]], "ABCD".index(row[5].strip()), scoring,
                                 {"subject": subject, "row": number}))
    return docs


def load_mmlu(subject: str, scoring: str = "letter-original", mmlu_dir: str | None = None,
              **_lm_eval_metadata: Any) -> dict[str, Any]:
    import datasets

    root = _mmlu_root(mmlu_dir)
    return {split: datasets.Dataset.from_list(_docs(root / split / f"{subject}_{split}.csv", subject, scoring))
            for split in ("test", "dev")}


def task_yamls() -> dict[str, str]:
    files = {TEMPLATE: template_yaml("yapo_bench.lm_eval_plugin.mmlu_tasks.load_mmlu", fewshot_split="dev")}
    for family, scoring in FAMILIES.items():
        members = [f"{family}_{subject}" for subject in SUBJECTS]
        for subject, name in zip(SUBJECTS, members):
            files[f"{name}.yaml"] = task_yaml(name, TEMPLATE, {"subject": subject, "scoring": scoring})
        files[f"{family}.group.yaml"] = group_yaml(family, members)
    return files
