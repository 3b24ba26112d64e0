"""SAE loading, training, activation collection and evaluation on tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import HIDDEN, random_sae, tiny_llama, tiny_texts, tiny_tokenizer

from yapo_bench.corpus import load_corpus, token_windows
from yapo_bench.sae import SAELoadError, load_sae, sae_hash
from yapo_bench.sae.activations import collect_activations
from yapo_bench.sae.evaluation import evaluate_sae
from yapo_bench.sae.training import SAETrainSpec, save_sae, train_sae
from yapo_bench.steering import SteeringVector, phi_full, sparse_delta


def test_load_from_local_directory_and_errors(tmp_path, monkeypatch) -> None:
    sae = random_sae()
    sae.save_model(tmp_path / "sae")
    loaded = load_sae(str(tmp_path / "sae"))
    assert sae_hash(loaded) == sae_hash(sae)
    assert loaded.yapo_sae_id == str((tmp_path / "sae").resolve())
    (tmp_path / "empty").mkdir()
    with pytest.raises(SAELoadError, match="has no cfg.json"):
        load_sae(str(tmp_path / "empty"))
    with pytest.raises(SAELoadError, match="not a shipped SAE"):
        load_sae("no-such-release/layer_0")
    from dataclasses import replace

    from yapo_bench.models import PRESETS

    # a preset with neither a registry SAE nor a shipped one (every preset has one today)
    monkeypatch.setitem(PRESETS, "gemma3-270m", replace(PRESETS["gemma3-270m"], shipped_sae=None, hub_sae=None))
    with pytest.raises(SAELoadError, match="ships no SAE yet"):
        load_sae("gemma3-270m")


def test_collect_drops_first_position_and_padding() -> None:
    model, tok = tiny_llama(), tiny_tokenizer()
    texts = tiny_texts(6)
    windows = token_windows(tok, texts, seq_len=16)
    acts = collect_activations(model, tok, texts, layer=1, n_tokens=10_000, seq_len=16, batch_size=4, progress=False)
    assert acts.shape == (sum(len(w) - 1 for w in windows), HIDDEN)
    # the rows are exactly layer 1's outputs at positions 1.. of the first window
    first = torch.tensor(windows[0])[None]
    with torch.no_grad():
        hidden = tiny_llama().model(first, output_hidden_states=True).hidden_states[2][0]
    torch.testing.assert_close(acts[: len(windows[0]) - 1], hidden[1:])


def test_train_saves_a_jumprelu_sae_that_steers_exactly(tmp_path) -> None:
    torch.manual_seed(0)
    acts = torch.randn(4096, HIDDEN) @ torch.randn(HIDDEN, HIDDEN)
    spec = SAETrainSpec(model="tiny", layer=1, d_sae=64, k=4, batch_size=256, epochs=2, tokens=4096)
    trained = train_sae(acts, spec, progress=False)
    out = save_sae(trained, tmp_path / "sae", {"note": "test"}, dtype="bfloat16")
    sae = load_sae(str(out))
    assert sae.cfg.architecture() == "jumprelu"
    assert json.loads((out / "card.json").read_text()) == {"note": "test"}
    codes = sae.encode(acts[:256])
    assert (codes >= 0).all()
    assert 0 < (codes > 0).float().sum(-1).mean() < 64
    recon_error = (sae.decode(codes) - acts[:256]).pow(2).sum() / (acts[:256] - acts.mean(0)).pow(2).sum()
    assert recon_error < 1.0  # it learned something
    vector = SteeringVector.sparse(torch.randn(64) * (torch.rand(64) < 0.2), layer=1, sae=sae)
    hidden = acts[:32]
    torch.testing.assert_close(hidden + sparse_delta(hidden, vector.values, 1.0, sae),
                               phi_full(hidden, vector.values, 1.0, sae), rtol=1e-5, atol=1e-4)


def test_whitened_training_folds_into_weights_and_sees_past_a_dominant_dimension(tmp_path) -> None:
    """Gemma-3's residual stream has one dimension holding ~90% of the variance. sae-lens' covariance whitening
    (folded into the weights after training) keeps the other dimensions in view, and the saved SAE reads raw
    activations."""
    torch.manual_seed(0)
    codes = torch.rand(8192, 64) * (torch.rand(8192, 64) < 4 / 64)  # sparse ground truth, 4 features a token
    acts = codes @ torch.randn(64, HIDDEN)
    acts[:, 0] = acts[:, 0] * 300 + 5000  # a huge, offset dimension
    rest = slice(1, None)

    def rest_error(normalize: str) -> tuple[float, torch.nn.Module]:
        spec = SAETrainSpec(model="tiny", layer=1, d_sae=64, k=8, batch_size=256, epochs=12, tokens=8192, lr=3e-3,
                            normalize=normalize)
        trained = train_sae(acts, spec, progress=False)
        sae = load_sae(str(save_sae(trained, tmp_path / normalize, {}, dtype="float32")))
        with torch.no_grad():
            recon = sae.decode(sae.encode(acts[:1024]))
        error = (recon - acts[:1024])[:, rest].pow(2).sum() / (acts[:1024, rest] - acts[:, rest].mean(0)).pow(2).sum()
        return float(error), sae

    whitened, sae = rest_error("covariance_whitening")
    assert sae.cfg.normalize_activations == "none"  # the whitening lives in the weights
    # With one global scale the decoder's small errors in the other dimensions, scaled back up, swamp them: worse
    # than predicting their mean, as Gemma-3-270M's first SAE was (CE loss worse than mean ablation).
    assert whitened < 0.3 and rest_error("expected_average_only_in")[0] > 1.0
    with pytest.raises(ValueError, match="normalize: 'zscore'; expected one of"):
        SAETrainSpec(model="tiny", layer=1, normalize="zscore")


def test_activation_cache_is_float16_unless_a_row_training_uses_overflows() -> None:
    from yapo_bench.sae.training import _cacheable

    acts = torch.randn(100, HIDDEN)
    acts[3, 0] = 1e5  # an attention sink: its norm is far above 10x the median, so training drops it
    cached = _cacheable(acts, massive_norm_factor=10.0)
    assert cached.dtype == torch.float16 and torch.isinf(cached[3, 0]) and torch.isfinite(cached[4:]).all()
    kept = _cacheable(acts, massive_norm_factor=1e6)  # now training would use that row: its value must survive
    assert kept.dtype == torch.float32 and kept[3, 0] == 1e5


def test_evaluate_reports_consistent_figures() -> None:
    model, tok = tiny_llama(), tiny_tokenizer()
    result = evaluate_sae(model, tok, random_sae(), layer=1, texts=tiny_texts(8), n_tokens=500, seq_len=32,
                          progress=False)
    assert result.tokens > 0
    assert 0 <= result.dead_fraction <= 1
    expected = (result.ce_mean_ablation - result.ce_spliced) / (result.ce_mean_ablation - result.ce_clean)
    assert result.ce_recovered_vs_mean == pytest.approx(expected)
    assert result.ce_clean > 0


def test_wrong_width_sae_is_refused() -> None:
    with pytest.raises(SAELoadError, match="d_in is 16 but the model's hidden size is 32"):
        evaluate_sae(tiny_llama(), tiny_tokenizer(), random_sae(d_in=16), 1, tiny_texts(2), progress=False)


def test_builtin_corpus_splits_are_disjoint_and_files_load(tmp_path, monkeypatch) -> None:
    import functools

    from yapo_bench import corpus

    # the corpus is the same documents for both splits: parse the stdlib once (each parse takes ~10 s)
    monkeypatch.setattr(corpus, "_python_stdlib", functools.cache(corpus._python_stdlib))
    train, heldout = load_corpus("python-stdlib", "train"), load_corpus("python-stdlib", "heldout")
    assert len(train) > 1000 and len(heldout) > 30
    assert not set(train) & set(heldout)
    (tmp_path / "c.jsonl").write_text('{"text": "hello"}\n{"text": "world"}\n')
    assert load_corpus(str(tmp_path / "c.jsonl")) == ["hello", "world"]
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match="row 1 has no string field 'text'"):
        load_corpus(str(tmp_path / "bad.jsonl"))
    with pytest.raises(ValueError, match="matches no file"):
        load_corpus(str(tmp_path / "nothing*.txt"))
