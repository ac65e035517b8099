"""keymux's exception tree.

Every error keymux raises is a ``KeymuxError``. Messages name the provider and the key *name*,
never a secret. Where a builtin exception means the same thing, keymux's class is also one of
those (``ConfigError`` is a ``ValueError``, ``RequestTimeoutError`` a ``TimeoutError``,
``keymux.ConnectionError`` the builtin ``ConnectionError``), so ``except ConnectionError:`` in
code that knows nothing of keymux catches it too.

    KeymuxError
    ├── ConfigError (also ValueError)           a configuration mistake, raised at once
    ├── CapacityError
    │   ├── QueueFullError                      every queue the request could use is full
    │   └── NoKeyAvailableError                 no enabled key can serve the request
    ├── UpstreamError                           the provider answered with an error
    │   ├── RateLimitedError                    429 after the retries ran out
    │   ├── AuthenticationError                 401/403/invalid key: the key is disabled
    │   ├── QuotaExhaustedError                 billing / spend cap / daily quota spent
    │   ├── ProviderServerError                 5xx / 529 / overloaded after the retries ran out
    │   ├── BadRequestError                     400/404/413/422: the request itself is wrong
    │   ├── MalformedResponseError              the answer was not valid JSON or lacked fields
    │   └── StreamError                         a stream broke after some chunks reached the caller
    ├── TransportError
    │   ├── RequestTimeoutError (also TimeoutError)
    │   │                                       an attempt or the call's deadline timed out
    │   └── ConnectionError (also builtins.ConnectionError)
    │                                           the connection failed or was reset
    ├── InvalidRequestError (also ValueError)   the request cannot be sent as given
    ├── UnsupportedError (also ValueError)      the provider cannot do that endpoint
    ├── ClosedError (also RuntimeError)         the multiplexer is closed
    └── UsageError (also RuntimeError)          a call that cannot work where it was made
"""

from __future__ import annotations

import builtins

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "CapacityError",
    "ClosedError",
    "ConfigError",
    "ConnectionError",
    "InvalidRequestError",
    "KeymuxError",
    "MalformedResponseError",
    "NoKeyAvailableError",
    "ProviderServerError",
    "QueueFullError",
    "QuotaExhaustedError",
    "RateLimitedError",
    "RequestTimeoutError",
    "StreamError",
    "TransportError",
    "UnsupportedError",
    "UpstreamError",
    "UsageError",
]


class KeymuxError(Exception):
    """Base class of every error keymux raises."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        key_name: str | None = None,
        status: int | None = None,
        attempts: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.key_name = key_name
        self.status = status
        self.attempts = attempts

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[KeymuxError], message: str, state: dict[str, object]) -> KeymuxError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class ConfigError(KeymuxError, ValueError):
    """A configuration mistake: bad key, limit, provider, strategy, base URL or .env line."""


class CapacityError(KeymuxError):
    """keymux cannot take the request now."""


class QueueFullError(CapacityError):
    """Every queue the request could use is full."""


class NoKeyAvailableError(CapacityError):
    """No enabled key of the provider can serve the request."""


class UpstreamError(KeymuxError):
    """The provider answered with an error (the provider's message is kept)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        key_name: str | None = None,
        status: int | None = None,
        attempts: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(
            message, provider=provider, key_name=key_name, status=status, attempts=attempts
        )
        self.error_type = error_type
        self.code = code


class RateLimitedError(UpstreamError):
    """The provider kept answering 429 until the retries ran out."""


class AuthenticationError(UpstreamError):
    """The key was rejected (401/403/invalid key); keymux disabled it."""


class QuotaExhaustedError(UpstreamError):
    """The key's billing quota, spend cap or daily quota is spent."""


class ProviderServerError(UpstreamError):
    """The provider failed (5xx, 529 overloaded) until the retries ran out."""


class BadRequestError(UpstreamError):
    """The provider rejected the request itself (400/404/413/422): not retried."""


class MalformedResponseError(UpstreamError):
    """The provider's answer was not valid JSON or lacked the fields keymux needs."""


class StreamError(UpstreamError):
    """A stream failed after some chunks had reached the caller; it is never retried."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        key_name: str | None = None,
        status: int | None = None,
        attempts: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
        chunks_received: int = 0,
        text_received: str = "",
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            key_name=key_name,
            status=status,
            attempts=attempts,
            error_type=error_type,
            code=code,
        )
        self.chunks_received = chunks_received
        self.text_received = text_received


class TransportError(KeymuxError):
    """The HTTP exchange itself failed."""


class RequestTimeoutError(TransportError, TimeoutError):
    """An attempt timed out, or the call's deadline passed."""


class ConnectionError(TransportError, builtins.ConnectionError):  # noqa: A001 - by design
    """The connection could not be made or was reset."""


class InvalidRequestError(KeymuxError, ValueError):
    """The request cannot be sent as given; found before any key was used."""


class UnsupportedError(KeymuxError, ValueError):
    """The provider does not offer that endpoint (for example embeddings on Claude)."""


class ClosedError(KeymuxError, RuntimeError):
    """The multiplexer is closed, or closed before the request could finish."""


class UsageError(KeymuxError, RuntimeError):
    """A call that cannot work where it was made (a blocking call inside keymux's own loop)."""
