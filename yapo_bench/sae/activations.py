"""Residual-stream activations at a layer, collected with a forward hook that stops the forward pass there
(TransformerLens refuses GGUF-loaded models, and layers after L are not needed). Position 0 of every window is
dropped: its residual norm is orders of magnitude above the rest (an attention sink) and would dominate both
training and variance explained.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from yapo_bench.corpus import token_windows, window_batches
from yapo_bench.internals import get_layer, layer_output
from yapo_bench.pairs import length_limit


@torch.no_grad()
def collect_activations(
    model: nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    layer: int,
    n_tokens: int,
    seq_len: int = 128,
    batch_size: int = 16,
    progress: bool = True,
) -> torch.Tensor:
    """Residual-stream activations after decoder layer `layer`, [n, d_model] fp32, position 0 of each
    window and padding dropped, at most `n_tokens` rows, documents in the given order."""
    get_layer(model, layer)  # validates the layer before any work is done
    chunks: list[torch.Tensor] = []
    total = 0
    bar = tqdm(total=n_tokens, desc=f"collect layer {layer}", unit="tok", disable=not progress)
    try:
        windows = token_windows(tokenizer, texts, length_limit(model, seq_len))
        for enc in window_batches(tokenizer, windows, batch_size):
            enc = {k: v.to(block_device(model)) for k, v in enc.items()}
            hidden = layer_output(model, layer, **enc)
            keep = enc["attention_mask"].bool().clone()
            first = keep.float().argmax(dim=1)  # first real token of each row (left or right padding)
            keep[torch.arange(keep.shape[0]), first] = False
            acts = hidden[keep].float().cpu()
            chunks.append(acts)
            total += acts.shape[0]
            bar.update(min(acts.shape[0], n_tokens - bar.n))
            if total >= n_tokens:
                break
    finally:
        bar.close()
    return torch.cat(chunks)[:n_tokens]


def block_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def massive_norm_mask(acts: torch.Tensor, factor: float = 10.0) -> torch.Tensor:
    """True for rows whose norm exceeds `factor` × the median norm (attention-sink-like tokens)."""
    norms = acts.norm(dim=-1)
    return norms > factor * norms.median()
