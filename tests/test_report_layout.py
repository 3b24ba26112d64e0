"""Report defects found on a held-out run, on lm-eval output written by the test: two countries' runs share one
column per method and keep every CI, the training curves show every country, the report names its culture data,
published numbers sit beside ours only for the paper's model and data, and --screenshot without a browser is a
note, not a failure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from yapo_bench import cli
from yapo_bench.report import build_report, load_runs, plots
from yapo_bench.report.published_side import Provenance
from yapo_bench.report.render import build_sections
from yapo_bench.report.tables import rca_pnlg_table
from yapo_bench.report.training import training_logs

STAMP = "2026-01-01T00-00-00.000000"


def write_run(directory: Path, method: str, multiplier: float, countries: list[str], seed: int,
              model: str = "tiny", culture_data: str | None = None, vector: str | None = None) -> Path:
    """An lm-eval output directory as `lm_eval --output_path --log_samples` writes it: culture MCQ scores of
    `countries` (localized and non-localized, 12 items each)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    results, configs = {}, {}
    for country in countries:
        for localization in ("localized", "nonlocalized"):
            task = f"culture_mcq_{country}_{localization}"
            scores = rng.uniform(0.05, 0.95, 12)
            samples = [{"doc_id": i, "doc": {"item_id": f"{country}-{i}-{localization}",
                                             "question_id": f"{country}-q{i}"},
                        "p_gold_norm": float(p), "acc": float(p > 0.5)} for i, p in enumerate(scores)]
            (directory / f"samples_{task}_{STAMP}.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
            results[task] = {"alias": task, "acc,none": float(np.mean([s["acc"] for s in samples])),
                             "p_gold_norm,none": float(scores.mean())}
            configs[task] = {"task": task, "metadata": {"version": 1.0, **({"culture_data": culture_data}
                                                                           if culture_data else {})}}
    config = ({"model": "hf", "model_args": {"pretrained": model}} if method == "base" else
              {"model": "yapo_steered", "model_args": {"model": model},
               "yapo_steering": {"multiplier": multiplier, "direction": 1},
               "yapo_vector": {"method": method, "path": vector,
                               "data": f"culture-mini [country={countries[0]} split=train]"}})
    (directory / f"results_{STAMP}.json").write_text(json.dumps({"results": results, "config": config,
                                                                 "configs": configs}))
    return directory


@pytest.fixture
def two_countries(tmp_path: Path) -> dict[str, Path]:
    """The base on two countries and a YaPO vector per country, each at its own λ, in separate directories."""
    return {"base": write_run(tmp_path / "base", "base", 0.0, ["egypt", "morocco"], 0),
            "egypt": write_run(tmp_path / "yapo-egypt", "yapo", 1.0, ["egypt"], 1),
            "morocco": write_run(tmp_path / "yapo-morocco", "yapo", 2.0, ["morocco"], 2)}


def test_two_countries_at_their_own_lambda_share_one_column(two_countries: dict[str, Path]) -> None:
    runs = load_runs(list(two_countries.values()))
    assert sorted(run.label for run in runs) == ["base", "yapo", "yapo"]
    table1 = next(s for s in build_sections(runs) if s.key == "table1_mcq")
    assert list(table1.display.columns) == ["localized base", "localized yapo", "nonlocalized base",
                                            "nonlocalized yapo"]  # not one half-empty column per λ
    assert "Column yapo: one λ per country — Egypt 1, Morocco 2" in table1.notes


def test_one_label_for_two_countries_keeps_both_countries_cis(two_countries: dict[str, Path]) -> None:
    runs = load_runs([two_countries["base"], f"{two_countries['egypt']}=ours", f"{two_countries['morocco']}=ours"])
    per_country, _ = rca_pnlg_table(runs)
    ours = per_country[per_country["label"] == "ours"]
    assert sorted(ours["country"].unique()) == ["egypt", "morocco"]
    assert ours["ci_low"].notna().all() and ours["ci_high"].notna().all()


def test_the_report_names_the_culture_data_its_tasks_read(tmp_path: Path) -> None:
    recorded = write_run(tmp_path / "recorded", "base", 0.0, ["egypt"], 0, culture_data="data/my_culture.jsonl")
    default = write_run(tmp_path / "default", "base", 0.0, ["egypt"], 0)
    assert [run.culture_data for run in load_runs([recorded, default])] == ["data/my_culture.jsonl", "culture-mini"]
    page = build_report([default], tmp_path / "report").read_text()
    assert "on culture data culture-mini" in page
    shape = json.loads((tmp_path / "report" / "report.json").read_text())
    assert shape["provenance"]["culture_data"] == shape["scorecard"]["culture_data"] == ["culture-mini"]


def test_published_numbers_sit_beside_ours_only_for_the_papers_model_and_data(two_countries: dict[str, Path]) -> None:
    runs = load_runs(list(two_countries.values()))
    apart = {s.key: s for s in build_sections(runs, Provenance(["tiny"], ["culture-mini"]))}
    assert "published_table1_mcq" in apart and not any("paper:" in c for c in apart["table1_mcq"].display.columns)
    assert "ran tiny on culture data culture-mini" in apart["published_table1_mcq"].notes[0]
    beside = {s.key: s for s in build_sections(runs, Provenance(["google/gemma-2-2b-it"],
                                                                ["MBZUAI-Paris/Deep-Culture-Lense"]))}
    assert "published_table1_mcq" not in beside
    assert "localized paper:base" in beside["table1_mcq"].display.columns


def test_the_training_curves_show_every_countrys_vectors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs_dirs = []
    for country in ("egypt", "morocco"):
        for method in ("bipo", "yapo"):
            vector = tmp_path / "vectors" / f"{method}-{country}"
            vector.mkdir(parents=True)
            vector.joinpath("train_log.jsonl").write_text("".join(
                json.dumps({"step": s, "kind": "train", "loss": 0.69 - 0.01 * s}) + "\n" for s in range(1, 6)))
            runs_dirs.append(write_run(tmp_path / f"{method}-{country}", method, 1.0, [country], 3, vector=str(vector)))
    logs = training_logs(load_runs(runs_dirs))
    assert sorted((log.short_data, log.method) for log in logs) == [
        ("egypt", "bipo"), ("egypt", "yapo"), ("morocco", "bipo"), ("morocco", "yapo")]
    figures = []
    monkeypatch.setattr(plots, "_png", lambda figure: figures.append(figure) or b"png")
    plots.training_curves(logs)
    panels = {axis.get_title(): sorted(line.get_label() for line in axis.get_lines()
                                       if not line.get_label().startswith("_"))
              for axis in figures[0].axes if axis.get_title()}
    assert panels == {"egypt": ["bipo", "yapo"], "morocco": ["bipo", "yapo"]}


def test_screenshot_without_a_browser_is_a_note_and_exit_0(two_countries: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("yapo_bench.report.screenshot.find_browser", lambda: None)
    code = cli.main(["report", str(two_countries["base"]), "--out", str(tmp_path / "out"),
                     "--screenshot", str(tmp_path / "out" / "page.png")])
    assert code == 0 and "no headless browser found" in capsys.readouterr().err
    assert (tmp_path / "out" / "index.html").is_file() and not (tmp_path / "out" / "page.png").exists()


def test_report_json_carries_the_scorecard_first_in_the_page(two_countries: dict[str, Path], tmp_path: Path) -> None:
    page = build_report(list(two_countries.values()), tmp_path).read_text()
    shape = json.loads((tmp_path / "report.json").read_text())["scorecard"]
    assert shape["rows"] and {row["claim"] for row in shape["rows"]} >= {"b", "c"}
    assert all(row["verdict"] in ("supported", "contradicted", "inconclusive (underpowered)", "inconclusive")
               for row in shape["rows"])
    assert {"a", "d", "e", "f"} <= {item["claim"] for item in shape["untested"]}
    assert page.index("Claims scorecard") < page.index("<h2>Runs</h2>") < page.index("Table 1")
    assert (tmp_path / "plots" / "claims_forest.png").stat().st_size > 1000
    assert not any(isinstance(v, float) and math.isnan(v) for row in shape["rows"] for v in row.values())
