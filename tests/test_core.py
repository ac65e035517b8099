"""The asyncio core through the public Multiplexer, on a FakeClock with a ScriptedEngine.

Time only moves when a test advances the clock, so "no sleeping" is checked exactly: a request
that must not wait finishes while ``clock.now()`` stays where it was.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from fakes import (
    ScriptedEngine,
    Sent,
    error,
    ok,
    quota_spent,
    rate_limited,
    ratelimit_headers,
    server_error,
    transport_failure,
)
from keymux import (
    AuthenticationError,
    BadRequestError,
    ClosedError,
    ConfigError,
    ConnectionError,
    KeymuxError,
    MalformedResponseError,
    Multiplexer,
    NoKeyAvailableError,
    ProviderServerError,
    QueueFullError,
    QuotaExhaustedError,
    RateLimitedError,
    RequestTimeoutError,
    Response,
    SystemClock,
)
from keymux._client import ProviderClient
from keymux.testing import FakeClock

HI = [{"role": "user", "content": "Say hi"}]
T0 = 1000.0  # FakeClock's start


def secret(name: str) -> str:
    return f"sk-test-{name}-0123456789abcdef"


@dataclass
class Rig:
    """A multiplexer on a fake clock with a scripted engine, and handy views of both."""

    mux: Multiplexer
    clock: FakeClock
    engine: ScriptedEngine
    names: dict[str, str] = field(default_factory=dict)  # secret -> key name
    spawned: list[asyncio.Task[Response]] = field(default_factory=list)

    def client(self, key_name: str | None = None, strategy: str = "round-robin") -> ProviderClient:
        return self.mux.get_openai_client(key_name=key_name, strategy=strategy)

    def spawn(self, n: int = 1, **kw: Any) -> list[asyncio.Task[Response]]:
        client = kw.pop("client", None) or self.client()
        tasks = [asyncio.create_task(client.acall("chat", messages=HI, **kw)) for _ in range(n)]
        self.spawned.extend(tasks)
        return tasks

    def stats(self) -> dict[str, dict[str, Any]]:
        return self.mux.get_usage_stats()["openai"]

    def used(self) -> list[str]:
        """Key names of the chat requests sent, in order."""
        return [self.names[s.key or ""] for s in self.engine.calls()]

    def calls(self, name: str) -> list[Sent]:
        return self.engine.calls(secret(name))

    def max_in_flight(self, name: str) -> int:
        return self.engine.max_in_flight[secret(name)]

    async def run_until_done(
        self, tasks: Iterable[asyncio.Future[Any]], step: float = 1.0, limit: int = 1000
    ) -> None:
        """Advance the clock ``step`` at a time until every task is done."""
        pending = list(tasks)
        await self.clock.advance(0)
        for _ in range(limit):
            if all(t.done() for t in pending):
                return
            await self.clock.advance(step)
        raise AssertionError("the tasks did not finish")


async def make_rig(
    keys: Iterable[str] = ("a", "b"),
    *,
    latency: float | dict[str, float] = 0.0,
    key_options: dict[str, dict[str, Any]] | None = None,
    slow_start: bool = False,
    **mux_options: Any,
) -> Rig:
    clock = FakeClock()
    options: dict[str, Any] = {
        "max_concurrent_requests": 2,
        "queue_size": 3,
        "max_retries": 3,
        "close_grace": 0.0,
        "seed": 0,
    }
    options.update(mux_options)
    mux = Multiplexer(clock=clock, **options)
    names = {}
    for name in keys:
        mux.add_openai_key(name, secret(name), **(key_options or {}).get(name, {}))
        names[secret(name)] = name
    if not slow_start:
        for lane in mux._core.dispatch.lanes():  # as if each key had answered once already
            lane.answered, lane.cap = True, lane.max_concurrent
    if isinstance(latency, dict):
        latency = {secret(k): v for k, v in latency.items()}
    engine = ScriptedEngine(clock, latency=latency)
    mux._core.engine = engine  # type: ignore[assignment]
    return Rig(mux, clock, engine, names)


@pytest.fixture
async def rig_factory() -> AsyncIterator[Any]:
    rigs: list[Rig] = []

    async def factory(*args: Any, **kwargs: Any) -> Rig:
        rig = await make_rig(*args, **kwargs)
        rigs.append(rig)
        return rig

    yield factory
    for rig in rigs:
        await rig.mux.aclose()
        # collect every outcome, so no "exception was never retrieved" is logged later (from a
        # garbage collection in the middle of some other test's report)
        await asyncio.gather(*rig.spawned, return_exceptions=True)


async def outcome(aw: Awaitable[Response]) -> Response | BaseException:
    try:
        return await aw
    except KeymuxError as exc:
        return exc


# --- spreading and bounds ---------------------------------------------------------------------


async def test_round_robin_spreads_sequential_requests(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b", "c"))
    client = rig.client()
    for _ in range(6):
        resp = await client.acall("chat", messages=HI)
        assert resp.text == "hello"
        await rig.clock.advance(1)
    assert rig.used() == ["a", "b", "c", "a", "b", "c"]
    assert {name: s["successes"] for name, s in rig.stats().items()} == {"a": 2, "b": 2, "c": 2}


async def test_response_fields(rig_factory: Any) -> None:
    rig = await rig_factory(("a",), latency=0.25)
    task = rig.spawn()[0]
    await rig.run_until_done([task], step=0.25)
    resp = task.result()
    assert (resp.text, resp.provider, resp.key_name, resp.model) == (
        "hello",
        "openai",
        "a",
        "gpt-4o-mini",
    )
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.attempts) == (3, 2, 1)
    assert resp.latency_s == pytest.approx(0.25)
    assert resp["text"] == "hello"
    assert resp.raw["choices"][0]["message"]["content"] == "hello"
    sent = rig.engine.calls()[0]
    assert sent.url == "https://api.openai.com/v1/chat/completions"
    assert sent.body["messages"] == HI


async def test_concurrency_and_queue_bounds_under_a_burst(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"), latency=1.0, max_concurrent_requests=2, queue_size=3)
    tasks = rig.spawn(10)  # 2 keys x (2 in flight + 3 waiting)
    await rig.clock.advance(0)
    stats = rig.stats()
    assert [(s["current_requests"], s["queue_size"]) for s in stats.values()] == [(2, 3), (2, 3)]
    assert rig.engine.total_in_flight() == 4
    # one more: every queue is full, refused at once
    with pytest.raises(QueueFullError) as info:
        await rig.client().acall("chat", messages=HI)
    assert "openai" in str(info.value)
    for _ in range(5):
        await rig.clock.advance(1.0)
        for s in rig.stats().values():
            assert s["current_requests"] <= 2
            assert s["queue_size"] <= 3
    results = await asyncio.gather(*tasks)
    assert all(r.text == "hello" for r in results)
    assert rig.max_in_flight("a") == rig.max_in_flight("b") == 2
    # 10 requests, 4 at a time, 1 s each: the last ones start at +2
    assert sorted({s.started for s in rig.engine.calls()}) == [T0, T0 + 1, T0 + 2]
    assert all(s["queue_size"] == s["current_requests"] == 0 for s in rig.stats().values())


async def test_per_key_max_concurrent_overrides_the_default(rig_factory: Any) -> None:
    rig = await rig_factory(
        ("a", "b"),
        latency=1.0,
        key_options={"a": {"max_concurrent": 1}},
        max_concurrent_requests=4,
        queue_size=10,
    )
    tasks = rig.spawn(9)
    await rig.run_until_done(tasks)
    assert rig.max_in_flight("a") == 1
    assert rig.max_in_flight("b") == 4
    assert rig.stats()["a"]["max_concurrent"] == 1


async def test_queue_full_when_every_queue_is_full_with_zero_queue(rig_factory: Any) -> None:
    rig = await rig_factory(("a",), latency=1.0, max_concurrent_requests=1, queue_size=0)
    first = rig.spawn()
    await rig.clock.advance(0)
    with pytest.raises(QueueFullError):
        await rig.client().acall("chat", messages=HI)
    await rig.run_until_done(first)
    assert first[0].result().key_name == "a"


async def test_pinned_queue_full(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"), latency=1.0, max_concurrent_requests=1, queue_size=1)
    pinned = rig.client("a")
    tasks = rig.spawn(2, client=pinned)
    await rig.clock.advance(0)
    with pytest.raises(QueueFullError) as info:
        await pinned.acall("chat", messages=HI)
    assert "'a'" in str(info.value)
    assert info.value.key_name == "a"
    # an unpinned request still goes to the free key
    free = rig.spawn()
    await rig.run_until_done([*tasks, *free])
    assert free[0].result().key_name == "b"
    assert [t.result().key_name for t in tasks] == ["a", "a"]


# --- work stealing and pinning ----------------------------------------------------------------


def _assert_work_conserving(rig: Rig) -> None:
    """No key that could send idles while unpinned work waits."""
    stats = rig.stats()
    waiting = sum(s["queue_size"] for s in stats.values())
    if waiting:
        for name, s in stats.items():
            if s["status"] == "active":
                assert s["current_requests"] == s["max_concurrent"], (name, stats)


async def test_work_stealing_from_a_slow_key(rig_factory: Any) -> None:
    rig = await rig_factory(
        ("a", "b"), latency={"a": 10.0, "b": 1.0}, max_concurrent_requests=1, queue_size=5
    )
    tasks = rig.spawn(6)
    await rig.clock.advance(0)
    stats = rig.stats()
    assert stats["a"]["queue_size"] > 0  # some of the work waits behind the slow key
    assert stats["a"]["queue_size"] + stats["b"]["queue_size"] == 4
    for _ in range(5):
        _assert_work_conserving(rig)
        await rig.clock.advance(1.0)
    # after 5 s the fast key served everything but the request the slow key still holds
    assert sum(t.done() for t in tasks) == 5
    assert rig.used().count("b") == 5
    assert rig.stats()["a"]["queue_size"] == 0
    await rig.run_until_done(tasks)
    assert [t.result().key_name for t in tasks].count("a") == 1


async def test_waiting_work_leaves_a_cooling_key(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"), latency=1.0, max_concurrent_requests=1, queue_size=5)
    rig.engine.script(secret("a"), *[rate_limited(30.0)] * 5)
    tasks = rig.spawn(5)
    await rig.clock.advance(0)
    for _ in range(6):
        _assert_work_conserving(rig)
        await rig.clock.advance(1.0)
    assert all(t.done() for t in tasks)
    assert rig.clock.now() < T0 + 30  # nobody waited for the cooldown
    assert {t.result().key_name for t in tasks} == {"b"}
    assert rig.stats()["a"]["status"] == "cooling"
    assert rig.stats()["a"]["queue_size"] == 0


async def test_a_rate_limited_key_gets_nothing_until_its_cooldown_ends(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"), latency=1.0, max_concurrent_requests=1, queue_size=5)
    rig.engine.script(secret("a"), *[rate_limited(30.0)] * 5)
    tasks = rig.spawn(5)
    await rig.run_until_done(tasks)
    # the 429 came at +1 with retry-after 30: nothing more before +31
    assert [s.started for s in rig.calls("a")] == [T0]
    assert rig.stats()["a"]["rate_limited"] == 1


async def test_an_idle_key_takes_waiting_work_when_its_cooldown_ends(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"), latency={"a": 100.0, "b": 0.0}, max_concurrent_requests=1)
    rig.engine.script(secret("b"), rate_limited(2.0))
    slow = rig.spawn()  # a: 100 s
    await rig.clock.advance(0)
    retried = rig.spawn()  # b: 429, cools 2 s; the retry waits (a is busy)
    await rig.clock.advance(0)
    assert not retried[0].done()
    await rig.clock.advance(2.0)
    assert retried[0].done()
    assert retried[0].result().key_name == "b"
    assert retried[0].result().attempts == 2
    assert [s.started for s in rig.calls("b")] == [T0, T0 + 2]
    await rig.run_until_done(slow, step=10)


async def test_pinned_requests_stay_on_their_key(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"), latency=1.0, max_concurrent_requests=1, queue_size=5)
    tasks = rig.spawn(4, client=rig.client("a"))
    await rig.clock.advance(0)
    assert rig.stats()["b"]["current_requests"] == 0  # free, and still not used
    await rig.run_until_done(tasks)
    assert rig.used() == ["a"] * 4
    assert [s.started for s in rig.calls("a")] == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert rig.max_in_flight("a") == 1


async def test_pinned_and_unpinned_share_a_key_fairly(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"), latency=1.0, max_concurrent_requests=1, queue_size=5)
    pinned = rig.spawn(3, client=rig.client("b"))
    free = rig.spawn(3)
    await rig.run_until_done([*pinned, *free])
    assert [t.result().key_name for t in pinned] == ["b", "b", "b"]
    # unpinned work never waits behind b's pinned queue while a is free
    assert [t.result().key_name for t in free] == ["a", "a", "a"]
    assert max(s.started for s in rig.engine.calls()) == T0 + 2


# --- rate limits ------------------------------------------------------------------------------


async def test_429_cools_the_key_and_the_request_moves_on_at_once(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), rate_limited(20.0))
    resp = await rig.client().acall("chat", messages=HI)
    assert (resp.key_name, resp.attempts) == ("b", 2)
    assert rig.clock.now() == T0  # no sleeping
    stats = rig.stats()
    assert stats["a"]["status"] == "cooling"
    assert stats["a"]["rate_limited"] == 1
    assert stats["a"]["cooldown_s"] == 20.0
    assert stats["a"]["failures"] == 0
    assert stats["b"]["retries"] == 1
    # while a cools, everything goes to b
    for _ in range(3):
        await rig.clock.advance(1.0)
        assert (await rig.client().acall("chat", messages=HI)).key_name == "b"
    await rig.clock.advance(17.0)
    assert rig.stats()["a"]["status"] == "active"
    assert (await rig.client().acall("chat", messages=HI)).key_name == "a"


async def test_429_retry_after_is_honoured_exactly_for_a_pinned_request(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), rate_limited(2.5))
    task = rig.spawn(client=rig.client("a"))[0]
    await rig.clock.advance(0)
    assert len(rig.calls("a")) == 1
    await rig.clock.advance(2.499)
    assert len(rig.calls("a")) == 1
    assert not task.done()
    await rig.clock.advance(0.001)
    assert task.done()
    assert [s.started for s in rig.calls("a")] == [T0, T0 + 2.5]
    assert task.result().attempts == 2
    assert rig.calls("b") == []


async def test_429_reset_from_learned_headers_is_honoured(rig_factory: Any) -> None:
    rig = await rig_factory(("a",))
    limits = ratelimit_headers(limit_requests=3, remaining_requests=0, reset_requests="4s")
    rig.engine.script(
        secret("a"), error(429, "Rate limit reached", type="requests", headers=limits)
    )
    task = rig.spawn()[0]
    await rig.clock.advance(3.999)
    assert not task.done()
    await rig.clock.advance(0.001)
    assert task.done()
    assert [s.started for s in rig.calls("a")] == [T0, T0 + 4]


async def test_all_keys_cooling_waits_for_the_earliest(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), rate_limited(5.0))
    rig.engine.script(secret("b"), rate_limited(3.0))
    task = rig.spawn()[0]
    await rig.clock.advance(0)
    assert [s.status for s in rig.engine.calls()] == [429, 429]
    statuses = {name: s["status"] for name, s in rig.stats().items()}
    assert statuses == {"a": "cooling", "b": "cooling"}
    await rig.clock.advance(2.999)
    assert not task.done()
    await rig.clock.advance(0.001)
    assert task.done()
    resp = task.result()
    assert (resp.key_name, resp.attempts) == ("b", 3)
    assert rig.engine.calls()[-1].started == T0 + 3


async def test_retries_exhausted_raise_rate_limited_error(rig_factory: Any) -> None:
    rig = await rig_factory(("a",), max_retries=2)
    rig.engine.default = rate_limited(1.0)
    task = rig.spawn()[0]
    await rig.run_until_done([task])
    exc = task.exception()
    assert isinstance(exc, RateLimitedError)
    assert "openai" in str(exc)
    assert "'a'" in str(exc)
    assert (exc.provider, exc.key_name, exc.status, exc.attempts) == ("openai", "a", 429, 3)
    assert len(rig.calls("a")) == 3
    assert rig.stats()["a"]["rate_limited"] == 3


async def test_group_cooldown_skips_the_other_key_of_the_group(rig_factory: Any) -> None:
    rig = await rig_factory(
        ("a", "b", "c"), key_options={"a": {"group": "proj"}, "b": {"group": "proj"}}
    )
    rig.engine.script(secret("a"), rate_limited(10.0))
    resp = await rig.client().acall("chat", messages=HI)
    assert resp.key_name == "c"
    assert rig.used() == ["a", "c"]  # b shares a's quota: not tried in vain
    assert {n: s["status"] for n, s in rig.stats().items()} == {
        "a": "cooling",
        "b": "cooling",
        "c": "active",
    }


async def test_configured_rpm_paces_requests(rig_factory: Any) -> None:
    rig = await rig_factory(
        ("a",), key_options={"a": {"rpm": 60}}, max_concurrent_requests=5, queue_size=10
    )
    tasks = rig.spawn(5)
    await rig.run_until_done(tasks, step=0.25)
    assert all(t.result().key_name == "a" for t in tasks)
    assert [s.started for s in rig.calls("a")] == [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4]


async def test_rpm_pacing_over_two_keys(rig_factory: Any) -> None:
    rig = await rig_factory(
        ("a", "b"),
        key_options={"a": {"rpm": 60}, "b": {"rpm": 60}},
        max_concurrent_requests=5,
        queue_size=10,
    )
    tasks = rig.spawn(6)
    await rig.run_until_done(tasks, step=0.5)
    assert all(isinstance(t.result(), Response) for t in tasks)
    for name in ("a", "b"):
        assert [s.started for s in rig.calls(name)] == [T0, T0 + 1, T0 + 2]


async def test_learned_limits_pace_requests(rig_factory: Any) -> None:
    rig = await rig_factory(("a",), max_concurrent_requests=5, queue_size=10)
    limits = ratelimit_headers(limit_requests=10, remaining_requests=1, reset_requests="6s")
    rig.engine.script(secret("a"), ok(headers=limits))
    first = await rig.client().acall("chat", messages=HI)
    assert first.key_name == "a"
    tasks = rig.spawn(3)
    await rig.clock.advance(0)
    assert len(rig.calls("a")) == 2  # one left in the window, then wait for its reset
    await rig.clock.advance(5.999)
    assert len(rig.calls("a")) == 2
    await rig.run_until_done(tasks, step=0.001)
    assert [s.started for s in rig.calls("a")] == [T0, T0, T0 + 6, T0 + 6]
    assert rig.stats()["a"]["rate_limited"] == 0


# --- keys leaving the pool --------------------------------------------------------------------


def invalid_key(key: str = "sk-test-a-0123456789abcdef") -> tuple[int, dict[str, str], bytes]:
    status, headers, body = error(
        401,
        f"Incorrect API key provided: {key}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        type="invalid_request_error",
        code="invalid_api_key",
    )
    return status, dict(headers), body


async def test_401_disables_the_key_and_the_work_moves_on(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), invalid_key())
    resp = await rig.client().acall("chat", messages=HI)
    assert (resp.key_name, resp.attempts) == ("b", 2)
    stats = rig.stats()
    assert stats["a"]["status"] == "disabled"
    assert "invalid key" in stats["a"]["disabled_reason"]
    assert stats["a"]["failures"] == 1
    for _ in range(5):
        await rig.clock.advance(600.0)  # time passing does not bring an invalid key back
        assert (await rig.client().acall("chat", messages=HI)).key_name == "b"
    assert len(rig.calls("a")) == 1
    assert [s for s in rig.engine.sent if s.key == secret("a") and s.is_probe] == []


async def test_401_fails_pinned_requests_with_authentication_error(rig_factory: Any) -> None:
    # rpm=60 keeps the pinned requests waiting for their turn while the first gets its 401
    rig = await rig_factory(("a", "b"), latency=0.5, key_options={"a": {"rpm": 60}})
    rig.engine.script(secret("a"), invalid_key())
    pinned = rig.spawn(3, client=rig.client("a"))  # one in flight, two waiting
    free = rig.spawn(1)
    await rig.run_until_done([*pinned, *free], step=0.5)
    for task in pinned:
        exc = task.exception()
        assert isinstance(exc, AuthenticationError), exc
        assert exc.key_name == "a"
        assert "openai" in str(exc)
        assert "'a'" in str(exc)
    assert free[0].result().key_name == "b"
    assert len(rig.calls("a")) == 1
    assert rig.stats()["a"]["queue_size"] == 0


@pytest.mark.parametrize("pinned", [True, False])
async def test_a_key_gets_nothing_after_its_401(rig_factory: Any, pinned: bool) -> None:
    rig = await rig_factory(
        ("a", "b"), latency={"a": 1.0, "b": 10.0}, max_concurrent_requests=1, queue_size=5
    )
    rig.engine.script(secret("a"), invalid_key())
    client = rig.client("a") if pinned else rig.client()
    tasks = rig.spawn(4, client=client)
    await rig.run_until_done(tasks)
    assert len(rig.calls("a")) == 1


async def test_pinned_call_to_a_disabled_key_fails_at_once(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), invalid_key())
    await rig.client().acall("chat", messages=HI)
    with pytest.raises(KeymuxError) as info:
        await rig.client("a").acall("chat", messages=HI)
    assert "'a'" in str(info.value)
    assert "disabled" in str(info.value)
    assert len(rig.calls("a")) == 1


async def test_pinned_call_to_an_invalid_key_is_an_authentication_error(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), invalid_key())
    await rig.client().acall("chat", messages=HI)
    with pytest.raises(AuthenticationError):
        await rig.client("a").acall("chat", messages=HI)


async def test_insufficient_quota_disables_the_key(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), quota_spent(), quota_spent())
    with pytest.raises(QuotaExhaustedError) as info:
        await rig.client("a").acall("chat", messages=HI)
    exc = info.value
    assert (exc.provider, exc.key_name, exc.status) == ("openai", "a", 429)
    assert exc.code == "insufficient_quota"
    stats = rig.stats()
    assert stats["a"]["status"] == "disabled"
    assert "quota" in stats["a"]["disabled_reason"]
    assert (stats["a"]["failures"], stats["a"]["rate_limited"]) == (1, 0)  # not a rate limit
    # unpinned work goes to b
    assert (await rig.client().acall("chat", messages=HI)).key_name == "b"
    assert len(rig.calls("a")) == 1


async def test_quota_spent_unpinned_moves_on(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), quota_spent())
    resp = await rig.client().acall("chat", messages=HI)
    assert (resp.key_name, resp.attempts) == ("b", 2)
    assert rig.stats()["a"]["status"] == "disabled"


async def test_every_key_disabled_is_no_key_available(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.default = invalid_key()
    with pytest.raises((NoKeyAvailableError, AuthenticationError)) as info:
        await rig.client().acall("chat", messages=HI)
    assert "openai" in str(info.value)
    assert len(rig.engine.calls()) == 2
    with pytest.raises(NoKeyAvailableError):
        await rig.client().acall("chat", messages=HI)
    assert len(rig.engine.calls()) == 2


async def test_no_keys_configured(rig_factory: Any) -> None:
    rig = await rig_factory(())
    with pytest.raises(NoKeyAvailableError) as info:
        await rig.client().acall("chat", messages=HI)
    assert "add_openai_key" in str(info.value)


# --- other failures ---------------------------------------------------------------------------


async def test_5xx_then_success_on_another_key(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), server_error(500))
    resp = await rig.client().acall("chat", messages=HI)
    assert (resp.key_name, resp.attempts) == ("b", 2)
    assert rig.clock.now() == T0
    stats = rig.stats()
    assert (stats["a"]["failures"], stats["a"]["status"]) == (1, "cooling")


async def test_5xx_then_success_on_the_same_key_after_backoff(rig_factory: Any) -> None:
    rig = await rig_factory(("a",))
    rig.engine.script(secret("a"), server_error(502), server_error(500))
    task = rig.spawn()[0]
    await rig.run_until_done([task], step=0.05)
    resp = task.result()
    assert (resp.key_name, resp.attempts) == ("a", 3)
    starts = [s.started for s in rig.calls("a")]
    # backoff 1 s then 2 s, each jittered into (0.75, 1] of itself
    assert 0.75 <= starts[1] - starts[0] <= 1.05
    assert 1.5 <= starts[2] - starts[1] <= 2.05


async def test_pinned_5xx_waits_its_backoff(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), server_error(500))
    task = rig.spawn(client=rig.client("a"))[0]
    await rig.run_until_done([task], step=0.05)
    assert task.result().key_name == "a"
    assert rig.calls("b") == []
    starts = [s.started for s in rig.calls("a")]
    assert 0.75 <= starts[1] - starts[0] <= 1.05


async def test_5xx_retries_exhausted(rig_factory: Any) -> None:
    rig = await rig_factory(("a",), max_retries=2)
    rig.engine.default = server_error(502)
    task = rig.spawn()[0]
    await rig.run_until_done([task])
    exc = task.exception()
    assert isinstance(exc, ProviderServerError)
    assert (exc.provider, exc.key_name, exc.status, exc.attempts) == ("openai", "a", 502, 3)
    assert "openai key 'a'" in str(exc)
    assert "The server had an error" in str(exc)


async def test_overloaded_retries_without_blaming_the_key(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), error(503, "overloaded", headers={"retry-after": "2"}))
    task = rig.spawn()[0]
    await rig.clock.advance(1.999)
    assert not task.done()
    await rig.run_until_done([task], step=0.001)
    assert task.result().attempts == 2
    assert rig.engine.calls()[1].started == T0 + 2
    assert rig.stats()["a"]["status"] == "active"


@pytest.mark.parametrize(
    ("failure", "error_class"),
    [
        (transport_failure(timed_out=True), RequestTimeoutError),
        (transport_failure(timed_out=False), ConnectionError),
    ],
)
async def test_transport_failures(rig_factory: Any, failure: Any, error_class: type) -> None:
    rig = await rig_factory(("a", "b"), max_retries=1)
    rig.engine.script(secret("a"), failure)
    resp = await rig.client().acall("chat", messages=HI)
    assert (resp.key_name, resp.attempts) == ("b", 2)
    rig.engine.default = failure
    await rig.clock.advance(100.0)
    task = rig.spawn()[0]
    await rig.run_until_done([task])
    exc = task.exception()
    assert isinstance(exc, error_class)
    assert exc.attempts == 2
    assert "openai key" in str(exc)


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_bad_request_is_not_retried(rig_factory: Any, status: int) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.default = error(
        status, "Invalid value for 'temperature': must be at most 2.", type="invalid_request_error"
    )
    with pytest.raises(BadRequestError) as info:
        await rig.client().acall("chat", messages=HI, temperature=5)
    exc = info.value
    assert "Invalid value for 'temperature'" in str(exc)
    assert (exc.provider, exc.key_name, exc.status, exc.attempts) == ("openai", "a", status, 1)
    assert len(rig.engine.calls()) == 1
    assert rig.engine.calls()[0].body["temperature"] == 5
    assert {n: s["status"] for n, s in rig.stats().items()} == {"a": "active", "b": "active"}


@pytest.mark.parametrize(
    "body",
    [b"not json", b"", b"[]", b'{"choices": []}', b'{"choices": [{"message": "hi"}]}'],
)
async def test_malformed_200_body(rig_factory: Any, body: bytes) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), (200, {}, body))
    with pytest.raises(MalformedResponseError) as info:
        await rig.client().acall("chat", messages=HI)
    exc = info.value
    assert (exc.provider, exc.key_name, exc.status) == ("openai", "a", 200)
    assert "openai key 'a'" in str(exc)
    stats = rig.stats()["a"]
    assert (stats["failures"], stats["current_requests"]) == (1, 0)


# --- deadlines --------------------------------------------------------------------------------


async def test_deadline_while_waiting_leaves_the_queue(rig_factory: Any) -> None:
    rig = await rig_factory(("a",), latency=10.0, max_concurrent_requests=1)
    busy = rig.spawn()
    await rig.clock.advance(0)
    late = rig.spawn(deadline=2.0)
    await rig.clock.advance(0)
    assert rig.stats()["a"]["queue_size"] == 1
    await rig.clock.advance(1.999)
    assert not late[0].done()
    await rig.clock.advance(0.001)
    assert late[0].done()
    exc = late[0].exception()
    assert isinstance(exc, RequestTimeoutError)
    assert isinstance(exc, TimeoutError)
    assert "openai" in str(exc)
    assert rig.stats()["a"]["queue_size"] == 0
    await rig.run_until_done(busy)
    assert len(rig.calls("a")) == 1  # the expired request was never sent


async def test_deadline_during_an_attempt(rig_factory: Any) -> None:
    rig = await rig_factory(("a",), latency=10.0)
    task = rig.spawn(deadline=1.0)[0]
    await rig.clock.advance(1.0)
    assert isinstance(task.exception(), RequestTimeoutError)
    assert rig.engine.total_in_flight() == 0
    assert rig.stats()["a"]["current_requests"] == 0
    # the slot is free again
    again = rig.spawn()
    await rig.run_until_done(again)


async def test_deadline_during_retry_backoff(rig_factory: Any) -> None:
    rig = await rig_factory(("a",))
    rig.engine.default = rate_limited(30.0)
    task = rig.spawn(deadline=5.0)[0]
    await rig.clock.advance(5.0)
    assert isinstance(task.exception(), RequestTimeoutError)
    assert len(rig.calls("a")) == 1
    assert rig.stats()["a"]["queue_size"] == 0


async def test_a_generous_deadline_changes_nothing(rig_factory: Any) -> None:
    rig = await rig_factory(("a",), latency=1.0)
    task = rig.spawn(deadline=5.0)[0]
    await rig.run_until_done([task])
    assert task.result().key_name == "a"
    await rig.clock.advance(10.0)  # its timer was cancelled: nothing fires later
    assert task.result().key_name == "a"


# --- removing keys ----------------------------------------------------------------------------


async def test_remove_key_moves_unpinned_waiters_and_fails_pinned_ones(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"), latency=5.0, max_concurrent_requests=1, queue_size=3)
    on_a = rig.spawn(1, client=rig.client("a"))
    on_b = rig.spawn(1, client=rig.client("b"))
    await rig.clock.advance(0)
    free = rig.spawn(3)
    await rig.clock.advance(0)
    pinned = rig.spawn(1, client=rig.client("a"))
    await rig.clock.advance(0)
    before = rig.stats()
    assert before["a"]["queue_size"] == 3
    moved = before["a"]["queue_size"] - 1  # the unpinned ones waiting on a
    rig.mux.remove_key("openai", "a")
    await rig.clock.advance(0)
    exc = pinned[0].exception()
    assert isinstance(exc, NoKeyAvailableError)
    assert "'a'" in str(exc)
    assert "removed" in str(exc)
    assert list(rig.stats()) == ["b"]
    assert rig.stats()["b"]["queue_size"] == before["b"]["queue_size"] + moved
    await rig.run_until_done([*on_a, *on_b, *free])
    assert on_a[0].result().key_name == "a"  # in flight when removed: it finished
    assert [t.result().key_name for t in free] == ["b", "b", "b"]
    assert len(rig.calls("a")) == 1
    with pytest.raises(ConfigError):
        rig.client("a")


async def test_remove_key_with_nowhere_to_move_fails_clearly(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"), latency=5.0, max_concurrent_requests=1, queue_size=1)
    tasks = rig.spawn(4)  # a: 1 + 1 waiting, b: 1 + 1 waiting
    await rig.clock.advance(0)
    assert [s["queue_size"] for s in rig.stats().values()] == [1, 1]
    rig.mux.remove_key("openai", "a")
    await rig.clock.advance(0)
    failed = [t for t in tasks if t.done()]
    assert len(failed) == 1
    assert isinstance(failed[0].exception(), QueueFullError)
    await rig.run_until_done(tasks)
    assert sum(isinstance(t.exception(), KeymuxError) for t in tasks) == 1


async def test_remove_the_last_key(rig_factory: Any) -> None:
    rig = await rig_factory(("a",), latency=5.0, max_concurrent_requests=1)
    tasks = rig.spawn(2)
    await rig.clock.advance(0)
    rig.mux.remove_key("openai", "a")
    await rig.clock.advance(0)
    assert isinstance(tasks[1].exception(), NoKeyAvailableError)
    await rig.run_until_done(tasks)
    assert tasks[0].result().key_name == "a"
    with pytest.raises(NoKeyAvailableError):
        await rig.client().acall("chat", messages=HI)


# --- closing ----------------------------------------------------------------------------------


async def test_aclose_fails_waiting_and_in_flight_requests_exactly_once(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"), latency=1.0)
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
    tasks = rig.spawn(10)  # 4 in flight, 6 waiting
    await rig.clock.advance(0)
    await rig.mux.aclose()  # close_grace=0: in-flight requests are cancelled
    assert all(t.done() for t in tasks)
    for task in tasks:
        exc = task.exception()
        assert isinstance(exc, ClosedError), exc
        assert isinstance(exc, RuntimeError)
        assert "openai" in str(exc)
    assert rig.engine.total_in_flight() == 0
    assert rig.engine.closed >= 1
    assert all(s["queue_size"] == s["current_requests"] == 0 for s in rig.stats().values())
    with pytest.raises(ClosedError):
        await rig.client().acall("chat", messages=HI)
    with pytest.raises(ClosedError):
        rig.mux.add_openai_key("c", secret("c"))
    await rig.clock.advance(10.0)
    assert loop_errors == []


async def test_aclose_lets_in_flight_requests_finish_within_the_grace(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"), latency=1.0, close_grace=30.0)
    tasks = rig.spawn(10)
    await rig.clock.advance(0)
    closing = asyncio.create_task(rig.mux.aclose())
    await rig.clock.advance(0)
    assert not closing.done()
    await rig.clock.advance(1.0)
    await asyncio.wait_for(closing, timeout=5)
    results = [t.exception() or t.result() for t in tasks]
    assert sum(isinstance(r, Response) for r in results) == 4
    assert sum(isinstance(r, ClosedError) for r in results) == 6
    assert len(rig.engine.calls()) == 4


async def test_aclose_during_a_retry_ends_the_request(rig_factory: Any) -> None:
    rig = await rig_factory(("a",), latency=1.0, close_grace=30.0)
    rig.engine.script(secret("a"), rate_limited(1.0))
    task = rig.spawn()[0]
    await rig.clock.advance(0)
    closing = asyncio.create_task(rig.mux.aclose())
    await rig.clock.advance(1.0)  # the 429 arrives during the grace; the retry is refused
    await asyncio.wait_for(closing, timeout=5)
    exc = task.exception()
    assert isinstance(exc, ClosedError)
    assert len(rig.calls("a")) == 1


async def test_errors_after_close_name_the_provider(rig_factory: Any) -> None:
    rig = await rig_factory(("a",))
    await rig.mux.aclose()
    with pytest.raises(ClosedError) as info:
        await rig.client().acall("chat", messages=HI)
    assert "openai" in str(info.value)


# --- strategies through the core --------------------------------------------------------------


async def test_weighted_strategy_through_the_core(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"), key_options={"a": {"weight": 3.0}})
    client = rig.client(strategy="weighted")
    for _ in range(40):
        await client.acall("chat", messages=HI)
        await rig.clock.advance(1.0)
    assert (rig.used().count("a"), rig.used().count("b")) == (30, 10)


async def test_least_loaded_strategy_through_the_core(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b", "c"), latency=10.0, max_concurrent_requests=3)
    busy = rig.spawn(2, client=rig.client("a")) + rig.spawn(2, client=rig.client("b"))
    await rig.clock.advance(1.0)
    # round-robin would take c, then a (used longest ago); least-loaded takes c twice
    free = rig.spawn(2, client=rig.client(strategy="least-loaded"))
    await rig.clock.advance(0)
    assert rig.used()[4:] == ["c", "c"]
    await rig.run_until_done([*busy, *free])


async def test_rate_aware_strategy_prefers_the_key_with_budget_left(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    low = ratelimit_headers(limit_requests=100, remaining_requests=5, reset_requests="30s")
    high = ratelimit_headers(limit_requests=100, remaining_requests=90, reset_requests="30s")
    rig.engine.script(secret("a"), ok(headers=low))
    rig.engine.script(secret("b"), ok(headers=high))
    client = rig.client(strategy="rate-aware")
    await client.acall("chat", messages=HI)
    await client.acall("chat", messages=HI)
    assert rig.used() == ["a", "b"]
    for _ in range(4):
        assert (await client.acall("chat", messages=HI)).key_name == "b"


async def test_a_custom_strategy_callable(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b", "c"))

    def last(candidates: Any, now: float) -> Any:
        return max(candidates, key=lambda lane: lane.name)

    client = rig.mux.get_openai_client(strategy=last)
    for _ in range(3):
        assert (await client.acall("chat", messages=HI)).key_name == "c"


async def test_blocking_call_on_the_loop_is_refused(rig_factory: Any) -> None:
    rig = await rig_factory(("a",))
    client = rig.client()
    await client.acall("chat", messages=HI)  # binds the multiplexer to this loop
    with pytest.raises(KeymuxError) as info:
        client("chat", messages=HI)
    assert "acall" in str(info.value)


# --- secrets ----------------------------------------------------------------------------------

CANARY = "sk-CANARY-abcdef0123456789"
#: distinctive pieces of the canary that must not appear either
CANARY_PARTS = (CANARY, "CANARY-abcdef", "abcdef0123456789")
CLAUDE_CANARY = "sk-ant-api03-CANARYclaude0123456789abcdef"
GEMINI_CANARY = "AIzaSyCANARYgemini0123456789abcdefghijk"


def _leaks(text: str) -> list[str]:
    secrets = (*CANARY_PARTS, CLAUDE_CANARY, "CANARYclaude", GEMINI_CANARY, "CANARYgemini")
    return [s for s in secrets if s in text]


def _describe(exc: BaseException) -> str:
    """What an exception shows in a traceback or log: str, repr and args of it and of every
    cause in its chain, plus the keymux error's own attributes."""
    parts = [repr(vars(exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


async def test_the_secret_never_leaks(rig_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rig = await rig_factory((), max_retries=1, queue_size=1, max_concurrent_requests=1)
    mux, engine = rig.mux, rig.engine
    mux.add_openai_key("canary", CANARY)
    mux.add_openai_key("spare", secret("spare"))
    mux.add_claude_key("claude", CLAUDE_CANARY)
    mux.add_gemini_key("gemini", GEMINI_CANARY)
    rig.names.update({CANARY: "canary", secret("spare"): "spare"})
    echo = f"Incorrect API key provided: {CANARY}."
    pinned = rig.client("canary")
    errors: list[BaseException] = []

    async def expect_error(aw: Awaitable[Response]) -> None:
        task = asyncio.ensure_future(aw)
        await rig.run_until_done([task], step=1.0)
        exc = task.exception()
        assert isinstance(exc, KeymuxError), exc
        errors.append(exc)

    # the provider echoes the key back in every kind of error body
    for reply in [
        error(400, echo, type="invalid_request_error"),
        error(404, f"The model does not exist for key {CANARY}"),
        error(429, f"Rate limit reached for {CANARY}", type="requests"),
        error(500, f"server error for {CANARY}"),
        (502, {}, f"<html>bad gateway {CANARY}</html>".encode()),
        (503, {}, f"upstream said: {CANARY}".encode()),
        (200, {}, f"{{not json {CANARY}".encode()),
        (200, {}, json.dumps({"choices": CANARY}).encode()),
        transport_failure(timed_out=True),
        transport_failure(timed_out=False),
    ]:
        engine.scripts[CANARY] = deque([reply, reply])
        await expect_error(pinned.acall("chat", messages=HI, max_tokens=5))
        await rig.clock.advance(100.0)
    engine.scripts[CANARY].clear()
    # capacity and deadlines
    engine.latency = {CANARY: 50.0}
    busy = rig.spawn(2, client=pinned)
    await rig.clock.advance(0)
    await expect_error(pinned.acall("chat", messages=HI))  # queue full
    await expect_error(pinned.acall("chat", messages=HI, deadline=0.5))  # (queue full again)
    await rig.run_until_done(busy)
    late = rig.spawn(1, client=pinned, deadline=1.0)
    await rig.run_until_done(late)
    errors.append(late[0].exception() or AssertionError("no timeout"))
    engine.latency = 0.0
    # the key is revoked: disabled, pinned calls fail
    engine.scripts[CANARY] = deque([error(401, echo, code="invalid_api_key")])
    await expect_error(pinned.acall("chat", messages=HI))
    await expect_error(pinned.acall("chat", messages=HI))
    # the other providers' keys, rejected
    engine.scripts[CLAUDE_CANARY] = deque(
        [
            (
                401,
                {},
                json.dumps(
                    {
                        "type": "error",
                        "error": {
                            "type": "authentication_error",
                            "message": f"invalid x-api-key {CLAUDE_CANARY}",
                        },
                    }
                ).encode(),
            )
        ]
    )
    await expect_error(mux.get_claude_client("claude").acall("chat", messages=HI))
    engine.scripts[GEMINI_CANARY] = deque(
        [
            (
                400,
                {},
                json.dumps(
                    {
                        "error": {
                            "code": 400,
                            "message": f"API key not valid: {GEMINI_CANARY}",
                            "status": "INVALID_ARGUMENT",
                            "details": [
                                {
                                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                    "reason": "API_KEY_INVALID",
                                }
                            ],
                        }
                    }
                ).encode(),
            )
        ]
    )
    await expect_error(mux.get_gemini_client("gemini").acall("chat", messages=HI))
    assert isinstance(errors[-1], AuthenticationError)
    assert isinstance(errors[-2], AuthenticationError)
    # the engine saw every key in its auth header (that is the one place it belongs)
    assert {s.key for s in engine.sent} >= {CANARY, CLAUDE_CANARY, GEMINI_CANARY}
    await rig.mux.aclose()
    with pytest.raises(ClosedError) as closed:
        await pinned.acall("chat", messages=HI)
    errors.append(closed.value)

    assert len(errors) >= 17
    kinds = {type(e).__name__ for e in errors}
    assert kinds >= {
        "BadRequestError",
        "RateLimitedError",
        "ProviderServerError",
        "MalformedResponseError",
        "RequestTimeoutError",
        "ConnectionError",
        "QueueFullError",
        "AuthenticationError",
        "ClosedError",
    }
    for exc in errors:
        assert _leaks(_describe(exc)) == [], _describe(exc)
    lanes = [lane for ps in mux._core.dispatch.providers.values() for lane in ps.lanes.values()]
    shown = [
        repr(mux),
        str(mux),
        repr(pinned),
        repr(mux.get_claude_client()),
        *(repr(lane) for lane in lanes),
        *(repr(lane.spec) for lane in lanes),
        *(repr(lane.secret) + str(lane.secret) + f"{lane.secret}" for lane in lanes),
        json.dumps(mux.get_usage_stats()),
        json.dumps(mux.key_info()),
        repr([r.getMessage() for r in caplog.records]),
        repr([(r.msg, r.args) for r in caplog.records]),
        caplog.text,
    ]
    for text in shown:
        assert _leaks(text) == [], text
    assert any("disabled" in r.getMessage() for r in caplog.records)
    assert "sk-...6789" in json.dumps(mux.get_usage_stats())  # the masked form is fine


# --- the sync facade, real threads, real time -------------------------------------------------


def _sync_mux(
    keys: Iterable[str] = ("a", "b", "c"), *, latency: float = 0.002, **options: Any
) -> tuple[Multiplexer, ScriptedEngine]:
    mux = Multiplexer(seed=0, **{"max_concurrent_requests": 2, "queue_size": 50, **options})
    for name in keys:
        mux.add_openai_key(name, secret(name))
    for lane in mux._core.dispatch.lanes():  # past slow start, as in make_rig
        lane.answered, lane.cap = True, lane.max_concurrent
    engine = ScriptedEngine(SystemClock(), latency=latency)
    mux._core.engine = engine  # type: ignore[assignment]
    return mux, engine


def test_sync_call() -> None:
    mux, engine = _sync_mux(("a",))
    with mux:
        resp = mux.get_openai_client()("chat", messages=HI)
        assert (resp.text, resp.key_name, resp.attempts) == ("hello", "a", 1)
        assert mux.get_usage_stats()["openai"]["a"]["successes"] == 1
    assert mux.closed
    assert engine.closed >= 1


def test_sync_calls_from_many_threads() -> None:
    mux, engine = _sync_mux()
    with mux:
        client = mux.get_openai_client()
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda _: client("chat", messages=HI), range(48)))
        stats = mux.get_usage_stats()["openai"]
    assert len(results) == 48
    assert all(r.text == "hello" for r in results)
    assert sum(s["successes"] for s in stats.values()) == 48
    assert {r.key_name for r in results} == {"a", "b", "c"}
    assert all(engine.max_in_flight[secret(n)] <= 2 for n in "abc")
    assert engine.total_in_flight() == 0


def test_sync_errors_reach_the_calling_thread() -> None:
    mux, engine = _sync_mux(("a",))
    engine.default = error(400, "bad temperature", type="invalid_request_error")
    with mux:
        client = mux.get_openai_client()
        with pytest.raises(BadRequestError) as info:
            client("chat", messages=HI)
        assert "bad temperature" in str(info.value)
        caught: list[BaseException] = []

        def worker() -> None:
            try:
                client("chat", messages=HI)
            except KeymuxError as exc:
                caught.append(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert [type(e) for e in caught] == [BadRequestError]


def test_sync_rate_limit_moves_to_another_key() -> None:
    mux, engine = _sync_mux(("a", "b"))
    engine.script(secret("a"), rate_limited(60.0))
    with mux:
        resp = mux.get_openai_client()("chat", messages=HI)
        assert (resp.key_name, resp.attempts) == ("b", 2)
        assert mux.get_usage_stats()["openai"]["a"]["status"] == "cooling"


@pytest.mark.parametrize("grace", [0.0, 5.0])
def test_sync_close_with_requests_waiting_and_in_flight(grace: float) -> None:
    mux, engine = _sync_mux(("a",), latency=0.3, max_concurrent_requests=2, close_grace=grace)
    client = mux.get_openai_client()
    pool = ThreadPoolExecutor(max_workers=6)

    def call() -> Response | KeymuxError:
        try:
            return client("chat", messages=HI)
        except KeymuxError as exc:
            return exc

    futures = [pool.submit(call) for _ in range(6)]
    for _ in range(200):
        stats = mux.get_usage_stats()["openai"]["a"]
        if stats["current_requests"] == 2 and stats["queue_size"] == 4:
            break
        threading.Event().wait(0.005)
    mux.close()
    results = [f.result(timeout=10) for f in futures]
    pool.shutdown()
    responses = [r for r in results if isinstance(r, Response)]
    closed = [r for r in results if isinstance(r, ClosedError)]
    assert len(responses) + len(closed) == 6
    assert len(responses) == (2 if grace else 0)
    assert len(engine.calls()) == 2
    with pytest.raises(ClosedError):
        mux.add_openai_key("z", secret("z"))


# --- the last key standing --------------------------------------------------------------------

TOO_LARGE = error(
    429, "Request too large for gpt-4o on tokens per min (TPM): Limit 30000, Requested 50000."
)
PER_DAY = error(
    429,
    "Rate limit reached for gpt-4o on requests per day (RPD): Limit 200, Used 200.",
    type="requests",
)


async def test_daily_limit_parks_the_key(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), PER_DAY)
    resp = await rig.client().acall("chat", messages=HI)
    assert (resp.key_name, resp.attempts) == ("b", 2)
    stats = rig.stats()["a"]
    assert (stats["status"], stats["parked_s"]) == ("parked", 3600.0)
    for _ in range(3):
        await rig.clock.advance(1.0)
        assert (await rig.client().acall("chat", messages=HI)).key_name == "b"
    await rig.clock.advance(3597.0)
    assert rig.stats()["a"]["status"] == "active"
    assert (await rig.client().acall("chat", messages=HI)).key_name == "a"


async def test_pinned_request_hitting_the_daily_limit_fails_at_once(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), PER_DAY)
    with pytest.raises(QuotaExhaustedError) as info:
        await rig.client("a").acall("chat", messages=HI)
    assert "requests per day" in str(info.value)
    assert rig.stats()["a"]["status"] == "parked"


async def test_pinned_call_to_a_parked_key_fails_instead_of_waiting_hours(
    rig_factory: Any,
) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), PER_DAY)
    await rig.client().acall("chat", messages=HI)  # a is parked for an hour
    task = rig.spawn(client=rig.client("a"))[0]
    await rig.clock.advance(120.0)  # max_retry_after: longer than this is not waited for
    assert task.done()
    assert isinstance(task.exception(), QuotaExhaustedError)
    assert len(rig.calls("a")) == 1


