"""A discrete-event simulation of one key's budget against the emulator's own rate models.

What keymux does per request, on a fake clock: ``ready_at`` -> ``take`` -> (the sync facade's
hand-off, if any) -> the request reaches the provider one network delay later and is admitted
or refused by the emulator's ``Limits`` (its ``_rates`` meters) -> the answer comes back after
a latency (a 429 at once) with the rate-limit headers the emulator's dialect formats at reply
time -> keymux's adapter reads them (``rate_snapshot``, ``classify``) -> ``observe``, then
``settle``/``on_success`` or the 429 path of ``Core._after_failure`` (``decide`` with the
default retry policy, ``on_rate_limited``) -> ``release``; a refused request is retried.

Nothing sleeps and nothing reads the wall clock: the simulation's own time moves from event to
event. Used by ``test_pacer.py`` (tables) and ``test_pacer_property.py`` (hypothesis); it holds
no tests itself.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
from dataclasses import dataclass, field
from typing import Any

from keymux._config import RetryPolicy
from keymux._ratelimit import Budget, Reservation
from keymux._retry import LaneAction, decide
from keymux._types import Kind
from keymux.emulator._claude import ClaudeDialect
from keymux.emulator._dialect import Ctx, Dialect
from keymux.emulator._gemini import GeminiDialect
from keymux.emulator._limits import Limits
from keymux.emulator._openai import GroqDialect, OpenAIDialect
from keymux.providers import ADAPTERS

__all__ = ["Result", "Scenario", "simulate"]

DIALECTS: dict[str, type[Dialect]] = {
    "openai": OpenAIDialect,
    "groq": GroqDialect,
    "claude": ClaudeDialect,
    "gemini": GeminiDialect,
}
MODELS = {
    "openai": "gpt-4o-mini",
    "groq": "llama-3.1-8b-instant",
    "claude": "claude-sonnet-4-5",
    "gemini": "gemini-2.5-flash",
}
WALL0 = 1_767_225_600.0
T0 = 1000.0
POLICY = RetryPolicy()


@dataclass
class Scenario:
    """One key: ``limit`` requests per ``window`` s (and ``tpm`` tokens, ``rpd`` per day)
    under ``rate_model``, answered in ``latency`` (low, high) s, ``concurrency`` in flight."""

    rate_model: str = "sliding"
    dialect: str = "openai"
    limit: int | None = 20
    window: float = 1.0
    tpm: int | None = None
    rpd: int | None = None
    day_window: float = 86400.0
    concurrency: int = 5
    latency: tuple[float, float] = (0.010, 0.030)
    #: requests to answer; None: ``duration`` seconds' worth at the capacity
    requests: int | None = None
    duration: float = 10.0
    #: keymux is told ``limit`` per window as rpm (paced evenly)
    configured: bool = False
    #: tokens keymux estimates per request (0: not estimated) and the real usage
    estimate: int = 0
    usage: int = 0
    #: another consumer of the same key (requests per second, evenly spaced from ``outside_from``)
    outside_rate: float = 0.0
    outside_from: float = 0.0
    #: one-way network delay; the sync facade's extra hand-off between take and send (low, high)
    net: float = 0.0005
    hop: tuple[float, float] = (0.0, 0.0)
    seed: int = 1
    #: where in the provider's clock the run starts (a fixed window's boundaries are at whole
    #: multiples of ``window`` on it)
    phase: float = 0.0
    #: a second model on the same key with a limit of its own (per ``window``), its requests
    #: a share of all in proportion to the two limits, over the same concurrency
    second_limit: int | None = None
    #: the provider's 429 says nothing but the error (Gemini's bare RESOURCE_EXHAUSTED)
    bare_429: bool = False

    @property
    def capacity(self) -> float:
        """Requests per second the key's request limit allows (tokens: what they allow)."""
        rates = []
        if self.limit is not None:
            rates.append(self.limit / self.window)
        if self.tpm is not None and self.usage:
            rates.append(self.tpm / self.usage / self.window)
        first = min(rates) if rates else float("inf")
        return first + (self.second_limit or 0) / self.window

    @property
    def total(self) -> int:
        if self.requests is not None:
            return self.requests
        return max(1, round(self.duration * min(self.capacity, self.reach)))

    @property
    def reach(self) -> float:
        """Requests per second the concurrency allows at the mean latency."""
        mean = (self.latency[0] + self.latency[1]) / 2 + 2 * self.net
        return self.concurrency / mean

    @property
    def allows(self) -> bool:
        """Concurrency allows the capacity: concurrency / mean latency >= 1.2 x capacity."""
        return self.reach >= 1.2 * self.capacity


