"""Client CPU per request: keymux (async and sync) against a plain aiohttp.ClientSession.

The emulator runs in a separate process (``keymux emulate``, no limits, no latency), so only
the client's CPU is counted (``time.process_time()``: this process, every thread). Each mode
sends the same OpenAI chat request with ``--inflight`` (100) requests in flight and reads the
answer's text, the same work a user would do:

  aiohttp       one ClientSession: POST /v1/chat/completions (Bearer), read, json.loads,
                choices[0].message.content
  keymux async  Multiplexer with 10 keys x 10 concurrent: ``await client.acall("chat", ...)``
  keymux sync   the same from 100 threads: ``client("chat", ...)``
  httpx2        httpx2.AsyncClient, for reference (skipped with a note if not importable);
                ~6-10x the CPU of aiohttp per request, so it sends a fifth as many requests
                (one run in --quick)

A second table compares the openai SDK through keymux (``http_client=mux.async_http_client(
"openai")`` for ``AsyncOpenAI``, ``mux.http_client("openai")`` for ``OpenAI`` from 100 threads)
with the same SDK on its default httpx2 client, in the same run against the same emulator
(skipped with a note if openai is not importable; ``--no-sdk`` skips it). Target: at most
1.15x the SDK's own client.

Requests in flight are ``--inflight`` workers that each send requests back to back (a semaphore
of 100 without a task per request, so the harness adds as little as possible to either side of
the ratio). Each mode is warmed up, then measured ``--repeats`` times, interleaved, and the median
is reported as a ratio to plain aiohttp measured in the same run. Targets: async at most
1.3x plain aiohttp, sync at most 2.0x, on each loop (``--loop asyncio|uvloop|both``).
PASS/MISS is information only; the exit status is 0.

    python benchmarks/overhead.py            # 5,000 requests x 3 per mode
    python benchmarks/overhead.py --quick    # 100 x 3, a smoke run
    python benchmarks/overhead.py --profile async   # cProfile of keymux async, top functions
    python benchmarks/overhead.py --profile sync    # the same on the sync facade's loop thread
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import json
import pstats
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MESSAGES, MODEL, EmulatorProcess, cpu, machine, median, table, verdict

import keymux

ASYNC_TARGET = 1.3
SYNC_TARGET = 2.0
KEYS = 10
API_KEY = "sk-bench-overhead-{i:04d}-0123456789abcdef"
PAYLOAD = {"model": MODEL, "messages": MESSAGES}


@dataclass
class Run:
    cpu_s: float
    wall_s: float
    server_s: float
    n: int


@dataclass
class Mode:
    """One way of sending the requests. ``one`` sends one request and returns the answer text."""

    name: str
    is_sync: bool = False
    runs: list[Run] = field(default_factory=list)
    note: str = ""
    # async modes
    setup: Callable[[], Awaitable[Callable[[], Awaitable[str]]]] | None = None
    teardown: Callable[[], Awaitable[None]] | None = None
    # sync mode
    sync_setup: Callable[[], Callable[[], str]] | None = None
    sync_teardown: Callable[[], None] | None = None
    one: Any = None
    mux: Any = None  # keymux modes: the Multiplexer
    share: float = 1.0  # fraction of --requests this mode sends per run (slow references: less)
    max_runs: int | None = None  # at most this many measured runs (a slow reference in --quick)

    def ms_per_request(self) -> float:
        return median(r.cpu_s / r.n for r in self.runs) * 1e3

    def rps(self) -> float:
        return median(r.n / r.wall_s for r in self.runs)

    def server_ms(self) -> float:
        return median(r.server_s / r.n for r in self.runs) * 1e3

    def spread(self) -> str:
        if len(self.runs) == 1:
            return "1 run"
        values = sorted(r.cpu_s / r.n * 1e3 for r in self.runs)
        return f"{values[0]:.3f}-{values[-1]:.3f}"


# --- the clients ----------------------------------------------------------------------------


def plain_aiohttp(emu: EmulatorProcess, inflight: int) -> Mode:
    import aiohttp

    state: dict[str, Any] = {}

    async def setup() -> Callable[[], Awaitable[str]]:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=inflight), timeout=aiohttp.ClientTimeout(60)
        )
        state["session"] = session
        url = emu.base_url("openai") + "/chat/completions"
        headers = {"Authorization": "Bearer " + API_KEY.format(i=0)}

        async def one() -> str:
            async with session.post(url, json=PAYLOAD, headers=headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}")
            data = json.loads(body)
            return str(data["choices"][0]["message"]["content"])

        return one

    async def teardown() -> None:
        await state["session"].close()

    return Mode("aiohttp (baseline)", setup=setup, teardown=teardown)


def _mux(emu: EmulatorProcess) -> keymux.Multiplexer:
    mux = keymux.Multiplexer(max_concurrent_requests=10, queue_size=1000, timeout=60.0)
    for i in range(KEYS):
        mux.add_openai_key(f"bench{i}", API_KEY.format(i=i), base_url=emu.base_url("openai"))
    return mux


def keymux_async(emu: EmulatorProcess) -> Mode:
    state: dict[str, Any] = {}

    async def setup() -> Callable[[], Awaitable[str]]:
        mux = state["mux"] = _mux(emu)
        await mux.__aenter__()
        mode.mux = mux
        client = mux.get_openai_client()

        async def one() -> str:
            resp = await client.acall("chat", messages=MESSAGES, model=MODEL)
            return resp.text or ""

        return one

    async def teardown() -> None:
        await state["mux"].aclose()

    mode = Mode("keymux async", setup=setup, teardown=teardown)
    return mode


def keymux_sync(emu: EmulatorProcess) -> Mode:
    state: dict[str, Any] = {}

    def setup() -> Callable[[], str]:
        mux = state["mux"] = mode.mux = _mux(emu)
        client = mux.get_openai_client()

        def one() -> str:
            return client("chat", messages=MESSAGES, model=MODEL).text or ""

        return one

    def teardown() -> None:
        state["mux"].close()

    mode = Mode("keymux sync", is_sync=True, sync_setup=setup, sync_teardown=teardown)
    return mode


def httpx2_client(emu: EmulatorProcess, inflight: int) -> Mode:
    try:
        import httpx2
    except ImportError as exc:
        return Mode("httpx2 (reference)", note=f"skipped: httpx2 is not importable ({exc})")
    state: dict[str, Any] = {}

    async def setup() -> Callable[[], Awaitable[str]]:
        client = httpx2.AsyncClient(
            limits=httpx2.Limits(max_connections=inflight, max_keepalive_connections=inflight),
            timeout=60.0,
            trust_env=False,  # loopback only, whatever the environment's proxies say
        )
        state["client"] = client
        url = emu.base_url("openai") + "/chat/completions"
        headers = {"Authorization": "Bearer " + API_KEY.format(i=0)}

        async def one() -> str:
            resp = await client.post(url, json=PAYLOAD, headers=headers)
            if resp.status_code != 200:
                raise RuntimeError(f"HTTP {resp.status_code}")
            data = json.loads(resp.content)
            return str(data["choices"][0]["message"]["content"])

        return one

    async def teardown() -> None:
        await state["client"].aclose()

    # ~10x the CPU of aiohttp per request: a fifth of the requests keeps the run short
    return Mode("httpx2 (reference)", setup=setup, teardown=teardown, share=0.2)


# --- the openai SDK: through keymux, or on its own default client -----------------------------

#: the openai SDK through keymux, at most this many times the CPU of the same SDK on its own
#: default client (the SDK's own work dominates both)
SDK_TARGET = 1.15
#: (through keymux, on its default client), async then sync
SDK_PAIRS = (
    ("openai SDK async + keymux", "openai SDK async, default"),
    ("openai SDK sync + keymux", "openai SDK sync, default"),
)


def openai_sdk_modes(emu: EmulatorProcess) -> list[Mode]:
    """``AsyncOpenAI`` / ``OpenAI`` (from threads) with ``http_client=mux.async_http_client(...)``
    / ``mux.http_client(...)`` against the same SDK on its default httpx2 client; skipped with
    a note when the SDK is not importable. Same request, same emulator, same counts."""
    names = [name for pair in SDK_PAIRS for name in pair]
    try:
        import openai
    except ImportError as exc:
        return [Mode(name, note=f"skipped: openai is not importable ({exc})") for name in names]

    def text(reply: Any) -> str:
        return str(reply.choices[0].message.content)

    def async_mode(name: str, through_keymux: bool) -> Mode:
        state: dict[str, Any] = {}

        async def setup() -> Callable[[], Awaitable[str]]:
            if through_keymux:
                mux = state["mux"] = mode.mux = _mux(emu)
                await mux.__aenter__()
                client = openai.AsyncOpenAI(
                    api_key="keymux", http_client=mux.async_http_client("openai")
                )
            else:
                client = openai.AsyncOpenAI(
                    api_key=API_KEY.format(i=0), base_url=emu.base_url("openai")
                )
            state["client"] = client
            create = client.chat.completions.create

            async def one() -> str:
                return text(await create(model=MODEL, messages=MESSAGES))  # type: ignore[arg-type]

            return one

        async def teardown() -> None:
            await state["client"].close()
            if "mux" in state:
                await state["mux"].aclose()

        mode = Mode(name, setup=setup, teardown=teardown)
        return mode

    def sync_mode(name: str, through_keymux: bool) -> Mode:
        state: dict[str, Any] = {}

        def setup() -> Callable[[], str]:
            if through_keymux:
                mux = state["mux"] = mode.mux = _mux(emu)
                client = openai.OpenAI(api_key="keymux", http_client=mux.http_client("openai"))
            else:
                client = openai.OpenAI(api_key=API_KEY.format(i=0), base_url=emu.base_url("openai"))
            state["client"] = client
            create = client.chat.completions.create

            def one() -> str:
                return text(create(model=MODEL, messages=MESSAGES))  # type: ignore[arg-type]

            return one

        def teardown() -> None:
            state["client"].close()
            if "mux" in state:
                state["mux"].close()

        mode = Mode(name, is_sync=True, sync_setup=setup, sync_teardown=teardown)
        return mode

    (ak, ad), (sk, sd) = SDK_PAIRS
    return [async_mode(ad, False), async_mode(ak, True), sync_mode(sd, False), sync_mode(sk, True)]


def sdk_report(modes: Sequence[Mode], *, inflight: int, repeats: int) -> str:
    by = {m.name: m for m in modes}
    rows: list[list[Any]] = []
    verdicts: list[str] = []
    for through, default in SDK_PAIRS:
        base = by[default]
        for m in (base, by[through]):
            if m.note or base.note:
                rows.append([m.name, "n/a", "n/a", "n/a", "n/a", "n/a", m.note or base.note])
                continue
            ms = m.ms_per_request()
            ratio = ms / base.ms_per_request()
            rows.append([m.name, ms, f"{ratio:.2f}x", m.spread(), m.runs[0].n, m.rps(), ""])
            if m is not base:
                verdicts.append(
                    f"{verdict(ratio <= SDK_TARGET)}  {m.name}: {ratio:.2f}x the SDK on its "
                    f"default client (target <= {SDK_TARGET}x)"
                )
    out = table(
        [
            "mode",
            "client CPU ms/req",
            "ratio to default",
            "CPU ms/req range",
            "requests/run",
            "req/s (wall)",
            "note",
        ],
        rows,
        title=(
            f"the openai SDK through keymux vs its default client: client CPU per request, "
            f"median of {repeats} runs, {inflight} in flight"
        ),
    )
    return "\n".join([out, *verdicts])


# --- the harness ----------------------------------------------------------------------------


async def drive_async(
    one: Callable[[], Awaitable[str]], n: int, inflight: int
) -> tuple[float, float]:
    """``n`` requests, ``inflight`` at a time; (client CPU s, wall s)."""
    remaining = n
    empty = 0

    async def worker() -> None:
        nonlocal remaining, empty
        while remaining > 0:
            remaining -= 1
            if not await one():
                empty += 1

    c0, t0 = cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(inflight, n))))
    c1, t1 = cpu(), time.perf_counter()
    if empty:
        raise RuntimeError(f"{empty} answers had no text")
    return c1 - c0, t1 - t0


def drive_sync(
    one: Callable[[], str], n: int, inflight: int, pool: ThreadPoolExecutor
) -> tuple[float, float]:
    """``n`` blocking calls from ``inflight`` threads; (client CPU s, wall s)."""
    counter = itertools.count()  # next() is atomic under the GIL
    empty = itertools.count()

    def worker() -> None:
        while next(counter) < n:
            if not one():
                next(empty)

    c0, t0 = cpu(), time.perf_counter()
    futures = [pool.submit(worker) for _ in range(min(inflight, n))]
    for f in futures:
        f.result()
    c1, t1 = cpu(), time.perf_counter()
    if next(empty):
        raise RuntimeError("some answers had no text")
    return c1 - c0, t1 - t0


async def measure(
    modes: Sequence[Mode],
    emu: EmulatorProcess,
    *,
    n: int,
    warmup: int,
    repeats: int,
    inflight: int,
    log: Callable[[str], None],
) -> None:
    pool = ThreadPoolExecutor(max_workers=inflight, thread_name_prefix="bench-caller")
    active = [m for m in modes if not m.note]
    try:
        for m in active:
            count = max(inflight, int(warmup * m.share))
            if m.is_sync:
                assert m.sync_setup is not None
                m.one = await asyncio.to_thread(m.sync_setup)
                await asyncio.to_thread(drive_sync, m.one, count, inflight, pool)
            else:
                assert m.setup is not None
                m.one = await m.setup()
                await drive_async(m.one, count, inflight)
        for rep in range(repeats):
            for m in active:  # interleaved, so drift hits every mode alike
                if m.max_runs is not None and rep >= m.max_runs:
                    continue
                count = max(inflight, int(n * m.share))
                s0 = emu.cpu_seconds()
                if m.is_sync:
                    c, w = await asyncio.to_thread(drive_sync, m.one, count, inflight, pool)
                else:
                    c, w = await drive_async(m.one, count, inflight)
                m.runs.append(Run(c, w, emu.cpu_seconds() - s0, count))
                log(f"  run {rep + 1}/{repeats} {m.name:<20} {c / count * 1e3:7.3f} ms CPU/request")
    finally:
        for m in active:
            if m.one is None:
                continue
            if m.is_sync and m.sync_teardown is not None:
                await asyncio.to_thread(m.sync_teardown)
            elif m.teardown is not None:
                await m.teardown()
        pool.shutdown(wait=True)


def report(
    modes: Sequence[Mode], *, n: int, inflight: int, repeats: int, loop: str = "asyncio"
) -> str:
    base = modes[0].ms_per_request()
    rows: list[list[Any]] = []
    for m in modes:
        if m.note:
            rows.append([m.name, "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", m.note])
            continue
        ms = m.ms_per_request()
        rows.append(
            [m.name, ms, f"{ms / base:.2f}x", m.spread(), m.runs[0].n, m.rps(), m.server_ms(), ""]
        )
    out = [
        table(
            [
                "mode",
                "client CPU ms/req",
                "ratio to aiohttp",
                "CPU ms/req range",
                "requests/run",
                "req/s (wall)",
                "server CPU ms/req",
                "note",
            ],
            rows,
            title=(
                f"client CPU per request on the {loop} event loop, median of {repeats} runs, "
                f"{inflight} in flight, emulator in a separate process"
            ),
        )
    ]
    by = {m.name: m for m in modes}
    for name, target in (("keymux async", ASYNC_TARGET), ("keymux sync", SYNC_TARGET)):
        m = by[name]
        ratio = m.ms_per_request() / base
        out.append(
            f"{verdict(ratio <= target)}  {name} ({loop}): {ratio:.2f}x plain aiohttp "
            f"(target <= {target}x)"
        )
    return "\n".join(out)


def loop_kinds(choice: str) -> list[str]:
    """The event loops to measure on: the default asyncio loop, and uvloop when importable."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        have_uvloop = False
    else:
        have_uvloop = True
    if choice == "uvloop" and not have_uvloop:
        raise SystemExit("uvloop is not importable: pip install uvloop (the bench extra)")
    if choice == "both":
        return ["asyncio", "uvloop"] if have_uvloop else ["asyncio"]
    return [choice]


