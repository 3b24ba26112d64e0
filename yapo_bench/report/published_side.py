"""The paper's published numbers beside ours, always labelled with the model and data they come from."""

from __future__ import annotations

import pandas as pd

from yapo_bench.published import load_published

SPECIAL_NAMES = {"usa": "USA", "uk": "UK", "ksa": "KSA"}


def display_country(country: str) -> str:
    return SPECIAL_NAMES.get(country, country.replace("-", " ").title())


def _provenance(frame: pd.DataFrame) -> str:
    pairs = sorted({f"{m}, {d}" for m, d in zip(frame["model"], frame["data"])})
    return "; ".join(pairs)


def culture_with_paper(cells: pd.DataFrame, family: str) -> tuple[pd.DataFrame, str]:
    """Table 1 (mcq) or 2 (open) cells with the paper's value for the same country, localization and method
    (NaN where the paper has none, e.g. CAA/SAS), and the paper's provenance. The paper scored MCQ by a
    generated \\boxed{k}; the report prints our scoring beside it."""
    if cells.empty:
        return cells, ""
    table = load_published("table1" if family != "open" else "table2")
    if family != "open":  # CAA/SAS MCQ numbers exist only in the summary, for the `both` setting (tested equal
        summary = load_published("caa_sas_summary")  # to Table 1's `both` column where they overlap)
        summary = summary[(summary["table"] == "summary_mcq_accuracy") & summary["method"].isin(["caa", "sas"])]
        table = pd.concat([table, summary.assign(setting="both")], ignore_index=True)
    paper = table.assign(country_key=table["country"].str.lower(), localization=table["setting"])
    merged = cells.assign(country_key=cells["country"].map(display_country).str.lower()).merge(
        paper[["country_key", "localization", "method", "value"]].rename(columns={"value": "paper_value"}),
        on=["country_key", "localization", "method"], how="left").drop(columns="country_key")
    return merged, _provenance(table)


def rca_pnlg_with_paper(frame: pd.DataFrame, per: str) -> tuple[pd.DataFrame, str]:
    """Table 5 (per='country') or Table 3 (per='language') rows with the paper's value beside ours."""
    if frame.empty:
        return frame, ""
    table = load_published("table5" if per == "country" else "table3")
    key = frame[per].map(display_country) if per == "country" else frame[per].str.title()
    paper = table.rename(columns={"value": "paper_value", "task": "family"})
    merged = frame.assign(_key=key).merge(
        paper.assign(_key=paper[per])[["_key", "metric", "family", "method", "paper_value"]],
        on=["_key", "metric", "family", "method"], how="left").drop(columns="_key")
    return merged, _provenance(table)


def mmlu_paper() -> tuple[pd.DataFrame, str]:
    table = load_published("mmlu")
    return table[["method", "value_min", "value_max"]], _provenance(table)


def behaviours_paper() -> tuple[pd.DataFrame, str]:
    table = load_published("generalization")
    return table[["task", "method", "value", "source"]], _provenance(table)
