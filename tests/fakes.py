"""Test doubles for the core: a scripted HTTP engine and OpenAI-style bodies.

``ScriptedEngine`` stands in for ``keymux._http.Engine``::

    clock = FakeClock()
    mux = Multiplexer(clock=clock, seed=0)
    engine = ScriptedEngine(clock, latency=1.0, scripts={SECRET_A: [rate_limited(2.0)]})
    mux._core.engine = engine

Each ``send()`` finds the API key in the auth header (``Authorization: Bearer``, ``x-api-key`` or
``x-goog-api-key``), records the request, optionally waits ``latency`` seconds *on the clock*
(so, with a FakeClock, requests stay in flight until the test advances time) and answers from
that key's script (a list of replies consumed in order), falling back to ``default``. A reply is
``(status, headers, body)``, a ``TransportFailure`` (raised), or a callable taking the ``Sent``
record and returning either. A body may be ``Chunks(...)``: a stream that arrives piece by
piece (pauses on the clock and transport failures in between). Probes of disabled keys
(``GET``) never consume the scripts. A request counts as in flight until its answer is closed.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from multidict import CIMultiDict, CIMultiDictProxy

from keymux._clock import Clock
from keymux._http import TransportFailure
from keymux._types import HttpRequest

__all__ = [
    "AnswerExchange",
    "Chunks",
    "FakeExchange",
    "Reply",
    "ScriptedEngine",
    "Sent",
    "chat_body",
    "error",
    "ok",
    "quota_spent",
    "rate_limited",
    "ratelimit_headers",
    "server_error",
    "transport_failure",
]

Answer = Union[tuple[int, Mapping[str, str], "bytes | Chunks"], TransportFailure]  # noqa: UP007
Reply = Union[Answer, Callable[["Sent"], Answer]]  # noqa: UP007


@dataclass
class Sent:
    """One request the engine received."""

    method: str
    url: str
    key: str | None = field(repr=False)
    body: Any
    started: float
    headers: Mapping[str, str] = field(repr=False, default_factory=dict)
    timeout: Any = None  # the aiohttp.ClientTimeout the core passed
    ended: float | None = None
    status: int | None = None  # None: transport failure, or still in flight

    @property
    def is_probe(self) -> bool:
        return self.method == "GET"


def key_of(headers: Mapping[str, str]) -> str | None:
    """The API key an adapter put in a request's headers."""
    lower = {k.lower(): v for k, v in headers.items()}
    auth = lower.get("authorization")
    if auth is not None:
        return auth.removeprefix("Bearer ")
    return lower.get("x-api-key") or lower.get("x-goog-api-key")


class Chunks:
    """A body that arrives in pieces (a stream): each item is bytes, a ``TransportFailure``
    raised when the reader gets there, or a number of seconds to wait on the clock first."""

    def __init__(self, *items: bytes | TransportFailure | float) -> None:
        self.items = list(items)


class FakeExchange:
    """What ``ScriptedEngine.open`` returns: the ``keymux._http.Exchange`` interface."""

    def __init__(
        self,
        engine: ScriptedEngine,
        sent: Sent,
        status: int,
        headers: Mapping[str, str],
        body: bytes | Chunks,
    ) -> None:
        self._engine = engine
        self._sent = sent
        self.status = status
        self.headers = headers
        self._items: deque[bytes | TransportFailure | float] = deque(
            body.items if isinstance(body, Chunks) else [body]
        )
        self.closed = False

    async def next_chunk(self) -> bytes:
        while self._items:
            item = self._items.popleft()
            if isinstance(item, TransportFailure):
                raise item
            if isinstance(item, int | float):
                assert self._engine.clock is not None, "a pause needs a clock"
                await self._engine.clock.sleep(item)
                continue
            if item:
                return item
        return b""

    async def read(self) -> bytes:
        parts = []
        while True:
            chunk = await self.next_chunk()
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._engine._done(self._sent, self._sent.key)


