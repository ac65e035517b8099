"""Rate budgets: "may this key (or its group) send now, and if not, when?" without I/O.

A ``Budget`` is the shared state of one key, or of every key of one ``group`` (keys of one
project share its quota). It combines

* configured budgets: ``rpm``/``tpm`` paced evenly (a GCRA: at most one request every
  ``60/rpm`` seconds, tokens likewise), ``rpd`` counted over a rolling day;
* learned windows (``_pacing.LearnedWindow``): the limit a provider reports, spent by keymux's
  own log of what it sent over the window length learned from the resets, and lowered by what
  the provider counted beyond that log (``remaining`` stays authoritative);
* an adapted send rate (``_pacing.Aimd``) while no header reports the request limit that binds
  (Gemini; Groq's request headers describe the day): decreased on rate limits, increased on
  successes, capped by a configured ``rpm``;
* slow start: until its first answer a budget that knows nothing lets a few requests out;
* cooldowns after rate-limit answers, lengthened by repeated 429s and shortened by successes,
  and parking until a daily reset.

Everything takes ``now`` (monotonic seconds) from the caller: tests move a fake clock. The
sync facade and async callers reach the same budgets through the same core on one loop.
"""

from __future__ import annotations

from ._pacing import (
    DEFAULT_SPAN,
    JITTER,
    PROBE_BURST,
    PROBE_RATE,
    Aimd,
    Entry,
    LearnedWindow,
    SendLog,
    estimate_length,
    window_span,
)
from ._types import RateSnapshot

__all__ = ["Budget", "Gcra", "Reservation"]

#: until its first answer a budget lets PROBE_BURST requests out: look again this often (the
#: answer wakes the lane sooner)
UNKNOWN_RESET_RECHECK = 0.25
#: the tokens a request not estimated still needs from a learned token window: it waits only
#: while the window is spent
_SPENT = 1
#: a paced request that goes out at most this late (and at most one interval late) keeps its
#: schedule: a timer fires, and a busy event loop gets to it, a few milliseconds after the slot,
#: and without this slack every such delay would be lost for good
GCRA_SLACK = 0.1
#: the least spacing of what a window learned from 429s lets go while its length is new
PROBE_SPACING = 1.0 / PROBE_RATE
#: minute and day, in seconds
MINUTE = 60.0
DAY = 86400.0
#: the request history a budget keeps while a request limit is unreported (for the adapted
#: rate, and to learn a window's length from a 429 that names its limit): a real minute and
#: more, at a grain of a few milliseconds, and at most the newest HISTORY_ENTRIES entries
#: (some 25 KB; a key sending hundreds a second kept 16,384, 2 MB): a 429 that names a
#: limit larger than the history holds is learned over the period it names instead, and the
#: window it teaches counts its own sends from then on
HISTORY_SPAN = 64.0
HISTORY_QUANTA = 16384
HISTORY_ENTRIES = 256


class Gcra:
    """Even pacing: ``rate`` units per ``period`` seconds, no burst beyond one unit.

    A unit taken a little after its slot (up to one interval, at most ``GCRA_SLACK``) keeps the
    schedule, so dispatch latency does not lower the rate; idle time beyond that is not banked.
    The long-run rate is exact; a span of ``d`` seconds may see one unit more than strict pacing
    would send (``ceil(d / interval) + 1``), which a learned window, where the provider reports
    one, keeps from becoming a 429.

    ``strict``: no catch-up at all: units are never closer than one interval, so no span of
    ``d`` seconds holds more than ``ceil(d / interval)`` of them, whatever window the provider
    counts over: a configured ``rpm`` that equals a sliding window's limit (per minute, or per
    any window ``W`` that allows ``rpm * W / 60``) is never exceeded. What a late unit loses is
    lost (and that lateness, a timer's and a loop turn's, is the margin against the network's
    jitter between keymux's grant and the provider's count).
    """

    __slots__ = ("interval", "strict", "tat")

    def __init__(self, rate: float, period: float, *, strict: bool = False) -> None:
        self.strict = strict
        self.interval = period / rate
        self.tat = 0.0  # theoretical arrival time of the next unit

    def ready_at(self, now: float) -> float:
        return self.tat if self.tat > now else now

    def take(self, now: float, units: float) -> None:
        tat = self.tat
        if now > tat and (self.strict or now - tat > min(self.interval, GCRA_SLACK)):
            tat = now  # idle (or stalled) longer than the slack: no credit, no burst
        self.tat = tat + units * self.interval

    def give_back(self, units: float) -> None:
        self.tat -= units * self.interval

    def headroom(self, now: float) -> float:
        """1.0 when idle, falling toward 0 as the schedule runs ahead of now."""
        ahead = self.tat - now
        if ahead <= 0:
            return 1.0
        return max(0.0, 1.0 - ahead / (self.interval * 10))


