"""The report's figures as PNG bytes (matplotlib, no display): training curves, multiplier sweeps and
per-country bars."""

from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt
import pandas as pd

from yapo_bench.report.published_side import display_country
from yapo_bench.report.runs import EvalRun, method_rank


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def training_curves(runs: list[EvalRun]) -> bytes | None:
    """Training loss vs step for every learned vector whose training log is still on disk."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for run in runs:
        log = Path((run.vector or {}).get("path") or "") / "train_log.jsonl"
        method = (run.vector or {}).get("method") or run.method
        if method in curves or not log.is_file():
            continue
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        points = [(r["step"], r["loss"]) for r in records if "loss" in r and "step" in r and r.get("kind", "train") == "train"]
        if points:
            curves[method] = points
    if not curves:
        return None
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    for method in sorted(curves, key=method_rank):
        steps, losses = zip(*curves[method])
        axis.plot(steps, losses, label=method)
    axis.set(xlabel="step", ylabel="preference loss", title="Training curves")
    axis.axhline(0.6931, color="grey", linestyle=":", linewidth=1)
    axis.legend()
    return _png(figure)


def multiplier_sweep(cells: pd.DataFrame, title: str) -> bytes | None:
    """Mean score over the table's cells vs λ, one line per method (λ = 0 is the base run)."""
    if cells.empty:
        return None
    means = cells.groupby(["method", "multiplier"], as_index=False)["value"].mean()
    swept = [m for m, group in means.groupby("method") if m != "base" and group["multiplier"].nunique() > 1]
    if not swept:
        return None
    base = means[means["method"] == "base"]["value"]
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    for method in sorted(swept, key=method_rank):
        group = means[means["method"] == method].sort_values("multiplier")
        axis.plot(group["multiplier"], group["value"], marker="o", label=method)
    if not base.empty:
        axis.axhline(float(base.iloc[0]), color="black", linestyle="--", linewidth=1, label="base")
    axis.set(xlabel="multiplier λ", ylabel=str(cells["metric"].iloc[0]), title=title)
    axis.legend()
    return _png(figure)


def per_country_bars(cells: pd.DataFrame, title: str) -> bytes | None:
    """One bar per country and run (the `both` setting when present, else localized)."""
    if cells.empty:
        return None
    setting = "both" if (cells["localization"] == "both").any() else "localized"
    chosen = cells[cells["localization"] == setting]
    table = chosen.pivot_table(index="country", columns="label", values="value", aggfunc="mean")
    table = table[sorted(table.columns, key=method_rank)]
    table.index = [display_country(c) for c in table.index]
    figure, axis = plt.subplots(figsize=(max(6.4, 0.9 * len(table)), 3.6))
    table.plot.bar(ax=axis, rot=0)
    axis.set(xlabel="", ylabel=f"{cells['metric'].iloc[0]} ({setting})", title=title)
    # beside the axes, in as many columns as it takes: a sweep has dozens of runs
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, ncol=1 + (len(table.columns) - 1) // 14)
    return _png(figure)
