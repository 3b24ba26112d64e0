"""Evaluation metrics of the YaPO paper (accuracy, RCA, PNLG) and the statistics we report with them.

Scale convention (why: the paper prints MCQ accuracy in percent and open-ended judge scores on 0-10):
- `accuracy` takes per-item outcomes in [0, 1] (bools or per-item credit) and returns a fraction in [0, 1].
- `rca` and `pnlg` take two aggregate scores in the *same* unit, any non-negative scale (fraction, percent,
  0-10 judge score). RCA is scale-equivariant (rca(k·a, k·b) = k·rca(a, b)); PNLG with alpha = 1 is
  scale-free (up to eps). So rca(36.4, 23.2) = 28.3 (percent) and pnlg(36.4, 23.2) = 0.443, exactly the
  numbers printed in the paper's Table 5.
- Mixing units (a fraction with a percentage) cannot be detected from two numbers; callers must not do it.

The paper writes RCA and PNLG as expectations of per-instance ratios (eqs. 5, 6), but its tables compute them
on aggregate accuracies (localized and non-localized means); the functions here are the aggregate (plug-in)
form, which reproduces every per-country cell of Table 5 (tests/test_published.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "DEFAULT_EPS",
    "accuracy",
    "bootstrap_ci",
    "bootstrap_ci_pair",
    "equivalence_test",
    "holm",
    "minimum_detectable_effect",
    "paired_strata_test",
    "paired_test",
    "pnlg",
    "pnlg_array",
    "rca",
    "rca_array",
]

# The paper only says eps > 0 "arbitrarily small for numerical stability"; this one never moves a printed digit.
DEFAULT_EPS = 1e-12
# Below this many non-zero paired differences the Wilcoxon p-value is replaced by an exact sign-flip test
# (scipy's Wilcoxon falls back to a normal approximation with ties or zeros, poor for tiny n).
_EXACT_MAX_NONZERO = 10

ArrayLike = Sequence[float] | Sequence[bool] | np.ndarray


def _as_1d(values: Any, name: str) -> np.ndarray:
    """Validate `values` as a non-empty 1-D finite float array; raise ValueError naming `name`."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a 1-D sequence of numbers") from None
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: expected at least one value, got an empty sequence")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite numbers, got NaN or inf")
    return arr


