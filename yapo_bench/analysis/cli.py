"""`yapo-bench analyze ...`: layer discovery by activation patching, matched-KL multipliers, feature reading,
and the λ sweep (selection on validation, comparison at matched KL, MMLU preservation).

Each command writes a CSV table, a JSON summary (with the config that made it) and a PNG plot into --out
(default reports/analysis/<name>/), every file atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

from yapo_bench.atomic import atomic_file
from yapo_bench.models import DEFAULT_MODEL

REPORT_ROOT = Path("reports/analysis")


def _load_model(spec: str) -> tuple[Any, Any]:
    from yapo_bench.models import load_model

    loaded = load_model(spec)
    return loaded.model, loaded.tokenizer


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_text(path, buffer.getvalue())


def _save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def discover_layer(model: Any, tokenizer: Any, model_name: str, countries: list[str], out: Path,
                   layers: list[int] | None = None, max_pairs: int | None = None, normalization: str = "chars",
                   progress: bool = True) -> dict[str, Any]:
    """Layer discovery by activation patching on culture-mini's localized/non-localized pairs of `countries`;
    writes layers.csv, layers.json and layers.png into `out` and returns the summary (with the suggested
    layer and whether there was any signal to suggest it from)."""
    from yapo_bench.analysis.patching import culture_patching_pairs, layer_patching
    from yapo_bench.data.spec import culture_mini_items

    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"--max-pairs: {max_pairs}; expected a positive integer")
    pairs = culture_patching_pairs(culture_mini_items(), countries)
    if max_pairs is not None:
        by_country: dict[str, list] = {}
        for pair in pairs:  # sorted by country, then question_id: the first questions of each country
            by_country.setdefault(pair.country, []).append(pair)
        pairs = [pair for group in by_country.values() for pair in group[:max_pairs]]
    result = layer_patching(model, tokenizer, pairs, layers=layers, normalization=normalization, progress=progress)
    table = result.table()
    _write_csv(out / "layers.csv", table)
    max_gain = float(result.gain().max())
    localized_gain = float((result.source_target - result.baseline_target).nanmean())
    summary = {
        "model": model_name, "data": "culture-mini", "countries": sorted({p.country for p in pairs}),
        "n_pairs": len(pairs), "suggested_layer": result.suggested_layer,
        # Patching can only carry over what the localized prompt adds; without that the argmax is noise.
        "signal": max_gain > 0 and localized_gain > 0,
        "max_gain": max_gain, "localized_gain": localized_gain,
        "criterion": "argmax over layers of mean_pairs(P(target answer | patched) - P(target answer | unpatched))",
        "config": {**result.config, "layers": result.layers, "max_pairs_per_country": max_pairs},
        "per_layer": [row for row in table if row["country"] == "all"],
        "pairs": [{"question_id": p.question_id, "country": p.country,
                   "p_target": result.p_target[i].tolist(), "baseline_target": float(result.baseline_target[i]),
                   "source_target": float(result.source_target[i])} for i, p in enumerate(result.pairs)],
    }
    _write_text(out / "layers.json", json.dumps(summary, indent=2) + "\n")

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for country in ["all", *summary["countries"]]:
        rows = [row for row in table if row["country"] == country]
        line, = ax.plot([r["layer"] for r in rows], [r["p_target"] for r in rows], marker="o", ms=3,
                        lw=2.5 if country == "all" else 1, label=f"{country}: P(country answer)")
        ax.axhline(rows[0]["baseline_target"], color=line.get_color(), ls=":", lw=1)
    overall = summary["per_layer"]
    ax.plot([r["layer"] for r in overall], [r["p_western"] for r in overall], color="grey", ls="--",
            label="all: P(Western answer)")
    ax.axvline(result.suggested_layer, color="black", lw=0.8)
    ax.set(xlabel="patched layer (last prompt token)", ylabel="mean probability among the options",
           title=f"Activation patching, localized → non-localized ({model_name}); dotted: unpatched")
    ax.legend(fontsize=7)
    _save_figure(fig, out / "layers.png")
    if not summary["signal"]:
        print(f"warning: no signal (max patching gain {max_gain:+.4f}, localized prompt vs non-localized "
              f"{localized_gain:+.4f}): the suggested layer is not meaningful")
    return summary


def _cmd_layers(args: argparse.Namespace) -> None:
    model, tokenizer = _load_model(args.model)
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
    from yapo_bench.steering import SteeringVector

    vector = SteeringVector.load(args.vector)
    model_spec = args.model or vector.model_id
    if not model_spec:
        raise ValueError("--model: the vector records no model; name the model it was made for")
    sae = None
    if vector.space == "sae":
        from yapo_bench.sae import load_sae

        sae = load_sae(args.sae or vector.sae_id)
    model, tokenizer = _load_model(model_spec)
    prompts = _neutral_prompts(args)
    match = multiplier_for_kl(args.target, model, tokenizer, prompts, vector, sae, args.direction,
                              rel_tol=args.rel_tol, max_length=args.max_length)
    out = args.out or REPORT_ROOT / "kl"
    rows = [{"multiplier": lam, "kl": kl} for lam, kl in sorted(match.evaluations)]
    _write_csv(out / "kl.csv", rows)
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
    _write_text(out / "kl.json", json.dumps(summary, indent=2) + "\n")

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["multiplier"] for r in rows], [r["kl"] for r in rows], marker="o")
    ax.axhline(args.target, color="grey", ls="--", label=f"target {args.target}")
    ax.axvline(match.multiplier, color="black", lw=0.8, label=f"λ = {match.multiplier:.4g}")
    ax.set(xlabel="multiplier λ", ylabel="mean token KL (nats)", title=f"KL vs λ: {Path(args.vector).name}")
    ax.legend()
    _save_figure(fig, out / "kl.png")
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
    sae = load_sae(args.sae or vector.sae_id)
    model, tokenizer = _load_model(model_spec)
    texts = load_corpus(args.corpus, split="heldout")[: args.n_docs]
    readings = read_features(model, tokenizer, sae, vector, texts, k=args.k)
    out = args.out or REPORT_ROOT / "features"
    summary: dict[str, Any] = {"vector": str(args.vector), "method": vector.method, "l0": vector.l0,
                               "norm": vector.norm, "corpus": args.corpus, "documents": len(texts),
                               "latents": [reading.__dict__ for reading in readings]}
    if args.compare:
        summary["comparison"] = compare_with_dense(vector, SteeringVector.load(args.compare), sae, k=args.k)
        summary["comparison"]["dense_vector"] = str(args.compare)
    _write_text(out / "features.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    _write_csv(out / "features.csv", [{"latent": r.latent, "weight": r.weight, "promoted": " ".join(r.promoted),
                                       "suppressed": " ".join(r.suppressed),
                                       "top_context": r.contexts[0]["context"] if r.contexts else ""}
                                      for r in readings])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.barh([str(r.latent) for r in readings][::-1], [r.weight for r in readings][::-1])
    ax.set(xlabel="weight in v", ylabel="latent", title=f"Top latents: {Path(args.vector).name}")
    _save_figure(fig, out / "features.png")
    for r in readings:
        print(f"latent {r.latent:>5} weight {r.weight:+.3f}  promotes {' '.join(map(repr, r.promoted[:5]))}")
    if args.compare:
        c = summary["comparison"]
        print(f"vs {args.compare}: cosine(W_dec^T v, dense) {c['cosine_decoded_vs_dense']:.3f}; "
              f"top-{c['k']} overlap {c['top_k_overlap']} (Jaccard {c['jaccard']:.3f})")
    print(f"wrote {out}/features.json, features.csv, features.png")


def _evaluate_once(runner: Any, step: Any, vectors: dict[tuple[str, str], str]) -> Path:
    """Evaluate unless lm-eval's results file is already there (it is written last: a killed eval redoes)."""
    directory = runner.evals_dir / step.key
    if not any(directory.rglob("results_*.json")):
        runner.evaluate(step, vectors)
    return directory


