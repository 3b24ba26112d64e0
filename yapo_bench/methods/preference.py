"""The bi-directional preference loss shared by BiPO (dense v) and YaPO (v in SAE space).

For a batch of (x, y_w, y_l) and a direction d ∈ {−1, +1}:
  r(y) = log π(y | x, steered by d·v) − log π(y | x, unsteered)   (summed over response tokens)
  loss = −log σ(d · β · (r(y_w) − r(y_l)))
Layers ≤ L never see v, so the cached path computes A_L(x) once per sequence (no grad) and, at each step,
replays it through the model with layers ≤ L swapped for stand-ins that return the cache: only layers
L+1.. run with grad, and logits are computed at response positions only. The unsteered log-probs are
constant in v and computed once. The naive path recomputes everything (the reference behaviour).
Both go through the one `steer(...)`; they agree to float precision (tested).
"""

from __future__ import annotations

import collections
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from yapo_bench.atomic import atomic_file, writing
from yapo_bench.devices import model_placement
from yapo_bench.distributed import DataParallel, data_parallel
from yapo_bench.internals import get_layer, hidden_size, layer_output, record_layer_outputs, replay_layer_output
from yapo_bench.models import LoadedModel
from yapo_bench.pairs import EncodedPairs, PreferencePair, describe_pairs, encode_pairs_within, length_limit
from yapo_bench.steering import SteeringVector, module_device, steer


@dataclass
class EncodedSequence:
    key: int  # unique per sequence: what the caches are keyed by
    ids: torch.Tensor  # [T]
    response_start: int


@dataclass
class EncodedPair:
    chosen: EncodedSequence
    rejected: EncodedSequence


def encode_pairs(loaded: LoadedModel, pairs: Sequence[PreferencePair], max_length: int) -> tuple[list[EncodedPair], int]:
    """Token ids of every pair (chat template applied) under the length rule (`pairs.encode_pairs_within`, at most
    the model's positions). Returns the pairs and how many sequences were truncated."""
    encoded, within = _encode(loaded, pairs, max_length)
    return encoded, within.truncated


def _encode(loaded: LoadedModel, pairs: Sequence[PreferencePair], max_length: int,
            say: bool = True) -> tuple[list[EncodedPair], EncodedPairs]:
    within = encode_pairs_within(loaded.tokenizer, pairs, length_limit(loaded.model, max_length), say)
    encoded = [EncodedPair(EncodedSequence(2 * i, *chosen), EncodedSequence(2 * i + 1, *rejected))
               for i, (chosen, rejected) in enumerate(within.sides)]
    return encoded, within


def _pad(sequences: Sequence[EncodedSequence], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s.ids) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(sequences), width), dtype=torch.long, device=device)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq.ids)] = seq.ids
        mask[row, : len(seq.ids)] = 1
    return ids, mask


