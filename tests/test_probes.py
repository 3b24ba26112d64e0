"""The bad-input and fault probes of issue 14, run as a new user would (the CLI, lm_eval, yapo_steered): each was
a silent wrong or an unclear error, and each is a clear one-line refusal or a stop that names what happened.
(The log-likelihood positions probe lives in test_lm_eval_model.py, the judge's in test_judge.py.)"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HIDDEN, tiny_llama, tiny_tokenizer

from yapo_bench.cli import main
from yapo_bench.locking import exclusive
from yapo_bench.steering import SteeringVector

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny")
    tiny_llama().save_pretrained(path)  # 128 positions
    tiny_tokenizer().save_pretrained(path)
    return path


def _pairs(path: Path, prompt_words: int = 3, rows: int = 8) -> Path:
    path.write_text("".join(json.dumps({"prompt": " ".join(f"w{(i + j) % 100}" for j in range(prompt_words)),
                                        "chosen": f"w{i + 1} w5", "rejected": f"w{i + 2} w7"}) + "\n"
                            for i in range(rows)))
    return path


def _err(capsys: pytest.CaptureFixture) -> str:
    """The one error line (progress bars also write to stderr), with no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("yapo-bench: error:")]
    assert "Traceback" not in err and len(errors) == 1, err
    return errors[0]


# -- settings that take effect or are refused -------------------------------------------------------------------


