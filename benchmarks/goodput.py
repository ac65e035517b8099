"""Goodput benchmark: K keys, each allowed R requests per window, M requests at concurrency C.

The emulator (``keymux emulate``) runs in a subprocess on 127.0.0.1, so the client CPU measured
here (``time.process_time()`` of this process, every thread) is the client's alone. Each row gets
fresh emulator keys (registered through ``POST /_emulator/keys``), so no row inherits a window
another row half spent; the emulator's counters are zeroed (``POST /_emulator/reset``) before a
row and read (``GET /_emulator/stats``) after it.

Rows: keymux async (``acall``) per strategy, keymux sync (``client(...)`` from C threads), a naive
round-robin baseline (aiohttp, rotate keys, on 429 sleep ``retry-after`` and retry on the next
key), and LiteLLM's Router when ``litellm`` is importable (the optional ``bench`` extra).

Scenarios:

* ``configured``: keymux is told each key's budget (``rpm = R * 60 / window``: keymux's rpm is
  per minute and paced evenly, so that is exactly R per window);
* ``learned``: keymux is told nothing and learns the limits from the response headers
  (OpenAI's ``x-ratelimit-{limit,remaining,reset}-requests``, on every answer);
* ``mixed``: one key has 4R per window, the others R (configured and learned).

Goodput ratio = successful requests / elapsed seconds / (sum of the keys' R / window). A perfect
pacer can exceed 1.0: the first window's budget is there at time zero.

Targets (from the issue): goodput >= 0.95, 429s served <= 2% of requests, zero failures.

    python benchmarks/goodput.py              # full run (about 2-3 minutes)
    python benchmarks/goodput.py --quick      # a few seconds, for the smoke test
    python benchmarks/goodput.py --scenarios configured --rows "keymux async"

LiteLLM is never installed into keymux's own environment; to get its row, run this script from a
separate venv (``python3 -m venv /tmp/benchvenv && /tmp/benchvenv/bin/pip install -e . litellm``).
Its first call (lazy imports, client setup) is made on an unlimited key before the clock starts.

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

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hi."}]
MAX_TOKENS = 8

TARGET_GOODPUT = 0.95
TARGET_429_SHARE = 0.02

#: row kinds, in the order they print
KEYMUX_STRATEGIES = ("round-robin", "least-loaded", "rate-aware")


# --------------------------------------------------------------------------------------------
# the emulator, in a subprocess
# --------------------------------------------------------------------------------------------


class EmulatorProcess(_Emulator):
    """``keymux emulate`` on 127.0.0.1 in a child process, driven by its control endpoints."""

    #: a registered key keeps the emulator from accepting any key (a typo would be unlimited)
    SENTINEL = "sk-bench-sentinel-0000"

    def __init__(self, *, window: float, latency: float) -> None:
        super().__init__(
            "--window",
            repr(window),
            "--latency",
            repr(latency),
            "--key",
            f"openai:{self.SENTINEL}",
        )
        self._serial = itertools.count(1)
        # loopback only, never through a proxy from the environment
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def openai_base(self) -> str:
        return self.base_url("openai")

    def _get(self, path: str, timeout: float = 5.0) -> Any:
        return self.get(path, timeout=timeout)

    def _post(self, path: str, data: Any) -> Any:
        req = urllib.request.Request(
            self.root + path,
            data=json.dumps(data).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with self._opener.open(req, timeout=5) as resp:
            return json.loads(resp.read())

    def fresh_keys(self, limits: Sequence[int]) -> list[str]:
        """Register one new key per limit (R per window) and return their secrets."""
        serial = next(self._serial)
        keys = [f"sk-bench-{serial:03d}-{i:02d}-{'x' * 24}" for i in range(len(limits))]
        self._post(
            "/_emulator/keys",
            [
                {"provider": "openai", "key": key, "rpm": int(limit), "label": f"r{serial}k{i}"}
                for i, (key, limit) in enumerate(zip(keys, limits, strict=True))
            ],
        )
        return keys

    def reset(self) -> None:
        self._post("/_emulator/reset", {})

    def totals(self) -> dict[str, Any]:
        return dict(self._get("/_emulator/stats")["total"])


# --------------------------------------------------------------------------------------------
# one row
# --------------------------------------------------------------------------------------------


@dataclass
class Spec:
    """What a row runs against."""

    base_url: str
    keys: list[str]
    limits: list[int]  # requests per window, per key
    window: float
    configured: bool  # tell the client the limits (keymux rpm=)
    requests: int
    concurrency: int

    @property
    def capacity(self) -> float:
        """Requests per second the keys allow together."""
        return sum(self.limits) / self.window


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
    reference: bool = False  # a baseline, not keymux: no verdict
    note: str = ""

    @property
    def goodput(self) -> float:
        o = self.outcome
        if o is None or o.wall <= 0 or self.capacity <= 0:
            return 0.0
        return o.ok / o.wall / self.capacity

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
        if not misses:
            return "PASS" + (" (ref)" if self.reference else "")
        return ("MISS " if not self.reference else "(ref) miss ") + ",".join(misses)


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


def _mux() -> Multiplexer:
    # the defaults a user gets (5 in flight per key, 5 retries, 1 s first backoff)
    return Multiplexer(seed=1)


def _add_keys(mux: Multiplexer, spec: Spec) -> None:
    for i, (key, limit) in enumerate(zip(spec.keys, spec.limits, strict=True)):
        rpm = limit * 60.0 / spec.window if spec.configured else None
        mux.add_openai_key(f"key{i}", key, base_url=spec.base_url, rpm=rpm)


async def keymux_async(spec: Spec, strategy: str) -> Outcome:
    out = Outcome()
    mux = _mux()
    async with mux:
        _add_keys(mux, spec)
        client = mux.get_openai_client(strategy=strategy)
        counter = _Counter(spec.requests)

        async def worker() -> None:
            while counter.take():
                try:
                    await client.acall(
                        "chat", messages=MESSAGES, model=MODEL, max_tokens=MAX_TOKENS
                    )
                    out.ok += 1
                except KeymuxError as exc:
                    out.fail(exc)

        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
        out.wall = time.perf_counter() - t0
        out.cpu = time.process_time() - c0
    return out


def keymux_sync(spec: Spec, strategy: str) -> Outcome:
    out = Outcome()
    lock = threading.Lock()
    with _mux() as mux:
        _add_keys(mux, spec)
        client = mux.get_openai_client(strategy=strategy)
        counter = _Counter(spec.requests)

        def worker() -> None:
            while counter.take():
                try:
                    client("chat", messages=MESSAGES, model=MODEL, max_tokens=MAX_TOKENS)
                    with lock:
                        out.ok += 1
                except KeymuxError as exc:
                    with lock:
                        out.fail(exc)

        with ThreadPoolExecutor(max_workers=spec.concurrency) as pool:
            # start the threads (and keymux's loop thread) before the clock starts
            list(pool.map(lambda _: None, range(spec.concurrency)))
            c0, t0 = time.process_time(), time.perf_counter()
            futures = [pool.submit(worker) for _ in range(spec.concurrency)]
            for f in futures:
                f.result()
            out.wall = time.perf_counter() - t0
            out.cpu = time.process_time() - c0
    return out


async def naive_round_robin(spec: Spec, max_attempts: int = 20) -> Outcome:
    """What people write first: rotate keys; on 429 sleep retry-after, retry on the next key."""
    out = Outcome()
    url = spec.base_url + "/chat/completions"
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}).encode()
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
        await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
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
    for key, limit in zip(spec.keys, spec.limits, strict=True):
        params: dict[str, Any] = {
            "model": f"openai/{MODEL}",
            "api_base": spec.base_url,
            "api_key": key,
        }
        if spec.configured:
            params["rpm"] = int(limit * 60 / spec.window)
        model_list.append({"model_name": "bench", "litellm_params": params})
    # warm up on the emulator's unlimited sentinel key: LiteLLM imports provider code and
    # builds its HTTP clients on the first call, which should not count against its row
    warm = Router(
        model_list=[
            {
                "model_name": "warm",
                "litellm_params": {
                    "model": f"openai/{MODEL}",
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
    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    out.wall = time.perf_counter() - t0
    out.cpu = time.process_time() - c0
    with contextlib.suppress(Exception):
        await litellm.close_litellm_async_clients()
    return out


# --------------------------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------------------------


@dataclass
class RowPlan:
    label: str
    kind: str  # "async" | "sync" | "naive" | "litellm"
    strategy: str = ""
    configured: bool = True


@dataclass
class Scenario:
    name: str
    title: str
    limits: list[int]
    rows: list[RowPlan]


def build_scenarios(args: argparse.Namespace) -> list[Scenario]:
    k, r = args.keys, args.rpw
    sync_strats = args.sync_strategies
    async_strats = args.strategies

    def keymux_rows(configured: bool, asyncs: Sequence[str], syncs: Sequence[str]) -> list[RowPlan]:
        tag = "configured" if configured else "learned"
        rows = [RowPlan(f"keymux async {s} ({tag})", "async", s, configured) for s in asyncs]
        rows += [RowPlan(f"keymux sync {s} ({tag})", "sync", s, configured) for s in syncs]
        return rows

    refs = [RowPlan("naive round-robin + retry-after", "naive")]
    if not args.no_litellm:
        refs += [
            RowPlan(f"LiteLLM Router {s}", "litellm", s, s != "simple-shuffle")
            for s in args.litellm_strategies
        ]
    out = [
        Scenario(
            "configured",
            f"limits configured: {k} keys x {r} requests per {args.window:g} s window",
            [r] * k,
            keymux_rows(True, async_strats, sync_strats) + refs,
        ),
        Scenario(
            "learned",
            f"limits learned from headers only: {k} keys x {r} requests per {args.window:g} s",
            [r] * k,
            keymux_rows(False, async_strats, sync_strats),
        ),
        Scenario(
            "mixed",
            f"mixed limits: 1 key x {4 * r} + {k - 1} keys x {r} requests per {args.window:g} s",
            [4 * r] + [r] * (k - 1),
            keymux_rows(True, ["rate-aware"], [])
            + keymux_rows(False, [s for s in async_strats if s != "least-loaded"], [])
            + refs[:1],
        ),
    ]
    wanted = set(args.scenarios)
    unknown = wanted - {s.name for s in out}
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    chosen = [s for s in out if s.name in wanted]
    if args.rows:
        for s in chosen:
            s.rows = [p for p in s.rows if any(f in p.label for f in args.rows)]
    return chosen


def run_row(
    emu: EmulatorProcess, scenario: Scenario, plan: RowPlan, args: argparse.Namespace
) -> Row:
    keys = emu.fresh_keys(scenario.limits)
    spec = Spec(
        base_url=emu.openai_base,
        keys=keys,
        limits=scenario.limits,
        window=args.window,
        configured=plan.configured,
        requests=args.requests,
        concurrency=args.concurrency,
    )
    row = Row(plan.label, None, requests=spec.requests, capacity=spec.capacity)
    if plan.kind == "litellm" and not litellm_available():
        row.note = "litellm is not importable (pip install 'keymux[bench]' in a separate venv)"
        row.reference = True
        return row
    emu.reset()
    if plan.kind == "async":
        row.outcome = asyncio.run(keymux_async(spec, plan.strategy))
    elif plan.kind == "sync":
        row.outcome = keymux_sync(spec, plan.strategy)
    elif plan.kind == "naive":
        row.reference = True
        row.outcome = asyncio.run(naive_round_robin(spec))
    elif plan.kind == "litellm":
        row.reference = True
        row.outcome = asyncio.run(litellm_router(spec, plan.strategy))
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

HEADERS = ("row", "goodput", "ok", "429s served", "failed", "CPU ms/req", "wall s", "verdict")


def render(scenario: Scenario, rows: Sequence[Row], args: argparse.Namespace) -> str:
    cap = sum(scenario.limits) / args.window
    lines = [
        "",
        f"== {scenario.name}: {scenario.title}; {args.requests} requests at concurrency "
        f"{args.concurrency}; capacity {cap:g} req/s ==",
    ]
    table: list[tuple[str, ...]] = [HEADERS]
    for row in rows:
        o = row.outcome
        if o is None:
            table.append((row.label, "-", "-", "-", "-", "-", "-", "skipped"))
            continue
        share = 100.0 * row.served_429 / row.requests if row.requests else 0.0
        table.append(
            (
                row.label,
                f"{row.goodput:.3f}",
                str(o.ok),
                f"{row.served_429} ({share:.1f}%)",
                str(o.failed),
                f"{1000.0 * o.cpu / row.requests:.3f}" if row.requests else "-",
                f"{o.wall:.2f}",
                row.verdict(),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
    for n, r in enumerate(table):
        cells = [r[0].ljust(widths[0])] + [
            r[i].rjust(widths[i]) if i < len(HEADERS) - 1 else r[i].ljust(widths[i])
            for i in range(1, len(HEADERS))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        if row.note:
            lines.append(f"  note: {row.label}: {row.note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=4, help="K keys (default 4)")
    p.add_argument("--rpw", type=int, default=20, help="R requests per window per key (20)")
    p.add_argument("--window", type=float, default=1.0, help="window seconds (1.0)")
    p.add_argument("--requests", type=int, default=None, help="M requests per row (800)")
    p.add_argument("--concurrency", type=int, default=64, help="C callers at once (64)")
    p.add_argument("--latency", type=float, default=0.015, help="emulator latency s (0.015)")
    p.add_argument(
        "--scenarios",
        nargs="+",
        default=["configured", "learned", "mixed"],
        help="configured learned mixed",
    )
    p.add_argument(
        "--strategies",
        nargs="+",
        default=list(KEYMUX_STRATEGIES),
        help="keymux strategies for the async rows",
    )
    p.add_argument(
        "--sync-strategies",
        nargs="*",
        default=["rate-aware"],
        help="keymux strategies for the sync rows (default rate-aware)",
    )
    p.add_argument("--rows", nargs="+", default=None, help="only rows whose label contains one")
    p.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM rows")
    p.add_argument(
        "--litellm-strategies",
        nargs="+",
        default=["simple-shuffle"],
        help="LiteLLM Router routing_strategy per row (default simple-shuffle; e.g. also "
        "usage-based-routing-v2, which is then given each key's rpm)",
    )
    p.add_argument("--quick", action="store_true", help="a few seconds: M=120, fewer rows")
    p.add_argument("--json-out", default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.quick:
        if args.requests is None:
            args.requests = 120
        args.strategies = [s for s in args.strategies if s == "rate-aware"] or args.strategies[:1]
    if args.requests is None:
        args.requests = 800
    if args.keys < 2:
        p.error("--keys must be at least 2 (the mixed scenario needs one big and one small key)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = build_scenarios(args)
    print(
        f"keymux goodput benchmark: emulator subprocess on 127.0.0.1, latency "
        f"{1000 * args.latency:g} ms; CPU is this process's (client only; the emulator runs "
        "elsewhere). Targets: goodput >= 0.95, 429s <= 2% of requests, 0 failures."
    )
    if not litellm_available():
        print("LiteLLM: not importable here, its row is skipped (install the 'bench' extra).")
    emu = EmulatorProcess(window=args.window, latency=args.latency)
    try:
        emu.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    results: dict[str, list[dict[str, Any]]] = {}
    started = time.perf_counter()
    try:
        for scenario in scenarios:
            rows = []
            for plan in scenario.rows:
                row = run_row(emu, scenario, plan, args)
                rows.append(row)
            print(render(scenario, rows, args), flush=True)
            results[scenario.name] = [
                {
                    "row": r.label,
                    "goodput": round(r.goodput, 4),
                    "ok": r.outcome.ok if r.outcome else None,
                    "failed": r.outcome.failed if r.outcome else None,
                    "served_429": r.served_429,
                    "cpu_ms_per_request": round(1000 * r.outcome.cpu / r.requests, 4)
                    if r.outcome
                    else None,
                    "wall_s": round(r.outcome.wall, 3) if r.outcome else None,
                    "verdict": r.verdict(),
                    "note": r.note,
                }
                for r in rows
            ]
    finally:
        emu.stop()
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
