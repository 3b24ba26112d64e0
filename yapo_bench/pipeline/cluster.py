"""The cluster executor (`yapo-bench run --executor ray`): the plan's steps as Ray tasks on the workers of a local or
existing Ray cluster, the same results as the local executor.

Each worker is a Ray actor that holds one model and its SAEs (`Resources`, loaded on its first step and reused for
every step it runs) and takes one GPU, or `threads` CPUs on a machine without one. The driver (this process) hands a
free worker the first step, in plan order, whose upstream steps have finished; judge steps run as Ray tasks on the
driver's node (where a local judge server listens), the report in the driver once everything else is done. A worker
carries a step out exactly as the local executor does (`lifecycle.carry_out`): outputs written aside and renamed into
place, the step's record written last, so what a killed worker leaves is never read as done and a rerun under either
executor reuses every finished step.

Faults: a worker process that dies mid-step is restarted by Ray and the step retried, at most `retries` times; then
the step fails, the run goes on with what does not depend on it and ends naming it. Ctrl-C kills the workers (and
the cluster this process started). Each step's output (stdout, stderr, logging) goes to `<out>/logs/<key>.log`, one
header per attempt naming the worker, its node and its process."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yapo_bench.devices import Placement
from yapo_bench.pipeline.lifecycle import carry_out, finish, start, waiting
from yapo_bench.pipeline.plan import JudgeStep, Plan, ReportStep, Step
from yapo_bench.pipeline.records import StepRecords
from yapo_bench.pipeline.resources import Resources
from yapo_bench.pipeline.steps import StepContext, StepIncomplete, judge_server

# settings a worker needs to find the same data, caches and hub files as the driver (a worker of an existing cluster
# does not inherit the driver's environment)
FORWARDED_ENV = ("YAPO_BENCH_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "LM_EVAL_")


@dataclass(frozen=True)
class ClusterSettings:
    """How `run` uses a Ray cluster. `workers`: how many (None: one per GPU of the cluster, else its CPUs over
    `threads`); `threads`: CPU threads per worker (torch's, and the CPUs it asks Ray for); `retries`: how many times a
    step whose worker died is retried; `address`: the cluster to join (None: $RAY_ADDRESS, else a local cluster
    started for the run and stopped after it)."""

    workers: int | None = None
    threads: int = 1
    retries: int = 2
    address: str | None = None

    def __post_init__(self) -> None:
        for name, least in (("workers", 1), ("threads", 1), ("retries", 0)):
            value = getattr(self, name)
            if value is None and name == "workers":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name}: {value!r}; expected an integer >= {least}")


def step_log_path(out: Path, step: Step) -> Path:
    return out / "logs" / f"{step.key}.log"


@contextlib.contextmanager
def step_log(out: Path, step: Step, worker: str) -> Iterator[None]:
    """Send everything the step prints or logs to its log file, after a header for this attempt."""
    path = step_log_path(out, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8", buffering=1) as log:
        log.write(f"== {step.key} ({step.short}) on {worker}, node {socket.gethostname()}, pid {os.getpid()}, "
                  f"started {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}\n")
        handler = logging.StreamHandler(log)
        logging.getLogger().addHandler(handler)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            logging.getLogger().removeHandler(handler)


def sees(out: str, token: str) -> str | None:
    """None when this process reads `token` from `<out>/.workers/<token>` and can write beside it; else why not."""
    probe = Path(out) / ".workers" / token
    try:
        if probe.read_text() != token:
            return f"{probe} has other content"
        (probe.parent / f"{token}-{os.getpid()}").write_text(token)
    except OSError as err:
        return f"{err.strerror or err} ({probe})"
    return None


class StepWorker:
    """A Ray actor: runs the steps it is handed with one model and its SAEs, loaded once."""

    def __init__(self, plan: Plan, placement: Placement, threads: int, name: str) -> None:
        import torch

        torch.set_num_threads(threads)
        self.plan, self.name = plan, name
        self.out = Path(plan.config.out)
        self.resources = Resources(plan.config.model, placement)
        self.records = StepRecords(self.out)

    def run(self, key: str, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The step's record, or {"incomplete": why} when it ran but did not finish its work."""
        step = self.plan[key]
        with step_log(self.out, step, self.name):
            try:
                return carry_out(step, StepContext(self.plan, self.out, self.resources, False, results), self.records)
            except StepIncomplete as err:
                return {"incomplete": str(err)}


def run_light_step(plan: Plan, key: str, results: dict[str, dict[str, Any]], judge_url: str | None) -> dict[str, Any]:
    """A step that loads no model (a judge step), as a Ray task: its record, or {"incomplete": why}."""
    step, out = plan[key], Path(plan.config.out)
    with step_log(out, step, "the driver's node"):
        context = StepContext(plan, out, Resources(plan.config.model, plan.config.placement()), False, results,
                              judge_url)
        try:
            return carry_out(step, context, StepRecords(out))
        except StepIncomplete as err:
            return {"incomplete": str(err)}


@contextlib.contextmanager
def connected(settings: ClusterSettings) -> Iterator[Any]:
    """Ray, joined to the settings' cluster (or a local one started here, stopped on the way out)."""
    import ray

    if ray.is_initialized():  # a caller's own session: used, and left running
        yield ray
        return
    forwarded = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    # a local cluster unless one is named: never one that an earlier `ray start` on this machine may have left
    address = settings.address or os.environ.get("RAY_ADDRESS") or "local"
    try:
        ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False,
                 runtime_env={"env_vars": forwarded} if forwarded else None)
    except ConnectionError as err:
        raise ValueError(f"address: cannot reach a Ray cluster at {address!r} ({err})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def worker_count(ray: Any, settings: ClusterSettings, gpu: bool) -> int:
    resources = ray.cluster_resources()
    if gpu and not resources.get("GPU"):
        raise ValueError("device: cuda was planned but the Ray cluster has no GPU; run with device: cpu")
    if settings.workers is not None:
        return settings.workers
    return int(resources["GPU"]) if gpu else max(1, int(resources.get("CPU", 1)) // settings.threads)


def check_out_visible(ray: Any, out: Path) -> None:
    """Refuse, in one line, a run whose out directory some node of the cluster cannot read and write."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    probe = out / ".workers" / token
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text(token)
    try:
        nodes = [node for node in ray.nodes() if node["Alive"]]
        check = ray.remote(num_cpus=0)(sees)
        answers = ray.get([check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                           .remote(str(out), token) for node in nodes])
        for node, why in zip(nodes, answers):
            if why:
                raise ValueError(f"out: {out} is not visible from the cluster's node {node['NodeManagerAddress']} "
                                 f"(id {node['NodeID'][:12]}): {why}; every worker must see the out directory (a "
                                 "shared filesystem)")
    finally:
        for path in probe.parent.glob(f"{token}*"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # left when another run's probe is there
            probe.parent.rmdir()


class Progress:
    """One view of the run across workers: steps done / running / left, and the step on each worker."""

    def __init__(self, plan: Plan, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=f"run {plan.config.name}", unit="step", disable=not enabled)
        self.on: dict[str, str] = {}

    def show(self, left: int) -> None:
        running = " | ".join(f"{worker}: {key}" for worker, key in sorted(self.on.items()))
        self.bar.set_postfix_str(f"{len(self.on)} running, {left} left" + (f" | {running}" if running else ""))

    def close(self) -> None:
        self.bar.close()


def execute_on_cluster(plan: Plan, records: StepRecords, settings: ClusterSettings, progress: bool = True,
                       on_step: Callable[[Step], None] | None = None) -> list[Step]:
    """Run every step of `plan` that is not done on the cluster's workers; what `executor.execute` does, in
    parallel. Raises StepIncomplete naming what did not finish, after every step that could finish has."""
    out = Path(plan.config.out).resolve()
    if out != Path(plan.config.out):
        raise ValueError(f"out: {plan.config.out!r}; the cluster executor needs an absolute path")
    placement = plan.config.placement()
    if placement.device.startswith("cuda:"):
        raise ValueError(f"device: {placement.device!r} with the ray executor; use auto or cuda (Ray gives each "
                         "worker one GPU of its own)")
    finished = start(plan, records)
    context = StepContext(plan, out, Resources(plan.config.model, placement), progress,
                          {key: r["result"] for key, r in finished.items()})
    left = [step for step in plan if step.key not in finished and not isinstance(step, ReportStep)]
    done: list[Step] = []
    incomplete: list[str] = []
    if left:
        _run_steps(plan, left, context, finished, settings, progress, on_step, done, incomplete)
    report = plan.of_kind(ReportStep)[0]
    if report.key not in finished and not incomplete:
        context.records = [finished[s.key] for s in plan if s.key in finished]
        finished[report.key] = carry_out(report, context, records)
        done.append(report)
        if on_step:
            on_step(report)
    finish(plan, context, finished, incomplete, report_done=any(isinstance(s, ReportStep) for s in done))
    return done


def _run_steps(plan: Plan, left: list[Step], context: StepContext, finished: dict[str, dict[str, Any]],
               settings: ClusterSettings, progress: bool, on_step: Callable[[Step], None] | None, done: list[Step],
               incomplete: list[str]) -> None:
    """Carry `left` (every step but the report) out on the cluster, adding to `finished`, `context.results` and
    `done` what finishes and to `incomplete` what does not."""
    out, placement = context.out, context.resources.placement
    with connected(settings) as ray, judge_server(plan, any(isinstance(s, JudgeStep) for s in left)) as judge_url:
        check_out_visible(ray, out)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        gpu = placement.device.startswith("cuda")
        count = worker_count(ray, settings, gpu)
        actor = ray.remote(StepWorker).options(
            num_gpus=1 if gpu else 0, num_cpus=settings.threads, max_restarts=-1, max_task_retries=settings.retries)
        names = [f"w{i}" for i in range(count)]

        def start_worker(name: str) -> Any:
            return actor.remote(plan, placement, settings.threads, name)

        workers = {name: start_worker(name) for name in names}
        light = ray.remote(run_light_step).options(
            num_cpus=0, max_retries=settings.retries,
            scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False))
        plan_ref = ray.put(plan)
        idle, running = list(names), {}
        view = Progress(plan, len(left), progress)
        try:
            while left or running:
                for step in list(left):  # hand out every step that can start, in plan order
                    if any(need not in context.results for need in step.needs):
                        continue
                    if isinstance(step, JudgeStep):
                        ref = light.remote(plan_ref, step.key, context.results, judge_url)
                        running[ref] = (step, None)
                    elif idle:
                        worker = idle.pop(0)
                        running[workers[worker].run.remote(step.key, context.results)] = (step, worker)
                        view.on[worker] = step.key
                    else:
                        continue
                    left.remove(step)
                view.show(len(left))
                if not running:  # what is left waits for steps that failed
                    incomplete += [why for step in left if (why := waiting(step, context.results))]
                    break
                [ref], _ = ray.wait(list(running), num_returns=1)
                step, worker = running.pop(ref)
                view.on.pop(worker or "", None)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayActorError as err:  # its worker died more often than the retries allow
                    incomplete.append(f"{step.key} failed: its worker died ({settings.retries} retries): "
                                      f"{str(err).splitlines()[0]}")
                    record = None
                    # a fresh worker in its place: one that Ray is still restarting would fail what it is handed
                    ray.kill(workers[worker], no_restart=True)
                    workers[worker] = start_worker(worker)
                except ray.exceptions.WorkerCrashedError:
                    incomplete.append(f"{step.key} failed: its worker died ({settings.retries} retries)")
                    record = None
                except ray.exceptions.RayTaskError as err:  # the step's own error, as the local executor raises it
                    raise (err.cause if isinstance(err.cause, Exception) else err) from None
                if worker:
                    idle.append(worker)
                if record is None:
                    continue
                if "incomplete" in record:
                    incomplete.append(record["incomplete"])
                    continue
                finished[step.key] = record
                context.results[step.key] = record["result"]
                done.append(step)
                view.bar.update()
                if on_step:
                    on_step(step)
        finally:  # on Ctrl-C too: nothing of the run outlives it
            view.close()
            for ref, (_, worker) in running.items():
                if worker is None:
                    ray.cancel(ref, force=True)
            for handle in workers.values():
                ray.kill(handle)

