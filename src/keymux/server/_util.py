"""Small pieces the proxy's pass-through (``_app.py``) and its OpenAI format (``_chat.py``)
share."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

from aiohttp import web

from .._core import Head

__all__ = ["EVENT_STREAM", "Secret", "abort", "generator", "is_stream", "scrub"]

EVENT_STREAM = "text/event-stream"

#: a lane's key as text and bytes, and its masked form as text and bytes
Secret = tuple[str, bytes, str, bytes]


def is_stream(head: Head) -> bool:
    return head.headers.get("Content-Type", "").startswith(EVENT_STREAM)


def scrub(data: bytes, secret: Secret | None) -> bytes:
    """``data`` with the answering key masked (an upstream that echoes it)."""
    if secret is not None and secret[1] in data:
        return data.replace(secret[1], secret[3])
    return data


def generator(items: AsyncIterator[Head | bytes]) -> AsyncGenerator[Head | bytes, None]:
    """``Gateway.aforward``'s iterator is an async generator (``aclose`` frees the key's slot
    at once); its annotation says only AsyncIterator."""
    return cast(AsyncGenerator[Head | bytes, None], items)


def abort(request: web.Request) -> None:
    """End a broken stream by closing the connection before its last chunk: the caller's HTTP
    library reports a cut body instead of a clean end."""
    transport = request.transport
    if transport is not None:
        transport.close()
