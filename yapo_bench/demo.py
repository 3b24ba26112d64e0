"""The main job on the embedded default, until the full experiment runner exists: fit a dense (CAA) and a
sparse (SAS, through the shipped SAE) steering vector from a small pair set we wrote (cheerful vs gloomy
replies), then show what they change: the held-out preference margin and greedy generations."""

from __future__ import annotations

import json
import time
from pathlib import Path

from yapo_bench.atomic import atomic_file
from yapo_bench.data import load_pairs
from yapo_bench.methods import caa, sas
from yapo_bench.methods.mean_diff import MeanDiffSpec
from yapo_bench.models import DEFAULT_MODEL, get_preset, load_model
from yapo_bench.pairs import generate_response, response_logprob
from yapo_bench.sae import load_sae
from yapo_bench.steering import steer

GENERATION_PROMPTS = ("Write one sentence about your street.", "What happened at work today?", "Describe a rainy afternoon.")


def _margin(loaded, pairs, **steering) -> float:
    """Mean log π(chosen) − log π(rejected) over `pairs` under the given steering."""
    margins = []
    with steer(loaded.model, **steering):
        for pair in pairs:
            chosen = response_logprob(loaded.model, loaded.tokenizer, pair.prompt, pair.chosen)
            rejected = response_logprob(loaded.model, loaded.tokenizer, pair.prompt, pair.rejected)
            margins.append(chosen - rejected)
    return sum(margins) / len(margins)


def _generate(loaded, prompt: str, max_new_tokens: int, **steering) -> str:
    with steer(loaded.model, **steering):
        return generate_response(loaded, prompt, max_new_tokens)


def run_demo(model: str = DEFAULT_MODEL, out: Path = Path("runs/demo"), multiplier_dense: float = 1.5,
             multiplier_sparse: float = 4.0, max_new_tokens: int = 32) -> dict:
    started = time.time()
    preset = get_preset(model)
    loaded = load_model(model)
    sae = load_sae(model)
    layer = preset.default_layer
    pairs = load_pairs("demo:cheerful")
    train, heldout = pairs[:12], pairs[12:]
    vectors = {
        "caa": (caa.fit(loaded, train, MeanDiffSpec(layer=layer)), multiplier_dense),
        "sas": (sas.fit(loaded, train, MeanDiffSpec(layer=layer, top_k=64), sae=sae), multiplier_sparse),
    }
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"model": model, "layer": layer, "sae": sae.yapo_sae_id, "train_pairs": len(train),
                     "heldout_pairs": len(heldout), "methods": {}}
    base_margin = _margin(loaded, heldout, vector=None)
    summary["base_margin"] = base_margin
    print(f"model {model}, layer {layer}, SAE {sae.yapo_sae_id}; {len(train)} training pairs, {len(heldout)} held out")
    print(f"held-out mean log-prob margin (cheerful − gloomy), unsteered: {base_margin:+.2f}")
    for name, (vector, multiplier) in vectors.items():
        vector.save(out / name)
        steering = dict(vector=vector, multiplier=multiplier, sae=sae)
        margin = _margin(loaded, heldout, **steering)
        summary["methods"][name] = {"multiplier": multiplier, "norm": vector.norm, "l0": vector.l0, "margin": margin}
        print(f"  {name} (‖v‖ {vector.norm:.2f}, L0 {vector.l0}, λ {multiplier}): margin {margin:+.2f} "
              f"(change {margin - base_margin:+.2f})")
    for prompt in GENERATION_PROMPTS:
        print(f"\nPROMPT: {prompt}")
        rows = {"base": _generate(loaded, prompt, max_new_tokens, vector=None)}
        for name, (vector, multiplier) in vectors.items():
            rows[name] = _generate(loaded, prompt, max_new_tokens, vector=vector, multiplier=multiplier, sae=sae)
        for name, text in rows.items():
            print(f"  {name:>4}: {text}")
        summary.setdefault("generations", []).append({"prompt": prompt, **rows})
    summary["seconds"] = round(time.time() - started, 1)
    with atomic_file(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(f"\nvectors and summary written to {out}/ in {summary['seconds']} s")
    return summary
