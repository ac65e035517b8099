"""Which provider's language a request speaks, and answers keymux writes in that language.

A path names its provider (``/openai/v1/...`` is Groq, ``/v1/messages`` Anthropic,
``/v1beta/...`` Gemini). Paths two providers share (``/v1/models``, Gemini's ``/v1/...``) and
paths keymux does not know are told apart by the caller's headers, as the SDKs send them:
``anthropic-version`` or ``x-api-key`` -> Anthropic; ``x-goog-api-key`` or a ``key=`` query
parameter -> Gemini; anything else -> OpenAI.

Every answer keymux makes itself (a refused token, a bad body, an unknown path, no key left)
is in the caller's provider's own error shape (``Adapter.error_body``), so each SDK raises its
usual exception; it carries ``x-should-retry: false`` so the SDK does not retry on top of
keymux.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from multidict import CIMultiDict

from .._errors import (
    AuthenticationError,
    CapacityError,
    ClosedError,
    ConnectionError,
    InvalidRequestError,
    KeymuxError,
    MalformedResponseError,
    NoKeyAvailableError,
    QueueFullError,
    QuotaExhaustedError,
    RateLimitedError,
    RequestTimeoutError,
    UnsupportedError,
    UpstreamError,
)
from ..providers import ADAPTERS

__all__ = ["error_response", "keymux_error_response", "sniff", "status_of"]

_JSON = "application/json"


def sniff(headers: Mapping[str, str], query: Mapping[str, str], path: str) -> str:
    """The provider a request on a shared or unknown path speaks (headers first, then the
    path's shape)."""
    if "anthropic-version" in headers or "x-api-key" in headers:
        return "claude"
    if "x-goog-api-key" in headers or "key" in query:
        return "gemini"
    if path.startswith("/openai/"):
        return "groq"
    if path.startswith("/v1beta/") or path == "/v1beta":
        return "gemini"
    if path.startswith("/v1/messages"):
        return "claude"
    return "openai"


def error_response(
    provider: str,
    status: int,
    message: str,
    *,
    key_name: str | None = None,
    attempts: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> web.Response:
    """An error answer keymux makes itself, in ``provider``'s shape."""
    headers: CIMultiDict[str] = CIMultiDict()
    headers["Content-Type"] = _JSON
    headers["x-should-retry"] = "false"
    if key_name:
        headers["x-keymux-key"] = key_name
    headers["x-keymux-attempts"] = str(attempts or 0)
    if extra:
        headers.update(extra)
    return web.Response(
        status=status, body=ADAPTERS[provider].error_body(status, message), headers=headers
    )


#: keymux errors raised with no provider answer to show -> the HTTP status the caller gets
_STATUS: tuple[tuple[type[KeymuxError], int], ...] = (
    (QueueFullError, 429),
    (RateLimitedError, 429),
    (QuotaExhaustedError, 429),
    (NoKeyAvailableError, 503),
    (CapacityError, 503),
    (ClosedError, 503),
    (AuthenticationError, 503),
    (RequestTimeoutError, 504),
    (ConnectionError, 502),
    (MalformedResponseError, 502),
    (InvalidRequestError, 400),
    (UnsupportedError, 400),
)


def status_of(exc: KeymuxError) -> int:
    """The status a caller gets for ``exc`` (raised when keymux had no answer to pass on)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    if isinstance(exc, UpstreamError) and exc.status and 400 <= exc.status < 600:
        return exc.status
    return 502


def keymux_error_response(provider: str, exc: KeymuxError) -> web.Response:
    """The answer for a KeymuxError raised with no provider answer to show: 429 when keys are
    cooling or queues are full, 503 when no key is usable, 504 for a deadline, 502 when the
    provider could not be reached."""
    status = status_of(exc)
    extra = {"retry-after": "1"} if status == 429 else None
    return error_response(
        provider,
        status,
        str(exc),
        key_name=exc.key_name,
        attempts=exc.attempts,
        extra=extra,
    )
