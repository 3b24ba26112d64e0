"""The YaPO paper's published numbers (data/published/*.csv), for comparison with our runs.

These are the paper's numbers (gemma-2-2b-it, MBZUAI-Paris/Deep-Culture-Lense), never ours: every row carries
`model`, `data` and `source` columns. data/published/README.md says where each table comes from and which cells
cannot be re-derived.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from yapo_bench.resources import resource_dir

__all__ = ["TABLES", "load_published", "published_dir", "unreproducible_cells"]

# Short name -> CSV stem; the stems themselves are accepted too.
TABLES: dict[str, str] = {
    "table1": "table1_mcq",
    "table2": "table2_open",
    "table3": "table3_rca_pnlg_language",
    "table5": "table5_rca_pnlg_country",
    "mmlu": "mmlu",
    "generalization": "generalization",
    "caa_sas_summary": "caa_sas_summary",
    "claims": "claims",
}

_BEGIN, _END = "<!-- unreproducible:begin -->", "<!-- unreproducible:end -->"


def published_dir() -> Path:
    """The folder holding the published CSVs (source tree or installed wheel)."""
    return resource_dir("data") / "published"


def load_published(table: str) -> pd.DataFrame:
    """Load one published table by short name ("table1", "table5", "mmlu", ...) or CSV stem ("table1_mcq").

    `change_raw` (the parenthesised change as extracted from the PDF, often garbled) is a string, "" if none.
    """
    stem = TABLES.get(table, table.removesuffix(".csv"))
    if stem not in TABLES.values():
        raise ValueError(f"table: expected one of {sorted(TABLES)} or {sorted(TABLES.values())}, got {table!r}")
    path = published_dir() / f"{stem}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"published table {stem!r} not found at {path}")
    df = pd.read_csv(path, dtype={"change_raw": str})
    if "change_raw" in df.columns:
        df["change_raw"] = df["change_raw"].fillna("")
    return df


def unreproducible_cells() -> list[str]:
    """Cell ids that data/published/README.md lists (between its unreproducible markers) as not re-derivable."""
    text = (published_dir() / "README.md").read_text(encoding="utf-8")
    try:
        block = text.split(_BEGIN, 1)[1].split(_END, 1)[0]
    except IndexError:
        raise ValueError(f"data/published/README.md: expected a block between {_BEGIN} and {_END}") from None
    return re.findall(r"^\s*[-*]\s+`([^`]+)`", block, flags=re.MULTILINE)
