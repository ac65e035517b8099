"""The scenarios of ``test_contract.py`` that make sense on every path into keymux, run over three
of them through one small façade:

* ``keymux``: keymux's own client (``await client.acall(...)`` / ``client.astream(...)``);
* ``sdk-sync``: the provider's official SDK, blocking client, on ``mux.http_client(...)``,
  called from a worker thread (keymux on its own loop thread);
* ``sdk-async``: the official async SDK client on ``mux.async_http_client(...)``.

Each scenario asserts what the three paths share: which key answered, how many attempts it
took, what the emulator saw and what the stats say; and for a failure, the status and the key
name it carries. On the SDK paths the SDK's own retries stay on (its defaults) unless a
scenario says otherwise, so "the emulator saw N requests" also shows the SDK added none.

Scenarios of ``test_contract.py`` that do not apply to a forwarded SDK request (keymux builds
nothing there, it passes the SDK's request and the provider's answer through): where a system
message goes and embeddings refused on Claude/Groq (the SDK's own request shapes); a malformed
200 or stream (the SDK's parser judges the body, keymux passes it on); deadlines (an SDK call
has none, only per-attempt timeouts); close with requests in flight and cancelling a queued
request (no SDK-side counterpart to assert on the sync path).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

import keymux
from conftest import KeyPlan, MakeRig, Rig
from keymux import KeymuxError, Multiplexer, Response
from keymux._clock import SystemClock
from keymux.emulator import Faults
from keymux.transports import LIBRARIES
from sdk_helpers import (
    EMBED_MODELS,
    HELLO,
    MODELS,
    PROVIDERS,
    Sdk,
    chain,
    clean_sdk_env,
    failure_of,
    reply_for,
)

#: the status each provider uses for "overloaded" (as in test_contract.py)
OVERLOADED_STATUS = {"openai": 503, "groq": 498, "claude": 529, "gemini": 503}
#: "quota spent" in the emulator: a billing cap (disabled) or the daily quota (parked)
QUOTA_STATUS = {"openai": "disabled", "claude": "disabled", "groq": "parked", "gemini": "parked"}
HELLO_INPUT_TOKENS = 3 + 4 + math.ceil(len("Hello") / 4)
PATHS = ("keymux", "sdk-sync", "sdk-async")


@pytest.fixture(autouse=True)
def _no_sdk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_sdk_env(monkeypatch)


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- the façade -------------------------------------------------------------------------------


@dataclass
class Out:
    """One answer, whichever path gave it."""

    text: str
    key_name: str
    attempts: int
    input_tokens: int
    output_tokens: int
    model: str | None


@dataclass
class StreamOut:
    deltas: list[str]
    error: BaseException | None
    key_name: str | None

    @property
    def text(self) -> str:
        return "".join(self.deltas)


@dataclass
class Err:
    """One failure, whichever path raised it: the HTTP status it carries (an SDK's
    APIStatusError, or keymux's error's ``status``), the key *name*, the attempts, and the
    KeymuxError (keymux's own, or the one the SDK exception was raised from)."""

    exc: BaseException
    status: int | None
    key_name: str | None
    attempts: int | None
    keymux: KeymuxError | None
    should_retry: str | None = None


class Caller:
    """Calls one provider through one path."""

    def __init__(self, path: str, mux: Multiplexer, provider: str) -> None:
        self.path = path
        self.mux = mux
        self.provider = provider
        self.sdk: Sdk | None = None
        self.client: Any = None

    def target(self, key_name: str | None = None, *, sdk_max_retries: int | None = None) -> Caller:
        """Aim at one key (or at all of them); ``sdk_max_retries`` for the SDK's own retries."""
        if self.path == "keymux":
            self.client = self.mux.get_client(self.provider, key_name=key_name)
        else:
            self.sdk = Sdk(self.provider, self.path.removeprefix("sdk-"))
            self.sdk.build(self.mux, key_name=key_name, max_retries=sdk_max_retries)
        return self

    @property
    def sent(self) -> int | None:
        """Requests the SDK sent (None on keymux's own path)."""
        return None if self.sdk is None else self.sdk.sent

    async def chat(self, *, timeout: float | None = None, model: str | None = None) -> Out:
        model = model or MODELS[self.provider]
        if self.sdk is None:
            r: Response = await self.client.acall(
                messages=HELLO, model=model, **({"timeout": timeout} if timeout else {})
            )
            return Out(
                r.text or "",
                r.key_name,
                r.attempts,
                r.usage.input_tokens,
                r.usage.output_tokens,
                r.model,
            )
        reply = await self.sdk.chat(model=model, timeout=timeout)
        return Out(
            reply.text,
            reply.key_name,
            reply.attempts,
            reply.input_tokens,
            reply.output_tokens,
            reply.model,
        )

    async def stream(self, *, timeout: float | None = None) -> StreamOut:
        model = MODELS[self.provider]
        if self.sdk is None:
            deltas: list[str] = []
            final: Response | None = None
            try:
                async for item in self.client.astream(
                    "chat", messages=HELLO, model=model, **({"timeout": timeout} if timeout else {})
                ):
                    if isinstance(item, str):
                        deltas.append(item)
                    else:
                        final = item
            except KeymuxError as exc:
                return StreamOut(deltas, exc, exc.key_name)
            assert final is not None
            return StreamOut(deltas, None, final.key_name)
        streamed = await self.sdk.stream(model=model, timeout=timeout)
        return StreamOut(streamed.deltas, streamed.error, streamed.headers.get("x-keymux-key"))

    async def embed(self, inputs: list[str]) -> list[list[float]]:
        if self.sdk is None:
            resp = await self.client.acall("embed", input=inputs, model=EMBED_MODELS[self.provider])
            return list(resp)
        return await self.sdk.embed(inputs)

    async def error(self, kind: str = "chat", **kw: Any) -> Err:
        """The failure a chat call (kind "chat") or a stream (kind "stream") ends in."""
        if kind == "stream":
            out = await self.stream(**kw)
            assert out.error is not None, f"expected an error, got {out.deltas!r}"
            return _err(out.error)
        try:
            got = await self.chat(**kw)
        except Exception as exc:
            return _err(exc)
        raise AssertionError(f"expected an error, got {got!r}")

    async def close(self) -> None:
        if self.sdk is not None:
            await self.sdk.close()


def _err(exc: BaseException) -> Err:
    if isinstance(exc, KeymuxError):
        return Err(exc, exc.status, exc.key_name, exc.attempts, exc)
    f = failure_of(exc)
    attempts = f.headers.get("x-keymux-attempts")
    return Err(
        exc,
        f.status,
        f.key_name,
        int(attempts) if attempts else (f.keymux.attempts if f.keymux else None),
        f.keymux,
        f.headers.get("x-should-retry"),
    )


@asynccontextmanager
async def entered(path: str, mux: Multiplexer, provider: str) -> AsyncIterator[Caller]:
    """The multiplexer opened as the path uses it, and a caller on it (aimed with target())."""
    caller = Caller(path, mux, provider)
    if path == "sdk-sync":
        with mux:  # keymux on its own loop thread, as for any synchronous program
            try:
                yield caller
            finally:
                await caller.close()
    else:
        async with mux:
            try:
                yield caller
            finally:
                await caller.close()


def two_keys(provider: str, faults: Faults | None = None, **limits: Any) -> tuple[KeyPlan, KeyPlan]:
    return KeyPlan(provider, "k1", faults=faults or Faults(), **limits), KeyPlan(provider, "k2")


async def exhaust(rig: Rig, k: KeyPlan) -> None:
    """Spend a key's one-request-per-window budget from another multiplexer."""
    async with rig.multiplexer(max_retries=0) as other:
        resp = await other.get_client(k.provider, key_name=k.name).acall(messages=HELLO)
    assert resp.key_name == k.name


def assert_final(err: Err, caller: Caller, sent: int = 1) -> None:
    """On an SDK path, a final failure told the SDK not to retry, and it sent ``sent``
    requests."""
    if caller.sdk is None:
        return
    if err.status is not None:
        assert err.should_retry == "false"
    assert caller.sent == sent


def library_errors(exc: BaseException | None) -> set[str]:
    """The names of the httpx / httpx2 exceptions in ``exc``'s chain."""
    assert exc is not None
    return {type(e).__name__ for e in chain(exc) if type(e).__module__.split(".")[0] in LIBRARIES}


def assert_no_secret(rig: Rig, *blobs: object) -> None:
    for blob in blobs:
        text = blob if isinstance(blob, str) else json.dumps(blob, default=repr)
        for k in rig.keys:
            assert k.secret not in text


# --- answers ----------------------------------------------------------------------------------


async def test_chat_returns_the_answer(make_rig: MakeRig, provider: str, path: str) -> None:
    rig = make_rig(KeyPlan(provider, "k1"))
    async with entered(path, rig.multiplexer(), provider) as caller:
        out = await caller.target().chat()
    assert out.text == reply_for(provider)
    assert out.key_name == "k1"
    assert out.attempts == 1
    assert out.input_tokens == HELLO_INPUT_TOKENS
    assert out.output_tokens == len(reply_for(provider).split(" "))


async def test_the_model_is_passed_on(make_rig: MakeRig, provider: str, path: str) -> None:
    rig = make_rig(KeyPlan(provider, "k1"))
    async with entered(path, rig.multiplexer(), provider) as caller:
        out = await caller.target().chat(model="explicit-model-x")
    assert out.model is not None
    assert out.model.removeprefix("models/") == "explicit-model-x"
    recorded = rig.server.requests[-1]
    if provider == "gemini":
        assert "explicit-model-x" in recorded.path
    else:
        assert recorded.body["model"] == "explicit-model-x"


async def test_usage_matches_the_emulators_accounting(
    make_rig: MakeRig, provider: str, path: str
) -> None:
    rig = make_rig(KeyPlan(provider, "k1"))
    async with entered(path, rig.multiplexer(), provider) as caller:
        caller.target()
        a = await caller.chat()
        streamed = await caller.stream()
        stats = caller.mux.get_usage_stats()[provider]["k1"]
    assert streamed.error is None
    charged = rig.emu_stats(rig.key("k1"))["tokens"]
    # keymux counted the plain answer from its JSON and the stream from its events
    assert stats["input_tokens"] + stats["output_tokens"] == charged
    assert stats["input_tokens"] == 2 * a.input_tokens
    assert stats["successes"] == 2
    assert stats["usage"] == 2


async def test_a_stream_comes_in_pieces(make_rig: MakeRig, provider: str, path: str) -> None:
    rig = make_rig(KeyPlan(provider, "k1"))
    async with entered(path, rig.multiplexer(), provider) as caller:
        out = await caller.target().stream()
        stats = caller.mux.get_usage_stats()[provider]["k1"]
    assert out.error is None
    assert len(out.deltas) > 1
    assert out.text == reply_for(provider)
    assert out.key_name == "k1"
    assert stats["successes"] == 1
    assert stats["current_requests"] == 0
    assert rig.server.stats()["total"]["streams"] == 1


@pytest.mark.parametrize("provider", ["openai", "gemini"])
async def test_embed_returns_vectors(make_rig: MakeRig, provider: str, path: str) -> None:
    rig = make_rig(KeyPlan(provider, "k1"))
    async with entered(path, rig.multiplexer(), provider) as caller:
        vectors = await caller.target().embed(["a", "b", "a"])
    assert len(vectors) == 3
    assert vectors[0] == vectors[2] != vectors[1]


# --- 429 --------------------------------------------------------------------------------------


async def test_a_rate_limited_key_cools_and_the_request_moves(
    make_rig: MakeRig, provider: str, path: str
) -> None:
    k1, k2 = two_keys(provider, rpm=1)
    rig = make_rig(k1, k2)
    await exhaust(rig, k1)
    async with entered(path, rig.multiplexer(), provider) as caller:
        caller.target()
        results = [await caller.chat() for _ in range(2)]
        stats = caller.mux.get_usage_stats()[provider]
    assert [r.key_name for r in results] == ["k2", "k2"]
    assert sorted(r.attempts for r in results) == [1, 2]
    assert stats["k1"]["status"] == "cooling"
    assert stats["k1"]["cooldown_s"] > 30  # the provider's own signal was honoured
    assert rig.emu_stats(k1)["errors"] == {"429": 1}
    assert caller.sent in (None, 2)


@pytest.mark.parametrize("kind", ["chat", "stream"])
async def test_a_rate_limited_pinned_key_fails(
    make_rig: MakeRig, provider: str, path: str, kind: str
) -> None:
    k1, k2 = two_keys(provider, rpm=1)
    rig = make_rig(k1, k2)
    await exhaust(rig, k1)
    async with entered(path, rig.multiplexer(max_retries=0), provider) as caller:
        err = await caller.target("k1").error(kind)
        stats = caller.mux.get_usage_stats()[provider]
    assert err.status == 429
    assert err.key_name == "k1"
    assert_final(err, caller)
    if caller.sdk is None:
        assert isinstance(err.exc, keymux.RateLimitedError)
    assert stats["k1"]["rate_limited"] == 1
    assert stats["k2"]["usage"] == 0


# --- invalid keys, spent quota -----------------------------------------------------------------


async def test_a_revoked_key_is_disabled_and_the_request_moves(
    make_rig: MakeRig, provider: str, path: str
) -> None:
    k1, k2 = two_keys(provider, Faults(revoked=True))
    rig = make_rig(k1, k2)
    async with entered(path, rig.multiplexer(max_retries=0), provider) as caller:
        caller.target()
        results = [await caller.chat() for _ in range(3)]
        stats = caller.mux.get_usage_stats()[provider]
    assert all(r.key_name == "k2" for r in results)
    assert sorted(r.attempts for r in results) == [1, 1, 2]
    assert stats["k1"]["status"] == "disabled"
    assert "invalid" in stats["k1"]["disabled_reason"]
    assert rig.emu_stats(k1)["requests"] == 1
    assert_no_secret(rig, stats)


@pytest.mark.parametrize("kind", ["chat", "stream"])
async def test_a_revoked_pinned_key_fails_as_unauthenticated(
    make_rig: MakeRig, provider: str, path: str, kind: str
) -> None:
    k1, k2 = two_keys(provider, Faults(revoked=True))
    rig = make_rig(k1, k2)
    async with entered(path, rig.multiplexer(), provider) as caller:
        err = await caller.target("k1").error(kind)
        status = caller.mux.get_usage_stats()[provider]["k1"]["status"]
    assert err.status in (400, 401, 403)
    assert err.key_name == "k1"
    assert_final(err, caller)
    if caller.sdk is None:
        assert isinstance(err.exc, keymux.AuthenticationError)
    assert status == "disabled"
    assert rig.emu_stats(k1)["requests"] == 1


async def test_spent_quota_takes_the_key_out(make_rig: MakeRig, provider: str, path: str) -> None:
    k1, k2 = two_keys(provider, Faults(quota_spent=True))
    rig = make_rig(k1, k2)
    async with entered(path, rig.multiplexer(max_retries=0), provider) as caller:
        caller.target()
        results = [await caller.chat() for _ in range(3)]
        stats = caller.mux.get_usage_stats()[provider]
    assert all(r.key_name == "k2" for r in results)
    assert sorted(r.attempts for r in results) == [1, 1, 2]
    assert stats["k1"]["status"] == QUOTA_STATUS[provider]
    assert rig.emu_stats(k1)["requests"] == 1


@pytest.mark.parametrize("kind", ["chat", "stream"])
async def test_spent_quota_on_a_pinned_key_fails(
    make_rig: MakeRig, provider: str, path: str, kind: str
) -> None:
    k1, k2 = two_keys(provider, Faults(quota_spent=True))
    rig = make_rig(k1, k2)
    async with entered(path, rig.multiplexer(), provider) as caller:
        err = await caller.target("k1").error(kind)
    assert err.key_name == "k1"
    assert err.status in (400, 402, 403, 429)
    assert_final(err, caller)
    if caller.sdk is None:
        assert isinstance(err.exc, keymux.QuotaExhaustedError)
    assert rig.emu_stats(k1)["requests"] == 1


# --- server errors and overload ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["chat", "stream"])
async def test_server_errors_on_a_pinned_key_fail_after_keymuxs_retries(
    make_rig: MakeRig, provider: str, path: str, kind: str
) -> None:
    k1 = KeyPlan(provider, "k1", faults=Faults(server_error_rate=1.0))
    rig = make_rig(k1)
    async with entered(path, rig.multiplexer(max_retries=1), provider) as caller:
        err = await caller.target("k1").error(kind)
        stats = caller.mux.get_usage_stats()[provider]["k1"]
    assert err.status == 500
    assert err.attempts == 2
    assert err.key_name == "k1"
    assert_final(err, caller)
    # keymux's two attempts, and none of the SDK's own (its retries are on)
    assert rig.emu_stats(k1)["errors"] == {"500": 2}
    assert stats["retries"] == 1


async def test_overload_is_retried_on_a_healthy_key(
    make_rig: MakeRig, provider: str, path: str
) -> None:
    k1, k2 = two_keys(provider, Faults(overloaded_rate=1.0))
    rig = make_rig(k1, k2)
    async with entered(path, rig.multiplexer(max_retries=3), provider) as caller:
        caller.target()
        results = [await caller.chat() for _ in range(2)]
    assert [r.text for r in results] == [reply_for(provider)] * 2
    assert all(r.key_name == "k2" for r in results)
    assert max(r.attempts for r in results) >= 2
    assert set(rig.emu_stats(k1)["errors"]) == {str(OVERLOADED_STATUS[provider])}
    assert caller.sent in (None, 2)


async def test_overload_on_a_pinned_key_fails_after_keymuxs_retries(
    make_rig: MakeRig, provider: str, path: str
) -> None:
    k1 = KeyPlan(provider, "k1", faults=Faults(overloaded_rate=1.0))
    rig = make_rig(k1)
    async with entered(path, rig.multiplexer(max_retries=1), provider) as caller:
        err = await caller.target("k1").error()
    assert err.status == OVERLOADED_STATUS[provider]
    assert err.attempts == 2
    assert err.key_name == "k1"
    assert_final(err, caller)
    assert rig.emu_stats(k1)["requests"] == 2


# --- broken streams ---------------------------------------------------------------------------


async def test_a_stream_broken_midway_is_not_retried(
    make_rig: MakeRig, provider: str, path: str
) -> None:
    k1, k2 = two_keys(provider, Faults(stream_cut_after=2))
    rig = make_rig(k1, k2)
    async with entered(path, rig.multiplexer(), provider) as caller:
        out = await caller.target("k1", sdk_max_retries=0).stream()
    assert out.deltas == ["Hello ", "from "]
    assert out.error is not None
    broke = next(e for e in chain(out.error) if isinstance(e, KeymuxError))
    assert isinstance(broke, keymux.StreamError)
    assert broke.key_name == "k1"
    if caller.sdk is not None:  # the HTTP library's own error, which the SDK knows
        assert "RemoteProtocolError" in library_errors(out.error)
    assert rig.emu_stats(k1)["requests"] == 1
    assert rig.emu_stats(k2)["requests"] == 0


async def test_an_error_event_midway_reaches_the_caller_and_is_not_retried(
    make_rig: MakeRig, provider: str, path: str
) -> None:
    k1, k2 = two_keys(provider, Faults(stream_error_after=2))
    # chunks 20 ms apart (real time), so the deltas reach the caller before the error event: a
    # forwarded stream is judged per network read, and an error event in the same read as the
    # first deltas sends the attempt back to be retried (nothing had reached the caller)
    rig = make_rig(k1, k2, clock=SystemClock(), stream_chunk_delay=0.02)
    async with entered(path, rig.multiplexer(), provider) as caller:
        out = await caller.target("k1").stream()
    # keymux's own client raises StreamError; an SDK reads the provider's error event itself
    assert out.deltas == ["Hello ", "from "]
    assert out.error is not None
    if caller.sdk is None:
        assert isinstance(out.error, keymux.StreamError)
    assert rig.emu_stats(k1)["requests"] == 1
    assert rig.emu_stats(k2)["requests"] == 0


@pytest.mark.parametrize(
    "fault", [Faults(stream_error_after=0), Faults(stream_cut_after=0)], ids=["error", "cut"]
)
async def test_a_stream_failing_before_any_chunk_is_retried_on_another_key(
    make_rig: MakeRig, provider: str, path: str, fault: Faults
) -> None:
    k1, k2 = two_keys(provider, fault)
    rig = make_rig(k1, k2)
    async with entered(path, rig.multiplexer(max_retries=3), provider) as caller:
        caller.target(sdk_max_retries=0)
        streams = [await caller.stream() for _ in range(2)]
    if caller.sdk is not None and fault.stream_cut_after == 0 and provider != "gemini":
        # a forwarded stream is retried only until its first bytes reach the caller, and
        # OpenAI's, Groq's and Anthropic's streams open with an event of their own (the role,
        # message_start) that is passed on before the cut: not retried, as for a cut midway
        cut = [o for o in streams if o.key_name == "k1"]
        assert cut
        for out in cut:
            assert out.deltas == []
            broke = next(e for e in chain(out.error) if isinstance(e, KeymuxError))  # type: ignore[arg-type]
            assert isinstance(broke, keymux.StreamError)
        return
    for out in streams:
        assert out.error is None
        assert out.text == reply_for(provider)  # nothing of the failed attempt shows
        assert out.key_name == "k2"
    assert rig.emu_stats(k1)["requests"] >= 1
    assert caller.sent in (None, 2)


# --- timeouts and broken connections ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["chat", "stream"])
async def test_a_hanging_pinned_key_times_out(
    make_rig: MakeRig, provider: str, path: str, kind: str
) -> None:
    k1 = KeyPlan(provider, "k1", faults=Faults(hang=True))
    rig = make_rig(k1)
    # the SDK's per-request timeout is keymux's per-attempt timeout; an SDK retries a timeout
    # on its own (it has no answer to read x-should-retry from), so its retries are off here
    async with entered(path, rig.multiplexer(max_retries=0, timeout=30.0), provider) as caller:
        err = await caller.target("k1", sdk_max_retries=0).error(kind, timeout=0.25)
    assert isinstance(err.keymux, keymux.RequestTimeoutError)
    assert err.key_name == "k1"
    assert err.status is None
    if caller.sdk is not None:
        assert "TimeoutException" in library_errors(err.exc)
        if provider != "gemini":  # the Stainless SDKs map it to their own
            assert type(err.exc).__name__ == "APITimeoutError"
    assert rig.emu_stats(k1)["requests"] <= 1  # keymux's one attempt (the SDK added none)


async def test_a_hanging_key_is_left_for_a_healthy_one(
    make_rig: MakeRig, provider: str, path: str
) -> None:
    k1, k2 = two_keys(provider, Faults(hang=True))
    rig = make_rig(k1, k2)
    async with entered(path, rig.multiplexer(max_retries=2, timeout=30.0), provider) as caller:
        caller.target()
        results = [await caller.chat(timeout=0.2) for _ in range(2)]
        stats = caller.mux.get_usage_stats()[provider]
    assert all(r.key_name == "k2" for r in results)
    assert max(r.attempts for r in results) == 2
    assert stats["k1"]["failures"] >= 1
    assert stats["k1"]["successes"] == 0
    assert caller.sent in (None, 2)


async def test_a_reset_connection_fails_when_pinned_and_moves_when_not(
    make_rig: MakeRig, provider: str, path: str
) -> None:
    k1, k2 = two_keys(provider, Faults(reset_connection=True))
    rig = make_rig(k1, k2)
    async with entered(path, rig.multiplexer(max_retries=2), provider) as caller:
        err = await caller.target("k1", sdk_max_retries=0).error()
        results = [await caller.target().chat() for _ in range(2)]
    assert isinstance(err.keymux, keymux.ConnectionError)
    assert err.keymux.attempts == 3
    assert err.key_name == "k1"
    if caller.sdk is not None:
        assert "ConnectError" in library_errors(err.exc)
        if provider != "gemini":
            assert type(err.exc).__name__ == "APIConnectionError"
    assert all(r.key_name == "k2" for r in results)


@pytest.mark.parametrize("provider", ["groq", "gemini"])
async def test_a_full_queue_fails_at_once(make_rig: MakeRig, provider: str, path: str) -> None:
    rig = make_rig(KeyPlan(provider, "k1", faults=Faults(hang=True)))
    mux = rig.multiplexer(max_concurrent_requests=1, queue_size=1, max_retries=0, timeout=30.0)
    async with entered(path, mux, provider) as caller:
        # keymux's own client fills the slot and the queue, with deadlines that end them
        own = mux.get_client(provider)
        fillers = [
            asyncio.ensure_future(asyncio.to_thread(own, "chat", messages=HELLO, deadline=d))
            for d in (0.45, 0.55)
        ]
        for _ in range(200):
            stats = mux.get_usage_stats()[provider]["k1"]
            if stats["current_requests"] == 1 and stats["queue_size"] == 1:
                break
            await asyncio.sleep(0.01)
        err = await caller.target().error()
        for filler in fillers:
            with pytest.raises(keymux.RequestTimeoutError):
                await filler
    if caller.sdk is None:
        assert isinstance(err.exc, keymux.QueueFullError)
    else:
        assert err.status == 429
        assert_final(err, caller)
    assert rig.server.stats()["total"]["requests"] <= 2  # the fillers; the refused call never


# --- secrets ----------------------------------------------------------------------------------


async def test_no_secret_in_stats_reprs_or_keys(
    make_rig: MakeRig, provider: str, path: str
) -> None:
    k1, k2 = two_keys(provider, Faults(revoked=True))
    rig = make_rig(k1, k2)
    async with entered(path, rig.multiplexer(), provider) as caller:
        caller.target()
        for _ in range(2):
            await caller.chat()
        mux = caller.mux
        blobs = [mux.get_usage_stats(), mux.key_info(), repr(mux)]
        if caller.sdk is not None:
            blobs += [repr(caller.sdk.http), repr(caller.sdk.client)]
    assert_no_secret(rig, *blobs)
    assert_no_secret(rig, rig.server.stats())
