"""``keymux serve``: one gateway in front of a Multiplexer, for every app and language.

Private: the command line (``keymux.cli._serve``) and the tests use it; the public surface is
the command and its HTTP API (api.md, "The proxy").

    _config     ServerConfig, the proxy tokens (constant-time check), --state
    _dialect    which provider a request speaks; errors in that provider's shape
    _app        the aiohttp application: routes, tokens, bodies, pass-through, lifecycle
    _chat       OpenAI's chat API for every provider: the route
    _translate  OpenAI <-> Anthropic / Gemini: parameters, answers, stream chunks
    _util       what _app and _chat share (scrubbing, ending a broken stream)
    _metrics    /metrics: one Prometheus registry per server, the core's Telemetry
    _dashboard  /dashboard: one self-contained page and its data
    _run        one process or --workers N on one port (SO_REUSEPORT), signals, grace
"""

from __future__ import annotations

from ._app import Proxy
from ._config import ServerConfig, TokenSet, load_tokens
from ._run import build_multiplexer, run, serve_async

__all__ = [
    "Proxy",
    "ServerConfig",
    "TokenSet",
    "build_multiplexer",
    "load_tokens",
    "run",
    "serve_async",
]
