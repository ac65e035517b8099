"""Rate budgets with explicit ``now`` values: pacing, learned windows, cooldowns, groups.

Nothing here sleeps; every question is "at time t, when may the next request go?" (the last
test sends one real request, to the emulator, to see token estimates start).
"""

from __future__ import annotations

import itertools
import json
import random

import pytest

from conftest import KeyPlan, MakeRig
from keymux._clock import FakeClock
from keymux._config import KeySpec, MuxConfig
from keymux._core import Core
from keymux._pacing import SendLog, estimate_length, window_span
from keymux._ratelimit import DAY, HISTORY_ENTRIES, Budget, Gcra, Reservation
from keymux._secret import Secret
from keymux._types import LimitInfo, RateSnapshot


def send_schedule(budget: Budget, n: int, start: float, tokens: int = 0) -> list[float]:
    """When ``n`` requests sent as early as the budget allows go out (each answered at once)."""
    times = []
    now = start
    for _ in range(n):
        now = budget.ready_at(now, tokens)
        budget.take(now, tokens)
        budget.release()
        times.append(now)
    return times


def requests(limit: float | None, remaining: float | None, reset: float | None) -> RateSnapshot:
    return RateSnapshot(requests=LimitInfo(limit, remaining, reset))


def tokens(limit: float | None, remaining: float | None, reset: float | None) -> RateSnapshot:
    return RateSnapshot(tokens=LimitInfo(limit, remaining, reset))


# --- GCRA pacing ------------------------------------------------------------------------------


def test_gcra_rpm_60_is_one_per_second_without_burst() -> None:
    g = Gcra(60, 60.0)
    assert g.interval == 1.0
    assert g.ready_at(100.0) == 100.0
    g.take(100.0, 1)
    assert g.ready_at(100.0) == 101.0
    assert g.ready_at(100.999) == 101.0
    assert g.ready_at(101.0) == 101.0
    g.take(101.0, 1)
    assert g.ready_at(101.0) == 102.0
    # after a long idle spell there is no saved-up burst: one at once, then one per second
    assert g.ready_at(500.0) == 500.0
    g.take(500.0, 1)
    assert g.ready_at(500.0) == 501.0


@pytest.mark.parametrize(
    ("rpm", "expected"),
    [
        (60, [1000.0, 1001.0, 1002.0, 1003.0, 1004.0]),
        (120, [1000.0, 1000.5, 1001.0, 1001.5, 1002.0]),
        (30, [1000.0, 1002.0, 1004.0, 1006.0, 1008.0]),
        (1, [1000.0, 1060.0, 1120.0, 1180.0, 1240.0]),
    ],
)
def test_rpm_paces_evenly(rpm: float, expected: list[float]) -> None:
    assert send_schedule(Budget(rpm=rpm), 5, 1000.0) == pytest.approx(expected)


def test_gcra_headroom() -> None:
    g = Gcra(60, 60.0)
    assert g.headroom(0.0) == 1.0
    g.take(0.0, 1)
    assert g.headroom(0.0) == pytest.approx(0.9)  # one interval ahead of ten
    g.take(0.0, 9)
    assert g.headroom(0.0) == 0.0
    assert g.headroom(10.0) == 1.0


def test_tpm_reservation_and_settlement() -> None:
    b = Budget(tpm=600)  # 10 tokens a second
    r = b.take(1000.0, 100)
    assert r.tokens == 100
    assert b.ready_at(1000.0, 50) == pytest.approx(1010.0)
    # the answer used 40 tokens: 60 come back
    b.settle(r, 40)
    assert r.tokens == 40
    assert b.ready_at(1000.0, 50) == pytest.approx(1004.0)
    # None: the answer did not say; the estimate stands
    b.settle(r, None)
    assert b.ready_at(1000.0, 50) == pytest.approx(1004.0)
    # the same number again changes nothing
    b.settle(r, 40)
    assert b.ready_at(1000.0, 50) == pytest.approx(1004.0)


def test_tpm_underestimate_costs_more() -> None:
    b = Budget(tpm=600)
    r = b.take(1000.0, 10)
    b.settle(r, 110)
    assert b.ready_at(1000.0, 1) == pytest.approx(1011.0)


def test_tpm_is_untouched_by_requests_without_an_estimate() -> None:
    b = Budget(tpm=600)
    assert send_schedule(b, 3, 1000.0, tokens=0) == [1000.0, 1000.0, 1000.0]


