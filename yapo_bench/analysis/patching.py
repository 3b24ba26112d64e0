"""Layer discovery by activation patching (paper, App. B).

For a localized prompt (names the country, the *source*) and its non-localized twin (the *target*), the
source's residual stream at its last token is recorded after every decoder layer; then, for each layer L,
the target is run with its own last-token state after layer L overwritten by the source's. The options of
the shared MCQ item are scored as cloze continuations of the (patched) target prompt, and the softmax over
the options gives P(target-country answer) and P(Western answer) per layer. The layer whose patch raises
P(target-country answer) most is where the country is most readably encoded: the suggested steering layer.

Only the last prompt token is patched, so every option's continuation sees the same intervention and the
prompt tokens before it are unchanged (causal attention).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from yapo_bench.data.culture import WESTERN, CultureItem
from yapo_bench.internals import (
    cache_keyword,
    edit_layer_output,
    get_layer,
    max_positions,
    num_layers,
    output_cache,
    record_layer_outputs,
    replay_layer_output,
)

NORMALIZATIONS = ("chars", "tokens", "none")


class PatchingError(ValueError):
    """A patch, pair or argument that does not fit; the message names the field."""


@dataclass(frozen=True)
class PatchingPair:
    """A localized (source) prompt, its non-localized (target) twin and the MCQ options they share."""

    question_id: str
    country: str
    source_prompt: str
    target_prompt: str
    options: tuple[str, ...]
    option_country: tuple[str | None, ...]

    def __post_init__(self) -> None:
        for name in ("question_id", "country", "source_prompt", "target_prompt"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise PatchingError(f"{name}: expected a non-empty string, got {getattr(self, name)!r}")
        if len(self.options) < 2 or len(self.option_country) != len(self.options):
            raise PatchingError(f"options: expected >= 2 options with one option_country each, got {len(self.options)} "
                                f"options and {len(self.option_country)} countries")
        if self.option_country.count(self.country) != 1:
            raise PatchingError(f"option_country: expected exactly one option for country {self.country!r}")

    @property
    def target_index(self) -> int:
        """The option that answers for the pair's country."""
        return self.option_country.index(self.country)

    @property
    def western_index(self) -> int | None:
        return self.option_country.index(WESTERN) if WESTERN in self.option_country else None


def culture_patching_pairs(items: Iterable[CultureItem], countries: Sequence[str] | None = None) -> list[PatchingPair]:
    """Pair each question's localized and non-localized items by question_id (questions missing either
    variant are skipped), optionally keeping only `countries`; ordered by country then question_id."""
    items = list(items)
    known = sorted({item.country for item in items})
    if countries is not None:
        unknown = sorted(set(countries) - set(known))
        if unknown:
            raise PatchingError(f"countries: {', '.join(unknown)} not in the data; expected some of {', '.join(known)}")
    by_question: dict[str, dict[str, CultureItem]] = {}
    for item in items:
        if countries is None or item.country in countries:
            by_question.setdefault(item.question_id, {})[item.localization] = item
    pairs = []
    for question_id, variants in by_question.items():
        if set(variants) != {"localized", "nonlocalized"}:
            continue
        loc, non = variants["localized"], variants["nonlocalized"]
        if loc.options != non.options or loc.option_country != non.option_country:
            raise PatchingError(f"options: question {question_id!r} has different options in its two variants")
        pairs.append(PatchingPair(question_id=question_id, country=non.country, source_prompt=loc.mcq_prompt,
                                  target_prompt=non.mcq_prompt, options=non.options, option_country=non.option_country))
    if not pairs:
        raise PatchingError(f"countries: no question has both a localized and a non-localized item for {countries}")
    return sorted(pairs, key=lambda p: (p.country, p.question_id))


# ----------------------------------------------------------------------------------------------------
# Recording and patching


