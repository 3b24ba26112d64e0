"""Unit tests of yapo_bench.metrics: exact values, determinism and error messages."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import stats

from yapo_bench.metrics import (
    accuracy,
    bootstrap_ci,
    bootstrap_ci_pair,
    equivalence_test,
    holm,
    minimum_detectable_effect,
    paired_strata_test,
    paired_test,
    pnlg,
    pnlg_array,
    rca,
)


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


def test_holm_matches_its_closed_form() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.01, float("nan"), 0.02])  # NaN: not a test, not counted in m
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)
    ps = np.random.default_rng(0).uniform(0, 0.2, 12)  # Holm is never below the raw p nor above Bonferroni
    assert np.all(np.array(holm(ps)) >= ps) and np.all(np.array(holm(ps)) <= np.minimum(1, 12 * ps) + 1e-12)
    with pytest.raises(ValueError, match="p_values: expected numbers in"):
        holm([0.1, 1.5])


def test_minimum_detectable_effect_matches_the_closed_form_and_delivers_its_power() -> None:
    # the textbook one-sample figure: n ≈ 7.85 / d² at α = 0.05 two-sided, 80 % power (sd 1, n 100 → d ≈ 0.280)
    assert minimum_detectable_effect(0.1) == pytest.approx(0.28016, abs=1e-4)
    assert minimum_detectable_effect(0.1) ** 2 * 100 == pytest.approx(7.849, abs=1e-3)
    se, alpha = 0.3, 0.01
    mde = minimum_detectable_effect(se, alpha)
    z = stats.norm.ppf(1 - alpha / 2)
    assert stats.norm.cdf(mde / se - z) + stats.norm.cdf(-mde / se - z) == pytest.approx(0.8, abs=1e-3)
    margin = minimum_detectable_effect(se, alpha, equivalence=True)  # TOST power at true effect 0: 2Φ(m/se − z) − 1
    assert 2 * stats.norm.cdf(margin / se - stats.norm.ppf(1 - alpha)) - 1 == pytest.approx(0.8, abs=1e-9)
    # and in simulation: a true effect of the MDE is detected ~80 % of the time by a two-sided test at α
    rng = np.random.default_rng(0)
    n, sd = 60, 2.0
    effect = minimum_detectable_effect(sd / np.sqrt(n), 0.05)
    samples = rng.normal(effect, sd, size=(4000, n))
    rejected = stats.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.03)
    with pytest.raises(ValueError, match="power"):
        minimum_detectable_effect(0.1, power=1.0)


def test_equivalence_test_tost() -> None:
    rng = np.random.default_rng(0)
    close = rng.normal(0.0, 1.0, 400)
    result = equivalence_test(close, margin=0.5)
    assert result["p_value"] < 1e-4 and result["p_value"] == max(result["p_lower"], result["p_upper"])
    assert equivalence_test(close, margin=0.01)["p_value"] > 0.3  # too tight a margin for this n
    assert equivalence_test(rng.normal(2.0, 1.0, 400), margin=1.0)["p_value"] > 0.99  # outside the margin
    # skewed: most items unchanged, a few lose 100 points; the mean (−8) is far outside ±1 though the median is 0
    skewed = np.where(np.arange(1000) < 80, -100.0, 0.0)
    assert equivalence_test(skewed, margin=1.0)["p_value"] > 0.99
    # exact for few items: 4 zero differences give p = 1/16 on each side
    assert equivalence_test(np.zeros(4), margin=1.0)["p_value"] == pytest.approx(1 / 16)
    with pytest.raises(ValueError, match="margin"):
        equivalence_test(close, margin=0.0)


def test_paired_strata_test_on_a_gap_statistic() -> None:
    rng = np.random.default_rng(1)
    loc, non = rng.normal(60, 8, 120), rng.normal(30, 8, 120)
    strata = {"localized": (loc, loc), "nonlocalized": (non + 25, non)}  # method a lifts non-localized items

    def narrowing(a: dict, b: dict) -> np.ndarray:
        gap_b, gap_a = (pnlg_array(m["localized"], m["nonlocalized"]) for m in (b, a))
        return np.abs(gap_b) - np.abs(gap_a)

    result = paired_strata_test(strata, narrowing)
    expected = abs(pnlg(loc.mean(), non.mean())) - abs(pnlg(loc.mean(), non.mean() + 25))
    assert result["effect"] == pytest.approx(expected) and result["ci_low"] < expected < result["ci_high"]
    assert result["ci_low"] > 0 and result["p_value"] < 0.001 and result["n"] == 240
    same = paired_strata_test({"localized": (loc, loc), "nonlocalized": (non, non)}, narrowing)
    assert same["effect"] == 0 and same["p_value"] == 1.0
    nulls = [paired_strata_test({"localized": (loc, loc + rng.normal(0, 1, 120)),
                                 "nonlocalized": (non, non + rng.normal(0, 1, 120))}, narrowing, n_resamples=300,
                                n_permutations=300, seed=r) for r in range(60)]  # no effect: ~5 % rejections
    assert np.mean([r["p_value"] < 0.05 for r in nulls]) < 0.15
    assert np.mean([r["ci_low"] < 0 < r["ci_high"] for r in nulls]) > 0.85
    with pytest.raises(ValueError, match="equal length"):
        paired_strata_test({"x": ([1.0, 2.0], [1.0])}, narrowing)