def test_rpm_and_tpm_together_wait_for_the_later() -> None:
    b = Budget(rpm=60, tpm=600)
    b.take(1000.0, 50)  # rpm: next at 1001; tpm: next at 1005
    assert b.ready_at(1000.0, 10) == pytest.approx(1005.0)
    b2 = Budget(rpm=60, tpm=6000)
    b2.take(1000.0, 50)  # tpm: next at 1000.5
    assert b2.ready_at(1000.0, 10) == pytest.approx(1001.0)


def test_rpd_counts_a_day_from_its_first_request() -> None:
    b = Budget(rpd=3)
    assert send_schedule(b, 3, 1000.0) == [1000.0, 1000.0, 1000.0]
    assert b.ready_at(1500.0, 0) == 1000.0 + DAY
    assert b.headroom(1500.0) == 0.0
    # the day is over: a new one starts with the next request
    assert b.ready_at(1000.0 + DAY, 0) == 1000.0 + DAY
    assert b.headroom(1000.0 + DAY) == 1.0
    b.take(1000.0 + DAY + 5, 0)
    assert b.day_start == 1000.0 + DAY + 5
    assert b.headroom(1000.0 + DAY + 5) == pytest.approx(2 / 3)
    assert send_schedule(b, 2, 1000.0 + DAY + 6) == [1000.0 + DAY + 6] * 2
    assert b.ready_at(1000.0 + DAY + 7, 0) == 1000.0 + 2 * DAY + 5


def test_rpd_spread_over_the_day() -> None:
    b = Budget(rpd=2)
    b.take(0.0, 0)
    b.take(80_000.0, 0)
    assert b.ready_at(80_001.0, 0) == DAY  # the day began at 0, not at the second request


# --- learned windows --------------------------------------------------------------------------
# (the old ``Window`` waited for the provider's full reset once it was spent, subtracted requests
# in flight from the first answer and rolled over at the reset: that was the bug of issue "the
# pacer must hold against real providers". A learned window is now spent by keymux's own log
# of sends over the window length learned from the resets; ``test_pacer.py`` drives it against
# the emulator's three rate models.)


def test_the_provider_counts_what_our_log_does_not_hold_until_its_reset() -> None:
    b = Budget()
    b.observe(requests(10, 3, 5.0), 100.0)  # 7 used by someone else (another process)
    w = b.learned_requests
    assert w is not None
    assert (w.limit, w.outside, w.length) == (10, 7, None)  # no send of ours: no length yet
    assert b.headroom(100.0) == pytest.approx(0.3)
    assert send_schedule(b, 3, 100.0) == [100.0, 100.0, 100.0]
    assert b.ready_at(100.0, 0) == 105.0  # the provider's word: whole again at 105
    assert b.exhausted_reset(100.0) == 105.0
    assert b.headroom(100.0) == 0.0
    # at 105 the other consumer's 7 are gone; our 3 stay until a window after they went (a
    # minute while no answer told the window's length)
    assert w.room(105.0) == 7
    assert send_schedule(b, 7, 105.0) == [105.0] * 7
    assert b.ready_at(105.0, 0) == pytest.approx(160.0)


def test_own_sends_are_let_go_when_the_provider_says_so() -> None:
    b = Budget()
    first = b.take(100.0, 0)
    b.observe(requests(10, 9, 1.0), 100.02, first, 100.0)  # the window is about 1 s long
    w = b.learned_requests
    assert w is not None
    assert w.length == pytest.approx(1.02)
    rest = [b.take(100.02 + 0.005 * i, 0) for i in range(9)]  # 5 ms apart: one entry each
    # the first send goes when the provider said its limit is whole, the others a window later
    assert b.ready_at(100.07, 0) == pytest.approx(101.02)
    # a later answer: 4 of ours counted and the window whole at 100.9 (a fixed window that
    # rolled over, a bucket that refilled): the older of ours are gone, the rest go at 100.9
    b.observe(requests(10, 6, 0.83), 100.07, rest[-1], 100.06)
    assert w.log.used(100.07) == pytest.approx(4)
    assert b.ready_at(100.07, 0) == 100.07
    send_schedule(b, 6, 100.07)
    assert b.ready_at(100.07, 0) == pytest.approx(100.9)


