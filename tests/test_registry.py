"""Adding a method is one new module and one registry line: a toy method, written here as a file, is trained by
`yapo-bench train`, planned, trained, evaluated and reported by `yapo-bench run`, with nothing else changed."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from conftest import tiny_llama, tiny_tokenizer

from yapo_bench import methods
from yapo_bench.cli import main
from yapo_bench.pipeline import RunConfig, make_plan, run

TOY_METHOD = '''"""A toy steering method: the CAA mean difference of the first pair only, scaled."""

from dataclasses import asdict, dataclass

from yapo_bench.methods.mean_diff import MeanDiffSpec, mean_difference
from yapo_bench.steering import SteeringVector

NAME = "toy"
SPARSE = False
LEARNED = False


@dataclass
class Spec:
    layer: int
    scale: float = 2.0


def spec(layer, budget):
    return Spec(layer=layer)


def fit(model, pairs, spec, sae=None):
    values, _ = mean_difference(model, pairs[:1], MeanDiffSpec(layer=spec.layer))
    return SteeringVector.dense(values * spec.scale, layer=spec.layer, model_id=model.model_id, method=NAME,
                                config=asdict(spec))
'''


@pytest.fixture
def toy_method(tmp_path: Path):
    (tmp_path / "toy_method.py").write_text(TOY_METHOD)
    sys.path.insert(0, str(tmp_path))
    module = importlib.import_module("toy_method")
    methods.register(module)  # the one registry line
    yield module
    methods.REGISTRY.remove(module)
    sys.path.remove(str(tmp_path))
    del sys.modules["toy_method"]


def test_a_toy_method_runs_through_train_run_and_report(toy_method, tmp_path: Path) -> None:
    tiny_llama().save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"w{i} w9", "chosen": f"w{i + 1} w5", "rejected": f"w{i + 2}"})
                             + "\n" for i in range(4)))
    assert main(["train", "--method", "toy", "--model", str(tmp_path / "model"), "--layer", "1", "--data",
                 str(pairs), "--out", str(tmp_path / "toy")]) == 0
    assert json.loads((tmp_path / "toy" / "vector.json").read_text())["config"] == {"layer": 1, "scale": 2.0}

    config = RunConfig(name="toy", out=str(tmp_path / "out"), model=str(tmp_path / "model"), layer=1,
                       countries=["egypt"], methods=["base", "toy"], families=["mcq"], limit=2,
                       multipliers={"toy": [1.0]})
    assert [s.key for s in make_plan(config)] == ["train-toy-culture-egypt", "eval-base", "eval-toy-culture-egypt-x1",
                                             "report"]
    run(config, progress=False)
    tables = json.loads((tmp_path / "out" / "report.json").read_text())["tables"]
    assert {row["label"] for row in tables["table1_mcq"]} == {"base", "toy"}


def test_a_method_module_must_declare_what_it_is() -> None:
    incomplete = type(sys)("incomplete")
    incomplete.NAME = "incomplete"
    with pytest.raises(ValueError, match="declares no SPARSE, LEARNED, Spec, spec, fit"):
        methods.register(incomplete)
    with pytest.raises(ValueError, match="method 'caa': already registered"):
        methods.register(methods.get_method("caa"))
