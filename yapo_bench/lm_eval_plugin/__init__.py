"""lm-eval integration: the `yapo_steered` model (and, later, our task suite).

lm-eval 0.4.13 reads no plugin entry points, and `get_model()` imports its built-in models only while its
registry is empty, so `register()` imports them first (or `--model hf` would vanish) and then adds ours as
a lazy "module:Class" placeholder. pyproject also declares the `lm_eval.models` entry point for releases
that read it.
"""

from __future__ import annotations

MODEL_NAME = "yapo_steered"
MODEL_TARGET = "yapo_bench.lm_eval_plugin.model:YapoSteeredLM"


def register() -> None:
    """Make `yapo_steered` known to lm-eval's registry (idempotent)."""
    import lm_eval.models  # noqa: F401 - the built-ins must be registered before ours
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry.keys():
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)
