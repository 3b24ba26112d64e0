"""Mean-difference methods (CAA dense, SAS sparse) on a tiny model."""

from __future__ import annotations

import pytest
import torch
from conftest import D_SAE, HIDDEN, random_sae, tiny_llama, tiny_tokenizer

from yapo_bench.data import load_pair_file
from yapo_bench.methods import caa, sas
from yapo_bench.methods.mean_diff import MeanDiffSpec
from yapo_bench.models import LoadedModel
from yapo_bench.pairs import PreferencePair, encode_with_response

PAIRS = [PreferencePair("w1 w2", "w3 w4 w5", "w6 w7"), PreferencePair("w8", "w9 w10", "w11 w12 w13")]


def _loaded() -> LoadedModel:
    return LoadedModel(model=tiny_llama(), tokenizer=tiny_tokenizer(), model_id="tiny")


def _response_states(loaded: LoadedModel, prompt: str, response: str, layer: int) -> torch.Tensor:
    ids, start = encode_with_response(loaded.tokenizer, prompt, response)
    with torch.no_grad():
        states = loaded.model(ids[None], output_hidden_states=True).hidden_states[layer + 1][0]
    return states[start:]


def test_caa_is_the_mean_response_difference() -> None:
    loaded = _loaded()
    vector = caa.fit(loaded, PAIRS, MeanDiffSpec(layer=1))
    expected = sum(
        _response_states(loaded, p.prompt, p.chosen, 1).mean(0) - _response_states(loaded, p.prompt, p.rejected, 1).mean(0)
        for p in PAIRS
    ) / len(PAIRS)
    assert vector.space == "dense" and vector.dim == HIDDEN and vector.method == "caa"
    torch.testing.assert_close(vector.values, expected)


def test_sas_lives_in_sae_space_and_keeps_top_k() -> None:
    sae = random_sae()
    vector = sas.fit(_loaded(), PAIRS, MeanDiffSpec(layer=1, top_k=5), sae=sae)
    assert vector.space == "sae" and vector.dim == D_SAE and vector.l0 <= 5
    with pytest.raises(ValueError, match="pass an SAE"):
        sas.fit(_loaded(), PAIRS, MeanDiffSpec(layer=1))


@pytest.mark.parametrize("method", [caa, sas])
def test_the_recorded_max_length_is_the_one_that_applied(method) -> None:
    """30000 tokens asked of a model with 128 positions: the vector's config says 128 applied, its provenance what
    was asked."""
    vector = method.fit(_loaded(), PAIRS, MeanDiffSpec(layer=1, max_length=30000), sae=random_sae())
    assert vector.config["max_length"] == 128 and vector.provenance["max_length_requested"] == 30000
    fits = method.fit(_loaded(), PAIRS, MeanDiffSpec(layer=1, max_length=64), sae=random_sae())
    assert fits.config["max_length"] == 64 and fits.provenance["max_length_requested"] == 64


def test_pair_validation(tmp_path) -> None:
    with pytest.raises(ValueError, match="chosen/rejected: identical"):
        PreferencePair("q", "same", "same")
    with pytest.raises(ValueError, match="rejected: expected a non-empty string"):
        PreferencePair("q", "a", "")
    (tmp_path / "p.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q"}\n')
    with pytest.raises(ValueError, match="p.jsonl row 2: chosen"):
        load_pair_file(tmp_path / "p.jsonl", strict=True)
    with pytest.raises(ValueError, match="aggregation"):
        MeanDiffSpec(layer=1, aggregation="median")
