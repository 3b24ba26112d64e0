"""`build_report`: lm-eval run directories → the claims scorecard, tables (Markdown, CSV), figures (PNG) and one
self-contained HTML page, with the paper's published numbers beside ours when the model and data match (else in
sections of their own) and the judge named behind every judged number."""

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
from yapo_bench.families import registered
from yapo_bench.report import plots
from yapo_bench.report.claims import build_scorecard, report_choice
from yapo_bench.report.published_side import (
    Provenance,
    behaviours_paper,
    culture_with_paper,
    display_country,
    mmlu_paper,
    provenance_of,
    rca_pnlg_with_paper,
)
from yapo_bench.report.runs import EvalRun, check_rendering, load_runs, method_rank
from yapo_bench.report.scorecard import SMALLEST_EFFECTS, Scorecard, ScorecardSpec
from yapo_bench.report.selection import MultiplierChoice
from yapo_bench.report.tables import (
    behaviour_table,
    culture_table,
    judge_summary,
    localization_gap_table,
    mmlu_table,
    multiplier_selection,
    rca_pnlg_table,
    seed_table,
    steerability_table,
)
from yapo_bench.report.training import training_logs

STEPS_NOTE = ("The steps of the run that made this report, each named by the fingerprint of its inputs; the settings "
              "each was made with are in report.json (`steps`).")
STEP_FIELDS = ("key", "kind", "fingerprint", "needs", "inputs", "versions", "finished", "seconds")


@dataclass
class Section:
    """One table of the report: its long frame (CSV), its display pivot (Markdown/HTML) and notes."""

    key: str
    title: str
    frame: pd.DataFrame
    display: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    wrap: bool = False  # the scorecard: its prose columns wrap (the template picks them by position)


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
    def order(column: str | tuple) -> tuple:
        *rest, label = column if isinstance(column, tuple) else (column,)  # one level (labels only) comes as str
        return (*rest, label.startswith("paper:"), method_rank(label.split(":")[-1]))

    ordered = sorted(table.columns, key=order)
    table = table[ordered].fillna("")
    table.columns = [column if isinstance(column, str) else " ".join(map(str, column)) for column in table.columns]
    table = table.reset_index()
    if "country" in table:
        table["country"] = table["country"].map(display_country)
    if "language" in table:
        table["language"] = table["language"].str.title()
        table = table.sort_values("language", key=lambda names: names == "Overall", kind="stable")
    return table.set_index(index)


def _published_section(key: str, title: str, merged: pd.DataFrame, index: list[str], columns: list[str],
                       provenance: str, ours: Provenance, digits: int) -> Section | None:
    """The paper's values for the cells this report has, in a section of their own (model or data differ)."""
    published = merged.dropna(subset=["paper_value"]).drop_duplicates([*index, *columns, "method"])
    if published.empty:
        return None
    frame = published[[*index, *columns, "method", "paper_value"]].reset_index(drop=True)
    display = frame.pivot_table(index=index, columns=[*columns, "method"], values="paper_value", aggfunc="first")
    display = display[sorted(display.columns, key=lambda c: (*c[:-1], method_rank(c[-1])))]
    display = display.map(lambda v: _fmt(v, digits))
    display.columns = [" ".join(map(str, column)) for column in display.columns]
    display = display.reset_index()
    if "country" in display:
        display["country"] = display["country"].map(display_country)
    return Section(f"published_{key}", f"Published: {title} — {provenance}", frame, display.set_index(index),
                   [f"Not comparable with this report's numbers: this report ran {ours.describe()}; the paper ran "
                    f"{provenance}. Shown apart for reference, for the cells this report has."])


def _multiplier_note(cells: pd.DataFrame) -> list[str]:
    """Columns that hold runs at several λ (one per country's vector) say which λ each country ran at."""
    notes = []
    for label, group in cells.groupby("label"):
        if group["multiplier"].nunique() > 1:
            pairs = sorted(set(zip(group["country"], group["multiplier"])))
            notes.append(f"Column {label}: one λ per country — "
                         + ", ".join(f"{display_country(c)} {m:g}" for c, m in pairs))
    return notes


