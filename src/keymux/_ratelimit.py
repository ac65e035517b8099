"""Rate budgets: "may this key (or its group) send now, and if not, when?" without I/O.

A ``Budget`` is the shared state of one key, or of every key of one ``group`` (keys of one
project share its quota). It combines

* configured budgets: ``rpm``/``tpm`` paced evenly (a GCRA: at most one request every
  ``60/rpm`` seconds, tokens likewise), ``rpd`` counted over a rolling day;
* learned windows: limit / remaining / reset as the provider reported them on its latest
  answer, spent locally as requests go out and corrected by every answer;
* cooldowns after rate-limit answers, lengthened by repeated 429s and shortened by successes,
  and parking until a daily reset.

Everything takes ``now`` (monotonic seconds) from the caller: tests move a fake clock.
"""

from __future__ import annotations

from ._types import LimitInfo, RateSnapshot

__all__ = ["Budget", "Gcra", "Reservation", "Window"]

#: a header whose reset is this close to (or before) now describes a window that has passed
_STALE = 0.002
#: when a learned window is spent and its end unknown, look again this often (answers wake sooner)
UNKNOWN_RESET_RECHECK = 0.25
#: a paced request that goes out at most this late (and at most one interval late) keeps its
#: schedule: a timer fires, and a busy event loop gets to it, a few milliseconds after the slot,
#: and without this slack every such delay would be lost for good
GCRA_SLACK = 0.1
#: minute and day, in seconds
MINUTE = 60.0
DAY = 86400.0


class Gcra:
    """Even pacing: ``rate`` units per ``period`` seconds, no burst beyond one unit.

    A unit taken a little after its slot (up to one interval, at most ``GCRA_SLACK``) keeps the
    schedule, so dispatch latency does not lower the rate; idle time beyond that is not banked.
    The long-run rate is exact; a span of ``d`` seconds may see one unit more than strict pacing
    would send (``ceil(d / interval) + 1``), which a learned window, where the provider reports
    one, keeps from becoming a 429.
    """

    __slots__ = ("interval", "tat")

    def __init__(self, rate: float, period: float) -> None:
        self.interval = period / rate  # seconds per unit
        self.tat = 0.0  # theoretical arrival time of the next unit

    def ready_at(self, now: float) -> float:
        return self.tat if self.tat > now else now

    def take(self, now: float, units: float) -> None:
        tat = self.tat
        if now - tat > min(self.interval, GCRA_SLACK):
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


class Window:
    """A provider-reported window: ``limit`` per window, ``remaining`` now, ends at ``reset_at``."""

    __slots__ = ("limit", "remaining", "reset_at")

    def __init__(self, limit: float, remaining: float, reset_at: float | None) -> None:
        self.limit = limit
        self.remaining = remaining
        self.reset_at = reset_at

    def _roll(self, now: float) -> None:
        if self.reset_at is not None and now >= self.reset_at:
            self.remaining = self.limit
            self.reset_at = None  # the next answer tells when the new window ends

    def ready_at(self, now: float, units: float, answers_pending: bool = False) -> float:
        self._roll(now)
        if self.remaining >= units or (self.remaining >= self.limit > 0):
            return now
        if self.remaining >= 1 and units > self.limit:
            return now  # a request larger than the whole window: let the provider judge it
        if self.reset_at is not None:
            return self.reset_at
        # spent in a window whose end no answer has told yet: wait for one (it wakes the lane);
        # with none pending, one request goes out to learn it
        return now + UNKNOWN_RESET_RECHECK if answers_pending else now

    def take(self, now: float, units: float) -> None:
        self._roll(now)
        self.remaining -= units

    def observe(self, info: LimitInfo, now: float, in_flight: int) -> None:
        """Correct from an answer: ``in_flight`` other requests may not be counted in it yet."""
        if info.limit is not None and info.limit > 0:
            self.limit = info.limit
        if info.remaining is None or info.reset_after is None:
            return
        reset_at = now + info.reset_after
        self._roll(now)
        if info.reset_after <= _STALE:
            return  # describes a window that has just ended
        if self.reset_at is None:
            # we rolled over locally and counted what we sent since: the provider may know more
            self.remaining = min(self.remaining, info.remaining)
            self.reset_at = reset_at
        elif reset_at > self.reset_at + 0.05:
            # the provider is already in a window we have not rolled into: trust it, minus what
            # we sent that it may not have counted yet
            self.remaining = info.remaining - in_flight
            self.reset_at = reset_at
        else:
            self.remaining = min(self.remaining, info.remaining)
            if reset_at > self.reset_at:
                self.reset_at = reset_at

    def headroom(self, now: float) -> float:
        self._roll(now)
        if self.limit <= 0:
            return 1.0
        return max(0.0, min(1.0, self.remaining / self.limit))

    def __repr__(self) -> str:
        return f"Window({self.remaining:g}/{self.limit:g}, reset_at={self.reset_at})"