def test_a_refused_request_is_not_counted() -> None:
    b = Budget()
    reservations = [b.take(0.0, 0) for _ in range(3)]
    b.observe(requests(3, 0, 1.0), 0.01, reservations[0], 0.0)
    assert b.ready_at(0.01, 0) > 0.01
    b.observe(requests(3, 1, 0.99), 0.011, reservations[2], 0.0, True)  # a 429: not counted
    assert b.learned_requests is not None
    assert b.learned_requests.log.used(0.011) == 2
    assert b.ready_at(0.011, 0) == 0.011


def test_window_length_is_learned_from_the_largest_reset_after_the_newest_send() -> None:
    b = Budget()
    r = b.take(10.0, 0)
    b.observe(requests(60, 59, 59.5), 10.5, r, 10.0)  # newest send 0.5 s ago: at least 60 s
    w = b.learned_requests
    assert w is not None
    assert w.length == pytest.approx(60.0)
    b.observe(requests(60, 59, 29.5), 40.5, r, 10.0)  # the same window seen later
    assert w.length == pytest.approx(60.0)
    b.observe(requests(60, 59, 20.0), 40.5, r, 10.0)  # shorter resets never shrink it
    assert w.length == pytest.approx(60.0)
    b.observe(requests(60, 60, 0.0), 80.0)  # nothing counted: no length from it
    assert w.length == pytest.approx(60.0)


def test_learned_limit_changes_and_partial_headers() -> None:
    b = Budget()
    b.observe(requests(10, 8, 4.0), 100.0)
    b.observe(requests(None, None, None), 100.5)
    w = b.learned_requests
    assert w is not None
    assert w.limit == 10
    b.observe(requests(20, 18, 4.0), 100.5)  # a new limit is adopted
    assert w.limit == 20
    b.observe(requests(20, 18, None), 100.6)  # no reset: the count still holds, for a window
    assert w.outside == 2
    # a snapshot without a limit or a remaining count does not create a window
    c = Budget()
    c.observe(requests(None, 5, 1.0), 0.0)
    c.observe(requests(10, None, 1.0), 0.0)
    assert c.learned_requests is None


def test_learned_tokens_window() -> None:
    b = Budget()
    b.observe(tokens(1000, 300, 6.0), 100.0)
    assert b.learned_requests is None
    assert b.ready_at(100.0, 200) == 100.0
    assert b.ready_at(100.0, 400) == 106.0
    assert b.ready_at(100.0, 0) == 100.0  # no estimate: it waits only while the window is spent
    # larger than the whole window: it goes when our log is empty, the provider judges it
    assert b.ready_at(100.0, 5000) == 100.0
    r = b.take(100.0, 250)
    assert b.learned_tokens is not None
    assert b.learned_tokens.room(100.0) == 50
    assert b.ready_at(100.0, 100) == 106.0
    b.settle(r, 100)  # 150 back
    assert b.learned_tokens.room(100.0) == 200
    assert b.ready_at(100.0, 100) == 100.0
    b.take(100.0, 200)
    assert b.ready_at(100.0, 0) == 106.0  # nothing left at all
    assert b.exhausted_reset(100.0) == 106.0


def test_exhausted_reset_is_the_earliest_spent_window() -> None:
    b = Budget()
    assert b.exhausted_reset(0.0) is None
    b.observe(RateSnapshot(LimitInfo(10, 0, 30.0), LimitInfo(1000, 0, 12.0)), 0.0)
    assert b.exhausted_reset(0.0) == 12.0
    assert b.exhausted_reset(12.0) == 30.0  # the tokens window has room again
    assert b.exhausted_reset(30.0) is None
    c = Budget()
    c.observe(RateSnapshot(LimitInfo(10, 1, 30.0), LimitInfo(1000, 0.5, 12.0)), 0.0)
    assert c.exhausted_reset(0.0) == 12.0  # less than one token left counts as spent
    d = Budget()
    d.observe(requests(10, 1, 30.0), 0.0)
    assert d.exhausted_reset(0.0) is None


