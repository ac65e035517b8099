"""The emulator's rate models as pure, clock-driven code: tables of (time, amount) -> verdicts.

Each meter and ``Limits`` takes ``now`` from the caller; these tests pass times directly (what a
FakeClock would say) and never sleep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keymux.emulator import Emulator, EmulatorKey
from keymux.emulator._claude import ClaudeDialect
from keymux.emulator._gemini import GeminiDialect
from keymux.emulator._limits import Limits
from keymux.emulator._openai import GroqDialect, OpenAIDialect
from keymux.emulator._rates import RATE_MODELS, FixedWindow, Meter, SlidingLog, TokenBucket


@dataclass(frozen=True)
class Step:
    """At ``t`` ask for ``amount``: admitted (then remaining/reset after it) or refused (wait)."""

    t: float
    amount: int
    admitted: bool
    remaining: int
    reset: float
    wait: float = 0.0


def run_steps(meter: Meter, steps: list[Step]) -> None:
    for n, step in enumerate(steps):
        wait = meter.wait(step.t, step.amount)
        if step.admitted:
            assert wait == 0.0, (n, step)
            meter.charge(step.t, step.amount)
        else:
            assert wait == pytest.approx(step.wait, abs=1e-9), (n, step)
        assert meter.remaining(step.t) == step.remaining, (n, step)
        assert meter.reset_in(step.t) == pytest.approx(step.reset, abs=1e-9), (n, step)


# --- the table of models -------------------------------------------------------------------


def test_rate_models_table() -> None:
    assert dict(RATE_MODELS) == {
        "sliding": SlidingLog,
        "token-bucket": TokenBucket,
        "fixed": FixedWindow,
    }
    for cls in RATE_MODELS.values():
        assert issubclass(cls, Meter)
        meter = cls(60.0, 5)
        assert not hasattr(meter, "__dict__")  # __slots__ all the way down
        assert repr(meter) == f"{cls.__name__}(length=60, limit=5)"


@pytest.mark.parametrize("bad", ["Sliding", "leaky", "", None, 3])
def test_unknown_rate_model_is_refused_everywhere(bad: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        Limits(rpm=1, tpm=None, rpd=None, window=60, day_window=86400, rate_model=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate_model"):
        Emulator(rate_model=bad)  # type: ignore[arg-type]
    if bad is not None:  # None is the key's "use the emulator's default"
        with pytest.raises(ValueError, match="rate_model"):
            EmulatorKey("openai", "sk-x", rate_model=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="rate_model"):
            EmulatorKey.from_dict({"provider": "openai", "key": "sk-x", "rate_model": bad})


# --- sliding log ---------------------------------------------------------------------------

SLIDING_REQUESTS = [  # limit 3 per 10 s
    Step(0.0, 1, True, 2, 10.0),
    Step(2.0, 1, True, 1, 10.0),
    Step(4.0, 1, True, 0, 10.0),
    Step(5.0, 1, False, 0, 9.0, wait=5.0),  # the request of t=0 leaves at t=10
    Step(9.999, 1, False, 0, 4.001, wait=0.001),
    Step(10.0, 1, True, 0, 10.0),  # t=0 left; t=2, 4, 10 remain
    Step(11.0, 1, False, 0, 9.0, wait=1.0),  # t=2 leaves at 12
    Step(12.0, 1, True, 0, 10.0),
    Step(13.0, 1, False, 0, 9.0, wait=1.0),  # t=4 leaves at 14
    Step(21.0, 1, True, 1, 10.0),  # only t=12 and t=21 are left
    Step(40.0, 1, True, 2, 10.0),  # everything before has drained
]

SLIDING_TOKENS = [  # limit 100 per 10 s
    Step(0.0, 60, True, 40, 10.0),
    Step(1.0, 30, True, 10, 10.0),
    Step(2.0, 20, False, 10, 9.0, wait=8.0),  # 10 over: the 60 of t=0 must leave (t=10)
    Step(2.0, 10, True, 0, 10.0),  # exactly full is admitted
    Step(5.0, 1, False, 0, 7.0, wait=5.0),
    Step(10.0, 55, True, 5, 10.0),  # t=0 left: 30 + 10 + 55 in the window
    Step(10.5, 40, False, 5, 9.5, wait=1.5),  # 35 over: t=1's 30 is not enough, t=2's 10 is
    Step(10.5, 56, False, 5, 9.5, wait=9.5),  # 51 over: t=10's 55 must leave too
    Step(12.0, 45, True, 0, 10.0),
]


@pytest.mark.parametrize(
    ("limit", "steps"),
    [(3, SLIDING_REQUESTS), (100, SLIDING_TOKENS)],
    ids=["requests", "tokens"],
)
def test_sliding_log(limit: int, steps: list[Step]) -> None:
    run_steps(SlidingLog(10.0, limit), steps)


def test_sliding_wait_is_exactly_the_time_until_capacity_frees() -> None:
    meter = SlidingLog(60.0, 2)
    meter.charge(1000.0, 1)
    meter.charge(1017.25, 1)
    assert meter.reset_in(1030.0) == pytest.approx(47.25)  # 1017.25 + 60 - 1030
    wait = meter.wait(1030.0, 1)
    assert wait == pytest.approx(30.0)  # the request of 1000.0 leaves at 1060.0
    assert meter.wait(1030.0 + wait - 0.001, 1) > 0
    assert meter.wait(1030.0 + wait, 1) == 0.0


def test_sliding_is_stricter_than_fixed_windows_at_a_boundary() -> None:
    """Fixed windows admit 2 x limit around a boundary; a sliding window never does."""
    sliding, fixed = SlidingLog(60.0, 5), FixedWindow(60.0, 5)
    for meter in (sliding, fixed):
        for n in range(5):
            assert meter.wait(59.0 + n * 0.1, 1) == 0.0
            meter.charge(59.0 + n * 0.1, 1)
    assert fixed.wait(60.0, 1) == 0.0  # a new fixed window: 5 more at once
    assert sliding.wait(60.0, 1) == pytest.approx(59.0)


def test_sliding_log_keeps_one_entry_per_instant() -> None:
    meter = SlidingLog(60.0, 1000)
    for _ in range(500):
        meter.charge(5.0, 1)
    assert meter.used(5.0) == 500
    assert len(meter._times) == 1  # a frozen clock does not grow the log


def test_sliding_without_limit_counts_nothing_and_a_new_limit_starts_empty() -> None:
    meter = SlidingLog(10.0, None)
    meter.charge(0.0, 5)
    assert meter.wait(0.0, 10**9) == 0.0
    meter.set_limit(3, 1.0)
    assert meter.remaining(1.0) == 3
    meter.charge(1.0, 2)
    meter.set_limit(4, 2.0)  # a changed limit keeps what the window holds
    assert meter.remaining(2.0) == 2
    assert meter.reset_in(2.0) == pytest.approx(9.0)


@given(
    st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=7.0), st.integers(min_value=1, max_value=6)),
        max_size=60,
    )
)
def test_sliding_log_matches_a_brute_force_window(requests: list[tuple[float, int]]) -> None:
    """Admit iff the amounts admitted in (now - length, now] plus this one fit; the wait is
    when that becomes true (a retry then is admitted); the reset is when the newest admitted
    amount leaves."""
    length, limit = 10.0, 12
    meter = SlidingLog(length, limit)
    admitted: list[tuple[float, int]] = []
    now = 0.0

    def live_at(when: float) -> list[tuple[float, int]]:
        return [(t, a) for t, a in admitted if t > when - length + 1e-9]

    for gap, amount in requests:
        now += gap
        live = live_at(now)
        used = sum(a for _, a in live)
        wait = meter.wait(now, amount)
        assert meter.used(now) == used
        if used + amount > limit:
            freed, expected = 0, math.inf
            for t, a in live:
                freed += a
                if used + amount - freed <= limit:
                    expected = t + length - now
                    break
            assert wait == pytest.approx(expected)
            if wait > 0.001:
                assert meter.wait(now + wait - 0.001, amount) > 0
            now += wait  # the retry after exactly the wait
            assert meter.wait(now, amount) == 0.0
        meter.charge(now, amount)
        admitted.append((now, amount))
        live = live_at(now)
        newest = max((t for t, _ in live), default=None)
        expected_reset = 0.0 if newest is None else newest + length - now
        assert meter.reset_in(now) == pytest.approx(expected_reset)
        assert meter.remaining(now) == max(0, limit - sum(a for _, a in live))


# --- token bucket --------------------------------------------------------------------------

BUCKET_REQUESTS = [  # capacity 4, refill 4 per 2 s = 2 per second
    Step(0.0, 1, True, 3, 0.5),
    Step(0.0, 1, True, 2, 1.0),
    Step(0.0, 1, True, 1, 1.5),
    Step(0.0, 1, True, 0, 2.0),
    Step(0.0, 1, False, 0, 2.0, wait=0.5),
    Step(0.25, 1, False, 0, 1.75, wait=0.25),  # half a token is in
    Step(0.5, 1, True, 0, 2.0),  # one whole token: taken at once
    Step(1.25, 1, True, 0, 1.75),  # 1.5 refilled, 1 taken: 0.5 left, 3.5 missing
    Step(3.0, 1, True, 3, 0.5),  # full again (capped at 4) before this one
    Step(10.0, 1, True, 3, 0.5),  # waiting longer fills no more than the capacity
]

BUCKET_TOKENS = [  # capacity 100 per 10 s = 10 per second
    Step(0.0, 100, True, 0, 10.0),
    Step(0.0, 30, False, 0, 10.0, wait=3.0),
    Step(1.0, 30, False, 10, 9.0, wait=2.0),
    Step(3.0, 30, True, 0, 10.0),
    Step(4.5, 20, False, 15, 8.5, wait=0.5),
    Step(5.0, 20, True, 0, 10.0),
]


@pytest.mark.parametrize(
    ("length", "limit", "steps"),
    [(2.0, 4, BUCKET_REQUESTS), (10.0, 100, BUCKET_TOKENS)],
    ids=["requests", "tokens"],
)
def test_token_bucket(length: float, limit: int, steps: list[Step]) -> None:
    run_steps(TokenBucket(length, limit), steps)


def test_token_bucket_refills_continuously() -> None:
    """remaining = floor(level) climbs by one every 1/rate seconds; the reset to full falls
    at exactly the speed of the clock."""
    bucket = TokenBucket(60.0, 60)  # one token per second
    bucket.charge(0.0, 60)
    for step in range(601):
        t = step / 10
        assert bucket.remaining(t) == min(60, math.floor(t + 1e-9)), t
        assert bucket.reset_in(t) == pytest.approx(max(0.0, 60.0 - t)), t
    assert bucket.wait(100.0, 60) == 0.0


@given(
    st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=3.0), st.integers(min_value=1, max_value=20)),
        max_size=50,
    )
)
def test_token_bucket_wait_is_exact(requests: list[tuple[float, int]]) -> None:
    bucket = TokenBucket(5.0, 20)  # 4 tokens per second
    now = 0.0
    for gap, amount in requests:
        now += gap
        wait = bucket.wait(now, amount)
        level = 20 - 4 * bucket.reset_in(now)
        if amount <= level + 1e-9:
            assert wait == 0.0
        else:
            assert wait == pytest.approx((amount - level) / 4)
            if wait > 0.001:
                assert bucket.wait(now + wait - 0.001, amount) > 0
            now += wait  # the retry after exactly the wait
            assert bucket.wait(now, amount) == 0.0
        bucket.charge(now, amount)
        assert 0 <= bucket.remaining(now) <= 20 - amount


def test_token_bucket_new_limit_keeps_what_was_taken() -> None:
    bucket = TokenBucket(10.0, 10)
    bucket.charge(0.0, 8)  # 2 left
    bucket.set_limit(20, 1.0)  # 1 s at the old rate: 3 left, 7 taken
    assert bucket.remaining(1.0) == 13
    bucket.set_limit(None, 1.0)
    assert bucket.wait(1.0, 10**6) == 0.0
    bucket.set_limit(5, 2.0)  # from unlimited: starts full
    assert bucket.remaining(2.0) == 5


# --- fixed windows (the old model) ---------------------------------------------------------

FIXED_REQUESTS = [  # limit 2 per aligned 10 s window
    Step(95.0, 1, True, 1, 5.0),
    Step(99.9, 1, True, 0, 0.1),
    Step(99.95, 1, False, 0, 0.05, wait=0.05),
    Step(100.0, 1, True, 1, 10.0),  # a new window, a whole budget
    Step(100.0, 1, True, 0, 10.0),
]


def test_fixed_window() -> None:
    run_steps(FixedWindow(10.0, 2), FIXED_REQUESTS)


def test_fixed_window_counts_without_limit() -> None:
    meter = FixedWindow(10.0, None)
    meter.charge(1.0, 4)
    meter.set_limit(5, 2.0)
    assert meter.remaining(2.0) == 1  # what the window used before the limit counts


# --- Limits: three meters of one model -----------------------------------------------------


@pytest.mark.parametrize("rate_model", list(RATE_MODELS))
def test_refused_requests_use_no_budget(rate_model: str) -> None:
    limits = Limits(rpm=2, tpm=None, rpd=None, window=60, day_window=86400, rate_model=rate_model)
    assert limits.admit(0.0, 5) is None
    assert limits.admit(0.0, 5) is None
    for _ in range(5):
        refused = limits.admit(0.0, 5)
        assert refused is not None
        assert (refused.dimension, refused.used, refused.requested) == ("rpm", 2, 1)
    snap = limits.snapshot(0.0)
    assert snap is not None
    assert snap.rpm is not None
    assert snap.rpm.remaining == 0


def test_the_verdict_names_the_limit_that_frees_last() -> None:
    limits = Limits(rpm=2, tpm=100, rpd=None, window=10, day_window=100, rate_model="sliding")
    assert limits.admit(0.0, 10) is None
    assert limits.admit(5.0, 85) is None
    refused = limits.admit(6.0, 20)  # rpm frees at 10 (wait 4); 15 tokens over frees at 15
    assert refused is not None
    assert (refused.dimension, refused.limit, refused.used, refused.requested) == (
        "tpm",
        100,
        95,
        20,
    )
    assert refused.reset_in == pytest.approx(9.0)
    assert not refused.too_large
    assert limits.admit(6.0 + 8.999, 20) is not None
    assert limits.admit(15.0, 20) is None


def test_requests_limits_win_ties_and_too_large_comes_after_them() -> None:
    limits = Limits(rpm=1, tpm=50, rpd=1, window=10, day_window=10, rate_model="sliding")
    assert limits.admit(0.0, 10) is None
    refused = limits.admit(1.0, 10)
    assert refused is not None
    assert (refused.dimension, refused.reset_in) == ("rpd", pytest.approx(9.0))
    huge = limits.admit(1.0, 51)  # too large, but the day's request is spent first
    assert huge is not None
    assert (huge.dimension, huge.too_large) == ("rpd", False)
    fresh = Limits(rpm=1, tpm=50, rpd=1, window=10, day_window=10, rate_model="sliding")
    huge = fresh.admit(1.0, 51)
    assert huge is not None
    assert (huge.dimension, huge.too_large, huge.requested, huge.reset_in) == ("tpm", True, 51, 0.0)


@pytest.mark.parametrize(
    ("rate_model", "expected"),
    [("sliding", 480.0), ("token-bucket", 480.0), ("fixed", 480.0 - (1000.0 % 480.0))],
)
def test_day_reset_of_a_spent_quota(rate_model: str, expected: float) -> None:
    limits = Limits(rpm=None, tpm=None, rpd=5, window=60, day_window=480, rate_model=rate_model)
    assert limits.day_reset_in(1000.0) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rate_model", "rpm_reset", "rpd_reset"),
    [
        ("sliding", 60.0, 86400.0),  # until this request leaves each window
        ("token-bucket", 6.0, 86400.0 / 1000),  # one token refills in window / limit
        ("fixed", 60.0 - 1030.0 % 60.0, 86400.0 - 1030.0),
    ],
)
def test_snapshot_per_model(rate_model: str, rpm_reset: float, rpd_reset: float) -> None:
    limits = Limits(rpm=10, tpm=None, rpd=1000, window=60, day_window=86400, rate_model=rate_model)
    assert limits.admit(1030.0, 7) is None
    snap = limits.snapshot(1030.0)
    assert snap is not None
    assert snap.tpm is None
    assert snap.rpm is not None
    assert snap.rpd is not None
    assert (snap.rpm.limit, snap.rpm.remaining) == (10, 9)
    assert (snap.rpd.limit, snap.rpd.remaining) == (1000, 999)
    assert snap.rpm.reset_in == pytest.approx(rpm_reset)
    assert snap.rpd.reset_in == pytest.approx(rpd_reset)


# --- model scopes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "scope"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-opus-4-1", "claude-opus-4-1"),
        ("claude-2025", "claude-2025"),  # not an 8-digit date
    ],
)
def test_claude_model_class(model: str, scope: str) -> None:
    assert ClaudeDialect().model_scope(model) == scope


@pytest.mark.parametrize("dialect", [OpenAIDialect(), GroqDialect(), GeminiDialect()])
@pytest.mark.parametrize("model", ["gpt-4o-2024-08-06", "llama-3.1-8b-instant", "gemini-2.5-pro"])
def test_other_providers_limit_each_model(dialect: object, model: str) -> None:
    assert dialect.model_scope(model) == model  # type: ignore[attr-defined]


def test_gemini_resource_names_are_their_model() -> None:
    scope = GeminiDialect().model_scope
    assert scope("models/gemini-2.5-pro") == scope("gemini-2.5-pro") == "gemini-2.5-pro"
    key = EmulatorKey("gemini", "AIza-x", rpm=10, models={"models/gemini-2.5-pro": {"rpm": 2}})
    assert key.limits_for("gemini-2.5-pro", scope)["rpm"] == 2


def test_limits_for_applies_overrides_by_scope() -> None:
    key = EmulatorKey(
        "claude",
        "sk-ant-x",
        rpm=50,
        tpm=40_000,
        models={"claude-opus-4-1-20250805": {"rpm": 5}, "claude-haiku-4-5": {"tpm": None}},
    )
    scope = ClaudeDialect().model_scope
    assert key.limits_for("claude-opus-4-1", scope) == {"rpm": 5, "tpm": 40_000, "rpd": None}
    assert key.limits_for("claude-haiku-4-5", scope) == {"rpm": 50, "tpm": None, "rpd": None}
    assert key.limits_for("claude-sonnet-4-5", scope) == {"rpm": 50, "tpm": 40_000, "rpd": None}
    # without a scope mapping only the exact name matches
    assert key.limits_for("claude-opus-4-1") == {"rpm": 50, "tpm": 40_000, "rpd": None}
