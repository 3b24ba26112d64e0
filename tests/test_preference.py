"""The shared preference loss: cached and naive paths agree, gradients reach v through eq. 3."""

from __future__ import annotations

import pytest
import torch
from conftest import D_SAE, HIDDEN, random_sae, tiny_gemma3, tiny_llama, tiny_tokenizer

from yapo_bench.methods.preference import PreferenceBatchScorer, encode_pairs, preference_loss
from yapo_bench.models import LoadedModel
from yapo_bench.pairs import PreferencePair
from yapo_bench.steering import SteeringVector

PAIRS = [
    PreferencePair("w1 w2 w3", "w4 w5 w6 w7", "w8 w9"),
    PreferencePair("w10", "w11 w12", "w13 w14 w15 w16 w17"),
    PreferencePair("w18 w19", "w20", "w21 w22"),
]


def _vector(space: str, sae: torch.nn.Module) -> SteeringVector:
    torch.manual_seed(5)
    if space == "dense":
        values = (torch.randn(HIDDEN) * 0.5).requires_grad_()
        return SteeringVector.dense(values, layer=1)
    values = (torch.rand(D_SAE) * (torch.rand(D_SAE) < 0.2)).requires_grad_()
    return SteeringVector.sparse(values, layer=1, sae=sae)


@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gemma3])
@pytest.mark.parametrize("space", ["dense", "sae"])
@pytest.mark.parametrize("positions", ["all", "response"])
def test_cached_and_naive_losses_and_gradients_agree(make_model, space: str, positions: str) -> None:
    loaded = LoadedModel(model=make_model(), tokenizer=tiny_tokenizer(), model_id="tiny")
    sae = random_sae() if space == "sae" else None
    encoded, truncated = encode_pairs(loaded, PAIRS, max_length=64)
    assert truncated == 0
    results = []
    for naive in (True, False):
        scorer = PreferenceBatchScorer(loaded, layer=1, sae=sae, positions=positions, naive=naive)
        vector = _vector(space, random_sae())
        for direction in (1, -1):
            loss, stats = preference_loss(scorer, encoded, vector, direction, beta=0.1)
            loss.backward()
            results.append((loss.detach(), vector.values.grad.clone(), float(stats["reward_margin"])))
            vector.values.grad = None
    half = len(results) // 2
    for (naive_loss, naive_grad, naive_margin), (cached_loss, cached_grad, cached_margin) in zip(results[:half], results[half:]):
        torch.testing.assert_close(cached_loss, naive_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(cached_grad, naive_grad, rtol=1e-4, atol=1e-5 * naive_grad.abs().max().item())
        assert naive_grad.abs().sum() > 0
        assert cached_margin == pytest.approx(naive_margin, rel=1e-4, abs=1e-5)


def test_zero_vector_gives_log_two_loss() -> None:
    loaded = LoadedModel(model=tiny_llama(), tokenizer=tiny_tokenizer(), model_id="tiny")
    encoded, _ = encode_pairs(loaded, PAIRS, max_length=64)
    scorer = PreferenceBatchScorer(loaded, layer=1, sae=None, positions="all", naive=False)
    vector = SteeringVector.dense(torch.zeros(HIDDEN), layer=1)
    loss, stats = preference_loss(scorer, encoded, vector, 1, beta=0.1)
    assert float(loss.detach()) == pytest.approx(float(torch.log(torch.tensor(2.0))), abs=1e-6)
    assert float(stats["reward_margin"]) == pytest.approx(0.0, abs=1e-5)


def test_truncation_is_counted_and_empty_responses_refused() -> None:
    loaded = LoadedModel(model=tiny_llama(), tokenizer=tiny_tokenizer(), model_id="tiny")
    encoded, truncated = encode_pairs(loaded, PAIRS[:1], max_length=6)
    assert truncated == 1 and len(encoded[0].chosen.ids) == 6
    with pytest.raises(ValueError, match="max_length: 3 leaves no response token"):
        encode_pairs(loaded, PAIRS[:1], max_length=3)