def test_groq_daily_request_headers_are_a_day_window_and_the_minute_is_adapted() -> None:
    b = Budget()
    snap = RateSnapshot(requests=LimitInfo(14400, 14000, 3600.0), requests_window="day")
    b.observe(snap, 0.0)
    assert b.learned_requests is not None
    assert b.requests_window == "day"
    assert b.aimd is not None  # the per-minute request limit is unreported: still adapted
    assert b.snapshot(0.0)["learned_requests"] == {
        "limit": 14400,
        "remaining": 14000,
        "reset_s": None,
        "window_s": None,
        "per": "day",
    }
    minute = Budget()
    minute.observe(requests(14400, 14000, 3600.0), 0.0)
    assert minute.aimd is None  # a reported request limit needs no adapting


# --- cooldown, parking, streaks ---------------------------------------------------------------


def test_cooldown_and_streak() -> None:
    b = Budget()
    b.on_rate_limited(100.0, 5.0)
    assert (b.cooldown_until, b.streak) == (105.0, 1)
    assert b.ready_at(100.0, 0) == 105.0
    assert b.ready_at(105.0, 0) == 105.0
    assert b.headroom(104.9) == 0.0
    assert b.headroom(105.0) == 1.0
    b.on_rate_limited(101.0, 2.0)  # a shorter cooldown never shortens the current one
    assert (b.cooldown_until, b.streak) == (105.0, 2)
    b.on_rate_limited(102.0, 10.0)
    assert (b.cooldown_until, b.streak) == (112.0, 3)
    b.cool(103.0, 1.0)  # 5xx cooling: no streak
    assert (b.cooldown_until, b.streak) == (112.0, 3)
    for expected in (2, 1, 0, 0):
        b.on_success()
        assert b.streak == expected


def test_park_until_a_daily_reset() -> None:
    b = Budget(rpm=60)
    b.park(100.0, 3600.0)
    b.park(200.0, 10.0)  # never shortened
    assert b.parked_until == 3700.0
    assert b.ready_at(100.0, 0) == 3700.0
    assert b.headroom(3699.0) == 0.0
    assert b.headroom(3700.0) == 1.0
    snap = b.snapshot(100.0)
    assert snap == {"parked_s": 3600.0}


def test_ready_at_is_the_latest_of_every_constraint() -> None:
    b = Budget(rpm=60)
    b.take(100.0, 0)  # rpm: 101
    b.cool(100.0, 3.0)  # 103
    assert b.ready_at(100.0, 0) == 103.0
    b.park(100.0, 2.0)  # 102: still 103
    assert b.ready_at(100.0, 0) == 103.0
    b.observe(requests(5, 0, 7.0), 100.0)  # 107
    assert b.ready_at(100.0, 0) == 107.0


def test_headroom_is_the_least_of_its_parts() -> None:
    b = Budget(rpm=60, rpd=4)
    assert b.headroom(0.0) == 1.0
    b.take(0.0, 0)
    b.release()
    # rpm: one interval of ten ahead -> 0.9; rpd: 1 of 4 used -> 0.75
    assert b.headroom(0.0) == pytest.approx(0.75)
    b.observe(requests(10, 3, 30.0), 0.0)
    assert b.headroom(0.0) == pytest.approx(0.3)
    b.observe(tokens(1000, 100, 30.0), 0.0)
    assert b.headroom(0.0) == pytest.approx(0.1)
    b.cool(0.0, 1.0)
    assert b.headroom(0.5) == 0.0


def test_in_flight_is_counted_and_never_negative() -> None:
    b = Budget()
    b.take(0.0, 0)
    b.take(0.0, 0)
    assert b.in_flight == 2
    b.release()
    b.release()
    b.release()
    assert b.in_flight == 0


def test_snapshot_is_json_ready() -> None:
    b = Budget(rpm=60)
    b.observe(RateSnapshot(LimitInfo(10, 4, 6.0), LimitInfo(1000, 0, 2.5)), 100.0)
    b.on_rate_limited(100.0, 2.5)
    snap = b.snapshot(100.0)
    assert snap == {
        "cooldown_s": 2.5,
        "learned_requests": {"limit": 10, "remaining": 4, "reset_s": None, "window_s": None},
        "learned_tokens": {"limit": 1000, "remaining": 0.0, "reset_s": 2.5, "window_s": None},
    }
    json.dumps(snap)
    # after the resets the windows are whole again
    assert b.snapshot(200.0) == {
        "learned_requests": {"limit": 10, "remaining": 10, "reset_s": None, "window_s": None},
        "learned_tokens": {"limit": 1000, "remaining": 1000, "reset_s": None, "window_s": None},
    }
    # an adapted rate shows as requests per minute
    c = Budget()
    c.on_rate_limited(0.0, 1.0, c.take(0.0, 0), 1.0)
    assert c.snapshot(0.0) == {"cooldown_s": 1.0, "adapted_rpm": 60.0}