def scorecard_sections(scorecard: Scorecard) -> list[Section]:
    """The scorecard's headline rows (first in the report) and their per-country split."""
    frame = scorecard.frame()
    spec = scorecard.spec
    notes = [f"Runs: {', '.join(scorecard.models)} on culture data {', '.join(scorecard.culture_data) or '(none)'}.",
             "Effect: method − reference on the same items (claim c: |PNLG| narrowing, RCA gain), 95 % paired "
             "bootstrap CI; claimed: the sign the paper predicts (or the equivalence margin).",
             "p(Holm): corrected across the rows of this table (the per-country table is its own family); MDE: the "
             f"smallest effect this n detects with {spec.power:.0%} power at the Bonferroni level α/m, "
             f"α = {spec.alpha}.",
             "Verdict: supported (significant in the claimed direction), contradicted (significant the other way; "
             "MMLU: the CI outside the margin), inconclusive — underpowered when the MDE exceeds δ, the smallest "
             "effect the claim cares about (docs/scorecard.md).",
             "Items moved: the shares of the items (units) whose score moved the claimed way, the other way, or "
             "not at all (|change| < 1e-6), steered vs reference: a mean effect hides a split (95 % Wilson CIs in "
             "report.json).",
             "Paper: the paper's own figure for the comparison, on its model and data, never this run's."]
    notes += [f"Not testable here — ({claim}) {reason}." for claim, reason in sorted(scorecard.untested.items())]
    sections = []
    for family, key, title in (("scorecard", "scorecard", "Claims scorecard"),
                               ("per-country", "scorecard_per_country", "Claims scorecard, per country")):
        rows = frame[frame["family"] == family] if not frame.empty else frame
        if rows.empty and family != "scorecard":
            continue
        sections.append(Section(key, title, rows, _scorecard_display(rows), notes if family == "scorecard" else
                                ["The headline rows split by country; Holm-corrected across this table's rows."],
                                wrap=True))
    return sections


