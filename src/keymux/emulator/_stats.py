"""Counters the emulator keeps per key and in total (cheap: plain ints in slots)."""

from __future__ import annotations

from typing import Any

__all__ = ["Counters"]


class Counters:
    """What one key (or the whole emulator) has served.

    ``requests`` counts every request that reached a handler; ``ok`` the 200 answers (including
    the deliberately malformed ones); ``rate_limited`` every 429 served (limits, quota, billing);
    ``errors`` every non-200 status, keyed by status; ``tokens`` the tokens charged against the
    limits; ``streams`` the streams started; ``faults`` the injected faults, by name.
    """

    __slots__ = (
        "errors",
        "faults",
        "ok",
        "rate_limited",
        "requests",
        "streams",
        "tokens",
        "unknown_key",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.ok = 0
        self.rate_limited = 0
        self.errors: dict[int, int] = {}
        self.tokens = 0
        self.streams = 0
        self.faults: dict[str, int] = {}
        self.unknown_key = 0

    def status(self, status: int) -> None:
        if status == 200:
            self.ok += 1
            return
        self.errors[status] = self.errors.get(status, 0) + 1
        if status == 429:
            self.rate_limited += 1

    def fault(self, name: str) -> None:
        self.faults[name] = self.faults.get(name, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "rate_limited": self.rate_limited,
            "errors": {str(status): n for status, n in sorted(self.errors.items())},
            "tokens": self.tokens,
            "streams": self.streams,
            "faults": dict(sorted(self.faults.items())),
        }
