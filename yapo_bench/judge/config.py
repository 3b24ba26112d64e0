"""The judge's configuration: everything that is recorded with a verdict, and the API key, which never is."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse

KEY_ENV = "YAPO_JUDGE_API_KEY"
OPENAI_KEY_ENV = "OPENAI_API_KEY"
NO_KEY = "none"  # local servers ignore the key, but the openai client insists on one


@dataclass(frozen=True)
class JudgeConfig:
    """How to reach the judge and how it samples. The API key is deliberately not a field: it is read from the
    environment when the client is built (`api_key()`), so no record, cache row or log built from a config can
    carry it."""

    base_url: str
    model: str
    temperature: float = 0.0
    seed: int = 0
    max_tokens: int = 16  # {"score": 10} is about 7 tokens; room for whitespace, not for an essay
    concurrency: int = 4
    retries: int = 4
    timeout: float = 60.0
    backoff: float = 1.0  # first retry waits this long, then 2x, 4x, ... (capped at 60 s)
    json_schema: bool = True  # constrain the output with response_format (llama.cpp, vLLM, OpenAI honour it)
    logprobs: bool = True  # ask for top logprobs to record the expected score; servers that ignore it give None
    top_logprobs: int = 20

    def __post_init__(self) -> None:
        url = urlparse(self.base_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(f"base_url: {self.base_url!r} is not an http(s) URL (e.g. http://127.0.0.1:8080/v1)")
        if url.username or url.password:  # it is recorded with every verdict: no secrets in it
            raise ValueError("base_url: contains credentials; pass the key in $YAPO_JUDGE_API_KEY instead")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("model: the judge model name is empty")
        checks = (
            ("temperature", isinstance(self.temperature, (int, float)) and self.temperature >= 0, "a number >= 0"),
            ("seed", isinstance(self.seed, int) and not isinstance(self.seed, bool), "an integer"),
            ("max_tokens", _int_at_least(self.max_tokens, 1), "an integer >= 1"),
            ("concurrency", _int_at_least(self.concurrency, 1), "an integer >= 1"),
            ("retries", _int_at_least(self.retries, 0), "an integer >= 0"),
            ("timeout", isinstance(self.timeout, (int, float)) and self.timeout > 0, "a number > 0"),
            ("backoff", isinstance(self.backoff, (int, float)) and self.backoff >= 0, "a number >= 0"),
            ("json_schema", isinstance(self.json_schema, bool), "true or false"),
            ("logprobs", isinstance(self.logprobs, bool), "true or false"),
            ("top_logprobs", isinstance(self.top_logprobs, int) and 0 <= self.top_logprobs <= 20,
             "an integer in 0..20"),
        )
        for field, ok, expected in checks:
            if not ok:
                raise ValueError(f"{field}: {getattr(self, field)!r}; expected {expected}")

    def to_record(self) -> dict[str, Any]:
        """Every field, for verdict records and summaries (the key is not a field, so it cannot appear)."""
        return asdict(self)

    def api_key(self) -> str:
        """$YAPO_JUDGE_API_KEY; else $OPENAI_API_KEY, but only for api.openai.com (an OpenAI key is not sent to
        another host just because it is set); else "none" for local servers."""
        key = os.environ.get(KEY_ENV)
        if key:
            return key
        if (urlparse(self.base_url).hostname or "").endswith("api.openai.com") and os.environ.get(OPENAI_KEY_ENV):
            return os.environ[OPENAI_KEY_ENV]
        return NO_KEY


def _int_at_least(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low
