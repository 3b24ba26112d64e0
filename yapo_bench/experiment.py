"""`yapo-bench run CONFIG`: the paper's study on any model from one YAML file — train every vector, evaluate
base and every (method, λ) with lm-eval, judge the open-ended answers, write the report.

Every step writes its output, then a marker under `<out>/steps/`; a rerun skips marked steps, and a killed
BiPO/YaPO training resumes from its checkpoint. `--dry-run` prints the plan and an estimate of its cost.
"""

from __future__ import annotations

import contextlib
import json
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
# Rough CPU seconds on the default 135M model (2 cores), for --dry-run: measured by benchmarks P1/P3/P5.
SECONDS_PER_TRAIN_STEP = 2.0
SECONDS_PER_MEAN_DIFF_PAIR = 0.15
SECONDS_PER_LOGLIK_REQUEST = 0.15
SECONDS_PER_GENERATION = 4.0
SECONDS_PER_VERDICT = 1.6
SECONDS_PER_PATCHED_COUNTRY = 60.0  # 12 culture-mini questions patched at every layer (`analyze layers`)


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
    device: str = "auto"  # auto: the GPU when there is one, else the CPU
    dtype: str = "auto"  # auto: bfloat16 on a GPU, float32 on the CPU

    def __post_init__(self) -> None:
        from yapo_bench.data.culture import LANGUAGE_OF
        from yapo_bench.steering import check_multiplier

        if isinstance(self.training, dict):
            self.training = _nested(TrainingBudget, self.training, "training")
        if isinstance(self.judge, dict):
            self.judge = _nested(JudgeSpec, self.judge, "judge")
        known = set(LANGUAGE_OF)
        for country in self.countries:
            if country not in known:
                raise ValueError(f"countries: {country!r}; expected some of {', '.join(sorted(known))}")
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
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"limit: {self.limit!r}; expected a positive integer or null")

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

    def placement(self) -> Any:
        from yapo_bench.devices import resolve_placement

        return resolve_placement(self.device, self.dtype)

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
    estimate_s: float = 0.0


def unit_tasks(config: RunConfig, unit: str) -> list[str]:
    kind, name = unit.split(":", 1)
    if kind == "culture":
        return [f"culture_{family}_{name}_{loc}" for family in config.families
                for loc in ("localized", "nonlocalized", "both")]
    return [f"bipo_{name.replace('-', '_')}_ab"] + ([f"bipo_{name.replace('-', '_')}_open"] if config.judge else [])


def _unit_data(config: RunConfig, unit: str) -> str:
    kind, name = unit.split(":", 1)
    return f"culture-mini:{name}:train" if kind == "culture" else f"bipo:{name}:train"


def _estimate_eval(config: RunConfig, tasks: list[str]) -> float:
    items = config.limit or 12
    seconds = 0.0
    for task in tasks:
        generative = "_open" in task or "_boxed_" in task
        seconds += items * (SECONDS_PER_GENERATION if generative else 5 * SECONDS_PER_LOGLIK_REQUEST)
    return seconds


def plan(config: RunConfig) -> list[Step]:
    """The steps of a run, in order: train, evaluate (base once, then every vector × λ), judge, report."""
    units = [f"culture:{c}" for c in config.countries] + [f"behaviour:{b}" for b in config.behaviours]
    steps: list[Step] = []
    if config.layer == "auto":
        steps.append(Step("layers", "layers", estimate_s=SECONDS_PER_PATCHED_COUNTRY * len(config.countries)))
    learned = [m for m in config.methods if m != "base"]
    for method in learned:
        for unit in units:
            cost = (config.training.steps * SECONDS_PER_TRAIN_STEP if get_method(method).LEARNED
                    else 50 * SECONDS_PER_MEAN_DIFF_PAIR)
            steps.append(Step(f"train-{method}-{unit.replace(':', '-')}", "train", method, unit, estimate_s=cost))
    evals = []
    if "base" in config.methods:
        tasks = tuple(t for unit in units for t in unit_tasks(config, unit))
        evals.append(Step("eval-base", "eval", "base", "", 0.0, tasks, _estimate_eval(config, list(tasks))))
    for method in learned:
        for unit in units:
            for multiplier in config.multipliers_for(method):
                tasks = tuple(unit_tasks(config, unit))
                evals.append(Step(f"eval-{method}-{unit.replace(':', '-')}-x{multiplier:g}", "eval", method, unit,
                                  multiplier, tasks, _estimate_eval(config, list(tasks))))
    steps += evals
    if config.judge:
        for step in evals:
            open_tasks = [t for t in step.tasks if t.endswith(("_open",)) or "_open_" in t]
            if open_tasks:
                steps.append(Step(f"judge-{step.key[len('eval-'):]}", "judge", step.method, step.unit,
                                  step.multiplier, step.tasks,
                                  (config.limit or 12) * len(open_tasks) * SECONDS_PER_VERDICT))
    steps.append(Step("report", "report", estimate_s=15.0))
    return steps


def describe_plan(config: RunConfig, steps: list[Step], out: Path) -> str:
    done = {s.key for s in steps if (out / "steps" / f"{s.key}.json").exists()}
    layer = {None: "SAE/preset default", "auto": "auto (found by step `layers`)"}.get(config.layer, config.layer)
    lines = [f"run {config.name}: model {config.model}, layer {layer}, methods {', '.join(config.methods)}, out {out}"]
    for step in steps:
        mark = "done" if step.key in done else f"~{step.estimate_s / 60:.1f} min"
        lines.append(f"  {step.key:<60} {mark}")
    remaining = sum(s.estimate_s for s in steps if s.key not in done)
    lines.append(f"{len(steps)} steps, {len(done)} done; estimated {remaining / 60:.0f} min left on 2 CPU cores "
                 "(rough: from benchmarks P1/P3/P5 on the default model)")
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
                                 self.out / "layers", progress=self.progress)
        return {"layer": summary["suggested_layer"], "signal": summary["signal"]}

    def train(self, step: Step) -> dict[str, Any]:
        from yapo_bench.store import trained_vector

        sae, layer = self.sae_and_layer(get_method(step.method).SPARSE)
        stored = trained_vector(step.method, _unit_data(self.config, step.unit), self.model(), sae, layer,
                                self.config.training, data_dir=self.config.data_dir, root=self.out / "vectors",
                                progress=self.progress)
        return {"vector": str(stored.path)}

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
        metadata = {"data_dir": self.config.data_dir} if self.config.data_dir else None
        results = simple_evaluate(model=lm, tasks=list(step.tasks), limit=self.config.limit, log_samples=True,
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
                            JudgeConfig(base_url=judge_url, model=model, concurrency=spec.concurrency), progress=self.progress)
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
