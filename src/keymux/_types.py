"""Plain data passed between the core and the provider adapters. No I/O here."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "USER_AGENT",
    "HttpRequest",
    "Kind",
    "LimitInfo",
    "Outcome",
    "Parsed",
    "Prepared",
    "RateSnapshot",
    "Response",
    "Usage",
]


#: what keymux's own requests say they are (forwarded requests keep their caller's)
USER_AGENT = "keymux/0.1 (+aiohttp)"


@dataclass(slots=True)
class HttpRequest:
    """keymux's own description of one HTTP request; the engine sends it."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None

    def __repr__(self) -> str:  # headers hold the key: never show them
        return f"HttpRequest({self.method} {self.url})"


@dataclass(slots=True, frozen=True)
class Prepared:
    """What one call sends, built once before any key is chosen: everything but the key and
    the base URL. Each attempt adds the lane's key (``auth_header``: ``auth_prefix + key``)
    and joins ``path`` to the lane's base URL.

    keymux's own calls get it from ``Adapter.prepare``; a forwarded request (an official SDK's,
    or the proxy's) is one already: its path relative to the provider's official base URL,
    its headers without the caller's credential, its body replayable for retries.
    """

    method: str
    path: str  # relative to the base URL, query included
    headers: Mapping[str, str]  # no credential in here
    body: bytes | None
    model: str | None  # the model asked for: budgets and limits are kept per model
    auth_header: str
    auth_prefix: str = ""

    def for_key(self, url: str, api_key: str) -> HttpRequest:
        """The HTTP request of one attempt."""
        headers = dict(self.headers)
        headers[self.auth_header] = self.auth_prefix + api_key
        return HttpRequest(self.method, url, headers, self.body)

    def __repr__(self) -> str:
        return f"Prepared({self.method} {self.path}, model={self.model!r})"


@dataclass(slots=True)
class Usage:
    """Token counts of one answer."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }

    def __getitem__(self, name: str) -> int:
        return self.as_dict()[name]


@dataclass(slots=True)
class Parsed:
    """What an adapter read from a successful answer (whole body, or a finished stream)."""

    text: str | None
    model: str | None
    usage: Usage
    embeddings: list[list[float]] | None = None
    finish_reason: str | None = None


class Kind(enum.Enum):
    """How an answer is classified; the retry decision is made from this."""

    RATE_LIMITED = "rate_limited"  # short-term limit on this key (or its group): cool it, retry
    OVERLOADED = "overloaded"  # provider-wide (529, 503, Groq 498): retry, do not blame the key
    SERVER_ERROR = "server_error"  # 5xx: retry with backoff, the key backs off a little
    TRANSPORT = "transport"  # timeout / connection error: retry, the key backs off
    KEY_INVALID = "key_invalid"  # 401/403/API_KEY_INVALID: disable the key, move on
    QUOTA_SPENT = "quota_spent"  # billing / spend cap: disable the key, move on
    DAILY_LIMIT = "daily_limit"  # daily quota spent: park the key until its reset, move on
    TOO_LARGE = "too_large"  # request larger than this key's limit: not retried on this key
    BAD_REQUEST = "bad_request"  # 400/404/422: the caller's error, not retried
    MALFORMED = "malformed"  # 2xx whose body is garbage: that request fails, not retried


@dataclass(slots=True, frozen=True)
class Outcome:
    """An adapter's verdict on one answer that was not a usable success."""

    kind: Kind
    status: int
    message: str
    retry_after: float | None = None  # seconds the provider asked us to wait (header or body)
    error_type: str | None = None
    code: str | None = None
    #: a rate limit's own report of the limit that refused (the body's "Limit 20" or
    #: ``quotaValue``; None when it names none): ``dimension`` "requests" or "tokens",
    #: ``period`` the window it names in seconds (60.0 for "per minute", 86400.0 per day)
    limit: float | None = None
    dimension: str | None = None
    period: float | None = None


@dataclass(slots=True, frozen=True)
class LimitInfo:
    """One rate-limit dimension as a provider reported it."""

    limit: float | None
    remaining: float | None
    reset_after: float | None  # seconds from the moment the answer was read


@dataclass(slots=True, frozen=True)
class RateSnapshot:
    """Rate-limit facts read from one answer's headers."""

    requests: LimitInfo | None = None
    tokens: LimitInfo | None = None
    #: "minute" or "day": Groq's request headers describe the daily limit
    requests_window: str = "minute"


@dataclass(slots=True, eq=False)
class Response:
    """The answer to one call. ``resp.text`` or ``resp["text"]``."""

    text: str | None
    provider: str
    key_name: str
    model: str | None
    usage: Usage
    attempts: int
    latency_s: float
    raw: Any = field(repr=False)
    embeddings: list[list[float]] | None = field(default=None, repr=False)
    finish_reason: str | None = None

    _FIELDS = (
        "text",
        "provider",
        "key_name",
        "model",
        "usage",
        "attempts",
        "latency_s",
        "raw",
        "embeddings",
        "finish_reason",
    )

    def __getitem__(self, name: str | int) -> Any:
        if isinstance(name, int):
            if self.embeddings is None:
                raise TypeError("only an embeddings response can be indexed by position")
            return self.embeddings[name]
        if name not in self._FIELDS:
            raise KeyError(name)
        value = getattr(self, name)
        return value.as_dict() if isinstance(value, Usage) else value

    def __len__(self) -> int:
        if self.embeddings is None:
            raise TypeError("only an embeddings response has a length")
        return len(self.embeddings)

    def __iter__(self) -> Iterator[list[float]]:
        if self.embeddings is None:
            raise TypeError("only an embeddings response can be iterated")
        return iter(self.embeddings)

    def keys(self) -> tuple[str, ...]:
        return self._FIELDS

    def to_dict(self) -> dict[str, Any]:
        return {name: self[name] for name in self._FIELDS}
