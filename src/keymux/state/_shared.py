"""The bridge between one multiplexer's core and a shared store (``redis://``).

The local pacer still decides *when to try* (``Budget.ready_at``, no I/O); the store makes the
*spending* global and atomic:

* **reserve** (the hot path: one script, one round trip, after dispatch granted a lane and
  before sending): the store counts the send if every process's sends together leave room
  (learned windows, configured rpm/tpm/rpd, the model's cooldown) and answers with the global
  totals either way. What the other processes spent becomes the local window's ``outside``
  (what the provider counts beyond our own log), so each process sees the others at once. A
  "no" gives the lane back (``Dispatcher.refund``) and the request is placed again.
* **settle** (batched, off the critical path): real token usage for the estimate, a
  rate-limited send taken out, learned limits recorded.
* **status**: disabling, enabling, cooldowns and parking are written and pushed to every
  process (pub/sub), and read back every few seconds as a backstop. Times travel in the store's
  clock and are mapped to this process's with the offset measured on each round trip.
* **counters**: every half second the lanes' counters since the last flush are added to the
  key's totals (``get_usage_stats(all_processes=True)`` reads them).
* **trouble**: a call that fails or takes longer than the URL's timeout marks the store down
  (one warning): requests go on with local state, each process pacing at its share of the
  known limits (divided by the processes seen alive); heartbeats look for the store, and when
  it answers, this process's facts are written back, the others' read, and sharing resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from .._errors import AuthenticationError, QuotaExhaustedError
from .._pacing import SKEW_ABS, SKEW_REL, LearnedWindow, window_span
from ._keys import group_tag, key_ident
from ._store import (
    COUNTERS,
    DEFAULT_SPAN,
    Ask,
    Change,
    Event,
    Settle,
    Store,
    StoreError,
    Verdict,
)

if TYPE_CHECKING:
    from .._clock import Clock
    from .._core import Core
    from .._lane import BudgetBook, Lane, Request
    from .._ratelimit import Budget, Gcra

__all__ = ["Shared", "Ticket"]

log = logging.getLogger("keymux")

#: seconds between counter flushes; heartbeats and the status backstop go every few of them
TICK = 0.5
BEAT_EVERY = 2  # ticks: a heartbeat each second
PULL_EVERY = 10  # ticks: statuses read back every 5 s
#: a quota-disabled key heard from another process is probed here too, this long after
QUOTA_PROBE_FIRST = 300.0


class Ticket:
    """One send as the store counted it."""

    __slots__ = ("member", "scope", "sent", "tag", "tokens")

    def __init__(self, tag: str, scope: str, member: str, sent: float, tokens: int) -> None:
        self.tag = tag
        self.scope = scope
        self.member = member
        self.sent = sent  # store time
        self.tokens = tokens  # the estimate it was counted with


class Shared:
    """Shares one core's lanes through a store. Runs on the core's loop."""

    def __init__(self, store: Store, *, clock: Clock, timeout: float) -> None:
        self.store = store
        self.clock = clock
        self.timeout = timeout
        self.core: Core | None = None
        self.pid = uuid.uuid4().hex[:12]
        self._seq = itertools.count()
        #: the store answers; False while it is unreachable (local state only)
        self.up = False
        self._active = False
        self._starting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: store time minus this process's clock (None until the first round trip)
        self.offset: float | None = None
        self._best_rtt = 1.0
        #: processes alive, from the last heartbeat
        self.live = 1
        self._settles: list[Settle] = []
        self._changes: list[Change] = []
        self._flushing = False
        #: applying a change heard from another process (not to be pushed back)
        self._quiet = False
        self._tags: dict[BudgetBook, str] = {}
        self._idents: dict[Lane, str] = {}
        self._learned: dict[tuple[str, str], tuple[float, float, float, float]] = {}
        self._counted: dict[Lane, tuple[int, ...]] = {}
        self._scaled: dict[int, tuple[Gcra, float]] = {}
        self._inflated: dict[int, LearnedWindow] = {}
        #: the last counters of every key read from the store (ident -> name -> value)
        self.totals: dict[str, dict[str, int]] = {}
        # measured: for the benchmark and the stats
        self.reserves = 0
        self.refusals = 0
        self.reserve_seconds = 0.0
        self.flushes = 0  # pipelines of settles and changes, off the critical path
        self.outages = 0

    def attach(self, core: Core) -> None:
        self.core = core

    # -- names ------------------------------------------------------------------------------

    def ident(self, lane: Lane) -> str:
        ident = self._idents.get(lane)
        if ident is None:
            ident = self._idents[lane] = key_ident(lane.provider, lane.secret.fingerprint)
        return ident

    def _tag(self, lane: Lane) -> str:
        tag = self._tags.get(lane.book)
        if tag is None:
            group = lane.group
            tag = group_tag(lane.provider, group) if group is not None else self.ident(lane)
            self._tags[lane.book] = tag
        return tag

    def _local(self, store_time: float) -> float:
        """A store time on this process's clock."""
        return store_time - (self.offset or 0.0)

    def _sample(self, store_now: float, t0: float, t1: float) -> None:
        rtt = t1 - t0
        sample = store_now - (t0 + t1) / 2
        if self.offset is None:
            self.offset = sample
            self._best_rtt = rtt
        elif rtt <= 2 * self._best_rtt + 0.001:
            self.offset += 0.2 * (sample - self.offset)
            self._best_rtt = min(self._best_rtt * 1.01, max(rtt, 1e-6))

    # -- the hot path -----------------------------------------------------------------------

    async def reserve(self, lane: Lane, req: Request) -> bool:
        """Count this attempt in the shared budget; False when every process's sends leave
        no room (the lane was given back: place the request again)."""
        if not self._active:
            await self._activate()
        budget = req.budget
        if budget is None:
            return True
        if not self.up:
            self._share(budget)
            return True
        tag = self._tag(lane)
        member = f"{self.pid}:{next(self._seq)}"
        learned_r = budget.learned_requests
        learned_t = budget.learned_tokens
        rpm = budget.rpm
        tpm = budget.tpm
        ask = Ask(
            tag,
            req.scope,
            member,
            req.tokens,
            0.0 if learned_r is None else learned_r.limit,
            _span(learned_r),
            0.0 if learned_t is None else learned_t.limit,
            _span(learned_t),
            0.0 if rpm is None else rpm.interval,
            0.0 if tpm is None else tpm.interval,
            budget.rpd or 0.0,
            tag if lane.group is None else "",
        )
        now = self.clock.now
        t0 = now()
        try:
            async with asyncio.timeout(self.timeout):
                verdict = await self.store.reserve(ask)
        except (StoreError, TimeoutError) as exc:
            self._down(exc)
            return True
        t1 = now()
        self.reserves += 1
        self.reserve_seconds += t1 - t0
        self._sample(verdict.now, t0, t1)
        if verdict.ok:
            req.ticket = Ticket(tag, req.scope, member, verdict.now, req.tokens)
            self._apply(budget, verdict, t1)
            return True
        self.refusals += 1
        assert self.core is not None
        dispatch = self.core.dispatch
        dispatch.refund(lane, req)
        if verdict.disabled is not None:
            # another process disabled the key and its push has not arrived yet
            with self._hushed():
                self._disable_here(lane, verdict.disabled, verdict.error)
            return False
        self._apply(budget, verdict, t1)
        if budget.ready_at(t1, req.tokens) <= t1:
            # a limit this process cannot mirror yet (not learned here): wait it out as a
            # cooldown of the model
            budget.cool(t1, max(0.001, self._local(verdict.wait) - t1))
        dispatch.wake(lane)
        return False

    def _apply(self, budget: Budget, v: Verdict, now: float) -> None:
        """What the store says every process spent, onto the local budget."""
        local = self._local
        wait = local(v.wait) if v.wait > 0 else 0.0
        for window, total, oldest, length in (
            (budget.learned_requests, v.requests, v.requests_oldest, v.req_window),
            (budget.learned_tokens, v.tokens, v.tokens_oldest, v.tok_window),
        ):
            if window is None:
                continue
            if length > _span(window) + 1e-6:
                # another process saw a longer window: the log keeps that long here too
                window.length = (length - SKEW_ABS) / (1.0 + SKEW_REL)
                window.log.set_span(length)
            others = total - window.log.used(now)
            if others <= 0:
                continue
            if window.outside_until <= now or others > window.outside:
                # the others' sends count until the oldest of the window leaves (an
                # underestimate after that, which the next reserve corrects)
                window.outside = others
                span = _span(window) or DEFAULT_SPAN
                window.outside_until = local(oldest) + span if oldest > 0 else now + span
            if wait > window.outside_until:
                window.outside_until = wait
        for gcra, tat in ((budget.rpm, v.rpm_tat), (budget.tpm, v.tpm_tat)):
            if gcra is not None and tat > 0:
                mapped = local(tat)
                if mapped > gcra.tat:
                    gcra.tat = mapped
        if budget.rpd is not None and v.day_count > budget.day_count:
            budget.day_count = v.day_count
            budget.day_start = local(v.day_start)
        if v.cool > 0 and local(v.cool) > budget.cooldown_until:
            budget.cooldown_until = local(v.cool)
        if v.park > 0 and local(v.park) > budget.parked_until:
            budget.parked_until = local(v.park)

    # -- after the answer -------------------------------------------------------------------

    def observed(self, lane: Lane, req: Request, budget: Budget, status: int) -> None:
        """An answer's headers were learned from (``status`` 429: a refused send)."""
        if not self.up:
            self._share(budget)
            return
        ticket = req.ticket
        if status == 429 and ticket is not None:
            req.ticket = None
            self._settle(
                Settle(
                    ticket.tag,
                    ticket.scope,
                    ticket.member,
                    ticket.sent,
                    ticket.tokens,
                    refused=True,
                )
            )
        learned_r = budget.learned_requests
        learned_t = budget.learned_tokens
        if learned_r is None and learned_t is None:
            return
        facts = (
            0.0 if learned_r is None else learned_r.limit,
            _span(learned_r),
            0.0 if learned_t is None else learned_t.limit,
            _span(learned_t),
        )
        tag = self._tag(lane)
        where = (tag, req.scope)
        if self._learned.get(where) != facts:
            self._learned[where] = facts
            self._settle(Settle(tag, req.scope, "", 0.0, 0, -1, False, *facts))

    def succeeded(self, req: Request, tokens: int) -> None:
        """The attempt's answer was read: its real token usage (0: not reported), recorded
        where tokens are budgeted (a token window learned, or a configured tpm)."""
        ticket = req.ticket
        if ticket is None:
            return
        req.ticket = None
        budget = req.budget
        if budget is None or (budget.learned_tokens is None and budget.tpm is None):
            return
        if tokens and tokens != ticket.tokens and self.up:
            self._settle(
                Settle(ticket.tag, ticket.scope, ticket.member, ticket.sent, ticket.tokens, tokens)
            )

    def failed(self, lane: Lane, req: Request, budget: Budget, counted: bool) -> None:
        """An attempt failed (its effect on the key already applied); ``counted``: the
        provider may have counted its tokens (a transport failure)."""
        ticket = req.ticket
        if ticket is not None:
            req.ticket = None
            if not counted and ticket.tokens and self.up:
                self._settle(
                    Settle(ticket.tag, ticket.scope, ticket.member, ticket.sent, ticket.tokens, 0)
                )

    def cooled(self, lane: Lane, budget: Budget | None, scope: str, op: str) -> None:
        """A cooldown or parking (``op`` "cool"/"park") of the key (``budget`` None) or of
        its budget's model ``scope`` landed: every process hears of it."""
        if self._quiet:
            return
        now = self.clock.now()
        if budget is None:
            until = lane.cooldown_until if op == "cool" else lane.parked_until
            change = Change(op, self.ident(lane), None, until - now)
        else:
            until = budget.cooldown_until if op == "cool" else budget.parked_until
            change = Change(op, self._tag(lane), scope, until - now)
        if change.seconds > 0:
            self._change(change)

    def disabled(self, lane: Lane, reason: str, error: type[Exception]) -> None:
        if self._quiet:
            return
        kind = "quota" if issubclass(error, QuotaExhaustedError) else "auth"
        self._change(Change("disable", self.ident(lane), None, reason=reason, error=kind))

    def enabled(self, lane: Lane) -> None:
        if self._quiet:
            return
        self._change(Change("enable", self.ident(lane)))

    # -- batching ---------------------------------------------------------------------------

    def _settle(self, item: Settle) -> None:
        self._settles.append(item)
        self._kick()

    def _change(self, item: Change) -> None:
        self._changes.append(item)
        if self.up:
            self._kick()

    def _kick(self) -> None:
        if self._flushing or not self._active:
            return
        self._flushing = True
        self._spawn(self._flush())

    async def _flush(self) -> None:
        try:
            while self.up and (self._changes or self._settles):
                changes, self._changes = self._changes, []
                settles, self._settles = self._settles, []
                self.flushes += 1
                try:
                    async with asyncio.timeout(max(self.timeout, 1.0)):
                        if changes:
                            await self.store.change(changes, self.pid)
                        if settles:
                            await self.store.settle(settles)
                except (StoreError, TimeoutError) as exc:
                    self._changes[:0] = changes  # pushed again once it is back
                    self._down(exc)
        finally:
            self._flushing = False
            if not self.up:
                self._settles.clear()  # their sends were counted before it went away

    # -- status heard from other processes --------------------------------------------------

    def _lanes_of(self, target: str) -> list[Lane]:
        """The lanes whose key (ident) or budget (tag) is ``target``."""
        assert self.core is not None
        return [
            lane
            for lane in self.core.dispatch.lanes()
            if self.ident(lane) == target or self._tag(lane) == target
        ]

    def _on_event(self, event: Event) -> None:
        if event.origin == self.pid or self.core is None:
            return
        with self._hushed():
            self._apply_event(event)

    @contextlib.contextmanager
    def _hushed(self) -> Any:
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def _apply_event(self, event: Event) -> None:
        assert self.core is not None
        core = self.core
        now = self.clock.now()
        until = self._local(event.until)
        for lane in self._lanes_of(event.target):
            if event.scope is not None:
                if self._tag(lane) != event.target:
                    continue
                budget = lane.book.by_scope.get(event.scope)
                if budget is None:
                    continue
                if event.op == "cool" and until > budget.cooldown_until:
                    budget.cool(now, until - now)
                elif event.op == "park" and until > budget.parked_until:
                    budget.park(now, until - now)
                continue
            if self.ident(lane) != event.target:
                continue
            if event.op == "disable":
                self._disable_here(lane, event.reason, event.error)
            elif event.op == "enable":
                if not lane.enabled and not lane.removed:
                    core.dispatch.enable(lane)
            elif event.op == "cool" and until > lane.cooldown_until:
                lane.cooldown_until = until
            elif event.op == "park" and until > lane.parked_until:
                lane.parked_until = until

    def _disable_here(self, lane: Lane, reason: str, error: str) -> None:
        if not lane.enabled or lane.removed:
            return
        assert self.core is not None
        why = f"{reason} (seen by another process)"
        if error == "quota":
            self.core.disable(lane, why, error=QuotaExhaustedError, probe_after=QUOTA_PROBE_FIRST)
        else:
            self.core.disable(lane, why, error=AuthenticationError)

    async def _pull(self) -> None:
        """Read back the statuses of every key and model in use here (the backstop):
        what restricts (disabled, cooling, parked) is applied; enabling comes only as an
        event, so a store that lost its data never revives a revoked key."""
        assert self.core is not None
        lanes = [lane for lane in self.core.dispatch.lanes() if not lane.removed]
        idents = sorted({self.ident(lane) for lane in lanes})
        budgets = sorted(
            {(self._tag(lane), scope) for lane in lanes for scope in lane.book.by_scope}
        )
        t0 = self.clock.now()
        snap = await self.store.status(idents, budgets)
        self._sample(snap.now, t0, self.clock.now())
        now = self.clock.now()
        with self._hushed():
            for lane in lanes:
                found = snap.keys.get(self.ident(lane))
                if found is not None:
                    if found.disabled is not None:
                        self._disable_here(lane, found.disabled, found.error)
                    cool, park = self._local(found.cool), self._local(found.park)
                    if found.cool and cool > lane.cooldown_until:
                        lane.cooldown_until = cool
                    if found.park and park > lane.parked_until:
                        lane.parked_until = park
                tag = self._tag(lane)
                for scope, budget in lane.book.items():
                    pair = snap.budgets.get((tag, scope))
                    if pair is None:
                        continue
                    cool, park = self._local(pair[0]), self._local(pair[1])
                    if pair[0] and cool > budget.cooldown_until:
                        budget.cool(now, cool - now)
                    if pair[1] and park > budget.parked_until:
                        budget.park(now, park - now)

    def _facts(self) -> list[Change]:
        """This process's restrictive facts, as changes (written back after an outage)."""
        assert self.core is not None
        now = self.clock.now()
        out: list[Change] = []
        seen: set[tuple[str, str]] = set()
        for lane in self.core.dispatch.lanes():
            if lane.removed:
                continue
            ident = self.ident(lane)
            if not lane.enabled and lane.disabled_reason is not None:
                error = lane.disabled_error or AuthenticationError
                kind = "quota" if issubclass(error, QuotaExhaustedError) else "auth"
                reason = lane.disabled_reason.removesuffix(" (seen by another process)")
                out.append(Change("disable", ident, None, reason=reason, error=kind))
            if lane.cooldown_until > now:
                out.append(Change("cool", ident, None, lane.cooldown_until - now))
            if lane.parked_until > now:
                out.append(Change("park", ident, None, lane.parked_until - now))
            tag = self._tag(lane)
            for scope, budget in lane.book.items():
                if (tag, scope) in seen:
                    continue
                seen.add((tag, scope))
                if budget.cooldown_until > now:
                    out.append(Change("cool", tag, scope, budget.cooldown_until - now))
                if budget.parked_until > now:
                    out.append(Change("park", tag, scope, budget.parked_until - now))
        return out

    # -- counters ---------------------------------------------------------------------------

    def _deltas(self) -> tuple[dict[str, dict[str, int]], dict[Lane, tuple[int, ...]]]:
        assert self.core is not None
        deltas: dict[str, dict[str, int]] = {}
        now_counts: dict[Lane, tuple[int, ...]] = {}
        for lane in self.core.dispatch.lanes():
            current = tuple(getattr(lane, name) for name in COUNTERS)
            last = self._counted.get(lane)
            if last == current:
                continue
            base = last or (0,) * len(COUNTERS)
            changed = {
                name: value - before
                for name, value, before in zip(COUNTERS, current, base, strict=True)
                if value != before
            }
            if changed:
                deltas.setdefault(self.ident(lane), {}).update(changed)
            now_counts[lane] = current
        return deltas, now_counts

    async def _flush_counts(self) -> None:
        deltas, now_counts = self._deltas()
        if deltas:
            await self.store.add_counts(deltas)
        self._counted.update(now_counts)
        if len(self._counted) > len(now_counts):
            # forget removed keys (their last counters went out above)
            assert self.core is not None
            current = set(self.core.dispatch.lanes())
            self._counted = {lane: c for lane, c in self._counted.items() if lane in current}
            self._idents = {lane: i for lane, i in self._idents.items() if lane in current}

    async def refresh_totals(self) -> dict[str, dict[str, int]]:
        """Every key's counters summed over every process (this one's flushed first); the
        last figures read when the store does not answer."""
        if not self._active:
            await self._activate()
        if self.up and self.core is not None:
            idents = sorted({self.ident(lane) for lane in self.core.dispatch.lanes()})
            try:
                async with asyncio.timeout(max(self.timeout, 1.0)):
                    await self._flush_counts()
                    self.totals = await self.store.counts(idents)
                    await self._beat()
            except (StoreError, TimeoutError) as exc:
                self._down(exc)
        return self.totals

    # -- trouble ----------------------------------------------------------------------------

    def _down(self, exc: BaseException) -> None:
        if not self.up:
            return
        self.up = False
        self.outages += 1
        what = str(exc) or type(exc).__name__ or "no answer in time"
        if isinstance(exc, TimeoutError):
            what = f"no answer within {self.timeout:g} s"
        log.warning(
            "keymux: shared state %s is unreachable (%s): going on with this process's local "
            "state, pacing at its share of the known limits (1/%d), until it answers again",
            self.store.url,
            what,
            max(1, self.live),
        )

    def _share(self, budget: Budget) -> None:
        """While the store is down: this process's share of the limits it knows."""
        n = self.live
        if n <= 1:
            return
        now = self.clock.now()
        for window in (budget.learned_requests, budget.learned_tokens):
            if window is None:
                continue
            others = window.limit * (n - 1) / n
            if window.outside < others or window.outside_until <= now:
                window.outside = max(window.outside if window.outside_until > now else 0, others)
                window.outside_until = now + (window.length or DEFAULT_SPAN)
                self._inflated[id(window)] = window
        for gcra in (budget.rpm, budget.tpm):
            if gcra is not None and id(gcra) not in self._scaled:
                self._scaled[id(gcra)] = (gcra, gcra.interval)
                gcra.interval *= n

    def _unshare(self) -> None:
        for gcra, interval in self._scaled.values():
            gcra.interval = interval
        self._scaled.clear()
        for window in self._inflated.values():
            window.outside = 0.0
            window.outside_until = 0.0
        self._inflated.clear()

    async def _resync(self) -> None:
        """The store answers again (or for the first time): write this process's facts, then
        read everyone's."""
        self._changes.clear()
        facts = self._facts()
        if facts:
            await self.store.change(facts, self.pid)
        await self._flush_counts()
        await self._pull()

    # -- lifecycle --------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _activate(self) -> None:
        starting = self._starting
        if starting is None:
            starting = self._starting = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(starting)

    async def _start(self) -> None:
        """Connect, say hello, sync; then run the ticker and the listener."""
        try:
            async with asyncio.timeout(max(5 * self.timeout, 0.5)):
                await self.store.connect()
                await self._beat()
                await self._resync()
        except (StoreError, TimeoutError) as exc:
            self.up = True
            self._down(exc)
        else:
            self.up = True
        self._active = True
        self._spawn(self._ticker())
        self._spawn(self._listener())
        self._kick()

    async def _beat(self) -> None:
        t0 = self.clock.now()
        store_now, live = await self.store.beat(self.pid, TICK * BEAT_EVERY)
        self._sample(store_now, t0, self.clock.now())
        self.live = max(1, live)

    async def _ticker(self) -> None:
        for tick in itertools.count(1):
            await asyncio.sleep(TICK)
            try:
                async with asyncio.timeout(max(self.timeout, 1.0)):
                    if not self.up:
                        await self.store.close()  # fresh connections: the old may be dead
                        await self._beat()
                        await self._resync()
                        self._unshare()
                        self.up = True
                        log.info("keymux: shared state %s answers again; re-synced", self.store.url)
                        self._kick()
                        continue
                    await self._flush_counts()
                    if tick % BEAT_EVERY == 0:
                        await self._beat()
                    if tick % PULL_EVERY == 0:
                        await self._pull()
            except (StoreError, TimeoutError) as exc:
                self._down(exc)

    async def _listener(self) -> None:
        delay = 0.25
        while True:
            heard = asyncio.Event()
            try:
                await self.store.listen(self._on_event, heard.set)
            except StoreError as exc:
                self._down(exc)
            if heard.is_set():
                delay = 0.25
            await asyncio.sleep(delay)
            delay = min(2 * delay, 2.0)
            if self.up and heard.is_set():
                # events may have been missed while resubscribing: read back
                with contextlib.suppress(StoreError, TimeoutError):
                    async with asyncio.timeout(max(self.timeout, 1.0)):
                        await self._pull()

    async def aclose(self) -> None:
        """Stop on this loop: the last counters flushed, this process leaves, connections
        close. Used again later, it starts anew."""
        starting, self._starting = self._starting, None
        if starting is None:
            return
        if not starting.done():
            starting.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._flushing = False
        self._active = False
        if self.up:
            with contextlib.suppress(StoreError, TimeoutError):
                async with asyncio.timeout(max(self.timeout, 1.0)):
                    if self._changes:
                        await self.store.change(self._changes, self.pid)
                    self._changes.clear()
                    await self._flush_counts()
                    await self.store.leave(self.pid)
        self.up = False
        await self.store.close()

    def forget(self) -> None:
        """After fork: the parent's connections and tasks are not ours; a new process id."""
        self.store.forget()
        self._tasks.clear()
        self._starting = None
        self._active = False
        self._flushing = False
        self.up = False
        self.pid = uuid.uuid4().hex[:12]
        self.offset = None

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts about the sharing (stats, the benchmark)."""
        return {
            "url": self.store.url,
            "up": self.up,
            "processes": self.live,
            "reserves": self.reserves,
            "refused": self.refusals,
            "flushes": self.flushes,
            "reserve_ms_avg": round(1000 * self.reserve_seconds / self.reserves, 4)
            if self.reserves
            else None,
            "outages": self.outages,
        }


def _span(window: LearnedWindow | None) -> float:
    """The span a learned window is counted over (its length and the margin for the skew
    between sending and arriving, as the local log keeps it); 0 while it is not learned. The
    store keeps spans: what every process counts its sends over."""
    if window is None or window.length is None:
        return 0.0
    return window_span(window.length)