@torch.no_grad()
def last_token_states(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The residual stream after every decoder layer at the last position of one unpadded sequence,
    [n_layers, d_model]. Read with forward hooks, so the last entry is before the final norm."""
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise PatchingError(f"input_ids: expected one unpadded sequence [1, seq], got shape {tuple(input_ids.shape)}")
    layers = range(num_layers(model))
    with record_layer_outputs(model, layers, select=lambda hidden: hidden[0, -1]) as states:
        model(input_ids=input_ids)
    return torch.stack([states[layer] for layer in layers])


@contextlib.contextmanager
def patch_state(model: nn.Module, layer: int, position: int, state: torch.Tensor) -> Iterator[None]:
    """Within the block, the residual stream after decoder `layer` at sequence index `position` is `state`
    in every row of every forward pass; the hook is removed on exit, also on error."""
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise PatchingError(f"position: {position!r}; expected a non-negative integer index")
    get_layer(model, layer)
    if state.dim() != 1:
        raise PatchingError(f"state: expected a 1-D [d_model] tensor, got shape {tuple(state.shape)}")

    def patch(hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[1] <= position:
            raise PatchingError(f"position: {position} is beyond this forward pass's {hidden.shape[1]} positions")
        patched = hidden.clone()
        patched[:, position] = state.to(device=hidden.device, dtype=hidden.dtype)
        return patched

    with edit_layer_output(model, layer, patch):
        yield


# ----------------------------------------------------------------------------------------------------
# Cloze scoring of options


@dataclass
class OptionBatch:
    """A prompt followed by each option (lm-eval's cloze form, delimiter ' '), right-padded, one row each."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    continuation: torch.Tensor  # bool [rows, seq]: the positions whose token belongs to the option
    prompt_last: int  # index of the prompt's last token, the same in every row
    lengths: torch.Tensor  # per option: characters, tokens, or ones (by normalization)


def option_batch(tokenizer: Any, prompt: str, options: Sequence[str], normalization: str = "chars") -> OptionBatch:
    """Tokenize the prompt once and each ' option' separately, so the prompt's tokens (and its last
    position, where patches go) are identical in every row."""
    if normalization not in NORMALIZATIONS:
        raise PatchingError(f"normalization: {normalization!r}; expected one of {', '.join(NORMALIZATIONS)}")
    context = list(tokenizer(prompt)["input_ids"])
    conts = [list(tokenizer(" " + option, add_special_tokens=False)["input_ids"]) for option in options]
    if not context or not all(conts):
        raise PatchingError("prompt/options: a prompt or an option tokenizes to nothing")
    width = len(context) + max(len(c) for c in conts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(options), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    continuation = torch.zeros_like(ids, dtype=torch.bool)
    for row, cont in enumerate(conts):
        length = len(context) + len(cont)
        ids[row, :length] = torch.tensor(context + cont)
        mask[row, :length] = 1
        continuation[row, len(context):length] = True
    if normalization == "chars":
        lengths = torch.tensor([max(1, len(option)) for option in options], dtype=torch.float32)
    elif normalization == "tokens":
        lengths = torch.tensor([len(c) for c in conts], dtype=torch.float32)
    else:
        lengths = torch.ones(len(options))
    return OptionBatch(ids, mask, continuation, len(context) - 1, lengths)


def _option_probabilities(logits: torch.Tensor, ids: torch.Tensor, continuation: torch.Tensor,
                          lengths: torch.Tensor) -> torch.Tensor:
    """Softmax over the options (rows) of their normalised log-likelihoods; logits[:, j] predicts ids[:, j+1]."""
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    loglik = (logprobs * continuation[:, 1:]).sum(dim=1)
    return torch.softmax(loglik / lengths, dim=0)


@torch.no_grad()
def option_probabilities(model: nn.Module, batch: OptionBatch) -> torch.Tensor:
    """Softmax over the options of their (normalised) log-likelihoods given the prompt, [n_options]."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return _option_probabilities(logits, batch.input_ids, batch.continuation, batch.lengths)


class _PatchedScorer:
    """Scores one OptionBatch under a patch at its last prompt token, for many layers, cheaply and exactly
    as a full forward would (to float precision; tested): the tokens before the last prompt token are never
    affected by the patch, so they run once into a KV cache; and layers <= L are not affected by a patch at
    L, so the suffix's states after every layer are recorded once and layers 0..L are replayed from them."""

    @torch.no_grad()
    def __init__(self, model: nn.Module, batch: OptionBatch) -> None:
        if batch.prompt_last < 1:
            raise PatchingError("prompt: expected at least 2 tokens (one before the patched last token)")
        self.model, self.batch = model, batch
        cut = batch.prompt_last
        self.suffix = batch.input_ids[:, cut:]
        self.continuation = batch.continuation[:, cut:]
        self.prefix_cache = output_cache(model(input_ids=batch.input_ids[:, :cut],
                                               attention_mask=batch.attention_mask[:, :cut], use_cache=True))
        with record_layer_outputs(model, range(num_layers(model))) as states:
            self.baseline = self._probabilities()
        self.states = states

    def _probabilities(self) -> torch.Tensor:
        # Each run appends to the cache in place: give it a copy, so the prefix cache stays the prefix's.
        cache = {cache_keyword(self.model): copy.deepcopy(self.prefix_cache)}
        logits = self.model(input_ids=self.suffix, attention_mask=self.batch.attention_mask, **cache).logits
        return _option_probabilities(logits, self.suffix, self.continuation, self.batch.lengths)

    @torch.no_grad()
    def patched(self, layer: int, state: torch.Tensor) -> torch.Tensor:
        """Option probabilities with the last prompt token's state after `layer` set to `state`."""
        replayed = self.states[layer].clone()
        replayed[:, 0] = state.to(replayed.dtype)
        with replay_layer_output(self.model, layer, replayed):
            return self._probabilities()


# ----------------------------------------------------------------------------------------------------
# The patching curve


@dataclass
class LayerPatchingResult:
    """Per pair and layer, P(target-country answer) and P(Western answer) on the patched target prompt,
    with the unpatched target (baseline) and the source prompt itself as references. NaN where an item has
    no Western option."""

    pairs: list[PatchingPair]
    layers: list[int]
    p_target: torch.Tensor  # [pairs, layers]
    p_western: torch.Tensor  # [pairs, layers]
    baseline_target: torch.Tensor  # [pairs]
    baseline_western: torch.Tensor  # [pairs]
    source_target: torch.Tensor  # [pairs]
    source_western: torch.Tensor  # [pairs]
    config: dict[str, Any] = field(default_factory=dict)

    def _rows(self, country: str | None) -> torch.Tensor:
        return torch.tensor([country is None or p.country == country for p in self.pairs])

    def gain(self, country: str | None = None) -> torch.Tensor:
        """Mean over pairs of P(target answer | patched) − P(target answer | unpatched), per layer."""
        rows = self._rows(country)
        return (self.p_target[rows] - self.baseline_target[rows, None]).mean(dim=0)

    @property
    def suggested_layer(self) -> int:
        """The layer whose patch raises P(target-country answer) most on average (the earliest on ties)."""
        gain = self.gain()
        return self.layers[int(torch.nonzero(gain == gain.max())[0, 0])]

    def table(self) -> list[dict[str, Any]]:
        """One row per (country or 'all', layer) with means over the pairs; baseline and source repeated
        in each row so the CSV stands alone."""
        rows = []
        for country in ["all", *sorted({p.country for p in self.pairs})]:
            keep = self._rows(None if country == "all" else country)
            gain = self.gain(None if country == "all" else country)
            for k, layer in enumerate(self.layers):
                rows.append({
                    "country": country, "layer": layer, "n_pairs": int(keep.sum()),
                    "p_target": _mean(self.p_target[keep, k]), "p_western": _mean(self.p_western[keep, k]),
                    "gain_target": float(gain[k]),
                    "baseline_target": _mean(self.baseline_target[keep]),
                    "baseline_western": _mean(self.baseline_western[keep]),
                    "source_target": _mean(self.source_target[keep]),
                    "source_western": _mean(self.source_western[keep]),
                })
        return rows


def _mean(values: torch.Tensor) -> float:
    values = values[~values.isnan()]
    return float(values.mean()) if values.numel() else math.nan


def _target_and_western(probs: torch.Tensor, pair: PatchingPair) -> tuple[float, float]:
    western = pair.western_index
    return float(probs[pair.target_index]), (math.nan if western is None else float(probs[western]))


@torch.no_grad()
def layer_patching(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[PatchingPair],
    layers: Sequence[int] | None = None,
    normalization: str = "chars",
    progress: bool = False,
) -> LayerPatchingResult:
    """Patch each pair's source last-token state into its target at every layer in `layers` (default:
    all) and score the options; see the module docstring."""
    if not pairs:
        raise PatchingError("pairs: expected at least one pair")
    layers = list(range(num_layers(model))) if layers is None else list(layers)
    for layer in layers:
        get_layer(model, layer)  # range check, naming the bad layer
    device = next(model.parameters()).device
    positions = max_positions(model)
    p_target = torch.full((len(pairs), len(layers)), math.nan)
    p_western = torch.full_like(p_target, math.nan)
    refs = torch.full((4, len(pairs)), math.nan)  # baseline target/western, source target/western
    iterator: Iterable[tuple[int, PatchingPair]] = enumerate(pairs)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(pairs), desc="patching", unit="pair")
    for i, pair in iterator:
        source_ids = torch.tensor([tokenizer(pair.source_prompt)["input_ids"]], device=device)
        target_batch = option_batch(tokenizer, pair.target_prompt, pair.options, normalization)
        source = option_batch(tokenizer, pair.source_prompt, pair.options, normalization)
        longest = max(target_batch.input_ids.shape[1], source.input_ids.shape[1])
        if positions and longest > positions:  # patching cuts nothing: a cut prompt would move the patched token
            raise PatchingError(f"prompt: question {pair.question_id!r} needs {longest} tokens with its longest "
                                f"option; the model has {positions} positions")
        states = last_token_states(model, source_ids)
        target = _PatchedScorer(model, _to_device(target_batch, device))
        source = _to_device(source, device)
        refs[0:2, i] = torch.tensor(_target_and_western(target.baseline, pair))
        refs[2:4, i] = torch.tensor(_target_and_western(option_probabilities(model, source), pair))
        for k, layer in enumerate(layers):
            p_target[i, k], p_western[i, k] = _target_and_western(target.patched(layer, states[layer]), pair)
    return LayerPatchingResult(
        pairs=list(pairs), layers=layers, p_target=p_target, p_western=p_western,
        baseline_target=refs[0], baseline_western=refs[1], source_target=refs[2], source_western=refs[3],
        config={"normalization": normalization, "delimiter": " ", "position": "last prompt token"},
    )


def _to_device(batch: OptionBatch, device: torch.device) -> OptionBatch:
    return OptionBatch(batch.input_ids.to(device), batch.attention_mask.to(device), batch.continuation.to(device),
                       batch.prompt_last, batch.lengths.to(device))
