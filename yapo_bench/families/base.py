"""Task identity: a typed id (family, unit, variant), named and parsed here only, and the `Family` every task family
declares itself with: how its task names are built, how lm-eval gets the task, which per-item measure and judge
rubric score it, and what an item costs. The registry that the run, the report, the judge and the cost plan loop over
is filled by `yapo_bench.families`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JUDGE_SCORE = "judge_score"  # the measure of a judged family: the judge's verdict per item
_REGISTRY: list[Family] = []


@dataclass(frozen=True, order=True)
class TaskId:
    """One lm-eval task of a registered family: `unit` is what the family is per (a country, a behaviour, an MMLU
    subject; "" for the family's whole group where it has one), `variant` its further split (a culture task's
    localization)."""

    family: str
    unit: str = ""
    variant: str = ""

    @property
    def name(self) -> str:
        """The lm-eval task name: the one place names are built."""
        return get_family(self.family).name_of(self)

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def parse(name: str) -> TaskId | None:
        """The id of an lm-eval task name, None for a name no registered family makes (another lm-eval task, a
        group). Where two families' patterns both fit, the longer prefix names the family."""
        matches = [task for family in _REGISTRY if (task := family.match(name)) is not None]
        if not matches:
            return None
        return max(matches, key=lambda task: len(get_family(task.family).prefix))


@dataclass(frozen=True)
class TaskSettings:
    """What a run passes every task builder: where the data lives and how much of it to read."""

    culture_data: str = "culture-mini"
    data_dir: str | None = None


@dataclass(frozen=True)
class CultureSizes:
    """Per culture context of a run's data: train pairs and test items per localization, token lengths; `basis`
    says where they came from."""

    train_pairs: int
    test_items: int  # per localization (a `both` task reads twice as many)
    prompt_tokens: int
    option_tokens: int
    options: int
    open_tokens: int
    basis: str


@dataclass(frozen=True)
class WorkSizes:
    """What the cost of a task depends on besides the task: the run's limits and its culture data's sizes."""

    culture: CultureSizes
    limit: int | None = None
    mmlu_limit: int | None = None
    max_gen_toks: int = 64
    num_fewshot: int = 0


@dataclass(frozen=True)
class TaskWork:
    """The work of evaluating one task: items, tokens scored in batched forward passes, model calls, tokens decoded
    one at a time, and the prompt length that sizes the logits."""

    items: float
    scored_tokens: float = 0.0
    calls: float = 0.0
    decoded_tokens: float = 0.0
    prompt_tokens: int = 0


@dataclass(frozen=True)
class Family:
    """A task family. Task names are `<prefix>_<unit>[_<variant>]<suffix>`, or `<prefix>` alone for the family's
    group (`group=True`). A subclass overrides what differs: `lm_eval_task` (default: the name of a task our YAML
    registers), `rubric_name`, `work`, `unit_token`/`unit_of` (how a unit is spelled in a name)."""

    name: str  # the registry key
    prefix: str
    unit_kind: str  # what a unit is: country, behaviour, subject
    description: str
    variants: tuple[str, ...] = ()
    suffix: str = ""
    units: tuple[str, ...] | None = None  # None: any unit (a user's data may bring its own countries)
    group: bool = False
    output: str = "loglikelihood"  # loglikelihood | generate
    metric: str = "acc"  # the per-item measure its tables lead with: a logged sample field, or JUDGE_SCORE
    calibrated_metric: str | None = None  # a probability on the gold option, shown beside accuracy
    rubric: str | None = None  # the judge rubric of a judged family
    option: str | None = None  # its name in a run config's `families` (culture families a run can select)
    run_default: bool = False  # a run evaluates it for every unit of its kind unless told otherwise (a judged
    # family only when the run has a judge)
    builtin: bool = False  # one of lm-eval's own tasks: found in lm-eval's index of its tasks (slow to build)

    @property
    def judged(self) -> bool:
        """Its items are scored by a judge's verdicts, not by lm-eval."""
        return self.metric == JUDGE_SCORE

    def task(self, unit: str = "", variant: str = "") -> TaskId:
        """A checked id of this family: a unit it defines (any, where `units` is None), a variant it has."""
        if self.variants and variant not in self.variants:
            raise ValueError(f"{self.name}: variant {variant!r}; expected one of {', '.join(self.variants)}")
        if not unit and not self.group:
            raise ValueError(f"{self.name}: a unit ({self.unit_kind}) is required")
        if unit and self.units is not None and unit not in self.units:
            raise ValueError(f"{self.name}: {self.unit_kind} {unit!r}; expected one of {', '.join(self.units)}")
        return TaskId(self.name, unit, variant if unit else "")

    def name_of(self, task: TaskId) -> str:
        if not task.unit:
            return self.prefix
        variant = f"_{task.variant}" if task.variant else ""
        return f"{self.prefix}_{self.unit_token(task.unit)}{variant}{self.suffix}"

    def match(self, name: str) -> TaskId | None:
        """This family's id of `name`, None when the name is not one of its tasks."""
        if name == self.prefix:
            return TaskId(self.name) if self.group else None
        if not name.startswith(self.prefix + "_") or not name.endswith(self.suffix):
            return None
        middle = name[len(self.prefix) + 1: len(name) - len(self.suffix)]
        variant = ""
        if self.variants:
            variant = next((v for v in self.variants if middle.endswith("_" + v)), "")
            if not variant:
                return None
            middle = middle[: -len(variant) - 1]
        unit = self.unit_of(middle)
        if not unit or (self.units is not None and unit not in self.units):
            return None
        return TaskId(self.name, unit, variant)

    def unit_token(self, unit: str) -> str:
        return unit

    def unit_of(self, token: str) -> str:
        return token

    def rubric_name(self, task: TaskId) -> str | None:
        return self.rubric

    def lm_eval_task(self, task: TaskId, settings: TaskSettings) -> str | dict[str, Any]:
        return task.name

    def work(self, task: TaskId, sizes: WorkSizes) -> TaskWork:
        raise NotImplementedError(f"{self.name}: declares no cost per item")


def register(family: Family) -> None:
    """Add a family; its name must be new and no name of its tasks may parse as another family's."""
    if any(known.name == family.name for known in _REGISTRY):
        raise ValueError(f"family {family.name!r}: already registered")
    _REGISTRY.append(family)


def unregister(name: str) -> None:
    _REGISTRY[:] = [family for family in _REGISTRY if family.name != name]


def get_family(name: str) -> Family:
    for family in _REGISTRY:
        if family.name == name:
            return family
    raise ValueError(f"task family: {name!r}; expected one of {', '.join(f.name for f in _REGISTRY)}")


def registered(unit_kind: str | None = None) -> list[Family]:
    """The registered families (of one unit kind), in registry order."""
    return [family for family in _REGISTRY if unit_kind is None or family.unit_kind == unit_kind]


def family_of(name: str) -> Family | None:
    """The family of an lm-eval task name, None for a task no registered family makes."""
    task = TaskId.parse(name)
    return get_family(task.family) if task else None
