"""The store interface: the facts every process using one state URL shares, and the memory one.

A store keeps, per key (by provider and fingerprint, never the secret) and per budget (a key's
own, or its group's) and model scope:

* the budget's sends of the last window (requests, and tokens by amount), learned limits
  (the smallest limit and the longest window any process saw), configured-rate schedules
  (GCRA theoretical arrival times), the day's request count, and model cooldowns;
* the key's status: disabled (with reason), cooling until, parked until;
* the key's counters, summed over every process;
* which processes are alive (heartbeats).

Every time is the *store's* (Redis's ``TIME``): callers map it to their own clock. ``reserve``
is one atomic step (may this send go, and if so count it); everything else may be batched.

``MemoryStore`` is the same contract inside one process (what the contract tests hold both
stores to, and what two multiplexers in one process can share in tests). ``Multiplexer`` with
``memory://`` needs no store at all: its lanes and budgets are the whole state.
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .. import _stats

__all__ = [
    "COUNTERS",
    "DAY",
    "DEFAULT_SPAN",
    "Ask",
    "Change",
    "Event",
    "KeyStatus",
    "MemoryStore",
    "Settle",
    "Snapshot",
    "Store",
    "StoreError",
    "Verdict",
]

#: a log keeps this long while its window is unknown (a provider's minute, the common case)
DEFAULT_SPAN = 60.0
DAY = 86400.0
#: a configured rate admits a send this early (the caller's mapping of the store's clock is
#: off by about half a round trip)
GCRA_TOLERANCE = 0.001
#: the slack of the configured-rate schedule (``_ratelimit.GCRA_SLACK``)
GCRA_SLACK = 0.1
#: the counters shared per key (``Lane`` attributes)
COUNTERS = _stats.COUNTERS


class StoreError(Exception):
    """The store could not be reached or did not answer in time (the driver's error is the
    cause). Callers go on with their local state."""


@dataclass(slots=True)
class Ask:
    """One send asking to go: its budget (hash tag) and model scope, an id, its token
    estimate, and what the asking process knows of the limits (0: nothing)."""

    tag: str
    scope: str
    member: str
    tokens: int = 0
    req_limit: float = 0.0
    req_window: float = 0.0
    tok_limit: float = 0.0
    tok_window: float = 0.0
    rpm_interval: float = 0.0  # seconds per request of a configured rpm
    tpm_interval: float = 0.0  # seconds per token of a configured tpm
    rpd: float = 0.0
    #: the key's ident when its status shares the budget's tag (a key of no group): a key
    #: another process disabled is refused at once ("" for a group's budget)
    key: str = ""


@dataclass(slots=True)
class Verdict:
    """The store's answer to an ``Ask``. Times are the store's; 0 means none."""

    ok: bool
    now: float
    requests: int = 0  # sends in the request window (this one included when ok)
    requests_oldest: float = 0.0
    tokens: int = 0  # tokens in the token window
    tokens_oldest: float = 0.0
    req_limit: float = 0.0  # the limits every process learned, merged
    req_window: float = 0.0
    tok_limit: float = 0.0
    tok_window: float = 0.0
    rpm_tat: float = 0.0
    tpm_tat: float = 0.0
    day_count: int = 0
    day_start: float = 0.0
    wait: float = 0.0  # not ok: when it may go
    cool: float = 0.0  # the model's cooldown / parking on this budget
    park: float = 0.0
    disabled: str | None = None  # the key is disabled (its reason), when the ask named it
    error: str = ""


@dataclass(slots=True)
class Settle:
    """A correction after the answer: real token usage for the estimate (``actual``, -1 to
    keep it), a refused send taken out (providers do not count rate-limited requests), and
    learned limits to record. ``sent`` 0: no send, only limits."""

    tag: str
    scope: str
    member: str = ""
    sent: float = 0.0
    estimate: int = 0
    actual: int = -1
    refused: bool = False
    req_limit: float = 0.0
    req_window: float = 0.0
    tok_limit: float = 0.0
    tok_window: float = 0.0


@dataclass(slots=True)
class Change:
    """A status change: ``op`` "disable" / "enable" / "cool" / "park" of a key (``scope``
    None; ``target`` its ident) or of one model of a budget (``target`` its tag)."""

    op: str
    target: str
    scope: str | None = None
    seconds: float = 0.0
    reason: str = ""
    error: str = ""  # what a disabled key's pinned requests fail with: "auth" or "quota"


@dataclass(slots=True)
class Event:
    """A change as every process hears it; ``until`` in store time (cool/park)."""

    origin: str
    op: str
    target: str
    scope: str | None
    until: float = 0.0
    reason: str = ""
    error: str = ""


@dataclass(slots=True)
class KeyStatus:
    disabled: str | None = None
    error: str = ""
    cool: float = 0.0
    park: float = 0.0


@dataclass(slots=True)
class Snapshot:
    """Statuses read back (the periodic backstop), at store time ``now``."""

    now: float
    keys: dict[str, KeyStatus] = field(default_factory=dict)
    budgets: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)


class Store(abc.ABC):
    """Where the shared facts live. Every method may raise ``StoreError``."""

    #: the URL, password masked
    url: str = ""

    async def connect(self) -> None:  # noqa: B027 - nothing to do for most stores
        """Ready the connection on the running loop."""

    async def close(self) -> None:  # noqa: B027
        """Close connections (the next ``connect`` opens them again)."""

    def forget(self) -> None:  # noqa: B027
        """After fork: drop the parent's connections without touching them."""

    @abc.abstractmethod
    async def reserve(self, ask: Ask) -> Verdict:
        """May this send go? When it may, it is counted, atomically."""

    @abc.abstractmethod
    async def settle(self, items: Sequence[Settle]) -> None:
        """Apply corrections (batched: one round trip)."""

    @abc.abstractmethod
    async def change(self, changes: Sequence[Change], origin: str) -> list[float]:
        """Record status changes and push each to every listener; for cool/park, the store
        time it lasts until (0 for the others)."""

    @abc.abstractmethod
    async def status(self, keys: Sequence[str], budgets: Sequence[tuple[str, str]]) -> Snapshot:
        """The recorded status of these keys and budget scopes."""

    @abc.abstractmethod
    async def add_counts(self, deltas: Mapping[str, Mapping[str, int]]) -> None:
        """Add to keys' counters."""

    @abc.abstractmethod
    async def counts(self, keys: Sequence[str]) -> dict[str, dict[str, int]]:
        """Keys' counters, summed over every process."""

    @abc.abstractmethod
    async def beat(self, process: str, every: float) -> tuple[float, int]:
        """``process`` is alive; (store time, processes alive: beaten in the last 3 x
        ``every`` seconds)."""

    @abc.abstractmethod
    async def leave(self, process: str) -> None:
        """``process`` is going."""

    @abc.abstractmethod
    async def listen(self, handler: Callable[[Event], None], ready: Callable[[], None]) -> None:
        """Call ``handler`` with every change pushed (its own ones too) until cancelled;
        ``ready`` once subscribed. Raises StoreError when the subscription breaks."""


