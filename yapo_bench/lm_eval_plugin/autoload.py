"""Run at interpreter start by `yapo_bench_lm_eval.pth`: in an lm-eval process only (the `lm_eval` /
`lm-eval` script or `python -m lm_eval`), register `yapo_steered` so that plain `lm_eval --model
yapo_steered` works with lm-eval 0.4.13, which reads no plugin entry points. Any other process pays one
`sys.argv` check."""

from __future__ import annotations

import os
import sys


def is_lm_eval_process(argv: list[str], orig_argv: list[str]) -> bool:
    script = os.path.basename(argv[0]) if argv else ""
    if script.removesuffix(".exe") in ("lm_eval", "lm-eval"):
        return True
    return any(flag == "-m" and module == "lm_eval" for flag, module in zip(orig_argv, orig_argv[1:]))


def autoload() -> None:
    if os.environ.get("YAPO_BENCH_NO_LM_EVAL_AUTOLOAD") or not is_lm_eval_process(
            getattr(sys, "argv", []), getattr(sys, "orig_argv", [])):
        return
    try:
        from yapo_bench.lm_eval_plugin import register

        register()
    except Exception as err:  # noqa: BLE001 - never break lm-eval itself; say why ours is missing
        print(f"yapo-bench: could not register yapo_steered with lm-eval ({type(err).__name__}: {err})", file=sys.stderr)