def use_loop(kind: str) -> None:
    """Make ``kind`` the loop asyncio.run and keymux's own loop thread create."""
    if kind == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(None)


# --- profiling ------------------------------------------------------------------------------


async def profile(which: str, emu: EmulatorProcess, n: int, inflight: int, top: int) -> str:
    """cProfile of one keymux mode: the loop thread's functions by own time."""
    prof = cProfile.Profile()
    if which == "async":
        mode = keymux_async(emu)
        assert mode.setup is not None
        assert mode.teardown is not None
        one = await mode.setup()
        await drive_async(one, 300, inflight)
        prof.enable()
        await drive_async(one, n, inflight)
        prof.disable()
        await mode.teardown()
    else:
        mode = keymux_sync(emu)
        assert mode.sync_setup is not None
        assert mode.sync_teardown is not None
        pool = ThreadPoolExecutor(max_workers=inflight)
        one_sync = await asyncio.to_thread(mode.sync_setup)
        await asyncio.to_thread(drive_sync, one_sync, 300, inflight, pool)
        loop = mode.mux._runtime.loop  # the portal loop, where the core runs
        # cProfile profiles the thread that enables it: enable it on the portal loop's thread
        done = threading.Event()

        def switch(on: bool) -> None:
            if on:
                prof.enable()
            else:
                prof.disable()
            done.set()

        loop.call_soon_threadsafe(switch, True)
        await asyncio.to_thread(done.wait)
        await asyncio.to_thread(drive_sync, one_sync, n, inflight, pool)
        done.clear()
        loop.call_soon_threadsafe(switch, False)
        await asyncio.to_thread(done.wait)
        await asyncio.to_thread(mode.sync_teardown)
        pool.shutdown()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


