"""Model-based test of the dispatch core: a hypothesis state machine over one Multiplexer.

One event loop per example is driven by hand (``loop.run_until_complete``); time is a FakeClock.
The fake engine answers per key from a script (ok, 429 with retry-after, 401, 500, quota spent,
hang until the attempt's timeout on the clock) and keeps every other request in flight until a
rule releases it or ``LATENCY`` seconds pass on the clock, so the machine controls when slots
free up.

After every step the design's invariants are checked (design.md, "Invariants"):

1. every accepted request ends exactly once, with a Response or a KeymuxError (at teardown,
   after draining and after close, none is left hanging);
2. a key never has more than ``max_concurrent`` in flight (core counters, stats, and the
   engine's own count) nor more than ``queue_size`` waiting;
3. work conservation: no enabled, ready key with a free slot while unpinned work it could take
   waits (requests that must avoid a key do not count for that key);
4. a pinned request only ever reaches its key;
5. a disabled (or removed) key receives no request after it was taken out.

What the machine found is pinned down by directed tests at the end of this file: regression
tests for what is fixed, ``xfail(strict=True)`` for what is open.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter, deque
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from multidict import CIMultiDict, CIMultiDictProxy

import keymux
from fakes import AnswerExchange
from keymux._clock import FakeClock
from keymux._http import TransportFailure
from keymux._lane import WAITING, Lane
from keymux._types import HttpRequest

PROVIDER = "openai"
NAMES = ("k0", "k1", "k2", "k3")
MAX_CONCURRENT = 2
QUEUE_SIZE = 3
ATTEMPT_TIMEOUT = 5.0
LATENCY = 4.0  # an answer comes at the latest this long after the request (clock seconds)
FAULTS = ("ok", "429", "401", "500", "quota", "hang")
STRATEGIES = ("round-robin", "least-loaded", "weighted", "rate-aware")


# --- answers --------------------------------------------------------------------------------


def _chat(text: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-model",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
    ).encode()


def _error(status: int, message: str, etype: str, code: str | None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": etype, "param": None, "code": code}}
    ).encode()


def answer(action: str, rid: str) -> tuple[int, dict[str, str], bytes]:
    if action == "ok":
        return 200, {}, _chat(f"answer to {rid}")
    if action == "429":
        return (
            429,
            {"retry-after-ms": "1500"},
            _error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded"),
        )
    if action == "401":
        return (
            401,
            {},
            _error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
        )
    if action == "500":
        return 500, {}, _error(500, "The server had an error", "server_error", None)
    if action == "413":
        return (
            413,
            {},
            _error(
                413, "Request too large for model", "invalid_request_error", "request_too_large"
            ),
        )
    if action == "quota":
        return (
            429,
            {},
            _error(
                429, "You exceeded your current quota", "insufficient_quota", "insufficient_quota"
            ),
        )
    raise AssertionError(action)


def key_of(headers: Mapping[str, str]) -> str:
    for name, value in headers.items():
        if name.lower() == "authorization":
            return value.removeprefix("Bearer ")
    raise AssertionError("no Authorization header")


# --- the fake engine ------------------------------------------------------------------------


@dataclass(eq=False)
class Flight:
    rid: str
    secret: str
    action: str
    future: asyncio.Future[None]


@dataclass
class SendRecord:
    rid: str
    secret: str
    action: str
    status: int | None = None  # None: transport failure or cancelled


@dataclass
class Tracker:
    """What the machine knows about one lane instance (one add_key)."""

    name: str
    secret: str
    lane: Lane


class ModelEngine:
    """Scripted per key; requests stay in flight until released (or, for "hang", until the
    attempt's timeout passes on the clock)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.scripts: dict[str, deque[str]] = {}
        self.pending: list[Flight] = []
        self.in_flight: Counter[str] = Counter()
        self.sends: list[SendRecord] = []
        self.probes: list[str] = []
        self.trackers: dict[str, Tracker] = {}
        self.violations: list[str] = []
        self.closed = 0

    async def send(self, req: HttpRequest, timeout: Any) -> tuple[int, Mapping[str, str], bytes]:
        secret = key_of(req.headers)
        tracker = self.trackers[secret]
        if req.method == "GET":  # a probe of a disabled key (quota): allowed, answered at once
            self.probes.append(secret)
            return 200, CIMultiDictProxy(CIMultiDict()), b'{"data": []}'
        body = json.loads(req.body or b"{}")
        rid = body["messages"][0]["content"]
        lane = tracker.lane
        if not lane.enabled or lane.removed:
            self.violations.append(
                f"invariant 5: {rid} sent to {tracker.name} ({secret}) after it was "
                f"{'removed' if lane.removed else 'disabled'} ({lane.disabled_reason})"
            )
        script = self.scripts.get(secret)
        action = script.popleft() if script else "ok"
        record = SendRecord(rid, secret, action)
        self.sends.append(record)
        self.in_flight[secret] += 1
        if self.in_flight[secret] > lane.max_concurrent:
            self.violations.append(
                f"invariant 2: {self.in_flight[secret]} requests in flight on {tracker.name} "
                f"(max {lane.max_concurrent})"
            )
        try:
            if action == "hang":
                await self.clock.sleep(timeout.total)
                raise TransportFailure("the attempt timed out", timed_out=True)
            flight = Flight(rid, secret, action, asyncio.get_running_loop().create_future())
            self.pending.append(flight)
            # answered when a rule releases it, or at the latest LATENCY seconds on the clock
            timer = self.clock.call_at(self.clock.now() + LATENCY, lambda: self.release([flight]))
            try:
                await flight.future
            finally:
                timer.cancel()
                self.pending.remove(flight)
            status, headers, payload = answer(action, rid)
            record.status = status
            return status, CIMultiDictProxy(CIMultiDict(headers)), payload
        finally:
            self.in_flight[secret] -= 1

    async def open(self, req: HttpRequest, timeout: Any) -> AnswerExchange:
        return AnswerExchange(*await self.send(req, timeout))

    async def close(self) -> None:
        self.closed += 1

    def forget(self) -> None:
        pass

    def release(self, flights: list[Flight]) -> None:
        for flight in flights:
            if not flight.future.done():
                flight.future.set_result(None)


@dataclass(eq=False)
class Submitted:
    rid: str
    pin: str | None
    task: asyncio.Task[keymux.Response]
    checked: bool = False
    outcome: Any = field(default=None)


async def _settle(rounds: int = 30) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


# --- the machine ----------------------------------------------------------------------------


class DispatchMachine(RuleBasedStateMachine):
    #: submit some requests with a ``deadline=`` (cancellation while queued or in flight)
    deadlines = True

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, ctx: self.loop_errors.append(ctx))
        self.clock = FakeClock()
        self.engine = ModelEngine(self.clock)
        self.mux = keymux.Multiplexer(
            max_concurrent_requests=MAX_CONCURRENT,
            queue_size=QUEUE_SIZE,
            initial_retry_delay=0.5,
            backoff_factor=2.0,
            max_retries=2,
            timeout=keymux.Timeout(total=ATTEMPT_TIMEOUT),
            clock=self.clock,
            seed=0,
            close_grace=0.0,
        )
        self.core = self.mux._core
        self.core.engine = self.engine  # type: ignore[assignment]
        self.live: dict[str, Tracker] = {}  # name -> current lane instance
        self.generation = itertools.count()
        self.rids = itertools.count()
        self.submitted: list[Submitted] = []
        self.closed = False

    # -- plumbing --------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def settle(self) -> None:
        self.run(_settle())

    async def _add(
        self, name: str, max_concurrent: int | None, rpm: float | None, group: str | None
    ) -> Tracker:
        secret = f"sk-model-{name}-gen{next(self.generation):04d}-0123456789"
        self.mux.add_key(
            PROVIDER, name, secret, max_concurrent=max_concurrent, rpm=rpm, group=group
        )
        lane = self.core.dispatch.providers[PROVIDER].lanes[name]
        tracker = Tracker(name, secret, lane)
        self.engine.trackers[secret] = tracker
        self.live[name] = tracker
        await _settle()
        return tracker

    # -- rules -----------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        async def bind() -> None:
            await self.mux.__aenter__()
            await self._add("k0", None, None, None)

        self.run(bind())

    @precondition(lambda self: not self.closed and len(self.live) < len(NAMES))
    @rule(
        data=st.data(),
        max_concurrent=st.sampled_from([None, None, 1, 3]),
        rpm=st.sampled_from([None, None, 60.0, 120.0]),
        group=st.sampled_from([None, None, "g"]),
    )
    def add_key(
        self,
        data: st.DataObject,
        max_concurrent: int | None,
        rpm: float | None,
        group: str | None,
    ) -> None:
        name = data.draw(st.sampled_from([n for n in NAMES if n not in self.live]), label="name")
        self.run(self._add(name, max_concurrent, rpm, group))

    @precondition(lambda self: not self.closed and len(self.live) >= 2)
    @rule(data=st.data())
    def remove_key(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.live)), label="name")
        tracker = self.live.pop(name)

        async def remove() -> None:
            self.mux.remove_key(PROVIDER, name)
            await _settle()

        self.run(remove())
        assert tracker.lane.removed
        assert not tracker.lane.enabled

    @precondition(lambda self: self.live)
    @rule(
        data=st.data(),
        faults=st.lists(st.sampled_from(FAULTS), min_size=1, max_size=4),
    )
    def inject_fault(self, data: st.DataObject, faults: list[str]) -> None:
        name = data.draw(st.sampled_from(sorted(self.live)), label="name")
        secret = self.live[name].secret
        self.engine.scripts.setdefault(secret, deque()).extend(faults)

    @precondition(lambda self: not self.closed)
    @rule(
        data=st.data(),
        n=st.integers(1, 4),
        pinned=st.booleans(),
        strategy=st.sampled_from(STRATEGIES),
        deadline=st.sampled_from([None, None, None, 4.0]),
    )
    def submit(
        self, data: st.DataObject, n: int, pinned: bool, strategy: str, deadline: float | None
    ) -> None:
        if not self.deadlines:
            deadline = None
        pin: str | None = None
        if pinned and self.live:
            pin = data.draw(st.sampled_from(sorted(self.live)), label="pin")
        client = (
            self.mux.get_client(PROVIDER, key_name=pin)
            if pin is not None
            else self.mux.get_client(PROVIDER, strategy=strategy)
        )
        for _ in range(n):
            rid = f"r{next(self.rids)}"
            coro = client.acall(
                "chat", messages=[{"role": "user", "content": rid}], deadline=deadline
            )
            self.submitted.append(Submitted(rid, pin, self.loop.create_task(coro)))
        self.settle()

    @precondition(lambda self: self.closed)
    @rule(pinned=st.booleans())
    def submit_after_close(self, pinned: bool) -> None:
        pin = next(iter(sorted(self.live)), None) if pinned else None
        client = self.mux.get_client(PROVIDER, key_name=pin)
        rid = f"r{next(self.rids)}"
        task = self.loop.create_task(
            client.acall("chat", messages=[{"role": "user", "content": rid}])
        )
        self.submitted.append(Submitted(rid, pin, task))
        self.settle()
        assert task.done()
        assert isinstance(task.exception(), keymux.ClosedError), task

    @precondition(lambda self: self.engine.pending)
    @rule(k=st.integers(1, 6), newest=st.booleans())
    def complete(self, k: int, newest: bool) -> None:
        pending = list(self.engine.pending)
        chosen = pending[-k:] if newest else pending[:k]
        self.engine.release(chosen)
        self.settle()

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 1.5, 3.0, 6.0, 301.0]))
    def advance(self, dt: float) -> None:
        self.run(self.clock.advance(dt))

    @precondition(lambda self: not self.closed and len(self.engine.sends) >= 8)
    @rule()
    def close(self) -> None:
        self.closed = True
        self.run(self.mux.aclose())
        self.settle()
        unfinished = [s.rid for s in self.submitted if not s.task.done()]
        assert not unfinished, f"invariant 1: still running after aclose(): {unfinished}"

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def no_violation_seen_by_the_engine(self) -> None:
        assert not self.engine.violations, self.engine.violations
        assert not self.loop_errors, self.loop_errors

    @invariant()
    def finished_requests_end_well(self) -> None:
        """Invariant 1 (and 4 for answers): a Response or a KeymuxError, nothing else."""
        for s in self.submitted:
            if not s.task.done() or s.checked:
                continue
            s.checked = True
            assert not s.task.cancelled(), f"invariant 1: {s.rid} was cancelled"
            exc = s.task.exception()
            if exc is not None:
                assert isinstance(exc, keymux.KeymuxError), (
                    f"invariant 1: {s.rid} ended with {type(exc).__name__}: {exc!r}"
                )
                successes = [r for r in self.engine.sends if r.rid == s.rid and r.status == 200]
                assert not successes, f"{s.rid} failed ({exc!r}) although a 200 came back"
                s.outcome = exc
                continue
            resp = s.task.result()
            assert isinstance(resp, keymux.Response)
            assert resp.text == f"answer to {s.rid}"
            sends = [r for r in self.engine.sends if r.rid == s.rid]
            assert resp.attempts == len(sends), (s.rid, resp.attempts, sends)
            assert sends[-1].status == 200
            assert [r for r in sends if r.status == 200] == [sends[-1]]
            served_by = self.engine.trackers[sends[-1].secret].name
            assert resp.key_name == served_by
            if s.pin is not None:
                assert resp.key_name == s.pin
            s.outcome = resp

    @invariant()
    def pinned_requests_use_only_their_key(self) -> None:
        """Invariant 4: every attempt of a pinned request went to a key of that name."""
        pins = {s.rid: s.pin for s in self.submitted if s.pin is not None}
        for record in self.engine.sends:
            pin = pins.get(record.rid)
            if pin is not None:
                assert self.engine.trackers[record.secret].name == pin, (record, pin)

    @invariant()
    def bounds_hold(self) -> None:
        """Invariant 2: core counters, stats and the engine's count."""
        queue_size = self.core.config.queue_size
        for ps in self.core.dispatch.providers.values():
            for lane in ps.lanes.values():
                assert 0 <= lane.in_flight <= lane.max_concurrent, lane
                # plus, while a key is in slow start, what its other slots will carry
                assert 0 <= lane.n_waiting <= queue_size + lane.max_concurrent - 1, lane
                counted = [w for w in lane.queue if w.state == WAITING]
                assert all(w.lane is lane for w in counted), lane
                assert len(counted) == lane.n_waiting, (lane, len(counted))
        stats = self.mux.get_usage_stats()
        json.dumps(stats)
        for name, entry in stats[PROVIDER].items():
            tracker = self.live[name]
            assert entry["current_requests"] <= entry["max_concurrent"]
            assert entry["queue_size"] <= queue_size + entry["max_concurrent"] - 1
            assert self.engine.in_flight[tracker.secret] <= entry["current_requests"], (
                name,
                self.engine.in_flight[tracker.secret],
                entry,
            )
        assert set(stats[PROVIDER]) == set(self.live)

    @invariant()
    def work_is_conserved(self) -> None:
        """Invariant 3: a lane that could send now does not idle while work it may take waits."""
        if self.closed:
            return
        now = self.clock.now()
        ps = self.core.dispatch.providers[PROVIDER]
        waiting_unpinned = [w for w in ps.unpinned if w.state == WAITING]
        for lane in ps.lanes.values():
            if not lane.enabled or lane.in_flight >= lane.cap:
                continue
            own = [
                w
                for w in lane.queue
                if w.state == WAITING and lane.ready_at(now, w.req.scope, w.req.tokens) <= now
            ]
            assert not own, (
                f"invariant 3: {lane!r} could send but {len(own)} requests wait in its queue"
            )
            could_take = [
                w
                for w in waiting_unpinned
                if not (w.req.avoid and lane.name in w.req.avoid)
                and lane.ready_at(now, w.req.scope, w.req.tokens) <= now
            ]
            assert not could_take, (
                f"invariant 3: {lane!r} could send but unpinned requests wait: "
                f"{[json.loads(w.req.prepared.body or b'{}') for w in could_take]}"
            )

    # -- teardown --------------------------------------------------------------------------

    def _drain(self) -> list[str]:
        """Let every in-flight request answer and time run on, until all requests ended."""
        for _ in range(200):
            if all(s.task.done() for s in self.submitted):
                break
            self.engine.release(list(self.engine.pending))
            self.settle()
            self.run(self.clock.advance(2.0))
        return [s.rid for s in self.submitted if not s.task.done()]

    def teardown(self) -> None:
        try:
            if not self.loop.is_closed() and hasattr(self, "mux"):
                hung = self._drain() if not self.closed else []
                self.finished_requests_end_well()
                if not self.closed:
                    self.close()
                assert not hung, f"invariant 1: requests that never ended: {hung}"
                self.finished_requests_end_well()
                assert all(s.checked for s in self.submitted)
                assert not self.engine.pending
                assert self.engine.closed >= 1
                self.no_violation_seen_by_the_engine()
        finally:
            loop = self.loop
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(_settle())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


