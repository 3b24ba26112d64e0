"""`yapo-bench analyze sweep` as a study: run (or resume) a multi-λ `yapo-bench run`, then score vs λ, λ chosen on
validation (optionally within a neutral-text KL budget) and scored on test, every vector at matched neutral KL, and
MMLU at the chosen λ. It drives the run (`pipeline`), so it sits above it: it reads the outputs the run's plan names,
and its own evaluations are steps fingerprinted like the run's, under <out>/sweep-work/. The tables it builds are in
`analysis.sweep`, the neutral-text KL in `analysis.kl`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from yapo_bench.analysis.outputs import REPORT_ROOT, pyplot, save_figure, write_csv, write_text
from yapo_bench.digests import json_digest
from yapo_bench.families import TaskId
from yapo_bench.pipeline import RunConfig, make_plan, run
from yapo_bench.pipeline.executor import quiet
from yapo_bench.pipeline.plan import EvalStep, TrainStep, evaluation_beside, method_seeds, seed_suffix, unit_tasks
from yapo_bench.pipeline.records import StepRecords
from yapo_bench.pipeline.resources import Resources
from yapo_bench.pipeline.steps import StepContext, run_eval
from yapo_bench.report.runs import culture_family


def _evaluate_once(step: EvalStep, context: StepContext, records: StepRecords) -> Path:
    """The output of an evaluation step of the sweep: the one its fingerprint already has, else a new one."""
    record = records.done(step)
    if record is None:
        started = time.perf_counter()
        result = run_eval(step, context)
        record = records.write(step, context.plan, result, time.perf_counter() - started)
    return Path(record["result"]["output"])


class NeutralKL:
    """Per vector, the neutral-text KL machinery of `analyze sweep`: the KL at each λ of the sweep and the λ
    that reaches a target, each cached as JSON under `work/kl/` by the vector's training fingerprint and the prompts,
    so a rerun recomputes only what is new and a retrained vector or other prompts never reuse another's."""

    def __init__(self, context: StepContext, args: argparse.Namespace, work: Path) -> None:
        self.context, self.args, self.dir = context, args, work / "kl"
        self.prompts = neutral_prompts(args)
        self.prompts_key = f"p{json_digest(self.prompts)[:8]}-t{args.max_length}"

    def _vector(self, train: TrainStep) -> tuple[Any, Any, Any]:
        from yapo_bench.steering import SteeringVector

        vector = SteeringVector.load(self.context.results[train.key]["vector"])
        sae, _ = self.context.resources.sae_and_layer(train.sae_for(vector.layer), vector.layer,
                                                      vector.space == "sae")
        return self.context.resources.model(), vector, sae if vector.space == "sae" else None

    def curve(self, train: TrainStep, multipliers: list[float]) -> dict[float, float]:
        from yapo_bench.analysis.kl import kl_curve

        cache = self.dir / f"curve-{train.key}-{train.short}-{self.prompts_key}.json"
        known = {float(k): v for k, v in json.loads(cache.read_text()).items()} if cache.is_file() else {}
        missing = [m for m in multipliers if m not in known]
        if missing:
            loaded, vector, sae = self._vector(train)
            known.update(kl_curve(loaded.model, loaded.tokenizer, self.prompts, vector, missing, sae,
                                  max_length=self.args.max_length))
            write_text(cache, json.dumps({f"{k:g}": v for k, v in sorted(known.items())}) + "\n")
        return {m: known[m] for m in multipliers}

    def match(self, train: TrainStep) -> dict[str, Any]:
        from yapo_bench.analysis.kl import multiplier_for_kl

        target = self.args.kl_target
        cache = self.dir / f"match-{train.key}-{train.short}-kl{target:g}-{self.prompts_key}.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        loaded, vector, sae = self._vector(train)
        found = multiplier_for_kl(target, loaded.model, loaded.tokenizer, self.prompts, vector, sae,
                                  max_length=self.args.max_length)
        row = {"method": train.method, "unit": str(train.unit), "vector": self.context.results[train.key]["vector"],
               "target": target, "multiplier": found.multiplier,
               "kl": found.kl, "converged": found.converged, "evaluations": len(found.evaluations)}
        write_text(cache, json.dumps(row) + "\n")
        return row


