"""Many processes, one set of keys: ``memory://`` (each process alone) against ``redis://``.

4 worker processes (this script with ``--worker``, each its own multiplexer) share the same 4
keys of ``keymux emulate --rate-model sliding`` (20 requests per 1 s window per key, limits
learned from the headers only, 10-30 ms latency), started together, each sending its share of
the requests. Rows:

* **pacing**, once with ``memory://`` and once with ``redis://``: combined goodput (answered /
  wall seconds / (4 keys x 20 per s); the first window's budget is there at time zero, so a
  pacer can exceed 1.0, as in ``goodput.py``), the same past the first window (what was answered
  beyond the first window's budget, per second, over the capacity: 1.0 is ideal pacing), 429s
  served (share of the requests the emulator saw), failed. Target with Redis: goodput >= 0.95,
  429s <= 1%, 0 failed.
* **revoked key**: halfway through, key 0 is revoked at the emulator; its cost is the requests
  it received from then on, across all processes (target <= 2).
* **Redis restart**: halfway through, ``redis-server`` is stopped and started again (empty);
  nothing may be lost or failed; each process warns once.
* **per-attempt cost**: one process, 4 unlimited keys, 100 in flight, ``memory://`` against
  ``redis://``: client CPU per request (``time.process_time()``), Redis round trips per
  attempt on the critical path (reserves per request sent) and off it (settle pipelines), and
  the mean wall time of a reserve.

Needs ``redis-server`` on the PATH (Debian's package; the Redis rows are skipped without it).
Never fails on timing: PASS/MISS are information, the exit status is 0 (1 only if the
emulator would not start).

    python benchmarks/multiproc.py            # 4 windows' worth per row (about a minute)
    python benchmarks/multiproc.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import EmulatorProcess, cpu, free_port, machine, table, verdict

PROCESSES = 4
KEYS = 4
LIMIT = 20  # per key per window
WINDOW = 1.0
LATENCY = (0.010, 0.030)
CONCURRENCY = 5  # per key, per process
TARGET_GOODPUT = 0.95
TARGET_429 = 0.01
TARGET_REVOKED = 2
SENTINEL = "sk-multiproc-bench-sentinel-0000"
MESSAGES = [{"role": "user", "content": "Say hi."}]


# --- a worker process -----------------------------------------------------------------------


async def _work(args: argparse.Namespace) -> dict[str, Any]:
    from keymux import Multiplexer

    mux = Multiplexer(
        state=args.state,
        max_concurrent_requests=args.concurrency,
        initial_retry_delay=0.05,
        max_retry_delay=2.0,
        timeout=10.0,
    )
    for i, key in enumerate(args.keys.split(",")):
        mux.add_openai_key(f"key{i}", key, base_url=args.base_url)
    client = mux.get_openai_client()
    ok = 0
    errors: dict[str, int] = {}
    left = iter(range(args.requests))

    async def caller() -> None:
        nonlocal ok
        for _ in left:
            try:
                await client.acall("chat", messages=MESSAGES, max_tokens=8)
                ok += 1
            except Exception as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    print("ready", flush=True)  # then wait for the parent's "go": every worker starts at once
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    started, cpu0 = time.time(), cpu()
    await asyncio.gather(*(caller() for _ in range(args.callers)))
    finished, spent = time.time(), cpu() - cpu0
    stats = await mux.aget_usage_stats()
    shared = mux._core.shared
    await mux.aclose()
    return {
        "ok": ok,
        "errors": errors,
        "started": started,
        "finished": finished,
        "cpu": spent,
        "sent": sum(s["usage"] for s in stats["openai"].values()),
        "shared": None if shared is None else shared.describe(),
    }


def worker_main(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    print(json.dumps(asyncio.run(_work(args))), flush=True)
    return 0


# --- the parent -----------------------------------------------------------------------------


class Emulator(EmulatorProcess):
    def __init__(self) -> None:
        super().__init__("--window", repr(WINDOW), "--key", f"openai:{SENTINEL}")
        self.serial = 0
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post(self, path: str, data: Any) -> None:
        req = urllib.request.Request(
            self.root + path,
            data=json.dumps(data).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with self._opener.open(req, timeout=5) as resp:
            resp.read()

    def fresh_keys(self, n: int, rpm: int | None) -> list[str]:
        self.serial += 1
        keys = [f"sk-multiproc-{self.serial:03d}-{i}-{'x' * 20}" for i in range(n)]
        self.post(
            "/_emulator/keys",
            [self.settings(key, f"r{self.serial}k{i}", rpm) for i, key in enumerate(keys)],
        )
        return keys

    @staticmethod
    def settings(key: str, label: str, rpm: int | None, **extra: Any) -> dict[str, Any]:
        return {
            "provider": "openai",
            "key": key,
            "label": label,
            "rpm": rpm,
            "rate_model": "sliding",
            "latency": list(LATENCY),
            **extra,
        }

    def key_requests(self, label: str) -> int:
        return int(self.stats()["keys"][label]["requests"])


class Redis:
    """``redis-server`` on a free loopback port, nothing persisted; stopped by its PID."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="keymux-bench-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Redis:
        assert self.binary is not None
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not answer")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)

    def url(self, prefix: str) -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix={prefix}"


