"""Reports from real lm-eval output: a golden run on a tiny model whose numbers are committed
(tests/golden/report_numbers.json), the tables' maths on known inputs, and clear errors."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import HIDDEN, tiny_llama, tiny_tokenizer

from yapo_bench.report import ReportError, build_report, load_runs
from yapo_bench.report.screenshot import find_browser, screenshot
from yapo_bench.steering import SteeringVector

pytestmark = pytest.mark.xdist_group("golden-report")  # the three lm-eval runs of `golden_runs` are made once

GOLDEN = Path(__file__).parent / "golden" / "report_numbers.json"
GOLDEN_TOLERANCE = 1e-3  # absolute, on values in % (and on RCA/PNLG): float noise across CPUs, far below a flip
TASKS = ["culture_mcq_egypt_localized", "culture_mcq_egypt_nonlocalized", "culture_mcq_morocco_localized",
         "culture_mcq_morocco_nonlocalized", "culture_letter_egypt_localized"]


def _evaluate(model_dir: Path, out: Path, **model_args) -> None:
    """One lm-eval run written exactly as `lm_eval --output_path out --log_samples` writes it."""
    from lm_eval import simple_evaluate

    from yapo_bench.lm_eval_plugin import register, save_results, task_manager
    from yapo_bench.lm_eval_plugin.model import YapoSteeredLM

    register()
    # the golden numbers were made on the CPU in fp32; auto would be bf16 on a GPU, far beyond GOLDEN_TOLERANCE
    lm = YapoSteeredLM(model=str(model_dir), batch_size=4, device="cpu", dtype="float32", **model_args)
    results = simple_evaluate(model=lm, tasks=TASKS, limit=3, log_samples=True,
                              task_manager=task_manager(builtin=False),
                              random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    results["config"]["model_args"] = {"model": "tiny-llama", **{k: str(v) for k, v in model_args.items()}}
    save_results(results, out)


@pytest.fixture(scope="module")
def golden_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("golden")
    tiny_llama().save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    torch.manual_seed(0)
    SteeringVector.dense(torch.randn(HIDDEN) * 4, layer=1, method="bipo").save(root / "vector")
    _evaluate(root / "model", root / "runs" / "base")
    _evaluate(root / "model", root / "runs" / "bipo", vector=str(root / "vector"), multiplier=1.0)
    _evaluate(root / "model", root / "runs" / "bipo2", vector=str(root / "vector"), multiplier=2.0)
    verdicts = root / "runs" / "base" / "judge" / "verdicts.jsonl"
    verdicts.parent.mkdir(parents=True)
    verdicts.write_text("".join(json.dumps(v) + "\n" for v in [
        {"task": "culture_open_egypt_localized", "doc_id": 0, "score": 7, "error": None,
         "judge": {"model": "stub-judge"}, "reference_similarity": 0.5},
        {"task": "culture_open_egypt_localized", "doc_id": 1, "score": 3, "error": None,
         "judge": {"model": "stub-judge"}, "reference_similarity": 0.25},
        {"task": "culture_open_egypt_localized", "doc_id": 2, "score": None, "error": "unparsable: 'ten'",
         "judge": {"model": "stub-judge"}, "reference_similarity": 0.0}]))
    return root / "runs"


def _run_dirs(root: Path) -> list[Path]:
    return [root / "base", root / "bipo", root / "bipo2"]


def _numbers(report_json: Path) -> dict[str, float]:
    """Every numeric cell of the report as {table/row-key/field: value}."""
    flat = {}
    for table, rows in json.loads(report_json.read_text())["tables"].items():
        for row in rows:
            key = "/".join(str(row[k]) for k in ("label", "language", "country", "localization", "group", "metric",
                                                  "task") if k in row and row[k] is not None)
            for field in ("value", "ci_low", "ci_high", "delta", "p_value", "mean_score", "errors", "verdicts",
                          "chosen_multiplier", "validation_score", "test_score", "base_test_score"):
                if isinstance(row.get(field), (int, float)):
                    flat[f"{table}/{key}/{field}"] = float(row[field])
    return flat


def test_golden_report_numbers_do_not_drift(golden_runs: Path, tmp_path: Path) -> None:
    page = build_report(_run_dirs(golden_runs), tmp_path / "report")
    numbers = _numbers(tmp_path / "report" / "report.json")
    if os.environ.get("YAPO_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert set(numbers) == set(golden), "report cells changed; rerun with YAPO_UPDATE_GOLDEN=1 if intended"
    drifted = {k: (numbers[k], golden[k]) for k in golden
               if not (math.isnan(golden[k]) and math.isnan(numbers[k]))
               and not abs(numbers[k] - golden[k]) <= GOLDEN_TOLERANCE}
    assert not drifted, f"report numbers drifted beyond {GOLDEN_TOLERANCE}: {drifted}"
    html = page.read_text()
    for text in ("Claims scorecard", "Table 1", "Table 5", "Table 3", "Table 2", "Judge verdicts", "per country",
                 "bipo@2", "Published: Table 1", "culture data culture-mini"):
        assert text in html
    # a tiny model on culture-mini is not the paper's gemma-2-2b-it on Deep-Culture-Lense: its numbers stay apart
    assert "paper:base" not in html and html.index("Claims scorecard") < html.index("Published: Table 1")


def test_tables_follow_the_papers_definitions(golden_runs: Path, tmp_path: Path) -> None:
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "table2_boxed.csv").write_text("from an earlier report of this folder\n")
    (tmp_path / "notes.txt").write_text("the user's own\n")
    build_report(_run_dirs(golden_runs), tmp_path)
    assert not (tmp_path / "tables" / "table2_boxed.csv").exists() and (tmp_path / "notes.txt").exists()
    tables = json.loads((tmp_path / "report.json").read_text())["tables"]
    table1 = {(r["label"], r["country"], r["localization"]): r for r in tables["table1_mcq"]}
    table5 = {(r["label"], r["country"], r["metric"]): r["value"] for r in tables["table5_mcq_country"]}
    for (label, country, localization), row in table1.items():
        if localization != "localized":
            continue
        loc, non = row["value"], table1[(label, country, "nonlocalized")]["value"]
        expected_rca = 0.0 if loc == 0 or non == 0 else 2 * loc * non / (loc + non)
        assert table5[(label, country, "rca")] == pytest.approx(expected_rca)
        if label != "base":
            base = table1[("base", country, localization)]["value"]
            assert row["delta"] == pytest.approx(loc - base)
    table3 = {(r["label"], r["language"], r["metric"]): r["value"] for r in tables["table3_mcq_language"]}
    assert table3[("base", "arabic", "rca")] == pytest.approx(
        (table5[("base", "egypt", "rca")] + table5[("base", "morocco", "rca")]) / 2)
    open_cells = tables["table2_open"]
    assert [(r["label"], r["value"], r["n"]) for r in open_cells] == [("base", 5.0, 2)]  # the error is excluded
    judge = tables["judge"][0]
    assert (judge["verdicts"], judge["errors"], judge["judge"]) == (3, 1, "stub-judge")
    assert {r["label"] for r in tables["table1_mcq"]} == {"base", "bipo@1", "bipo@2"}
    assert (tmp_path / "plots" / "multiplier_sweep.png").stat().st_size > 1000
    (selection,) = tables["multiplier_selection"]  # bipo ran at λ 1 and 2: chosen on validation, scored on test
    assert selection["method"] == "bipo" and selection["chosen_multiplier"] in (1.0, 2.0)
    assert 0 < selection["validation_questions"] < selection["validation_items"] and selection["test_items"] > 0
    # the paper's numbers for the same cell, in their own table (the model and data differ)
    egypt = next(r for r in tables["published_table1_mcq"] if (r["country"], r["localization"], r["method"]) ==
                 ("egypt", "localized", "base"))
    assert egypt["paper_value"] == 43.1 and "paper_value" not in tables["table1_mcq"][0]


def test_the_scorecard_and_every_table_read_one_multiplier_choice(golden_runs: Path, tmp_path: Path) -> None:
    """The selection table chose λ in its own measure and seed (p_gold_norm, 0) whatever the scorecard's were; now
    the report chooses once, in the scorecard's, and the selection and steerability tables read that choice."""
    from yapo_bench.report.scorecard import ScorecardSpec

    build_report(_run_dirs(golden_runs), tmp_path, scorecard_spec=ScorecardSpec(mcq_metric="acc", seed=3))
    report = json.loads((tmp_path / "report.json").read_text())
    (selection,) = report["tables"]["multiplier_selection"]
    assert selection["metric"] == "acc"
    note = (tmp_path / "report.md").read_text()
    assert "(split by question_id, seed 3); acc in %" in note
    chosen = f"bipo λ {selection['chosen_multiplier']:g} (chosen on validation)"
    assert all(chosen in row["basis"] for row in report["scorecard"]["rows"] if row["method"] == "bipo")
    moves = report["tables"]["steerability"]
    assert {(r["method"], r["multiplier"], r["unit"]) for r in moves} == {
        ("bipo", lam, country) for lam in (1.0, 2.0) for country in ("egypt", "morocco")}
    for row in moves:
        assert row["metric"] == "acc" and row["items"] == "test"
        assert row["toward"] + row["away"] + row["unchanged"] == pytest.approx(1.0)
        assert row["toward_low"] <= row["toward"] <= row["toward_high"]


