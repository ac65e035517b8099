"""Dispatch: which lane a request goes to, and when. Plain state changes, no I/O.

Dispatch keeps three facts true (design.md invariants 2-5):

* a lane never has more than ``max_concurrent`` requests in flight nor ``queue_size`` waiting;
* a lane that can send (free slot, budget, not cooling) never idles while unpinned work waits:
  it takes its own queue's head or the oldest unpinned waiter of its provider, whichever came
  first (work stealing), so waiting work flows to whichever key frees up;
* pinned requests only ever use their key; disabled keys get nothing.

Lanes that can send right now sit in ``idle`` (insertion order = least recently used first);
a strategy picks among the first ``CANDIDATES`` of them, so choosing costs O(1) in the number of
keys. A lane that is blocked by its budget or a cooldown gets one timer for when it may send.
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
from ._lane import GONE, GRANTED, WAITING, Lane, Request, Waiter
from ._ratelimit import Budget
from ._secret import Secret
from ._strategies import CANDIDATES, round_robin
from .providers import ADAPTERS, Adapter

__all__ = ["Dispatcher", "ProviderState"]

log = logging.getLogger("keymux")

StrategyFn = Callable[[list[Lane], float], Lane]


class ProviderState:
    """One provider's lanes, its idle lanes in LRU order, and its unpinned waiters."""

    __slots__ = ("adapter", "cursor", "idle", "lanes", "name", "order", "secrets", "unpinned")

    def __init__(self, name: str, adapter: Adapter) -> None:
        self.name = name
        self.adapter = adapter
        self.lanes: dict[str, Lane] = {}
        self.secrets: dict[Secret, str] = {}  # secret -> the name it was added under
        self.idle: dict[Lane, None] = {}
        self.unpinned: deque[Waiter] = deque()
        self.order: list[Lane] = []
        self.cursor = 0