@dataclass
class Result:
    ok: int = 0
    refused: int = 0  # 429s served
    sent: int = 0
    refused_late: int = 0  # 429s to requests sent after the first window
    sent_late: int = 0
    outside_ok: int = 0
    outside_refused: int = 0
    duration: float = 0.0  # until the last answer
    capacity: float = 0.0
    budget: Budget | None = field(default=None, repr=False)
    #: per model (the second scenario model's last), requests answered and 429s served
    budgets: list[Budget] = field(default_factory=list, repr=False)
    ok_by_model: list[int] = field(default_factory=list)
    refused_by_model: list[int] = field(default_factory=list)

    @property
    def goodput(self) -> float:
        return self.ok / self.duration / self.capacity

    @property
    def share(self) -> float:
        return self.refused / self.sent if self.sent else 0.0

    @property
    def late_share(self) -> float:
        return self.refused_late / self.sent_late if self.sent_late else 0.0


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    kind: str = field(compare=False)
    data: Any = field(compare=False, default=None)


class _Lane:
    """One model's limits at the provider and keymux's budget for it, and its waiting requests
    (each held by a caller: callers are as many as the key's slots)."""

    def __init__(self, sc: Scenario, limit: int | None, model: str) -> None:
        self.model = model
        self.limits = Limits(
            rpm=limit,
            tpm=sc.tpm,
            rpd=sc.rpd,
            window=sc.window,
            day_window=sc.day_window,
            rate_model=sc.rate_model,
        )
        rpm = limit * 60.0 / sc.window if sc.configured and limit is not None else None
        self.budget = Budget(rpm=rpm)
        self.waiting: list[int] = []


BARE_429 = json.dumps(
    {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
        }
    }
).encode()


