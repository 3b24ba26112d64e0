"""One executor per step kind: each takes its step and the run's context, writes its output under the run's out
directory so that a kill at any instant leaves either nothing or a complete output (a folder written aside and
renamed into place), and returns its result, whose `output` names that output. Outputs are named by the step's
fingerprint: steps of different fingerprints never overwrite each other."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yapo_bench.atomic import atomic_dir, atomic_file
from yapo_bench.digests import json_digest
from yapo_bench.families import TaskSettings, get_family
from yapo_bench.methods import get_method, run_method
from yapo_bench.pipeline.plan import (
    AUTO,
    EvalStep,
    JudgeStep,
    LayersStep,
    Plan,
    ReportStep,
    Step,
    TrainStep,
)
from yapo_bench.pipeline.resources import Resources

REPORT_FILES = ("index.html", "report.md", "report.json")
REPORT_FOLDERS = ("tables", "plots")


class StepIncomplete(ValueError):
    """A step that ran but did not finish its work (e.g. judge requests that failed): it is left unrecorded, so a
    rerun does it again, and the run reports it instead of a report built on partial results."""


@dataclass
class StepContext:
    """What an executor sees: the plan, where outputs go, the shared resources, and the results of finished steps
    (by key) it may read, among them those its step needs."""

    plan: Plan
    out: Path
    resources: Resources
    progress: bool = True
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    judge_url: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)  # the finished steps' records, for the report


def _layer(step: TrainStep, context: StepContext) -> int:
    planned = step.inputs["layer"]
    return int(context.results["layers"]["layer"]) if planned == AUTO else planned


def run_layers(step: LayersStep, context: StepContext) -> dict[str, Any]:
    from yapo_bench.analysis.layers import discover_layer

    config, loaded = context.plan.config, context.resources.model()
    target = context.out / "layers" / step.short
    with atomic_dir(target) as tmp:
        summary = discover_layer(loaded.model, loaded.tokenizer, config.model, list(config.countries), tmp,
                                 progress=context.progress, culture_data=config.culture_data, data_dir=config.data_dir)
    return {"output": str(target), "layer": summary["suggested_layer"], "signal": summary["signal"]}


def training_pairs(step: TrainStep, context: StepContext) -> tuple[str, Any]:
    """(data key, pairs) a unit's vectors are trained on. A culture context's pairs are the train questions of the
    run's culture data (the evaluation tasks read the test ones), written under <out>/pairs/ named by what they
    depend on, and shared by the unit's methods (with `rejected: model`, the sampled answers are kept there)."""
    from yapo_bench.data import load_pairs

    config = context.plan.config
    if step.unit.kind != "culture":
        return f"bipo:{step.unit.name}:train", load_pairs(f"bipo:{step.unit.name}:train", config.data_dir)
    from yapo_bench.data.culture_pairs import (
        CulturePairSpec,
        culture_pair_rows,
        pair_set,
    )
    from yapo_bench.data.culture_sources import culture_items

    spec = CulturePairSpec(country=step.unit.name, split="train", rejected=config.rejected, model=config.model)
    source = f"{config.culture_data} [{spec.describe()}]"
    made_from = {key: step.inputs[key] for key in ("data", "model", "placement")}
    path = context.out / "pairs" / f"{step.unit.name}-{json_digest(made_from)[:12]}.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        items = culture_items(config.culture_data, config.data_dir)
        if step.unit.name not in {item.country for item in items}:
            raise ValueError(f"countries: {step.unit.name!r} is not in {config.culture_data}")
        sampler = None
        if config.rejected == "model":  # the model's greedy answer, where the data has none of this model's
            from yapo_bench.pairs import generate_response

            def sampler(prompt: str) -> str:
                return generate_response(context.resources.model(), prompt, config.max_gen_toks)
        rows, _skipped = culture_pair_rows(items, spec, sampler)
        with atomic_file(path) as tmp:
            tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return f"culture:{source}", pair_set(rows, spec, source)


