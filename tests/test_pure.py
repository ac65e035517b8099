"""Pure decisions as tables: strategies, backoff, retry decisions, error classes, header parsers."""

from __future__ import annotations

import email.utils
import itertools
import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keymux._config import RetryPolicy
from keymux._errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    KeymuxError,
    MalformedResponseError,
    ProviderServerError,
    QuotaExhaustedError,
    RateLimitedError,
    UpstreamError,
)
from keymux._headers import (
    parse_float,
    parse_go_duration,
    parse_proto_duration,
    parse_retry_after,
    parse_rfc3339,
)
from keymux._retry import (
    DEFAULT_DAILY_PARK,
    Decision,
    LaneAction,
    compute_backoff,
    decide,
    error_class,
)
from keymux._strategies import (
    STRATEGIES,
    least_loaded,
    rate_aware,
    resolve_strategy,
    round_robin,
    weighted,
)
from keymux._types import Kind

# --- strategies -------------------------------------------------------------------------------


@dataclass
class View:
    """A hand-built lane snapshot (what a strategy may look at)."""

    name: str
    last_used: float = 0.0
    in_flight: int = 0
    waiting: int = 0
    usage: int = 0
    weight: float = 1.0
    latency: float = 0.0
    room: float = 1.0

    def headroom(self, now: float) -> float:
        return self.room


def views(*specs: dict[str, Any]) -> list[View]:
    return [View(name=chr(ord("a") + i), **spec) for i, spec in enumerate(specs)]


@pytest.mark.parametrize(
    ("strategy", "lanes", "expected"),
    [
        # round-robin: least recently used; the first on a tie
        (round_robin, views({"last_used": 5}, {"last_used": 3}, {"last_used": 4}), "b"),
        (round_robin, views({}, {}, {}), "a"),
        (round_robin, views({"last_used": 1, "in_flight": 9}, {"last_used": 2}), "a"),
        (round_robin, views({"last_used": 7}), "a"),
        # least-loaded: fewest waiting + in flight, then least recently used
        (least_loaded, views({"in_flight": 2}, {"in_flight": 1}, {"waiting": 3}), "b"),
        (least_loaded, views({"in_flight": 1, "waiting": 1}, {"waiting": 2}), "a"),
        (
            least_loaded,
            views({"in_flight": 1, "last_used": 9}, {"waiting": 1, "last_used": 2}),
            "b",
        ),
        (least_loaded, views({"in_flight": 0, "last_used": 9}, {"in_flight": 1}), "a"),
        # weighted: lowest (usage + in_flight + 1) / weight, then least recently used
        (weighted, views({"usage": 2, "weight": 3.0}, {"usage": 1, "weight": 1.0}), "a"),
        (weighted, views({"usage": 6, "weight": 3.0}, {"usage": 1, "weight": 1.0}), "b"),
        (weighted, views({"usage": 5, "weight": 3.0}, {"usage": 1, "last_used": -1}), "b"),
        (
            weighted,
            views({"usage": 2, "weight": 3.0, "last_used": 5}, {"usage": 0, "last_used": 1}),
            "b",
        ),
        (weighted, views({"usage": 0, "in_flight": 3}, {"usage": 2}), "b"),
        # rate-aware: most headroom (to 2 decimals), then fewest in flight, lower latency, LRU
        (rate_aware, views({"room": 0.2}, {"room": 0.9}, {"room": 0.5}), "b"),
        (rate_aware, views({"room": 0.501, "in_flight": 2}, {"room": 0.499}), "b"),
        (rate_aware, views({"room": 0.5, "latency": 0.3}, {"room": 0.5, "latency": 0.1}), "b"),
        (
            rate_aware,
            views({"room": 1.0, "latency": 0.1, "last_used": 9}, {"room": 1.0, "latency": 0.1}),
            "b",
        ),
        (rate_aware, views({"room": 0.0}, {"room": 0.01, "in_flight": 4}), "b"),
    ],
)
def test_strategy_choice(strategy: Any, lanes: list[View], expected: str) -> None:
    assert strategy(lanes, 100.0).name == expected


