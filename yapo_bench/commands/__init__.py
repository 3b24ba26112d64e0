"""Commands that drive a run and read it back: `analyze` (its subcommands) and the sweep study. They sit above the
run (`yapo_bench.pipeline`), which sits above the analyses' library code in `yapo_bench.analysis`."""
