"""The culture task families: `culture_mcq_<country>_{localized,nonlocalized,both}` (cloze, the default),
`culture_letter_<country>_<loc>` (letter scoring averaged over option rotations), `culture_boxed_<country>_<loc>`
(the paper's generative format: numbered options, `\\boxed{k}` parsed, exact match) and
`culture_open_<country>_<loc>` (open-ended generations for the judge; needs --log_samples), with groups
`culture_mcq`, `culture_mcq-<language>` and `culture_letter` (named so that a glob like `culture_mcq_*` never
matches a group together with its members). Also, evaluated on all their items (cloze):
`localization_gap_<country>_<loc>` (Veselovsky et al.; group `localization-gap`) and
`culturalbench_<context>` (CulturalBench-Easy for the paper's contexts; group `culturalbench-contexts`),
each with a `_letter_` twin scored by letters over option rotations,
both read from the data dir (`--metadata '{"data_dir": ...}'`, $YAPO_BENCH_DATA or ../shared/data).

Data: culture-mini by default; any culture-schema JSONL file or the paper's hub id via the task metadata
`culture_data` (`--metadata '{"culture_data": "PATH"}'`) or $YAPO_BENCH_CULTURE_DATA. Items are the
`split` (default `test`) of the question-level split that `yapo-bench data pairs` uses, so a vector trained
with `train=yapo:culture-mini:<country>` is never scored on its training questions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from yapo_bench.data.culture import CONTEXTS, CultureItem, load_culture
from yapo_bench.data.culture_pairs import CulturePairSpec, split_question_ids
from yapo_bench.lm_eval_plugin.mcq import group_yaml, mcq_docs, task_yaml, template_yaml

CULTURE_DATA_ENV = "YAPO_BENCH_CULTURE_DATA"
DEFAULT_CULTURE_DATA = "culture-mini"
LOCALIZATIONS = ("localized", "nonlocalized", "both")
TEMPLATE = "_culture_mcq_template.yaml"


PUBLIC_SETS = {  # eval-only sets read from the data dir, converted on the fly
    "localization-gap": ("culture/localization_gap/localization_gap_5choice.jsonl", "convert_localization_gap"),
    "culturalbench": ("culture/culturalbench/culturalbench_easy.jsonl", "convert_culturalbench"),
}


def culture_items(culture_data: str | None = None, data_dir: str | None = None) -> list[CultureItem]:
    """culture-mini, localization-gap / culturalbench (from the data dir), a culture-schema JSONL file, or
    the paper's dataset by hub id / local dataset."""
    from yapo_bench.data import culture_convert
    from yapo_bench.data.spec import culture_mini_items
    from yapo_bench.data.spec import data_dir as find_data_dir

    source = culture_data or os.environ.get(CULTURE_DATA_ENV) or DEFAULT_CULTURE_DATA
    if source == DEFAULT_CULTURE_DATA:
        return culture_mini_items()
    if source in PUBLIC_SETS:
        relative, converter = PUBLIC_SETS[source]
        return getattr(culture_convert, converter)(find_data_dir(data_dir) / relative)
    if Path(source).is_file() and Path(source).suffix == ".jsonl":
        return load_culture(source)
    return culture_convert.convert_paper(source, split="train")


def load_culture_mcq(country: str, localization: str = "both", scoring: str = "cloze", split: str = "test",
                     culture_data: str | None = None, test_fraction: float = 0.25, seed: int = 0,
                     data_dir: str | None = None, **_lm_eval_metadata: Any) -> dict[str, Any]:
    """lm-eval `custom_dataset`: the docs of one country's items (lm-eval passes its metadata as kwargs)."""
    import datasets

    if localization not in LOCALIZATIONS:
        raise ValueError(f"localization: {localization!r}; expected one of {', '.join(LOCALIZATIONS)}")
    CulturePairSpec(country=country, split=split, test_fraction=test_fraction, seed=seed)  # validates
    items = [i for i in culture_items(culture_data, data_dir) if i.country == country]
    if not items:
        raise ValueError(f"country: {country!r} has no items in {culture_data or 'culture-mini'}")
    train, test = split_question_ids([i.question_id for i in items], test_fraction, seed)
    keep = {"train": train, "test": test, "all": train | test}[split]
    docs = []
    for item in sorted(items, key=lambda i: i.id):
        if item.question_id in keep and localization in ("both", item.localization):
            extra = {"item_id": item.id, "question_id": item.question_id, "country": item.country,
                     "localization": item.localization, "topic": item.topic}
            if scoring == "open":
                if item.open_prompt:
                    docs.append({**extra, "prompt": item.open_prompt, "reference_answer": item.reference_answer})
            elif scoring == "boxed":
                listing = "\n".join(f"{k}. {option}" for k, option in enumerate(item.options, 1))
                docs.append({**extra, "prompt": f"{item.mcq_prompt}\n{listing}\n{BOXED_INSTRUCTION}",
                             "gold_number": str(item.gold_index + 1)})
            else:
                docs.extend(mcq_docs(item.mcq_prompt, item.options, item.gold_index, scoring, extra))
    if not docs:
        raise ValueError(f"{country} {localization} {split}: no items to evaluate")
    return {"test": datasets.Dataset.from_list(docs)}


