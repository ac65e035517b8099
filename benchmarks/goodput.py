"""Goodput benchmark: the pacer against the emulator's three rate models, as a matrix.

Every row: 4 keys, each allowed 20 requests per 1 s window (the emulator's ``--window``), fresh
keys registered for the row through ``POST /_emulator/keys`` with the row's ``rate_model`` and
``latency``, and as many callers as the keys have slots (keys x per-key concurrency), so the
concurrency, not the callers, is what bounds a row. The matrix is

    rate model {sliding, token-bucket, fixed} x per-key concurrency {1, 5, 16, 32}
    x latency {10-30 ms, 100-300 ms, 1 s} x {async, sync}
    x dialect {openai, groq, claude, gemini with rpm, gemini without}

* openai / claude: limits learned from the headers only (``x-ratelimit-*``,
  ``anthropic-ratelimit-*``);
* groq: the request headers describe the day (``rpd`` 1,000,000) and the tokens the window
  (``tpm`` 1,000,000): the per-window request limit is unreported;
* gemini with rpm: keymux is told ``rpm = 20 x 60`` (paced evenly); gemini without: nothing is
  told and Gemini sends no rate-limit headers.

Each row prints goodput (answered requests / wall seconds / (4 x 20 per s); a pacer can exceed
1.0, the first window's budget is there at time zero), 429s served (count and share of the
requests), failed, client CPU ms per request (``time.process_time()`` of this process, every
thread; the emulator runs in a subprocess), and whether the concurrency allows the capacity
(``keys x concurrency / mean latency >= 1.2 x the limit``): such a row PASSes with goodput >=
0.97, 429s <= 1% and no failure; the others only report ("info"). Requests per row:
``--windows`` (default 10: the issue's 800 requests at 64 in flight) windows' worth, and at
least ``--round-trips`` (default 40) mean latencies' worth (so that slow start's one round trip
and the last answer's, paid once a row, weigh 1/40 of a 1 s row, not 1/10), at what
the row can reach (``min(capacity, keys x concurrency / latency)``), at least 16; ``--held``
runs only the rows held to the targets. Rows of one process run one at a time; ``--modes``
and the other filters split the matrix, e.g. into an async and a sync process run side by
side (each its own emulator), which halves the wall time on 2 cores at some cost to the CPU
column's precision (CPU is per process, so the other run is not counted in it).

Three more scenarios: ``models`` (two models with different limits on the same keys: gpt-4o-mini
20 and gpt-4o 10 per window, two requests of the first to one of the second), ``tiers`` (2 free
keys at priority 0 and 2 paid at priority 1, requests offered open loop at 30/s, below the free
keys' 40/s, and at 60/s: the paid keys' share of the answers must be the overflow, 0 and 1/3,
within 0.03) and ``reference``
(the naive round-robin baseline and LiteLLM's Router, when importable, at 5 per key and
10-30 ms).

    python benchmarks/goodput.py              # the full matrix (about 25 minutes)
    python benchmarks/goodput.py --quick      # a few seconds, for the smoke test
    python benchmarks/goodput.py --models sliding --dialects openai gemini --modes async

LiteLLM is never installed into keymux's own environment; to get its row, run this script from a
separate venv (``python3 -m venv /tmp/benchvenv && /tmp/benchvenv/bin/pip install -e . litellm``).

The exit status is 0 whether or not the targets are met (1 only if the emulator would not start).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from _common import EmulatorProcess as _Emulator

from keymux import KeymuxError, Multiplexer

MESSAGES = [{"role": "user", "content": "Say hi."}]
MAX_TOKENS = 8
KEYS = 4
LIMIT = 20  # requests per window per key
WINDOW = 1.0

TARGET_GOODPUT = 0.97
TARGET_429_SHARE = 0.01
ALLOWS = 1.2  # keys x concurrency / latency >= this x the limit: the row is held to the targets

#: the tiers scenario: the first FREE keys are priority 0, the others priority 1 (paid)
FREE = 2
TIER_SLACK = 0.03  # the paid share may differ from the overflow by this much
TIER_OFFERS = (30.0, 60.0)  # requests per second offered: below and above the free keys' limit

RATE_MODELS = ("sliding", "token-bucket", "fixed")
CONCURRENCY = (1, 5, 16, 32)
LATENCIES = {"10-30ms": (0.010, 0.030), "100-300ms": (0.100, 0.300), "1s": (1.0, 1.0)}
MODES = ("async", "sync")
DIALECTS = ("openai", "groq", "claude", "gemini+rpm", "gemini")
#: dialect -> (provider, model, emulator limits, rpm keymux is told)
PLANS: dict[str, tuple[str, str, dict[str, Any], bool]] = {
    "openai": ("openai", "gpt-4o-mini", {"rpm": LIMIT}, False),
    "groq": (
        "groq",
        "llama-3.1-8b-instant",
        {"rpm": LIMIT, "rpd": 1_000_000, "tpm": 1_000_000},
        False,
    ),
    "claude": ("claude", "claude-sonnet-4-5", {"rpm": LIMIT}, False),
    "gemini+rpm": ("gemini", "gemini-2.5-flash", {"rpm": LIMIT}, True),
    "gemini": ("gemini", "gemini-2.5-flash", {"rpm": LIMIT}, False),
}


# --------------------------------------------------------------------------------------------
# the emulator, in a subprocess
# --------------------------------------------------------------------------------------------


class EmulatorProcess(_Emulator):
    """``keymux emulate`` on 127.0.0.1 in a child process, driven by its control endpoints."""

    #: a registered key keeps the emulator from accepting any key (a typo would be unlimited)
    SENTINEL = "sk-bench-sentinel-0000"

    def __init__(self, *, window: float) -> None:
        super().__init__("--window", repr(window), "--key", f"openai:{self.SENTINEL}")
        self._serial = itertools.count(1)
        # loopback only, never through a proxy from the environment
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _post(self, path: str, data: Any) -> Any:
        req = urllib.request.Request(
            self.root + path,
            data=json.dumps(data).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with self._opener.open(req, timeout=5) as resp:
            return json.loads(resp.read())

    def fresh_keys(
        self,
        provider: str,
        n: int,
        *,
        limits: dict[str, Any],
        rate_model: str,
        latency: tuple[float, float],
        models: dict[str, dict[str, int]] | None = None,
    ) -> list[str]:
        """Register ``n`` new keys for one row and return their secrets."""
        serial = next(self._serial)
        keys = [f"sk-bench-{serial:04d}-{i:02d}-{'x' * 24}" for i in range(n)]
        self._post(
            "/_emulator/keys",
            [
                {
                    "provider": provider,
                    "key": key,
                    "label": f"r{serial}k{i}",
                    "rate_model": rate_model,
                    "latency": list(latency),
                    "models": models or {},
                    **limits,
                }
                for i, key in enumerate(keys)
            ],
        )
        return keys

    def reset(self) -> None:
        self._post("/_emulator/reset", {})

    def totals(self) -> dict[str, Any]:
        return dict(self.get("/_emulator/stats")["total"])


# --------------------------------------------------------------------------------------------
# one row
# --------------------------------------------------------------------------------------------


@dataclass
class Spec:
    """What a row runs against."""

    provider: str
    base_url: str
    keys: list[str]
    models: list[str]  # requests cycle through these
    capacity: float  # requests per second the keys allow together
    rpm: float | None  # told to keymux per key
    requests: int
    concurrency: int  # per key
    callers: int


@dataclass
class Outcome:
    ok: int = 0
    failed: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def fail(self, exc: BaseException) -> None:
        self.failed += 1
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


@dataclass
class Row:
    label: str
    outcome: Outcome | None
    served_429: int = 0
    requests: int = 0
    capacity: float = 0.0
    allows: bool = True
    reference: bool = False  # a baseline, not keymux: no verdict
    note: str = ""
    cells: dict[str, str] = field(default_factory=dict)
    #: a tiers row: (the paid keys' share of the answers, the overflow's share of the offer)
    tiers: tuple[float, float] | None = None

    @property
    def goodput(self) -> float:
        o = self.outcome
        if o is None or o.wall <= 0 or self.capacity <= 0:
            return 0.0
        return o.ok / o.wall / self.capacity

    @property
    def share(self) -> float:
        return self.served_429 / self.requests if self.requests else 0.0

    def verdict(self) -> str:
        o = self.outcome
        if o is None:
            return "skipped"
        misses = []
        if self.goodput < TARGET_GOODPUT:
            misses.append("goodput")
        if self.served_429 > TARGET_429_SHARE * self.requests:
            misses.append("429s")
        if o.failed:
            misses.append("failures")
        if self.tiers is not None:
            paid, overflow = self.tiers
            if paid > overflow + TIER_SLACK:
                misses.append("paid share")
            if paid < overflow - TIER_SLACK:
                misses.append("overflow not carried")
        if self.reference:
            return "(ref) " + (",".join(misses) if misses else "meets targets")
        if not self.allows:
            return "info"
        return "PASS" if not misses else "MISS " + ",".join(misses)


class _Counter:
    """Hands out request numbers to workers (async tasks or threads) until M are taken."""

    def __init__(self, total: int) -> None:
        self._left = total
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True


async def naive_round_robin(spec: Spec, max_attempts: int = 20) -> Outcome:
    """What people write first: rotate keys; on 429 sleep retry-after, retry on the next key."""
    out = Outcome()
    url = spec.base_url + "/chat/completions"
    body = json.dumps({"model": REF_MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}).encode()
    rotation = itertools.count()
    keys = spec.keys
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        counter = _Counter(spec.requests)

        async def one() -> None:
            for _ in range(max_attempts):
                key = keys[next(rotation) % len(keys)]
                headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status == 200:
                        out.ok += 1
                        return
                    if resp.status != 429:
                        out.failed += 1
                        out.errors[f"HTTP {resp.status}"] = (
                            out.errors.get(f"HTTP {resp.status}", 0) + 1
                        )
                        return
                    await asyncio.sleep(float(resp.headers.get("retry-after", "1")))
            out.failed += 1
            out.errors["gave up"] = out.errors.get("gave up", 0) + 1

        async def worker() -> None:
            while counter.take():
                try:
                    await one()
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    out.fail(exc)

        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(spec.callers)))
        out.wall = time.perf_counter() - t0
        out.cpu = time.process_time() - c0
    return out


def litellm_available() -> bool:
    return importlib.util.find_spec("litellm") is not None


def _import_litellm() -> Any:
    # no network at import: the bundled model-cost map instead of fetching it from GitHub
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    # its HTTP clients read proxy settings from the environment: keep loopback direct
    no_proxy = os.environ.get("NO_PROXY", "")
    os.environ["NO_PROXY"] = ",".join(x for x in (no_proxy, "127.0.0.1", "localhost") if x)
    litellm: Any = importlib.import_module("litellm")
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.set_verbose = False
    return litellm


async def litellm_router(spec: Spec, routing_strategy: str = "simple-shuffle") -> Outcome:
    litellm = _import_litellm()
    Router = litellm.Router

    out = Outcome()
    model_list = []
    for key in spec.keys:
        params: dict[str, Any] = {
            "model": f"openai/{REF_MODEL}",
            "api_base": spec.base_url,
            "api_key": key,
        }
        if spec.rpm:
            params["rpm"] = int(spec.rpm)
        model_list.append({"model_name": "bench", "litellm_params": params})
    # warm up on the emulator's unlimited sentinel key: LiteLLM imports provider code and
    # builds its HTTP clients on the first call, which should not count against its row
    warm = Router(
        model_list=[
            {
                "model_name": "warm",
                "litellm_params": {
                    "model": f"openai/{REF_MODEL}",
                    "api_base": spec.base_url,
                    "api_key": EmulatorProcess.SENTINEL,
                },
            }
        ]
    )
    with contextlib.suppress(Exception):
        await warm.acompletion(model="warm", messages=MESSAGES, max_tokens=MAX_TOKENS)
    router = Router(
        model_list=model_list,
        routing_strategy=routing_strategy,
        num_retries=5,  # like keymux's max_retries
    )
    counter = _Counter(spec.requests)

    async def worker() -> None:
        while counter.take():
            try:
                await router.acompletion(model="bench", messages=MESSAGES, max_tokens=MAX_TOKENS)
                out.ok += 1
            except Exception as exc:
                out.fail(exc)

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(spec.callers)))
    out.wall = time.perf_counter() - t0
    out.cpu = time.process_time() - c0
    with contextlib.suppress(Exception):
        await litellm.close_litellm_async_clients()
    return out


def _mux(concurrency: int) -> Multiplexer:
    # the defaults a user gets (5 retries, 1 s first backoff), with the row's per-key slots
    return Multiplexer(seed=1, max_concurrent_requests=concurrency, queue_size=1000)


def _add_keys(mux: Multiplexer, spec: Spec) -> None:
    add = getattr(mux, f"add_{spec.provider}_key")
    for i, key in enumerate(spec.keys):
        add(f"key{i}", key, base_url=spec.base_url, rpm=spec.rpm)


async def keymux_async(spec: Spec) -> Outcome:
    out = Outcome()
    mux = _mux(spec.concurrency)
    async with mux:
        _add_keys(mux, spec)
        client = getattr(mux, f"get_{spec.provider}_client")(strategy="rate-aware")
        counter = _Counter(spec.requests)
        turn = itertools.count()

        async def worker() -> None:
            while counter.take():
                model = spec.models[next(turn) % len(spec.models)]
                try:
                    await client.acall(
                        "chat", messages=MESSAGES, model=model, max_tokens=MAX_TOKENS
                    )
                    out.ok += 1
                except KeymuxError as exc:
                    out.fail(exc)

        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(spec.callers)))
        out.wall = time.perf_counter() - t0
        out.cpu = time.process_time() - c0
    return out


def _send_sync(client: Any, model: str, out: Outcome, lock: threading.Lock) -> None:
    """One chat request from a thread, counted in ``out``."""
    try:
        client("chat", messages=MESSAGES, model=model, max_tokens=MAX_TOKENS)
        with lock:
            out.ok += 1
    except KeymuxError as exc:
        with lock:
            out.fail(exc)


def keymux_sync(spec: Spec) -> Outcome:
    out = Outcome()
    lock = threading.Lock()
    with _mux(spec.concurrency) as mux:
        _add_keys(mux, spec)
        client = getattr(mux, f"get_{spec.provider}_client")(strategy="rate-aware")
        counter = _Counter(spec.requests)
        turn = itertools.count()

        def worker() -> None:
            while counter.take():
                with lock:
                    model = spec.models[next(turn) % len(spec.models)]
                _send_sync(client, model, out, lock)

        with ThreadPoolExecutor(max_workers=spec.callers) as pool:
            # start the threads (and keymux's loop thread) before the clock starts
            list(pool.map(lambda _: None, range(spec.callers)))
            c0, t0 = time.process_time(), time.perf_counter()
            futures = [pool.submit(worker) for _ in range(spec.callers)]
            for f in futures:
                f.result()
            out.wall = time.perf_counter() - t0
            out.cpu = time.process_time() - c0
    return out


def _add_tiered_keys(mux: Multiplexer, spec: Spec) -> None:
    for i, key in enumerate(spec.keys):
        free = i < FREE
        mux.add_key(
            spec.provider,
            f"{'free' if free else 'paid'}{i}",
            key,
            base_url=spec.base_url,
            priority=0 if free else 1,
        )


def _paid_share(mux: Multiplexer, provider: str) -> float:
    stats = mux.get_usage_stats()[provider]
    total = sum(s["successes"] for s in stats.values())
    paid = sum(s["successes"] for name, s in stats.items() if name.startswith("paid"))
    return paid / total if total else 0.0


async def keymux_tiers_async(spec: Spec, offered: float) -> tuple[Outcome, float]:
    """Open loop: ``spec.requests`` requests started at ``offered`` per second, evenly."""
    out = Outcome()
    mux = _mux(spec.concurrency)
    async with mux:
        _add_tiered_keys(mux, spec)
        client = getattr(mux, f"get_{spec.provider}_client")(strategy="rate-aware")

        async def one() -> None:
            try:
                await client.acall(
                    "chat", messages=MESSAGES, model=spec.models[0], max_tokens=MAX_TOKENS
                )
                out.ok += 1
            except KeymuxError as exc:
                out.fail(exc)

        c0, t0 = time.process_time(), time.perf_counter()
        tasks = []
        for i in range(spec.requests):
            delay = t0 + i / offered - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        out.wall = time.perf_counter() - t0
        out.cpu = time.process_time() - c0
        return out, _paid_share(mux, spec.provider)


def keymux_tiers_sync(spec: Spec, offered: float) -> tuple[Outcome, float]:
    """``keymux_tiers_async`` from threads: one thread per request in flight."""
    out = Outcome()
    lock = threading.Lock()
    with _mux(spec.concurrency) as mux:
        _add_tiered_keys(mux, spec)
        client = getattr(mux, f"get_{spec.provider}_client")(strategy="rate-aware")

        def one() -> None:
            _send_sync(client, spec.models[0], out, lock)

        with ThreadPoolExecutor(max_workers=spec.callers) as pool:
            list(pool.map(lambda _: None, range(spec.callers)))
            c0, t0 = time.process_time(), time.perf_counter()
            futures = []
            for i in range(spec.requests):
                delay = t0 + i / offered - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(one))
            for f in futures:
                f.result()
            out.wall = time.perf_counter() - t0
            out.cpu = time.process_time() - c0
        return out, _paid_share(mux, spec.provider)


# --------------------------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------------------------

REF_MODEL = "gpt-4o-mini"


@dataclass
class RowPlan:
    label: str
    kind: str  # "async" | "sync" | "naive" | "litellm"
    dialect: str
    rate_model: str
    concurrency: int
    latency: tuple[float, float]
    two_models: bool = False
    offered: float = 0.0  # a tiers row: requests per second offered (open loop)

    def reach(self) -> float:
        """Requests per second the keys' slots allow at the mean latency."""
        mean = sum(self.latency) / 2 + 0.001
        return KEYS * self.concurrency / mean

    def capacity(self) -> float:
        if self.offered:
            return self.offered
        return KEYS * LIMIT * (1.5 if self.two_models else 1.0) / WINDOW

    def held(self) -> bool:
        """Whether the concurrency allows the capacity: the row is held to the targets."""
        return self.reach() >= ALLOWS * self.capacity()


