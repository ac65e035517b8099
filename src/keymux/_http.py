"""The HTTP engine: one shared ``aiohttp.ClientSession``. No aiohttp type leaves this module.

``Engine.open`` sends keymux's ``HttpRequest`` and returns an ``Exchange``: the status, the
headers, and the body to read whole (``read``) or chunk by chunk as it arrives (``next_chunk``).
aiohttp's and the OS's errors are mapped here, once, to ``TransportFailure``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from ._config import Timeout
from ._types import HttpRequest, Kind, Outcome

__all__ = ["Engine", "Exchange", "TransportFailure"]


class TransportFailure(Exception):
    """The exchange failed before a complete answer arrived."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out

    def outcome(self, status: int = 0) -> Outcome:
        """The failure as the retry logic sees it."""
        return Outcome(
            Kind.TRANSPORT,
            status,
            self.message,
            error_type="timeout" if self.timed_out else "connection",
        )


def describe(exc: BaseException) -> TransportFailure:
    """Map an aiohttp/asyncio/OS error to a TransportFailure (message without secrets)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransportFailure("the attempt timed out connecting", timed_out=True)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return TransportFailure("the attempt timed out waiting for data", timed_out=True)
    if isinstance(exc, asyncio.TimeoutError):
        return TransportFailure("the attempt timed out", timed_out=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransportFailure(
            f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})",
            timed_out=False,
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return TransportFailure("the server closed the connection", timed_out=False)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransportFailure("the answer was cut off mid-body", timed_out=False)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return TransportFailure(f"connection error: {type(exc).__name__}", timed_out=False)
    return TransportFailure(f"transport error: {type(exc).__name__}", timed_out=False)


_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class Exchange:
    """One answer being received: ``status``, ``headers``, and its body.

    ``close()`` gives the connection back (or drops it when the body was not read to the end);
    it is safe to call more than once.
    """

    __slots__ = ("_resp", "_unclosed", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, unclosed: set[Exchange]) -> None:
        self._resp = resp
        self._unclosed = unclosed
        unclosed.add(self)
        self.status: int = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        """The whole body. Raises TransportFailure."""
        try:
            return await self._resp.read()
        except _TRANSPORT_ERRORS as exc:
            raise describe(exc) from exc

    async def next_chunk(self) -> bytes:
        """The next bytes of the body as they arrive; ``b""`` at its end. Raises
        TransportFailure."""
        try:
            return await self._resp.content.readany()
        except _TRANSPORT_ERRORS as exc:
            raise describe(exc) from exc

    def close(self) -> None:
        self._unclosed.discard(self)
        self._resp.release()


class Engine:
    """Sends keymux's ``HttpRequest``s. Created and closed on the core's event loop."""

    __slots__ = ("_last", "_limit", "_session", "_timeouts", "unclosed")

    def __init__(self, *, limit: int = 0) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        #: the answers not closed yet: a stream an SDK left unread and never closed (the
        #: groq SDK on an error event, google-genai when abandoned) is released at ``close``
        self.unclosed: set[Exchange] = set()
        self._timeouts: dict[Timeout, aiohttp.ClientTimeout] = {}
        self._last: tuple[Timeout, aiohttp.ClientTimeout] | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    def _timeout(self, timeout: Timeout) -> aiohttp.ClientTimeout:
        last = self._last
        if last is not None and last[0] is timeout:  # nearly always: the same few objects
            return last[1]
        mapped = self._timeouts.get(timeout)
        if mapped is None:
            mapped = self._timeouts[timeout] = aiohttp.ClientTimeout(
                total=timeout.total, connect=timeout.connect, sock_read=timeout.read
            )
        self._last = (timeout, mapped)
        return mapped

    async def open(self, req: HttpRequest, timeout: Timeout) -> Exchange:
        """Send the request and return once the status and headers are in. Raises
        TransportFailure."""
        try:
            resp = await self.session.request(
                req.method,
                req.url,
                headers=req.headers,
                data=req.body,
                timeout=self._timeout(timeout),
            )
        except _TRANSPORT_ERRORS as exc:
            raise describe(exc) from exc
        return Exchange(resp, self.unclosed)

    async def send(
        self, req: HttpRequest, timeout: Timeout
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One whole exchange: status, headers, body. Raises TransportFailure."""
        exchange = await self.open(req, timeout)
        try:
            return exchange.status, exchange.headers, await exchange.read()
        finally:
            exchange.close()

    async def close(self) -> None:
        """Release every answer still open (its connection closed, not pooled), then close
        the session."""
        for exchange in list(self.unclosed):
            exchange.close()
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def forget(self) -> None:
        """Drop the session without closing it (after fork: it belongs to the parent)."""
        self._session = None
        self.unclosed = set()
