"""The official SDKs, unchanged, through keymux (api.md "Official SDKs, unchanged, through keymux").

Each test drives the real openai, groq, anthropic or google-genai package, sync and async, with
``api_key="keymux"`` and nothing but ``http_client=mux.http_client(...)`` (or the async one),
against the in-process emulator. What keymux owes the SDK: its requests go through the lanes
(the placeholder never leaves the process), keymux's retries and failover happen where the SDK
cannot see them (it sends one request), a final failure says ``x-should-retry: false`` so the
SDK raises at once, and no secret reaches an SDK exception or a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import KeyPlan, MakeRig, Rig
from keymux import ConfigError, Multiplexer, Timeout
from keymux._clock import SystemClock
from keymux._http import Engine
from keymux._types import HttpRequest
from keymux.emulator import Faults
from keymux.transports import _transport
from keymux.transports._answer import attempt_timeout, refusal_status
from sdk_helpers import (
    HELLO,
    MODES,
    PLACEHOLDER,
    PROVIDERS,
    Failure,
    Sdk,
    chain,
    clean_sdk_env,
    failure_of,
    reply_for,
)

httpx = pytest.importorskip("httpx")
httpx2 = pytest.importorskip("httpx2")

#: where each SDK puts its API key (the current major versions)
SLOT = {
    "openai": ("authorization", "Bearer "),
    "groq": ("authorization", "Bearer "),
    "claude": ("authorization", "Bearer "),  # anthropic 2.x
    "gemini": ("x-goog-api-key", ""),
}
STAINLESS = ("openai", "groq", "claude")


@pytest.fixture(autouse=True)
def _no_sdk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_sdk_env(monkeypatch)


@pytest.fixture(params=[(p, m) for p in PROVIDERS for m in MODES], ids=lambda pm: "-".join(pm))
async def sdk(request: pytest.FixtureRequest) -> Any:
    provider, mode = request.param
    made = Sdk(provider, mode)
    yield made
    await made.close()


@pytest.fixture
def sent_by_keymux(monkeypatch: pytest.MonkeyPatch) -> list[HttpRequest]:
    """Every HTTP request keymux's engine sent (URL and headers, key included)."""
    sent: list[HttpRequest] = []
    original = Engine.open

    async def spy(self: Engine, req: HttpRequest, timeout: Timeout) -> Any:
        sent.append(req)
        return await original(self, req, timeout)

    monkeypatch.setattr(Engine, "open", spy)
    return sent


def opened(sdk: Sdk, mux: Multiplexer) -> Any:
    """``async with`` for the async SDKs (keymux on the test's loop), ``with`` for the sync
    ones (keymux on its own loop thread)."""
    return mux if sdk.is_async else _SyncOpen(mux)


class _SyncOpen:
    def __init__(self, mux: Multiplexer) -> None:
        self.mux = mux

    async def __aenter__(self) -> Multiplexer:
        return self.mux.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.mux.close)


def stats(mux: Multiplexer, provider: str) -> dict[str, Any]:
    return mux.get_usage_stats()[provider]


async def spend(rig: Rig, k: KeyPlan) -> None:
    """Spend a key's one request of this window from another multiplexer."""
    async with rig.multiplexer(max_retries=0) as other:
        await other.get_client(k.provider, key_name=k.name).acall(
            messages=[{"role": "user", "content": "x"}]
        )


# --- chat, stream, embed ----------------------------------------------------------------------


async def test_chat(make_rig: MakeRig, sdk: Sdk) -> None:
    rig = make_rig(KeyPlan(sdk.provider, "k1"))
    async with opened(sdk, rig.multiplexer()) as mux:
        sdk.build(mux)
        reply = await sdk.chat()
        s = stats(mux, sdk.provider)["k1"]
    assert reply.text == reply_for(sdk.provider)
    assert reply.key_name == "k1"
    assert reply.attempts == 1
    assert reply.input_tokens > 0
    assert reply.output_tokens > 0
    assert s["successes"] == 1
    assert s["current_requests"] == 0
    assert s["input_tokens"] == reply.input_tokens  # usage counted from the forwarded JSON
    assert s["output_tokens"] == reply.output_tokens
    assert sdk.sent == 1
    assert rig.server.stats()["total"]["unknown_key"] == 0


