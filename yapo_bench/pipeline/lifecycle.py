"""What every executor does around the steps, one way: start a run (its plan.json, the steps already done), carry one
step out and record it, tell why a step must wait, and finish a run (refuse a report on partial results, or publish
the one made before for these very inputs)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from yapo_bench.atomic import atomic_file
from yapo_bench.environment import versions
from yapo_bench.pipeline.plan import Plan, ReportStep, Step
from yapo_bench.pipeline.records import StepRecords
from yapo_bench.pipeline.steps import EXECUTORS, StepContext, StepIncomplete, publish_report


def start(plan: Plan, records: StepRecords) -> dict[str, dict[str, Any]]:
    """Write the plan's record (plan.json) and return the records of its steps already done, by key."""
    with atomic_file(Path(plan.config.out) / "plan.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(plan.config), "placement": plan.config.placement().record(),
                                   "versions": versions(), "steps": [step.record() for step in plan]},
                                  indent=1) + "\n")
    return {step.key: record for step in plan if (record := records.done(step)) is not None}


def carry_out(step: Step, context: StepContext, records: StepRecords) -> dict[str, Any]:
    """Run one step (every upstream result in `context.results`) and record it; returns its record. Raises
    StepIncomplete, unrecorded, when it did not finish its work."""
    started = time.perf_counter()
    result = EXECUTORS[type(step)](step, context)
    return records.write(step, context.plan, result, time.perf_counter() - started)


def waiting(step: Step, results: dict[str, Any]) -> str | None:
    """Why `step` cannot run yet (the upstream steps it reads that did not finish), or None."""
    missing = [key for key in step.needs if key not in results]
    return f"{step.key} waits for {', '.join(missing)}" if missing else None


def finish(plan: Plan, context: StepContext, finished: dict[str, dict[str, Any]], incomplete: list[str],
           report_done: bool) -> None:
    """End a run: refuse a report on partial results (naming what did not finish); publish this plan's report when it
    was made before for these very inputs (an edit reverted)."""
    if incomplete:
        raise StepIncomplete(f"run {plan.config.name} is incomplete ({'; '.join(incomplete)}); no report was "
                             "written. Run it again to retry what failed: finished steps are kept")
    if not report_done:
        report = plan.of_kind(ReportStep)[0]
        publish_report(Path(finished[report.key]["result"]["output"]), context.out)