# --- groups: keys that share one quota share one Budget ---------------------------------------


def _spec(name: str, *, provider: str = "openai", **options: object) -> KeySpec:
    return KeySpec(
        provider=provider,
        name=name,
        secret=Secret(f"sk-test-{name}-0123456789abcdef"),
        **options,  # type: ignore[arg-type]
    )


def test_group_lanes_share_one_budget() -> None:
    clock = FakeClock(start=100.0)
    core = Core(MuxConfig(), clock=clock, rng=random.Random(0))
    a = core.dispatch.add_lane(_spec("a", rpm=60, group="proj"))
    b = core.dispatch.add_lane(_spec("b", rpm=60, group="proj"))
    c = core.dispatch.add_lane(_spec("c", rpm=60))
    d = core.dispatch.add_lane(_spec("d", rpm=60, group="proj", provider="groq"))
    assert a.book is b.book
    assert c.book is not a.book
    assert d.book is not a.book  # a group is per provider
    # a request on a spends b's budget too (for the same model)
    a.book.get("m").take(100.0, 0)
    assert b.book.get("m").ready_at(100.0, 0) == 101.0
    assert c.book.get("m").ready_at(100.0, 0) == 100.0
    assert b.book.get("other").ready_at(100.0, 0) == 100.0  # another model's limits are its own
    # learned limits and cooldowns are the group's
    a.book.get("m").observe(requests(10, 0, 30.0), 100.0)
    assert b.book.get("m").ready_at(101.0, 0) == 130.0
    b.book.get("m").on_rate_limited(100.0, 50.0)
    assert a.status(100.0) == b.status(100.0) == "cooling"
    assert c.status(100.0) == "active"
    assert b.status(150.0) == "active"
    a.book.get("m").park(150.0, 100.0)
    assert b.status(150.0) == "parked"


def test_group_budget_limits_come_from_its_first_key() -> None:
    core = Core(MuxConfig(), clock=FakeClock(start=0.0), rng=random.Random(0))
    a = core.dispatch.add_lane(_spec("a", rpm=60, group="g"))
    b = core.dispatch.add_lane(_spec("b", rpm=6000, group="g"))
    assert b.book is a.book
    budget = b.book.get("m")
    assert budget.rpm is not None
    assert budget.rpm.interval == 1.0


# --- limits a 429 names -----------------------------------------------------------------------


def _burst(b: Budget, start: float, n: int, spacing: float) -> list[Reservation]:
    return [b.take(start + i * spacing, 0) for i in range(n)]


def test_estimate_length_of_a_sliding_log_is_exact() -> None:
    log = SendLog(64.0, 16384)
    for i in range(20):
        log.add(100.0 + i * 0.002, 1)
    # the 21st (not in the log) refused at 100.05: the oldest of the 20 leaves at 101.0
    assert estimate_length(log, 20, 100.05, 0.95, 100.049) == pytest.approx(1.0)
    # fewer sends than the limit: nothing to tell the length from
    assert estimate_length(log, 30, 100.05, 0.95, 100.049) is None
    # sends after the refused one are not counted (the provider had not seen them)
    log.add(100.06, 1)
    assert estimate_length(log, 20, 100.07, 0.93, 100.049) == pytest.approx(1.0)


def test_estimate_length_of_a_token_bucket_from_its_refill() -> None:
    """20 a second, full at first: 22 admitted over 0.1 s (two refilled), the next refused
    with 10 ms to wait (a fifth of a unit left). A sliding log of the 20-newest estimate would
    have refused two of them: the bucket's bounds give its length."""
    log = SendLog(64.0, 16384)
    for i in range(22):
        log.add(100.0 + i * 0.1 / 21, 1)
    # level after 22 sends over 0.1 s: 20 - 22 + 2 = 0 -> next unit in 50 ms
    got = estimate_length(log, 20, 100.1, 0.05, 100.1)
    assert got == pytest.approx(1.0, rel=0.06)