async def test_stream(make_rig: MakeRig, sdk: Sdk) -> None:
    rig = make_rig(KeyPlan(sdk.provider, "k1"))
    async with opened(sdk, rig.multiplexer()) as mux:
        sdk.build(mux)
        streamed = await sdk.stream()
        s = stats(mux, sdk.provider)["k1"]
    assert streamed.error is None
    assert streamed.text == reply_for(sdk.provider)
    assert len(streamed.deltas) > 1  # chunk by chunk, not one piece
    assert s["successes"] == 1
    assert s["current_requests"] == 0
    assert s["output_tokens"] == len(reply_for(sdk.provider).split(" "))  # from its events
    assert rig.server.stats()["total"]["streams"] == 1


@pytest.mark.parametrize("provider", ["openai", "gemini"])
@pytest.mark.parametrize("mode", MODES)
async def test_embed(make_rig: MakeRig, provider: str, mode: str) -> None:
    sdk = Sdk(provider, mode)
    rig = make_rig(KeyPlan(provider, "k1"))
    async with opened(sdk, rig.multiplexer()) as mux:
        sdk.build(mux)
        vectors = await sdk.embed(["a", "b", "a"])
        await sdk.close()
    assert len(vectors) == 3
    assert vectors[0] == vectors[2] != vectors[1]
    assert all(isinstance(x, float) for x in vectors[0])


async def test_the_placeholder_never_leaves_keymux(
    make_rig: MakeRig, sdk: Sdk, sent_by_keymux: list[HttpRequest]
) -> None:
    k1 = KeyPlan(sdk.provider, "k1")
    rig = make_rig(k1)
    async with opened(sdk, rig.multiplexer()) as mux:
        sdk.build(mux)
        await sdk.chat()
        await sdk.stream()
    header, prefix = SLOT[sdk.provider]
    assert len(sent_by_keymux) == 2
    for req in sent_by_keymux:
        assert req.url.startswith(rig.server.base_url(sdk.provider))  # the lane's base_url
        headers = {k.lower(): v for k, v in req.headers.items()}
        assert headers[header] == prefix + k1.secret
        assert PLACEHOLDER not in " ".join(headers.values())
        assert "key=" not in req.url
    assert rig.server.stats()["total"]["unknown_key"] == 0
    assert rig.emu_stats(k1)["requests"] == 2


# --- failover the SDK does not see ------------------------------------------------------------


async def test_a_429_moves_to_another_key_without_the_sdk_retrying(
    make_rig: MakeRig, sdk: Sdk, sent_by_keymux: list[HttpRequest]
) -> None:
    k1, k2 = KeyPlan(sdk.provider, "k1", rpm=1), KeyPlan(sdk.provider, "k2")
    rig = make_rig(k1, k2)
    await spend(rig, k1)
    sent_by_keymux.clear()
    async with opened(sdk, rig.multiplexer()) as mux:
        sdk.build(mux, key_name=None)  # the SDK's own default max_retries
        reply = await sdk.chat()
        s = stats(mux, sdk.provider)
    assert reply.text == reply_for(sdk.provider)
    assert reply.key_name == "k2"
    assert reply.attempts == 2
    assert sdk.sent == 1  # one request from the SDK; keymux made two attempts
    assert rig.emu_stats(k1)["errors"] == {"429": 1}
    assert rig.emu_stats(k2)["requests"] == 1
    assert s["k1"]["rate_limited"] == 1
    assert s["k1"]["status"] == "cooling"
    if sdk.provider in STAINLESS:  # both of keymux's attempts carry the SDK's first attempt
        counts = [r.headers.get("x-stainless-retry-count") for r in sent_by_keymux]
        assert counts == ["0", "0"]


