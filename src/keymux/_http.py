"""The HTTP engine: one shared ``aiohttp.ClientSession``; aiohttp's errors are mapped here, once."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from ._config import Timeout
from ._types import HttpRequest, Kind, Outcome

__all__ = ["Engine", "TransportFailure", "client_timeout"]

USER_AGENT = "keymux/0.1 (+aiohttp)"


class TransportFailure(Exception):
    """The exchange failed before a complete answer arrived."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out

    def outcome(self) -> Outcome:
        """The failure as the retry logic sees it."""
        return Outcome(
            Kind.TRANSPORT,
            0,
            self.message,
            error_type="timeout" if self.timed_out else "connection",
        )


def client_timeout(timeout: Timeout) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=timeout.total, connect=timeout.connect, sock_read=timeout.read
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


TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class Engine:
    """Sends keymux's ``HttpRequest``s. Created and closed on the core's event loop."""

    __slots__ = ("_limit", "_session")

    def __init__(self, *, limit: int = 0) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300),
                headers={"User-Agent": USER_AGENT},
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def send(
        self, req: HttpRequest, timeout: aiohttp.ClientTimeout
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One whole exchange: status, headers, body. Raises TransportFailure."""
        try:
            async with self.session.request(
                req.method, req.url, headers=req.headers, data=req.body, timeout=timeout
            ) as resp:
                body = await resp.read()
                return resp.status, resp.headers, body
        except TRANSPORT_ERRORS as exc:
            raise describe(exc) from exc

    async def open(
        self, req: HttpRequest, timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """Start an exchange whose body the caller reads (streams). Raises TransportFailure."""
        try:
            return await self.session.request(
                req.method, req.url, headers=req.headers, data=req.body, timeout=timeout
            )
        except TRANSPORT_ERRORS as exc:
            raise describe(exc) from exc

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def forget(self) -> None:
        """Drop the session without closing it (after fork: it belongs to the parent)."""
        self._session = None