@dataclass
class Run:
    label: str
    requests: int
    capacity: float
    results: list[dict[str, Any]] = field(default_factory=list)
    served_429: int = 0
    seen: int = 0  # requests the emulator received
    warnings: int = 0
    revoked_cost: int | None = None
    note: str = ""

    @property
    def ok(self) -> int:
        return sum(r["ok"] for r in self.results)

    @property
    def failed(self) -> int:
        """Requests not answered (an error, or a worker that did not report)."""
        return self.requests - self.ok

    @property
    def wall(self) -> float:
        return max(r["finished"] for r in self.results) - min(r["started"] for r in self.results)

    @property
    def goodput(self) -> float:
        return self.ok / self.wall / self.capacity if self.results and self.wall > 0 else 0.0

    @property
    def steady(self) -> float:
        """Goodput past the first window: what went beyond the first window's budget (there at
        time zero), per second, over the capacity; 1.0 is ideal pacing."""
        if not self.results or self.wall <= 0:
            return 0.0
        return (self.ok - self.capacity * WINDOW) / self.wall / self.capacity

    @property
    def share(self) -> float:
        return self.served_429 / self.seen if self.seen else 0.0


def spawn(
    state: str,
    base_url: str,
    keys: list[str],
    requests: int,
    callers: int,
    concurrency: int = CONCURRENCY,
) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--state",
        state,
        "--base-url",
        base_url,
        "--keys",
        ",".join(keys),
        "--requests",
        str(requests),
        "--callers",
        str(callers),
        "--concurrency",
        str(concurrency),
    ]
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run(
    emu: Emulator,
    label: str,
    state: str,
    requests: int,
    *,
    processes: int = PROCESSES,
    rpm: int | None = LIMIT,
    during: Any = None,
    callers: int | None = None,
    concurrency: int = CONCURRENCY,
) -> Run:
    keys = emu.fresh_keys(KEYS, rpm)
    capacity = KEYS * LIMIT / WINDOW if rpm else float("nan")
    result = Run(label, requests, capacity)
    emu.post("/_emulator/reset", {})
    share = [requests // processes + (i < requests % processes) for i in range(processes)]
    procs = [
        spawn(state, emu.base_url("openai"), keys, n, callers or KEYS * concurrency, concurrency)
        for n in share
    ]
    for proc in procs:
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    if during is not None:
        during(result, keys, procs)
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0 or not out.strip():
            result.note = f"a worker failed: {err.strip()[-300:]}"
            continue
        result.results.append(json.loads(out.strip().splitlines()[-1]))
        result.warnings += err.count("is unreachable")
    total = emu.stats()["total"]
    result.served_429 = int(total.get("rate_limited", 0))
    result.seen = int(total.get("requests", 0))
    return result


def halfway(emu: Emulator, requests: int) -> None:
    """Wait until the emulator has answered about half of the run's requests."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if int(emu.stats()["total"].get("ok", 0)) >= requests // 2:
            return
        time.sleep(0.01)


def revoke_halfway(emu: Emulator, requests: int) -> Any:
    def during(result: Run, keys: list[str], procs: Any) -> None:
        halfway(emu, requests)
        label = f"r{emu.serial}k0"
        before = emu.key_requests(label)
        emu.post("/_emulator/keys", [emu.settings(keys[0], label, LIMIT, faults={"revoked": True})])
        for proc in procs:
            proc.wait(timeout=600)
        result.revoked_cost = emu.key_requests(label) - before

    return during


def restart_halfway(emu: Emulator, requests: int, redis: Redis) -> Any:
    def during(result: Run, keys: list[str], procs: Any) -> None:
        halfway(emu, requests)
        redis.stop()
        time.sleep(0.3)  # an outage the processes must notice and ride out
        redis.start()

    return during


def pacing_table(runs: list[Run]) -> str:
    rows = []
    for r in runs:
        rows.append(
            [
                r.label,
                f"{r.goodput:.3f}" if r.results else "-",
                f"{r.steady:.3f}" if r.results else "-",
                r.ok,
                f"{r.served_429} ({100 * r.share:.1f}%)",
                r.failed,
                "-" if r.revoked_cost is None else r.revoked_cost,
                r.warnings,
                r.note or "",
            ]
        )
    return table(
        [
            "run",
            "goodput",
            "past 1st window",
            "ok",
            "429s",
            "failed",
            "revoked key's cost",
            "warnings",
            "note",
        ],
        rows,
        title=f"{PROCESSES} processes x the same {KEYS} keys, {LIMIT}/s each (sliding, "
        "learned from headers)",
    )


def cost_table(memory: Run, shared: Run, alone: Run | None) -> tuple[str, list[str]]:
    def per(r: Run) -> float:
        return 1000 * sum(x["cpu"] for x in r.results) / max(1, r.ok)

    info = shared.results[0]["shared"] if shared.results else None
    rows = [["memory://", f"{per(memory):.3f}", "0", "0", "-"]]
    notes = []
    if info:
        sent = max(1, shared.results[0]["sent"])
        rows.append(
            [
                "redis://",
                f"{per(shared):.3f}",
                f"{info['reserves'] / sent:.3f}",
                f"{info['flushes'] / sent:.3f}",
                f"{1000 * info['reserve_ms_avg']:.0f}" if info["reserve_ms_avg"] else "-",
            ]
        )
        notes.append(
            f"redis:// adds {1000 * (per(shared) - per(memory)):.0f} µs of client CPU per "
            f"request; {info['refused']} of {info['reserves']} reserves said no"
        )
    if alone is not None and alone.results and alone.results[0]["shared"]:
        mean = alone.results[0]["shared"]["reserve_ms_avg"]
        notes.append(
            f"a reserve with 1 request in flight: {1000 * mean:.0f} µs wall (one round trip, "
            "loopback)"
        )
    text = table(
        [
            "state",
            "client CPU ms/req",
            "round trips/attempt (hot path)",
            "pipelines/attempt (settles)",
            "reserve µs (wall, mean)",
        ],
        rows,
        title="per-attempt cost: 1 process, 4 unlimited keys, 100 in flight",
    )
    return text, notes


def store_round_trip(url: str, n: int) -> float:
    """Mean seconds of one reserve against the store alone, one after another (no keymux
    request around it): the round trip and the script."""
    from keymux.state import parse_state_url
    from keymux.state._redis import RedisStore
    from keymux.state._store import Ask

    async def go() -> float:
        store = RedisStore(parse_state_url(url))
        await store.connect()
        await store.reserve(Ask("bench", "m", "warm"))
        started = time.perf_counter()
        for i in range(n):
            await store.reserve(Ask("bench", "m", f"r{i}", req_limit=1e9, req_window=60.0))
        spent = time.perf_counter() - started
        await store.close()
        return spent / n

    return asyncio.run(go())


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run")
    p.add_argument("--windows", type=float, default=4.0, help="windows' worth per row")
    p.add_argument("--json-out", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--state", help=argparse.SUPPRESS)
    p.add_argument("--base-url", help=argparse.SUPPRESS)
    p.add_argument("--keys", help=argparse.SUPPRESS)
    p.add_argument("--requests", type=int, help=argparse.SUPPRESS)
    p.add_argument("--callers", type=int, default=KEYS * CONCURRENCY, help=argparse.SUPPRESS)
    p.add_argument("--concurrency", type=int, default=CONCURRENCY, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.windows = 0.75
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        return worker_main(args)
    requests = round(args.windows * KEYS * LIMIT)
    cost_requests = 100 if args.quick else 3000
    print(
        f"keymux multi-process benchmark ({machine()}); emulator and redis-server are "
        "separate processes on 127.0.0.1"
    )
    emu = Emulator()
    try:
        emu.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    redis = Redis() if shutil.which("redis-server") else None
    runs: list[Run] = []
    out: dict[str, Any] = {}
    try:
        if redis is not None:
            redis.start()
        runs.append(run(emu, "memory://", "memory://", requests))
        if redis is None:
            print("redis-server is not installed: the redis:// rows are skipped")
        else:
            runs.append(run(emu, "redis://", redis.url("b1"), requests))
            runs.append(
                run(
                    emu,
                    "memory://, key 0 revoked halfway",
                    "memory://",
                    requests,
                    during=revoke_halfway(emu, requests),
                )
            )
            runs.append(
                run(
                    emu,
                    "redis://, key 0 revoked halfway",
                    redis.url("b2"),
                    requests,
                    during=revoke_halfway(emu, requests),
                )
            )
            runs.append(
                run(
                    emu,
                    "redis://, Redis restarted halfway",
                    redis.url("b3"),
                    requests,
                    during=restart_halfway(emu, requests, redis),
                )
            )
        print(pacing_table(runs))
        by = {r.label: r for r in runs}
        shared = by.get("redis://")
        if shared is not None:
            ok = (
                shared.goodput >= TARGET_GOODPUT
                and shared.share <= TARGET_429
                and shared.failed == 0
            )
            print(
                f"{verdict(ok)}  redis://: goodput {shared.goodput:.3f} (target >= "
                f"{TARGET_GOODPUT}; past the first window {shared.steady:.3f}), "
                f"429s {100 * shared.share:.1f}% (<= {100 * TARGET_429:g}%), "
                f"{shared.failed} failed (0); memory:// beside it: goodput "
                f"{by['memory://'].goodput:.3f}, 429s {100 * by['memory://'].share:.1f}%, "
                f"{by['memory://'].failed} failed"
            )
            revoked = by["redis://, key 0 revoked halfway"]
            cost = revoked.revoked_cost
            print(
                f"{verdict(cost is not None and cost <= TARGET_REVOKED)}"
                f"  revoked key: {revoked.revoked_cost} requests across {PROCESSES} processes "
                f"(target <= {TARGET_REVOKED}); memory:// "
                f"{by['memory://, key 0 revoked halfway'].revoked_cost}"
            )
            restarted = by["redis://, Redis restarted halfway"]
            print(
                f"{verdict(restarted.failed == 0 and restarted.ok == requests)}  Redis restart: "
                f"{restarted.ok} of {requests} answered, {restarted.failed} failed, "
                f"{restarted.warnings} warnings ({PROCESSES} processes)"
            )
            memory_cost = run(
                emu,
                "cost memory://",
                "memory://",
                cost_requests,
                processes=1,
                rpm=None,
                callers=100,
                concurrency=25,
            )
            redis_cost = run(
                emu,
                "cost redis://",
                redis.url("b4"),
                cost_requests,
                processes=1,
                rpm=None,
                callers=100,
                concurrency=25,
            )
            alone = run(
                emu,
                "cost redis:// alone",
                redis.url("b5"),
                40 if args.quick else 500,
                processes=1,
                rpm=None,
                callers=1,
                concurrency=1,
            )
            text, notes = cost_table(memory_cost, redis_cost, alone)
            alone_s = store_round_trip(redis.url("b6"), 200 if args.quick else 2000)
            notes.append(
                f"the reserve script alone, one after another: {1e6 * alone_s:.0f} µs per round "
                "trip (redis-py asyncio + hiredis, loopback)"
            )
            print(text)
            for note in notes:
                print(note)
            out["cost"] = {"memory": memory_cost.results, "redis": redis_cost.results}
        out["runs"] = [
            {
                "run": r.label,
                "goodput": round(r.goodput, 4),
                "goodput_past_first_window": round(r.steady, 4),
                "ok": r.ok,
                "failed": r.failed,
                "served_429": r.served_429,
                "seen": r.seen,
                "revoked_cost": r.revoked_cost,
                "warnings": r.warnings,
                "note": r.note,
            }
            for r in runs
        ]
    finally:
        emu.stop()
        if redis is not None:
            redis.stop()
            shutil.rmtree(redis.dir, ignore_errors=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
