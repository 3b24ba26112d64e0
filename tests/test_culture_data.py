"""Converters into the culture schema (fixtures in each source's column layout, plus the real files when
../shared/data is present) and culture preference pairs with question-level splits."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from yapo_bench.cli import main
from yapo_bench.data import load_pairs
from yapo_bench.data.culture import CultureItem, validate_culture_file, write_culture
from yapo_bench.data.culture_convert import (
    convert_culturalbench,
    convert_localization_gap,
    convert_paper,
    split_mcq_prompt,
)
from yapo_bench.data.culture_pairs import CulturePairSpec, culture_pair_rows, culture_pairs, split_question_ids
from yapo_bench.data.spec import culture_mini_items

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "culture"

PAPER_ROWS = [  # the paper's hub columns (FINDINGS.md); options inside prompt-mcq, gold as \boxed{k}
    {"country": "Egypt", "localization_status": "localized",
     "prompt-mcq": "I live in Egypt. What is a typical breakfast?\n1. Ful and taameya\n2. Pancakes\n3. Msemen\n"
                   "Answer with \\boxed{k}.",
     "chosen-mcq": "\\boxed{1}", "prompt_open_ended": "I live in Egypt. What is a typical breakfast?",
     "chosen_open_ended": "Ful medames with taameya and baladi bread.",
     "rejected_gemma-2-2b-it_mcq": "\\boxed{2}", "rejected_gemma-2-2b-it_open_ended": "Pancakes."},
    {"country": "Morocco", "localization_status": "nolocalized",
     "prompt-mcq": "Chno kanfetro f sba7?\nA) Ful and taameya\nB) Pancakes\nC) Msemen", "chosen-mcq": "C",
     "prompt_open_ended": "Chno kanfetro f sba7?", "chosen_open_ended": "Msemen with mint tea.",
     "rejected_gemma-2-2b-it_mcq": "B", "rejected_gemma-2-2b-it_open_ended": "Toast."},
]


def test_paper_converter_reads_the_hub_layout_through_datasets(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    pd.DataFrame(PAPER_ROWS).to_parquet(path)
    items = convert_paper(path)  # parquet goes through datasets.load_dataset, the hub code path
    assert [i.localization for i in items] == ["localized", "nonlocalized"]
    assert [i.country for i in items] == ["egypt", "morocco"] and items[0].language_group == "arabic"
    assert items[0].mcq_prompt == "I live in Egypt. What is a typical breakfast?"
    assert items[0].gold_option == "Ful and taameya" and items[1].gold_option == "Msemen"
    assert items[1].reference_answer == "Msemen with mint tea."
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PAPER_ROWS))
    assert convert_paper(tmp_path / "rows.jsonl") == items
    bad = [{**PAPER_ROWS[0], "chosen-mcq": "\\boxed{7}"}]
    (tmp_path / "bad.jsonl").write_text(json.dumps(bad[0]) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl row 1: chosen-mcq: .* names none of the 3 options"):
        convert_paper(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="paper data: cannot load"):
        convert_paper(tmp_path / "no-such-dataset-dir")


def test_paper_converter_pairs_variants_and_parses_strictly(tmp_path: Path) -> None:
    """No id column (as on the hub): a question's two variants share a question_id by content; malformed rows fail
    naming the row and field."""
    twin = {**PAPER_ROWS[0], "localization_status": "nolocalized", "chosen-mcq": "\\boxed{1} : Ful and taameya",
            "prompt-mcq": PAPER_ROWS[0]["prompt-mcq"].replace("I live in Egypt. ", ""),
            "prompt_open_ended": "What is a typical breakfast?"}
    rows = [PAPER_ROWS[0], twin, PAPER_ROWS[1]]

    def convert(*changed: dict) -> list:
        path = tmp_path / "rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in changed))
        return convert_paper(path)

    items = convert(*rows)
    assert items[0].question_id == items[1].question_id != items[2].question_id
    assert [i.localization for i in items[:2]] == ["localized", "nonlocalized"] and items[1].gold_index == 0
    bad = {
        "chosen-mcq: \\\\boxed\\{1\\} is option 'Ful and taameya' but the answer text reads 'Pancakes'":
            {**twin, "chosen-mcq": "\\boxed{1}: Pancakes"},
        "chosen-mcq: .* boxes 2 different answers": {**twin, "chosen-mcq": "\\boxed{1} or \\boxed{2}"},
        "prompt-mcq: option line '4. Toast' is out of sequence after 2 options":
            {**twin, "prompt-mcq": "Breakfast?\n1. Ful and taameya\n2. Pancakes\n4. Toast"},
        "chosen_open_ended: empty while its open-ended counterpart is set": {**twin, "chosen_open_ended": ""},
        "country: expected a country name, got None": {**twin, "country": None},
    }
    for message, row in bad.items():
        with pytest.raises(ValueError, match=f"rows.jsonl row 2: {message}"):
            convert(PAPER_ROWS[0], row)


def test_mcq_prompt_splitting() -> None:
    assert split_mcq_prompt("Q?\n(A) x\n(B) y") == ("Q?", ["x", "y"])
    assert split_mcq_prompt("Q?\n1. x\n3. skipped\n2. y") == ("Q?", ["x", "y"])


def test_localization_gap_fixture_both_layouts(tmp_path: Path) -> None:
    row = {"idx": 3, "pair_idx": 603, "subtask": "names", "lang": "French", "explicit_context": False,
           "question": "Quel est mon prénom ?", "options": ["Enzo", "Liam", "Ridwan"],
           "option_by_culture": {"fr": "Enzo", "us": "Liam", "bn": "Ridwan"}, "gold_culture": "fr", "gold_idx": 1}
    twin = {**row, "idx": 603, "pair_idx": 3, "explicit_context": True, "question": "J'habite en France. Quel est mon prénom ?"}
    (tmp_path / "lg.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(twin) + "\n")
    items = convert_localization_gap(tmp_path / "lg.jsonl")
    assert [i.question_id for i in items] == ["localization-gap-3", "localization-gap-3"]
    assert [i.localization for i in items] == ["nonlocalized", "localized"]
    assert items[0].country == "france" and items[0].option_for("united-states") == "Liam"
    csv = pd.DataFrame([{"context": "False", "idx": 3, "lang": "French", "option_fr": "Enzo", "option_fr_idx": 1,
                         "option_us": "Liam", "option_us_idx": 2, "option_bn": "Ridwan", "option_bn_idx": 3,
                         "question": "Quel est mon prénom ?", "subtask": "names"}])
    csv.to_csv(tmp_path / "lg.csv", index=False)
    assert convert_localization_gap(tmp_path / "lg.csv")[0] == items[0]


def test_culturalbench_fixture_drops_empty_options(tmp_path: Path) -> None:
    pd.DataFrame([{"data_idx": 0, "question_idx": 7, "prompt_question": "In Spain, when is lunch?",
                   "prompt_option_a": "Noon", "prompt_option_b": "2-3 pm", "prompt_option_c": "5 pm",
                   "prompt_option_d": "", "answer": "B", "country": "Spain"}]).to_csv(tmp_path / "cb.csv", index=False)
    item = convert_culturalbench(tmp_path / "cb.csv")[0]
    assert item.options == ("Noon", "2-3 pm", "5 pm") and item.gold_option == "2-3 pm"
    assert item.option_country == (None, "spain", None) and item.localization == "localized"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("source, relative, expected", [
    ("localization-gap", "localization_gap/localization_gap_5choice.jsonl", 1200),
    ("localization-gap", "localization_gap/5choice_dataset_input_ready.csv", 1200),
    ("culturalbench", "culturalbench/CulturalBench-Easy.csv", 1227),
    ("culturalbench", "culturalbench/culturalbench_easy.jsonl", 1227),
])
def test_real_files_convert_to_valid_culture_files(tmp_path: Path, source: str, relative: str, expected: int) -> None:
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", "--from", source, str(SHARED / relative), str(out)]) == 0
    assert validate_culture_file(out) == [] and len(out.read_text().splitlines()) == expected


def test_splits_keep_variants_together_and_are_seeded() -> None:
    items = culture_mini_items()
    for country in ("egypt", "nepal", "usa"):
        rows = {split: culture_pair_rows(items, CulturePairSpec(country, split=split, rejected="others"))[0]
                for split in ("train", "test")}
        train_q = {r["question_id"] for r in rows["train"]}
        test_q = {r["question_id"] for r in rows["test"]}
        assert train_q and test_q and not train_q & test_q
        for split_rows in rows.values():
            for question in {r["question_id"] for r in split_rows}:
                assert {r["localization"] for r in split_rows if r["question_id"] == question} == {"localized", "nonlocalized"}
            assert all(r["chosen"] != r["rejected"] for r in split_rows)
        again = culture_pair_rows(items, CulturePairSpec(country, split="train", rejected="others"))[0]
        assert again == rows["train"]
    assert split_question_ids(list("abcdefgh"), 0.25, 1) == split_question_ids(list("hgfedcba"), 0.25, 1)


def test_rejected_kinds_and_equal_answers_are_never_paired() -> None:
    item = CultureItem(id="q-loc", question_id="q", country="egypt", language_group="arabic",
                       localization="localized", topic="meals", mcq_prompt="Breakfast?",
                       options=("ful", "kabsa", "pancakes"), gold_index=0, option_country=("egypt", "ksa", "western"),
                       open_prompt="Describe breakfast.", reference_answer="Ful.")
    spec = dict(country="egypt", split="all")
    assert [p.rejected for p in culture_pairs([item], CulturePairSpec(**spec, rejected="sibling"))] == ["kabsa"]
    assert [p.rejected for p in culture_pairs([item], CulturePairSpec(**spec, rejected="western"))] == ["pancakes"]
    assert len(culture_pairs([item], CulturePairSpec(**spec, rejected="others"))) == 2
    model = culture_pairs([item], CulturePairSpec(**spec, form="open", rejected="model"), sample=lambda p: "Toast.")
    assert (model[0].prompt, model[0].chosen, model[0].rejected) == ("Describe breakfast.", "Ful.", "Toast.")
    with pytest.raises(ValueError, match=r"pairs: none .* rejected is empty or equals chosen"):
        culture_pairs([item], CulturePairSpec(**spec, form="open", rejected="model"), sample=lambda p: "Ful.")
    with pytest.raises(ValueError, match="rejected: 'model' needs the model's own answers"):
        culture_pairs([item], CulturePairSpec(**spec, rejected="model"))
    with pytest.raises(ValueError, match="country: 'peru' has no items"):
        culture_pairs([item], CulturePairSpec(country="peru"))
    with pytest.raises(ValueError, match="rejected: 'random'; expected one of"):
        CulturePairSpec(country="egypt", rejected="random")


def test_pairs_command_writes_jsonl_the_trainers_read(tmp_path: Path) -> None:
    out = tmp_path / "egypt.jsonl"
    assert main(["data", "pairs", "--country", "egypt", "--split", "train", "--out", str(out)]) == 0
    pairs = load_pairs(str(out))
    assert len(pairs) == len(load_pairs("culture-mini:egypt"))
    write_culture(culture_mini_items()[:4], tmp_path / "mini.jsonl")
    assert main(["data", "validate", str(tmp_path / "mini.jsonl")]) == 0
