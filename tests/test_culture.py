"""The culture schema: the validator catches each kind of bad row; culture-mini is complete and valid."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from yapo_bench.data.culture import load_culture, validate_culture_file
from yapo_bench.resources import resource_dir

CULTURE_MINI = resource_dir("data") / "culture_mini"
CONTEXTS = {"english": {"usa", "uk", "australia"}, "spanish": {"spain", "mexico", "bolivia"},
            "portuguese": {"brazil", "portugal", "mozambique"}, "arabic": {"egypt", "ksa", "levantine", "morocco"},
            "hindi": {"india", "nepal"}}
TOPICS = {"meals", "routines", "family", "etiquette", "money", "ceremonies", "holidays", "expression"}

GOOD = {"id": "q1-loc", "question_id": "q1", "country": "egypt", "language_group": "arabic",
        "localization": "localized", "topic": "meals", "mcq_prompt": "What is breakfast?",
        "options": ["ful", "pancakes"], "gold_index": 0, "option_country": ["egypt", "western"],
        "open_prompt": "Describe breakfast.", "reference_answer": "Ful medames."}


def _write(tmp_path: Path, *rows: dict) -> Path:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("change, message", [
    ({"mcq_prompt": ""}, "row 1: mcq_prompt: expected the question as a non-empty string"),
    ({"country": "Egypt"}, "row 1: country: expected a lowercase"),
    ({"localization": "nolocalized"}, "row 1: localization: expected one of localized, nonlocalized"),
    ({"options": ["ful"], "option_country": ["egypt"]}, "row 1: options: expected a list of at least 2"),
    ({"options": ["ful", "ful"]}, "row 1: options: expected mutually distinct options"),
    ({"option_country": ["egypt"]}, "row 1: option_country: expected a list parallel to options"),
    ({"option_country": ["egypt", "egypt"]}, "row 1: option_country: expected each country at most once"),
    ({"gold_index": 2}, "row 1: gold_index: expected the 0-based index of the item country's option below 2"),
    ({"gold_index": 1}, "row 1: gold_index: option 1 answers for 'western', expected the item's country 'egypt'"),
    ({"reference_answer": None}, "row 1: open_prompt/reference_answer: expected both or neither"),
    ({"colour": "red"}, "row 1: colour: unknown field"),
])
def test_validator_names_row_field_and_expectation(tmp_path: Path, change: dict, message: str) -> None:
    path = _write(tmp_path, {**GOOD, **change})
    errors = validate_culture_file(path)
    assert len(errors) == 1 and message in errors[0] and errors[0].startswith(str(path))
    with pytest.raises(ValueError, match="row 1"):
        load_culture(path)


def test_validator_checks_across_rows(tmp_path: Path) -> None:
    missing = {k: v for k, v in GOOD.items() if k != "topic"}
    nonloc = {**GOOD, "id": "q1-nonloc", "localization": "nonlocalized"}
    errors = validate_culture_file(_write(tmp_path, GOOD, GOOD, {**GOOD, "id": "x"}, missing,
                                          {**nonloc, "country": "ksa", "option_country": ["ksa", "western"]}))
    assert "row 2: id: 'q1-loc' repeats an earlier row" in errors[0]
    assert "row 3: question_id: 'q1' already has a localized variant (q1-loc)" in errors[1]
    assert "row 4: topic: missing" in errors[2]
    assert "question_id: 'q1' has variants for different countries ['egypt', 'ksa']" in errors[3]
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    assert "row 1: invalid JSON" in validate_culture_file(tmp_path / "broken.jsonl")[0]
    items = load_culture(_write(tmp_path, GOOD, nonloc, {**GOOD, "id": "q2", "question_id": "q2",
                                                          "open_prompt": None, "reference_answer": None}))
    assert [i.localization for i in items] == ["localized", "nonlocalized", "localized"]
    assert items[0].gold_option == "ful" and items[0].option_for("western") == "pancakes"


def test_every_shipped_culture_file_validates() -> None:
    files = sorted(CULTURE_MINI.glob("*.jsonl"))
    assert {f.stem for f in files} == set(CONTEXTS)
    for path in files:
        assert validate_culture_file(path) == []


def test_culture_mini_covers_every_context_with_paired_variants() -> None:
    items = [item for path in sorted(CULTURE_MINI.glob("*.jsonl")) for item in load_culture(path)]
    assert len(items) >= 360
    by_question = defaultdict(list)
    for item in items:
        assert item.country in CONTEXTS[item.language_group]
        assert set(item.option_country) == CONTEXTS[item.language_group] | {"western"}
        assert item.open_prompt and item.reference_answer
        by_question[item.question_id].append(item)
    for variants in by_question.values():  # one localized and one non-localized item per question
        assert sorted(v.localization for v in variants) == ["localized", "nonlocalized"]
        assert len({v.country for v in variants}) == 1 and len({v.options for v in variants}) == 1
    per_context = Counter(v[0].country for v in by_question.values())
    assert set(per_context) == set().union(*CONTEXTS.values())
    assert min(per_context.values()) >= 12
    for group in CONTEXTS:
        assert {i.topic for i in items if i.language_group == group} == TOPICS