MODEL_SETTINGS = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_dispatch_model() -> None:
    run_state_machine_as_test(DispatchMachine, settings=MODEL_SETTINGS)


# --- directed tests for what the machine found ------------------------------------------------


class ClockEngine:
    """A small fake engine for directed tests: every answer takes ``latency[key]`` seconds on the
    clock; ``replies(key, rid)`` picks the answer (an action name as in ``answer``)."""

    def __init__(self, clock: FakeClock, latency: Mapping[str, float], replies: Any = None) -> None:
        self.clock = clock
        self.latency = latency
        self.replies = replies or (lambda key, rid: "ok")
        self.sends: list[tuple[str, str, float]] = []  # (key, rid, clock time)
        self.in_flight: Counter[str] = Counter()

    async def send(self, req: HttpRequest, timeout: Any) -> tuple[int, Mapping[str, str], bytes]:
        key = key_of(req.headers)
        rid = json.loads(req.body or b"{}")["messages"][0]["content"]
        self.sends.append((key, rid, self.clock.now()))
        self.in_flight[key] += 1
        try:
            await self.clock.sleep(self.latency.get(key, 1.0))
            status, headers, body = answer(self.replies(key, rid), rid)
            return status, CIMultiDictProxy(CIMultiDict(headers)), body
        finally:
            self.in_flight[key] -= 1

    async def open(self, req: HttpRequest, timeout: Any) -> AnswerExchange:
        return AnswerExchange(*await self.send(req, timeout))

    async def close(self) -> None:
        pass

    def forget(self) -> None:
        pass


