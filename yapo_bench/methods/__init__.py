"""Steering methods. Each module has `fit(model, pairs, spec, sae=None) -> SteeringVector`."""

from __future__ import annotations

from yapo_bench.methods import caa, sas

METHODS = {"caa": caa, "sas": sas}