@pytest.mark.parametrize("strategy", list(STRATEGIES.values()))
def test_strategies_return_one_of_the_candidates(strategy: Any) -> None:
    lanes = views({"usage": 3, "last_used": 2}, {"usage": 1, "room": 0.3}, {"waiting": 2})
    assert strategy(lanes, 0.0) in lanes
    assert strategy(lanes[:1], 0.0) is lanes[0]


def _simulate(strategy: Any, lanes: list[View], rounds: int) -> Counter[str]:
    picks: Counter[str] = Counter()
    for step in range(1, rounds + 1):
        lane = strategy(lanes, float(step))
        lane.usage += 1
        lane.last_used = float(step)
        picks[lane.name] += 1
    return picks


def test_round_robin_cycles_through_every_key() -> None:
    lanes = views({}, {}, {})
    order = []
    for step in range(1, 10):
        lane = round_robin(lanes, float(step))
        lane.last_used = float(step)
        order.append(lane.name)
    assert order == list("abcabcabc")


@pytest.mark.parametrize(("weights", "shares"), [((3.0, 1.0), (75, 25)), ((1.0, 1.0), (50, 50))])
def test_weighted_shares_in_proportion(weights: tuple[float, ...], shares: tuple[int, ...]) -> None:
    lanes = views(*({"weight": w} for w in weights))
    picks = _simulate(weighted, lanes, 100)
    assert tuple(picks[lane.name] for lane in lanes) == shares


@pytest.mark.parametrize(
    ("given_name", "canonical"),
    [
        ("round-robin", "round-robin"),
        ("least-loaded", "least-loaded"),
        ("weighted", "weighted"),
        ("rate-aware", "rate-aware"),
        ("round_robin", "round-robin"),
        ("least_loaded", "least-loaded"),
        ("rate_aware", "rate-aware"),
        ("lru", "round-robin"),
    ],
)
def test_resolve_strategy_names_and_aliases(given_name: str, canonical: str) -> None:
    name, fn = resolve_strategy(given_name)
    assert name == canonical
    assert fn is STRATEGIES[canonical]


def test_the_strategy_table_is_read_only_where_it_is_defined() -> None:
    import keymux

    assert keymux.STRATEGIES is STRATEGIES  # the public name is the table itself, not a copy
    with pytest.raises(TypeError):
        STRATEGIES["mine"] = round_robin  # type: ignore[index]
    assert "mine" not in STRATEGIES


def test_resolve_strategy_accepts_a_callable() -> None:
    def fastest(candidates: Any, now: float) -> Any:
        return min(candidates, key=lambda lane: lane.latency)

    assert resolve_strategy(fastest) == ("fastest", fastest)
    name, fn = resolve_strategy(lambda c, now: c[0])
    assert name == "<lambda>"
    assert callable(fn)


@pytest.mark.parametrize("bad", ["fastest", "", "Round-Robin ", "specific", 3, None, 1.5])
def test_resolve_strategy_unknown_is_a_config_error(bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_strategy(bad)
    assert isinstance(info.value, ValueError)
    assert "strategy" in str(info.value)


def test_resolve_strategy_specific_asks_for_a_key_name() -> None:
    # "specific" is a strategy name, but not one that can choose among keys by itself
    with pytest.raises(ConfigError, match="key_name="):
        resolve_strategy("specific")


# --- backoff ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries", "initial", "factor", "cap", "jitter", "expected"),
    [
        (0, 1.0, 2.0, 60.0, 0.0, 1.0),
        (1, 1.0, 2.0, 60.0, 0.0, 2.0),
        (3, 1.0, 2.0, 60.0, 0.0, 8.0),
        (5, 1.0, 2.0, 60.0, 0.0, 32.0),
        (6, 1.0, 2.0, 60.0, 0.0, 60.0),  # 64 capped
        (40, 1.0, 2.0, 60.0, 0.0, 60.0),
        (2, 0.5, 3.0, 60.0, 0.0, 4.5),
        (4, 0.1, 1.0, 60.0, 0.0, 0.1),  # factor 1: constant
        (3, 1.0, 2.0, 60.0, 0.5, 7.0),  # 8 * (1 - 0.125)
        (6, 1.0, 2.0, 60.0, 0.5, 52.5),  # 60 * 0.875: the cap is jittered too
        (0, 2.0, 2.0, 60.0, 0.999, 2.0 * (1 - 0.25 * 0.999)),
        (-3, 1.0, 2.0, 60.0, 0.0, 1.0),  # negative counts as 0
        (0, 0.0, 2.0, 60.0, 0.0, 0.0),
        (10_000, 1.0, 2.0, 60.0, 0.0, 60.0),  # float overflow clamps to the cap
        (10_000, 1, 2, 60.0, 0.0, 60.0),  # ints: no float overflow, still the cap
        (10**12, 1.0, 2.0, 30.0, 0.0, 30.0),  # no giant power is computed
        (10**12, 1, 2, 30.0, 0.0, 30.0),
        (5_000, 0.0, 2.0, 60.0, 0.0, 0.0),  # no delay stays no delay however many retries
        (10**12, 0.0, 2.0, 60.0, 0.0, 0.0),
    ],
)
def test_compute_backoff_table(
    retries: int, initial: float, factor: float, cap: float, jitter: float, expected: float
) -> None:
    got = compute_backoff(retries, initial=initial, factor=factor, cap=cap, jitter=jitter)
    assert got == pytest.approx(expected)


