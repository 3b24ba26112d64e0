"""Model internals read whatever form the installed transformers uses: the cache under `cache` or
`past_key_values`, decoder layers returning a tensor or a tuple. Each test fails on the wrong assumption."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import HIDDEN, tiny_gemma3, tiny_llama
from torch import nn
from transformers import DynamicCache

from yapo_bench.internals import (
    CACHE_NAMES,
    cache_keyword,
    edit_layer_output,
    forward_arguments,
    layer_output,
    output_cache,
    record_layer_outputs,
    replay_layer_output,
)
from yapo_bench.steering import SteeringVector, steer

LAYER = 2


def _vector() -> SteeringVector:
    return SteeringVector.dense(torch.randn(HIDDEN, generator=torch.Generator().manual_seed(3)) * 2, layer=LAYER)


def _prompt(batch: int = 2, length: int = 6) -> torch.Tensor:
    return torch.randint(1, 128, (batch, length), generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("make", [tiny_llama, tiny_gemma3])
@pytest.mark.parametrize("positions", ["generated", "prompt", "all"])
def test_generation_steers_exactly_the_positions_a_full_forward_would(make, positions: str) -> None:
    """Generation with a KV cache must steer the same positions as one full forward over prompt + generated
    tokens with the equivalent mask: every decode step sees the cached length, whatever the cache keyword."""
    model = make()
    prompt = _prompt()
    new = 5
    kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, output_logits=True,
                  return_dict_in_generate=True, pad_token_id=0)
    with torch.no_grad():
        clean = model.generate(prompt, **kwargs)
        with steer(model, _vector(), multiplier=3.0, positions=positions) as handle:
            steered = model.generate(prompt, **kwargs)
        assert handle.calls == new  # the prefill and one pass per later token
        sequence = steered.sequences
        mask = torch.zeros(sequence.shape, dtype=torch.bool)
        if positions in ("prompt", "all"):
            mask[:, : prompt.shape[1]] = True
        if positions in ("generated", "all"):
            mask[:, prompt.shape[1]:] = True
        with steer(model, _vector(), multiplier=3.0, positions=mask):
            full = model(sequence).logits
    for step in range(new):
        torch.testing.assert_close(steered.logits[step], full[:, prompt.shape[1] - 1 + step], rtol=1e-4, atol=1e-4)
    if positions == "generated":  # the first token comes from the unsteered prefill, every later one is steered
        assert torch.equal(steered.logits[0], clean.logits[0])
    else:
        assert not torch.allclose(steered.logits[0], clean.logits[0])
    with torch.no_grad():  # steps 2..n differ from the unsteered model on the same tokens
        unsteered_same_tokens = model(sequence).logits
    for step in range(1, new):
        assert not torch.allclose(steered.logits[step], unsteered_same_tokens[:, prompt.shape[1] - 1 + step])


@pytest.mark.parametrize("keyword", CACHE_NAMES)
def test_cache_is_read_under_either_keyword(keyword: str) -> None:
    """A decode step passed its cache as `cache` or as `past_key_values` is a decode step, not a new prefill."""
    model = tiny_llama()
    prompt = _prompt(batch=1)
    with torch.no_grad():
        cache = output_cache(model(prompt, use_cache=True, **{cache_keyword(model): DynamicCache()}))
        step = torch.tensor([[7]])
        with steer(model, _vector(), multiplier=3.0, positions="generated", response_start=[prompt.shape[1]]):
            try:
                steered = model(step, **{keyword: cache}).logits
            except TypeError as err:  # a release that knows only the other name
                pytest.skip(f"this transformers does not take {keyword}: {err}")
        unsteered_cache = output_cache(model(prompt, use_cache=True, **{cache_keyword(model): DynamicCache()}))
        clean = model(step, **{keyword: unsteered_cache}).logits
    assert not torch.allclose(steered, clean)  # read as a prefill, the step would be prompt and unsteered


def test_forward_arguments_by_position_and_by_keyword() -> None:
    model = tiny_llama()
    owner = model.model
    ids, mask = _prompt(), torch.ones(2, 6, dtype=torch.long)
    by_position = forward_arguments(owner, (ids, mask), {})
    by_keyword = forward_arguments(owner, (), {"input_ids": ids, "attention_mask": mask, "past_key_values": 1})
    assert by_position["attention_mask"] is mask and by_position["input_ids"] is ids
    assert by_keyword["attention_mask"] is mask and by_keyword["past_key_values"] == 1


# -- a decoder whose layers return tuples, as transformers' did before 5.x ---------------------------------------


class _Layer(nn.Module):
    def __init__(self, as_tuple: bool, seed: int) -> None:
        super().__init__()
        self.as_tuple = as_tuple
        self.linear = nn.Linear(HIDDEN, HIDDEN)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(HIDDEN, HIDDEN, generator=torch.Generator().manual_seed(seed)) * 0.2)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> object:
        out = hidden_states + torch.tanh(self.linear(hidden_states))
        return (out, None) if self.as_tuple else out


class _Decoder(nn.Module):
    def __init__(self, as_tuple: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(128, HIDDEN)
        self.layers = nn.ModuleList(_Layer(as_tuple, seed) for seed in range(4))
        self.as_tuple = as_tuple

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.embed(input_ids)
        for layer in self.layers:
            out = layer(hidden, attention_mask)
            hidden = out[0] if self.as_tuple else out
        return hidden


class _ToyLM(nn.Module):
    def __init__(self, as_tuple: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = _Decoder(as_tuple)
        self.head = nn.Linear(HIDDEN, 128)
        self.config = SimpleNamespace(hidden_size=HIDDEN)  # what steer() checks a vector against

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.model(input_ids, attention_mask))


@pytest.mark.parametrize("as_tuple", [True, False])
def test_record_edit_and_replay_keep_the_layers_output_form(as_tuple: bool) -> None:
    model = _ToyLM(as_tuple)
    ids = _prompt(batch=3)  # batch > 1: indexing a tensor output with [0] would keep only the first row
    with torch.no_grad():
        logits = model(ids)
        state = layer_output(model, 1, input_ids=ids)
        assert state.shape == (3, 6, HIDDEN)
        with record_layer_outputs(model, [1, 3]) as recorded:
            model(ids)
        assert torch.equal(recorded[1], state)
        # replaying layer 1's output reproduces the full forward exactly
        with replay_layer_output(model, 1, state):
            assert torch.equal(model(ids), logits)
        assert all(isinstance(layer, _Layer) for layer in model.model.layers)  # restored
        with edit_layer_output(model, 1, lambda hidden: hidden + 1.0), record_layer_outputs(model, [1]) as edited:
            moved = model(ids)
        assert torch.equal(edited[1], state + 1.0)  # hooks registered later see the edit
        assert not torch.allclose(moved, logits)


@pytest.mark.parametrize("as_tuple", [True, False])
def test_steer_adds_to_the_hidden_state_in_either_form(as_tuple: bool) -> None:
    model = _ToyLM(as_tuple)
    ids = _prompt(batch=3)
    with torch.no_grad():
        clean = layer_output(model, LAYER, input_ids=ids)
        with steer(model, _vector(), multiplier=1.5):
            steered = layer_output(model, LAYER, input_ids=ids)
    assert torch.equal(steered, clean + 1.5 * _vector().values)


@pytest.mark.parametrize("make", [tiny_llama, tiny_gemma3])
def test_continuations_of_a_shared_prefix_equal_each_sequence_run_alone(make) -> None:
    """A prefix run once, its KV cache repeated for each continuation (prefixes of different lengths padded):
    each continuation's states equal those of prefix + continuation in one unpadded pass."""
    from yapo_bench.internals import continuation_layer_outputs

    model = make()
    gen = torch.Generator().manual_seed(7)
    prefixes = [torch.randint(1, 128, (n,), generator=gen) for n in (5, 2, 9)]
    continuations = [[torch.randint(1, 128, (n,), generator=gen) for n in pair] for pair in ((3, 1), (4, 2), (1, 5))]
    states = continuation_layer_outputs(model.model, LAYER, prefixes, continuations)
    for prefix, group, got in zip(prefixes, continuations, states):
        for continuation, state in zip(group, got):
            whole = torch.cat([prefix, continuation])[None]
            alone = layer_output(model.model, LAYER, input_ids=whole)[0, len(prefix):]
            torch.testing.assert_close(state, alone, rtol=1e-5, atol=1e-5)
