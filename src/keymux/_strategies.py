"""Key-selection strategies: pure functions from candidate lanes to one lane.

The core passes the lanes that could take the request (at most ``CANDIDATES`` of them, the
least recently used first), so a choice costs the same at 10 keys or 10,000. A strategy is any
callable ``(candidates, now) -> candidate``; users may pass their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Protocol, TypeVar

from ._errors import ConfigError

__all__ = [
    "CANDIDATES",
    "STRATEGIES",
    "LaneView",
    "Strategy",
    "least_loaded",
    "rate_aware",
    "resolve_strategy",
    "round_robin",
    "weighted",
]

#: how many lanes a strategy chooses among
CANDIDATES = 8


class LaneView(Protocol):
    """What a strategy may look at."""

    @property
    def name(self) -> str: ...
    @property
    def last_used(self) -> float: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    @property
    def usage(self) -> int: ...
    @property
    def weight(self) -> float: ...
    @property
    def latency(self) -> float: ...

    def headroom(self, now: float) -> float: ...


L = TypeVar("L", bound=LaneView)
Strategy = Callable[[Sequence[L], float], L]


def round_robin(candidates: Sequence[L], now: float) -> L:
    """The least recently used key."""
    return min(candidates, key=lambda lane: lane.last_used)


def least_loaded(candidates: Sequence[L], now: float) -> L:
    """The key with the fewest requests queued plus in flight; least recently used on a tie."""
    return min(candidates, key=lambda lane: (lane.waiting + lane.in_flight, lane.last_used))


def weighted(candidates: Sequence[L], now: float) -> L:
    """Share requests in proportion to each key's ``weight`` (smooth weighted round-robin)."""
    return min(
        candidates,
        key=lambda lane: ((lane.usage + lane.in_flight + 1) / lane.weight, lane.last_used),
    )


def rate_aware(candidates: Sequence[L], now: float) -> L:
    """The key with the most rate budget left relative to its limits (configured or learned);
    fewer in flight, lower latency (to the millisecond), then least recently used, on a tie."""
    best = candidates[0]
    best_key: tuple[int, int, int, float] | None = None
    for lane in candidates:
        key = (
            -round(lane.headroom(now) * 100),
            lane.in_flight,
            round(lane.latency * 1000),
            lane.last_used,
        )
        if best_key is None or key < best_key:
            best, best_key = lane, key
    return best


#: the built-in strategies by name (read-only; ``"specific"`` is ``key_name=``, not a function)
STRATEGIES: Mapping[str, Strategy[LaneView]] = MappingProxyType(
    {
        "round-robin": round_robin,
        "least-loaded": least_loaded,
        "weighted": weighted,
        "rate-aware": rate_aware,
    }
)

_ALIASES = {
    "round_robin": "round-robin",
    "least_loaded": "least-loaded",
    "rate_aware": "rate-aware",
    "lru": "round-robin",
}


def resolve_strategy(strategy: str | Strategy[LaneView]) -> tuple[str, Strategy[LaneView]]:
    """(name, function) for a strategy name or a user's callable; ConfigError if unknown."""
    if callable(strategy):
        return getattr(strategy, "__name__", "custom"), strategy
    if not isinstance(strategy, str):
        raise ConfigError(f"strategy must be a name or a callable, got {type(strategy).__name__}")
    name = _ALIASES.get(strategy, strategy)
    if name == "specific":
        raise ConfigError('strategy "specific" needs key_name= (the key to pin requests to)')
    if name not in STRATEGIES:
        known = ", ".join(["specific", *STRATEGIES])
        raise ConfigError(f"unknown strategy {strategy!r}: use one of {known}")
    return name, STRATEGIES[name]