async def test_a_revoked_key_is_disabled_after_one_request(make_rig: MakeRig, sdk: Sdk) -> None:
    k1, k2 = KeyPlan(sdk.provider, "k1", faults=Faults(revoked=True)), KeyPlan(sdk.provider, "k2")
    rig = make_rig(k1, k2)
    async with opened(sdk, rig.multiplexer()) as mux:
        sdk.build(mux)
        replies = [await sdk.chat() for _ in range(3)]
        s = stats(mux, sdk.provider)
    assert [r.key_name for r in replies] == ["k2"] * 3
    assert sorted(r.attempts for r in replies) == [1, 1, 2]
    assert s["k1"]["status"] == "disabled"
    assert rig.emu_stats(k1)["requests"] == 1
    assert sdk.sent == 3


def _auth_error(sdk: Sdk) -> type[BaseException]:
    if sdk.provider == "gemini":
        return sdk.family.genai.errors.ClientError  # type: ignore[no-any-return]
    return sdk.family.module.AuthenticationError  # type: ignore[no-any-return]


def _message(provider: str, body: str) -> str:
    """The message of a provider-shaped error body, checking its shape."""
    data = json.loads(body)
    if provider == "claude":
        assert data["type"] == "error"
        assert set(data["error"]) >= {"type", "message"}
    elif provider == "gemini":
        assert set(data["error"]) >= {"code", "message", "status"}
    else:
        assert set(data["error"]) >= {"message", "type"}
    return str(data["error"]["message"])


async def test_a_final_failure_makes_the_sdk_raise_at_once(make_rig: MakeRig, sdk: Sdk) -> None:
    revoked = Faults(revoked=True)
    rig = make_rig(
        KeyPlan(sdk.provider, "k1", faults=revoked), KeyPlan(sdk.provider, "k2", faults=revoked)
    )
    async with opened(sdk, rig.multiplexer()) as mux:
        sdk.build(mux)  # the SDK's own retries are on: x-should-retry keeps them from firing
        first = await sdk.error()
        assert sdk.sent == 1
        # no key left: keymux's own answer, in the provider's shape, naming the key names
        second = await sdk.error()
        assert sdk.sent == 2
    assert isinstance(first.exc, _auth_error(sdk))
    assert first.status == (400 if sdk.provider == "gemini" else 401)
    assert first.headers["x-should-retry"] == "false"
    assert first.headers["x-keymux-attempts"] == "2"
    assert first.key_name in ("k1", "k2")
    assert second.status == 503
    assert second.headers["x-should-retry"] == "false"
    message = _message(sdk.provider, second.body)
    assert "k1" in message
    assert "k2" in message
    assert "invalid key" in message
    for k in rig.keys:
        assert k.secret not in second.body
    assert rig.server.stats()["total"]["requests"] == 2


async def test_a_full_queue_is_a_provider_shaped_429_naming_the_key(
    make_rig: MakeRig, sdk: Sdk
) -> None:
    rig = make_rig(KeyPlan(sdk.provider, "k1"))
    async with opened(sdk, rig.multiplexer(max_concurrent_requests=1, queue_size=0)) as mux:
        sdk.build(mux)
        held = mux.get_client(sdk.provider).stream("chat", messages=HELLO)
        await asyncio.to_thread(next, held)  # keymux's own stream holds k1's only slot
        assert stats(mux, sdk.provider)["k1"]["current_requests"] == 1
        refused = await sdk.error()
        await asyncio.to_thread(held.close)  # type: ignore[attr-defined]
        after = stats(mux, sdk.provider)["k1"]
    assert refused.status == 429
    assert refused.headers["x-should-retry"] == "false"
    assert "k1" in _message(sdk.provider, refused.body)
    assert sdk.sent == 1  # the refused call, once: no SDK retry
    assert after["current_requests"] == 0
    assert rig.server.stats()["total"]["requests"] == 1


