"""The ``keymux`` command: demo, check, keys, emulate, serve."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rich.console import Console

from .. import __version__

__all__ = ["main"]

_PROVIDERS = ("openai", "groq", "claude", "gemini")


def _env_default(name: str, default: str) -> str:
    """CLI flags readable from KEYMUX_* variables."""
    return os.environ.get(f"KEYMUX_{name}", default)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keymux",
        description="Spread LLM API traffic across many API keys of OpenAI, Groq, Anthropic "
        "and Gemini.",
    )
    parser.add_argument("--version", action="version", version=f"keymux {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the built-in emulator with fake keys (no real key)")
    demo.add_argument("--requests", type=int, default=_env_default("DEMO_REQUESTS", "300"))
    demo.add_argument(
        "--window",
        type=float,
        default=1.0,
        help="seconds of the emulator's rate-limit window (default 1)",
    )
    demo.add_argument("--strategy", default="rate-aware")
    demo.add_argument("--json-out", default="keymux-demo-stats.json")

    check = sub.add_parser("check", help="test the keys found in the environment and .env")
    check.add_argument("--json-out", default="keymux-check-stats.json")
    check.add_argument("--requests", type=int, default=5, help="requests per provider")
    check.add_argument("--concurrency", type=int, default=8)
    check.add_argument("--strategy", default="round-robin")
    check.add_argument(
        "--deadline", type=float, default=120.0, help="seconds each request may take in all"
    )
    check.add_argument("--env-file", default=".env", help="the .env file to read ('' for none)")
    for provider in _PROVIDERS:
        flags = [f"--{provider}-base-url"]
        if provider == "claude":
            flags.append("--anthropic-base-url")
        check.add_argument(
            *flags,
            dest=f"{provider}_base_url",
            default=None,
            help=f"base URL for {provider} keys (e.g. the emulator)",
        )

    keys = sub.add_parser("keys", help="list the keys found (masked) and where they came from")
    keys.add_argument("--env-file", default=".env")

    emulate = sub.add_parser("emulate", help="run the emulator as a server for offline clients")
    emulate.add_argument("--host", default=_env_default("EMULATE_HOST", "127.0.0.1"))
    emulate.add_argument("--port", type=int, default=_env_default("EMULATE_PORT", "8700"))
    emulate.add_argument(
        "--window", type=float, default=60.0, help="seconds of the per-minute window (default 60)"
    )
    emulate.add_argument("--day-window", type=float, default=86400.0)
    emulate.add_argument("--rpm", type=int, default=None, help="requests per window, per key")
    emulate.add_argument("--tpm", type=int, default=None, help="tokens per window, per key")
    emulate.add_argument("--rpd", type=int, default=None, help="requests per day, per key")
    emulate.add_argument(
        "--latency",
        default="0",
        metavar="SECONDS|LOW:HIGH",
        help="seconds per answer, or a range drawn per request, e.g. 0.01:0.03 (default 0)",
    )
    emulate.add_argument(
        "--rate-model",
        choices=("sliding", "token-bucket", "fixed"),
        default="sliding",
        help="how budgets refill: an exact sliding window (default), a continuously refilled "
        "token bucket, or fixed windows aligned to the clock",
    )
    emulate.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="PROVIDER:KEY",
        help="register a key (repeatable); without any, every key is accepted",
    )
    emulate.add_argument("--seed", type=int, default=0)

    from ._serve import add_parser as add_serve_parser

    add_serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    if args.command is None:
        _parser().print_help()
        return 0
    if args.command == "demo":
        from ._demo import demo

        return demo(
            console,
            requests=args.requests,
            window=args.window,
            json_out=args.json_out,
            strategy=args.strategy,
        )
    if args.command == "check":
        from ._check import check

        base_urls = {
            p: getattr(args, f"{p}_base_url") for p in _PROVIDERS if getattr(args, f"{p}_base_url")
        }
        return check(
            console,
            requests=args.requests,
            concurrency=args.concurrency,
            strategy=args.strategy,
            json_out=args.json_out,
            base_urls=base_urls,
            dotenv_path=args.env_file or None,
            deadline=args.deadline,
        )
    if args.command == "keys":
        from ._keys import keys

        return keys(console, dotenv_path=args.env_file or None)
    if args.command == "serve":
        from ._serve import serve

        return serve(args)
    from ._emulate import emulate

    return emulate(console, args)


def module_main() -> int:
    """``python -m keymux``: the standalone check, or any subcommand given."""
    argv = sys.argv[1:]
    return main(argv or ["check"])
