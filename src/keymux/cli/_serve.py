"""``keymux serve``: the proxy (``keymux.server``) from the command line.

Every flag can also be set by a ``KEYMUX_*`` variable (``--max-body`` by ``KEYMUX_MAX_BODY``),
as uvicorn does; a flag on the command line wins. Proxy tokens are never flags (a command line
is visible to every user of the machine): ``KEYMUX_PROXY_TOKEN`` or ``--token-file``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from .._errors import KeymuxError
from ._args import listen_error, port, positive_int

__all__ = ["add_parser", "serve"]

_SIZE = re.compile(r"(\d+)\s*([kmg]i?b?|b)?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _env(name: str) -> str:
    return f"KEYMUX_{name}"


def _typed(env: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type that says which variable a bad default came from."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except argparse.ArgumentTypeError as exc:
            where = f" (from {env})" if os.environ.get(env) == text else ""
            raise argparse.ArgumentTypeError(f"{exc}{where}") from None

    parse.__name__ = convert.__name__
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"needs zero or more seconds, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"needs a number of seconds above 0, got {text}")
    return value


def _size(text: str) -> int:
    """Bytes: ``1048576``, ``512k``, ``32M``, ``1GiB``."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"needs a size such as 32M or 1048576, got {text!r}")
    unit = (match.group(2) or "").lower()[:1]
    value = int(match.group(1)) * _UNITS[unit]
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs a size of 1 byte or more, got {text!r}")
    return value


def _flag(env: str) -> bool:
    return os.environ.get(env, "").strip().lower() in ("1", "true", "yes", "on")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``serve`` sub-command and its flags."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run the proxy: every provider's API with keymux's keys, /metrics, /dashboard",
        description="One gateway for every app and language: OpenAI's, Groq's, Anthropic's "
        "and Gemini's APIs at their own paths (official SDKs work unchanged, with the proxy "
        "token as their API key), any provider through OpenAI's chat API (model "
        '"claude/...", "gemini/...", "groq/..."), /metrics, /healthz and a live /dashboard. '
        "Keys and base URLs come from the environment and .env, as Multiplexer.from_env() "
        "reads them. Callers authenticate with KEYMUX_PROXY_TOKEN (comma-separated for "
        "several) or --token-file.",
    )
    env = os.environ.get
    parser.add_argument(
        "--host",
        default=env(_env("HOST"), "127.0.0.1"),
        help="address to listen on (env KEYMUX_HOST); anything but loopback needs a token",
    )
    parser.add_argument(
        "--port",
        type=_typed(_env("PORT"), port),
        default=env(_env("PORT"), "8787"),
        help="port to listen on, 0 for a free one (env KEYMUX_PORT)",
    )
    parser.add_argument(
        "--token-file",
        default=env(_env("TOKEN_FILE")),
        metavar="FILE",
        help="proxy tokens, one per line ('#' comments), besides KEYMUX_PROXY_TOKEN "
        "(env KEYMUX_TOKEN_FILE)",
    )
    parser.add_argument(
        "--no-auth",
        action="store_true",
        default=_flag(_env("NO_AUTH")),
        help="accept callers without a token; only on a loopback host (env KEYMUX_NO_AUTH=1)",
    )
    parser.add_argument(
        "--grace",
        type=_typed(_env("GRACE"), _seconds),
        default=env(_env("GRACE"), "10"),
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, seconds the requests and streams in flight get to finish "
        "(env KEYMUX_GRACE)",
    )
    parser.add_argument(
        "--max-body",
        type=_typed(_env("MAX_BODY"), _size),
        default=env(_env("MAX_BODY"), "32M"),
        metavar="SIZE",
        help="largest request body accepted (bytes, or 512k, 32M, 1G); larger gets 413 "
        "(env KEYMUX_MAX_BODY)",
    )
    parser.add_argument(
        "--workers",
        type=_typed(_env("WORKERS"), positive_int),
        default=env(_env("WORKERS"), "1"),
        metavar="N",
        help="processes on one port (SO_REUSEPORT), each with its own multiplexer; with "
        "--state memory:// each paces its keys alone, with --state redis://... they share "
        "budgets and key status (env KEYMUX_WORKERS)",
    )
    parser.add_argument(
        "--state",
        default=env(_env("STATE"), "memory://"),
        metavar="URL",
        help="where key state lives: memory:// (this process) or redis://host:6379/0, "
        "rediss://, redis+unix://, redis+cluster:// (shared by every worker and host on the "
        "same URL; needs keymux[redis]) (env KEYMUX_STATE)",
    )
    parser.add_argument(
        "--timeout",
        type=_typed(_env("TIMEOUT"), _positive_seconds),
        default=env(_env("TIMEOUT"), "600"),
        metavar="SECONDS",
        help="seconds one upstream attempt may take, streams included (env KEYMUX_TIMEOUT)",
    )
    parser.add_argument(
        "--max-concurrent",
        type=_typed(_env("MAX_CONCURRENT"), positive_int),
        default=env(_env("MAX_CONCURRENT"), "5"),
        metavar="N",
        help="requests in flight at once per key (env KEYMUX_MAX_CONCURRENT)",
    )
    parser.add_argument(
        "--queue-size",
        type=_typed(_env("QUEUE_SIZE"), positive_int),
        default=env(_env("QUEUE_SIZE"), "100"),
        metavar="N",
        help="requests waiting per key; beyond it callers get 429 (env KEYMUX_QUEUE_SIZE)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="let pages from ORIGIN (http://localhost:3000; '*' for any) call the proxy from a "
        "browser, the proxy token still required; repeat for several (env KEYMUX_CORS_ORIGINS, "
        "comma-separated); off by default",
    )
    parser.add_argument(
        "--env-file",
        default=env(_env("ENV_FILE"), ".env"),
        metavar="FILE",
        help="the .env file keys are read from, '' for none (env KEYMUX_ENV_FILE)",
    )
    return parser


def serve(args: argparse.Namespace) -> int:
    """Run the proxy; a mistake is one line on stderr and exit status 2 (keymux's warnings
    reach stderr through the handler ``main`` puts on the logger while a command runs)."""
    try:
        from ..server import ServerConfig, load_tokens, run
        from ..server._metrics import import_prometheus

        import_prometheus()  # fail before anything binds
        config = ServerConfig(
            host=args.host,
            port=args.port,
            tokens=load_tokens(os.environ, args.token_file),
            no_auth=args.no_auth,
            grace=args.grace,
            max_body=args.max_body,
            workers=args.workers,
            state=args.state,
            timeout=args.timeout,
            dotenv_path=args.env_file or None,
            max_concurrent=args.max_concurrent,
            queue_size=args.queue_size,
            cors_origins=_cors_origins(args.cors_origin),
        )
        return run(config)
    except KeymuxError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(listen_error(exc, args.host, args.port))
    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C during the grace period
        return 130


def _cors_origins(flags: list[str] | None) -> tuple[str, ...]:
    """The --cors-origin flags, or else KEYMUX_CORS_ORIGINS (comma-separated)."""
    if flags is not None:
        return tuple(flags)
    listed = os.environ.get(_env("CORS_ORIGINS"), "")
    return tuple(o.strip() for o in listed.split(",") if o.strip())


def _fail(message: str) -> int:
    sys.stderr.write(f"keymux serve: error: {message}\n")
    return 2
