"""keymux at scale: lane choice as keys grow, 10,000 requests in flight, memory, a soak.

Four parts, each reported as a table (``--quick`` shrinks every one of them):

1. Lane choice (no HTTP): the dispatch path ``Dispatcher._choose_idle`` + ``_start`` + ``release``
   per request, driven directly with a stepped fake clock (20 µs of simulated time per
   request), for 10 / 100 / 1,000 keys whose lanes are in realistic states (about half the free
   slots busy, 10% of lanes full, 20% cooling, 5% disabled, every other key with a configured
   rpm budget that paces but never binds). Reported in µs per request for the round-robin and
   rate-aware strategies, with the growth exponent from 10 to 1,000 keys (1.0 = linear).
2. End to end: 10,000 requests submitted at once through ``acall`` over 10 and 1,000 keys
   (5 concurrent per key: at 1,000 keys 5,000 in flight + 5,000 queued) against
   ``keymux emulate`` in a subprocess; client CPU per request, throughput, peak in flight and
   queued as the core saw them; each beside plain aiohttp with as many in flight (a
   semaphore), whose client CPU grows with the number in flight too.
3. Memory per waiting request (no HTTP): every lane of 1,000 keys cooling, N ``acall`` tasks
   waiting in the queues; tracemalloc delta / N, with and without the cost of the caller's
   asyncio Task (a bare Task awaiting a future, measured in the same run).
4. Soak: 100,000 requests through the async API against the emulator subprocess (20 keys x 5
   in flight, 200 callers so ~100 wait in queues); RSS, peak RSS, allocated blocks and gc
   objects (quiet, after gc) after the warm-up and at the end. The warm-up is the first 10%
   and as many more as it takes for 70 s to pass: each key's send logs are bounded (a few
   hundred entries) but fill over their span (a minute and more) before they stay flat. Then
   more requests under tracemalloc: a settling phase (half of ``traced`` and on until 70 s
   have passed again), then the other half, whose "current" is compared at its start and its
   end. Tracing the whole soak would triple its CPU time, and tracemalloc's "current" first
   climbs while objects allocated before tracing (connection buffers, the send logs' entries
   of the last minute) are replaced by traced ones, without any real growth: a traced phase
   shorter than the logs' span shows that climb as a few bytes per request.

Targets (issue): lane choice under 20 µs per request at 1,000 keys and not growing linearly;
under 2 KB per waiting request; no memory growth across the soak. PASS/MISS is information
only; the exit status is 0.

    python benchmarks/scale.py           # full run (about 2 minutes on 2 cores)
    python benchmarks/scale.py --quick   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import json
import logging
import math
import random
import sys
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MESSAGES,
    MODEL,
    EmulatorProcess,
    cpu,
    machine,
    median,
    peak_rss_kib,
    raise_fd_limit,
    rss_kib,
    table,
    verdict,
)

import keymux
from keymux._clock import FakeClock
from keymux._config import Timeout
from keymux._lane import Request
from keymux._ratelimit import HISTORY_ENTRIES
from keymux._strategies import rate_aware, round_robin
from keymux._types import Prepared

CHOICE_TARGET_US = 20.0
WAIT_TARGET_BYTES = 2048
KEY_COUNTS = (10, 100, 1000)
PER_KEY = 5  # max_concurrent_requests
#: the soak's warm-up lasts at least this long: the per-key logs fill over their span first
SOAK_WARM_S = 70.0
DEAD_URL = "http://127.0.0.1:9/v1"  # never contacted: parts 1 and 3 send nothing
TIMINGS: dict[str, float] = {}  # seconds per part of the last run


def secret(i: int) -> str:
    return f"sk-bench-scale-{i:05d}-0123456789abcdef"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- 1. lane choice -------------------------------------------------------------------------


@dataclass
class Choice:
    keys: int
    us: dict[str, float] = field(default_factory=dict)
    queued: int = 0  # iterations where no lane could take the request at once


class StepClock:
    """Time that moves only when told (``step``), synchronously, firing due timers: the
    dispatch path runs without an event loop turning between requests."""

    class Handle:
        __slots__ = ("callback", "cancelled")

        def __init__(self, callback: Callable[[], None]) -> None:
            self.callback = callback
            self.cancelled = False

        def cancel(self) -> None:
            self.cancelled = True

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._timers: list[tuple[float, int, StepClock.Handle]] = []
        self._seq = 0

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.t + 1.7e9

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)

    def call_at(self, when: float, callback: Any) -> StepClock.Handle:
        handle = StepClock.Handle(callback)
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, handle))
        return handle

    def step(self, seconds: float) -> None:
        self.t += seconds
        timers = self._timers
        while timers and timers[0][0] <= self.t:
            handle = heapq.heappop(timers)[2]
            if not handle.cancelled:
                handle.callback()


def _states(core: Any, lanes: list[Any], rng: random.Random, now: float) -> None:
    """10% of lanes full, 20% cooling (for good), 5% disabled; the rest free."""
    quiet = logging.getLogger("keymux")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # disable() logs a warning per key
    try:
        for lane in rng.sample(lanes, len(lanes)):
            lane.answered, lane.cap = True, lane.max_concurrent  # past slow start
            r = rng.random()
            if r < 0.10:
                lane.in_flight = lane.max_concurrent  # busy with requests we never release
                lane.book.get(MODEL).in_flight = lane.max_concurrent
            elif r < 0.30:
                lane.cooldown_until = now + 1e9
            elif r < 0.35:
                core.disable(lane, "benchmark: revoked")
    finally:
        quiet.setLevel(level)


#: simulated time between two requests (50,000 requests/s over all keys)
STEP = 20e-6
#: a configured budget on every other key: paced by the GCRA, but never the binding limit
#: (one request per 10 µs per key, while requests come every STEP)
BUDGET_RPM = 6_000_000


async def choice_one(keys: int, iters: int, strategy: Callable[..., Any], seed: int) -> Choice:
    clock = StepClock()
    mux = keymux.Multiplexer(max_concurrent_requests=PER_KEY, clock=clock, seed=seed)
    for i in range(keys):
        rpm = BUDGET_RPM if i % 2 else None
        mux.add_openai_key(f"k{i}", secret(i), base_url=DEAD_URL, rpm=rpm)
    core = mux._core
    dispatch = core.dispatch
    ps = dispatch.providers["openai"]
    rng = random.Random(seed)
    _states(core, list(ps.order), rng, clock.now())
    now = clock.now()
    usable = sum(
        lane.max_concurrent - lane.in_flight
        for lane in ps.order
        if lane.enabled and lane.ready_at(now, MODEL, 0) <= now
    )
    depth = max(1, usable // 2)  # about half the free slots stay busy
    req = Request(
        provider="openai",
        endpoint="chat",
        prepared=Prepared("POST", "/chat/completions", {}, b"{}", MODEL, "Authorization"),
        timeout=Timeout(),
        strategy=strategy,
        scope=MODEL,
    )
    choose, start, release = dispatch._choose_idle, dispatch._start, dispatch.release
    step = clock.step
    busy: deque[Any] = deque()
    queued = 0
    # warm-up: fill to the steady depth, let stale lanes leave the idle set
    for _ in range(depth):
        step(STEP)
        lane = choose(ps, req, clock.t)
        if lane is None:
            break
        start(lane, req, clock.t)
        busy.append(lane)
    t0 = time.perf_counter_ns()
    for _ in range(iters):
        step(STEP)
        now = clock.t
        lane = choose(ps, req, now)
        if lane is None:
            queued += 1
        else:
            start(lane, req, now)
            busy.append(lane)
        release(busy.popleft(), req)
    elapsed = time.perf_counter_ns() - t0
    while busy:
        release(busy.popleft(), req)
    await mux.aclose()
    out = Choice(keys)
    out.us[strategy.__name__] = elapsed / iters / 1e3
    out.queued = queued
    return out


async def part_choice(key_counts: Sequence[int], iters: int, repeats: int) -> list[Choice]:
    results = []
    for keys in key_counts:
        row = Choice(keys)
        for strategy in (round_robin, rate_aware):
            runs = [await choice_one(keys, iters, strategy, seed=rep) for rep in range(repeats)]
            row.us[strategy.__name__] = median(r.us[strategy.__name__] for r in runs)
            row.queued += sum(r.queued for r in runs)
        results.append(row)
        log(
            f"  lane choice, {keys:>5} keys: "
            + ", ".join(f"{k} {v:.2f} µs" for k, v in row.us.items())
        )
    return results


def growth_exponent(small: tuple[int, float], large: tuple[int, float]) -> float:
    """b in t ~ keys**b between two key counts (1 = linear, 0 = flat)."""
    (k0, t0), (k1, t1) = small, large
    if t0 <= 0 or t1 <= 0 or k1 == k0:
        return float("nan")
    return math.log(t1 / t0) / math.log(k1 / k0)


def report_choice(rows: list[Choice], iters: int) -> str:
    names = list(rows[0].us)
    body = [[r.keys, *(r.us[n] for n in names)] for r in rows]
    lines = [
        table(
            ["keys", *(f"{n} µs/req" for n in names)],
            body,
            title=(
                f"1. lane choice (_choose_idle + _start + release, no HTTP): {iters:,} "
                "requests per run, median of runs; ~half the free slots busy, 10% lanes full, "
                "20% cooling, 5% disabled, every other key paced by an rpm budget"
            ),
        )
    ]
    first, last = rows[0], rows[-1]
    queued = sum(r.queued for r in rows)
    if queued:
        lines.append(f"     ({queued:,} requests found no lane free at once and were not timed)")
    for n in names:
        b = growth_exponent((first.keys, first.us[n]), (last.keys, last.us[n]))
        ratio = last.us[n] / first.us[n]
        ok = last.us[n] < CHOICE_TARGET_US and b < 0.5
        lines.append(
            f"{verdict(ok)}  {n}: {last.us[n]:.2f} µs/req at {last.keys:,} keys "
            f"(target < {CHOICE_TARGET_US:g} µs); {first.keys:,} -> {last.keys:,} keys: "
            f"x{ratio:.2f} for x{last.keys // first.keys} keys, growth exponent {b:.2f} "
            f"({'sublinear' if b < 0.5 else 'NOT sublinear'}; 1.0 = linear)"
        )
    return "\n".join(lines)


# --- 2. end to end, 10,000 in flight --------------------------------------------------------


@dataclass
class E2E:
    keys: int  # 0: the plain aiohttp baseline
    requests: int
    in_flight: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    server_s: float = 0.0
    peak_in_flight: int = 0
    peak_waiting: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def us_per_request(self) -> float:
        return self.cpu_s / self.requests * 1e6


def _count_error(errors: dict[str, int], exc: BaseException) -> None:
    name = type(exc).__name__
    errors[name] = errors.get(name, 0) + 1


async def e2e_keymux(emu: EmulatorProcess, keys: int, requests: int) -> E2E:
    slots = keys * PER_KEY
    queue_size = max(10, 2 * math.ceil(max(0, requests - slots) / keys))
    mux = keymux.Multiplexer(
        max_concurrent_requests=PER_KEY, queue_size=queue_size, timeout=120.0, max_retries=2
    )
    out = E2E(keys, requests, slots)
    async with mux:
        for i in range(keys):
            mux.add_openai_key(f"k{i}", secret(i), base_url=emu.base_url("openai"))
        client = mux.get_openai_client()
        lanes = list(mux._core.dispatch.providers["openai"].order)
        # open the connections first (a pool as after some use); not measured
        await asyncio.gather(
            *(client.acall("chat", messages=MESSAGES, model=MODEL) for _ in range(slots))
        )
        stop = asyncio.Event()

        def sample() -> None:
            out.peak_in_flight = max(out.peak_in_flight, sum(lane.in_flight for lane in lanes))
            out.peak_waiting = max(out.peak_waiting, sum(lane.n_waiting for lane in lanes))

        async def monitor() -> None:
            while not stop.is_set():
                sample()
                await asyncio.sleep(0.02)

        async def one() -> None:
            try:
                resp = await client.acall("chat", messages=MESSAGES, model=MODEL)
                if not resp.text:
                    raise RuntimeError("empty answer")
            except Exception as exc:
                _count_error(out.errors, exc)

        watcher = asyncio.create_task(monitor())
        s0, c0, t0 = emu.cpu_seconds(), cpu(), time.perf_counter()
        tasks = [asyncio.create_task(one()) for _ in range(requests)]
        await asyncio.sleep(0)  # every task has run up to its first wait: all accepted
        sample()
        await asyncio.gather(*tasks)
        out.wall_s, out.cpu_s = time.perf_counter() - t0, cpu() - c0
        out.server_s = emu.cpu_seconds() - s0
        stop.set()
        await watcher
    return out


async def e2e_aiohttp(emu: EmulatorProcess, in_flight: int, requests: int) -> E2E:
    """The baseline: one plain ClientSession, the same requests, a semaphore of ``in_flight``,
    a key per request from as many keys as keymux has."""
    import aiohttp

    out = E2E(0, requests, in_flight)
    url = emu.base_url("openai") + "/chat/completions"
    payload = {"model": MODEL, "messages": MESSAGES}
    headers = [{"Authorization": f"Bearer {secret(i)}"} for i in range(in_flight // PER_KEY)]
    sem = asyncio.Semaphore(in_flight)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(120)
    ) as session:
        active = 0

        async def one(i: int) -> None:
            nonlocal active
            async with sem:
                active += 1
                out.peak_in_flight = max(out.peak_in_flight, active)
                try:
                    async with session.post(
                        url, json=payload, headers=headers[i % len(headers)]
                    ) as resp:
                        body = await resp.read()
                        if resp.status != 200:
                            raise RuntimeError(f"HTTP {resp.status}")
                    if not json.loads(body)["choices"][0]["message"]["content"]:
                        raise RuntimeError("empty answer")
                except Exception as exc:
                    _count_error(out.errors, exc)
                finally:
                    active -= 1

        await asyncio.gather(*(one(i) for i in range(in_flight)))  # open the connections
        out.peak_in_flight = 0
        s0, c0, t0 = emu.cpu_seconds(), cpu(), time.perf_counter()
        tasks = [asyncio.create_task(one(i)) for i in range(requests)]
        await asyncio.sleep(0)
        out.peak_waiting = requests - in_flight
        await asyncio.gather(*tasks)
        out.wall_s, out.cpu_s = time.perf_counter() - t0, cpu() - c0
        out.server_s = emu.cpu_seconds() - s0
    return out


def report_e2e(pairs: list[tuple[E2E, E2E]]) -> str:
    body = []
    for km, base in pairs:
        for r in (base, km):
            body.append(
                [
                    f"keymux, {r.keys:,} keys" if r.keys else "aiohttp (baseline)",
                    r.requests,
                    r.peak_in_flight,
                    r.peak_waiting,
                    r.wall_s,
                    r.requests / r.wall_s,
                    r.us_per_request,
                    f"{r.us_per_request / base.us_per_request:.2f}x",
                    r.server_s / r.requests * 1e6,
                    ", ".join(f"{k} {v}" for k, v in r.errors.items()) or "none",
                ]
            )
    lines = [
        table(
            [
                "client",
                "requests",
                "peak in flight",
                "peak queued",
                "wall s",
                "req/s",
                "client CPU µs/req",
                "ratio",
                "server CPU µs/req",
                "errors",
            ],
            body,
            title=(
                f"2. end to end: every request submitted at once, {PER_KEY} in flight per key "
                "(aiohttp: a semaphore of as many), against keymux emulate (separate process); "
                "ratio = client CPU to plain aiohttp at the same number in flight"
            ),
        )
    ]
    first = pairs[0][0]
    for km, _ in pairs[1:]:
        lines.append(
            f"     keymux client CPU per request at {km.keys:,} keys ({km.in_flight:,} in "
            f"flight): {km.us_per_request / first.us_per_request:.2f}x that at {first.keys:,} "
            f"keys ({first.in_flight:,} in flight); plain aiohttp: "
            f"{pairs[-1][1].us_per_request / pairs[0][1].us_per_request:.2f}x"
        )
    return "\n".join(lines)


# --- 3. memory per waiting request ----------------------------------------------------------


@dataclass
class Waiting:
    keys: int
    n: int
    with_task: float = 0.0
    bare_task: float = 0.0
    peak_rss_delta_kib: int = 0

    @property
    def without_task(self) -> float:
        return self.with_task - self.bare_task


async def _settle(until: Callable[[], bool], rounds: int = 200) -> None:
    for _ in range(rounds):
        if until():
            return
        await asyncio.sleep(0)
    raise RuntimeError("the waiting requests did not all reach their queues")


async def part_waiting(keys: int, n: int) -> Waiting:
    clock = FakeClock()
    queue_size = 2 * math.ceil(n / keys) + 2
    mux = keymux.Multiplexer(max_concurrent_requests=PER_KEY, queue_size=queue_size, clock=clock)
    out = Waiting(keys, n)
    await mux.__aenter__()
    try:
        for i in range(keys):
            mux.add_openai_key(f"k{i}", secret(i), base_url=DEAD_URL)
        lanes = list(mux._core.dispatch.providers["openai"].order)
        for lane in lanes:
            lane.cooldown_until = clock.now() + 1e9  # nothing may be sent: every request waits
        client = mux.get_openai_client()

        def waiting() -> int:
            return sum(lane.n_waiting for lane in lanes)

        # warm-up: lane timers, queues' first blocks, code paths
        warm = [asyncio.create_task(client.acall("chat", messages=MESSAGES)) for _ in range(keys)]
        await _settle(lambda: waiting() == keys)

        gc.collect()
        rss0 = rss_kib()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tasks = [asyncio.create_task(client.acall("chat", messages=MESSAGES)) for _ in range(n)]
        await _settle(lambda: waiting() == keys + n)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        out.with_task = (after - before) / n
        out.peak_rss_delta_kib = rss_kib() - rss0

        # the caller's own cost: a bare Task awaiting a future
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def bare(f: asyncio.Future[None]) -> None:
            await f

        before = tracemalloc.get_traced_memory()[0]
        bare_tasks = [asyncio.create_task(bare(fut)) for _ in range(n)]
        await asyncio.sleep(0)
        gc.collect()
        out.bare_task = (tracemalloc.get_traced_memory()[0] - before) / n
        tracemalloc.stop()
        fut.set_result(None)
        await asyncio.gather(*bare_tasks)
        for t in (*warm, *tasks):
            t.cancel()
        await asyncio.gather(*warm, *tasks, return_exceptions=True)
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        await mux.aclose()
    return out


def report_waiting(w: Waiting) -> str:
    rows = [
        ["waiting acall task, keymux + asyncio Task", w.with_task],
        ["bare asyncio Task awaiting a future (caller's)", w.bare_task],
        ["keymux per waiting request (difference)", w.without_task],
    ]
    lines = [
        table(
            ["what", "bytes per waiting request"],
            rows,
            title=(
                f"3. memory per waiting request: {w.n:,} acall tasks waiting on {w.keys:,} keys "
                "(every lane cooling), tracemalloc after gc"
            ),
        ),
        f"     RSS grew {w.peak_rss_delta_kib:,} KiB for {w.n:,} waiting requests "
        "(includes tracemalloc's own bookkeeping)",
        f"{verdict(w.without_task < WAIT_TARGET_BYTES)}  {w.without_task:,.0f} bytes per waiting "
        f"request without the caller's Task ({w.with_task:,.0f} with it); target < "
        f"{WAIT_TARGET_BYTES:,} bytes",
    ]
    return "\n".join(lines)


# --- 4. soak --------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    label: str
    done: int
    rss: int
    hwm: int
    blocks: int
    objects: int
    traced: int | None = None


@dataclass
class Soak:
    requests: int
    traced_requests: int
    keys: int
    callers: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    points: list[Checkpoint] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    done: int = 0
    measured: int = 0  # the requests after the warm-up (wall_s and cpu_s are theirs)

    def point(self, label: str) -> Checkpoint:
        return next(p for p in self.points if p.label == label)


def _checkpoint(label: str, done: int) -> Checkpoint:
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
    return Checkpoint(
        label,
        done,
        rss=rss_kib(),
        hwm=peak_rss_kib(),
        blocks=sys.getallocatedblocks(),
        objects=len(gc.get_objects()),
        traced=traced,
    )


async def part_soak(
    emu: EmulatorProcess,
    requests: int,
    traced_requests: int,
    keys: int,
    callers: int,
    warm_s: float = 0.0,
) -> Soak:
    """``requests`` untraced (RSS, allocated blocks, gc objects after 10% and at the end), then
    ``traced_requests`` more under tracemalloc (current after half of them and at their end):
    tracing the whole soak would triple its CPU time."""
    out = Soak(requests, traced_requests, keys, callers)
    mux = keymux.Multiplexer(max_concurrent_requests=PER_KEY, queue_size=100, timeout=60.0)
    async with mux:
        for i in range(keys):
            mux.add_openai_key(f"k{i}", secret(i), base_url=emu.base_url("openai"))
        client = mux.get_openai_client()

        async def phase(count: int) -> None:
            """``count`` requests from ``callers`` concurrent callers; quiet at the end."""
            remaining = count

            async def caller() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    try:
                        resp = await client.acall("chat", messages=MESSAGES, model=MODEL)
                        if not resp.text:
                            raise RuntimeError("empty answer")
                    except Exception as exc:
                        name = type(exc).__name__
                        out.errors[name] = out.errors.get(name, 0) + 1
                    out.done += 1

            await asyncio.gather(*(caller() for _ in range(min(callers, count))))

        def mark(label: str) -> None:
            point = _checkpoint(label, out.done)
            out.points.append(point)
            traced = "" if point.traced is None else f", traced {point.traced / 1024:,.0f} KiB"
            log(f"  soak {label}: {point.done:,} done, RSS {point.rss:,} KiB{traced}")

        warm = max(1, requests // 10)
        started = time.perf_counter()
        await phase(warm)
        # and on until every per-key log and history has spanned its window once: they are
        # bounded, but fill for that long (up to HISTORY_SPAN) before they stay flat
        while time.perf_counter() - started < warm_s:
            await phase(5_000)
        mark("after warm-up")
        c0, t0 = cpu(), time.perf_counter()
        await phase(requests - warm)
        out.wall_s, out.cpu_s = time.perf_counter() - t0, cpu() - c0
        out.measured = requests - warm
        mark("end")
        if traced_requests:
            # until every connection has been used a few times, tracemalloc's "current" grows
            # as untraced buffers are replaced by traced ones without any real growth
            # and so must every per-key log: its entries from before tracing expire over its
            # span (a minute), so the traced settling lasts as long as the warm-up did
            settle = max(1, traced_requests // 2)
            tracemalloc.start()
            try:
                traced_from = time.perf_counter()
                await phase(settle)
                while time.perf_counter() - traced_from < warm_s:
                    await phase(5_000)
                mark("traced, settled")
                await phase(traced_requests - settle)
                mark(f"traced +{traced_requests - settle:,}")
            finally:
                tracemalloc.stop()
    return out


def report_soak(s: Soak) -> str:
    first, end = s.points[0], s.points[1]
    rows: list[list[Any]] = [
        [
            p.label,
            p.done,
            p.rss,
            p.hwm,
            p.blocks,
            p.objects,
            "-" if p.traced is None else p.traced / 1024,
        ]
        for p in s.points
    ]
    rows.insert(
        2,
        [
            "growth after warm-up",
            end.done - first.done,
            end.rss - first.rss,
            end.hwm - first.hwm,
            end.blocks - first.blocks,
            end.objects - first.objects,
            "-",
        ],
    )
    hwm_growth = end.hwm - first.hwm
    block_growth = end.blocks - first.blocks
    later = end.done - first.done
    ok_rss = hwm_growth <= max(2048, first.hwm // 50)
    ok_blocks = block_growth <= max(1000, first.blocks // 100)
    lines = [
        table(
            [
                "checkpoint",
                "requests done",
                "RSS KiB",
                "peak RSS KiB",
                "allocated blocks",
                "gc objects",
                "tracemalloc KiB",
            ],
            rows,
            title=(
                f"4. soak: {s.requests:,} requests through acall ({s.keys} keys x {PER_KEY} in "
                f"flight, {s.callers:,} callers) against keymux emulate, then "
                f"{s.points[-1].done - end.done:,} more under tracemalloc; measured quiet, "
                "after gc"
            ),
        ),
        f"     {s.measured / s.wall_s:,.0f} req/s, client CPU "
        f"{s.cpu_s / s.measured * 1e6:,.0f} µs/req (after the warm-up, untraced); errors: "
        + (", ".join(f"{k} {v}" for k, v in s.errors.items()) or "none"),
    ]
    ok_traced = True
    if len(s.points) >= 4:
        a, b = s.points[2], s.points[3]
        assert a.traced is not None
        assert b.traced is not None
        span = b.done - a.done
        growth = b.traced - a.traced
        ok_traced = growth <= max(65536, span)
        lines.append(
            f"     tracemalloc: {growth / 1024:+,.1f} KiB over the last {span:,} traced "
            f"requests ({growth / span:+.2f} bytes/request)"
        )
    lines.append(
        f"{verdict(ok_rss and ok_blocks and ok_traced)}  memory across the soak: peak RSS "
        f"{hwm_growth:+,} KiB and {block_growth:+,} allocated blocks over {later:,} requests "
        "after warm-up (flat = peak RSS within max(2 MiB, 2%), blocks within max(1,000, 1%), "
        "tracemalloc within max(64 KiB, 1 byte/request))"
    )
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a fast smoke run")
    p.add_argument(
        "--parts",
        nargs="+",
        choices=("choice", "e2e", "waiting", "soak"),
        default=["choice", "e2e", "waiting", "soak"],
    )
    p.add_argument("--soak-requests", type=int, default=None, help="soak size (100,000)")
    p.add_argument("--e2e-requests", type=int, default=None, help="requests in flight (10,000)")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> list[str]:
    """The report's sections in part order. The soak runs first after the lane-choice part, so
    that no earlier part (5,000 connections, 10,000 traced waiting tasks) has already set the
    process's peak RSS, which the soak compares."""
    quick = args.quick
    out: dict[int, str] = {}
    TIMINGS.clear()
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        TIMINGS[name] = now - clock
        clock = now

    if "choice" in args.parts:
        iters, repeats = (3_000, 1) if quick else (10_000, 3)
        out[1] = report_choice(await part_choice(KEY_COUNTS, iters, repeats), iters)
        lap("lane choice")
    if {"e2e", "soak"} & set(args.parts):
        raise_fd_limit(20_000)  # 5,000 connections, each end a descriptor; the child inherits
        with EmulatorProcess() as emu:
            log(f"emulator on {emu.root}")
            if "soak" in args.parts:
                requests = args.soak_requests or (1_000 if quick else 100_000)
                keys, callers = (4, 40) if quick else (20, 200)
                # long enough for every connection to be used several times while traced, and
                # for the first half to turn each key's request history over (its entries from
                # before tracing are replaced by traced ones: "current" climbs until then)
                traced = max(requests // 20, 10 * keys * PER_KEY, 4 * keys * HISTORY_ENTRIES)
                soak = await part_soak(
                    emu,
                    requests,
                    traced,
                    keys=keys,
                    callers=callers,
                    warm_s=0.0 if quick else SOAK_WARM_S,
                )
                out[4] = report_soak(soak)
                lap("soak")
            if "e2e" in args.parts:
                requests = args.e2e_requests or (300 if quick else 10_000)
                pairs = []
                for keys in (4, 40) if quick else (10, 1000):
                    km = await e2e_keymux(emu, keys, requests)
                    base = await e2e_aiohttp(emu, keys * PER_KEY, requests)
                    log(
                        f"  e2e {keys:>5} keys: {km.wall_s:.1f} s, {km.peak_in_flight} in "
                        f"flight; aiohttp {base.wall_s:.1f} s"
                    )
                    pairs.append((km, base))
                out[2] = report_e2e(pairs)
                lap("end to end")
    if "waiting" in args.parts:
        keys, n = (100, 1_000) if quick else (1_000, 10_000)
        out[3] = report_waiting(await part_waiting(keys, n))
        lap("waiting")
    return [out[k] for k in sorted(out)]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    where = machine()
    t0 = time.perf_counter()
    sections = asyncio.run(run(args))
    print("\n\n".join(sections))
    parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in TIMINGS.items())
    print(f"\n(total {time.perf_counter() - t0:.0f} s: {parts}; emulator start included; {where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
