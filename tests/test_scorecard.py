"""The claims scorecard on synthetic runs whose truth is known: a real effect is supported, a null effect on a
handful of items is inconclusive (underpowered), a reversed effect is contradicted, an MMLU run equivalent to the
base is preserved; plus the verdict rules and the report defects fixed beside it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from yapo_bench.report.claims import build_scorecard
from yapo_bench.report.runs import EvalRun
from yapo_bench.report.scorecard import ScorecardRow, ScorecardSpec, finalise, verdict

RNG_SEED = 7


def _mcq_sample(doc_id: int, country: str, localization: str, score: float) -> dict:
    p = min(max(score, 1.0), 99.0) / 100.0  # two options: P(gold) = p, so the answer KL between runs is known
    doc = {"item_id": f"{country}-{doc_id}-{localization}", "question_id": f"{country}-q{doc_id}"}
    return {"doc_id": doc_id, "doc": doc,
            "p_gold_norm": p, "acc": float(p > 0.5),
            "filtered_resps": [[str(math.log(p)), "False"], [str(math.log(1 - p)), "False"]]}


def culture_run(method: str, multiplier: float, scores: dict[tuple[str, str], np.ndarray], direction: int = 1,
                vector: str | None = None) -> EvalRun:
    """A run whose culture MCQ item scores (p_gold_norm, %) are `scores[(country, localization)]`."""
    samples = {f"culture_mcq_{c}_{loc}": [_mcq_sample(i, c, loc, float(v)) for i, v in enumerate(values)]
               for (c, loc), values in scores.items()}
    metrics = {task: {"p_gold_norm": float(np.mean([s["p_gold_norm"] for s in rows])),
                      "acc": float(np.mean([s["acc"] for s in rows]))} for task, rows in samples.items()}
    steering = None if method == "base" else {"multiplier": multiplier, "direction": direction}
    return EvalRun(path=Path(f"/nowhere/{method}-{multiplier}/results_x.json"), method=method, multiplier=multiplier,
                   model="tiny", steering=steering,
                   vector=None if method == "base" else {"method": method, "path": vector, "data": "synthetic"},
                   metrics=metrics, stderrs={}, samples=samples, label=f"{method}@{multiplier:g}",
                   culture_data="culture-mini")


def _scores(n: int, shift: dict[str, float], base: dict[str, float], noise: float, seed: int = RNG_SEED,
            country: str = "egypt") -> dict[tuple[str, str], np.ndarray]:
    rng = np.random.default_rng(seed)
    return {(country, loc): base[loc] + shift.get(loc, 0.0) + rng.normal(0, noise, n)
            for loc in ("localized", "nonlocalized")}


def _rows(scorecard, claim: str, **where) -> list[ScorecardRow]:
    return [r for r in scorecard.rows if r.claim == claim and all(getattr(r, k) == v for k, v in where.items())]


BASE_LEVEL = {"localized": 50.0, "nonlocalized": 40.0}


def _base_and(method_shift: float, n: int, noise: float = 3.0) -> list[EvalRun]:
    base = _scores(n, {}, BASE_LEVEL, 5.0)
    rng = np.random.default_rng(RNG_SEED + 1)
    steered = {key: values + method_shift + rng.normal(0, noise, n) for key, values in base.items()}
    return [culture_run("base", 0.0, base), culture_run("yapo", 1.0, steered)]


def test_a_real_effect_is_supported() -> None:
    (row,) = _rows(build_scorecard(_base_and(+4.0, 100)), "b", scope="pooled")
    assert (row.method, row.reference, row.n) == ("yapo", "base", 200)
    assert row.effect == pytest.approx(4.0, abs=0.6) and row.ci_low > 0
    assert row.verdict == "supported" and row.p_holm < 0.05 and row.mde < 4.0


def test_a_null_effect_on_a_few_items_is_inconclusive_underpowered() -> None:
    (row,) = _rows(build_scorecard(_base_and(0.0, 2)), "b", scope="pooled")
    assert row.n == 4 and row.verdict == "inconclusive (underpowered)"
    assert math.isinf(row.mde)  # 4 paired items: no sign-flip test reaches p < 0.05 / m at all


def test_a_measure_stuck_at_its_ceiling_is_not_tested() -> None:
    """A judge that rates everything 10 (the demo's 135M judge) says nothing, however many items it rated."""
    ceiling = {("egypt", loc): np.full(300, 99.0) for loc in ("localized", "nonlocalized")}
    card = build_scorecard([culture_run("base", 0.0, ceiling), culture_run("yapo", 1.0, ceiling)])
    for row in card.rows:  # the MCQ difference and the gap statistics alike
        assert math.isnan(row.p_value) and row.verdict == "inconclusive (underpowered)" and "ceiling" in row.reason
    assert {row.claim for row in card.rows} == {"b", "c"}


def test_a_reversed_effect_is_contradicted() -> None:
    (row,) = _rows(build_scorecard(_base_and(-4.0, 100)), "b", scope="pooled")
    assert row.effect < 0 and row.verdict == "contradicted" and "reversed" in row.reason


def test_a_precise_null_is_inconclusive_but_not_underpowered() -> None:
    """Many items, no effect, a tight CI below δ = 1 point: the run had the power and says it excludes δ."""
    (row,) = _rows(build_scorecard(_base_and(0.0, 400, noise=0.5)), "b", scope="pooled")
    assert abs(row.effect) < 0.1 and row.ci_high < 1.0 and row.mde < 1.0
    assert row.verdict == "inconclusive" and "excludes effects of δ or more" in row.reason


def test_the_gap_narrows_when_yapo_lifts_non_localized_scores() -> None:
    base = _scores(150, {}, {"localized": 60.0, "nonlocalized": 30.0}, 8.0)
    yapo = {("egypt", "localized"): base[("egypt", "localized")],
            ("egypt", "nonlocalized"): base[("egypt", "nonlocalized")] + 25.0}
    card = build_scorecard([culture_run("base", 0.0, base), culture_run("yapo", 1.0, yapo)])
    pnlg, rca = (_rows(card, "c", measure=m)[0] for m in ("pnlg", "rca_mcq"))
    loc, non = base[("egypt", "localized")].mean(), base[("egypt", "nonlocalized")].mean()
    expected = abs((loc - non) / ((loc + non) / 2)) - abs((loc - non - 25) / ((loc + non + 25) / 2))
    assert pnlg.effect == pytest.approx(expected, rel=1e-6) and pnlg.verdict == "supported"
    assert rca.effect > 0 and rca.verdict == "supported"


def _mmlu_run(method: str, correct: np.ndarray) -> EvalRun:
    samples = [{"doc_id": i, "acc": float(c)} for i, c in enumerate(correct)]
    return EvalRun(path=Path(f"/nowhere/{method}/results_x.json"), method=method,
                   multiplier=0.0 if method == "base" else 1.0, model="tiny",
                   steering=None if method == "base" else {"multiplier": 1.0}, vector=None,
                   metrics={"mmlu_cloze_anatomy": {"acc": float(np.mean(correct))}}, stderrs={},
                   samples={"mmlu_cloze_anatomy": samples}, label=method)


def test_mmlu_equivalent_to_the_base_is_preserved_and_damage_is_contradicted() -> None:
    base = (np.random.default_rng(0).random(1000) < 0.4).astype(float)
    kept = base.copy()
    kept[:2], kept[-2:] = 1 - kept[:2], 1 - kept[-2:]  # four answers flip, both ways: equivalent within ±1 point
    (row,) = _rows(build_scorecard([_mmlu_run("base", base), _mmlu_run("yapo", kept)]), "d")
    assert row.kind == "equivalence" and row.n == 1000 and row.verdict == "supported" and "at chance" not in row.detail
    guessing = (np.random.default_rng(1).random(200) < 0.27).astype(float)  # a model at chance: flagged
    (row,) = _rows(build_scorecard([_mmlu_run("base", guessing), _mmlu_run("yapo", guessing)]), "d")
    assert row.verdict == "supported" and "at chance" in row.detail
    damaged = np.where(np.arange(1000) < 200, 0.0, base)  # 200 items forced wrong: ~8 points lost
    (row,) = _rows(build_scorecard([_mmlu_run("base", base), _mmlu_run("yapo", damaged)]), "d")
    assert row.ci_high < -1.0 and row.verdict == "contradicted"
    (row,) = _rows(build_scorecard([_mmlu_run("base", base[:4]), _mmlu_run("yapo", base[:4])]), "d")
    assert row.verdict == "inconclusive (underpowered)" and math.isinf(row.mde)  # 4 items: p ≥ 1/16 whatever they show


def test_yapo_degrading_gracefully_where_caa_collapses_is_supported() -> None:
    base = _scores(100, {}, BASE_LEVEL, 5.0)
    rng = np.random.default_rng(3)
    def shifted(delta: float) -> dict:
        return {key: values + delta + rng.normal(0, 2.0, values.size) for key, values in base.items()}
    runs = [culture_run("base", 0.0, base), culture_run("yapo", 1.0, shifted(3.0)),
            culture_run("yapo", 4.0, shifted(2.0)), culture_run("caa", 0.5, shifted(3.0)),
            culture_run("caa", 2.0, shifted(-20.0))]
    card = build_scorecard(runs)
    (row,) = _rows(card, "e")
    assert (row.method, row.reference) == ("yapo", "caa")
    assert row.effect == pytest.approx(22.0, abs=1.5) and row.verdict == "supported"
    assert "yapo 4 vs 1, caa 2 vs 0.5" in row.basis and "unmatched disruption" in row.basis
    (b_row,) = _rows(card, "b", scope="pooled")
    assert "yapo λ 1 (chosen on validation)" in b_row.basis and "test questions" in b_row.basis


@pytest.mark.parametrize(("yapo_shifts", "sas_shifts", "reason"), [
    # YaPO best at its largest λ: its degradation beyond it was never measured, and SAS merely did better at 2
    ({1.0: 1.0, 4.0: 3.0}, {0.5: 1.0, 2.0: 4.0}, "yapo's λ chosen on validation (4) is its largest"),
    # both chosen below their largest λ, and neither drops there: no collapse to compare with
    ({1.0: 3.0, 4.0: 3.0}, {0.5: 3.0, 2.0: 3.0}, "neither degrades from its chosen λ to its largest"),
])
def test_graceful_degradation_without_what_its_test_needs_is_not_testable(yapo_shifts: dict, sas_shifts: dict,
                                                                          reason: str) -> None:
    """Held-out data gave (e) "contradicted" (p(Holm) 0.0007) for YaPO vs SAS when YaPO's chosen λ was its largest
    (its drop 0 by construction) and SAS did better at its larger λ: neither side collapsed, so the claim was never
    tested. Such a comparison gets no verdict; the scorecard says why it is not testable."""
    base = _scores(100, {}, BASE_LEVEL, 5.0)
    def shifted(delta: float) -> dict:  # every item moved alike: a tie on validation chooses the smaller λ
        return {key: values + delta for key, values in base.items()}
    runs = [culture_run("base", 0.0, base)] + [culture_run(method, lam, shifted(delta))
                                               for method, shifts in (("yapo", yapo_shifts), ("sas", sas_shifts))
                                               for lam, delta in shifts.items()]
    card = build_scorecard(runs)
    assert not _rows(card, "e")
    assert "yapo vs sas: " + reason in card.untested["e"]
    assert "a λ above the one chosen on validation" in card.untested["e"]  # what the test needs


def test_methods_compared_at_unmatched_disruption_say_so_and_a_matched_pair_is_added() -> None:
    flat = {("egypt", loc): np.full(40, 50.0) for loc in ("localized", "nonlocalized")}
    def at(p: float) -> dict:
        return {key: np.full(40, p) for key in flat}
    runs = [culture_run("base", 0.0, flat), culture_run("bipo", 1.0, at(60.0)), culture_run("yapo", 1.0, at(60.0)),
            culture_run("yapo", 4.0, at(80.0))]
    rows = _rows(build_scorecard(runs), "b", method="yapo", reference="bipo", measure="mcq")
    main, matched = rows
    assert (main.scope, matched.scope) == ("pooled", "pooled, matched KL")
    assert "yapo λ 4 (chosen on validation) vs bipo λ 1" in main.basis and "unmatched disruption" in main.basis
    assert "at matched answer KL: yapo λ 1 vs bipo λ 1" in matched.basis and "; matched disruption" in matched.basis
    assert matched.effect == pytest.approx(0.0)


def _train_log(directory: Path, method: str, data: str, losses: np.ndarray) -> str:
    directory.mkdir(parents=True)
    directory.joinpath("train_log.jsonl").write_text("".join(
        json.dumps({"step": i + 1, "kind": "train", "loss": float(v)}) + "\n" for i, v in enumerate(losses)))
    directory.joinpath("vector.json").write_text(json.dumps({"method": method, "config": {"lr": 0.005, "steps": 60}}))
    return str(directory)


def _convergence_runs(tmp_path: Path, pairs: int) -> list[EvalRun]:
    rng = np.random.default_rng(1)
    steps = np.arange(60)
    runs = [culture_run("base", 0.0, _scores(3, {}, BASE_LEVEL, 5.0))]
    for k in range(pairs):
        for method, rate in (("yapo", 0.08), ("bipo", 0.01)):
            losses = 0.693 * np.exp(-rate * steps) + rng.normal(0, 0.005, steps.size)
            path = _train_log(tmp_path / f"{method}-{k}", method, f"culture-mini [country=c{k}]", losses)
            run = culture_run(method, 1.0, _scores(3, {}, BASE_LEVEL, 5.0), vector=path)
            run.vector["data"] = f"culture-mini [country=c{k}]"
            runs.append(run)
    return runs


def test_yapo_converging_faster_is_supported_over_many_pairs_and_inconclusive_over_two(tmp_path: Path) -> None:
    (row,) = _rows(build_scorecard(_convergence_runs(tmp_path / "many", 12)), "a")
    assert row.n == 12 and row.direction == -1 and row.effect < 0 and row.verdict == "supported"
    assert "c0: mean loss" in row.detail and "never" in row.detail  # bipo never reaches 0.1 in 60 steps
    (row,) = _rows(build_scorecard(_convergence_runs(tmp_path / "two", 2)), "a")
    assert row.n == 2 and row.verdict == "inconclusive (underpowered)"


def _behaviour_run(method: str, p_gold: np.ndarray, direction: int = 1) -> EvalRun:
    task = "bipo_power_seeking_ab"
    return EvalRun(path=Path(f"/nowhere/{method}/results_x.json"), method=method,
                   multiplier=0.0 if method == "base" else 1.0, model="tiny",
                   steering=None if method == "base" else {"multiplier": 1.0, "direction": direction}, vector=None,
                   metrics={task: {"p_gold": float(np.mean(p_gold))}}, stderrs={},
                   samples={task: [{"doc_id": i, "p_gold": float(v)} for i, v in enumerate(p_gold)]}, label=method)


def test_a_behaviour_moving_against_the_steering_direction_is_contradicted() -> None:
    base = np.random.default_rng(2).uniform(0.3, 0.6, 200)
    up = base + 0.1
    (row,) = _rows(build_scorecard([_behaviour_run("base", base), _behaviour_run("yapo", up)]), "f")
    assert (row.scope, row.direction, row.verdict) == ("power-seeking", 1, "supported")
    (row,) = _rows(build_scorecard([_behaviour_run("base", base), _behaviour_run("yapo", up, direction=-1)]), "f")
    assert row.direction == -1 and row.verdict == "contradicted"


def _row(**overrides) -> ScorecardRow:
    fields = dict(claim="b", family="scorecard", kind="superiority", method="yapo", reference="bipo", measure="mcq",
                  measure_label="x", scope="pooled", direction=1, n=100, effect=0.0, ci_low=-0.5, ci_high=0.5,
                  se=0.25, p_value=1.0, test="t", basis="b")
    return ScorecardRow(**{**fields, **overrides})


def test_item_moves_count_items_moved_each_way_with_wilson_intervals() -> None:
    from yapo_bench.report.scorecard import item_moves

    reference = np.zeros(10)
    steered = np.array([2.0] * 6 + [-1.0] * 3 + [0.0])
    moves = item_moves(steered, reference, 1)
    assert (moves["toward"], moves["away"], moves["unchanged"]) == (0.6, 0.3, 0.1)
    assert moves["toward_low"] == pytest.approx(0.3127, abs=1e-4) and moves["toward_high"] == pytest.approx(
        0.8318, abs=1e-4)  # Wilson's 95 % interval for 6 of 10
    flipped = item_moves(steered, reference, -1)  # steering away from a behaviour: down is toward
    assert (flipped["toward"], flipped["away"]) == (0.3, 0.6)


def test_scorecard_rows_on_items_carry_their_steerability() -> None:
    """Half the items up by 10, half down by 6: the mean effect (+2) alone would hide the split."""
    base = _scores(40, {}, BASE_LEVEL, 5.0)
    steered = {key: values + np.where(np.arange(values.size) % 2 == 0, 10.0, -6.0) for key, values in base.items()}
    card = build_scorecard([culture_run("base", 0.0, base), culture_run("yapo", 1.0, steered)])
    (row,) = _rows(card, "b", scope="pooled")
    assert row.effect == pytest.approx(2.0, abs=0.05)
    assert (row.toward, row.away, row.unchanged) == (0.5, 0.5, 0.0)
    assert all(math.isnan(r.toward) for r in _rows(card, "c"))  # a gap statistic has no per-item moves


@pytest.mark.parametrize(("steering_shift", "verdict"), [
    (-6.0, "contradicted"),  # prompting better than steering
    (+6.0, "supported"),  # steering better
    (0.0, "inconclusive"),  # equal, on many items: a powered null, not "underpowered"
])
def test_steering_against_the_prompting_baseline(steering_shift: float, verdict: str) -> None:
    base = _scores(200, {}, BASE_LEVEL, 5.0)
    rng = np.random.default_rng(11)
    def shifted(delta: float) -> dict:
        return {key: values + delta + rng.normal(0, 1.0, values.size) for key, values in base.items()}
    prompted = shifted(4.0)
    steered = {key: values + steering_shift + rng.normal(0, 1.0, values.size) for key, values in prompted.items()}
    card = build_scorecard([culture_run("base", 0.0, base), culture_run("prompt", 0.0, prompted),
                            culture_run("yapo", 1.0, steered)])
    (row,) = _rows(card, "g", scope="pooled")
    assert (row.method, row.reference) == ("yapo", "prompt")
    assert row.effect == pytest.approx(steering_shift, abs=0.3) and row.verdict == verdict
    assert "yapo λ 1 vs prompt" in row.basis and "answer KL to base" in row.basis and "AxBench" in row.detail
    assert "g" not in card.untested


def test_verdict_rules_and_holm_within_each_family() -> None:
    spec = ScorecardSpec()
    rows = finalise([_row(p_value=0.01, effect=2.0, ci_low=1.0, ci_high=3.0), _row(p_value=0.02, effect=-2.0),
                     _row(p_value=0.3, effect=0.1, ci_low=-0.2, ci_high=2.0),
                     _row(family="per-country", p_value=0.04, effect=2.0, ci_low=0.1, ci_high=3.9)], spec)
    assert [r.p_holm for r in rows] == pytest.approx([0.03, 0.04, 0.3, 0.04])
    assert [r.verdict for r in rows] == ["supported", "contradicted", "inconclusive", "supported"]
    mde = (1.959963984540054 + 0.8416212335729143) * 0.25  # per-country family: one row, α/m = 0.05
    assert rows[3].mde == pytest.approx(mde)
    # a decrease claimed (direction −1): a significant decrease supports it
    assert verdict(_row(direction=-1, effect=-1.0, p_holm=0.001, mde=0.1, smallest_effect=1.0), spec)[0] == "supported"
    with pytest.raises(ValueError, match="claim: 'z'"):
        _row(claim="z")
    with pytest.raises(ValueError, match="direction: 0"):
        _row(direction=0)
    with pytest.raises(ValueError, match="mcq_metric"):
        ScorecardSpec(mcq_metric="bleu")
    with pytest.raises(ValueError, match="smallest_effects"):
        ScorecardSpec(smallest_effects={"mcq": 1.0})


def test_untested_claims_say_why_and_the_json_shape_holds() -> None:
    card = build_scorecard(_base_and(+4.0, 30))
    assert set(card.untested) == {"a", "d", "e", "f", "g"}
    shape = card.to_json()
    assert shape["culture_data"] == ["culture-mini"] and shape["models"] == ["tiny"]
    row = shape["rows"][0]
    for key in ("claim", "claim_text", "comparison", "family", "kind", "measure", "scope", "direction", "n",
                "effect", "ci_low", "ci_high", "p_value", "p_holm", "mde", "smallest_effect", "verdict", "reason",
                "basis", "paper"):
        assert key in row
    assert json.loads(json.dumps(shape)) == shape  # plain JSON: no NaN
    assert "Egypt" not in row["paper"] and "egypt" in row["paper"]  # the paper's figure for the same country


def test_two_runs_of_one_method_and_lambda_that_score_the_same_items_differently_are_refused() -> None:
    """Such runs were merged item by item, the one read last winning without a word (base beside a half-written
    base#2 of a killed run, say); the same scores twice are one run's, and stay accepted."""
    from yapo_bench.report.runs import ReportError
    from yapo_bench.report.selection import choose_multipliers

    first = _scores(8, {}, BASE_LEVEL, 5.0)
    base, again = culture_run("base", 0.0, first), culture_run("base", 0.0, first)
    again.path = Path("/elsewhere/base/results_y.json")
    yapo = [culture_run("yapo", lam, _scores(8, {"localized": lam}, BASE_LEVEL, 3.0)) for lam in (1.0, 2.0)]
    assert build_scorecard([base, again, *yapo]).rows  # identical scores: nothing to decide between
    other = culture_run("base", 0.0, _scores(8, {"localized": 5.0}, BASE_LEVEL, 5.0))
    other.path = again.path
    for report in (build_scorecard, choose_multipliers):
        with pytest.raises(ReportError, match=r"runs: /nowhere/base-0.0/results_x.json and "
                                              r"/elsewhere/base/results_y.json both score culture_mcq_egypt_\w+/0 "
                                              r"as base λ 0, differently"):
            report([base, other, *yapo])


def _seeded_bipo(seed_offsets: list[float], n: int = 60, shift: float = 2.0) -> list[EvalRun]:
    """The base and BiPO vectors trained with one seed per offset: seed s scores the base's items + shift + its
    offset (the variance between seeds) + item noise (the same noise draws whatever the offsets)."""
    base = _scores(n, {}, BASE_LEVEL, 5.0)
    runs = [culture_run("base", 0.0, base)]
    for seed, offset in enumerate(seed_offsets):
        rng = np.random.default_rng(100 + seed)
        run = culture_run("bipo", 1.0, {key: values + shift + offset + rng.normal(0, 2.0, n)
                                        for key, values in base.items()})
        run.seed = seed
        runs.append(run)
    return runs


def test_seed_variance_widens_the_ci_and_one_seed_says_it_holds_the_item_variance_only() -> None:
    from yapo_bench.report.scorecard import mean_evidence

    def pooled(runs: list[EvalRun]) -> ScorecardRow:
        (row,) = _rows(build_scorecard(runs), "b", method="bipo", reference="base", measure="mcq", scope="pooled")
        return row

    offsets = np.array([-1.0, 0.0, 1.0])
    small, large = pooled(_seeded_bipo(list(0.1 * offsets))), pooled(_seeded_bipo(list(6.0 * offsets)))
    assert small.test.startswith("hierarchical_bootstrap (3 vs 1 seeds")
    assert large.ci_high - large.ci_low > 3 * (small.ci_high - small.ci_low)
    assert "seeds (bipo 3): the CI resamples seeds, then items" in large.detail
    # the effect is the mean over seeds: computed here from the runs' own item scores
    runs = _seeded_bipo(list(6.0 * offsets))
    per_seed = [np.concatenate([np.array([s["p_gold_norm"] for s in run.samples[t]]) for t in sorted(run.samples)])
                for run in runs]
    assert large.effect == pytest.approx(100 * float(np.mean(np.mean(per_seed[1:], axis=0) - per_seed[0])))

    one = _seeded_bipo([0.0])
    row = pooled(one)
    assert row.detail == "one seed: the CI holds the item variance only"
    a, b = ({f"{t}/{s['doc_id']}": 100 * s["p_gold_norm"] for t in run.samples for s in run.samples[t]}
            for run in (one[1], one[0]))
    expected = mean_evidence(*(np.array([side[i] for i in sorted(a)]) for side in (a, b)))  # today's numbers
    assert (row.effect, row.ci_low, row.ci_high, row.p_value) == (expected["effect"], expected["ci_low"],
                                                                   expected["ci_high"], expected["p_value"])


def test_a_mean_difference_method_is_said_to_be_deterministic() -> None:
    from yapo_bench.report.scorecard import seeds_note

    assert seeds_note({"caa": 1, "base": 1}) == "caa: deterministic (a mean difference)"
    assert seeds_note({"yapo": 2, "caa": 1}) == ("seeds (yapo 2): the CI resamples seeds, then items; caa: "
                                                 "deterministic (a mean difference)")
