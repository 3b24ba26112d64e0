"""Shared helpers for the benchmarks: the default model and SAE, benchmark data, timed training runs and
the report writer. Figures are ratios measured within one run on one machine (never asserted in tests)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from yapo_bench.atomic import atomic_file
from yapo_bench.data import load_pairs
from yapo_bench.methods.preference import PreferenceSpec, train_preference_vector
from yapo_bench.models import DEFAULT_MODEL, get_preset, load_model
from yapo_bench.pairs import PairSet
from yapo_bench.sae import load_sae

REPORT_DIR = Path(__file__).resolve().parents[1] / "reports" / "bench"


def default_model_and_sae() -> tuple[Any, torch.nn.Module, int]:
    return load_model(DEFAULT_MODEL), load_sae(DEFAULT_MODEL), get_preset(DEFAULT_MODEL).default_layer


def pairs_or_demo(spec: str, limit: int) -> PairSet:
    """The named pair set from the data dir, else the shipped demo pairs (so the benchmark always runs)."""
    try:
        pairs = load_pairs(spec)
    except ValueError as err:
        print(f"{spec}: {err}; using demo:cheerful instead")
        pairs = load_pairs("demo:cheerful")
    return PairSet(pairs[:limit], f"{pairs.source}[:{limit}]", pairs.chosen)


def timed_run(loaded: Any, sae: torch.nn.Module | None, pairs: PairSet, method: str, spec: PreferenceSpec,
              warmup: int) -> dict[str, Any]:
    """Train with the real loop and read per-step times from its log; the median excludes `warmup` steps."""
    with tempfile.TemporaryDirectory() as tmp:
        spec.run_dir = tmp
        started = time.perf_counter()
        vector = train_preference_vector(loaded, pairs, spec, sae=sae, method=method)
        total = time.perf_counter() - started
        records = [json.loads(line) for line in (Path(tmp) / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    seconds = [r["seconds"] for r in steps]
    return {
        "median_step_seconds": statistics.median(seconds[warmup:]),
        "setup_seconds": round(total - sum(seconds), 2),  # encoding + (cached path) the one-off caches
        "losses": [r["loss"] for r in steps],
        "vector_norm": vector.norm,
        "vector_l0": vector.l0,
    }


def machine() -> dict[str, Any]:
    from yapo_bench.environment import versions

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "versions": versions(),
            "python": platform.python_version(), "platform": platform.platform()}


def write_report(name: str, result: dict[str, Any]) -> Path:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    path = REPORT_DIR / f"{name}.json"
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({**result, "machine": machine(), "date": time.strftime("%Y-%m-%d")}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