def test_estimate_length_of_a_token_bucket_from_two_refusals() -> None:
    """A burst of exactly 20 into a full bucket of 20 a second looks like a sliding log of
    0.05 s; the next refusal says which: the bucket held one unit when the first said it
    would (100.05), one of ours went then, and the next unit comes 50 ms later."""
    log = SendLog(64.0, 16384)
    for i in range(20):
        log.add(100.0 + i * 0.001, 1)
    first = estimate_length(log, 20, 100.021, 0.029, 100.02)
    assert first == pytest.approx(0.05, abs=0.002)  # what the sends tell so far
    log.add(100.051, 1)  # admitted: the unit the first refusal promised
    got = estimate_length(log, 20, 100.053, 0.048, 100.052, known=first, freed=100.05)
    assert got == pytest.approx(1.02, abs=0.01)


def test_estimate_length_of_a_fixed_window_is_a_lower_bound() -> None:
    """20 sent from 100.3, the window ends at 101.0: the estimate is what the sends tell (0.7 s),
    no more; the next refusal, in the next window, tells the whole second."""
    log = SendLog(64.0, 16384)
    for i in range(20):
        log.add(100.3 + i * 0.002, 1)
    assert estimate_length(log, 20, 100.35, 0.65, 100.349) == pytest.approx(0.7)
    for i in range(20):
        log.add(101.0 + i * 0.002, 1)
    assert estimate_length(log, 20, 101.7, 0.3, 101.69, known=0.7) == pytest.approx(1.0)


def test_a_429_naming_the_request_limit_becomes_a_learned_window() -> None:
    b = Budget()
    b.observe(None, 100.0)  # an answer without headers (Gemini): slow start over
    sent = _burst(b, 100.0, 21, 0.002)
    for res in sent[:20]:
        b.observe(None, 100.1, res, res.at)
    refused = sent[20]
    b.observe(None, 100.041, refused, refused.at, refused=True)
    b.on_rate_limited(100.041, 0.959, refused, 0.959, limit=20, dimension="requests", period=60.0)
    window = b.inferred
    assert window is not None
    assert (window.limit, window.length) == (20, pytest.approx(1.0, abs=0.002))
    assert b.aimd is None  # the limit is known: nothing left to adapt
    # the window's log holds the 20 admitted: no room until the oldest leaves
    assert window.room(100.5) == 0
    assert b.ready_at(100.5, 0) == pytest.approx(101.0, abs=0.01)
    facts = b.snapshot(100.5)["learned_requests"]
    assert isinstance(facts, dict)
    assert (facts["limit"], facts["source"]) == (20, "429")
    # what frees at once goes out spaced for a while (the length is new)
    first = b.ready_at(101.02, 0)
    b.take(first, 0)
    assert b.ready_at(first, 0) > first


def test_groq_a_named_request_limit_takes_the_token_window_length() -> None:
    b = Budget()
    day = RateSnapshot(
        requests=LimitInfo(14400, 14000, 3600.0),
        tokens=LimitInfo(6000, 5000, 10.0),
        requests_window="day",
    )
    res = b.take(100.0, 0)
    b.observe(day, 100.02, res, 100.0)
    assert b.learned_tokens is not None
    assert b.learned_tokens.length is not None
    refused = b.take(100.03, 0)
    b.observe(day, 100.031, refused, refused.at, refused=True)
    b.on_rate_limited(100.031, 1.2, refused, 1.2, limit=30, dimension="requests", period=60.0)
    assert b.inferred is not None
    assert b.inferred.limit == 30
    assert b.inferred.length == b.learned_tokens.length
    facts = b.snapshot(100.04)
    assert facts["learned_requests"]["source"] == "429"  # type: ignore[index]
    assert facts["learned_requests_per_day"]["per"] == "day"  # type: ignore[index]


def test_a_named_limit_does_not_override_reported_headers() -> None:
    b = Budget()
    res = b.take(100.0, 0)
    b.observe(requests(20, 0, 1.0), 100.01, res, 100.0)
    refused = b.take(100.02, 0)
    b.on_rate_limited(100.02, 1.0, refused, 0.98, limit=20, dimension="requests", period=60.0)
    assert b.inferred is None  # the headers report the limit that binds


