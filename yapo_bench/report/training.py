"""Training logs of the learned vectors behind a report's runs (train_log.jsonl beside each vector), and the
convergence measures the scorecard and the training-curve plot read from them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yapo_bench.report.runs import EvalRun, vector_dir

_COUNTRY = re.compile(r"\bcountry=([\w-]+)")


@dataclass(frozen=True)
class TrainingLog:
    """One vector's training losses, step by step, with the data its pairs came from and its training config."""

    method: str
    data: str  # the pairs' provenance: two vectors trained on the same data share it
    path: Path
    steps: tuple[int, ...]
    losses: tuple[float, ...]
    config: dict[str, Any]

    @property
    def seed(self) -> int | None:
        """The training seed its config records (None: none recorded)."""
        return self.config.get("seed")

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.losses) or not self.steps:
            raise ValueError(f"losses: {self.path} has {len(self.steps)} steps and {len(self.losses)} losses; "
                             "expected as many, at least one")

    @property
    def short_data(self) -> str:
        """The country the pairs came from when the data names one, else the data itself."""
        match = _COUNTRY.search(self.data)
        return match[1] if match else self.data


def training_logs(runs: list[EvalRun]) -> list[TrainingLog]:
    """Every distinct learned vector of `runs` whose train_log.jsonl is still on disk, in path order."""
    logs: dict[Path, TrainingLog] = {}
    for run in runs:
        directory = vector_dir(run)
        if directory is None or directory in logs or not (directory / "train_log.jsonl").is_file():
            continue
        lines = (directory / "train_log.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        points = sorted((int(r["step"]), float(r["loss"])) for r in records
                        if "loss" in r and "step" in r and r.get("kind", "train") == "train")
        if not points:
            continue
        metadata = json.loads((directory / "vector.json").read_text()) if (directory / "vector.json").is_file() else {}
        steps, losses = zip(*points)
        logs[directory] = TrainingLog(method=(run.vector or {}).get("method") or run.method,
                                      data=str((run.vector or {}).get("data") or "?"), path=directory,
                                      steps=steps, losses=losses, config=metadata.get("config") or {})
    return [logs[path] for path in sorted(logs)]


def moving_average(values: list[float] | tuple[float, ...], window: int) -> np.ndarray:
    """Trailing mean over the last `window` values (fewer at the start)."""
    if window < 1:
        raise ValueError(f"window: {window!r}; expected a positive integer")
    sums = np.cumsum(np.insert(np.asarray(values, dtype=float), 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def steps_to_threshold(losses: list[float] | tuple[float, ...], threshold: float, window: int) -> int | None:
    """The first step (1-based) at which the `window`-step trailing mean of the loss is below `threshold`, counting
    only steps with a full window behind them; None when it never is."""
    smoothed = moving_average(losses, window)
    return next((i + 1 for i, value in enumerate(smoothed) if i + 1 >= window and value < threshold), None)


def mean_loss(losses: list[float] | tuple[float, ...], steps: int) -> float:
    """Area under the loss curve over the first `steps` steps, per step (a mean, comparable across lengths)."""
    return float(np.mean(losses[:steps]))