def _mux(clock: FakeClock, engine: Any, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "max_concurrent_requests": 1,
        "queue_size": 20,
        "initial_retry_delay": 1.0,
        "clock": clock,
        "seed": 0,
        "close_grace": 0.0,
    }
    options.update(kwargs)
    mux = keymux.Multiplexer(**options)
    mux._core.engine = engine
    return mux


_spawned: list[asyncio.Future[Any]] = []


def _chat_task(client: Any, rid: str, **kwargs: Any) -> asyncio.Future[keymux.Response]:
    task = asyncio.ensure_future(
        client.acall("chat", messages=[{"role": "user", "content": rid}], **kwargs)
    )
    _spawned.append(task)
    return task


@pytest.fixture
async def reap() -> AsyncIterator[None]:
    """Whatever a directed test leaves running is cancelled and its outcome retrieved."""
    yield
    tasks, _spawned[:] = list(_spawned), []
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


A_KEY = "sk-model-AAAA-0123456789abcdef"
B_KEY = "sk-model-BBBB-0123456789abcdef"


async def test_waiters_are_served_in_order_and_slots_come_back(reap: None) -> None:
    """The plain path the bugs below break: one key, one slot, three requests in turn."""
    clock = FakeClock()
    engine = ClockEngine(clock, {A_KEY: 1.0})
    async with _mux(clock, engine) as mux:
        mux.add_openai_key("a", A_KEY)
        client = mux.get_openai_client()
        tasks = [_chat_task(client, f"r{i}") for i in range(3)]
        await _settle()
        for _ in range(3):
            await clock.advance(1.0)
        results = [t.result() for t in tasks]
        assert [r.text for r in results] == ["answer to r0", "answer to r1", "answer to r2"]
        assert [s[2] for s in engine.sends] == [1000.0, 1001.0, 1002.0]
        assert mux.get_usage_stats()["openai"]["a"]["current_requests"] == 0


