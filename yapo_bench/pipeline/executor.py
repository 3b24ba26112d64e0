"""The local executor: carries out a plan's steps in order in this process, skipping those done (a record of their
fingerprint with its output on disk), recording each one it finishes, and publishing the report. `--dry-run` prints
what it would do: per step done, to run, or stale with what changed, and an estimate of the cost."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from yapo_bench.locking import exclusive
from yapo_bench.methods import get_method
from yapo_bench.pipeline.config import RunConfig
from yapo_bench.pipeline.lifecycle import carry_out, finish, start, waiting
from yapo_bench.pipeline.plan import EvalStep, JudgeStep, Plan, ReportStep, Step, TrainStep, make_plan
from yapo_bench.pipeline.records import StepRecords
from yapo_bench.pipeline.resources import Resources
from yapo_bench.pipeline.steps import StepContext, StepIncomplete, judge_server

if TYPE_CHECKING:
    from yapo_bench.pipeline.cluster import ClusterSettings


def describe_plan(plan: Plan, records: StepRecords, workers: int | None = None) -> str:
    """The plan with what it reads (model, SAE, data) and, per step, done / to run / stale (what changed) and its
    estimated time on each device of `costs.DEVICES` and its peak memory; then the totals of what is left: serial,
    and given `workers`, the wall time on that many workers of the device beside its critical path."""
    from yapo_bench.pipeline.costs import DEVICES, format_duration, parallel_seconds, peak, plan_costs, total_seconds
    from yapo_bench.sae import describe_sae_source

    config = plan.config
    statuses = [records.status(step, plan) for step in plan]
    done = [status == "done" for status, _ in statuses]
    layer = {None: "SAE/preset default", "auto": "auto (found by step `layers`)"}.get(config.layer, config.layer)
    trains = plan.of_kind(TrainStep)
    sparse = next((t for t in trains if get_method(t.method).SPARSE), None)
    sae_text, latents = describe_sae_source(sparse.sae_source, config.model) if sparse else ("none (no sparse "
                                                                                             "method)", 0)
    planned_layer = next((t.inputs["layer"] for t in trains if isinstance(t.inputs["layer"], int)), None)
    costs, basis = plan_costs(plan, planned_layer, latents)
    placement = config.placement().record()
    lines = [f"run {config.name}: model {config.model} on {placement['device']} in {placement['dtype']}, "
             f"layer {layer}, methods {', '.join(config.methods)}, out {config.out}",
             f"  SAE: {sae_text}",
             f"  culture data: {config.culture_data} (rejected: {config.rejected}); "
             f"countries {config.countries_checked}"]
    if costs:
        lines.append(f"  {'step':<44} {'status':<7} " + "  ".join(f"{name:>9}" for name in costs) + "  peak memory")
    for i, step in enumerate(plan):
        word, why = statuses[i]
        line = f"  {step.key:<44} {word:<7}"
        if costs and not done[i]:
            line += " " + "  ".join(f"{format_duration(costs[name][i].seconds):>9}" for name in costs)
            line += "  " + "  ".join(f"{costs[name][i].peak_bytes / 2**30:.1f}" for name in costs) + " GiB"
        lines.append((line + (f"  {why}" if why else "")).rstrip())
    stale = sum(status == "stale" for status, _ in statuses)
    counts = f"{len(statuses)} steps: {sum(done)} done, {len(statuses) - sum(done) - stale} to run, {stale} stale"
    if not costs:
        lines.append(f"{counts}; no estimate ({basis})")
        return "\n".join(lines)
    totals = ", ".join(f"{format_duration(total_seconds(costs[name], done))} on {DEVICES[name].name} "
                       f"(peak {peak(costs[name]) / 2**30:.1f} GiB of {DEVICES[name].memory / 2**30:.0f}; "
                       f"{DEVICES[name].basis})" for name in costs)
    other = "hf" if config.engine == "vllm" else "vllm"  # the evaluations on the other engine, to choose between them
    evals = [isinstance(step, EvalStep) for step in plan]
    mine, theirs = ({name: total_seconds(found[name], [d or not e for d, e in zip(done, evals)]) for name in found}
                    for found in (costs, plan_costs(plan, planned_layer, latents, other)[0]))
    lines.append(f"evaluations on engine {config.engine}: " + ", ".join(
        f"{format_duration(mine[name])} on {name}" for name in costs) + f"; on engine {other}: " + ", ".join(
        f"{format_duration(theirs[name])} on {name}" for name in costs))
    lines.append(f"{counts}; estimated {totals}. Data sizes {basis}; costs.py says how estimates are made")
    if workers:
        walls = [(name, parallel_seconds(plan, costs[name], done, workers)) for name in costs]
        lines.append(f"on {workers} workers: " + ", ".join(
            f"{format_duration(wall)} on {DEVICES[name].name} each (critical path {format_duration(path)})"
            for name, (wall, path) in walls))
    return "\n".join(lines)


@contextlib.contextmanager
def quiet(enabled: bool) -> Iterator[None]:
    """No progress bars within the block, when `enabled`: ours take a `progress` flag and lm-eval's per-request
    bars its model's; every other tqdm bar (lm-eval building requests) starts disabled unless its caller says
    otherwise, and datasets' and transformers' bars are switched off by their own switches."""
    if not enabled:
        yield
        return
    import datasets
    import tqdm
    from transformers.utils import logging as transformers_logging

    from yapo_bench.sae import temporarily

    switches = [(datasets.is_progress_bar_enabled(), datasets.disable_progress_bars, datasets.enable_progress_bars),
                (transformers_logging.is_progress_bar_enabled(), transformers_logging.disable_progress_bar,
                 transformers_logging.enable_progress_bar)]
    for _, disable, _ in switches:
        disable()
    try:
        with temporarily(tqdm.std.tqdm, "__init__", functools.partialmethod(tqdm.std.tqdm.__init__, disable=True)):
            yield
    finally:
        for was_enabled, _, enable in switches:
            if was_enabled:
                enable()


def run(config: RunConfig, dry_run: bool = False, progress: bool = True,
        on_step: Callable[[Step], None] | None = None, cluster: ClusterSettings | None = None) -> list[Step]:
    """Carry out (or with dry_run only print) the plan, in this process or, given `cluster`, as Ray tasks on a
    cluster's workers; returns the steps done now (those already done excluded)."""
    out = Path(config.out)
    plan = make_plan(config)
    records = StepRecords(out)
    print(describe_plan(plan, records, cluster.workers if cluster else None), flush=True)
    if dry_run:
        return []
    with exclusive(out, "out"), quiet(not progress):  # one writer: a second run would redo and interleave steps
        if cluster is not None:
            from yapo_bench.pipeline.cluster import execute_on_cluster

            return execute_on_cluster(plan, records, cluster, progress, on_step)
        return execute(plan, records, Resources(config.model, config.placement()), progress, on_step)


