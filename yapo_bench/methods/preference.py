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

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from yapo_bench.models import LoadedModel, decoder_layers, get_layer, layer_output
from yapo_bench.pairs import PreferencePair, encode_with_response
from yapo_bench.steering import SteeringVector, steer


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
    """Token ids of every pair (chat template applied); over-long sequences keep their first
    `max_length` tokens. Returns the pairs and how many sequences were truncated."""
    encoded, truncated = [], 0
    for pair in pairs:
        sides = []
        for response in (pair.chosen, pair.rejected):
            ids, start = encode_with_response(loaded.tokenizer, pair.prompt, response)
            if len(ids) > max_length:
                truncated += 1
                ids = ids[:max_length]
            if start >= len(ids):
                raise ValueError(f"max_length: {max_length} leaves no response token for prompt {pair.prompt[:60]!r}")
            sides.append(EncodedSequence(len(encoded) * 2 + len(sides), ids, start))
        encoded.append(EncodedPair(*sides))
    return encoded, truncated


class _Passthrough(nn.Module):
    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return hidden_states


class _Replay(nn.Module):
    """Stands in for layer L: returns the cached A_L(x) whatever it is given."""

    def __init__(self, cached: torch.Tensor) -> None:
        super().__init__()
        self.cached = cached

    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return self.cached.to(hidden_states.dtype)


@contextlib.contextmanager
def replay_layer_output(model: nn.Module, layer: int, cached: torch.Tensor) -> Iterator[None]:
    """Within the block, the model's layers 0..layer are replaced by the cached output of `layer`."""
    layers = decoder_layers(model)
    originals = [layers[i] for i in range(layer + 1)]
    try:
        for i in range(layer):
            layers[i] = _Passthrough()
        layers[layer] = _Replay(cached)
        yield
    finally:
        for i, module in enumerate(originals):
            layers[i] = module


def _pad(sequences: Sequence[EncodedSequence], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s.ids) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq.ids)] = seq.ids
        mask[row, : len(seq.ids)] = 1
    return ids, mask


def _response_logprob_sums(model: nn.Module, hidden: torch.Tensor, ids: torch.Tensor,
                           sequences: Sequence[EncodedSequence]) -> torch.Tensor:
    """Σ log π(response tokens) per row, from final hidden states; logits only at response positions."""
    head = model.get_output_embeddings()
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    sums = []
    for row, seq in enumerate(sequences):
        states = hidden[row, seq.response_start - 1 : len(seq.ids) - 1]
        logits = head(states).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        targets = ids[row, seq.response_start : len(seq.ids)]
        sums.append(logits.log_softmax(-1).gather(-1, targets[:, None]).sum())
    return torch.stack(sums)


class PreferenceBatchScorer:
    """Σ log π(response | prompt) for sequences, steered by a grad-carrying vector, cached or naive.

    Caches are per sequence: A_L(x) (right-padded into each batch; causal attention means padding never
    reaches real positions) and the unsteered log-prob sum."""

    def __init__(self, loaded: LoadedModel, layer: int, sae: nn.Module | None, positions: str, naive: bool) -> None:
        get_layer(loaded.model, layer)
        self.model = loaded.model
        self.decoder = loaded.model.get_decoder()
        self.pad_id = loaded.tokenizer.pad_token_id or 0
        self.layer = layer
        self.sae = sae
        self.positions = positions
        self.naive = naive
        self._layer_cache: dict[int, torch.Tensor] = {}
        self._reference_cache: dict[int, torch.Tensor] = {}

    def _final_hidden(self, sequences: Sequence[EncodedSequence], vector: SteeringVector | None,
                      direction: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = _pad(sequences, self.pad_id)
        starts = torch.tensor([s.response_start for s in sequences])
        with steer(self.model, vector, multiplier=1.0, direction=direction, positions=self.positions,
                   sae=self.sae, response_start=starts):
            return self.decoder(input_ids=ids, attention_mask=mask).last_hidden_state, ids

    def _layer_output(self, sequences: Sequence[EncodedSequence]) -> torch.Tensor:
        for seq in sequences:
            if seq.key not in self._layer_cache:
                self._layer_cache[seq.key] = layer_output(self.decoder, self.layer, input_ids=seq.ids[None])[0]
        width = max(len(s.ids) for s in sequences)
        batch = torch.zeros(len(sequences), width, self._layer_cache[sequences[0].key].shape[-1])
        for row, seq in enumerate(sequences):
            batch[row, : len(seq.ids)] = self._layer_cache[seq.key]
        return batch

    def reference(self, sequences: Sequence[EncodedSequence]) -> torch.Tensor:
        """Unsteered log-prob sums (constant in v): computed once per sequence unless naive."""
        missing = sequences if self.naive else [s for s in sequences if s.key not in self._reference_cache]
        if missing:
            with torch.no_grad():
                hidden, ids = self._final_hidden(missing, None, 1)
                values = _response_logprob_sums(self.model, hidden, ids, missing)
            if self.naive:
                return values
            self._reference_cache.update({s.key: v for s, v in zip(missing, values)})
        return torch.stack([self._reference_cache[s.key] for s in sequences])

    def steered(self, sequences: Sequence[EncodedSequence], vector: SteeringVector, direction: int) -> torch.Tensor:
        if self.naive:
            hidden, ids = self._final_hidden(sequences, vector, direction)
        else:
            with replay_layer_output(self.model, self.layer, self._layer_output(sequences)):
                hidden, ids = self._final_hidden(sequences, vector, direction)
        return _response_logprob_sums(self.model, hidden, ids, sequences)


def preference_loss(scorer: PreferenceBatchScorer, batch: Sequence[EncodedPair], vector: SteeringVector,
                    direction: int, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """−log σ(d·β·(r(y_w) − r(y_l))) averaged over the batch, plus its accuracy and mean reward margin."""
    chosen = [p.chosen for p in batch]
    rejected = [p.rejected for p in batch]
    reward_w = scorer.steered(chosen, vector, direction) - scorer.reference(chosen)
    reward_l = scorer.steered(rejected, vector, direction) - scorer.reference(rejected)
    margin = direction * beta * (reward_w - reward_l)
    loss = -torch.nn.functional.logsigmoid(margin).mean()
    with torch.no_grad():
        stats = {"accuracy": float((margin > 0).float().mean()), "reward_margin": float((reward_w - reward_l).mean())}
    return loss, stats
