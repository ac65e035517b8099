"""Configuration value objects, validated at once with errors that name what is wrong."""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._errors import ConfigError
from ._secret import Secret

__all__ = ["KeySpec", "MuxConfig", "RetryPolicy", "Timeout", "check_base_url", "check_positive"]


def check_positive(name: str, value: float | None, *, integer: bool = False) -> None:
    """Raise ConfigError unless value is None or a positive finite number."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    if integer and int(value) != value:
        raise ConfigError(f"{name} must be a whole number, got {value!r}")


def check_non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be zero or more, got {value!r}")


def check_base_url(base_url: str | None, *, what: str = "base_url") -> str | None:
    """Raise ConfigError for a base URL without an http(s) scheme or host."""
    if base_url is None:
        return None
    if not isinstance(base_url, str):
        raise ConfigError(f"{what} must be a string")
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{what} {base_url!r} needs a scheme and host, like https://api.openai.com/v1"
        )
    return base_url.strip().rstrip("/")


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeout:
    """Per-attempt timeouts in seconds: ``total`` for the whole attempt, ``connect`` to get a
    connection, ``read`` between bytes of the answer (also between stream chunks)."""

    total: float | None = 60.0
    connect: float | None = 10.0
    read: float | None = None

    def __post_init__(self) -> None:
        check_positive("timeout.total", self.total)
        check_positive("timeout.connect", self.connect)
        check_positive("timeout.read", self.read)

    @classmethod
    def of(cls, value: float | Timeout | None) -> Timeout:
        """A Timeout from a number of seconds (total), a Timeout, or None (no total limit)."""
        if isinstance(value, Timeout):
            return value
        if value is None:
            return cls(total=None)
        check_positive("timeout", value)
        return cls(total=float(value), connect=min(10.0, float(value)))


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Backoff and retry limits. By default: 1 s before the first retry (jittered down to as
    little as 0.75 s), growing by a factor of 2 up to 60 s, at most 5 retries, and a provider's
    retry-after waited for up to 120 s."""

    initial_retry_delay: float = 1.0
    backoff_factor: float = 2.0
    max_retries: int = 5
    max_retry_delay: float = 60.0
    #: a provider's retry-after beyond this many seconds is not waited for on that key
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        check_non_negative("initial_retry_delay", self.initial_retry_delay)
        check_positive("backoff_factor", self.backoff_factor)
        if self.backoff_factor < 1:
            raise ConfigError(f"backoff_factor must be at least 1, got {self.backoff_factor!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ConfigError("max_retries must be a whole number")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be zero or more, got {self.max_retries!r}")
        check_positive("max_retry_delay", self.max_retry_delay)
        check_positive("max_retry_after", self.max_retry_after)


@dataclass(frozen=True, slots=True, kw_only=True)
class MuxConfig:
    """Multiplexer-wide settings."""

    max_concurrent_requests: int = 5
    queue_size: int = 100
    retry: RetryPolicy = RetryPolicy()
    timeout: Timeout = Timeout()

    def __post_init__(self) -> None:
        check_positive("max_concurrent_requests", self.max_concurrent_requests, integer=True)
        if isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int):
            raise ConfigError("queue_size must be a whole number")
        if self.queue_size < 0:
            raise ConfigError(f"queue_size must be zero or more, got {self.queue_size!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySpec:
    """One key as found in code, the environment or a .env file."""

    provider: str
    name: str
    secret: Secret
    source: str = "code"  # "code", "env", ".env:<path>"
    max_concurrent: int | None = None
    base_url: str | None = None
    rpm: float | None = None
    tpm: float | None = None
    rpd: float | None = None
    weight: float = 1.0
    group: str | None = None
    priority: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"a {self.provider} key needs a non-empty name")
        if not isinstance(self.secret, Secret):
            raise ConfigError(f"{self.provider} key {self.name!r}: the key must be a string")
        value = self.secret.reveal()
        if not value.strip():
            raise ConfigError(f"{self.provider} key {self.name!r} is empty")
        if value != value.strip() or any(c in value for c in "\r\n\t "):
            raise ConfigError(
                f"{self.provider} key {self.name!r} contains whitespace; check how it was copied"
            )
        check_positive(
            f"{self.provider} key {self.name!r}: max_concurrent", self.max_concurrent, integer=True
        )
        for label in ("rpm", "tpm", "rpd"):
            check_positive(f"{self.provider} key {self.name!r}: {label}", getattr(self, label))
        check_positive(f"{self.provider} key {self.name!r}: weight", self.weight)
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ConfigError(
                f"{self.provider} key {self.name!r}: priority must be a whole number (0 is the "
                f"first tier), got {type(self.priority).__name__}"
            )
        if self.priority < 0:
            raise ConfigError(
                f"{self.provider} key {self.name!r}: priority must be 0 or more (0 is the "
                f"first tier), got {self.priority!r}"
            )
        if self.group is not None and (not isinstance(self.group, str) or not self.group):
            raise ConfigError(f"{self.provider} key {self.name!r}: group must be a non-empty str")
        object.__setattr__(
            self,
            "base_url",
            check_base_url(self.base_url, what=f"{self.provider} key {self.name!r}: base_url"),
        )

    def __repr__(self) -> str:
        return (
            f"KeySpec(provider={self.provider!r}, name={self.name!r}, "
            f"secret={self.secret.masked!r}, source={self.source!r})"
        )