class PreferenceBatchScorer:
    """Σ log π(response | prompt) for sequences, steered by a grad-carrying vector, cached or naive.

    Cached: when a step first needs a sequence, A_L(x) (right-padded into each batch at use; causal attention means
    padding never reaches real positions) and its unsteered log-prob sum are computed once, without grad, and kept.
    Each sequence is computed alone: a batch's width (padding) and even its row count change the float result, so
    this way the values never depend on which sequences were computed together or when, and a lazily cached run, an
    eagerly cached one and a resumed one agree exactly.
    Naive: every call runs the full model with full logits, as the reference code did.
    Everything runs on the model's device; the layer-output cache lives on `cache_device` (the model's, unless it
    would not fit there), and a step's rows are moved to the model's device when they are used."""

    def __init__(self, loaded: LoadedModel, layer: int, sae: nn.Module | None, positions: str, naive: bool,
                 cache_device: torch.device | str | None = None) -> None:
        get_layer(loaded.model, layer)
        self.model = loaded.model
        self.decoder = loaded.model.get_decoder()
        self.device = module_device(self.decoder)
        self.cache_device = torch.device(cache_device) if cache_device is not None else self.device
        self.pad_id = loaded.tokenizer.pad_token_id or 0
        self.layer = layer
        self.sae = sae
        self.positions = positions
        self.naive = naive
        self._layer_cache: dict[int, torch.Tensor] = {}
        self._reference_cache: dict[int, torch.Tensor] = {}

    def _alone(self, seq: EncodedSequence) -> torch.Tensor:
        """A_L(x) of one sequence, computed by itself: [T, d_model]."""
        ids = seq.ids[None].to(self.device)
        return layer_output(self.decoder, self.layer, input_ids=ids, attention_mask=torch.ones_like(ids))[0]

    @torch.no_grad()
    def _ensure_cached(self, sequences: Sequence[EncodedSequence]) -> None:
        """Fill both caches for those of `sequences` not in them yet."""
        for seq in sorted({s.key: s for s in sequences if s.key not in self._reference_cache}.values(),
                          key=lambda s: s.key):
            # one forward pass gives both: A_L on the way up, the unsteered log-probs at the top
            with record_layer_outputs(self.decoder, [self.layer]) as recorded:
                self._reference_cache[seq.key] = self._logprob_sums([seq], None, 1)[0]
            self._layer_cache[seq.key] = recorded[self.layer][0].to(self.cache_device)

    @torch.no_grad()
    def residual_norm(self, sequences: Sequence[EncodedSequence]) -> float:
        """The median token norm of A_L over `sequences` (position 0, an attention sink, left out): the scale a
        steering vector's change to the residual stream is measured against."""
        return float(torch.cat([self._alone(seq)[1:] for seq in sequences]).float().norm(dim=-1).median())

    def _logprob_sums(self, sequences: Sequence[EncodedSequence], vector: SteeringVector | None,
                      direction: int) -> torch.Tensor:
        ids, mask = _pad(sequences, self.pad_id, self.device)
        starts = [s.response_start for s in sequences]
        with steer(self.model, vector, multiplier=1.0, direction=direction, positions=self.positions,
                   sae=self.sae, response_start=starts):
            if self.naive:
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
                rows = [logits[row, s.response_start - 1 : len(s.ids) - 1] for row, s in enumerate(sequences)]
                return _sum_target_logprobs(rows, ids, sequences)
            hidden = self.decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        head = self.model.get_output_embeddings()
        softcap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        rows = []
        for row, seq in enumerate(sequences):  # logits at response positions only
            logits = head(hidden[row, seq.response_start - 1 : len(seq.ids) - 1]).float()
            rows.append(torch.tanh(logits / softcap) * softcap if softcap else logits)
        return _sum_target_logprobs(rows, ids, sequences)

    def _cached_layer_output(self, sequences: Sequence[EncodedSequence]) -> torch.Tensor:
        self._ensure_cached(sequences)
        width = max(len(s.ids) for s in sequences)
        first = self._layer_cache[sequences[0].key]
        batch = torch.zeros(len(sequences), width, first.shape[-1], dtype=first.dtype, device=self.device)
        for row, seq in enumerate(sequences):
            batch[row, : len(seq.ids)] = self._layer_cache[seq.key].to(self.device)
        return batch

    def reference(self, sequences: Sequence[EncodedSequence]) -> torch.Tensor:
        """Unsteered log-prob sums (constant in v): from the cache unless naive."""
        if self.naive:
            with torch.no_grad():
                return self._logprob_sums(sequences, None, 1)
        self._ensure_cached(sequences)
        return torch.stack([self._reference_cache[s.key] for s in sequences])

    def steered(self, sequences: Sequence[EncodedSequence], vector: SteeringVector, direction: int) -> torch.Tensor:
        if self.naive:
            return self._logprob_sums(sequences, vector, direction)
        with replay_layer_output(self.model, self.layer, self._cached_layer_output(sequences)):
            return self._logprob_sums(sequences, vector, direction)


def _sum_target_logprobs(rows: Sequence[torch.Tensor], ids: torch.Tensor, sequences: Sequence[EncodedSequence]) -> torch.Tensor:
    """Σ log softmax(logits)[next token] per sequence, from the logits that predict its response tokens."""
    sums = []
    for row, (logits, seq) in enumerate(zip(rows, sequences)):
        targets = ids[row, seq.response_start : len(seq.ids)]
        sums.append(logits.log_softmax(-1).gather(-1, targets[:, None]).sum())
    return torch.stack(sums)


