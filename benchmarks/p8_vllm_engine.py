"""P8: steered evaluation on the vLLM engine vs the transformers path, on the same prompts in one run: steered
generation tokens/s (greedy, open-ended culture prompts) and steered log-likelihood requests/s (the culture MCQ's
options), each engine at its best batch setting among those tried. Both sides are the lm-eval models a run uses
(`yapo_steered_vllm`, `yapo_steered`) steered by the same sparse vector in the shipped SAE's space (eq. 3, the
costliest steering: an SAE encode per token). Goal on a GPU: >= 5x; on the CPU it is reported as measured.

Needs the vLLM venv: make bench-p8 (or .venv-vllm/bin/python benchmarks/p8_vllm_engine.py)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import add_common_arguments, default_model_and_sae, write_report
from lm_eval.api.instance import Instance

from yapo_bench.data.culture_sources import culture_items
from yapo_bench.steering import SteeringVector
from yapo_bench.store import StoredVector

STOP = ["<|im_end|>"]  # answers run to max_gen_toks or the end of a turn: decoding is what is timed


def sparse_vector(loaded: Any, sae: torch.nn.Module, layer: int, latents: int) -> StoredVector:
    """A fixed sparse vector with `latents` active SAE latents (what YaPO learns has a few dozen): the cost of
    steering does not depend on the values, only on the path."""
    generator = torch.Generator().manual_seed(0)
    values = torch.zeros(sae.cfg.d_sae)
    values[torch.randperm(sae.cfg.d_sae, generator=generator)[:latents]] = 2 * torch.rand(latents, generator=generator)
    vector = SteeringVector.sparse(values, layer=layer, sae=sae, model_id=loaded.model_id)
    return StoredVector(vector, sae, Path("p8-sparse-vector"))  # made here, never saved


def requests(culture_data: str, mcq_items: int | None, prompts: int,
             max_gen_toks: int) -> tuple[list[Instance], list[Instance]]:
    """(log-likelihood requests: every option of `mcq_items` MCQ items (None: all), generation requests: `prompts`
    open prompts), from any culture file or the packaged culture-mini; items evenly spaced through the file, so that
    every context and language is in (prompt lengths differ by script)."""
    items = culture_items(culture_data, None)
    scored = [Instance(request_type="loglikelihood", doc={}, idx=0,
                       arguments=(f"{item.mcq_prompt}\nAnswer:", f" {option}"))
              for item in spread(items, mcq_items) for option in item.options]
    kwargs = {"until": STOP, "max_gen_toks": max_gen_toks, "do_sample": False, "temperature": 0.0}
    generated = [Instance(request_type="generate_until", doc={}, idx=0, arguments=(item.open_prompt, dict(kwargs)))
                 for item in spread([item for item in items if item.open_prompt], prompts)]
    return scored, generated


def spread(items: list, count: int | None) -> list:
    """`count` of `items` evenly spaced (all of them for None or more than there are)."""
    if count is None or count >= len(items):
        return items
    return [items[i * len(items) // count] for i in range(count)]


def timed(call: Callable[[], list]) -> tuple[float, list]:
    started = time.perf_counter()
    out = call()
    return time.perf_counter() - started, out


def measure(lm: Any, scored: list[Instance], generated: list[Instance], tokenizer: Any) -> dict[str, Any]:
    """Requests/s of the log-likelihoods and generated tokens/s (tokens of the returned texts, counted by one
    tokenizer for both engines) of one lm-eval model, after a small warm-up of each."""
    lm.loglikelihood(scored[:8])
    lm.generate_until(generated[:2])
    seconds_scored, scores = timed(lambda: lm.loglikelihood(scored))
    seconds_generated, texts = timed(lambda: lm.generate_until(generated))
    tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)
    return {"loglikelihood_seconds": round(seconds_scored, 2),
            "loglikelihood_requests_per_second": round(len(scored) / seconds_scored, 2),
            "generation_seconds": round(seconds_generated, 2), "generated_tokens": tokens,
            "generation_tokens_per_second": round(tokens / seconds_generated, 2),
            "scores": [s[0] for s in scores], "texts": texts}


def best(results: dict[str, dict], key: str) -> tuple[str, float]:
    name = max(results, key=lambda n: results[n][key])
    return name, results[name][key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--culture-data", default="culture-mini", help="culture file or name (default: %(default)s)")
    parser.add_argument("--mcq-items", type=int, default=48, help="MCQ items scored, all their options; 0: all of "
                        "them (default: %(default)s)")
    parser.add_argument("--prompts", type=int, default=64, help="open prompts to generate for (default: %(default)s)")
    parser.add_argument("--max-gen-toks", type=int, default=48)
    parser.add_argument("--latents", type=int, default=32, help="active latents of the sparse vector")
    parser.add_argument("--hf-batches", default="4,32,64", help="transformers batch sizes tried (default: %(default)s)")
    parser.add_argument("--vllm-batches", default="auto,64", help="vLLM batch sizes tried; auto: every request at "
                        "once, the engine's continuous batching (default: %(default)s)")
    parser.add_argument("--max-model-len", type=int, default=1024)
    add_common_arguments(parser)
    args = parser.parse_args()

    from yapo_bench.devices import placement_of
    from yapo_bench.lm_eval_plugin.model import YapoSteeredLM
    from yapo_bench.lm_eval_plugin.vllm_model import YapoSteeredVLLM

    placement = placement_of(args)
    loaded, sae, layer = default_model_and_sae(args)
    stored = sparse_vector(loaded, sae, layer, args.latents)
    scored, generated = requests(args.culture_data, args.mcq_items or None, args.prompts, args.max_gen_toks)
    print(f"{len(scored)} log-likelihood requests, {len(generated)} generation prompts, layer {layer}", flush=True)
    results: dict[str, dict[str, dict]] = {"hf": {}, "vllm": {}}
    for batch in args.hf_batches.split(","):
        lm = YapoSteeredLM(loaded=loaded, stored=stored, multiplier=1.0, batch_size=int(batch), progress=False,
                           max_length=args.max_model_len)
        results["hf"][batch] = measure(lm, scored, generated, loaded.tokenizer)
        print("hf", batch, {k: v for k, v in results["hf"][batch].items() if k not in ("scores", "texts")}, flush=True)
    vllm_lm = None
    for batch in args.vllm_batches.split(","):
        size = batch if batch == "auto" else int(batch)
        if vllm_lm is None:  # one engine; lm-eval's VLLM reads its batch size per call
            vllm_lm = YapoSteeredVLLM(model=args.model, stored=stored, multiplier=1.0, batch_size=size,
                                      max_model_len=args.max_model_len, dtype=placement.dtype, progress=False)
        vllm_lm.batch_size = size
        results["vllm"][batch] = measure(vllm_lm, scored, generated, loaded.tokenizer)
        print("vllm", batch, {k: v for k, v in results["vllm"][batch].items() if k not in ("scores", "texts")},
              flush=True)

    hf_scores, vllm_scores = (next(iter(results[e].values()))["scores"] for e in ("hf", "vllm"))
    hf_texts, vllm_texts = (next(iter(results[e].values()))["texts"] for e in ("hf", "vllm"))
    summary = {}
    for key in ("loglikelihood_requests_per_second", "generation_tokens_per_second"):
        (hf_batch, hf_rate), (vllm_batch, vllm_rate) = best(results["hf"], key), best(results["vllm"], key)
        summary[key] = {"hf": hf_rate, "hf_batch": hf_batch, "vllm": vllm_rate, "vllm_batch": vllm_batch,
                        "ratio_vllm_vs_hf": round(vllm_rate / hf_rate, 2)}
    for engine in results.values():
        for result in engine.values():
            del result["scores"], result["texts"]
    result = {"benchmark": "P8 steered evaluation, vLLM engine vs the transformers path",
              "goal": "vLLM/hf >= 5 on a GPU; on the CPU as measured",
              "culture_data": args.culture_data, "loglikelihood_requests": len(scored),
              "generation_prompts": len(generated), "max_gen_toks": args.max_gen_toks,
              "vector": {"space": "sae", "layer": layer, "active_latents": args.latents, "multiplier": 1.0},
              "engines": {"vllm": vllm_lm.steering_config()["vllm"] if vllm_lm else None},
              "results": results, "best": summary,
              # the two engines answered alike (what the equality tests check closely, here on every request)
              "max_abs_loglikelihood_difference": max(abs(a - b) for a, b in zip(hf_scores, vllm_scores)),
              "equal_generations": sum(a == b for a, b in zip(hf_texts, vllm_texts))}
    print({k: v for k, v in result.items() if k != "results"})
    write_report("p8_vllm_engine", result, args)


if __name__ == "__main__":
    main()