class _NeutralKL:
    """Per vector, the neutral-text KL machinery of `analyze sweep`: the KL at each λ of the sweep and the λ
    that reaches a target, each cached as JSON under `work/kl/`, so a rerun recomputes only what is new."""

    def __init__(self, runner: Any, args: argparse.Namespace, work: Path) -> None:
        self.runner, self.args, self.dir = runner, args, work / "kl"
        self.prompts = _neutral_prompts(args)

    def _vector(self, path: str) -> tuple[Any, Any, Any]:
        from yapo_bench.steering import SteeringVector

        vector = SteeringVector.load(path)
        sae, _ = self.runner.sae_and_layer(vector.space == "sae")
        return self.runner.model(), vector, sae

    def curve(self, method: str, unit: str, path: str, multipliers: list[float]) -> dict[float, float]:
        from yapo_bench.analysis.kl import kl_curve

        cache = self.dir / f"curve-{method}-{unit.replace(':', '-')}-n{self.args.n_prompts}-t{self.args.max_length}.json"
        known = {float(k): v for k, v in json.loads(cache.read_text()).items()} if cache.is_file() else {}
        missing = [m for m in multipliers if m not in known]
        if missing:
            loaded, vector, sae = self._vector(path)
            known.update(kl_curve(loaded.model, loaded.tokenizer, self.prompts, vector, missing, sae,
                                  max_length=self.args.max_length))
            _write_text(cache, json.dumps({f"{k:g}": v for k, v in sorted(known.items())}) + "\n")
        return {m: known[m] for m in multipliers}

    def match(self, method: str, unit: str, path: str) -> dict[str, Any]:
        from yapo_bench.analysis.kl import multiplier_for_kl

        target = self.args.kl_target
        cache = self.dir / f"{method}-{unit.replace(':', '-')}-kl{target:g}-n{self.args.n_prompts}-t{self.args.max_length}.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        loaded, vector, sae = self._vector(path)
        found = multiplier_for_kl(target, loaded.model, loaded.tokenizer, self.prompts, vector, sae,
                                  max_length=self.args.max_length)
        row = {"method": method, "unit": unit, "vector": path, "target": target, "multiplier": found.multiplier,
               "kl": found.kl, "converged": found.converged, "evaluations": len(found.evaluations)}
        _write_text(cache, json.dumps(row) + "\n")
        return row


