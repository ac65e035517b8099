"""The public contract, checked end to end against the emulator for every provider.

Each behaviour runs for "openai", "groq", "claude" and "gemini" and, where the entry point
matters, both ways a user calls keymux:

* ``sync``: ``with Multiplexer(...)``; ``client(...)`` / ``client.stream(...)`` called from a
  worker thread (keymux then runs its own portal loop, as for any synchronous program);
* ``async``: ``async with Multiplexer(...)``; ``await client.acall(...)`` / ``client.astream(...)``
  on the test's event loop.

A few plain ``def`` tests also use keymux with no event loop in the calling thread at all.

The emulator (see conftest.py) serves on a loopback port from its own thread with a frozen
clock, so a key's rpm budget stays spent for the whole test and no window boundary can make a
test flaky. Retry delays are 0.01 s.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

import keymux
from conftest import PROVIDERS, KeyPlan, MakeRig, Rig
from keymux import (
    AuthenticationError,
    KeymuxError,
    MalformedResponseError,
    Multiplexer,
    ProviderClient,
    ProviderServerError,
    QuotaExhaustedError,
    RateLimitedError,
    RequestTimeoutError,
    Response,
    StreamError,
    UnsupportedError,
)
from keymux._clock import FakeClock, SystemClock
from keymux.emulator import Faults

T = TypeVar("T")

HELLO = [{"role": "user", "content": "Hello"}]
#: what the emulator answers to HELLO (its documented reply), one token per word
REPLY = "Hello from the keymux emulator ({provider}). You said: Hello"
#: the emulator's prompt accounting: 3 + sum(4 + ceil(chars / 4)) over the messages
HELLO_INPUT_TOKENS = 3 + 4 + math.ceil(len("Hello") / 4)

#: the status each provider uses for "overloaded"
OVERLOADED_STATUS = {"openai": 503, "groq": 498, "claude": 529, "gemini": 503}


def reply_for(provider: str) -> str:
    return REPLY.format(provider=provider)


def words(text: str) -> int:
    return len(text.split(" "))


# --- the two entry points -------------------------------------------------------------------


@dataclass
class Streamed:
    """What a stream gave before it ended: the items, and the error that ended it (if any)."""

    items: list[str | Response]
    error: KeymuxError | None

    @property
    def deltas(self) -> list[str]:
        return [item for item in self.items if isinstance(item, str)]

    @property
    def final(self) -> Response:
        assert self.error is None, f"the stream failed: {self.error!r}"
        last = self.items[-1]
        assert isinstance(last, Response)
        return last


class Entry:
    """Calls keymux through the sync facade or the async API, from an async test."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    @asynccontextmanager
    async def open(self, mux: Multiplexer) -> AsyncIterator[Multiplexer]:
        if self.name == "async":
            async with mux:
                yield mux
        else:
            with mux:  # close() hands the shutdown to keymux's own loop thread and waits
                yield mux

    async def call(self, client: ProviderClient, endpoint: str = "chat", **kw: Any) -> Response:
        if self.name == "async":
            return await client.acall(endpoint, **kw)
        return await asyncio.to_thread(lambda: client(endpoint, **kw))

    async def stream(self, client: ProviderClient, **kw: Any) -> Streamed:
        if self.name == "async":
            items: list[str | Response] = []
            try:
                async for item in client.astream("chat", **kw):
                    items.append(item)
            except KeymuxError as exc:
                return Streamed(items, exc)
            return Streamed(items, None)

        def collect() -> Streamed:
            got: list[str | Response] = []
            try:
                for item in client.stream("chat", **kw):
                    got.append(item)
            except KeymuxError as exc:
                return Streamed(got, exc)
            return Streamed(got, None)

        return await asyncio.to_thread(collect)

    async def call_error(
        self, client: ProviderClient, kind: str = "chat", **kw: Any
    ) -> KeymuxError:
        """The KeymuxError a chat call (kind "chat") or a stream (kind "stream") fails with."""
        kw.setdefault("messages", HELLO)
        if kind == "stream":
            streamed = await self.stream(client, **kw)
            assert streamed.error is not None, f"expected an error, got {streamed.items!r}"
            return streamed.error
        with pytest.raises(KeymuxError) as info:
            await self.call(client, **kw)
        return info.value


ENTRIES = [Entry("sync"), Entry("async")]


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(params=ENTRIES, ids=str)
def entry(request: pytest.FixtureRequest) -> Entry:
    value: Entry = request.param
    return value


# --- helpers --------------------------------------------------------------------------------


def assert_names_key(exc: KeymuxError, provider: str, name: str, *secrets: str) -> None:
    """Every error names provider and key *name*, never a secret."""
    text = str(exc)
    assert provider in text, text
    assert repr(name) in text or name in text, text
    assert exc.provider == provider
    assert exc.key_name == name
    for secret in secrets:
        assert secret not in text
        assert secret not in repr(exc)


def assert_no_secret(rig: Rig, *blobs: object) -> None:
    for blob in blobs:
        text = blob if isinstance(blob, str) else json.dumps(blob, default=repr)
        for k in rig.keys:
            assert k.secret not in text


