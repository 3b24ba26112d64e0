"""The steering core, the preference loop and the lm-eval model on CUDA (skipped without a GPU; `make gpu-check`
runs them): the same results as on the CPU in fp32, within bf16 tolerance, and λ = 0 still the unsteered model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import D_SAE, HIDDEN, random_sae, tiny_gemma3, tiny_llama, tiny_tokenizer

from yapo_bench.internals import continuation_layer_outputs, layer_output
from yapo_bench.methods.preference import PreferenceSpec, train_preference_vector
from yapo_bench.models import LoadedModel
from yapo_bench.pairs import PairSet, PreferencePair
from yapo_bench.sae import sae_hash
from yapo_bench.steering import SteeringVector, steer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
LAYER = 2


def _sparse(sae: torch.nn.Module) -> SteeringVector:
    values = torch.zeros(D_SAE)
    values[torch.randperm(D_SAE, generator=torch.Generator().manual_seed(0))[:8]] = 2.0
    return SteeringVector.sparse(values, layer=LAYER, sae=sae)


@pytest.mark.parametrize("make", [tiny_llama, tiny_gemma3])
@pytest.mark.parametrize("space", ["dense", "sae"])
def test_steering_on_cuda_bf16_matches_the_cpu(make, space: str) -> None:
    sae = random_sae()
    vector = _sparse(sae) if space == "sae" else SteeringVector.dense(torch.randn(HIDDEN), layer=LAYER)
    ids = torch.randint(1, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    cpu = make()
    with torch.no_grad(), steer(cpu, vector, multiplier=2.0, sae=sae):
        expected = cpu(ids).logits
    gpu, gpu_sae = make().to("cuda", torch.bfloat16), random_sae().cuda()
    gpu_sae._yapo_sae_hash = sae_hash(sae)  # the same weights, hashed on the CPU
    with torch.no_grad():
        clean = gpu(ids.cuda()).logits
        with steer(gpu, vector, multiplier=0.0, sae=gpu_sae):
            assert torch.equal(gpu(ids.cuda()).logits, clean)
        with steer(gpu, vector, multiplier=2.0, sae=gpu_sae):
            got = gpu(ids.cuda()).logits.float().cpu()
    assert (got - expected).abs().max() < 0.1 * (expected - cpu(ids).logits).abs().max() + 0.05


@pytest.mark.parametrize("positions", ["generated", "prompt"])
def test_generation_on_cuda_steers_what_a_full_forward_does(positions: str) -> None:
    model = tiny_llama().cuda()
    vector = SteeringVector.dense(torch.randn(HIDDEN) * 2, layer=LAYER)
    prompt = torch.randint(1, 128, (2, 6), device="cuda")
    with torch.no_grad():
        with steer(model, vector, multiplier=3.0, positions=positions):
            out = model.generate(prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False, output_logits=True,
                                 return_dict_in_generate=True, pad_token_id=0)
        mask = torch.zeros(out.sequences.shape, dtype=torch.bool, device="cuda")
        mask[:, : prompt.shape[1]] = positions == "prompt"
        mask[:, prompt.shape[1]:] = positions == "generated"
        with steer(model, vector, multiplier=3.0, positions=mask):
            full = model(out.sequences).logits
    for step, logits in enumerate(out.logits):
        torch.testing.assert_close(logits, full[:, prompt.shape[1] - 1 + step], rtol=1e-3, atol=1e-3)


def test_continuations_and_preference_training_on_cuda() -> None:
    model = tiny_gemma3().cuda()
    prefixes = [torch.randint(1, 128, (n,)) for n in (4, 7)]
    continuations = [[torch.randint(1, 128, (3,)), torch.randint(1, 128, (2,))] for _ in prefixes]
    for prefix, group, got in zip(prefixes, continuations, continuation_layer_outputs(model.model, 1, prefixes,
                                                                                        continuations)):
        for continuation, state in zip(group, got):
            whole = torch.cat([prefix, continuation])[None].cuda()
            torch.testing.assert_close(state, layer_output(model.model, 1, input_ids=whole)[0, len(prefix):],
                                       rtol=1e-4, atol=1e-4)
    pairs = PairSet([PreferencePair(f"w{i} w{i + 1}", f"w{i + 20} w5", f"w{i + 40}") for i in range(8)], "t", "w5")
    spec = PreferenceSpec(layer=1, steps=5, batch_size=2, lr=0.05, warmup_steps=1, eval_every=0, checkpoint_every=0,
                          heldout_fraction=0.0, progress=False)
    sae = random_sae()
    cpu = train_preference_vector(LoadedModel(tiny_llama(), tiny_tokenizer(), "tiny"), pairs, spec, sae, "yapo")
    gpu_sae = random_sae().cuda()
    gpu_sae._yapo_sae_hash = sae_hash(sae)
    gpu = train_preference_vector(LoadedModel(tiny_llama().cuda(), tiny_tokenizer(), "tiny"), pairs, spec, gpu_sae,
                                  "yapo")
    assert gpu.values.device.type == "cpu" and gpu.provenance["device"].startswith("cuda")
    torch.testing.assert_close(gpu.values, cpu.values, rtol=1e-3, atol=1e-4)


def test_yapo_steered_on_cuda(tmp_path: Path) -> None:
    from lm_eval.api.instance import Instance

    from yapo_bench.lm_eval_plugin.model import YapoSteeredLM

    tiny_llama().save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    SteeringVector.dense(torch.randn(HIDDEN) * 2, layer=1).save(tmp_path / "v")
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=("w1 w2 w3", " w4 w5"), idx=0)]

    def score(**args) -> float:
        lm = YapoSteeredLM(model=str(tmp_path / "model"), vector=str(tmp_path / "v"), batch_size=1, **args)
        return lm.loglikelihood(requests, disable_tqdm=True)[0][0]

    assert score(device="cuda", dtype="float32") == pytest.approx(score(device="cpu"), abs=1e-3)