def test_a_directory_without_lm_eval_output_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not results")
    with pytest.raises(ReportError, match=r"run_dir: .* holds no lm-eval results"):
        load_runs([tmp_path])
    with pytest.raises(ReportError, match="does not exist"):
        load_runs([tmp_path / "missing"])
    (tmp_path / "results_2026.json").write_text("{broken")
    with pytest.raises(ReportError, match="is not an lm-eval results file"):
        load_runs([tmp_path])


@pytest.mark.skipif(find_browser() is None, reason="no headless Chromium on this machine")
def test_the_html_page_renders_in_headless_chromium(golden_runs: Path, tmp_path: Path) -> None:
    page = build_report(_run_dirs(golden_runs), tmp_path)
    png = screenshot(page, tmp_path / "page.png", height=900)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_published_numbers_include_the_summarys_caa_and_sas_columns() -> None:
    import pandas as pd

    from yapo_bench.report.published_side import culture_with_paper

    cells = pd.DataFrame([{"country": "egypt", "localization": loc, "method": method, "value": 0.0}
                          for loc in ("both", "localized") for method in ("base", "caa", "sas", "yapo")])
    merged, provenance = culture_with_paper(cells, "mcq")
    paper = {(r.localization, r.method): r.paper_value for r in merged.itertuples()}
    assert (paper[("both", "base")], paper[("both", "caa")], paper[("both", "sas")]) == (36.1, 44.7, 37.5)
    assert paper[("localized", "yapo")] == 47.7 and math.isnan(paper[("localized", "caa")])
    assert "gemma-2-2b-it" in provenance