class _Holder:
    """An SDK stream opened and read up to its first delta."""

    def __init__(self, sdk: Sdk, stream: Any, rest: Iterator[Any] | Any) -> None:
        self.sdk = sdk
        self.stream = stream
        self.rest = rest

    async def close(self) -> None:
        if self.sdk.provider == "gemini":  # a generator: closing it drops the response
            if self.sdk.is_async:
                await self.rest.aclose()
            else:
                await asyncio.to_thread(self.rest.close)
        elif self.sdk.is_async:
            await self.stream.close()
        else:
            await asyncio.to_thread(self.stream.close)


async def _open_stream(sdk: Sdk, client: Any) -> _Holder:
    from sdk_helpers import MODELS

    family, model = sdk.family, MODELS[sdk.provider]
    if sdk.is_async:
        stream = await family.aopen_stream(client, model, HELLO, None)
        rest = stream.__aiter__()
        while family.delta(await rest.__anext__()) is None:
            pass
        return _Holder(sdk, stream, rest)

    def start() -> _Holder:
        stream = family.open_stream(client, model, HELLO, None)
        rest = iter(stream)
        while family.delta(next(rest)) is None:
            pass
        return _Holder(sdk, stream, rest)

    return await asyncio.to_thread(start)


@pytest.mark.parametrize("provider", STAINLESS)
@pytest.mark.parametrize("mode", MODES)
async def test_closing_a_stream_early_frees_the_slot_at_once(
    make_rig: MakeRig, provider: str, mode: str
) -> None:
    sdk = Sdk(provider, mode)
    # a chunk every 50 ms (real time): the SDK closes long before the stream could end
    rig = make_rig(KeyPlan(provider, "k1"), clock=SystemClock(), stream_chunk_delay=0.05)
    async with opened(sdk, rig.multiplexer()) as mux:
        holder = await _open_stream(sdk, sdk.build(mux))
        during = stats(mux, provider)["k1"]["current_requests"]
        await holder.close()  # the SDK's Stream.close() closes the response
        after = stats(mux, provider)["k1"]
        await sdk.close()
    assert during == 1
    assert after["current_requests"] == 0
    assert after["successes"] == 0  # abandoned, not answered
    assert rig.server.stats()["total"]["streams"] == 1