_delays = st.floats(min_value=0.0, max_value=100.0, allow_subnormal=False)
_factors = st.floats(min_value=1.0, max_value=10.0, allow_nan=False)
_caps = st.floats(min_value=0.001, max_value=3600.0, allow_nan=False)
_jitters = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


#: derandomized: the same examples on every run
@settings(derandomize=True)
@given(
    retries=st.integers(min_value=0, max_value=2_000),
    initial=_delays,
    factor=_factors,
    cap=_caps,
    jitter=_jitters,
)
def test_backoff_is_monotone_and_capped(
    retries: int, initial: float, factor: float, cap: float, jitter: float
) -> None:
    kw = {"initial": initial, "factor": factor, "cap": cap, "jitter": jitter}
    now = compute_backoff(retries, **kw)
    after = compute_backoff(retries + 1, **kw)
    assert 0.0 <= now <= after <= cap
    assert math.isfinite(after)


@settings(derandomize=True)
@given(
    retries=st.integers(min_value=0, max_value=50),
    initial=_delays,
    factor=_factors,
    cap=_caps,
    jitter=_jitters,
)
def test_backoff_jitter_bounds(
    retries: int, initial: float, factor: float, cap: float, jitter: float
) -> None:
    full = compute_backoff(retries, initial=initial, factor=factor, cap=cap, jitter=0.0)
    assert full == pytest.approx(min(cap, initial * factor**retries))
    got = compute_backoff(retries, initial=initial, factor=factor, cap=cap, jitter=jitter)
    assert 0.75 * full <= got <= full
    if full > 1e-300:
        assert got > 0.75 * full


# --- retry decisions --------------------------------------------------------------------------

POLICY = RetryPolicy(
    initial_retry_delay=1.0,
    backoff_factor=2.0,
    max_retries=3,
    max_retry_delay=60.0,
    max_retry_after=120.0,
)
RETRY_AFTER = {"absent": None, "present": 5.0, "too-long": 500.0}
#: retries already taken: "left" -> 1 (backoff 2 s), "exhausted" -> 3 == max_retries (backoff 8 s)
RETRIES = {"left": 1, "exhausted": 3}
ANY = "*"

NONE, COOL, PARK, DISABLE = LaneAction.NONE, LaneAction.COOL, LaneAction.PARK, LaneAction.DISABLE
DAY = DEFAULT_DAILY_PARK
#: the key leaves the pool for this request; the attempt does not count as a retry
OUT: dict[str, Any] = {"counts": False, "avoid": True}


def D(
    retry: bool,
    delay: float = 0.0,
    action: LaneAction = NONE,
    lane_delay: float = 0.0,
    *,
    counts: bool = True,
    avoid: bool = False,
) -> Decision:
    return Decision(
        retry=retry,
        delay=delay,
        lane_action=action,
        lane_delay=lane_delay,
        counts=counts,
        avoid_lane=avoid,
    )


