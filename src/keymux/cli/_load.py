"""Concurrent load through a multiplexer, with a rich progress bar: shared by demo and check."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .._errors import KeymuxError
from .._multiplexer import Multiplexer

__all__ = ["LoadResult", "run_load"]

PROMPTS = (
    "Say hi in three words.",
    "Name a colour.",
    "What is 2 + 2?",
    "Give me one word that rhymes with key.",
)


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    by_provider: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.sent,
            "succeeded": self.ok,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.ok / self.seconds, 2) if self.seconds else None,
            "errors": dict(self.errors),
            "by_provider": self.by_provider,
        }


async def run_load(
    mux: Multiplexer,
    plan: dict[str, int],
    *,
    concurrency: int,
    strategy: str,
    console: Console,
    max_tokens: int = 16,
    deadline: float | None = None,
) -> LoadResult:
    """Send ``plan[provider]`` chat requests per provider, at most ``concurrency`` at once."""
    if concurrency < 1:  # a semaphore of 0 would wait forever
        raise ValueError(f"concurrency must be 1 or more, got {concurrency}")
    result = LoadResult()
    gate = asyncio.Semaphore(concurrency)
    clients = {p: mux.get_client(p, strategy=strategy) for p, n in plan.items() if n}
    total = sum(plan.values())

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("requests", total=total)

        async def one(provider: str, i: int) -> None:
            counts = result.by_provider.setdefault(provider, {"ok": 0, "failed": 0})
            async with gate:
                try:
                    await clients[provider].acall(
                        "chat",
                        messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                        max_tokens=max_tokens,
                        deadline=deadline,
                    )
                except KeymuxError as exc:
                    result.failed += 1
                    counts["failed"] += 1
                    result.errors[type(exc).__name__] += 1
                else:
                    result.ok += 1
                    counts["ok"] += 1
                finally:
                    progress.advance(task)

        started = time.perf_counter()
        jobs = [one(p, i) for p, n in plan.items() for i in range(n)]
        result.sent = len(jobs)
        await asyncio.gather(*jobs)
        result.seconds = time.perf_counter() - started
    return result