def preference_loss(scorer: PreferenceBatchScorer, batch: Sequence[EncodedPair], vector: SteeringVector,
                    direction: int | Sequence[int], beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """−log σ(d·β·(r(y_w) − r(y_l))) averaged over the batch, with its accuracy and mean directed reward
    margin d·(r(y_w) − r(y_l)) (detached tensors on the loss's device: reading them is one sync per step).
    `direction` is one d for the batch or one per pair (rows are grouped by d, one steered pass per group)."""
    directions = [direction] * len(batch) if isinstance(direction, int) else list(direction)
    chosen = [p.chosen for p in batch]
    rejected = [p.rejected for p in batch]
    steered_w: list[torch.Tensor | None] = [None] * len(batch)
    steered_l: list[torch.Tensor | None] = [None] * len(batch)
    for d in sorted(set(directions), reverse=True):
        rows = [i for i, value in enumerate(directions) if value == d]
        for target, sequences in ((steered_w, chosen), (steered_l, rejected)):
            for i, value in zip(rows, scorer.steered([sequences[i] for i in rows], vector, d)):
                target[i] = value
    reward_w = torch.stack(steered_w) - scorer.reference(chosen)
    reward_l = torch.stack(steered_l) - scorer.reference(rejected)
    signs = torch.tensor(directions, dtype=reward_w.dtype, device=reward_w.device)
    margin = signs * beta * (reward_w - reward_l)
    loss = -torch.nn.functional.logsigmoid(margin).mean()
    with torch.no_grad():
        stats = {"accuracy": (margin > 0).float().mean(), "reward_margin": (signs * (reward_w - reward_l)).mean()}
    return loss, stats


# ----------------------------------------------------------------------------------------------------
# The training loop

TRAINING_POSITIONS = ("all", "response")  # steer() also takes prompt/generated; training does not
DIRECTION_MODES = ("batch", "example")
RUN_FIELDS = ("run_dir", "resume", "progress")  # where/how a run goes; not part of what it computes
CHECKPOINT = "checkpoint.pt"
NORM_SAMPLE = 16  # training sequences whose residual norm scales the divergence rule's norm limit
LOG = "train_log.jsonl"


class TrainingDiverged(ValueError):
    """Training blew up (see `PreferenceSpec.divergence_rule`); nothing non-finite is saved, the last good
    checkpoint is kept and named."""


@dataclass
class PreferenceSpec:
    """Hyper-parameters of the bi-directional preference loop (BiPO and YaPO).

    Defaults follow the reference code (β 0.1, lr 5e-4, AdamW, warm-up + cosine, clip 1.0, all positions
    steered, one d per batch) except that weight decay is really applied and v is fp32. `heldout_fraction`
    of the pairs (chosen by `seed`) is never trained on and is evaluated every `eval_every` steps."""

    layer: int
    steps: int = 200
    batch_size: int = 4
    lr: float = 5e-4
    beta: float = 0.1
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0
    positions: str = "all"
    direction_mode: str = "batch"
    seed: int = 0
    max_length: int = 256
    max_loss_ratio: float = 4.0
    divergence_window: int = 5
    max_norm_ratio: float = 100.0
    heldout_fraction: float = 0.1
    eval_every: int = 25
    checkpoint_every: int = 25
    naive: bool = False
    run_dir: str | None = None
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "max_length")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: {getattr(self, name)!r}; expected an integer >= 1")
        for name in ("layer", "warmup_steps", "eval_every", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name}: {getattr(self, name)!r}; expected an integer >= 0")
        if not isinstance(self.divergence_window, int) or self.divergence_window < 1:
            raise ValueError(f"divergence_window: {self.divergence_window!r}; expected an integer >= 1")
        for name in ("max_loss_ratio", "max_norm_ratio"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 1:
                raise ValueError(f"{name}: {getattr(self, name)!r}; expected a finite number > 1")
        for name in ("lr", "beta", "grad_clip"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"{name}: {getattr(self, name)!r}; expected a finite number > 0")
        if not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay: {self.weight_decay!r}; expected a finite number >= 0")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction: {self.heldout_fraction!r}; expected a number in [0, 1)")
        if self.positions not in TRAINING_POSITIONS:
            raise ValueError(f"positions: {self.positions!r}; expected one of {TRAINING_POSITIONS}")
        if self.direction_mode not in DIRECTION_MODES:
            raise ValueError(f"direction_mode: {self.direction_mode!r}; expected one of {DIRECTION_MODES}")

    def config(self) -> dict[str, Any]:
        """What determines the result: recorded in the vector and checked on resume."""
        return {k: v for k, v in asdict(self).items() if k not in RUN_FIELDS}

    def divergence_rule(self) -> str:
        """The rule that stops a run, in words (recorded in every vector's metadata)."""
        return (f"stop when the loss, the gradient or v is not finite, when the mean train loss of the last "
                f"{self.divergence_window} steps exceeds {self.max_loss_ratio:g} x ln 2 = "
                f"{self.divergence_loss():.4g} (ln 2 is the loss at v = 0, where training starts), or when v's "
                f"change to the residual stream (|v| dense, |W_dec^T v| sparse) exceeds {self.max_norm_ratio:g} x "
                f"the median token norm of the layer's output on the first {NORM_SAMPLE} training sequences")

    def divergence_loss(self) -> float:
        return self.max_loss_ratio * math.log(2)

    def learning_rate_factor(self, step: int) -> float:
        """Linear warm-up to lr over `warmup_steps`, then cosine decay to 0 at `steps`."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def split_heldout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the training and held-out pairs (a seeded shuffle; at least one of each when n ≥ 2)."""
    order = np.random.default_rng([seed, 7]).permutation(n).tolist()
    heldout = min(n - 1, max(1, round(n * fraction))) if fraction > 0 and n >= 2 else 0
    return sorted(order[heldout:]), sorted(order[:heldout])