# (kind, pinned, retries, retry_after, expected); ANY matches every value of that column.
# A rate limit without retry-after cools the key by backoff(streak - 1) = 1 s (streak 1).
DECISIONS: list[tuple[Kind, Any, str, str, Decision]] = [
    # 429: the key cools for retry-after; the request itself never sleeps (a pinned one waits in
    # its key's queue until the cooldown ends); a retry-after beyond max_retry_after parks the key
    # and the request moves on (pinned: fails).
    (Kind.RATE_LIMITED, ANY, "left", "absent", D(True, 0.0, COOL, 1.0)),
    (Kind.RATE_LIMITED, ANY, "left", "present", D(True, 0.0, COOL, 5.0)),
    (Kind.RATE_LIMITED, ANY, "exhausted", "absent", D(False, 0.0, COOL, 1.0)),
    (Kind.RATE_LIMITED, ANY, "exhausted", "present", D(False, 0.0, COOL, 5.0)),
    (Kind.RATE_LIMITED, False, "left", "too-long", D(True, 0.0, PARK, 500.0, avoid=True)),
    (Kind.RATE_LIMITED, True, "left", "too-long", D(False, 0.0, PARK, 500.0, avoid=True)),
    (Kind.RATE_LIMITED, ANY, "exhausted", "too-long", D(False, 0.0, PARK, 500.0, avoid=True)),
    # overloaded (provider-wide): no key is blamed, the request waits backoff or retry-after
    (Kind.OVERLOADED, ANY, "left", "absent", D(True, 2.0)),
    (Kind.OVERLOADED, ANY, "left", "present", D(True, 5.0)),
    (Kind.OVERLOADED, ANY, "left", "too-long", D(False, 500.0)),
    (Kind.OVERLOADED, ANY, "exhausted", "absent", D(False, 8.0)),
    (Kind.OVERLOADED, ANY, "exhausted", "present", D(False, 5.0)),
    (Kind.OVERLOADED, ANY, "exhausted", "too-long", D(False, 500.0)),
    # 5xx / transport: the key cools; unpinned requests move on at once, pinned ones wait
    *(
        row
        for kind in (Kind.SERVER_ERROR, Kind.TRANSPORT)
        for row in [
            (kind, False, "left", "absent", D(True, 0.0, COOL, 2.0)),
            (kind, False, "left", "present", D(True, 0.0, COOL, 5.0)),
            (kind, True, "left", "absent", D(True, 2.0, COOL, 2.0)),
            (kind, True, "left", "present", D(True, 5.0, COOL, 5.0)),
            (kind, False, "exhausted", "absent", D(False, 0.0, COOL, 8.0)),
            (kind, False, "exhausted", "present", D(False, 0.0, COOL, 5.0)),
            (kind, True, "exhausted", "absent", D(False, 8.0, COOL, 8.0)),
            (kind, True, "exhausted", "present", D(False, 5.0, COOL, 5.0)),
            # a retry-after too long to wait for: like a 429's, park the key and move on (a
            # pinned request fails at once instead of sleeping for it)
            (kind, False, "left", "too-long", D(True, 0.0, PARK, 500.0, avoid=True)),
            (kind, True, "left", "too-long", D(False, 0.0, PARK, 500.0, avoid=True)),
            (kind, ANY, "exhausted", "too-long", D(False, 0.0, PARK, 500.0, avoid=True)),
        ]
    ),
    # the key is out of the pool: the request moves on whatever its retries (not counted)
    *(
        row
        for kind in (Kind.KEY_INVALID, Kind.QUOTA_SPENT)
        for row in [
            (kind, False, ANY, ANY, D(True, 0.0, DISABLE, **OUT)),
            (kind, True, ANY, ANY, D(False, 0.0, DISABLE, **OUT)),
        ]
    ),
    # daily quota: park until the reset the provider named (else an hour)
    (Kind.DAILY_LIMIT, False, ANY, "absent", D(True, 0, PARK, DAY, **OUT)),
    (Kind.DAILY_LIMIT, False, ANY, "present", D(True, 0, PARK, 5.0, **OUT)),
    (Kind.DAILY_LIMIT, False, ANY, "too-long", D(True, 0, PARK, 500.0, **OUT)),
    (Kind.DAILY_LIMIT, True, ANY, "absent", D(False, 0, PARK, DAY, **OUT)),
    (Kind.DAILY_LIMIT, True, ANY, "present", D(False, 0, PARK, 5.0, **OUT)),
    (Kind.DAILY_LIMIT, True, ANY, "too-long", D(False, 0, PARK, 500.0, **OUT)),
    # too large for this key: another key may take it
    (Kind.TOO_LARGE, False, "left", ANY, D(True, avoid=True)),
    (Kind.TOO_LARGE, False, "exhausted", ANY, D(False, avoid=True)),
    (Kind.TOO_LARGE, True, ANY, ANY, D(False, avoid=True)),
    # the caller's mistake, or garbage: never retried, the key is not touched
    (Kind.BAD_REQUEST, ANY, ANY, ANY, D(False)),
    (Kind.MALFORMED, ANY, ANY, ANY, D(False)),
]


