"""``GET /dashboard``: one self-contained page (inline CSS and JS, no CDN, works offline) that
polls ``GET /dashboard/data`` and draws every key's state, throughput, queue, 429s and
remaining budget, and a chart of the last minutes.

The page itself holds no data and is public; ``/dashboard/data`` wants the proxy token like
the API (the page reads ``?token=`` once, keeps it in the tab's sessionStorage and takes it out
of the address bar, or asks for it). The history behind the chart is sampled by the server
every few seconds, so a page opened late still shows the last minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import Any

__all__ = ["History", "dashboard_data", "page"]

#: samples kept: ten minutes at the default 2 s interval
HISTORY = 300

StatsSource = Callable[[], dict[str, dict[str, dict[str, Any]]]]


def page() -> bytes:
    """The dashboard's HTML (read once per server)."""
    return resources.files(__package__).joinpath("dashboard.html").read_bytes()


class History:
    """Per-provider totals sampled every ``interval`` seconds, and each key's recent rate."""

    def __init__(self, stats: StatsSource, interval: float, size: int = HISTORY) -> None:
        self._stats = stats
        self.interval = interval
        self.samples: deque[dict[str, Any]] = deque(maxlen=size)
        self._last: dict[tuple[str, str], tuple[float, int, int]] = {}
        #: (provider, key) -> (answers per second, 429s per second) over the last interval
        self.rates: dict[tuple[str, str], tuple[float, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def sample(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        stats = self._stats()
        totals: dict[str, dict[str, float]] = {}
        rates: dict[tuple[str, str], tuple[float, float]] = {}
        last = self._last
        current: dict[tuple[str, str], tuple[float, int, int]] = {}
        for provider, keys in stats.items():
            ok = limited = 0.0
            for name, s in keys.items():
                done = int(s.get("successes", 0))
                refused = int(s.get("rate_limited", 0))
                ident = (provider, name)
                current[ident] = (now, done, refused)
                before = last.get(ident)
                if before is not None and now > before[0]:
                    span = now - before[0]
                    rates[ident] = (
                        max(0, done - before[1]) / span,
                        max(0, refused - before[2]) / span,
                    )
                else:
                    rates[ident] = (0.0, 0.0)
                ok += rates[ident][0]
                limited += rates[ident][1]
            if keys:
                totals[provider] = {"ok": round(ok, 3), "rate_limited": round(limited, 3)}
        self._last = current
        self.rates = rates
        if last:  # the first sample has no rate yet
            self.samples.append({"t": round(now, 3), "providers": totals})

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # pragma: no cover - a stats bug must not stop the sampler
                import logging

                logging.getLogger("keymux").exception("keymux: dashboard sample failed")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def dashboard_data(
    stats: dict[str, dict[str, dict[str, Any]]], history: History, started: float
) -> dict[str, Any]:
    """The JSON the page draws: no secret, no masked key, key names only."""
    keys: list[dict[str, Any]] = []
    for provider, entries in stats.items():
        for name, s in entries.items():
            rate, limited_rate = history.rates.get((provider, name), (0.0, 0.0))
            row: dict[str, Any] = {
                "provider": provider,
                "name": name,
                "state": s.get("status", "active"),
                "in_flight": s.get("current_requests", 0),
                "max_concurrent": s.get("max_concurrent", 0),
                "queue": s.get("queue_size", 0),
                "successes": s.get("successes", 0),
                "failures": s.get("failures", 0),
                "retries": s.get("retries", 0),
                "rate_limited": s.get("rate_limited", 0),
                "rps": round(rate, 3),
                "rate_limited_per_s": round(limited_rate, 3),
                "avg_latency_ms": round(float(s.get("avg_latency_s", 0.0)) * 1000, 1),
                "input_tokens": s.get("input_tokens", 0),
                "output_tokens": s.get("output_tokens", 0),
                "cooldown_s": s.get("cooldown_s") or s.get("parked_s"),
                "reason": s.get("disabled_reason"),
            }
            for dim in ("requests", "tokens"):
                # the tightest of the key's budgets (one per model it served)
                tightest: tuple[float, Any] | None = None
                for facts in _budgets(s):
                    learned = facts.get(f"learned_{dim}")
                    if isinstance(learned, dict) and learned.get("remaining") is not None:
                        remaining = float(learned["remaining"])
                        if tightest is None or remaining < tightest[0]:
                            tightest = (remaining, learned.get("limit"))
                row[f"remaining_{dim}"] = None if tightest is None else tightest[0]
                row[f"limit_{dim}"] = None if tightest is None else tightest[1]
            keys.append(row)
    return {
        "time": round(time.time(), 3),
        "uptime_s": round(time.time() - started, 1),
        "interval_s": history.interval,
        "keys": keys,
        "history": list(history.samples),
    }


def _budgets(stats: dict[str, Any]) -> list[dict[str, Any]]:
    models = stats.get("models")
    if isinstance(models, dict) and models:
        return [facts for facts in models.values() if isinstance(facts, dict)]
    return [stats]