def step_batch(step: int, n_train: int, spec: PreferenceSpec) -> tuple[list[int], list[int]]:
    """Training-pair indices and directions for one step: a function of (seed, step) only, so a resumed run
    sees exactly the batches an uninterrupted one would. Each epoch is a fresh seeded shuffle."""
    per_epoch = math.ceil(n_train / spec.batch_size)
    epoch, index = divmod(step, per_epoch)
    order = np.random.default_rng([spec.seed, 1, epoch]).permutation(n_train)
    rows = order[index * spec.batch_size : (index + 1) * spec.batch_size].tolist()
    draws = np.random.default_rng([spec.seed, 2, step]).integers(0, 2, size=len(rows))
    if spec.direction_mode == "batch":
        draws[:] = draws[0]
    return rows, [1 if d else -1 for d in draws.tolist()]


@torch.no_grad()
def evaluate_heldout(scorer: PreferenceBatchScorer, pairs: Sequence[EncodedPair], vector: SteeringVector,
                     spec: PreferenceSpec) -> dict[str, float]:
    """Mean loss and accuracy on held-out pairs, for d = +1 and d = −1 (the loss trains both)."""
    result = {}
    for d, name in ((1, "pos"), (-1, "neg")):
        losses, accuracies = [], []
        for i in range(0, len(pairs), spec.batch_size):
            batch = pairs[i : i + spec.batch_size]
            loss, stats = preference_loss(scorer, batch, vector, d, spec.beta)
            losses.append(float(loss) * len(batch))
            accuracies.append(float(stats["accuracy"]) * len(batch))
        result[f"heldout_loss_{name}"] = sum(losses) / len(pairs)
        result[f"heldout_accuracy_{name}"] = sum(accuracies) / len(pairs)
    result["heldout_loss"] = (result["heldout_loss_pos"] + result["heldout_loss_neg"]) / 2
    return result


