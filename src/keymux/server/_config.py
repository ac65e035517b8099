"""The proxy's settings and its callers' tokens: plain data, checked once at start-up.

Tokens come from ``KEYMUX_PROXY_TOKEN`` (comma-separated) and ``--token-file`` (one per line,
``#`` comments and blank lines skipped). They are compared in constant time against every
configured token, so neither a token's position in the list nor a shared prefix shows in the
time an answer takes.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import ConfigError
from ..state import parse_state_url
from ..state._redis import import_driver
from ._cors import check_origin

__all__ = [
    "DEFAULT_MAX_BODY",
    "ServerConfig",
    "TokenSet",
    "check_state_url",
    "is_loopback",
    "load_tokens",
    "masked_state_url",
]

#: 32 MiB: Anthropic's own limit for a Messages request
DEFAULT_MAX_BODY = 32 * 1024 * 1024

TOKEN_VARIABLE = "KEYMUX_PROXY_TOKEN"


class TokenSet:
    """The proxy tokens callers may present. ``repr`` shows how many, never one of them."""

    __slots__ = ("_tokens",)

    def __init__(self, tokens: Iterable[str]) -> None:
        unique: dict[bytes, None] = {}
        for token in tokens:
            if not token or any(c.isspace() for c in token):
                raise ConfigError("a proxy token must be non-empty and hold no whitespace")
            unique[token.encode()] = None
        self._tokens = tuple(unique)

    def __len__(self) -> int:
        return len(self._tokens)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def check(self, presented: str | None) -> bool:
        """Whether ``presented`` is one of the tokens. Every token is compared, always."""
        if presented is None:
            presented = ""
        given = presented.encode("utf-8", "surrogateescape")
        ok = False
        for token in self._tokens:
            ok |= hmac.compare_digest(token, given)
        return ok and bool(given)

    def __repr__(self) -> str:
        return f"TokenSet({len(self._tokens)} tokens)"

    # tokens cross to --workers processes (spawned): pickle as bytes, never shown in a repr
    def __getstate__(self) -> tuple[bytes, ...]:
        return self._tokens

    def __setstate__(self, state: tuple[bytes, ...]) -> None:
        self._tokens = state


def load_tokens(environ: Mapping[str, str], token_file: str | None) -> TokenSet:
    """Tokens from ``KEYMUX_PROXY_TOKEN`` and the token file. ConfigError names the source
    of a problem, never a token."""
    tokens: list[str] = []
    raw = environ.get(TOKEN_VARIABLE, "")
    if raw.strip():
        items = [item.strip() for item in raw.split(",")]
        if any(not item for item in items):
            raise ConfigError(f"{TOKEN_VARIABLE} has an empty item (a stray comma?)")
        tokens += items
    if token_file:
        path = Path(token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"--token-file {token_file}: cannot read it ({reason})") from None
        found = 0
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if any(c.isspace() for c in line):
                raise ConfigError(
                    f"--token-file {token_file}:{number}: a token holds no whitespace"
                )
            tokens.append(line)
            found += 1
        if not found:
            raise ConfigError(f"--token-file {token_file}: no token in it (one per line)")
    for token in tokens:
        if any(c.isspace() for c in token):
            raise ConfigError(f"{TOKEN_VARIABLE}: a token holds no whitespace")
    return TokenSet(tokens)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_state_url(url: str) -> str:
    """The state URL, checked (``memory://``, ``redis://``, ``rediss://``, ``redis+unix://``,
    ``redis+cluster://``); a clear ConfigError otherwise, which repeats only the scheme (the
    URL may hold a password)."""
    if not url.strip():
        raise ConfigError(
            "--state takes a URL: memory:// (each process keeps its own state) or "
            "redis://host:6379/0 (every worker and host shares one)"
        )
    spec = parse_state_url(url)
    if spec.shared:
        import_driver()  # fail at start-up, naming the extra to install
    return url.strip() if spec.shared else "memory://"


def masked_state_url(url: str) -> str:
    """The state URL as it may be shown (its password masked)."""
    return parse_state_url(url).masked


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything ``keymux serve`` was told. Picklable (workers get a copy)."""

    host: str = "127.0.0.1"
    port: int = 8787
    tokens: TokenSet = field(default_factory=lambda: TokenSet(()))
    no_auth: bool = False
    #: seconds in-flight requests and streams get to finish after SIGTERM/SIGINT
    grace: float = 10.0
    #: the largest request body accepted, in bytes
    max_body: int = DEFAULT_MAX_BODY
    workers: int = 1
    #: where the keys' shared facts live (memory://: each process alone; redis://...: shared)
    state: str = "memory://"
    #: seconds one upstream attempt may take (the SDKs' own default is 600)
    timeout: float = 600.0
    #: the .env file keys are read from (None: none)
    dotenv_path: str | None = ".env"
    #: per key: requests in flight at once, and waiting
    max_concurrent: int = 5
    queue_size: int = 100
    #: seconds between the dashboard's history samples
    sample_interval: float = 2.0
    #: listen with SO_REUSEPORT (set for every worker of --workers N)
    reuse_port: bool = False
    #: origins whose pages may read the answers (``*``: any); empty: no CORS
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port} is not a port: use 1-65535 (0 picks one)")
        if self.grace < 0:
            raise ConfigError(f"--grace must be zero or more seconds, got {self.grace:g}")
        if self.max_body < 1:
            raise ConfigError(f"--max-body must be at least 1 byte, got {self.max_body}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be 1 or more, got {self.workers}")
        if self.workers > 1 and self.port == 0:
            raise ConfigError("--workers above 1 needs a fixed --port (0 would give each its own)")
        if self.timeout <= 0:
            raise ConfigError(f"--timeout must be above 0 seconds, got {self.timeout:g}")
        if self.max_concurrent < 1 or self.queue_size < 1:
            raise ConfigError("--max-concurrent and --queue-size must be 1 or more")
        check_state_url(self.state)
        for origin in self.cors_origins:
            check_origin(origin)

    def check_auth(self) -> None:
        """Refuse to run open to the network: no token is fine only with ``--no-auth`` on a
        loopback host."""
        if self.no_auth:
            if not is_loopback(self.host):
                raise ConfigError(
                    f"--no-auth is allowed only on a loopback host (127.0.0.1, ::1, localhost), "
                    f"not {self.host}: set {TOKEN_VARIABLE} or --token-file instead"
                )
            return
        if not self.tokens:
            raise ConfigError(
                f"no proxy token: set {TOKEN_VARIABLE} (comma-separated for several) or "
                "--token-file, or pass --no-auth to run without one on a loopback host"
            )


def environ_snapshot() -> dict[str, str]:
    """The process environment, copied once (the loader reads it, nothing else does)."""
    return dict(os.environ)
