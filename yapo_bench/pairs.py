"""Preference pairs (prompt, chosen, rejected) and their rendering with the model's chat template."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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


def load_pairs_jsonl(path: str | Path) -> list[PreferencePair]:
    """Pairs from a JSONL file with fields prompt, chosen, rejected; errors name file and row."""
    pairs = []
    for row_number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append(PreferencePair(row.get("prompt"), row.get("chosen"), row.get("rejected")))
        except (json.JSONDecodeError, ValueError, AttributeError) as err:
            raise ValueError(f"{path} row {row_number}: {err}") from None
    return pairs


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