async def test_closing_the_multiplexer_releases_a_stream_the_sdk_left_open(
    make_rig: MakeRig,
) -> None:
    """The groq SDK raises on an error event without closing its response: the answer stays
    open until the multiplexer closes, which releases it (no connection is left for the
    garbage collector to warn about, whenever it runs)."""
    groq = pytest.importorskip("groq")
    plan = KeyPlan("groq", "k1", faults=Faults(stream_error_after=2))
    rig = make_rig(plan, clock=SystemClock(), stream_chunk_delay=0.02)
    mux = rig.multiplexer()
    engine = mux._core.engine
    client = groq.AsyncGroq(
        api_key=PLACEHOLDER, http_client=mux.async_http_client("groq"), max_retries=0
    )
    try:
        stream = await client.chat.completions.create(
            model="llama-3.1-8b-instant", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(groq.APIError):
            async for _ in stream:
                pass
        left_open = set(engine.unclosed)
        connector = engine.session.connector
    finally:
        await client.close()
        await mux.aclose()
    assert len(left_open) == 1  # what the SDK did not close
    assert not engine.unclosed
    assert not connector._acquired  # type: ignore[attr-defined]  # released, not leaked


async def test_plain_answers_keep_the_concurrency_limit(make_rig: MakeRig, sdk: Sdk) -> None:
    """Many SDK calls leave the key's in-flight count at zero, never below, and the emulator
    never sees more requests at once than the key's limit."""
    rig = make_rig(KeyPlan(sdk.provider, "k1"))
    async with opened(sdk, rig.multiplexer(max_concurrent_requests=2)) as mux:
        sdk.build(mux)
        await asyncio.gather(*(sdk.chat() for _ in range(6)))
        s = stats(mux, sdk.provider)["k1"]
        lane = mux._core.dispatch.providers[sdk.provider].lanes["k1"]
        budgets_in_flight = [budget.in_flight for _, budget in lane.book.items()]
    assert s["successes"] == 6
    assert s["current_requests"] == 0
    assert budgets_in_flight == [0]
    assert rig.emu_stats(rig.key("k1"))["requests"] == 6


# --- secrets ---------------------------------------------------------------------------------

CANARY = "CANARY-7d41c0de-secret-0123456789abcdef"


def canary_key(provider: str, name: str, **faults: Any) -> KeyPlan:
    plan = KeyPlan(provider, name, faults=Faults(**faults))
    return _Canary(plan.provider, plan.name, faults=plan.faults)


class _Canary(KeyPlan):
    @property
    def secret(self) -> str:
        return f"{self.provider}-{self.name}-{CANARY}"


def _texts(failure: Failure) -> list[str]:
    texts = [failure.body, json.dumps(dict(failure.headers))]
    for e in chain(failure.exc):
        texts += [str(e), repr(e), repr(e.args), repr(getattr(e, "body", None))]
        texts += [repr(getattr(e, "details", None)), repr(vars(e))]
    return texts


async def test_no_secret_in_any_sdk_exception_or_log_line(
    make_rig: MakeRig, sdk: Sdk, caplog: pytest.LogCaptureFixture
) -> None:
    p = sdk.provider
    keys = [
        canary_key(p, "revoked", revoked=True),
        canary_key(p, "broken", server_error_rate=1.0),
        canary_key(p, "hanging", hang=True),
        canary_key(p, "reset", reset_connection=True),
        canary_key(p, "cut", stream_cut_after=2),
        canary_key(p, "quota", quota_spent=True),
    ]
    rig = make_rig(*keys)
    failures: list[Failure] = []
    caplog.set_level(logging.DEBUG)
    async with opened(
        sdk, rig.multiplexer(max_retries=1, max_concurrent_requests=1, queue_size=0)
    ) as mux:
        for name in ("revoked", "broken", "reset", "quota"):
            sdk.build(mux, key_name=name, max_retries=0)
            failures.append(await sdk.error())
        sdk.build(mux, key_name="hanging", max_retries=0)
        failures.append(await sdk.error(timeout=0.2))
        sdk.build(mux, key_name="cut", max_retries=0)
        failures.append(await sdk.error("stream"))
        sdk.build(mux, key_name="revoked", max_retries=0)  # disabled: keymux's own answer
        failures.append(await sdk.error())
        blobs = [json.dumps(mux.get_usage_stats()), repr(mux), repr(sdk.http), repr(sdk.client)]
    kinds = [type(f.exc).__name__ for f in failures]
    assert all(f.keymux is not None or f.status for f in failures), kinds
    assert sum(f.status is None for f in failures) == 3, kinds  # timeout, reset, cut
    texts = [t for f in failures for t in _texts(f)] + blobs
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    for k in keys:
        assert all(k.secret not in t for t in texts), k.name
    assert all(CANARY not in t for t in texts)


# --- clients and their configuration ---------------------------------------------------------


def test_each_provider_gets_its_sdks_library_by_default() -> None:
    mux = Multiplexer()
    try:
        for provider, cls in [
            ("openai", httpx2.Client),
            ("claude", httpx2.Client),
            ("anthropic", httpx2.Client),
            ("gemini", httpx2.Client),
            ("groq", httpx.Client),
        ]:
            assert type(mux.http_client(provider)) is cls, provider
        assert type(mux.async_http_client("openai")) is httpx2.AsyncClient
        assert type(mux.async_http_client("groq")) is httpx.AsyncClient
        assert type(mux.http_client("openai", library="httpx")) is httpx.Client
        assert type(mux.async_http_client("groq", library="httpx2")) is httpx2.AsyncClient
        transport = mux.http_client("groq")._transport
        assert isinstance(transport, httpx.BaseTransport)
        assert "groq" in repr(transport)
    finally:
        mux.close()


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda m: m.http_client("mistral"), "unknown provider"),
        (lambda m: m.async_http_client("openai", key_name="nope"), "no key named 'nope'"),
        (lambda m: m.http_client("openai", strategy="fastest"), "unknown strategy"),
        (lambda m: m.http_client("openai", strategy="specific"), "needs key_name"),
        (lambda m: m.http_client("openai", library="requests"), "unknown HTTP library"),
    ],
)
def test_configuration_mistakes_fail_at_once(call: Any, words: str) -> None:
    mux = Multiplexer()
    mux.add_openai_key("k1", "sk-test-config-0123456789abcdef")
    try:
        with pytest.raises(ConfigError, match=words):
            call(mux)
    finally:
        mux.close()


