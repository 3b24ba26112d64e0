"""Mean response activations at a layer, shared by the mean-difference methods (CAA, SAS).

Pairs are fitted in batches, each pair's prompt run once for both of its responses (the prompt's KV cache is
shared by its chosen and rejected continuations: only response positions are averaged, and they see the prompt
exactly as in one full pass, to float precision)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from yapo_bench.internals import continuation_layer_outputs, sliding_window
from yapo_bench.models import LoadedModel
from yapo_bench.pairs import EncodedPairs, PreferencePair, encode_pairs_within, length_limit

AGGREGATIONS = ("response_mean", "last")
RUN_FIELDS = ("batch_size", "progress")  # how a fit runs, not what it computes


@dataclass
class MeanDiffSpec:
    """layer: where to read (and later steer); aggregation: mean over response tokens or the last one;
    top_k: keep only the k largest-magnitude entries (0 keeps all; meaningful for SAS); max_length: tokens per
    sequence, cut by the same rule as training (`pairs.truncate`); batch_size: pairs per forward pass."""

    layer: int
    aggregation: str = "response_mean"
    top_k: int = 0
    max_length: int = 256
    batch_size: int = 8
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("max_length", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {value!r}; expected an integer >= 1")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation: {self.aggregation!r}; expected one of {AGGREGATIONS}")
        if self.top_k < 0:
            raise ValueError(f"top_k: {self.top_k}; expected >= 0")

    def config(self) -> dict[str, Any]:
        """What determines the vector: recorded with it and keyed in the vector store."""
        return {k: v for k, v in asdict(self).items() if k not in RUN_FIELDS}


@torch.no_grad()
def mean_difference(
    loaded: LoadedModel,
    pairs: Sequence[PreferencePair],
    spec: MeanDiffSpec,
    transform: Callable[[torch.Tensor], torch.Tensor] = lambda h: h,
) -> tuple[torch.Tensor, EncodedPairs]:
    """mean over the pairs kept by the length rule of [agg(transform(A_L(chosen))) − agg(transform(A_L(rejected)))],
    and what the rule did (`pairs.EncodedPairs`)."""
    if not pairs:
        raise ValueError("pairs: expected at least one preference pair")
    limit = length_limit(loaded.model, spec.max_length)
    within = encode_pairs_within(loaded.tokenizer, pairs, limit)
    encoded = [(chosen[0][: chosen[1]], [chosen[0][chosen[1]:], rejected[0][rejected[1]:]])
               for chosen, rejected in within.sides]
    # the prompts of a batch are right-padded: keep each batch within a sliding attention window
    window = sliding_window(loaded.model)
    batch_size = spec.batch_size if not window or 2 * limit <= window else 1
    decoder = loaded.model.get_decoder()
    pad_id = loaded.tokenizer.pad_token_id or 0
    total = None
    batches = [encoded[i : i + batch_size] for i in range(0, len(encoded), batch_size)]
    for batch in tqdm(batches, desc="mean difference", unit="batch", disable=not spec.progress):
        states = continuation_layer_outputs(decoder, spec.layer, [p for p, _ in batch], [r for _, r in batch], pad_id)
        for chosen, rejected in states:
            summary = [transform(side.float()) for side in (chosen, rejected)]
            if spec.aggregation == "response_mean":
                diff = summary[0].mean(0) - summary[1].mean(0)
            else:
                diff = summary[0][-1] - summary[1][-1]
            total = diff if total is None else total + diff
    mean = total / len(encoded)
    if spec.top_k:
        keep = mean.abs().topk(min(spec.top_k, mean.numel())).indices
        mean = torch.zeros_like(mean).index_copy_(0, keep, mean[keep])
    return mean, within
