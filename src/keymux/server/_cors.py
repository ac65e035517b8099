"""Cross-origin access for browser callers (``--cors-origin``): off unless asked for.

A page on another origin (a local web UI, a notebook front end) may call the proxy with
``fetch`` when its origin is listed, or when ``*`` is. The proxy token still decides who is
served: CORS only lets the browser hand the answer to the page. Credentials (cookies, HTTP
auth) are never allowed, so the token travels as the page's SDK sends its API key.

* A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed origin is
  answered here, 204, before routing and before the token check (browsers send no
  credentials on a preflight): the methods the proxy serves, the headers the page asked for,
  ``Access-Control-Allow-Private-Network`` when Chrome asks for a page on a public origin to
  reach a private address, cached for 10 minutes.
* Every answer to an allowed origin, a stream's included, carries
  ``Access-Control-Allow-Origin`` and ``Access-Control-Expose-Headers: *`` (the rate-limit
  headers, ``x-keymux-key`` and ``x-keymux-attempts`` readable by the page).
* An origin not listed gets no CORS header at all: the browser keeps the answer from the page.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web

from .._errors import ConfigError

__all__ = ["CorsPolicy", "check_origin"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_METHODS = "GET, POST, OPTIONS"
_MAX_AGE = "600"
#: a comma-separated list of header names (RFC 9110 tokens), as a preflight asks for them
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_HEADER_LIST = re.compile(rf"{_TOKEN}(?:[ \t]*,[ \t]*{_TOKEN})*")


def check_origin(value: str) -> str:
    """An origin as browsers send it (``scheme://host[:port]``, lower case), or ``*``.
    ConfigError names what is wrong with anything else."""
    text = value.strip()
    if text == "*":
        return text
    hint = "give an origin as the browser sends it, e.g. http://localhost:3000, or *"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ConfigError(f"--cors-origin {value!r} is not an origin: {hint}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--cors-origin {value!r} is not an origin: {hint}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(
            f"--cors-origin {value!r} has more than an origin (a path, query or user): {hint}"
        )
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + ("" if port in (None, default) else f":{port}")


class CorsPolicy:
    """The origins that may read the proxy's answers; empty: CORS is off."""

    __slots__ = ("_any", "_origins")

    def __init__(self, origins: Iterable[str] = ()) -> None:
        checked = {check_origin(o) for o in origins}
        self._any = "*" in checked
        self._origins = frozenset(checked - {"*"})

    def __bool__(self) -> bool:
        return self._any or bool(self._origins)

    def allowed(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for a request from ``origin``; None when
        it gets no CORS header."""
        if not origin:
            return None
        if self._any:
            return "*"
        return origin if origin in self._origins else None

    def install(self, app: web.Application) -> None:
        """Answer preflights and mark every answer (nothing is installed when CORS is off)."""
        if self:
            app.middlewares.append(self._preflight)
            app.on_response_prepare.append(self._mark)

    @web.middleware
    async def _preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        allow = self.allowed(request.headers.get("Origin"))
        if allow is None:
            return await handler(request)  # no CORS for it: routed as any OPTIONS
        headers = {
            "Access-Control-Allow-Methods": _METHODS,
            "Access-Control-Max-Age": _MAX_AGE,
        }
        asked = request.headers.get("Access-Control-Request-Headers", "").strip()
        if asked and _HEADER_LIST.fullmatch(asked):
            headers["Access-Control-Allow-Headers"] = asked
        if request.headers.get("Access-Control-Request-Private-Network", "").lower() == "true":
            headers["Access-Control-Allow-Private-Network"] = "true"
        return web.Response(status=204, headers=headers)  # _mark adds the origin

    async def _mark(self, request: web.Request, response: web.StreamResponse) -> None:
        allow = self.allowed(request.headers.get("Origin"))
        headers = response.headers
        if allow is None:
            if self._origins:
                headers.add("Vary", "Origin")  # the answer differs by origin: caches keep apart
            return
        headers["Access-Control-Allow-Origin"] = allow
        if allow != "*":
            headers.add("Vary", "Origin")
        if request.method != "OPTIONS":
            headers["Access-Control-Expose-Headers"] = "*"
