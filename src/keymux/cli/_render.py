"""Tables, messages and JSON output for the CLI. Only masked keys are ever shown.

Names, keys and sources are never cut: in a terminal a long one folds onto the next line of its
cell; in output that is not a terminal (a pipe, a file, CI logs) a table is printed at its full
width, so every name stays whole on one line for grep.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from .._env import EnvProblem
from ._args import CliError

__all__ = ["key_table", "print_env_problems", "print_table", "stats_table", "write_json"]

_STATUS_STYLE = {"active": "green", "cooling": "yellow", "parked": "yellow", "disabled": "red"}
_PROBLEM_STYLE = {"error": "red", "warning": "yellow", "info": "dim"}
#: wider than any table keymux prints: measure a table's natural width against it
_UNBOUNDED = 100_000


def stats_table(stats: dict[str, dict[str, dict[str, Any]]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column, justify, whole in (
        ("provider", "left", False),
        ("key name", "left", True),
        ("key", "left", True),
        ("usage", "right", False),
        ("ok", "right", False),
        ("retries", "right", False),
        ("rate-limited", "right", False),
        ("failed attempts", "right", False),
        ("share", "right", False),
        ("status", "left", True),
    ):
        table.add_column(column, justify=justify, overflow="fold" if whole else "ellipsis")  # type: ignore[arg-type]
    for provider, keys in stats.items():
        total = sum(k["successes"] for k in keys.values()) or 1
        for name, k in keys.items():
            style = _STATUS_STYLE.get(k["status"], "")
            status = k["status"]
            if k.get("disabled_reason"):
                status += f" ({k['disabled_reason']})"
            status = escape(status)
            table.add_row(
                provider,
                escape(name),
                escape(k["key"]),
                str(k["usage"]),
                str(k["successes"]),
                str(k["retries"]),
                str(k["rate_limited"]),
                str(k["failures"]),
                f"{100 * k['successes'] / total:.0f}%",
                f"[{style}]{status}[/]" if style else status,
            )
    return table


def key_table(keys: list[dict[str, Any]]) -> Table:
    table = Table(title="keys found", title_justify="left")
    for column in ("provider", "name", "key", "source"):
        table.add_column(column, overflow="fold")
    for k in keys:
        table.add_row(k["provider"], escape(k["name"]), escape(k["key"]), escape(k["source"]))
    return table


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` without cutting a cell: at its full width when not on a terminal."""
    if console.is_terminal:
        console.print(table)
        return
    natural = Measurement.get(console, console.options.update(width=_UNBOUNDED), table).maximum
    width = console.width
    if natural <= width:
        console.print(table)
        return
    console.width = natural
    try:
        console.print(table)
    finally:
        console.width = width


def print_env_problems(
    console: Console, problems: Iterable[EnvProblem], *, include_info: bool = True
) -> None:
    """One line per problem, ``source:line: message`` (as ``from_env`` logs them)."""
    for problem in problems:
        if problem.level == "info" and not include_info:
            continue
        style = _PROBLEM_STYLE.get(problem.level, "")
        console.print(f"[{style}]{escape(str(problem))}[/]", soft_wrap=True)


def write_json(path: str | os.PathLike[str], data: dict[str, Any], console: Console) -> None:
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CliError(
            f"cannot write the statistics to {target} ({reason}); choose another --json-out"
        ) from None
    console.print(f"statistics written to [bold]{escape(str(target))}[/]", soft_wrap=True)
