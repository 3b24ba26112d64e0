"""`build_report`: lm-eval run directories → tables (Markdown, CSV), figures (PNG) and one self-contained HTML
page, with the paper's published numbers beside ours and the judge named behind every judged number."""

from __future__ import annotations

import base64
import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from yapo_bench.atomic import atomic_file
from yapo_bench.environment import describe, versions
from yapo_bench.report import plots
from yapo_bench.report.published_side import (
    behaviours_paper,
    culture_with_paper,
    display_country,
    mmlu_paper,
    rca_pnlg_with_paper,
)
from yapo_bench.report.runs import EvalRun, load_runs, method_rank
from yapo_bench.report.tables import (
    behaviour_table,
    culture_table,
    judge_summary,
    mmlu_table,
    multiplier_selection,
    rca_pnlg_table,
)

SCORING_NOTE = {
    "mcq": "cloze: log-likelihood of each option's text after the question (debiased; acc = argmax)",
    "letter": "letters, averaged over every cyclic rotation of the options (debiased)",
    "boxed": "the paper's format: numbered options, the generated \\boxed{k} parsed (position-biased on small models)",
    "open": "open-ended generations scored 1–10 by the judge named below",
}


CALIBRATED_METRIC = {"mcq": "p_gold_norm", "letter": "p_gold"}