class Reservation:
    """What one request took from a budget, settled when its real usage is known."""

    __slots__ = (
        "at",
        "inferred_entry",
        "paced",
        "rate_entry",
        "request_entry",
        "sent_at",
        "token_entry",
        "tokens",
    )

    def __init__(self, tokens: int, at: float = 0.0) -> None:
        self.tokens = tokens
        self.at = at  # when the budget let it go
        self.sent_at = at  # when it left (``observe`` says; a loop turn later for sync callers)
        self.paced = False  # the AIMD rate held it back (its success may raise the rate)
        self.request_entry: Entry | None = None
        self.token_entry: Entry | None = None
        self.rate_entry: Entry | None = None
        self.inferred_entry: Entry | None = None


class Budget:
    """The pacing state of one key or one group of keys."""

    __slots__ = (
        "aimd",
        "aimd_log",
        "answered",
        "cooldown_until",
        "day_count",
        "day_start",
        "in_flight",
        "inferred",
        "inferred_at",
        "inferred_freed",
        "inferred_pace",
        "inferred_pace_until",
        "learned_requests",
        "learned_tokens",
        "parked_until",
        "request_log",
        "requests_window",
        "rpd",
        "rpm",
        "streak",
        "token_log",
        "tpm",
    )

    def __init__(
        self, *, rpm: float | None = None, tpm: float | None = None, rpd: float | None = None
    ) -> None:
        # strict: a configured limit is never exceeded in any window (see Gcra)
        self.rpm = Gcra(rpm, MINUTE, strict=True) if rpm else None
        self.tpm = Gcra(tpm, MINUTE, strict=True) if tpm else None
        self.rpd = rpd
        self.day_start = 0.0
        self.day_count = 0
        #: keymux's own sends: what learned windows are spent by (from the first send on, so
        #: the sends before the first answer count too)
        self.request_log = SendLog()
        self.token_log = SendLog()
        self.learned_requests: LearnedWindow | None = None
        self.learned_tokens: LearnedWindow | None = None
        #: "minute" or "day": what the learned request window describes (Groq: the day)
        self.requests_window = "minute"
        #: the send rate for request limits no header reports (None once one does, or a 429
        #: names it)
        self.aimd: Aimd | None = Aimd(rpm / MINUTE if rpm else None)
        #: the request history while no header reports the request limit that binds: what
        #: the adapted rate and a window learned from a 429 are worked out from
        self.aimd_log = SendLog(HISTORY_SPAN, HISTORY_QUANTA, HISTORY_ENTRIES)
        #: a request limit no header reports: the limit a 429 names (Gemini's quotaValue,
        #: Groq's "Limit 30"), or one inferred from a 429 over the window the token headers
        #: describe (Groq: requests and tokens per minute, only tokens reported), over a window
        #: the token headers tell or the 429s and the history do
        self.inferred: LearnedWindow | None = None
        self.inferred_at = 0.0  # the last rate limit it was inferred from
        self.inferred_freed: float | None = None  # when that one said it would free up
        #: a window learned from 429s is also paced (see ``_pace_inferred``) for two windows
        #: after it was learned or raised: what frees at once goes out spaced, so a
        #: length still learned too short (a token bucket looks like a sliding log until it
        #: refills) costs one more 429, not a burst of them; after that its log alone governs
        #: (it makes up for requests that went out late, which pacing cannot)
        self.inferred_pace: Gcra | None = None
        self.inferred_pace_until = 0.0
        self.answered = False  # a first answer came back (until then: one request at a time)
        self.cooldown_until = 0.0
        self.parked_until = 0.0
        self.streak = 0  # rate-limit answers in a row
        self.in_flight = 0  # requests sent and not yet answered, over every key sharing this

    # -- asking -----------------------------------------------------------------------------

    def ready_at(self, now: float, tokens: int) -> float:
        """The earliest time a request estimated at ``tokens`` may go out (``now`` if at once)."""
        when = now
        if self.cooldown_until > when:
            when = self.cooldown_until
        if self.parked_until > when:
            when = self.parked_until
        if self.rpm is not None:
            when = max(when, self.rpm.ready_at(now))
        if self.tpm is not None:
            when = max(when, self.tpm.ready_at(now))
        if self.rpd is not None and self.day_count >= self.rpd and now < self.day_start + DAY:
            when = max(when, self.day_start + DAY)
        if not self.answered and self.in_flight >= PROBE_BURST and self.rpm is None:
            # slow start: nothing is known of this key's limits until its first answer
            when = max(when, now + UNKNOWN_RESET_RECHECK)
        if self.learned_requests is not None:
            when = max(when, self.learned_requests.ready_at(now, 1))
        if self.learned_tokens is not None:
            when = max(when, self.learned_tokens.ready_at(now, tokens or _SPENT))
        if self.aimd is not None:
            when = max(when, self.aimd.ready_at(now, self.in_flight))
        if self.inferred is not None:
            when = max(when, self.inferred.ready_at(now, 1))
            pace = self.inferred_pace
            if pace is not None:
                if now < self.inferred_pace_until:
                    when = max(when, pace.ready_at(now))
                else:
                    self.inferred_pace = None
        return when

    def headroom(self, now: float) -> float:
        """How much of its budget is left, 0..1 (1 when nothing is known)."""
        room = 1.0
        if self.cooldown_until > now or self.parked_until > now:
            return 0.0
        if self.rpm is not None:
            room = min(room, self.rpm.headroom(now))
        if self.tpm is not None:
            room = min(room, self.tpm.headroom(now))
        if self.rpd is not None:
            used = self.day_count if now < self.day_start + DAY else 0
            room = min(room, max(0.0, 1.0 - used / self.rpd))
        if self.learned_requests is not None:
            room = min(room, self.learned_requests.headroom(now))
        if self.learned_tokens is not None:
            room = min(room, self.learned_tokens.headroom(now))
        if self.aimd is not None:
            room = min(room, self.aimd.headroom(now))
        if self.inferred is not None:
            room = min(room, self.inferred.headroom(now))
        return room

    # -- spending ---------------------------------------------------------------------------

    def take(self, now: float, tokens: int) -> Reservation:
        """Spend one request and an estimate of its tokens."""
        self.in_flight += 1
        res = Reservation(tokens, now)
        if self.rpm is not None:
            self.rpm.take(now, 1)
        if self.tpm is not None and tokens:
            self.tpm.take(now, tokens)
        if self.rpd is not None:
            if now >= self.day_start + DAY or self.day_count == 0:
                if now >= self.day_start + DAY:
                    self.day_count = 0
                if self.day_count == 0:
                    self.day_start = now
            self.day_count += 1
        res.request_entry = self.request_log.add(now, 1)
        if tokens:
            res.token_entry = self.token_log.add(now, tokens)
        if self.aimd is not None:
            res.paced = self.aimd.take(now, GCRA_SLACK)
            res.rate_entry = self.aimd_log.add(now, 1)
        if self.inferred is not None:
            res.inferred_entry = self.inferred.log.add(now, 1)
            if self.inferred_pace is not None:
                self.inferred_pace.take(now, 1)
            if self.aimd is None:
                res.rate_entry = self.aimd_log.add(now, 1)
        return res

    def release(self) -> None:
        """One request taken with ``take`` got its answer (or gave up)."""
        if self.in_flight > 0:
            self.in_flight -= 1

    def settle(self, reservation: Reservation, actual_tokens: int | None) -> None:
        """Replace the token estimate with the real usage (None: keep the estimate)."""
        if actual_tokens is None:
            return
        diff = reservation.tokens - actual_tokens
        if diff == 0:
            return
        if self.tpm is not None:
            self.tpm.give_back(diff)
        entry = reservation.token_entry
        if entry is not None:
            self.token_log.adjust(entry, -diff)
        elif actual_tokens > 0:
            # not estimated when it went out: counted from now, later than it went (safe side)
            reservation.token_entry = self.token_log.add(reservation.at, actual_tokens)
        reservation.tokens = actual_tokens

    # -- learning ---------------------------------------------------------------------------

    def observe(
        self,
        snapshot: RateSnapshot | None,
        now: float,
        reservation: Reservation | None = None,
        sent_at: float | None = None,
        refused: bool = False,
    ) -> None:
        """An answer came back to the request of ``reservation``, sent at ``sent_at`` (when it
        left: a little later than the budget let it go); ``refused``: a rate limit, which the
        provider did not count. Learn limits from its headers (``snapshot``)."""
        self.answered = True
        if refused and reservation is not None:
            self._uncount(reservation)
        if reservation is not None and sent_at is not None and sent_at > reservation.at:
            reservation.sent_at = sent_at
            for log, entry in (
                (self.request_log, reservation.request_entry),
                (self.token_log, reservation.token_entry),
                (self.aimd_log, reservation.rate_entry),
            ):
                if entry is not None:
                    log.restamp(entry, sent_at)
            entry = reservation.inferred_entry
            if entry is not None and self.inferred is not None:
                self.inferred.log.restamp(entry, sent_at)
        if snapshot is None:
            return
        counted = None if reservation is None else max(reservation.at, sent_at or 0.0)
        req = snapshot.requests
        if req is not None and req.limit is not None and req.remaining is not None:
            window = self.learned_requests
            if window is None:
                window = self.learned_requests = LearnedWindow(req.limit, self.request_log)
            self.requests_window = snapshot.requests_window
            if snapshot.requests_window == "minute":
                self.aimd = None  # the provider reports the limit that binds
            window.observe(req.limit, req.remaining, req.reset_after, now, counted)
        tok = snapshot.tokens
        if tok is not None and tok.limit is not None and tok.remaining is not None:
            window = self.learned_tokens
            if window is None:
                window = self.learned_tokens = LearnedWindow(tok.limit, self.token_log)
            # every request spends tokens when it arrives: the newest request is the newest
            # send the provider may have counted tokens of
            window.observe(
                tok.limit, tok.remaining, tok.reset_after, now, counted, self.request_log.last_sent
            )
            if (
                self.aimd is not None
                and window.length is not None
                and self.aimd_log.span < window_span(window.length)
            ):
                self.aimd_log.set_span(window_span(window.length))  # enough to infer from

    def exhausted_reset(self, now: float) -> float | None:
        """When a learned window that is spent has room again (None: none is spent)."""
        best: float | None = None
        for window in (self.learned_requests, self.learned_tokens, self.inferred):
            if window is None:
                continue
            wait = window.reset_in(now)
            if wait is not None and wait > 0 and (best is None or now + wait < best):
                best = now + wait
        return best

    def on_success(self, reservation: Reservation | None = None) -> None:
        if self.streak:
            self.streak -= 1
        if reservation is not None and self.aimd is not None:
            self.aimd.on_success(reservation.at, reservation.paced)

    def on_rate_limited(
        self,
        now: float,
        cooldown: float,
        reservation: Reservation | None = None,
        retry_after: float | None = None,
        *,
        limit: float | None = None,
        dimension: str | None = None,
        period: float | None = None,
    ) -> None:
        """A rate-limit answer: cool down; the refused request was not counted by the
        provider, and it tells what the provider admits (``retry_after``: when it frees).

        ``limit``, ``dimension`` ("requests" or "tokens") and ``period`` (seconds): the limit
        the answer's body names, if it names one (``Outcome.limit``). A request limit no
        header reports becomes a learned window (``inferred``) from the first such 429 on:
        its length from the token headers' window when they tell one, else from the wait and
        the request history (``estimate_length``), raised by later 429s; a token limit no
        header reports likewise (``learned_tokens``)."""
        self.streak += 1
        self.cooldown_until = max(self.cooldown_until, now + cooldown)
        if reservation is None:
            return
        self._uncount(reservation)
        wait = cooldown if retry_after is None else retry_after
        if limit is not None and limit >= 1:
            if dimension == "requests" and self._named_requests(
                now, reservation, wait, limit, period
            ):
                return
            if dimension == "tokens" and self._named_tokens(now, reservation, wait, limit, period):
                return
        if self._infer(now, reservation):
            return
        if self.aimd is not None:
            # a 429 that tells no wait: while probing, the cooldown is the guess of when the
            # provider frees up; later, the rate the last round went at is what it refused
            if retry_after is None and not self.aimd.probing:
                wait = 0.0
            self.aimd.on_rate_limited(now, reservation.at, wait, self.aimd_log)
        elif self.learned_requests is not None and self.requests_window == "minute":
            self.learned_requests.on_refused(now, wait, reservation.at)
        elif self.inferred is not None and self.inferred_at <= reservation.at:
            self._relearn(self.inferred, now, wait, reservation, None)
            self._pace_inferred(now, wait, reservation)
            self.inferred_at = now
            self.inferred_freed = now + wait

    def _named_requests(
        self,
        now: float,
        reservation: Reservation,
        wait: float,
        limit: float,
        period: float | None,
    ) -> bool:
        """A 429 names the request limit: learn it as a window, unless a header reports the
        limit that binds (then the headers are what counts). Whether it applied."""
        if self.learned_requests is not None and self.requests_window == "minute":
            return False
        window = self.inferred
        if window is None:
            tokens = self.learned_tokens
            length: float | None
            if tokens is not None and tokens.length is not None:
                length = tokens.length  # the token headers tell the window (Groq's minute)
            else:
                length = estimate_length(
                    self.aimd_log, limit, now, wait, reservation.at, _jitter(reservation)
                )
            if length is None:
                length = period if period is not None else DEFAULT_SPAN
            elif period is not None:
                length = min(length, period)
            window = self.inferred = LearnedWindow(limit, SendLog(window_span(length)))
            window.length = length
            window.log.copy_from(self.aimd_log, now)
            self.aimd = None
        elif reservation.at >= self.inferred_at:
            # sent after the window was learned (or last raised): it was too short
            window.limit = limit
            self._relearn(window, now, wait, reservation, period)
        else:
            return True
        self._pace_inferred(now, wait, reservation)
        self.inferred_at = now
        self.inferred_freed = now + wait
        return True

    def _pace_inferred(self, now: float, wait: float, reservation: Reservation) -> None:
        """Space what the window learned from 429s lets go for two windows, from when the 429
        said it frees up: no closer than a 429 takes to come back from the grant (its hand-off
        counted twice; at least ``PROBE_SPACING``), never further apart than the window's limit
        over its length."""
        window = self.inferred
        if window is None or window.length is None or window.limit < 1:
            self.inferred_pace = None
            return
        start = now + wait
        spacing = max(PROBE_SPACING, now - reservation.at + (reservation.sent_at - reservation.at))
        pace = Gcra(1.0, min(spacing, window.length / window.limit))
        old = self.inferred_pace
        pace.tat = max(start, old.tat if old is not None else 0.0)
        self.inferred_pace = pace
        # two windows: the sends of the first are what a window too short lets go again
        self.inferred_pace_until = start + 2.0 * window.length

    def _named_tokens(
        self,
        now: float,
        reservation: Reservation,
        wait: float,
        limit: float,
        period: float | None,
    ) -> bool:
        """A 429 names the token limit: learn it as a window when no header reports one."""
        window = self.learned_tokens
        if window is not None:
            if window.length is None:
                return False
            window.on_refused(now, wait, reservation.at)
            return True
        length = estimate_length(
            self.token_log, limit, now, wait, reservation.at, _jitter(reservation)
        )
        if length is None:
            length = period if period is not None else DEFAULT_SPAN
        elif period is not None:
            length = min(length, period)
        window = self.learned_tokens = LearnedWindow(limit, self.token_log)
        window.length = length
        self.token_log.set_span(window_span(length))
        return True

    def _relearn(
        self,
        window: LearnedWindow,
        now: float,
        wait: float,
        reservation: Reservation,
        period: float | None,
    ) -> None:
        """A 429 although a window learned from 429s had room: it is longer than thought. The
        history tells how long now; its log takes over what the history holds of the longer
        span (what it had let go of too early)."""
        length = estimate_length(
            self.aimd_log,
            window.limit,
            now,
            wait,
            reservation.at,
            _jitter(reservation),
            window.length,
            self.inferred_freed,
        )
        if length is None or window.length is None or length <= window.length:
            return
        if period is not None:
            length = min(length, period)
        window.length = length
        window.log.set_span(window_span(length))
        window.log.copy_from(self.aimd_log, now)

    def _infer(self, now: float, reservation: Reservation) -> bool:
        """A rate limit while no header reports the request limit, but the token headers tell
        the window's length: the provider admitted what we sent over that window (Groq limits
        requests and tokens per minute and reports only the tokens). Whether it applied."""
        tokens = self.learned_tokens
        if tokens is None or tokens.length is None:
            return False
        inferred = self.inferred
        if inferred is None:
            if self.aimd is None:
                return False  # a header reports the request limit
            span = window_span(tokens.length)
            recent = self.aimd_log.since(now - span)
            admitted = sum(entry.amount for entry in recent)
            if admitted < 1:
                return False
            log = SendLog(span)
            for entry in recent:
                if entry.amount > 0:
                    log.add(entry.at, entry.amount)
            inferred = self.inferred = LearnedWindow(admitted, log)
            inferred.length = tokens.length
            self.aimd = None
        elif reservation.at >= self.inferred_at:
            admitted = inferred.log.used(now)
            if 1 <= admitted < inferred.limit:
                inferred.limit = admitted
        self.inferred_at = now
        return True

    def _uncount(self, reservation: Reservation) -> None:
        """A refused request: the provider did not count it, so the logs do not either."""
        entry = reservation.request_entry
        if entry is not None:
            reservation.request_entry = None
            self.request_log.adjust(entry, -1)
        entry = reservation.rate_entry
        if entry is not None:
            reservation.rate_entry = None
            self.aimd_log.adjust(entry, -1)
        entry = reservation.inferred_entry
        if entry is not None and self.inferred is not None:
            reservation.inferred_entry = None
            self.inferred.log.adjust(entry, -1)

    def refund(self, reservation: Reservation) -> None:
        """A request that took from this budget was not sent after all (the shared budget of
        every process said no): everything it took is given back."""
        self._uncount(reservation)
        self.settle(reservation, 0)
        if self.rpm is not None:
            self.rpm.give_back(1)
        if self.rpd is not None and self.day_count > 0:
            self.day_count -= 1
        self.release()

    def cool(self, now: float, seconds: float) -> None:
        self.cooldown_until = max(self.cooldown_until, now + seconds)

    def park(self, now: float, seconds: float) -> None:
        self.parked_until = max(self.parked_until, now + seconds)

    def snapshot(self, now: float) -> dict[str, object]:
        """JSON-ready facts for stats."""
        out: dict[str, object] = {}
        if self.cooldown_until > now:
            out["cooldown_s"] = round(self.cooldown_until - now, 3)
        if self.parked_until > now:
            out["parked_s"] = round(self.parked_until - now, 3)
        windows = [("requests", self.learned_requests), ("tokens", self.learned_tokens)]
        if self.inferred is not None:
            # the request limit a 429 told (or let infer) binds: it is the one reported
            if self.learned_requests is not None:
                windows.append(("requests_per_day", self.learned_requests))
            windows[0] = ("requests", self.inferred)
        for label, window in windows:
            if window is not None:
                reset = window.reset_in(now)
                facts: dict[str, object] = {
                    "limit": window.limit,
                    "remaining": max(0.0, window.room(now)),
                    "reset_s": None if reset is None else round(max(0.0, reset), 3),
                    "window_s": None if window.length is None else round(window.length, 3),
                }
                if window is self.inferred:
                    facts["source"] = "429"
                elif label.startswith("requests") and self.requests_window != "minute":
                    facts["per"] = self.requests_window
                out[f"learned_{label}"] = facts
        if self.aimd is not None and not self.aimd.probing and self.aimd.cap is None:
            out["adapted_rpm"] = round(self.aimd.rate * MINUTE, 1)
        return out


def _jitter(reservation: Reservation) -> float:
    """How far from a refused request's grant others may have reached the provider out of
    order: twice its own hand-off (grant to send), and a little."""
    return JITTER + 2.0 * max(0.0, reservation.sent_at - reservation.at)