@dataclass
class Scenario:
    name: str
    title: str
    rows: list[RowPlan]


def _label(dialect: str, model: str, conc: int, lat: str, mode: str) -> str:
    return f"{model} c={conc} {lat} {mode} {dialect}"


def build_scenarios(args: argparse.Namespace) -> list[Scenario]:
    out: list[Scenario] = []
    matrix = []
    for model in args.models:
        for conc in args.concurrency:
            for lat in args.latencies:
                for mode in args.modes:
                    for dialect in args.dialects:
                        plan = RowPlan(
                            _label(dialect, model, conc, lat, mode),
                            mode,
                            dialect,
                            model,
                            conc,
                            LATENCIES[lat],
                        )
                        if args.held and not plan.held():
                            continue
                        matrix.append(plan)
    if matrix:
        out.append(
            Scenario(
                "matrix",
                f"{KEYS} keys x {LIMIT} requests per {WINDOW:g} s window, limits per row as the "
                "dialect reports them",
                matrix,
            )
        )
    if "models" in args.scenarios:
        out.append(
            Scenario(
                "models",
                f"two models on the same {KEYS} keys: gpt-4o-mini {LIMIT} and gpt-4o "
                f"{LIMIT // 2} per window (learned), requests 2:1 as the limits",
                [
                    RowPlan(
                        f"{m} c=5 10-30ms {mode} openai two models",
                        mode,
                        "openai",
                        m,
                        5,
                        LATENCIES["10-30ms"],
                        two_models=True,
                    )
                    for m in args.models[:1]
                    for mode in args.modes
                ],
            )
        )
    if "tiers" in args.scenarios:
        out.append(
            Scenario(
                "tiers",
                f"priority tiers: {FREE} free keys (priority 0) and {KEYS - FREE} paid "
                f"(priority 1), {LIMIT} per window each, requests offered at a steady rate; the "
                f"paid keys' share of the answers must be the overflow past the free keys' "
                f"{FREE * LIMIT / WINDOW:g}/s (within {TIER_SLACK:g})",
                [
                    RowPlan(
                        f"{m} offered {offer:g}/s {mode} openai tiers",
                        f"tiers-{mode}",
                        "openai",
                        m,
                        16,
                        LATENCIES["10-30ms"],
                        offered=offer,
                    )
                    for m in args.models[:1]
                    for offer in TIER_OFFERS
                    for mode in args.modes
                ],
            )
        )
    if "reference" in args.scenarios:
        refs = [
            RowPlan(
                "naive round-robin + retry-after",
                "naive",
                "openai",
                "sliding",
                5,
                LATENCIES["10-30ms"],
            )
        ]
        if not args.no_litellm:
            refs.append(
                RowPlan(
                    "LiteLLM Router simple-shuffle",
                    "litellm",
                    "openai",
                    "sliding",
                    5,
                    LATENCIES["10-30ms"],
                )
            )
        refs.append(
            RowPlan(
                "keymux async (same scenario)",
                "async",
                "openai",
                "sliding",
                5,
                LATENCIES["10-30ms"],
            )
        )
        out.append(Scenario("reference", "baselines: sliding, 5 per key, 10-30 ms, openai", refs))
    return out


