"""The report's tables as tidy pandas frames, one row per cell, each with its 95 % CI (bootstrap over items
when lm-eval logged samples, else ±1.96 lm-eval stderr) and, for steered runs, the change vs the base run
with a paired test on the same items (the per-item scores: report.items). Shapes follow the paper: Table 1 (MCQ),
2 (open-ended), 3 and 5 (RCA/PNLG per language and country, from aggregate scores), MMLU and the behaviour
(generalisation) table."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from yapo_bench.families import TaskId, behaviours, family_of
from yapo_bench.methods import vector_method
from yapo_bench.metrics import bootstrap_ci, bootstrap_ci_pair, paired_test, pnlg, rca
from yapo_bench.report.items import (
    SeedScores,
    against_base,
    answer_kl,
    family_tasks,
    item_values,
    mmlu_group,
    run_directions,
    sample_scores,
    unit_of,
    verdict_values,
)
from yapo_bench.report.runs import EvalRun, culture_family, language_of, seeds_of
from yapo_bench.report.scorecard import item_moves
from yapo_bench.report.selection import MultiplierChoice

_Z95 = 1.959963984540054


def _cell(value: float, items: pd.Series, stderr: float | None, scale: float) -> dict[str, float]:
    """value, CI and n of one cell, on the report's scale."""
    if len(items) >= 2:
        low, high = bootstrap_ci(items.to_numpy())
    elif stderr is not None and math.isfinite(stderr):
        low, high = value - _Z95 * stderr, value + _Z95 * stderr
    else:
        low = high = float("nan")
    return {"value": value * scale, "ci_low": low * scale, "ci_high": high * scale, "n": len(items) or float("nan")}


def _with_deltas(frame: pd.DataFrame, keys: list[str], items: dict[tuple, pd.Series]) -> pd.DataFrame:
    """Add delta vs the base run and the paired test's p-value (items matched by id; NaN without items)."""
    if frame.empty:
        return frame
    base = frame[frame["method"] == "base"].drop_duplicates(keys).set_index(keys)
    deltas, p_values = [], []
    for row in frame.itertuples(index=False):
        key = tuple(getattr(row, k) for k in keys)
        if row.method == "base" or key not in base.index:
            deltas.append(float("nan"))
            p_values.append(float("nan"))
            continue
        base_row = base.loc[key]
        deltas.append(row.value - float(base_row["value"]))
        ours, theirs = items.get((row.label, *key)), items.get((base_row["label"], *key))
        common = ours.index.intersection(theirs.index) if ours is not None and theirs is not None else []
        p_values.append(paired_test(ours[common].to_numpy(), theirs[common].to_numpy())["p_value"]
                        if len(common) >= 2 else float("nan"))
    return frame.assign(delta=deltas, p_value=p_values)


def culture_table(runs: list[EvalRun], family: str = "mcq", metric: str | None = None) -> pd.DataFrame:
    """Table 1 (family mcq / letter / boxed; metric default acc, in %) or Table 2 (family open: mean judge
    score 1–10 from the verdicts): one row per language × country × localization × run."""
    rows, items = [], {}
    declared = culture_family(family)
    for run in runs:
        for task, country, localization in family_tasks(run, family):
            if declared.judged:
                values = verdict_values(run, task)
                if values.empty:
                    continue
                cell = _cell(float(values.mean()), values, None, 1.0)
                name = declared.metric
            else:
                name = metric or declared.metric
                if name not in run.metrics[task]:
                    continue
                values = item_values(run, task, name)
                cell = _cell(run.metrics[task][name], values, run.stderrs.get(task, {}).get(name), 100.0)
                values = values * 100.0
            key = (language_of(country), country, localization)
            items[(run.label, *key)] = values
            rows.append({"language": key[0], "country": country, "localization": localization, "family": family,
                         "metric": name, "method": run.method, "label": run.label, "multiplier": run.multiplier,
                         **cell})
    frame = pd.DataFrame(rows)
    return _with_deltas(frame, ["language", "country", "localization"], items) if rows else frame


