"""Injected time. The core, the rate limiter and the emulator read time only through a Clock.

``now()`` is monotonic seconds (what deadlines, cooldowns and windows use); ``wall()`` is Unix
time (what providers' absolute reset timestamps are in). ``sleep()`` waits on the clock; a
``FakeClock`` only moves when told, so tests of cooldowns and windows are exact and instant.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What keymux needs to know about time."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def wall(self) -> float:
        """Unix time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        ...

    def call_at(self, when: float, callback: object) -> object:
        """Run ``callback()`` on the running loop when ``now() >= when``; returns a handle with
        ``cancel()``."""
        ...


class SystemClock:
    """Real time: the event loop's monotonic clock and ``time.time()``."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_at(self, when: float, callback: object) -> object:
        loop = asyncio.get_running_loop()
        # the loop's clock is time.monotonic() on every supported platform
        return loop.call_at(loop.time() + (when - time.monotonic()), callback)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return "keymux.SystemClock()"


class _FakeHandle:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: object) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that only moves when told (``advance``/``set``). Sleepers and timers wake in order.

    ``await clock.sleep(5)`` returns after someone calls ``clock.advance(5)`` (or more). Tests
    await ``clock.advance(...)`` from the same event loop; it runs every timer that fell due and
    yields to the loop so woken tasks run before it returns.
    """

    def __init__(self, start: float = 1000.0, wall_start: float = 1_767_225_600.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._timers: list[tuple[float, int, _FakeHandle]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def call_at(self, when: float, callback: object) -> _FakeHandle:
        handle = _FakeHandle(callback)
        heapq.heappush(self._timers, (when, next(self._seq), handle))
        return handle

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        handle = self.call_at(self._now + seconds, wake)
        try:
            await fut
        finally:
            handle.cancel()

    def _fire_due(self) -> int:
        fired = 0
        while self._timers and self._timers[0][0] <= self._now:
            _, _, handle = heapq.heappop(self._timers)
            if not handle.cancelled:
                handle.cancelled = True
                handle.callback()  # type: ignore[operator]
                fired += 1
        return fired

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing timers in order, letting woken tasks run."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        target = self._now + seconds
        while True:
            await _settle()
            if self._timers and self._timers[0][0] <= target:
                self._now = max(self._now, self._timers[0][0])
                self._fire_due()
                continue
            break
        self._now = target
        self._fire_due()
        await _settle()

    async def set(self, when: float) -> None:
        """Move time forward to ``when``."""
        await self.advance(max(0.0, when - self._now))

    def next_timer(self) -> float | None:
        """When the next pending timer is due, or None."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def __repr__(self) -> str:
        return f"keymux.FakeClock(now={self._now:.3f}, timers={len(self._timers)})"


async def _settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)
