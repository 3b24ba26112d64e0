"""How good an SAE is at a layer: L0, dead latents, variance explained (with and without massive-norm tokens), and
CE loss with the SAE spliced in against zero- and mean-ablation."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from yapo_bench.atomic import atomic_file
from yapo_bench.corpus import token_windows, window_batches
from yapo_bench.internals import edit_layer_output
from yapo_bench.pairs import length_limit
from yapo_bench.sae import check_sae_fits
from yapo_bench.sae.activations import collect_activations, massive_norm_mask


@dataclass
class SAEEval:
    """Figures of an SAE at one layer. CE is measured with the SAE (or an ablation) replacing the layer's
    output at every real position except attention sinks (position 0 and tokens whose norm exceeds
    `massive_norm_factor` × the median; the SAE is not trained on them); the `_all` figures replace
    every position but the first."""

    tokens: int
    l0: float
    dead_fraction: float
    variance_explained: float
    variance_explained_without_massive: float
    massive_tokens: int
    ce_clean: float
    ce_spliced: float
    ce_zero_ablation: float
    ce_mean_ablation: float
    ce_spliced_all: float
    ce_zero_ablation_all: float
    ce_mean_ablation_all: float
    ce_recovered_vs_zero: float = field(init=False)
    ce_recovered_vs_mean: float = field(init=False)
    ce_recovered_vs_mean_all: float = field(init=False)

    def __post_init__(self) -> None:
        self.ce_recovered_vs_zero = _recovered(self.ce_clean, self.ce_spliced, self.ce_zero_ablation)
        self.ce_recovered_vs_mean = _recovered(self.ce_clean, self.ce_spliced, self.ce_mean_ablation)
        self.ce_recovered_vs_mean_all = _recovered(self.ce_clean, self.ce_spliced_all, self.ce_mean_ablation_all)

    def to_dict(self) -> dict:
        return asdict(self)


def _recovered(clean: float, spliced: float, ablated: float) -> float:
    return (ablated - spliced) / (ablated - clean) if ablated != clean else math.nan


def _variance_explained(acts: torch.Tensor, recon: torch.Tensor) -> float:
    residual = (acts - recon).pow(2).sum()
    total = (acts - acts.mean(0)).pow(2).sum()
    return float(1 - residual / total)


@torch.no_grad()
def _summed_ce(
    model: nn.Module, enc: dict, replace: object | None, layer: int, sink_factor: float | None
) -> tuple[float, int]:
    """Summed next-token CE and token count with layer `layer`'s output passed through `replace` at every
    real position except the first and, when `sink_factor` is set, except massive-norm (sink) tokens."""
    real = enc["attention_mask"].bool()
    first = real.float().argmax(dim=1)

    def replaced(hidden: torch.Tensor) -> torch.Tensor:
        keep = real.clone()
        keep[torch.arange(keep.shape[0]), first] = False
        if sink_factor is not None:
            sink = torch.zeros_like(keep)
            sink[real] = massive_norm_mask(hidden[real], sink_factor)
            keep &= ~sink
        new = hidden.clone()
        new[keep] = replace(hidden[keep].float()).to(hidden.dtype)
        return new

    with edit_layer_output(model, layer, replaced) if replace is not None else contextlib.nullcontext():
        logits = model(**enc).logits[:, :-1].float()
    labels = enc["input_ids"][:, 1:]
    mask = enc["attention_mask"][:, 1:].bool() & enc["attention_mask"][:, :-1].bool()
    loss = torch.nn.functional.cross_entropy(logits[mask], labels[mask], reduction="sum")
    return float(loss), int(mask.sum())


@torch.no_grad()
def evaluate_sae(
    model: nn.Module,
    tokenizer: object,
    sae: nn.Module,
    layer: int,
    texts: Sequence[str],
    n_tokens: int = 20_000,
    seq_len: int = 128,
    batch_size: int = 8,
    massive_norm_factor: float = 10.0,
    progress: bool = True,
) -> SAEEval:
    """L0, dead fraction, variance explained (with and without massive-norm tokens), and CE loss
    clean / SAE spliced in / zero-ablated / mean-ablated at layer `layer` on `texts`."""
    check_sae_fits(sae, model)
    acts = collect_activations(model, tokenizer, texts, layer, n_tokens, seq_len, batch_size, progress)
    codes = sae.encode(acts)
    recon = sae.decode(codes)
    massive = massive_norm_mask(acts, massive_norm_factor)
    mean_act = acts[~massive].mean(0)
    replacements = {
        "spliced": lambda h: sae.decode(sae.encode(h)),
        "zero": torch.zeros_like,
        "mean": lambda h: mean_act.expand_as(h),
    }
    runs = [("clean", None, None)]
    for name, replace in replacements.items():
        runs += [(name, replace, massive_norm_factor), (f"{name}_all", replace, None)]
    ce = {name: [0.0, 0] for name, _, _ in runs}
    seen = 0
    windows = token_windows(tokenizer, texts, length_limit(model, seq_len))
    batches = window_batches(tokenizer, windows, batch_size)
    for enc in tqdm(batches, desc="CE eval", disable=not progress):
        for name, replace, sink_factor in runs:
            loss, count = _summed_ce(model, enc, replace, layer, sink_factor)
            ce[name][0] += loss
            ce[name][1] += count
        seen += int(enc["attention_mask"].sum())
        if seen >= n_tokens:
            break
    mean = {name: total / max(count, 1) for name, (total, count) in ce.items()}
    return SAEEval(
        tokens=int(acts.shape[0]),
        l0=float((codes > 0).float().sum(-1).mean()),
        dead_fraction=float(((codes > 0).sum(0) == 0).float().mean()),
        variance_explained=_variance_explained(acts, recon),
        variance_explained_without_massive=_variance_explained(acts[~massive], recon[~massive]),
        massive_tokens=int(massive.sum()),
        ce_clean=mean["clean"],
        ce_spliced=mean["spliced"],
        ce_zero_ablation=mean["zero"],
        ce_mean_ablation=mean["mean"],
        ce_spliced_all=mean["spliced_all"],
        ce_zero_ablation_all=mean["zero_all"],
        ce_mean_ablation_all=mean["mean_all"],
    )


def update_card_eval(sae_dir: Path, evaluation: SAEEval, split: str) -> Path:
    """Record a fresh evaluation in an SAE directory's card.json (atomically)."""
    card_path = Path(sae_dir) / "card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    card["eval"] = {"corpus_split": split, **evaluation.to_dict()}
    with atomic_file(card_path) as tmp:
        tmp.write_text(json.dumps(card, indent=1, default=str) + "\n")
    return card_path
