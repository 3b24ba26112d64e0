"""Model internals, read in one place: decoder layers, what they return, the KV cache a forward pass carries.

transformers changes these between releases: 5.24 passes the KV cache to the decoder as `cache` (the old
name `past_key_values` stays a deprecated alias until 5.40), returns it on outputs as `.cache`, and its
decoder layers return a plain tensor where earlier releases returned a tuple. Everything in yapo-bench that
hooks a layer, reads the cache or stands in for layers goes through this module, which decides each of those
from the model in hand (its forward's signature, what its layers really returned), never from one release.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from yapo_bench.models import ModelLoadError

# Newest first: the name a forward is called with, or returns the cache under, in each transformers release.
CACHE_NAMES = ("cache", "past_key_values")
_LAYER_PATHS = ("model.layers", "model.language_model.layers", "language_model.model.layers", "layers")


# ----------------------------------------------------------------------------------------------------
# Layer access, uniform across llama- and gemma-family models


def _get_attr_path(obj: object, path: str) -> object | None:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _layers_and_owner(model: nn.Module) -> tuple[nn.ModuleList, nn.Module]:
    for path in _LAYER_PATHS:
        layers = _get_attr_path(model, path)
        if isinstance(layers, nn.ModuleList):
            owner_path = path.rsplit(".", 1)[0] if "." in path else ""
            owner = _get_attr_path(model, owner_path) if owner_path else model
            return layers, owner
    raise ModelLoadError(
        f"model: cannot find decoder layers on {type(model).__name__} (looked at {', '.join(_LAYER_PATHS)})"
    )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's decoder layers, in order."""
    return _layers_and_owner(model)[0]


def decoder_owner(model: nn.Module) -> nn.Module:
    """The module whose forward runs the decoder layers (it receives the attention mask and the cache)."""
    return _layers_and_owner(model)[1]


def num_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def hidden_size(model: nn.Module) -> int:
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text_config.hidden_size)


def max_positions(model: nn.Module) -> int | None:
    """How many positions the model can attend over (its config's max_position_embeddings), if it says."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text_config, "max_position_embeddings", None)
    return int(value) if value else None


def get_layer(model: nn.Module, layer: int) -> nn.Module:
    """Decoder layer `layer` (0-based); its output is the residual stream A_layer(x)."""
    n = num_layers(model)
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < n:
        raise ModelLoadError(f"layer: {layer!r} is out of range; this model has layers 0..{n - 1}")
    return decoder_layers(model)[layer]


# ----------------------------------------------------------------------------------------------------
# Forward arguments and the KV cache


def forward_arguments(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A forward call's arguments by parameter name, whether they came by position or by keyword (what a
    `register_forward_pre_hook(..., with_kwargs=True)` hook receives). Names the signature does not have
    (a deprecated alias such as `past_key_values`) keep the name they were passed under."""
    signature = inspect.signature(module.forward)
    try:
        bound = signature.bind_partial(*args, **kwargs).arguments
    except TypeError:  # a caller's positional arguments the signature does not take: keep the keywords
        bound = dict(kwargs)
    named: dict[str, Any] = {}
    for name, value in bound.items():
        kind = signature.parameters[name].kind if name in signature.parameters else None
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            named[name] = value
    return named


def cache_argument(arguments: dict[str, Any]) -> Any:
    """The KV cache among a forward's arguments (under whichever name it came), or None."""
    for name in CACHE_NAMES:
        if arguments.get(name) is not None:
            return arguments[name]
    return None


def cached_tokens(cache: Any) -> int:
    """How many tokens a KV cache already holds (0 for none): what a forward pass appends after."""
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    if isinstance(cache, (tuple, list)):  # the legacy tuple of per-layer (key, value) tensors [b, h, seq, d]
        return int(cache[0][0].shape[-2]) if cache and cache[0] is not None else 0
    raise TypeError(f"cache: cannot read the length of a {type(cache).__name__}")


