"""Tables and JSON output for the CLI. Only masked keys are ever shown."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["key_table", "stats_table", "write_json"]

_STATUS_STYLE = {"active": "green", "cooling": "yellow", "parked": "yellow", "disabled": "red"}


def stats_table(stats: dict[str, dict[str, dict[str, Any]]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column, justify in (
        ("provider", "left"),
        ("key name", "left"),
        ("key", "left"),
        ("usage", "right"),
        ("ok", "right"),
        ("retries", "right"),
        ("rate-limited", "right"),
        ("failures", "right"),
        ("share", "right"),
        ("status", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for provider, keys in stats.items():
        total = sum(k["successes"] for k in keys.values()) or 1
        for name, k in keys.items():
            style = _STATUS_STYLE.get(k["status"], "")
            status = k["status"]
            if k.get("disabled_reason"):
                status += f" ({k['disabled_reason']})"
            table.add_row(
                provider,
                name,
                k["key"],
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
        table.add_column(column)
    for k in keys:
        table.add_row(k["provider"], k["name"], k["key"], k["source"])
    return table


def write_json(path: str | os.PathLike[str], data: dict[str, Any], console: Console) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    console.print(f"statistics written to [bold]{target}[/]")