async def test_a_waiter_cancelled_before_it_runs_neither_breaks_nor_leaks(reap: None) -> None:
    """Found by the machine: a waiter cancelled (deadline) but not yet resumed used to be
    granted the slot: InvalidStateError in the request that freed it, and a leaked slot
    (fixed in 44e74fc)."""
    clock = FakeClock()
    engine = ClockEngine(clock, {A_KEY: 2.0})
    async with _mux(clock, engine) as mux:
        mux.add_openai_key("a", A_KEY)
        client = mux.get_openai_client()
        first = _chat_task(client, "first")
        await _settle()
        # waits for the slot; its deadline falls at the very moment the slot frees up
        waiter = _chat_task(client, "waiter", deadline=2.0)
        await _settle()
        await clock.advance(2.0)
        assert isinstance(waiter.exception(), keymux.RequestTimeoutError)
        # the request that had its answer must get it ...
        assert first.result().text == "answer to first"
        # ... and the key's slot must come back
        assert mux.get_usage_stats()["openai"]["a"]["current_requests"] == 0
        later = _chat_task(client, "later", deadline=30.0)
        await clock.advance(2.0)
        assert later.result().text == "answer to later"


async def test_no_request_reaches_a_key_after_it_was_disabled(reap: None) -> None:
    """A key's 401 disables it before its slot goes to the next waiter (found by the machine;
    fixed in 10f9d96)."""
    clock = FakeClock()
    engine = ClockEngine(
        clock, {A_KEY: 1.0, B_KEY: 1.0}, replies=lambda key, rid: "401" if key == A_KEY else "ok"
    )
    async with _mux(clock, engine) as mux:
        mux.add_openai_key("a", A_KEY)
        mux.add_openai_key("b", B_KEY)
        client = mux.get_openai_client()
        tasks = [_chat_task(client, f"r{i}") for i in range(4)]
        await _settle()
        for _ in range(6):
            await clock.advance(1.0)
        assert all(t.result().key_name == "b" for t in tasks)
        a_sends = [s for s in engine.sends if s[0] == A_KEY]
        assert len(a_sends) == 1, f"the disabled key got {len(a_sends) - 1} more requests"


