"""``keymux demo``: the emulator with fake keys, a few hundred concurrent requests, the table."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console

from .._multiplexer import Multiplexer
from ..emulator import Emulator, EmulatorKey, Faults
from ._load import LoadResult, run_load
from ._render import print_table, stats_table, write_json

__all__ = ["demo"]

#: (provider, key suffix, requests per window, faults) - small limits so pacing shows
DEMO_KEYS: tuple[tuple[str, str, int, Faults], ...] = (
    ("openai", "a", 12, Faults()),
    ("openai", "b", 12, Faults()),
    ("openai", "c", 24, Faults(server_error_rate=0.1)),
    ("groq", "a", 15, Faults()),
    ("groq", "b", 15, Faults()),
    ("claude", "a", 10, Faults(overloaded_rate=0.05)),
    ("claude", "b", 10, Faults()),
    ("claude", "c", 10, Faults()),
    ("gemini", "a", 12, Faults()),
    ("gemini", "b", 12, Faults()),
)

_PREFIX = {
    "openai": "sk-demo-",
    "groq": "gsk_demo_",
    "claude": "sk-ant-demo-",
    "gemini": "AIza-demo-",
}


def fake_key(provider: str, suffix: str) -> str:
    return f"{_PREFIX[provider]}{provider}-0000000000-{suffix * 4}"


async def _demo(
    console: Console, *, requests: int, window: float, json_out: str, strategy: str
) -> int:
    keys = [
        EmulatorKey(
            provider,
            fake_key(provider, suffix),
            rpm=limit,
            faults=faults,
            label=f"{provider}-{suffix}",
        )
        for provider, suffix, limit, faults in DEMO_KEYS
    ]
    emulator = Emulator(keys, window=window, latency=0.02, stream_chunk_delay=0.0, seed=7)
    await emulator.start(host="127.0.0.1", port=0)
    try:
        console.print(
            f"[bold]keymux demo[/]: the built-in emulator on {emulator.base_url('claude')} "
            f"with {len(keys)} fake keys over 4 providers, each allowed a few requests per "
            f"{window:g} s window; {requests} requests, strategy {strategy!r}."
        )
        mux = Multiplexer(max_concurrent_requests=4, initial_retry_delay=0.2, seed=7)
        async with mux:
            for provider, suffix, limit, _ in DEMO_KEYS:
                # OpenAI and Anthropic state their limits in headers: keymux learns them.
                # Groq's headers describe the daily limit and Gemini sends none, so their
                # per-minute budgets are configured (keymux's rpm is per 60 s: scale it).
                rpm = limit * 60 / window if provider in ("groq", "gemini") else None
                mux.add_key(
                    provider,
                    f"{provider}-{suffix}",
                    fake_key(provider, suffix),
                    base_url=emulator.base_url(provider),
                    rpm=rpm,
                )
            providers = sorted({p for p, *_ in DEMO_KEYS})
            share, extra = divmod(requests, len(providers))
            plan = {p: share + (1 if i < extra else 0) for i, p in enumerate(providers)}
            result = await run_load(mux, plan, concurrency=64, strategy=strategy, console=console)
            stats = mux.get_usage_stats()
        served = emulator.stats()
        print_table(console, stats_table(stats, "per-key distribution"))
        console.print(summary(result, served.get("total", {})), soft_wrap=True)
        data: dict[str, Any] = {
            "summary": result.as_dict(),
            "keys": stats,
            "emulator": served.get("total", {}),
        }
        write_json(json_out, data, console)
        unused = [f"{p}/{n}" for p, ks in stats.items() for n, k in ks.items() if not k["usage"]]
        if unused:
            console.print(f"[yellow]keys not used: {', '.join(unused)}[/]")
        return 0 if result.failed == 0 and not unused else 1
    finally:
        await emulator.stop()


def summary(result: LoadResult, served: dict[str, Any]) -> str:
    """The demo's last line: what was answered, and the faults the emulator injected on purpose
    (``served`` is the emulator's ``stats()["total"]``), which keymux retried."""
    faults = served.get("faults", {})
    errors = faults.get("server_error", 0)
    overloads = faults.get("overloaded", 0)
    limited = served.get("rate_limited", 0)
    rate = result.ok / result.seconds if result.seconds else 0.0
    line = f"{result.ok}/{result.sent} answered"
    if result.failed:
        kinds = ", ".join(f"{n} {name}" for name, n in sorted(result.errors.items()))
        line += f", {result.failed} failed ({kinds})"
    line += (
        f" in {result.seconds:.1f} s ({rate:.0f} req/s); the emulator injected "
        f"{_count(errors, 'server error')} (500) and {_count(overloads, 'overload')} (529) "
        f"and sent {_count(limited, 'rate-limit answer')} (429)"
    )
    if errors or overloads or limited:
        line += (
            "; keymux retried them, on other keys where one was free"
            if not result.failed
            else "; keymux retried them until its retries ran out"
        )
    return line + "."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def demo(console: Console, *, requests: int, window: float, json_out: str, strategy: str) -> int:
    return asyncio.run(
        _demo(console, requests=requests, window=window, json_out=json_out, strategy=strategy)
    )