def _sweep_plot(sweep: Any, comparison: Any, metric: str, title: str, path: Path) -> None:
    """Score vs λ on the validation questions (what the selection sees) and on the test questions (what it is
    reported on), and how far each λ moves the model: the gap between the two shows a wrecked model winning on
    noise."""
    from yapo_bench.report.runs import method_rank

    plt = _pyplot()
    fig, (score_ax, kl_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    base = sweep[sweep["method"] == "base"]
    chosen = dict(zip(comparison["method"], comparison["chosen_multiplier"])) if not comparison.empty else {}
    for method in sorted(set(sweep["method"]) - {"base"}, key=method_rank):
        curve = sweep[sweep["method"] == method].sort_values("multiplier")
        line, = score_ax.plot(curve["multiplier"], curve["validation_mean"], marker="o", label=f"{method}: validation")
        score_ax.plot(curve["multiplier"], curve["test_mean"], marker=".", ls="--", color=line.get_color(),
                      label=f"{method}: test")
        kl_ax.plot(curve["multiplier"], curve["answer_kl_mnat"], marker="o", color=line.get_color(),
                   label=f"{method}: culture answers")
        if "neutral_kl" in curve:
            kl_ax.plot(curve["multiplier"], 1000 * curve["neutral_kl"], marker=".", ls="--", color=line.get_color(),
                       label=f"{method}: neutral text, per token")
        picked = curve[curve["multiplier"] == chosen.get(method)]
        score_ax.plot(picked["multiplier"], picked["validation_mean"], marker="*", ms=16, color=line.get_color(), ls="")
    if not base.empty:
        score_ax.axhline(float(base["validation_mean"].iloc[0]), color="black", lw=1, label="base: validation")
        score_ax.axhline(float(base["test_mean"].iloc[0]), color="black", ls="--", lw=1, label="base: test")
    score_ax.set(xscale="log", xlabel="multiplier λ (log)", ylabel=f"mean {metric}, %",
                 title=f"{title}: score vs λ (★ chosen on validation)")
    kl_ax.set(xscale="log", yscale="log", xlabel="multiplier λ (log)", ylabel="mean KL(base ‖ steered), millinats",
              title="How far steering moves the model")
    score_ax.legend(fontsize=7, ncol=2)
    kl_ax.legend(fontsize=7)
    _save_figure(fig, path)


def _cmd_sweep(args: argparse.Namespace) -> None:
    from dataclasses import replace

    import pandas as pd

    from yapo_bench.analysis.sweep import comparison_table, culture_split, sweep_table
    from yapo_bench.experiment import RunConfig, Runner, Step, run, trained_vectors, unit_tasks
    from yapo_bench.report.runs import load_runs
    from yapo_bench.report.tables import mmlu_table, multiplier_selection

    config = RunConfig.from_yaml(args.config)
    run(config, progress=not args.no_progress)  # resumable: a finished run only prints its plan
    run_out = Path(config.out)
    work = run_out / "sweep-work"  # the analysis's own evaluations and KL searches, beside the run's
    out = args.out or REPORT_ROOT / "sweep"
    runs = load_runs(sorted((run_out / "evals").iterdir()))
    split, question_of = culture_split(runs, args.metric, args.seed)
    sweep = sweep_table(runs, split, question_of, args.metric)
    runner = Runner(config, run_out, not args.no_progress, evals_dir=work / "evals")
    vectors = {key: path for key, path in trained_vectors(config).items() if key[1].startswith("culture:")}
    neutral = _NeutralKL(runner, args, work) if args.kl_target is not None or args.max_kl is not None else None

    allowed = None
    if neutral is not None:  # the neutral-text KL of every (method, λ): mean over the method's vectors
        per_vector: dict[tuple[str, float], list[float]] = {}
        for (method, unit), path in sorted(vectors.items()):
            for multiplier, kl in neutral.curve(method, unit, path, config.multipliers_for(method)).items():
                per_vector.setdefault((method, multiplier), []).append(kl)
        neutral_kl = {key: sum(values) / len(values) for key, values in per_vector.items()}
        sweep["neutral_kl"] = [0.0 if r.method == "base" else neutral_kl.get((r.method, r.multiplier), float("nan"))
                               for r in sweep.itertuples()]
        if args.max_kl is not None:
            def allowed(method: str, multiplier: float) -> bool:
                return neutral_kl.get((method, multiplier), float("inf")) <= args.max_kl
    selection, note = multiplier_selection(runs, args.metric, args.seed, allowed)
    if args.max_kl is not None:
        note += f" Candidates: λ whose mean neutral-text KL is at most {args.max_kl} nats."

    matched_kl, matched_runs = pd.DataFrame(), []
    if args.kl_target is not None:
        matched_kl = pd.DataFrame([neutral.match(method, unit, path) for (method, unit), path in sorted(vectors.items())])
        directories = []
        for row in matched_kl.itertuples():
            tasks = tuple(t for t in unit_tasks(config, row.unit) if t.startswith("culture_mcq_"))
            step = Step(f"eval-{row.method}-{row.unit.replace(':', '-')}-x{row.multiplier:.6g}", "eval", row.method,
                        row.unit, float(row.multiplier), tasks)  # keyed by λ: another target or prompt set may match it
            directories.append(_evaluate_once(runner, step, vectors))
        matched_runs = load_runs(directories)
    comparison = comparison_table(sweep, selection, matched_runs, matched_kl, split, question_of, args.metric)

    mmlu = pd.DataFrame()
    chosen = {r.method: r.chosen_multiplier for r in comparison.itertuples() if pd.notna(r.chosen_multiplier)}
    if args.mmlu_tasks:
        unit = min(unit for _, unit in vectors)  # one context's vectors: MMLU measures damage, not culture
        mmlu_runner = Runner(replace(config, limit=args.mmlu_limit), run_out, not args.no_progress,
                             loaded=runner.model(), evals_dir=work / "evals")
        tasks = tuple(args.mmlu_tasks)
        steps = [Step("mmlu-base", "eval", "base", "", 0.0, tasks)] + [
            Step(f"mmlu-{method}-{unit.replace(':', '-')}-x{multiplier:g}", "eval", method, unit, multiplier, tasks)
            for method, multiplier in chosen.items() if (method, unit) in vectors]
        mmlu = mmlu_table(load_runs([_evaluate_once(mmlu_runner, step, vectors) for step in steps]))

    tables = {"sweep": sweep, "selection": selection, "matched_kl": matched_kl, "comparison": comparison,
              "mmlu": mmlu}
    for name, frame in tables.items():
        if not frame.empty:
            _write_csv(out / f"{name}.csv", frame.to_dict("records"))
    summary = {"config": str(args.config), "run": str(run_out), "model": config.model, "metric": args.metric,
               "selection_note": note, "split": {"seed": split.seed, "validation_questions": len(split.validation),
                                                  "test_questions": len(split.test)},
               "kl": {"target": args.kl_target, "max_kl": args.max_kl, "prompts": args.prompts,
                      "n_prompts": args.n_prompts, "max_length": args.max_length} if neutral is not None else None,
               "mmlu": {"tasks": args.mmlu_tasks, "limit": args.mmlu_limit} if args.mmlu_tasks else None,
               **{name: frame.to_dict("records") for name, frame in tables.items()}}
    _write_text(out / "sweep.json", json.dumps(summary, indent=2, default=str) + "\n")
    _sweep_plot(sweep, comparison, args.metric, config.name, out / "sweep.png")
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(sweep.drop(columns=["metric"]).round(3).to_string(index=False))
        print(comparison.round(3).to_string(index=False))
        if not mmlu.empty:
            print(mmlu[["group", "metric", "label", "value", "ci_low", "ci_high"]].round(3).to_string(index=False))
    print(f"wrote {out}/sweep.csv, comparison.csv, sweep.json, sweep.png" + (f" ({note})" if note else ""))

def _add_neutral_text_arguments(parser: argparse.ArgumentParser) -> None:
    """The neutral text that `kl` and `sweep` measure KL on."""
    parser.add_argument("--prompts", default="python-stdlib",
                        help="neutral text: a corpus spec as for `sae train` (default: %(default)s, held-out split)")
    parser.add_argument("--n-prompts", type=int, default=32, help="documents used (default: %(default)s)")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per document (default: %(default)s)")


def _neutral_prompts(args: argparse.Namespace) -> list[str]:
    from yapo_bench.corpus import load_corpus

    return load_corpus(args.prompts, split="heldout")[: args.n_prompts]


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
