"""Strict verdict parsing and the logprob-weighted expected score."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from yapo_bench.judge.rubrics import Rubric

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_SCORE_VALUE = re.compile(r'"score"\s*:\s*(-?\d)')


def parse_verdict(content: str | None, rubric: Rubric) -> tuple[int | None, str | None]:
    """(score, None) for a JSON object whose "score" is an integer in the rubric's range, else (None, reason).

    One surrounding ```json fence is tolerated (unambiguous); prose, a bare number, a float, a string, a bool or an
    out-of-range integer is an error verdict, never a score: errors are excluded from means, not counted as 0."""
    if content is None or not content.strip():
        return None, "empty response"
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None, f"not JSON: {_clip(content)}"
    if not isinstance(value, dict) or "score" not in value:
        return None, f'not an object with "score": {_clip(content)}'
    score = value["score"]
    if isinstance(score, bool) or not isinstance(score, int):
        return None, f"score is not an integer: {score!r}"
    if not rubric.low <= score <= rubric.high:
        return None, f"score {score} outside {rubric.low}..{rubric.high}"
    return score, None


def expected_score(content: str | None, tokens: list[dict[str, Any]] | None, rubric: Rubric) -> float | None:
    """Probability-weighted mean score at the token where the score's first digit was generated.

    `tokens`: per generated token {"token", "logprob", "top": [[token, logprob], ...]} (what the server returned).
    The alternatives that are in-range score integers are renormalised among themselves (servers report the
    distribution before any grammar mask). For a 1..10 rubric "1" is ambiguous (1 or the start of 10): when "1"
    was generated, the next token's P("0") splits it; otherwise its mass counts as 1, an approximation.
    None when the server gave no logprobs or the digit's position cannot be found."""
    if not content or not tokens:
        return None
    # Locate the digit in the generated tokens, not in `content`: llama.cpp may strip a ```json fence from the
    # message it returns while the logprobs still list every generated token.
    match = _SCORE_VALUE.search("".join(t["token"] for t in tokens))
    if not match:
        return None
    index = _token_at(tokens, match.start(1))
    if index is None or not tokens[index].get("top"):
        return None
    chosen = tokens[index]["token"].strip()
    p_ten_given_one = None
    if rubric.high >= 10 and chosen == "1" and index + 1 < len(tokens):
        following = {t.strip(): math.exp(lp) for t, lp in tokens[index + 1].get("top", [])}
        p_ten_given_one = following.get("0", 0.0) / max(sum(following.values()), 1e-12)
    mass: dict[int, float] = {}
    for token, logprob in tokens[index]["top"]:
        text = token.strip()
        if not text.isdigit():
            continue
        p = math.exp(logprob)
        if text == "1" and p_ten_given_one is not None and rubric.low <= 10 <= rubric.high:
            mass[10] = mass.get(10, 0.0) + p * p_ten_given_one
            p *= 1.0 - p_ten_given_one
        value = int(text)
        if rubric.low <= value <= rubric.high:
            mass[value] = mass.get(value, 0.0) + p
    total = sum(mass.values())
    if total <= 0:
        return None
    return sum(score * p for score, p in mass.items()) / total


def _token_at(tokens: list[dict[str, Any]], offset: int) -> int | None:
    """Index of the token whose text covers character `offset` of the concatenated tokens."""
    position = 0
    for i, token in enumerate(tokens):
        end = position + len(token["token"])
        if position <= offset < end:
            return i
        position = end
    return None


def _clip(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