# --- one process ----------------------------------------------------------------------------


class _Log:
    """Sends of a window, oldest first: (time, member, amount)."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: list[tuple[float, str, int]] = []
        self.total = 0

    def prune(self, horizon: float) -> None:
        entries = self.entries
        cut = 0
        while cut < len(entries) and entries[cut][0] <= horizon:
            self.total -= entries[cut][2]
            cut += 1
        if cut:
            del entries[:cut]

    def add(self, at: float, member: str, amount: int) -> None:
        bisect.insort(self.entries, (at, member, amount))
        self.total += amount

    def remove(self, member: str) -> int:
        for i, (_, m, amount) in enumerate(self.entries):
            if m == member:
                del self.entries[i]
                self.total -= amount
                return amount
        return -1

    def frees_at(self, excess: float) -> float:
        freed = 0
        for at, _, amount in self.entries:
            freed += amount
            if freed >= excess:
                return at
        return self.entries[-1][0] if self.entries else 0.0


class _Budget:
    __slots__ = (
        "cool",
        "day_count",
        "day_start",
        "park",
        "req_limit",
        "req_window",
        "requests",
        "rpm_tat",
        "tok_limit",
        "tok_window",
        "tokens",
        "tpm_tat",
    )

    def __init__(self) -> None:
        self.requests = _Log()
        self.tokens = _Log()
        self.req_limit = self.req_window = self.tok_limit = self.tok_window = 0.0
        self.rpm_tat = self.tpm_tat = 0.0
        self.day_count = 0
        self.day_start = 0.0
        self.cool = self.park = 0.0


def _low(mine: float, theirs: float) -> float:
    """The smaller known limit (0: unknown)."""
    if mine > 0 and theirs > 0:
        return min(mine, theirs)
    return max(mine, theirs)


class MemoryStore(Store):
    """The store's contract in this process, on ``clock`` (default ``time.time``)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.url = "memory://"
        self._clock = clock
        self._budgets: dict[tuple[str, str], _Budget] = {}
        self._keys: dict[str, KeyStatus] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self._procs: dict[str, float] = {}
        self._listeners: list[Callable[[Event], None]] = []

    def _budget(self, tag: str, scope: str) -> _Budget:
        b = self._budgets.get((tag, scope))
        if b is None:
            b = self._budgets[(tag, scope)] = _Budget()
        return b

    async def reserve(self, ask: Ask) -> Verdict:
        now = self._clock()
        b = self._budget(ask.tag, ask.scope)
        rl = _low(ask.req_limit, b.req_limit)
        rw = max(ask.req_window, b.req_window)
        tl = _low(ask.tok_limit, b.tok_limit)
        tw = max(ask.tok_window, b.tok_window)
        wait = 0.0
        ok = True
        found = self._keys.get(ask.key) if ask.key else None
        disabled = None if found is None else found.disabled
        if disabled is not None:
            ok = False

        def hold(until: float) -> None:
            nonlocal ok, wait
            ok = False
            wait = max(wait, until)

        if b.cool > now:
            hold(b.cool)
        if b.park > now:
            hold(b.park)
        rspan = rw or DEFAULT_SPAN
        b.requests.prune(now - rspan)
        count = b.requests.total
        if rl > 0 and count + 1 > rl:
            hold(b.requests.entries[int(count - rl)][0] + rspan)
        tspan = tw or DEFAULT_SPAN
        b.tokens.prune(now - tspan)
        need = ask.tokens if ask.tokens > 0 else 1
        if tl > 0:
            need = min(need, int(tl))
            if b.tokens.total + need > tl:
                hold(b.tokens.frees_at(b.tokens.total + need - tl) + tspan)
        if ask.rpm_interval > 0 and b.rpm_tat > now + GCRA_TOLERANCE:
            hold(b.rpm_tat)
        if ask.tpm_interval > 0 and ask.tokens > 0 and b.tpm_tat > now + GCRA_TOLERANCE:
            hold(b.tpm_tat)
        if ask.rpd > 0:
            if b.day_start + DAY <= now:
                b.day_count = 0
            if b.day_count + 1 > ask.rpd:
                hold(b.day_start + DAY)
        if ok:
            b.requests.add(now, ask.member, 1)
            if ask.tokens > 0:
                b.tokens.add(now, ask.member, ask.tokens)
            if ask.rpm_interval > 0:
                b.rpm_tat = _gcra(b.rpm_tat, now, ask.rpm_interval, 1)
            if ask.tpm_interval > 0 and ask.tokens > 0:
                b.tpm_tat = _gcra(b.tpm_tat, now, ask.tpm_interval, ask.tokens)
            if ask.rpd > 0:
                if b.day_count == 0:
                    b.day_start = now
                b.day_count += 1
        return Verdict(
            ok=ok,
            now=now,
            requests=b.requests.total,
            requests_oldest=b.requests.entries[0][0] if b.requests.entries else 0.0,
            tokens=b.tokens.total,
            tokens_oldest=b.tokens.entries[0][0] if b.tokens.entries else 0.0,
            req_limit=rl,
            req_window=rw,
            tok_limit=tl,
            tok_window=tw,
            rpm_tat=b.rpm_tat,
            tpm_tat=b.tpm_tat,
            day_count=b.day_count,
            day_start=b.day_start,
            wait=0.0 if ok else wait,
            cool=b.cool,
            park=b.park,
            disabled=disabled,
            error="" if found is None else found.error,
        )

    async def settle(self, items: Sequence[Settle]) -> None:
        now = self._clock()
        for item in items:
            b = self._budget(item.tag, item.scope)
            if item.sent > 0:
                actual = 0 if item.refused else item.actual
                if item.refused:
                    b.requests.remove(item.member)
                if actual >= 0 and actual != item.estimate:
                    if item.estimate > 0:
                        b.tokens.remove(item.member)
                    span = max(item.tok_window, b.tok_window) or DEFAULT_SPAN
                    if actual > 0 and item.sent > now - span:
                        b.tokens.add(item.sent, item.member, actual)
            if item.req_limit > 0:
                b.req_limit = item.req_limit
            b.req_window = max(b.req_window, item.req_window)
            if item.tok_limit > 0:
                b.tok_limit = item.tok_limit
            b.tok_window = max(b.tok_window, item.tok_window)

    async def change(self, changes: Sequence[Change], origin: str) -> list[float]:
        now = self._clock()
        out: list[float] = []
        for c in changes:
            until = 0.0
            if c.scope is None:
                status = self._keys.setdefault(c.target, KeyStatus())
                if c.op == "disable":
                    status.disabled, status.error = c.reason, c.error
                elif c.op == "enable":
                    status.disabled, status.error = None, ""
                else:
                    until = max(getattr(status, c.op), now + c.seconds)
                    setattr(status, c.op, until)
            else:
                b = self._budget(c.target, c.scope)
                until = max(getattr(b, c.op), now + c.seconds)
                setattr(b, c.op, until)
            out.append(until)
            event = Event(origin, c.op, c.target, c.scope, until, c.reason, c.error)
            for handler in list(self._listeners):
                handler(event)
        return out

    async def status(self, keys: Sequence[str], budgets: Sequence[tuple[str, str]]) -> Snapshot:
        snap = Snapshot(self._clock())
        for ident in keys:
            found = self._keys.get(ident)
            if found is not None:
                snap.keys[ident] = KeyStatus(found.disabled, found.error, found.cool, found.park)
        for tag, scope in budgets:
            b = self._budgets.get((tag, scope))
            if b is not None and (b.cool or b.park):
                snap.budgets[(tag, scope)] = (b.cool, b.park)
        return snap

    async def add_counts(self, deltas: Mapping[str, Mapping[str, int]]) -> None:
        for ident, fields in deltas.items():
            mine = self._counts.setdefault(ident, {})
            for name, value in fields.items():
                mine[name] = mine.get(name, 0) + value

    async def counts(self, keys: Sequence[str]) -> dict[str, dict[str, int]]:
        return {ident: dict(self._counts.get(ident, {})) for ident in keys}

    async def beat(self, process: str, every: float) -> tuple[float, int]:
        now = self._clock()
        self._procs[process] = now
        for name, seen in list(self._procs.items()):
            if seen <= now - 3 * every:
                del self._procs[name]
        return now, len(self._procs)

    async def leave(self, process: str) -> None:
        self._procs.pop(process, None)

    async def listen(self, handler: Callable[[Event], None], ready: Callable[[], None]) -> None:
        self._listeners.append(handler)
        ready()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            self._listeners.remove(handler)


def _gcra(tat: float, now: float, interval: float, units: float) -> float:
    """The schedule after ``units`` at ``now`` (as ``_ratelimit.Gcra.take``)."""
    if now - tat > min(interval, GCRA_SLACK):
        tat = now
    return tat + units * interval
