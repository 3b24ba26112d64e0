"""Matched-KL comparison of steering vectors: how far a vector moves the model on neutral text, and the
multiplier λ at which it moves it by a given amount.

KL(λ) = mean over real (non-pad) tokens of KL(p_unsteered ‖ p_steered by d·λ·v) of the next-token
distributions, computed under `steer(...)`. Comparing methods at equal KL (rather than at equal λ, whose
scale means different things for dense and SAE-space vectors) compares them at equal disruption.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from yapo_bench.corpus import window_batches
from yapo_bench.pairs import length_limit, truncate
from yapo_bench.steering import SteeringVector, steer


@dataclass(frozen=True)
class KLMatch:
    """The λ found for a target KL, with every (λ, KL) evaluated on the way (in evaluation order)."""

    target: float
    multiplier: float
    kl: float
    converged: bool
    evaluations: tuple[tuple[float, float], ...]
    truncated_prompts: int = 0  # prompts cut to max_length (`pairs.truncate`'s rule)


class _KLProbe:
    """Tokenized prompts and their unsteered log-probs, computed once and reused for every λ."""

    def __init__(self, model: nn.Module, tokenizer: Any, prompts: Sequence[str], vector: SteeringVector,
                 sae: nn.Module | None, direction: int, batch_size: int, max_length: int) -> None:
        if not prompts:
            raise ValueError("prompts: expected at least one prompt")
        if batch_size < 1 or max_length < 1:
            raise ValueError(f"batch_size/max_length: expected positive integers, got {batch_size}/{max_length}")
        vector.check_compatible(model, sae)
        self.model, self.vector, self.sae, self.direction = model, vector, sae, direction
        device = next(model.parameters()).device
        limit = length_limit(model, max_length)
        windows, self.truncated = [], 0
        for prompt in prompts:
            ids, cut = truncate(torch.tensor(tokenizer(prompt)["input_ids"]), limit)
            windows.append(ids.tolist())
            self.truncated += cut
        if self.truncated:
            print(f"{self.truncated} of {len(prompts)} prompts were longer than {limit} tokens and were truncated")
        # Right padding: real tokens keep the positions they have unpadded (left padding would shift them).
        self.batches = [{k: v.to(device) for k, v in batch.items()}
                        for batch in window_batches(tokenizer, windows, batch_size)]
        self.n_tokens = sum(int(b["attention_mask"].sum()) for b in self.batches)
        if self.n_tokens == 0:
            raise ValueError("prompts: all prompts tokenize to nothing")
        self.reference = [self._logprobs(batch, None, 0.0) for batch in self.batches]

    @torch.no_grad()
    def _logprobs(self, batch: dict[str, torch.Tensor], vector: SteeringVector | None,
                  multiplier: float) -> torch.Tensor:
        with steer(self.model, vector, multiplier=multiplier, direction=self.direction, positions="all", sae=self.sae):
            return torch.log_softmax(self.model(**batch).logits.float(), dim=-1)

    def kl(self, multiplier: float) -> float:
        total = 0.0
        for batch, reference in zip(self.batches, self.reference):
            steered = self._logprobs(batch, self.vector, multiplier)
            per_token = (reference.exp() * (reference - steered)).sum(dim=-1)
            total += float((per_token * batch["attention_mask"]).sum())
        return total / self.n_tokens


def mean_token_kl(model: nn.Module, tokenizer: Any, prompts: Sequence[str], vector: SteeringVector,
                  multiplier: float, sae: nn.Module | None = None, direction: int = 1, batch_size: int = 8,
                  max_length: int = 128) -> float:
    """Mean over real tokens of KL(unsteered ‖ steered) next-token distributions (nats); exactly 0 at λ = 0."""
    return kl_curve(model, tokenizer, prompts, vector, [multiplier], sae, direction, batch_size, max_length)[multiplier]


def kl_curve(model: nn.Module, tokenizer: Any, prompts: Sequence[str], vector: SteeringVector,
             multipliers: Sequence[float], sae: nn.Module | None = None, direction: int = 1, batch_size: int = 8,
             max_length: int = 128) -> dict[float, float]:
    """`mean_token_kl` at each of `multipliers`, with the unsteered pass done once for all."""
    probe = _KLProbe(model, tokenizer, prompts, vector, sae, direction, batch_size, max_length)
    return {float(multiplier): probe.kl(multiplier) for multiplier in multipliers}


def multiplier_for_kl(target: float, model: nn.Module, tokenizer: Any, prompts: Sequence[str],
                      vector: SteeringVector, sae: nn.Module | None = None, direction: int = 1, *,
                      rel_tol: float = 0.05, start: float = 1.0, max_multiplier: float = 1e4,
                      max_evaluations: int = 60, batch_size: int = 8, max_length: int = 128) -> KLMatch:
    """The λ whose mean token KL is within rel_tol·target of `target`.

    Brackets by doubling from `start` (the bracket is [0, start] when KL(start) is already above the
    target), then bisects, keeping KL(low) below and KL(high) above the tolerance band, and stops at the
    first λ evaluated within tolerance. KL is monotone in λ for most vectors but need not be (the ReLU in
    eq. 3 can saturate): then the λ returned is a crossing inside the first bracket found, the smallest λ
    found within tolerance there, not necessarily the smallest such λ overall.
    `converged` is False when `max_evaluations` ran out (e.g. at a jump in KL(λ)); the λ returned is then
    the evaluated one closest to the target.
    """
    if not (math.isfinite(target) and target > 0):
        raise ValueError(f"target: {target!r}; expected a finite KL > 0 (λ = 0 gives KL 0)")
    if not 0 < rel_tol < 1:
        raise ValueError(f"rel_tol: {rel_tol!r}; expected a number in (0, 1)")
    if not 0 < start <= max_multiplier:
        raise ValueError(f"start: {start!r}; expected 0 < start <= max_multiplier ({max_multiplier})")
    probe = _KLProbe(model, tokenizer, prompts, vector, sae, direction, batch_size, max_length)
    evaluations: list[tuple[float, float]] = []

    def evaluate(multiplier: float) -> float:
        evaluations.append((multiplier, probe.kl(multiplier)))
        return evaluations[-1][1]

    def result(multiplier: float, kl: float, converged: bool) -> KLMatch:
        return KLMatch(target, multiplier, kl, converged, tuple(evaluations), probe.truncated)

    tolerance = rel_tol * target
    low, high = 0.0, start
    kl = evaluate(high)
    while kl < target - tolerance:  # grow the bracket until KL(high) reaches the target band
        if high >= max_multiplier:
            raise ValueError(f"target: KL {target} not reached by λ = {high} (KL {kl:.4g}); lower the target "
                             "or raise max_multiplier")
        low, high = high, min(2 * high, max_multiplier)
        kl = evaluate(high)
    if kl <= target + tolerance:
        return result(high, kl, True)
    while len(evaluations) < max_evaluations:  # KL(low) < target - tolerance, KL(high) > target + tolerance
        middle = (low + high) / 2
        kl = evaluate(middle)
        if abs(kl - target) <= tolerance:
            return result(middle, kl, True)
        low, high = (middle, high) if kl < target else (low, middle)
    multiplier, kl = min(evaluations, key=lambda e: abs(e[1] - target))
    return result(multiplier, kl, False)
