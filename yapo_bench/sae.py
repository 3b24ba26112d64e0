"""Sparse autoencoders through sae-lens: load (pretrained id, local dir, shipped), train, evaluate.

Activations are collected with a plain forward hook on decoder layer L that stops the forward pass
there (TransformerLens refuses GGUF-loaded models, and layers after L are not needed). Position 0 of
every document is dropped: its residual norm is orders of magnitude above the rest (an attention sink)
and would dominate both training and variance explained.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from unittest import mock

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from yapo_bench.atomic import atomic_dir, atomic_file
from yapo_bench.environment import versions
from yapo_bench.internals import edit_layer_output, get_layer, hidden_size, layer_output
from yapo_bench.models import PRESETS, model_source
from yapo_bench.pairs import length_limit
from yapo_bench.resources import resource_dir

SHIPPED_SAE_DIR = resource_dir("data") / "saes"


class SAELoadError(ValueError):
    """An SAE spec that cannot be loaded or does not fit the model."""


# ----------------------------------------------------------------------------------------------------
# Loading and identity


def shipped_sae_path(name: str) -> Path:
    return SHIPPED_SAE_DIR / name


def list_shipped_saes() -> list[str]:
    if not SHIPPED_SAE_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_SAE_DIR.iterdir() if (p / "cfg.json").exists())


def sae_directory(spec: str) -> Path:
    """The local directory an SAE spec points to (shipped name, preset, or path)."""
    preset = PRESETS.get(spec)
    if preset is not None:
        if preset.shipped_sae is None:
            raise SAELoadError(f"sae: preset {spec!r} ships no SAE yet; train one with `yapo-bench sae train`")
        spec = preset.shipped_sae
    path = Path(spec).expanduser()
    if not path.exists() and spec in list_shipped_saes():
        return shipped_sae_path(spec)
    if not path.exists():
        raise SAELoadError(f"sae: {spec!r} is not a shipped SAE ({', '.join(list_shipped_saes()) or 'none'}) "
                           "nor a local directory")
    return path


def load_sae(spec: str, device: str = "cpu", dtype: str = "float32") -> nn.Module:
    """Load an SAE: a shipped name, a model preset (its shipped SAE), a local sae-lens directory,
    or `<release>/<sae_id>` from sae-lens' pretrained registry (downloads from the hub)."""
    from sae_lens import SAE

    release, _, sae_id_in_release = spec.partition("/")
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    is_local = spec in PRESETS or spec in list_shipped_saes() or Path(spec).expanduser().exists()
    if is_local:
        path = sae_directory(spec)
        if not (path / "cfg.json").exists():
            raise SAELoadError(f"sae: directory {str(path)!r} has no cfg.json (expected sae-lens' on-disk format)")
        sae = SAE.load_from_disk(path, device=device, dtype=dtype)
        sae_id = path.name if path.parent == SHIPPED_SAE_DIR else str(path.resolve())
    elif release in get_pretrained_saes_directory() and sae_id_in_release:
        entry = get_pretrained_saes_directory()[release]
        converter = _gemma_3_loader if entry.conversion_func == "gemma_3" else None
        try:
            sae = SAE.from_pretrained(release, sae_id_in_release, device=device, dtype=dtype, converter=converter)
        except OSError as err:  # not in the HF cache and the hub unreachable or offline: name what was wanted
            path = entry.saes_map.get(sae_id_in_release, sae_id_in_release)
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise SAELoadError(f"sae: cannot load {spec!r} (hub repo {entry.repo_id}, path {path}): {reason}") from err
        sae_id = spec
    else:
        raise SAELoadError(
            f"sae: {spec!r} is not a shipped SAE ({', '.join(list_shipped_saes()) or 'none'}), a local "
            "directory, nor <release>/<sae_id> of a sae-lens pretrained release"
        )
    sae.requires_grad_(False)
    sae.eval()
    sae.yapo_sae_id = sae_id
    return sae