def _as_score(value: Any, name: str) -> float:
    """Validate one aggregate score: a finite number >= 0 (the paper's S_pi >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a non-negative number, got {value!r}")  # noqa: TRY004 (one error type)
    x = float(value)
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{name}: expected a finite non-negative score, got {x!r}")
    return x


def accuracy(correct: ArrayLike) -> float:
    """Mean of per-item outcomes, as a fraction in [0, 1] (multiply by 100 for the paper's percent).

    `correct` holds bools or per-item credit in [0, 1]; anything outside raises (a percentage passed by
    mistake is caught here).
    """
    arr = _as_1d(correct, "correct")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(
            f"correct: expected per-item values in [0, 1] (bools or credit), got range [{arr.min()}, {arr.max()}]"
        )
    return float(arr.mean())


def rca(localized: float, nonlocalized: float, eps: float = 0.0) -> float:
    """Robust Cultural Accuracy (paper Def. 2): harmonic mean 2·a·b / (a + b + eps) of the two scores.

    Both scores in the same unit; the result is in that unit. 0 when either score is 0 (also when both are,
    where the plain formula is 0/0). `eps` is the paper's stabiliser; the default 0 gives the exact harmonic mean.
    """
    a = _as_score(localized, "localized")
    b = _as_score(nonlocalized, "nonlocalized")
    e = _as_score(eps, "eps")
    if a == 0 or b == 0:
        return 0.0
    return 2 * a * b / (a + b + e)


def pnlg(localized: float, nonlocalized: float, alpha: float = 1.0, eps: float = DEFAULT_EPS) -> float:
    """Performance-Normalized Localization Gap (paper Def. 1, eq. 5): (a − b) / (p̄^alpha + eps), p̄ = (a + b) / 2.

    alpha in [0, 1]: 0 is the raw gap (divided by 1 + eps), 1 (the paper's default) normalises by the mean.
    Positive means localized prompts score higher. With alpha = 1 the value is scale-free; with alpha < 1 it
    depends on the unit of the scores (the paper does not say which unit it used for alpha < 1).
    """
    a = _as_score(localized, "localized")
    b = _as_score(nonlocalized, "nonlocalized")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}")
    e = _as_score(eps, "eps")
    if e == 0:
        raise ValueError("eps: expected eps > 0 (paper eq. 5), got 0")
    mean = (a + b) / 2
    return (a - b) / (mean**alpha + e)


def _check_bootstrap_args(confidence: float, n_resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"n_resamples: expected a positive integer, got {n_resamples!r}")


def _interval(res: Any, fallback: float) -> tuple[float, float]:
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isnan(lo) or math.isnan(hi):  # BCa on a degenerate resample distribution; nothing to widen
        return (fallback, fallback)
    return (lo, hi)


def bootstrap_ci(
    values: ArrayLike,
    statistic: Callable[..., float] = np.mean,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float]:
    """Bootstrap confidence interval of `statistic(values)` (scipy.stats.bootstrap; deterministic for a seed).

    Degenerate rule: with a single value, or all values equal, every resample gives the same statistic, so the
    interval is (x, x) with x = statistic(values); no bootstrap is run. `method` is "percentile" (default:
    robust with few distinct values) or "BCa"; a BCa interval that comes back NaN is returned as (x, x).
    """
    arr = _as_1d(values, "values")
    _check_bootstrap_args(confidence, n_resamples)
    if method not in ("percentile", "BCa", "basic"):
        raise ValueError(f"method: expected 'percentile', 'BCa' or 'basic', got {method!r}")
    point = float(statistic(arr))
    if arr.size < 2 or np.all(arr == arr[0]):
        return (point, point)
    if statistic in (np.mean, np.median, np.std, np.var):  # numpy reductions accept axis: vectorised resampling
        res = stats.bootstrap(
            (arr,),
            statistic,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method=method,
            random_state=np.random.default_rng(seed),
            vectorized=True,
        )
    else:
        res = stats.bootstrap(
            (arr,),
            lambda x: float(statistic(x)),
            confidence_level=confidence,
            n_resamples=n_resamples,
            method=method,
            random_state=np.random.default_rng(seed),
            vectorized=False,
        )
    return _interval(res, point)


def rca_array(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`rca` elementwise on arrays of aggregate scores (no validation: for resampled means)."""
    s = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where((a == 0) | (b == 0), 0.0, 2 * a * b / np.where(s == 0, 1.0, s))
    return out


def pnlg_array(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`pnlg` (alpha = 1) elementwise on arrays of aggregate scores (no validation: for resampled means)."""
    return (a - b) / ((a + b) / 2 + DEFAULT_EPS)


def bootstrap_ci_pair(
    localized_values: ArrayLike,
    nonlocalized_values: ArrayLike,
    statistic: Callable[[float, float], float] = rca,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float]:
    """CI of statistic(mean(localized_values), mean(nonlocalized_values)), e.g. RCA or PNLG on aggregate accuracy.

    The two item sets are resampled independently (they are different prompts, possibly of different sizes),
    matching how the paper computes RCA/PNLG from two aggregate accuracies. `statistic` is `rca`, `pnlg`
    (vectorised fast paths with their defaults) or any f(loc_mean, nonloc_mean) -> float (e.g.
    functools.partial(pnlg, alpha=0.5)). Degenerate rule: when neither set varies (each has one value or all
    equal), the interval is (x, x) with x the point estimate.
    """
    loc = _as_1d(localized_values, "localized_values")
    non = _as_1d(nonlocalized_values, "nonlocalized_values")
    if loc.min() < 0 or non.min() < 0:
        raise ValueError("localized_values/nonlocalized_values: expected non-negative scores")
    _check_bootstrap_args(confidence, n_resamples)
    if method not in ("percentile", "BCa", "basic"):
        raise ValueError(f"method: expected 'percentile', 'BCa' or 'basic', got {method!r}")
    point = float(statistic(float(loc.mean()), float(non.mean())))
    if np.all(loc == loc[0]) and np.all(non == non[0]):
        return (point, point)
    if statistic is rca:
        vec: Callable[[np.ndarray, np.ndarray], np.ndarray] = rca_array
    elif statistic is pnlg:
        vec = pnlg_array
    else:
        vec = np.vectorize(lambda x, y: float(statistic(float(x), float(y))), otypes=[float])

    def stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return vec(np.mean(x, axis=axis), np.mean(y, axis=axis))

    res = stats.bootstrap(
        (loc, non),
        stat,
        paired=False,
        vectorized=True,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method=method,
        random_state=np.random.default_rng(seed),
    )
    return _interval(res, point)


def _exact_sign_flip_p(diff: np.ndarray, alternative: str = "two-sided") -> float:
    """Exact p-value of the paired sign-flip permutation test on the mean difference ("two-sided", or
    "greater": the mean difference is above 0)."""
    nz = diff[diff != 0]
    if nz.size == 0:
        return 1.0
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=nz.size)))
    sums = signs @ nz
    observed = nz.sum()
    tolerance = 1e-12 * max(1.0, abs(observed))
    if alternative == "greater":
        return float(np.mean(sums >= observed - tolerance))
    return float(np.mean(np.abs(sums) >= abs(observed) - tolerance))


def _signed_test_p(diff: np.ndarray) -> tuple[float, str]:
    """(two-sided p, test name) of the paired test on `diff` that paired_test documents: Wilcoxon signed-rank, or
    the exact sign-flip test when fewer than 10 differences are non-zero."""
    if int(np.count_nonzero(diff)) < _EXACT_MAX_NONZERO:
        return _exact_sign_flip_p(diff), "exact_sign_flip_permutation"
    return float(stats.wilcoxon(diff, zero_method="wilcox").pvalue), "wilcoxon_signed_rank"


def _sign_flip_greater_p(diff: np.ndarray) -> tuple[float, str]:
    """(p, test name) of the one-sided sign-flip test that the mean of `diff` is above 0: exact below 10 non-zero
    differences, else the normal approximation of the sign-flip distribution of the sum (mean 0, variance Σd²).
    A test of the mean itself, unlike Wilcoxon's (which a skewed difference, e.g. many 0s and a few −100s, fools)."""
    if int(np.count_nonzero(diff)) < _EXACT_MAX_NONZERO:
        return _exact_sign_flip_p(diff, "greater"), "exact_sign_flip"
    return float(stats.norm.sf(diff.sum() / math.sqrt(float(np.sum(diff**2))))), "sign_flip_normal_approximation"


def paired_test(
    method_scores: ArrayLike,
    base_scores: ArrayLike,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired comparison of a steered method against the base model on the same items.

    Returns n, mean_method, mean_base, mean_diff (method − base), ci_low/ci_high (bootstrap CI of the mean
    difference), p_value (two-sided) and test: "wilcoxon_signed_rank" (scipy, zero_method="wilcox") or, when
    fewer than 10 differences are non-zero (including all zero, p = 1), "exact_sign_flip_permutation".
    Scores can be on any scale (0/1 correctness, judge scores) but must be finite.
    """
    m = _as_1d(method_scores, "method_scores")
    b = _as_1d(base_scores, "base_scores")
    if m.size != b.size:
        raise ValueError(
            f"method_scores: expected the same length as base_scores (paired items), got {m.size} and {b.size}"
        )
    diff = m - b
    lo, hi = bootstrap_ci(diff, np.mean, confidence=confidence, n_resamples=n_resamples, seed=seed)
    n_nonzero = int(np.count_nonzero(diff))
    p, test = _signed_test_p(diff)
    return {
        "n": int(m.size),
        "mean_method": float(m.mean()),
        "mean_base": float(b.mean()),
        "mean_diff": float(diff.mean()),
        "ci_low": lo,
        "ci_high": hi,
        "confidence": confidence,
        "p_value": p,
        "test": test,
        "n_nonzero": n_nonzero,
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in input order: with p_(1) ≤ … ≤ p_(m) sorted,
    adj_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)). NaN entries (rows with no test) stay NaN and do not count
    toward m. Controls the family-wise error rate under any dependence between the tests."""
    ps = np.asarray(p_values, dtype=float)
    if ps.ndim != 1:
        raise ValueError(f"p_values: expected a 1-D sequence, got shape {ps.shape}")
    tested = np.flatnonzero(~np.isnan(ps))
    if np.any((ps[tested] < 0) | (ps[tested] > 1)):
        raise ValueError("p_values: expected numbers in [0, 1] (or NaN for no test)")
    adjusted = np.full(ps.shape, np.nan)
    running = 0.0
    for rank, index in enumerate(tested[np.argsort(ps[tested], kind="stable")]):
        running = max(running, min(1.0, (tested.size - rank) * ps[index]))
        adjusted[index] = running
    return adjusted.tolist()


def minimum_detectable_effect(standard_error: float, alpha: float = 0.05, power: float = 0.8,
                              equivalence: bool = False) -> float:
    """The smallest true effect that a z-test on an estimate with this standard error detects with probability
    `power`: (z_{1−α/2} + z_{power})·se, two-sided at level `alpha`. With `equivalence`: the smallest margin that
    a TOST (each one-sided test at level `alpha`) establishes with probability `power` when the true effect is 0:
    (z_{1−α} + z_{(1+power)/2})·se."""
    if not math.isfinite(standard_error) or standard_error < 0:
        raise ValueError(f"standard_error: expected a finite number ≥ 0, got {standard_error!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a number in (0, 1), got {alpha!r}")
    if not 0 < power < 1:
        raise ValueError(f"power: expected a number in (0, 1), got {power!r}")
    if equivalence:
        return float((stats.norm.ppf(1 - alpha) + stats.norm.ppf((1 + power) / 2)) * standard_error)
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * standard_error)


def equivalence_test(differences: ArrayLike, margin: float, confidence: float = 0.95, n_resamples: int = 2000,
                     seed: int = 0) -> dict[str, Any]:
    """Two one-sided tests (TOST) that the mean paired difference lies inside (−margin, +margin): each a one-sided
    sign-flip test of the mean (exact below 10 non-zero differences, else its normal approximation) on the shifted
    differences d + margin > 0 and margin − d > 0. Equivalence at level α when p_value = max(p_lower, p_upper) < α.
    Also returns n, mean_diff and its bootstrap CI (ci_low, ci_high)."""
    diff = _as_1d(differences, "differences")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin <= 0:
        raise ValueError(f"margin: expected a finite number > 0, got {margin!r}")
    p_lower, test = _sign_flip_greater_p(diff + margin)
    p_upper, _ = _sign_flip_greater_p(margin - diff)
    low, high = bootstrap_ci(diff, np.mean, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return {"n": int(diff.size), "mean_diff": float(diff.mean()), "ci_low": low, "ci_high": high,
            "margin": float(margin), "p_lower": p_lower, "p_upper": p_upper, "p_value": max(p_lower, p_upper),
            "test": f"tost_{test}"}


StratumMeans = dict[Any, np.ndarray]


def _resampled_means(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, draws: int,
                     kind: str) -> tuple[np.ndarray, np.ndarray]:
    """`draws` resampled (mean of a, mean of b) of one stratum of paired items: a bootstrap (items drawn with
    replacement, the same draw for both methods) or a sign flip (each item's two values swapped with prob. ½)."""
    n = a.size
    if kind == "bootstrap":
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=draws) / n
        return weights @ a, weights @ b
    swapped = (rng.random((draws, n)) < 0.5) @ (b - a) / n
    return a.mean() + swapped, b.mean() - swapped


def paired_strata_test(strata: Mapping[Any, tuple[ArrayLike, ArrayLike]],
                       statistic: Callable[[StratumMeans, StratumMeans], np.ndarray], confidence: float = 0.95,
                       n_resamples: int = 2000, n_permutations: int = 4000, seed: int = 0) -> dict[str, Any]:
    """A statistic of two methods' per-stratum mean scores on the same items (e.g. |PNLG_base| − |PNLG_yapo| over
    (country, localization) strata): its value, paired bootstrap CI and SE, and a paired randomization p-value.

    strata: key -> (scores of method a, scores of method b), paired by position. statistic(means_a, means_b) takes
    dicts key -> array of stratum means and returns the effect elementwise; it must be antisymmetric
    (statistic(b, a) = −statistic(a, b)), so that under H0 (the two methods exchangeable on every item) the
    randomization distribution is symmetric about 0. Bootstrap: items resampled within each stratum, the same draw
    for both methods. Randomization: each item's two scores swapped with probability ½; two-sided
    p = (1 + #{|T*| ≥ |T|}) / (1 + n_permutations). Returns n (items), effect, ci_low, ci_high, se (SD of the
    bootstrap effects), p_value, min_p (the smallest p this test can return here: max(1/(1 + n_permutations),
    2^(1−n))) and test."""
    _check_bootstrap_args(confidence, n_resamples)
    if not strata:
        raise ValueError("strata: expected at least one stratum of paired scores")
    pairs = {}
    for key, (a, b) in strata.items():
        a_arr, b_arr = _as_1d(a, f"strata[{key!r}] a"), _as_1d(b, f"strata[{key!r}] b")
        if a_arr.size != b_arr.size:
            raise ValueError(f"strata[{key!r}]: expected paired scores of equal length, got {a_arr.size} and "
                             f"{b_arr.size}")
        pairs[key] = (a_arr, b_arr)
    observed = float(statistic({k: np.asarray(a.mean()) for k, (a, _) in pairs.items()},
                               {k: np.asarray(b.mean()) for k, (_, b) in pairs.items()}))
    rng = np.random.default_rng(seed)
    draws = {kind: [_resampled_means(a, b, rng, count, kind) for a, b in pairs.values()]
             for kind, count in (("bootstrap", n_resamples), ("flip", n_permutations))}
    effects = {kind: np.asarray(statistic(dict(zip(pairs, (m[0] for m in means))),
                                          dict(zip(pairs, (m[1] for m in means)))), dtype=float)
               for kind, means in draws.items()}
    tail = (1 - confidence) / 2
    low, high = np.quantile(effects["bootstrap"], [tail, 1 - tail])
    tolerance = 1e-12 * max(1.0, abs(observed))
    extreme = int(np.sum(np.abs(effects["flip"]) >= abs(observed) - tolerance))
    n = sum(a.size for a, _ in pairs.values())
    return {"n": n, "effect": observed, "ci_low": float(low), "ci_high": float(high),
            "se": float(np.std(effects["bootstrap"], ddof=1)), "p_value": (1 + extreme) / (1 + n_permutations),
            "min_p": max(1 / (1 + n_permutations), 2.0 ** (1 - n)), "test": "paired_sign_flip_randomization"}