async def exhaust(rig: Rig, k: KeyPlan) -> None:
    """Spend a key's one-request-per-window budget from another Multiplexer."""
    async with rig.multiplexer(max_retries=0) as other:
        resp = await other.get_client(k.provider, key_name=k.name).acall(messages=HELLO)
    assert resp.key_name == k.name


async def sequential(entry: Entry, client: ProviderClient, n: int, **kw: Any) -> list[Response]:
    """``n`` chat calls, one after the other. With round-robin (least recently used) and two
    keys, two calls are enough for each key to be tried first once."""
    kw.setdefault("messages", HELLO)
    return [await entry.call(client, **kw) for _ in range(n)]


async def sequential_streams(
    entry: Entry, client: ProviderClient, n: int, **kw: Any
) -> list[Streamed]:
    kw.setdefault("messages", HELLO)
    return [await entry.stream(client, **kw) for _ in range(n)]


async def wait_until(condition: Callable[[], bool], what: str, *, within: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail loudly, naming ``what``, if it does not within
    ``within`` seconds (a bound against hanging, not a timing assertion)."""
    for _ in range(int(within / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"still waiting after {within} s for: {what}")


async def bounded(awaitable: Awaitable[T], what: str, *, within: float = 10.0) -> T:
    """``awaitable``'s result; fail loudly instead of hanging the run if it never ends.
    (Not ``asyncio.wait_for``: its TimeoutError would be confused with RequestTimeoutError.)"""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=within)
    if not done:
        task.cancel()
        raise AssertionError(f"{what} did not end within {within} s")
    return task.result()


def two_keys(provider: str, faults: Faults | None = None, **limits: Any) -> tuple[KeyPlan, KeyPlan]:
    """k1 (possibly faulty or limited) and a healthy k2."""
    return KeyPlan(provider, "k1", faults=faults or Faults(), **limits), KeyPlan(provider, "k2")


# --- chat -----------------------------------------------------------------------------------


async def test_chat_returns_a_response(make_rig: MakeRig, provider: str, entry: Entry) -> None:
    rig = make_rig(KeyPlan(provider, "k1"))
    async with entry.open(rig.multiplexer()) as mux:
        resp = await entry.call(mux.get_client(provider), messages=HELLO)
    assert isinstance(resp, Response)
    assert resp.text == reply_for(provider)
    assert resp["text"] == resp.text
    assert resp.provider == provider
    assert resp["provider"] == provider
    assert resp.key_name == "k1"
    assert isinstance(resp.model, str)
    assert resp.model
    assert resp.usage.input_tokens > 0
    assert resp.usage.output_tokens > 0
    assert resp["usage"]["input_tokens"] == resp.usage.input_tokens
    assert resp.attempts == 1
    assert isinstance(resp.latency_s, float)
    assert 0 <= resp.latency_s < 5
    # .raw is the provider's own JSON
    raw = resp.raw
    assert isinstance(raw, dict)
    if provider in ("openai", "groq"):
        assert raw["choices"][0]["message"]["content"] == resp.text
    elif provider == "claude":
        assert raw["type"] == "message"
        assert raw["content"][0]["text"] == resp.text
    else:
        assert raw["candidates"][0]["content"]["parts"][0]["text"] == resp.text
    json.dumps(raw)  # plain JSON data


@pytest.mark.parametrize("model", ["explicit-model-x"])
async def test_chat_passes_the_model(make_rig: MakeRig, provider: str, model: str) -> None:
    rig = make_rig(KeyPlan(provider, "k1"))
    async with rig.multiplexer() as mux:
        resp = await mux.get_client(provider).acall(messages=HELLO, model=model)
    assert resp.model == model
    recorded = rig.server.requests[-1]
    if provider == "gemini":
        assert model in recorded.path
    else:
        assert recorded.body["model"] == model


async def test_usage_matches_the_emulators_accounting(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    rig = make_rig(KeyPlan(provider, "k1"))
    system = [{"role": "system", "content": "Be brief."}, *HELLO]
    async with entry.open(rig.multiplexer()) as mux:
        client = mux.get_client(provider)
        a = await entry.call(client, messages=HELLO)
        b = await entry.call(client, messages=system)
        c = (await entry.stream(client, messages=HELLO)).final
        stats = mux.get_usage_stats()[provider]["k1"]
    # the emulator's documented accounting
    assert a.usage.input_tokens == HELLO_INPUT_TOKENS
    assert b.usage.input_tokens == HELLO_INPUT_TOKENS + 4 + math.ceil(len("Be brief.") / 4)
    for resp in (a, b, c):
        assert resp.usage.output_tokens == words(reply_for(provider))
    assert c.usage.input_tokens == HELLO_INPUT_TOKENS
    # what the emulator charged the key equals what keymux reports
    charged = rig.emu_stats(rig.key("k1"))["tokens"]
    assert charged == sum(r.usage.input_tokens + r.usage.output_tokens for r in (a, b, c))
    assert stats["input_tokens"] == sum(r.usage.input_tokens for r in (a, b, c))
    assert stats["output_tokens"] == sum(r.usage.output_tokens for r in (a, b, c))
    assert stats["usage"] == 3
    assert stats["successes"] == 3


def test_plain_sync_chat_and_stream_without_any_event_loop(
    make_rig: MakeRig, provider: str
) -> None:
    rig = make_rig(KeyPlan(provider, "k1"))
    with rig.multiplexer() as mux:
        client = mux.get_client(provider)
        resp = client("chat", messages=HELLO)
        items = list(client.stream("chat", messages=HELLO))
    assert resp.text == reply_for(provider)
    deltas = [i for i in items[:-1] if isinstance(i, str)]
    assert len(deltas) == len(items) - 1
    final = items[-1]
    assert isinstance(final, Response)
    assert final.text == "".join(deltas) == reply_for(provider)
    assert mux.closed


def test_threads_share_one_sync_multiplexer(make_rig: MakeRig, provider: str) -> None:
    rig = make_rig(KeyPlan(provider, "k1"), KeyPlan(provider, "k2"))
    results: list[Response] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    with rig.multiplexer() as mux:
        client = mux.get_client(provider)

        def work() -> None:
            for _ in range(5):
                try:
                    resp = client("chat", messages=HELLO)
                except BaseException as exc:  # pragma: no cover - reported below
                    with lock:
                        errors.append(exc)
                else:
                    with lock:
                        results.append(resp)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        stats = mux.get_usage_stats()[provider]
    assert not errors
    assert len(results) == 30
    assert stats["k1"]["usage"] + stats["k2"]["usage"] == 30
    assert stats["k1"]["usage"] > 0
    assert stats["k2"]["usage"] > 0


# --- streaming ------------------------------------------------------------------------------


async def test_stream_yields_deltas_then_a_response(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    rig = make_rig(KeyPlan(provider, "k1"))
    async with entry.open(rig.multiplexer()) as mux:
        streamed = await entry.stream(mux.get_client(provider), messages=HELLO)
    assert streamed.error is None
    final = streamed.final
    deltas = streamed.deltas
    assert len(deltas) == len(streamed.items) - 1 > 1  # only str deltas before the Response
    assert all(deltas)
    assert final.text == "".join(deltas) == reply_for(provider)
    assert final.provider == provider
    assert final.key_name == "k1"
    assert final.attempts == 1
    assert final.usage.input_tokens > 0
    assert final.usage.output_tokens == len(deltas)
    assert rig.server.stats()["total"]["streams"] == 1


# --- embeddings -----------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "gemini"])
async def test_embed_returns_vectors(make_rig: MakeRig, provider: str, entry: Entry) -> None:
    rig = make_rig(KeyPlan(provider, "k1"))
    async with entry.open(rig.multiplexer()) as mux:
        resp = await entry.call(mux.get_client(provider), "embed", input=["a", "b", "a"])
    assert isinstance(resp, Response)
    assert resp.provider == provider
    assert resp.key_name == "k1"
    assert len(resp) == 3
    assert resp.embeddings is not None
    assert len(resp.embeddings) == 3
    assert resp[0] == resp.embeddings[0]
    assert all(isinstance(x, float) for x in resp[0])
    assert resp[0] == resp[2] != resp[1]  # the emulator's vectors are a function of the text
    assert list(resp) == resp.embeddings
    assert resp.attempts == 1
    # the default embedding model (Gemini's answer names none: the model asked for is given)
    assert (
        resp.model
        == {"openai": "text-embedding-3-small", "gemini": "gemini-embedding-001"}[provider]
    )


@pytest.mark.parametrize("model", ["text-embedding-004", "models/text-embedding-004"])
async def test_gemini_embed_names_the_model_asked_for(make_rig: MakeRig, model: str) -> None:
    rig = make_rig(KeyPlan("gemini", "k1"))
    async with rig.multiplexer() as mux:
        resp = await mux.get_client("gemini").acall("embed", input=["a"], model=model)
    assert resp.model == "text-embedding-004"
    assert "model" not in resp.raw  # batchEmbedContents answers carry no model of their own


async def test_embed_on_claude_is_unsupported(make_rig: MakeRig, entry: Entry) -> None:
    rig = make_rig(KeyPlan("claude", "k1"))
    async with entry.open(rig.multiplexer()) as mux:
        with pytest.raises(UnsupportedError) as info:
            await entry.call(mux.get_client("claude"), "embed", input=["a", "b"])
    exc = info.value
    assert isinstance(exc, KeymuxError)
    assert isinstance(exc, ValueError)
    assert exc.provider == "claude"
    assert "embed" in str(exc).lower()
    assert "claude" in str(exc).lower() or "anthropic" in str(exc).lower()
    assert rig.server.requests == []  # refused before any request went out


async def test_embed_on_groq_needs_a_model(make_rig: MakeRig, entry: Entry) -> None:
    rig = make_rig(KeyPlan("groq", "k1"))
    async with entry.open(rig.multiplexer()) as mux:
        client = mux.get_client("groq")
        with pytest.raises(UnsupportedError) as info:
            await entry.call(client, "embed", input=["a", "b"], model=None)
        assert "model" in str(info.value)
        assert info.value.provider == "groq"
        assert rig.server.requests == []
        # with a model named, Groq's OpenAI-compatible embeddings endpoint is used
        resp = await entry.call(client, "embed", input=["a", "b"], model="nomic-embed-text-v1_5")
    assert len(resp) == 2
    assert rig.server.requests[-1].path == "/openai/v1/embeddings"


# --- system messages ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["chat", "stream"])
async def test_system_message_goes_where_the_provider_wants_it(
    make_rig: MakeRig, provider: str, kind: str
) -> None:
    rig = make_rig(KeyPlan(provider, "k1"))
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello"},
    ]
    async with rig.multiplexer() as mux:
        client = mux.get_client(provider)
        if kind == "chat":
            resp = await client.acall("chat", messages=messages)
        else:
            resp = (await Entry("async").stream(client, messages=messages)).final
    # the system prompt was counted by the emulator as a prompt (system counts as a message)
    assert resp.usage.input_tokens == HELLO_INPUT_TOKENS + 4 + math.ceil(len("You are terse.") / 4)
    (body,) = [r.body for r in rig.server.requests]
    if provider in ("openai", "groq"):
        assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    elif provider == "claude":
        assert body["system"] == "You are terse." or body["system"] == [
            {"type": "text", "text": "You are terse."}
        ]
        assert [m["role"] for m in body["messages"]] == ["user"]
    else:
        assert body["systemInstruction"]["parts"] == [{"text": "You are terse."}]
        assert all(c.get("role") != "system" for c in body["contents"])
        assert len(body["contents"]) == 1


# --- 429: rate limits -----------------------------------------------------------------------


async def test_rate_limited_key_cools_and_the_request_moves(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    k1, k2 = two_keys(provider, rpm=1)
    rig = make_rig(k1, k2)
    await exhaust(rig, k1)  # k1's one request in this 60 s window is spent
    async with entry.open(rig.multiplexer()) as mux:
        results = await sequential(entry, mux.get_client(provider), 2)
        stats = mux.get_usage_stats()[provider]
    assert [r.text for r in results] == [reply_for(provider)] * 2
    assert all(r.key_name == "k2" for r in results)
    assert sorted(r.attempts for r in results) == [1, 2]
    assert stats["k1"]["rate_limited"] >= 1
    assert stats["k1"]["status"] == "cooling"
    # the provider's own signal (retry-after, reset headers, RetryInfo) was honoured: the
    # emulator's window has ~60 s left, far more than keymux's own 0.01 s backoff
    assert stats["k1"]["cooldown_s"] > 30
    assert stats["k2"]["status"] == "active"
    assert stats["k2"]["successes"] == 2
    emu = rig.emu_stats(k1)
    assert emu["rate_limited"] == 1
    assert emu["errors"] == {"429": 1}
    assert_no_secret(rig, stats)
    json.dumps(mux.get_usage_stats())


@pytest.mark.parametrize("kind", ["chat", "stream"])
async def test_rate_limited_pinned_key_raises(
    make_rig: MakeRig, provider: str, entry: Entry, kind: str
) -> None:
    k1, k2 = two_keys(provider, rpm=1)
    rig = make_rig(k1, k2)
    await exhaust(rig, k1)
    async with entry.open(rig.multiplexer(max_retries=0)) as mux:
        exc = await entry.call_error(mux.get_client(provider, key_name="k1"), kind)
        stats = mux.get_usage_stats()[provider]
    assert isinstance(exc, RateLimitedError)
    assert exc.status == 429
    assert_names_key(exc, provider, "k1", k1.secret, k2.secret)
    assert stats["k1"]["rate_limited"] == 1
    assert stats["k2"]["usage"] == 0  # a pinned request only ever uses its key


# --- invalid keys ---------------------------------------------------------------------------


async def test_revoked_key_is_disabled_and_the_request_moves(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    k1, k2 = two_keys(provider, Faults(revoked=True))
    rig = make_rig(k1, k2)
    async with entry.open(rig.multiplexer(max_retries=0)) as mux:
        results = await sequential(entry, mux.get_client(provider), 3)
        stats = mux.get_usage_stats()[provider]
    assert all(r.key_name == "k2" for r in results)
    assert sorted(r.attempts for r in results) == [1, 1, 2]
    assert stats["k1"]["status"] == "disabled"
    assert stats["k1"]["disabled_reason"]
    assert "invalid" in stats["k1"]["disabled_reason"]
    assert rig.emu_stats(k1)["requests"] == 1  # a disabled key gets nothing more
    assert_no_secret(rig, stats)


@pytest.mark.parametrize("kind", ["chat", "stream"])
async def test_revoked_pinned_key_raises_authentication_error(
    make_rig: MakeRig, provider: str, entry: Entry, kind: str
) -> None:
    k1, k2 = two_keys(provider, Faults(revoked=True))
    rig = make_rig(k1, k2)
    async with entry.open(rig.multiplexer()) as mux:
        exc = await entry.call_error(mux.get_client(provider, key_name="k1"), kind)
        status = mux.get_usage_stats()[provider]["k1"]["status"]
    assert isinstance(exc, AuthenticationError)
    assert exc.status in (400, 401, 403)
    assert_names_key(exc, provider, "k1", k1.secret, k2.secret)
    assert status == "disabled"


# --- quota / billing ------------------------------------------------------------------------

#: what "quota spent" means in the emulator: a billing/spend cap (the key is disabled) for
#: OpenAI and Anthropic; the daily quota (the key is parked until its reset) for Groq and Gemini
QUOTA_STATUS = {"openai": "disabled", "claude": "disabled", "groq": "parked", "gemini": "parked"}


async def test_spent_quota_takes_the_key_out(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    k1, k2 = two_keys(provider, Faults(quota_spent=True))
    rig = make_rig(k1, k2)
    async with entry.open(rig.multiplexer(max_retries=0)) as mux:
        results = await sequential(entry, mux.get_client(provider), 3)
        stats = mux.get_usage_stats()[provider]
    assert all(r.key_name == "k2" for r in results)
    assert sorted(r.attempts for r in results) == [1, 1, 2]
    assert stats["k1"]["status"] == QUOTA_STATUS[provider]
    if QUOTA_STATUS[provider] == "disabled":
        assert "quota" in stats["k1"]["disabled_reason"]
    assert rig.emu_stats(k1)["requests"] == 1


@pytest.mark.parametrize("kind", ["chat", "stream"])
async def test_spent_quota_pinned_raises_quota_exhausted(
    make_rig: MakeRig, provider: str, entry: Entry, kind: str
) -> None:
    k1, k2 = two_keys(provider, Faults(quota_spent=True))
    rig = make_rig(k1, k2)
    async with entry.open(rig.multiplexer()) as mux:
        exc = await entry.call_error(mux.get_client(provider, key_name="k1"), kind)
    assert isinstance(exc, QuotaExhaustedError)
    assert_names_key(exc, provider, "k1", k1.secret, k2.secret)
    assert rig.emu_stats(k1)["requests"] == 1


# --- server errors and overload -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["chat", "stream"])
async def test_server_errors_on_a_pinned_key_raise_after_the_retries(
    make_rig: MakeRig, provider: str, entry: Entry, kind: str
) -> None:
    k1 = KeyPlan(provider, "k1", faults=Faults(server_error_rate=1.0))
    rig = make_rig(k1)
    mux = rig.multiplexer(max_retries=1, initial_retry_delay=0.01)
    async with entry.open(mux):
        exc = await entry.call_error(mux.get_client(provider, key_name="k1"), kind)
        stats = mux.get_usage_stats()[provider]["k1"]
    assert isinstance(exc, ProviderServerError)
    assert exc.status == 500
    assert exc.attempts == 2
    assert_names_key(exc, provider, "k1", k1.secret)
    assert rig.emu_stats(k1)["errors"] == {"500": 2}
    assert stats["retries"] == 1
    assert stats["failures"] >= 1


async def test_overloaded_is_retried_and_succeeds_on_a_healthy_key(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    k1, k2 = two_keys(provider, Faults(overloaded_rate=1.0))
    rig = make_rig(k1, k2)
    async with entry.open(rig.multiplexer(max_retries=3)) as mux:
        results = await sequential(entry, mux.get_client(provider), 2)
    assert [r.text for r in results] == [reply_for(provider)] * 2
    assert all(r.key_name == "k2" for r in results)
    assert max(r.attempts for r in results) >= 2
    emu = rig.emu_stats(k1)
    assert emu["faults"]["overloaded"] >= 1
    assert set(emu["errors"]) == {str(OVERLOADED_STATUS[provider])}


async def test_overloaded_pinned_key_raises_provider_server_error(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    k1 = KeyPlan(provider, "k1", faults=Faults(overloaded_rate=1.0))
    rig = make_rig(k1)
    async with entry.open(rig.multiplexer(max_retries=1)) as mux:
        exc = await entry.call_error(mux.get_client(provider, key_name="k1"))
    assert isinstance(exc, ProviderServerError)
    assert exc.status == OVERLOADED_STATUS[provider]
    assert exc.attempts == 2
    assert_names_key(exc, provider, "k1", k1.secret)


# --- broken streams -------------------------------------------------------------------------


async def test_stream_error_midway_raises_stream_error_with_the_partial_text(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    k1, k2 = two_keys(provider, Faults(stream_error_after=2))
    rig = make_rig(k1, k2)
    async with entry.open(rig.multiplexer()) as mux:
        streamed = await entry.stream(mux.get_client(provider, key_name="k1"), messages=HELLO)
    exc = streamed.error
    assert isinstance(exc, StreamError)
    assert streamed.deltas == ["Hello ", "from "]
    assert exc.chunks_received == 2
    assert exc.text_received == "Hello from "
    assert_names_key(exc, provider, "k1", k1.secret)
    # not retried: part of the answer had been delivered
    assert rig.emu_stats(k1)["requests"] == 1
    assert rig.emu_stats(k2)["requests"] == 0


async def test_stream_error_midway_is_not_retried_even_unpinned(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    k1 = KeyPlan(provider, "k1", faults=Faults(stream_error_after=3))
    rig = make_rig(k1, KeyPlan(provider, "k2", faults=Faults(stream_error_after=3)))
    async with entry.open(rig.multiplexer()) as mux:
        streamed = await entry.stream(mux.get_client(provider), messages=HELLO)
    assert isinstance(streamed.error, StreamError)
    assert streamed.error.chunks_received == 3
    assert "".join(streamed.deltas) == streamed.error.text_received == "Hello from the "
    assert rig.server.stats()["total"]["requests"] == 1


async def test_stream_cut_without_end_marker_raises_stream_error(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    k1 = KeyPlan(provider, "k1", faults=Faults(stream_cut_after=2))
    rig = make_rig(k1)
    async with entry.open(rig.multiplexer()) as mux:
        streamed = await entry.stream(mux.get_client(provider, key_name="k1"), messages=HELLO)
    exc = streamed.error
    assert isinstance(exc, StreamError)
    assert streamed.deltas == ["Hello ", "from "]
    assert exc.chunks_received == 2
    assert exc.text_received == "Hello from "
    assert_names_key(exc, provider, "k1", k1.secret)
    assert rig.emu_stats(k1)["faults"] == {"stream_cut": 1}


@pytest.mark.parametrize(
    "fault", [Faults(stream_error_after=0), Faults(stream_cut_after=0)], ids=["error", "cut"]
)
async def test_stream_failing_before_any_chunk_is_retried_on_another_key(
    make_rig: MakeRig, provider: str, entry: Entry, fault: Faults
) -> None:
    k1, k2 = two_keys(provider, fault)
    rig = make_rig(k1, k2)
    async with entry.open(rig.multiplexer(max_retries=3)) as mux:
        streams = await sequential_streams(entry, mux.get_client(provider), 2)
    for streamed in streams:
        final = streamed.final
        # transparent: the caller sees one clean answer, nothing of the failed attempt
        assert "".join(streamed.deltas) == final.text == reply_for(provider)
        assert final.key_name == "k2"
    assert sorted(s.final.attempts for s in streams)[-1] >= 2
    assert rig.emu_stats(k1)["requests"] >= 1


# --- malformed answers ----------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["malformed", "missing_fields"])
async def test_malformed_200_raises_malformed_response_error(
    make_rig: MakeRig, provider: str, entry: Entry, fault: str
) -> None:
    k1 = KeyPlan(provider, "k1", faults=Faults(**{fault: True}))
    rig = make_rig(k1)
    async with entry.open(rig.multiplexer(max_retries=0)) as mux:
        exc = await entry.call_error(mux.get_client(provider, key_name="k1"))
    assert isinstance(exc, MalformedResponseError)
    assert exc.status == 200
    assert_names_key(exc, provider, "k1", k1.secret)


async def test_malformed_stream_raises_malformed_response_error(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    k1 = KeyPlan(provider, "k1", faults=Faults(malformed=True))
    rig = make_rig(k1)
    async with entry.open(rig.multiplexer(max_retries=0)) as mux:
        exc = await entry.call_error(mux.get_client(provider, key_name="k1"), "stream")
    assert isinstance(exc, MalformedResponseError)
    assert_names_key(exc, provider, "k1", k1.secret)


# --- timeouts and deadlines -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["chat", "stream"])
async def test_hanging_pinned_key_times_out(
    make_rig: MakeRig, provider: str, entry: Entry, kind: str
) -> None:
    k1 = KeyPlan(provider, "k1", faults=Faults(hang=True))
    rig = make_rig(k1)
    async with entry.open(rig.multiplexer(max_retries=0)) as mux:
        client = mux.get_client(provider, key_name="k1")
        exc = await bounded(entry.call_error(client, kind, timeout=0.25), "the hanging call")
        stats = mux.get_usage_stats()[provider]["k1"]
    assert isinstance(exc, RequestTimeoutError)
    assert isinstance(exc, TimeoutError)
    assert_names_key(exc, provider, "k1", k1.secret)
    # the attempt's own timeout ended it (not a deadline, not a connection error), once
    assert "the attempt timed out" in str(exc)
    assert exc.attempts == 1
    assert rig.emu_stats(k1)["faults"] == {"hang": 1}
    assert (stats["current_requests"], stats["failures"]) == (0, 1)


async def test_hanging_key_is_left_for_a_healthy_one(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    k1, k2 = two_keys(provider, Faults(hang=True))
    rig = make_rig(k1, k2)
    # keymux's time stands still: k1's cooldown after its timeout cannot end during the test
    # (the attempt timeout itself is the HTTP client's, in real time)
    mux = rig.multiplexer(max_retries=2, clock=FakeClock())
    async with entry.open(mux):
        results = await sequential(entry, mux.get_client(provider), 2, timeout=0.2)
        stats = mux.get_usage_stats()[provider]
    assert all(r.key_name == "k2" for r in results)
    # the first call tried k1 first, timed out and moved; the second found k1 cooling
    assert [r.attempts for r in results] == [2, 1]
    assert stats["k1"]["status"] == "cooling"
    assert stats["k1"]["failures"] == 1
    assert stats["k1"]["successes"] == 0
    assert rig.emu_stats(k1)["faults"] == {"hang": 1}


@pytest.mark.parametrize("kind", ["chat", "stream"])
async def test_deadline_bounds_the_whole_call(
    make_rig: MakeRig, provider: str, entry: Entry, kind: str
) -> None:
    rig = make_rig(*two_keys(provider, Faults(hang=True)))
    rig.server.set_faults(rig.key("k2").secret, hang=True)
    # long attempts and many retries: only the deadline can end the call in time
    async with entry.open(rig.multiplexer(max_retries=10, timeout=30.0)) as mux:
        call = entry.call_error(mux.get_client(provider), kind, deadline=0.2)
        exc = await bounded(call, "a call with a 0.2 s deadline")
        stats = mux.get_usage_stats()[provider]
    assert isinstance(exc, RequestTimeoutError)
    # the deadline ended the call during its first (30 s) attempt: nothing else could have
    assert "the deadline passed" in str(exc)
    assert len(rig.server.requests) == 1
    assert provider in str(exc)
    assert all(s["current_requests"] == 0 and s["queue_size"] == 0 for s in stats.values())


# queueing is the core's, the same for every provider: two providers each keep the suite fast
@pytest.mark.parametrize("provider", ["openai", "claude"])
async def test_a_request_past_its_deadline_leaves_the_queue(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    k1 = KeyPlan(provider, "k1", faults=Faults(hang=True))
    rig = make_rig(k1)
    mux = rig.multiplexer(max_concurrent_requests=1, max_retries=0, timeout=30.0)
    async with entry.open(mux):
        client = mux.get_client(provider)
        first = asyncio.ensure_future(entry.call(client, messages=HELLO, deadline=0.6))
        await wait_until(lambda: bool(rig.server.requests), "the first request to hang")
        assert mux.get_usage_stats()[provider]["k1"]["current_requests"] == 1
        with pytest.raises(RequestTimeoutError, match="the deadline passed"):
            await bounded(entry.call(client, messages=HELLO, deadline=0.1), "the queued call")
        # it left the queue at its own deadline, before the request it waited behind ended
        assert not first.done()
        stats = mux.get_usage_stats()[provider]["k1"]
        assert stats["queue_size"] == 0
        assert stats["current_requests"] == 1
        with pytest.raises(RequestTimeoutError):
            await first
    assert len(rig.server.requests) == 1  # the queued request was never sent


async def test_reset_connection_pinned_raises_connection_error_unpinned_moves(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    k1, k2 = two_keys(provider, Faults(reset_connection=True))
    rig = make_rig(k1, k2)
    async with entry.open(rig.multiplexer(max_retries=2)) as mux:
        exc = await entry.call_error(mux.get_client(provider, key_name="k1"))
        results = await sequential(entry, mux.get_client(provider), 2)
    assert isinstance(exc, keymux.ConnectionError)
    assert exc.attempts == 3
    assert_names_key(exc, provider, "k1", k1.secret)
    assert all(r.key_name == "k2" for r in results)


@pytest.mark.parametrize("provider", ["groq", "gemini"])
async def test_queue_full_fails_at_once(make_rig: MakeRig, provider: str, entry: Entry) -> None:
    rig = make_rig(KeyPlan(provider, "k1", faults=Faults(hang=True)))
    mux = rig.multiplexer(max_concurrent_requests=1, queue_size=1, max_retries=0, timeout=30.0)
    async with entry.open(mux):
        client = mux.get_client(provider)
        # different deadlines: two that fire together hit the cancellation race tested below
        calls = [
            asyncio.ensure_future(entry.call(client, messages=HELLO, deadline=deadline))
            for deadline in (0.45, 0.55)
        ]

        def one_in_flight_one_queued() -> bool:
            stats = mux.get_usage_stats()[provider]["k1"]
            return (stats["current_requests"], stats["queue_size"]) == (1, 1)

        await wait_until(one_in_flight_one_queued, "one request in flight and one queued")
        with pytest.raises(keymux.QueueFullError) as info:
            await entry.call(client, messages=HELLO)
        # at once: while the two it found in the way still wait for their deadlines
        assert not any(call.done() for call in calls)
        assert provider in str(info.value)
        for call in calls:
            with pytest.raises(RequestTimeoutError):
                await call


@pytest.mark.parametrize("provider", ["openai", "gemini"])
async def test_close_ends_every_accepted_request_explicitly(
    make_rig: MakeRig, provider: str, entry: Entry
) -> None:
    rig = make_rig(KeyPlan(provider, "k1", faults=Faults(hang=True)))
    mux = rig.multiplexer(max_concurrent_requests=1, timeout=30.0, close_grace=0.1)
    async with entry.open(mux):
        client = mux.get_client(provider)
        calls = [asyncio.ensure_future(entry.call(client, messages=HELLO)) for _ in range(3)]

        def one_in_flight_two_queued() -> bool:
            stats = mux.get_usage_stats()[provider]["k1"]
            return (stats["current_requests"], stats["queue_size"]) == (1, 2)

        await wait_until(one_in_flight_two_queued, "one request in flight and two queued")
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5.0)
    assert [type(o) for o in outcomes] == [keymux.ClosedError] * 3
    assert all(provider in str(o) for o in outcomes)
    assert mux.closed
    with pytest.raises(keymux.ClosedError):
        await entry.call(client, messages=HELLO)


# --- deadlines and cancellation ---------------------------------------------------------------


async def test_deadline_error_names_provider_and_key(make_rig: MakeRig, provider: str) -> None:
    k1 = KeyPlan(provider, "k1", faults=Faults(hang=True))
    rig = make_rig(k1)
    async with rig.multiplexer(timeout=30.0) as mux:
        exc = await Entry("async").call_error(mux.get_client(provider, key_name="k1"), deadline=0.2)
    assert isinstance(exc, RequestTimeoutError)
    assert_names_key(exc, provider, "k1", k1.secret)


async def test_stream_deadline_passing_midway_raises_request_timeout(
    make_rig: MakeRig, provider: str
) -> None:
    rig = make_rig(KeyPlan(provider, "k1"), clock=SystemClock(), stream_chunk_delay=0.1)
    async with rig.multiplexer(timeout=30.0) as mux:
        streamed = await Entry("async").stream(
            mux.get_client(provider), messages=HELLO, deadline=0.35
        )
    assert 1 <= len(streamed.deltas) < words(reply_for(provider))
    assert isinstance(streamed.error, RequestTimeoutError)


@pytest.mark.parametrize("kind", ["chat", "stream"])
async def test_the_callers_deadline_is_not_held_against_the_key(
    make_rig: MakeRig, provider: str, kind: str
) -> None:
    # the answer starts at once (200 + headers) but its first chunk takes 0.5 s
    rig = make_rig(KeyPlan(provider, "k1"), clock=SystemClock(), stream_chunk_delay=0.5, latency=0)
    if kind == "chat":
        rig.server.call(lambda: setattr(rig.server.emu, "latency", 0.5))
    async with rig.multiplexer(timeout=30.0) as mux:
        exc = await Entry("async").call_error(mux.get_client(provider), kind, deadline=0.2)
        stats = mux.get_usage_stats()[provider]["k1"]
    assert isinstance(exc, RequestTimeoutError)
    assert stats["failures"] == 0
    assert stats["retries"] == 0


async def test_cancelling_a_queued_request_while_a_slot_frees_loses_nothing(
    make_rig: MakeRig, provider: str
) -> None:
    k1 = KeyPlan(provider, "k1", faults=Faults(hang=True))
    rig = make_rig(k1)
    async with rig.multiplexer(max_concurrent_requests=1, timeout=30.0) as mux:
        client = mux.get_client(provider)
        in_flight = asyncio.ensure_future(client.acall(messages=HELLO))
        await wait_until(lambda: bool(rig.server.requests), "the first request to hang")
        queued = asyncio.ensure_future(client.acall(messages=HELLO))
        await wait_until(
            lambda: mux.get_usage_stats()[provider]["k1"]["queue_size"] == 1,
            "the second request to be queued",
        )
        # e.g. two asyncio.timeout()s, or two deadlines, firing in one loop iteration
        in_flight.cancel()
        queued.cancel()
        outcomes = await asyncio.gather(in_flight, queued, return_exceptions=True)
        assert [type(o) for o in outcomes] == [asyncio.CancelledError] * 2
        stats = mux.get_usage_stats()[provider]["k1"]
        assert stats["current_requests"] == 0
        assert stats["queue_size"] == 0
        rig.server.set_faults(k1.secret, hang=False)
        after = await client.acall(messages=HELLO, deadline=0.5)  # the key still works
    assert after.key_name == "k1"


# --- secrets --------------------------------------------------------------------------------


async def test_no_secret_in_stats_repr_or_keys(make_rig: MakeRig, provider: str) -> None:
    k1, k2 = two_keys(provider, Faults(revoked=True))
    rig = make_rig(k1, k2)
    async with rig.multiplexer() as mux:
        await sequential(Entry("async"), mux.get_client(provider), 2)
        blobs = [mux.get_usage_stats(), mux.key_info(), repr(mux), repr(mux.get_client(provider))]
    assert_no_secret(rig, *blobs)
    assert_no_secret(rig, rig.server.stats())


def test_public_names_exist() -> None:
    """The names the public contract promises are importable from ``keymux``."""
    for name in (
        "Multiplexer",
        "ApiKeyMultiplexer",
        "KeymuxError",
        "RateLimitedError",
        "AuthenticationError",
        "QuotaExhaustedError",
        "ProviderServerError",
        "BadRequestError",
        "RequestTimeoutError",
        "QueueFullError",
        "UnsupportedError",
        "StreamError",
        "MalformedResponseError",
    ):
        assert hasattr(keymux, name), name
    assert keymux.ApiKeyMultiplexer is keymux.Multiplexer
    for name in ("RateLimitedError", "StreamError", "RequestTimeoutError", "UnsupportedError"):
        assert issubclass(getattr(keymux, name), keymux.KeymuxError)