def test_runs_of_one_config_on_different_tasks_share_a_column(golden_runs: Path, tmp_path: Path) -> None:
    import shutil

    for name in ("bipo", "bipo2"):  # the same λ twice on the same tasks: numbered apart
        shutil.copytree(golden_runs / "bipo", tmp_path / name)
    labels = sorted(run.label for run in load_runs([tmp_path / "bipo", tmp_path / "bipo2"]))
    assert labels == ["bipo", "bipo#2"]
    for results in (tmp_path / "bipo2").rglob("results_*.json"):  # now on other tasks only: one column again
        data = json.loads(results.read_text())
        data["results"] = {f"other_{task}": values for task, values in data["results"].items()}
        results.write_text(json.dumps(data))
    assert sorted(run.label for run in load_runs([tmp_path / "bipo", tmp_path / "bipo2"])) == ["bipo", "bipo"]


def test_mmlu_kl_to_base_is_the_mean_per_item_kl_of_the_option_distributions() -> None:
    from yapo_bench.report.runs import EvalRun
    from yapo_bench.report.tables import mmlu_table

    def run(method: str, logliks: list[list[float]]) -> EvalRun:
        samples = [{"doc_id": i, "acc": 0.0, "filtered_resps": [[str(v), "False"] for v in row]}
                   for i, row in enumerate(logliks)]
        return EvalRun(path=Path("x"), method=method, multiplier=0.0 if method == "base" else 1.0, model="m",
                       steering=None, vector=None, metrics={"mmlu_cloze_anatomy": {"acc": 0.0}}, stderrs={},
                       samples={"mmlu_cloze_anatomy": samples}, label=method)

    base = [[0.0, 0.0], [math.log(3), 0.0]]
    steered = [[math.log(3), 0.0], [math.log(3), 0.0]]
    table = mmlu_table([run("base", base), run("yapo", steered)])
    kl = table[(table["metric"] == "kl_to_base_mnat") & (table["label"] == "yapo")]["value"].item()
    p, q = [0.5, 0.5], [0.75, 0.25]
    expected = sum(a * math.log(a / b) for a, b in zip(p, q)) / 2  # item 0 differs, item 1 is identical
    assert kl == pytest.approx(1000 * expected)
    # rendered with labels of different lengths, one column level (the demo's report crashed sorting them)
    from yapo_bench.report.render import _pivot

    longer = mmlu_table([run("base", base), replace(run("yapo", steered), label="yapo@1"),
                         replace(run("yapo", steered), label="yapo@10")])
    assert list(_pivot(longer, ["group", "metric"], [], 1, False).columns) == ["base", "yapo@1", "yapo@10"]


