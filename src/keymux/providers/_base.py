"""The adapter protocol: what keymux needs to know about one provider's HTTP API.

An adapter is stateless and pure: it builds ``HttpRequest`` data, parses bodies, classifies
answers and reads rate-limit headers. It never does I/O. The core owns sending, retrying and
pacing. Streams are read through a per-stream ``StreamDecoder`` the adapter creates.
"""

from __future__ import annotations

import codecs
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Protocol

from .._types import HttpRequest, Outcome, Parsed, Prepared, RateSnapshot, Usage

__all__ = ["Adapter", "AdapterBase", "SSEEvent", "SSEParser", "StreamDecoder", "StreamFailure"]


class StreamFailure(Exception):
    """Raised by a StreamDecoder for an error event inside a 200 stream."""

    def __init__(self, message: str, *, error_type: str | None = None, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.retryable = retryable


class SSEEvent:
    """One server-sent event."""

    __slots__ = ("data", "event")

    def __init__(self, event: str | None, data: str) -> None:
        self.event = event
        self.data = data

    def __repr__(self) -> str:
        return f"SSEEvent(event={self.event!r}, data={self.data!r})"


class SSEParser:
    """Incremental SSE decoder: feed bytes as they arrive, get complete events back.

    Accepts LF, CRLF and CR line endings; joins multi-line ``data:``; ignores comments and ids.
    """

    __slots__ = ("_buf", "_data", "_decoder", "_event")

    def __init__(self) -> None:
        self._buf = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes | str) -> list[SSEEvent]:
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        buf = self._buf + text
        hold = ""
        if buf.endswith("\r"):  # may be the first half of "\r\n": decide with the next chunk
            buf, hold = buf[:-1], "\r"
        if "\r" in buf:
            buf = buf.replace("\r\n", "\n").replace("\r", "\n")
        *lines, rest = buf.split("\n")
        self._buf = rest + hold
        events: list[SSEEvent] = []
        for line in lines:
            self._line(line, events)
        return events

    def close(self) -> list[SSEEvent]:
        """Flush at end of stream (an event without its final blank line still counts)."""
        events: list[SSEEvent] = []
        if self._buf.strip("\r"):
            self._line(self._buf.strip("\r"), events)
        self._buf = ""
        self._line("", events)
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if line == "":
            if self._data:
                events.append(SSEEvent(self._event, "\n".join(self._data)))
            self._event = None
            self._data = []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value


class AdapterBase(ABC):
    """What every adapter shares: ``build`` (its ``prepare``, then ``url``), a plain ``url``
    join (OpenAI's adds its path prefix), the whole-model ``limit_scope`` and the repr."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"keymux.providers.{type(self).__name__}()"

    @abstractmethod
    def prepare(
        self, endpoint: str, params: Mapping[str, Any], *, model: str | None, stream: bool
    ) -> Prepared: ...

    def url(self, base_url: str, path: str) -> str:
        """``path`` (relative to the official base URL) joined to ``base_url``."""
        return base_url.rstrip("/") + path

    def build(
        self,
        endpoint: str,
        params: Mapping[str, Any],
        *,
        model: str | None,
        stream: bool,
        base_url: str,
        api_key: str,
    ) -> HttpRequest:
        prepared = self.prepare(endpoint, params, model=model, stream=stream)
        return prepared.for_key(self.url(base_url, prepared.path), api_key)

    def limit_scope(self, model: str | None) -> str:
        """Whose rate limits a request for ``model`` spends: the model itself (the provider
        limits each model separately); "" when no model is named."""
        return model or ""


class StreamDecoder(Protocol):
    """Reads one provider stream, event by event."""

    #: True once the provider's end-of-stream marker arrived ([DONE], message_stop, finishReason)
    done: bool

    def feed(self, event: SSEEvent) -> str | None:
        """Take one event; return a text delta for the caller, or None.
        Raise ``StreamFailure`` for an error event, ``ValueError`` for garbage."""
        ...

    def result(self) -> Parsed:
        """The whole answer so far: full text, model, usage, finish reason."""
        ...


class Adapter(Protocol):
    """One provider's wire protocol. Found by name in ``keymux.providers.ADAPTERS``."""

    #: canonical provider name: "openai", "groq", "claude", "gemini"
    name: str
    #: the base URL the provider's official SDK uses (paths are relative to it)
    default_base_url: str
    #: endpoint -> model used when the caller passes model=None
    default_models: Mapping[str, str]
    #: endpoints this provider supports ("chat", "embed")
    endpoints: frozenset[str]
    #: where the key goes: header ``auth_header`` with value ``auth_prefix + key``
    auth_header: str
    auth_prefix: str

    def prepare(
        self, endpoint: str, params: Mapping[str, Any], *, model: str | None, stream: bool
    ) -> Prepared:
        """What a call sends, before any key is chosen. ``params`` holds ``messages`` (chat) or
        ``input`` (embed) plus provider parameters. Raises ``keymux.InvalidRequestError`` /
        ``UnsupportedError`` for a request that cannot be sent."""
        ...

    def url(self, base_url: str, path: str) -> str:
        """A path relative to the official base URL, joined to a key's ``base_url``."""
        ...

    def build(
        self,
        endpoint: str,
        params: Mapping[str, Any],
        *,
        model: str | None,
        stream: bool,
        base_url: str,
        api_key: str,
    ) -> HttpRequest:
        """``prepare`` and one attempt's request at once."""
        ...

    def parse(self, endpoint: str, body: Any, *, model: str | None = None) -> Parsed:
        """Read a 2xx JSON body; ``ValueError`` (with a clear message) if fields are missing.
        ``model`` is the model the request asked for (``Prepared.model``): the model of an
        answer that names none (Gemini's embeddings)."""
        ...

    def stream_decoder(self) -> StreamDecoder:
        """A fresh decoder for one streamed chat answer."""
        ...

    def error_body(self, status: int, message: str) -> bytes:
        """An error answer in this provider's own JSON shape, for answers keymux makes itself
        (no key left for a forwarded request, a proxy token refused)."""
        ...

    def limit_scope(self, model: str | None) -> str:
        """Whose rate limits a request for ``model`` spends (budgets are kept per scope)."""
        ...

    def usage_of(self, body: Any) -> Usage:
        """The token usage a 2xx JSON answer of any endpoint reports; zeros when none."""
        ...

    def classify(
        self, status: int, headers: Mapping[str, str], body: bytes, now_wall: float
    ) -> Outcome:
        """Classify a non-2xx answer (body may be empty or not JSON); ``now_wall`` is the Unix
        time the answer arrived (for HTTP-date and absolute reset times)."""
        ...

    def rate_snapshot(self, headers: Mapping[str, str], now_wall: float) -> RateSnapshot | None:
        """Rate-limit facts from any answer's headers (None if there are none)."""
        ...

    def estimate_tokens(self, endpoint: str, params: Mapping[str, Any]) -> int:
        """A quick upper-ish estimate of the tokens a request will use (prompt + max output)."""
        ...

    def probe(self, *, base_url: str, api_key: str) -> HttpRequest:
        """A cheap request that succeeds iff the key works (its models endpoint)."""
        ...