@dataclass
class Section:
    """One table of the report: its long frame (CSV), its display pivot (Markdown/HTML) and notes."""

    key: str
    title: str
    frame: pd.DataFrame
    display: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _fmt(value: float, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _cell_text(row: pd.Series, digits: int) -> str:
    text = _fmt(row["value"], digits)
    if not math.isnan(row.get("ci_low", float("nan"))):
        text += f" [{_fmt(row['ci_low'], digits)}, {_fmt(row['ci_high'], digits)}]"
    delta = row.get("delta", float("nan"))
    if isinstance(delta, float) and not math.isnan(delta):
        text += f" ({delta:+.{digits}f}"
        p_value = row.get("p_value", float("nan"))
        text += f", p={p_value:.2g})" if isinstance(p_value, float) and not math.isnan(p_value) else ")"
    return text


def _pivot(frame: pd.DataFrame, index: list[str], columns: list[str], digits: int, paper: bool) -> pd.DataFrame:
    """Rows `index`, one column per run label (× `columns`), each cell 'value [CI] (Δ vs base, p)'; with the
    paper's value as extra `paper:<method>` columns."""
    frame = frame.assign(text=[_cell_text(row, digits) for _, row in frame.iterrows()])
    table = frame.pivot_table(index=index, columns=[*columns, "label"], values="text", aggfunc="first")
    if paper and "paper_value" in frame and frame["paper_value"].notna().any():
        published = frame.dropna(subset=["paper_value"]).drop_duplicates([*index, *columns, "method"])
        published = published.assign(label="paper:" + published["method"],
                                      text=published["paper_value"].map(lambda v: _fmt(v, digits)))
        table = table.join(published.pivot_table(index=index, columns=[*columns, "label"], values="text",
                                                 aggfunc="first"), how="left")
    ordered = sorted(table.columns, key=lambda c: (*c[:-1], c[-1].startswith("paper:"), method_rank(c[-1].split(":")[-1])))
    table = table[ordered].fillna("")
    table.columns = [column if isinstance(column, str) else " ".join(map(str, column)) for column in table.columns]
    table = table.reset_index()
    if "country" in table:
        table["country"] = table["country"].map(display_country)
    if "language" in table:
        table["language"] = table["language"].str.title()
        table = table.sort_values("language", key=lambda names: names == "Overall", kind="stable")
    return table.set_index(index)


def build_sections(runs: list[EvalRun]) -> list[Section]:
    """Every table the runs have data for, in the paper's order."""
    sections: list[Section] = []
    for family in ("mcq", "letter", "boxed", "open"):
        cells = culture_table(runs, family)
        if cells.empty:
            continue
        cells, provenance = culture_with_paper(cells, family)
        digits = 2 if family == "open" else 1
        number = "2" if family == "open" else "1"
        notes = [f"Scoring: {SCORING_NOTE[family]}.", "Cells: value [95 % CI] (change vs base, paired-test p).",
                 f"paper:<method> columns: published numbers for {provenance}, not this model."]
        sections.append(Section(f"table{number}_{family}", f"Table {number} — culture {family}: "
                                f"{cells['metric'].iloc[0]} per country", cells,
                                _pivot(cells, ["language", "country"], ["localization"], digits, True), notes))
        calibrated = CALIBRATED_METRIC.get(family)
        probabilities = culture_table(runs, family, calibrated) if calibrated else pd.DataFrame()
        if not probabilities.empty:
            sections.append(Section(f"table{number}_{family}_{calibrated}", f"Table {number}b — culture {family}: "
                                    f"{calibrated} per country", probabilities,
                                    _pivot(probabilities, ["language", "country"], ["localization"], 1, False),
                                    [f"Mean probability on the gold option, % ({calibrated}): moves where accuracy "
                                     "on a small model cannot. No published counterpart."]))
        per_country, per_language = rca_pnlg_table(runs, family)
        for frame, per, number in ((per_country, "country", "5"), (per_language, "language", "3")):
            if frame.empty:
                continue
            frame, provenance = rca_pnlg_with_paper(frame, per)
            index = ["language", "country"] if per == "country" else ["language"]
            sections.append(Section(f"table{number}_{family}_{per}", f"Table {number} — RCA and PNLG per {per} "
                                    f"({family})", frame, _pivot(frame, index, ["metric"], 3, True),
                                    ["RCA = harmonic mean of localized and non-localized scores; PNLG_1 = (loc − "
                                     "nonloc) / mean(loc, nonloc); both on aggregate scores, as in the paper.",
                                     f"paper:<method> columns: {provenance}."]))
    selection, note = multiplier_selection(runs)
    if not selection.empty or note:
        sections.append(Section("multiplier_selection", "Multiplier selection (validation → test)", selection,
                                selection.set_index("method") if not selection.empty else selection, [note]))
    mmlu = mmlu_table(runs)
    if not mmlu.empty:
        published, provenance = mmlu_paper()
        notes = ["Pooled over subjects; accuracy and mean probability on the gold option (%); kl_to_base_mnat: "
                 "mean per-item KL(base ‖ steered) of the answer distribution over the options, millinats.",
                 "Paper (" + provenance + "): " + ", ".join(
                     f"{r.method} {r.value_min:.2f}" + (f"–{r.value_max:.2f}" if r.value_max != r.value_min else "")
                     for r in published.itertuples()) + " (5-shot accuracy, %)."]
        sections.append(Section("mmlu", "MMLU", mmlu, _pivot(mmlu, ["group", "metric"], [], 1, False), notes))
    behaviours = behaviour_table(runs)
    if not behaviours.empty:
        sections.append(Section("behaviours", "Behaviours (generalisation)", behaviours,
                                _pivot(behaviours, ["group", "metric"], [], 2, False),
                                ["A/B: accuracy and P(matching answer), %, both option orders; open: judge mean 1–4."]))
        published, provenance = behaviours_paper()
        sections.append(Section("behaviours_published", f"Published behaviour scores ({provenance}; not this model)",
                                published, published.pivot_table(index=["task", "source"], columns="method",
                                                                 values="value")[
                                    sorted(published["method"].unique(), key=method_rank)],
                                ["The paper's judge means (1–4); two sources disagree on hallucination, both shown."]))
    judged = judge_summary(runs)
    if not judged.empty:
        sections.append(Section("judge", "Judge verdicts", judged, judged.set_index(["label", "task"]),
                                ["Unparsable verdicts are errors: counted here, excluded from every mean.",
                                 "A 135M–270M judge cannot judge (it rates nearly everything 10): such numbers are "
                                 "a plumbing check. Reference similarity (all-MiniLM-L6-v2 cosine) is shown beside, "
                                 "never instead."]))
    return sections


def _figures(runs: list[EvalRun], sections: list[Section]) -> dict[str, bytes]:
    figures = {"training_curves": plots.training_curves(runs)}
    culture = next((s.frame for s in sections if s.key.startswith("table1_")), pd.DataFrame())
    # the sweep in the calibrated measure where there is one: accuracy of a small model barely moves with λ
    calibrated = next((s.frame for s in sections if s.key.startswith("table1_") and s.key.endswith(
        tuple(CALIBRATED_METRIC.values()))), culture)
    figures["multiplier_sweep"] = plots.multiplier_sweep(calibrated, "Multiplier sweep (culture MCQ)")
    figures["per_country"] = plots.per_country_bars(culture, "Per country")
    return {name: png for name, png in figures.items() if png}


def _runs_frame(runs: list[EvalRun]) -> pd.DataFrame:
    return pd.DataFrame([{"label": r.label, "method": r.method, "multiplier": r.multiplier, "model": r.model,
                          "vector": (r.vector or {}).get("path"), "data": (r.vector or {}).get("data"),
                          "tasks": len(r.metrics), "samples_logged": bool(r.samples), "verdicts": len(r.verdicts),
                          "results_file": str(r.path)} for r in runs])


def _markdown(title: str, runs: pd.DataFrame, sections: list[Section], figures: dict[str, bytes]) -> str:
    parts = [f"# {title}\n", "## Runs\n", runs.drop(columns=["results_file"]).fillna("").to_markdown(index=False), ""]
    for section in sections:
        parts += [f"## {section.title}\n", *[f"- {note}" for note in section.notes], "",
                  section.display.reset_index().to_markdown(index=False), ""]
    parts += [f"![{name}](plots/{name}.png)\n" for name in figures]
    return "\n".join(parts)


def _version_footer(run_versions: list[dict[str, Any]]) -> str:
    """Which software built the report and which the evaluations it reads ran under."""
    evaluated = "; ".join(describe(found) if "yapo-bench" in found else
                          ", ".join(f"{k} {v}" for k, v in sorted(found.items())) for found in run_versions if found)
    return f"Report built with {describe()}." + (f" Evaluations ran under: {evaluated}." if evaluated else "")


def build_report(run_dirs: list[str | Path], out_dir: str | Path, title: str | None = None) -> Path:
    """Write index.html, report.md, report.json, tables/*.csv and plots/*.png under `out_dir`; returns the
    HTML page. `run_dirs`: lm-eval `--output_path` directories or results files (`PATH=LABEL` to name one)."""
    runs = load_runs(list(run_dirs))
    out = Path(out_dir)
    sections = build_sections(runs)
    figures = _figures(runs, sections)
    runs_frame = _runs_frame(runs)
    title = title or f"yapo-bench report: {', '.join(sorted({r.model for r in runs}))}"
    run_versions = [dict(found) for found in {json.dumps(r.versions, sort_keys=True): r.versions for r in runs}.values()]
    footer = _version_footer(run_versions)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for section in sections:
        with atomic_file(out / "tables" / f"{section.key}.csv") as tmp:
            section.frame.to_csv(tmp, index=False)
    for name, png in figures.items():
        with atomic_file(out / "plots" / f"{name}.png") as tmp:
            tmp.write_bytes(png)
    with atomic_file(out / "report.md") as tmp:
        tmp.write_text(_markdown(title, runs_frame, sections, figures) + f"\n---\n{footer}\n")
    numbers = {section.key: json.loads(section.frame.to_json(orient="records")) for section in sections}
    with atomic_file(out / "report.json") as tmp:
        tmp.write_text(json.dumps({"title": title, "runs": json.loads(runs_frame.to_json(orient="records")),
                                   "tables": numbers, "versions": {"report": versions(), "runs": run_versions}},
                                  indent=1, sort_keys=True) + "\n")
    template = jinja2.Environment(loader=jinja2.PackageLoader("yapo_bench.report", "templates"),
                                  autoescape=jinja2.select_autoescape()).get_template("report.html.j2")
    html = template.render(
        title=title, generated=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        runs=runs_frame.drop(columns=["results_file"]).to_html(index=False, na_rep="", border=0),
        sections=[{"title": s.title, "notes": s.notes, "table": s.display.reset_index().to_html(index=False, border=0, na_rep="")}
                  for s in sections],
        figures={name: base64.b64encode(png).decode() for name, png in figures.items()}, versions=footer)
    with atomic_file(out / "index.html") as tmp:
        tmp.write_text(html)
    return out / "index.html"
