"""Reading a sparse (SAE-space) steering vector: its top latents by weight, what each promotes through the
unembedding (logit lens on its decoder direction), where each fires most in a corpus, and how it compares to
a dense vector trained on the same data (the overlap the paper's limitations propose)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from yapo_bench.corpus import token_windows, window_batches
from yapo_bench.internals import layer_output
from yapo_bench.pairs import length_limit
from yapo_bench.steering import SteeringError, SteeringVector


@dataclass
class LatentReading:
    latent: int
    weight: float
    promoted: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    contexts: list[dict[str, Any]] = field(default_factory=list)  # {"activation", "token", "context"}


def top_latents(vector: SteeringVector, k: int = 10) -> list[tuple[int, float]]:
    """The k latents with the largest |weight| (ties: lower index first), as (latent, weight)."""
    if vector.space != "sae":
        raise SteeringError("vector: feature reading needs a sparse (SAE-space) vector")
    values = vector.values.detach().float()
    order = sorted(range(values.numel()), key=lambda i: (-abs(float(values[i])), i))
    return [(i, float(values[i])) for i in order[:k] if values[i] != 0]


def _unembedding(model: nn.Module) -> torch.Tensor:
    """W_U with the final norm's scale folded in (RMSNorm/LayerNorm weight), [vocab, d_model]."""
    weight = model.get_output_embeddings().weight.detach().float()
    norm = getattr(getattr(model, "model", model), "norm", None)
    scale = getattr(norm, "weight", None)
    if scale is not None:
        scale = scale.detach().float()
        if type(norm).__name__.lower().startswith("gemma"):  # Gemma's RMSNorm multiplies by (1 + weight)
            scale = 1 + scale
        weight = weight * scale
    return weight


def promoted_tokens(model: nn.Module, tokenizer: Any, sae: nn.Module, latents: Sequence[int],
                    n: int = 8) -> dict[int, tuple[list[str], list[str]]]:
    """Per latent, the tokens its decoder direction raises most and lowers most in the logits."""
    logits = sae.W_dec[list(latents)].detach().float() @ _unembedding(model).T  # [k, vocab]
    result = {}
    for row, latent in zip(logits, latents, strict=True):
        top = torch.topk(row, n).indices.tolist()
        bottom = torch.topk(-row, n).indices.tolist()
        result[latent] = ([tokenizer.decode([t]) for t in top], [tokenizer.decode([t]) for t in bottom])
    return result


@torch.no_grad()
def top_contexts(model: nn.Module, tokenizer: Any, sae: nn.Module, layer: int, texts: Sequence[str],
                 latents: Sequence[int], n: int = 5, seq_len: int = 64, batch_size: int = 8,
                 window: int = 12) -> dict[int, list[dict[str, Any]]]:
    """Per latent, the n tokens of `texts` where its SAE code is largest, with the tokens before them."""
    latents = list(latents)
    best: dict[int, list[tuple[float, int, int]]] = {latent: [] for latent in latents}
    windows = token_windows(tokenizer, texts, length_limit(model, seq_len))
    for start, enc in zip(range(0, len(windows), batch_size), window_batches(tokenizer, windows, batch_size)):
        hidden = layer_output(model, layer, **enc).float()
        codes = sae.encode(hidden)[..., latents] * enc["attention_mask"][..., None]
        codes[:, 0] = 0  # position 0 is an attention sink the SAE was not trained on
        for column, latent in enumerate(latents):
            values, flat = torch.topk(codes[..., column].flatten(), min(n, codes[..., column].numel()))
            for value, index in zip(values.tolist(), flat.tolist(), strict=True):
                if value > 0:
                    best[latent].append((value, start + index // codes.shape[1], index % codes.shape[1]))
    result = {}
    for latent in latents:
        chosen = sorted(best[latent], key=lambda item: (-item[0], item[1], item[2]))[:n]
        result[latent] = [{"activation": value, "token": tokenizer.decode([windows[row][pos]]),
                           "context": tokenizer.decode(windows[row][max(0, pos - window): pos + 1])}
                          for value, row, pos in chosen]
    return result


def read_features(model: nn.Module, tokenizer: Any, sae: nn.Module, vector: SteeringVector, texts: Sequence[str],
                  k: int = 10, n_tokens: int = 8, n_contexts: int = 5) -> list[LatentReading]:
    """Top-k latents of `vector` with promoted/suppressed tokens and top-activating contexts in `texts`."""
    vector.check_compatible(model, sae)
    latents = top_latents(vector, k)
    promoted = promoted_tokens(model, tokenizer, sae, [i for i, _ in latents], n_tokens)
    contexts = top_contexts(model, tokenizer, sae, vector.layer, texts, [i for i, _ in latents], n_contexts)
    return [LatentReading(i, w, *promoted[i], contexts[i]) for i, w in latents]


def compare_with_dense(sparse: SteeringVector, dense: SteeringVector, sae: nn.Module, k: int = 20) -> dict[str, Any]:
    """How a sparse vector relates to a dense one trained on the same data: the cosine between the sparse
    vector's decoded direction W_decᵀv and the dense vector, and the overlap between the sparse vector's top-k
    latents and the k latents whose decoder directions align best with the dense vector."""
    if sparse.space != "sae" or dense.space != "dense":
        raise SteeringError("vector: compare a sparse (SAE-space) vector with a dense one")
    if sparse.layer != dense.layer:
        raise SteeringError(f"vector: layers differ ({sparse.layer} vs {dense.layer})")
    w_dec = sae.W_dec.detach().float()
    decoded = sparse.values.detach().float() @ w_dec
    direction = dense.values.detach().float()
    alignment = torch.nn.functional.normalize(w_dec, dim=1) @ torch.nn.functional.normalize(direction, dim=0)
    sparse_top = {i for i, _ in top_latents(sparse, k)}
    dense_top = set(torch.topk(alignment, k).indices.tolist())
    return {
        "cosine_decoded_vs_dense": float(torch.nn.functional.cosine_similarity(decoded, direction, dim=0)),
        "k": k, "top_k_overlap": len(sparse_top & dense_top),
        "jaccard": len(sparse_top & dense_top) / len(sparse_top | dense_top) if sparse_top | dense_top else 0.0,
        "sparse_top": sorted(sparse_top), "dense_aligned_top": sorted(dense_top),
        "sparse_l0": sparse.l0, "dense_norm": dense.norm,
    }
