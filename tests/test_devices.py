"""Device and dtype without a GPU: the model in bf16 with the SAE and vector in fp32 gives the fp32 results within
bf16 tolerance (and λ = 0 is still bit-identical to the unsteered bf16 model); and, with the model on PyTorch's
`meta` device standing for an accelerator, every tensor the steering hook and a training step touch is on the
model's device (a CPU tensor mixed in raises, as it would against CUDA) and nothing crosses devices per forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import D_SAE, HIDDEN, random_sae, tiny_gemma3, tiny_llama, tiny_tokenizer
from torch.utils._python_dispatch import TorchDispatchMode

from yapo_bench.devices import resolve_placement
from yapo_bench.methods.preference import PreferenceBatchScorer, encode_pairs, preference_loss
from yapo_bench.models import LoadedModel
from yapo_bench.pairs import PreferencePair
from yapo_bench.steering import SteeringError, SteeringVector, steer

LAYER = 2
PAIRS = [PreferencePair("w1 w2 w3", "w4 w5 w6", "w8 w9"), PreferencePair("w10", "w11 w12", "w13 w14 w15")]


def _vectors(sae: torch.nn.Module) -> dict[str, SteeringVector]:
    gen = torch.Generator().manual_seed(3)
    sparse = torch.zeros(D_SAE)
    sparse[torch.randperm(D_SAE, generator=gen)[:8]] = torch.rand(8, generator=gen) * 3
    return {"dense": SteeringVector.dense(torch.randn(HIDDEN, generator=gen), layer=LAYER),
            "sae": SteeringVector.sparse(sparse, layer=LAYER, sae=sae)}


def test_placement_defaults_and_refusals() -> None:
    cpu_only = not torch.cuda.is_available()
    assert resolve_placement().record() == ({"device": "cpu", "dtype": "float32"} if cpu_only else
                                            {"device": "cuda", "dtype": "bfloat16"})
    assert resolve_placement("cpu", "bfloat16").torch_dtype is torch.bfloat16
    assert resolve_placement("cpu", torch.float16).dtype == "float16"
    with pytest.raises(ValueError, match="dtype: 'float8'; expected one of auto, float32"):
        resolve_placement("cpu", "float8")
    with pytest.raises(ValueError, match="device: 'tpu'; expected auto, cpu, cuda or cuda:N"):
        resolve_placement("tpu")
    if cpu_only:
        with pytest.raises(ValueError, match="device: 'cuda' but this machine has no CUDA device"):
            resolve_placement("cuda")


# -- bf16 model, fp32 SAE and vector ------------------------------------------------------------------------


@pytest.mark.parametrize("make", [tiny_llama, tiny_gemma3])
@pytest.mark.parametrize("space", ["dense", "sae"])
def test_bf16_steering_matches_fp32_within_bf16_tolerance(make, space: str) -> None:
    sae = random_sae()
    vector = _vectors(sae)[space]
    ids = torch.randint(1, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = make().to(dtype)
        with torch.no_grad():
            clean = model(ids).logits.float()
            with steer(model, vector, multiplier=0.0, sae=sae):
                zero = model(ids).logits.float()
            with steer(model, vector, multiplier=2.0, sae=sae):
                results[dtype] = model(ids).logits.float()
        assert torch.equal(zero, clean)  # λ = 0 is the unsteered model, bit for bit, in either dtype
        if dtype is torch.float32:
            effect = (results[dtype] - clean).abs().max()
    error = (results[torch.bfloat16] - results[torch.float32]).abs().max()
    assert effect > 0.05 and error < 0.1 * effect + 0.05, (float(error), float(effect))


def test_bf16_preference_step_keeps_v_in_fp32_and_matches_fp32() -> None:
    sae = random_sae()
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        loaded = LoadedModel(model=tiny_llama().to(dtype), tokenizer=tiny_tokenizer(), model_id="tiny")
        encoded, _ = encode_pairs(loaded, PAIRS, max_length=64)
        scorer = PreferenceBatchScorer(loaded, layer=1, sae=sae, positions="all", naive=False)
        values = (torch.rand(D_SAE, generator=torch.Generator().manual_seed(5)) * 2).requires_grad_()
        loss, _ = preference_loss(scorer, encoded, SteeringVector.sparse(values, layer=1, sae=sae), 1, beta=0.5)
        loss.backward()
        assert values.grad.dtype is torch.float32
        out[dtype] = (float(loss.detach()), values.grad.clone())
    (loss32, grad32), (loss16, grad16) = out[torch.float32], out[torch.bfloat16]
    assert loss16 == pytest.approx(loss32, rel=0.05)
    cosine = torch.nn.functional.cosine_similarity(grad16, grad32, dim=0)
    assert cosine > 0.98, float(cosine)


def test_bf16_lm_eval_model_matches_fp32_and_records_its_dtype(tmp_path: Path) -> None:
    from lm_eval.api.instance import Instance

    from yapo_bench.lm_eval_plugin.model import YapoSteeredLM

    tiny_llama().save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    SteeringVector.dense(torch.randn(HIDDEN, generator=torch.Generator().manual_seed(2)) * 2, layer=1).save(
        tmp_path / "v")
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
                for i, pair in enumerate([("w1 w2 w3", " w4 w5"), ("w10 w11", " w12")])]

    def scores(**args) -> list[float]:
        lm = YapoSteeredLM(model=str(tmp_path / "model"), batch_size=2, **args)
        return [logprob for logprob, _ in lm.loglikelihood(requests, disable_tqdm=True)], lm

    fp32, _ = scores(vector=str(tmp_path / "v"))
    bf16, lm = scores(vector=str(tmp_path / "v"), dtype="bfloat16")
    assert lm.get_model_info()["yapo_steering"]["dtype"] == "bfloat16"
    assert bf16 == pytest.approx(fp32, abs=0.15)
    assert scores(vector=str(tmp_path / "v"), dtype="bfloat16", multiplier=0)[0] == scores(dtype="bfloat16")[0]


# -- the meta device standing for an accelerator --------------------------------------------------------------


class _CrossDeviceCopies(TorchDispatchMode):
    """Records every copy from one device to another while active."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        source, target = None, None
        if func is torch.ops.aten._to_copy.default and "device" in kwargs:
            source, target = args[0], kwargs["device"]
        elif func is torch.ops.aten.copy_.default:
            source, target = args[1], args[0].device
        # 0-dim tensors are scalars (transformers makes a few per forward, e.g. Gemma's embedding scale)
        if source is not None and source.dim() > 0 and torch.device(target) != source.device:
            self.copies.append(f"{source.device} -> {target} {tuple(source.shape)}")
        return func(*args, **kwargs)


