"""``keymux serve`` against calling the emulator directly, in one run.

Three processes on the machine's cores (two here):

  emulator      ``keymux emulate`` (no limits, no latency), pinned to CPU 1
  proxy         ``keymux serve`` with 4 OpenAI keys against the emulator, pinned to CPU 0
  this client   aiohttp, pinned to CPU 1 with the emulator (the proxy's core stays its own)

Measured, each against the baseline of the same requests sent straight to the emulator:

  * requests per second at 64 concurrent, and the proxy's capacity on its one core: requests
    per CPU-second of the proxy process (``1 / proxy CPU per request``), which does not depend
    on how fast the client and emulator on the other core are;
  * the latency the proxy adds, p50 and p99, at 1 and at 64 concurrent;
  * proxy CPU per request, proxy RSS after the load (and its peak);
  * time to ready: process start -> ``GET /healthz`` answers 200 (median of a few starts).

Targets (issue): >= 2,000 req/s on one core, < 1 ms added p50, < 100 MB RSS, ready < 1 s. For
scale: LiteLLM's proxy measured here at 66 req/s per core, +22 ms p50, 381 MB, 8.3 s to start;
a bare aiohttp forwarder about 3,000 req/s. PASS/MISS is information; the exit status is 0.

    python benchmarks/proxy.py            # 6,000 requests x 3 at 64 concurrent, 1,500 at 1
    python benchmarks/proxy.py --quick    # a smoke run
    python benchmarks/proxy.py --profile  # py-spy (or cProfile) of the proxy under load
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    HOST,
    MESSAGES,
    MODEL,
    EmulatorProcess,
    child_cpu,
    free_port,
    machine,
    median,
    table,
    verdict,
)

TOKEN = "kmx-bench-proxy-token-0123456789"
DIRECT_KEY = "sk-bench-proxy-0001-0123456789abcdef"
KEYS = 4
PAYLOAD = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
TARGET_RPS = 2000.0
TARGET_P50_MS = 1.0
TARGET_RSS_MB = 100.0
TARGET_READY_S = 1.0


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return []


def _pin(pid: int, cpu: int | None) -> None:
    if cpu is None:
        return
    try:
        os.sched_setaffinity(pid, {cpu})
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        pass


# --- the proxy process ----------------------------------------------------------------------


@dataclass
class ProxyProcess:
    emulator: EmulatorProcess
    cpu: int | None
    extra: Sequence[str] = ()
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    ready_s: float = 0.0

    @property
    def root(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> ProxyProcess:
        self.port = free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "KEYMUX_PROXY_TOKEN": TOKEN,
            "OPENAI_BASE_URL": self.emulator.base_url("openai"),
        }
        for i in range(1, KEYS + 1):
            env[f"OPENAI_API_KEY_{i}"] = f"sk-bench-proxy-{i:04d}-0123456789abcdef"
        pin = f"os.sched_setaffinity(0, {{{self.cpu}}}); " if self.cpu is not None else ""
        args = ["-m", "keymux", "serve", "--host", HOST, "--port", str(self.port)]
        args += ["--max-concurrent", "64", "--queue-size", "1000", "--env-file", "", *self.extra]
        # pinned before keymux is even imported: exec keeps the pid and the affinity
        boot = f"import os, sys; {pin}os.execv(sys.executable, [sys.executable, *{args!r}])"
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", boot],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = started + 30
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"keymux serve exited with {self.proc.returncode}: {err}")
            if _healthy(self.root):
                self.ready_s = time.perf_counter() - started
                return self
            time.sleep(0.002)
        raise RuntimeError("keymux serve did not answer /healthz within 30 s")

    def cpu_seconds(self) -> float:
        return child_cpu(self.proc.pid) if self.proc is not None else 0.0

    def rss_mb(self, field_name: str = "VmRSS") -> float:
        assert self.proc is not None
        try:
            with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith(field_name + ":"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()


def _healthy(root: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(root + "/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


#: a bare aiohttp forwarder (one key, no checks, no retries, no metrics): the reference
BARE = """
import asyncio, sys
from aiohttp import ClientSession, TCPConnector, web
PORT, UPSTREAM, KEY = int(sys.argv[1]), sys.argv[2], sys.argv[3]
async def main():
    session = ClientSession(connector=TCPConnector(limit=0))
    headers = {"Authorization": "Bearer " + KEY, "Content-Type": "application/json"}
    async def forward(request):
        body = await request.read()
        async with session.post(UPSTREAM, data=body, headers=headers) as resp:
            data = await resp.read()
        return web.Response(body=data, status=resp.status, content_type="application/json")
    async def healthz(request):
        return web.Response(text="ok")
    app = web.Application()
    app.router.add_post("/v1/chat/completions", forward)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


@dataclass
class BareForwarder(ProxyProcess):
    """The reference forwarder, started and measured like the proxy."""

    def start(self) -> BareForwarder:
        self.port = free_port()
        upstream = self.emulator.base_url("openai") + "/chat/completions"
        argv = [sys.executable, "-c", BARE, str(self.port), upstream, DIRECT_KEY]
        pin = f"os.sched_setaffinity(0, {{{self.cpu}}}); " if self.cpu is not None else ""
        boot = f"import os, sys; {pin}os.execv(sys.executable, {argv!r})"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", boot],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.perf_counter() + 30
        while not _healthy(self.root):
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError("the reference forwarder did not start")
            time.sleep(0.005)
        return self


