"""P4: convergence of YaPO vs BiPO on the default model: steps until the training loss falls below 0.1
(10-step moving average; cap 600), same seed, lr, batch and schedule for both, on BiPO's power-seeking pairs
and a culture-like pair set made from the localization-gap data (implicit questions in French, Russian,
Turkish and Bengali; chosen = the option of the prompt language's culture, rejected = the US option).
The paper's claim: YaPO < 150 steps, BiPO > 600. Run: python benchmarks/p4_convergence.py"""

from __future__ import annotations

import argparse
import json
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from common import REPORT_DIR, default_model_and_sae, pairs_or_demo, write_report

from yapo_bench.data import data_dir
from yapo_bench.methods.preference import PreferenceSpec, train_preference_vector
from yapo_bench.pairs import PairSet, PreferencePair
from yapo_bench.report.training import moving_average, steps_to_threshold

THRESHOLD = 0.1
WINDOW = 10


def localization_pairs(limit: int) -> PairSet:
    """Implicit (no country named) non-English questions: the localized option vs the US option."""
    path = data_dir() / "culture" / "localization_gap" / "localization_gap_5choice.jsonl"
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        local, western = row["option_by_culture"][row["gold_culture"]], row["option_by_culture"]["us"]
        if row["explicit_context"] or local.strip() == western.strip():  # English rows; a few shared options
            continue
        pairs.append(PreferencePair(row["question"], local, western))
    order = np.random.default_rng(0).permutation(len(pairs))[:limit]
    return PairSet([pairs[i] for i in order], f"{path.name}: implicit, non-English[:{limit}]",
                   "the option of the prompt language's culture (vs the US option)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cap", type=int, default=600)
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    loaded, sae, layer = default_model_and_sae()
    try:
        culture = localization_pairs(args.pairs)
    except (OSError, ValueError) as err:
        print(f"localization-gap data unavailable ({err}); skipping that set")
        culture = None
    datasets = {"power-seeking": pairs_or_demo("bipo:power-seeking", args.pairs)}
    if culture is not None:
        datasets["localization-gap"] = culture
    result = {"benchmark": "P4 convergence", "threshold": THRESHOLD, "window": WINDOW, "cap": args.cap,
              "layer": layer, "sae": sae.yapo_sae_id, "runs": {}}
    figure, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for axis, (name, pairs) in zip(axes[0], datasets.items()):
        for method in ("bipo", "yapo"):
            spec = PreferenceSpec(layer=layer, steps=args.cap, batch_size=args.batch_size, lr=args.lr,
                                  seed=args.seed, eval_every=0, checkpoint_every=0, heldout_fraction=0.1,
                                  progress=False)
            losses: list[float] = []

            def converged(record: dict, losses: list[float] = losses) -> bool:
                losses.append(record["loss"])
                return steps_to_threshold(losses, THRESHOLD, WINDOW) is not None

            started = time.perf_counter()
            vector = train_preference_vector(loaded, pairs, spec, sae=sae if method == "yapo" else None,
                                             method=method, on_step=converged)
            smoothed = moving_average(losses, WINDOW)
            reached = steps_to_threshold(losses, THRESHOLD, WINDOW)
            result["runs"][f"{name}/{method}"] = {
                "data": pairs.source, "pairs": len(pairs), "steps_to_threshold": reached,
                "first_step_batch_loss_below": next((i + 1 for i, v in enumerate(losses) if v < THRESHOLD), None),
                "steps_run": len(losses), "final_moving_average_loss": float(smoothed[-1]), "vector_norm": vector.norm,
                "vector_l0": vector.l0, "seconds": round(time.perf_counter() - started, 1),
                "config": spec.config(), "losses": losses,
            }
            print(name, method, {k: v for k, v in result["runs"][f"{name}/{method}"].items() if k not in ("losses", "config")},
                  flush=True)
            steps = np.arange(1, len(losses) + 1)
            line, = axis.plot(steps, smoothed, label=f"{method} ({WINDOW}-step mean)")
            axis.plot(steps, losses, color=line.get_color(), alpha=0.2, linewidth=0.8)
        axis.axhline(THRESHOLD, color="grey", linestyle="--", linewidth=0.8)
        axis.set(title=f"{name} ({len(pairs)} pairs)", xlabel="step", ylabel="train loss", yscale="log")
        axis.legend()
    figure.suptitle(f"YaPO vs BiPO convergence, {loaded.model_id} layer {layer}, lr {args.lr}, batch {args.batch_size}")
    figure.tight_layout()
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    figure.savefig(REPORT_DIR / "p4_convergence.png", dpi=120)
    write_report("p4_convergence", result)


if __name__ == "__main__":
    main()