def _on_meta(make) -> torch.nn.Module:
    model = make()
    model.set_attn_implementation("eager")  # sdpa's mask check reads values, which meta tensors have none of
    return model.to("meta")


@pytest.mark.parametrize("make", [tiny_llama, tiny_gemma3])
@pytest.mark.parametrize("space, form", [("dense", "support"), ("sae", "support"), ("sae", "full")])
@pytest.mark.parametrize("positions", ["all", "response"])
def test_the_steering_hook_touches_only_the_models_device(make, space: str, form: str, positions: str) -> None:
    model = _on_meta(make)
    sae = random_sae()
    vector = _vectors(sae)[space]  # on the CPU, as loaded
    sae = sae.to("meta")
    ids = torch.randint(1, 128, (2, 7)).to("meta")
    mask = torch.ones(2, 7, dtype=torch.long, device="meta")
    with steer(model, vector, multiplier=1.5, sae=sae, positions=positions, response_start=[3, 4],
               sparse_form=form), torch.no_grad(), _CrossDeviceCopies() as watch:
        for _ in range(3):
            logits = model(input_ids=ids, attention_mask=mask).logits
    assert logits.device.type == "meta"
    assert watch.copies == []  # v, the SAE's columns and the position masks were put there once, on entry


def test_an_sae_on_another_device_than_the_model_is_refused() -> None:
    sae = random_sae()
    with pytest.raises(SteeringError, match="sae: its weights are on cpu but layer 2 runs on meta"):
        with steer(_on_meta(tiny_llama), _vectors(sae)["sae"], sae=sae):
            pass


@pytest.mark.parametrize("space", ["dense", "sae"])
def test_a_training_step_touches_only_the_models_device(space: str) -> None:
    loaded = LoadedModel(model=_on_meta(tiny_llama), tokenizer=tiny_tokenizer(), model_id="tiny")
    sae = random_sae() if space == "sae" else None
    dim = D_SAE if sae is not None else HIDDEN
    encoded, _ = encode_pairs(loaded, PAIRS, max_length=64)
    for naive in (False, True):
        # the vector records the SAE's hash, read (once) before the SAE goes to the model's device
        vector = (SteeringVector.sparse(torch.zeros(dim), layer=1, sae=sae) if sae is not None
                  else SteeringVector.dense(torch.zeros(dim), layer=1))
        if sae is not None:
            sae.to("meta")
        scorer = PreferenceBatchScorer(loaded, layer=1, sae=sae, positions="response", naive=naive)
        values = torch.zeros(dim, device="meta", requires_grad=True)
        vector.values = values  # as the training loop's v: on the model's device (the check of values reads them)
        loss, stats = preference_loss(scorer, encoded, vector, [1, -1], beta=0.1)
        loss.backward()
        assert loss.device.type == values.grad.device.type == "meta"
        assert {value.device.type for value in stats.values()} == {"meta"}
