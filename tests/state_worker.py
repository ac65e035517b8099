"""One worker process of the multi-process shared-state tests.

    python tests/state_worker.py --state URL --base-url URL --key NAME=SECRET ... [--skew S]

One multiplexer with those OpenAI keys on that state URL, its clocks ``--skew`` seconds off.
Commands on stdin, one per line; each answers one JSON line on stdout:

    burst N    send N requests (``--concurrency`` at once), answer when they are done
    pin NAME   send one request pinned to key NAME, answer when it is done
    run        send requests back to back until ``stop``
    report     how it goes: answered, failed, each key's status, the sharing's state
    stop       stop sending, close the multiplexer, answer, exit

keymux's log (warnings) goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

from keymux import Multiplexer
from keymux._clock import SystemClock

MESSAGES = [{"role": "user", "content": "hi"}]


class SkewedClock(SystemClock):
    __slots__ = ("skew",)

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def now(self) -> float:
        return time.monotonic() + self.skew

    def wall(self) -> float:
        return time.time() + self.skew

    def call_at(self, when: float, callback: object) -> object:
        loop = asyncio.get_running_loop()
        return loop.call_at(loop.time() + (when - self.now()), callback)  # type: ignore[arg-type]


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.mux = Multiplexer(
            state=args.state,
            initial_retry_delay=0.01,
            max_retry_delay=0.2,
            timeout=10.0,
            close_grace=2.0,
            clock=SkewedClock(args.skew),
        )
        for item in args.key:
            name, _, secret = item.partition("=")
            self.mux.add_key("openai", name, secret, base_url=args.base_url)
        self.concurrency = args.concurrency
        self.ok = 0
        self.failed: dict[str, int] = {}
        self.running: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()

    async def one(self, pin: str | None = None) -> None:
        try:
            client = self.mux.get_openai_client(key_name=pin)
            await client.acall("chat", messages=MESSAGES)
            self.ok += 1
        except Exception as exc:
            name = type(exc).__name__
            self.failed[name] = self.failed.get(name, 0) + 1

    async def burst(self, n: int) -> None:
        left = iter(range(n))

        async def lane() -> None:
            for _ in left:
                await self.one()

        await asyncio.gather(*(lane() for _ in range(self.concurrency)))

    async def loop(self) -> None:
        while not self.stopping.is_set():
            await self.one()

    async def report(self) -> dict[str, Any]:
        stats = (await self.mux.aget_usage_stats())["openai"]
        shared = self.mux._core.shared
        return {
            "ok": self.ok,
            "failed": self.failed,
            "keys": {
                name: {"status": s["status"], "reason": s.get("disabled_reason")}
                for name, s in stats.items()
            },
            "shared": None if shared is None else shared.describe(),
        }


async def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--state", required=True)
    p.add_argument("--base-url", required=True)
    p.add_argument("--key", action="append", default=[])
    p.add_argument("--skew", type=float, default=0.0)
    p.add_argument("--concurrency", type=int, default=4)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    worker = Worker(args)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(data: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    while True:
        line = (await reader.readline()).decode().strip()
        if not line:
            line = "stop"
        command, _, arg = line.partition(" ")
        if command == "burst":
            await worker.burst(int(arg))
        elif command == "pin":
            await worker.one(arg)
        elif command == "run":
            worker.running = [
                asyncio.ensure_future(worker.loop()) for _ in range(worker.concurrency)
            ]
        elif command == "stop":
            worker.stopping.set()
            await asyncio.gather(*worker.running)
            report = await worker.report()
            await worker.mux.aclose()
            say(report)
            return 0
        say(await worker.report())


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
