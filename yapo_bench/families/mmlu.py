"""The MMLU families, per subject and as a 57-subject group: `mmlu_local` (letters in the source's order, comparable
with lm-eval's `mmlu` and the paper), `mmlu_rotated` (letters averaged over option rotations), `mmlu_cloze` (the
options' text), all from local files (lm_eval_plugin.mmlu_tasks), and lm-eval's own hub `mmlu`."""

from __future__ import annotations

from dataclasses import dataclass

from yapo_bench.families.base import Family, TaskId, TaskWork, WorkSizes
from yapo_bench.lm_eval_plugin import mmlu_tasks
from yapo_bench.lm_eval_plugin.mcq import group_yaml, task_yaml

ITEMS, PROMPT_TOKENS = 14_042, 200  # the test split; a 0-shot prompt


@dataclass(frozen=True)
class MMLUFamily(Family):
    scoring: str = "letter-original"
    rotations: int = 1  # docs per question
    passes: int = 1  # forward passes per doc: a letter is one token, and lm-eval scores all of a prompt's one-token
    # continuations in one pass; option texts take one each

    def work(self, task: TaskId, sizes: WorkSizes) -> TaskWork:
        subjects = len(mmlu_tasks.SUBJECTS) if not task.unit else 1
        per_subject = ITEMS // len(mmlu_tasks.SUBJECTS)
        questions = min(sizes.mmlu_limit or sizes.limit or per_subject, per_subject)
        items = subjects * questions * self.rotations
        prompt = PROMPT_TOKENS * (1 + sizes.num_fewshot)  # each example is about a question's length
        return TaskWork(items, scored_tokens=items * self.passes * (prompt + 1), calls=items * self.passes,
                        prompt_tokens=prompt)


def _mmlu(name: str, scoring: str, description: str, **declared: int | bool) -> MMLUFamily:
    return MMLUFamily(name=name, prefix=name, unit_kind="subject", units=tuple(mmlu_tasks.SUBJECTS), group=True,
                      scoring=scoring, calibrated_metric="p_gold", description=description, **declared)


HUB = _mmlu("mmlu", "letter-original", "lm-eval's own MMLU (from the hub)", builtin=True)
LOCAL = _mmlu("mmlu_local", "letter-original", "letters in the source's order, from local files")
ROTATED = _mmlu("mmlu_rotated", "letter", "letters averaged over option rotations", rotations=4)
CLOZE = _mmlu("mmlu_cloze", "cloze", "the options' text", passes=4)
FAMILIES = (HUB, LOCAL, ROTATED, CLOZE)


def task_yamls() -> dict[str, str]:
    """File name → YAML text of every local MMLU task and group (tasks/mmlu/)."""
    files = mmlu_tasks.template_files()
    for family in (LOCAL, ROTATED, CLOZE):
        members = [family.task(subject).name for subject in mmlu_tasks.SUBJECTS]
        for subject, name in zip(mmlu_tasks.SUBJECTS, members):
            files[f"{name}.yaml"] = task_yaml(name, mmlu_tasks.TEMPLATE,
                                              {"subject": subject, "scoring": family.scoring})
        files[f"{family.name}.group.yaml"] = group_yaml(family.name, members)
    return files
