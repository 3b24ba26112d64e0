"""The BiPO behaviour families: `bipo_<behaviour>_ab` (the A/B items scored by their options' text),
`bipo_<behaviour>_ab_letter` (letters, both orders) and `bipo_<behaviour>_open` (greedy answers to the open
prompts, scored by the judge with the behaviour's rubric; `bipo_jailbreak_open` with the refusal rubric).
Data and templates: lm_eval_plugin.behaviour_tasks."""

from __future__ import annotations

from dataclasses import dataclass

from yapo_bench.data.spec import BIPO_BEHAVIOURS
from yapo_bench.families.base import JUDGE_SCORE, Family, TaskId, TaskWork, WorkSizes
from yapo_bench.lm_eval_plugin import behaviour_tasks
from yapo_bench.lm_eval_plugin.mcq import group_yaml, task_yaml

AB_ITEMS, OPEN_ITEMS, PROMPT_TOKENS = 200, 50, 150  # BiPO's held-out sets, as the cost plan assumes them
JAILBREAK = "jailbreak"  # prompts only: an open family unit with no A/B items and no training pairs


@dataclass(frozen=True)
class BehaviourFamily(Family):
    """A BiPO behaviour family; a behaviour's `-` is `_` in task names."""

    scoring: str = "cloze"

    def unit_token(self, unit: str) -> str:
        return unit.replace("-", "_")

    def unit_of(self, token: str) -> str:
        return token.replace("_", "-")

    def rubric_name(self, task: TaskId) -> str | None:
        if not self.judged:
            return None
        return "refusal" if task.unit == JAILBREAK else task.unit

    def work(self, task: TaskId, sizes: WorkSizes) -> TaskWork:
        if self.output == "generate":
            items = min(sizes.limit or OPEN_ITEMS, OPEN_ITEMS)
            return TaskWork(items, decoded_tokens=items * sizes.max_gen_toks, prompt_tokens=sizes.culture.prompt_tokens)
        items = min(sizes.limit or AB_ITEMS, AB_ITEMS)
        return TaskWork(items, scored_tokens=items * 2 * PROMPT_TOKENS, calls=items,
                        prompt_tokens=sizes.culture.prompt_tokens)


AB = BehaviourFamily(name="bipo_ab", prefix="bipo", suffix="_ab", unit_kind="behaviour", units=BIPO_BEHAVIOURS,
                     metric="acc", calibrated_metric="p_gold", run_default=True,
                     description="A/B: accuracy and P(matching answer), %, both option orders")
AB_LETTER = BehaviourFamily(name="bipo_ab_letter", prefix="bipo", suffix="_ab_letter", unit_kind="behaviour",
                            units=BIPO_BEHAVIOURS, scoring="letter", metric="acc", calibrated_metric="p_gold",
                            description="A/B by letters, both orders")
OPEN = BehaviourFamily(name="bipo_open", prefix="bipo", suffix="_open", unit_kind="behaviour",
                       units=(*BIPO_BEHAVIOURS, JAILBREAK), output="generate", metric=JUDGE_SCORE, run_default=True,
                       description="open prompts: the judge's mean 1–4 with the behaviour's rubric")
FAMILIES = (AB, AB_LETTER, OPEN)


def task_yamls() -> dict[str, str]:
    """File name → YAML text of every behaviour task and the `bipo_ab` group (tasks/bipo/)."""
    files = behaviour_tasks.template_files()
    ab_members = []
    for behaviour in BIPO_BEHAVIOURS:
        for family in (AB, AB_LETTER):
            name = family.task(behaviour).name
            files[f"{name}.yaml"] = task_yaml(name, behaviour_tasks.AB_TEMPLATE,
                                              {"behaviour": behaviour, "scoring": family.scoring})
        ab_members.append(AB.task(behaviour).name)
    for behaviour in OPEN.units:
        name = OPEN.task(behaviour).name
        files[f"{name}.yaml"] = task_yaml(name, behaviour_tasks.OPEN_TEMPLATE, {"behaviour": behaviour})
    files["bipo_ab.group.yaml"] = group_yaml("bipo_ab", ab_members)
    return files
