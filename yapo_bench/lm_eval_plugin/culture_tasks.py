"""The culture tasks' data and templates (the families and their names are declared in yapo_bench.families.culture):
`culture_mcq_<country>_{localized,nonlocalized,both}` (cloze, the default),
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

from typing import Any

from yapo_bench.data.culture_pairs import CulturePairSpec, split_question_ids
from yapo_bench.data.culture_sources import culture_items
from yapo_bench.lm_eval_plugin.mcq import GENERATED_HEADER, mcq_docs, template_yaml

LOCALIZATIONS = ("localized", "nonlocalized", "both")
TEMPLATE = "_culture_mcq_template.yaml"


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
    head = (GENERATED_HEADER
            + "custom_dataset: !function yapo_bench.lm_eval_plugin.culture_tasks.load_culture_mcq\n")
    return {
        OPEN_TEMPLATE: head + _GENERATION.replace("{tokens}", "256") + "doc_to_target: \"{{reference_answer}}\"\n"
        "metric_list:\n  - metric: bypass\nmetadata:\n  version: 1.0\n",
        BOXED_TEMPLATE: head + _GENERATION.replace("{tokens}", "64") + "doc_to_target: \"{{gold_number}}\"\n"
        "filter_list:\n  - name: boxed\n    filter:\n      - function: regex\n"
        "        regex_pattern: \"\\\\\\\\boxed\\\\{\\\\s*(\\\\d+)\\\\s*\\\\}\"\n      - function: take_first\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n",
    }


def culture_task_config(name: str, scoring: str, template: str, country: str, localization: str,
                        culture_data: str, data_dir: str | None = None) -> dict[str, Any]:
    """The lm-eval task `name` (a culture task of `country` and `localization` scored by `scoring`) on `culture_data`
    as an inline config (the same template as the generated YAML), for any country the data defines, not only the 15
    contexts the YAML covers. The data is named in the task's dataset_kwargs, so lm-eval's results record which
    data each task read."""
    config = _template(template)
    config.update(task=name, dataset_kwargs={
        "country": country, "localization": localization, "scoring": scoring, "culture_data": culture_data,
        **({"data_dir": data_dir} if data_dir else {})})
    return config


def _template(name: str) -> dict[str, Any]:
    """A generated template's YAML text as a config, its `!function` tags resolved (as lm-eval's loader does)."""
    import importlib

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def function(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        module, _, attribute = loader.construct_scalar(node).rpartition(".")
        return getattr(importlib.import_module(module), attribute)

    Loader.add_constructor("!function", function)
    return yaml.load(template_files()[name], Loader=Loader)  # noqa: S506 - our own generated text, with one custom tag


def template_files() -> dict[str, str]:
    """File name → YAML text of the culture families' shared templates (tasks/culture/_*.yaml)."""
    return {TEMPLATE: template_yaml("yapo_bench.lm_eval_plugin.culture_tasks.load_culture_mcq"), **_generation_templates()}
