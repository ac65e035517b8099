"""One lane per key: bounded waiting queue, concurrency slots, status, counters.

Lanes are plain state; the core (``_core.py``) drives them on its event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

from ._config import KeySpec, Timeout
from ._ratelimit import Budget, Reservation
from ._secret import Secret
from ._types import Prepared
from .providers import Adapter

__all__ = ["Lane", "Request", "Waiter"]

WAITING, GRANTED, GONE = 0, 1, 2


@dataclass(slots=True, eq=False)
class Request:
    """One call, as the core sees it. Plain data; no I/O."""

    provider: str
    endpoint: str  # "chat" / "embed" (read by the adapter), or "forward" (passed through)
    prepared: Prepared  # what each attempt sends, but the key and the base URL
    timeout: Timeout  # one attempt
    pin: str | None = None  # key name for "specific"
    strategy: Any = None  # a Strategy callable
    deadline_at: float | None = None  # clock time the whole call must end by
    tokens: int = 0  # estimate reserved from token budgets
    avoid: set[str] | None = None  # keys this request must not go back to (made when needed)
    reservation: Reservation | None = None

    def shun(self, name: str) -> None:
        """Never send this request to key ``name`` again."""
        if self.avoid is None:
            self.avoid = {name}
        else:
            self.avoid.add(name)

    lane_name: str | None = None  # the key of the current (or last) attempt


class Waiter:
    """A request waiting in a lane's queue for a slot."""

    __slots__ = ("future", "lane", "req", "seq", "state")

    def __init__(self, req: Request, future: asyncio.Future[Lane], lane: Lane, seq: int) -> None:
        self.req = req
        self.future = future
        self.lane = lane  # the lane whose queue counts it
        self.seq = seq
        self.state = WAITING


class Lane:
    """A key's lane. Attributes double as the ``LaneView`` strategies read."""

    __slots__ = (
        "adapter",
        "base_url",
        "budget",
        "disabled_at",
        "disabled_error",
        "disabled_reason",
        "enabled",
        "fail_streak",
        "failures",
        "group",
        "headroom",
        "in_flight",
        "input_tokens",
        "last_used",
        "latency",
        "max_concurrent",
        "n_waiting",
        "name",
        "output_tokens",
        "probe_at",
        "provider",
        "queue",
        "quota_strikes",
        "rate_limited",
        "removed",
        "retries",
        "secret",
        "source",
        "spec",
        "successes",
        "timer",
        "timer_at",
        "usage",
        "weight",
    )

    def __init__(
        self,
        spec: KeySpec,
        adapter: Adapter,
        *,
        max_concurrent: int,
        budget: Budget,
    ) -> None:
        self.spec = spec
        self.provider = spec.provider
        self.name = spec.name
        self.secret: Secret = spec.secret
        self.source = spec.source
        self.adapter = adapter
        self.base_url = spec.base_url or adapter.default_base_url
        self.max_concurrent = spec.max_concurrent or max_concurrent
        self.weight = spec.weight
        self.group = spec.group
        self.budget = budget
        #: LaneView.headroom(now): the budget's own method, one call less on the hot path
        self.headroom = budget.headroom
        self.enabled = True
        self.removed = False
        self.disabled_reason: str | None = None
        #: what a request pinned to this key fails with while it is disabled
        self.disabled_error: type[Any] | None = None
        self.disabled_at: float | None = None  # wall time
        self.probe_at: float | None = None
        self.quota_strikes = 0  # billing failures since the last success
        self.in_flight = 0
        self.queue: deque[Waiter] = deque()
        self.n_waiting = 0
        self.last_used = 0.0
        self.latency = 0.0  # moving average of answer latency, seconds
        self.usage = 0
        self.successes = 0
        self.failures = 0
        self.fail_streak = 0  # server/transport failures in a row
        self.retries = 0
        self.rate_limited = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.timer: Any = None
        self.timer_at = 0.0

    # LaneView
    @property
    def waiting(self) -> int:
        return self.n_waiting

    def observe_latency(self, seconds: float) -> None:
        self.latency = seconds if self.latency == 0.0 else self.latency * 0.8 + seconds * 0.2

    def status(self, now: float) -> str:
        if self.removed:
            return "removed"
        if not self.enabled:
            return "disabled"
        if self.budget.parked_until > now:
            return "parked"
        if self.budget.cooldown_until > now:
            return "cooling"
        return "active"

    def __repr__(self) -> str:
        return (
            f"<keymux.Lane {self.provider}/{self.name} key={self.secret.masked} "
            f"in_flight={self.in_flight}/{self.max_concurrent} waiting={self.n_waiting}"
            f"{'' if self.enabled else ' disabled'}>"
        )
