"""The plan of a run: typed steps in order (find the layer, train, evaluate, judge, report), each with the inputs that
determine its output and a fingerprint of those inputs and of the fingerprints of the steps it reads. A step whose
fingerprint has an output is done; an edit to the config changes the fingerprints of exactly the steps whose inputs
it changes and of those downstream. Everything here is decided without loading a model: identities of models, SAEs
and data are read from their files (`source_identity`, `culture_data_identity`, ...)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from yapo_bench.data.culture_pairs import CulturePairSpec
from yapo_bench.data.culture_sources import culture_data_identity
from yapo_bench.data.spec import bipo_identity
from yapo_bench.digests import json_digest, stat_digest, tree_digest
from yapo_bench.environment import versions
from yapo_bench.families import TaskId, get_family, registered
from yapo_bench.judge.config import JudgeConfig
from yapo_bench.judge.rubrics import PROMPTS_DIR
from yapo_bench.methods import TrainingBudget, get_method, run_method, sparse_method, spec_config
from yapo_bench.methods.prompt import render_instruction
from yapo_bench.models import require_layer, source_identity
from yapo_bench.pipeline.config import RunConfig
from yapo_bench.resources import resource_dir
from yapo_bench.sae import planned_sae_source, source_layer
from yapo_bench.sae import source_identity as sae_source_identity
from yapo_bench.steering import VECTOR_FORMAT

# requests per forward pass of an evaluation on transformers, and `auto` there on the CPU. lm-eval's own auto (HFLM
# `batch_size="auto"`) finds the largest batch that does not raise out-of-memory, starting at 64 and running 5
# forward passes of that many sequences of the model's full length (8192 tokens for SmolLM2) before generating: on a
# GPU a CUDA OOM halves it, on the CPU nothing raises (the kernel kills the process instead), so there it would run
# 5 passes of 64 x 8192 tokens (~100 GB of fp32 logits for SmolLM2) to answer 64 whatever the memory. So on the CPU
# auto is a fixed 32: transformers generates 3.7x faster at 32 than at 4 and 5.8x at 64 (FINDINGS 2026-12-03,
# SmolLM2 fp32), and 32 keeps a batch's fp32 logits of 200-token prompts at 1.3 GB for SmolLM2 and 6.7 GB for a
# 262k-token vocabulary (Gemma). That is for generating: an evaluation that only scores (log-likelihoods) runs at
# LEGACY_BATCH_SIZE on the CPU, where scoring is compute-bound and a larger batch only adds padding (P8: 3.61
# requests/s at 4, 3.02 at 32, 2.70 at 64).
CPU_AUTO_BATCH_SIZE = 32
LEGACY_BATCH_SIZE = 4  # every evaluation ran at 4 before `batch_size` was a setting: its fingerprints hold at 4
AUTO = "found by step layers"
# how a judge samples (JudgeConfig's defaults): recorded in a judge step's inputs; where it is served is not
JUDGE_SAMPLING = ("temperature", "seed", "max_tokens", "json_schema", "logprobs", "top_logprobs")


@dataclass(frozen=True, order=True)
class Unit:
    """What a run trains vectors for: a culture context or a behaviour."""

    kind: str  # culture | behaviour
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def key(self) -> str:
        return f"{self.kind}-{self.name}"


@dataclass(frozen=True, kw_only=True)
class Step:
    """One unit of work. `inputs` is everything that determines its output besides the steps it reads (`needs`);
    `fingerprint` hashes both, so that an output is found again exactly when nothing it depends on changed."""

    KIND: ClassVar[str] = ""
    key: str
    inputs: dict[str, Any] = field(compare=False)
    needs: tuple[str, ...] = ()
    fingerprint: str = ""

    @property
    def kind(self) -> str:
        return self.KIND

    @property
    def short(self) -> str:
        """The fingerprint as output names carry it."""
        return self.fingerprint[:12]

    def record(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.KIND, "fingerprint": self.fingerprint, "needs": list(self.needs),
                "inputs": self.inputs}


@dataclass(frozen=True, kw_only=True)
class LayersStep(Step):
    KIND: ClassVar[str] = "layers"


@dataclass(frozen=True, kw_only=True)
class TrainStep(Step):
    KIND: ClassVar[str] = "train"
    method: str
    unit: Unit
    sae_source: str | None = None  # the SAE it loads (its layer, or its latent space); with layer auto a template
    seed: int | None = None  # one of several `training.seeds`; None: the run's one seed (or a mean difference)

    def sae_for(self, layer: int) -> str | None:
        return self.sae_source.format(layer=layer) if self.sae_source else None


@dataclass(frozen=True, kw_only=True)
class EvalStep(Step):
    KIND: ClassVar[str] = "eval"
    method: str
    unit: Unit | None  # None: the base model, on every unit's tasks
    multiplier: float
    tasks: tuple[TaskId, ...]
    seed: int | None = None  # the training seed of its vector, where the run has several


@dataclass(frozen=True, kw_only=True)
class JudgeStep(Step):
    KIND: ClassVar[str] = "judge"
    method: str
    unit: Unit | None
    multiplier: float


@dataclass(frozen=True, kw_only=True)
class ReportStep(Step):
    KIND: ClassVar[str] = "report"


@dataclass
class Plan:
    config: RunConfig
    steps: list[Step]

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __getitem__(self, key: str) -> Step:
        return self._by_key[key]

    def __post_init__(self) -> None:
        self._by_key = {step.key: step for step in self.steps}

    def of_kind(self, kind: type[Step]) -> list[Any]:
        return [step for step in self.steps if isinstance(step, kind)]

    def train_step(self, method: str, unit: Unit, seed: int | None = None) -> TrainStep:
        return self[train_key(method, unit, seed)]


def seed_suffix(seed: int | None) -> str:
    """What a step of one of several seeds adds to its key; nothing with one seed, so that a run's keys (and
    outputs) stay those of a run made before seeds existed."""
    return "" if seed is None else f"-seed{seed}"


def train_key(method: str, unit: Unit, seed: int | None = None) -> str:
    return f"train-{method}-{unit.key}{seed_suffix(seed)}"


def method_seeds(config: RunConfig, method: str) -> list[int | None]:
    """The seeds a method's vectors are trained with, as step keys name them: each of several `training.seeds` for
    a learned method; [None] (one step) with one seed, and for a mean difference, which is deterministic."""
    seeds = config.training.all_seeds
    return list(seeds) if len(seeds) > 1 and get_method(method).LEARNED else [None]


def run_units(config: RunConfig) -> list[Unit]:
    """What a run trains vectors for, in order: its countries, then its behaviours."""
    return [Unit("culture", c) for c in config.countries] + [Unit("behaviour", b) for b in config.behaviours]


def unit_tasks(config: RunConfig, unit: Unit) -> list[TaskId]:
    """A unit's tasks: a country's culture families (the config's `families`), a behaviour's default families (a
    judged one only with a judge); the first unit also carries the config's MMLU tasks."""
    if unit.kind == "culture":
        families = [next(f for f in registered("country") if f.option == option) for option in config.families]
        tasks = [family.task(unit.name, variant) for family in families for variant in family.variants]
    else:
        tasks = [family.task(unit.name) for family in registered("behaviour")
                 if family.run_default and (config.judge or not family.judged)]
    if unit == run_units(config)[0]:
        tasks += [TaskId.parse(name) for name in config.mmlu]
    return tasks


def eval_batch_size(config: RunConfig, generates: bool) -> int | str:
    """The batch an evaluation runs with: the config's integer; for `auto`, on vLLM lm-eval's "auto" (every request
    at once: the engine's continuous batching fills the device itself), on transformers lm-eval's own auto on a GPU,
    and on the CPU CPU_AUTO_BATCH_SIZE for an evaluation that `generates`, else LEGACY_BATCH_SIZE (why: above)."""
    if config.batch_size != "auto":
        return int(config.batch_size)
    if config.engine == "vllm" or config.placement().device != "cpu":
        return "auto"
    return CPU_AUTO_BATCH_SIZE if generates else LEGACY_BATCH_SIZE


def engine_identity(config: RunConfig) -> dict[str, Any] | None:
    """The engine of a run's evaluations as their fingerprints name it: None for transformers (absent: evaluations
    made before engines were a choice ran on it), else its name and installed version."""
    if config.engine == "hf":
        return None
    from yapo_bench.engines.vllm_engine import engine_version

    return {"name": config.engine, "version": engine_version()}


class _Inputs:
    """The identities a run's steps depend on, each read once (files are hashed, nothing is loaded)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.common = {"model": source_identity(config.model), "placement": config.placement().record()}
        sparse = [m for m in config.methods if sparse_method(m)]
        self.sae_source = None
        if config.layer != "auto" and (sparse or config.sae):
            self.sae_source = planned_sae_source(config.model, config.sae)
            if self.sae_source is None:
                raise ValueError(f"sae: required for {', '.join(sparse)} with model {config.model!r}, which has no "
                                 "shipped SAE")
        self._culture: dict[str, Any] | None = None

    def culture(self) -> dict[str, Any]:
        if self._culture is None:
            self._culture = culture_data_identity(self.config.culture_data, self.config.data_dir)
        return self._culture

    def sae_source_of(self, method: str) -> str | None:
        """The SAE a method's training loads: its latent space (sparse), or the layer it reads (a named SAE)."""
        if not (get_method(method).SPARSE or self.config.sae):
            return None
        return self.config.sae if self.config.layer == "auto" else self.sae_source

    def sae(self) -> dict[str, Any] | None:
        if self.config.layer == "auto" and self.config.sae:
            return {"template": self.config.sae}  # the SAE of the layer found: named by the `layers` step's output
        return sae_source_identity(self.sae_source) if self.sae_source else None

    def layer(self, sparse: bool) -> int | str:
        """The layer a method steers at: the config's, else its SAE's (where it reads one), else the preset's."""
        config = self.config
        if config.layer == "auto":
            return AUTO
        if config.layer is not None:
            return config.layer
        own = source_layer(self.sae_source) if self.sae_source and (sparse or config.sae) else None
        return require_layer(config.model, own)

    def layers(self) -> dict[str, Any]:
        return {**self.common, "countries": list(self.config.countries), "culture_data": self.culture()}

    def train(self, method: str, unit: Unit, seed: int | None = None) -> dict[str, Any]:
        module = get_method(method)
        layer = self.layer(module.SPARSE)
        budget = self.config.training if seed is None else self.config.training.for_seed(seed)
        settings = spec_config(module.spec(layer if isinstance(layer, int) else 0, budget))
        settings.pop("layer", None)
        names = {f.name for f in dataclasses.fields(TrainingBudget)}
        inputs = {**self.common, "method": method, "format": VECTOR_FORMAT, "layer": layer,
                  "training": {k: v for k, v in settings.items() if k in names},
                  "settings": {k: v for k, v in settings.items() if k not in names},
                  "sae": self.sae() if module.SPARSE else None}
        if unit.kind == "culture":
            pairs = CulturePairSpec(country=unit.name, split="train", rejected=self.config.rejected,
                                    model=self.config.model)
            inputs["data"] = {"culture_data": self.culture(), "pairs": dataclasses.asdict(pairs)}
            if self.config.rejected == "model":  # the model's own answers are sampled: their length matters
                inputs["data"]["max_gen_toks"] = self.config.max_gen_toks
        else:
            inputs["data"] = {"bipo": {"behaviour": unit.name,
                                       **bipo_identity(unit.name, ("train.csv",), self.config.data_dir)}}
        return inputs

    def evaluation(self, tasks: list[TaskId], multiplier: float | None, limit: int | None,
                   prompt: Unit | None = None) -> dict[str, Any]:
        """An evaluation's inputs: with `multiplier`, a vector's steering; with `prompt`, the instruction stated for
        that unit (its rendered text, so that an edited template reruns exactly the prompted evaluations)."""
        config = self.config
        families = {get_family(task.family) for task in tasks}
        generates = any(f.output == "generate" for f in families)
        inputs: dict[str, Any] = {**self.common, "tasks": [task.name for task in tasks], "limit": limit,
                                  "batch_size": eval_batch_size(config, generates)}
        if (engine := engine_identity(config)) is not None:  # absent on transformers: its fingerprints hold
            inputs["engine"] = engine
        data: dict[str, Any] = {}
        if any(f.unit_kind == "country" for f in families):
            data["culture_data"] = self.culture()
        behaviours = sorted({task.unit for task in tasks if get_family(task.family).unit_kind == "behaviour"})
        if behaviours:
            data["bipo"] = {b: bipo_identity(b, ("test_infer.csv", "test.csv"), config.data_dir) for b in behaviours}
        if any(f.unit_kind == "subject" for f in families):
            from yapo_bench.lm_eval_plugin.mmlu_tasks import mmlu_identity

            data["mmlu"] = mmlu_identity(config.mmlu_data, config.data_dir)
            inputs["mmlu_limit"] = config.mmlu_limit
            if config.num_fewshot:  # absent when 0: evaluations made before the setting existed were 0-shot
                inputs["num_fewshot"] = config.num_fewshot
        if generates:
            inputs["max_gen_toks"] = config.max_gen_toks
        inputs["data"] = data
        if multiplier is not None:
            inputs["steering"] = {"multiplier": multiplier, "direction": 1, "positions": "all"}
        if prompt is not None:
            inputs["instruction"] = render_instruction(str(prompt), 1).record()
        if config.chat_template:  # absent when off: evaluations made before the setting existed rendered plain text
            inputs["chat_template"] = True
        return inputs

    def judge(self) -> dict[str, Any]:
        spec = self.config.judge
        defaults = {f.name: f.default for f in dataclasses.fields(JudgeConfig) if f.name in JUDGE_SAMPLING}
        judge = {"model": spec.model_name, "local": spec.local, **defaults}
        if spec.local and spec.gguf:
            judge["gguf"] = stat_digest([Path(spec.gguf)])
        return {"judge": judge, "rubrics": tree_digest(resource_dir(PROMPTS_DIR), "*.jinja")}


def make_plan(config: RunConfig) -> Plan:
    """The steps of a run, in order: layers (with `layer: auto`), train, evaluate (base once, then every vector ×
    λ), judge (evaluations with judged tasks), report; each with its fingerprint."""
    inputs = _Inputs(config)
    units = run_units(config)
    # the vector methods to train, once each (prompt+yapo steers with yapo's vector)
    vectors = list(dict.fromkeys(vector.NAME for _, vector in map(run_method, config.methods) if vector))
    steps: list[Step] = []
    if config.layer == "auto":
        steps.append(LayersStep(key="layers", inputs=inputs.layers()))
    for method in vectors:
        source = inputs.sae_source_of(method)
        for unit in units:
            for seed in method_seeds(config, method):
                steps.append(TrainStep(key=train_key(method, unit, seed), method=method, unit=unit, sae_source=source,
                                       seed=seed, inputs=inputs.train(method, unit, seed),
                                       needs=("layers",) if config.layer == "auto" else ()))
    evals: list[EvalStep] = []
    if "base" in config.methods:
        tasks = tuple(task for unit in units for task in unit_tasks(config, unit))
        evals.append(EvalStep(key="eval-base", method="base", unit=None, multiplier=0.0, tasks=tasks,
                              inputs=inputs.evaluation(list(tasks), None, config.limit)))
    for method in [m for m in config.methods if m != "base"]:
        prompted, vector = run_method(method)
        for unit in units:
            tasks = tuple(unit_tasks(config, unit))
            instructed = unit if prompted else None
            if vector is None:  # the prompt alone: one evaluation per unit, its instruction
                evals.append(EvalStep(key=f"eval-{method}-{unit.key}", method=method, unit=unit, multiplier=0.0,
                                      tasks=tasks, inputs=inputs.evaluation(list(tasks), None, config.limit, unit)))
                continue
            for seed in method_seeds(config, vector.NAME):
                for multiplier in config.multipliers_for(method):
                    evals.append(EvalStep(key=f"eval-{method}-{unit.key}{seed_suffix(seed)}-x{multiplier:g}",
                                          method=method, unit=unit, multiplier=multiplier, tasks=tasks, seed=seed,
                                          needs=(train_key(vector.NAME, unit, seed),),
                                          inputs=inputs.evaluation(list(tasks), multiplier, config.limit, instructed)))
    steps += evals
    judges = []
    if config.judge:
        for step in evals:
            if any(get_family(task.family).judged for task in step.tasks):
                judges.append(JudgeStep(key=f"judge-{step.key.removeprefix('eval-')}", method=step.method,
                                        unit=step.unit, multiplier=step.multiplier, needs=(step.key,),
                                        inputs=inputs.judge()))
    steps += judges
    # the report is cheap and all code: it is made again by another yapo-bench, where the steps it reads are not
    code = {name: versions()[name] for name in ("yapo-bench", "git_commit")}
    steps.append(ReportStep(key="report", inputs={"title": f"{config.name}: {config.model}", "code": code},
                            needs=tuple(step.key for step in [*evals, *judges])))
    return Plan(config, _fingerprinted(steps))


def evaluation_beside(plan: Plan, key: str, method: str, unit: Unit | None, multiplier: float, tasks: list[TaskId],
                      limit: int | None, seed: int | None = None) -> EvalStep:
    """An evaluation an analysis adds beside a run (another λ, other tasks, another limit), with inputs and a
    fingerprint made as the plan's own evaluations' are; a steered one reads the plan's training step of its
    vector (of `seed`, one of several `training.seeds`)."""
    prompted, vector = run_method(method)
    needs = (train_key(vector.NAME, unit, seed),) if vector else ()
    step = EvalStep(key=key, method=method, unit=unit, multiplier=multiplier if needs else 0.0, tasks=tuple(tasks),
                    needs=needs, seed=seed if needs else None,
                    inputs=_Inputs(plan.config).evaluation(tasks, multiplier if needs else None, limit,
                                                           unit if prompted else None))
    return _fingerprinted([step], {k: plan[k].fingerprint for k in needs})[0]


def _fingerprinted(steps: list[Step], upstream: dict[str, str] | None = None) -> list[Step]:
    found = dict(upstream or {})
    done = []
    for step in steps:
        fingerprint = json_digest({"kind": step.KIND, "inputs": step.inputs,
                                   "needs": {key: found[key] for key in step.needs}})
        found[step.key] = fingerprint
        done.append(dataclasses.replace(step, fingerprint=fingerprint))
    return done


def changed_inputs(before: Any, after: Any, prefix: str = "") -> list[str]:
    """What differs between two steps' inputs, as `field old -> new` (dotted paths; digests cut to 12 characters)."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [change for key in sorted(before.keys() | after.keys(), key=str)
                for change in changed_inputs(before.get(key), after.get(key), f"{prefix}{key}.")]
    if before == after:
        return []

    def short(value: Any) -> str:
        text = value if isinstance(value, str) else repr(value)
        return text[:12] + "…" if isinstance(value, str) and len(value) == 64 else text

    return [f"{prefix.rstrip('.')} {short(before)} -> {short(after)}"]