def _sweep_plot(sweep: Any, comparison: Any, metric: str, title: str, path: Path) -> None:
    """Score vs λ on the validation questions (what the selection sees) and on the test questions (what it is
    reported on), and how far each λ moves the model: the gap between the two shows a wrecked model winning on
    noise."""
    from yapo_bench.report.runs import method_rank

    plt = pyplot()
    fig, (score_ax, kl_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    base = sweep[sweep["method"] == "base"]
    chosen = dict(zip(comparison["method"], comparison["chosen_multiplier"])) if not comparison.empty else {}
    for method in sorted(set(sweep["method"]) - {"base"}, key=method_rank):
        curve = sweep[sweep["method"] == method].sort_values("multiplier")
        line, = score_ax.plot(curve["multiplier"], curve["validation_mean"], marker="o", label=f"{method}: validation")
        score_ax.plot(curve["multiplier"], curve["test_mean"], marker=".", ls="--", color=line.get_color(),
                      label=f"{method}: test")
        kl_ax.plot(curve["multiplier"], curve["answer_kl_mnat"], marker="o", color=line.get_color(),
                   label=f"{method}: culture answers")
        if "neutral_kl" in curve:
            kl_ax.plot(curve["multiplier"], 1000 * curve["neutral_kl"], marker=".", ls="--", color=line.get_color(),
                       label=f"{method}: neutral text, per token")
        picked = curve[curve["multiplier"] == chosen.get(method)]
        score_ax.plot(picked["multiplier"], picked["validation_mean"], marker="*", ms=16, color=line.get_color(), ls="")
    if not base.empty:
        score_ax.axhline(float(base["validation_mean"].iloc[0]), color="black", lw=1, label="base: validation")
        score_ax.axhline(float(base["test_mean"].iloc[0]), color="black", ls="--", lw=1, label="base: test")
    score_ax.set(xscale="log", xlabel="multiplier λ (log)", ylabel=f"mean {metric}, %",
                 title=f"{title}: score vs λ (★ chosen on validation)")
    kl_ax.set(xscale="log", yscale="log", xlabel="multiplier λ (log)", ylabel="mean KL(base ‖ steered), millinats",
              title="How far steering moves the model")
    score_ax.legend(fontsize=7, ncol=2)
    kl_ax.legend(fontsize=7)
    save_figure(fig, path)


def run_sweep(args: argparse.Namespace) -> None:
    """The whole `analyze sweep` (its parsed arguments: see `commands.analyze`); writes sweep.csv, comparison.csv,
    matched_kl.csv, mmlu.csv, sweep.json and sweep.png into --out."""
    with quiet(args.no_progress):
        _sweep(args)


def _sweep(args: argparse.Namespace) -> None:
    import pandas as pd

    from yapo_bench.analysis.sweep import comparison_table, sweep_table
    from yapo_bench.report.runs import load_evaluations
    from yapo_bench.report.selection import choose_multipliers
    from yapo_bench.report.tables import mmlu_table, multiplier_selection

    config = RunConfig.from_yaml(args.config)
    run(config, progress=not args.no_progress)  # resumable: a finished run only prints its plan
    plan, run_out = make_plan(config), Path(config.out)
    work = run_out / "sweep-work"  # the analysis's own evaluations and KL searches, beside the run's
    out = args.out or REPORT_ROOT / "sweep"
    done = {step.key: StepRecords(run_out).done(step) for step in plan}
    runs = load_evaluations([(Path(done[step.key]["result"]["output"]), None)
                             for step in sorted(plan.of_kind(EvalStep), key=lambda step: step.key)])
    choice = choose_multipliers(runs, args.metric, args.seed)
    if not choice.question_of:
        raise ValueError(f"runs: no culture MCQ item scored with {args.metric}; expected the run's `families` to "
                         "include mcq")
    split, question_of = choice.question_split(), choice.question_of
    sweep = sweep_table(runs, split, question_of, args.metric)
    context = StepContext(plan, work, Resources(config.model, config.placement()), not args.no_progress,
                          {key: record["result"] for key, record in done.items() if record is not None})
    records = StepRecords(work)
    trains = sorted((t for t in plan.of_kind(TrainStep) if t.unit.kind == "culture"), key=lambda t: t.key)
    neutral = NeutralKL(context, args, work) if args.kl_target is not None or args.max_kl is not None else None

    allowed = None
    if neutral is not None:  # the neutral-text KL of every (method, λ): mean over the method's vectors
        per_vector: dict[tuple[str, float], list[float]] = {}
        for train in trains:
            for multiplier, kl in neutral.curve(train, config.multipliers_for(train.method)).items():
                per_vector.setdefault((train.method, multiplier), []).append(kl)
        neutral_kl = {key: sum(values) / len(values) for key, values in per_vector.items()}
        sweep["neutral_kl"] = [0.0 if r.method == "base" else neutral_kl.get((r.method, r.multiplier), float("nan"))
                               for r in sweep.itertuples()]
        if args.max_kl is not None:
            def allowed(method: str, multiplier: float) -> bool:
                return neutral_kl.get((method, multiplier), float("inf")) <= args.max_kl
    selection, note = multiplier_selection(choice.restricted(allowed) if allowed else choice)
    if args.max_kl is not None:
        note += f" Candidates: λ whose mean neutral-text KL is at most {args.max_kl} nats."

    matched_kl, matched_runs = pd.DataFrame(), []
    if args.kl_target is not None:
        matches = [(train, neutral.match(train)) for train in trains]
        matched_kl = pd.DataFrame([row for _, row in matches])
        outputs = []
        for train, row in matches:
            tasks = [task for task in unit_tasks(config, train.unit) if task.family == culture_family("mcq").name]
            key = f"eval-{train.method}-{train.unit.key}{seed_suffix(train.seed)}-x{row['multiplier']:.6g}"
            step = evaluation_beside(plan, key, train.method, train.unit, float(row["multiplier"]), tasks,
                                     config.limit, train.seed)
            outputs.append((_evaluate_once(step, context, records), None))
        matched_runs = load_evaluations(outputs)
    comparison = comparison_table(sweep, selection, matched_runs, matched_kl, split, question_of, args.metric)

    mmlu = pd.DataFrame()
    chosen = {r.method: r.chosen_multiplier for r in comparison.itertuples() if pd.notna(r.chosen_multiplier)}
    if args.mmlu_tasks:
        unit = min(train.unit for train in trains)  # one context's vectors: MMLU measures damage, not culture
        # and, with several training seeds, the first seed's: a check that knowledge is kept, not a seed comparison
        tasks = [TaskId.parse(name) or _unknown_task(name) for name in args.mmlu_tasks]
        steps = [evaluation_beside(plan, "mmlu-base", "base", None, 0.0, tasks, args.mmlu_limit)] + [
            evaluation_beside(plan, f"mmlu-{method}-{unit.key}-x{multiplier:g}", method, unit, multiplier, tasks,
                              args.mmlu_limit, method_seeds(config, method)[0])
            for method, multiplier in chosen.items() if any(t.method == method and t.unit == unit for t in trains)]
        mmlu = mmlu_table(load_evaluations([(_evaluate_once(step, context, records), None) for step in steps]))

    tables = {"sweep": sweep, "selection": selection, "matched_kl": matched_kl, "comparison": comparison,
              "mmlu": mmlu}
    for name, frame in tables.items():
        if not frame.empty:
            write_csv(out / f"{name}.csv", frame.to_dict("records"))
    summary = {"config": str(args.config), "run": str(run_out), "model": config.model, "metric": args.metric,
               "selection_note": note, "split": {"seed": split.seed, "validation_questions": len(split.validation),
                                                  "test_questions": len(split.test)},
               "kl": {"target": args.kl_target, "max_kl": args.max_kl, "prompts": args.prompts,
                      "n_prompts": args.n_prompts, "max_length": args.max_length} if neutral is not None else None,
               "mmlu": {"tasks": args.mmlu_tasks, "limit": args.mmlu_limit} if args.mmlu_tasks else None,
               **{name: frame.to_dict("records") for name, frame in tables.items()}}
    write_text(out / "sweep.json", json.dumps(summary, indent=2, default=str) + "\n")
    _sweep_plot(sweep, comparison, args.metric, config.name, out / "sweep.png")
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(sweep.drop(columns=["metric"]).round(3).to_string(index=False))
        print(comparison.round(3).to_string(index=False))
        if not mmlu.empty:
            print(mmlu[["group", "metric", "label", "value", "ci_low", "ci_high"]].round(3).to_string(index=False))
    print(f"wrote {out}/sweep.csv, comparison.csv, sweep.json, sweep.png" + (f" ({note})" if note else ""))


def _unknown_task(name: str) -> TaskId:
    raise ValueError(f"--mmlu-tasks: {name!r} is not an MMLU task or group of a registered family")


def neutral_prompts(args: argparse.Namespace) -> list[str]:
    """The neutral text `analyze kl` and `analyze sweep` measure KL on (their --prompts, --n-prompts)."""
    from yapo_bench.corpus import load_corpus

    return load_corpus(args.prompts, split="heldout")[: args.n_prompts]