def execute(plan: Plan, records: StepRecords, resources: Resources, progress: bool = True,
            on_step: Callable[[Step], None] | None = None) -> list[Step]:
    """Run every step of `plan` that is not done, in order; a step whose upstream did not finish is left for a
    rerun. Raises StepIncomplete naming what did not finish, after every step that could finish has."""
    from tqdm import tqdm

    finished = start(plan, records)
    context = StepContext(plan, Path(plan.config.out), resources, progress,
                          {key: r["result"] for key, r in finished.items()})
    todo = [step for step in plan if step.key not in finished]
    done: list[Step] = []
    incomplete: list[str] = []
    with judge_server(plan, any(isinstance(s, JudgeStep) for s in todo)) as judge_url, \
            tqdm(todo, desc=f"run {plan.config.name}", unit="step", disable=not progress) as bar:
        context.judge_url = judge_url
        for step in bar:
            bar.set_postfix_str(step.key)
            if why := waiting(step, context.results):  # a report on partial results would average in what is missing
                incomplete.append(why)
                continue
            if isinstance(step, ReportStep):
                context.records = [finished[s.key] for s in plan if s.key in finished]
            try:
                finished[step.key] = carry_out(step, context, records)
            except StepIncomplete as err:
                incomplete.append(str(err))
                continue
            context.results[step.key] = finished[step.key]["result"]
            done.append(step)
            if on_step:
                on_step(step)
    finish(plan, context, finished, incomplete, any(isinstance(s, ReportStep) for s in done))
    return done