def _expand() -> list[Any]:
    cases: dict[tuple[Kind, bool, str, str], Decision] = {}
    for kind, pinned, retries, ra, expected in DECISIONS:
        for p, r, a in itertools.product(
            [False, True] if pinned == ANY else [pinned],
            list(RETRIES) if retries == ANY else [retries],
            list(RETRY_AFTER) if ra == ANY else [ra],
        ):
            key = (kind, p, r, a)
            assert key not in cases, f"the table names {key} twice"
            cases[key] = expected
    missing = [
        k for k in itertools.product(Kind, [False, True], RETRIES, RETRY_AFTER) if k not in cases
    ]
    assert not missing, f"the table misses {missing}"
    return [
        pytest.param(
            *key, expected, id=f"{key[0].value}-{'pinned' if key[1] else 'free'}-{key[2]}-{key[3]}"
        )
        for key, expected in cases.items()
    ]


@pytest.mark.parametrize(("kind", "pinned", "retries", "retry_after", "expected"), _expand())
def test_decide_table(
    kind: Kind, pinned: bool, retries: str, retry_after: str, expected: Decision
) -> None:
    got = decide(
        kind,
        retries=RETRIES[retries],
        policy=POLICY,
        retry_after=RETRY_AFTER[retry_after],
        pinned=pinned,
        jitter=0.0,
    )
    assert got == expected


@pytest.mark.parametrize(("streak", "cooldown"), [(1, 1.0), (2, 2.0), (3, 4.0), (8, 60.0)])
def test_guessed_rate_limit_cooldown_grows_with_the_streak(streak: int, cooldown: float) -> None:
    got = decide(
        Kind.RATE_LIMITED,
        retries=0,
        policy=POLICY,
        retry_after=None,
        pinned=False,
        jitter=0.0,
        streak=streak,
    )
    assert got.lane_action is COOL
    assert got.lane_delay == cooldown


def test_retry_after_at_the_limit_is_still_waited_for() -> None:
    got = decide(
        Kind.RATE_LIMITED, retries=0, policy=POLICY, retry_after=120.0, pinned=True, jitter=0.0
    )
    assert got == D(True, 0.0, COOL, 120.0)


def test_zero_retries_policy_never_retries_retryable_kinds() -> None:
    policy = RetryPolicy(max_retries=0)
    for kind in (Kind.RATE_LIMITED, Kind.OVERLOADED, Kind.SERVER_ERROR, Kind.TRANSPORT):
        got = decide(kind, retries=0, policy=policy, retry_after=None, pinned=False, jitter=0.0)
        assert not got.retry, kind


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        (Kind.RATE_LIMITED, RateLimitedError),
        (Kind.OVERLOADED, ProviderServerError),
        (Kind.SERVER_ERROR, ProviderServerError),
        (Kind.KEY_INVALID, AuthenticationError),
        (Kind.QUOTA_SPENT, QuotaExhaustedError),
        (Kind.DAILY_LIMIT, QuotaExhaustedError),
        (Kind.TOO_LARGE, BadRequestError),
        (Kind.BAD_REQUEST, BadRequestError),
        (Kind.MALFORMED, MalformedResponseError),
        (Kind.TRANSPORT, UpstreamError),  # the core maps transport to timeout/connection errors
    ],
)
def test_error_class(kind: Kind, cls: type[UpstreamError]) -> None:
    assert error_class(kind) is cls
    assert issubclass(cls, KeymuxError)


