"""Preference-pair files, one loader per layout, each returning a `PairSet`.

Layouts (detected from the file's columns / keys, so any file in one of them works):
- pairs JSONL: {prompt, chosen, rejected} per line.
- BiPO behaviour CSV: columns question, matching, not_matching (chosen = matching, the behaviour).
- Anthropic / CAA A/B: a JSON list or JSONL of {question (with its lettered choices),
  answer_matching_behavior, answer_not_matching_behavior}; chosen = the matching letter, e.g. "(A)".
  Anthropic's *human-generated* power-/wealth-seeking files mostly mark the safe answer as matching:
  read the behaviour off the file, not its name.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from yapo_bench.data.text import json_rows, read_text
from yapo_bench.pairs import PairSet, PreferencePair

BIPO_COLUMNS = ("question", "matching", "not_matching")
AB_KEYS = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
PAIR_KEYS = ("prompt", "chosen", "rejected")


def _pairs(rows: Iterable[tuple[int, dict]], path: Path, keys: tuple[str, str, str], strict: bool) -> tuple[list[PreferencePair], list[str]]:
    """PreferencePairs from rows, in the order (prompt, chosen, rejected) of `keys`. A bad row (empty or
    missing field, chosen == rejected) raises a one-line error naming file, row and field when `strict`;
    otherwise it is skipped and its error returned, so that callers report it (real sets have a few)."""
    pairs, skipped = [], []
    for row_number, row in rows:
        problem = None
        values = [row.get(key) for key in keys]
        for key, value in zip(keys, values):
            if not isinstance(value, str) or not value.strip():
                problem = f"{key}: expected a non-empty string, got {value!r}"
                break
        if problem is None and values[1].strip() == values[2].strip():
            problem = f"{keys[1]}/{keys[2]}: identical; a pair needs two different responses"
        if problem is None:
            pairs.append(PreferencePair(*(value.strip() for value in values)))
        elif strict:
            raise ValueError(f"{path} row {row_number}: {problem}")
        else:
            skipped.append(f"row {row_number}: {problem}")
    if not pairs:
        raise ValueError(f"{path}: no valid rows; expected at least one preference pair"
                         + (f" ({skipped[0]})" if skipped else ""))
    return pairs, skipped


def _pair_set(rows: Iterable[tuple[int, dict]], path: Path, keys: tuple[str, str, str], source: str | None,
              chosen: str, strict: bool) -> PairSet:
    pairs, skipped = _pairs(rows, path, keys, strict)
    return PairSet(pairs, source=source or str(path), chosen=chosen, skipped=skipped)


def load_pairs_json(path: str | Path, source: str | None = None, strict: bool = False) -> PairSet:
    """A JSONL/JSON file of {prompt, chosen, rejected} rows."""
    path = Path(path)
    return _pair_set(json_rows(path), path, PAIR_KEYS, source, "chosen", strict)


def load_ab_json(path: str | Path, source: str | None = None, strict: bool = False) -> PairSet:
    """Anthropic/CAA A/B rows: prompt = the question with its choices, chosen = the matching letter."""
    path = Path(path)
    return _pair_set(json_rows(path), path, AB_KEYS, source, "answer_matching_behavior (the behaviour's letter)", strict)


def load_bipo_csv(path: str | Path, source: str | None = None, strict: bool = False) -> PairSet:
    """BiPO behaviour CSV (question, matching, not_matching): chosen = matching, the behaviour."""
    path = Path(path)
    read_text(path)  # a byte that is not UTF-8: named by row, before pandas' message that names neither
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"{path}: not a readable CSV ({err}); expected columns {', '.join(BIPO_COLUMNS)}") from None
    missing = [column for column in BIPO_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: column {missing[0]!r} is missing; expected columns {', '.join(BIPO_COLUMNS)} "
                         f"(found {', '.join(frame.columns)})")
    rows = enumerate(frame[list(BIPO_COLUMNS)].to_dict("records"), 1)
    return _pair_set(rows, path, BIPO_COLUMNS, source, "matching (the behaviour)", strict)


def load_pair_file(path: str | Path, source: str | None = None, strict: bool = False) -> PairSet:
    """Any supported pair file, its layout detected from its columns or first row's keys."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data: {path} is not a file; expected a .csv, .json or .jsonl pair file")
    if path.suffix == ".csv":
        return load_bipo_csv(path, source, strict)
    if path.suffix not in (".json", ".jsonl"):
        raise ValueError(f"data: {path} has suffix {path.suffix!r}; expected .csv, .json or .jsonl")
    rows = json_rows(path)
    keys = set(rows[0][1]) if rows else set()
    for layout, loader in ((AB_KEYS, load_ab_json), (PAIR_KEYS, load_pairs_json)):
        if set(layout) <= keys:
            return loader(path, source, strict)
    raise ValueError(f"{path} row 1: expected keys {', '.join(PAIR_KEYS)} or {', '.join(AB_KEYS)}; "
                     f"found {', '.join(sorted(keys)) or 'none'}")