def cache_keyword(model: nn.Module) -> str:
    """The keyword this model's forward takes its KV cache under."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in CACHE_NAMES if name in parameters), CACHE_NAMES[-1])


def output_cache(outputs: Any) -> Any:
    """The KV cache a forward pass returned (`.cache` from transformers 5.24, `.past_key_values` before)."""
    for name in CACHE_NAMES:
        cache = getattr(outputs, name, None)
        if cache is not None:
            return cache
    raise ValueError("outputs: the forward pass returned no cache; call it with use_cache=True")


# ----------------------------------------------------------------------------------------------------
# Layer outputs: read, replace, record, replay

# Whether a decoder layer class returns a tuple (hidden, ...) or the hidden tensor itself, as last seen.
_RETURNS_TUPLE: dict[type, bool] = {}


def layer_hidden(output: Any, layer: nn.Module | None = None) -> torch.Tensor:
    """A decoder layer's hidden-state output (a tensor, or the first entry of a tuple, by release)."""
    returns_tuple = isinstance(output, tuple)
    if layer is not None:
        _RETURNS_TUPLE[type(layer)] = returns_tuple
    hidden = output[0] if returns_tuple else output
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
        raise TypeError(f"layer output: expected a [batch, seq, d_model] tensor or a tuple starting with one, "
                        f"got {type(output).__name__}")
    return hidden


def with_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """`output` with its hidden state replaced by `hidden`, in the same form (tensor or tuple)."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class _StopForward(Exception):
    """Raised by a recording hook: nothing after the layer needs to run."""


@torch.no_grad()
def layer_output(model: nn.Module, layer: int, **inputs: torch.Tensor) -> torch.Tensor:
    """A_layer(x): the residual stream after decoder layer `layer` for `inputs`, [batch, seq, d_model].
    The forward pass stops at that layer; layers after it never run."""
    with record_layer_outputs(model, [layer], stop_after=True) as recorded:
        model(**inputs)
    return recorded[layer]


@contextlib.contextmanager
def record_layer_outputs(model: nn.Module, layers: Sequence[int], stop_after: bool = False,
                         select: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, every forward pass records the hidden state after each of `layers` (detached,
    `select`ed if given, e.g. one position) into the yielded dict. With `stop_after`, the forward pass stops
    after the last of `layers`: the `model(...)` call inside the block returns nothing then."""
    recorded: dict[int, torch.Tensor] = {}
    last = max(layers)

    def recorder(index: int) -> Callable:
        def hook(module: nn.Module, _inputs: object, output: Any) -> None:
            hidden = layer_hidden(output, module).detach()
            recorded[index] = (select(hidden) if select else hidden).clone()
            if stop_after and index == last:
                raise _StopForward
        return hook

    handles = [get_layer(model, index).register_forward_hook(recorder(index)) for index in layers]
    try:
        yield recorded
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def edit_layer_output(model: nn.Module, layer: int,
                      edit: Callable[[torch.Tensor], torch.Tensor | None]) -> Iterator[None]:
    """Within the block, the hidden state after decoder `layer` is replaced by `edit(hidden)` in every forward
    pass (None leaves it unchanged); the hook is removed on exit, also on error."""

    def hook(module: nn.Module, _inputs: object, output: Any) -> Any:
        edited = edit(layer_hidden(output, module))
        return output if edited is None else with_hidden(output, edited)

    handle = get_layer(model, layer).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _returns_tuple(model: nn.Module) -> bool:
    """Whether this model's decoder layers return tuples: as seen on a real call, else from a one-token probe
    that stops after layer 0."""
    layer = get_layer(model, 0)
    if type(layer) not in _RETURNS_TUPLE:
        device = next(model.parameters()).device
        with record_layer_outputs(model, [0], stop_after=True):
            decoder_owner(model)(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device))
    return _RETURNS_TUPLE[type(layer)]


class _Passthrough(nn.Module):
    """Stands in for a layer before the replayed one: returns its input, in the layers' output form."""

    def __init__(self, as_tuple: bool) -> None:
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> Any:
        return (hidden_states,) if self.as_tuple else hidden_states