class Dispatcher:
    """Lanes of every provider, and the rules that hand requests to them."""

    def __init__(self, config: MuxConfig, *, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.providers: dict[str, ProviderState] = {
            name: ProviderState(name, adapter) for name, adapter in ADAPTERS.items()
        }
        self.groups: dict[tuple[str, str], Budget] = {}
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
        if spec.group is not None:
            budget = self.groups.get((spec.provider, spec.group))
            if budget is None:
                budget = Budget(rpm=spec.rpm, tpm=spec.tpm, rpd=spec.rpd)
                self.groups[(spec.provider, spec.group)] = budget
        else:
            budget = Budget(rpm=spec.rpm, tpm=spec.tpm, rpd=spec.rpd)
        lane = Lane(
            spec, ps.adapter, max_concurrent=self.config.max_concurrent_requests, budget=budget
        )
        ps.lanes[spec.name] = lane
        ps.secrets[spec.secret] = spec.name
        ps.order.append(lane)
        ps.idle[lane] = None
        if self._loop_running():
            self._pump(lane)
        return lane

    def remove_lane(self, provider: str, name: str) -> None:
        ps = self.providers[provider]
        lane = ps.lanes.pop(name, None)
        if lane is None:
            raise ConfigError(f"{provider} has no key named {name!r}")
        ps.order.remove(lane)
        del ps.secrets[lane.secret]
        ps.cursor = 0
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
        ps.idle.pop(lane, None)
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
        self.providers[lane.provider].idle[lane] = None
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
        """A lane that can send ``req`` right now, chosen by the request's strategy."""
        if req.pin is not None:
            lane = ps.lanes.get(req.pin)
            if (
                lane is not None
                and lane.enabled
                and lane.in_flight < lane.max_concurrent
                and not lane.n_waiting
                and lane.budget.ready_at(now, req.tokens) <= now
            ):
                return lane
            return None
        if not ps.idle:
            return None
        candidates: list[Lane] = []
        stale: list[Lane] = []
        avoid = req.avoid
        for lane in ps.idle:
            if lane.in_flight >= lane.max_concurrent or not lane.enabled:
                stale.append(lane)
                continue
            if avoid and lane.name in avoid:
                continue
            ready = lane.budget.ready_at(now, req.tokens)
            if ready > now:
                stale.append(lane)
                self._wake_at(lane, ready)
                continue
            candidates.append(lane)
            if len(candidates) >= CANDIDATES:
                break
        for lane in stale:
            del ps.idle[lane]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        strategy: StrategyFn = req.strategy or round_robin
        return strategy(candidates, now)

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
            parked = lane.budget.parked_until - self.clock.now()
            if parked > self.config.retry.max_retry_after:
                # as for the request that got the key parked: too long to wait for
                raise QuotaExhaustedError(
                    f"{ps.name} key {lane.name!r} is parked for {parked:.0f} s more (its daily "
                    "quota is spent, or the provider asked for a long pause); "
                    "the request was pinned to it",
                    provider=ps.name,
                    key_name=lane.name,
                )
            if lane.n_waiting >= self.config.queue_size:
                raise QueueFullError(
                    f"{ps.name} key {lane.name!r}: queue full ({self.config.queue_size} waiting)",
                    provider=ps.name,
                    key_name=lane.name,
                )
            return lane
        order = ps.order
        n = len(order)
        candidates: list[Lane] = []
        enabled = 0
        limit = self.config.queue_size
        for i in range(n):
            lane = order[(ps.cursor + i) % n]
            if not lane.enabled or (req.avoid and lane.name in req.avoid):
                continue
            enabled += 1
            if lane.n_waiting < limit:
                candidates.append(lane)
                if len(candidates) >= CANDIDATES:
                    break
        if n:
            ps.cursor = (ps.cursor + 1) % n
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
        ready = [lane for lane in candidates if lane.budget.ready_at(now, req.tokens) <= now]
        pool = ready or candidates
        return pool[0] if len(pool) == 1 else strategy(pool, now)

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

    def _next_waiter(self, lane: Lane, ps: ProviderState) -> tuple[Waiter | None, bool]:
        """The next waiter this lane should serve: its own queue's head or the provider's
        oldest unpinned waiter, whichever came first. (waiter, from_global)."""
        own = lane.queue
        while own and own[0].state != WAITING:
            own.popleft()
        glob = ps.unpinned
        while glob and glob[0].state != WAITING:
            glob.popleft()
        head = own[0] if own else None
        other: Waiter | None = None
        if glob:
            for i, w in enumerate(glob):
                if w.state == WAITING and not (w.req.avoid and lane.name in w.req.avoid):
                    other = w
                    if i:
                        del glob[i]
                        glob.appendleft(w)
                    break
        if head is None:
            return other, True
        if other is None or head.seq <= other.seq:
            return head, False
        return other, True

    def _pump(self, lane: Lane) -> None:
        """Let a lane take work while it can; then mark it idle, or set its wake-up timer."""
        ps = self.providers[lane.provider]
        if not lane.enabled:
            ps.idle.pop(lane, None)
            return
        now = self.clock.now()
        while lane.in_flight < lane.max_concurrent:
            w, from_global = self._next_waiter(lane, ps)
            if w is None:
                ready = lane.budget.ready_at(now, 0)
                if ready > now:
                    ps.idle.pop(lane, None)
                    self._wake_at(lane, ready)
                else:
                    ps.idle[lane] = None
                return
            ready = lane.budget.ready_at(now, w.req.tokens)
            if ready > now:
                ps.idle.pop(lane, None)
                self._wake_at(lane, ready)
                return
            if from_global:
                ps.unpinned.popleft()
            else:
                lane.queue.popleft()
            self._grant(lane, w, now)
        ps.idle.pop(lane, None)

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
        req.reservation = lane.budget.take(now, req.tokens)
        ps = self.providers[lane.provider]
        if lane in ps.idle:
            if lane.in_flight >= lane.max_concurrent:
                del ps.idle[lane]
            else:
                ps.idle.pop(lane)
                ps.idle[lane] = None  # most recently used goes last

    def release(self, lane: Lane) -> None:
        """A request taken with ``acquire`` is done with its lane (answered, or gave up)."""
        lane.in_flight -= 1
        lane.budget.release()
        if lane.enabled:
            self._pump(lane)

    async def acquire(self, req: Request) -> Lane:
        """A lane for ``req``, with a slot and budget taken: at once, or after waiting in a
        queue. The caller must ``release`` it."""
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
        try:
            lane = await fut
        except BaseException:
            if (
                w.state == GRANTED
                and fut.done()
                and not fut.cancelled()
                and (fut.exception() is None)
            ):
                self.release(fut.result())
            elif w.state == WAITING:
                w.state = GONE
                self._detach(w)
            raise
        if not lane.enabled:
            # disabled between the grant and this task resuming: it gets nothing more
            self.release(lane)
            req.shun(lane.name)
            return await self.acquire(req)
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
            ps.idle.clear()

    def offer_all(self) -> None:
        """Every enabled lane is offered again (a new event loop took over)."""
        for ps in self.providers.values():
            for lane in ps.lanes.values():
                if lane.enabled:
                    ps.idle[lane] = None

    def forget_loop(self) -> None:
        """After fork: drop what belonged to the parent's loop (timers, waiters, slots)."""
        for ps in self.providers.values():
            ps.unpinned.clear()
            for lane in ps.lanes.values():
                lane.timer = None
                lane.queue.clear()
                lane.n_waiting = 0
                lane.in_flight = 0
                lane.budget.in_flight = 0
                if lane.enabled:
                    ps.idle[lane] = None


def _why_unusable(lane: Lane, req: Request) -> str:
    if lane.enabled and req.avoid and lane.name in req.avoid:
        return "already failed this request"
    return lane.disabled_reason or "disabled"
