"""Dispatch: which lane a request goes to, and when. Plain state changes, no I/O.

Dispatch keeps these facts true:

* a lane never has more than ``max_concurrent`` requests in flight nor ``queue_size`` waiting
  (and one request only, until the key's first answer: slow start);
* a lane that can send (free slot, budget for the request's model, not cooling) never idles
  while unpinned work it could serve waits: it takes its own queue's first such request or the
  provider's oldest such unpinned one, whichever came first (work stealing);
* a key of a later priority tier gets work only while no key of an earlier tier can take it;
* pinned requests only ever use their key; disabled keys get nothing.

Lanes that may send right now (free slot, not cooling as a key) sit in their tier's ``idle``
set (insertion order = least recently used first); a strategy picks among the first
``CANDIDATES`` of them whose budget for the request's model allows it, so choosing costs O(1)
in the number of keys. A lane blocked by time gets one timer for when it may send.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable

from ._clock import Clock
from ._config import KeySpec, MuxConfig
from ._errors import (
    ClosedError,
    ConfigError,
    KeymuxError,
    NoKeyAvailableError,
    QueueFullError,
    QuotaExhaustedError,
)
from ._lane import GONE, GRANTED, WAITING, BudgetBook, Lane, Request, Waiter
from ._secret import Secret
from ._strategies import CANDIDATES, round_robin
from .providers import ADAPTERS, Adapter

__all__ = ["Dispatcher", "ProviderState", "Tier"]

_NEVER = float("inf")

log = logging.getLogger("keymux")

StrategyFn = Callable[[list[Lane], float], Lane]


#: how many idle lanes a choice looks at (past lanes whose budget for the request's model is
#: spent) before the request queues instead: a choice stays O(1) in the number of keys
SCAN = 64


class Tier:
    """The lanes of one priority: in order of addition, and those idle in LRU order."""

    __slots__ = ("cursor", "idle", "order", "priority")

    def __init__(self, priority: int) -> None:
        self.priority = priority
        self.order: list[Lane] = []
        self.idle: dict[Lane, None] = {}
        self.cursor = 0


class ProviderState:
    """One provider's lanes by tier, and its unpinned waiters."""

    __slots__ = ("adapter", "lanes", "name", "secrets", "tiers", "unpinned")

    def __init__(self, name: str, adapter: Adapter) -> None:
        self.name = name
        self.adapter = adapter
        self.lanes: dict[str, Lane] = {}
        self.secrets: dict[Secret, str] = {}  # secret -> the name it was added under
        self.tiers: list[Tier] = []  # by priority, the first tier first
        self.unpinned: deque[Waiter] = deque()

    def tier(self, priority: int) -> Tier:
        for tier in self.tiers:
            if tier.priority == priority:
                return tier
        tier = Tier(priority)
        self.tiers.append(tier)
        self.tiers.sort(key=lambda t: t.priority)
        return tier

    @property
    def order(self) -> list[Lane]:
        """Every lane, the first tier first."""
        return [lane for tier in self.tiers for lane in tier.order]


