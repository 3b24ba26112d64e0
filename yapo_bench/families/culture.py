"""The culture families: `culture_mcq` (cloze, the default), `culture_letter` (letters over option rotations),
`culture_boxed` (the paper's generative format, `\\boxed{k}` parsed) and `culture_open` (open-ended answers for the
judge), each per country and localization; and the public sets evaluated on all their items, `localization_gap` and
`culturalbench` with their `_letter` twins. Data and templates: lm_eval_plugin.culture_tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yapo_bench.data.culture import CONTEXTS
from yapo_bench.families.base import JUDGE_SCORE, Family, TaskId, TaskSettings, TaskWork, WorkSizes
from yapo_bench.lm_eval_plugin import culture_tasks
from yapo_bench.lm_eval_plugin.culture_tasks import LOCALIZATIONS
from yapo_bench.lm_eval_plugin.mcq import group_yaml, task_yaml


@dataclass(frozen=True)
class CultureFamily(Family):
    """A culture family per country (any country the run's culture data defines) and localization."""

    scoring: str = "cloze"
    template: str = culture_tasks.TEMPLATE

    def lm_eval_task(self, task: TaskId, settings: TaskSettings) -> dict[str, Any]:
        """An inline config on the run's culture data (so any of its countries, not only the YAML's 15)."""
        return culture_tasks.culture_task_config(task.name, self.scoring, self.template, task.unit, task.variant,
                                                 settings.culture_data, settings.data_dir)

    def work(self, task: TaskId, sizes: WorkSizes) -> TaskWork:
        culture = sizes.culture
        items = min(sizes.limit or 10**9, culture.test_items * (2 if task.variant == "both" else 1))
        if self.output == "generate":
            return TaskWork(items, scored_tokens=items * culture.open_tokens, decoded_tokens=items * sizes.max_gen_toks,
                            prompt_tokens=culture.prompt_tokens)
        return TaskWork(items, scored_tokens=items * culture.options * (culture.prompt_tokens + culture.option_tokens),
                        calls=items * culture.options / 4,  # lm-eval batches of 4 requests
                        prompt_tokens=culture.prompt_tokens)


@dataclass(frozen=True)
class PublicCultureFamily(CultureFamily):
    """A public cultural set from the data dir, evaluated on all its items, per context; a unit's `-` is `_` in
    task names."""

    source: str = ""
    group_name: str = ""

    def lm_eval_task(self, task: TaskId, settings: TaskSettings) -> str:
        return task.name

    def unit_token(self, unit: str) -> str:
        return unit.replace("-", "_")

    def unit_of(self, token: str) -> str:
        return token.replace("_", "-")


def _culture(option: str, scoring: str, template: str, description: str, **declared: Any) -> CultureFamily:
    return CultureFamily(name=f"culture_{option}", prefix=f"culture_{option}", unit_kind="country", option=option,
                         variants=LOCALIZATIONS, scoring=scoring, template=template, description=description,
                         **declared)


MCQ = _culture("mcq", "cloze", culture_tasks.TEMPLATE, calibrated_metric="p_gold_norm", run_default=True,
               description="cloze: log-likelihood of each option's text after the question (debiased; acc = argmax)")
LETTER = _culture("letter", "letter", culture_tasks.TEMPLATE, calibrated_metric="p_gold",
                  description="letters, averaged over every cyclic rotation of the options (debiased)")
BOXED = _culture("boxed", "boxed", culture_tasks.BOXED_TEMPLATE, output="generate", metric="exact_match",
                 description="the paper's format: numbered options, the generated \\boxed{k} parsed (position-biased "
                             "on small models)")
OPEN = _culture("open", "open", culture_tasks.OPEN_TEMPLATE, output="generate", metric=JUDGE_SCORE,
                rubric="cultural", run_default=True,
                description="open-ended generations scored 1–10 by the judge named below")

LOCALIZATION_GAP_COUNTRIES = ("turkey", "france", "russia", "bangladesh", "united-states")
# CulturalBench countries that are (or stand in for) the paper's contexts; Lebanon counts as Levantine
CULTURALBENCH_COUNTRIES = ("usa", "uk", "australia", "spain", "mexico", "brazil", "egypt", "ksa", "levantine",
                           "morocco", "india", "nepal")


def _public(prefix: str, source: str, group_name: str, units: tuple[str, ...], variants: tuple[str, ...],
            scoring: str) -> PublicCultureFamily:
    what = "cloze" if scoring == "cloze" else "letters over option rotations"
    return PublicCultureFamily(name=prefix, prefix=prefix, unit_kind="public-culture", units=units, variants=variants,
                               scoring=scoring, source=source, group_name=group_name,
                               calibrated_metric="p_gold_norm" if scoring == "cloze" else "p_gold",
                               description=f"{source}, all items, {what}")


PUBLIC = (
    _public("localization_gap", "localization-gap", "localization-gap", LOCALIZATION_GAP_COUNTRIES, LOCALIZATIONS,
            "cloze"),
    _public("localization_gap_letter", "localization-gap", "", LOCALIZATION_GAP_COUNTRIES, LOCALIZATIONS, "letter"),
    _public("culturalbench", "culturalbench", "culturalbench-contexts", CULTURALBENCH_COUNTRIES, (), "cloze"),
    _public("culturalbench_letter", "culturalbench", "", CULTURALBENCH_COUNTRIES, (), "letter"),
)
FAMILIES = (MCQ, LETTER, BOXED, OPEN, *PUBLIC)


def task_yamls() -> dict[str, str]:
    """File name → YAML text of every culture task and group (tasks/culture/): the four families for the paper's 15
    contexts (inline configs reach any other country), and the public sets. Group names differ from the task
    prefixes, so a glob on a prefix never matches a group together with its members."""
    files = culture_tasks.template_files()
    groups: dict[str, list[str]] = {"culture_mcq": [], "culture_letter": []}
    for language, countries in CONTEXTS.items():
        groups[f"culture_mcq-{language}"] = []
        for country in countries:
            for localization in LOCALIZATIONS:
                for family in (MCQ, LETTER, BOXED, OPEN):
                    name = family.task(country, localization).name
                    files[f"{name}.yaml"] = task_yaml(name, family.template, {
                        "country": country, "localization": localization, "scoring": family.scoring})
                    if family.name in groups:
                        groups[family.name].append(name)
                    if family is MCQ:
                        groups[f"culture_mcq-{language}"].append(name)
    for family in PUBLIC:
        if family.group_name:
            groups[family.group_name] = []
    for cloze, letter in (PUBLIC[:2], PUBLIC[2:]):
        for country in cloze.units:
            for localization in cloze.variants or ("",):
                for family in (cloze, letter):
                    name = family.task(country, localization).name
                    files[f"{name}.yaml"] = task_yaml(name, family.template, {
                        "country": country, "localization": localization or "localized", "scoring": family.scoring,
                        "split": "all", "culture_data": family.source})
                groups[cloze.group_name].append(cloze.task(country, localization).name)
    files.update({f"{group}.group.yaml": group_yaml(group, members) for group, members in groups.items()})
    return files
