"""``keymux keys``: the keys found, masked, with where each came from."""

from __future__ import annotations

from rich.console import Console

from .._env import discover_keys
from ._render import key_table, print_env_problems, print_table

__all__ = ["keys"]


def keys(console: Console, *, dotenv_path: str | None) -> int:
    scan = discover_keys(dotenv_path=dotenv_path, use_dotenv=dotenv_path is not None)
    rows = [
        {"provider": k.provider, "name": k.name, "key": k.secret.masked, "source": k.source}
        for k in scan.keys
    ]
    print_env_problems(console, scan.problems)
    if not rows:
        console.print("No API keys found. keymux looked for:")
        for pattern in scan.looked_for:
            console.print(f"  {pattern}")
        return 1
    print_table(console, key_table(rows))
    return 0
