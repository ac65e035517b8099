"""One lane per key: bounded waiting queue, concurrency slots, status, counters.

Lanes are plain state; the dispatcher and the core drive them on the core's event loop.

Providers limit each model separately, so a lane's rate budgets live in a ``BudgetBook``: one
``Budget`` per model *scope* (the model, or for Anthropic its model class), made on first use
with the key's configured rpm/tpm/rpd. Keys of one ``group`` share one book. What concerns the
key itself — disabled, a cooldown after server errors or timeouts, its concurrency slots —
stays on the lane.
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

__all__ = ["BudgetBook", "Lane", "Request", "Waiter"]

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
    scope: str = ""  # whose limits it spends: the model (or model class) it asks for
    avoid: set[str] | None = None  # keys this request must not go back to (made when needed)
    reservation: Reservation | None = None
    budget: Budget | None = None  # the budget the current attempt took from
    ticket: Any = None  # the shared state's record of the current attempt (redis:// only)

    def shun(self, name: str) -> None:
        """Never send this request to key ``name`` again."""
        if self.avoid is None:
            self.avoid = {name}
        else:
            self.avoid.add(name)

    lane_name: str | None = None  # the key of the current (or last) attempt


class BudgetBook:
    """The rate budgets of one key, or of every key of one group: one per model scope."""

    __slots__ = ("by_scope", "rpd", "rpm", "tpm")

    def __init__(self, *, rpm: float | None, tpm: float | None, rpd: float | None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.rpd = rpd
        #: scope -> its budget (read directly on the hot path; made by ``get``)
        self.by_scope: dict[str, Budget] = {}

    def get(self, scope: str) -> Budget:
        """The budget of ``scope``, made on first use (configured limits apply to each)."""
        budget = self.by_scope.get(scope)
        if budget is None:
            budget = self.by_scope[scope] = Budget(rpm=self.rpm, tpm=self.tpm, rpd=self.rpd)
        return budget

    def items(self) -> list[tuple[str, Budget]]:
        return list(self.by_scope.items())

    def __repr__(self) -> str:
        return f"BudgetBook({', '.join(self.by_scope) or 'empty'})"


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
        "answered",
        "asked",
        "base_url",
        "book",
        "cap",
        "cooldown_until",
        "disabled_at",
        "disabled_error",
        "disabled_reason",
        "enabled",
        "fail_streak",
        "failures",
        "group",
        "idle",
        "in_flight",
        "input_tokens",
        "last_used",
        "latency",
        "max_concurrent",
        "n_waiting",
        "name",
        "output_tokens",
        "parked_until",
        "priority",
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
        book: BudgetBook,
        idle: dict[Lane, None],
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
        self.priority = spec.priority
        self.book = book
        #: the scope whose budget ``headroom`` reports: set by dispatch before a strategy runs
        self.asked = ""
        #: the idle set of this lane's priority tier (dispatch keeps it)
        self.idle = idle
        #: slow start: one request until the key's first answer, then ``max_concurrent``
        self.answered = False
        self.cap = 1
        #: the key's own cooldown and pause (server errors, timeouts); rate limits are the
        #: budgets' business, per model
        self.cooldown_until = 0.0
        self.parked_until = 0.0
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

    def headroom(self, now: float) -> float:
        """How much of the budget of the model being placed is left, 0..1."""
        if self.cooldown_until > now or self.parked_until > now:
            return 0.0
        return self.book.get(self.asked).headroom(now)

    def held_until(self, now: float) -> float:
        """When the key itself may send again (``now`` if it may): its own cooldown."""
        until = (
            self.cooldown_until if self.cooldown_until > self.parked_until else self.parked_until
        )
        return until if until > now else now

    def ready_at(self, now: float, scope: str, tokens: int) -> float:
        """When a request of ``scope`` estimated at ``tokens`` may go out on this key."""
        held = self.held_until(now)
        ready = self.book.get(scope).ready_at(now, tokens)
        return ready if ready > held else held

    def observe_latency(self, seconds: float) -> None:
        self.latency = seconds if self.latency == 0.0 else self.latency * 0.8 + seconds * 0.2

    def status(self, now: float) -> str:
        """removed, disabled, parked, cooling or active: the key's own state, or the worst of
        its models' (a key whose one model is rate limited is "cooling")."""
        if self.removed:
            return "removed"
        if not self.enabled:
            return "disabled"
        budgets = [budget for _, budget in self.book.items()]
        if self.parked_until > now or any(b.parked_until > now for b in budgets):
            return "parked"
        if self.cooldown_until > now or any(b.cooldown_until > now for b in budgets):
            return "cooling"
        return "active"

    def __repr__(self) -> str:
        return (
            f"<keymux.Lane {self.provider}/{self.name} key={self.secret.masked} "
            f"in_flight={self.in_flight}/{self.cap} waiting={self.n_waiting}"
            f"{'' if self.enabled else ' disabled'}>"
        )
