"""Preference pairs (prompt, chosen, rejected) and their rendering with the model's chat template."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str

    def __post_init__(self) -> None:
        for name in ("prompt", "chosen", "rejected"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name}: expected a non-empty string, got {value!r}")
        if self.chosen.strip() == self.rejected.strip():
            raise ValueError(f"chosen/rejected: identical for prompt {self.prompt[:60]!r}")


class PairSet(list):
    """Preference pairs plus where they came from and what `chosen` stands for (recorded in every vector)."""

    def __init__(self, pairs: Iterable[PreferencePair], source: str, chosen: str, skipped: Sequence[str] = ()) -> None:
        super().__init__(pairs)
        self.source = source
        self.chosen = chosen
        self.skipped = list(skipped)  # "row N: field: problem" for each invalid row left out


def describe_pairs(pairs: Sequence[PreferencePair]) -> dict[str, object]:
    """What a vector's metadata records about its training pairs."""
    return {"data": getattr(pairs, "source", None), "chosen": getattr(pairs, "chosen", None), "pairs": len(pairs),
            "skipped_rows": getattr(pairs, "skipped", [])}


def length_limit(model: torch.nn.Module, requested: int) -> int:
    """The token limit for inputs to `model`: `requested`, or the model's own position count when smaller."""
    from yapo_bench.internals import max_positions

    positions = max_positions(model)
    return min(requested, positions) if positions else requested


def truncate(ids: torch.Tensor, limit: int) -> tuple[torch.Tensor, bool]:
    """The one rule for over-long inputs (training, mean-difference fitting, analyses): keep the first `limit`
    tokens. Returns the ids and whether they were cut, for the caller to count and record."""
    return (ids, False) if len(ids) <= limit else (ids[:limit], True)


@dataclass
class EncodedPairs:
    """Pairs as token ids under the length rule: per kept pair, both sides' (ids, response start); how many
    sequences were cut; the pairs dropped because a side would have lost its whole response (their prompts); the
    token limit that applied (`length_limit`: the model's positions when fewer than requested)."""

    sides: list[tuple[tuple[torch.Tensor, int], tuple[torch.Tensor, int]]]
    truncated: int
    dropped: list[str]
    limit: int

    def record(self, requested: int) -> dict[str, object]:
        """What a vector's provenance says of it; `requested`: the max_length asked for (its config records `limit`,
        the one that applied)."""
        return {"truncated_sequences": self.truncated, "dropped_pairs": len(self.dropped),
                "max_length_requested": requested}


def encode_pairs_within(tokenizer: object, pairs: Sequence[PreferencePair], limit: int,
                        say: bool = True) -> EncodedPairs:
    """Both sides of every pair (chat template applied), each cut to `limit` tokens; a pair whose response would be
    cut away entirely is dropped (counted, recorded and, with `say`, printed); if every pair is, that is an error."""
    sides, truncated, dropped = [], 0, []
    for pair in pairs:
        encoded = []
        for response in (pair.chosen, pair.rejected):
            ids, start = encode_with_response(tokenizer, pair.prompt, response)
            ids, cut = truncate(ids, limit)
            truncated += cut
            encoded.append((ids, start))
        if any(start >= limit for _, start in encoded):
            dropped.append(pair.prompt)
            continue
        sides.append((encoded[0], encoded[1]))
    if not sides:
        longest = max(len(p) for p in dropped)
        raise ValueError(f"max_length: {limit} leaves no response token for any of the {len(dropped)} pairs (prompts "
                         f"up to {longest} characters); raise max_length or shorten the prompts")
    if dropped and say:
        print(f"{len(dropped)} of {len(pairs)} pairs dropped: their prompts alone exceed max_length={limit} tokens "
              f"(e.g. {dropped[0][:60]!r})")
    if truncated and say:
        print(f"{truncated} of {2 * len(pairs)} sequences were longer than max_length={limit} and were truncated")
    return EncodedPairs(sides, truncated, dropped, limit)


def render_prompt(tokenizer: object, prompt: str) -> str:
    """The prompt as the model sees it: through its chat template when it has one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt + "\n"


def encode_with_response(tokenizer: object, prompt: str, response: str) -> tuple[torch.Tensor, int]:
    """Token ids of rendered prompt + response, and the index where the response starts."""
    prompt_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return torch.tensor(prompt_ids + response_ids), len(prompt_ids)


@torch.no_grad()
def response_logprob(model: torch.nn.Module, tokenizer: object, prompt: str, response: str) -> float:
    """log π(response | prompt), summed over response tokens (prompt tokens masked)."""
    ids, start = encode_with_response(tokenizer, prompt, response)
    logits = model(ids[None].to(next(model.parameters()).device)).logits[0, start - 1 : -1].float()
    return float(logits.log_softmax(-1).gather(-1, ids[start:, None].to(logits.device)).sum())


@torch.no_grad()
def generate_response(loaded: object, prompt: str, max_new_tokens: int = 64) -> str:
    """The model's greedy reply to `prompt` (chat template applied); wrap in `steer(...)` to steer it."""
    ids = loaded.tokenizer(render_prompt(loaded.tokenizer, prompt), return_tensors="pt", add_special_tokens=False)
    out = loaded.model.generate(**ids.to(loaded.model.device), max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=loaded.tokenizer.pad_token_id)
    return loaded.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
