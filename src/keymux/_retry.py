"""Retry decisions and backoff as pure functions of data."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._config import RetryPolicy
from ._errors import (
    AuthenticationError,
    BadRequestError,
    MalformedResponseError,
    ProviderServerError,
    QuotaExhaustedError,
    RateLimitedError,
    UpstreamError,
)
from ._types import Kind

__all__ = ["Decision", "LaneAction", "compute_backoff", "decide", "error_class"]

#: how long a key whose daily quota is spent is parked when the provider names no reset time
DEFAULT_DAILY_PARK = 3600.0


class LaneAction(enum.Enum):
    """What happens to the key that gave the answer."""

    NONE = "none"
    COOL = "cool"  # short cooldown (rate limit, 5xx, transport): other keys take the work
    PARK = "park"  # long pause until a known reset (daily quota)
    DISABLE = "disable"  # out of the pool (bad key, billing)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after one attempt that was not a success."""

    retry: bool
    #: seconds the request itself waits before its next attempt (0: at once, on any free key)
    delay: float = 0.0
    lane_action: LaneAction = LaneAction.NONE
    #: seconds of cooldown or parking for the key
    lane_delay: float = 0.0
    #: whether the attempt counts against max_retries (a key taken out of the pool does not)
    counts: bool = True
    #: the request must not go back to this key
    avoid_lane: bool = False


def compute_backoff(
    retries: int, *, initial: float, factor: float, cap: float, jitter: float
) -> float:
    """``initial * factor**retries``, capped, times a jitter factor in (0.75, 1.0].

    ``jitter`` is a number in [0, 1) supplied by the caller (random in production, fixed in
    tests). Huge exponents clamp to ``cap`` instead of overflowing.
    """
    if retries < 0:
        retries = 0
    if initial <= 0:
        return 0.0  # no delay stays no delay, however many retries
    try:
        # a float power: an int one would compute a giant exact integer (or hang) first
        raw = initial * float(factor) ** retries
    except OverflowError:
        raw = cap
    return min(cap, raw) * (1.0 - 0.25 * jitter)


def decide(
    kind: Kind,
    *,
    retries: int,
    policy: RetryPolicy,
    retry_after: float | None,
    pinned: bool,
    jitter: float,
    streak: int = 1,
) -> Decision:
    """The retry decision for one classified answer.

    ``retries`` is how many counted retries the request already took; ``streak`` how many
    answers of this kind (rate limits; server or transport failures) the key gave in a row,
    this one included (it lengthens a guessed cooldown).
    """
    can_retry = retries < policy.max_retries
    backoff = compute_backoff(
        retries,
        initial=policy.initial_retry_delay,
        factor=policy.backoff_factor,
        cap=policy.max_retry_delay,
        jitter=jitter,
    )
    if kind is Kind.RATE_LIMITED:
        if retry_after is not None and retry_after > policy.max_retry_after:
            # too long to wait on this key: park it, the work moves on
            return Decision(
                retry=can_retry and not pinned,
                lane_action=LaneAction.PARK,
                lane_delay=retry_after,
                avoid_lane=True,
            )
        if retry_after is not None:
            cool = retry_after
        else:
            cool = compute_backoff(
                max(0, streak - 1),
                initial=policy.initial_retry_delay,
                factor=policy.backoff_factor,
                cap=policy.max_retry_delay,
                jitter=jitter,
            )
        return Decision(retry=can_retry, lane_action=LaneAction.COOL, lane_delay=cool)
    if kind is Kind.OVERLOADED:
        wait = retry_after if retry_after is not None else backoff
        return Decision(retry=can_retry and wait <= policy.max_retry_after, delay=wait)
    if kind in (Kind.SERVER_ERROR, Kind.TRANSPORT):
        if retry_after is not None and retry_after > policy.max_retry_after:
            # as for a 429: not waited for on this key (a pinned request fails at once)
            return Decision(
                retry=can_retry and not pinned,
                lane_action=LaneAction.PARK,
                lane_delay=retry_after,
                avoid_lane=True,
            )
        if retry_after is not None:
            wait = retry_after
        else:
            # a key that keeps failing (a hang, a 5xx storm) cools longer each time, so the
            # other keys take the work instead of every request paying for its timeout
            wait = compute_backoff(
                max(retries, streak - 1),
                initial=policy.initial_retry_delay,
                factor=policy.backoff_factor,
                cap=policy.max_retry_delay,
                jitter=jitter,
            )
        return Decision(
            retry=can_retry,
            lane_action=LaneAction.COOL,
            lane_delay=wait,
            delay=wait if pinned else 0.0,
        )
    if kind is Kind.KEY_INVALID or kind is Kind.QUOTA_SPENT:
        return Decision(
            retry=not pinned, lane_action=LaneAction.DISABLE, counts=False, avoid_lane=True
        )
    if kind is Kind.DAILY_LIMIT:
        park = retry_after if retry_after is not None else DEFAULT_DAILY_PARK
        return Decision(
            retry=not pinned,
            lane_action=LaneAction.PARK,
            lane_delay=park,
            counts=False,
            avoid_lane=True,
        )
    if kind is Kind.TOO_LARGE:
        return Decision(retry=can_retry and not pinned, avoid_lane=True)
    return Decision(retry=False)


_ERRORS: dict[Kind, type[UpstreamError]] = {
    Kind.RATE_LIMITED: RateLimitedError,
    Kind.OVERLOADED: ProviderServerError,
    Kind.SERVER_ERROR: ProviderServerError,
    Kind.KEY_INVALID: AuthenticationError,
    Kind.QUOTA_SPENT: QuotaExhaustedError,
    Kind.DAILY_LIMIT: QuotaExhaustedError,
    Kind.TOO_LARGE: BadRequestError,
    Kind.BAD_REQUEST: BadRequestError,
    Kind.MALFORMED: MalformedResponseError,
}


def error_class(kind: Kind) -> type[UpstreamError]:
    """The exception class a request that ended on an upstream answer of ``kind`` fails with
    (transport failures map to RequestTimeoutError / ConnectionError instead)."""
    return _ERRORS.get(kind, UpstreamError)
