"""The claims scorecard: one row per testable claim of the paper, each with its paired effect, 95 % CI, Holm-
corrected p-value, minimum detectable effect (80 % power) and a verdict. This module holds the statistics and the
verdict rules; `report.claims` finds the evidence in the runs.

Verdict rules (α = 0.05 after Holm's correction within the row's family):
- superiority rows (a claim that one method beats another, or that a score moves one way): *supported* when the
  Holm-corrected p < α and the effect lies in the claimed direction, *contradicted* when it is significant the
  other way, else *inconclusive* — "(underpowered)" when the MDE exceeds δ, the smallest effect the claim cares
  about; a powered null says so in its reason (and whether the 95 % CI excludes effects of δ or more).
- equivalence rows (MMLU preserved): *supported* when the TOST p (Holm) < α for ±margin; *contradicted* when the
  95 % CI lies wholly outside ±margin; else *inconclusive*, "(underpowered)" when the smallest margin this n could
  establish with 80 % power (the MDE) exceeds the margin.
The MDE is taken at the Bonferroni level α/m of Holm's first step (m = the family's tested rows): conservative.
It is infinite when the test cannot reach p < α/m with so few units at all (a sign-flip test on n units: 2^(1−n)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from yapo_bench.methods import vector_method
from yapo_bench.metrics import equivalence_test, holm, minimum_detectable_effect, paired_strata_test, paired_test

CLAIMS = {
    "a": "YaPO converges faster than BiPO",
    "b": "YaPO ≥ BiPO ≥ base on cultural MCQ and open-ended scores",
    "c": "YaPO narrows the localization gap (|PNLG| down, RCA up)",
    "d": "General knowledge preserved: MMLU within ±margin of the base",
    "e": "YaPO degrades gracefully over λ where CAA/SAS collapse",
    "f": "Behaviours move the intended way",
    "g": "Steering beats prompting (the field's first baseline, not a claim of the paper)",
}
FAMILIES = ("scorecard", "per-country")  # Holm corrects within each: the headline rows, and their per-country split
KINDS = ("superiority", "equivalence")
VERDICTS = ("supported", "contradicted", "inconclusive (underpowered)", "inconclusive")
# The smallest effect each measure's claim cares about (δ), in the measure's unit; for "mmlu" the equivalence margin.
SMALLEST_EFFECTS = {
    "train_loss": 0.01,  # mean preference loss per step (nats)
    "mcq": 1.0,  # culture MCQ score, points of %
    "open": 0.25,  # judge score, 1–10
    "pnlg": 0.05,  # |PNLG_1|, a ratio
    "rca_mcq": 1.0,  # RCA of MCQ scores, points of %
    "rca_open": 0.25,  # RCA of judge scores, 1–10
    "mmlu": 1.0,  # MMLU accuracy, points of %: the equivalence margin
    "behaviour_ab": 1.0,  # P(matching answer), points of %
    "behaviour_judge": 0.1,  # behaviour judge score, 1–4
}
MCQ_METRICS = ("acc", "acc_norm", "p_gold", "p_gold_norm")


@dataclass(frozen=True)
class ScorecardSpec:
    """How the scorecard tests: significance level, power for the MDE, the MCQ measure, the smallest effects of
    interest (δ, and the MMLU margin), the convergence threshold, and the tolerance for calling KL matched."""

    alpha: float = 0.05
    power: float = 0.8
    mcq_metric: str = "p_gold_norm"  # the calibrated MCQ score; accuracy barely moves on a small model
    loss_threshold: float = 0.1  # the paper's: YaPO below 0.1 within 150 steps, BiPO above 0.3 after 600
    loss_window: int = 10
    kl_match_ratio: float = 1.5  # two runs' answer KLs within this factor count as matched disruption
    smallest_effects: Mapping[str, float] = field(default_factory=lambda: dict(SMALLEST_EFFECTS))
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("alpha", "power"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name}: {getattr(self, name)!r}; expected a number in (0, 1)")
        if self.mcq_metric not in MCQ_METRICS:
            raise ValueError(f"mcq_metric: {self.mcq_metric!r}; expected one of {', '.join(MCQ_METRICS)}")
        if not self.loss_threshold > 0:
            raise ValueError(f"loss_threshold: {self.loss_threshold!r}; expected a number > 0")
        if self.loss_window < 1:
            raise ValueError(f"loss_window: {self.loss_window!r}; expected a positive integer")
        if not self.kl_match_ratio > 1:
            raise ValueError(f"kl_match_ratio: {self.kl_match_ratio!r}; expected a number > 1")
        unknown = set(self.smallest_effects) - set(SMALLEST_EFFECTS)
        if unknown or set(SMALLEST_EFFECTS) - set(self.smallest_effects):
            raise ValueError(f"smallest_effects: expected exactly the measures {', '.join(SMALLEST_EFFECTS)}, "
                             f"got {', '.join(sorted(self.smallest_effects))}")
        if not all(value > 0 for value in self.smallest_effects.values()):
            raise ValueError("smallest_effects: expected every value > 0")


@dataclass
class ScorecardRow:
    """One tested claim: the comparison, its statistics and verdict. `effect` is `method` − `reference` in the
    measure's unit (for claim c: |PNLG_reference| − |PNLG_method|, so > 0 narrows the gap); `direction` is the sign
    the claim predicts (+1 or −1; 0 for an equivalence row)."""

    claim: str
    family: str
    kind: str
    method: str
    reference: str
    measure: str  # a key of SMALLEST_EFFECTS
    measure_label: str
    scope: str  # "pooled", a country, a behaviour or an MMLU family
    direction: int
    n: int
    effect: float
    ci_low: float
    ci_high: float
    se: float
    p_value: float
    test: str
    basis: str  # which λ, on which items, at matched or unmatched disruption
    min_p: float = 0.0  # the smallest p-value the test can reach with n units (sign-flip tests: 2^(1−n))
    paper: str = ""  # the paper's own figure for this comparison, with its model and data
    detail: str = ""
    smallest_effect: float = float("nan")
    p_holm: float = float("nan")
    mde: float = float("nan")
    verdict: str = "inconclusive (underpowered)"
    reason: str = ""
    # per-item steerability: the shares of paired units moved the claimed way, the other way, or not at all, with
    # their 95 % Wilson CIs (`item_moves`; NaN for rows whose units are not items: claims a and c)
    toward: float = float("nan")
    toward_low: float = float("nan")
    toward_high: float = float("nan")
    away: float = float("nan")
    away_low: float = float("nan")
    away_high: float = float("nan")
    unchanged: float = float("nan")
    unchanged_low: float = float("nan")
    unchanged_high: float = float("nan")

    def __post_init__(self) -> None:
        if self.claim not in CLAIMS:
            raise ValueError(f"claim: {self.claim!r}; expected one of {', '.join(CLAIMS)}")
        if self.family not in FAMILIES:
            raise ValueError(f"family: {self.family!r}; expected one of {', '.join(FAMILIES)}")
        if self.kind not in KINDS:
            raise ValueError(f"kind: {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.measure not in SMALLEST_EFFECTS:
            raise ValueError(f"measure: {self.measure!r}; expected one of {', '.join(SMALLEST_EFFECTS)}")
        if self.direction not in ((0,) if self.kind == "equivalence" else (-1, 1)):
            raise ValueError(f"direction: {self.direction!r}; expected 0 for equivalence, ±1 for superiority")
        if self.n < 0:
            raise ValueError(f"n: {self.n!r}; expected ≥ 0")

    @property
    def comparison(self) -> str:
        return f"{self.method} vs {self.reference}"


UNCHANGED_TOLERANCE = 1e-6  # in the measure's unit (points of %): an item that moved less did not move


def item_moves(method_scores: np.ndarray, reference_scores: np.ndarray, direction: int) -> dict[str, float]:
    """Per-item steerability (Tan et al., arXiv 2407.12404, found close to half the inputs of some datasets moved
    against the steering): the shares of paired items whose score moved in `direction` from the reference's
    (toward; for direction 0, an equivalence row, up), the other way (away), or by less than UNCHANGED_TOLERANCE,
    each with its 95 % Wilson CI. A mean effect hides a split like 55 % toward and 45 % away."""
    from scipy.stats import binomtest

    differences = (np.asarray(method_scores, dtype=float) - np.asarray(reference_scores, dtype=float)) * (
        direction or 1)
    n = differences.size
    if n == 0:
        return {}
    counts = {"toward": int(np.sum(differences > UNCHANGED_TOLERANCE)),
              "away": int(np.sum(differences < -UNCHANGED_TOLERANCE))}
    counts["unchanged"] = n - counts["toward"] - counts["away"]
    moves: dict[str, float] = {}
    for name, count in counts.items():
        interval = binomtest(count, n).proportion_ci(0.95, method="wilson")
        moves.update({name: count / n, f"{name}_low": float(interval.low), f"{name}_high": float(interval.high)})
    return moves


def _standard_error(differences: np.ndarray) -> float:
    return float(np.std(differences, ddof=1) / math.sqrt(differences.size)) if differences.size >= 2 else float("nan")


def mean_evidence(method_scores: np.ndarray, reference_scores: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Paired mean difference on the same units: paired_test's effect, bootstrap CI and p, and the SE of the mean.
    No test when there are fewer than 2 units, or when every score of both sides is the same (a measure stuck at
    its floor or ceiling, e.g. a judge that rates everything 10, carries no information either way)."""
    untestable = "none: fewer than 2 paired units" if method_scores.size < 2 else _constant(
        [method_scores, reference_scores])
    if untestable:
        return {"n": int(method_scores.size), "effect": float(np.mean(method_scores - reference_scores))
                if method_scores.size else float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                "se": float("nan"), "p_value": float("nan"), "test": untestable}
    result = paired_test(method_scores, reference_scores, seed=seed)
    return {"n": result["n"], "effect": result["mean_diff"], "ci_low": result["ci_low"], "ci_high": result["ci_high"],
            "se": _standard_error(method_scores - reference_scores), "p_value": result["p_value"],
            "test": result["test"], "min_p": 2.0 ** (1 - result["n"])}


