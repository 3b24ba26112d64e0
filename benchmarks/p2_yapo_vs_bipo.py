"""P2: a YaPO training step vs a BiPO step, both on the cached loop, same pairs, batches and directions.
Goal: YaPO / BiPO ≤ 1.15 (the SAE encode/decode of eq. 3 must stay a small part of a step).
Run: python benchmarks/p2_yapo_vs_bipo.py"""

from __future__ import annotations

import argparse

from common import default_model_and_sae, pairs_or_demo, timed_run, write_report

from yapo_bench.methods.preference import PreferenceSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="bipo:power-seeking")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    loaded, sae, layer = default_model_and_sae()
    pairs = pairs_or_demo(args.data, args.pairs)
    runs = {}
    for method in ("bipo", "yapo"):
        spec = PreferenceSpec(layer=layer, steps=args.steps, batch_size=args.batch_size, heldout_fraction=0.0,
                              eval_every=0, checkpoint_every=0, progress=False)
        runs[method] = timed_run(loaded, sae if method == "yapo" else None, pairs, method, spec, args.warmup)
    ratio = runs["yapo"]["median_step_seconds"] / runs["bipo"]["median_step_seconds"]
    result = {"benchmark": "P2 YaPO step / BiPO step (cached loop)", "goal": "ratio <= 1.15", "data": pairs.source,
              "steps": args.steps, "warmup_steps_excluded": args.warmup, "batch_size": args.batch_size,
              "sae": sae.yapo_sae_id, "d_sae": sae.cfg.d_sae,
              "bipo_step_seconds": runs["bipo"]["median_step_seconds"],
              "yapo_step_seconds": runs["yapo"]["median_step_seconds"],
              "ratio": ratio, "goal_met": ratio <= 1.15, "yapo_vector_l0": runs["yapo"]["vector_l0"]}
    print(result)
    write_report("p2_yapo_vs_bipo", result)


if __name__ == "__main__":
    main()
