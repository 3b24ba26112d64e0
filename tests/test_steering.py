"""The steering core: exact identities of Φ, position masks, hook lifetime, vector files, errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import D_SAE, HIDDEN, random_sae, tiny_gemma3, tiny_llama

from yapo_bench.internals import get_layer
from yapo_bench.sae import SAELoadError, sae_hash
from yapo_bench.steering import (
    SteeringError,
    SteeringVector,
    VectorFileError,
    phi_full,
    sparse_delta,
    steer,
)

LAYER = 2


def _ids(batch: int = 2, length: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, 128, (batch, length), generator=torch.Generator().manual_seed(seed))


def _layer_outputs(model: torch.nn.Module, **inputs: torch.Tensor) -> torch.Tensor:
    """Layer LAYER's output as the rest of the model sees it (hooks registered later run later)."""
    seen = []
    handle = get_layer(model, LAYER).register_forward_hook(
        lambda _m, _i, out: seen.append((out[0] if isinstance(out, tuple) else out).detach().clone())
    )
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    return seen[0]


def _dense(seed: int = 3) -> SteeringVector:
    return SteeringVector.dense(torch.randn(HIDDEN, generator=torch.Generator().manual_seed(seed)), layer=LAYER)


def _sparse(sae: torch.nn.Module, nonzero: int = 6, seed: int = 4) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    values = torch.zeros(D_SAE)
    idx = torch.randperm(D_SAE, generator=gen)[:nonzero]
    values[idx] = torch.randn(nonzero, generator=gen)
    return SteeringVector.sparse(values, layer=LAYER, sae=sae)


# -- exact identities ---------------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["dense", "sae"])
def test_zero_multiplier_leaves_logits_bit_identical(tiny_model: torch.nn.Module, space: str) -> None:
    sae = random_sae()
    vector = _dense() if space == "dense" else _sparse(sae)
    ids = _ids()
    with torch.no_grad():
        clean = tiny_model(ids).logits
        with steer(tiny_model, vector, multiplier=0.0, sae=sae):
            steered = tiny_model(ids).logits
        with steer(tiny_model, vector, multiplier=1.0, sae=sae):
            moved = tiny_model(ids).logits
    assert torch.equal(clean, steered)
    assert not torch.allclose(clean, moved)


def test_dense_adds_direction_times_multiplier_times_vector(tiny_model: torch.nn.Module) -> None:
    vector = _dense()
    ids = _ids()
    clean = _layer_outputs(tiny_model, input_ids=ids)
    with steer(tiny_model, vector, multiplier=1.5, direction=-1):
        patched = _layer_outputs(tiny_model, input_ids=ids)
    assert torch.equal(patched, clean + (-1.5 * vector.values))


@pytest.mark.parametrize("kind", ["jumprelu", "standard", "topk"])
def test_sparse_support_form_equals_full_eq3(kind: str) -> None:
    sae = random_sae(kind)
    vector = _sparse(sae, nonzero=10)
    hidden = torch.randn(4, 7, HIDDEN) * 2
    for coefficient in (0.7, -1.3, 4.0):
        fast = hidden + sparse_delta(hidden, vector.values, coefficient, sae, form="support")
        full = phi_full(hidden, vector.values, coefficient, sae)
        torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5 * full.abs().max().item())


def test_sparse_steering_through_the_model_matches_full_form(tiny_model: torch.nn.Module) -> None:
    sae = random_sae()
    vector = _sparse(sae)
    ids = _ids()
    with steer(tiny_model, vector, multiplier=2.0, sae=sae, sparse_form="support"):
        fast = _layer_outputs(tiny_model, input_ids=ids)
    with steer(tiny_model, vector, multiplier=2.0, sae=sae, sparse_form="full"):
        full = _layer_outputs(tiny_model, input_ids=ids)
    clean = _layer_outputs(tiny_model, input_ids=ids)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fast, clean)


def test_sparse_latents_outside_support_are_untouched() -> None:
    sae = random_sae()
    vector = _sparse(sae, nonzero=3)
    hidden = torch.randn(5, HIDDEN)
    steered = hidden + sparse_delta(hidden, vector.values, 1.0, sae)
    off_support = vector.values == 0
    # Re-encoding the steered state would mix latents; eq. 3's shift lives on W_dec rows of supp(v) only.
    delta = steered - hidden
    codes_shift = (sae.encode(hidden) + vector.values).relu() - sae.encode(hidden)
    assert torch.equal(codes_shift[:, off_support], torch.zeros_like(codes_shift[:, off_support]))
    torch.testing.assert_close(delta, codes_shift @ sae.W_dec, rtol=1e-5, atol=1e-5)