class Dispatcher:
    """Lanes of every provider, and the rules that hand requests to them."""

    def __init__(self, config: MuxConfig, *, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.providers: dict[str, ProviderState] = {
            name: ProviderState(name, adapter) for name, adapter in ADAPTERS.items()
        }
        self.groups: dict[tuple[str, str], BudgetBook] = {}
        self.closed = False
        self._seq = itertools.count()

    # -- keys -------------------------------------------------------------------------------

    def add_lane(self, spec: KeySpec) -> Lane:
        ps = self.providers[spec.provider]
        if spec.name in ps.lanes:
            raise ConfigError(
                f"{spec.provider} already has a key named {spec.name!r}; names must be unique"
            )
        twin = ps.secrets.get(spec.secret)
        if twin is not None:
            # two lanes on one account would each spend its limits as if they were their own
            raise ConfigError(
                f"{spec.provider} key {spec.name!r} is the same secret as key {twin!r}; "
                "add each key once"
            )
        book: BudgetBook | None = None
        if spec.group is not None:
            book = self.groups.get((spec.provider, spec.group))
        if book is None:
            book = BudgetBook(rpm=spec.rpm, tpm=spec.tpm, rpd=spec.rpd)
            if spec.group is not None:
                self.groups[(spec.provider, spec.group)] = book
        tier = ps.tier(spec.priority)
        lane = Lane(
            spec,
            ps.adapter,
            max_concurrent=self.config.max_concurrent_requests,
            book=book,
            idle=tier.idle,
        )
        ps.lanes[spec.name] = lane
        ps.secrets[spec.secret] = spec.name
        tier.order.append(lane)
        tier.idle[lane] = None
        if self._loop_running():
            self._pump(lane)
        return lane

    def remove_lane(self, provider: str, name: str) -> None:
        ps = self.providers[provider]
        lane = ps.lanes.pop(name, None)
        if lane is None:
            raise ConfigError(f"{provider} has no key named {name!r}")
        tier = ps.tier(lane.priority)
        tier.order.remove(lane)
        tier.cursor = 0
        del ps.secrets[lane.secret]
        lane.removed = True
        self.take_out(lane, "removed", NoKeyAvailableError)

    def take_out(self, lane: Lane, reason: str, pinned_error: type[KeymuxError]) -> None:
        """Disable a lane and move its waiting requests: unpinned ones to other keys, pinned
        ones fail with ``pinned_error``."""
        ps = self.providers[lane.provider]
        lane.enabled = False
        if lane.disabled_reason is None or reason == "removed":
            lane.disabled_reason = reason
            lane.disabled_at = self.clock.wall()
        lane.disabled_error = pinned_error
        lane.idle.pop(lane, None)
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        stranded = [w for w in lane.queue if w.state == WAITING]
        lane.queue.clear()
        for w in stranded:
            w.req.shun(lane.name)
            if w.req.pin is not None:
                self._detach(w)
                w.state = GONE
                if not w.future.done():
                    w.future.set_exception(
                        pinned_error(
                            f"{lane.provider} key {lane.name!r} is out of the pool ({reason}); "
                            "the request was pinned to it",
                            provider=lane.provider,
                            key_name=lane.name,
                        )
                    )
            else:
                self._replace(ps, w)

    def _replace(self, ps: ProviderState, w: Waiter) -> None:
        """Put an unpinned waiter whose lane went away on another lane, or fail it."""
        now = self.clock.now()
        lane = self._choose_idle(ps, w.req, now)
        if lane is not None:
            self._grant(lane, w, now)
            return
        self._detach(w)
        try:
            target = self._choose_queue(ps, w.req)
        except KeymuxError as exc:
            w.state = GONE
            if not w.future.done():
                w.future.set_exception(exc)
            return
        w.lane = target
        target.queue.append(w)
        target.n_waiting += 1
        self._pump(target)

    def enable(self, lane: Lane) -> None:
        if lane.removed or lane.enabled:
            return
        lane.enabled = True
        lane.disabled_reason = None
        lane.disabled_error = None
        lane.disabled_at = None
        lane.probe_at = None
        log.info("keymux: %s key %r re-enabled", lane.provider, lane.name)
        lane.idle[lane] = None
        self._pump(lane)

    def answered(self, lane: Lane) -> None:
        """The key gave its first answer: it is known to work, so it may carry its full
        concurrency (a fresh key carries one request until then: a revoked key costs one)."""
        if not lane.answered:
            lane.answered = True
            lane.cap = lane.max_concurrent
            if lane.enabled:
                self._pump(lane)

    # -- dispatch ---------------------------------------------------------------------------

    @staticmethod
    def _loop_running() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def _choose_idle(self, ps: ProviderState, req: Request, now: float) -> Lane | None:
        """A lane that can send ``req`` right now, chosen by the request's strategy among the
        first tier that has one."""
        if req.pin is not None:
            lane = ps.lanes.get(req.pin)
            if (
                lane is not None
                and lane.enabled
                and lane.in_flight < lane.cap
                and not lane.n_waiting
                and lane.ready_at(now, req.scope, req.tokens) <= now
            ):
                return lane
            return None
        avoid = req.avoid
        scope = req.scope
        tokens = req.tokens
        strategy: StrategyFn = req.strategy or round_robin
        # the idle set is in least-recently-used order: round-robin takes its first usable lane
        wanted = 1 if strategy is round_robin else CANDIDATES
        for tier in ps.tiers:
            idle = tier.idle
            if not idle:
                continue
            candidates: list[Lane] = []
            stale: list[Lane] | None = None
            scanned = 0
            for lane in idle:
                if lane.in_flight >= lane.cap or not lane.enabled:
                    if stale is None:
                        stale = []
                    stale.append(lane)
                    continue
                if lane.cooldown_until > now or lane.parked_until > now:
                    if stale is None:
                        stale = []
                    stale.append(lane)  # the key itself is cooling: no model may use it
                    self._wake_at(lane, lane.held_until(now))
                    continue
                if avoid and lane.name in avoid:
                    continue
                budget = lane.book.by_scope.get(scope) or lane.book.get(scope)
                ready = budget.ready_at(now, tokens)
                if ready > now:
                    # spent for this model only: it stays idle for the others
                    self._wake_at(lane, ready)
                    scanned += 1
                    if scanned >= SCAN:
                        break
                    continue
                candidates.append(lane)
                if len(candidates) >= wanted:
                    break
            if stale is not None:
                for lane in stale:
                    del idle[lane]
            if not candidates:
                continue
            if len(candidates) == 1:
                return candidates[0]
            for lane in candidates:
                lane.asked = scope
            return strategy(candidates, now)
        return None

    def _choose_queue(self, ps: ProviderState, req: Request) -> Lane:
        """The lane whose queue a request that cannot start now waits in."""
        if req.pin is not None:
            lane = ps.lanes.get(req.pin)
            if lane is None:
                raise NoKeyAvailableError(
                    f"{ps.name} has no key named {req.pin!r}", provider=ps.name, key_name=req.pin
                )
            if not lane.enabled:
                # the same error a request pinned to it got when it was disabled
                error = lane.disabled_error or NoKeyAvailableError
                raise error(
                    f"{ps.name} key {lane.name!r} is disabled ({lane.disabled_reason})",
                    provider=ps.name,
                    key_name=lane.name,
                )
            now = self.clock.now()
            parked = max(lane.parked_until, lane.book.get(req.scope).parked_until) - now
            if parked > self.config.retry.max_retry_after:
                # as for the request that got the key parked: too long to wait for
                raise QuotaExhaustedError(
                    f"{ps.name} key {lane.name!r} is parked for {parked:.0f} s more (its daily "
                    "quota is spent, or the provider asked for a long pause); "
                    "the request was pinned to it",
                    provider=ps.name,
                    key_name=lane.name,
                )
            if lane.n_waiting >= self.config.queue_size + lane.max_concurrent - lane.cap:
                raise QueueFullError(
                    f"{ps.name} key {lane.name!r}: queue full ({self.config.queue_size} waiting)",
                    provider=ps.name,
                    key_name=lane.name,
                )
            return lane
        limit = self.config.queue_size
        enabled = 0
        candidates: list[Lane] = []
        for tier in ps.tiers:
            order = tier.order
            n = len(order)
            for i in range(n):
                lane = order[(tier.cursor + i) % n]
                if not lane.enabled or (req.avoid and lane.name in req.avoid):
                    continue
                enabled += 1
                # a key in slow start holds its other slots' requests in its queue
                if lane.n_waiting < limit + lane.max_concurrent - lane.cap:
                    candidates.append(lane)
                    if len(candidates) >= CANDIDATES:
                        break
            if n:
                tier.cursor = (tier.cursor + 1) % n
            if candidates:
                break  # wait for a key of the first tier with room
        if not candidates:
            if not enabled:
                raise self._no_key(ps, req)
            raise QueueFullError(
                f"every {ps.name} queue is full ({enabled} keys x {limit} waiting)",
                provider=ps.name,
            )
        strategy: StrategyFn = req.strategy or round_robin
        # queue where the wait is shortest: the strategy, but never on a lane that is cooling
        # when another is not
        now = self.clock.now()
        ready = [lane for lane in candidates if lane.ready_at(now, req.scope, req.tokens) <= now]
        pool = ready or candidates
        if len(pool) == 1:
            return pool[0]
        for lane in pool:
            lane.asked = req.scope
        return strategy(pool, now)

    def _no_key(self, ps: ProviderState, req: Request) -> KeymuxError:
        if not ps.lanes:
            return NoKeyAvailableError(
                f"no {ps.name} keys are configured; add one with add_{ps.name}_key() "
                "or set the environment variables",
                provider=ps.name,
            )
        states = ", ".join(
            f"{lane.name} ({_why_unusable(lane, req)})" for lane in ps.lanes.values()
        )
        return NoKeyAvailableError(
            f"no usable {ps.name} key for this request: {states}", provider=ps.name
        )

    def _wake_at(self, lane: Lane, when: float) -> None:
        if lane.timer is not None:
            if lane.timer_at <= when:
                return
            lane.timer.cancel()
        lane.timer_at = when
        lane.timer = self.clock.call_at(when, lambda: self._on_timer(lane))

    def _on_timer(self, lane: Lane) -> None:
        lane.timer = None
        if lane.enabled:
            self._pump(lane)

    def _next_waiter(self, lane: Lane, ps: ProviderState, now: float) -> tuple[int, int, float]:
        """The next waiter this lane should serve now: the first of its own queue, or the
        provider's oldest unpinned one, that its budget allows — whichever came first.
        Returns (index in its own queue or -1, index in the unpinned queue or -1, when the
        first one passed over may go: ``inf`` if none)."""
        own = lane.queue
        while own and own[0].state != WAITING:
            own.popleft()
        glob = ps.unpinned
        while glob and glob[0].state != WAITING:
            glob.popleft()
        book = lane.book
        soonest = _NEVER
        mine = -1
        head_seq = _NEVER
        for i, w in enumerate(own):
            if i >= SCAN:
                break
            if w.state != WAITING:
                continue
            ready = book.get(w.req.scope).ready_at(now, w.req.tokens)
            if ready <= now:
                mine, head_seq = i, w.seq
                break
            if ready < soonest:
                soonest = ready
        for i, w in enumerate(glob):
            if i >= SCAN or w.seq > head_seq:
                break  # the own queue's choice came first
            if w.state != WAITING or (w.req.avoid and lane.name in w.req.avoid):
                continue
            ready = book.get(w.req.scope).ready_at(now, w.req.tokens)
            if ready <= now:
                return -1, i, soonest
            if ready < soonest:
                soonest = ready
        return mine, -1, soonest

    def _pump(self, lane: Lane) -> None:
        """Let a lane take work while it can; then mark it idle, or set its wake-up timer."""
        if not lane.enabled:
            lane.idle.pop(lane, None)
            return
        now = self.clock.now()
        held = lane.held_until(now)
        if held > now:
            lane.idle.pop(lane, None)
            self._wake_at(lane, held)
            return
        ps = self.providers[lane.provider]
        while lane.in_flight < lane.cap:
            mine, theirs, soonest = self._next_waiter(lane, ps, now)
            if theirs >= 0:
                w = ps.unpinned[theirs]
                del ps.unpinned[theirs]
            elif mine >= 0:
                w = lane.queue[mine]
                del lane.queue[mine]
            else:
                lane.idle[lane] = None  # free for other work, or other models
                if soonest < _NEVER:
                    self._wake_at(lane, soonest)
                return
            self._grant(lane, w, now)
        lane.idle.pop(lane, None)

    @staticmethod
    def _detach(w: Waiter) -> None:
        """A waiter leaves the queue that counts it."""
        owner = w.lane
        owner.n_waiting -= 1
        if owner.n_waiting == 0:
            owner.queue.clear()

    def _grant(self, lane: Lane, w: Waiter, now: float) -> None:
        self._detach(w)
        if w.future.done():
            # cancelled (task.cancel(), a timeout, a deadline) but its task has not run yet
            w.state = GONE
            return
        w.state = GRANTED
        self._start(lane, w.req, now)
        w.future.set_result(lane)

    def _start(self, lane: Lane, req: Request, now: float) -> None:
        req.lane_name = lane.name
        lane.in_flight += 1
        lane.usage += 1
        lane.last_used = now
        budget = req.budget = lane.book.get(req.scope)
        req.reservation = budget.take(now, req.tokens)
        idle = lane.idle
        if lane in idle:
            del idle[lane]
            if lane.in_flight < lane.cap:
                idle[lane] = None  # most recently used goes last

    def release(self, lane: Lane, req: Request) -> None:
        """``req``, which ``acquire`` gave ``lane``, is done with it (answered, or gave up)."""
        lane.in_flight -= 1
        budget = req.budget
        if budget is not None:
            budget.release()
        if lane.enabled:
            self._pump(lane)

    def refund(self, lane: Lane, req: Request) -> None:
        """``req``, which ``acquire`` gave ``lane``, is not sent after all (the budget every
        process shares said no): its slot, its count and what it took from the budget go back,
        as if it had never been granted. The caller places it again; ``wake`` lets the lane
        take other work once its budget reflects why."""
        lane.in_flight -= 1
        lane.usage -= 1
        budget = req.budget
        if budget is not None and req.reservation is not None:
            budget.refund(req.reservation)
        req.budget = None
        req.reservation = None

    def wake(self, lane: Lane) -> None:
        """Let a lane take work again, or set its timer (its budget or status changed from
        outside: a refund, a change heard from another process)."""
        if lane.enabled:
            self._pump(lane)

    def take(self, req: Request) -> Lane | Waiter:
        """A lane for ``req`` with a slot and budget taken, at once; or, when none is free, the
        Waiter it waits as in a queue (await ``waiter.future`` for the lane, and ``abandon``
        the waiter if that wait is interrupted). The caller must ``release`` the lane. No
        coroutine of its own: the attempt loop awaits the future itself."""
        if self.closed:
            raise ClosedError(
                f"{req.provider} request not sent: the multiplexer is closed",
                provider=req.provider,
            )
        ps = self.providers[req.provider]
        now = self.clock.now()
        lane = self._choose_idle(ps, req, now)
        if lane is not None:
            self._start(lane, req, now)
            return lane
        target = self._choose_queue(ps, req)
        fut: asyncio.Future[Lane] = asyncio.get_running_loop().create_future()
        w = Waiter(req, fut, target, next(self._seq))
        target.queue.append(w)
        target.n_waiting += 1
        if req.pin is None:
            ps.unpinned.append(w)
        self._pump(target)  # sets its timer if it is blocked only by time
        return w

    def abandon(self, w: Waiter) -> None:
        """The wait of ``w`` was interrupted (cancelled, or the loop is closing): a lane it
        was granted meanwhile is released, or it leaves its queue."""
        fut = w.future
        if w.state == GRANTED and fut.done() and not fut.cancelled() and fut.exception() is None:
            self.release(fut.result(), w.req)
        elif w.state == WAITING:
            w.state = GONE
            self._detach(w)

    def usable(self, lane: Lane, req: Request) -> bool:
        """Whether a lane granted to a waiter may still send when the waiter resumes: one
        disabled in between is released, and ``req`` never goes back to it."""
        if lane.enabled:
            return True
        self.release(lane, req)
        req.shun(lane.name)
        return False

    async def acquire(self, req: Request) -> Lane:
        """``take``, waiting for the lane when none is free at once."""
        while True:
            got = self.take(req)
            if isinstance(got, Lane):
                return got
            try:
                lane = await got.future
            except BaseException:
                self.abandon(got)
                raise
            if self.usable(lane, req):
                return lane

    # -- lifecycle --------------------------------------------------------------------------

    def lanes(self) -> list[Lane]:
        """Every lane of every provider (a copy: safe to iterate while lanes change)."""
        return [lane for ps in self.providers.values() for lane in ps.lanes.values()]

    def fail_waiting(self) -> None:
        """Closing: every request still waiting for a lane fails with ClosedError; lanes stop
        their timers and are no longer offered."""
        for ps in self.providers.values():
            for lane in ps.lanes.values():
                if lane.timer is not None:
                    lane.timer.cancel()
                    lane.timer = None
                for w in lane.queue:
                    if w.state == WAITING:
                        w.state = GONE
                        if not w.future.done():
                            w.future.set_exception(
                                ClosedError(
                                    f"{lane.provider} request not sent: the multiplexer closed "
                                    "while it waited in the queue",
                                    provider=lane.provider,
                                )
                            )
                lane.queue.clear()
                lane.n_waiting = 0
            ps.unpinned.clear()
            for tier in ps.tiers:
                tier.idle.clear()

    def offer_all(self) -> None:
        """Every enabled lane is offered again (a new event loop took over)."""
        for ps in self.providers.values():
            for lane in ps.lanes.values():
                if lane.enabled:
                    lane.idle[lane] = None

    def forget_loop(self) -> None:
        """After fork: drop what belonged to the parent's loop (timers, waiters, slots)."""
        for ps in self.providers.values():
            ps.unpinned.clear()
            for lane in ps.lanes.values():
                lane.timer = None
                lane.queue.clear()
                lane.n_waiting = 0
                lane.in_flight = 0
                for _, budget in lane.book.items():
                    budget.in_flight = 0
                if lane.enabled:
                    lane.idle[lane] = None


def _why_unusable(lane: Lane, req: Request) -> str:
    if lane.enabled and req.avoid and lane.name in req.avoid:
        return "already failed this request"
    return lane.disabled_reason or "disabled"
