"""P5: `yapo_steered` at λ = 0 vs lm-eval's own `hf` model, same model weights, same tasks, through lm-eval's
evaluator: items per second. Goal: yapo_steered ≥ 0.95× hf. Run: python benchmarks/p5_lm_eval_overhead.py"""

from __future__ import annotations

import argparse
import time

from common import add_common_arguments, write_report
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from yapo_bench.lm_eval_plugin import register
from yapo_bench.lm_eval_plugin.model import YapoSteeredLM

TASKS = ["culture_mcq_egypt_both", "culture_mcq_mexico_both", "culture_letter_usa_both", "culture_mcq_nepal_both"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    add_common_arguments(parser)
    args = parser.parse_args()
    register()
    steered = YapoSteeredLM(model=args.model, layer=args.layer, multiplier=0, batch_size=args.batch_size,
                            device=args.device, dtype=args.dtype)
    plain = HFLM(pretrained=steered.loaded.model, tokenizer=steered.loaded.tokenizer, batch_size=args.batch_size)
    manager = TaskManager()
    timings: dict[str, list[float]] = {"hf": [], "yapo_steered": []}
    items = 0
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        for name, lm in (("hf", plain), ("yapo_steered", steered)):
            started = time.perf_counter()
            results = simple_evaluate(model=lm, tasks=TASKS, task_manager=manager, verbosity="WARNING")
            timings[name].append(time.perf_counter() - started)
            items = sum(n["effective"] for n in results["n-samples"].values())
            scores = {t: results["results"][t]["acc,none"] for t in TASKS}
            print(name, round(timings[name][-1], 2), scores, flush=True)
    best = {name: min(values) for name, values in timings.items()}
    result = {"benchmark": "P5 yapo_steered (lambda=0) vs lm-eval hf", "goal": "items/s ratio >= 0.95",
              "tasks": TASKS, "items": items, "repeats": args.repeats, "batch_size": args.batch_size,
              "seconds": timings, "items_per_second": {n: items / s for n, s in best.items()},
              "ratio": best["hf"] / best["yapo_steered"]}
    result["goal_met"] = result["ratio"] >= 0.95
    print(result)
    write_report("p5_lm_eval_overhead", result, args)


if __name__ == "__main__":
    main()
