"""Usage statistics: a JSON-ready snapshot of every lane."""

from __future__ import annotations

from typing import Any

from ._lane import Lane

__all__ = ["COUNTERS", "lane_stats", "merge_totals"]

#: the counters every process adds up in shared state
COUNTERS = (
    "usage",
    "successes",
    "failures",
    "retries",
    "rate_limited",
    "input_tokens",
    "output_tokens",
)


def lane_stats(lane: Lane, now: float, wall: float) -> dict[str, Any]:
    """One key's counters and state. Never the secret: its masked form and fingerprint only."""
    out: dict[str, Any] = {
        "usage": lane.usage,
        "queue_size": lane.n_waiting,
        "current_requests": lane.in_flight,
        "successes": lane.successes,
        "failures": lane.failures,
        "retries": lane.retries,
        "rate_limited": lane.rate_limited,
        "status": lane.status(now),
        "max_concurrent": lane.max_concurrent,
        "key": lane.secret.masked,
        "key_id": lane.secret.key_id,
        "source": lane.source,
        "group": lane.group,
        "weight": lane.weight,
        "input_tokens": lane.input_tokens,
        "output_tokens": lane.output_tokens,
        "avg_latency_s": round(lane.latency, 4),
    }
    if not lane.enabled:
        out["disabled_reason"] = lane.disabled_reason
        out["disabled_since_s"] = (
            None if lane.disabled_at is None else round(max(0.0, wall - lane.disabled_at), 3)
        )
        if lane.probe_at is not None:
            out["next_probe_in_s"] = round(max(0.0, lane.probe_at - wall), 3)
    if lane.cooldown_until > now:
        out["cooldown_s"] = round(lane.cooldown_until - now, 3)
    if lane.parked_until > now:
        out["parked_s"] = round(lane.parked_until - now, 3)
    models = {scope: budget.snapshot(now) for scope, budget in lane.book.items()}
    if len(models) == 1:
        # one model in use (the usual case): its budget's facts at the top, as before
        ((_, facts),) = models.items()
        for name, value in facts.items():
            out.setdefault(name, value)
    if models:
        out["models"] = models
    return out


def merge_totals(stats: dict[str, Any], totals: dict[str, int] | None) -> None:
    """One key's counters of every process (as the store sums them) in place of this
    process's; never below this process's own (a store that lost its data)."""
    if totals is None:
        return
    for name in COUNTERS:
        stats[name] = max(int(stats[name]), int(totals.get(name, 0)))
