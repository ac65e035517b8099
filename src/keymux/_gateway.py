"""The one way in to the core for every client: keymux's own (``ProviderClient``), the official
SDKs' transports and the proxy.

A ``Gateway`` builds ``Request``s (checking them before any key is used) and runs them on the
core's event loop: from async code on the caller's own loop without a thread hop when the core
is bound there, from sync code through the runtime's loop thread.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

from ._clock import Clock
from ._config import Timeout
from ._core import Core, Head
from ._errors import ClosedError, ConfigError, UnsupportedError
from ._lane import Request
from ._sync import Runtime
from ._types import Prepared, Response
from .providers import ADAPTERS, Adapter

__all__ = ["Gateway"]

T = TypeVar("T")


class Gateway:
    """Builds requests and runs them on the core. One per Multiplexer."""

    __slots__ = ("_clock", "_core", "_default_timeout", "_runtime", "closed", "counts_tokens")

    def __init__(self, core: Core, runtime: Runtime, clock: Clock, timeout: Timeout) -> None:
        self._core = core
        self._runtime = runtime
        self._clock = clock
        self._default_timeout = timeout
        #: set by Multiplexer.close(): no request is accepted after it
        self.closed = False
        #: whether any key has a token budget configured: then every request's tokens are
        #: estimated; otherwise only those of a provider whose budgets have learned a token
        #: window (``Core.token_windows``)
        self.counts_tokens = False

    # -- building ---------------------------------------------------------------------------

    def _check_open(self, provider: str) -> None:
        if self.closed:
            raise ClosedError(
                f"{provider} request not sent: the multiplexer is closed", provider=provider
            )

    def _deadline_at(self, deadline: float | None) -> float | None:
        if deadline is None:
            return None
        if (
            isinstance(deadline, bool)
            or not isinstance(deadline, int | float)
            or not math.isfinite(deadline)
            or deadline <= 0
        ):
            raise ConfigError(f"deadline must be a positive number of seconds, got {deadline!r}")
        return self._clock.now() + deadline

    def _timeout(self, timeout: float | Timeout | None) -> Timeout:
        return self._default_timeout if timeout is None else Timeout.of(timeout)

    def request(
        self,
        provider: str,
        endpoint: str,
        params: dict[str, Any],
        *,
        model: str | None,
        stream: bool,
        pin: str | None,
        strategy: Any,
        timeout: float | Timeout | None,
        deadline: float | None,
    ) -> Request:
        """A request of keymux's own client; InvalidRequestError / UnsupportedError here,
        before any key is used, when it cannot be sent."""
        self._check_open(provider)
        adapter = ADAPTERS[provider]
        if endpoint not in adapter.endpoints:
            raise _unsupported(adapter, provider, endpoint, params, model)
        prepared = adapter.prepare(endpoint, params, model=model, stream=stream)
        return Request(
            provider=provider,
            endpoint=endpoint,
            prepared=prepared,
            timeout=self._timeout(timeout),
            pin=pin,
            strategy=strategy,
            deadline_at=self._deadline_at(deadline),
            tokens=adapter.estimate_tokens(endpoint, params)
            if self.counts_tokens or provider in self._core.token_windows
            else 0,
            scope=adapter.limit_scope(prepared.model),
        )

    def forwarded(
        self,
        provider: str,
        prepared: Prepared,
        *,
        pin: str | None = None,
        strategy: Any = None,
        timeout: float | Timeout | None = None,
        deadline: float | None = None,
        tokens: int = 0,
    ) -> Request:
        """A request to pass through as it is (an official SDK's, or the proxy's)."""
        self._check_open(provider)
        return Request(
            provider=provider,
            endpoint="forward",
            prepared=prepared,
            timeout=self._timeout(timeout),
            pin=pin,
            strategy=strategy,
            deadline_at=self._deadline_at(deadline),
            tokens=tokens if self.counts_tokens or provider in self._core.token_windows else 0,
            scope=ADAPTERS[provider].limit_scope(prepared.model),
        )

    # -- running ----------------------------------------------------------------------------

    def call(self, req: Request) -> Response:
        """Run a request from sync code (on the core's loop thread) and wait for it."""
        core = self._core
        return self._runtime.run(lambda: core.call(req))

    def acall(self, req: Request) -> Awaitable[Response]:
        """Run a request from async code: the awaitable to await (no coroutine frame of its
        own on the usual path, where the core runs on the caller's loop)."""
        core = self._core
        runtime = self._runtime
        if runtime.is_home():
            return core.call(req)
        return runtime.arun(lambda: core.call(req))

    def stream(self, req: Request) -> Iterator[str | Response]:
        return self.iterate(lambda: self._core.stream(req))

    def astream(self, req: Request) -> AsyncIterator[str | Response]:
        return self.aiterate(lambda: self._core.stream(req))

    def forward(self, req: Request) -> Iterator[Head | bytes]:
        """A forwarded request from sync code: its Head, then its body's bytes."""
        return self.iterate(lambda: self._core.forward(req))

    def aforward(self, req: Request) -> AsyncIterator[Head | bytes]:
        """A forwarded request from async code: its Head, then its body's bytes. Closing the
        iterator early (``aclose``) frees the key's slot at once."""
        return self.aiterate(lambda: self._core.forward(req))

    def iterate(self, make: Callable[[], AsyncGenerator[T, None]]) -> Iterator[T]:
        """Drive an async generator of the core from sync code, item by item."""
        runtime = self._runtime
        gen = make()
        try:
            while True:
                try:
                    item = runtime.run(lambda: _anext(gen))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            runtime.run(lambda: _aclose(gen))

    async def aiterate(self, make: Callable[[], AsyncGenerator[T, None]]) -> AsyncIterator[T]:
        """Drive an async generator of the core from async code (no hop on the home loop)."""
        runtime = self._runtime
        gen = make()
        loop = await runtime.arun(_current_loop)
        if loop is asyncio.get_running_loop():
            try:
                async for item in gen:
                    yield item
            finally:
                await gen.aclose()
            return
        try:
            while True:
                try:
                    item = await asyncio.wrap_future(
                        asyncio.run_coroutine_threadsafe(_anext(gen), loop)
                    )
                except StopAsyncIteration:
                    return
                yield item
        finally:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_aclose(gen), loop))


async def _anext(gen: AsyncIterator[T]) -> T:
    return await gen.__anext__()


async def _aclose(gen: AsyncGenerator[Any, None]) -> None:
    await gen.aclose()


async def _current_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _unsupported(
    adapter: Adapter, provider: str, endpoint: str, params: dict[str, Any], model: str | None
) -> UnsupportedError:
    """The adapter's own explanation when it has one, else a generic one."""
    try:
        adapter.prepare(endpoint, params, model=model, stream=False)
    except UnsupportedError as exc:
        return exc
    except Exception:
        pass
    supported = ", ".join(sorted(adapter.endpoints))
    return UnsupportedError(
        f"{provider} does not support the {endpoint!r} endpoint (it supports: {supported})",
        provider=provider,
    )
