"""Task identity: every task name our families make parses back to the id it was made from, and nothing else does;
each family declares its builder, measure, rubric and cost; and adding a family is one module plus one registry line:
a toy family, written here as a file, is planned, evaluated and reported by `yapo-bench run` with nothing else
changed."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from conftest import tiny_llama, tiny_tokenizer

from yapo_bench import families
from yapo_bench.families import TASK_FOLDERS, TaskId, get_family, registered


def test_every_generated_task_name_parses_back_to_its_id() -> None:
    names = [name.removesuffix(".yaml") for generate in TASK_FOLDERS.values() for name in generate()
             if not name.startswith("_") and not name.endswith(".group.yaml")]
    assert len(names) > 400
    for name in names:
        task = TaskId.parse(name)
        assert task is not None and task.name == name, name
    assert TaskId.parse("culture_mcq_egypt_both") == TaskId("culture_mcq", "egypt", "both")
    assert TaskId.parse("bipo_power_seeking_ab_letter") == TaskId("bipo_ab_letter", "power-seeking")
    assert TaskId.parse("localization_gap_letter_united_states_localized") == TaskId(
        "localization_gap_letter", "united-states", "localized")
    assert TaskId.parse("mmlu_local") == TaskId("mmlu_local")  # a whole MMLU family, as a run config names it
    assert TaskId.parse("mmlu_anatomy") == TaskId("mmlu", "anatomy")  # lm-eval's own, from the hub
    assert TaskId.parse("culture_mcq_atlantis_localized").unit == "atlantis"  # a user's own country
    for other in ("hellaswag", "culture_mcq", "culture_mcq-arabic", "bipo_ab", "mmlu_stem", "mmlu_local_nosuch",
                  "bipo_jailbreak_ab", "culture_mcq_egypt"):
        assert TaskId.parse(other) is None, other


def test_families_declare_their_measure_rubric_and_cost() -> None:
    from yapo_bench.families import CultureSizes, WorkSizes

    assert get_family("culture_open").judged and get_family("culture_open").rubric_name(
        TaskId("culture_open", "egypt", "both")) == "cultural"
    assert get_family("bipo_open").rubric_name(TaskId("bipo_open", "jailbreak")) == "refusal"
    assert get_family("bipo_open").rubric_name(TaskId("bipo_open", "hallucination")) == "hallucination"
    assert get_family("culture_mcq").rubric_name(TaskId("culture_mcq", "egypt", "both")) is None
    sizes = WorkSizes(CultureSizes(10, 6, 40, 5, 4, 40, "test"), limit=None, mmlu_limit=3, max_gen_toks=8)
    both = get_family("culture_mcq").work(TaskId("culture_mcq", "egypt", "both"), sizes)
    assert (both.items, both.scored_tokens) == (12, 12 * 4 * 45)  # a `both` task reads both localizations
    assert get_family("culture_open").work(TaskId("culture_open", "egypt", "localized"), sizes).decoded_tokens == 48
    assert get_family("mmlu_rotated").work(TaskId("mmlu_rotated"), sizes).items == 57 * 3 * 4
    with pytest.raises(ValueError, match="culture_mcq: variant 'all'; expected one of localized, nonlocalized, both"):
        get_family("culture_mcq").task("egypt", "all")
    with pytest.raises(ValueError, match="family 'culture_mcq': already registered"):
        families.register(get_family("culture_mcq"))


TOY_FAMILY = '''"""A toy task family: a culture question asked as a quiz, its options scored by their text."""

from dataclasses import dataclass

from yapo_bench.data.culture_sources import culture_items
from yapo_bench.families import Family, TaskWork


def quiz_docs(country, localization, culture_data, **_lm_eval_metadata):
    import datasets

    items = [i for i in culture_items(culture_data) if i.country == country
             and localization in ("both", i.localization)]
    return {"test": datasets.Dataset.from_list([
        {"prompt": f"Quiz: {i.mcq_prompt}", "choices": list(i.options), "gold": i.gold_index,
         "question_id": i.question_id} for i in items])}


@dataclass(frozen=True)
class Quiz(Family):
    def lm_eval_task(self, task, settings):
        return {"task": task.name, "custom_dataset": quiz_docs, "test_split": "test",
                "dataset_kwargs": {"country": task.unit, "localization": task.variant,
                                   "culture_data": settings.culture_data},
                "output_type": "multiple_choice", "doc_to_text": "{{prompt}}", "doc_to_choice": "{{choices}}",
                "doc_to_target": "gold", "target_delimiter": " ",
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}

    def work(self, task, sizes):
        items = min(sizes.limit or 10**9, sizes.culture.test_items)
        return TaskWork(items, scored_tokens=items * sizes.culture.prompt_tokens, calls=items)


FAMILY = Quiz(name="toy_quiz", prefix="toy_quiz", unit_kind="country", option="quiz", metric="acc",
              variants=("localized", "nonlocalized", "both"), description="the culture question asked as a quiz")
'''


@pytest.fixture
def toy_family(tmp_path: Path):
    (tmp_path / "toy_family.py").write_text(TOY_FAMILY)
    sys.path.insert(0, str(tmp_path))
    module = importlib.import_module("toy_family")
    families.register(module.FAMILY)  # the one registry line
    yield module.FAMILY
    families.unregister(module.FAMILY.name)
    sys.path.remove(str(tmp_path))
    del sys.modules["toy_family"]


def test_a_toy_family_runs_through_plan_eval_and_report(toy_family, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    from yapo_bench.pipeline import RunConfig, make_plan, run

    tiny_llama().save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    assert toy_family in registered("country") and TaskId.parse("toy_quiz_egypt_both") == toy_family.task("egypt",
                                                                                                          "both")
    config = RunConfig(name="toy", out=str(tmp_path / "out"), model=str(tmp_path / "model"), layer=1,
                       countries=["egypt"], methods=["base", "caa"], families=["mcq", "quiz"], limit=2)
    evaluation = make_plan(config)["eval-caa-culture-egypt-x1"]
    assert [task.name for task in evaluation.tasks][3:] == ["toy_quiz_egypt_localized", "toy_quiz_egypt_nonlocalized",
                                                            "toy_quiz_egypt_both"]
    run(config, dry_run=True)
    assert "eval-base" in capsys.readouterr().out  # its cost is estimated with the rest
    run(config, progress=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rows = report["tables"]["table1_quiz"]
    assert {r["label"] for r in rows} == {"base", "caa"} and {r["localization"] for r in rows} == {
        "localized", "nonlocalized", "both"}
    assert all(r["metric"] == "acc" and r["n"] == 2 for r in rows)  # scored per item, as the family declares