def rca_pnlg_table(runs: list[EvalRun], family: str = "mcq", metric: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 5 (per country) and Table 3 (per language = mean of its countries; Overall = mean of languages),
    RCA and PNLG_1 computed from the aggregate localized and non-localized scores, as the paper does."""
    cells = culture_table(runs, family, metric)
    if cells.empty:
        return cells, cells
    # runs of one label may split the countries between them (one run per country's vector): find each
    # country's items in the run that scored them, not in whichever run of the label came last
    run_of = {(run.label, country, localization): run for run in runs
              for _, country, localization in family_tasks(run, family)}
    rows = []
    for (label, country), group in cells.groupby(["label", "country"], sort=False):
        scores = group.set_index("localization")["value"]
        if not {"localized", "nonlocalized"} <= set(scores.index):
            continue
        run = run_of[(label, country, "localized")]
        loc_items, non_items = (_series_for(run_of[(label, country, loc)], family, country, loc, metric)
                                for loc in ("localized", "nonlocalized"))
        for name, statistic in (("rca", rca), ("pnlg", pnlg)):
            value = statistic(scores["localized"], scores["nonlocalized"])
            low = high = float("nan")
            if len(loc_items) >= 2 and len(non_items) >= 2:
                low, high = bootstrap_ci_pair(loc_items.to_numpy(), non_items.to_numpy(), statistic=statistic)
            rows.append({"language": language_of(country), "country": country, "metric": name, "family": family,
                         "method": run.method, "label": label, "value": value, "ci_low": low, "ci_high": high})
    per_country = pd.DataFrame(rows)
    if per_country.empty:
        return per_country, per_country
    per_language = (per_country.groupby(["language", "metric", "family", "method", "label"], as_index=False)["value"]
                    .mean())
    overall = per_language.groupby(["metric", "family", "method", "label"], as_index=False)["value"].mean()
    per_language = pd.concat([per_language, overall.assign(language="Overall")], ignore_index=True)
    return _with_deltas(per_country, ["country", "metric"], {}), _with_deltas(per_language, ["language", "metric"], {})


def _series_for(run: EvalRun, family: str, country: str, localization: str, metric: str | None) -> pd.Series:
    declared = culture_family(family)
    task = declared.task(country, localization).name
    if declared.judged:
        return verdict_values(run, task)
    return item_values(run, task, metric or declared.metric) * 100.0


def _pooled_table(runs: list[EvalRun], select: Callable[[str], str | None], metrics: tuple[str, ...],
                  scale: float) -> pd.DataFrame:
    """Metrics pooled over every task `select` maps to a group name (items from all its tasks together)."""
    rows, items = [], {}
    for run in runs:
        groups: dict[str, list[str]] = {}
        for task in run.tasks:
            group = select(task)
            if group:
                groups.setdefault(group, []).append(task)
        for group, tasks in sorted(groups.items()):
            for metric in metrics:
                present = [t for t in tasks if metric in run.metrics[t]]
                if not present:
                    continue
                values = pd.concat([item_values(run, t, metric).rename(lambda i, t=t: f"{t}/{i}") for t in present])
                value = float(values.mean()) if len(values) else float(np.mean([run.metrics[t][metric] for t in present]))
                stderr = run.stderrs.get(present[0], {}).get(metric) if len(present) == 1 else None
                items[(run.label, group, metric)] = values * scale
                rows.append({"group": group, "metric": metric, "tasks": len(present), "method": run.method,
                             "label": run.label, "multiplier": run.multiplier, **_cell(value, values, stderr, scale)})
    frame = pd.DataFrame(rows)
    return _with_deltas(frame, ["group", "metric"], items) if rows else frame


def _kl_rows(runs: list[EvalRun]) -> list[dict[str, Any]]:
    """Mean per-item KL(base ‖ steered) between the answer distributions over the options, per MMLU family."""
    base = next((run for run in runs if run.method == "base"), None)
    rows = []
    for run in runs:
        if base is None or run is base:
            continue
        groups: dict[str, list[float]] = {}
        for task in run.tasks:
            group = mmlu_group(task)
            if group:
                groups.setdefault(group, []).extend(answer_kl(base, run, task))
        for group, values in sorted(groups.items()):
            series = pd.Series(values, dtype=float)
            rows.append({"group": group, "metric": "kl_to_base_mnat", "tasks": float("nan"), "method": run.method,
                         "label": run.label, "multiplier": run.multiplier,
                         **_cell(float(series.mean()), series, None, 1000.0)})
    return rows


def mmlu_table(runs: list[EvalRun]) -> pd.DataFrame:
    """MMLU per family (standard letters, rotated letters, cloze) and run: accuracy and P(gold) pooled over
    subjects, in %, and for steered runs the mean per-item KL (millinats) of their answer distribution from the
    base run's (needs --log_samples)."""
    frame = _pooled_table(runs, mmlu_group, ("acc", "p_gold", "p_gold_norm"), 100.0)
    kl = _kl_rows(runs)
    return pd.concat([frame, pd.DataFrame(kl)], ignore_index=True) if kl else frame


def behaviour_table(runs: list[EvalRun]) -> pd.DataFrame:
    """The generalisation table: BiPO A/B accuracy and P(matching answer) in %, and the judge's mean 1–4
    score on the open-ended behaviour prompts."""
    def scored_by_lm_eval(task: str) -> str | None:
        family = family_of(task)
        return task if family and family.unit_kind == "behaviour" and not family.judged else None

    def judged(task: Any) -> bool:
        family = family_of(str(task))
        return bool(family and family.unit_kind == "behaviour" and family.judged)

    frame = _pooled_table(runs, scored_by_lm_eval, ("acc", "p_gold"), 100.0)
    rows = []
    for run in runs:
        for task in sorted({v.get("task") for v in run.verdicts if judged(v.get("task"))}):
            values = verdict_values(run, task)
            if not values.empty:
                rows.append({"group": task, "metric": "judge_score", "tasks": 1, "method": run.method, "label": run.label,
                             "multiplier": run.multiplier, **_cell(float(values.mean()), values, None, 1.0)})
    return pd.concat([frame, pd.DataFrame(rows)], ignore_index=True) if rows else frame


def judge_summary(runs: list[EvalRun]) -> pd.DataFrame:
    """Per run and task: verdicts, errors (excluded from means), judge model and reference similarity."""
    rows = []
    for run in runs:
        tasks: dict[str, list[dict]] = {}
        for verdict in run.verdicts:
            tasks.setdefault(verdict.get("task", "?"), []).append(verdict)
        for task, verdicts in sorted(tasks.items()):
            ok = [v for v in verdicts if not v.get("error")]
            similarity = [v["reference_similarity"] for v in verdicts if isinstance(v.get("reference_similarity"), float)]
            judges = sorted({str((v.get("judge") or {}).get("model", "?")) for v in verdicts})
            failed = sum(1 for v in verdicts if v.get("failed"))
            rows.append({"label": run.label, "task": task, "verdicts": len(verdicts), "failed": failed,
                         "errors": len(verdicts) - len(ok) - failed,
                         "mean_score": float(np.mean([v["score"] for v in ok])) if ok else float("nan"),
                         "reference_similarity": float(np.mean(similarity)) if similarity else float("nan"),
                         "judge": ", ".join(judges)})
    return pd.DataFrame(rows)


def multiplier_selection(choice: MultiplierChoice) -> tuple[pd.DataFrame, str]:
    """The table of a multiplier choice (`report.selection.choose_multipliers`): per swept method, the chosen λ, its
    validation and test scores beside the base run's score on the test half, and how many questions (and their
    items: a question's localized and non-localized variants) each half holds. Returns the table and a note (''
    when no method was swept)."""
    if choice.split is None:
        return pd.DataFrame(), choice.note
    split, question_of, metric = choice.split, choice.question_of, choice.metric
    base_items = choice.scores.get(("base", 0.0), {})
    rows = []
    for method, selection in choice.selections.items():
        items = choice.scores[(method, selection.multiplier)]
        test_base = [base_items[i] for i in base_items if question_of[i] in split.test]
        rows.append({"method": method, "label": method, "metric": metric, "chosen_multiplier": selection.multiplier,
                     "validation_score": selection.validation_score, "test_score": selection.test_score,
                     "base_test_score": float(np.mean(test_base)) if test_base else float("nan"),
                     "validation_questions": len({question_of[i] for i in items if question_of[i] in split.validation}),
                     "validation_items": selection.n_validation,
                     "test_questions": len({question_of[i] for i in items if question_of[i] in split.test}),
                     "test_items": selection.n_test,
                     "validation_curve": " ".join(f"{lam:g}:{score:.2f}" for lam, score in selection.validation_curve)})
    return pd.DataFrame(rows), (f"λ chosen per method on {len(split.validation)} validation questions and scored "
                                f"on the other {len(split.test)} (split by question_id, seed {choice.seed}); {metric} in %. "
                                "An item is one task's document: a question counts once per localization task that "
                                "holds it.")


def steerability_table(runs: list[EvalRun], choice: MultiplierChoice) -> pd.DataFrame:
    """Per steered run (method, λ, context) against the base on the same items: the shares of items whose gold
    probability moved toward the target, away from it, or not at all, with 95 % Wilson CIs (`scorecard.item_moves`).
    Culture MCQ in the choice's measure, on the test questions when λ was chosen on validation (else all items;
    the `both` task repeats the others' items and is left out); BiPO A/B P(matching answer), toward the behaviour
    for direction +1 and away from it for −1."""
    test = choice.split.test if choice.split is not None else None
    directions = run_directions(runs)
    rows = []
    for family, select, metric, held_out in _unit_measures(choice.metric, test):
        for (method, multiplier, unit), (seeded, seeded_base) in against_base(
                runs, select, lambda run, task, metric=metric: sample_scores(run, task, metric)).items():
            ours, base = seeded.means(), seeded_base.means()  # per item, the mean over its vectors' seeds
            items = sorted(i for i in ours.keys() & base.keys()
                           if held_out is None or choice.question_of.get(i) in held_out)
            if not items:
                continue
            direction = directions.get((method, multiplier), 1)
            rows.append({"family": family, "unit": unit, "method": method, "multiplier": multiplier,
                         "direction": direction, "metric": metric, "items": "test" if held_out else "all",
                         "n": len(items), **item_moves(np.array([ours[i] for i in items]),
                                                       np.array([base[i] for i in items]), direction)})
    return pd.DataFrame(rows)


def _unit_measures(metric: str, test: frozenset[str] | None) -> tuple[tuple[str, Callable[[str], str | None], str,
                                                                       frozenset[str] | None], ...]:
    """(family, task → unit, metric, held-out question ids) of the per-unit tables: culture MCQ in `metric` (the
    `both` task repeats the others' items and is left out), behaviour A/B P(matching answer)."""
    mcq = culture_family("mcq")

    def culture_unit(task: str) -> str | None:
        parsed = TaskId.parse(task)
        return parsed.unit if parsed and parsed.family == mcq.name and parsed.variant != "both" else None

    return (("culture MCQ", culture_unit, metric, test),
            ("behaviour A/B", lambda task: unit_of(task, behaviours.AB), "p_gold", None))


def seed_table(runs: list[EvalRun], choice: MultiplierChoice) -> pd.DataFrame:
    """Per steered method, λ and unit: each training seed's mean score (culture MCQ in the choice's measure, BiPO
    A/B P(matching answer); all items) and the SD across seeds; a mean-difference method is deterministic (one
    vector whatever the seeds). Empty unless some method's vectors were trained with several seeds."""
    if not any(len(seeds_of(runs, method)) > 1 for method in {run.method for run in runs}):
        return pd.DataFrame()
    rows = []
    for family, select, metric, _ in _unit_measures(choice.metric, None):
        scores: dict[tuple[str, float, str], SeedScores] = {}
        for run in runs:
            for task in run.tasks:
                unit = select(task)
                if unit and run.method != "base":
                    scores.setdefault((run.method, run.multiplier, unit), SeedScores()).add(
                        run, sample_scores(run, task, metric))
        for (method, multiplier, unit), seeded in sorted(scores.items()):
            items = seeded.common_items()
            if not items:
                continue
            means = seeded.matrix(items).mean(axis=1)
            vector = vector_method(method)  # prompt+bipo steers with bipo's vectors
            learned = vector is not None and vector.LEARNED
            rows.append({"family": family, "unit": unit, "method": method, "multiplier": multiplier,
                         "metric": metric, "n": len(items),
                         "seeds": ", ".join(str(seed) for seed in seeded.seeds) if learned else "deterministic",
                         "seed_means": "; ".join(f"{seed}: {mean:.2f}" for seed, mean in zip(seeded.seeds, means)),
                         "mean": float(means.mean()),
                         "sd": float(np.std(means, ddof=1)) if means.size > 1 else float("nan")})
    return pd.DataFrame(rows)


def localization_gap_table(cells: pd.DataFrame, smallest_gap: float) -> pd.DataFrame:
    """Per country and run, from a culture table (`culture_table`): the localized and non-localized scores, their gap
    (localized − non-localized) and the share of the base run's gap that the run closes, (gap_base − gap) / gap_base.
    Stating the country (the prompt) should close it where the model knows the culture; 1 closes it, 0 leaves it,
    NaN where the base has no gap to close (below `smallest_gap`, the claim's δ: a share of nothing is noise)."""
    if cells.empty:
        return cells
    wide = cells.pivot_table(index=["country", "label", "method", "multiplier"], columns="localization",
                             values="value", aggfunc="first").reset_index()
    if not {"localized", "nonlocalized"} <= set(wide.columns):
        return pd.DataFrame()
    wide["gap"] = wide["localized"] - wide["nonlocalized"]
    base_gap = wide[wide["method"] == "base"].set_index("country")["gap"]
    rows = []
    for row in wide.itertuples(index=False):
        gap_of_base = float(base_gap.get(row.country, float("nan")))
        closed = (gap_of_base - row.gap) / gap_of_base if abs(gap_of_base) >= smallest_gap else float("nan")
        rows.append({"country": row.country, "label": row.label, "method": row.method, "multiplier": row.multiplier,
                     "metric": str(cells["metric"].iloc[0]), "localized": row.localized,
                     "nonlocalized": row.nonlocalized, "gap": row.gap, "gap_closed": closed})
    return pd.DataFrame(rows)
