"""`yapo_steered` on a tiny random model: its unsteered path equals lm-eval's `hf`, steering changes the
log-likelihoods, hooks are gone afterwards, bad args fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import HIDDEN, tiny_llama, tiny_tokenizer
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from yapo_bench.lm_eval_plugin import register
from yapo_bench.lm_eval_plugin.model import YapoSteeredLM
from yapo_bench.steering import SteeringVector

REQUESTS = [("w1 w2 w3", " w4 w5"), ("w10 w11", " w12"), ("w20", " w21 w22 w23")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny")
    tiny_llama().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def _loglikelihoods(lm) -> list[float]:
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(REQUESTS)]
    return [logprob for logprob, _ in lm.loglikelihood(requests, disable_tqdm=True)]


def test_unsteered_equals_hf_and_steering_changes_scores(model_dir: Path, tmp_path: Path) -> None:
    cpu = {"device": "cpu", "dtype": "float32"}  # both sides in one placement (auto is bf16 on a GPU)
    reference = _loglikelihoods(HFLM(pretrained=str(model_dir), batch_size=2, **cpu))
    assert _loglikelihoods(YapoSteeredLM(model=str(model_dir), batch_size=2, **cpu)) == pytest.approx(reference,
                                                                                                       abs=1e-5)
    torch.manual_seed(0)
    SteeringVector.dense(torch.randn(HIDDEN), layer=1).save(tmp_path / "v")
    zero = YapoSteeredLM(model=str(model_dir), vector=str(tmp_path / "v"), multiplier=0, batch_size=2, **cpu)
    assert _loglikelihoods(zero) == pytest.approx(reference, abs=1e-5)
    steered = YapoSteeredLM(model=str(model_dir), vector=str(tmp_path / "v"), multiplier=2.0, batch_size=2, **cpu)
    scores = _loglikelihoods(steered)
    assert max(abs(a - b) for a, b in zip(scores, reference)) > 1e-2
    layers = steered.loaded.model.model.layers
    assert not layers[1]._forward_hooks and not steered.loaded.model.model._forward_pre_hooks


def test_bad_model_args_fail_in_one_line(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="direction: 0; expected -1 or 1"):
        YapoSteeredLM(model=str(model_dir), direction=0)
    with pytest.raises(ValueError, match="positions: 'middle'"):
        YapoSteeredLM(model=str(model_dir), positions="middle")
    with pytest.raises(ValueError, match="train: 'dpo:x'; expected <method>:<data>"):
        YapoSteeredLM(model=str(model_dir), train="dpo:x")
    with pytest.raises(ValueError, match="give vector=PATH or train="):
        YapoSteeredLM(model=str(model_dir), vector="v", train="caa:demo:cheerful")


def test_registration_keeps_hf(model_dir: Path) -> None:
    from lm_eval.api.registry import get_model

    register()
    assert get_model("yapo_steered") is YapoSteeredLM and get_model("hf") is HFLM


def test_train_arg_trains_once_and_reuses_the_cached_vector(model_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from yapo_bench.methods import bipo

    monkeypatch.setenv("YAPO_BENCH_CACHE", str(tmp_path / "cache"))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"w{i}", "chosen": f"w{i + 1}", "rejected": f"w{i + 2}"}) + "\n"
                             for i in range(6)))
    calls = []
    real_fit = bipo.fit
    monkeypatch.setattr(bipo, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    args = dict(model=str(model_dir), train=f"bipo:{pairs}", layer=1, steps=2, lr=0.05, batch_size=2)
    first = YapoSteeredLM(**args)
    second = YapoSteeredLM(**args)
    assert len(calls) == 1 and first.steering_vector.method == "bipo"
    assert torch.equal(first.steering_vector.values, second.steering_vector.values)
    assert YapoSteeredLM(**{**args, "steps": 3}).steering_vector.config["steps"] == 3 and len(calls) == 2


def test_plain_lm_eval_cli_finds_yapo_steered_and_keeps_hf(model_dir: Path, tmp_path: Path) -> None:
    """The real `lm_eval` script, no flags for our model: the .pth autoload registers it; `hf` still works."""
    import json
    import subprocess
    import sys

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"q": f"w{i} w{i + 1}", "choices": [f"w{i + 2}", f"w{i + 3}"], "gold": 0}) + "\n"
                            for i in range(4)))
    (tmp_path / "tiny.yaml").write_text(
        f"task: tiny_choice\ndataset_path: json\ndataset_kwargs:\n  data_files: {data}\ntest_split: train\n"
        "output_type: multiple_choice\ndoc_to_text: '{{q}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: gold\n"
        "metric_list:\n  - metric: acc\n")
    lm_eval = Path(sys.executable).with_name("lm_eval")
    for model, args in (("yapo_steered", f"model={model_dir}"), ("hf", f"pretrained={model_dir}")):
        out = subprocess.run([str(lm_eval), "--model", model, "--model_args", args, "--device", "cpu", "--tasks",
                              "tiny_choice", "--include_path", str(tmp_path), "--output_path", str(tmp_path / model)],
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "tiny_choice" in out.stdout and f"{model} (" in out.stdout
        assert list((tmp_path / model).rglob("results_*.json"))


def test_request_cache_is_separate_per_steering_config(model_dir: Path, tmp_path: Path) -> None:
    from lm_eval.api.model import CachingLM

    register()
    SteeringVector.dense(torch.ones(HIDDEN), layer=1).save(tmp_path / "v")
    base = YapoSteeredLM(model=str(model_dir))
    steered = YapoSteeredLM(model=str(model_dir), vector=str(tmp_path / "v"), multiplier=2.0)
    again = YapoSteeredLM(model=str(model_dir), vector=str(tmp_path / "v"), multiplier=2.0)
    assert base.steering_digest != steered.steering_digest == again.steering_digest
    for lm in (base, steered):
        CachingLM(lm, str(tmp_path / "cache" / "requests_rank0.db"))
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == sorted(f"requests_rank0_steer-{lm.steering_digest}.db" for lm in (base, steered))


def test_yapo_bench_eval_front_runs_lm_eval(model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from yapo_bench.cli import main

    assert main(["eval", "--model_args", f"model={model_dir}", "--tasks", "culture_mcq_usa_both", "--limit", "1"]) == 0
    assert "culture_mcq_usa_both" in capsys.readouterr().out


def _manual_loglikelihood(lm: YapoSteeredLM, context: str, continuation: str, **steering) -> float:
    """Σ log p(continuation | context) by one plain forward under `steer`, with lm-eval's own tokenization."""
    from yapo_bench.steering import steer

    context_enc, continuation_enc = lm._encode_pair(context, continuation)
    ids = torch.tensor([context_enc + continuation_enc], device=lm.device)
    with torch.no_grad(), steer(lm.loaded.model, **steering):
        logprobs = lm.loaded.model(ids[:, :-1]).logits.log_softmax(-1)[0]
    targets = ids[0, len(context_enc):]
    return float(logprobs[len(context_enc) - 1:].gather(-1, targets[:, None]).sum())


