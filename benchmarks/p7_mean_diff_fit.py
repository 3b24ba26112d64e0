"""P7: CAA fitting throughput vs a plain batched forward pass to the same layer, on the default model.

Tokens are every token of every pair's two sequences (prompt + chosen, prompt + rejected): what a fit must account
for. The plain pass runs those sequences right-padded in batches to layer L and stops there (the least any fit could
do without sharing work); CAA runs them through `caa.fit`, which runs each pair's prompt once for both responses.
Conditions are interleaved in every round and the median taken. Goal: CAA ≥ 0.8× the plain pass.
Run: python benchmarks/p7_mean_diff_fit.py [--pairs 96]"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import default_model_and_sae, pairs_or_demo, write_report

from yapo_bench.internals import layer_output
from yapo_bench.methods import caa
from yapo_bench.methods.mean_diff import MeanDiffSpec
from yapo_bench.pairs import encode_with_response


def plain_forward(loaded, sequences: list[torch.Tensor], layer: int, batch_size: int) -> None:
    pad = loaded.tokenizer.pad_token_id or 0
    decoder = loaded.model.get_decoder()
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            rows = sequences[start : start + batch_size]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), pad)
            mask = torch.zeros_like(ids)
            for i, row in enumerate(rows):
                ids[i, : len(row)], mask[i, : len(row)] = row, 1
            layer_output(decoder, layer, input_ids=ids, attention_mask=mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="bipo:power-seeking", help="pairs (default: %(default)s)")
    parser.add_argument("--pairs", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per CAA batch; 2x sequences per plain batch")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    loaded, _sae, layer = default_model_and_sae()
    pairs = pairs_or_demo(args.data, args.pairs)
    sequences = [encode_with_response(loaded.tokenizer, p.prompt, r)[0] for p in pairs for r in (p.chosen, p.rejected)]
    tokens = sum(len(s) for s in sequences)
    spec = MeanDiffSpec(layer=layer, batch_size=args.batch_size, progress=False)
    seconds: dict[str, list[float]] = {"plain_forward": [], "caa_fit": []}
    for round_ in range(args.rounds):
        for name in seconds:
            started = time.perf_counter()
            if name == "plain_forward":
                plain_forward(loaded, sequences, layer, 2 * args.batch_size)
            else:
                caa.fit(loaded, pairs, spec)
            seconds[name].append(time.perf_counter() - started)
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in seconds.items()), flush=True)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    rate = {name: tokens / s for name, s in median.items()}
    result = {"benchmark": "P7 CAA fit vs a plain batched forward to layer L", "goal": "tokens/s ratio >= 0.8",
              "data": pairs.source, "pairs": len(pairs), "tokens": tokens, "layer": layer,
              "batch_size_pairs": args.batch_size, "rounds": args.rounds, "seconds": seconds,
              "tokens_per_second": rate, "ratio": rate["caa_fit"] / rate["plain_forward"]}
    result["goal_met"] = result["ratio"] >= 0.8
    print({k: result[k] for k in ("tokens_per_second", "ratio", "goal_met")})
    write_report("p7_mean_diff_fit", result)


if __name__ == "__main__":
    main()
