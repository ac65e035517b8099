"""httpx-style transports that hand each request of an official SDK to keymux.

One implementation serves both HTTP libraries the SDKs build on, ``httpx2`` (openai 3.x,
anthropic 2.x, google-genai 3.x) and ``httpx`` (groq 1.x): their transport APIs have the same
shape (``BaseTransport.handle_request``, ``AsyncBaseTransport.handle_async_request``,
``SyncByteStream`` / ``AsyncByteStream``, ``Response``, the ``TimeoutException`` tree). A
``Flavour`` is that API for one library, imported lazily: the classes here are combined with
the library's own base classes once per library, so each transport and stream *is* an
``httpx2.BaseTransport`` / ``httpx.SyncByteStream`` as the library checks.

Errors keymux raises with no answer to show become the library's own exceptions, at this one
boundary and ``from`` the KeymuxError (whose message names provider and key *name*, never a
secret)::

    before the answer's head       RequestTimeoutError  -> TimeoutException
                                   ConnectionError      -> ConnectError
    in the body (a stream broke)   RequestTimeoutError, StreamError(timeout) -> ReadTimeout
                                   StreamError (cut, reset)                  -> RemoteProtocolError
                                   any other KeymuxError                     -> ReadError
"""

from __future__ import annotations

import asyncio
import functools
import importlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .._core import Head
from .._errors import ConfigError, ConnectionError, KeymuxError, RequestTimeoutError, StreamError
from ._answer import Answer, EndWatch
from ._route import Route, open_exchange

__all__ = ["DEFAULT_LIBRARY", "LIBRARIES", "Flavour", "async_client", "flavour", "sync_client"]

#: the HTTP libraries keymux's drop-in clients can be built on
LIBRARIES = ("httpx2", "httpx")

#: the library each provider's current official SDK builds on (openai 3.x, anthropic 2.x and
#: google-genai 3.x: httpx2; groq 1.x: httpx)
DEFAULT_LIBRARY = MappingProxyType(
    {"openai": "httpx2", "claude": "httpx2", "gemini": "httpx2", "groq": "httpx"}
)

_INSTALL = "pip install 'keymux[sdk]'"

#: a StreamError's ``error_type`` -> the library exception it becomes in the body
_BODY_ERRORS = MappingProxyType(
    {
        "timeout": "ReadTimeout",
        "connection": "RemoteProtocolError",
        "truncated": "RemoteProtocolError",
    }
)

Forward = AsyncGenerator[Head | bytes, None]

#: seconds a closed stream whose end marker went by may take to deliver its last bytes (see
#: ``EndWatch``); a server sends them at once, so this only bounds a misbehaving one
DRAIN_S = 0.5


@dataclass(frozen=True, slots=True, eq=False)
class Flavour:
    """One HTTP library's transport API, and keymux's transport classes built on it."""

    name: str
    lib: Any  # the module
    transport: type[Any]
    async_transport: type[Any]
    stream: type[Any]
    async_stream: type[Any]

    def raised(self, exc: KeymuxError, request: Any) -> Exception:
        """The library's exception for a KeymuxError raised before the answer's head, or the
        KeymuxError itself when the library has none for it."""
        if isinstance(exc, RequestTimeoutError):
            return self.lib.TimeoutException(exc.message, request=request)  # type: ignore[no-any-return]
        if isinstance(exc, ConnectionError):
            return self.lib.ConnectError(exc.message, request=request)  # type: ignore[no-any-return]
        return exc

    def broken(self, exc: KeymuxError, request: Any) -> Exception:
        """The library's exception for a KeymuxError raised while the body was being read."""
        if isinstance(exc, RequestTimeoutError):
            name = "ReadTimeout"
        elif isinstance(exc, StreamError):
            name = _BODY_ERRORS.get(exc.error_type or "", "ReadError")
        else:
            name = "ReadError"
        return getattr(self.lib, name)(exc.message, request=request)  # type: ignore[no-any-return]

    def response(self, answer: Answer, stream: Any = None) -> Any:
        if stream is None:
            return self.lib.Response(answer.status, headers=answer.headers, content=answer.body)
        return self.lib.Response(answer.status, headers=answer.headers, stream=stream)


def flavour(library: str) -> Flavour:
    """The flavour for ``library`` ("httpx2" or "httpx"); ConfigError when it is unknown or not
    installed."""
    if library not in LIBRARIES:
        known = ", ".join(repr(name) for name in LIBRARIES)
        raise ConfigError(f"unknown HTTP library {library!r}: use one of {known}")
    return _flavour(library)


@functools.cache
def _flavour(library: str) -> Flavour:
    try:
        lib = importlib.import_module(library)
    except ImportError as exc:
        raise ConfigError(
            f"the official SDKs' HTTP library {library!r} is not installed: {_INSTALL}"
        ) from exc

    def build(mixin: type[Any], base: Any) -> type[Any]:
        cls = type(mixin.__name__.lstrip("_"), (mixin, base), {"__module__": "keymux.transports"})
        cls.__qualname__ = f"{cls.__name__}[{library}]"
        return cls

    return Flavour(
        name=library,
        lib=lib,
        transport=build(_Transport, lib.BaseTransport),
        async_transport=build(_AsyncTransport, lib.AsyncBaseTransport),
        stream=build(_Stream, lib.SyncByteStream),
        async_stream=build(_AsyncStream, lib.AsyncByteStream),
    )