def test_sparse_gradient_matches_full_form() -> None:
    """Training uses the support form with a grad-carrying v; its gradient must be eq. 3's."""
    sae = random_sae()
    hidden = torch.randn(3, 5, HIDDEN)
    target = torch.randn(3, 5, HIDDEN)
    grads = []
    for form in ("support", "full"):
        values = torch.zeros(D_SAE, requires_grad=True)  # v starts at 0, as in training
        out = hidden + sparse_delta(hidden, values, 1.0, sae, form=form)
        ((out - target) ** 2).sum().backward()
        grads.append(values.grad)
    assert grads[1].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-5 * grads[1].abs().max().item())


# -- positions ----------------------------------------------------------------------------------------


def test_prompt_and_response_positions(tiny_model: torch.nn.Module) -> None:
    vector = _dense()
    ids = _ids(batch=2, length=8)
    clean = _layer_outputs(tiny_model, input_ids=ids)
    start = torch.tensor([3, 5])
    with steer(tiny_model, vector, positions="response", response_start=start):
        response = _layer_outputs(tiny_model, input_ids=ids)
    with steer(tiny_model, vector, positions="prompt", response_start=start):
        prompt = _layer_outputs(tiny_model, input_ids=ids)
    position = torch.arange(8)[None, :]
    in_response = position >= start[:, None]
    changed_r = (response != clean).any(-1)
    changed_p = (prompt != clean).any(-1)
    # Layer L's own output differs only where steered (later positions see it only downstream).
    assert torch.equal(changed_r, in_response)
    assert torch.equal(changed_p, ~in_response)


def test_padding_is_never_steered(tiny_model: torch.nn.Module) -> None:
    vector = _dense()
    ids = _ids(batch=2, length=8)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding on the first row
    clean = _layer_outputs(tiny_model, input_ids=ids, attention_mask=mask)
    with steer(tiny_model, vector, positions="all"):
        steered = _layer_outputs(tiny_model, input_ids=ids, attention_mask=mask)
    changed = (steered != clean).any(-1)
    assert torch.equal(changed, mask.bool())


def test_explicit_mask_positions(tiny_model: torch.nn.Module) -> None:
    vector = _dense()
    ids = _ids(batch=2, length=6)
    chosen = torch.zeros(2, 6, dtype=torch.bool)
    chosen[0, 1] = chosen[1, 4] = True
    clean = _layer_outputs(tiny_model, input_ids=ids)
    with steer(tiny_model, vector, positions=chosen):
        steered = _layer_outputs(tiny_model, input_ids=ids)
    assert torch.equal((steered != clean).any(-1), chosen)


def test_generated_positions_leave_the_prompt_alone() -> None:
    model = tiny_llama()
    vector = _dense()
    ids = _ids(batch=1, length=5)
    kwargs = dict(max_new_tokens=3, do_sample=False, output_scores=True, return_dict_in_generate=True, pad_token_id=0)
    with torch.no_grad():
        clean = model.generate(ids, **kwargs)
        with steer(model, vector, multiplier=4.0, positions="generated") as handle:
            generated = model.generate(ids, **kwargs)
        with steer(model, vector, multiplier=4.0, positions="prompt"):
            prompted = model.generate(ids, **kwargs)
    assert handle.calls == 3  # prefill + two cached steps
    # The first new token comes from the prefill: unsteered under "generated", steered under "prompt".
    assert torch.equal(generated.scores[0], clean.scores[0])
    assert not torch.allclose(generated.scores[1], clean.scores[1])
    assert not torch.allclose(prompted.scores[0], clean.scores[0])


# -- hook lifetime ------------------------------------------------------------------------------------


def test_hooks_removed_after_exception(tiny_model: torch.nn.Module) -> None:
    vector = _dense()
    ids = _ids()
    with torch.no_grad():
        clean = tiny_model(ids).logits
    with pytest.raises(RuntimeError, match="boom"), steer(tiny_model, vector, multiplier=3.0):
        tiny_model(ids)
        raise RuntimeError("boom")
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in tiny_model.modules())
    assert hooks == 0
    with torch.no_grad():
        assert torch.equal(tiny_model(ids).logits, clean)


def test_no_vector_is_the_baseline(tiny_model: torch.nn.Module) -> None:
    ids = _ids()
    with torch.no_grad():
        clean = tiny_model(ids).logits
        with steer(tiny_model, None, multiplier=2.0):
            same = tiny_model(ids).logits
    assert torch.equal(clean, same)


