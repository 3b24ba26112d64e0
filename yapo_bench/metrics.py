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
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "DEFAULT_EPS",
    "accuracy",
    "bootstrap_ci",
    "bootstrap_ci_pair",
    "paired_test",
    "pnlg",
    "rca",
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


def _rca_arr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    s = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where((a == 0) | (b == 0), 0.0, 2 * a * b / np.where(s == 0, 1.0, s))
    return out


def _pnlg_arr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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
        vec: Callable[[np.ndarray, np.ndarray], np.ndarray] = _rca_arr
    elif statistic is pnlg:
        vec = _pnlg_arr
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


def _exact_sign_flip_p(diff: np.ndarray) -> float:
    """Two-sided exact p-value of the paired sign-flip permutation test on the mean difference."""
    nz = diff[diff != 0]
    if nz.size == 0:
        return 1.0
    observed = abs(nz.sum())
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=nz.size)))
    sums = np.abs(signs @ nz)
    return float(np.mean(sums >= observed - 1e-12 * max(1.0, observed)))


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
    if n_nonzero < _EXACT_MAX_NONZERO:
        test, p = "exact_sign_flip_permutation", _exact_sign_flip_p(diff)
    else:
        test, p = "wilcoxon_signed_rank", float(stats.wilcoxon(diff, zero_method="wilcox").pvalue)
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
