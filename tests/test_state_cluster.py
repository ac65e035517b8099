"""``redis+cluster://``: a real Redis Cluster of three masters started here (a few seconds).

Every script's keys hash to one slot (``CLUSTER KEYSLOT`` says so, not only redis-py's own
function), budgets of different keys spread over the masters, and a change pushed through
one node reaches a process subscribed at another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import StartEmulator, fake_key
from keymux import AuthenticationError, Multiplexer
from keymux.emulator import EmulatorKey
from keymux.state._keys import budget_keys, counts_key, group_tag, key_ident, status_key
from redis_support import RedisCluster, start_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    made = start_cluster(Path(tmp_path_factory.mktemp("cluster")))
    yield made
    made.stop()


def test_every_script_s_keys_share_one_slot_in_a_real_cluster(cluster: RedisCluster) -> None:
    import redis

    node = redis.Redis(host="127.0.0.1", port=cluster.nodes[0].port, socket_timeout=5)
    try:
        for tag, scope in (
            (key_ident("openai", "0123456789abcdef"), "gpt-4o-mini"),
            (group_tag("gemini", "project-x"), "models/gemini-2.0-flash"),
            (group_tag("openai", "odd {group}"), "{weird}model"),
        ):
            slots = {node.cluster("KEYSLOT", key) for key in budget_keys("keymux", tag, scope)}
            assert len(slots) == 1, (tag, scope, slots)
        ident = key_ident("claude", "fedcba9876543210")
        assert node.cluster("KEYSLOT", status_key("keymux", ident)) == node.cluster(
            "KEYSLOT", counts_key("keymux", ident)
        )
    finally:
        node.close()


async def test_processes_share_through_a_cluster(
    cluster: RedisCluster, start_emulator: StartEmulator
) -> None:
    names = [f"k{i}" for i in range(6)]
    server = start_emulator(*(EmulatorKey("openai", fake_key("openai", n), label=n) for n in names))
    group = []
    for _ in range(2):
        # about sharing through the cluster, not about a node slowed by a busy machine: a
        # generous timeout (the hot path's default, 0.1 s, counts a slow call as an outage)
        mux = Multiplexer(state=cluster.url + "?prefix=cl&timeout=2", initial_retry_delay=0.01)
        for name in names:
            mux.add_key(
                "openai", name, fake_key("openai", name), base_url=server.base_url("openai")
            )
        group.append(mux)
    try:
        answers = await asyncio.gather(
            *(group[i % 2].get_openai_client().acall("chat", messages=MESSAGES) for i in range(36))
        )
        assert len(answers) == 36
        for mux in group:
            shared = mux._core.shared
            assert shared is not None
            assert shared.up
            assert shared.outages == 0
            assert shared.reserves >= 1
        # the budgets landed on more than one master
        masters_used = 0
        for node in cluster.nodes:
            client: Any = node.client()
            masters_used += bool(list(client.scan_iter(match="cl:*:rq:*")))
            client.close()
        assert masters_used >= 2

        server.set_faults(fake_key("openai", "k0"), revoked=True)
        with pytest.raises(AuthenticationError):
            await group[0].get_openai_client(key_name="k0").acall("chat", messages=MESSAGES)
        other = group[1]._core.dispatch.providers["openai"].lanes["k0"]
        for _ in range(500):
            if not other.enabled:
                break
            await asyncio.sleep(0.01)
        assert not other.enabled, "the other process did not hear of the revoked key"
        # every process adds its counters each half second: a bounded poll for the other's
        for _ in range(100):
            every = (await group[1].aget_usage_stats(all_processes=True))["openai"]
            if sum(s["successes"] for s in every.values()) >= 36:
                break
            await asyncio.sleep(0.05)
        assert sum(s["successes"] for s in every.values()) == 36
    finally:
        for mux in group:
            await mux.aclose()
