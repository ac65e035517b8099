"""Provider clients: ``client("chat", ...)``, ``acall``, ``stream``, ``astream``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from ._config import Timeout
from ._gateway import Gateway
from ._types import Response

__all__ = ["ProviderClient"]


class ProviderClient:
    """Calls one provider through the multiplexer's keys, choosing a key per request.

    Cheap to create; holds no connections of its own.
    """

    __slots__ = ("_gateway", "_strategy", "key_name", "provider", "strategy")

    def __init__(
        self,
        gateway: Gateway,
        provider: str,
        *,
        key_name: str | None,
        strategy: str,
        strategy_fn: Any,
    ) -> None:
        self._gateway = gateway
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
        stream: bool,
    ) -> Any:
        if messages is not None:
            params["messages"] = messages
        if input is not None:
            params["input"] = input
        return self._gateway.request(
            self.provider,
            endpoint,
            params,
            model=model,
            stream=stream,
            pin=self.key_name,
            strategy=self._strategy,
            timeout=timeout,
            deadline=deadline,
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
        req = self._request(endpoint, messages, input, model, timeout, deadline, params, False)
        return self._gateway.call(req)

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
        req = self._request(endpoint, messages, input, model, timeout, deadline, params, False)
        return await self._gateway.acall(req)

    def astream(
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
        req = self._request(endpoint, messages, None, model, timeout, deadline, params, True)
        return self._gateway.astream(req)

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
        req = self._request(endpoint, messages, None, model, timeout, deadline, params, True)
        return self._gateway.stream(req)