def sync_client(route: Route, library: str) -> Any:
    """``library.Client`` sending every request through keymux."""
    f = flavour(library)
    # trust_env=False: proxy variables would mount the library's own transports in front of ours
    return f.lib.Client(transport=f.transport(route, f), trust_env=False)


def async_client(route: Route, library: str) -> Any:
    """``library.AsyncClient`` sending every request through keymux."""
    f = flavour(library)
    return f.lib.AsyncClient(transport=f.async_transport(route, f), trust_env=False)


# --- the classes combined with each library's base classes -------------------------------------


class _Transport:
    """A sync transport: ``handle_request`` runs the request on keymux's loop thread."""

    def __init__(self, route: Route, flavour: Flavour) -> None:
        self._route = route
        self._flavour = flavour

    def __repr__(self) -> str:
        return f"<keymux.transports.Transport[{self._flavour.name}] {self._route!r}>"

    def handle_request(self, request: Any) -> Any:
        route = self._route
        f = self._flavour
        body = request.read()
        try:
            req = route.request(
                request.method,
                request.url.raw_path,
                request.headers.multi_items(),
                body,
                request.extensions.get("timeout"),
            )
        except KeymuxError as exc:  # closed
            return f.response(route.refused(exc))
        try:
            answer, forward = route.runtime.run(lambda: open_exchange(route, req))
        except KeymuxError as exc:
            mapped = f.raised(exc, request)
            if mapped is exc:
                raise
            raise mapped from exc
        if forward is None:
            return f.response(answer)
        return f.response(answer, f.stream(route, forward, f, request))

    def close(self) -> None:
        """Nothing to release: the multiplexer owns the connections."""


class _AsyncTransport:
    """An async transport: ``handle_async_request`` runs the request on the caller's loop when
    the multiplexer is bound to it (else it hops to the loop it is bound to)."""

    def __init__(self, route: Route, flavour: Flavour) -> None:
        self._route = route
        self._flavour = flavour

    def __repr__(self) -> str:
        return f"<keymux.transports.AsyncTransport[{self._flavour.name}] {self._route!r}>"

    async def handle_async_request(self, request: Any) -> Any:
        route = self._route
        f = self._flavour
        body = await request.aread()
        try:
            req = route.request(
                request.method,
                request.url.raw_path,
                request.headers.multi_items(),
                body,
                request.extensions.get("timeout"),
            )
        except KeymuxError as exc:  # closed
            return f.response(route.refused(exc))
        try:
            answer, forward = await route.runtime.arun(lambda: open_exchange(route, req))
        except KeymuxError as exc:
            mapped = f.raised(exc, request)
            if mapped is exc:
                raise
            raise mapped from exc
        if forward is None:
            return f.response(answer)
        return f.response(answer, f.async_stream(route, forward, f, request))

    async def aclose(self) -> None:
        """Nothing to release: the multiplexer owns the connections."""


class _Stream:
    """A streamed body, pulled from keymux's loop thread one chunk at a time as the SDK reads
    it. ``close()`` (the SDK closing the response early) frees the key's slot at once."""

    def __init__(self, route: Route, forward: Forward, flavour: Flavour, request: Any) -> None:
        self._runtime = route.runtime
        self._forward: Forward | None = forward
        self._flavour = flavour
        self._request = request
        self._watch = EndWatch(route.provider)

    def __iter__(self) -> Iterator[bytes]:
        run = self._runtime.run
        watch = self._watch
        while (forward := self._forward) is not None:
            try:
                chunk = run(functools.partial(_next_chunk, forward))
            except StopAsyncIteration:
                self._forward = None
                return
            except KeymuxError as exc:
                self._forward = None
                raise self._flavour.broken(exc, self._request) from exc
            watch.feed(chunk)
            yield chunk

    def close(self) -> None:
        forward, self._forward = self._forward, None
        if forward is not None:
            end = _drain if self._watch.done else _close
            self._runtime.run(functools.partial(end, forward))


class _AsyncStream:
    """A streamed body read on the caller's loop as the SDK reads it; ``aclose()`` frees the
    key's slot at once."""

    def __init__(self, route: Route, forward: Forward, flavour: Flavour, request: Any) -> None:
        self._runtime = route.runtime
        self._forward: Forward | None = forward
        self._flavour = flavour
        self._request = request
        self._watch = EndWatch(route.provider)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        runtime = self._runtime
        watch = self._watch
        while (forward := self._forward) is not None:
            try:
                if runtime.is_home():
                    chunk = await _next_chunk(forward)
                else:
                    chunk = await runtime.arun(functools.partial(_next_chunk, forward))
            except StopAsyncIteration:
                self._forward = None
                return
            except KeymuxError as exc:
                self._forward = None
                raise self._flavour.broken(exc, self._request) from exc
            watch.feed(chunk)
            yield chunk

    async def aclose(self) -> None:
        forward, self._forward = self._forward, None
        if forward is not None:
            end = _drain if self._watch.done else _close
            await self._runtime.arun(functools.partial(end, forward))


async def _next_chunk(forward: Forward) -> bytes:
    chunk = await forward.__anext__()
    assert isinstance(chunk, bytes)
    return chunk


async def _close(forward: Forward) -> None:
    await forward.aclose()


async def _drain(forward: Forward) -> None:
    """Read what is left of a stream whose end marker went by (see ``EndWatch``), so keymux
    counts it as answered; then close it."""
    try:
        async with asyncio.timeout(DRAIN_S):
            async for _ in forward:
                pass
    except (TimeoutError, KeymuxError):
        pass  # the SDK has its whole answer; keymux counts the rest as it sees fit
    finally:
        await forward.aclose()
