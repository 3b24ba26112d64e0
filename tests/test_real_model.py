"""Tests on the real packaged default model (SmolLM2-135M-Instruct) and the SAE we ship for it."""

from __future__ import annotations

import json

import pytest
import torch

from yapo_bench.corpus import load_corpus, render_documents
from yapo_bench.models import get_preset
from yapo_bench.sae import load_sae, shipped_sae_path
from yapo_bench.sae.evaluation import evaluate_sae
from yapo_bench.steering import SteeringVector, steer

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def shipped_sae():
    return load_sae("smollm2-135m")


def test_preset_loads_the_packaged_gguf(real_model) -> None:
    assert real_model.model_id == "smollm2-135m"
    ids = real_model.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        next_token = real_model.model(**ids).logits[0, -1].argmax()
    assert real_model.tokenizer.decode(next_token).strip() == "Paris"


def test_shipped_sae_recovers_cross_entropy(real_model, shipped_sae) -> None:
    """CE loss recovered against mean-ablation >= 95 % on a few hundred held-out tokens."""
    layer = get_preset("smollm2-135m").default_layer
    texts = render_documents(real_model.tokenizer, load_corpus("python-stdlib", "heldout")[:6], chat_every=3)
    result = evaluate_sae(real_model.model, real_model.tokenizer, shipped_sae, layer, texts, n_tokens=400,
                          progress=False)
    assert result.tokens >= 300
    assert result.ce_recovered_vs_mean >= 0.95, result
    assert result.ce_spliced < result.ce_mean_ablation < result.ce_zero_ablation


def test_shipped_sae_card_is_complete() -> None:
    card = json.loads((shipped_sae_path("smollm2-135m-l15-batchtopk") / "card.json").read_text())
    for key in ("model", "layer", "corpus_description", "training_tokens_used", "command", "eval"):
        assert key in card
    assert card["eval"]["ce_recovered_vs_mean"] >= 0.95
    assert card["eval"]["dead_fraction"] <= 0.30


def test_sparse_steering_on_the_real_model(real_model, shipped_sae) -> None:
    layer = get_preset("smollm2-135m").default_layer
    values = torch.zeros(shipped_sae.cfg.d_sae)
    values[torch.arange(0, 40, 4)] = 3.0
    vector = SteeringVector.sparse(values, layer=layer, sae=shipped_sae, model_id="smollm2-135m")
    ids = real_model.tokenizer(["Tell me about your day."], return_tensors="pt")
    with torch.no_grad():
        clean = real_model.model(**ids).logits
        with steer(real_model.model, vector, multiplier=0.0, sae=shipped_sae):
            zero = real_model.model(**ids).logits
        with steer(real_model.model, vector, multiplier=2.0, sae=shipped_sae):
            fast = real_model.model(**ids).logits
        with steer(real_model.model, vector, multiplier=2.0, sae=shipped_sae, sparse_form="full"):
            full = real_model.model(**ids).logits
    assert torch.equal(clean, zero)
    torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(fast, clean)


def test_yapo_training_on_real_pairs_lowers_the_loss(real_model, shipped_sae) -> None:
    """A few YaPO steps on the shipped pair set: the loss on the same pairs, both directions, falls below
    log 2 (its value at v = 0), and only latents active on the data moved."""
    from yapo_bench.data import load_pairs
    from yapo_bench.methods import get_method
    from yapo_bench.methods.preference import PreferenceBatchScorer, PreferenceSpec, encode_pairs, evaluate_heldout

    pairs = load_pairs("demo:cheerful")[:8]
    spec = PreferenceSpec(layer=get_preset("smollm2-135m").default_layer, steps=8, batch_size=4, lr=5e-3,
                          warmup_steps=2, heldout_fraction=0.0, eval_every=0, checkpoint_every=0, progress=False)
    vector = get_method("yapo").fit(real_model, pairs, spec, sae=shipped_sae)
    encoded, _ = encode_pairs(real_model, pairs, spec.max_length)
    scorer = PreferenceBatchScorer(real_model, spec.layer, shipped_sae, spec.positions, naive=False)
    before = evaluate_heldout(scorer, encoded, SteeringVector.sparse(torch.zeros_like(vector.values), spec.layer,
                                                                     shipped_sae), spec)
    after = evaluate_heldout(scorer, encoded, vector, spec)
    assert before["heldout_loss"] == pytest.approx(0.693147, abs=1e-4)
    assert after["heldout_loss"] < before["heldout_loss"] - 0.02
    assert 0 < vector.l0 < vector.dim
