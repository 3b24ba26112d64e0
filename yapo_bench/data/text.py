"""Reading data files as UTF-8 text, with a bad byte reported by file, row and column (Python's own message
names neither file nor row)."""

from __future__ import annotations

import json
from pathlib import Path


def text_rows(path: str | Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(row number from 1, text) of each line that is UTF-8, and (row number, problem) for each line that is not:
    the caller reports them all (validation) or raises the first (loading). An unreadable file is a ValueError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from None
    rows, problems = [], []
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            rows.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError as err:
            problems.append((number, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                                     "save the file as UTF-8"))
    return rows, problems


def read_text(path: str | Path) -> str:
    """The whole file as UTF-8 text, or a ValueError naming the file and the first row that is not."""
    rows, problems = text_rows(path)
    if problems:
        number, problem = problems[0]
        more = f" (and {len(problems) - 1} more rows)" if len(problems) > 1 else ""
        raise ValueError(f"{path} row {number}: {problem}{more}")
    return "\n".join(text for _, text in rows)


def json_rows(path: Path) -> list[tuple[int, dict]]:
    """Rows of a JSON list or a JSONL file, numbered from 1."""
    text = read_text(path)
    try:
        if text.lstrip().startswith("["):
            rows = list(enumerate(json.loads(text), 1))
        else:
            rows = [(n, json.loads(line)) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON/JSONL ({err})") from None
    for row_number, row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"{path} row {row_number}: expected a JSON object, got {type(row).__name__}")
    return rows


def file_version(path: str | Path) -> tuple[int, int] | None:
    """(mtime in ns, size) of a file, None if it is not one: a cache key under which a rewritten file is read again."""
    path = Path(path)
    if not path.is_file():
        return None
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size
