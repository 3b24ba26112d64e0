"""P9: one config carried out by the local executor and by the Ray executor with 2 workers, on this machine.

The config is a small study on the default model (two contexts, base, CAA and BiPO, culture MCQ): 4 trainings,
5 evaluations and the report. Each condition runs `yapo-bench run` as a user would, in a fresh out directory, and is
timed from the command's start to its end (Ray's start, the workers' imports and model loads included):
- `local_1_thread`: the local executor with OMP_NUM_THREADS=1, the serial baseline for workers of one thread each;
- `ray_2_workers`: `--executor ray --workers 2 --threads 1`.
Recorded beside the measured ratio: the ratio the cost plan predicts for 2 workers (its per-step estimates), and the
one its schedule gives with the step times the local run measured. The two reports are checked to be equal.
Run: python benchmarks/p9_cluster_executor.py"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import write_report

from yapo_bench.pipeline import RunConfig, make_plan
from yapo_bench.pipeline.costs import Estimate, parallel_seconds, plan_costs
from yapo_bench.pipeline.records import StepRecords

CONFIG = {"name": "p9", "model": "smollm2-135m", "countries": ["egypt", "morocco"],
          "methods": ["base", "caa", "bipo"], "training": {"steps": 6, "lr": 0.005, "batch_size": 4},
          "families": ["mcq"], "limit": 4, "chat_template": True}
CONDITIONS = {"local_1_thread": ([], "1"),
              "ray_2_workers": (["--executor", "ray", "--workers", "2", "--threads", "1"], "1")}


def timed_run(config: Path, out: Path, flags: list[str], threads: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "yapo_bench.cli", "run", str(config), "--out", str(out), "--no-progress",
                    *flags], check=True, env={**os.environ, "OMP_NUM_THREADS": threads}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def numbers(out: Path) -> dict:
    text = re.sub(r"results_[0-9T:.\-]+\.json", "", (out / "report.json").read_text().replace(str(out), "<out>"))
    report = json.loads(text)
    return {"tables": report["tables"], "scorecard": report["scorecard"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config_path = root / "p9.yaml"
        config_path.write_text(yaml.safe_dump({**CONFIG, "out": str(root / "unused")}))
        seconds = {name: timed_run(config_path, root / name, flags, threads)
                   for name, (flags, threads) in CONDITIONS.items()}
        for name, value in seconds.items():
            print(f"{name}: {value:.1f} s", flush=True)
        equal = numbers(root / "local_1_thread") == numbers(root / "ray_2_workers")
        plan = make_plan(RunConfig(**{**CONFIG, "out": str(root / "local_1_thread")}))
        estimates = plan_costs(plan, None, 0)[0]["cpu"]
        not_done = [False] * len(estimates)
        predicted = sum(e.seconds for e in estimates) / parallel_seconds(plan, estimates, not_done, 2)[0]
        records = StepRecords(root / "local_1_thread")
        measured = [Estimate(records.latest(step.key)["seconds"], 0.0) for step in plan]  # the fresh run's own
        step_total = sum(e.seconds for e in measured)
        wall_2, path = parallel_seconds(plan, measured, not_done, 2)
    result = {
        "what": "yapo-bench run of one config: local executor vs the Ray executor with 2 workers of 1 thread each "
                "(2 CPU cores; command wall time, Ray start, imports and model loads included)",
        "config": CONFIG,
        "steps": len(plan.steps),
        "seconds": {name: round(value, 1) for name, value in seconds.items()},
        "ratio_ray_vs_local_1_thread": round(seconds["local_1_thread"] / seconds["ray_2_workers"], 2),
        "predicted_ratio_cost_plan": round(predicted, 2),
        "predicted_ratio_measured_steps": round(step_total / wall_2, 2),
        "measured_steps_seconds": round(step_total, 1),
        "measured_steps_critical_path_seconds": round(path, 1),
        "reports_equal": equal,
    }
    print(json.dumps(result, indent=1))
    write_report("p9_cluster_executor", result)
    if not equal:
        raise SystemExit("the two executors' reports differ")


if __name__ == "__main__":
    main()
