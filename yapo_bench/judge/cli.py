"""`yapo-bench judge RUN_DIR ...` and `yapo-bench judge serve ...` (wired into yapo_bench/cli.py)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

SERVE = "serve"


def add_judge_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add `judge` to the top-level subparsers. One parser for both forms: argparse cannot have a positional
    RUN_DIR beside a `serve` subcommand, so the first positional decides (a run dir named serve: ./serve)."""
    judge = subparsers.add_parser(
        "judge", help="score open-ended lm-eval samples with an LLM judge, or serve a local judge model",
        description="`judge RUN_DIR`: score every open-ended sample (culture_open_*, bipo_*_open) of an lm-eval "
                    "--log_samples output directory through any OpenAI-compatible server; verdicts go to "
                    "RUN_DIR/judge/verdicts.jsonl and summary.json. `judge serve`: run a local llama.cpp server "
                    "(xllamacpp) for a GGUF until Ctrl-C. The API key is read from $YAPO_JUDGE_API_KEY "
                    "($OPENAI_API_KEY for api.openai.com) and is never written anywhere.")
    judge.add_argument("target", metavar="RUN_DIR|serve", help="lm-eval output directory, or `serve`")
    run = judge.add_argument_group("judging a run")
    run.add_argument("--judge-url", default=None, help="base URL of the server, e.g. http://127.0.0.1:8080/v1")
    run.add_argument("--judge-model", default=None, help="model name sent to the server (recorded with verdicts)")
    run.add_argument("--local", action="store_true",
                     help="start a local server for this run (--gguf, default the packaged SmolLM2-135M: a plumbing "
                          "check, it cannot really judge)")
    run.add_argument("--concurrency", type=int, default=None,
                     help="requests in flight (default: --parallel with --local, else 4)")
    run.add_argument("--retries", type=int, default=4, help="retries on 429/5xx/timeouts (default: %(default)s)")
    run.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default: %(default)s)")
    run.add_argument("--backoff", type=float, default=1.0,
                     help="first retry delay in seconds, doubled each retry (default: %(default)s)")
    run.add_argument("--max-tokens", type=int, default=16, help="verdict length limit (default: %(default)s)")
    run.add_argument("--temperature", type=float, default=0.0, help="(default: %(default)s)")
    run.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    run.add_argument("--top-logprobs", type=int, default=20,
                     help="alternatives per token for the expected score (default: %(default)s)")
    run.add_argument("--no-json-schema", action="store_true",
                     help="do not send response_format (for servers that reject it)")
    run.add_argument("--no-logprobs", action="store_true", help="do not ask for logprobs")
    run.add_argument("--no-similarity", action="store_true", help="skip the reference-similarity signal")
    run.add_argument("--retry-unparsable", action="store_true",
                     help="ask again where this judge model's cached answer could not be parsed (by default it is kept)")
    run.add_argument("--out", type=Path, default=None, help="verdicts file (default: RUN_DIR/judge/verdicts.jsonl)")
    run.add_argument("--cache", type=Path, default=None,
                     help="sqlite answer cache (default: $YAPO_BENCH_CACHE/judge/answers.sqlite)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    serve = judge.add_argument_group("local server (`judge serve`, or `judge RUN_DIR --local`)")
    serve.add_argument("--gguf", type=Path, default=None, help="GGUF to serve (default: the packaged SmolLM2-135M)")
    serve.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default: %(default)s)")
    serve.add_argument("--parallel", type=int, default=2, help="request slots (default: %(default)s)")
    serve.add_argument("--n-ctx", type=int, default=4096, help="context shared by the slots (default: %(default)s)")
    judge.set_defaults(func=cmd_judge)
    return judge


def cmd_judge(args: argparse.Namespace) -> None:
    if args.target == SERVE:
        cmd_judge_serve(args)
    else:
        cmd_judge_run(args)


def cmd_judge_serve(args: argparse.Namespace) -> None:
    from yapo_bench.judge.server import default_gguf, local_server

    if args.judge_url:
        raise ValueError("--judge-url: not used by `judge serve` (it starts the server)")
    gguf = args.gguf or default_gguf()
    # SIGTERM (kill, a supervisor) stops the server as Ctrl-C does, through local_server's cleanup.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with local_server(gguf, port=args.port, host=args.host, parallel=args.parallel, n_ctx=args.n_ctx) as url:
            print(f"serving {gguf} at {url} (any model name works; e.g. --judge-url {url} "
                  f"--judge-model {gguf.stem})", flush=True)
            print("Ctrl-C to stop", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("stopped", flush=True)


def _raise_keyboard_interrupt(*_args: object) -> None:
    raise KeyboardInterrupt


def cmd_judge_run(args: argparse.Namespace) -> None:
    from yapo_bench.judge.config import JudgeConfig
    from yapo_bench.judge.run import judge_run
    from yapo_bench.judge.server import default_gguf, local_server

    if args.local and args.judge_url:
        raise ValueError("--judge-url: not with --local (which starts its own server)")
    if not args.local and not (args.judge_url and args.judge_model):
        raise ValueError("--judge-url and --judge-model are required (or --local to start a local judge)")
    if not Path(args.target).is_dir():
        raise ValueError(f"RUN_DIR: {args.target} is not a directory")

    def config(url: str, model: str, concurrency: int) -> JudgeConfig:
        return JudgeConfig(
            base_url=url, model=model, temperature=args.temperature, seed=args.seed, max_tokens=args.max_tokens,
            concurrency=args.concurrency or concurrency, retries=args.retries, timeout=args.timeout,
            backoff=args.backoff, json_schema=not args.no_json_schema, logprobs=not args.no_logprobs,
            top_logprobs=args.top_logprobs)

    kwargs = {"out_path": args.out, "cache_path": args.cache, "similarity": not args.no_similarity,
              "progress": not args.no_progress, "retry_unparsable": args.retry_unparsable}
    if args.local:
        gguf = args.gguf or default_gguf()
        cfg = config("http://127.0.0.1:1/v1", args.judge_model or gguf.stem, args.parallel)  # validate first
        with local_server(gguf, port=args.port, host=args.host, parallel=args.parallel, n_ctx=args.n_ctx) as url:
            summary = judge_run(args.target, JudgeConfig(**{**cfg.to_record(), "base_url": url}), **kwargs)
    else:
        summary = judge_run(args.target, config(args.judge_url, args.judge_model, 4), **kwargs)
    print_summary(summary)
    if summary["failed"]:  # reported, excluded from every mean, and not done: a rerun retries exactly these
        raise ValueError(f"judge: {summary['failed']} of {summary['n']} requests failed; rerun to retry them")


def print_summary(summary: dict[str, Any]) -> None:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    print(f"{'task':40} {'rubric':15} {'n':>4} {'scored':>6} {'errors':>6} {'failed':>6} {'score':>7} "
          f"{'E[score]':>8} {'sim':>6}")
    for task, row in summary["tasks"].items():
        print(f"{task:40} {row['rubric']:15} {row['n']:4d} {row['scored']:6d} {row['errors']:6d} {row['failed']:6d} "
              f"{fmt(row['mean_score']):>7} {fmt(row['mean_expected_score']):>8} "
              f"{fmt(row['mean_reference_similarity']):>6}")
    print(f"{summary['n']} samples, {summary['scored']} scored, {summary['errors']} unparsable (excluded from "
          f"means), {summary['failed']} failed requests (not cached: rerun to retry); {summary['api_calls']} API "
          f"calls, {summary['cache_hits']} from cache")
    print(f"verdicts: {summary['verdicts']}")
