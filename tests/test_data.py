"""Pair files in each layout and the data-spec grammar, on files written here (and the shared data if present)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yapo_bench.data import load_pair_file, load_pairs
from yapo_bench.data.spec import DATA_DIR_ENV

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _write_bipo(root: Path, behaviour: str = "power-seeking", rows: str = "") -> Path:
    path = root / "bipo" / behaviour / "train.csv"
    path.parent.mkdir(parents=True)
    path.write_text('question,matching,not_matching\n"Take the job?\nSay yes or no.",Yes.,"No, thanks."\n' + rows)
    return path


def test_bipo_csv_keeps_multiline_fields_and_states_what_chosen_is(tmp_path: Path) -> None:
    pairs = load_pair_file(_write_bipo(tmp_path))
    assert len(pairs) == 1 and pairs[0].prompt == "Take the job?\nSay yes or no."
    assert (pairs[0].chosen, pairs[0].rejected) == ("Yes.", "No, thanks.")
    assert "matching" in pairs.chosen and pairs.skipped == []


@pytest.mark.parametrize("row, message", [
    (',"a","b"\n', "row 2: question: expected a non-empty string"),
    ('q,"  ",b\n', "row 2: matching: expected a non-empty string"),
    ('q,same,same\n', "row 2: matching/not_matching: identical"),
])
def test_bad_rows_are_errors_when_strict_and_reported_otherwise(tmp_path: Path, row: str, message: str) -> None:
    path = _write_bipo(tmp_path, rows=row)
    with pytest.raises(ValueError, match=message):
        load_pair_file(path, strict=True)
    pairs = load_pair_file(path)
    assert len(pairs) == 1 and len(pairs.skipped) == 1 and message in pairs.skipped[0]


def test_missing_column_and_empty_file_are_errors(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("question,matching\nq,a\n")
    with pytest.raises(ValueError, match="column 'not_matching' is missing"):
        load_pair_file(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("question,matching,not_matching\n,,\n")
    with pytest.raises(ValueError, match="no valid rows"):
        load_pair_file(tmp_path / "b.csv")
    (tmp_path / "c.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="c.jsonl row 1: expected keys prompt, chosen, rejected or question"):
        load_pair_file(tmp_path / "c.jsonl")


def test_ab_json_list_and_jsonl(tmp_path: Path) -> None:
    rows = [{"question": "Grab power?\n\nChoices:\n (A) Yes\n (B) No", "answer_matching_behavior": " (A)",
             "answer_not_matching_behavior": " (B)"}]
    (tmp_path / "ab.json").write_text(json.dumps(rows))
    (tmp_path / "ab.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for name in ("ab.json", "ab.jsonl"):
        pairs = load_pair_file(tmp_path / name)
        assert (pairs[0].chosen, pairs[0].rejected) == ("(A)", "(B)") and "matching" in pairs.chosen


def test_spec_grammar_reads_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_bipo(tmp_path)
    assert load_pairs("bipo:power-seeking", tmp_path).source == "bipo:power-seeking:train"
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert len(load_pairs("bipo:power-seeking")) == 1
    assert load_pairs("demo:cheerful").chosen == "the cheerful reply"
    with pytest.raises(ValueError, match="bipo behaviour: 'power'; expected one of"):
        load_pairs("bipo:power")
    with pytest.raises(ValueError, match="bipo:jailbreak has prompts only"):
        load_pairs("bipo:jailbreak")
    with pytest.raises(ValueError, match="neither a file nor a spec"):
        load_pairs("missing.csv")
    with pytest.raises(ValueError, match="data dir: .* is not a directory"):
        load_pairs("bipo:power-seeking", tmp_path / "nowhere")


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_real_shared_sets_load() -> None:
    power = load_pairs("bipo:power-seeking", SHARED)
    assert len(power) == 640 and len(power.skipped) == 2  # two upstream rows have an empty question
    assert len(load_pairs("caa:sycophancy", SHARED)) == 1000
    assert len(load_pairs("anthropic:power-seeking-inclination", SHARED)) == 1000
