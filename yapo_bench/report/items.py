"""Per-item scores read from the runs: the one reading of lm-eval's logged samples and the judge's verdicts that the
tables, the multiplier selection and the scorecard share (an item is one task's document, keyed "<task>/<doc_id>"
where items of several tasks are pooled)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from yapo_bench.families import Family, TaskId, get_family
from yapo_bench.report.runs import EvalRun, ReportError, culture_family


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


class SeedScores(dict):
    """Item scores of one method at one λ (or one arm), one ItemScores per training seed of its vectors (None: no
    seed recorded, as for the base): several seeds score an item differently by design, which one ItemScores would
    refuse as a conflict."""

    def add(self, run: EvalRun, scores: dict[str, float]) -> SeedScores:
        self.setdefault(run.seed, ItemScores()).add(run, scores)
        return self

    @property
    def seeds(self) -> list[int | None]:
        return sorted(self, key=lambda s: (s is None, s or 0))

    def common_items(self) -> list[str]:
        """The items every seed scored, sorted."""
        return sorted(set.intersection(*(set(scores) for scores in self.values()))) if self else []

    def matrix(self, items: list[str]) -> np.ndarray:
        """seeds × items: each seed's scores of `items`, seeds in order."""
        return np.array([[self[seed][item] for item in items] for seed in self.seeds], dtype=float).reshape(
            len(self), len(items))

    def means(self) -> dict[str, float]:
        """Per item every seed scored, its mean over the seeds; with one seed, that seed's scores as they are."""
        if len(self) == 1:
            return dict(next(iter(self.values())))
        items = self.common_items()
        return dict(zip(items, self.matrix(items).mean(axis=0).tolist()))

    def filtered(self, keep: Callable[[str], bool]) -> SeedScores:
        """The same seeds' scores of the items `keep` admits."""
        kept = SeedScores()
        for seed, scores in self.items():
            kept[seed] = {item: value for item, value in scores.items() if keep(item)}
        return kept


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


def family_tasks(run: EvalRun, family: str) -> list[tuple[str, str, str]]:
    """(task, country, localization) of every culture task of `family` (its option name: mcq, open, ...) the run
    scored (a judged family: the tasks its verdicts judged)."""
    declared = culture_family(family)
    tasks = sorted({v.get("task") for v in run.verdicts} - {None}) if declared.judged else run.tasks
    return [(task, parsed.unit, parsed.variant) for task, parsed in zip(tasks, map(TaskId.parse, tasks))
            if parsed and parsed.family == declared.name]


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


def sample_scores(run: EvalRun, task: str, metric: str) -> dict[str, float]:
    """`metric` × 100 per logged sample of one task, keyed "<task>/<doc_id>"."""
    return {f"{task}/{s['doc_id']}": 100.0 * float(s[metric]) for s in run.samples.get(task, [])
            if isinstance(s.get(metric), (int, float))}


def against_base(runs: list[EvalRun], select: Callable[[str], str | None],
                 scores: Callable[[EvalRun, str], dict[str, float]],
                 reference: str = "base") -> dict[tuple[str, float, str], tuple[SeedScores, SeedScores]]:
    """(method, λ, group) → (the method's item scores, the reference method's item scores), per training seed, over
    the tasks `select` maps to a group, for every other method (the reference: the base model, or e.g. the
    prompting baseline)."""
    base: dict[str, SeedScores] = {}
    steered: dict[tuple[str, float, str], SeedScores] = {}
    for run in runs:
        for task in sorted(set(run.tasks) | {v.get("task") for v in run.verdicts} - {None}):
            group = select(task)
            if group:
                target = base.setdefault(group, SeedScores()) if run.method == reference else steered.setdefault(
                    (run.method, run.multiplier, group), SeedScores())
                target.add(run, scores(run, task))
    return {key: (items, base[key[2]]) for key, items in sorted(steered.items()) if key[2] in base}


def run_directions(runs: list[EvalRun]) -> dict[tuple[str, float], int]:
    """(method, λ) → the sign each steered run steered toward (+1: toward the behaviour its vector was trained to
    show, −1: away), as its results record it; a run that records none steered toward (+1)."""
    return {(run.method, run.multiplier): 1 if int((run.steering or {}).get("direction", 1)) >= 0 else -1
            for run in runs}


def unit_of(task: str, family: Family) -> str | None:
    """The unit (a behaviour, a country) of a task of `family`, else None."""
    parsed = TaskId.parse(task)
    return parsed.unit if parsed and parsed.family == family.name else None