async def test_a_queued_request_is_not_sent_into_a_fresh_cooldown(reap: None) -> None:
    """After a 429 the key cools down before its slot goes to the next waiter."""
    clock = FakeClock()
    first_answer = {"done": False}

    def replies(key: str, rid: str) -> str:
        if key == A_KEY and not first_answer["done"]:
            first_answer["done"] = True
            return "429"  # retry-after 1.5 s
        return "ok"

    engine = ClockEngine(clock, {A_KEY: 1.0, B_KEY: 1.0}, replies=replies)
    async with _mux(clock, engine) as mux:
        mux.add_openai_key("a", A_KEY)
        mux.add_openai_key("b", B_KEY)
        client = mux.get_openai_client()
        tasks = [_chat_task(client, f"r{i}") for i in range(4)]
        await _settle()
        for _ in range(8):
            await clock.advance(0.5)
        assert all(t.done() and t.exception() is None for t in tasks)
        cooling_until = 1000.0 + 1.0 + 1.5
        early = [s for s in engine.sends[1:] if s[0] == A_KEY and s[2] < cooling_until]
        assert not early, f"sent to key a during its cooldown: {early}"


async def test_a_free_key_takes_waiting_work_behind_many_requests_that_avoid_it(reap: None) -> None:
    clock = FakeClock()
    a_key, b_key = "gsk_model_AAAA_0123456789abcdef", "gsk_model_BBBB_0123456789abcdef"

    def replies(key: str, rid: str) -> str:
        return "413" if key == a_key and rid.startswith("big") else "ok"

    engine = ClockEngine(clock, {a_key: 1.0, b_key: 100.0}, replies=replies)
    async with _mux(clock, engine) as mux:
        mux.add_groq_key("a", a_key)
        mux.add_groq_key("b", b_key)
        unpinned = mux.get_groq_client()
        tasks = [_chat_task(mux.get_groq_client(key_name="b"), "long")]  # b is busy for 100 s
        await _settle()
        tasks += [_chat_task(unpinned, f"big{i}") for i in range(8)]  # too large for key a
        for _ in range(9):
            await clock.advance(1.0)
        # all eight now wait for b; key a is free. Keep a busy for a second, then queue one
        # small request: it must run on a as soon as a is free, not wait 900 s for b.
        tasks.append(_chat_task(unpinned, "x"))
        await _settle()
        small = _chat_task(unpinned, "small")
        await _settle()
        await clock.advance(1.0)
        await clock.advance(1.0)
        assert small.done(), "key a idles while 'small' waits behind requests that avoid it"
        assert small.result().key_name == "a"


