"""Steering methods. Each module has `fit(model, pairs, spec, sae=None) -> SteeringVector`, its spec class
as `Spec` and `NEEDS_SAE`."""

from __future__ import annotations

from types import ModuleType

from yapo_bench.methods import bipo, caa, sas, yapo

METHODS: dict[str, ModuleType] = {"caa": caa, "sas": sas, "bipo": bipo, "yapo": yapo}


def get_method(name: str) -> ModuleType:
    if name not in METHODS:
        raise ValueError(f"method: {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]