def test_a_layer_the_sae_does_not_read_is_refused(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """`train --method sas --layer 14` used the shipped layer-15 SAE at layer 14, silently."""
    assert main(["train", "--method", "sas", "--layer", "14", "--data", "demo:cheerful", "--out",
                 str(tmp_path / "v")]) == 2
    assert "--layer: 14 but the SAE smollm2-135m-l15-batchtopk reads layer 15" in _err(capsys)
    assert not (tmp_path / "v" / "vector.json").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_bad_multipliers_are_refused_before_any_work(value: str, model_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    vector = SteeringVector.dense(torch.ones(HIDDEN), layer=1)
    vector.save(tmp_path / "v")
    with pytest.raises(SystemExit) as exit_info:  # argparse: exit 2 with one usage line
        main(["vector", "export-lm-eval", str(tmp_path / "v"), "--out", str(tmp_path / "s.pt"),
              "--multiplier", value])
    assert exit_info.value.code == 2 and not (tmp_path / "s.pt").exists()
    assert "--multiplier" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text(f"name: x\nout: {tmp_path / 'out'}\nmodel: {model_dir}\nlayer: 1\ncountries: [egypt]\n"
                      f"multipliers: {{caa: [{'.nan' if value == 'nan' else '.inf' if value == 'inf' else value}]}}\n")
    assert main(["run", str(config)]) == 2
    assert "multipliers.caa" in _err(capsys) and not (tmp_path / "out").exists()
    from yapo_bench.lm_eval_plugin.model import YapoSteeredLM

    with pytest.raises(ValueError, match="multiplier: "):
        YapoSteeredLM(model=str(model_dir), vector=str(tmp_path / "v"), multiplier=float(value))


def test_nested_config_typos_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for section, text in (("training.stpes", "training: {stpes: 6}"), ("judge.lcoal", "judge: {lcoal: true}")):
        (tmp_path / "c.yaml").write_text(f"name: x\nout: {tmp_path / 'out'}\ncountries: [egypt]\n{text}\n")
        assert main(["run", str(tmp_path / "c.yaml"), "--dry-run"]) == 2
        assert f"unknown field {section}" in _err(capsys)


# -- failures that stop and say so --------------------------------------------------------------------------------


@pytest.mark.parametrize("lr", ["1e3", "1e30", "1e38"])
def test_divergence_stops_training_and_saves_nothing_non_finite(lr: str, model_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """lr 1e3 used to exit 0 with ‖v‖ 2e7 and a rising loss, 1e30 checkpointed inf, 1e38 raised a traceback."""
    out = tmp_path / "run"
    code = main(["train", "--method", "bipo", "--model", str(model_dir), "--layer", "1", "--data",
                 str(_pairs(tmp_path / "p.jsonl")), "--steps", "20", "--batch-size", "2", "--lr", lr,
                 "--warmup-steps", "0", "--checkpoint-every", "1", "--out", str(out)])
    assert code == 2
    assert "training stopped; last good checkpoint" in _err(capsys)
    assert not (out / "vector.json").exists()
    if (out / "checkpoint.pt").exists():
        assert torch.isfinite(torch.load(out / "checkpoint.pt", weights_only=True)["values"]).all()
    log = out / "train_log.jsonl"
    for line in log.read_text().splitlines() if log.exists() else []:
        record = json.loads(line)
        assert all(math.isfinite(v) for k, v in record.items() if isinstance(v, float))


def test_a_second_writer_is_refused_naming_the_holder(model_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    with exclusive(out):
        assert main(["train", "--method", "caa", "--model", str(model_dir), "--layer", "1", "--data",
                     str(_pairs(tmp_path / "p.jsonl")), "--out", str(out)]) == 2
        assert f"is being written by pid {os.getpid()}" in _err(capsys)
        (tmp_path / "c.yaml").write_text(f"name: x\nout: {out}\nmodel: {model_dir}\nlayer: 1\ncountries: [egypt]\n"
                                         "methods: [base, caa]\n")
        assert main(["run", str(tmp_path / "c.yaml")]) == 2
        assert "out: " in _err(capsys)
    assert not (out / "vector.json").exists()


def test_over_long_inputs_are_cut_by_one_rule_counted_and_recorded(model_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """CAA read a 20,004-token prompt through a model with 8,192 positions; here 150 tokens through 128."""
    long_prompt = _pairs(tmp_path / "long.jsonl", prompt_words=150)
    for method, budget in (("caa", []), ("bipo", ["--steps", "1"])):
        assert main(["train", "--method", method, "--model", str(model_dir), "--layer", "1", "--data",
                     str(long_prompt), *budget, "--out", str(tmp_path / method)]) == 2
        assert "max_length: 128 leaves no response token" in _err(capsys)  # the model's positions, not 256
    medium = _pairs(tmp_path / "medium.jsonl", prompt_words=100)
    assert main(["train", "--method", "caa", "--model", str(model_dir), "--layer", "1", "--data", str(medium),
                 "--max-length", "101", "--out", str(tmp_path / "cut")]) == 0
    recorded = json.loads((tmp_path / "cut" / "vector.json").read_text())
    assert recorded["provenance"]["truncated_sequences"] == 16 and recorded["config"]["max_length"] == 101
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(medium.read_text() + long_prompt.read_text())  # 8 pairs that fit, 8 whose prompts do not
    assert main(["train", "--method", "bipo", "--model", str(model_dir), "--layer", "1", "--data", str(mixed),
                 "--steps", "1", "--out", str(tmp_path / "mixed")]) == 0
    assert "8 of 16 pairs dropped: their prompts alone exceed max_length=128 tokens" in capsys.readouterr().out
    assert json.loads((tmp_path / "mixed" / "vector.json").read_text())["provenance"]["dropped_pairs"] == 8


# -- errors that name the file, row or field ----------------------------------------------------------------------


def test_unreadable_files_are_named_and_every_file_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"id": "x"}\n{"id": "a\xf1o"}\n'.encode("latin-1"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    assert main(["data", "validate", str(latin), str(broken)]) == 2
    out = capsys.readouterr().out
    assert f"{latin} row 2: not UTF-8 text (byte 0xf1 at column 10)" in out
    assert f"{broken} row 1: invalid JSON" in out  # the second file is reported too
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["train", "--method", "caa", "--data", str(empty), "--out", str(tmp_path / "v")]) == 2
    assert f"{empty}: not a readable CSV" in _err(capsys)


def test_a_setting_the_method_does_not_take_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`train --method caa --steps 10` used to drop --steps silently."""
    assert main(["train", "--method", "caa", "--steps", "10", "--data", "demo:cheerful", "--out",
                 str(tmp_path / "v")]) == 2
    assert "--steps: not a setting of method caa" in _err(capsys)
    assert main(["train", "--method", "caa", "--resume", "--data", "demo:cheerful", "--out", str(tmp_path / "v")]) == 2
    assert "--resume: method caa is not trained step by step" in _err(capsys)


def test_model_specs_are_checked_first(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--method", "caa", "--model", "smollm3", "--data", "demo:cheerful", "--out",
                 str(tmp_path / "v")]) == 2
    assert "model: unknown preset 'smollm3'" in _err(capsys)  # not "--layer: required"
    assert main(["train", "--method", "caa", "--model", "org/model", "--data", "demo:cheerful", "--out",
                 str(tmp_path / "v")]) == 2
    assert "--layer: required for model 'org/model'" in _err(capsys)


def test_an_unwritable_output_fails_before_computing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["train", "--method", "caa", "--data", "demo:cheerful", "--out", str(blocker / "v")]) == 2
    assert f"cannot access {blocker / 'v'}" in _err(capsys)


def test_a_pickle_offered_as_a_vector_says_why(tmp_path: Path) -> None:
    from yapo_bench.steering import VectorFileError

    torch.save({"layers.1": {"steering_vector": torch.ones(HIDDEN)}}, tmp_path / "v.pt")
    with pytest.raises(VectorFileError, match=r"is a pickle \(\.pt\), which yapo-bench never loads because "
                                              r"unpickling can run code"):
        SteeringVector.load(tmp_path / "v.pt")


def test_lm_eval_bad_model_arg_is_one_line_and_exit_2(model_dir: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(BIN / "lm_eval"), "--model", "yapo_steered", "--model_args",
                           f"model={model_dir},multiplier=-1", "--tasks", "culture_mcq_egypt_both", "--limit", "1"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "lm_eval: error: multiplier: -1.0; expected a finite number >= 0" in done.stderr
    assert "Traceback" not in done.stderr