def simulate(sc: Scenario) -> Result:
    """Answer ``sc.total`` requests as fast as the budgets let them go."""
    rng = random.Random(sc.seed)
    t0 = T0 + sc.phase
    dialect = DIALECTS[sc.dialect]()
    adapter = ADAPTERS[sc.dialect]
    lanes = [_Lane(sc, sc.limit, MODELS[sc.dialect])]
    share = 0.0
    if sc.second_limit is not None:
        lanes.append(_Lane(sc, sc.second_limit, MODELS[sc.dialect] + "-second"))
        share = sc.second_limit / ((sc.limit or 0) + sc.second_limit)
    events: list[_Event] = []
    seq = itertools.count()
    total = sc.total
    result = Result(
        capacity=sc.capacity,
        budget=lanes[0].budget,
        budgets=[lane.budget for lane in lanes],
        ok_by_model=[0] * len(lanes),
        refused_by_model=[0] * len(lanes),
    )
    state = {"in_flight": 0, "waiting": 0, "wake": None}
    retries: dict[int, int] = {}
    request_ids = itertools.count()
    fresh = {"left": total}
    actual = sc.usage or sc.estimate

    def lane_of(rid: int) -> int:
        # the second model's requests spread evenly, in proportion to the limits
        return 1 if share and int((rid + 1) * share) > int(rid * share) else 0

    def push(at: float, kind: str, data: Any = None) -> None:
        heapq.heappush(events, _Event(at, next(seq), kind, data))

    def headers_at(lane: _Lane, now: float) -> dict[str, str]:
        snap = lane.limits.snapshot(now)
        return dialect.rate_headers(snap, WALL0 + now) if snap is not None else {}

    def send(m: int, rid: int, now: float) -> None:
        lane = lanes[m]
        res = lane.budget.take(now, sc.estimate)
        state["in_flight"] += 1
        hop = rng.uniform(*sc.hop) if sc.hop[1] > 0 else 0.0
        sent = now + hop
        result.sent += 1
        if now >= t0 + sc.window:
            result.sent_late += 1
        push(sent + sc.net, "arrive", (m, rid, res, sent, now))

    def pump(now: float) -> None:
        while True:
            moved = False
            for m, lane in enumerate(lanes):
                while (
                    lane.waiting
                    and state["in_flight"] < sc.concurrency
                    and lane.budget.ready_at(now, sc.estimate) <= now
                ):
                    send(m, lane.waiting.pop(), now)
                    state["waiting"] -= 1
                    moved = True
            if state["in_flight"] + state["waiting"] < sc.concurrency and fresh["left"] > 0:
                rid = next(request_ids)
                fresh["left"] -= 1
                lanes[lane_of(rid)].waiting.append(rid)
                state["waiting"] += 1
                moved = True
            if not moved:
                break
        if state["in_flight"] >= sc.concurrency:
            return
        readies = [lane.budget.ready_at(now, sc.estimate) for lane in lanes if lane.waiting]
        if readies:
            ready = min(readies)
            wake = state["wake"]
            if wake is None or ready < wake or wake <= now:
                state["wake"] = ready
                push(ready, "wake")

    def answer(now: float, data: Any) -> None:
        m, rid, res, sent, taken, status, headers, body = data
        lane = lanes[m]
        budget = lane.budget
        res_: Reservation = res
        snapshot = adapter.rate_snapshot(headers, WALL0 + now)
        budget.observe(snapshot, now, res_, sent, status == 429)
        if status == 200:
            budget.settle(res_, actual or None)
            budget.on_success(res_)
            result.ok += 1
            result.ok_by_model[m] += 1
            result.duration = now - t0
        else:
            result.refused += 1
            result.refused_by_model[m] += 1
            if taken >= t0 + sc.window:
                result.refused_late += 1
            outcome = adapter.classify(status, headers, body, WALL0 + now)
            budget.settle(res_, 0)
            retry_after = outcome.retry_after
            if outcome.kind is Kind.RATE_LIMITED:
                precise = budget.exhausted_reset(now)
                if precise is not None:
                    exact = precise - now
                    retry_after = exact if retry_after is None else min(retry_after, exact + 0.001)
            decision = decide(
                outcome.kind,
                retries=retries.get(rid, 0),
                policy=POLICY,
                retry_after=retry_after,
                pinned=False,
                jitter=0.5,
                streak=budget.streak + 1,
            )
            retries[rid] = retries.get(rid, 0) + 1
            if decision.lane_action is LaneAction.COOL:
                budget.on_rate_limited(
                    now,
                    decision.lane_delay,
                    res_,
                    outcome.retry_after,
                    limit=outcome.limit,
                    dimension=outcome.dimension,
                    period=outcome.period,
                )
            elif decision.lane_action is LaneAction.PARK:
                budget.park(now, decision.lane_delay)
            lane.waiting.append(rid)  # its caller tries again
            state["waiting"] += 1
        state["in_flight"] -= 1
        budget.release()
        pump(now)

    def arrive(now: float, data: Any) -> None:
        m, rid, res, sent, taken = data
        lane = lanes[m]
        verdict = lane.limits.admit(now, actual)
        if verdict is not None:
            ctx = Ctx(0, now, WALL0 + now)
            ctx.model = lane.model
            reply = dialect.rate_limited(verdict, ctx)
            headers = {**headers_at(lane, now), **reply.headers}
            body = BARE_429 if sc.bare_429 else json.dumps(reply.body).encode()
            push(now + sc.net, "answer", (m, rid, res, sent, taken, reply.status, headers, body))
            return
        latency = rng.uniform(*sc.latency) if sc.latency[1] > sc.latency[0] else sc.latency[0]
        push(now + latency, "reply", (m, rid, res, sent, taken))

    def reply(now: float, data: Any) -> None:
        # the emulator computes the headers when it answers, after the latency
        m, rid, res, sent, taken = data
        headers = headers_at(lanes[m], now)
        push(now + sc.net, "answer", (m, rid, res, sent, taken, 200, headers, b""))

    def outside(now: float, _: Any) -> None:
        if lanes[0].limits.admit(now, actual) is None:
            result.outside_ok += 1
        else:
            result.outside_refused += 1
        push(now + 1.0 / sc.outside_rate, "outside")

    if sc.outside_rate > 0:
        push(t0 + sc.outside_from, "outside")
    push(t0, "wake")
    handlers = {"wake": lambda now, _: pump(now), "arrive": arrive, "reply": reply}
    handlers["answer"] = answer
    handlers["outside"] = outside
    while events and result.ok < total:
        ev = heapq.heappop(events)
        if ev.kind == "outside" and not (
            state["waiting"] or fresh["left"] > 0 or state["in_flight"]
        ):
            continue
        if ev.kind == "wake" and state["wake"] is not None and ev.at >= state["wake"]:
            state["wake"] = None
        handlers[ev.kind](ev.at, ev.data)
    return result
