"""The official SDKs, unchanged, through keymux: drop-in httpx2 / httpx clients.

``Multiplexer.http_client(provider)`` and ``Multiplexer.async_http_client(provider)`` build them;
nothing here is public API beyond what those return.
"""

from __future__ import annotations

from ._route import Route
from ._transport import DEFAULT_LIBRARY, LIBRARIES, async_client, flavour, sync_client

__all__ = ["DEFAULT_LIBRARY", "LIBRARIES", "Route", "async_client", "flavour", "sync_client"]
