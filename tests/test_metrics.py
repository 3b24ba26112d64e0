"""Unit tests of yapo_bench.metrics: exact values, determinism and error messages."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from yapo_bench.metrics import accuracy, bootstrap_ci, bootstrap_ci_pair, paired_test, pnlg, rca


def test_accuracy() -> None:
    assert accuracy([True, False, True, True]) == 0.75
    assert accuracy([1, 0, 0.5]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"correct: expected per-item values in \[0, 1\]"):
        accuracy([36.4, 23.2])
    with pytest.raises(ValueError, match="correct: expected at least one value"):
        accuracy([])
    with pytest.raises(ValueError, match="correct: expected finite"):
        accuracy([0.0, float("nan")])


def test_rca_uk_example_and_harmonic_mean() -> None:
    assert rca(36.4, 23.2) == pytest.approx(2 * 36.4 * 23.2 / 59.6)
    assert round(rca(36.4, 23.2), 1) == 28.3
    assert rca(0.5, 0.5) == 0.5
    assert rca(1.0, 0.25) == pytest.approx(0.4)
    assert rca(0.364, 0.232) == pytest.approx(rca(36.4, 23.2) / 100)  # scale-equivariant
    assert rca(0.0, 0.7) == 0.0 and rca(0.7, 0.0) == 0.0 and rca(0.0, 0.0) == 0.0
    assert rca(1.0, 1.0, eps=1.0) == pytest.approx(2 / 3)  # the paper's eps form: 2ab / (a + b + eps)


def test_pnlg_uk_example_and_alpha() -> None:
    assert round(pnlg(36.4, 23.2), 3) == 0.443
    assert pnlg(0.364, 0.232) == pytest.approx(pnlg(36.4, 23.2))  # alpha = 1 is scale-free
    # alpha = 0: the raw gap; alpha = 0.5: gap / sqrt(mean).
    assert pnlg(0.6, 0.2, alpha=0.0) == pytest.approx(0.4)
    assert pnlg(0.6, 0.2, alpha=0.5) == pytest.approx(0.4 / np.sqrt(0.4))
    assert pnlg(0.6, 0.2, alpha=1.0) == pytest.approx(1.0)
    assert pnlg(0.2, 0.6) == pytest.approx(-1.0)  # sign: localized below non-localized
    assert pnlg(0.0, 0.0) == 0.0  # eps keeps 0/0 finite
    assert pnlg(0.3, 0.0) == pytest.approx(2.0)
    assert pnlg(1.0, 1.0, eps=0.5) == 0.0
    assert pnlg(2.0, 0.0, eps=1.0) == pytest.approx(1.0)  # 2 / (1 + 1)


def test_rca_pnlg_errors() -> None:
    with pytest.raises(ValueError, match="localized: expected a finite non-negative score"):
        rca(-1.0, 0.5)
    with pytest.raises(ValueError, match="nonlocalized: expected a finite non-negative score"):
        pnlg(0.5, float("inf"))
    with pytest.raises(ValueError, match="nonlocalized: expected a non-negative number"):
        rca(0.5, "0.4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"alpha: expected a number in \[0, 1\]"):
        pnlg(0.5, 0.4, alpha=2.0)
    with pytest.raises(ValueError, match="eps: expected eps > 0"):
        pnlg(0.5, 0.4, eps=0.0)


def test_bootstrap_ci_contains_mean_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, size=200).astype(float)
    lo, hi = bootstrap_ci(x, seed=3)
    assert lo < x.mean() < hi
    assert (lo, hi) == bootstrap_ci(x, seed=3)
    y = rng.normal(size=50)  # continuous, so another seed moves the percentiles
    assert bootstrap_ci(y, seed=4) != bootstrap_ci(y, seed=3)
    assert hi - lo == pytest.approx(2 * 1.96 * x.std() / np.sqrt(x.size), rel=0.25)  # about the normal width
    lo2, hi2 = bootstrap_ci(x, confidence=0.5, seed=3)
    assert lo <= lo2 < hi2 <= hi
    lo3, hi3 = bootstrap_ci(x, statistic=lambda v: float(np.median(v) + 0 * v.sum()), n_resamples=200, seed=3)
    assert lo3 <= hi3
    lo4, hi4 = bootstrap_ci(x, method="BCa", seed=3)
    assert lo4 < x.mean() < hi4


def test_bootstrap_ci_degenerate_rules() -> None:
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    assert bootstrap_ci([1, 1, 1, 1]) == (1.0, 1.0)
    assert bootstrap_ci([0, 0, 0], method="BCa") == (0.0, 0.0)
    with pytest.raises(ValueError, match="values: expected at least one value"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match=r"confidence: expected a number in \(0, 1\)"):
        bootstrap_ci([0, 1], confidence=95)
    with pytest.raises(ValueError, match="n_resamples: expected a positive integer"):
        bootstrap_ci([0, 1], n_resamples=0)
    with pytest.raises(ValueError, match="method: expected"):
        bootstrap_ci([0, 1], method="normal")


def test_bootstrap_ci_pair_rca_pnlg() -> None:
    rng = np.random.default_rng(2)
    loc = (rng.random(300) < 0.6).astype(float)
    non = (rng.random(250) < 0.3).astype(float)
    point_rca = rca(loc.mean(), non.mean())
    lo, hi = bootstrap_ci_pair(loc, non, statistic=rca, seed=0)
    assert lo < point_rca < hi
    assert (lo, hi) == bootstrap_ci_pair(loc, non, statistic=rca, seed=0)
    point_pnlg = pnlg(loc.mean(), non.mean())
    plo, phi = bootstrap_ci_pair(loc, non, statistic=pnlg, seed=0)
    assert plo < point_pnlg < phi
    # A generic callable (alpha = 0.5) goes through the slow path and agrees with its own point estimate.
    half = functools.partial(pnlg, alpha=0.5)
    hlo, hhi = bootstrap_ci_pair(loc, non, statistic=half, n_resamples=300, seed=0)
    assert hlo < half(loc.mean(), non.mean()) < hhi
    # Degenerate: neither set varies.
    assert bootstrap_ci_pair([1, 1], [0, 0]) == (0.0, 0.0)
    assert bootstrap_ci_pair([1, 1], [1], statistic=pnlg) == (0.0, 0.0)
    with pytest.raises(ValueError, match="nonlocalized_values: expected at least one value"):
        bootstrap_ci_pair([1, 0], [])


def test_paired_test_detects_real_shift() -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(5.0, 1.0, size=80)
    method = base + 0.5 + rng.normal(0, 0.5, size=80)
    res = paired_test(method, base)
    assert res["test"] == "wilcoxon_signed_rank"
    assert res["p_value"] < 1e-6
    assert res["ci_low"] < res["mean_diff"] < res["ci_high"] and res["ci_low"] > 0
    assert res["n"] == 80 and res["mean_diff"] == pytest.approx(method.mean() - base.mean())
    assert paired_test(method, base) == res  # deterministic


def test_paired_test_null_and_fallbacks() -> None:
    rng = np.random.default_rng(6)
    base = rng.normal(5.0, 1.0, size=80)
    null = paired_test(base + rng.normal(0, 0.5, size=80), base)
    assert null["p_value"] > 0.05 and null["ci_low"] < 0 < null["ci_high"]
    same = paired_test([1, 0, 1, 1], [1, 0, 1, 1])
    assert same["test"] == "exact_sign_flip_permutation"
    assert same["p_value"] == 1.0 and same["mean_diff"] == 0.0 and (same["ci_low"], same["ci_high"]) == (0.0, 0.0)
    # Tiny n: 3 items all improved -> exact two-sided p = 2 / 2**3.
    tiny = paired_test([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    assert tiny["test"] == "exact_sign_flip_permutation" and tiny["p_value"] == pytest.approx(0.25)
    # 0/1 correctness with 5 discordant pairs all in favour of the method: p = 2 / 32.
    mcq = paired_test([1, 1, 1, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0, 1])
    assert mcq["n_nonzero"] == 5 and mcq["p_value"] == pytest.approx(1 / 16)


def test_paired_test_errors() -> None:
    with pytest.raises(ValueError, match="method_scores: expected the same length as base_scores.*got 3 and 2"):
        paired_test([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="base_scores: expected at least one value"):
        paired_test([1], [])
    with pytest.raises(ValueError, match="method_scores: expected finite"):
        paired_test([1, float("nan")], [1, 0])
