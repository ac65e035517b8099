"""Where an SDK client's requests go, and the part of each exchange that runs on keymux's loop.

A ``Route`` is one drop-in client's target: the multiplexer's gateway, core and runtime, a
provider, and a pinned key or a strategy. ``Route.request`` turns one HTTP request of the SDK
into a forwarded keymux ``Request`` (``prepare_forward``: placeholder credential out, path made
relative to the provider's official base URL, body kept as bytes so retries can replay it).

``open_exchange`` runs on the core's loop: it reads ``Core.forward`` up to the answer's head,
and for anything but an event stream the whole body too, closing the forward at once, so a
plain answer costs a sync caller a single hop to the loop thread. A stream is handed back open,
to be read chunk by chunk as the SDK asks for them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from typing import Any

from .._core import Core, Head
from .._errors import ConnectionError, KeymuxError, RequestTimeoutError
from .._forward import prepare_forward
from .._gateway import Gateway
from .._lane import Request
from .._sync import Runtime
from ._answer import Answer, answer_of, attempt_timeout, is_event_stream, refusal

__all__ = ["Route", "open_exchange"]

#: raised to the SDK as its HTTP library's own exceptions, which the SDK maps (APITimeoutError,
#: APIConnectionError); every other KeymuxError with no answer to show becomes ``refusal``
RAISED = (RequestTimeoutError, ConnectionError)


class Route:
    """One drop-in client's target. Cheap; shared by every request of that client."""

    __slots__ = ("core", "gateway", "pin", "provider", "runtime", "strategy", "strategy_name")

    def __init__(
        self,
        *,
        gateway: Gateway,
        core: Core,
        runtime: Runtime,
        provider: str,
        pin: str | None,
        strategy: Any,
        strategy_name: str,
    ) -> None:
        self.gateway = gateway
        self.core = core
        self.runtime = runtime
        self.provider = provider
        self.pin = pin
        self.strategy = strategy
        self.strategy_name = strategy_name

    def __repr__(self) -> str:
        target = f"key_name={self.pin!r}" if self.pin else f"strategy={self.strategy_name!r}"
        return f"<keymux route {self.provider} {target}>"

    def request(
        self,
        method: str,
        raw_path: bytes,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        timeout: Any,
    ) -> Request:
        """The SDK's request as keymux forwards it. Raises ClosedError when the multiplexer is
        closed."""
        path, _, query = raw_path.decode("ascii").partition("?")
        prepared = prepare_forward(self.provider, method, path, query, headers, body)
        return self.gateway.forwarded(
            self.provider,
            prepared,
            pin=self.pin,
            strategy=self.strategy,
            timeout=attempt_timeout(timeout),
        )

    def key_names(self) -> tuple[str, ...]:
        """The key names a request of this route could use (named in keymux's own answers)."""
        if self.pin is not None:
            return (self.pin,)
        state = self.core.dispatch.providers.get(self.provider)
        return tuple(state.lanes) if state is not None else ()

    def refused(self, exc: KeymuxError) -> Answer:
        return refusal(self.provider, exc, self.key_names())


async def open_exchange(
    route: Route, req: Request
) -> tuple[Answer, AsyncGenerator[Head | bytes, None] | None]:
    """On the core's loop: the answer's head, with the whole body unless it is an event stream
    (then the forward is handed back, open, for its chunks). Raises the KeymuxErrors in
    ``RAISED``; any other with no answer to show becomes keymux's own refusal."""
    core = route.core
    forward = core.forward(req)
    try:
        head = await forward.__anext__()
    except RAISED:
        raise
    except KeymuxError as exc:
        return route.refused(exc), None
    try:
        assert isinstance(head, Head)
        state = core.dispatch.providers.get(route.provider)
        lane = state.lanes.get(head.key_name) if state is not None else None
        secret = lane.secret if lane is not None else None
        if head.error is None and is_event_stream(head.headers):
            return answer_of(head, None, secret), forward
        body = await forward.__anext__()  # the whole body, in one piece
        assert isinstance(body, bytes)
    except BaseException:
        await forward.aclose()
        raise
    await forward.aclose()
    return answer_of(head, body, secret), None
