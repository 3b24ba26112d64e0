"""Multiplier sweep, comparison at matched KL, and MMLU preservation, over the lm-eval output of a
`yapo-bench run` whose methods ran at several λ.

- The sweep: per method and λ, the culture MCQ score over all items (with a bootstrap CI), on the validation
  and on the test half of the questions, and the mean per-item KL(base ‖ steered) of the answer distribution,
  which shows where a method starts to move (and then wreck) the model when the score itself cannot.
- The selection: λ chosen per method on validation only, optionally among the λ within a neutral-text KL
  budget (`report.tables.multiplier_selection`).
- Matched KL: each method's vectors evaluated at the λ where their mean token KL on neutral text reaches one
  target, so methods are compared at equal disruption as well as at their best λ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from yapo_bench.metrics import bootstrap_ci
from yapo_bench.report.items import ItemScores, answer_kl, culture_item_scores
from yapo_bench.report.runs import EvalRun, culture_family, culture_task
from yapo_bench.report.selection import Split


def _mean_over(scores: Mapping[str, float], items: Sequence[str]) -> float:
    return float(np.mean([scores[i] for i in items])) if items else float("nan")


def pooled_scores(runs: Sequence[EvalRun], metric: str, key: str = "multiplier") -> dict[tuple, dict[str, float]]:
    """Item scores pooled over the runs sharing (method, λ) — or, with key="method", sharing the method
    (the matched-KL runs, whose λ differs per vector)."""
    pooled: dict[tuple, dict[str, float]] = {}
    for run in runs:
        group = (run.method, run.multiplier) if key == "multiplier" else (run.method,)
        pooled.setdefault(group, ItemScores()).add(run, culture_item_scores(run, metric, {}))
    return pooled


def sweep_table(runs: Sequence[EvalRun], split: Split, question_of: Mapping[str, str],
                metric: str = "p_gold_norm") -> pd.DataFrame:
    """One row per (method, λ), the base as λ = 0: n items, mean score over all items with its 95 % CI, the
    means on the validation and test questions (`culture_split`), accuracy, and the mean answer KL to the base
    (millinats)."""
    scores = pooled_scores(runs, metric)
    accuracy = pooled_scores(runs, "acc")
    base = next((run for run in runs if run.method == "base"), None)
    kl: dict[tuple, list[float]] = {}
    for run in runs:
        if base is not None and run.method != "base":
            for task in run.tasks:
                parsed = culture_task(task)
                if parsed and parsed.family == culture_family("mcq").name:
                    kl.setdefault((run.method, run.multiplier), []).extend(answer_kl(base, run, task))
    rows = []
    for (method, multiplier), items in sorted(scores.items(), key=lambda kv: (kv[0][0] != "base", kv[0])):
        ids = sorted(items)
        values = np.array([items[i] for i in ids])
        low, high = bootstrap_ci(values) if len(values) >= 2 else (float("nan"), float("nan"))
        kls = kl.get((method, multiplier), [])
        rows.append({
            "method": method, "multiplier": multiplier, "metric": metric, "n": len(ids),
            "mean": float(values.mean()), "ci_low": low, "ci_high": high,
            "validation_mean": _mean_over(items, [i for i in ids if question_of[i] in split.validation]),
            "test_mean": _mean_over(items, [i for i in ids if question_of[i] in split.test]),
            "acc": _mean_over(accuracy.get((method, multiplier), {}), sorted(accuracy.get((method, multiplier), {}))),
            "answer_kl_mnat": 1000.0 * float(np.mean(kls)) if kls else (0.0 if method == "base" else float("nan")),
        })
    return pd.DataFrame(rows)


def comparison_table(sweep: pd.DataFrame, selection: pd.DataFrame, matched_runs: Sequence[EvalRun],
                     matched_kl: pd.DataFrame, split: Split, question_of: Mapping[str, str],
                     metric: str = "p_gold_norm") -> pd.DataFrame:
    """Per method: its score on the test questions at the λ chosen on validation (NaN when no λ was allowed)
    and at the λ that matches the KL target (per vector), beside the base's test score, the neutral-text KL at
    the chosen λ (when the sweep has it), and the largest λ of the sweep whose all-item mean is not below the
    base's."""
    base_row = sweep[sweep["method"] == "base"]
    base_mean = float(base_row["mean"].iloc[0]) if not base_row.empty else float("nan")
    base_test = float(base_row["test_mean"].iloc[0]) if not base_row.empty else float("nan")
    matched = pooled_scores(matched_runs, metric, key="method")
    rows = []
    for method in [m for m in dict.fromkeys(sweep["method"]) if m != "base"]:
        curve = sweep[sweep["method"] == method]
        chosen = selection[selection["method"] == method] if not selection.empty else selection
        row: dict[str, object] = {"method": method, "metric": metric, "base_test": base_test,
                                  "chosen_multiplier": float("nan"), "test_at_chosen": float("nan")}
        if not chosen.empty:
            row.update(chosen_multiplier=float(chosen["chosen_multiplier"].iloc[0]),
                       test_at_chosen=float(chosen["test_score"].iloc[0]))
        elif len(curve) == 1:  # a single λ: nothing to choose
            row.update(chosen_multiplier=float(curve["multiplier"].iloc[0]), test_at_chosen=float(curve["test_mean"].iloc[0]))
        if "neutral_kl" in curve:
            at_chosen = curve[curve["multiplier"] == row["chosen_multiplier"]]["neutral_kl"]
            row["neutral_kl_at_chosen"] = float(at_chosen.iloc[0]) if not at_chosen.empty else float("nan")
        not_below = curve[curve["mean"] >= base_mean]["multiplier"]
        row["max_multiplier_not_below_base"] = float(not_below.max()) if not not_below.empty else float("nan")
        vectors = matched_kl[matched_kl["method"] == method] if not matched_kl.empty else matched_kl
        if not vectors.empty:
            items = matched.get((method,), {})
            row.update(
                matched_multipliers=" ".join(f"{r.unit}:{r.multiplier:.3g}" for r in vectors.itertuples()),
                matched_kl=float(vectors["kl"].mean()),
                test_at_matched_kl=_mean_over(items, [i for i in sorted(items) if question_of.get(i) in split.test]))
        rows.append(row)
    return pd.DataFrame(rows)