BOXED_INSTRUCTION = "Answer with the number of the correct option in the form \\boxed{k}."
_GENERATION = ("test_split: test\noutput_type: generate_until\ndoc_to_text: \"{{prompt}}\"\n"
               "generation_kwargs:\n  until: []\n  max_gen_toks: {tokens}\n  do_sample: false\n")
OPEN_TEMPLATE = "_culture_open_template.yaml"
BOXED_TEMPLATE = "_culture_boxed_template.yaml"


def _generation_templates() -> dict[str, str]:
    head = ("# Generated by yapo_bench.lm_eval_plugin (task_yamls()); edit the generator, not this file.\n"
            "custom_dataset: !function yapo_bench.lm_eval_plugin.culture_tasks.load_culture_mcq\n")
    return {
        OPEN_TEMPLATE: head + _GENERATION.replace("{tokens}", "256") + "doc_to_target: \"{{reference_answer}}\"\n"
        "metric_list:\n  - metric: bypass\nmetadata:\n  version: 1.0\n",
        BOXED_TEMPLATE: head + _GENERATION.replace("{tokens}", "64") + "doc_to_target: \"{{gold_number}}\"\n"
        "filter_list:\n  - name: boxed\n    filter:\n      - function: regex\n"
        "        regex_pattern: \"\\\\\\\\boxed\\\\{\\\\s*(\\\\d+)\\\\s*\\\\}\"\n      - function: take_first\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n",
    }




LOCALIZATION_GAP_COUNTRIES = ("turkey", "france", "russia", "bangladesh", "united-states")
# CulturalBench countries that are (or stand in for) the paper's contexts; Lebanon counts as Levantine
CULTURALBENCH_COUNTRIES = ("usa", "uk", "australia", "spain", "mexico", "brazil", "egypt", "ksa", "levantine",
                           "morocco", "india", "nepal")


def task_yamls() -> dict[str, str]:
    """File name → YAML text of every culture MCQ task and group (tasks/culture/ is generated from this)."""
    files = {TEMPLATE: template_yaml("yapo_bench.lm_eval_plugin.culture_tasks.load_culture_mcq"),
             **_generation_templates()}
    groups: dict[str, list[str]] = {"culture_mcq": [], "culture_letter": []}
    for language, countries in CONTEXTS.items():
        groups[f"culture_mcq-{language}"] = []
        for country in countries:
            for localization in LOCALIZATIONS:
                for prefix, scoring, template in (("culture_mcq", "cloze", TEMPLATE), ("culture_letter", "letter", TEMPLATE),
                                                  ("culture_boxed", "boxed", BOXED_TEMPLATE),
                                                  ("culture_open", "open", OPEN_TEMPLATE)):
                    name = f"{prefix}_{country}_{localization}"
                    files[f"{name}.yaml"] = task_yaml(name, template, {"country": country, "localization": localization,
                                                                       "scoring": scoring})
                    if prefix in groups:
                        groups[prefix].append(name)
                    if scoring == "cloze":
                        groups[f"culture_mcq-{language}"].append(name)
    # group names differ from the task prefix, so a glob on the prefix never matches a group with its members
    for source, prefix, group, countries in (
            ("localization-gap", "localization_gap", "localization-gap", LOCALIZATION_GAP_COUNTRIES),
            ("culturalbench", "culturalbench", "culturalbench-contexts", CULTURALBENCH_COUNTRIES)):
        groups[group] = []
        for country in countries:
            for localization in (LOCALIZATIONS if source == "localization-gap" else ("localized",)):
                suffix = f"_{country.replace('-', '_')}" + (f"_{localization}" if source == "localization-gap" else "")
                for variant, scoring in (("", "cloze"), ("_letter", "letter")):
                    name = f"{prefix}{variant}{suffix}"
                    files[f"{name}.yaml"] = task_yaml(name, TEMPLATE, {
                        "country": country, "localization": localization, "scoring": scoring, "split": "all",
                        "culture_data": source})
                    if scoring == "cloze":
                        groups[group].append(name)
    files.update({f"{group}.group.yaml": group_yaml(group, members) for group, members in groups.items()})
    return files