def test_a_missing_library_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx2", None)  # import httpx2 -> ImportError
    _transport._flavour.cache_clear()
    mux = Multiplexer()
    try:
        with pytest.raises(ConfigError, match=r"pip install 'keymux\[sdk\]'"):
            mux.http_client("openai")
        assert type(mux.http_client("groq")) is httpx.Client  # the other library still works
    finally:
        mux.close()
        _transport._flavour.cache_clear()


@pytest.mark.parametrize("provider", ["openai", "gemini"])
async def test_either_library_serves_any_provider(make_rig: MakeRig, provider: str) -> None:
    """The same transports on httpx as on httpx2 (one implementation, two libraries)."""
    rig = make_rig(KeyPlan(provider, "k1"))
    body = {
        "openai": {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]},
        "gemini": {"contents": [{"parts": [{"text": "Hello"}]}]},
    }[provider]
    path = {
        "openai": "https://api.openai.com/v1/chat/completions",
        "gemini": "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent?key=keymux",
    }[provider]
    headers = {"Authorization": "Bearer keymux"} if provider == "openai" else {}
    mux = rig.multiplexer()
    async with mux, mux.async_http_client(provider, library="httpx") as client:
        resp = await client.post(path, json=body, headers=headers)
    assert resp.status_code == 200
    assert resp.headers["x-keymux-key"] == "k1"
    assert reply_for(provider) in resp.text
    assert rig.server.requests[-1].query == ""  # key= moved out of the URL


def test_sync_sdk_clients_from_many_threads(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai = pytest.importorskip("openai")
    rig = make_rig(KeyPlan("openai", "k1"), KeyPlan("openai", "k2"))
    errors: list[BaseException] = []
    keys: list[str] = []
    with rig.multiplexer() as mux:
        client = openai.OpenAI(api_key=PLACEHOLDER, http_client=mux.http_client("openai"))

        def work() -> None:
            for _ in range(4):
                try:
                    raw = client.chat.completions.with_raw_response.create(
                        model="gpt-4o", messages=[{"role": "user", "content": "Hello"}]
                    )
                    keys.append(raw.headers["x-keymux-key"])
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        loop_thread = mux._runtime._thread
        s = mux.get_usage_stats()["openai"]
    assert not errors
    assert sorted(set(keys)) == ["k1", "k2"]
    assert len(keys) == 20
    assert loop_thread is not None  # the sync client ran on keymux's own loop thread
    assert all(v["current_requests"] == 0 for v in s.values())


async def test_an_async_client_runs_on_the_callers_loop(make_rig: MakeRig) -> None:
    openai = pytest.importorskip("openai")
    rig = make_rig(KeyPlan("openai", "k1"))
    mux = rig.multiplexer()
    client = openai.AsyncOpenAI(api_key=PLACEHOLDER, http_client=mux.async_http_client("openai"))
    await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
    )
    assert mux._runtime.loop is asyncio.get_running_loop()
    assert mux._runtime._thread is None
    await client.close()
    await mux.aclose()


