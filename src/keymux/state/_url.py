"""State URLs, as in the ``limits`` library: the scheme names the store.

    memory://                              this process only (the default)
    redis://[:password@]host[:port][/db]   one Redis server
    rediss://...                           the same over TLS
    redis+unix:///path/to/redis.sock[?db=N]
    redis+cluster://host:port[,host:port...]   Redis Cluster (any of its nodes to start from)

keymux's own options ride in the query and are taken out before the driver sees the URL:
``prefix`` (default ``keymux``: every key and channel starts with it, so deployments can
share one Redis) and ``timeout`` (seconds, default 0.1: the most one hot-path call may take
before the request goes on with local state).

A URL may hold a password: only ``masked`` is ever shown.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._errors import ConfigError

__all__ = ["DEFAULT_PREFIX", "DEFAULT_TIMEOUT", "SCHEMES", "StateURL", "parse_state_url"]

#: scheme -> the store that serves it (the table ``open_store`` reads)
SCHEMES = {
    "memory": "memory",
    "redis": "redis",
    "rediss": "redis",
    "redis+unix": "redis",
    "redis+cluster": "cluster",
}

DEFAULT_PREFIX = "keymux"
#: seconds one hot-path call to the store may take before the request goes on without it
DEFAULT_TIMEOUT = 0.1

_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class StateURL:
    """A parsed state URL: which store, the driver's URL (keymux's options taken out), the
    masked form for messages, and keymux's options."""

    scheme: str
    kind: str  # "memory", "redis" or "cluster"
    driver_url: str
    masked: str
    prefix: str = DEFAULT_PREFIX
    timeout: float = DEFAULT_TIMEOUT

    @property
    def shared(self) -> bool:
        return self.kind != "memory"

    def __repr__(self) -> str:
        return f"StateURL({self.masked!r})"


def _mask(parts: object, scheme: str) -> str:
    """The URL with any password replaced by ``***`` (and the query dropped)."""
    split = urlsplit(str(parts))
    netloc = split.netloc
    if "@" in netloc:
        auth, _, host = netloc.rpartition("@")
        user, sep, _ = auth.partition(":")
        netloc = f"{user}:***@{host}" if sep else f"***@{host}"
    return urlunsplit((scheme, netloc, split.path, "", ""))


def parse_state_url(url: object) -> StateURL:
    """``url`` checked and taken apart; ConfigError (naming only the scheme, never a password)
    for anything keymux cannot use."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            "state takes a URL: memory:// (this process), redis://host:6379/0, rediss://..., "
            "redis+unix:///path.sock or redis+cluster://host:port"
        )
    text = url.strip()
    split = urlsplit(text)
    scheme = split.scheme.lower()
    kind = SCHEMES.get(scheme)
    if kind is None:
        known = ", ".join(f"{name}://" for name in SCHEMES)
        raise ConfigError(f"state URL scheme {scheme or '(none)'}:// is not known (known: {known})")
    masked = _mask(text, scheme)
    if kind == "memory":
        if split.netloc or split.path.strip("/") or split.query:
            raise ConfigError("memory:// takes nothing after the scheme")
        return StateURL(scheme, kind, "memory://", "memory://")
    query = parse_qsl(split.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    timeout = DEFAULT_TIMEOUT
    rest: list[tuple[str, str]] = []
    for name, value in query:
        if name == "prefix":
            if not _PREFIX.match(value):
                raise ConfigError(
                    f"{masked}: prefix= takes 1-64 letters, digits, '_', '.', ':' or '-'"
                )
            prefix = value
        elif name == "timeout":
            try:
                timeout = float(value)
            except ValueError:
                timeout = math.nan
            if not math.isfinite(timeout) or not 0 < timeout <= 60:
                raise ConfigError(f"{masked}: timeout= takes seconds above 0 (at most 60)")
        else:
            rest.append((name, value))
    if scheme == "redis+unix":
        if not split.path:
            raise ConfigError(f"{masked}: redis+unix:// needs a socket path")
        tail = f"?{urlencode(rest)}" if rest else ""
        driver = f"unix://{split.netloc}{split.path}{tail}"
    elif scheme == "redis+cluster":
        if not split.netloc:
            raise ConfigError(f"{masked}: redis+cluster:// needs host:port of a cluster node")
        driver = urlunsplit(("redis", split.netloc, split.path, urlencode(rest), ""))
    else:
        if not split.hostname:
            raise ConfigError(f"{masked}: needs a host, e.g. {scheme}://localhost:6379/0")
        driver = urlunsplit((scheme, split.netloc, split.path, urlencode(rest), ""))
    return StateURL(scheme, kind, driver, masked, prefix, timeout)
