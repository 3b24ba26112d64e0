"""`python -m yapo_bench.families [ROOT]`: rewrite the generated task YAML under tasks/ (a test checks it is
current)."""

from __future__ import annotations

import sys
from pathlib import Path

from yapo_bench.families import TASK_FOLDERS
from yapo_bench.lm_eval_plugin import tasks_dir


def write_all(root: Path) -> None:
    for folder, generate in TASK_FOLDERS.items():
        directory = root / folder
        directory.mkdir(parents=True, exist_ok=True)
        files = generate()
        for stale in {p.name for p in directory.glob("*.yaml")} - set(files):
            (directory / stale).unlink()
        for name, text in files.items():
            (directory / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else tasks_dir())
