"""Steering methods: one module per method and the registry below, which the CLI, the run, the vector store and the
report all read. A method module declares

  NAME      its name in configs, the CLI and reports
  SPARSE    True when its vector lives in an SAE's latent space (it needs an SAE), False for the residual stream
  LEARNED   True when it is trained by the preference loop (resumable from a run directory), False for a mean
            difference
  Spec      the dataclass of its settings (validated in __post_init__; `layer` is one of them)
  spec(layer, budget) -> Spec          its settings for a run config's / yapo_steered's training budget
  fit(model, pairs, spec, sae=None) -> SteeringVector

Adding a method is a new module and one line in REGISTRY.

A run also compares methods without a vector of their own: `base` (the unsteered model) and `prompt` (the target
stated in the input, `methods.prompt`), and `prompt+<method>` (both at once): `run_method` parses these names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from yapo_bench.methods import bipo, caa, prompt, sas, yapo
from yapo_bench.methods.budget import TrainingBudget

REGISTRY: list[ModuleType] = [caa, sas, bipo, yapo]  # in the order tables and plots show them
_DECLARED = ("NAME", "SPARSE", "LEARNED", "Spec", "spec", "fit")


def register(module: ModuleType) -> None:
    """Add a method module (checked for the declarations above); its NAME must be new."""
    missing = [name for name in _DECLARED if not hasattr(module, name)]
    if missing:
        raise ValueError(f"method module {module.__name__}: declares no {', '.join(missing)}")
    if module.NAME in method_names():
        raise ValueError(f"method {module.NAME!r}: already registered")
    REGISTRY.append(module)


def method_names() -> tuple[str, ...]:
    return tuple(module.NAME for module in REGISTRY)


def run_method_names() -> tuple[str, ...]:
    """Every name a run's `methods` may hold, in the order tables show them."""
    return ("base", prompt.NAME, *method_names(), *(prompt.COMBINED + name for name in method_names()))


def run_method(name: str) -> tuple[bool, ModuleType | None]:
    """(prompted, the vector method's module or None) of a run's method name; an unknown one is refused naming
    the expected."""
    prompted, vector = prompt.split_method(str(name))
    if name not in run_method_names():
        raise ValueError(f"methods: {name!r}; expected some of {', '.join(run_method_names())}")
    return prompted, get_method(vector) if vector else None


def vector_method(name: str) -> ModuleType | None:
    """The registered method whose vectors a run's method steers with (prompt+bipo: bipo), None for the base, the
    prompt alone, or a name no method registers (a report's `vector`, read from an unnamed vector file)."""
    vector = prompt.split_method(str(name))[1]
    return get_method(vector) if vector in method_names() else None


def sparse_method(name: str) -> bool:
    """Whether a run's method steers with a vector in an SAE's latent space (and so needs an SAE)."""
    vector = run_method(name)[1]
    return vector is not None and vector.SPARSE


def get_method(name: str) -> ModuleType:
    for module in REGISTRY:
        if module.NAME == name:
            return module
    raise ValueError(f"method: {name!r}; expected one of {', '.join(method_names())}")


def build_spec(name: str, layer: int, options: dict[str, Any], prefix: str = "") -> Any:
    """Method `name`'s Spec at `layer` with `options` (its other settings); an option the method does not take is
    refused in one line (`prefix` + option name, e.g. `--steps`), never silently dropped."""
    spec_class = get_method(name).Spec
    known = {f.name for f in dataclasses.fields(spec_class) if f.init} - {"layer"}
    unknown = sorted(set(options) - known)
    if unknown:
        option = prefix + unknown[0].replace("_", "-" if prefix.startswith("--") else "_")
        raise ValueError(f"{option}: not a setting of method {name} (it takes {', '.join(sorted(known))})")
    return spec_class(layer=layer, **options)


def spec_config(spec: Any) -> dict[str, Any]:
    """What a spec determines: recorded with its vector, and the vector store's key."""
    return spec.config() if hasattr(spec, "config") else dataclasses.asdict(spec)


def fit_and_save(name: str, loaded: Any, pairs: Sequence, spec: Any, sae: nn.Module | None, out: str | Path, *,
                 resume: bool = False, writer: bool = True) -> Any:
    """The one route from pairs to a saved vector (`yapo-bench train`, the run's and yapo_steered's vector store):
    fits and saves the vector into `out`, whose writer lock the caller holds (`locking.exclusive`). A learned method
    logs and checkpoints into `out` and, with `resume`, continues from its checkpoint. `writer`: False on
    data-parallel ranks other than 0, which compute but write nothing (the preference loop knows its rank)."""
    method = get_method(name)
    if method.LEARNED:
        spec = dataclasses.replace(spec, run_dir=str(out), resume=resume)
    vector = method.fit(loaded, pairs, spec, sae=sae)
    if writer and not method.LEARNED:  # the preference loop saves its vector beside its log
        vector.save(out)
    return vector


__all__ = ["REGISTRY", "TrainingBudget", "build_spec", "fit_and_save", "get_method", "method_names", "register",
           "run_method", "run_method_names", "sparse_method", "spec_config", "vector_method"]