class _Replay(_Passthrough):
    """Stands in for the replayed layer: returns the cached A_L(x) whatever it is given."""

    def __init__(self, cached: torch.Tensor, as_tuple: bool) -> None:
        super().__init__(as_tuple)
        self.register_buffer("cached", cached, persistent=False)  # a buffer: the stand-in is where its output is

    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> Any:
        return super().forward(self.cached.to(hidden_states.dtype))


@contextlib.contextmanager
def replay_layer_output(model: nn.Module, layer: int, cached: torch.Tensor) -> Iterator[None]:
    """Within the block, the model's layers 0..layer are replaced by stand-ins that return the cached output of
    `layer` (in the form the real layers return): only layers after it run."""
    as_tuple = _returns_tuple(model)
    layers = decoder_layers(model)
    get_layer(model, layer)
    originals = [layers[i] for i in range(layer + 1)]
    try:
        for i in range(layer):
            layers[i] = _Passthrough(as_tuple)
        layers[layer] = _Replay(cached, as_tuple)
        yield
    finally:
        for i, module in enumerate(originals):
            layers[i] = module


# ----------------------------------------------------------------------------------------------------
# Several continuations of one prefix, the prefix run once


def sliding_window(model: nn.Module) -> int | None:
    """The model's sliding attention window, if it has one (Gemma)."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text_config, "sliding_window", None) or None


@torch.no_grad()
def continuation_layer_outputs(model: nn.Module, layer: int, prefixes: Sequence[torch.Tensor],
                               continuations: Sequence[Sequence[torch.Tensor]],
                               pad_id: int = 0) -> list[list[torch.Tensor]]:
    """A_layer at the tokens of each continuation of each prefix, [len(continuation), d_model] per continuation,
    with every prefix run once: the prefixes (right-padded) fill a KV cache of layers 0..layer, which is repeated
    for each of a prefix's continuations (every prefix has the same number), and the continuations then run after
    it at their true positions, the prefix padding masked. Equal, to float precision, to running each
    prefix + continuation alone (tested) when every padded length stays within the model's sliding window."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    repeats = len(continuations[0])
    if any(len(group) != repeats for group in continuations) or len(continuations) != len(prefixes):
        raise ValueError("continuations: expected the same number of continuations for every prefix")
    prefix_ids, prefix_mask = _right_padded(prefixes, pad_id, device)
    rows = [c for group in continuations for c in group]
    ids, mask = _right_padded(rows, pad_id, device)
    window = sliding_window(model)
    padded = bool((prefix_mask == 0).any())  # padding shifts cache positions, which the sliding window is counted in
    if window and padded and prefix_ids.shape[1] + ids.shape[1] > window:
        raise ValueError(f"prefixes/continuations: padded to {prefix_ids.shape[1] + ids.shape[1]} tokens, beyond the "
                         f"model's sliding window of {window}: run them one prefix at a time")
    cache = DynamicCache(config=model.config)
    keyword = {cache_keyword(model): cache}
    with record_layer_outputs(model, [layer], stop_after=True):
        model(input_ids=prefix_ids, attention_mask=prefix_mask, use_cache=True, **keyword)
    cache.batch_repeat_interleave(repeats)
    lengths = prefix_mask.sum(dim=1).repeat_interleave(repeats)
    positions = lengths[:, None] + torch.arange(ids.shape[1], device=device)[None]
    full_mask = torch.cat([prefix_mask.repeat_interleave(repeats, dim=0), mask], dim=1)
    with record_layer_outputs(model, [layer], stop_after=True) as recorded:
        model(input_ids=ids, attention_mask=full_mask, position_ids=positions, use_cache=True, **keyword)
    states = recorded[layer]
    return [[states[i * repeats + j, : len(group[j])] for j in range(repeats)] for i, group in enumerate(continuations)]


def _right_padded(rows: Sequence[torch.Tensor], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, device=device)
        mask[i, : len(row)] = 1
    return ids, mask
