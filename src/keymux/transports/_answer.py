"""What an official SDK gets back from keymux, as plain data: no HTTP library in here.

* ``attempt_timeout``: the SDK's per-request timeout (httpx's ``request.extensions["timeout"]``)
  as keymux's per-attempt ``Timeout``.
* ``answer_of``: a forwarded answer's status and headers, plus ``x-keymux-key``,
  ``x-keymux-attempts`` and, on a final failure, ``x-should-retry: false``.
* ``refusal``: the answer keymux writes itself when it has none from a provider to show (no key
  left, every queue full, closed): a provider-shaped error body that names key *names*.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .._config import Timeout
from .._core import Head
from .._errors import (
    AuthenticationError,
    BadRequestError,
    KeymuxError,
    QueueFullError,
    QuotaExhaustedError,
    RateLimitedError,
)
from .._forward import answer_headers
from .._secret import Secret
from ..providers import ADAPTERS, SSEParser, StreamFailure

__all__ = [
    "Answer",
    "EndWatch",
    "answer_of",
    "attempt_timeout",
    "is_event_stream",
    "refusal",
    "refusal_status",
]

KEY_HEADER = "x-keymux-key"
ATTEMPTS_HEADER = "x-keymux-attempts"
#: the Stainless SDKs (openai, anthropic, groq) read it before anything else: "false" means
#: "raise now", so an SDK does not sleep and retry on top of keymux's own retries
SHOULD_RETRY_HEADER = "x-should-retry"

#: headers keymux sets itself on every answer (an upstream copy is replaced)
_OURS = frozenset({KEY_HEADER, ATTEMPTS_HEADER, SHOULD_RETRY_HEADER})

#: the status of keymux's own answer when it gives up with no provider answer to show, by the
#: class of its error (the first match in the error's MRO); anything else is 503
_REFUSAL_STATUS: Mapping[type[KeymuxError], int] = {
    QueueFullError: 429,  # every queue is full: come back later
    RateLimitedError: 429,  # the keys are cooling
    QuotaExhaustedError: 429,  # a pinned key is parked until its quota resets
    AuthenticationError: 401,  # a pinned key was disabled as invalid
    BadRequestError: 400,
}
_NO_USABLE_KEY = 503  # NoKeyAvailableError, ClosedError, anything keymux could not send


@dataclass(frozen=True, slots=True)
class Answer:
    """The status line and headers an SDK gets, and the whole body unless it is a stream."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | None  # None: an event stream, read chunk by chunk


def is_event_stream(headers: Mapping[str, str]) -> bool:
    """The same test ``Core.forward`` makes: an event stream comes chunk by chunk, anything else
    as one whole body."""
    return headers.get("Content-Type", "").startswith("text/event-stream")


def answer_of(head: Head, body: bytes | None, secret: Secret | None = None) -> Answer:
    """A forwarded answer as the SDK gets it: hop-by-hop headers dropped (``answer_headers``),
    keymux's own added. A final failure (``head.error``) says ``x-should-retry: false``. The
    answering key's ``secret``, should a server echo it in a header, is masked (the core has
    already masked it in error bodies)."""
    headers = [(k, v) for k, v in answer_headers(head.headers) if k.lower() not in _OURS]
    if secret is not None:
        value = secret.reveal()
        headers = [(k, v.replace(value, secret.masked)) for k, v in headers]
    headers.append((KEY_HEADER, head.key_name))
    headers.append((ATTEMPTS_HEADER, str(head.attempts)))
    if head.error is not None:
        headers.append((SHOULD_RETRY_HEADER, "false"))
    return Answer(head.status, headers, body)


def refusal_status(exc: KeymuxError) -> int:
    """The HTTP status of keymux's own answer for ``exc`` (see ``_REFUSAL_STATUS``)."""
    for cls in type(exc).__mro__:
        status = _REFUSAL_STATUS.get(cls)
        if status is not None:
            return status
    return _NO_USABLE_KEY


def refusal(provider: str, exc: KeymuxError, key_names: Sequence[str]) -> Answer:
    """keymux's own answer when it gave up with no provider answer to show: the provider's
    error shape (``Adapter.error_body``), a message naming the key *names* it could use, and
    ``x-should-retry: false``. keymux's messages never hold a secret."""
    status = refusal_status(exc)
    names = ", ".join(key_names) if key_names else "none configured"
    message = f"keymux: {exc.message} (keys: {names})"
    headers = [("Content-Type", "application/json"), (SHOULD_RETRY_HEADER, "false")]
    if exc.key_name:
        headers.append((KEY_HEADER, exc.key_name))
    headers.append((ATTEMPTS_HEADER, str(exc.attempts or 0)))
    return Answer(status, headers, ADAPTERS[provider].error_body(status, message))


def attempt_timeout(extension: Mapping[str, float | None] | None) -> Timeout | None:
    """The SDK's per-request timeout as keymux's per-attempt ``Timeout``; None when the SDK set
    none (google-genai's default), so the multiplexer's own ``timeout`` applies.

    httpx's timeouts have no total: ``connect`` bounds getting a connection, ``read`` each wait
    for bytes (also between stream chunks). keymux's ``connect`` and ``read`` mean the same,
    so they are taken as they are and ``total`` is left unset: an SDK call with the Stainless
    default (600 s read, 5 s connect) may stream for as long as bytes keep coming, as it would
    without keymux. ``write`` and ``pool`` have no counterpart (the body is sent in one piece;
    waiting for a key is keymux's queue, bounded by ``queue_size``).
    """
    if not extension:
        return None
    return _timeout(_seconds(extension.get("connect")), _seconds(extension.get("read")))


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


@functools.lru_cache(maxsize=64)
def _timeout(connect: float | None, read: float | None) -> Timeout | None:
    # one Timeout per distinct setting: the engine caches its own form of each
    if connect is None and read is None:
        return None
    return Timeout(total=None, connect=connect, read=read)


class EndWatch:
    """Watches a forwarded event stream go by, to tell whether the provider's end marker
    (``[DONE]``, ``message_stop``, a final ``finishReason``) has been passed to the SDK.

    WORKAROUND (remove when ``Core.forward`` counts a stream as answered once its decoder is
    done): the Stainless SDKs stop reading at the end marker and close the response without
    reading the body's end, and ``Core.forward`` then counts the stream as abandoned (no
    success, no usage). When the marker went by, the transport reads the few bytes left
    before closing (``_transport.DRAIN_S`` at most)."""

    __slots__ = ("_decoder", "_parser", "done")

    def __init__(self, provider: str) -> None:
        self._parser: SSEParser | None = SSEParser()
        self._decoder = ADAPTERS[provider].stream_decoder()
        self.done = False

    def feed(self, chunk: bytes) -> None:
        parser = self._parser
        if parser is None or self.done:
            return
        try:
            for event in parser.feed(chunk):
                self._decoder.feed(event)
        except (StreamFailure, ValueError, TypeError, KeyError):
            self._parser = None  # an error event, or not the provider's format: not ours to judge
            return
        self.done = self._decoder.done