@pytest.mark.parametrize(
    ("reply", "error_class", "says"),
    [
        (TOO_LARGE, BadRequestError, "Request too large"),
        (invalid_key(), AuthenticationError, "Incorrect API key"),
        (PER_DAY, QuotaExhaustedError, "requests per day"),
    ],
)
async def test_the_only_key_failing_a_request_gives_the_providers_error(
    rig_factory: Any, reply: Any, error_class: type, says: str
) -> None:
    rig = await rig_factory(("a",))
    rig.engine.script(secret("a"), reply)
    with pytest.raises(error_class) as info:
        await rig.client().acall("chat", messages=HI)
    assert says in str(info.value)


async def test_too_large_moves_to_another_key(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), TOO_LARGE)
    resp = await rig.client().acall("chat", messages=HI)
    assert (resp.key_name, resp.attempts) == ("b", 2)
    assert rig.stats()["a"]["status"] == "active"  # only this request avoids a
    rig.engine.script(secret("a"), TOO_LARGE)
    with pytest.raises(BadRequestError):  # pinned: nowhere else to go
        await rig.client("a").acall("chat", messages=HI)


async def test_per_call_timeout_reaches_the_engine(rig_factory: Any) -> None:
    rig = await rig_factory(("a",), timeout=60.0)
    client = rig.client()
    await client.acall("chat", messages=HI)
    await client.acall("chat", messages=HI, timeout=5.0)
    first, second = rig.engine.calls()
    assert (first.timeout.total, second.timeout.total) == (60.0, 5.0)


