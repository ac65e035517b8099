"""GCRA pacing keeps its schedule when a request goes out a little late (dispatch latency)."""

from __future__ import annotations

import pytest

from keymux._ratelimit import GCRA_SLACK, Budget, Gcra


def test_late_dispatch_keeps_the_schedule() -> None:
    g = Gcra(1200, 60.0)  # one every 50 ms
    g.take(100.0, 1)
    # every following request goes out 3 ms after its slot (a timer fired late)
    for n in range(1, 201):
        slot = g.ready_at(100.0)
        assert slot == pytest.approx(100.0 + 0.05 * n)
        g.take(slot + 0.003, 1)
    # 201 requests in 10 s + 3 ms: the lateness was not added up (strict max() lost 0.6 s)
    assert g.tat == pytest.approx(100.0 + 0.05 * 201)


def test_idle_beyond_the_slack_banks_nothing() -> None:
    g = Gcra(1200, 60.0)
    g.take(100.0, 1)
    g.take(100.0 + 0.05 + 0.06, 1)  # more than one interval late: the schedule restarts
    assert g.ready_at(0.0) == pytest.approx(100.16)
    slow = Gcra(1, 60.0)  # one a minute: the slack is capped at GCRA_SLACK
    slow.take(0.0, 1)
    slow.take(60.0 + GCRA_SLACK + 0.01, 1)
    assert slow.ready_at(0.0) == pytest.approx(120.0 + GCRA_SLACK + 0.01)


def test_at_most_one_extra_request_in_any_window() -> None:
    g = Gcra(1200, 60.0)  # 20 a second, with the slack
    sends: list[float] = []
    now = 1000.0
    for i in range(400):
        now = max(now, g.ready_at(now))
        late = 0.049 if i % 7 == 0 else 0.0  # some slots dispatched almost an interval late
        g.take(now + late, 1)
        sends.append(now + late)
    for start in (1000.0 + k * 0.01 for k in range(1900)):
        assert sum(start <= t < start + 1.0 for t in sends) <= 21
    # and the long-run rate is exact
    assert sends[-1] - sends[0] == pytest.approx(399 * 0.05, abs=0.05)


def _windows_hold(sends: list[float], window: float, limit: int) -> bool:
    return all(sum(t <= u < t + window for u in sends) <= limit for t in sends)


@pytest.mark.parametrize(("window", "limit"), [(1.0, 20), (0.5, 10), (3.0, 60), (60.0, 1200)])
def test_a_configured_rpm_is_never_exceeded_in_any_window(window: float, limit: int) -> None:
    """A configured rpm is strict: no catch-up, so no span of any length holds more than the
    rate allows (a sliding window of 20 a second is what rpm=1200 is met with in the
    emulator's time scale, a real minute's 1200 by a real provider)."""
    b = Budget(rpm=1200)
    sends: list[float] = []
    now = 1000.0
    for i in range(1300):
        now = max(now, b.ready_at(now, 0))
        late = 0.049 if i % 7 == 0 else 0.0
        b.take(now + late, 0)
        sends.append(now + late)
    assert _windows_hold(sends, window, limit)
    # what a late send lost is lost: 1299 intervals and the lateness of every seventh
    assert sends[-1] - sends[0] == pytest.approx(1299 * 0.05 + 186 * 0.049, abs=0.05)


def test_a_strict_gcra_goes_on_time_after_idle() -> None:
    g = Gcra(60, 60.0, strict=True)
    g.take(100.0, 1)
    assert g.ready_at(100.0) == 101.0
    g.take(105.0, 1)  # idle: no credit
    assert g.ready_at(105.0) == 106.0
    g.take(106.5, 1)  # half an interval late: lost
    assert g.ready_at(106.5) == 107.5