# --- header parsers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1.5s", 1.5),
        ("1h2m3s", 3723.0),
        ("2m59.56s", 179.56),
        ("7.66s", 7.66),
        ("1µs", 1e-6),
        ("3us", 3e-6),
        ("500ns", 5e-7),
        ("20", 20.0),
        ("0.5", 0.5),
        (" 2s ", 2.0),
        ("0s", 0.0),
        ("-1", 0.0),
        ("", None),
        ("   ", None),
        (None, None),
        ("abc", None),
        ("s", None),
        ("1x", None),
        ("1m1", None),
        ("5s junk", None),
        ("junk 5s", None),
        ("1.s", None),
        (".5s", None),
        ("1.5.s", None),
        ("-5s", None),
        ("1e3s", None),
        ("ms", None),
    ],
)
def test_parse_go_duration(text: str | None, seconds: float | None) -> None:
    got = parse_go_duration(text)
    if seconds is None:
        assert got is None
    else:
        assert got == pytest.approx(seconds)


@given(st.from_regex(r"[0-9.e+-]{0,6}(ms|s|us|m)?", fullmatch=True))
def test_go_duration_one_unit_fast_path_reads_as_the_grammar(text: str) -> None:
    # the fast path for "6ms" / "59.9s" answers exactly what the Go grammar does
    expected: float | None
    try:
        expected = float(text)
        expected = max(0.0, expected) if math.isfinite(expected) else None
    except ValueError:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", text)
        expected = (
            None
            if match is None
            else float(match.group(1))
            * {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}[match.group(2)]
        )
    assert parse_go_duration(text) == (None if expected is None else pytest.approx(expected))


@settings(derandomize=True)
@given(
    h=st.integers(min_value=0, max_value=99),
    m=st.integers(min_value=0, max_value=59),
    ms=st.integers(min_value=0, max_value=59_999),
)
def test_go_duration_round_trip(h: int, m: int, ms: int) -> None:
    text = (f"{h}h" if h else "") + (f"{m}m" if m or h else "") + f"{ms / 1000:g}s"
    assert parse_go_duration(text) == pytest.approx(h * 3600 + m * 60 + ms / 1000)


NOW_WALL = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def _http_date(offset: float) -> str:
    return email.utils.formatdate(NOW_WALL + offset, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "5"}, 5.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "20", "retry-after": "7"}, 0.02),  # ms wins, as in the SDKs
        ({"retry-after-ms": "soon", "retry-after": "7"}, 7.0),
        ({"retry-after-ms": "-5", "retry-after": "7"}, 7.0),
        ({"retry-after": _http_date(30)}, 30.0),
        ({"retry-after": _http_date(-30)}, 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 -0000"}, None),  # no zone: unreadable
        ({"retry-after": "tomorrow"}, None),
        ({"retry-after": ""}, None),
        ({}, None),
        ({"x-ratelimit-reset-requests": "1s"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    got = parse_retry_after(headers, NOW_WALL)
    if seconds is None:
        assert got is None
    else:
        assert got == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T12:00:00Z", NOW_WALL),
        ("2026-01-01T12:00:00z", NOW_WALL),
        ("2026-01-01T12:00:30.250Z", NOW_WALL + 30.25),
        ("2026-01-01T14:00:00+02:00", NOW_WALL),
        (" 2026-01-01T12:00:01Z ", NOW_WALL + 1),
        ("2026-01-01T12:00:00", None),  # no zone
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_rfc3339(text: str | None, expected: float | None) -> None:
    got = parse_rfc3339(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("26s", 26.0),
        ("45.837906927s", 45.837906927),
        ("0s", 0.0),
        ("-1s", None),
        ("1.5", None),
        ("xs", None),
        ("s", None),
        (26, None),
        (None, None),
        ({"seconds": 26}, None),
    ],
)
def test_parse_proto_duration(value: object, seconds: float | None) -> None:
    assert parse_proto_duration(value) == seconds


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("1.5", 1.5),
        ("100", 100.0),
        ("-2", -2.0),
        ("abc", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_parse_float(text: str | None, number: float | None) -> None:
    assert parse_float(text) == number


@pytest.mark.parametrize(
    ("parse", "value"),
    [
        (parse_go_duration, "inf"),
        (parse_float, "inf"),
        (lambda v: parse_retry_after({"retry-after": v}, NOW_WALL), "inf"),
        (lambda v: parse_retry_after({"retry-after-ms": v}, NOW_WALL), "1e400"),
    ],
)
def test_non_finite_header_values_are_unreadable(parse: Any, value: str) -> None:
    assert parse(value) is None
