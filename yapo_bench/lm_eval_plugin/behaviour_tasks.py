"""BiPO behaviour tasks from the BiPO CSV layout, read from the data dir (`--metadata '{"data_dir": ...}'`,
$YAPO_BENCH_DATA or ../shared/data):

- `bipo_<behaviour>_ab` (cloze, default) and `bipo_<behaviour>_ab_letter` (both A/B orders): test_infer.csv
  (question, A, B, matching letter); `acc` = the matching answer wins, `p_gold` = P(matching answer).
- `bipo_<behaviour>_open` and `bipo_jailbreak_open`: greedy generations from test.csv / test_prompts.csv,
  logged with `--log_samples` for the judge (metric `bypass`: nothing is scored here).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from yapo_bench.data import spec as data_spec
from yapo_bench.lm_eval_plugin.mcq import GENERATED_HEADER, mcq_docs, template_yaml

AB_TEMPLATE = "_bipo_ab_template.yaml"
OPEN_TEMPLATE = "_bipo_open_template.yaml"


def _csv(path: Any, columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: column {missing[0]!r} is missing; expected {', '.join(columns)}")
    return frame


def load_bipo_ab(behaviour: str, scoring: str = "cloze", data_dir: str | None = None,
                 **_lm_eval_metadata: Any) -> dict[str, Any]:
    import datasets

    root = data_spec.data_dir(data_dir)
    path = root / "bipo" / behaviour / "test_infer.csv"
    docs = []
    for number, row in enumerate(_csv(path, ("question", "A", "B", "matching")).to_dict("records"), 1):
        letter = row["matching"].strip().strip("()").upper()
        if letter not in ("A", "B"):
            raise ValueError(f"{path} row {number}: matching: expected A or B, got {row['matching']!r}")
        docs.extend(mcq_docs(row["question"], [row["A"], row["B"]], "AB".index(letter), scoring,
                             {"behaviour": behaviour, "row": number}))
    return {"test": datasets.Dataset.from_list(docs)}


def load_bipo_open(behaviour: str, data_dir: str | None = None, **_lm_eval_metadata: Any) -> dict[str, Any]:
    import datasets

    root = data_spec.data_dir(data_dir)
    if behaviour == "jailbreak":
        frame = _csv(root / "bipo" / "jailbreak" / "test_prompts.csv", ("question",))
        docs = [{"prompt": q, "matching": "", "not_matching": "", "behaviour": behaviour} for q in frame["question"]]
    else:
        frame = _csv(root / "bipo" / behaviour / "test.csv", ("question", "matching", "not_matching"))
        docs = [{"prompt": r["question"], "matching": r["matching"], "not_matching": r["not_matching"],
                 "behaviour": behaviour} for r in frame.to_dict("records") if r["question"].strip()]
    return {"test": datasets.Dataset.from_list(docs)}


def template_files() -> dict[str, str]:
    """File name → YAML text of the behaviour families' shared templates (tasks/bipo/_*.yaml)."""
    return {
        AB_TEMPLATE: template_yaml("yapo_bench.lm_eval_plugin.behaviour_tasks.load_bipo_ab"),
        OPEN_TEMPLATE: (
            GENERATED_HEADER
            + "custom_dataset: !function yapo_bench.lm_eval_plugin.behaviour_tasks.load_bipo_open\n"
            "test_split: test\noutput_type: generate_until\ndoc_to_text: \"{{prompt}}\"\ndoc_to_target: \"\"\n"
            "generation_kwargs:\n  until: []\n  max_gen_toks: 128\n  do_sample: false\n"
            "metric_list:\n  - metric: bypass\nmetadata:\n  version: 1.0\n"),
    }
