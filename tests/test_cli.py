"""The command line: every sub-command and option is described; errors are one line."""

from __future__ import annotations

import argparse

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
    assert {"demo", "models", "sae train", "sae eval", "vector info", "vector export-lm-eval"} <= set(seen)


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
