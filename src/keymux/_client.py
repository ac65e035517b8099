"""Provider clients: ``client("chat", ...)``, ``acall``, ``stream``, ``astream``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from ._config import Timeout
from ._errors import ClosedError, UnsupportedError
from ._lane import Request
from ._types import Response

if TYPE_CHECKING:
    from ._multiplexer import Multiplexer

__all__ = ["ProviderClient"]


class ProviderClient:
    """Calls one provider through the multiplexer's keys, choosing a key per request.

    Cheap to create; holds no connections of its own.
    """

    __slots__ = ("_mux", "_strategy", "key_name", "provider", "strategy")

    def __init__(
        self,
        mux: Multiplexer,
        provider: str,
        *,
        key_name: str | None,
        strategy: str,
        strategy_fn: Any,
    ) -> None:
        self._mux = mux
        self.provider = provider
        self.key_name = key_name
        self.strategy = strategy
        self._strategy = strategy_fn

    def __repr__(self) -> str:
        target = f"key_name={self.key_name!r}" if self.key_name else f"strategy={self.strategy!r}"
        return f"<keymux.ProviderClient {self.provider} {target}>"

    def _request(
        self,
        endpoint: str,
        messages: Any,
        input: Any,
        model: str | None,
        timeout: float | Timeout | None,
        deadline: float | None,
        params: dict[str, Any],
    ) -> Request:
        mux = self._mux
        if mux._closed:
            raise ClosedError(
                f"{self.provider} request not sent: the multiplexer is closed",
                provider=self.provider,
            )
        adapter = mux._adapters[self.provider]
        if endpoint not in adapter.endpoints:
            raise _unsupported(adapter, self.provider, endpoint, params, model)
        if messages is not None:
            params["messages"] = messages
        if input is not None:
            params["input"] = input
        deadline_at = None
        if deadline is not None:
            if isinstance(deadline, bool) or not isinstance(deadline, int | float) or deadline <= 0:
                raise UnsupportedError(
                    f"deadline must be a positive number of seconds, got {deadline!r}"
                )
            deadline_at = mux._clock.now() + deadline
        return Request(
            provider=self.provider,
            endpoint=endpoint,
            params=params,
            model=model,
            pin=self.key_name,
            strategy=self._strategy,
            timeout=mux._client_timeout(timeout),
            deadline_at=deadline_at,
            tokens=adapter.estimate_tokens(endpoint, params) if mux._counts_tokens else 0,
        )

    def __call__(
        self,
        endpoint: str = "chat",
        *,
        messages: Any = None,
        input: Any = None,
        model: str | None = None,
        timeout: float | Timeout | None = None,
        deadline: float | None = None,
        **params: Any,
    ) -> Response:
        """Send one request and wait for its Response (blocking)."""
        req = self._request(endpoint, messages, input, model, timeout, deadline, params)
        mux = self._mux
        return mux._runtime.run(lambda: mux._core.call(req))

    async def acall(
        self,
        endpoint: str = "chat",
        *,
        messages: Any = None,
        input: Any = None,
        model: str | None = None,
        timeout: float | Timeout | None = None,
        deadline: float | None = None,
        **params: Any,
    ) -> Response:
        """Send one request and await its Response."""
        req = self._request(endpoint, messages, input, model, timeout, deadline, params)
        mux = self._mux
        runtime = mux._runtime
        if runtime.is_home():  # the usual case: no extra coroutine frames, no hop
            return await mux._core.call(req)
        return await runtime.arun(lambda: mux._core.call(req))

    async def astream(
        self,
        endpoint: str = "chat",
        *,
        messages: Any = None,
        model: str | None = None,
        timeout: float | Timeout | None = None,
        deadline: float | None = None,
        **params: Any,
    ) -> AsyncIterator[str | Response]:
        """Yield text deltas as they arrive, then the final Response."""
        req = self._request(endpoint, messages, None, model, timeout, deadline, params)
        mux = self._mux
        runtime = mux._runtime
        gen = mux._core.stream(req)
        loop = await runtime.arun(_current_loop)
        here = asyncio.get_running_loop()
        if loop is here:
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

    def stream(
        self,
        endpoint: str = "chat",
        *,
        messages: Any = None,
        model: str | None = None,
        timeout: float | Timeout | None = None,
        deadline: float | None = None,
        **params: Any,
    ) -> Iterator[str | Response]:
        """Yield text deltas as they arrive, then the final Response (blocking)."""
        req = self._request(endpoint, messages, None, model, timeout, deadline, params)
        mux = self._mux
        runtime = mux._runtime
        gen = mux._core.stream(req)
        try:
            while True:
                try:
                    item = runtime.run(lambda: _anext(gen))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            runtime.run(lambda: _aclose(gen))


async def _anext(gen: AsyncIterator[str | Response]) -> str | Response:
    return await gen.__anext__()


async def _aclose(gen: AsyncGenerator[str | Response, None]) -> None:
    await gen.aclose()


async def _current_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _unsupported(
    adapter: Any, provider: str, endpoint: str, params: dict[str, Any], model: str | None
) -> UnsupportedError:
    """The adapter's own explanation when it has one, else a generic one."""
    try:
        adapter.build(
            endpoint,
            params,
            model=model,
            stream=False,
            base_url=adapter.default_base_url,
            api_key="unused",
        )
    except UnsupportedError as exc:
        return exc
    except Exception:
        pass
    supported = ", ".join(sorted(adapter.endpoints))
    return UnsupportedError(
        f"{provider} does not support the {endpoint!r} endpoint (it supports: {supported})",
        provider=provider,
    )
