"""Every task family's YAML is generated from Python (one template per family, instances listed here);
`python -m yapo_bench.lm_eval_plugin.tasks` rewrites tasks/ and a test checks it is current."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from yapo_bench.lm_eval_plugin import behaviour_tasks, culture_tasks, mmlu_tasks, tasks_dir

FAMILIES: dict[str, Callable[[], dict[str, str]]] = {
    "culture": culture_tasks.task_yamls, "bipo": behaviour_tasks.task_yamls, "mmlu": mmlu_tasks.task_yamls,
}


def write_all(root: Path | None = None) -> None:
    root = root or tasks_dir()
    for family, generate in FAMILIES.items():
        directory = root / family
        directory.mkdir(parents=True, exist_ok=True)
        files = generate()
        for stale in {p.name for p in directory.glob("*.yaml")} - set(files):
            (directory / stale).unlink()
        for name, text in files.items():
            (directory / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write_all()
