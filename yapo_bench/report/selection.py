"""Multiplier selection on a validation split, reported on a disjoint test split: computed once per report
(`choose_multipliers`) and handed to the scorecard, the tables and the sweep.

λ is a hyper-parameter: choosing it on the items it is reported on inflates every method's score, and
inflates it most for methods with the most sensitive λ. So items are split by a stable id (a question's
localized and non-localized variants share `question_id` and must fall on the same side), λ is chosen per
method on validation only, and the chosen λ is scored on test.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from yapo_bench.report.items import SeedScores, culture_item_scores
from yapo_bench.report.runs import EvalRun, any_overlap

VALIDATION_FRACTION = 0.5  # of the culture questions, to choose λ on; the rest report it


@dataclass(frozen=True)
class Split:
    """Disjoint sets of split ids (e.g. question ids)."""

    validation: frozenset[str]
    test: frozenset[str]
    seed: int
    validation_fraction: float

    def __post_init__(self) -> None:
        shared = self.validation & self.test
        if shared:
            raise ValueError(f"validation/test: share {len(shared)} ids (e.g. {min(shared)!r}); expected none")
        if not self.validation or not self.test:
            raise ValueError("validation/test: expected both splits non-empty")


def split_ids(ids: Iterable[str], validation_fraction: float = 0.5, seed: int = 0) -> Split:
    """Split the distinct ids deterministically: sorted by sha256(f"{seed}:{id}"), the first
    round(fraction·n) (at least 1, at most n−1) go to validation. Independent of input order and of which
    other ids are present only through their count."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction: {validation_fraction!r}; expected a number in (0, 1)")
    unique = sorted(set(ids), key=lambda i: (hashlib.sha256(f"{seed}:{i}".encode()).hexdigest(), i))
    if len(unique) < 2:
        raise ValueError(f"ids: {len(unique)} distinct id(s); expected at least 2 to split")
    n_validation = min(len(unique) - 1, max(1, round(validation_fraction * len(unique))))
    return Split(frozenset(unique[:n_validation]), frozenset(unique[n_validation:]), seed, validation_fraction)


@dataclass(frozen=True)
class Selection:
    """The λ chosen for one method on validation, and its score there and on test."""

    method: str
    multiplier: float
    validation_score: float
    test_score: float
    n_validation: int
    n_test: int
    validation_curve: tuple[tuple[float, float], ...]  # (λ, mean validation score), by λ


def select_multipliers(
    scores: Mapping[tuple[str, float], Mapping[str, float]],
    split: Split,
    group_of: Callable[[str], str] | None = None,
) -> dict[str, Selection]:
    """Per method, the λ maximising the mean validation score (ties: the smaller λ), reported on test.

    scores: {(method, λ): {item_id: score}}; `group_of(item_id)` gives the split id (default: the item id
    itself). Every item must belong to the split, and every λ of a method must score the same items, so
    that λs are compared on equal footing. Test scores are read only for the chosen λ.
    """
    group_of = group_of or (lambda item: item)
    by_method: dict[str, dict[float, Mapping[str, float]]] = {}
    for (method, multiplier), items in scores.items():
        if not items:
            raise ValueError(f"scores: ({method!r}, {multiplier}) has no items")
        by_method.setdefault(method, {})[float(multiplier)] = items
    selections = {}
    for method, sweep in sorted(by_method.items()):
        item_sets = {frozenset(items) for items in sweep.values()}
        if len(item_sets) != 1:
            raise ValueError(f"scores: method {method!r} scores different items at different λ; expected the same")
        validation_items, test_items = _partition(next(iter(item_sets)), split, group_of)
        if not validation_items or not test_items:
            raise ValueError(f"scores: method {method!r} has {len(validation_items)} validation and "
                             f"{len(test_items)} test items; expected both > 0")
        curve = tuple((lam, _mean(sweep[lam], validation_items)) for lam in sorted(sweep))
        best = max(score for _, score in curve)
        chosen = min(lam for lam, score in curve if score == best)
        selections[method] = Selection(method, chosen, best, _mean(sweep[chosen], test_items),
                                       len(validation_items), len(test_items), curve)
    return selections


def _partition(items: Iterable[str], split: Split, group_of: Callable[[str], str]) -> tuple[list[str], list[str]]:
    validation, test = [], []
    for item in sorted(items):
        group = group_of(item)
        if group in split.validation:
            validation.append(item)
        elif group in split.test:
            test.append(item)
        else:
            raise ValueError(f"scores: item {item!r} (split id {group!r}) is in neither split")
    return validation, test


def _mean(scores: Mapping[str, float], items: list[str]) -> float:
    values = [float(scores[item]) for item in items]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("scores: expected finite scores")
    return sum(values) / len(values)


@dataclass(frozen=True)
class MultiplierChoice:
    """The λ chosen per swept method on the validation questions, the split they were chosen on (None when nothing
    was chosen), each item's question id, the per-(method, λ) item scores the choice was made from, and the
    measure and seed it was made with."""

    selections: dict[str, Selection]
    split: Split | None
    question_of: dict[str, str]
    scores: dict[tuple[str, float], dict[str, float]]
    metric: str
    seed: int
    note: str = ""

    def question_split(self) -> Split:
        """The validation/test split of the culture questions: the one λ was chosen on, or the one it would be
        (same questions, seed and fraction) when nothing was swept."""
        return self.split or split_ids(self.question_of.values(), VALIDATION_FRACTION, self.seed)

    def restricted(self, allowed: Callable[[str, float], bool]) -> MultiplierChoice:
        """The choice made again from the same scores among the (method, λ) that `allowed` admits (the sweep's
        disruption budget)."""
        return _choose(self.scores, self.question_of, self.metric, self.seed, allowed)


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
    allowed λ gets no selection. The note says why no selection could be made ('' when nothing was swept). With
    vectors trained with several seeds, a (method, λ)'s item score is its mean over the seeds."""
    seeded: dict[tuple[str, float], SeedScores] = {}
    question_of: dict[str, str] = {}
    for run in runs:
        items = culture_item_scores(run, metric, question_of)
        if items:
            seeded.setdefault((run.method, run.multiplier), SeedScores()).add(run, items)
    return _choose({key: scores.means() for key, scores in seeded.items()}, question_of, metric, seed, allowed)


def _choose(scores: dict[tuple[str, float], dict[str, float]], question_of: dict[str, str], metric: str, seed: int,
            allowed: Callable[[str, float], bool] | None) -> MultiplierChoice:
    swept = swept_methods(scores)
    if not swept:
        return MultiplierChoice({}, None, question_of, scores, metric, seed)
    try:
        split = split_ids(question_of.values(), VALIDATION_FRACTION, seed)
        chosen = select_multipliers({k: v for k, v in scores.items()
                                     if k[0] in swept and (allowed is None or allowed(*k))}, split, question_of.get)
    except ValueError as err:  # e.g. λs scored on different items: say so in the report instead of guessing
        return MultiplierChoice({}, None, question_of, scores, metric, seed,
                                f"Multiplier selection not possible: {err}")
    return MultiplierChoice(chosen, split, question_of, scores, metric, seed)