def _scorecard_display(rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty:
        return pd.DataFrame({"claim": [], "verdict": []}).set_index("claim")
    def effect(row: pd.Series) -> str:
        ci = f" [{row['ci_low']:.3g}, {row['ci_high']:.3g}]" if math.isfinite(row["ci_low"]) else ""
        return f"{row['effect']:+.3g}{ci}"
    claimed = rows.apply(lambda r: f"within ±{r['smallest_effect']:g}" if r["kind"] == "equivalence"
                         else ("> 0" if r["direction"] > 0 else "< 0"), axis=1)
    return pd.DataFrame({
        "claim": rows["claim"], "comparison": rows["comparison"], "measure": rows["measure_label"],
        "scope": rows["scope"], "n": rows["n"], "effect [95 % CI]": rows.apply(effect, axis=1), "claimed": claimed,
        "p (Holm)": rows["p_holm"].map(lambda v: f"{v:.1e}" if v < 0.001 else _fmt(v, 3)),
        "MDE (80 %)": rows["mde"].map(lambda v: "∞" if math.isinf(v) else f"{v:.3g}" if math.isfinite(v) else "–"),
        "verdict": rows["verdict"], "items moved (toward / away / not)": rows.apply(_moves_text, axis=1),
        "why": rows["reason"], "basis": rows["basis"],
        "paper's figure": rows["paper"], "detail": rows["detail"]}).set_index("claim")


STEERABILITY_NOTE = ("Per steered run, the shares of the items whose gold probability moved toward the target (the "
                     "culture's answer; the behaviour for direction +1, away from it for −1), away from it, or not "
                     "at all (|change| < 1e-6 points), against the base on the same items, with 95 % Wilson CIs. "
                     "Close to half the items of some datasets move against the steering (Tan et al., "
                     "arXiv 2407.12404): a mean effect hides it.")


GAP_NOTE = ("Per country and run: localized and non-localized scores (the scorecard's MCQ measure, or the judge's), "
            "their gap, and the share of the base run's gap the run closes ((gap_base − gap) / gap_base; all items; "
            "none where the base's gap is below the claim's δ). "
            "The prompt states the country the non-localized questions leave out: where the model knows the culture, "
            "it should close the gap, and a steering vector can be read against it.")


def _pivot_gap(gap: pd.DataFrame) -> pd.DataFrame:
    shown = gap.assign(country=gap["country"].map(display_country))
    return shown.set_index(["country", "label"])[["localized", "nonlocalized", "gap", "gap_closed"]].round(3)


def _steerability_display(moves: pd.DataFrame) -> pd.DataFrame:
    def share(row: pd.Series, name: str) -> str:
        return f"{100 * row[name]:.0f} % [{100 * row[name + '_low']:.0f}, {100 * row[name + '_high']:.0f}]"
    return pd.DataFrame({
        "family": moves["family"], "context": moves["unit"].map(display_country), "method": moves["method"],
        "λ": moves["multiplier"].map(lambda v: f"{v:g}"), "direction": moves["direction"].map(lambda v: f"{v:+d}"),
        "items": moves["items"], "n": moves["n"],
        **{f"{name} [95 % CI]": moves.apply(share, axis=1, name=name) for name in ("toward", "away", "unchanged")},
    }).set_index(["family", "context", "method", "λ"])


def _moves_text(row: pd.Series) -> str:
    """A row's per-item steerability in one cell: the shares of items moved the claimed way, the other, not at all."""
    if not math.isfinite(row.get("toward", math.nan)):
        return "–"
    return " / ".join(f"{100 * row[name]:.0f} %" for name in ("toward", "away", "unchanged"))


def build_sections(runs: list[EvalRun], provenance: Provenance | None = None,
                   choice: MultiplierChoice | None = None) -> list[Section]:
    """Every table the runs have data for, in the paper's order; the paper's numbers beside ours only when the
    model and data match (else in separate sections at the end). `choice`: the report's multiplier choice
    (`claims.report_choice`, by default with the default scorecard settings)."""
    provenance = provenance or provenance_of(runs)
    choice = choice or report_choice(runs, ScorecardSpec())
    beside = provenance.paper_beside
    sections: list[Section] = []
    published: list[Section] = []
    for declared in registered("country"):
        family = declared.option
        cells = culture_table(runs, family)
        if cells.empty:
            continue
        merged, paper_source = culture_with_paper(cells, family)
        digits = 2 if declared.judged else 1
        number = "2" if declared.judged else "1"
        notes = [f"Scoring: {declared.description}.", "Cells: value [95 % CI] (change vs base, paired-test p).",
                 *_multiplier_note(cells)]
        if beside:
            cells = merged
            notes.append(f"paper:<method> columns: published numbers for {paper_source} (the model and data of "
                         "this report).")
        else:
            published.append(_published_section(f"table{number}_{family}", f"Table {number} ({family})", merged,
                                                 ["language", "country"], ["localization"], paper_source, provenance,
                                                 digits))
        sections.append(Section(f"table{number}_{family}", f"Table {number} — culture {family}: "
                                f"{cells['metric'].iloc[0]} per country", cells,
                                _pivot(cells, ["language", "country"], ["localization"], digits, beside), notes))
        # in the scorecard's measure (the calibrated p_gold_norm by default): accuracy of a small model is often 0
        gap = localization_gap_table(cells if declared.judged else culture_table(runs, family, choice.metric),
                                     SMALLEST_EFFECTS["open" if declared.judged else "mcq"])
        if not gap.empty and (gap["method"] == "prompt").any():
            sections.append(Section(f"localization_gap_{family}", f"Localization gap closed ({family})", gap,
                                    _pivot_gap(gap), [GAP_NOTE]))
        calibrated = declared.calibrated_metric
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
            merged, paper_source = rca_pnlg_with_paper(frame, per)
            index = ["language", "country"] if per == "country" else ["language"]
            notes = ["RCA = harmonic mean of localized and non-localized scores; PNLG_1 = (loc − nonloc) / mean(loc, "
                     "nonloc); both on aggregate scores, as in the paper."]
            if beside:
                frame = merged
                notes.append(f"paper:<method> columns: {paper_source} (the model and data of this report).")
            else:
                published.append(_published_section(f"table{number}_{family}_{per}", f"Table {number} ({family}, per "
                                                     f"{per})", merged, index, ["metric"], paper_source, provenance, 3))
            sections.append(Section(f"table{number}_{family}_{per}", f"Table {number} — RCA and PNLG per {per} "
                                    f"({family})", frame, _pivot(frame, index, ["metric"], 3, beside), notes))
    selection, note = multiplier_selection(choice)
    if not selection.empty or note:
        sections.append(Section("multiplier_selection", "Multiplier selection (validation → test)", selection,
                                selection.set_index("method") if not selection.empty else selection, [note]))
    moves = steerability_table(runs, choice)
    if not moves.empty:
        sections.append(Section("steerability", "Per-item steerability (steered vs base)", moves,
                                _steerability_display(moves), [STEERABILITY_NOTE]))
    seeds = seed_table(runs, choice)
    if not seeds.empty:
        sections.append(Section("seeds", "Spread across training seeds", seeds,
                                seeds.set_index(["family", "unit", "method", "multiplier"]),
                                ["Each training seed's mean score per method, λ and unit (all items; culture MCQ in "
                                 f"{choice.metric} %, behaviour A/B P(matching answer) %), and the SD across seeds. "
                                 "The scorecard averages over seeds; its CIs resample seeds, then items. A "
                                 "mean-difference method (CAA, SAS) is deterministic: one vector whatever the seeds."]))
    mmlu = mmlu_table(runs)
    if not mmlu.empty:
        paper_mmlu, paper_source = mmlu_paper()
        paper_note = ", ".join(f"{r.method} {r.value_min:.2f}" + (f"–{r.value_max:.2f}" if r.value_max != r.value_min
                                                                   else "") for r in paper_mmlu.itertuples())
        notes = ["Pooled over subjects; accuracy and mean probability on the gold option (%); kl_to_base_mnat: "
                 "mean per-item KL(base ‖ steered) of the answer distribution over the options, millinats."]
        if beside:
            notes.append(f"Paper ({paper_source}): {paper_note} (5-shot accuracy, %).")
        else:
            published.append(Section("published_mmlu", f"Published: MMLU — {paper_source}", paper_mmlu,
                                     paper_mmlu.set_index("method"),
                                     [f"Not comparable with this report's numbers: this report ran "
                                      f"{provenance.describe()}. 5-shot accuracy, %, min–max over steering configs."]))
        sections.append(Section("mmlu", "MMLU", mmlu, _pivot(mmlu, ["group", "metric"], [], 1, False), notes))
    behaviours = behaviour_table(runs)
    if not behaviours.empty:
        sections.append(Section("behaviours", "Behaviours (generalisation)", behaviours,
                                _pivot(behaviours, ["group", "metric"], [], 2, False),
                                ["A/B: accuracy and P(matching answer), %, both option orders; open: judge mean 1–4."]))
        paper_behaviours, paper_source = behaviours_paper()
        published.append(Section("behaviours_published", f"Published: behaviour scores — {paper_source}",
                                 paper_behaviours, paper_behaviours.pivot_table(
                                     index=["task", "source"], columns="method", values="value")[
                                     sorted(paper_behaviours["method"].unique(), key=method_rank)],
                                 ["The paper's judge means (1–4) for its cultural vectors; two sources disagree on "
                                  "hallucination, both shown. Not this report's vectors, model or judge."]))
    judged = judge_summary(runs)
    if not judged.empty:
        sections.append(Section("judge", "Judge verdicts", judged, judged.set_index(["label", "task"]),
                                ["Unparsable verdicts are errors: counted here, excluded from every mean.",
                                 "A 135M–270M judge cannot judge (it rates nearly everything 10): such numbers are "
                                 "a plumbing check. Reference similarity (all-MiniLM-L6-v2 cosine) is shown beside, "
                                 "never instead."]))
    return sections + [section for section in published if section is not None]


def _figures(runs: list[EvalRun], sections: list[Section], scorecard: Scorecard) -> dict[str, bytes]:
    figures = {"claims_forest": plots.forest_plot(scorecard.frame()),
               "training_curves": plots.training_curves(training_logs(runs), scorecard.spec.loss_threshold)}
    culture = next((s.frame for s in sections if s.key.startswith("table1_")), pd.DataFrame())
    # the sweep in the calibrated measure where there is one: accuracy of a small model barely moves with λ
    calibrated = next((s.frame for s in sections if s.key.startswith("table1_") and s.key.endswith(
        tuple(f.calibrated_metric for f in registered("country") if f.calibrated_metric))), culture)
    figures["multiplier_sweep"] = plots.multiplier_sweep(calibrated, "Multiplier sweep (culture MCQ)")
    figures["per_country"] = plots.per_country_bars(culture, "Per country")
    return {name: png for name, png in figures.items() if png}


def _runs_frame(runs: list[EvalRun]) -> pd.DataFrame:
    return pd.DataFrame([{"label": r.label, "method": r.method, "multiplier": r.multiplier, "model": r.model,
                          "culture_data": r.culture_data, "vector": (r.vector or {}).get("path"),
                          "vector_data": (r.vector or {}).get("data"), "tasks": len(r.metrics),
                          "rendering": r.rendering,
                          "samples_logged": bool(r.samples), "verdicts": len(r.verdicts),
                          "results_file": str(r.path)} for r in runs])


def _steps_frame(steps: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per step of the run that made the report: its fingerprint and the software it was made with (its
    settings: report.json's `steps`)."""
    return pd.DataFrame([{"step": r["key"], "fingerprint": r["fingerprint"][:12], "finished": r.get("finished"),
                          "seconds": r.get("seconds"), "made with": describe(r.get("versions") or {})}
                         for r in steps])


def _mixed_versions(steps: list[dict[str, Any]]) -> str:
    """A sentence naming the software versions when the steps were not all made by the same ones, else ''."""
    groups: dict[str, list[str]] = {}
    for record in steps:
        groups.setdefault(json.dumps(record.get("versions") or {}, sort_keys=True), []).append(record["key"])
    if len(groups) < 2:
        return ""
    return " This report mixes steps made by different versions: " + "; ".join(
        f"{describe(json.loads(found))} made {', '.join(keys)}" for found, keys in groups.items()) + "."


def _markdown(title: str, summary: str, runs: pd.DataFrame, sections: list[Section], figures: dict[str, bytes],
              steps: pd.DataFrame) -> str:
    parts = [f"# {title}\n", summary, ""]
    head = [s for s in sections if s.key.startswith("scorecard")]
    rest = [s for s in sections if not s.key.startswith("scorecard")]
    for section in head:
        parts += _markdown_section(section)
    if "claims_forest" in figures:
        parts += ["![claims_forest](plots/claims_forest.png)\n"]
    parts += ["## Runs\n", runs.drop(columns=["results_file"]).fillna("").to_markdown(index=False), ""]
    if not steps.empty:
        parts += ["## Steps\n", STEPS_NOTE, "", steps.fillna("").to_markdown(index=False), ""]
    for section in rest:
        parts += _markdown_section(section)
    parts += [f"![{name}](plots/{name}.png)\n" for name in figures if name != "claims_forest"]
    return "\n".join(parts)


def _version_footer(run_versions: list[dict[str, Any]], steps: list[dict[str, Any]]) -> str:
    """Which software built the report, which the evaluations it reads ran under, and whether the run's steps
    were made by different versions."""
    evaluated = "; ".join(describe(found) if "yapo-bench" in found else
                          ", ".join(f"{k} {v}" for k, v in sorted(found.items())) for found in run_versions if found)
    return (f"Report built with {describe()}." + (f" Evaluations ran under: {evaluated}." if evaluated else "")
            + _mixed_versions(steps))


def _markdown_section(section: Section) -> list[str]:
    return [f"## {section.title}\n", *[f"- {note}" for note in section.notes], "",
            section.display.reset_index().to_markdown(index=False), ""]


def build_report(run_dirs: list[str | Path], out_dir: str | Path, title: str | None = None,
                 scorecard_spec: ScorecardSpec | None = None) -> Path:
    """The report of lm-eval `--output_path` directories or results files (`PATH=LABEL` to name one), with any
    judge verdicts under them: `write_report` of `load_runs(run_dirs)`."""
    return write_report(load_runs(list(run_dirs)), out_dir, title, scorecard_spec)


def write_report(runs: list[EvalRun], out_dir: str | Path, title: str | None = None,
                 scorecard_spec: ScorecardSpec | None = None, steps: list[dict[str, Any]] | None = None) -> Path:
    """Write index.html, report.md, report.json, tables/*.csv and plots/*.png under `out_dir`; returns the
    HTML page. The page opens with the claims scorecard (report.claims; `scorecard_spec` sets how it tests).
    `steps`: the records of the run's steps that made `runs` (`yapo-bench run`), shown with their fingerprints,
    settings and versions."""
    out = Path(out_dir)
    check_rendering(runs)
    provenance = provenance_of(runs)
    spec = scorecard_spec or ScorecardSpec()
    choice = report_choice(runs, spec)  # one λ choice for the scorecard and every table
    scorecard = build_scorecard(runs, spec, choice)
    sections = scorecard_sections(scorecard) + build_sections(runs, provenance, choice)
    figures = _figures(runs, sections, scorecard)
    runs_frame = _runs_frame(runs)
    title = title or f"yapo-bench report: {', '.join(provenance.models)}"
    summary = (f"Evaluated: {provenance.describe()}. Published numbers sit "
               + ("beside ours (same model and data)." if provenance.paper_beside else
                  "in separate sections at the end (the paper's model or data differ from this report's)."))
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for section in sections:
        with atomic_file(out / "tables" / f"{section.key}.csv") as tmp:
            section.frame.to_csv(tmp, index=False)
    for name, png in figures.items():
        with atomic_file(out / "plots" / f"{name}.png") as tmp:
            tmp.write_bytes(png)
    # tables and plots an earlier report of this folder wrote and this one has not (e.g. a family no longer run)
    # would read as this report's: they go
    written = {f"{section.key}.csv" for section in sections} | {f"{name}.png" for name in figures}
    for stale in [*(out / "tables").glob("*.csv"), *(out / "plots").glob("*.png")]:
        if stale.name not in written:
            stale.unlink()
    run_versions = [dict(found) for found in {json.dumps(r.versions, sort_keys=True): r.versions for r in runs}.values()]
    steps = steps or []
    steps_frame = _steps_frame(steps)
    footer = _version_footer(run_versions, steps)
    with atomic_file(out / "report.md") as tmp:
        tmp.write_text(_markdown(title, summary, runs_frame, sections, figures, steps_frame) + f"\n---\n{footer}\n")
    numbers = {section.key: json.loads(section.frame.to_json(orient="records")) for section in sections
               if not section.key.startswith("scorecard")}
    with atomic_file(out / "report.json") as tmp:
        tmp.write_text(json.dumps({"title": title, "scorecard": scorecard.to_json(),
                                   "provenance": {"models": provenance.models, "culture_data": provenance.culture_data,
                                                  "published_beside": provenance.paper_beside},
                                   "runs": json.loads(runs_frame.to_json(orient="records")),
                                   "tables": numbers, "versions": {"report": versions(), "runs": run_versions},
                                   "steps": [{k: r.get(k) for k in STEP_FIELDS} for r in steps]},
                                  indent=1, sort_keys=True) + "\n")
    template = jinja2.Environment(loader=jinja2.PackageLoader("yapo_bench.report", "templates"),
                                  autoescape=jinja2.select_autoescape()).get_template("report.html.j2")
    html = template.render(
        title=title, summary=summary, generated=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        runs=runs_frame.drop(columns=["results_file"]).to_html(index=False, na_rep="", border=0),
        steps=steps_frame.to_html(index=False, na_rep="", border=0) if not steps_frame.empty else None,
        steps_note=STEPS_NOTE,
        sections=[{"title": s.title, "notes": s.notes, "wrap": s.wrap, "head": s.key.startswith("scorecard"),
                   "table": s.display.reset_index().to_html(index=False, border=0, na_rep="")} for s in sections],
        forest=base64.b64encode(figures["claims_forest"]).decode() if "claims_forest" in figures else None,
        figures={name: base64.b64encode(png).decode() for name, png in figures.items() if name != "claims_forest"},
        versions=footer)
    with atomic_file(out / "index.html") as tmp:
        tmp.write_text(html)
    return out / "index.html"
