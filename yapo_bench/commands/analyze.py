"""`yapo-bench analyze ...`: layer discovery by activation patching, matched-KL multipliers, feature reading,
and the λ sweep (selection on validation, comparison at matched KL, MMLU preservation).

Each command writes a CSV table, a JSON summary (with the config that made it) and a PNG plot into --out
(default reports/analysis/<name>/), every file atomically.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from yapo_bench.analysis.outputs import REPORT_ROOT, pyplot, save_figure, write_csv, write_text
from yapo_bench.devices import add_placement_arguments, placement_of
from yapo_bench.models import DEFAULT_MODEL
from yapo_bench.steering import module_device


def _load_model(source: str, args: argparse.Namespace) -> tuple[Any, Any]:
    from yapo_bench.models import load_model

    placement = placement_of(args)
    loaded = load_model(source, dtype=placement.torch_dtype, device=placement.device)
    return loaded.model, loaded.tokenizer


def _cmd_layers(args: argparse.Namespace) -> None:
    from yapo_bench.analysis.layers import discover_layer

    model, tokenizer = _load_model(args.model, args)
    out = args.out or REPORT_ROOT / "layers"
    summary = discover_layer(model, tokenizer, args.model, args.countries, out, layers=args.layers,
                             max_pairs=args.max_pairs, normalization=args.normalization)
    overall = summary["per_layer"]
    for row in overall:
        print(f"layer {row['layer']:3d}  P(country) {row['p_target']:.4f}  gain {row['gain_target']:+.4f}  "
              f"P(western) {row['p_western']:.4f}")
    print(f"baseline P(country) {overall[0]['baseline_target']:.4f}, "
          f"localized prompt {overall[0]['source_target']:.4f}")
    print(f"suggested layer: {summary['suggested_layer']}; wrote {out}/layers.csv, layers.json, layers.png")


def _cmd_kl(args: argparse.Namespace) -> None:
    from yapo_bench.analysis.kl import multiplier_for_kl
    from yapo_bench.commands.sweep import neutral_prompts
    from yapo_bench.steering import SteeringVector

    vector = SteeringVector.load(args.vector)
    model_spec = args.model or vector.model_id
    if not model_spec:
        raise ValueError("--model: the vector records no model; name the model it was made for")
    model, tokenizer = _load_model(model_spec, args)
    sae = None
    if vector.space == "sae":
        from yapo_bench.sae import load_sae

        sae = load_sae(args.sae or vector.sae_id, device=str(module_device(model)))
    prompts = neutral_prompts(args)
    match = multiplier_for_kl(args.target, model, tokenizer, prompts, vector, sae, args.direction,
                              rel_tol=args.rel_tol, max_length=args.max_length)
    out = args.out or REPORT_ROOT / "kl"
    rows = [{"multiplier": lam, "kl": kl} for lam, kl in sorted(match.evaluations)]
    write_csv(out / "kl.csv", rows)
    summary = {
        "vector": str(args.vector), "method": vector.method, "space": vector.space, "layer": vector.layer,
        "model": model_spec, "sae": getattr(sae, "yapo_sae_id", None), "target": match.target,
        "multiplier": match.multiplier, "kl": match.kl, "converged": match.converged,
        "truncated_prompts": match.truncated_prompts,
        "config": {"direction": args.direction, "rel_tol": args.rel_tol, "prompts": args.prompts,
                   "n_prompts": len(prompts), "max_length": args.max_length, "positions": "all",
                   "kl": "mean over real tokens of KL(unsteered || steered), nats"},
        "evaluations": rows,
    }
    write_text(out / "kl.json", json.dumps(summary, indent=2) + "\n")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["multiplier"] for r in rows], [r["kl"] for r in rows], marker="o")
    ax.axhline(args.target, color="grey", ls="--", label=f"target {args.target}")
    ax.axvline(match.multiplier, color="black", lw=0.8, label=f"λ = {match.multiplier:.4g}")
    ax.set(xlabel="multiplier λ", ylabel="mean token KL (nats)", title=f"KL vs λ: {Path(args.vector).name}")
    ax.legend()
    save_figure(fig, out / "kl.png")
    print(f"λ = {match.multiplier:.6g} gives KL {match.kl:.6g} (target {match.target}, "
          f"{'converged' if match.converged else 'NOT converged'}); wrote {out}/kl.csv, kl.json, kl.png")


def _cmd_features(args: argparse.Namespace) -> None:
    from yapo_bench.analysis.features import compare_with_dense, read_features
    from yapo_bench.corpus import load_corpus
    from yapo_bench.sae import load_sae
    from yapo_bench.steering import SteeringVector

    vector = SteeringVector.load(args.vector)
    if vector.space != "sae":
        raise ValueError(f"--vector: {args.vector} is dense; feature reading needs a sparse (SAE-space) vector")
    model_spec = args.model or vector.model_id
    if not model_spec:
        raise ValueError("--model: the vector records no model; name the model it was made for")
    model, tokenizer = _load_model(model_spec, args)
    sae = load_sae(args.sae or vector.sae_id, device=str(module_device(model)))
    texts = load_corpus(args.corpus, split="heldout")[: args.n_docs]
    readings = read_features(model, tokenizer, sae, vector, texts, k=args.k)
    out = args.out or REPORT_ROOT / "features"
    summary: dict[str, Any] = {"vector": str(args.vector), "method": vector.method, "l0": vector.l0,
                               "norm": vector.norm, "corpus": args.corpus, "documents": len(texts),
                               "latents": [reading.__dict__ for reading in readings]}
    if args.compare:
        summary["comparison"] = compare_with_dense(vector, SteeringVector.load(args.compare), sae, k=args.k)
        summary["comparison"]["dense_vector"] = str(args.compare)
    write_text(out / "features.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    write_csv(out / "features.csv", [{"latent": r.latent, "weight": r.weight, "promoted": " ".join(r.promoted),
                                       "suppressed": " ".join(r.suppressed),
                                       "top_context": r.contexts[0]["context"] if r.contexts else ""}
                                      for r in readings])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.barh([str(r.latent) for r in readings][::-1], [r.weight for r in readings][::-1])
    ax.set(xlabel="weight in v", ylabel="latent", title=f"Top latents: {Path(args.vector).name}")
    save_figure(fig, out / "features.png")
    for r in readings:
        print(f"latent {r.latent:>5} weight {r.weight:+.3f}  promotes {' '.join(map(repr, r.promoted[:5]))}")
    if args.compare:
        c = summary["comparison"]
        print(f"vs {args.compare}: cosine(W_dec^T v, dense) {c['cosine_decoded_vs_dense']:.3f}; "
              f"top-{c['k']} overlap {c['top_k_overlap']} (Jaccard {c['jaccard']:.3f})")
    print(f"wrote {out}/features.json, features.csv, features.png")


def _cmd_sweep(args: argparse.Namespace) -> None:
    from yapo_bench.commands.sweep import run_sweep

    run_sweep(args)


def _add_neutral_text_arguments(parser: argparse.ArgumentParser) -> None:
    """The neutral text that `kl` and `sweep` measure KL on."""
    parser.add_argument("--prompts", default="python-stdlib",
                        help="neutral text: a corpus spec as for `sae train` (default: %(default)s, held-out split)")
    parser.add_argument("--n-prompts", type=int, default=32, help="documents used (default: %(default)s)")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per document (default: %(default)s)")


def add_analysis_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `analyze layers|kl|features|sweep` to the `yapo-bench` sub-command parser."""
    analyze = subparsers.add_parser("analyze", help="analyses: layer discovery, matched KL, feature reading, λ sweep",
                                    description="Analyses of models and steering vectors; each writes CSV, JSON "
                                    "and PNG into --out.")
    commands = analyze.add_subparsers(dest="analyze_command", required=True, metavar="ANALYZE_COMMAND")

    layers = commands.add_parser(
        "layers", help="find the steering layer by activation patching (paper App. B)",
        description="Patch the localized prompt's last-token state into its non-localized twin at each layer "
        "and measure P(country answer) among the culture-mini options; suggests the layer with the largest gain.")
    layers.add_argument("--model", default=DEFAULT_MODEL,
                        help="preset, .gguf, local dir or hub id (default: %(default)s)")
    layers.add_argument("--countries", nargs="+", default=["egypt", "morocco"],
                        help="culture-mini countries (default: %(default)s, as in the paper)")
    layers.add_argument("--layers", nargs="+", type=int, default=None, help="layers to patch (default: all)")
    layers.add_argument("--max-pairs", type=int, default=None, help="at most this many questions per country")
    layers.add_argument("--normalization", choices=["chars", "tokens", "none"], default="chars",
                        help="option log-likelihood divided by its characters/tokens before the softmax "
                        "(default: %(default)s, like acc_norm)")
    layers.add_argument("--out", type=Path, default=None, help="output directory (default: reports/analysis/layers)")
    add_placement_arguments(layers)
    layers.set_defaults(func=_cmd_layers)

    kl = commands.add_parser(
        "kl", help="the multiplier at which a vector reaches a target KL on neutral text",
        description="Bracket and bisect λ until the mean token KL(unsteered || steered) on neutral prompts is "
        "within --rel-tol of --target.")
    kl.add_argument("--vector", type=Path, required=True, help="vector directory or .safetensors file")
    kl.add_argument("--target", type=float, required=True, help="target mean token KL in nats, e.g. 0.1")
    kl.add_argument("--model", default=None, help="model (default: the one the vector records)")
    kl.add_argument("--sae", default=None, help="SAE for a sparse vector (default: the one the vector records)")
    kl.add_argument("--direction", type=int, choices=[-1, 1], default=1, help="d (default: %(default)s)")
    _add_neutral_text_arguments(kl)
    kl.add_argument("--rel-tol", type=float, default=0.05, help="relative tolerance on KL (default: %(default)s)")
    kl.add_argument("--out", type=Path, default=None, help="output directory (default: reports/analysis/kl)")
    add_placement_arguments(kl)
    kl.set_defaults(func=_cmd_kl)

    features = commands.add_parser(
        "features", help="read a sparse vector: top latents, promoted tokens, top-activating contexts",
        description="The top latents of an SAE-space vector by |weight|, the tokens each one's decoder direction "
        "promotes and suppresses through the unembedding, and the corpus tokens where each fires most; with "
        "--compare, the overlap with a dense vector trained on the same data.")
    features.add_argument("--vector", type=Path, required=True, help="sparse vector directory or .safetensors file")
    features.add_argument("--compare", type=Path, default=None, help="a dense vector (e.g. BiPO) to compare with")
    features.add_argument("--k", type=int, default=10, help="latents read (default: %(default)s)")
    features.add_argument("--model", default=None, help="model (default: the one the vector records)")
    features.add_argument("--sae", default=None, help="SAE (default: the one the vector records)")
    features.add_argument("--corpus", default="python-stdlib",
                          help="text for top-activating contexts: a corpus spec (default: %(default)s, held-out)")
    features.add_argument("--n-docs", type=int, default=200, help="documents scanned (default: %(default)s)")
    features.add_argument("--out", type=Path, default=None,
                          help="output directory (default: reports/analysis/features)")
    add_placement_arguments(features)
    features.set_defaults(func=_cmd_features)

    sweep = commands.add_parser(
        "sweep", help="λ sweep with selection on validation, comparison at matched KL, MMLU preservation",
        description="Run (or resume) the study in CONFIG — list several multipliers per method in it — then: "
        "score vs λ per method (culture MCQ, all items, validation and test halves, and the answer KL to the "
        "base); λ chosen per method on the validation questions and reported on the test questions; with "
        "--kl-target, each vector also evaluated at the λ where its neutral-text KL reaches the target; with "
        "--mmlu-tasks, MMLU for the base and each method at its chosen λ.")
    sweep.add_argument("config", type=Path, help="a `yapo-bench run` YAML config")
    sweep.add_argument("--metric", default="p_gold_norm", choices=["p_gold_norm", "p_gold", "acc", "acc_norm"],
                       help="culture MCQ score per item (default: %(default)s)")
    sweep.add_argument("--seed", type=int, default=0, help="validation/test split seed (default: %(default)s)")
    sweep.add_argument("--kl-target", type=float, default=None, help="neutral-text mean token KL to match, nats")
    sweep.add_argument("--max-kl", type=float, default=None,
                       help="choose λ only among those whose neutral-text KL is at most this (nats): a disruption "
                       "budget, so that a wrecked model cannot win on noise")
    _add_neutral_text_arguments(sweep)
    sweep.add_argument("--mmlu-tasks", nargs="+", default=None,
                       help="lm-eval MMLU tasks for the preservation check, e.g. mmlu_cloze_anatomy")
    sweep.add_argument("--mmlu-limit", type=int, default=None, help="items per MMLU task (default: all)")
    sweep.add_argument("--out", type=Path, default=None, help="output directory (default: reports/analysis/sweep)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bars")
    sweep.set_defaults(func=_cmd_sweep)