# -- files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["dense", "sae"])
def test_save_load_round_trip_is_exact(tmp_path, space: str) -> None:
    sae = random_sae()
    vector = _dense() if space == "dense" else _sparse(sae)
    vector.method = "caa"
    vector.model_id = "tiny"
    vector.config = {"beta": 0.1, "positions": "all"}
    vector.save(tmp_path / "vec")
    loaded = SteeringVector.load(tmp_path / "vec")
    assert torch.equal(loaded.values, vector.values)
    assert loaded.metadata() == vector.metadata()
    recorded = loaded.provenance["versions"]  # what made it, read back
    assert set(recorded) >= {"yapo-bench", "torch", "transformers", "lm_eval", "sae-lens", "git_commit"}
    assert recorded["torch"] == torch.__version__
    assert (tmp_path / "vec" / "vector.json").is_file()
    # also by file path, and without the JSON sidecar (metadata lives in the safetensors header too)
    (tmp_path / "vec" / "vector.json").unlink()
    assert torch.equal(SteeringVector.load(tmp_path / "vec" / "vector.safetensors").values, vector.values)


def test_corrupt_vector_files_are_refused(tmp_path) -> None:
    vector = _dense()
    path = vector.save(tmp_path / "vec")
    meta = json.loads((tmp_path / "vec" / "vector.json").read_text())
    meta["values_sha256"] = "0" * 64
    (tmp_path / "vec" / "vector.json").write_text(json.dumps(meta))
    with pytest.raises(VectorFileError, match="checksum"):
        SteeringVector.load(tmp_path / "vec")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(VectorFileError, match="corrupt or not safetensors"):
        SteeringVector.load(tmp_path / "vec")
    with pytest.raises(VectorFileError, match="no file"):
        SteeringVector.load(tmp_path / "missing")


def test_a_hand_edited_vector_json_is_refused_by_every_loader(tmp_path) -> None:
    """The checksum covers what determines a vector's effect: `layer: 2` edited to 1 is not applied at layer 1."""
    from conftest import tiny_tokenizer

    from yapo_bench.lm_eval_plugin.model import YapoSteeredLM
    from yapo_bench.store import load_vector

    model_dir = tmp_path / "tiny"
    tiny_llama().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    _dense().save(tmp_path / "vec")
    meta_path = tmp_path / "vec" / "vector.json"
    meta = json.loads(meta_path.read_text())
    assert meta["format"] == "yapo-bench-vector/2" and len(meta["checksum"]) == 64
    meta_path.write_text(json.dumps({**meta, "layer": 1}))
    refused = f"vector: {meta_path} does not match its checksum"
    with pytest.raises(VectorFileError, match=refused):
        SteeringVector.load(tmp_path / "vec")
    with pytest.raises(VectorFileError, match=refused):
        load_vector(tmp_path / "vec", str(model_dir))
    with pytest.raises(VectorFileError, match=refused):
        YapoSteeredLM(model=str(model_dir), vector=str(tmp_path / "vec"))
    # a vector saved by yapo-bench 1 (no checksum over its layer) is refused, not applied as it says
    meta_path.write_text(json.dumps({**{k: v for k, v in meta.items() if k != "checksum"},
                                     "format": "yapo-bench-vector/1"}))
    with pytest.raises(VectorFileError, match="saved by an older yapo-bench .*; retrain it"):
        SteeringVector.load(tmp_path / "vec")


def test_the_vector_store_key_names_the_file_format(monkeypatch) -> None:
    """A vector cached in an older format is never found and reused: it is trained again."""
    from yapo_bench import store
    from yapo_bench.methods.mean_diff import MeanDiffSpec
    from yapo_bench.models import LoadedModel

    loaded = LoadedModel(model=tiny_llama(), tokenizer=None, model_id="tiny")
    now = store.vector_directory("caa", "demo", loaded, None, MeanDiffSpec(layer=LAYER))
    monkeypatch.setattr(store, "VECTOR_FORMAT", "yapo-bench-vector/1")
    assert store.vector_directory("caa", "demo", loaded, None, MeanDiffSpec(layer=LAYER)) != now


def test_lm_eval_steered_export_import(tmp_path) -> None:
    vector = _dense()
    path = vector.to_lm_eval_steered(tmp_path / "steer.pt", multiplier=2.0, direction=-1)
    config = torch.load(path, weights_only=True)
    assert set(config) == {f"layers.{LAYER}"}
    assert config[f"layers.{LAYER}"]["action"] == "add"
    back = SteeringVector.from_lm_eval_steered(path)
    assert back.layer == LAYER
    assert torch.equal(back.values, vector.values * -2.0)
    with pytest.raises(SteeringError, match="only dense"):
        _sparse(random_sae()).to_lm_eval_steered(tmp_path / "x.pt")