def test_the_localization_gap_closed_is_the_share_of_the_base_gap() -> None:
    import pandas as pd

    from yapo_bench.report.tables import localization_gap_table

    cells = pd.DataFrame([{"country": "egypt", "localization": loc, "label": label, "method": label,
                           "multiplier": 0.0, "metric": "acc", "value": value}
                          for label, values in (("base", (50.0, 40.0)), ("prompt", (50.0, 48.0)), ("yapo", (52.0, 37.0)))
                          for loc, value in zip(("localized", "nonlocalized"), values)])
    gap = localization_gap_table(cells, 1.0).set_index("label")
    assert gap.loc["base", "gap"] == 10.0 and gap.loc["base", "gap_closed"] == 0.0
    assert gap.loc["prompt", "gap_closed"] == pytest.approx(0.8)  # 10 → 2
    assert gap.loc["yapo", "gap_closed"] == pytest.approx(-0.5)  # 10 → 15: wider
    tiny = localization_gap_table(cells, 11.0).set_index("label")  # a base gap below δ: no share of it
    assert tiny["gap_closed"].isna().all() and tiny.loc["prompt", "gap"] == 2.0


def test_runs_rendered_differently_are_not_reported_side_by_side(tmp_path: Path) -> None:
    """The chat template alone moves the base model's scores: a prompted run through it beside a base run without
    it would credit the prompt with the template's effect."""
    from yapo_bench.report.render import write_report
    from yapo_bench.report.runs import EvalRun

    def run(method: str, rendering: str) -> EvalRun:
        return EvalRun(path=Path(f"/nowhere/{method}/results_x.json"), method=method, multiplier=0.0, model="tiny",
                       steering=None, vector=None, metrics={}, stderrs={}, rendering=rendering)

    with pytest.raises(ReportError, match=r"runs: /nowhere/base/results_x.json was rendered as plain text and "
                                          r"/nowhere/prompt/results_x.json as chat template 0123456789ab; a report "
                                          r"compares runs rendered alike"):
        write_report([run("base", "plain text"), run("prompt", "chat template 0123456789ab")], tmp_path)
