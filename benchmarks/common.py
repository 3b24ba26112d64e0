"""Shared helpers for the benchmarks: the default model and SAE, benchmark data, timed training runs and
the report writer. Figures are ratios measured within one run on one machine (never asserted in tests)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from yapo_bench.atomic import atomic_file
from yapo_bench.data import load_pairs
from yapo_bench.methods.preference import PreferenceSpec, train_preference_vector
from yapo_bench.models import DEFAULT_MODEL, PRESETS, get_preset, load_model
from yapo_bench.pairs import PairSet
from yapo_bench.sae import load_sae

REPORT_DIR = Path(__file__).resolve().parents[1] / "reports" / "bench"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--model (a preset, or any model source with --sae and --layer), --device, --dtype and --report-dir: the GPU
    check runs each benchmark on both presets (or the paper's model, GPU_CHECK_HUB) on CUDA into reports/bench/gpu/."""
    from yapo_bench.devices import add_placement_arguments

    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="preset, GGUF file, local dir or hub id (default: %(default)s)")
    parser.add_argument("--sae", default=None, help="SAE: shipped name, local dir or <release>/<sae_id> (default: the "
                        "preset's; required for other models)")
    parser.add_argument("--layer", type=int, default=None, help="layer steered (default: the preset's; required for "
                        "other models)")
    add_placement_arguments(parser)
    parser.add_argument("--report-dir", type=Path, default=REPORT_DIR, help="where the JSON goes (default: %(default)s)")


def default_model_and_sae(args: argparse.Namespace | None = None) -> tuple[Any, torch.nn.Module, int]:
    """The model (--model) where --device/--dtype say, its SAE (--sae, else the preset's) on the same device, and
    the layer (--layer, else the preset's)."""
    from yapo_bench.devices import placement_of, resolve_placement

    name = args.model if args is not None else DEFAULT_MODEL
    sae = getattr(args, "sae", None) or name
    layer = getattr(args, "layer", None)
    if name not in PRESETS and (sae == name or layer is None):
        raise SystemExit(f"--model {name!r} is not a preset: give --sae and --layer too")
    placement = placement_of(args) if args is not None else resolve_placement("cpu", "float32")
    loaded = load_model(name, dtype=placement.torch_dtype, device=placement.device)
    layer = get_preset(name).default_layer if layer is None else layer
    return loaded, load_sae(sae, device=placement.device), layer


def synchronize(device: Any) -> None:
    """Wait for queued GPU work, so that a wall-clock time measures it (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


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


def write_report(name: str, result: dict[str, Any], args: argparse.Namespace | None = None) -> Path:
    """reports/bench/<name>.json (or --report-dir; named after the model when it is not the default one)."""
    directory = args.report_dir if args is not None else REPORT_DIR
    model = args.model if args is not None else DEFAULT_MODEL
    directory.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", model).strip("-")  # a hub id's "/" must not make a folder
    path = directory / (f"{name}.json" if model == DEFAULT_MODEL else f"{name}-{slug}.json")
    placement = {"model": model, "device": getattr(args, "device", "cpu"), "dtype": getattr(args, "dtype", "float32")}
    placement.update({key: getattr(args, key) for key in ("sae", "layer") if getattr(args, key, None) is not None})
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({**result, **placement, "machine": machine(), "date": time.strftime("%Y-%m-%d")},
                                  indent=2) + "\n")
    print(f"wrote {path}")
    return path
