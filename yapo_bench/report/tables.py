"""The report's tables as tidy pandas frames, one row per cell, each with its 95 % CI (bootstrap over items
when lm-eval logged samples, else ±1.96 lm-eval stderr) and, for steered runs, the change vs the base run
with a paired test on the same items. Shapes follow the paper: Table 1 (MCQ), 2 (open-ended), 3 and 5
(RCA/PNLG per language and country, from aggregate scores), MMLU and the behaviour (generalisation) table."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from yapo_bench.families import TaskId, family_of, get_family
from yapo_bench.metrics import bootstrap_ci, bootstrap_ci_pair, paired_test, pnlg, rca
from yapo_bench.report.runs import EvalRun, ReportError, any_overlap, culture_family, language_of
from yapo_bench.report.selection import Selection, Split, select_multipliers, split_ids

_Z95 = 1.959963984540054


class ItemScores(dict):
    """Item scores pooled from several runs (of one method at one λ, or one arm): an item that two runs score
    differently is refused, where a plain update would let whichever run came last win, silently."""

    def __init__(self) -> None:
        super().__init__()
        self._source: dict[str, Any] = {}

    def add(self, run: EvalRun, scores: dict[str, float]) -> ItemScores:
        for item, value in scores.items():
            if item in self and not (self[item] == value or (math.isnan(self[item]) and math.isnan(value))):
                raise ReportError(f"runs: {self._source[item]} and {run.path} both score {item} as {run.method} "
                                  f"λ {run.multiplier:g}, differently ({self[item]:g} vs {value:g}); report one of "
                                  "them")
            self[item] = value
            self._source.setdefault(item, run.path)
        return self


def item_values(run: EvalRun, task: str, metric: str) -> pd.Series:
    """Per-item values of `metric` from the logged samples, indexed by item (rotations of one item averaged)."""
    values: dict[Any, list[float]] = {}
    for sample in run.samples.get(task, []):
        value = sample.get(metric)
        if isinstance(value, (int, float)):
            key = sample.get("doc", {}).get("item_id", sample.get("doc_id"))
            values.setdefault(key, []).append(float(value))
    return pd.Series({key: float(np.mean(v)) for key, v in values.items()}, dtype=float)


def verdict_values(run: EvalRun, task: str, field: str = "score") -> pd.Series:
    """Per-item judge scores (errors excluded) for one open-ended task."""
    return pd.Series({v["doc_id"]: float(v[field]) for v in run.verdicts
                      if v.get("task") == task and not v.get("error") and isinstance(v.get(field), (int, float))},
                     dtype=float)


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


def family_tasks(run: EvalRun, family: str) -> list[tuple[str, str, str]]:
    """(task, country, localization) of every culture task of `family` (its option name: mcq, open, ...) the run
    scored (a judged family: the tasks its verdicts judged)."""
    declared = culture_family(family)
    tasks = sorted({v.get("task") for v in run.verdicts} - {None}) if declared.judged else run.tasks
    return [(task, parsed.unit, parsed.variant) for task, parsed in zip(tasks, map(TaskId.parse, tasks))
            if parsed and parsed.family == declared.name]


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


def mmlu_group(task: str) -> str | None:
    """The MMLU family of one subject's task (mmlu, mmlu_local, ...), None for any other task or a whole group."""
    parsed = TaskId.parse(task)
    return parsed.family if parsed and parsed.unit and get_family(parsed.family).unit_kind == "subject" else None


def _option_distributions(run: EvalRun, task: str) -> dict[Any, np.ndarray]:
    """Per doc, the model's distribution over the options (softmax of the logged option log-likelihoods)."""
    result = {}
    for sample in run.samples.get(task, []):
        logliks = np.array([float(r[0]) for r in sample.get("filtered_resps", [])], dtype=float)
        if logliks.size:
            weights = np.exp(logliks - logliks.max())
            result[sample["doc_id"]] = weights / weights.sum()
    return result


def answer_kl(base: EvalRun, run: EvalRun, task: str) -> list[float]:
    """Per item of `task` scored by both runs, KL(base ‖ run) in nats between their answer distributions over
    the options: how far steering moves the answer, which accuracy on a model at chance cannot show."""
    ours, reference = _option_distributions(run, task), _option_distributions(base, task)
    values = []
    for doc_id in sorted(ours.keys() & reference.keys()):
        p, q = reference[doc_id], ours[doc_id]
        if p.shape == q.shape:
            values.append(float(np.sum(p * (np.log(p + 1e-30) - np.log(q + 1e-30)))))
    return values


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


