"""P3: throughput of steered scoring (forward passes) and generation vs unsteered on the default model, for
a dense vector and sparse vectors applied by the exact sparse-support Φ and by the full Φ (eq. 3 literally).
Goal: sparse-support ≥ 0.95× unsteered. Run: python benchmarks/p3_steering_throughput.py"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from common import add_common_arguments, default_model_and_sae, synchronize, write_report

from yapo_bench.data.spec import culture_mini_items
from yapo_bench.steering import SteeringVector, steer


def _sparse_values(d_sae: int, l0: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.zeros(d_sae)
    values[torch.randperm(d_sae, generator=generator)[:l0]] = torch.rand(l0, generator=generator) * 0.5
    return values


def _timed_round_robin(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per function, the functions interleaved in each round so that drift in the
    machine's speed (other load, thermal) hits every condition alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--new-tokens", type=int, default=24)
    add_common_arguments(parser)
    args = parser.parse_args()
    loaded, sae, layer = default_model_and_sae(args)
    model, tokenizer = loaded.model, loaded.tokenizer
    prompts = [item.mcq_prompt + " " + item.gold_option for item in culture_mini_items()[: args.batch]]
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
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
    def score(steering: dict) -> None:
        with steer(model, **steering):
            model(**batch)
        synchronize(model.device)

    def generate(steering: dict) -> None:
        with steer(model, **steering):
            model.generate(**batch, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                           do_sample=False, pad_token_id=tokenizer.pad_token_id)
        synchronize(model.device)

    with torch.no_grad():
        score_seconds = _timed_round_robin(
            {name: functools.partial(score, steering) for name, steering in conditions.items()}, args.repeats)
        generate_seconds = _timed_round_robin(
            {name: functools.partial(generate, steering) for name, steering in conditions.items()},
            max(2, args.repeats // 2))
    for name in conditions:
        result["conditions"][name] = {"score_seconds": score_seconds[name], "generate_seconds": generate_seconds[name]}
        print(name, result["conditions"][name], flush=True)
    base = result["conditions"]["unsteered"]
    for name, timing in result["conditions"].items():
        timing["score_throughput_vs_unsteered"] = base["score_seconds"] / timing["score_seconds"]
        timing["generate_throughput_vs_unsteered"] = base["generate_seconds"] / timing["generate_seconds"]
    result["goal_met"] = all(result["conditions"][n][f"{k}_throughput_vs_unsteered"] >= 0.95
                             for n in ("sparse_l0_64_support", "sparse_l0_3000_support") for k in ("score", "generate"))
    write_report("p3_steering_throughput", result, args)


if __name__ == "__main__":
    main()
