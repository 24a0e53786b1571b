"""ChatClient: many chat-completions requests to one OpenAI-compatible server, politely and resumably.

Built on httpx's async client: at most `max_concurrency` requests in flight, a timeout per try,
exponential backoff with full jitter on 408/429/5xx, timeouts and connection errors (a server's
Retry-After is honoured, capped at `max_backoff_s`), a final failure reported as a reason code from
`curate.endpoint.errors` instead of an exception, and an optional `ResponseCache`.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from curate.endpoint.cache import ResponseCache, cache_key
from curate.endpoint.errors import RETRYABLE_STATUS, EndpointError, status_reason

_DATA_URL = re.compile(r"data:[^;,]*;base64,[A-Za-z0-9+/=]+")


@dataclass
class ChatRequest:
    """One conversation to send. `uid` names it for the cache (None: never cached)."""

    messages: list[dict]
    uid: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # max_tokens, temperature, logprobs, ...


@dataclass
class ChatResult:
    """The first choice of an answer, or why there is none (`reason` from curate.endpoint.errors)."""

    uid: str | None
    text: str | None = None
    logprobs: list[dict] | None = None  # choices[0].logprobs.content when the request asked for logprobs
    reason: str | None = None
    error: str | None = None
    attempts: int = 0
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.reason is None


def request_digest(body: dict) -> str:
    """Digest of a request body with every inline image replaced by the digest of its data URL."""
    text = json.dumps(body, sort_keys=True, ensure_ascii=False)
    text = _DATA_URL.sub(lambda m: "img:" + hashlib.sha256(m.group(0).encode()).hexdigest(), text)
    return hashlib.sha256(text.encode()).hexdigest()


def _parse_choice(payload: Any) -> tuple[str | None, list | None]:
    """(content, logprobs content) of choices[0]; raises EndpointError(bad_response) on any other shape."""
    try:
        choice = payload["choices"][0]
        content = choice["message"].get("content")
        lp = choice.get("logprobs")
    except (KeyError, IndexError, TypeError, AttributeError) as err:
        raise EndpointError("bad_response", f"no choices[0].message in the answer ({type(err).__name__})") from None
    if content is not None and not isinstance(content, str):
        raise EndpointError("bad_response", "choices[0].message.content is not a string")
    return content, (lp.get("content") if isinstance(lp, dict) else None)


class ChatClient:
    """Client for `POST {base_url}/chat/completions` (base_url like http://host:8000/v1).

    `chat_many` is the batch entry point (sync; runs its own event loop), `chat` sends one request,
    `achat_many` is the same for callers already inside an event loop.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, max_concurrency: int = 8,
                 timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 cache: ResponseCache | None = None, default_params: dict[str, Any] | None = None,
                 seed: int | None = None):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.max_concurrency, self.timeout_s, self.retries = max_concurrency, timeout_s, retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.cache = cache
        self.default_params = dict(default_params or {})
        self._rng = random.Random(seed)
        # counters for logs and benchmarks
        self.sent = 0  # HTTP requests made, retries included
        self.cache_hits = 0

    # -- public API -------------------------------------------------------------------------------------
    def chat(self, messages: list[dict], *, uid: str | None = None, **params) -> ChatResult:
        return self.chat_many([ChatRequest(messages, uid, params)])[0]

    def chat_many(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Results in request order; never raises for a request that fails (see ChatResult.reason)."""
        if not requests:
            return []
        return asyncio.run(self.achat_many(requests))

    async def achat_many(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        import httpx

        sem = asyncio.Semaphore(self.max_concurrency)
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), limits=limits,
                                     headers=self.headers) as http:
            return list(await asyncio.gather(*(self._one(http, sem, r) for r in requests)))

    def body(self, request: ChatRequest) -> dict:
        return {"model": self.model, "messages": request.messages, **self.default_params, **request.params}

    # -- one request --------------------------------------------------------------------------------------
    async def _one(self, http, sem: asyncio.Semaphore, request: ChatRequest) -> ChatResult:
        body = self.body(request)
        key = None
        if self.cache is not None and request.uid is not None:
            key = cache_key(request.uid, self.model, request_digest(body))
            hit = self.cache.get(key)
            if hit is not None:
                self.cache_hits += 1
                return ChatResult(request.uid, hit.get("text"), hit.get("logprobs"), cached=True)
        result = ChatResult(request.uid)
        async with sem:
            for attempt in range(self.retries + 1):
                result.attempts = attempt + 1
                delay = None
                try:
                    result.text, result.logprobs = await self._post(http, body)
                    result.reason = result.error = None
                    break
                except _Retry as r:
                    result.reason, result.error, delay = r.reason, r.message, r.retry_after
                except EndpointError as err:
                    result.reason, result.error = err.reason, str(err)
                    break
                if attempt < self.retries:
                    await asyncio.sleep(self._backoff(attempt, delay))
        if result.ok and key is not None:
            self.cache.put(key, {"text": result.text, "logprobs": result.logprobs})
        return result

    async def _post(self, http, body: dict) -> tuple[str | None, list | None]:
        import httpx

        self.sent += 1
        try:
            resp = await http.post(self.url, json=body)
        except httpx.TimeoutException as err:
            raise _Retry("timeout", f"no answer within {self.timeout_s:g}s ({type(err).__name__})") from None
        except httpx.TransportError as err:
            raise _Retry("connection_error", f"{type(err).__name__}: {err}"[:300]) from None
        if resp.status_code != 200:
            msg = f"HTTP {resp.status_code}: {resp.text[:200]}"
            if resp.status_code in RETRYABLE_STATUS or resp.status_code >= 500:
                raise _Retry(status_reason(resp.status_code), msg, _retry_after(resp.headers.get("retry-after")))
            raise EndpointError("http_error", msg)
        try:
            payload = resp.json()
        except ValueError:
            raise EndpointError("bad_response", f"answer is not JSON: {resp.text[:120]!r}") from None
        return _parse_choice(payload)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        # exponential backoff with full jitter (AWS architecture blog): uniform(0, base * 2**attempt)
        return self._rng.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** attempt))


class _Retry(Exception):
    def __init__(self, reason: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.reason, self.message, self.retry_after = reason, message, retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def client_for(step) -> "ChatClient":
    """The ChatClient a stage's endpoint settings describe (base_url, model, api_key_env, max_concurrency,
    timeout_s, retries, backoff_s, max_backoff_s), with its answer cache at <cache_dir>/<stage name>.sqlite
    when `cache` is on and a cache_dir is set. One place, so every endpoint stage reads the same settings."""
    cache = ResponseCache(Path(step.cache_dir) / f"{step.name}.sqlite") if step.cache and step.cache_dir else None
    return ChatClient(step.base_url, step.model, cache=cache, **step.client_settings())
