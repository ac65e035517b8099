"""One contract for every store: ``memory://``'s and Redis's must agree on budgets, status and
counters. Times come from the store's own clock (Redis ``TIME``), so expectations are
computed from the times the store reports, never from the test's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from keymux.state import MemoryStore, Store, parse_state_url
from keymux.state._keys import budget_keys, counts_key, group_tag, key_ident, status_key
from keymux.state._store import DAY, Ask, Change, Event, Settle

TAG = "openai:0123456789abcdef"
SCOPE = "gpt-4o-mini"
US = 1e-6  # the stores keep microseconds


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    from keymux.state._redis import RedisStore

    url = request.getfixturevalue("redis_url")
    made = RedisStore(parse_state_url(url))
    await made.connect()
    try:
        yield made
    finally:
        await made.close()


def ask(member: str, **limits: Any) -> Ask:
    return Ask(TAG, SCOPE, member, **limits)


async def test_a_learned_window_admits_its_limit_then_says_when(store: Store) -> None:
    verdicts = [await store.reserve(ask(f"m{i}", req_limit=3, req_window=10.0)) for i in range(3)]
    assert [v.ok for v in verdicts] == [True, True, True]
    assert [v.requests for v in verdicts] == [1, 2, 3]
    refused = await store.reserve(ask("m3", req_limit=3, req_window=10.0))
    assert not refused.ok
    assert refused.requests == 3  # a refused send is not counted
    # room again when the oldest send leaves the window
    assert refused.wait == pytest.approx(verdicts[0].now + 10.0, abs=2 * US)
    assert refused.requests_oldest == pytest.approx(verdicts[0].now, abs=US)


async def test_limits_one_process_learned_bind_a_process_that_knows_none(store: Store) -> None:
    await store.settle([Settle(TAG, SCOPE, req_limit=2, req_window=10.0)])
    assert (await store.reserve(ask("a"))).ok
    assert (await store.reserve(ask("b"))).ok
    third = await store.reserve(ask("c"))
    assert not third.ok
    assert (third.req_limit, third.req_window) == (2, pytest.approx(10.0))


async def test_the_longest_window_and_the_latest_limit_are_kept(store: Store) -> None:
    for limit, window in ((5, 5.0), (4, 10.0), (6, 3.0)):
        await store.settle([Settle(TAG, SCOPE, req_limit=limit, req_window=window)])
    v = await store.reserve(ask("x"))
    assert (v.req_limit, v.req_window) == (6, pytest.approx(10.0))
    # a process that knows a smaller limit is held to it
    v = await store.reserve(ask("y", req_limit=1))
    assert not v.ok
    assert v.req_limit == 1


async def test_a_rate_limited_send_is_taken_out(store: Store) -> None:
    first = await store.reserve(ask("a", req_limit=2, req_window=10.0))
    assert (await store.reserve(ask("b", req_limit=2, req_window=10.0))).ok
    assert not (await store.reserve(ask("c", req_limit=2, req_window=10.0))).ok
    await store.settle([Settle(TAG, SCOPE, "a", first.now, 0, refused=True)])
    again = await store.reserve(ask("c", req_limit=2, req_window=10.0))
    assert again.ok
    assert again.requests == 2


async def test_token_estimates_become_real_usage(store: Store) -> None:
    limits = {"tok_limit": 100, "tok_window": 10.0}
    first = await store.reserve(ask("a", tokens=60, **limits))
    assert first.ok
    assert first.tokens == 60
    assert not (await store.reserve(ask("b", tokens=60, **limits))).ok
    await store.settle([Settle(TAG, SCOPE, "a", first.now, 60, 20)])
    second = await store.reserve(ask("b", tokens=60, **limits))
    assert second.ok
    assert second.tokens == 80


async def test_tokens_not_estimated_count_from_the_settle(store: Store) -> None:
    limits = {"tok_limit": 100, "tok_window": 10.0}
    first = await store.reserve(ask("a", **limits))
    assert first.ok
    assert first.tokens == 0
    await store.settle([Settle(TAG, SCOPE, "a", first.now, 0, 95)])
    v = await store.reserve(ask("b", **limits))  # needs one token: 95 + 1 fits
    assert v.ok
    assert v.tokens == 95
    await store.settle([Settle(TAG, SCOPE, "b", v.now, 0, 10)])
    refused = await store.reserve(ask("c", **limits))
    assert not refused.ok
    assert refused.tokens == 105
    assert refused.wait == pytest.approx(first.now + 10.0, abs=2 * US)


async def test_a_configured_rpm_is_one_schedule_for_every_process(store: Store) -> None:
    first = await store.reserve(ask("a", rpm_interval=1.0))
    assert first.ok
    assert first.rpm_tat == pytest.approx(first.now + 1.0, abs=2 * US)
    second = await store.reserve(ask("b", rpm_interval=1.0))
    assert not second.ok
    assert second.wait == pytest.approx(first.now + 1.0, abs=2 * US)


async def test_a_configured_tpm_spaces_tokens(store: Store) -> None:
    first = await store.reserve(ask("a", tokens=30, tpm_interval=0.01))
    assert first.ok
    assert first.tpm_tat == pytest.approx(first.now + 0.3, abs=2 * US)
    assert not (await store.reserve(ask("b", tokens=30, tpm_interval=0.01))).ok


async def test_rpd_counts_the_day(store: Store) -> None:
    first = await store.reserve(ask("a", rpd=2))
    assert (await store.reserve(ask("b", rpd=2))).ok
    third = await store.reserve(ask("c", rpd=2))
    assert not third.ok
    assert third.day_count == 2
    assert third.day_start == pytest.approx(first.now, abs=US)
    assert third.wait == pytest.approx(first.now + DAY, abs=2 * US)


async def test_a_model_cooldown_holds_every_process_on_that_model_only(store: Store) -> None:
    (until,) = await store.change([Change("cool", TAG, SCOPE, 30.0)], origin="p1")
    v = await store.reserve(ask("a"))
    assert not v.ok
    assert v.wait == pytest.approx(until, abs=US)
    assert v.cool == pytest.approx(until, abs=US)
    assert until == pytest.approx(v.now + 30.0, abs=1.0)
    assert (await store.reserve(Ask(TAG, "gpt-4o", "b"))).ok
    # a shorter cooldown does not cut a longer one
    (kept,) = await store.change([Change("cool", TAG, SCOPE, 1.0)], origin="p2")
    assert kept == pytest.approx(until, abs=US)


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.005)


async def test_status_changes_are_pushed_and_read_back(store: Store) -> None:
    heard: list[Event] = []
    ready = asyncio.Event()
    listening = asyncio.ensure_future(store.listen(heard.append, ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        ident = key_ident("openai", "0123456789abcdef")
        await store.change(
            [Change("disable", ident, None, reason="invalid key (HTTP 401)", error="auth")], "p1"
        )
        await _until(lambda: len(heard) == 1, "the disable event")
        event = heard[0]
        assert (event.origin, event.op, event.target, event.scope) == ("p1", "disable", ident, None)
        assert (event.reason, event.error) == ("invalid key (HTTP 401)", "auth")
        snap = await store.status([ident], [])
        assert snap.keys[ident].disabled == "invalid key (HTTP 401)"
        assert snap.keys[ident].error == "auth"

        (until,) = await store.change([Change("cool", ident, None, 12.5)], "p2")
        (model_until,) = await store.change([Change("park", TAG, SCOPE, 40.0)], "p2")
        await _until(lambda: len(heard) == 3, "the cool and park events")
        assert heard[1].until == pytest.approx(until, abs=US)
        assert (heard[2].op, heard[2].target, heard[2].scope) == ("park", TAG, SCOPE)
        assert heard[2].until == pytest.approx(model_until, abs=US)
        snap = await store.status([ident], [(TAG, SCOPE), (TAG, "other")])
        assert snap.keys[ident].cool == pytest.approx(until, abs=US)
        assert snap.budgets[(TAG, SCOPE)][1] == pytest.approx(model_until, abs=US)
        assert (TAG, "other") not in snap.budgets
        assert until == pytest.approx(snap.now + 12.5, abs=1.0)

        await store.change([Change("enable", ident)], "p3")
        await _until(lambda: len(heard) == 4, "the enable event")
        assert heard[3].op == "enable"
        assert (await store.status([ident], [])).keys[ident].disabled is None
    finally:
        listening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listening


async def test_counters_add_up_over_processes(store: Store) -> None:
    a, b = key_ident("openai", "a" * 16), key_ident("groq", "b" * 16)
    await store.add_counts({a: {"usage": 3, "successes": 2}, b: {"failures": 1}})
    await store.add_counts({a: {"usage": 4, "input_tokens": 100}})
    counts = await store.counts([a, b, key_ident("openai", "c" * 16)])
    assert counts[a] == {"usage": 7, "successes": 2, "input_tokens": 100}
    assert counts[b] == {"failures": 1}
    assert counts[key_ident("openai", "c" * 16)] == {}


async def test_heartbeats_count_the_processes_alive(store: Store) -> None:
    _, one = await store.beat("p1", 1.0)
    _, two = await store.beat("p2", 1.0)
    assert (one, two) == (1, 2)
    await store.leave("p2")
    _, left = await store.beat("p1", 1.0)
    assert left == 1


# --- Redis only: the layout ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "scope"),
    [
        (TAG, SCOPE),
        (group_tag("openai", "team-a"), "gpt-4o"),
        (group_tag("gemini", "a {weird} group}"), "models/gemini-2.0-flash"),
        ("claude:fedcba9876543210", "{claude-3-5-sonnet}"),
    ],
)
def test_every_script_touches_one_cluster_slot(tag: str, scope: str) -> None:
    from redis.crc import key_slot

    slots = {key_slot(key.encode()) for key in budget_keys("keymux", tag, scope)}
    assert len(slots) == 1
    ident = tag if ":g:" not in tag else key_ident("openai", "0123456789abcdef")
    assert key_slot(status_key("keymux", ident).encode()) == key_slot(
        counts_key("keymux", ident).encode()
    )


def test_a_group_name_that_could_break_a_hash_tag_is_hashed() -> None:
    assert group_tag("openai", "team-a") == "openai:g:team-a"
    odd = group_tag("openai", "a {weird} group}")
    assert "{" not in odd
    assert "}" not in odd
    assert odd.startswith("openai:g:")


async def test_everything_written_has_a_ttl(redis_server: Any, redis_prefix: str) -> None:
    from keymux.state._redis import RedisStore

    made = RedisStore(parse_state_url(redis_server.url(redis_prefix)))
    ident = key_ident("openai", "0123456789abcdef")
    try:
        v = await made.reserve(Ask(TAG, SCOPE, "a", 5, 10, 10.0, 100, 10.0, 1.0, 0.01, 1000))
        await made.settle([Settle(TAG, SCOPE, "a", v.now, 5, 7, False, 10, 10.0, 100, 10.0)])
        await made.change(
            [
                Change("disable", ident, None, reason="r", error="auth"),
                Change("cool", ident, None, 5.0),
                Change("park", TAG, SCOPE, 5.0),
            ],
            "p1",
        )
        await made.add_counts({ident: {"usage": 1}})
        await made.beat("p1", 1.0)
    finally:
        await made.close()
    client: Any = redis_server.client()
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{redis_prefix}:*"))
    base = f"{redis_prefix}:{{{TAG}}}"
    assert keys == sorted(
        [f"{base}:{kind}:{SCOPE}" for kind in ("rq", "tk", "tt", "lm")]
        + [f"{base}:st", f"{base}:n", f"{redis_prefix}:procs"]
    )
    for key in keys:
        assert client.pttl(key) > 0, key
    client.close()


def test_state_urls_are_parsed_and_masked() -> None:
    from keymux import ConfigError

    spec = parse_state_url("redis://:s3cret@db.example:6380/2?prefix=app1&timeout=0.05")
    assert (spec.kind, spec.prefix, spec.timeout) == ("redis", "app1", 0.05)
    assert spec.masked == "redis://:***@db.example:6380/2"
    assert "prefix" not in spec.driver_url
    assert "s3cret" not in repr(spec)
    assert parse_state_url("rediss://u:p@h/0").masked == "rediss://u:***@h/0"
    unix = parse_state_url("redis+unix:///run/redis.sock?db=3")
    assert unix.driver_url == "unix:///run/redis.sock?db=3"
    cluster = parse_state_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
    assert cluster.kind == "cluster"
    assert not parse_state_url("memory://").shared
    for bad, message in (
        ("memcached://h", "memcached:// is not known"),
        ("redis", "takes a URL"),
        ("redis:///0", "needs a host"),
        ("redis://h/0?timeout=0", "timeout="),
        ("redis://h/0?prefix=a b", "prefix="),
        ("memory://somewhere", "takes nothing"),
        ("redis+unix://", "socket path"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_state_url(bad)


async def test_scripts_lost_by_the_server_are_loaded_again(
    redis_server: Any, redis_prefix: str
) -> None:
    from keymux.state._redis import RedisStore

    made = RedisStore(parse_state_url(redis_server.url(redis_prefix)))
    ident = key_ident("openai", "0123456789abcdef")
    try:
        await made.change([Change("cool", ident, None, 5.0)], "p1")
        client: Any = redis_server.client()
        client.script_flush()  # what a restart does
        client.close()
        first = await made.reserve(ask("a", req_limit=5, req_window=10.0))
        assert first.ok
        await made.settle([Settle(TAG, SCOPE, "a", first.now, 0, refused=True)])
        await made.change([Change("park", ident, None, 5.0)], "p1")
        snap = await made.status([ident], [])
        assert snap.keys[ident].park > snap.now
        assert (await made.reserve(ask("b", req_limit=5, req_window=10.0))).requests == 1
    finally:
        await made.close()


async def test_a_key_disabled_by_another_process_is_refused_at_reserve(store: Store) -> None:
    ident = TAG  # a key of no group: its budget's tag is its ident
    await store.change([Change("disable", ident, None, reason="invalid key (HTTP 401)")], "p1")
    v = await store.reserve(Ask(TAG, SCOPE, "a", key=ident))
    assert not v.ok
    assert v.disabled == "invalid key (HTTP 401)"
    assert v.requests == 0
    # a group's budget does not name the key (another slot): it is not refused for it
    assert (await store.reserve(Ask(TAG, SCOPE, "b"))).ok
    await store.change([Change("enable", ident)], "p2")
    again = await store.reserve(Ask(TAG, SCOPE, "c", key=ident))
    assert again.ok
    assert again.disabled is None
