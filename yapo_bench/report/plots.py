"""The report's figures as PNG bytes (matplotlib, no display): the scorecard's forest plot, training curves,
multiplier sweeps and per-country bars."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt
import pandas as pd

from yapo_bench.report.published_side import display_country
from yapo_bench.report.runs import method_order, method_rank
from yapo_bench.report.training import TrainingLog


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def _method_colour(method: str) -> str:
    order = method_order()
    return f"C{order.index(method) if method in order else len(order)}"


def training_curves(logs: list[TrainingLog], threshold: float | None = None) -> bytes | None:
    """Training loss vs step of every learned vector, one panel per training data (country), one line per method."""
    if not logs:
        return None
    panels = sorted({log.short_data for log in logs})
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns + 0.6, 2.7 * rows + 0.4), squeeze=False,
                                sharey=True)
    for axis, panel in zip(axes.flat, panels):
        for log in sorted((log for log in logs if log.short_data == panel), key=lambda log: method_rank(log.method)):
            axis.plot(log.steps, log.losses, label=log.method, color=_method_colour(log.method), linewidth=1)
        axis.axhline(math.log(2), color="grey", linestyle=":", linewidth=1)  # the loss of a zero vector
        if threshold is not None:
            axis.axhline(threshold, color="grey", linestyle="--", linewidth=0.8)
        axis.set_title(panel, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    axes[0][0].set_ylabel("preference loss")
    dashed = "; dashed: the convergence threshold" if threshold is not None else ""
    figure.suptitle(f"Training curves (dotted: ln 2, the untrained loss{dashed})", fontsize=9)
    return _png(figure)


def forest_plot(scorecard: pd.DataFrame) -> bytes | None:
    """The scorecard's headline effects with their 95 % CIs against zero: one panel per (claim, measure) in the
    measure's own unit, one line per comparison, flipped where the claim predicts a decrease so that right of
    zero is always the claimed direction; colour = verdict, dotted line = δ (the smallest effect the claim cares
    about), shaded band = an equivalence margin."""
    rows = scorecard[scorecard["family"] == "scorecard"] if not scorecard.empty else scorecard
    if rows.empty:
        return None
    panels = list(dict.fromkeys(zip(rows["claim"], rows["measure_label"])))
    sizes = [int(((rows["claim"] == c) & (rows["measure_label"] == m)).sum()) for c, m in panels]
    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 0.9 * len(panels) + 0.32 * sum(sizes)), squeeze=False,
                                gridspec_kw={"height_ratios": [s + 1 for s in sizes]})
    colours = {"supported": "tab:green", "contradicted": "tab:red"}
    for axis, (claim, measure) in zip(axes[:, 0], panels):
        group = rows[(rows["claim"] == claim) & (rows["measure_label"] == measure)]
        for y, row in enumerate(group.itertuples()):
            sign = row.direction or 1
            effect, ends = sign * row.effect, sorted((sign * row.ci_low, sign * row.ci_high))
            if not math.isfinite(effect):
                continue
            error = [[effect - ends[0]], [ends[1] - effect]] if all(map(math.isfinite, ends)) else None
            axis.errorbar(effect, y, xerr=error, fmt="o", color=colours.get(row.verdict, "grey"), capsize=3)
        delta = float(group["smallest_effect"].iloc[0])
        if (group["kind"] == "equivalence").all():
            axis.axvspan(-delta, delta, color="tab:green", alpha=0.08)
        else:
            axis.axvline(delta, color="grey", linestyle=":", linewidth=0.8)
        axis.axvline(0, color="black", linewidth=0.8)
        axis.set_yticks(range(len(group)), [f"{r.comparison} ({r.scope})" for r in group.itertuples()], fontsize=7)
        axis.set_ylim(len(group) - 0.5, -0.5)
        flipped = " (sign flipped: a decrease is claimed)" if (group["direction"] < 0).any() else ""
        axis.set_title(f"({claim}) {measure}{flipped}", fontsize=8, loc="left")
        axis.tick_params(axis="x", labelsize=7)
    axes[-1][0].set_xlabel("effect, oriented so that right of 0 = the claimed direction; dotted: δ\n"
                           "(green supported, red contradicted, grey inconclusive)", fontsize=8)
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
