"""Several multiplexers in one process sharing one state URL, against the in-process emulator.

Each multiplexer stands for a process (it has its own lanes, budgets, process id and Redis
connections); ``test_state_multiproc.py`` does the same with real processes. Waiting is a
bounded poll that fails loudly, never a sleep that hopes.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from conftest import StartEmulator, fake_key
from keymux import AuthenticationError, ConfigError, Multiplexer
from keymux._clock import SystemClock
from keymux.emulator import EmulatorKey
from state_worker import SkewedClock  # a host whose clocks are hours or days off

MESSAGES = [{"role": "user", "content": "hi"}]
pytestmark = pytest.mark.e2e


def muxes(
    server: Any, state: str, names: tuple[str, ...], n: int, clocks: list[Any] | None = None
) -> list[Multiplexer]:
    out = []
    for i in range(n):
        mux = Multiplexer(
            state=state,
            initial_retry_delay=0.01,
            max_retry_delay=0.2,
            timeout=10.0,
            close_grace=2.0,
            clock=None if clocks is None else clocks[i],
        )
        for name in names:
            mux.add_key(
                "openai", name, fake_key("openai", name), base_url=server.base_url("openai")
            )
        out.append(mux)
    return out


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.01)


def lane(mux: Multiplexer, name: str) -> Any:
    return mux._core.dispatch.providers["openai"].lanes[name]


async def call(mux: Multiplexer, pin: str | None = None) -> Any:
    client = mux.get_openai_client(key_name=pin) if pin else mux.get_openai_client()
    return await client.acall("chat", messages=MESSAGES)


# --- choosing the state -------------------------------------------------------------------


def test_memory_is_no_shared_state_and_costs_nothing() -> None:
    assert Multiplexer()._core.shared is None
    assert Multiplexer(state="memory://")._core.shared is None


def test_from_env_reads_keymux_state(redis_url: str) -> None:
    mux = Multiplexer.from_env(dotenv_path=None, environ={"KEYMUX_STATE": redis_url})
    shared = mux._core.shared
    assert shared is not None
    assert shared.store.url.startswith("redis://127.0.0.1:")
    assert Multiplexer.from_env(dotenv_path=None, environ={})._core.shared is None
    explicit = Multiplexer.from_env(
        dotenv_path=None, environ={"KEYMUX_STATE": redis_url}, state="memory://"
    )
    assert explicit._core.shared is None


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ConfigError, match=r"pip install 'keymux\[redis\]'"):
        Multiplexer(state="redis://localhost:6379/0")


def test_a_bad_state_url_is_a_config_error_without_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        Multiplexer(state="mongodb://:hunter2@db:27017")
    assert "hunter2" not in str(refused.value)


# --- one set of limits ----------------------------------------------------------------------


@pytest.mark.parametrize("state", ["redis", "memory"])
async def test_multiplexers_sharing_state_pace_together(
    start_emulator: StartEmulator, redis_url: str, state: str
) -> None:
    """Three "processes", two keys of 8 per second each (a sliding window, learned from the
    headers): with Redis they stay within the keys' limits together; each alone on memory://
    believes the limits its own and they overshoot (the contrast shows this test can fail)."""
    names = ("a", "b")
    server = start_emulator(
        *(EmulatorKey("openai", fake_key("openai", n), rpm=8, label=n) for n in names),
        clock=SystemClock(),
        window=1.0,
        rate_model="sliding",
    )
    # this test is about pacing, not about a slow Redis: a generous timeout
    url = redis_url + "&timeout=2" if state == "redis" else "memory://"
    group = muxes(server, url, names, 3)
    try:
        # every process first hears each key's limits from one answer of its own, one at a
        # time: what three fresh processes send before any answer (each its slow start's few
        # per key) depends on how the machine schedules them, not on the shared budget
        for mux in group:
            for name in names:
                await call(mux, pin=name)
        learned = server.total_429
        results = await asyncio.gather(
            *(call(group[i % 3]) for i in range(48)), return_exceptions=True
        )
    finally:
        for mux in group:
            await mux.aclose()
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed
    assert learned == 0
    if state == "redis":
        # a loaded machine (the suite runs on every core) must not make Redis look away
        assert all(m._core.shared is None or m._core.shared.outages == 0 for m in group)
        assert server.total_429 <= 2
    else:
        assert server.total_429 >= 6


async def test_a_revoked_key_is_out_of_every_process_after_one_401(
    start_emulator: StartEmulator, redis_url: str
) -> None:
    names = ("a", "b")
    server = start_emulator(*(EmulatorKey("openai", fake_key("openai", n), label=n) for n in names))
    group = muxes(server, redis_url, names, 3)
    try:
        for mux in group:  # every process has used both keys: full concurrency on each
            for name in names:
                await call(mux, name)
        before = server.key_stats("a")["requests"]
        server.set_faults(fake_key("openai", "a"), revoked=True)
        with pytest.raises(AuthenticationError):
            await call(group[0], "a")
        await until(
            lambda: all(not lane(m, "a").enabled for m in group), "every process disabled a"
        )
        for mux in group[1:]:
            stats = (await mux.aget_usage_stats())["openai"]["a"]
            assert stats["status"] == "disabled"
            assert "seen by another process" in stats["disabled_reason"]
        answers = await asyncio.gather(*(call(group[1 + i % 2]) for i in range(10)))
        assert {r.key_name for r in answers} == {"b"}
        assert server.key_stats("a")["requests"] - before == 1
    finally:
        for mux in group:
            await mux.aclose()


async def test_cooldowns_and_parking_are_heard_by_every_process(
    start_emulator: StartEmulator, redis_url: str
) -> None:
    server = start_emulator(EmulatorKey("openai", fake_key("openai", "a"), label="a"))
    first, second = muxes(
        server, redis_url, ("a",), 2, [SkewedClock(3600.0), SkewedClock(7 * 86_400.0)]
    )
    try:
        for mux in (first, second):
            await call(mux)
        here, there = lane(first, "a"), lane(second, "a")
        scope = next(iter(here.book.by_scope))
        shared = first._core.shared
        assert shared is not None
        now = first._clock.now()
        budget = here.book.get(scope)
        budget.cool(now, 30.0)
        shared.cooled(here, budget, scope, "cool")
        here.parked_until = now + 50.0
        shared.cooled(here, None, scope, "park")
        other = there.book.get(scope)
        await until(lambda: other.cooldown_until > second._clock.now(), "the model cooldown")
        await until(lambda: there.parked_until > second._clock.now(), "the key's parking")
        # each in its own clock, hours apart: the same seconds remain
        assert other.cooldown_until - second._clock.now() == pytest.approx(30.0, abs=1.0)
        assert there.parked_until - second._clock.now() == pytest.approx(50.0, abs=1.0)
        stats = (await second.aget_usage_stats())["openai"]["a"]
        assert stats["status"] == "parked"
    finally:
        for mux in (first, second):
            await mux.aclose()


async def test_skewed_clocks_pace_together(start_emulator: StartEmulator, redis_url: str) -> None:
    server = start_emulator(
        EmulatorKey("openai", fake_key("openai", "a"), rpm=6, label="a"),
        clock=SystemClock(),
        window=1.0,
        rate_model="sliding",
    )
    clocks = [SkewedClock(0.0), SkewedClock(86_400.0 * 3), SkewedClock(10_000.0)]
    group = muxes(server, redis_url + "&timeout=2", ("a",), 3, clocks)
    try:
        results = await asyncio.gather(*(call(group[i % 3]) for i in range(18)))
    finally:
        for mux in group:
            await mux.aclose()
    assert len(results) == 18
    assert server.total_429 <= 1


def test_counters_of_every_process(start_emulator: StartEmulator, redis_url: str) -> None:
    server = start_emulator(EmulatorKey("openai", fake_key("openai", "a"), label="a"))
    group = muxes(server, redis_url, ("a",), 2)
    try:
        for mux in group:
            client = mux.get_openai_client()
            for _ in range(3):
                client("chat", messages=MESSAGES)
        mine = group[0].get_usage_stats()["openai"]["a"]
        assert mine["successes"] == 3
        assert "processes" not in mine
        for mux in group:
            # each process adds its counters every half second: a bounded poll
            deadline = time.monotonic() + 5.0
            while (every := mux.get_usage_stats(all_processes=True)["openai"]["a"])[
                "successes"
            ] < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert every["successes"] == 6
            assert every["usage"] == 6
            assert every["processes"] == 2
            assert every["output_tokens"] == 2 * mine["output_tokens"]
        alone = Multiplexer()
        assert alone.get_usage_stats(all_processes=True) == alone.get_usage_stats()
    finally:
        for mux in group:
            mux.close()


# --- Redis trouble --------------------------------------------------------------------------


class Load:
    """Requests from every multiplexer, back to back, until stopped."""

    def __init__(self, group: list[Multiplexer], per_mux: int = 4) -> None:
        self.ok = 0
        self.failed: list[BaseException] = []
        self._stop = asyncio.Event()
        self._tasks = [
            asyncio.ensure_future(self._worker(mux)) for mux in group for _ in range(per_mux)
        ]

    async def _worker(self, mux: Multiplexer) -> None:
        client = mux.get_openai_client()
        while not self._stop.is_set():
            try:
                await client.acall("chat", messages=MESSAGES)
                self.ok += 1
            except Exception as exc:
                self.failed.append(exc)

    async def more(self, n: int, what: str) -> None:
        target = self.ok + n
        await until(lambda: self.ok >= target or bool(self.failed), what)
        assert not self.failed, self.failed[:3]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def test_redis_paused_stopped_and_restarted_under_load(
    start_emulator: StartEmulator, private_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="keymux")
    names = ("a", "b")
    server = start_emulator(*(EmulatorKey("openai", fake_key("openai", n), label=n) for n in names))
    group = muxes(server, private_redis.url("trouble"), names, 2)
    sharing = [m._core.shared for m in group]
    assert all(s is not None for s in sharing)

    def warnings() -> int:
        return sum("is unreachable" in r.getMessage() for r in caplog.records)

    load = Load(group)
    try:
        await load.more(40, "answers with Redis up")
        assert all(s.up for s in sharing)  # type: ignore[union-attr]
        assert warnings() == 0

        private_redis.pause()  # SIGSTOP: it answers nothing, connections stay open
        await until(lambda: not any(s.up for s in sharing), "both noticed")  # type: ignore[union-attr]
        await load.more(40, "answers while Redis is paused")
        private_redis.resume()
        await until(lambda: all(s.up for s in sharing), "both back after SIGCONT")  # type: ignore[union-attr]
        assert warnings() == 2  # one each
        await load.more(20, "answers after SIGCONT")

        private_redis.stop()
        await until(lambda: not any(s.up for s in sharing), "both noticed the stop")  # type: ignore[union-attr]
        # a key revoked while Redis is away: written back when it returns
        group[0]._core.disable(lane(group[0], "b"), "invalid key (HTTP 401)")
        await load.more(40, "answers while Redis is stopped")
        private_redis.start()  # empty: nothing was persisted
        await until(lambda: all(s.up for s in sharing), "both back after the restart")  # type: ignore[union-attr]
        await until(lambda: not lane(group[1], "b").enabled, "the other process re-synced")
        await load.more(20, "answers after the restart")
        assert warnings() == 4
        assert sum("re-synced" in r.getMessage() for r in caplog.records) == 4
    finally:
        await load.stop()
        for mux in group:
            await mux.aclose()
    assert not load.failed
    client: Any = private_redis.client()
    status = client.hgetall(f"trouble:{{openai:{lane(group[0], 'b').secret.fingerprint}}}:st")
    assert status[b"dis"] == b"invalid key (HTTP 401)"
    client.close()
