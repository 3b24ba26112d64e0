"""Analyses: activation patching, matched KL, multiplier selection, and their CLI (tiny models only)."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from conftest import D_SAE, HIDDEN, random_sae, tiny_llama, tiny_texts, tiny_tokenizer

from yapo_bench.analysis.kl import mean_token_kl, multiplier_for_kl
from yapo_bench.analysis.patching import (
    PatchingError,
    PatchingPair,
    culture_patching_pairs,
    last_token_states,
    layer_patching,
    option_batch,
    option_probabilities,
    patch_state,
)
from yapo_bench.data.spec import culture_mini_items
from yapo_bench.internals import decoder_layers
from yapo_bench.report.selection import Split, select_multipliers, split_ids
from yapo_bench.steering import SteeringVector

# ----------------------------------------------------------------------------------------------------
# Patching


def _ids(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor([tokenizer(text)["input_ids"]])


def _pair(source: str, target: str) -> PatchingPair:
    return PatchingPair(question_id="q", country="x", source_prompt=source, target_prompt=target,
                        options=("w1 w2", "w3", "w4 w5 w6"), option_country=("x", "western", "y"))


@torch.no_grad()
def test_patching_last_layer_gives_the_source_next_token_distribution(tiny_model):
    tokenizer = tiny_tokenizer()
    source, target = _ids(tokenizer, "w5 w9 w11 w40 w2"), _ids(tokenizer, "w7 w8 w30 w31 w32 w33 w1")
    states = last_token_states(tiny_model, source)
    last = len(decoder_layers(tiny_model)) - 1
    with patch_state(tiny_model, last, target.shape[1] - 1, states[last]):
        patched = torch.log_softmax(tiny_model(input_ids=target).logits[0, -1], dim=-1)
    expected = torch.log_softmax(tiny_model(input_ids=source).logits[0, -1], dim=-1)
    torch.testing.assert_close(patched, expected, atol=1e-6, rtol=0)
    unpatched = torch.log_softmax(tiny_model(input_ids=target).logits[0, -1], dim=-1)
    assert not torch.allclose(unpatched, expected, atol=1e-3)
    assert not decoder_layers(tiny_model)[last]._forward_hooks  # the hook is gone after the block


@torch.no_grad()
def test_patching_with_the_targets_own_state_changes_nothing(tiny_model):
    tokenizer = tiny_tokenizer()
    target = _ids(tokenizer, "w7 w8 w30 w31 w32 w33 w1")
    own = last_token_states(tiny_model, target)
    reference = tiny_model(input_ids=target).logits
    for layer in range(own.shape[0]):
        with patch_state(tiny_model, layer, target.shape[1] - 1, own[layer]):
            torch.testing.assert_close(tiny_model(input_ids=target).logits, reference, atol=1e-6, rtol=0)


def test_layer_patching_of_a_prompt_onto_itself_is_the_baseline_at_every_layer(tiny_model):
    # Also checks the cached/replayed scorer against plain forwards: baseline = full-forward probabilities.
    tokenizer = tiny_tokenizer()
    pair = _pair("w3 w9 w11 w40 w2 w17", "w3 w9 w11 w40 w2 w17")
    result = layer_patching(tiny_model, tokenizer, [pair])
    with torch.no_grad():
        full = option_probabilities(tiny_model, option_batch(tokenizer, pair.target_prompt, pair.options))
    assert result.baseline_target[0] == pytest.approx(float(full[0]), abs=1e-6)
    torch.testing.assert_close(result.p_target[0], result.baseline_target.expand(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.source_target, result.baseline_target, atol=1e-6, rtol=0)


def test_layer_patching_matches_full_forward_patches_and_reports_a_table(tiny_model):
    model, tokenizer = tiny_model, tiny_tokenizer()
    pairs = [_pair("w5 w9 w11 w40", "w7 w8 w30 w31 w1"), _pair("w12 w13 w14", "w50 w51 w52 w53 w54 w55")]
    result = layer_patching(model, tokenizer, pairs, layers=[0, 2, 3])
    for i, pair in enumerate(pairs):
        states = last_token_states(model, _ids(tokenizer, pair.source_prompt))
        batch = option_batch(tokenizer, pair.target_prompt, pair.options)
        for k, layer in enumerate([0, 2, 3]):
            with torch.no_grad(), patch_state(model, layer, batch.prompt_last, states[layer]):
                probs = option_probabilities(model, batch)
            assert float(result.p_target[i, k]) == pytest.approx(float(probs[0]), abs=1e-6)
            assert float(result.p_western[i, k]) == pytest.approx(float(probs[1]), abs=1e-6)
    table = result.table()
    assert [row["layer"] for row in table if row["country"] == "all"] == [0, 2, 3]
    gains = [row["gain_target"] for row in table if row["country"] == "all"]
    assert result.suggested_layer == [0, 2, 3][gains.index(max(gains))]


def test_culture_pairs_are_paired_by_question_id():
    items = culture_mini_items()
    pairs = culture_patching_pairs(items, ["egypt", "usa"])
    assert {p.country for p in pairs} == {"egypt", "usa"} and len(pairs) == 24
    by_id = {item.id: item for item in items}
    for pair in pairs:
        assert by_id[f"{pair.question_id}-loc"].mcq_prompt == pair.source_prompt
        assert by_id[f"{pair.question_id}-nonloc"].mcq_prompt == pair.target_prompt
        assert pair.option_country[pair.target_index] == pair.country
    with pytest.raises(PatchingError, match="countries: atlantis"):
        culture_patching_pairs(items, ["atlantis"])


def test_patch_state_rejects_bad_arguments():
    model = tiny_llama()
    with pytest.raises(PatchingError, match="position"), patch_state(model, 0, -1, torch.zeros(HIDDEN)):
        pass
    with pytest.raises(ValueError, match="layer"), patch_state(model, 9, 0, torch.zeros(HIDDEN)):
        pass


# ----------------------------------------------------------------------------------------------------
# Matched KL


def _dense_vector(seed: int = 1) -> SteeringVector:
    return SteeringVector.dense(torch.randn(HIDDEN, generator=torch.Generator().manual_seed(seed)), layer=1)


def test_kl_is_exactly_zero_at_lambda_zero_and_positive_otherwise(tiny_model):
    tokenizer, prompts = tiny_tokenizer(), tiny_texts(5)
    assert mean_token_kl(tiny_model, tokenizer, prompts, _dense_vector(), 0.0, batch_size=2) == 0.0
    assert mean_token_kl(tiny_model, tokenizer, prompts, _dense_vector(), 1.0, batch_size=2) > 0


def test_kl_of_a_sparse_vector_is_zero_at_lambda_zero():
    model, tokenizer, sae = tiny_llama(), tiny_tokenizer(), random_sae("jumprelu")
    values = torch.zeros(D_SAE)
    values[:5] = 1.0
    vector = SteeringVector.sparse(values, layer=1, sae=sae)
    assert mean_token_kl(model, tokenizer, tiny_texts(3), vector, 0.0, sae=sae) == 0.0
    assert mean_token_kl(model, tokenizer, tiny_texts(3), vector, 4.0, sae=sae) > 0


def test_kl_ignores_padding():
    model, tokenizer, prompts = tiny_llama(), tiny_tokenizer(), tiny_texts(4)
    batched = mean_token_kl(model, tokenizer, prompts, _dense_vector(), 1.0, batch_size=4)
    counts = [len(tokenizer(p)["input_ids"]) for p in prompts]
    alone = [mean_token_kl(model, tokenizer, [p], _dense_vector(), 1.0) for p in prompts]
    assert batched == pytest.approx(sum(c * k for c, k in zip(counts, alone)) / sum(counts), rel=1e-4)


@pytest.mark.parametrize("target", [0.001, 0.01])
def test_multiplier_for_kl_hits_the_target(target):
    model, tokenizer, prompts = tiny_llama(), tiny_tokenizer(), tiny_texts(4)
    match = multiplier_for_kl(target, model, tokenizer, prompts, _dense_vector(), rel_tol=0.05)
    assert match.converged and abs(match.kl - target) <= 0.05 * target
    assert mean_token_kl(model, tokenizer, prompts, _dense_vector(), match.multiplier) == pytest.approx(match.kl)
    assert match.evaluations[-1] == (match.multiplier, match.kl)


def test_multiplier_for_kl_names_an_unreachable_target():
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    zero = SteeringVector.dense(torch.zeros(HIDDEN), layer=1)
    with pytest.raises(ValueError, match="target: KL"):
        multiplier_for_kl(0.1, model, tokenizer, tiny_texts(2), zero, max_multiplier=8.0)
    with pytest.raises(ValueError, match="target"):
        multiplier_for_kl(0.0, model, tokenizer, tiny_texts(2), zero)


# ----------------------------------------------------------------------------------------------------
# Multiplier selection


def test_split_is_deterministic_disjoint_and_order_free():
    ids = [f"q{i}" for i in range(40)]
    split = split_ids(ids, 0.5, seed=3)
    assert split == split_ids(list(reversed(ids)) + ids, 0.5, seed=3)
    assert not split.validation & split.test and split.validation | split.test == set(ids)
    assert len(split.validation) == 20 and split != split_ids(ids, 0.5, seed=4)
    with pytest.raises(ValueError, match="validation/test: share"):
        Split(frozenset({"a", "b"}), frozenset({"b"}), 0, 0.5)
    with pytest.raises(ValueError, match="validation_fraction"):
        split_ids(ids, 1.0)


def test_selection_follows_validation_never_test():
    questions = [f"q{i}" for i in range(10)]
    split = split_ids(questions, 0.5, seed=0)
    items = [f"{q}-{variant}" for q in questions for variant in ("loc", "nonloc")]

    def score(item: str, lam: float) -> float:
        on_validation = item.rsplit("-", 1)[0] in split.validation
        best = 2.0 if on_validation else 8.0  # test favours a different λ
        return -abs(lam - best)

    lambdas = [0.0, 1.0, 2.0, 4.0, 8.0]
    scores = {(m, lam): {item: score(item, lam) for item in items} for m in ("caa", "yapo") for lam in lambdas}

    def group(item: str) -> str:
        return item.rsplit("-", 1)[0]

    chosen = select_multipliers(scores, split, group_of=group)
    assert {s.multiplier for s in chosen.values()} == {2.0}
    assert chosen["caa"].validation_score == 0.0 and chosen["caa"].test_score == -6.0
    assert chosen["caa"].n_validation == chosen["caa"].n_test == 10
    # Test scores of λs that were not chosen are never read: poisoning them changes nothing.
    poisoned = {key: {item: (math.nan if group(item) in split.test and key[1] != 2.0 else value)
                      for item, value in items_scores.items()} for key, items_scores in scores.items()}
    assert select_multipliers(poisoned, split, group_of=group) == chosen


def test_selection_ties_go_to_the_smaller_lambda_and_bad_input_is_named():
    split = Split(frozenset({"a"}), frozenset({"b"}), 0, 0.5)
    scores = {("caa", 4.0): {"a": 1.0, "b": 0.0}, ("caa", 2.0): {"a": 1.0, "b": 5.0}}
    assert select_multipliers(scores, split)["caa"].multiplier == 2.0
    with pytest.raises(ValueError, match="neither split"):
        select_multipliers({("caa", 1.0): {"a": 1.0, "c": 0.0}}, split)
    with pytest.raises(ValueError, match="different items"):
        select_multipliers({("caa", 1.0): {"a": 1.0, "b": 0.0}, ("caa", 2.0): {"a": 1.0}}, split)


# ----------------------------------------------------------------------------------------------------
# CLI


def test_analyze_kl_command_writes_table_and_plot(tmp_path, monkeypatch):
    from yapo_bench.commands import analyze as analysis_cli

    model, tokenizer = tiny_llama(), tiny_tokenizer()
    vector = _dense_vector()
    vector.save(tmp_path / "vec")
    monkeypatch.setattr(analysis_cli, "_load_model", lambda source, args: (model, tokenizer))
    parser = argparse.ArgumentParser()
    analysis_cli.add_analysis_commands(parser.add_subparsers(dest="command"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n\n".join(tiny_texts(3)))
    args = parser.parse_args(["analyze", "kl", "--vector", str(tmp_path / "vec"), "--target", "0.005",
                              "--model", "tiny", "--prompts", str(prompts), "--out", str(tmp_path / "out")])
    args.func(args)
    summary = json.loads((tmp_path / "out" / "kl.json").read_text())
    assert abs(summary["kl"] - 0.005) <= 0.05 * 0.005 and summary["converged"]
    assert (tmp_path / "out" / "kl.csv").read_text().startswith("multiplier,kl")
    assert (tmp_path / "out" / "kl.png").stat().st_size > 0


def test_analyze_layers_command_writes_table_and_plot(tmp_path, monkeypatch):
    from yapo_bench.commands import analyze as analysis_cli

    model, tokenizer = tiny_llama(), tiny_tokenizer()  # culture text is all <unk> to it: mechanics only
    monkeypatch.setattr(analysis_cli, "_load_model", lambda source, args: (model, tokenizer))
    parser = argparse.ArgumentParser()
    analysis_cli.add_analysis_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["analyze", "layers", "--model", "tiny", "--countries", "usa", "uk", "--max-pairs", "2",
                              "--layers", "0", "3", "--out", str(tmp_path)])
    args.func(args)
    summary = json.loads((tmp_path / "layers.json").read_text())
    assert summary["n_pairs"] == 4 and summary["suggested_layer"] in (0, 3)
    assert [row["layer"] for row in summary["per_layer"]] == [0, 3]
    lines = (tmp_path / "layers.csv").read_text().splitlines()
    assert lines[0].startswith("country,layer,n_pairs,p_target") and len(lines) == 1 + 3 * 2
    assert (tmp_path / "layers.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------- features


def test_feature_reading_finds_the_top_latents_their_tokens_and_their_strongest_contexts() -> None:
    from yapo_bench.analysis.features import (
        promoted_tokens,
        read_features,
        top_contexts,
        top_latents,
    )
    from yapo_bench.corpus import token_windows, window_batches
    from yapo_bench.internals import layer_output

    model, tokenizer, sae = tiny_llama(), tiny_tokenizer(), random_sae("jumprelu")
    values = torch.zeros(D_SAE)
    values[[3, 7, 11]] = torch.tensor([0.5, -2.0, 1.0])
    vector = SteeringVector.sparse(values, layer=1, sae=sae)
    assert top_latents(vector, 2) == [(7, -2.0), (11, 1.0)]
    # logit lens: the promoted token is the argmax of W_U·(norm scale ⊙ W_dec[7])
    logits = (sae.W_dec[7] * model.model.norm.weight) @ model.lm_head.weight.T
    promoted, suppressed = promoted_tokens(model, tokenizer, sae, [7], n=1)[7]
    assert promoted == [tokenizer.decode([int(logits.argmax())])]
    assert suppressed == [tokenizer.decode([int(logits.argmin())])]
    # the strongest context is the brute-force maximum of a latent's code over the same windows
    texts = tiny_texts(6)
    windows = token_windows(tokenizer, texts, 16)
    with torch.no_grad():
        codes = torch.cat([(sae.encode(layer_output(model, 1, **enc).float()) * enc["attention_mask"][..., None])
                           [:, 1:].flatten(0, 1) for enc in window_batches(tokenizer, windows, 4)])
    latent = int(codes.max(dim=0).values.argmax())  # the latent that fires most on this text
    best = float(codes[:, latent].max())
    assert best > 0
    contexts = top_contexts(model, tokenizer, sae, 1, texts, [latent], n=3, seq_len=16, batch_size=4)[latent]
    assert contexts[0]["activation"] == pytest.approx(best, rel=1e-5)
    assert [c["activation"] for c in contexts] == sorted((c["activation"] for c in contexts), reverse=True)
    readings = read_features(model, tokenizer, sae, vector, texts, k=3, n_tokens=2, n_contexts=1)
    assert [r.latent for r in readings] == [7, 11, 3] and all(len(r.promoted) == 2 for r in readings)


def test_comparing_a_sparse_vector_with_its_own_decoded_direction() -> None:
    from yapo_bench.analysis.features import compare_with_dense

    sae = random_sae("jumprelu")
    values = torch.zeros(D_SAE)
    values[[2, 5]] = torch.tensor([1.0, 0.5])
    sparse = SteeringVector.sparse(values, layer=1, sae=sae)
    dense = SteeringVector.dense((values @ sae.W_dec).detach(), layer=1)
    result = compare_with_dense(sparse, dense, sae, k=2)
    assert result["cosine_decoded_vs_dense"] == pytest.approx(1.0, abs=1e-6)
    assert 0 <= result["jaccard"] <= 1 and result["sparse_top"] == [2, 5]
    with pytest.raises(ValueError, match="compare a sparse"):
        compare_with_dense(dense, sparse, sae)


# ------------------------------------------------------------------------------------------------- sweep


def test_analyze_sweep_selects_on_validation_matches_kl_and_checks_mmlu(tmp_path, monkeypatch):
    import dataclasses
    import zlib

    import pandas as pd
    import yaml

    from yapo_bench.commands import analyze as analysis_cli
    from yapo_bench.commands import sweep as sweep_command
    from yapo_bench.data import spec

    def tiny_words(text: str) -> str:  # culture text in the tiny vocabulary, so that vectors are not ~0
        return " ".join(f"w{zlib.crc32(word.encode()) % 124}" for word in text.split())

    items = [dataclasses.replace(item, mcq_prompt=tiny_words(item.mcq_prompt),
                                 options=tuple(tiny_words(o) for o in item.options))
             for item in culture_mini_items() if item.country == "egypt"]
    monkeypatch.setattr(spec, "culture_mini_items", lambda: items)
    model_dir = tmp_path / "model"
    tiny_llama().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    mmlu = tmp_path / "mmlu"
    for split, rows in (("test", 3), ("dev", 1)):
        (mmlu / split).mkdir(parents=True)
        (mmlu / split / f"anatomy_{split}.csv").write_text(
            "".join(f"the cat sat {i},on,a,mat {i},the,B\n" for i in range(rows)))
    monkeypatch.setenv("YAPO_BENCH_MMLU", str(mmlu))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n\n".join(tiny_texts(3)))
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny-sweep", "out": str(tmp_path / "run"), "model": str(model_dir), "layer": 1,
        "countries": ["egypt"], "methods": ["base", "caa", "bipo"], "families": ["mcq"], "limit": 3,
        "training": {"steps": 2, "lr": 0.01}, "multipliers": {"caa": [0.5, 2.0], "bipo": [1.0, 4.0]}}))
    parser = argparse.ArgumentParser()
    analysis_cli.add_analysis_commands(parser.add_subparsers(dest="command"))
    out = tmp_path / "analysis"
    argv = ["analyze", "sweep", str(config), "--kl-target", "0.002", "--max-kl", "0.0003", "--prompts", str(prompts),
            "--mmlu-tasks", "mmlu_cloze_anatomy", "--mmlu-limit", "2", "--out", str(out), "--no-progress"]
    args = parser.parse_args(argv)
    args.func(args)

    sweep = pd.read_csv(out / "sweep.csv")
    assert sorted(zip(sweep["method"], sweep["multiplier"])) == [
        ("base", 0.0), ("bipo", 1.0), ("bipo", 4.0), ("caa", 0.5), ("caa", 2.0)]
    assert (sweep.loc[sweep["method"] == "base", "answer_kl_mnat"] == 0).all()
    comparison = pd.read_csv(out / "comparison.csv").set_index("method")
    assert (sweep["neutral_kl"] > 0.0003).any() and (sweep["neutral_kl"] <= 0.0003).any()  # the budget bites
    for method, curve in sweep[sweep["method"] != "base"].groupby("method"):
        candidates = curve[curve["neutral_kl"] <= 0.0003]  # within the disruption budget ...
        if candidates.empty:
            assert math.isnan(comparison.loc[method, "chosen_multiplier"])
            continue
        best = candidates["validation_mean"].max()  # ... chosen on validation alone (ties: the smaller λ) ...
        chosen = candidates[candidates["validation_mean"] == best]["multiplier"].min()
        assert comparison.loc[method, "chosen_multiplier"] == chosen
        # ... and reported on test: the score of the chosen λ on the other questions
        assert comparison.loc[method, "test_at_chosen"] == pytest.approx(
            curve.loc[curve["multiplier"] == chosen, "test_mean"].iloc[0])
        assert comparison.loc[method, "neutral_kl_at_chosen"] <= 0.0003

    matched = pd.read_csv(out / "matched_kl.csv")
    assert sorted(matched["method"]) == ["bipo", "caa"] and matched["converged"].all()
    from yapo_bench.models import load_model

    loaded = load_model(str(model_dir))
    for row in matched.itertuples():
        kl = mean_token_kl(loaded.model, loaded.tokenizer, tiny_texts(3), SteeringVector.load(row.vector),
                           row.multiplier, max_length=64)
        assert abs(kl - 0.002) <= 0.05 * 0.002  # the λ found reaches the target, recomputed independently
    assert comparison["test_at_matched_kl"].notna().all()

    mmlu_table = pd.read_csv(out / "mmlu.csv")  # the base and every method with a chosen λ
    assert set(mmlu_table["method"]) == {"base"} | set(comparison.dropna(subset=["chosen_multiplier"]).index)
    assert (mmlu_table[mmlu_table["metric"] == "kl_to_base_mnat"]["method"] != "base").all()
    assert (out / "sweep.png").stat().st_size > 0 and json.loads((out / "sweep.json").read_text())["kl"]

    def no_evaluation(*_args, **_kwargs):
        raise AssertionError("a rerun must reuse every evaluation")

    monkeypatch.setattr(sweep_command, "run_eval", no_evaluation)
    monkeypatch.setattr("yapo_bench.pipeline.lifecycle.EXECUTORS", {})  # the run's steps are all done too
    parser.parse_args(argv).func(parser.parse_args(argv))