# --- the load -------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    concurrency: int
    n: int
    wall_s: float
    latencies: list[float] = field(default_factory=list)
    proxy_cpu_s: float | None = None

    @property
    def rps(self) -> float:
        return self.n / self.wall_s

    def pct(self, q: float) -> float:
        values = sorted(self.latencies)
        return values[min(len(values) - 1, int(q * len(values)))] * 1e3


async def load(
    url: str, headers: dict[str, str], n: int, concurrency: int
) -> tuple[float, list[float]]:
    """``n`` chat requests, ``concurrency`` in flight; (wall seconds, per-request latencies)."""
    import aiohttp

    latencies: list[float] = []
    remaining = n
    failures: list[str] = []
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(60)) as s:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                async with s.post(url, data=PAYLOAD, headers=headers) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        failures.append(f"HTTP {resp.status}: {body[:200]!r}")
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(n, concurrency))))
        wall = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, first: {failures[0]}")
    return wall, latencies


def run_load(
    url: str, headers: dict[str, str], n: int, concurrency: int
) -> tuple[float, list[float]]:
    return asyncio.run(load(url, headers, n, concurrency))


def measure(
    name: str,
    url: str,
    headers: dict[str, str],
    *,
    n: int,
    concurrency: int,
    repeats: int,
    proxy: ProxyProcess | None,
) -> Result:
    run_load(url, headers, max(concurrency * 4, n // 10), concurrency)  # warm-up
    result = Result(name, concurrency, 0, 0.0)
    cpu = 0.0
    for _ in range(repeats):
        before = proxy.cpu_seconds() if proxy is not None else 0.0
        wall, latencies = run_load(url, headers, n, concurrency)
        if proxy is not None:
            cpu += proxy.cpu_seconds() - before
        result.n += n
        result.wall_s += wall
        result.latencies += latencies
    if proxy is not None:
        result.proxy_cpu_s = cpu
    return result


def _profile(proxy: ProxyProcess, url: str, headers: dict[str, str], n: int) -> None:
    spy = shutil.which("py-spy")
    if spy is None or proxy.proc is None:
        print("py-spy is not installed: pip install py-spy (the profile needs it)")
        return
    out = Path("proxy-profile.txt")
    prof = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(proxy.proc.pid),
            "--format",
            "raw",
            "-o",
            str(out),
            "--duration",
            "8",
            "--rate",
            "500",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_load(url, headers, n, 64)
    prof.wait(timeout=60)
    print(f"py-spy samples written to {out} (collapsed stacks)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (few requests)")
    parser.add_argument("--requests", type=int, default=None, help="requests per run at 64")
    parser.add_argument("--profile", action="store_true", help="py-spy the proxy under load")
    args = parser.parse_args(argv)
    n64 = args.requests or (400 if args.quick else 6000)
    n1 = 100 if args.quick else 1500
    repeats = 1 if args.quick else 3
    starts = 1 if args.quick else 3

    cpus = _cpus()
    proxy_cpu = cpus[0] if len(cpus) >= 2 else None
    other_cpu = cpus[1] if len(cpus) >= 2 else None
    _pin(0, other_cpu)  # this client shares the emulator's core; the proxy has its own
    pinning = (
        f"proxy pinned to CPU {proxy_cpu}, emulator and client to CPU {other_cpu}"
        if proxy_cpu is not None
        else "no pinning (fewer than 2 CPUs available)"
    )
    print(f"keymux serve benchmark: {KEYS} OpenAI keys, {pinning}; {machine()}")
    emulator = EmulatorProcess()
    with emulator:
        assert emulator.proc is not None
        _pin(emulator.proc.pid, other_cpu)
        proxy = ProxyProcess(emulator, proxy_cpu).start()
        ready = [proxy.ready_s]
        try:
            for _ in range(starts - 1):
                again = ProxyProcess(emulator, proxy_cpu).start()
                ready.append(again.ready_s)
                again.stop()
            direct_url = emulator.base_url("openai") + "/chat/completions"
            direct_headers = {
                "Authorization": f"Bearer {DIRECT_KEY}",
                "Content-Type": "application/json",
            }
            proxy_url = proxy.root + "/v1/chat/completions"
            proxy_headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            results: list[Result] = []
            for concurrency, n in ((64, n64), (1, n1)):
                results.append(
                    measure(
                        "direct (baseline)",
                        direct_url,
                        direct_headers,
                        n=n,
                        concurrency=concurrency,
                        repeats=repeats,
                        proxy=None,
                    )
                )
                bare = BareForwarder(emulator, proxy_cpu).start()
                try:
                    results.append(
                        measure(
                            "aiohttp forwarder (reference)",
                            bare.root + "/v1/chat/completions",
                            direct_headers,
                            n=n,
                            concurrency=concurrency,
                            repeats=repeats,
                            proxy=bare,
                        )
                    )
                finally:
                    bare.stop()
                results.append(
                    measure(
                        "keymux serve",
                        proxy_url,
                        proxy_headers,
                        n=n,
                        concurrency=concurrency,
                        repeats=repeats,
                        proxy=proxy,
                    )
                )
            rss = proxy.rss_mb()
            peak = proxy.rss_mb("VmHWM")
            if args.profile:
                _profile(proxy, proxy_url, proxy_headers, n64)
            served = sum(
                s.get("successes", 0)
                for s in json.loads(
                    urllib.request.build_opener(urllib.request.ProxyHandler({}))
                    .open(
                        urllib.request.Request(
                            proxy.root + "/dashboard/data",
                            headers={"Authorization": f"Bearer {TOKEN}"},
                        ),
                        timeout=5,
                    )
                    .read()
                )["keys"]
            )
        finally:
            proxy.stop()

    rows: list[list[Any]] = []
    by = {(r.name, r.concurrency): r for r in results}
    for r in results:
        base = by[("direct (baseline)", r.concurrency)]
        cpu_ms = r.proxy_cpu_s / r.n * 1e3 if r.proxy_cpu_s is not None else float("nan")
        rows.append(
            [
                r.name,
                r.concurrency,
                r.n,
                r.rps,
                f"{r.rps / base.rps:.2f}x",
                r.pct(0.5),
                r.pct(0.99),
                cpu_ms,
            ]
        )
    print()
    print(
        table(
            [
                "mode",
                "concurrent",
                "requests",
                "req/s",
                "ratio",
                "p50 ms",
                "p99 ms",
                "proxy CPU ms/req",
            ],
            rows,
        )
    )
    p64, d64 = by[("keymux serve", 64)], by[("direct (baseline)", 64)]
    p1, d1 = by[("keymux serve", 1)], by[("direct (baseline)", 1)]
    assert p64.proxy_cpu_s is not None
    cpu_per_req = p64.proxy_cpu_s / p64.n
    capacity = 1.0 / cpu_per_req if cpu_per_req > 0 else float("inf")
    busy = p64.proxy_cpu_s / p64.wall_s
    added = [
        ("added p50 at 1 concurrent", p1.pct(0.5) - d1.pct(0.5)),
        ("added p99 at 1 concurrent", p1.pct(0.99) - d1.pct(0.99)),
        ("added p50 at 64 concurrent", p64.pct(0.5) - d64.pct(0.5)),
        ("added p99 at 64 concurrent", p64.pct(0.99) - d64.pct(0.99)),
    ]
    print()
    print(
        table(
            ["figure", "value"],
            [
                ["proxy req/s per core (1 / CPU per request)", capacity],
                ["req/s measured at 64 concurrent", p64.rps],
                ["direct req/s at 64 concurrent", d64.rps],
                ["proxy core busy at 64 concurrent", f"{busy * 100:.0f}%"],
                ["proxy CPU per request, ms", cpu_per_req * 1e3],
                *[[name + ", ms", value] for name, value in added],
                ["proxy RSS after the load, MB", rss],
                ["proxy peak RSS, MB", peak],
                ["time to ready (median), s", median(ready)],
                ["answers counted by the proxy", served],
            ],
        )
    )
    print()
    print(
        f"{verdict(capacity >= TARGET_RPS)}  throughput: {capacity:,.0f} req/s per core "
        f"(proxy CPU {cpu_per_req * 1e3:.3f} ms/request; measured {p64.rps:,.0f} req/s with "
        f"the proxy's core {busy * 100:.0f}% busy; target >= {TARGET_RPS:,.0f})"
    )
    print(
        f"{verdict(added[0][1] < TARGET_P50_MS)}  added p50 latency at 1 concurrent: "
        f"{added[0][1]:.3f} ms (target < {TARGET_P50_MS:g} ms)"
    )
    print(
        f"{verdict(peak < TARGET_RSS_MB)}  proxy RSS: {rss:.1f} MB, peak {peak:.1f} MB "
        f"(target < {TARGET_RSS_MB:g} MB)"
    )
    print(
        f"{verdict(median(ready) < TARGET_READY_S)}  time to ready: {median(ready):.3f} s "
        f"(target < {TARGET_READY_S:g} s)"
    )
    b64 = by[("aiohttp forwarder (reference)", 64)]
    assert b64.proxy_cpu_s is not None
    print(
        f"INFO  the bare aiohttp forwarder in the same setup: {b64.rps:,.0f} req/s measured at 64 "
        f"concurrent, {b64.proxy_cpu_s / b64.n * 1e3:.3f} ms CPU/request; keymux serve: "
        f"{p64.rps / b64.rps:.2f}x its req/s at {cpu_per_req / (b64.proxy_cpu_s / b64.n):.2f}x "
        "its CPU per request"
    )
    print(
        "For scale (issue): LiteLLM proxy 66 req/s per core, +22 ms p50, 381 MB, 8.3 s to "
        "start; a bare aiohttp forwarder ~3,000 req/s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