class Reservation:
    """What one request took from a budget, settled when its real usage is known."""

    __slots__ = ("tokens",)

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens


class Budget:
    """The pacing state of one key or one group of keys."""

    __slots__ = (
        "cooldown_until",
        "day_count",
        "day_start",
        "in_flight",
        "learned_requests",
        "learned_tokens",
        "parked_until",
        "rpd",
        "rpm",
        "streak",
        "tpm",
    )

    def __init__(
        self, *, rpm: float | None = None, tpm: float | None = None, rpd: float | None = None
    ) -> None:
        self.rpm = Gcra(rpm, MINUTE) if rpm else None
        self.tpm = Gcra(tpm, MINUTE) if tpm else None
        self.rpd = rpd
        self.day_start = 0.0
        self.day_count = 0
        self.learned_requests: Window | None = None
        self.learned_tokens: Window | None = None
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
        pending = self.in_flight > 0
        if self.learned_requests is not None:
            when = max(when, self.learned_requests.ready_at(now, 1, pending))
        if self.learned_tokens is not None and tokens:
            when = max(when, self.learned_tokens.ready_at(now, tokens, pending))
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
        return room

    # -- spending ---------------------------------------------------------------------------

    def take(self, now: float, tokens: int) -> Reservation:
        """Spend one request and an estimate of its tokens."""
        self.in_flight += 1
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
        if self.learned_requests is not None:
            self.learned_requests.take(now, 1)
        if self.learned_tokens is not None and tokens:
            self.learned_tokens.take(now, tokens)
        return Reservation(tokens)

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
        if self.learned_tokens is not None:
            self.learned_tokens.remaining += diff
        reservation.tokens = actual_tokens

    # -- learning ---------------------------------------------------------------------------

    def observe(self, snapshot: RateSnapshot, now: float, in_flight: int) -> None:
        """Learn limits from an answer's headers (429 or not)."""
        req = snapshot.requests
        if req is not None and req.limit is not None and req.remaining is not None:
            if self.learned_requests is None:
                self.learned_requests = Window(req.limit, req.remaining - in_flight, None)
            self.learned_requests.observe(req, now, in_flight)
        tok = snapshot.tokens
        if tok is not None and tok.limit is not None and tok.remaining is not None:
            if self.learned_tokens is None:
                self.learned_tokens = Window(tok.limit, tok.remaining, None)
            self.learned_tokens.observe(tok, now, 0)

    def exhausted_reset(self, now: float) -> float | None:
        """When a learned window that is spent resets (the precise end of a rate limit)."""
        best: float | None = None
        for window in (self.learned_requests, self.learned_tokens):
            if (
                window is not None
                and window.reset_at is not None
                and window.remaining < 1
                and window.reset_at > now
                and (best is None or window.reset_at < best)
            ):
                best = window.reset_at
        return best

    def on_success(self) -> None:
        if self.streak:
            self.streak -= 1

    def on_rate_limited(self, now: float, cooldown: float) -> None:
        self.streak += 1
        self.cooldown_until = max(self.cooldown_until, now + cooldown)

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
        for label, window in (("requests", self.learned_requests), ("tokens", self.learned_tokens)):
            if window is not None:
                window.ready_at(now, 0)
                out[f"learned_{label}"] = {
                    "limit": window.limit,
                    "remaining": max(0.0, window.remaining),
                    "reset_s": None
                    if window.reset_at is None
                    else round(max(0.0, window.reset_at - now), 3),
                }
        return out