class _RunFiles:
    """The run directory: JSONL log and checkpoint, both safe against a kill at any point. `writer` is False
    on data-parallel ranks other than 0, which write nothing (rank 0 writes for all)."""

    def __init__(self, run_dir: str | None, writer: bool = True) -> None:
        self.dir = Path(run_dir) if run_dir else None
        self.writer = writer

    def log(self, record: dict[str, Any]) -> None:
        if self.dir and self.writer:
            with writing(self.dir / LOG), open(self.dir / LOG, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        if self.dir and self.writer:
            with atomic_file(self.dir / CHECKPOINT) as tmp:
                torch.save(state, tmp)

    def train_losses(self, last: int) -> list[float]:
        """The train losses of the last `last` steps in the log (none without a run directory)."""
        log = self.dir / LOG if self.dir else None
        if log is None or not log.exists():
            return []
        records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [r["loss"] for r in records if r["kind"] == "train"][-last:]

    def checkpoint_path(self) -> Path | None:
        return self.dir / CHECKPOINT if self.dir else None

    def start(self, resume: bool, config: dict[str, Any]) -> dict[str, Any] | None:
        """Open the run: a fresh one (refusing to overwrite a checkpoint) or, with `resume`, from its
        checkpoint if it has one, the log cut back to the checkpoint's step so it reads as one run."""
        if not self.dir:
            if resume:
                raise ValueError("resume: needs a run directory (--out) holding a checkpoint")
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        checkpoint = self.dir / CHECKPOINT
        if not resume and checkpoint.exists():
            raise ValueError(f"out: {self.dir} already holds a training checkpoint; pass --resume to continue "
                             "it or choose another --out")
        if not checkpoint.exists():  # a fresh run, or one killed before its first checkpoint
            if resume:
                print(f"resume: no {CHECKPOINT} in {self.dir} yet; starting at step 0")
            (self.dir / LOG).unlink(missing_ok=True)
            return None
        state = torch.load(checkpoint, weights_only=True, map_location="cpu")  # the run may resume elsewhere
        for key in sorted(set(config) | set(state["config"])):
            if config.get(key) != state["config"].get(key):
                raise ValueError(f"resume: {key} is {config.get(key)!r} but the checkpoint was made with "
                                 f"{state['config'].get(key)!r}")
        log = self.dir / LOG
        kept = [line for line in (log.read_text(encoding="utf-8").splitlines() if log.exists() else [])
                if line.strip() and json.loads(line)["step"] <= state["step"]]
        with atomic_file(log) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        return state


def train_preference_vector(loaded: LoadedModel, pairs: Sequence[PreferencePair], spec: PreferenceSpec,
                            sae: nn.Module | None, method: str,
                            on_step: Callable[[dict[str, Any]], bool] | None = None) -> SteeringVector:
    """Learn v with the bi-directional preference loss: dense when `sae` is None (BiPO), else in the SAE's
    latent space through eq. 3 (YaPO). v starts at 0 in fp32; with a run_dir, logs and checkpoints go there
    and the finished vector is saved beside them. `on_step` sees each step's log record and may return True
    to stop early (the schedule is unchanged, so the steps run are those of the full run).

    Under `accelerate launch` (or any torch.distributed group of several processes) training is data
    parallel: each rank scores its share of every step's batch and the gradient of v is summed over the
    ranks, so every rank takes the single-process step on the whole batch and ends with the same v; rank 0
    alone reads and writes the run directory and evaluates the held-out pairs."""
    group = data_parallel()
    encoded, within = _encode(loaded, pairs, spec.max_length, say=group.is_main)
    # from here the spec says the limit that applied (the model's positions when fewer were asked for): the checkpoint
    # and the vector record what ran
    requested, spec = spec.max_length, replace(spec, max_length=within.limit)
    train_rows, heldout_rows = split_heldout(len(encoded), spec.heldout_fraction, spec.seed)
    if not train_rows:
        raise ValueError("pairs: expected at least one training pair")
    train = [encoded[i] for i in train_rows]
    heldout = [encoded[i] for i in heldout_rows]
    run = _RunFiles(spec.run_dir, writer=group.is_main)
    state = group.on_main(lambda: run.start(spec.resume, spec.config()))
    progress = spec.progress and group.is_main

    device = module_device(loaded.model)
    scorer = PreferenceBatchScorer(loaded, spec.layer, sae, spec.positions, spec.naive,
                                   cache_device=_cache_device(loaded.model, encoded, quiet=not group.is_main))
    dim = sae.cfg.d_sae if sae is not None else hidden_size(loaded.model)
    values = torch.zeros(dim, dtype=torch.float32, device=device, requires_grad=True)  # fp32 whatever the model's
    metadata = dict(model_id=loaded.model_id, method=method)
    vector = (SteeringVector.sparse(values, spec.layer, sae, **metadata) if sae is not None
              else SteeringVector.dense(values, spec.layer, **metadata))
    optimizer = torch.optim.AdamW([values], lr=spec.lr, weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, spec.learning_rate_factor)
    first_step = 0
    if state is not None:
        with torch.no_grad():
            values.copy_(state["values"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        first_step = state["step"]
    last_good = first_step if state is not None else None

    # the divergence rule's window, refilled from the log on resume so that a resumed run stops where an
    # uninterrupted one would
    recent_losses = collections.deque(group.on_main(lambda: run.train_losses(spec.divergence_window)),
                                      maxlen=spec.divergence_window)
    sample = sorted((s for p in train for s in (p.chosen, p.rejected)), key=lambda s: s.key)[:NORM_SAMPLE]
    norm_limit = spec.max_norm_ratio * scorer.residual_norm(sample)

    def shift_norm() -> float:
        return float(values.detach().norm() if sae is None else (values.detach() @ sae.W_dec.float()).norm())

    bar = tqdm(range(first_step, spec.steps), initial=first_step, total=spec.steps, desc=f"{method} training",
               disable=not progress)
    loss_value, steps_done = float("nan"), first_step
    for step in bar:
        started = time.perf_counter()
        rows, directions = step_batch(step, len(train), spec)
        optimizer.zero_grad()
        if group.active:
            loss_value, stats = _data_parallel_backward(scorer, [train[i] for i in rows], vector, values,
                                                        directions, spec.beta, group)
        else:
            loss, step_stats = preference_loss(scorer, [train[i] for i in rows], vector, directions, spec.beta)
            stats = {name: float(value) for name, value in step_stats.items()}
            loss_value = float(loss.detach())
            if math.isfinite(loss_value):
                loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_([values], spec.grad_clip)) if values.grad is not None else float("nan")
        lr = scheduler.get_last_lr()[0]
        recent_losses.append(loss_value)
        problem = _divergence(spec, loss_value, grad_norm, optimizer, values, recent_losses)
        if problem is None and shift_norm() > norm_limit:
            problem = f"v's change to the residual stream has norm {shift_norm():.4g} (limit {norm_limit:.4g})"
        if problem:
            where = f"{run.checkpoint_path()} (step {last_good})" if last_good is not None else "none saved yet"
            raise TrainingDiverged(f"step {step + 1}: {problem}; training stopped; last good checkpoint: {where}. "
                                   f"The rule: {spec.divergence_rule()}")
        scheduler.step()
        steps_done = step + 1
        record = {"step": step + 1, "kind": "train", "loss": loss_value, **stats, "norm": vector.norm, "lr": lr,
                  "grad_norm": grad_norm, "direction": directions[0] if spec.direction_mode == "batch" else None,
                  "seconds": round(time.perf_counter() - started, 4)}
        if vector.space == "sae":
            record["l0"] = vector.l0
        run.log(record)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        stop_early = bool(on_step and on_step(record))  # called on every step, the last one included
        if group.active:  # all ranks leave the loop at the same step: the first one any rank stops at
            stop_early = bool(group.all_reduce_sum_(torch.tensor([float(stop_early)])).item())
        done = step + 1 == spec.steps or stop_early
        if group.is_main and heldout and ((spec.eval_every and (step + 1) % spec.eval_every == 0) or done):
            run.log({"step": step + 1, "kind": "heldout", **evaluate_heldout(scorer, heldout, vector, spec)})
        if (spec.checkpoint_every and (step + 1) % spec.checkpoint_every == 0) or done:
            run.save_checkpoint({"step": step + 1, "values": values.detach().cpu().clone(), "config": spec.config(),
                                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
            last_good = step + 1
        if done:
            break

    result = SteeringVector(
        values=values.detach().cpu().clone(), space=vector.space, layer=spec.layer, model_id=vector.model_id,
        sae_id=vector.sae_id, sae_hash=vector.sae_hash, method=method, config=spec.config(),
        provenance={**describe_pairs(pairs), "train_pairs": len(train), "heldout_pairs": len(heldout),
                    **within.record(requested), "steps_run": steps_done,
                    "divergence_rule": spec.divergence_rule(), **model_placement(loaded.model),
                    "final_loss": loss_value if math.isfinite(loss_value) else None},
    )
    if run.dir and run.writer:
        result.save(run.dir)
    group.barrier()  # with several ranks, none returns before the vector is on disk
    return result


def _cache_device(model: nn.Module, encoded: Sequence[EncodedPair], quiet: bool = False) -> torch.device:
    """Where the layer-output cache lives: the model's device when every sequence's layer output would take at most
    half its free memory, else the CPU (and it says so)."""
    device = module_device(model)
    if device.type != "cuda":
        return device
    tokens = sum(len(s.ids) for pair in encoded for s in (pair.chosen, pair.rejected))
    need = tokens * hidden_size(model) * next(model.parameters()).element_size()
    free, _total = torch.cuda.mem_get_info(device)
    if need <= free // 2:
        return device
    if not quiet:
        print(f"layer-output cache: up to {need / 2**30:.1f} GiB for {tokens} tokens would not fit beside the model "
              f"on {device} ({free / 2**30:.1f} GiB free); it is kept in CPU memory and each step's rows are moved")
    return torch.device("cpu")


def _divergence(spec: PreferenceSpec, loss: float, grad_norm: float, optimizer: torch.optim.Optimizer,
                values: torch.Tensor, recent_losses: collections.deque) -> str | None:
    """Take the optimizer step unless training has blown up; what blew up, or None. v is checked after the
    step, so a non-finite v is never logged or checkpointed."""
    if not math.isfinite(loss):
        return f"loss is {loss}"
    if not math.isfinite(grad_norm):
        return f"gradient norm is {grad_norm}"
    try:
        optimizer.step()
    except RuntimeError as err:  # e.g. an lr so large that AdamW's update overflows float
        return f"the optimizer step failed ({err})"
    if not torch.isfinite(values.detach()).all():
        return "v is not finite after the update"
    mean = sum(recent_losses) / len(recent_losses)
    if len(recent_losses) == recent_losses.maxlen and mean > spec.divergence_loss():
        return (f"the mean train loss of the last {len(recent_losses)} steps is {mean:.4g} "
                f"(limit {spec.divergence_loss():.4g})")
    return None


def _data_parallel_backward(scorer: PreferenceBatchScorer, batch: Sequence[EncodedPair], vector: SteeringVector,
                            values: torch.Tensor, directions: Sequence[int], beta: float,
                            group: DataParallel) -> tuple[float, dict[str, float]]:
    """One rank's part of a step: its contiguous share of `batch`, its mean loss weighted by share/len(batch)
    (shares may differ in size, or be empty), so that the sums over ranks of loss, stats and v's gradient are
    the whole batch's mean loss, stats and gradient, as one process computes them. Returns the summed loss and
    stats; the gradient of `values` (v's trained leaf) is summed unless the loss is not finite (then it stays
    None on every rank)."""
    part = group.shard(len(batch))
    share = batch[part]
    loss = None
    totals = torch.zeros(3, dtype=torch.float64)
    if share:
        loss, stats = preference_loss(scorer, share, vector, list(directions[part]), beta)
        weight = len(share) / len(batch)
        loss = loss * weight
        totals = torch.tensor([float(loss.detach()), float(stats["accuracy"]) * weight,
                               float(stats["reward_margin"]) * weight],
                              dtype=torch.float64)
    loss_value, accuracy, margin = group.all_reduce_sum_(totals).tolist()
    if not math.isfinite(loss_value):  # the same decision on every rank: no backward, no collective
        return loss_value, {"accuracy": accuracy, "reward_margin": margin}
    if loss is not None:
        loss.backward()
    values.grad = group.all_reduce_sum_(values.grad if values.grad is not None else torch.zeros_like(values))
    return loss_value, {"accuracy": accuracy, "reward_margin": margin}