def run_train(step: TrainStep, context: StepContext) -> dict[str, Any]:
    from yapo_bench.store import trained_vector

    config = context.plan.config
    layer = _layer(step, context)
    sae, layer = context.resources.sae_and_layer(step.sae_for(layer), layer, get_method(step.method).SPARSE)
    data, pairs = training_pairs(step, context)
    budget = config.training if step.seed is None else config.training.for_seed(step.seed)
    stored = trained_vector(step.method, data, context.resources.model(), sae, layer, budget,
                            data_dir=config.data_dir, root=context.out / "vectors", progress=context.progress,
                            pairs=pairs)
    return {"output": str(stored.path), "vector": str(stored.path)}


def lm_eval_settings(step: EvalStep, context: StepContext) -> tuple[TaskSettings, dict[str, Any] | None]:
    """What every task builder gets, and the metadata lm-eval passes every task's loader."""
    config = context.plan.config
    settings = {"data_dir": config.data_dir, "mmlu_dir": config.mmlu_data, "mmlu_limit": step.inputs.get("mmlu_limit")}
    return (TaskSettings(culture_data=config.culture_data, data_dir=config.data_dir),
            {key: value for key, value in settings.items() if value} or None)


def run_eval(step: EvalStep, context: StepContext) -> dict[str, Any]:
    """lm-eval on the step's tasks with the base model, the vector its training step made at its λ, the prompt's
    instruction for its unit, or both, rendered as the run says (chat template or not), into
    <out>/evals/<key>-<fingerprint>, where its results and samples land together."""
    from lm_eval import simple_evaluate

    from yapo_bench.lm_eval_plugin import save_results, task_manager

    config = context.plan.config
    args: dict[str, Any] = {"model": config.model}
    stored = None
    prompted, vector_method = run_method(step.method)
    if prompted:
        args["prompt"] = str(step.unit)
    if vector_method is not None:
        from yapo_bench.steering import SteeringVector
        from yapo_bench.store import StoredVector

        train = context.plan[step.needs[0]]
        vector_path = context.results[train.key]["vector"]
        vector = SteeringVector.load(vector_path)
        source = train.sae_for(vector.layer)
        args.update(vector=vector_path, multiplier=step.multiplier)
        if source:
            args["sae"] = source
        sae, _ = context.resources.sae_and_layer(source, vector.layer, vector.space == "sae")
        stored = StoredVector(vector, sae if vector.space == "sae" else None, Path(vector_path))
    batch_size = step.inputs["batch_size"]
    engine = (step.inputs.get("engine") or {}).get("name", "hf")
    if engine == "vllm":  # one engine a process, steered and instructed for this step
        lm = context.resources.vllm_model(batch_size)
        lm.progress = context.progress
        steering = step.inputs.get("steering") or {}
        lm.steer_with(stored, step.multiplier, steering.get("direction", 1), steering.get("positions", "all"),
                      args.get("prompt"))
    else:
        from yapo_bench.lm_eval_plugin.model import YapoSteeredLM

        lm = YapoSteeredLM(loaded=context.resources.model(), stored=stored, batch_size=batch_size,
                           progress=context.progress, **args)
    settings, metadata = lm_eval_settings(step, context)
    tasks = [get_family(task.family).lm_eval_task(task, settings) for task in step.tasks]
    # what ran is what the step's inputs say: its limit, and the answer length where it generates
    generation = {"gen_kwargs": f"max_gen_toks={step.inputs['max_gen_toks']}"} if "max_gen_toks" in step.inputs else {}
    builtin = any(get_family(task.family).builtin for task in step.tasks)
    manager = task_manager(metadata, builtin)
    if step.inputs.get("num_fewshot"):
        tasks = fewshot_tasks(tasks, manager, step.inputs["num_fewshot"])
    results = simple_evaluate(model=lm, tasks=tasks, limit=step.inputs["limit"], log_samples=True,
                              apply_chat_template=bool(step.inputs.get("chat_template")), task_manager=manager,
                              **generation)
    results["config"]["model"] = "yapo_steered" if engine == "hf" else "yapo_steered_vllm"
    results["config"]["model_args"] = {k: str(v) for k, v in args.items()}
    # what ran the forward passes, with every result: the engine (and its version) and the batch asked for (lm-eval
    # records the sizes it resolved an auto batch to in `batch_sizes`)
    results["config"]["yapo_engine"] = {"engine": engine, "version": (step.inputs.get("engine") or {}).get("version"),
                                        "batch_size": batch_size}
    results["config"]["yapo_step"] = {"key": step.key, "fingerprint": step.fingerprint}
    target = context.out / "evals" / f"{step.key}-{step.short}"
    with atomic_dir(target) as tmp:
        save_results(results, tmp)
    return {"output": str(target)}


