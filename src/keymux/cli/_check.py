"""``keymux check``: the standalone test of real keys from the environment / .env.

The multiplexer is built the way a user's program builds one, with ``Multiplexer.from_env``;
the ``--*-base-url`` flags become the ``*_BASE_URL`` variables ``from_env`` honours (winning over
the environment and the .env file), so every key keeps the source it was found in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

from rich.console import Console

from .._env import PROVIDER_VARIABLES, looked_for
from .._multiplexer import Multiplexer
from ._load import run_load
from ._render import key_table, print_env_problems, print_table, stats_table, write_json

__all__ = ["check"]


def check_environ(base_urls: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with each ``--<provider>-base-url`` flag set as the provider's first
    ``*_BASE_URL`` variable (OPENAI_BASE_URL, GROQ_BASE_URL, ANTHROPIC_BASE_URL,
    GOOGLE_GEMINI_BASE_URL)."""
    out = dict(environ)
    for provider, url in base_urls.items():
        out[PROVIDER_VARIABLES[provider].base_url[0]] = url
    return out


class _Mute(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _env_problems_not_logged() -> Iterator[None]:
    """``from_env`` logs the .env problems it skips; the check prints them itself, once."""
    logger = logging.getLogger("keymux")
    mute = _Mute()
    logger.addFilter(mute)
    try:
        yield
    finally:
        logger.removeFilter(mute)


def check(
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
    environ = check_environ(base_urls, os.environ)
    with _env_problems_not_logged():
        mux = Multiplexer.from_env(
            environ=environ,
            dotenv_path=dotenv_path,
            max_retries=3,
            initial_retry_delay=0.5,
        )
    print_env_problems(console, mux.env_problems, include_info=False)
    keys = mux.key_info()
    if not keys:
        mux.close()
        console.print(
            "[red]No API keys found.[/] keymux looked for these variables "
            "(in the environment and .env):"
        )
        for pattern in looked_for():
            console.print(f"  {pattern}")
        return 2
    print_table(console, key_table(keys))
    return asyncio.run(
        _run(
            console,
            mux,
            providers=sorted({k["provider"] for k in keys}),
            requests=requests,
            concurrency=concurrency,
            strategy=strategy,
            json_out=json_out,
            deadline=deadline,
        )
    )


async def _run(
    console: Console,
    mux: Multiplexer,
    *,
    providers: list[str],
    requests: int,
    concurrency: int,
    strategy: str,
    json_out: str,
    deadline: float,
) -> int:
    async with mux:
        result = await run_load(
            mux,
            dict.fromkeys(providers, requests),
            concurrency=concurrency,
            strategy=strategy,
            console=console,
            deadline=deadline,
        )
        stats = mux.get_usage_stats()
    print_table(console, stats_table({p: stats[p] for p in providers}, "per-key distribution"))
    console.print(
        f"{result.ok}/{result.sent} answered, {result.failed} failed, in {result.seconds:.1f} s",
        soft_wrap=True,
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
            for pr in mux.env_problems
        ],
    }
    write_json(json_out, data, console)
    return 0 if result.failed == 0 else 1
