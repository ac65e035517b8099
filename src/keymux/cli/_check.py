"""``keymux check``: the seed's standalone test on real keys from the environment / .env."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from rich.console import Console

from .._env import discover_keys
from .._multiplexer import Multiplexer
from ._load import run_load
from ._render import key_table, stats_table, write_json

__all__ = ["check"]


async def _check(
    console: Console,
    *,
    requests: int,
    concurrency: int,
    strategy: str,
    json_out: str,
    base_urls: dict[str, str],
    dotenv_path: str | None,
    deadline: float,
) -> int:
    scan = discover_keys(dotenv_path=dotenv_path, use_dotenv=dotenv_path is not None)
    for problem in scan.problems:
        if problem.level != "info":
            console.print(f"[yellow]{problem.source}: {problem.message}[/]")
    if not scan.keys:
        console.print(
            "[red]No API keys found.[/] keymux looked for these variables "
            "(in the environment and .env):"
        )
        for pattern in scan.looked_for:
            console.print(f"  {pattern}")
        return 2
    specs = [
        dataclasses.replace(spec, base_url=base_urls[spec.provider])
        if spec.provider in base_urls
        else spec
        for spec in scan.keys
    ]
    mux = Multiplexer(max_retries=3, initial_retry_delay=0.5)
    async with mux:
        for spec in specs:
            mux._add_spec(spec)
        console.print(key_table(mux.key_info()))
        providers = sorted({spec.provider for spec in specs})
        plan = dict.fromkeys(providers, requests)
        result = await run_load(
            mux,
            plan,
            concurrency=concurrency,
            strategy=strategy,
            console=console,
            deadline=deadline,
        )
        stats = mux.get_usage_stats()
    console.print(stats_table({p: stats[p] for p in providers}, "per-key distribution"))
    console.print(
        f"{result.ok}/{result.sent} answered, {result.failed} failed, in {result.seconds:.1f} s"
    )
    data: dict[str, Any] = {
        "summary": result.as_dict(),
        "keys": {p: stats[p] for p in providers},
        "problems": [
            {
                "source": pr.source,
                "line": pr.line,
                "variable": pr.variable,
                "message": pr.message,
                "level": pr.level,
            }
            for pr in scan.problems
        ],
    }
    write_json(json_out, data, console)
    return 0 if result.failed == 0 else 1


def check(console: Console, **kwargs: Any) -> int:
    return asyncio.run(_check(console, **kwargs))
