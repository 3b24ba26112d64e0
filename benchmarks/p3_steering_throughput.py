"""P3: throughput of steered scoring (forward passes) and generation vs unsteered on the default model, for
a dense vector and sparse vectors applied by the exact sparse-support Φ and by the full Φ (eq. 3 literally).
Goal: sparse-support ≥ 0.95× unsteered. Run: python benchmarks/p3_steering_throughput.py"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import default_model_and_sae, write_report

from yapo_bench.data.spec import culture_mini_items
from yapo_bench.steering import SteeringVector, steer


def _sparse_values(d_sae: int, l0: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.zeros(d_sae)
    values[torch.randperm(d_sae, generator=generator)[:l0]] = torch.rand(l0, generator=generator) * 0.5
    return values


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=24)
    args = parser.parse_args()
    loaded, sae, layer = default_model_and_sae()
    model, tokenizer = loaded.model, loaded.tokenizer
    prompts = [item.mcq_prompt + " " + item.gold_option for item in culture_mini_items()[: args.batch]]
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    conditions = {
        "unsteered": dict(vector=None),
        "dense": dict(vector=SteeringVector.dense(torch.randn(model.config.hidden_size) * 0.5, layer)),
        "sparse_l0_64_support": dict(vector=SteeringVector.sparse(_sparse_values(sae.cfg.d_sae, 64, 0), layer, sae), sae=sae),
        "sparse_l0_64_full": dict(vector=SteeringVector.sparse(_sparse_values(sae.cfg.d_sae, 64, 0), layer, sae), sae=sae,
                                  sparse_form="full"),
        "sparse_l0_3000_support": dict(vector=SteeringVector.sparse(_sparse_values(sae.cfg.d_sae, 3000, 1), layer, sae),
                                       sae=sae),
        "sparse_l0_3000_full": dict(vector=SteeringVector.sparse(_sparse_values(sae.cfg.d_sae, 3000, 1), layer, sae),
                                    sae=sae, sparse_form="full"),
    }
    result = {"benchmark": "P3 steered vs unsteered throughput", "goal": "sparse support >= 0.95x unsteered",
              "batch": args.batch, "tokens_per_row": int(batch["input_ids"].shape[1]), "new_tokens": args.new_tokens,
              "layer": layer, "sae": sae.yapo_sae_id, "conditions": {}}
    with torch.no_grad():
        for name, steering in conditions.items():
            def score() -> None:
                with steer(model, **steering):
                    model(**batch)

            def generate() -> None:
                with steer(model, **steering):
                    model.generate(**batch, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                   do_sample=False, pad_token_id=tokenizer.pad_token_id)

            result["conditions"][name] = {"score_seconds": _timed(score, args.repeats),
                                          "generate_seconds": _timed(generate, max(2, args.repeats // 2))}
            print(name, result["conditions"][name], flush=True)
    base = result["conditions"]["unsteered"]
    for name, timing in result["conditions"].items():
        timing["score_throughput_vs_unsteered"] = base["score_seconds"] / timing["score_seconds"]
        timing["generate_throughput_vs_unsteered"] = base["generate_seconds"] / timing["generate_seconds"]
    result["goal_met"] = all(result["conditions"][n][f"{k}_throughput_vs_unsteered"] >= 0.95
                             for n in ("sparse_l0_64_support", "sparse_l0_3000_support") for k in ("score", "generate"))
    write_report("p3_steering_throughput", result)


if __name__ == "__main__":
    main()