@pytest.mark.parametrize("positions", ["prompt", "response", "generated"])
def test_loglikelihood_steers_exactly_the_requested_positions(model_dir: Path, tmp_path: Path, positions: str) -> None:
    """With prompt/response positions, each request's continuation boundary reaches steer(): the scores equal a
    plain forward steered at the same positions, and differ from both the base and all-positions runs."""
    torch.manual_seed(0)
    vector = SteeringVector.dense(torch.randn(HIDDEN) * 3, layer=1)
    vector.save(tmp_path / "v")
    cpu = {"device": "cpu", "dtype": "float32"}  # fp32: the 1e-4 match to a plain forward is not a bf16 one
    lm = YapoSteeredLM(model=str(model_dir), vector=str(tmp_path / "v"), multiplier=1.0, positions=positions,
                       batch_size=2, **cpu)
    scores = _loglikelihoods(lm)
    base = _loglikelihoods(YapoSteeredLM(model=str(model_dir), batch_size=2, **cpu))
    every = _loglikelihoods(YapoSteeredLM(model=str(model_dir), vector=str(tmp_path / "v"), multiplier=1.0,
                                          batch_size=2, **cpu))
    for (context, continuation), score, plain, everywhere in zip(REQUESTS, scores, base, every):
        context_enc, continuation_enc = lm._encode_pair(context, continuation)
        expected = _manual_loglikelihood(lm, context, continuation, vector=vector, multiplier=1.0,
                                         positions=positions, response_start=[len(context_enc)])
        assert score == pytest.approx(expected, abs=1e-4)
        if positions != "prompt" or len(continuation_enc) > 1:  # else the window is all prompt: as "all"
            assert score != pytest.approx(everywhere, abs=1e-3)
        if positions == "prompt" or len(continuation_enc) > 1:
            assert score != pytest.approx(plain, abs=1e-3)
        else:  # response steering of a one-token continuation: its log-prob comes from the unsteered prompt
            assert score == pytest.approx(plain, abs=1e-5)


def test_a_layer_other_than_the_vectors_is_refused(model_dir: Path, tmp_path: Path) -> None:
    SteeringVector.dense(torch.ones(HIDDEN), layer=1).save(tmp_path / "v")
    with pytest.raises(ValueError, match="layer: 3 but the vector .* was made at layer 1"):
        YapoSteeredLM(model=str(model_dir), vector=str(tmp_path / "v"), layer=3)
    with pytest.raises(ValueError, match="layer: -1; expected a non-negative integer"):
        YapoSteeredLM(model=str(model_dir), vector=str(tmp_path / "v"), layer=-1)
    lm = YapoSteeredLM(model=str(model_dir), vector=str(tmp_path / "v"))  # recorded: the layer that ran
    assert lm.get_model_info()["yapo_steering"]["layer"] == 1


def test_a_rank_that_accelerate_puts_on_cuda_0_loads_there(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With more ranks than GPUs accelerate puts rank 1 on cuda:0 too (local rank % GPUs); that device is the
    rank's, not lm-eval's default --device cuda:0, which auto would have turned into cuda:<LOCAL_RANK> (cuda:1:
    "invalid device ordinal" on a one-GPU machine). No GPU needed: the load is stopped where it is placed."""
    from types import SimpleNamespace

    import yapo_bench.lm_eval_plugin.model as plugin

    class Placed(Exception):
        pass

    def placed(device, dtype):
        raise Placed(device)

    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(plugin, "_data_parallel_accelerator", lambda: SimpleNamespace(device=torch.device("cuda:0")))
    monkeypatch.setattr(plugin, "resolve_placement", placed)
    with pytest.raises(Placed) as raised:
        YapoSteeredLM(model=str(model_dir), device=plugin.LM_EVAL_DEFAULT_DEVICE)  # what lm-eval passes unasked
    assert raised.value.args == ("cuda:0",)