def test_a_full_disk_names_the_vector_file_it_could_not_write(tmp_path, monkeypatch) -> None:
    """torch.save and safetensors report ENOSPC without the path (safetensors in its own error type): the error says
    which file, and no temporary file is left behind."""
    import errno
    import os

    from safetensors import SafetensorError

    from yapo_bench import steering
    from yapo_bench.atomic import WriteError

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def safetensors_full(*_args: object, **_kwargs: object) -> None:
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28) at path "
                              f'"{tmp_path}/vec/.tmpAbC123"')

    for write in (full, safetensors_full):
        monkeypatch.setattr(steering, "save_file", write)
        with pytest.raises(WriteError, match="No space left on device") as caught:
            _dense().save(tmp_path / "vec")
        assert caught.value.filename == str(tmp_path / "vec" / "vector.safetensors")
        assert caught.value.errno == errno.ENOSPC
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(WriteError, match="No space left on device") as caught:
        _dense().to_lm_eval_steered(tmp_path / "steer.pt")
    assert caught.value.filename == str(tmp_path / "steer.pt")
    assert not list(tmp_path.rglob("*.*"))  # no temporary file, no half-written one


def test_lm_eval_steered_model_applies_the_export_like_steer(tmp_path) -> None:
    """lm-eval's own `steered` hook gives the same layer output as ours for the exported file."""
    from lm_eval.models.hf_steered import steer as lm_eval_steer

    model = tiny_llama()
    vector = _dense()
    path = vector.to_lm_eval_steered(tmp_path / "steer.pt", multiplier=1.5)
    info = torch.load(path, weights_only=True)[f"layers.{LAYER}"]
    ids = _ids()
    add = lambda acts: acts + info["steering_vector"] * info["steering_coefficient"]
    with lm_eval_steer(model, {f"layers.{LAYER}": add}):
        theirs = _layer_outputs(model, input_ids=ids)
    with steer(model, vector, multiplier=1.5):
        ours = _layer_outputs(model, input_ids=ids)
    assert torch.equal(theirs, ours)


# -- errors -------------------------------------------------------------------------------------------


def test_errors_name_the_field() -> None:
    model = tiny_llama()
    model.yapo_model_id = "tiny-llama"
    sae = random_sae()
    with pytest.raises(SAELoadError, match="d_in is 16 but the model's hidden size is 32"):
        with steer(model, _sparse_for(random_sae(d_in=16)), sae=random_sae(d_in=16)):
            pass
    with pytest.raises(ValueError, match=r"layer: 7 is out of range; this model has layers 0..3"):
        with steer(model, SteeringVector.dense(torch.ones(HIDDEN), layer=7)):
            pass
    with pytest.raises(SteeringError, match="made for model 'other-model', not 'tiny-llama'"):
        with steer(model, SteeringVector.dense(torch.ones(HIDDEN), layer=1, model_id="other-model")):
            pass
    with pytest.raises(SteeringError, match="vector was made with SAE"):
        with steer(model, _sparse(random_sae(seed=9)), sae=sae):
            pass
    with pytest.raises(SteeringError, match="hidden size is 32"):
        with steer(model, SteeringVector.dense(torch.ones(HIDDEN + 1), layer=1)):
            pass
    with pytest.raises(SteeringError, match="pass the SAE"), steer(model, _sparse(sae)):
        pass
    with pytest.raises(SteeringError, match="multiplier"), steer(model, _dense(), multiplier=-1):
        pass
    with pytest.raises(SteeringError, match="direction"), steer(model, _dense(), direction=0):
        pass
    with pytest.raises(SteeringError, match="positions"), steer(model, _dense(), positions="middle"):
        pass
    with pytest.raises(SteeringError, match="values: contains NaN"):
        SteeringVector.dense(torch.tensor([1.0, float("nan")]), layer=0)
    with pytest.raises(SteeringError, match="has 5 entries but the SAE has d_sae = 96"):
        SteeringVector.sparse(torch.ones(5), layer=0, sae=sae)


def _sparse_for(sae: torch.nn.Module) -> SteeringVector:
    return SteeringVector.sparse(torch.ones(sae.cfg.d_sae), layer=1, sae=sae)


def test_sparse_vector_records_sae_identity() -> None:
    sae = random_sae()
    vector = _sparse(sae)
    assert vector.sae_hash == sae_hash(sae)
    assert vector.space == "sae" and vector.dim == D_SAE and vector.l0 == 6


def test_gemma3_and_llama_both_reach_their_layers() -> None:
    for model in (tiny_llama(), tiny_gemma3()):
        assert get_layer(model, 3) is model.model.layers[3]
