"""The paper's published numbers beside ours (only for the paper's model and data), always labelled with the model and
data they come from; the paper's figures behind each claim of the scorecard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from yapo_bench.published import load_published
from yapo_bench.report.runs import EvalRun

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


PAPER_MODEL = "gemma-2-2b-it"
PAPER_CULTURE_DATA = "Deep-Culture-Lense"  # the hub id is MBZUAI-Paris/Deep-Culture-Lense


@dataclass(frozen=True)
class Provenance:
    """What the runs evaluated, and whether the paper's numbers may sit beside ours (same model and data)."""

    models: list[str]
    culture_data: list[str]

    @property
    def paper_beside(self) -> bool:
        return paper_comparable(self.models, self.culture_data)

    def describe(self) -> str:
        data = ", ".join(self.culture_data) or "no culture task"
        return f"{', '.join(self.models)} on culture data {data}"


def provenance_of(runs: list[EvalRun]) -> Provenance:
    return Provenance(sorted({run.model for run in runs}),
                      sorted({name for run in runs if run.culture_data for name in run.culture_data.split(", ")}))


def paper_comparable(models: list[str], culture_data: list[str]) -> bool:
    """Whether the paper's culture numbers may sit beside ours: every run's model is the paper's (by hub id or
    folder name) and every culture task read the paper's data. Otherwise they go in a separate, labelled section."""
    return (bool(models) and bool(culture_data) and all(Path(m).name.lower() == PAPER_MODEL for m in models)
            and all(Path(d).name.lower() == PAPER_CULTURE_DATA.lower() for d in culture_data))


def paper_provenance(table: str) -> str:
    return _provenance(load_published(table))


def paper_culture_scores(family: str) -> dict[tuple[str, str, str], float]:
    """(country, setting, method) → the paper's per-country score (Table 1 MCQ accuracy %, Table 2 judge 0–10);
    countries keyed as ours are (lower case, e.g. "ksa")."""
    table = load_published("table1" if family == "mcq" else "table2")
    table = table[table["country"] != "Average"]
    return {(c.lower(), s, m): float(v) for c, s, m, v in zip(table["country"], table["setting"], table["method"],
                                                             table["value"])}


def paper_gap_values(family: str, metric: str) -> dict[tuple[str, str], float]:
    """(country, method) → the paper's Table 5 value of `metric` (rca or pnlg) for `family` (mcq or open)."""
    table = load_published("table5")
    table = table[(table["task"] == family) & (table["metric"] == metric)]
    return {(c.lower(), m): float(v) for c, m, v in zip(table["country"], table["method"], table["value"])}


def paper_claim_figures(claim: str) -> str:
    """The paper's statements behind a claim that no table prints (claims.csv), with their provenance."""
    table = load_published("claims")
    table = table[table["claim"] == claim]
    return f"{'; '.join(table['figure'])} ({_provenance(table)})" if not table.empty else ""


def paper_mmlu_figure(method: str) -> str:
    table = load_published("mmlu").set_index("method")
    if method not in table.index or "base" not in table.index:
        return ""
    base, row = float(table.loc["base", "value_min"]), table.loc[method]
    return (f"MMLU {method} {row['value_min']:.2f}–{row['value_max']:.2f} vs base {base:.2f} % "
            f"(Δ {row['value_min'] - base:+.2f} to {row['value_max'] - base:+.2f}; {row['model']}, {row['source']})")


def paper_behaviour_figure(behaviour: str, method: str) -> str:
    """The paper's judge means (1–4) of `method` and the base on a BiPO behaviour, every source that prints it."""
    table = load_published("generalization")
    table = table[table["task"] == behaviour]
    parts = []
    for source, group in table.groupby("source"):
        values = dict(zip(group["method"], group["value"]))
        if method in values and "base" in values:
            parts.append(f"{method} {values[method]:g} vs base {values['base']:g} ({source})")
    return f"judge 1–4: {'; '.join(parts)} [{_provenance(table)}]" if parts else ""