def seeds_note(seeds: Mapping[str, int], resampled: bool = True) -> str:
    """What a row's CI holds of the training seeds of its sides' vectors ({method: how many seeds}), for its
    detail: a learned method's seeds, and a mean-difference method said to be deterministic ('' for the base).
    `resampled`: whether the row's test resamples the seeds (seed_evidence) or takes each item's mean over them."""
    vectors = {m: vector_method(m) for m in seeds}  # prompt+bipo: bipo's vectors
    learned = {m: n for m, n in seeds.items() if vectors[m] is not None and vectors[m].LEARNED}
    notes = [f"{m}: deterministic (a mean difference)" for m in seeds if vectors[m] is not None and m not in learned]
    if learned and all(n == 1 for n in learned.values()):
        notes.insert(0, "one seed: the CI holds the item variance only")
    elif learned:
        counts = ", ".join(f"{m} {n}" for m, n in learned.items())
        notes.insert(0, f"seeds ({counts}): " + ("the CI resamples seeds, then items" if resampled else
                                                "each item's mean over seeds; the CI holds the item variance only"))
    return "; ".join(notes)


SEED_RESAMPLES = 2000  # hierarchical bootstrap draws, as many as paired_test's item bootstrap


def seed_evidence(method_scores: np.ndarray, reference_scores: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Paired mean difference on the same items where a side's scores come from vectors trained with several seeds
    (rows: training seeds, columns: items; a deterministic side has one row). The effect is the mean over items of
    the seed-mean difference; its 95 % CI, SE and p come from a hierarchical bootstrap that draws each side's seeds
    with replacement, then the items (the same items for both sides: they are paired), so that the CI holds the
    variance between seeds, which resampling items alone would leave out. p: twice the share of draws on the smaller
    side of 0 (the percentile interval inverted). With one seed on each side: mean_evidence's numbers exactly."""
    a, b = (np.atleast_2d(np.asarray(side, dtype=float)) for side in (method_scores, reference_scores))
    if a.shape[0] == 1 and b.shape[0] == 1:
        return mean_evidence(a[0], b[0], seed)
    differences = a.mean(axis=0) - b.mean(axis=0)
    n = differences.size
    untestable = "none: fewer than 2 paired units" if n < 2 else _constant([a.ravel(), b.ravel()])
    if untestable:
        return {"n": n, "effect": float(differences.mean()) if n else float("nan"), "ci_low": float("nan"),
                "ci_high": float("nan"), "se": float("nan"), "p_value": float("nan"), "test": untestable}
    rng = np.random.default_rng(seed)

    def seed_means(scores: np.ndarray) -> np.ndarray:
        """Per draw, the item scores averaged over a draw of the seeds with replacement (draws × items)."""
        drawn = rng.integers(0, scores.shape[0], size=(SEED_RESAMPLES, scores.shape[0]))
        weights = np.stack([np.bincount(row, minlength=scores.shape[0]) for row in drawn]) / scores.shape[0]
        return weights @ scores

    per_draw = seed_means(a) - seed_means(b)
    items = rng.integers(0, n, size=(SEED_RESAMPLES, n))
    effects = np.take_along_axis(per_draw, items, axis=1).mean(axis=1)
    low, high = np.percentile(effects, [2.5, 97.5])
    p_value = min(1.0, 2 * (min(np.sum(effects <= 0), np.sum(effects >= 0)) + 1) / (SEED_RESAMPLES + 1))
    return {"n": n, "effect": float(differences.mean()), "ci_low": float(low), "ci_high": float(high),
            "se": float(np.std(effects, ddof=1)), "p_value": float(p_value),
            "test": f"hierarchical_bootstrap ({a.shape[0]} vs {b.shape[0]} seeds, then items)",
            "min_p": max(2.0 ** (1 - n), 2 / (SEED_RESAMPLES + 1))}


def _constant(arrays: list[np.ndarray]) -> str:
    """Why no test can tell anything when every score is the same, else ''."""
    values = np.concatenate(arrays)
    return "none: every score is the same on both sides (a floor or ceiling)" if np.ptp(values) == 0 else ""


def strata_evidence(strata: dict[Any, tuple[np.ndarray, np.ndarray]], statistic: Any, seed: int = 0) -> dict[str, Any]:
    """paired_strata_test on per-stratum paired scores (claim c's gap statistics), with mean_evidence's rule for a
    measure stuck at its floor or ceiling."""
    untestable = _constant([np.asarray(side, dtype=float) for pair in strata.values() for side in pair])
    if untestable:
        return {"n": sum(len(a) for a, _ in strata.values()), "effect": 0.0, "ci_low": float("nan"),
                "ci_high": float("nan"), "se": float("nan"), "p_value": float("nan"), "test": untestable}
    result = paired_strata_test(strata, statistic, seed=seed)
    return {key: result[key] for key in ("n", "effect", "ci_low", "ci_high", "se", "p_value", "test", "min_p")}


def equivalence_evidence(method_scores: np.ndarray, reference_scores: np.ndarray, margin: float,
                         seed: int = 0) -> dict[str, Any]:
    """TOST for |mean difference| < margin on the same units, with the SE of the mean difference."""
    differences = method_scores - reference_scores
    if differences.size < 2:
        return mean_evidence(method_scores, reference_scores, seed)
    result = equivalence_test(differences, margin, seed=seed)
    return {"n": result["n"], "effect": result["mean_diff"], "ci_low": result["ci_low"], "ci_high": result["ci_high"],
            "se": _standard_error(differences), "p_value": result["p_value"], "test": result["test"],
            "min_p": 2.0 ** -result["n"]}


def verdict(row: ScorecardRow, spec: ScorecardSpec) -> tuple[str, str]:
    """(verdict, reason) of a row whose p_holm, mde and smallest_effect are set (rules in the module docstring)."""
    if math.isnan(row.p_holm):
        return "inconclusive (underpowered)", "not tested: " + row.test
    delta, underpowered = row.smallest_effect, not row.mde <= row.smallest_effect
    weak = "inconclusive (underpowered)" if underpowered else "inconclusive"
    power_note = (f"MDE {row.mde:.3g} {'>' if underpowered else '≤'} δ {delta:g}" if not math.isinf(row.mde) else
                  f"too few units ({row.n}) for any effect to reach significance")
    if row.kind == "equivalence":
        if row.p_holm < spec.alpha:
            return "supported", f"within ±{delta:g}: TOST p(Holm) = {row.p_holm:.2g}"
        if row.ci_high < -delta or row.ci_low > delta:
            return "contradicted", f"the 95 % CI lies outside ±{delta:g}"
        return weak, f"TOST not significant (p(Holm) = {row.p_holm:.2g}); {power_note}"
    oriented = row.effect * row.direction
    if row.p_holm < spec.alpha:
        if oriented > 0:
            return "supported", f"effect in the claimed direction, p(Holm) = {row.p_holm:.2g}"
        return "contradicted", f"effect reversed, p(Holm) = {row.p_holm:.2g}"
    far_end = row.ci_high if row.direction > 0 else -row.ci_low  # the CI's end in the claimed direction
    excluded = "; the 95 % CI excludes effects of δ or more" if far_end < delta and not underpowered else ""
    return weak, f"not significant (p(Holm) = {row.p_holm:.2g}); {power_note}{excluded}"


def finalise(rows: list[ScorecardRow], spec: ScorecardSpec) -> list[ScorecardRow]:
    """Holm-correct the p-values within each family, set each row's δ, MDE and verdict; returns the rows."""
    for family in FAMILIES:
        members = [row for row in rows if row.family == family]
        adjusted = holm([row.p_value for row in members]) if members else []
        tested = sum(1 for p in adjusted if not math.isnan(p))
        for row, p_holm in zip(members, adjusted):
            row.p_holm = p_holm
            row.smallest_effect = float(spec.smallest_effects[row.measure])
            if tested and row.min_p > spec.alpha / tested:  # too few units for any effect to reach significance
                row.mde = math.inf
            elif tested and math.isfinite(row.se):
                row.mde = minimum_detectable_effect(row.se, spec.alpha / tested, spec.power,
                                                    equivalence=row.kind == "equivalence")
            row.verdict, row.reason = verdict(row, spec)
    return rows


@dataclass
class Scorecard:
    """The rows, the claims the runs could not test (claim → why), and what the runs evaluated."""

    rows: list[ScorecardRow]
    untested: dict[str, str]
    spec: ScorecardSpec
    models: list[str]
    culture_data: list[str]

    def frame(self) -> pd.DataFrame:
        """One row per ScorecardRow, in the shape report.json documents (docs/scorecard.md)."""
        return pd.DataFrame([{"claim_text": CLAIMS[row.claim], "comparison": row.comparison, **asdict(row)}
                             for row in self.rows])

    def to_json(self) -> dict[str, Any]:
        return {"alpha": self.spec.alpha, "power": self.spec.power, "correction": "holm (within each family)",
                "mcq_metric": self.spec.mcq_metric, "smallest_effects": dict(self.spec.smallest_effects),
                "models": self.models, "culture_data": self.culture_data,
                "rows": [{"claim_text": CLAIMS[row.claim], "comparison": row.comparison,
                          **{k: _plain(v) for k, v in asdict(row).items()}} for row in self.rows],
                "untested": [{"claim": claim, "claim_text": CLAIMS[claim], "reason": reason}
                             for claim, reason in sorted(self.untested.items())]}


def _plain(value: Any) -> Any:
    """JSON has no NaN: a missing number is null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
