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
    _one_line_errors()
    try:
        from yapo_bench.lm_eval_plugin import register

        register()
    except Exception as err:  # noqa: BLE001 - never break lm-eval itself; say why ours is missing
        print(f"yapo-bench: could not register yapo_steered with lm-eval ({type(err).__name__}: {err})", file=sys.stderr)


def _one_line_errors() -> None:
    """In lm_eval's process, a bad yapo_steered model arg (a ValueError raised in yapo-bench's code, such as
    multiplier=-1) ends the run with one line and exit status 2, as `yapo-bench` does, not with a traceback."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, trace: object) -> None:
        if issubclass(kind, ValueError) and _raised_in_yapo_bench(trace):
            sys.stdout.flush()
            print(f"lm_eval: error: {error}", file=sys.stderr, flush=True)
            os._exit(2)  # sys.exit inside an excepthook would not set the status
        previous(kind, error, trace)

    sys.excepthook = hook


def _raised_in_yapo_bench(trace: object) -> bool:
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    last = None
    while trace is not None:
        last, trace = trace, trace.tb_next
    return last is not None and os.path.abspath(last.tb_frame.f_code.co_filename).startswith(package + os.sep)
