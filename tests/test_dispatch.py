"""Dispatch rules that span keys: slow start, budgets per model, and priority tiers.

On a FakeClock with a ScriptedEngine: requests stay in flight until the test moves time, so
each assertion is about an exact moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fakes import ScriptedEngine, error, ok, rate_limited, ratelimit_headers, server_error
from keymux import ConfigError, Multiplexer, QueueFullError, Response
from keymux.providers import ADAPTERS
from keymux.testing import FakeClock

HI = [{"role": "user", "content": "Say hi"}]


def secret(name: str) -> str:
    return f"sk-test-{name}-0123456789abcdef"


class Rig:
    def __init__(self, keys: dict[str, dict[str, Any]], *, latency: float = 1.0, **options: Any):
        self.clock = FakeClock()
        options.setdefault("max_concurrent_requests", 4)
        options.setdefault("queue_size", 10)
        options.setdefault("initial_retry_delay", 1.0)
        self.mux = Multiplexer(clock=self.clock, seed=0, close_grace=0.0, **options)
        self.names: dict[str, str] = {}
        for name, key_options in keys.items():
            self.mux.add_openai_key(name, secret(name), **key_options)
            self.names[secret(name)] = name
        self.engine = ScriptedEngine(self.clock, latency=latency)
        self.mux._core.engine = self.engine  # type: ignore[assignment]
        self.tasks: list[asyncio.Task[Response]] = []

    def spawn(self, n: int = 1, **kw: Any) -> list[asyncio.Task[Response]]:
        client = self.mux.get_openai_client(key_name=kw.pop("key_name", None))
        made = [asyncio.ensure_future(client.acall(messages=HI, **kw)) for _ in range(n)]
        self.tasks.extend(made)
        return made

    def in_flight(self) -> dict[str, int]:
        stats = self.mux.get_usage_stats()["openai"]
        return {name: s["current_requests"] for name, s in stats.items()}

    def sent(self) -> list[tuple[str, str]]:
        """(key name, model) of every request sent so far."""
        return [(self.names[s.key or ""], s.body["model"]) for s in self.engine.calls()]

    async def finish(self, step: float = 1.0) -> None:
        for _ in range(200):
            if all(t.done() for t in self.tasks):
                return
            await self.clock.advance(step)
        raise AssertionError("requests did not finish")


@pytest.fixture
async def rigs() -> AsyncIterator[Any]:
    made: list[Rig] = []

    def factory(keys: dict[str, dict[str, Any]], **options: Any) -> Rig:
        rig = Rig(keys, **options)
        made.append(rig)
        return rig

    yield factory
    for rig in made:
        for task in rig.tasks:
            task.cancel()
        await rig.mux.aclose()


# --- slow start ------------------------------------------------------------------------------


async def test_a_fresh_key_carries_one_request_until_its_first_answer(rigs: Any) -> None:
    rig = rigs({"a": {}, "b": {}})
    rig.spawn(8)
    await rig.clock.advance(0)
    assert rig.in_flight() == {"a": 1, "b": 1}
    await rig.clock.advance(1.0)  # both answered: each key is known to work
    flying = rig.in_flight()
    assert sum(flying.values()) == 6  # every request left, up to 4 on each key
    assert max(flying.values()) == 4
    await rig.finish()
    assert all(t.result().text == "hello" for t in rig.tasks)


async def test_a_revoked_key_costs_exactly_one_request(rigs: Any) -> None:
    rig = rigs({"bad": {}, "good": {}})
    rig.engine.script(secret("bad"), *[error(401, "Incorrect API key", code="invalid_api_key")] * 9)
    rig.spawn(9)
    await rig.finish()
    assert [t.result().key_name for t in rig.tasks] == ["good"] * 9
    assert [name for name, _ in rig.sent()].count("bad") == 1
    assert rig.mux.get_usage_stats()["openai"]["bad"]["status"] == "disabled"


async def test_slow_start_does_not_shrink_what_a_key_accepts(rigs: Any) -> None:
    rig = rigs({"a": {}}, max_concurrent_requests=2, queue_size=3)
    rig.spawn(5)  # 2 slots + 3 waiting, as configured: none refused while the key starts
    await rig.clock.advance(0)
    stats = rig.mux.get_usage_stats()["openai"]["a"]
    assert (stats["current_requests"], stats["queue_size"]) == (1, 4)
    late = rig.spawn(1)
    await rig.clock.advance(0)
    assert isinstance(late[0].exception(), QueueFullError)
    rig.tasks.remove(late[0])
    await rig.finish()


async def test_the_first_answer_of_any_status_ends_slow_start(rigs: Any) -> None:
    rig = rigs({"a": {}, "b": {}})
    rig.engine.script(secret("a"), server_error())
    rig.spawn(8)
    await rig.clock.advance(0)
    await rig.clock.advance(1.0)
    # a answered (a 500: cooling now, but known to work); its request moved to b
    assert rig.mux._core.dispatch.providers["openai"].lanes["a"].cap == 4
    assert rig.in_flight()["b"] == 4
    await rig.finish()


# --- budgets per model -----------------------------------------------------------------------


async def test_a_429_for_one_model_does_not_cool_the_key_for_another(rigs: Any) -> None:
    rig = rigs({"a": {}}, latency=0.0)
    rig.engine.script(secret("a"), rate_limited(30.0))
    limited = rig.spawn(1, key_name="a", model="gpt-4o")
    await rig.clock.advance(0)
    assert not limited[0].done()  # pinned: it waits out gpt-4o's cooldown
    other = rig.spawn(1, key_name="a", model="gpt-4o-mini")
    await rig.clock.advance(0)
    assert other[0].result().key_name == "a"  # at once: the mini's limits are untouched
    stats = rig.mux.get_usage_stats()["openai"]["a"]
    assert stats["status"] == "cooling"
    assert stats["models"]["gpt-4o"]["cooldown_s"] == pytest.approx(30.0, abs=0.01)
    assert "cooldown_s" not in stats["models"]["gpt-4o-mini"]
    await rig.finish(step=10.0)
    assert limited[0].result().attempts == 2


async def test_one_models_headers_do_not_pace_another(rigs: Any) -> None:
    rig = rigs({"a": {}}, latency=0.0)
    spent = ratelimit_headers(limit_requests=3, remaining_requests=0, reset_requests="20s")
    rig.engine.script(secret("a"), ok(headers=spent))
    first = rig.spawn(1, model="gpt-4o")
    await rig.clock.advance(0)
    assert first[0].result().key_name == "a"
    blocked = rig.spawn(1, model="gpt-4o")
    free = rig.spawn(1, model="gpt-4o-mini")
    await rig.clock.advance(0)
    assert free[0].done()
    assert not blocked[0].done()  # gpt-4o's window is spent for 20 s
    await rig.finish(step=5.0)
    assert rig.sent() == [("a", "gpt-4o"), ("a", "gpt-4o-mini"), ("a", "gpt-4o")]


async def test_a_configured_rpm_applies_to_each_model(rigs: Any) -> None:
    rig = rigs({"a": {"rpm": 60}}, latency=0.0)
    rig.spawn(1, model="m1")
    rig.spawn(1, model="m2")
    rig.spawn(1, model="m1")
    await rig.clock.advance(0)
    assert [t.done() for t in rig.tasks] == [True, True, False]  # m1 paced: one a second
    await rig.clock.advance(1.0)
    assert rig.tasks[2].done()


async def test_a_server_error_cools_the_key_for_every_model(rigs: Any) -> None:
    rig = rigs({"a": {}, "b": {}}, latency=0.0)
    rig.engine.script(secret("a"), server_error())
    first = rig.spawn(1, model="m1")
    await rig.clock.advance(0)
    assert first[0].result().key_name == "b"  # moved on
    later = rig.spawn(2, model="m2")
    await rig.clock.advance(0)
    assert [t.result().key_name for t in later] == ["b", "b"]  # a cools as a key


async def test_a_groups_models_share_the_groups_budgets(rigs: Any) -> None:
    rig = rigs({"a": {"group": "p", "rpm": 60}, "b": {"group": "p"}}, latency=0.0)
    rig.spawn(2, model="m1")
    await rig.clock.advance(0)
    assert [t.done() for t in rig.tasks] == [True, False]  # b spends the group's m1 budget
    rig.spawn(1, model="m2")
    await rig.clock.advance(0)
    assert rig.tasks[2].done()


def test_limit_scopes_follow_each_providers_rules() -> None:
    assert ADAPTERS["openai"].limit_scope("gpt-4o-2024-08-06") == "gpt-4o-2024-08-06"
    assert ADAPTERS["claude"].limit_scope("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert ADAPTERS["claude"].limit_scope("claude-3-5-haiku-latest") == "claude-3-5-haiku"
    assert ADAPTERS["gemini"].limit_scope("models/gemini-2.5-flash") == "gemini-2.5-flash"
    assert ADAPTERS["groq"].limit_scope(None) == ""


# --- priority tiers --------------------------------------------------------------------------


async def test_a_later_tier_waits_while_the_first_has_a_free_slot(rigs: Any) -> None:
    rig = rigs({"paid": {"priority": 1}, "free": {}}, max_concurrent_requests=2)
    rig.spawn(1)
    await rig.clock.advance(1.0)  # free has answered: two slots now
    rig.spawn(2)
    await rig.clock.advance(0)
    assert rig.in_flight() == {"paid": 0, "free": 2}
    rig.spawn(2)  # free is full: the overflow goes to the paid key
    await rig.clock.advance(0)
    assert rig.in_flight() == {"paid": 1, "free": 2}  # (the paid key is in slow start)
    await rig.finish()


async def test_a_later_tier_takes_work_while_the_first_has_no_budget(rigs: Any) -> None:
    rig = rigs({"free": {"rpm": 60}, "paid": {"priority": 1}}, latency=0.0)
    rig.spawn(1)
    await rig.clock.advance(0)
    rig.spawn(1)  # free's next request may go in 1 s: now only the paid key can take it
    await rig.clock.advance(0)
    assert [t.result().key_name for t in rig.tasks] == ["free", "paid"]
    await rig.clock.advance(1.0)
    rig.spawn(1)
    await rig.clock.advance(0)
    assert rig.tasks[2].result().key_name == "free"  # budget back: the first tier again


async def test_waiting_work_queues_on_the_first_tier(rigs: Any) -> None:
    rig = rigs({"paid": {"priority": 1}, "free": {}}, max_concurrent_requests=1)
    for lane in rig.mux._core.dispatch.lanes():
        lane.cooldown_until = rig.clock.now() + 5.0  # nobody may send for 5 s
    rig.spawn(3)
    await rig.clock.advance(0)
    stats = rig.mux.get_usage_stats()["openai"]
    assert (stats["free"]["queue_size"], stats["paid"]["queue_size"]) == (3, 0)
    await rig.finish()
    # when both came back, each took the oldest waiter it could: the work was not stuck on free
    assert {t.result().key_name for t in rig.tasks} == {"free", "paid"}


def test_priority_must_be_a_tier_number() -> None:
    mux = Multiplexer()
    with pytest.raises(ConfigError, match="priority must be 0 or more"):
        mux.add_openai_key("a", secret("a"), priority=-1)
    with pytest.raises(ConfigError, match="priority must be a whole number"):
        mux.add_openai_key("a", secret("a"), priority=1.5)  # type: ignore[arg-type]
