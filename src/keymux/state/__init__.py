"""Shared state: the facts of keys and budgets that every process using one URL shares.

    _url      state URLs (memory://, redis://, rediss://, redis+unix://, redis+cluster://)
    _store    the store interface, its data, and the in-process MemoryStore
    _keys     names in the store: keys by provider and fingerprint, budgets by hash tag
    _lua      the Redis scripts (reserve, settle, status, heartbeat), on Redis's own clock
    _redis    the Redis store (redis-py asyncio with hiredis, imported lazily)
    _shared   the bridge between one core and a store: reserve on the hot path, settles,
              status pushed and pulled, counters, the fallback when the store is away

A store is chosen by the URL's scheme from a table, as in the ``limits`` library. With
``memory://`` there is no store at all: one process's lanes and budgets are the whole state,
and the hot path does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from .._clock import Clock
from ._shared import Shared
from ._store import MemoryStore, Store, StoreError
from ._url import SCHEMES, StateURL, parse_state_url

__all__ = [
    "SCHEMES",
    "MemoryStore",
    "Shared",
    "StateURL",
    "Store",
    "StoreError",
    "open_state",
    "parse_state_url",
]


def _redis(spec: StateURL) -> Store:
    from ._redis import RedisStore

    return RedisStore(spec)


#: store kind -> its factory (``memory`` needs none)
STORES: dict[str, Callable[[StateURL], Store]] = {"redis": _redis, "cluster": _redis}


def open_state(url: str, *, clock: Clock) -> Shared | None:
    """The bridge for a state URL (None for ``memory://``: no store at all). ConfigError for a
    bad URL or a missing driver (naming ``pip install 'keymux[redis]'``)."""
    spec = parse_state_url(url)
    if not spec.shared:
        return None
    return Shared(STORES[spec.kind](spec), clock=clock, timeout=spec.timeout)