def _cached_tensor_shapes(repo_id: str, filename: str) -> dict[str, list[int]]:
    """Tensor shapes of a safetensors file in a hub repo, read from the copy huggingface_hub fetches (or finds in its
    cache, also offline)."""
    from huggingface_hub import hf_hub_download
    from safetensors import safe_open

    with safe_open(hf_hub_download(repo_id, filename), framework="pt") as weights:
        return {name: list(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118


def _gemma_3_loader(repo_id: str, folder_name: str, device: str = "cpu", force_download: bool = False,
                    cfg_overrides: dict | None = None) -> tuple:
    """sae-lens' Gemma Scope 2 (`gemma_3`) loader, except for how it learns d_in/d_sae. sae-lens (6.54) reads them
    with raw `requests` range requests to huggingface.co, which ignore HF_HUB_OFFLINE and the cache, so no Gemma
    Scope 2 SAE could load offline; here the same header is read from the file the loader downloads next anyway."""
    from sae_lens.loading import pretrained_sae_loaders as loaders

    with mock.patch.object(loaders, "get_safetensors_tensor_shapes", _cached_tensor_shapes):
        return loaders.gemma_3_sae_huggingface_loader(repo_id, folder_name, device, force_download, cfg_overrides)


def sae_layer(sae: nn.Module) -> int | None:
    """The layer an SAE reads, from its sae-lens hook name (`blocks.15.hook_resid_post`, `model.layers.15`)."""
    hook = getattr(getattr(sae.cfg, "metadata", None), "hook_name", None) or ""
    numbers = [part for part in hook.split(".") if part.isdigit()]
    return int(numbers[0]) if len(numbers) == 1 else None


def resolve_sae_and_layer(model: str, sae_spec: str | None, layer: int | None, needs_sae: bool,
                          sae_field: str = "sae", purpose: str = "a sparse vector",
                          layer_field: str = "layer") -> tuple[nn.Module | None, int | None]:
    """The SAE (`sae_spec`, else the preset's shipped one when `needs_sae`) and the layer to steer: explicit,
    else the SAE's own layer, else the preset's default; None when nothing says (callers name their field).
    An explicit layer that is not the SAE's own is refused: the SAE would encode a layer it was not trained on."""
    model_source(model)  # an unknown model is the first thing wrong, before anything about its SAE or layer
    preset = PRESETS.get(model)
    sae = None
    if sae_spec or needs_sae:
        if not sae_spec and not (preset and preset.shipped_sae):
            raise SAELoadError(f"{sae_field}: required for {purpose} with model {model!r}, which has no shipped SAE")
        sae = load_sae(sae_spec or model)
    own = sae_layer(sae) if sae is not None else None
    if layer is not None and own is not None and layer != own:
        raise SAELoadError(f"{layer_field}: {layer} but the SAE {sae_identity(sae)} reads layer {own}; pass an SAE "
                           f"for layer {layer} ({sae_field}) or leave {layer_field} unset")
    if layer is None:
        layer = own
    if layer is None and preset:
        layer = preset.default_layer
    return sae, layer


def sae_hash(sae: nn.Module) -> str:
    """Content hash of the SAE's weights: a vector records it and refuses any other SAE."""
    cached = getattr(sae, "_yapo_sae_hash", None)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for name, tensor in sorted(sae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    sae._yapo_sae_hash = digest.hexdigest()[:16]
    return sae._yapo_sae_hash


def sae_identity(sae: nn.Module) -> str:
    return getattr(sae, "yapo_sae_id", None) or f"{sae.cfg.architecture()}-{sae.cfg.d_in}x{sae.cfg.d_sae}"


def check_sae_fits(sae: nn.Module | None, model: nn.Module, needed_by: str | None = None) -> None:
    """Raise unless `sae` reads the model's residual stream; `needed_by` names a method that requires one."""
    if sae is None:
        raise SAELoadError(f"sae: {needed_by or 'this'} works in SAE latent space; pass an SAE")
    d_model = hidden_size(model)
    if sae.cfg.d_in != d_model:
        raise SAELoadError(f"sae: d_in is {sae.cfg.d_in} but the model's hidden size is {d_model}")


# ----------------------------------------------------------------------------------------------------
# Activation collection


def render_documents(tokenizer: object, texts: Sequence[str], chat_every: int = 0) -> list[str]:
    """Plain documents, with every `chat_every`-th one rendered as a chat turn (first line as the user's
    message, the rest as the assistant's answer) so the SAE also sees the chat template's tokens."""
    if not chat_every or getattr(tokenizer, "chat_template", None) is None:
        return list(texts)
    rendered = []
    for i, text in enumerate(texts):
        if i % chat_every:
            rendered.append(text)
            continue
        head, _, tail = text.partition("\n")
        messages = [{"role": "user", "content": head}, {"role": "assistant", "content": tail or head}]
        rendered.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return rendered


def token_windows(tokenizer: object, texts: Sequence[str], seq_len: int) -> list[list[int]]:
    """Each document's tokens cut into consecutive windows of at most `seq_len` (no text is lost to
    truncation; callers pass `pairs.length_limit(model, seq_len)`, so no window exceeds the model's positions);
    windows shorter than 8 tokens are dropped."""
    windows = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        windows.extend(ids[i : i + seq_len] for i in range(0, len(ids), seq_len) if len(ids[i : i + seq_len]) >= 8)
    return windows


def window_batches(tokenizer: object, windows: Sequence[list[int]], batch_size: int) -> Iterator[dict]:
    """Right-padded batches of token windows with their attention masks."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(windows), batch_size):
        rows = windows[start : start + batch_size]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        yield {"input_ids": ids, "attention_mask": mask}


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


# ----------------------------------------------------------------------------------------------------
# Training


@dataclass
class SAETrainSpec:
    """Everything that determines a trained SAE; recorded in its card."""

    model: str
    layer: int
    corpus: str = "python-stdlib"
    tokens: int = 1_000_000
    d_sae: int = 4608
    k: float = 64.0
    lr: float = 5e-4
    batch_size: int = 512
    epochs: int = 4
    seq_len: int = 128
    chat_every: int = 3
    massive_norm_factor: float = 10.0
    seed: int = 0
    save_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        positive = {"tokens": self.tokens, "d_sae": self.d_sae, "k": self.k, "lr": self.lr,
                    "batch_size": self.batch_size, "epochs": self.epochs, "seq_len": self.seq_len}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name}: must be positive, got {value!r}")
        if self.save_dtype not in {"float32", "bfloat16", "float16"}:
            raise ValueError(f"save_dtype: {self.save_dtype!r}; expected float32, bfloat16 or float16")


def _batches(acts: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(acts.shape[0], generator=generator)
        for start in range(0, acts.shape[0] - batch_size + 1, batch_size):
            yield acts[order[start : start + batch_size]]


def train_sae(acts: torch.Tensor, spec: SAETrainSpec, progress: bool = True) -> nn.Module:
    """Train a BatchTopK SAE with sae-lens' trainer on collected activations.

    BatchTopK trains like TopK (few dead latents) and is saved as a JumpReLU SAE, whose latents are
    computed independently of each other; that is what makes YaPO's sparse-support steering exact.
    """
    from sae_lens import SAETrainer
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

    torch.manual_seed(spec.seed)
    sae_cfg = BatchTopKTrainingSAEConfig(
        d_in=acts.shape[1], d_sae=spec.d_sae, k=spec.k, normalize_activations="expected_average_only_in"
    )
    sae_cfg.metadata.model_name = spec.model
    sae_cfg.metadata.hook_name = f"model.layers.{spec.layer}"
    sae = BatchTopKTrainingSAE(sae_cfg)
    with torch.no_grad():  # start b_dec at the data median-ish mean, as sae-lens' runner does
        sae.b_dec.copy_(acts[: min(len(acts), 100_000)].mean(0))
    total = (acts.shape[0] // spec.batch_size) * spec.batch_size * spec.epochs
    steps = total // spec.batch_size
    trainer_cfg = SAETrainerConfig(
        total_training_samples=total,
        train_batch_size_samples=spec.batch_size,
        lr=spec.lr,
        lr_end=spec.lr / 10,
        lr_warm_up_steps=max(1, steps // 20),
        lr_decay_steps=max(1, steps // 5),
        lr_scheduler_name="constant",
        dead_feature_window=max(1, min(1000, steps // 4)),
        feature_sampling_window=max(1, min(2000, steps // 2)),
        n_batches_for_norm_estimate=min(100, max(1, acts.shape[0] // spec.batch_size)),
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(trainer_cfg, sae, data_provider=_batches(acts, spec.batch_size, spec.seed))
    # sae-lens' trainer builds its own tqdm bars; tqdm reads TQDM_* variables when a bar is made.
    with mock.patch.dict(os.environ, {} if progress else {"TQDM_DISABLE": "1"}):
        return trainer.fit()


def save_sae(sae: nn.Module, out: Path, card: dict, dtype: str = "float32") -> Path:
    """Save the inference SAE in sae-lens' format plus card.json, atomically (temp dir, then rename)."""
    with atomic_dir(out) as tmp:
        sae.save_inference_model(tmp)
        if dtype != "float32":
            weights = load_file(tmp / "sae_weights.safetensors")
            save_file({k: v.to(getattr(torch, dtype)) for k, v in weights.items()}, tmp / "sae_weights.safetensors")
            cfg = json.loads((tmp / "cfg.json").read_text())
            cfg["dtype"] = "float32"  # loaded and run in fp32; only the file is stored compactly
            (tmp / "cfg.json").write_text(json.dumps(cfg, indent=1))
        (tmp / "card.json").write_text(json.dumps(card, indent=1, default=str) + "\n")
    return out


# ----------------------------------------------------------------------------------------------------
# Evaluation


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


# ----------------------------------------------------------------------------------------------------
# The whole pipeline behind `yapo-bench sae train`


def _activation_cache_path(spec: SAETrainSpec) -> Path:
    from yapo_bench.models import cache_dir

    key = {k: getattr(spec, k) for k in ("model", "layer", "corpus", "tokens", "seq_len", "chat_every")}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "activations" / f"{digest}.safetensors"


def build_sae(spec: SAETrainSpec, out: Path, command: str = "", progress: bool = True) -> tuple[nn.Module, SAEEval]:
    """Collect activations (cached on disk), train, evaluate on the corpus' held-out split, save + card."""
    import time

    from yapo_bench.corpus import load_corpus
    from yapo_bench.models import load_model

    loaded = load_model(spec.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    get_layer(model, spec.layer)  # validates the layer before any work is done
    texts = render_documents(tokenizer, load_corpus(spec.corpus, "train"), spec.chat_every)
    texts = [texts[i] for i in torch.randperm(len(texts), generator=torch.Generator().manual_seed(spec.seed))]
    cache = _activation_cache_path(spec)
    started = time.time()
    if cache.exists():
        acts = load_file(cache)["acts"].float()
    else:
        acts = collect_activations(model, tokenizer, texts, spec.layer, spec.tokens, spec.seq_len, progress=progress)
        acts = acts.half().float()  # train on exactly what the cache holds, so a rerun is identical
        with atomic_file(cache) as tmp:
            save_file({"acts": acts.half()}, tmp)
    collect_seconds = time.time() - started
    massive = massive_norm_mask(acts, spec.massive_norm_factor)
    train_acts = acts[~massive]
    started = time.time()
    sae = train_sae(train_acts, spec, progress=progress)
    train_seconds = time.time() - started
    inference = load_sae_from_training(sae, spec.save_dtype)
    heldout = render_documents(tokenizer, load_corpus(spec.corpus, "heldout"), spec.chat_every)
    evaluation = evaluate_sae(model, tokenizer, inference, spec.layer, heldout, progress=progress)
    card = {
        "name": out.name,
        "model": spec.model,
        "layer": spec.layer,
        "hook": f"output of decoder layer {spec.layer} (model.layers.{spec.layer}), residual stream",
        "architecture": "BatchTopK (sae-lens), saved as JumpReLU",
        "spec": asdict(spec),
        "corpus_description": _corpus_description(spec.corpus),
        "training_tokens_collected": int(acts.shape[0]),
        "training_tokens_used": int(train_acts.shape[0]),
        "massive_norm_tokens_dropped": int(massive.sum()),
        "collect_seconds": round(collect_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "dead_fraction_training_window": sae.cfg.metadata.num_dead_features / spec.d_sae,
        "eval": {"corpus_split": "heldout", **evaluation.to_dict()},
        "command": command,
        "versions": versions(),
    }
    save_sae(sae, out, card, spec.save_dtype)
    return inference, evaluation


def load_sae_from_training(training_sae: nn.Module, save_dtype: str) -> nn.Module:
    """The inference SAE exactly as it will be loaded from disk (round-tripped through the save dtype)."""
    with tempfile.TemporaryDirectory() as tmp:
        save_sae(training_sae, Path(tmp) / "sae", {}, save_dtype)
        sae = load_sae(str(Path(tmp) / "sae"))
    sae.yapo_sae_id = None
    return sae


def _corpus_description(corpus: str) -> str:
    if corpus == "python-stdlib":
        import sys

        return (
            f"python-stdlib: text shipped with CPython {sys.version.split()[0]} (PSF licence): pydoc_data.topics, "
            "standard-library docstrings of >= 200 characters, and the 40-line source chunks whose sha256 "
            "mod 6 == 0 (tests/idlelib/lib2to3 excluded); train split = documents whose sha256 mod 32 != 0; "
            "every third document rendered as a chat turn; documents cut into windows of seq_len tokens"
        )
    return corpus
