"""The ``keymux`` command: demo, check, keys, emulate, serve.

Mistakes on the command line (a bad flag value, an unreadable ``--env-file``, a port in use)
end in one line on stderr naming the problem and what to do, and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from rich.console import Console

from .. import __version__
from .._env import PROVIDER_VARIABLES
from .._errors import KeymuxError
from .._names import PROVIDERS as _PROVIDERS
from ._args import (
    CliError,
    Parser,
    base_url,
    dotenv_path,
    listen_error,
    port,
    positive_float,
    positive_int,
    strategy_name,
)

__all__ = ["main"]


def _env_default(name: str, default: str) -> str:
    """CLI flags readable from KEYMUX_* variables."""
    return os.environ.get(f"KEYMUX_{name}", default)


_ENV_FILE_HELP = "the .env file to read ('' for none; default: ./.env if there is one)"


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="keymux",
        description="Spread LLM API traffic across many API keys of OpenAI, Groq, Anthropic "
        "and Gemini.",
    )
    parser.add_argument("--version", action="version", version=f"keymux {__version__}")
    sub = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        help="what to run ('keymux COMMAND --help' for its options; "
        "'python -m keymux' alone runs check)",
    )

    demo = sub.add_parser(
        "demo",
        help="run the built-in emulator with fake keys (no real key)",
        description="Start keymux's emulator of the four APIs on loopback with fake keys and "
        "small rate limits (it also injects 500 and 529 errors), send concurrent requests "
        "through the multiplexer, print the per-key table and write the statistics as JSON.",
    )
    demo.add_argument(
        "--requests",
        type=positive_int,
        default=_env_default("DEMO_REQUESTS", "300"),
        metavar="N",
        help="requests in all, spread over the four providers (env KEYMUX_DEMO_REQUESTS)",
    )
    demo.add_argument(
        "--window",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="seconds of the emulator's rate-limit window",
    )
    demo.add_argument(
        "--strategy",
        type=strategy_name,
        default="rate-aware",
        metavar="NAME",
        help="how keymux picks a key: round-robin, least-loaded, weighted or rate-aware",
    )
    demo.add_argument(
        "--json-out",
        default="keymux-demo-stats.json",
        metavar="FILE",
        help="where to write the statistics",
    )

    check = sub.add_parser(
        "check",
        help="test the keys found in the environment and .env",
        description="Find your API keys in the environment and .env, send a few concurrent "
        "requests per provider through them (real calls: they count against your quotas), "
        "print the per-key table and write the statistics as JSON.",
    )
    check.add_argument(
        "--json-out",
        default="keymux-check-stats.json",
        metavar="FILE",
        help="where to write the statistics",
    )
    check.add_argument(
        "--requests", type=positive_int, default=5, metavar="N", help="requests per provider"
    )
    check.add_argument(
        "--concurrency",
        type=positive_int,
        default=8,
        metavar="N",
        help="requests in flight at once, in all",
    )
    check.add_argument(
        "--strategy",
        type=strategy_name,
        default="round-robin",
        metavar="NAME",
        help="how keymux picks a key: round-robin, least-loaded, weighted or rate-aware",
    )
    check.add_argument(
        "--deadline",
        type=positive_float,
        default=120.0,
        metavar="SECONDS",
        help="seconds each request may take in all (queueing, retries, attempts)",
    )
    check.add_argument("--env-file", default=None, metavar="FILE", help=_ENV_FILE_HELP)
    for provider in _PROVIDERS:
        flags = [f"--{provider}-base-url"]
        if provider == "claude":
            flags.append("--anthropic-base-url")
        check.add_argument(
            *flags,
            dest=f"{provider}_base_url",
            type=base_url,
            default=None,
            metavar="URL",
            help=f"base URL for {provider} keys (e.g. the emulator); wins over "
            f"{PROVIDER_VARIABLES[provider].base_url[0]}",
        )

    keys = sub.add_parser(
        "keys",
        help="list the keys found (masked) and where they came from",
        description="List the API keys found in the environment and .env, masked, with the "
        "variable and file each came from, and any problem with the .env file. Sends nothing.",
    )
    keys.add_argument("--env-file", default=None, metavar="FILE", help=_ENV_FILE_HELP)

    emulate = sub.add_parser(
        "emulate",
        help="run the emulator as a server for offline clients",
        description="Serve keymux's emulator of the four APIs (OpenAI, Groq, Anthropic, Gemini) "
        "on HOST:PORT until Ctrl-C, with their rate limits, headers and errors, for trying "
        "clients and SDKs offline. Without --key every key is accepted.",
    )
    emulate.add_argument(
        "--host",
        default=_env_default("EMULATE_HOST", "127.0.0.1"),
        metavar="HOST",
        help="address to listen on (env KEYMUX_EMULATE_HOST)",
    )
    emulate.add_argument(
        "--port",
        type=port,
        default=_env_default("EMULATE_PORT", "8700"),
        metavar="PORT",
        help="port to listen on, 0 for a free one (env KEYMUX_EMULATE_PORT)",
    )
    emulate.add_argument(
        "--window",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="seconds of the per-minute window",
    )
    emulate.add_argument(
        "--day-window",
        type=positive_float,
        default=86400.0,
        metavar="SECONDS",
        help="seconds of the per-day window (for --rpd)",
    )
    emulate.add_argument(
        "--rpm", type=positive_int, default=None, metavar="N", help="requests per window, per key"
    )
    emulate.add_argument(
        "--tpm", type=positive_int, default=None, metavar="N", help="tokens per window, per key"
    )
    emulate.add_argument(
        "--rpd", type=positive_int, default=None, metavar="N", help="requests per day, per key"
    )
    emulate.add_argument(
        "--latency",
        default="0",
        metavar="SECONDS|LOW:HIGH",
        help="seconds per answer (0 or more), or a range drawn per request, e.g. 0.01:0.03",
    )
    emulate.add_argument(
        "--rate-model",
        choices=("sliding", "token-bucket", "fixed"),
        default="sliding",
        help="how budgets refill: sliding (an exact sliding window), token-bucket "
        "(continuously refilled) or fixed (windows aligned to the clock)",
    )
    emulate.add_argument(
        "--key",
        action="append",
        default=None,
        metavar="PROVIDER:KEY",
        help="register a key (repeatable); without any, every key is accepted",
    )
    emulate.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the emulator's random draws (latency ranges, injected faults), so a run "
        "can be repeated (default: 0)",
    )

    from ._serve import add_parser as add_serve_parser

    add_serve_parser(sub)
    return parser


def _console() -> Console:
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    return console


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    console = _console()
    with _warnings_on_stderr():
        try:
            return _run(args, console)
        except KeyboardInterrupt:
            _fail(args.command, "interrupted")
            return 130
        except (CliError, KeymuxError) as exc:
            _fail(args.command, str(exc))
            return 2
        except OSError as exc:
            if args.command != "emulate":
                raise
            _fail(args.command, listen_error(exc, args.host, args.port))
            return 2


class _OneLine(logging.Formatter):
    """A record as one line: its message, then its exception's type and text if it has one."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            text += f" ({type(exc).__name__}: {exc})"
        return " ".join(text.splitlines())


@contextlib.contextmanager
def _warnings_on_stderr() -> Iterator[None]:
    """keymux's warnings (a key disabled, a .env line skipped) on stderr while a command runs.

    The library's logger has only a ``NullHandler``; the command is the application here, so it
    shows them itself, one line each.
    """
    logger = logging.getLogger("keymux")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_OneLine())
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _run(args: argparse.Namespace, console: Console) -> int:
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
            dotenv_path=dotenv_path(args.env_file),
            deadline=args.deadline,
        )
    if args.command == "keys":
        from ._keys import keys

        return keys(console, dotenv_path=dotenv_path(args.env_file))
    if args.command == "serve":
        from ._serve import serve

        return serve(args)
    from ._emulate import emulate

    return emulate(console, args)


def _fail(command: str, message: str) -> None:
    sys.stderr.write(f"keymux {command}: error: {message}\n")


def module_main() -> int:
    """``python -m keymux``: the standalone check, or any subcommand given."""
    argv = sys.argv[1:]
    return main(argv or ["check"])