def requests_for(plan: RowPlan, args: argparse.Namespace) -> int:
    if args.requests is not None:
        return int(args.requests)
    if plan.offered:
        return max(16, round(plan.offered * args.tier_seconds))
    rate = min(plan.capacity(), plan.reach())
    mean = sum(plan.latency) / 2
    # at least --round-trips mean round trips long: slow start (one round trip before a fresh
    # key carries more than one request) and the last answer are paid once per row
    seconds = max(args.windows * WINDOW, args.round_trips * mean)
    return max(16, round(seconds * rate))


def run_row(emu: EmulatorProcess, plan: RowPlan, args: argparse.Namespace) -> Row:
    provider, model, limits, told = PLANS[plan.dialect]
    models: dict[str, dict[str, int]] | None = None
    names = [model]
    if plan.two_models:
        models = {"gpt-4o": {"rpm": LIMIT // 2}}
        # in proportion to the limits (2:1), so that both budgets can be spent in full: with
        # requests alternating 1:1 the callers wait on the smaller one, and 2 x 10 per window
        # is all the row could answer (0.67 of the capacity whatever the pacer)
        names = [model, model, "gpt-4o"]
    keys = emu.fresh_keys(
        provider,
        KEYS,
        limits=limits,
        rate_model=plan.rate_model,
        latency=plan.latency,
        models=models,
    )
    spec = Spec(
        provider=provider,
        base_url=emu.base_url(provider),
        keys=keys,
        models=names,
        capacity=plan.capacity(),
        rpm=LIMIT * 60.0 / WINDOW if told else None,
        requests=requests_for(plan, args),
        concurrency=plan.concurrency,
        callers=KEYS * plan.concurrency,
    )
    row = Row(
        plan.label,
        None,
        requests=spec.requests,
        capacity=spec.capacity,
        allows=plan.held(),
    )
    if plan.kind == "litellm" and not litellm_available():
        row.note = "litellm is not importable (pip install 'keymux[bench]' in a separate venv)"
        row.reference = True
        return row
    emu.reset()
    if plan.kind == "async":
        row.outcome = asyncio.run(keymux_async(spec))
    elif plan.kind == "sync":
        row.outcome = keymux_sync(spec)
    elif plan.kind in ("tiers-async", "tiers-sync"):
        if plan.kind == "tiers-async":
            row.outcome, paid = asyncio.run(keymux_tiers_async(spec, plan.offered))
        else:
            row.outcome, paid = keymux_tiers_sync(spec, plan.offered)
        overflow = max(0.0, plan.offered - FREE * LIMIT / WINDOW) / plan.offered
        row.tiers = (paid, overflow)

    elif plan.kind == "naive":
        row.reference = True
        row.outcome = asyncio.run(naive_round_robin(spec))
    elif plan.kind == "litellm":
        row.reference = True
        row.outcome = asyncio.run(litellm_router(spec))
    else:  # pragma: no cover
        raise ValueError(plan.kind)
    totals = emu.totals()
    row.served_429 = int(totals.get("rate_limited", 0))
    if row.outcome is not None and row.outcome.errors:
        row.note = ", ".join(f"{n} x{c}" for n, c in sorted(row.outcome.errors.items()))
    return row


# --------------------------------------------------------------------------------------------
# printing
# --------------------------------------------------------------------------------------------

HEADERS = ("row", "goodput", "ok", "429s", "failed", "CPU ms/req", "allows", "verdict")


def cells(row: Row) -> tuple[str, ...]:
    o = row.outcome
    if o is None:
        return (row.label, "-", "-", "-", "-", "-", "-", "skipped")
    return (
        row.label,
        f"{row.goodput:.3f}",
        str(o.ok),
        f"{row.served_429} ({100 * row.share:.1f}%)",
        str(o.failed),
        f"{1000.0 * o.cpu / row.requests:.3f}" if row.requests else "-",
        "yes" if row.allows else "no",
        row.verdict(),
    )


def render(scenario: Scenario, rows: Sequence[Row]) -> str:
    lines = ["", f"== {scenario.name}: {scenario.title} =="]
    table: list[tuple[str, ...]] = [HEADERS] + [cells(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
    for n, r in enumerate(table):
        out = [r[0].ljust(widths[0])] + [
            r[i].rjust(widths[i]) if i < len(HEADERS) - 1 else r[i].ljust(widths[i])
            for i in range(1, len(HEADERS))
        ]
        lines.append("  ".join(out).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        if row.tiers is not None:
            paid, overflow = row.tiers
            lines.append(
                f"  tiers: {row.label}: paid keys' share {paid:.3f}, overflow {overflow:.3f}"
            )
    for row in rows:
        if row.note:
            lines.append(f"  note: {row.label}: {row.note}")
    return "\n".join(lines)


def summary(rows: Sequence[Row]) -> str:
    held = [r for r in rows if r.allows and not r.reference and r.outcome is not None]
    passed = [r for r in held if r.verdict() == "PASS"]
    lines = [f"\nrows the concurrency allows: {len(held)}, PASS {len(passed)}"]
    for r in held:
        if r.verdict() != "PASS":
            lines.append(
                f"  MISS {r.label}: goodput {r.goodput:.3f}, 429s {r.served_429} "
                f"({100 * r.share:.1f}%), failed {r.outcome.failed if r.outcome else '-'}"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(RATE_MODELS), help="rate models")
    p.add_argument("--concurrency", nargs="+", type=int, default=list(CONCURRENCY))
    p.add_argument("--latencies", nargs="+", default=list(LATENCIES), help=" ".join(LATENCIES))
    p.add_argument("--modes", nargs="+", default=list(MODES), help="async sync")
    p.add_argument("--dialects", nargs="+", default=list(DIALECTS), help=" ".join(DIALECTS))
    p.add_argument(
        "--scenarios",
        nargs="*",
        default=["models", "tiers", "reference"],
        help="besides the matrix: models tiers reference",
    )
    p.add_argument(
        "--requests", type=int, default=None, help="requests per row (default: 10 windows' worth)"
    )
    p.add_argument(
        "--windows", type=float, default=10.0, help="windows' worth of requests per row (10)"
    )
    p.add_argument(
        "--round-trips",
        type=float,
        default=40.0,
        help="a row lasts at least this many mean round trips (40: a 1 s row is 40 s long)",
    )
    p.add_argument(
        "--held",
        action="store_true",
        help="only the matrix rows whose concurrency allows the capacity (held to the targets)",
    )
    p.add_argument(
        "--tier-seconds", type=float, default=10.0, help="seconds of each tiers row (10)"
    )
    p.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM row")
    p.add_argument("--quick", action="store_true", help="a few seconds: a small subset")
    p.add_argument("--progress", action="store_true", help="print each row as it finishes")
    p.add_argument("--json-out", default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.models = ["sliding"]
        args.concurrency = [5]
        args.latencies = ["10-30ms"]
        args.dialects = ["openai", "gemini"]
        args.windows = 1.5
        args.round_trips = 0.0
        args.scenarios = ["reference", "tiers"]
        args.tier_seconds = 1.5
    unknown = set(args.latencies) - set(LATENCIES)
    if unknown:
        p.error(f"unknown latencies: {', '.join(sorted(unknown))}")
    unknown = set(args.dialects) - set(DIALECTS)
    if unknown:
        p.error(f"unknown dialects: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = build_scenarios(args)
    print(
        "keymux goodput benchmark: emulator subprocess on 127.0.0.1; CPU is this process's "
        f"(client only). Targets where the concurrency allows the capacity: goodput >= "
        f"{TARGET_GOODPUT}, 429s <= {100 * TARGET_429_SHARE:g}% of requests, 0 failures."
    )
    if not litellm_available() and not args.no_litellm:
        print("LiteLLM: not importable here, its row is skipped (install the 'bench' extra).")
    emu = EmulatorProcess(window=WINDOW)
    try:
        emu.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    results: dict[str, list[dict[str, Any]]] = {}
    everything: list[Row] = []
    started = time.perf_counter()
    try:
        for scenario in scenarios:
            rows = []
            for plan in scenario.rows:
                row = run_row(emu, plan, args)
                rows.append(row)
                if args.progress:
                    print("  ".join(("done:", *cells(row))), flush=True)
            everything += rows
            print(render(scenario, rows), flush=True)
            results[scenario.name] = [
                {
                    "row": r.label,
                    "goodput": round(r.goodput, 4),
                    "ok": r.outcome.ok if r.outcome else None,
                    "failed": r.outcome.failed if r.outcome else None,
                    "served_429": r.served_429,
                    "requests": r.requests,
                    "cpu_ms_per_request": round(1000 * r.outcome.cpu / r.requests, 4)
                    if r.outcome
                    else None,
                    "wall_s": round(r.outcome.wall, 3) if r.outcome else None,
                    "allows": r.allows,
                    "verdict": r.verdict(),
                    "note": r.note,
                    "paid_share": round(r.tiers[0], 4) if r.tiers else None,
                    "overflow": round(r.tiers[1], 4) if r.tiers else None,
                }
                for r in rows
            ]
    finally:
        emu.stop()
    print(summary(everything))
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
