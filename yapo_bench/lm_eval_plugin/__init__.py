"""lm-eval integration: the `yapo_steered` model and our task suite (tasks/).

lm-eval 0.4.13 reads no plugin entry points, and `get_model()` imports its built-in models only while its
registry is empty, so `register()` imports them first (or `--model hf` would vanish) and then adds ours as
a lazy "module:Class" placeholder. pyproject also declares the `lm_eval.models` entry point for releases
that read it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

MODEL_NAME = "yapo_steered"
MODEL_TARGET = "yapo_bench.lm_eval_plugin.model:YapoSteeredLM"
# the same steering inside vLLM (its own venv: make vllm-setup); a lazy target, so vLLM is imported only when used
VLLM_MODEL_NAME = "yapo_steered_vllm"
VLLM_MODEL_TARGET = "yapo_bench.lm_eval_plugin.vllm_model:YapoSteeredVLLM"


def tasks_dir() -> Path:
    """Our task YAMLs (top-level tasks/ in a checkout, packaged resources when installed)."""
    from yapo_bench.resources import resource_dir

    return resource_dir("tasks")


def register() -> None:
    """Make `yapo_steered`, `yapo_steered_vllm` and our tasks known to lm-eval (idempotent): the models in its
    registry, the tasks by adding our tasks directory to every TaskManager's include path."""
    import lm_eval.models  # noqa: F401 - the built-ins must be registered before ours
    from lm_eval.api.registry import model_registry
    from lm_eval.tasks import TaskManager

    if MODEL_NAME not in model_registry.keys():
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)
    if VLLM_MODEL_NAME not in model_registry.keys():
        model_registry.register(VLLM_MODEL_NAME, target=VLLM_MODEL_TARGET)
    _cache_per_steering_config()
    _environment_read_once()
    if getattr(TaskManager.__init__, "_yapo_bench", False):
        return
    original = TaskManager.__init__

    def init_with_our_tasks(self: TaskManager, *args: object, include_path: object = None, **kwargs: object) -> None:
        paths = [] if include_path is None else list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
        original(self, *args, include_path=[*paths, str(tasks_dir())], **kwargs)

    init_with_our_tasks._yapo_bench = True
    TaskManager.__init__ = init_with_our_tasks


def task_manager(metadata: dict[str, Any] | None = None, builtin: bool = True) -> Any:
    """lm-eval's TaskManager with our tasks and `metadata` (passed to every task's loader), built once per process
    for each metadata: indexing lm-eval's own few thousand task YAMLs takes seconds, and a run evaluates many times.
    `builtin`: False indexes ours alone (a fraction of a second), for evaluations that need none of lm-eval's."""
    register()
    return _task_manager(json.dumps(metadata or {}, sort_keys=True), builtin)


@functools.lru_cache(maxsize=8)
def _task_manager(metadata: str, builtin: bool) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(metadata=json.loads(metadata) or None, include_defaults=builtin)


def _environment_read_once() -> None:
    """lm-eval records torch's environment report in every results file, and torch makes it by running pip and
    other programs, about a second each time: a run of many evaluations reads it once (it does not change within a
    process)."""
    from torch.utils import collect_env

    if not hasattr(collect_env.get_pretty_env_info, "cache_info"):
        collect_env.get_pretty_env_info = functools.cache(collect_env.get_pretty_env_info)


def _cache_per_steering_config() -> None:
    """lm-eval's request cache (`--use_cache`) keys requests only, never the model: give every steering
    config its own cache file, so a steered run never reads the base model's answers."""
    from lm_eval.api.model import CachingLM

    if getattr(CachingLM.__init__, "_yapo_bench", False):
        return
    original = CachingLM.__init__

    def init_per_config(self: CachingLM, lm: object, cache_db: str) -> None:
        digest = getattr(lm, "steering_digest", None)
        if digest:
            stem, dot, suffix = cache_db.rpartition(".")
            cache_db = f"{stem}_steer-{digest}.{suffix}" if dot else f"{cache_db}_steer-{digest}"
        original(self, lm, cache_db)

    init_per_config._yapo_bench = True
    CachingLM.__init__ = init_per_config


def save_results(results: dict, output_path: str | Path) -> None:
    """Write `simple_evaluate(..., log_samples=True)` output exactly as `lm_eval --output_path --log_samples`
    does (results_<time>.json and samples_<task>_<time>.jsonl), through lm-eval's own tracker."""
    from lm_eval.loggers import EvaluationTracker

    samples = results.pop("samples")
    tracker = EvaluationTracker(output_path=str(output_path))
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