def culture_item_scores(run: EvalRun, metric: str, question_of: dict[str, str],
                        family: str = "mcq") -> dict[str, float]:
    """Per culture item of `family` in one run, keyed "<task>/<doc_id>": `metric` ×100 (MCQ families) or the
    judge's score (open); records each item's split id (its question_id, shared by a question's localized and
    non-localized variants) in `question_of`."""
    scores = {}
    for task, _, _ in family_tasks(run, family):
        samples = run.samples.get(task, [])
        docs = {sample["doc_id"]: sample.get("doc", {}) for sample in samples}
        if culture_family(family).judged:
            values = verdict_values(run, task).to_dict()
        else:
            values = {sample["doc_id"]: 100.0 * float(sample[metric]) for sample in samples
                      if isinstance(sample.get(metric), (int, float))}
        for doc_id, value in values.items():
            item = f"{task}/{doc_id}"
            question_of[item] = str(docs.get(doc_id, {}).get("question_id", item))
            scores[item] = value
    return scores


@dataclass(frozen=True)
class MultiplierChoice:
    """The λ chosen per swept method on the validation questions, the split, each item's question id, and the
    per-(method, λ) item scores the choice was made from."""

    selections: dict[str, Selection]
    split: Split | None
    question_of: dict[str, str]
    scores: dict[tuple[str, float], dict[str, float]]
    note: str = ""


def swept_methods(scores: dict[tuple[str, float], dict[str, float]]) -> set[str]:
    """Methods run at several λ on the same items (a sweep). Several λ on disjoint items (one λ per country's
    vector) are not a sweep: there is nothing to choose between."""
    return {method for method in {m for m, _ in scores} - {"base"}
            if any_overlap(set(items) for (m, _), items in scores.items() if m == method)}


def choose_multipliers(runs: list[EvalRun], metric: str = "p_gold_norm", seed: int = 0,
                       allowed: Callable[[str, float], bool] | None = None) -> MultiplierChoice:
    """For methods swept over λ (`swept_methods`): the λ chosen on a validation half of the culture MCQ questions
    (split by question_id, so a question's localized and non-localized variants stay together), scored on the
    other half. `allowed(method, λ)` restricts the candidates (e.g. to a disruption budget); a method with no
    allowed λ gets no selection. The note says why no selection could be made ('' when nothing was swept)."""
    scores: dict[tuple[str, float], dict[str, float]] = {}
    question_of: dict[str, str] = {}
    for run in runs:
        items = culture_item_scores(run, metric, question_of)
        if items:
            scores.setdefault((run.method, run.multiplier), ItemScores()).add(run, items)
    swept = swept_methods(scores)
    if not swept:
        return MultiplierChoice({}, None, question_of, scores)
    try:
        split = split_ids(question_of.values(), 0.5, seed)
        chosen = select_multipliers({k: v for k, v in scores.items()
                                     if k[0] in swept and (allowed is None or allowed(*k))}, split, question_of.get)
    except ValueError as err:  # e.g. λs scored on different items: say so in the report instead of guessing
        return MultiplierChoice({}, None, question_of, scores, f"Multiplier selection not possible: {err}")
    return MultiplierChoice(chosen, split, question_of, scores)


def multiplier_selection(runs: list[EvalRun], metric: str = "p_gold_norm", seed: int = 0,
                         allowed: Callable[[str, float], bool] | None = None) -> tuple[pd.DataFrame, str]:
    """The table of `choose_multipliers`: per swept method, the chosen λ, its validation and test scores beside
    the base run's score on the test half, and how many questions (and their items: a question's localized and
    non-localized variants) each half holds. Returns the table and a note ('' when no method was swept)."""
    choice = choose_multipliers(runs, metric, seed, allowed)
    if choice.split is None:
        return pd.DataFrame(), choice.note
    split, question_of = choice.split, choice.question_of
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
                                f"on the other {len(split.test)} (split by question_id, seed {seed}); {metric} in %. "
                                "An item is one task's document: a question counts once per localization task that "
                                "holds it.")
