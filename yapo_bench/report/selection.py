"""Multiplier selection on a validation split, reported on a disjoint test split.

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
