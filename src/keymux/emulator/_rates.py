"""Rate models: how one limit (requests or tokens per window) admits, counts and reports.

Each model is a small class behind one interface, ``Meter``, found by name in ``RATE_MODELS``:

* ``"sliding"`` (``SlidingLog``): an exact sliding log. An amount is admitted iff the amounts
  admitted in the last ``length`` seconds plus it stay within ``limit``; an amount admitted at
  ``t`` counts during ``[t, t + length)``. ``remaining`` is the limit minus that sum, the reset
  is the time until the newest admitted amount leaves (the log is empty again), and the wait
  for a refused amount is the time until enough of the oldest amounts have left.
* ``"token-bucket"`` (``TokenBucket``): ``limit`` tokens of capacity, refilled continuously at
  ``limit / length`` per second, full at the start. ``remaining`` is the whole tokens in the
  bucket, the reset is the time until it is full, the wait is the time until the amount is in.
* ``"fixed"`` (``FixedWindow``): windows aligned to the clock (index ``floor(now / length)``)
  that reset when the index changes; the reset and the wait are both the time until the window
  ends (never zero). This was the emulator's only model before the other two.

Every method takes ``now`` (monotonic seconds from the emulator's clock); nothing here reads
time or sleeps. Meters only count while they have a limit, except ``FixedWindow``, which always
counts (a limit set later sees what its window already used, as it always did).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from types import MappingProxyType

__all__ = ["RATE_MODELS", "FixedWindow", "Meter", "SlidingLog", "TokenBucket"]

#: slack for float comparisons of times and token levels (far below a millisecond)
_EPS = 1e-9


class Meter(ABC):
    """One limit over a window of ``length`` seconds; ``limit`` None = unlimited."""

    __slots__ = ("length", "limit")

    def __init__(self, length: float, limit: int | None) -> None:
        self.length = float(length)
        self.limit = limit

    @abstractmethod
    def used(self, now: float) -> int:
        """What counts against the limit now."""

    def remaining(self, now: float) -> int:
        """What could still be admitted now (0 when unlimited)."""
        return 0 if self.limit is None else max(0, self.limit - self.used(now))

    @abstractmethod
    def reset_in(self, now: float) -> float:
        """Seconds until the limit is back to its initial state (nothing used)."""

    @abstractmethod
    def wait(self, now: float, amount: int) -> float:
        """Seconds until ``amount`` fits (0.0: it fits now, or no limit). Needs ``amount <=
        limit``: a larger amount never fits, which the caller says as "too large"."""

    @abstractmethod
    def charge(self, now: float, amount: int) -> None:
        """Count an admitted ``amount``."""

    def exhausted_reset_in(self, now: float) -> float:
        """When a budget spent to the last unit now would be whole again."""
        return self.length

    def set_limit(self, limit: int | None, now: float) -> None:
        """Change the limit, keeping what has been used."""
        self.limit = limit

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length:g}, limit={self.limit})"


class SlidingLog(Meter):
    """An exact sliding log: (time, amount) pairs of the last ``length`` seconds."""

    __slots__ = ("_amounts", "_sum", "_times")

    def __init__(self, length: float, limit: int | None) -> None:
        super().__init__(length, limit)
        self._times: deque[float] = deque()
        self._amounts: deque[int] = deque()
        self._sum = 0

    def _prune(self, now: float) -> None:
        horizon = now - self.length + _EPS
        times, amounts = self._times, self._amounts
        while times and times[0] <= horizon:
            times.popleft()
            self._sum -= amounts.popleft()

    def used(self, now: float) -> int:
        self._prune(now)
        return self._sum

    def reset_in(self, now: float) -> float:
        self._prune(now)
        return max(0.0, self._times[-1] + self.length - now) if self._times else 0.0

    def wait(self, now: float, amount: int) -> float:
        if self.limit is None:
            return 0.0
        self._prune(now)
        excess = self._sum + amount - self.limit
        if excess <= 0:
            return 0.0
        freed = 0
        for at, count in zip(self._times, self._amounts, strict=True):
            freed += count
            if freed >= excess:
                return max(0.0, at + self.length - now)
        return self.length  # pragma: no cover - only when amount > limit, checked before

    def charge(self, now: float, amount: int) -> None:
        if self.limit is None:
            return
        self._prune(now)
        if self._times and self._times[-1] == now:
            self._amounts[-1] += amount  # one entry per instant keeps the log short
        else:
            self._times.append(now)
            self._amounts.append(amount)
        self._sum += amount

    def set_limit(self, limit: int | None, now: float) -> None:
        if limit is None:
            self._times.clear()
            self._amounts.clear()
            self._sum = 0
        self.limit = limit


class TokenBucket(Meter):
    """``limit`` tokens of capacity, refilled at ``limit / length`` per second."""

    __slots__ = ("_at", "_level")

    def __init__(self, length: float, limit: int | None) -> None:
        super().__init__(length, limit)
        self._level = float(limit or 0)
        self._at: float | None = None

    def _refill(self, now: float) -> float:
        limit = self.limit
        if limit is None:
            return 0.0
        if self._at is None:
            self._at = now
        elif now > self._at:
            self._level = min(float(limit), self._level + (now - self._at) * limit / self.length)
            self._at = now
        return self._level

    def used(self, now: float) -> int:
        return 0 if self.limit is None else self.limit - self.remaining(now)

    def remaining(self, now: float) -> int:
        if self.limit is None:
            return 0
        return max(0, math.floor(self._refill(now) + _EPS))

    def reset_in(self, now: float) -> float:
        if self.limit is None:
            return 0.0
        missing = self.limit - self._refill(now)
        return max(0.0, missing * self.length / self.limit)

    def wait(self, now: float, amount: int) -> float:
        if self.limit is None:
            return 0.0
        missing = amount - self._refill(now)
        if missing <= _EPS:
            return 0.0
        return missing * self.length / self.limit

    def charge(self, now: float, amount: int) -> None:
        if self.limit is None:
            return
        self._refill(now)
        self._level -= amount

    def set_limit(self, limit: int | None, now: float) -> None:
        old = self.limit
        self._refill(now)  # what refilled so far, at the old rate
        if limit is not None:
            # what was taken stays taken: a new capacity keeps the old deficit
            deficit = 0.0 if old is None else old - self._level
            self._level = max(0.0, limit - deficit)
        self.limit = limit


class FixedWindow(Meter):
    """Windows aligned to the clock: index ``floor(now / length)``, reset when it changes."""

    __slots__ = ("_count", "_index")

    def __init__(self, length: float, limit: int | None) -> None:
        super().__init__(length, limit)
        self._index = -1
        self._count = 0

    def _roll(self, now: float) -> None:
        index = math.floor(now / self.length)
        if index != self._index:
            self._index = index
            self._count = 0

    def used(self, now: float) -> int:
        self._roll(now)
        return self._count

    def reset_in(self, now: float) -> float:
        """Seconds until this window ends; never zero."""
        self._roll(now)
        return max((self._index + 1) * self.length - now, 0.001)

    def wait(self, now: float, amount: int) -> float:
        if self.limit is None:
            return 0.0
        self._roll(now)
        return 0.0 if self._count + amount <= self.limit else self.reset_in(now)

    def charge(self, now: float, amount: int) -> None:
        self._roll(now)
        self._count += amount

    def exhausted_reset_in(self, now: float) -> float:
        return self.reset_in(now)


#: rate model name -> the meter class that implements it
RATE_MODELS: MappingProxyType[str, type[Meter]] = MappingProxyType(
    {"sliding": SlidingLog, "token-bucket": TokenBucket, "fixed": FixedWindow}
)
