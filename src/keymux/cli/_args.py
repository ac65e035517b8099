"""Argument checking for the CLI: value types that fail at parse time, one-line errors.

A mistake on the command line ends in one line on stderr that names the problem and what to
do, and exit status 2 (argparse's own convention), never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
from typing import Any, NoReturn

from .._config import check_base_url
from .._errors import ConfigError
from .._strategies import STRATEGIES, resolve_strategy

__all__ = [
    "CliError",
    "HelpFormatter",
    "Parser",
    "base_url",
    "dotenv_path",
    "listen_error",
    "port",
    "positive_float",
    "positive_int",
    "strategy_name",
]


class CliError(Exception):
    """A mistake the user can fix: ``main`` prints the message on one line and exits 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each flag's default, unless it has none or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in help_text.lower():
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose sub-parsers share its help format and its one-line errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def positive_int(text: str) -> int:
    """A whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs a whole number of 1 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"needs a number above 0, got {text}")
    return value


def port(text: str) -> int:
    """A TCP port: a whole number from 0 to 65535 (0 asks the system for a free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: use 1-65535 (0 picks a free one)")
    return value


def strategy_name(text: str) -> str:
    """A built-in strategy's name (or an alias of one), as its canonical name."""
    if text.strip().lower() == "specific":
        raise argparse.ArgumentTypeError(
            "'specific' pins every request to one key; here keymux spreads requests over all "
            "keys: use round-robin, least-loaded, weighted or rate-aware"
        )
    try:
        name, _ = resolve_strategy(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(
            f"unknown strategy {text!r}: use one of {', '.join(STRATEGIES)}"
        ) from None
    return name


def base_url(text: str) -> str:
    """An http(s) URL with a host."""
    try:
        url = check_base_url(text)
    except ConfigError:
        # (not the value: a key pasted into the wrong flag must not be echoed)
        raise argparse.ArgumentTypeError(
            "needs an http:// or https:// URL with a host, like http://127.0.0.1:8700 "
            "(keymux emulate)"
        ) from None
    assert url is not None
    return url


def dotenv_path(value: str | None) -> str | None:
    """The .env file to read: ``value`` if given ('' for none), else ``./.env`` if it exists.

    A file that was named but is missing, or that exists but cannot be read as UTF-8 text, is a
    ``CliError``: keys silently not loaded are worse than a clear stop.
    """
    if value == "":
        return None
    path = ".env" if value is None else value
    shown = "./.env" if value is None else path
    if not os.path.lexists(path):
        if value is None:
            return path  # no ./.env: fine, keys come from the environment
        raise CliError(
            f"--env-file {path}: no such file; name an existing file, or --env-file '' to read none"
        )
    try:
        with open(path, encoding="utf-8") as stream:
            stream.read()
    except IsADirectoryError:
        raise CliError(
            f"{shown} is a directory; name a .env file, or --env-file '' to read none"
        ) from None
    except UnicodeDecodeError as exc:
        raise CliError(
            f"{shown} is not UTF-8 text (undecodable byte at offset {exc.start}); save it as "
            "UTF-8, or --env-file '' to read none"
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CliError(
            f"cannot read {shown} ({reason}); make it readable by you "
            f"(chmod 600 {shlex.quote(path)}), or --env-file '' to read none"
        ) from None
    return path


def listen_error(exc: OSError, host: str, port: int) -> str:
    """One line for a server that could not listen on ``host:port`` (a port out of range is
    refused earlier, when the flags are parsed)."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: the port is in use; choose another --port"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied; choose a --port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: no such address here; check --host"
    reason = exc.strerror or str(exc)
    return f"cannot listen on {where}: {reason}; check --host and --port"
