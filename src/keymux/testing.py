"""Helpers for testing code that uses keymux.

``FakeClock`` is a clock that only moves when told: pass it as ``Multiplexer(clock=...)`` and
cooldowns, retry delays, rate-limit windows and deadlines elapse when the test calls
``await clock.advance(seconds)``, exactly and at once, instead of in real time::

    from keymux import Multiplexer
    from keymux.testing import FakeClock

    clock = FakeClock()
    mux = Multiplexer(clock=clock)
    ...
    await clock.advance(30)   # a 30 s cooldown is over
"""

from ._clock import FakeClock

__all__ = ["FakeClock"]
