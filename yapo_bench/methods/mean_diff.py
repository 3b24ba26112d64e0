"""Mean response activations at a layer, shared by the mean-difference methods (CAA, SAS)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from yapo_bench.internals import layer_output
from yapo_bench.models import LoadedModel
from yapo_bench.pairs import PreferencePair, encode_with_response, length_limit, truncate

AGGREGATIONS = ("response_mean", "last")


@dataclass
class MeanDiffSpec:
    """layer: where to read (and later steer); aggregation: mean over response tokens or the last one;
    top_k: keep only the k largest-magnitude entries (0 keeps all; meaningful for SAS); max_length: tokens per
    sequence, cut by the same rule as training (`pairs.truncate`)."""

    layer: int
    aggregation: str = "response_mean"
    top_k: int = 0
    max_length: int = 256

    def __post_init__(self) -> None:
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise ValueError(f"max_length: {self.max_length!r}; expected an integer >= 1")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation: {self.aggregation!r}; expected one of {AGGREGATIONS}")
        if self.top_k < 0:
            raise ValueError(f"top_k: {self.top_k}; expected >= 0")


@torch.no_grad()
def mean_difference(
    loaded: LoadedModel,
    pairs: Sequence[PreferencePair],
    spec: MeanDiffSpec,
    transform: Callable[[torch.Tensor], torch.Tensor] = lambda h: h,
) -> tuple[torch.Tensor, int]:
    """mean over pairs of [agg(transform(A_L(chosen))) − agg(transform(A_L(rejected)))], and how many sequences
    were truncated."""
    if not pairs:
        raise ValueError("pairs: expected at least one preference pair")
    total, truncated = None, 0
    limit = length_limit(loaded.model, spec.max_length)
    for pair in pairs:
        summary = []
        for response in (pair.chosen, pair.rejected):
            ids, start = encode_with_response(loaded.tokenizer, pair.prompt, response)
            ids, cut = truncate(ids, limit, start, f"prompt {pair.prompt[:60]!r}")
            truncated += cut
            states = transform(layer_output(loaded.model, spec.layer, input_ids=ids[None])[0].float()[start:])
            summary.append(states.mean(0) if spec.aggregation == "response_mean" else states[-1])
        diff = summary[0] - summary[1]
        total = diff if total is None else total + diff
    mean = total / len(pairs)
    if spec.top_k:
        keep = mean.abs().topk(min(spec.top_k, mean.numel())).indices
        mean = torch.zeros_like(mean).index_copy_(0, keep, mean[keep])
    return mean, truncated