# --- keys that come back ----------------------------------------------------------------------


async def test_a_quota_disabled_key_is_probed_and_comes_back(rig_factory: Any) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), quota_spent())
    rig.engine.probe_reply = (429, {}, b"{}")  # the first probe finds it still spent
    assert (await rig.client().acall("chat", messages=HI)).key_name == "b"
    stats = rig.stats()["a"]
    assert stats["status"] == "disabled"
    assert stats["next_probe_in_s"] == pytest.approx(300.0)
    assert stats["disabled_since_s"] == pytest.approx(0.0)

    def probes() -> list[Any]:
        return [s for s in rig.engine.sent if s.key == secret("a") and s.is_probe]

    await rig.clock.advance(299.0)
    assert probes() == []
    await rig.clock.advance(1.0)
    assert len(probes()) == 1  # cheap: the models endpoint, not a chat request
    assert probes()[0].method == "GET"
    assert probes()[0].url.endswith("/models")
    assert rig.stats()["a"]["status"] == "disabled"
    assert rig.stats()["a"]["disabled_since_s"] == pytest.approx(300.0)

    rig.engine.probe_reply = (200, {}, b'{"object": "list", "data": []}')
    await rig.clock.advance(600.0)  # the next probe waits twice as long
    assert len(probes()) == 2
    stats = rig.stats()["a"]
    assert stats["status"] == "active"
    assert "disabled_reason" not in stats
    used = {(await rig.client().acall("chat", messages=HI)).key_name for _ in range(4)}
    assert used == {"a", "b"}


async def test_a_key_that_fails_again_after_coming_back_is_probed_later(
    rig_factory: Any,
) -> None:
    rig = await rig_factory(("a", "b"))
    rig.engine.script(secret("a"), quota_spent(), quota_spent())
    await rig.client().acall("chat", messages=HI)
    assert rig.stats()["a"]["next_probe_in_s"] == pytest.approx(300.0)
    await rig.clock.advance(300.0)  # the probe answers 200: back in the pool
    assert rig.stats()["a"]["status"] == "active"
    await rig.client("b").acall("chat", messages=HI)  # a is least recently used now
    assert (await rig.client().acall("chat", messages=HI)).key_name == "b"
    assert rig.stats()["a"]["status"] == "disabled"  # billing still spent
    assert rig.stats()["a"]["next_probe_in_s"] == pytest.approx(600.0)