class AnswerExchange:
    """An ``Exchange`` around an answer that is already whole: for fake engines that answer
    with ``send`` (status, headers, body) and open nothing incrementally."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self._body: bytes | None = body

    async def read(self) -> bytes:
        body, self._body = self._body or b"", None
        return body

    async def next_chunk(self) -> bytes:
        return await self.read()

    def close(self) -> None:
        self._body = None


class ScriptedEngine:
    """A fake ``Engine``: per-key scripts, recorded requests, concurrency high-water marks."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        scripts: Mapping[str, Iterable[Reply]] | None = None,
        default: Reply | None = None,
        latency: float | Mapping[str, float] = 0.0,
        probe_reply: Reply | None = None,
    ) -> None:
        self.clock = clock
        self.scripts: dict[str, deque[Reply]] = {k: deque(v) for k, v in (scripts or {}).items()}
        self.default: Reply = default if default is not None else ok()
        self.latency = latency
        self.probe_reply: Reply = probe_reply if probe_reply is not None else (200, {}, b"{}")
        self.sent: list[Sent] = []
        self.in_flight: defaultdict[str | None, int] = defaultdict(int)
        self.max_in_flight: defaultdict[str | None, int] = defaultdict(int)
        self.closed = 0
        #: when set, every request waits for it (besides ``latency``) before answering
        self.gate: asyncio.Event | None = None

    # -- scripting --------------------------------------------------------------------------

    def script(self, key: str, *replies: Reply) -> None:
        """Append replies to one key's script."""
        self.scripts.setdefault(key, deque()).extend(replies)

    def _latency(self, key: str | None) -> float:
        if isinstance(self.latency, Mapping):
            return float(self.latency.get(key or "", 0.0))
        return float(self.latency)

    def _next(self, sent: Sent) -> Reply:
        if sent.is_probe:
            return self.probe_reply
        queue = self.scripts.get(sent.key or "")
        if queue:
            return queue.popleft()
        return self.default

    # -- the Engine interface ---------------------------------------------------------------

    async def open(self, req: HttpRequest, timeout: Any) -> FakeExchange:
        key = key_of(req.headers)
        now = self.clock.now() if self.clock is not None else 0.0
        sent = Sent(
            method=req.method,
            url=req.url,
            key=key,
            body=json.loads(req.body) if req.body else None,
            started=now,
            headers=req.headers,
            timeout=timeout,
        )
        self.sent.append(sent)
        reply = self._next(sent)
        self.in_flight[key] += 1
        self.max_in_flight[key] = max(self.max_in_flight[key], self.in_flight[key])
        try:
            delay = self._latency(key)
            if delay > 0:
                assert self.clock is not None, "latency needs a clock"
                await self.clock.sleep(delay)
            if self.gate is not None:
                await self.gate.wait()
            answer = reply(sent) if callable(reply) else reply
            if isinstance(answer, TransportFailure):
                raise answer
        except BaseException:
            self._done(sent, key)
            raise
        status, headers, body = answer
        sent.status = status
        return FakeExchange(self, sent, status, CIMultiDictProxy(CIMultiDict(headers)), body)

    def _done(self, sent: Sent, key: str | None) -> None:
        self.in_flight[key] -= 1
        sent.ended = self.clock.now() if self.clock is not None else 0.0

    async def send(self, req: HttpRequest, timeout: Any) -> tuple[int, Mapping[str, str], bytes]:
        exchange = await self.open(req, timeout)
        try:
            return exchange.status, exchange.headers, await exchange.read()
        finally:
            exchange.close()

    async def close(self) -> None:
        self.closed += 1

    def forget(self) -> None:
        pass

    # -- reading the record -----------------------------------------------------------------

    def calls(self, key: str | None = None) -> list[Sent]:
        """Chat/embed requests (probes excluded), optionally of one key."""
        return [s for s in self.sent if not s.is_probe and (key is None or s.key == key)]

    def keys_used(self) -> list[str | None]:
        return [s.key for s in self.calls()]

    def total_in_flight(self) -> int:
        return sum(self.in_flight.values())


# --- OpenAI-style answers -----------------------------------------------------------------


def chat_body(
    text: str = "hello",
    *,
    model: str = "gpt-4o-mini",
    prompt_tokens: int = 3,
    completion_tokens: int = 2,
) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    ).encode()


def ok(
    text: str = "hello", *, headers: Mapping[str, str] | None = None, **usage: Any
) -> tuple[int, Mapping[str, str], bytes]:
    return 200, dict(headers or {}), chat_body(text, **usage)


def error_body(message: str, *, type: str | None = None, code: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type, "param": None, "code": code}}
    ).encode()


def error(
    status: int,
    message: str = "error",
    *,
    type: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Mapping[str, str], bytes]:
    return status, dict(headers or {}), error_body(message, type=type, code=code)


def rate_limited(
    retry_after: float | None = None, *, headers: Mapping[str, str] | None = None
) -> tuple[int, Mapping[str, str], bytes]:
    """A short-term 429 (requests per minute); ``retry_after`` seconds in ``retry-after-ms``."""
    h = dict(headers or {})
    if retry_after is not None:
        h["retry-after-ms"] = str(round(retry_after * 1000))
    return error(
        429,
        "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3.",
        type="requests",
        code="rate_limit_exceeded",
        headers=h,
    )


def quota_spent() -> tuple[int, Mapping[str, str], bytes]:
    return error(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        type="insufficient_quota",
        code="insufficient_quota",
    )


def server_error(status: int = 500) -> tuple[int, Mapping[str, str], bytes]:
    return error(
        status, "The server had an error while processing your request.", type="server_error"
    )


def transport_failure(*, timed_out: bool = False) -> TransportFailure:
    if timed_out:
        return TransportFailure("the attempt timed out", timed_out=True)
    return TransportFailure("the server closed the connection", timed_out=False)


def ratelimit_headers(
    *,
    limit_requests: int | None = None,
    remaining_requests: int | None = None,
    reset_requests: str | None = None,
    limit_tokens: int | None = None,
    remaining_tokens: int | None = None,
    reset_tokens: str | None = None,
) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers (resets as Go durations like ``"1s"``, ``"6m0s"``)."""
    out: dict[str, str] = {}
    for name, value in (
        ("limit-requests", limit_requests),
        ("remaining-requests", remaining_requests),
        ("reset-requests", reset_requests),
        ("limit-tokens", limit_tokens),
        ("remaining-tokens", remaining_tokens),
        ("reset-tokens", reset_tokens),
    ):
        if value is not None:
            out["x-ratelimit-" + name] = str(value)
    return out
