"""Training an SAE on activations we collect (sae-lens' trainer, BatchTopK saved as JumpReLU), and the whole pipeline
behind `yapo-bench sae train`: collect (cached on disk), train, evaluate on the corpus' held-out split, save with a
card."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from yapo_bench.atomic import atomic_dir, atomic_file
from yapo_bench.corpus import render_documents
from yapo_bench.environment import versions
from yapo_bench.internals import get_layer
from yapo_bench.sae import load_sae, temporarily
from yapo_bench.sae.activations import collect_activations, massive_norm_mask
from yapo_bench.sae.evaluation import SAEEval, evaluate_sae

NORMALIZATIONS = ("expected_average_only_in", "covariance_whitening")


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
    # sae-lens' input normalisation. covariance_whitening (folded into the weights after training) is for models
    # whose residual stream is dominated by a few huge dimensions (Gemma-3: one dimension holds ~90% of the
    # variance), where a single global scale leaves the reconstruction loss blind to everything else.
    normalize: str = "expected_average_only_in"

    def __post_init__(self) -> None:
        positive = {"tokens": self.tokens, "d_sae": self.d_sae, "k": self.k, "lr": self.lr,
                    "batch_size": self.batch_size, "epochs": self.epochs, "seq_len": self.seq_len}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name}: must be positive, got {value!r}")
        if self.save_dtype not in {"float32", "bfloat16", "float16"}:
            raise ValueError(f"save_dtype: {self.save_dtype!r}; expected float32, bfloat16 or float16")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize: {self.normalize!r}; expected one of {', '.join(NORMALIZATIONS)}")


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
        d_in=acts.shape[1], d_sae=spec.d_sae, k=spec.k, normalize_activations=spec.normalize
    )
    sae_cfg.metadata.model_name = spec.model
    sae_cfg.metadata.hook_name = f"model.layers.{spec.layer}"
    sae = BatchTopKTrainingSAE(sae_cfg)
    if spec.normalize != "covariance_whitening":  # whitened inputs have zero mean already
        with torch.no_grad():  # start b_dec at the data mean, as sae-lens' runner does
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
    with contextlib.nullcontext() if progress else temporarily(os.environ, "TQDM_DISABLE", "1"):
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


def _overflow_is_dropped(cached: torch.Tensor, massive_norm_factor: float) -> bool:
    """Rows that overflow float16 may be cached as inf only if training drops them as massive-norm tokens (Gemma's
    attention sinks reach 1e5). An overflowing row's real norm exceeds float16's largest value, so it is surely
    massive when `massive_norm_factor` × the median norm is below that; otherwise its real values are needed."""
    if torch.isfinite(cached).all():
        return True
    threshold = massive_norm_factor * cached.float().norm(dim=-1).median()
    return bool(threshold < torch.finfo(torch.float16).max)


def _cacheable(acts: torch.Tensor, massive_norm_factor: float) -> torch.Tensor:
    """float16 halves the cache; float32 when a row that training may use would overflow it."""
    half = acts.half()
    return half if _overflow_is_dropped(half, massive_norm_factor) else acts.float()


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
    acts = load_file(cache)["acts"] if cache.exists() else None
    if acts is not None and not _overflow_is_dropped(acts, spec.massive_norm_factor):
        print(f"note: activation cache {cache} holds float16 overflows in tokens that massive_norm_factor "
              f"{spec.massive_norm_factor} keeps for training; collecting again in float32")
        acts = None
    if acts is None:
        acts = _cacheable(collect_activations(model, tokenizer, texts, spec.layer, spec.tokens, spec.seq_len,
                                              progress=progress), spec.massive_norm_factor)
        with atomic_file(cache) as tmp:
            save_file({"acts": acts}, tmp)
    acts = acts.float()  # train on exactly what the cache holds, so a rerun is identical
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
