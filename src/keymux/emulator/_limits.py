"""A key's limits for one model (rpm, tpm, rpd) and the time formats providers report them in.

``Limits`` holds three meters of one rate model (``_rates.py``): requests and tokens over the
emulator's ``window``, requests over its ``day_window``. A request is counted at arrival, and
only when it is admitted: a 429 does not use up the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from ._rates import RATE_MODELS, Meter

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


@dataclass(frozen=True, slots=True)
class Usage:
    """One dimension of a budget at one moment: ``reset_in`` is the time until it is whole."""

    limit: int
    remaining: int
    reset_in: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The configured dimensions of a budget at one moment (None = not configured)."""

    rpm: Usage | None
    tpm: Usage | None
    rpd: Usage | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a request was refused: which limit, its numbers, and ``reset_in``, the time until
    the request would be admitted (for a ``too_large`` one: until the window is whole)."""

    dimension: Dimension
    limit: int
    used: int
    requested: int
    reset_in: float
    too_large: bool = False


def _usage(meter: Meter, now: float) -> Usage | None:
    if meter.limit is None:
        return None
    return Usage(meter.limit, meter.remaining(now), meter.reset_in(now))


class Limits:
    """The rpm, tpm and rpd meters of one budget, all of one rate model (``RATE_MODELS``)."""

    __slots__ = ("_day", "_requests", "_tokens", "rate_model")

    def __init__(
        self,
        *,
        rpm: int | None,
        tpm: int | None,
        rpd: int | None,
        window: float,
        day_window: float,
        rate_model: str = "sliding",
    ) -> None:
        meter = RATE_MODELS.get(rate_model)
        if meter is None:
            raise ValueError(
                f"unknown rate model {rate_model!r}; expected one of {', '.join(RATE_MODELS)}"
            )
        self.rate_model = rate_model
        self._requests = meter(window, rpm)
        self._tokens = meter(window, tpm)
        self._day = meter(day_window, rpd)

    def reconfigure(self, now: float, *, rpm: int | None, tpm: int | None, rpd: int | None) -> None:
        """Change the limits, keeping what has been used."""
        self._requests.set_limit(rpm, now)
        self._tokens.set_limit(tpm, now)
        self._day.set_limit(rpd, now)

    @property
    def configured(self) -> bool:
        return (
            self._requests.limit is not None
            or self._tokens.limit is not None
            or self._day.limit is not None
        )

    def admit(self, now: float, tokens: int) -> Verdict | None:
        """Count one request of ``tokens`` tokens, or say which limit refuses it (no charge).

        When several limits refuse, the verdict names the one that frees up last (ties: rpd,
        rpm, tpm), so its ``reset_in`` is when this request would be admitted. A request whose
        tokens alone exceed tpm is ``too_large`` unless rpd or rpm refuse it already.
        """
        refusals: list[Verdict] = []
        per_request: tuple[tuple[Dimension, Meter], ...] = (
            ("rpd", self._day),
            ("rpm", self._requests),
        )
        for dimension, meter in per_request:
            limit = meter.limit
            if limit is not None:
                wait = meter.wait(now, 1)
                if wait > 0:
                    refusals.append(Verdict(dimension, limit, meter.used(now), 1, wait))
        toks = self._tokens
        if toks.limit is not None:
            if tokens > toks.limit:
                if not refusals:
                    return Verdict(
                        "tpm", toks.limit, toks.used(now), tokens, toks.reset_in(now), True
                    )
            else:
                wait = toks.wait(now, tokens)
                if wait > 0:
                    refusals.append(Verdict("tpm", toks.limit, toks.used(now), tokens, wait))
        if refusals:
            return max(refusals, key=lambda verdict: verdict.reset_in)
        self._day.charge(now, 1)
        self._requests.charge(now, 1)
        toks.charge(now, tokens)
        return None

    def snapshot(self, now: float) -> Snapshot | None:
        """The configured dimensions now, or None when there are no limits."""
        if not self.configured:
            return None
        return Snapshot(
            _usage(self._requests, now), _usage(self._tokens, now), _usage(self._day, now)
        )

    def day_reset_in(self, now: float) -> float:
        """When a daily budget spent now would be whole again (the quota_spent fault)."""
        return self._day.exhausted_reset_in(now)


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
