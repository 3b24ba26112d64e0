"""The command line: every sub-command and option is described; errors are one line."""

from __future__ import annotations

import argparse
import sys

import pytest

from yapo_bench.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_option_of_every_command_has_help() -> None:
    seen = []
    for path, parser in _parsers(build_parser()):
        seen.append(" ".join(path))
        assert parser.description or not path, f"{path} has no description"
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"yapo-bench {' '.join(path)}: option {action.dest} has no help"
    assert {"demo", "models", "train", "sae train", "sae eval", "vector info", "vector export-lm-eval"} <= set(seen)


@pytest.mark.parametrize("argv", [["--help"], ["sae", "train", "--help"], ["vector", "info", "--help"]])
def test_help_exits_cleanly(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: yapo-bench" in capsys.readouterr().out


def test_bad_input_is_one_line(tmp_path, capsys) -> None:
    assert main(["vector", "info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("yapo-bench: error: vector: no file at") and "\n" not in err
    assert main(["sae", "eval", "--model", "no-such-preset"]) == 2
    assert "unknown preset 'no-such-preset'" in capsys.readouterr().err


def test_vector_info_and_export(tmp_path, capsys) -> None:
    import torch

    from yapo_bench.steering import SteeringVector

    SteeringVector.dense(torch.arange(4.0), layer=1, method="caa").save(tmp_path / "v")
    assert main(["vector", "info", str(tmp_path / "v")]) == 0
    assert '"method": "caa"' in capsys.readouterr().out
    assert main(["vector", "export-lm-eval", str(tmp_path / "v"), "--out", str(tmp_path / "v.pt")]) == 0
    assert (tmp_path / "v.pt").is_file()


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch) -> None:
    import errno
    import os

    import torch

    from yapo_bench.steering import SteeringVector

    SteeringVector.dense(torch.arange(4.0), layer=1).save(tmp_path / "v")

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    assert main(["vector", "export-lm-eval", str(tmp_path / "v"), "--out", str(tmp_path / "v.pt")]) == 2
    err = capsys.readouterr().err
    assert err == f"yapo-bench: error: cannot write {tmp_path / 'v.pt'}: No space left on device\n"


def test_eval_refuses_a_limit_or_task_selection_lm_eval_would_fail_on(tmp_path, capsys, monkeypatch) -> None:
    """Refused in one line before lm-eval runs (or loads a model); what lm-eval accepts is not refused: names, globs,
    built-in tasks, comma-separated lists, YAML paths, its --config."""
    import lm_eval.__main__

    from yapo_bench.resources import resource_dir

    for limit in ("0", "-2", "all"):
        assert main(["eval", "--model_args", "model=nowhere", "--tasks", "culture_mcq_usa_both", "--limit", limit]) == 2
        assert capsys.readouterr().err == f"yapo-bench: error: --limit: {limit}; expected a positive number " \
                                          "(examples per task, or a fraction of each task below 1)\n"
    assert main(["eval", "--model_args", "model=nowhere", "--tasks", "arc_easy,culture_mcq_*", "nosuch*",
                 str(tmp_path / "none*.yaml"), "--limit", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"yapo-bench: error: --tasks: 'nosuch*', '{tmp_path / 'none*.yaml'}' match no task; ")
    assert err.count("\n") == 1
    (tmp_path / "lm_eval.yaml").write_text(f"tasks: [{tmp_path / 'absent.yaml'}]\nlimit: 0\n")
    assert main(["eval", "--config", str(tmp_path / "lm_eval.yaml")]) == 2
    assert f"limit (in --config {tmp_path / 'lm_eval.yaml'}): 0; expected" in capsys.readouterr().err
    assert main(["eval", "-C", str(tmp_path / "lm_eval.yaml"), "--limit", "1"]) == 2
    assert f"tasks (in --config {tmp_path / 'lm_eval.yaml'}): '{tmp_path / 'absent.yaml'}' matches no task" in \
        capsys.readouterr().err
    ran = []
    monkeypatch.setattr(sys, "argv", ["yapo-bench"])  # restored afterwards: run_lm_eval sets lm-eval's
    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", lambda: ran.append(sys.argv[1:]))
    yaml_file = resource_dir("tasks") / "culture" / "culture_mcq_usa_both.yaml"
    assert main(["eval", "--tasks", f"{yaml_file},culture_open_*", "--limit", "3"]) == 0
    assert ran == [["--model", "yapo_steered", "--tasks", f"{yaml_file},culture_open_*", "--limit", "3"]]


def test_train_and_inspect_vectors_on_a_tiny_local_model(tmp_path, capsys) -> None:
    import json

    from conftest import random_sae, tiny_llama, tiny_tokenizer


    tiny_llama().save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    random_sae().save_model(str(tmp_path / "sae"))
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"w{i}", "chosen": f"w{i + 1} w5", "rejected": f"w{i + 2}"}) + "\n"
                            for i in range(6)))
    common = ["--model", str(tmp_path / "model"), "--layer", "1", "--data", str(data)]
    loop = ["--steps", "3", "--batch-size", "2", "--checkpoint-every", "1", "--eval-every", "2"]
    assert main(["train", "--method", "yapo", *common, "--sae", str(tmp_path / "sae"), *loop,
                 "--out", str(tmp_path / "yapo")]) == 0
    assert main(["train", "--method", "bipo", *common, *loop, "--out", str(tmp_path / "bipo")]) == 0
    assert main(["train", "--method", "caa", *common, "--out", str(tmp_path / "caa")]) == 0
    assert "written to" in capsys.readouterr().out
    assert main(["train", "--method", "bipo", *common, *loop, "--out", str(tmp_path / "bipo"), "--resume"]) == 0
    capsys.readouterr()
    assert main(["vector", "info", str(tmp_path / "yapo"), "--top", "3"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] == "yapo" and info["space"] == "sae" and len(info["top_latents"]) == 3
    assert info["provenance"]["chosen"] == "chosen" and info["config"]["steps"] == 3
    assert main(["train", "--method", "yapo", *common, "--out", str(tmp_path / "x")]) == 2
    assert "--sae: required for method yapo" in capsys.readouterr().err
    assert main(["train", "--method", "bipo", *common, *loop, "--out", str(tmp_path / "bipo")]) == 2
    assert "already holds a training checkpoint" in capsys.readouterr().err
