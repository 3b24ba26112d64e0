"""Calling the judge: one OpenAI-compatible chat request per item, our retry policy, the cache, a thread pool."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import openai

from yapo_bench.judge.cache import AnswerCache, cache_key, prompt_sha256
from yapo_bench.judge.config import JudgeConfig
from yapo_bench.judge.parse import expected_score, parse_verdict
from yapo_bench.judge.rubrics import Rubric

log = logging.getLogger(__name__)
MAX_BACKOFF = 60.0
# A wrong key, model or URL fails every item the same way: stop at once instead of recording N failures.
_FATAL = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)


@dataclass
class JudgeItem:
    rubric: Rubric
    fields: dict[str, Any]  # what the rubric's template needs
    meta: dict[str, Any] = field(default_factory=dict)  # carried into the verdict record (task, doc_id, ...)


@dataclass
class Verdict:
    score: int | None
    expected_score: float | None
    error: str | None  # an unparsable answer, or a transport failure (then `failed` is True)
    raw: str | None
    cached: bool = False
    failed: bool = False  # the request itself failed after all retries: not cached, retried on the next run
    prompt_sha256: str = ""


class TransportError(RuntimeError):
    """The request failed after every retry (`exhausted`), or with a non-retryable client error (a 400 for one
    prompt, e.g. longer than the judge's context)."""

    def __init__(self, message: str, exhausted: bool) -> None:
        super().__init__(message)
        self.exhausted = exhausted


class JudgeClient:
    def __init__(self, config: JudgeConfig) -> None:
        self.config = config
        # max_retries=0: the client's own retries would hide ours (and the tests count on ours).
        self._client = openai.OpenAI(base_url=config.base_url, api_key=config.api_key(), max_retries=0,
                                     timeout=config.timeout)
        self.api_calls = 0  # HTTP attempts, retries included
        self._count_lock = threading.Lock()

    def params(self, rubric: Rubric) -> dict[str, Any]:
        """Generation parameters that change the answer (part of the cache key)."""
        cfg = self.config
        return {
            "temperature": cfg.temperature, "seed": cfg.seed, "max_tokens": cfg.max_tokens,
            "response_format": rubric.response_format() if cfg.json_schema else None,
            "logprobs": cfg.logprobs, "top_logprobs": cfg.top_logprobs if cfg.logprobs else None,
        }

    def request(self, messages: list[dict[str, str]], params: dict[str, Any]) -> tuple[str | None, list | None]:
        """(content, tokens) from the server, retrying 429 / 408 / 409 / 5xx / timeouts / connection errors with
        exponential backoff (Retry-After honoured when larger)."""
        kwargs = {k: v for k, v in params.items() if v is not None}
        for attempt in range(self.config.retries + 1):
            with self._count_lock:
                self.api_calls += 1
            try:
                response = self._client.chat.completions.create(model=self.config.model, messages=messages, **kwargs)
            except _FATAL as err:
                raise ValueError(f"judge server refused the request ({_describe(err)}): check --judge-url, "
                                 f"--judge-model and $YAPO_JUDGE_API_KEY") from None
            except openai.APIError as err:
                if not _retryable(err):
                    raise TransportError(_describe(err), exhausted=False) from None
                if attempt == self.config.retries:
                    raise TransportError(f"{_describe(err)} after {attempt + 1} attempts", exhausted=True) from None
                delay = min(self.config.backoff * 2**attempt, MAX_BACKOFF)
                delay = max(delay, _retry_after(err))
                log.warning("judge request failed (%s); retry %d/%d in %.2f s", _describe(err), attempt + 1,
                            self.config.retries, delay)
                time.sleep(delay)
                continue
            choice = response.choices[0] if response.choices else None
            if choice is None:
                return None, None
            return choice.message.content, _tokens(choice)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._client.close()


CLAIM_POLL_S = 0.5  # how often to look for an answer another process is fetching


def judge_items(items: Iterable[JudgeItem], config: JudgeConfig, cache: AnswerCache | None = None,
                progress: bool = True, client: JudgeClient | None = None,
                retry_unparsable: bool = False) -> Iterator[tuple[JudgeItem, Verdict]]:
    """Judge every item, yielding (item, verdict) as each completes (cache hits first, without a call).

    Workers only make requests; the caller's thread reads and writes the cache, so each answer is committed
    before its verdict is yielded. A request is claimed in the cache before it is sent: an item another process
    is asking the server for waits for that answer instead. `retry_unparsable`: ask again where the cached
    answer (of this judge model) could not be parsed."""
    from tqdm.auto import tqdm

    items = list(items)
    own_client = client is None
    client = client or JudgeClient(config)
    pending: dict[Future, tuple[JudgeItem, str, str, dict[str, Any]]] = {}
    waiting: list[tuple[JudgeItem, str, str, dict[str, Any]]] = []
    bar = tqdm(total=len(items), desc="judging", unit="item", disable=not progress)
    answered = 0  # answers received in this run
    pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="judge")

    def cached_or_claimed(entry: tuple[JudgeItem, str, str, dict[str, Any]]) -> Verdict | None:
        """The cached verdict, else None after submitting the request (claimed) or queueing it to wait."""
        item, key, digest, params = entry
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            verdict = _verdict(item.rubric, *hit, cached=True, digest=digest)
            if not (retry_unparsable and verdict.score is None):
                return verdict
        if cache is None or cache.claim(key):
            pending[pool.submit(client.request, messages_of[key], params)] = entry
        else:
            waiting.append(entry)
        return None

    def drain() -> Iterator[tuple[JudgeItem, Verdict]]:
        nonlocal answered
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item, key, digest, params = pending.pop(future)
                try:
                    content, tokens = future.result()
                except TransportError as err:
                    if cache is not None:
                        cache.release(key)
                    if err.exhausted and not answered:  # nothing ever came back: a wrong URL or a dead server
                        raise ValueError(f"judge server at {config.base_url} did not answer ({err}); "
                                         "nothing was judged") from None
                    verdict = Verdict(None, None, f"request failed: {err}", None, failed=True,
                                      prompt_sha256=digest)
                else:
                    answered += 1
                    if cache is not None:
                        cache.put(key, config.model, digest, params, content, tokens)
                    verdict = _verdict(item.rubric, content, tokens, cached=False, digest=digest)
                bar.update()
                yield item, verdict

    messages_of: dict[str, list[dict[str, str]]] = {}
    try:
        for item in items:
            messages = item.rubric.messages(**item.fields)
            params = client.params(item.rubric)
            digest = prompt_sha256(messages)
            key = cache_key(config.model, digest, params)
            messages_of[key] = messages
            verdict = cached_or_claimed((item, key, digest, params))
            if verdict is not None:
                bar.update()
                yield item, verdict
        yield from drain()
        while waiting:  # answers another process claimed: read them when they land, or ask if it gave up
            time.sleep(CLAIM_POLL_S)
            queued, waiting[:] = list(waiting), []
            for entry in queued:
                verdict = cached_or_claimed(entry)
                if verdict is not None:
                    bar.update()
                    yield entry[0], verdict
            yield from drain()
    finally:
        # On an error (or a consumer that stops early) queued requests are dropped, not sent, and claims released.
        pool.shutdown(wait=True, cancel_futures=True)
        if cache is not None:
            for _item, key, _digest, _params in pending.values():
                cache.release(key)
        bar.close()
        if own_client:
            client.close()


def _verdict(rubric: Rubric, content: str | None, tokens: list | None, cached: bool, digest: str) -> Verdict:
    score, error = parse_verdict(content, rubric)
    expected = expected_score(content, tokens, rubric) if score is not None else None
    return Verdict(score, expected, error, content, cached=cached, prompt_sha256=digest)


def _tokens(choice: Any) -> list[dict[str, Any]] | None:
    logprobs = getattr(choice, "logprobs", None)
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    if not content:
        return None
    return [{"token": t.token, "logprob": t.logprob,
             "top": [[a.token, a.logprob] for a in (t.top_logprobs or [])]} for t in content]


def _retryable(err: openai.APIError) -> bool:
    if isinstance(err, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
                        openai.InternalServerError)):
        return True
    status = getattr(err, "status_code", None)
    return isinstance(status, int) and (status in (408, 409) or status >= 500)


def _retry_after(err: openai.APIError) -> float:
    response = getattr(err, "response", None)
    try:
        return min(float(response.headers.get("retry-after", 0)), MAX_BACKOFF) if response is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


def _describe(err: openai.APIError) -> str:
    status = getattr(err, "status_code", None)
    return f"{type(err).__name__}" + (f" {status}" if status else "")