def fewshot_tasks(tasks: list, manager: Any, shots: int) -> list:
    """The evaluation's tasks as lm-eval Task objects, each MMLU subject with `shots` examples from its dev split and
    every other task 0-shot (they have no few-shot split; lm-eval's num_fewshot would apply to all). A group's
    subtasks are evaluated one by one: the report pools a family's subjects itself."""
    from lm_eval.api.task import Task
    from lm_eval.tasks import get_task_dict

    from yapo_bench.families import TaskId

    def leaves(found: dict) -> list[Task]:
        return [task for value in found.values()
                for task in (leaves(value) if isinstance(value, dict) else [value] if isinstance(value, Task) else [])]

    built = leaves(get_task_dict(tasks, manager))
    for task in built:
        parsed = TaskId.parse(task.config.task)
        if parsed is not None and get_family(parsed.family).unit_kind == "subject":
            task.set_config(key="num_fewshot", value=shots)
    return built


def run_judge(step: JudgeStep, context: StepContext) -> dict[str, Any]:
    from yapo_bench.judge.config import JudgeConfig
    from yapo_bench.judge.run import judge_run

    spec = context.plan.config.judge
    target = context.out / "judgements" / f"{step.key}-{step.short}" / "verdicts.jsonl"
    summary = judge_run(context.results[step.needs[0]]["output"],
                        JudgeConfig(base_url=context.judge_url, model=spec.model_name, concurrency=spec.concurrency),
                        out_path=target, progress=context.progress)
    if summary["failed"]:  # not done: a rerun retries exactly the failed requests (they are never cached)
        raise StepIncomplete(f"{step.key}: {summary['failed']} of {summary['n']} judge requests failed")
    return {"output": str(target), "scored": summary["scored"], "errors": summary["errors"], "failed": 0}


def run_report(step: ReportStep, context: StepContext) -> dict[str, Any]:
    """The report of exactly the plan's evaluations (with their judges' verdicts), built under
    <out>/report/<fingerprint>/ and published to <out>/."""
    from yapo_bench.report import write_report
    from yapo_bench.report.runs import load_evaluations

    plan = context.plan
    verdicts = {judge.needs[0]: Path(context.results[judge.key]["output"]) for judge in plan.of_kind(JudgeStep)}
    runs = load_evaluations([(Path(context.results[e.key]["output"]), verdicts.get(e.key))
                             for e in sorted(plan.of_kind(EvalStep), key=lambda e: e.key)])
    target = context.out / "report" / step.short
    with atomic_dir(target) as tmp:
        write_report(runs, tmp, title=step.inputs["title"], steps=context.records)
    publish_report(target, context.out)
    return {"output": str(target), "page": str(context.out / "index.html")}


def publish_report(built: Path, out: Path) -> None:
    """Copy a built report to the run's out directory (each file atomically), removing tables and plots of an
    earlier report that this one does not have."""
    for name in REPORT_FILES:
        with atomic_file(out / name) as tmp:
            shutil.copyfile(built / name, tmp)
    for folder in REPORT_FOLDERS:
        (out / folder).mkdir(parents=True, exist_ok=True)
        wanted = {path.name for path in (built / folder).iterdir()}
        for stale in (out / folder).iterdir():
            if stale.name not in wanted:
                stale.unlink()
        for name in sorted(wanted):
            with atomic_file(out / folder / name) as tmp:
                shutil.copyfile(built / folder / name, tmp)


EXECUTORS: dict[type[Step], Callable[[Any, StepContext], dict[str, Any]]] = {
    LayersStep: run_layers, TrainStep: run_train, EvalStep: run_eval, JudgeStep: run_judge, ReportStep: run_report,
}


@contextlib.contextmanager
def judge_server(plan: Plan, needed: bool) -> Iterator[str | None]:
    """The judge's URL while the block runs: the configured server, or a local one started for it."""
    judge = plan.config.judge
    if not needed or judge is None:
        yield None
        return
    if judge.url:
        yield judge.url
        return
    from yapo_bench.judge.server import local_server

    with local_server(judge.gguf) as url:
        yield url
