"""Pacing against limits a provider reports (learned windows) and limits it never tells (AIMD).

Three small pieces, pure and clock-free (every method takes ``now`` from the caller):

* ``SendLog``: keymux's own sends (request counts, or token amounts settled with real usage)
  over the last ``span`` seconds. Bounded: sends closer together than ``span / QUANTA`` share
  one entry, which expires with the latest of them (conservative by one slot), so a log holds at
  most ``QUANTA + 1`` entries however large the window (a day) or the traffic.
* ``LearnedWindow``: a limit ``L`` the provider reports with remaining ``R`` and reset ``T``.
  The three rate models providers use (sliding log, token bucket, fixed window) all admit a
  stream with fewer than ``L`` sends in any span of their window length ``W``, so keymux sends
  while its own log of the last ``W`` holds fewer than ``L`` (minus what other consumers of the
  key use). ``W`` is learned from the resets: every model's reset is the time until the limit
  is whole again, which is at most the time from the newest counted send to ``W`` after it, so
  ``T + (now - newest own send)`` is a lower bound of ``W``, tight when the budget is in use;
  the largest seen is the estimate (plus a margin for send-vs-arrival skew). ``R`` stays
  authoritative: what the provider counted beyond this log (another process on the same key,
  a window still underestimated) lowers the room until the window has passed.
* ``Aimd``: a send rate for limits nobody reports (Gemini; Groq's per-minute requests) and for
  configured ``rpm`` the provider may enforce more strictly than it was paced: multiplicative
  decrease on a rate limit (once per round: answers to requests sent before the last decrease
  do not count again), additive increase on the successes of requests the rate held back.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = [
    "BOUNDS_MEET",
    "JITTER",
    "QUANTA",
    "Aimd",
    "Entry",
    "LearnedWindow",
    "SendLog",
    "estimate_length",
    "window_span",
]

#: a log keeps at most this many entries per window (sends closer together share one)
QUANTA = 256
#: before a window length is known, a log keeps this long (a provider's minute, the common case)
DEFAULT_SPAN = 60.0
#: margin added to a learned window: keymux counts a send when it is granted, the provider when
#: it arrives, and the two differ by a loop turn and the network (more under load)
SKEW_ABS = 0.004
SKEW_REL = 0.004
#: a header whose reset is this close to (or before) now describes a window that has passed
STALE = 0.002
#: learning a window's length from a 429: sends let go this close to the refused one (besides
#: twice its own hand-off) may have reached the provider in another order
JITTER = 0.001
#: a token bucket's length from a 429 is its least upper bound when that is at most this
#: many times the greatest lower bound (else the lower one)
BOUNDS_MEET = 1.25
#: a request this many times the window's limit or more goes when the window is empty
_TOO_LARGE = 1.0

#: AIMD: multiplicative decrease on a rate limit, increase per held-back success
AIMD_DECREASE = 0.96
AIMD_INCREASE = 0.0003
#: the span of the log an adapted rate is estimated from (recent sends at a fine grain)
AIMD_SPAN = 16.0
#: never below one request a minute
AIMD_MIN_RATE = 1.0 / 60.0
#: probing an unknown limit: this many at once, then this rate, growing per held-back success
PROBE_BURST = 4
PROBE_RATE = 250.0
PROBE_GROWTH = 1.02


def window_span(length: float) -> float:
    """The span a learned window of ``length`` seconds is kept over (length plus the margin)."""
    return length * (1.0 + SKEW_REL) + SKEW_ABS


class Entry:
    """Sends of one slot of a log: their amount, and when the latest of them went out."""

    __slots__ = ("amount", "at", "live", "start")

    def __init__(self, start: float, amount: float) -> None:
        self.start = start  # the first send of the slot
        self.at = start  # the latest send of the slot: the entry expires ``span`` after it
        self.amount = amount
        self.live = True  # still counted by its log

    def __repr__(self) -> str:
        return f"Entry(at={self.at:.4f}, amount={self.amount:g})"


class SendLog:
    """Own sends of the last ``span`` seconds, in at most ``quanta + 1`` entries (and no more
    than ``cap``, the newest, when a cap is given)."""

    __slots__ = ("cap", "cut", "entries", "last_sent", "quanta", "quantum", "span", "total")

    def __init__(
        self, span: float = DEFAULT_SPAN, quanta: int = QUANTA, cap: int | None = None
    ) -> None:
        self.cap = cap
        self.entries: deque[Entry] = deque()
        self.total = 0.0
        #: the latest send (``Entry.at`` may be moved earlier when the provider lets it go)
        self.last_sent: float | None = None
        self.cut = False  # the next send starts a new entry
        self.span = span
        self.quanta = quanta
        self.quantum = span / quanta

    def set_span(self, span: float) -> None:
        self.span = span
        self.quantum = span / self.quanta

    def copy_from(self, other: SendLog, now: float) -> None:
        """Take over what ``other`` holds of the last ``span`` seconds (entry by entry, as
        they are); what this log held goes (its entries no longer count anywhere)."""
        for entry in self.entries:
            entry.live = False
        self.entries.clear()
        self.total = 0.0
        horizon = now - self.span
        for entry in other.entries:
            if entry.at > horizon and entry.amount > 0:
                copy = Entry(entry.start, entry.amount)
                copy.at = entry.at
                self.entries.append(copy)
                self.total += entry.amount
        self.last_sent = other.last_sent
        self.cut = True

    def prune(self, now: float) -> None:
        horizon = now - self.span
        entries = self.entries
        while entries and entries[0].at <= horizon:
            old = entries.popleft()
            old.live = False
            self.total -= old.amount
        if not entries or self.total < 1e-9:
            self.total = max(0.0, self.total) if entries else 0.0

    def add(self, now: float, amount: float) -> Entry:
        """Count ``amount`` sent at ``now``; the entry it went into (for later corrections)."""
        self.prune(now)
        if self.last_sent is None or now > self.last_sent:
            self.last_sent = now
        entries = self.entries
        if entries and not self.cut:
            last = entries[-1]
            if now - last.start < self.quantum and now >= last.at:
                last.at = now
                last.amount += amount
                self.total += amount
                return last
        self.cut = False
        entry = Entry(now, amount)
        entries.append(entry)
        self.total += amount
        cap = self.cap
        if cap is not None and len(entries) > cap:
            old = entries.popleft()
            old.live = False
            self.total = max(0.0, self.total - old.amount)
        return entry

    def adjust(self, entry: Entry, delta: float) -> None:
        """Correct an entry (a refused send comes out, a token estimate becomes real usage)."""
        entry.amount += delta
        if entry.live:
            self.total = max(0.0, self.total + delta)

    def restamp(self, entry: Entry, sent_at: float) -> None:
        """The sends of ``entry`` went out as late as ``sent_at``: they expire after that."""
        if entry.live and sent_at > entry.at:
            entry.at = sent_at
        if self.last_sent is None or sent_at > self.last_sent:
            self.last_sent = sent_at

    def trim(self, sent_until: float, keep: float) -> None:
        """Of the sends up to ``sent_until``, keep only the newest ``keep`` (whole entries)."""
        counted = 0.0
        kept = 0
        for entry in reversed(self.entries):
            if entry.at > sent_until:
                kept += 1
                continue
            if counted >= keep - 1e-9:
                break
            counted += entry.amount
            kept += 1
        entries = self.entries
        while len(entries) > kept:
            old = entries.popleft()
            old.live = False
            self.total -= old.amount
        if not entries or self.total < 0:
            self.total = max(0.0, self.total) if entries else 0.0

    def expire_by(self, sent_until: float, when: float) -> None:
        """Every send up to ``sent_until`` leaves no later than ``when`` (the provider said its
        limit is whole again then)."""
        latest = when - self.span
        for entry in reversed(self.entries):
            if entry.at <= latest:
                break
            if entry.at <= sent_until and entry.start <= sent_until:
                entry.at = latest

    def used(self, now: float) -> float:
        self.prune(now)
        return self.total

    def frees_at(self, now: float, excess: float) -> float:
        """When at least ``excess`` of what the log holds now will have left it."""
        self.prune(now)
        freed = 0.0
        latest = now - self.span
        for entry in self.entries:
            # entries may be out of order after a restamp: an entry leaves no sooner than one
            # before it (pruning goes from the left)
            latest = max(latest, entry.at)
            freed += entry.amount
            if freed >= excess - 1e-9:
                return latest + self.span
        return latest + self.span if self.entries else now

    def nth_newest(self, count: float) -> float | None:
        """When the send that makes ``count`` counting back from the newest went out."""
        total = 0.0
        for entry in reversed(self.entries):
            total += entry.amount
            if total >= count - 1e-9:
                return entry.at
        return None

    def peak_rate(self, now: float, wait: float, since: float) -> float | None:
        """The highest ``k / (now - t_k + wait)`` over the sends since ``since`` (``t_k``: the
        k-th newest): the rate a limit that frees up ``wait`` from now would have admitted
        them at. None when no send since ``since`` is in the log."""
        best: float | None = None
        count = 0.0
        for entry in reversed(self.entries):
            if entry.start < since:
                break
            count += entry.amount
            span = now - entry.start + wait
            if count > 0 and span > 0:
                rate = count / span
                if best is None or rate > best:
                    best = rate
        return best

    def since(self, start: float) -> list[Entry]:
        """The entries of sends after ``start``, oldest first."""
        out: list[Entry] = []
        for entry in reversed(self.entries):
            if entry.at <= start:
                break
            out.append(entry)
        out.reverse()
        return out

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"SendLog({self.total:g} over {self.span:g} s, {len(self.entries)} entries)"


def estimate_length(
    log: SendLog,
    limit: float,
    now: float,
    wait: float,
    before: float | None = None,
    jitter: float = 0.0,
    known: float | None = None,
    freed: float | None = None,
) -> float | None:
    """The length ``W`` of a window of ``limit`` per ``W`` that refused a send of ours (let go
    at ``before``, refused by ``now``, admitted ``wait`` from now), from our admitted sends in
    ``log`` up to it (the refused one already out of the log; later ones the provider had not
    seen); None when the log holds fewer than ``limit``. Sends let go within ``jitter`` of the
    refused one may have reached the provider in another order, and those before it may have
    been refused too without our knowing yet: their count is the estimate's uncertainty.
    ``known``: the length the send was let go under (a refusal it does not explain);
    ``freed``: when the previous refusal said it would free up (its ``now + wait``).

    With ``t_k`` the k-th newest admitted send, every rate model (sliding log, token bucket,
    fixed window) has ``W >= now + wait - t_limit`` (``W_s``; exact for a sliding log: the
    oldest of the window's sends leaves then). When our sends show more than ``limit`` in some
    span of ``W_s`` (beyond the uncertainty), or ``W_s`` is no longer than the ``known`` length
    that failed, it is no sliding log. A token bucket (capacity ``limit``, refilled at
    ``limit / W``) has ``W <= limit * (now + wait - t_k) / (k + 1 - limit)`` for every
    ``k >= limit`` (the least is exact when the bucket was full before ``t_k``), waits at most
    one unit's refill (``wait <= W / limit``), and is never below empty: ``W >= limit *
    (now + wait - t_j) / j`` for ``j <= limit``, tight when it was empty after ``t_j``, which a
    bucket that refuses has just been. The greatest lower bound is the bucket's estimate (the
    least upper bound where the two nearly meet). A fixed window fits neither and keeps
    ``W_s``, a lower bound that a later refusal raises. After a bucket's earlier refusal, it
    held exactly one unit when that one said it would (``freed``): with ``n`` of our sends
    admitted since, ``W = limit * (now + wait - freed) / n``, exact where it fits the bounds.
    Counts are taken at the high end of
    their uncertainty: estimates err short, for a window learned too short costs one more 429,
    one learned too long costs throughput for good.
    """
    if limit < 1 or wait < 0:
        return None
    horizon = math.inf if before is None else before
    sends = [(entry.start, entry.amount) for entry in log.entries if entry.amount > 1e-9]
    later = 0.0  # let go after the refused one, but close enough to have arrived before it
    while sends and sends[-1][0] > horizon:
        start, amount = sends.pop()
        if start <= horizon + jitter:
            later += amount
    if not sends:
        return None
    unsure = later
    if jitter > 0:
        unsure += sum(amount for start, amount in sends if start > horizon - jitter)
    free = now + wait
    count = later  # at the high end: every estimate errs short
    sliding: float | None = None
    bucket = math.inf
    exact = math.inf  # the same, where the count's uncertainty is small beside it
    refill = 0.0
    for start, amount in reversed(sends):
        count += amount
        if count <= limit + 1e-9:
            refill = max(refill, limit * (free - start) / count)
        if sliding is None and count >= limit - 1e-9:
            sliding = free - start
        excess = count + 1 - limit
        if excess >= 1 - 1e-9:
            bound = limit * (free - start) / excess
            bucket = min(bucket, bound)
            if excess >= 4 * (unsure + 1):
                exact = min(exact, bound)
    if sliding is None:
        return None
    # a sliding log of ``sliding`` would have admitted no more than ``limit`` in any span of it;
    # and if it is no longer than the ``known`` length that let this send go, it does not
    # explain the refusal
    oldest = 0
    inside = 0.0
    explains = known is None or sliding > known * (1.0 + SKEW_REL) + jitter + SKEW_ABS
    # what our clock says is ``sliding`` was shorter by up to the sends' own skew at the provider
    span = sliding * (1.0 - SKEW_REL) - jitter - SKEW_ABS
    for start, amount in sends:
        if not explains:
            break
        inside += amount
        while sends[oldest][0] <= start - span:
            inside -= sends[oldest][1]
            oldest += 1
        if inside > limit + unsure + 1e-9:
            break
    else:
        return sliding
    # a token bucket? It refills a unit in ``W / limit``, so it never waits longer than that
    # (``bucket`` bounds ``W``); and it was never below empty, so for the j newest of our sends
    # ``W >= limit * (now + wait - t_j) / j`` (``refill``): as close from below as the bucket
    # was to empty after them, which a bucket that refuses has just been
    if wait <= bucket / limit * 1.01 + 0.002 and refill <= bucket * 1.01 + 0.002:
        lower = max(sliding, refill)
        if freed is not None and free > freed:
            since = later + sum(amount for start, amount in sends if start >= freed - jitter)
            if since >= 1:
                told = limit * (free - freed) / since
                if lower * 0.99 <= told <= bucket * 1.01 + 0.002:
                    return max(lower, told)
        # the least upper bound is exact when the bucket was full before that send (a fresh
        # key's was): taken where the count is sure enough and the two bounds nearly meet
        return exact if lower <= exact <= lower * BOUNDS_MEET else lower
    return sliding


class LearnedWindow:
    """A limit the provider reports: ``limit`` per a learned ``length``, spent by ``log``.

    ``outside`` is what the provider counted on its latest answer beyond this log (another
    process on the same key, or a window learned too short so far); it holds until
    ``outside_until`` (one window after that answer) or the next answer.
    """

    __slots__ = ("length", "limit", "log", "outside", "outside_until", "raised_at")

    def __init__(self, limit: float, log: SendLog) -> None:
        self.limit = limit
        self.length: float | None = None
        self.log = log
        self.outside = 0.0
        self.outside_until = 0.0
        #: when a refusal last lengthened the window (``on_refused``: once per round)
        self.raised_at = -math.inf

    def _outside(self, now: float) -> float:
        if self.outside and now >= self.outside_until:
            self.outside = 0.0
        return self.outside

    def room(self, now: float) -> float:
        """What may still go out now."""
        return self.limit - self._outside(now) - self.log.used(now)

    def ready_at(self, now: float, units: float) -> float:
        if units <= 0:
            return now
        outside = self._outside(now)
        room = self.limit - outside - self.log.used(now)
        need = units
        if units > self.limit * _TOO_LARGE:
            # larger than the whole window: it goes when the window is empty, the provider judges
            need = self.limit - outside if self.limit - outside >= 1 else self.limit
        if room >= need - 1e-9:
            return now
        when = self.log.frees_at(now, need - room) if self.log.total > 0 else math.inf
        if outside > 0:
            when = min(when, max(now, self.outside_until))
        return now if when == math.inf else max(now, when)

    def observe(
        self,
        limit: float | None,
        remaining: float,
        reset: float | None,
        now: float,
        counted_until: float | None = None,
        newest: float | None = None,
    ) -> None:
        """An answer's report: ``remaining`` of ``limit``, whole again ``reset`` s from now.

        ``newest``: our newest send the provider may have counted, when the log does not
        know it (a token log gets a request's tokens only when its answer tells them, but the
        provider counted them when it arrived); else the log's newest.

        ``counted_until``: when the answered request went out. The provider had counted every
        send of ours up to it that it still holds, so the log keeps only the newest
        ``limit - remaining`` of those (a fixed window that rolled over, a bucket that refilled,
        a sliding log that let them go) and lets them all go by ``now + reset`` (every model's
        reset is the time until the limit is whole again). Later sends stay as they are.
        """
        if limit is not None and limit > 0 and limit != self.limit:
            self.limit = limit
        used = max(0.0, self.limit - remaining)
        log = self.log
        if log.last_sent is not None and (newest is None or log.last_sent > newest):
            newest = log.last_sent
        if used > 0 and reset is not None and reset > STALE and newest is not None:
            # every model's reset is at most the window from the newest send it counted, which
            # is no newer than our newest: the whole window when the budget is in use
            estimate = reset + max(0.0, now - newest)
            if self.length is None or estimate > self.length:
                self.length = estimate
                log.set_span(window_span(estimate))
        if counted_until is not None:
            log.trim(counted_until, used)
            if reset is not None:
                log.expire_by(counted_until, now + max(0.0, reset))
        self.outside = max(0.0, used - log.used(now))
        self.outside_until = now + (reset if reset is not None else log.span)

    def on_refused(self, now: float, wait: float | None, sent_at: float | None = None) -> None:
        """A rate limit although the log had room: the provider counts over a longer window.
        It frees up ``wait`` from now, so the window is at least as long as from the send that
        fills it (the limit-th newest of ours) to then. Once per round: the refusals of sends
        that went out before the window was last lengthened (``sent_at``) say nothing new (a
        burst of them, each lengthening it again, would make it many windows long)."""
        if wait is None or wait <= 0:
            return
        if sent_at is not None and sent_at < self.raised_at:
            return
        nth = self.log.nth_newest(max(1.0, self.limit - self.outside))
        if nth is None:
            return
        estimate = now + wait - nth
        if self.length is not None and estimate > self.length and estimate < 4 * self.length:
            self.length = estimate
            self.log.set_span(window_span(estimate))
            self.raised_at = now

    def headroom(self, now: float) -> float:
        if self.limit <= 0:
            return 1.0
        return max(0.0, min(1.0, self.room(now) / self.limit))

    def reset_in(self, now: float) -> float | None:
        """When the window has room for one more (None: it has room now)."""
        if self.room(now) >= 1:
            return None
        return self.ready_at(now, 1) - now

    def __repr__(self) -> str:
        return (
            f"LearnedWindow({self.log.total:g}+{self.outside:g}/{self.limit:g} per "
            f"{self.length if self.length is not None else '?'} s)"
        )


class Aimd:
    """A send rate (requests per second) adapted from rate limits, paced like a GCRA.

    Without a configured ``cap`` it starts *probing*: up to ``PROBE_BURST`` requests in flight
    go at once, more are spaced at ``PROBE_RATE`` (growing by ``PROBE_GROWTH`` with every
    success the spacing held back), so the first rate limit comes from a spaced stream (it
    comes back in a round trip, and a burst would have sent many more into it) and tells what
    the provider admits (``SendLog.peak_rate``). Probing waits on time only while answers are
    pending, so a clock that stands still never holds it. With a ``cap`` (a configured rate)
    it starts there, never exceeds it, and only backs off.
    """

    __slots__ = ("cap", "probing", "rate", "round_start", "tat")

    def __init__(self, cap: float | None = None) -> None:
        self.cap = cap
        self.rate = cap if cap is not None else PROBE_RATE
        self.probing = cap is None
        self.tat = -math.inf
        self.round_start = -math.inf  # the last decrease: older sends do not decrease again

    def ready_at(self, now: float, in_flight: int) -> float:
        if self.probing and in_flight < PROBE_BURST:
            return now
        tat = self.tat
        return tat if tat > now else now

    def take(self, now: float, slack: float) -> bool:
        """A request goes out; whether the rate held it back (it went out near its slot)."""
        interval = 1.0 / self.rate
        tat = self.tat
        paced = now - tat <= interval
        if self.probing:
            self.tat = now + interval
            return paced
        if now - tat > min(interval, slack):
            tat = now
        self.tat = tat + interval
        return paced

    def on_success(self, sent_at: float, paced: bool) -> None:
        if not paced or sent_at < self.round_start:
            return
        rate = self.rate * (PROBE_GROWTH if self.probing else 1.0 + AIMD_INCREASE)
        if self.cap is not None and rate > self.cap:
            rate = self.cap
        self.rate = rate

    def on_rate_limited(self, now: float, sent_at: float, wait: float, log: SendLog) -> bool:
        """Decrease for a rate limit on a request sent at ``sent_at`` (once per round); whether
        it did."""
        if sent_at < self.round_start:
            return False
        rate = self.rate
        if self.probing:
            peak = log.peak_rate(now, max(wait, 0.0), -math.inf)
            # nothing admitted at all: about one per wait
            new = peak if peak is not None else min(rate / 2.0, 1.0 / max(wait, 1e-3))
            self.probing = False
        else:
            peak = log.peak_rate(now, max(wait, 0.0), self.round_start)
            new = rate * AIMD_DECREASE
            if peak is not None and peak < new:
                new = peak
        if self.cap is not None and new > self.cap:
            new = self.cap
        self.rate = max(new, AIMD_MIN_RATE)
        self.round_start = now
        log.cut = True  # the sends of the new round get entries of their own
        return True

    def headroom(self, now: float) -> float:
        ahead = self.tat - now
        if ahead <= 0 or self.probing:
            return 1.0
        return max(0.0, 1.0 - ahead * self.rate / 10)

    def __repr__(self) -> str:
        state = "probing " if self.probing else ""
        return f"Aimd({state}{self.rate:.3f}/s)"
