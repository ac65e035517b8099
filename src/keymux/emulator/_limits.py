"""Per-key fixed-window limits and the time formats providers use to report them.

A window is aligned to the clock: its index is ``floor(now / length)`` and it resets when the
index changes. A request is counted at arrival, and only when it is admitted: a 429 does not use
up the budget. ``rpm``/``tpm`` share the emulator's ``window``; ``rpd`` uses its ``day_window``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

__all__ = [
    "Limits",
    "Snapshot",
    "Usage",
    "Verdict",
    "ceil_ms",
    "go_duration",
    "proto_duration",
    "retry_after",
    "rfc3339_ms",
]

Dimension = Literal["rpm", "tpm", "rpd"]


class _Window:
    __slots__ = ("index", "length", "limit", "used")

    def __init__(self, length: float, limit: int | None) -> None:
        self.length = length
        self.limit = limit
        self.index = -1
        self.used = 0

    def roll(self, now: float) -> None:
        index = math.floor(now / self.length)
        if index != self.index:
            self.index = index
            self.used = 0

    def reset_in(self, now: float) -> float:
        """Seconds until this window ends (after ``roll(now)``); never zero."""
        return max((self.index + 1) * self.length - now, 0.001)

    def usage(self, now: float) -> Usage | None:
        if self.limit is None:
            return None
        self.roll(now)
        return Usage(self.limit, max(0, self.limit - self.used), self.reset_in(now))


@dataclass(frozen=True, slots=True)
class Usage:
    """One dimension of a key's budget at one moment."""

    limit: int
    remaining: int
    reset_in: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The configured dimensions of a key's budget at one moment (None = not configured)."""

    rpm: Usage | None
    tpm: Usage | None
    rpd: Usage | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a request was refused: which limit, its numbers, and when its window ends."""

    dimension: Dimension
    limit: int
    used: int
    requested: int
    reset_in: float
    too_large: bool = False


class Limits:
    """Fixed-window counters of one key. Counts are kept even for unlimited dimensions."""

    __slots__ = ("_day", "_requests", "_tokens")

    def __init__(
        self, *, rpm: int | None, tpm: int | None, rpd: int | None, window: float, day_window: float
    ) -> None:
        self._requests = _Window(window, rpm)
        self._tokens = _Window(window, tpm)
        self._day = _Window(day_window, rpd)

    def reconfigure(self, *, rpm: int | None, tpm: int | None, rpd: int | None) -> None:
        """Change the limits, keeping what the current windows have used."""
        self._requests.limit = rpm
        self._tokens.limit = tpm
        self._day.limit = rpd

    @property
    def configured(self) -> bool:
        return (
            self._requests.limit is not None
            or self._tokens.limit is not None
            or self._day.limit is not None
        )

    def admit(self, now: float, tokens: int) -> Verdict | None:
        """Count one request of ``tokens`` tokens, or say which limit refuses it (no charge)."""
        day, requests, toks = self._day, self._requests, self._tokens
        day.roll(now)
        requests.roll(now)
        toks.roll(now)
        if day.limit is not None and day.used + 1 > day.limit:
            return Verdict("rpd", day.limit, day.used, 1, day.reset_in(now))
        if requests.limit is not None and requests.used + 1 > requests.limit:
            return Verdict("rpm", requests.limit, requests.used, 1, requests.reset_in(now))
        if toks.limit is not None:
            if tokens > toks.limit:
                return Verdict("tpm", toks.limit, toks.used, tokens, toks.reset_in(now), True)
            if toks.used + tokens > toks.limit:
                return Verdict("tpm", toks.limit, toks.used, tokens, toks.reset_in(now))
        day.used += 1
        requests.used += 1
        toks.used += tokens
        return None

    def snapshot(self, now: float) -> Snapshot | None:
        """The configured dimensions now, or None when the key has no limits."""
        if not self.configured:
            return None
        return Snapshot(self._requests.usage(now), self._tokens.usage(now), self._day.usage(now))

    def day_reset_in(self, now: float) -> float:
        self._day.roll(now)
        return self._day.reset_in(now)


def ceil_ms(seconds: float) -> int:
    """Whole milliseconds, rounded up (a client that waits this long is not early)."""
    return max(0, math.ceil(seconds * 1000.0 - 1e-6))


def go_duration(seconds: float) -> str:
    """A Go ``time.Duration`` string with millisecond precision: ``734ms``, ``1.25s``, ``6m0s``."""
    ms = ceil_ms(seconds)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    text = ""
    if hours:
        text += f"{hours}h"
    if hours or minutes:
        text += f"{minutes}m"
    return text + _seconds(rest) + "s"


def proto_duration(seconds: float) -> str:
    """A protobuf Duration in JSON form with millisecond precision: ``0.734s``, ``26s``."""
    return _seconds(ceil_ms(seconds)) + "s"


def _seconds(ms: int) -> str:
    whole, frac = divmod(ms, 1000)
    return str(whole) if frac == 0 else f"{whole}.{frac:03d}".rstrip("0")


def retry_after(seconds: float) -> str:
    """A ``retry-after`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds - 1e-6)))


def rfc3339_ms(unix: float) -> str:
    """An absolute RFC 3339 UTC timestamp with milliseconds, rounded up: ``...T12:40:59.734Z``."""
    ms = ceil_ms(unix)
    stamp = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"
