"""P1: one training step of the cached preference loop vs the naive one (the reference behaviour), for
BiPO and YaPO on the default model. Goal: cached ≥ 2.0× faster. Also checks that both paths follow the same
loss trajectory. Run: python benchmarks/p1_cached_vs_naive.py"""

from __future__ import annotations

import argparse

from common import add_common_arguments, default_model_and_sae, pairs_or_demo, timed_run, write_report

from yapo_bench.methods.preference import PreferenceSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="bipo:power-seeking")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    add_common_arguments(parser)
    args = parser.parse_args()
    loaded, sae, layer = default_model_and_sae(args)
    pairs = pairs_or_demo(args.data, args.pairs)
    result = {"benchmark": "P1 cached vs naive step", "goal": "speedup >= 2.0", "data": pairs.source,
              "steps": args.steps, "warmup_steps_excluded": args.warmup, "batch_size": args.batch_size, "methods": {}}
    for method in ("bipo", "yapo"):
        runs = {}
        for naive in (False, True):
            spec = PreferenceSpec(layer=layer, steps=args.steps, batch_size=args.batch_size, heldout_fraction=0.0,
                                  eval_every=0, checkpoint_every=0, naive=naive, progress=False)
            runs["naive" if naive else "cached"] = timed_run(loaded, sae if method == "yapo" else None, pairs,
                                                             method, spec, args.warmup)
        cached, naive = runs["cached"], runs["naive"]
        result["methods"][method] = {
            "cached_step_seconds": cached["median_step_seconds"],
            "naive_step_seconds": naive["median_step_seconds"],
            "speedup": naive["median_step_seconds"] / cached["median_step_seconds"],
            "cached_setup_seconds": cached["setup_seconds"],
            "naive_setup_seconds": naive["setup_seconds"],
            "max_loss_difference": max(abs(a - b) for a, b in zip(cached["losses"], naive["losses"])),
        }
        print(method, result["methods"][method])
    result["goal_met"] = all(m["speedup"] >= 2.0 for m in result["methods"].values())
    write_report("p1_cached_vs_naive", result, args)


if __name__ == "__main__":
    main()
