"""Read lm-eval `--log_samples` output: samples_<task>_<timestamp>.jsonl, possibly under a model-name folder."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yapo_bench.judge.rubrics import Rubric, rubric_for_task

# lm-eval names them samples_<task>_<date>T<time>.jsonl (time with '-' separators and microseconds).
_SAMPLES = re.compile(r"^samples_(?P<task>.+)_(?P<stamp>\d{4}-\d{2}-\d{2}T[0-9.\-]+)\.jsonl$")


@dataclass(frozen=True)
class Sample:
    task: str
    doc_id: int
    doc: dict[str, Any]
    response: str
    source: Path


def sample_files(run_dir: str | Path) -> list[tuple[str, Path]]:
    """(task, file) for every samples file under run_dir; of several runs of one task in one folder, the latest."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ValueError(f"run_dir: {root} is not a directory")
    latest: dict[tuple[Path, str], tuple[str, Path]] = {}
    for path in sorted(root.rglob("samples_*.jsonl")):
        match = _SAMPLES.match(path.name)
        if not match:
            continue
        key = (path.parent, match["task"])
        if key not in latest or match["stamp"] > latest[key][0]:
            latest[key] = (match["stamp"], path)
    if not latest:
        raise ValueError(f"run_dir: {root} holds no lm-eval samples_<task>_<timestamp>.jsonl files "
                         "(run lm_eval with --log_samples --output_path DIR)")
    return sorted(((task, path) for (_, task), (_, path) in latest.items()), key=lambda tp: (str(tp[1].parent), tp[0]))


def read_samples(path: str | Path, task: str) -> list[Sample]:
    samples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                samples.append(Sample(task, int(row["doc_id"]), row["doc"], _response(row), Path(path)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}:{number}: not an lm-eval sample line ({type(err).__name__}: {err})") \
                    from None
    return samples


def judge_fields(sample: Sample, rubric: Rubric) -> dict[str, Any]:
    """The rubric's template fields from an lm-eval doc of our tasks (culture_open_*: prompt, reference_answer;
    bipo_*_open: prompt, matching, not_matching)."""
    doc = sample.doc
    fields = {"question": doc.get("prompt", doc.get("question")), "response": sample.response}
    if rubric.name == "cultural":
        fields["expected_answer"] = doc.get("reference_answer", doc.get("expected_answer"))
    elif "matching" in rubric.fields:
        fields["matching"] = doc.get("matching")
        fields["not_matching"] = doc.get("not_matching")
    missing = [f for f in rubric.fields if fields.get(f) is None]
    if missing:
        raise ValueError(f"{sample.source}: doc {sample.doc_id} of {sample.task} lacks {', '.join(missing)} "
                         f"for rubric {rubric.name}")
    return fields


def judgeable(run_dir: str | Path) -> list[tuple[Sample, Rubric]]:
    """Every sample of an open-ended task we have a rubric for (other tasks are skipped: nothing to judge)."""
    pairs = []
    for task, path in sample_files(run_dir):
        rubric = rubric_for_task(task)
        if rubric is not None:
            pairs.extend((sample, rubric) for sample in read_samples(path, task))
    return pairs


def _response(row: dict[str, Any]) -> str:
    """The generation: filtered_resps[0] (after lm-eval's filters), else resps[0][0]."""
    for value in (row.get("filtered_resps"), row.get("resps")):
        while isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str):
            return value
    raise ValueError("no string in filtered_resps or resps")
