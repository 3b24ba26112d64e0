"""The preference training loop (BiPO, YaPO) and the four methods' shared signature, on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import D_SAE, HIDDEN, random_sae, tiny_llama, tiny_tokenizer

from yapo_bench.methods import get_method, method_names, preference
from yapo_bench.methods.preference import PreferenceBatchScorer, PreferenceSpec, encode_pairs, preference_loss
from yapo_bench.models import LoadedModel
from yapo_bench.pairs import PairSet, PreferencePair
from yapo_bench.steering import SteeringVector, phi_full, sparse_delta

PAIRS = PairSet([PreferencePair(f"w{i} w{i + 1}", f"w{i + 20} w{i + 21} w{i + 22}", f"w{i + 40} w{i + 41}")
                 for i in range(10)], source="test", chosen="the w20s")


def _loaded() -> LoadedModel:
    return LoadedModel(model=tiny_llama(), tokenizer=tiny_tokenizer(), model_id="tiny")


def _spec(**overrides) -> PreferenceSpec:
    fields = dict(layer=1, steps=6, batch_size=3, lr=0.05, warmup_steps=2, eval_every=3, checkpoint_every=2,
                  progress=False)
    return PreferenceSpec(**{**fields, **overrides})


@pytest.mark.parametrize("name", sorted(method_names()))
def test_each_method_returns_a_vector_in_its_space(name: str) -> None:
    module = get_method(name)
    spec = module.Spec(layer=1) if name in ("caa", "sas") else _spec(steps=2)
    vector = module.fit(_loaded(), PAIRS, spec, sae=random_sae())
    expected = ("sae", D_SAE) if module.SPARSE else ("dense", HIDDEN)
    assert (vector.space, vector.dim, vector.layer, vector.method) == (*expected, 1, name)
    assert vector.provenance["chosen"] == "the w20s" and vector.provenance["data"] == "test"
    assert vector.norm > 0 and not vector.values.requires_grad


def test_unknown_method_and_missing_sae() -> None:
    with pytest.raises(ValueError, match="method: 'dpo'; expected one of caa, sas, bipo, yapo"):
        get_method("dpo")
    with pytest.raises(ValueError, match="sae: YaPO works in SAE latent space; pass an SAE"):
        get_method("yapo").fit(_loaded(), PAIRS, _spec())


@pytest.mark.parametrize("sae_kind", ["jumprelu", "standard"])
def test_yapo_gradient_through_eq3_matches_finite_differences(sae_kind: str) -> None:
    """d loss / d v through the sparse-support form equals central differences of the full eq. 3."""
    torch.manual_seed(0)
    sae = random_sae(sae_kind).double()
    sae.cfg.dtype = "float64"  # sae-lens casts inputs to cfg.dtype; finite differences need float64 throughout
    hidden = torch.randn(2, 5, HIDDEN, dtype=torch.float64)
    values = (torch.randn(D_SAE, dtype=torch.float64) * (torch.rand(D_SAE) < 0.3)).requires_grad_()
    weights = torch.randn(2, 5, HIDDEN, dtype=torch.float64)
    (sparse_delta(hidden, values, 0.7, sae) * weights).sum().backward()
    analytic = values.grad.clone()

    def objective(v: torch.Tensor) -> float:
        return float(((phi_full(hidden, v, 0.7, sae) - hidden) * weights).sum())

    eps = 1e-6
    nonzero = torch.nonzero(values.detach()).squeeze(-1)[:12].tolist()
    zero_but_active = torch.nonzero((values.detach() == 0) & (analytic != 0)).squeeze(-1)[:6].tolist()
    assert nonzero and zero_but_active
    for i in nonzero + zero_but_active:
        bump = torch.zeros_like(values)
        bump[i] = eps
        if values[i] != 0:  # smooth here: central differences
            numeric = (objective(values.detach() + bump) - objective(values.detach() - bump)) / (2 * eps)
        else:  # v_i = 0 is a kink for positions where latent i is off; autograd takes ReLU'(0) = 0, which is
            # the one-sided derivative that does not switch those positions on (c > 0: from below)
            numeric = (objective(values.detach()) - objective(values.detach() - bump)) / eps
        assert analytic[i].item() == pytest.approx(numeric, rel=1e-4, abs=1e-6)


def test_yapo_keeps_never_active_latents_at_zero() -> None:
    sae = random_sae()
    with torch.no_grad():  # latent 0 can never fire: huge negative bias
        sae.b_enc[0] = -1e6
    vector = get_method("yapo").fit(_loaded(), PAIRS, _spec(steps=4), sae=sae)
    assert vector.values[0] == 0 and vector.l0 > 0


def test_per_example_directions_equal_separate_batches() -> None:
    loaded = _loaded()
    encoded, _ = encode_pairs(loaded, PAIRS[:4], 64)
    scorer = PreferenceBatchScorer(loaded, 1, None, "all", naive=False)
    vector = SteeringVector.dense(torch.randn(HIDDEN) * 0.3, layer=1)
    mixed, _ = preference_loss(scorer, encoded, vector, [1, -1, -1, 1], 0.1)
    plus, _ = preference_loss(scorer, [encoded[0], encoded[3]], vector, 1, 0.1)
    minus, _ = preference_loss(scorer, encoded[1:3], vector, -1, 0.1)
    torch.testing.assert_close(mixed, (plus + minus) / 2)


def test_logs_checkpoint_and_vector_land_in_the_run_dir(tmp_path: Path) -> None:
    vector = get_method("bipo").fit(_loaded(), PAIRS, _spec(run_dir=str(tmp_path)))
    records = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "accuracy", "reward_margin", "norm", "lr", "grad_norm"} <= set(train[0])
    assert train[0]["lr"] == pytest.approx(0.025) and train[1]["lr"] == pytest.approx(0.05)
    assert [r["step"] for r in records if r["kind"] == "heldout"] == [3, 6]
    assert torch.equal(SteeringVector.load(tmp_path).values, vector.values)
    assert (tmp_path / "checkpoint.pt").exists()
    with pytest.raises(ValueError, match="already holds a training checkpoint; pass --resume"):
        get_method("bipo").fit(_loaded(), PAIRS, _spec(run_dir=str(tmp_path)))


@pytest.mark.parametrize("method", ["bipo", "yapo"])
def test_the_recorded_max_length_is_the_one_that_applied(tmp_path: Path, method: str) -> None:
    """30000 tokens asked of a model with 128 positions: the vector, its file and its checkpoint say 128 applied
    (and keep what was asked beside it); resuming with the same request agrees with the checkpoint."""
    spec = _spec(steps=2, max_length=30000, run_dir=str(tmp_path))
    vector = get_method(method).fit(_loaded(), PAIRS, spec, sae=random_sae())
    assert vector.config["max_length"] == 128 and vector.provenance["max_length_requested"] == 30000
    saved = json.loads((tmp_path / "vector.json").read_text())
    assert saved["config"]["max_length"] == 128 and saved["provenance"]["max_length_requested"] == 30000
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["config"]["max_length"] == 128
    get_method(method).fit(_loaded(), PAIRS, _spec(steps=2, max_length=30000, run_dir=str(tmp_path), resume=True),
                           sae=random_sae())


def test_weight_decay_is_applied() -> None:
    """Same run with and without decay: the vectors differ (the reference declared decay but never used it)."""
    plain = get_method("bipo").fit(_loaded(), PAIRS, _spec(weight_decay=0.0))
    decayed = get_method("bipo").fit(_loaded(), PAIRS, _spec(weight_decay=0.5))
    assert decayed.norm < plain.norm


class _Killed(Exception):
    pass


@pytest.mark.parametrize("method, kill_at", [("bipo", 5), ("yapo", 4), ("yapo", 1)])
def test_resume_after_a_kill_ends_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str,
                                               kill_at: int) -> None:
    sae = random_sae()
    reference = get_method(method).fit(_loaded(), PAIRS, _spec(run_dir=str(tmp_path / "whole"), direction_mode="example"), sae=sae)
    calls = {"n": 0}
    real_loss = preference.preference_loss

    def dying_loss(*args, **kwargs):
        if kwargs.get("direction") is None and len(args) > 3 and not isinstance(args[3], int):
            calls["n"] += 1  # training steps pass a list of directions; held-out evaluation an int
            if calls["n"] == kill_at:
                raise _Killed
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(preference, "preference_loss", dying_loss)
    run_dir = tmp_path / "killed"
    with pytest.raises(_Killed):
        get_method(method).fit(_loaded(), PAIRS, _spec(run_dir=str(run_dir), direction_mode="example"), sae=sae)
    monkeypatch.setattr(preference, "preference_loss", real_loss)
    resumed = get_method(method).fit(_loaded(), PAIRS, _spec(run_dir=str(run_dir), direction_mode="example", resume=True), sae=sae)
    assert torch.equal(resumed.values, reference.values)

    def without_time(path: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]

    assert without_time(run_dir / "train_log.jsonl") == without_time(tmp_path / "whole" / "train_log.jsonl")


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    get_method("bipo").fit(_loaded(), PAIRS, _spec(run_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="resume: lr is 0.1 but the checkpoint was made with 0.05"):
        get_method("bipo").fit(_loaded(), PAIRS, _spec(run_dir=str(tmp_path), lr=0.1, resume=True))
    with pytest.raises(ValueError, match="resume: needs a run directory"):
        get_method("bipo").fit(_loaded(), PAIRS, _spec(resume=True))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_loss = preference.preference_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, stats = real_loss(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), stats) if calls["n"] == 4 else (loss, stats)

    monkeypatch.setattr(preference, "preference_loss", poisoned)
    with pytest.raises(preference.TrainingDiverged, match=r"step 4: loss is nan; training stopped; last good "
                       r"checkpoint: .*checkpoint.pt \(step 2\)"):
        get_method("bipo").fit(_loaded(), PAIRS, _spec(run_dir=str(tmp_path), eval_every=0))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2 and torch.isfinite(state["values"]).all()


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps: 0; expected an integer >= 1"),
    ("positions", "prompt", "positions: 'prompt'; expected one of"),
    ("direction_mode", "both", "direction_mode: 'both'"),
    ("beta", float("nan"), "beta: nan; expected a finite number > 0"),
    ("heldout_fraction", 1.0, "heldout_fraction: 1.0"),
])
def test_spec_validation(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _spec(**{field: value})


def test_over_long_rows_are_truncated_and_reported(capsys: pytest.CaptureFixture) -> None:
    long = PairSet([PreferencePair("w1 " * 30, "w2 w3", "w4 w5")] * 3, source="long", chosen="w2")
    vector = get_method("bipo").fit(_loaded(), long, _spec(steps=1, max_length=31))
    assert vector.provenance["truncated_sequences"] == 6
    assert "6 of 6 sequences were longer than max_length=31" in capsys.readouterr().out


def test_on_step_sees_every_step_and_can_stop_early() -> None:
    seen = []
    vector = preference.train_preference_vector(_loaded(), PAIRS, _spec(), sae=None, method="bipo",
                                                on_step=lambda record: seen.append(record["step"]) or False)
    assert seen == [1, 2, 3, 4, 5, 6] and vector.provenance["steps_run"] == 6
    stopped = preference.train_preference_vector(_loaded(), PAIRS, _spec(), sae=None, method="bipo",
                                                 on_step=lambda record: record["step"] == 2)
    assert stopped.provenance["steps_run"] == 2


def test_lazy_caching_computes_only_what_the_steps_visit_and_equals_eager_caching(monkeypatch) -> None:
    """Steps cache a sequence's layer output and reference log-probs when they first need it; the vector equals
    the one trained with every sequence cached before the first step, bit for bit."""
    many = PairSet([PreferencePair(f"w{i % 50} w{(3 * i) % 50}" + " w7" * (i % 4), f"w{i % 60 + 20} w5", f"w{i % 30 + 1}")
                    for i in range(40)], source="test", chosen="w5")
    spec = _spec(steps=3, batch_size=2, heldout_fraction=0.0, eval_every=0, checkpoint_every=0)
    original = preference.PreferenceBatchScorer._ensure_cached
    cached: list[int] = []

    def counting(self, sequences):
        cached.extend(s.key for s in sequences if s.key not in self._reference_cache)
        original(self, sequences)

    monkeypatch.setattr(preference.PreferenceBatchScorer, "_ensure_cached", counting)
    lazy = preference.train_preference_vector(_loaded(), many, spec, sae=None, method="bipo")
    assert 0 < len(set(cached)) <= 3 * 2 * 2 < 2 * len(many)  # three steps of two pairs, of 80 sequences

    loaded = _loaded()
    every = [s for pair in preference.encode_pairs(loaded, many, spec.max_length)[0] for s in (pair.chosen, pair.rejected)]

    def eager(self, sequences):
        if not self._reference_cache:
            original(self, every)
        original(self, sequences)

    monkeypatch.setattr(preference.PreferenceBatchScorer, "_ensure_cached", eager)
    assert torch.equal(preference.train_preference_vector(loaded, many, spec, sae=None, method="bipo").values,
                       lazy.values)


def test_the_cache_holds_each_sequences_own_layer_output_and_reference_from_one_forward_pass() -> None:
    loaded = _loaded()
    pairs = preference.encode_pairs(loaded, PAIRS, 64)[0][:3]
    sequences = [s for pair in pairs for s in (pair.chosen, pair.rejected)]
    scorer = preference.PreferenceBatchScorer(loaded, 1, None, "all", naive=False)
    scorer._ensure_cached(sequences)
    for seq in sequences:  # what a forward pass stopped at the layer, and a full one, give for it alone
        assert torch.equal(scorer._layer_cache[seq.key], scorer._alone(seq))
        assert torch.equal(scorer._reference_cache[seq.key], scorer._logprob_sums([seq], None, 1)[0])