def test_a_429_naming_a_token_limit_becomes_a_token_window() -> None:
    b = Budget()
    sent = [b.take(100.0 + i * 0.01, 0) for i in range(10)]
    for res in sent:
        b.observe(None, 100.2, res, res.at)
        b.settle(res, 100)  # the answers' usage: 100 tokens each
    refused = b.take(100.3, 0)
    b.on_rate_limited(100.3, 0.7, refused, 0.7, limit=1000, dimension="tokens", period=60.0)
    assert b.learned_tokens is not None
    assert b.learned_tokens.limit == 1000
    assert b.learned_tokens.length == pytest.approx(1.0)
    # room again when the oldest answers' tokens leave (the log's grain: a tenth of a second)
    assert 101.0 <= b.ready_at(100.3, 100) <= 101.1


@pytest.mark.parametrize("wait", [1.0, 0.06])
def test_a_burst_of_refusals_lengthens_a_reported_window_once(wait: float) -> None:
    """The fixed-window misses of the first round: answers a second long, a fixed window's
    boundary, and a dozen sends refused at once; each 429's whole-second retry-after made the
    window about a second longer (1.9 s, 2.8 s ... 12 s), and the window that long held the
    key back. Now one round of refusals lengthens it once, and the finer wait (60 ms, what
    "try again in" said) by what the refusal tells: hardly at all."""
    b = Budget()
    res = b.take(100.0, 0)
    b.observe(requests(20, 19, 1.0), 101.0, res, 100.0)
    assert b.learned_requests is not None
    b.learned_requests.length = 1.0  # as a reset after the newest send would have told it
    b.learned_requests.log.set_span(window_span(1.0))
    burst = _burst(b, 101.0, 19, 0.0002)
    lengths = []
    for r in burst[7:]:
        b.observe(requests(20, 0, 0.06), 101.005, r, r.at, refused=True)
        b.on_rate_limited(101.005, 0.06, r, wait)
        lengths.append(b.learned_requests.length)
    assert sum(a != b for a, b in itertools.pairwise([1.0, *lengths])) <= 1
    assert lengths[-1] < (3.0 if wait >= 1 else 1.1)


# --- token estimates once a token window exists -------------------------------------------------


def test_token_estimates_start_when_a_token_window_is_learned(make_rig: MakeRig) -> None:
    """No key has a tpm configured: requests carry no token estimate (the hot path skips the
    estimate) until an answer's headers report a token window; from then on the provider's
    requests are estimated, so that window is paced ahead of its spending."""
    rig = make_rig(KeyPlan("openai", "a", rpm=1000, tpm=100_000))
    with rig.multiplexer() as mux:
        client = mux.get_openai_client()
        gateway = mux._gateway
        params = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}

        def built() -> int:
            req = gateway.request(
                "openai",
                "chat",
                dict(params),
                model=None,
                stream=False,
                pin=None,
                strategy=None,
                timeout=None,
                deadline=None,
            )
            return req.tokens

        assert built() == 0
        client("chat", **params)
        assert "openai" in mux._core.token_windows
        assert built() > 0
        assert (
            gateway.request(
                "groq",
                "chat",
                dict(params),
                model=None,
                stream=False,
                pin=None,
                strategy=None,
                timeout=None,
                deadline=None,
            ).tokens
            == 0
        )  # another provider: still none


def test_a_capped_log_keeps_only_its_newest_entries_and_counts_what_it_keeps() -> None:
    log = SendLog(64.0, 16384, cap=4)
    entries = [log.add(float(t), 1) for t in range(10)]
    assert len(log.entries) == 4
    assert log.total == 4
    assert [e.start for e in log.entries] == [6.0, 7.0, 8.0, 9.0]
    # an entry that fell out no longer counts: correcting it changes nothing
    log.adjust(entries[0], -1)
    assert log.total == 4
    log.adjust(entries[9], -1)
    assert log.total == 3


def test_the_history_of_a_budget_with_no_reported_limit_stays_bounded() -> None:
    # a key sending hundreds a second with no rate-limit header used to keep 16,384 entries
    budget = Budget()
    now = 0.0
    for _ in range(20_000):
        now += 0.003  # one send every 3 ms: a new entry each (the grain is ~4 ms)
        res = budget.take(now, 0)
        budget.observe(None, now, res, now)
        budget.release()
    assert len(budget.aimd_log.entries) <= HISTORY_ENTRIES
    assert len(budget.request_log.entries) <= 257