async def test_a_granted_waiter_does_not_send_on_a_key_disabled_before_it_resumed(
    reap: None,
) -> None:
    """Found by the machine: a waiter granted a slot, not yet resumed when another request's 401
    disabled the key in the same loop iteration, used to send on it anyway (fixed in fbf77a3)."""
    clock = FakeClock()
    answers = {"r0": "ok", "r1": "401"}
    engine = ClockEngine(
        clock,
        {A_KEY: 1.0, B_KEY: 1.0},
        replies=lambda key, rid: answers.get(rid, "ok") if key == A_KEY else "ok",
    )
    async with _mux(clock, engine, max_concurrent_requests=2) as mux:
        mux.add_openai_key("a", A_KEY)
        client = mux.get_openai_client()
        warm = _chat_task(client, "warm-up")  # past slow start: the key carries two at once
        await _settle()
        await clock.advance(1.0)
        assert warm.done()
        # r0 and r1 in flight on a; r2 waits. At t+1 both answer in the same loop iteration:
        # r0's success hands its slot to r2, then r1's 401 disables the key.
        tasks = [_chat_task(client, f"r{i}") for i in range(3)]
        await _settle()
        await clock.advance(1.0)
        await clock.advance(1.0)
        assert mux.get_usage_stats()["openai"]["a"]["status"] == "disabled"
        assert tasks[0].result().key_name == "a"
        assert isinstance(tasks[1].exception(), keymux.AuthenticationError)
        late = [s for s in engine.sends if s[1] == "r2"]
        assert not late, f"r2 was sent to the disabled key: {late}"
        assert isinstance(tasks[2].exception(), keymux.KeymuxError)  # no other key