# --- main -----------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a fast smoke run (100 requests)")
    p.add_argument("--requests", type=int, default=None, help="requests per run (5,000)")
    p.add_argument("--repeats", type=int, default=3, help="runs per mode; the median counts")
    p.add_argument("--inflight", type=int, default=100, help="requests in flight (100)")
    p.add_argument("--no-httpx2", action="store_true", help="skip the httpx2 reference")
    p.add_argument("--no-sdk", action="store_true", help="skip the openai SDK comparison")
    p.add_argument(
        "--profile", choices=("async", "sync"), default=None, help="cProfile one keymux mode"
    )
    p.add_argument("--top", type=int, default=25, help="functions shown by --profile")
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default="both",
        help="event loop(s) to measure on; both = asyncio, then uvloop when importable",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    n = args.requests or (100 if args.quick else 5000)
    warmup = 50 if args.quick else max(500, n // 5)
    inflight = args.inflight

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    where = machine()
    with EmulatorProcess() as emu:
        if args.profile:
            print(asyncio.run(profile(args.profile, emu, n, inflight, args.top)))
            return 0
        reports: list[str] = []
        kinds = loop_kinds(args.loop)
        modes: list[Mode] = []
        for kind in kinds:
            use_loop(kind)
            modes = [
                plain_aiohttp(emu, inflight),
                keymux_async(emu),
                keymux_sync(emu),
            ]
            if kind != kinds[0]:
                pass  # the references run once, on the first loop
            elif args.no_httpx2:
                modes.append(Mode("httpx2 (reference)", note="skipped (--no-httpx2)"))
            else:
                reference = httpx2_client(emu, inflight)
                if args.quick:
                    reference.max_runs = 1  # ~10x slower than the others: one run is enough here
                modes.append(reference)
            log(
                f"{kind} loop; emulator on {emu.root}; warm-up {warmup}, "
                f"{n} requests x {args.repeats} per mode"
            )
            asyncio.run(
                measure(
                    modes,
                    emu,
                    n=n,
                    warmup=warmup,
                    repeats=args.repeats,
                    inflight=inflight,
                    log=log,
                )
            )
            reports.append(report(modes, n=n, inflight=inflight, repeats=args.repeats, loop=kind))
        use_loop("asyncio")
        sdk = [] if args.no_sdk else openai_sdk_modes(emu)
        if sdk:
            asyncio.run(
                measure(
                    sdk,
                    emu,
                    n=n,
                    warmup=warmup,
                    repeats=args.repeats,
                    inflight=inflight,
                    log=log,
                )
            )
    print("\n\n".join(reports))
    if sdk:
        print()
        print(sdk_report(sdk, inflight=inflight, repeats=args.repeats))
    print(f"({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