# --- the pure parts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extension", "expected"),
    [
        (None, None),  # google-genai's default: the multiplexer's own timeout
        ({}, None),
        ({"connect": None, "read": None, "write": None, "pool": None}, None),
        (
            {"connect": 5.0, "read": 600.0, "write": 600.0, "pool": 600.0},
            Timeout(total=None, connect=5.0, read=600.0),
        ),
        ({"connect": 0.25, "read": 0.25}, Timeout(total=None, connect=0.25, read=0.25)),
        ({"connect": 5.0, "read": None}, Timeout(total=None, connect=5.0, read=None)),
        ({"connect": 0, "read": -1, "write": 3}, None),  # not positive: ignored
        ({"connect": True, "read": float("inf")}, None),
    ],
)
def test_the_sdks_timeout_becomes_the_attempts_timeout(
    extension: Any, expected: Timeout | None
) -> None:
    assert attempt_timeout(extension) == expected


def test_keymux_answers_with_the_status_of_its_error() -> None:
    import keymux

    table = {
        keymux.QueueFullError: 429,
        keymux.RateLimitedError: 429,
        keymux.QuotaExhaustedError: 429,
        keymux.AuthenticationError: 401,
        keymux.BadRequestError: 400,
        keymux.NoKeyAvailableError: 503,
        keymux.ClosedError: 503,
        keymux.ProviderServerError: 503,
        keymux.KeymuxError: 503,
    }
    for cls, status in table.items():
        assert refusal_status(cls("x", provider="openai")) == status, cls


def test_failure_of_flattens_an_sdk_exception() -> None:
    try:
        try:
            raise ConfigError("inner", provider="openai", key_name="k1")
        except ConfigError as exc:
            raise RuntimeError("outer") from exc
    except RuntimeError as exc:
        failure = failure_of(exc)
    assert failure.status is None
    assert failure.key_name == "k1"


def test_an_echoed_key_is_masked_in_the_answers_headers() -> None:
    from keymux._core import Head
    from keymux._secret import Secret
    from keymux.transports._answer import answer_of

    secret = Secret("sk-test-echoed-0123456789abcdef")
    head = Head(
        401,
        {
            "Content-Type": "application/json",
            "x-echo": f"Bearer {secret.reveal()}",
            "x-should-retry": "true",
            "Content-Length": "12",
        },
        "k1",
        2,
        error=ConfigError("refused", provider="openai", key_name="k1"),
    )
    answer = answer_of(head, b"{}", secret)
    headers = dict(answer.headers)
    assert headers["x-echo"] == f"Bearer {secret.masked}"
    assert headers["x-should-retry"] == "false"  # keymux's own, not the upstream's
    assert headers["x-keymux-key"] == "k1"
    assert headers["x-keymux-attempts"] == "2"
    assert "Content-Length" not in headers  # the library frames the body itself
    assert secret.reveal() not in json.dumps(answer.headers)


@pytest.mark.parametrize("mode", MODES)
async def test_a_closed_multiplexer_answers_503_and_the_sdk_does_not_retry(
    make_rig: MakeRig, mode: str
) -> None:
    sdk = Sdk("openai", mode)
    rig = make_rig(KeyPlan("openai", "k1"))
    async with opened(sdk, rig.multiplexer()) as mux:
        sdk.build(mux)
    refused = await sdk.error()
    assert refused.status == 503
    assert refused.headers["x-should-retry"] == "false"
    message = _message("openai", refused.body)
    assert "closed" in message
    assert "k1" in message
    assert sdk.sent == 1
    assert rig.server.requests == []
