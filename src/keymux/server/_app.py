"""The proxy: one aiohttp application in front of a Multiplexer.

A request goes: route (its provider; shared paths by headers) -> proxy token (401 in the
caller's dialect, nothing sent upstream) -> body (413 over the limit, 400 when a JSON route's
body is not JSON) -> ``prepare_forward`` (the caller's credential dropped, the lane's key goes
where the caller put its own) -> ``Gateway.aforward`` (queueing, pacing, retries, failover,
stats inside) -> the ``Head``, then the body passed through unchanged, a stream chunk by chunk.

``POST /v1/chat/completions`` with ``"model": "claude/..."`` / ``"gemini/..."`` is translated
(``_chat.py``, ``_translate.py``): the adapter writes the native request, the native answer is
forwarded to this process and rewritten as OpenAI's. ``groq/...`` is Groq's own
OpenAI-compatible API, forwarded with the model renamed.

What a caller can never get: a provider key. The caller's token is never forwarded; every
answer's headers and bodies are scrubbed of the answering key (the core already scrubs the
error answers it passes back), and keymux's own error messages of every key of the provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from .._core import Head
from .._errors import KeymuxError, StreamError
from .._forward import answer_headers, credential_of, prepare_forward
from .._multiplexer import Multiplexer
from .._types import Prepared
from ._chat import chat
from ._config import ServerConfig
from ._cors import CorsPolicy
from ._dashboard import History, dashboard_data, page
from ._dialect import error_response, keymux_error_response, sniff
from ._metrics import KEY_STATES, Metrics
from ._util import Secret, abort, generator, is_stream, scrub

__all__ = ["GEMINI_METHODS", "Proxy"]

log = logging.getLogger("keymux")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: the Gemini methods the proxy passes on (``models/{model}:{method}``)
GEMINI_METHODS = frozenset(
    {
        "generateContent",
        "streamGenerateContent",
        "embedContent",
        "batchEmbedContents",
        "countTokens",
    }
)
_NO_TOKEN = "no proxy token: send the keymux proxy token where your SDK sends its API key"
_BAD_TOKEN = "the proxy token is not valid"


class _Secrets:
    """The secrets a lane may echo, looked up by provider and key name (cached)."""

    __slots__ = ("_cache", "_mux")

    def __init__(self, mux: Multiplexer) -> None:
        self._mux = mux
        self._cache: dict[tuple[str, str], Secret | None] = {}

    def of(self, provider: str, name: str | None) -> Secret | None:
        if not name:
            return None
        ident = (provider, name)
        try:
            return self._cache[ident]
        except KeyError:
            pass
        ps = self._mux._core.dispatch.providers.get(provider)
        lane = ps.lanes.get(name) if ps is not None else None
        if lane is None:
            return None
        secret = lane.secret.reveal()
        masked = lane.secret.masked
        entry = (secret, secret.encode(), masked, masked.encode())
        self._cache[ident] = entry
        return entry

    def scrub_text(self, provider: str, text: str) -> str:
        """``text`` with every key of ``provider`` masked (keymux's own messages)."""
        ps = self._mux._core.dispatch.providers.get(provider)
        for lane in list(ps.lanes.values()) if ps is not None else ():
            secret = lane.secret.reveal()
            if secret in text:
                text = text.replace(secret, lane.secret.masked)
        return text


class Proxy:
    """``keymux serve``'s application: routes, tokens, metrics, dashboard, lifecycle."""

    def __init__(self, mux: Multiplexer, config: ServerConfig) -> None:
        self.mux = mux
        self.config = config
        self._gateway = mux._gateway
        self._auth = not config.no_auth
        self._tokens = config.tokens
        self._secrets = _Secrets(mux)
        self.metrics = Metrics(mux.get_usage_stats)
        #: requests being answered now (upstream work, not tokens refused)
        self.in_progress: int = 0
        self.metrics.in_progress.set_function(lambda: self.in_progress)
        self.history = History(mux.get_usage_stats, config.sample_interval)
        self.draining = False
        self.started = time.time()
        self._page = page()
        self._runner: web.AppRunner | None = None
        self.url: str | None = None
        self.app = self._build_app()

    # -- the application --------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body)
        r = app.router
        chat = self._chat
        native = self._native
        r.add_post("/v1/chat/completions", chat)
        r.add_post("/v1/embeddings", native("openai", json_body=True))
        # OpenAI's, Anthropic's and google-genai 3.x's: whose, the caller's headers say
        r.add_get("/v1/models", self._shared)
        r.add_get("/v1/models/{model}", self._shared)
        r.add_post("/v1/models/{target}", self._gemini)  # google-genai 3.x: Gemini under /v1
        r.add_post("/openai/v1/chat/completions", native("groq", json_body=True))
        r.add_post("/openai/v1/embeddings", native("groq", json_body=True))
        r.add_get("/openai/v1/models", native("groq"))
        r.add_get("/openai/v1/models/{model}", native("groq"))
        r.add_post("/v1/messages", native("claude", json_body=True))
        r.add_post("/v1/messages/count_tokens", native("claude", json_body=True))
        r.add_get("/v1beta/models", native("gemini"))
        r.add_get("/v1beta/models/{model}", native("gemini"))
        r.add_post("/v1beta/models/{target}", self._gemini)
        r.add_get("/healthz", self._healthz)
        r.add_get("/metrics", self._metrics)
        r.add_get("/dashboard", self._dashboard)
        r.add_get("/dashboard/data", self._dashboard_data)
        r.add_route("*", "/{tail:.*}", self._unknown)
        CorsPolicy(self.config.cors_origins).install(app)
        return app

    async def start(self, host: str | None = None, port: int | None = None) -> str:
        """Bind the multiplexer to this loop and listen; the root URL."""
        await self.mux.__aenter__()
        self.mux._core.telemetry = self.metrics
        runner = web.AppRunner(
            self.app,
            handler_cancellation=True,  # a caller gone mid-answer cancels the upstream at once
            shutdown_timeout=self.config.grace,
            access_log=None,  # a Gemini caller's ?key= token would be written out
        )
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(
            runner,
            host or self.config.host,
            self.config.port if port is None else port,
            reuse_port=self.config.reuse_port or None,
            backlog=1024,
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self.mux.aclose()
            raise
        self.history.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname() if sockets else (host, port)
        name = str(bound[0])
        shown = f"[{name}]" if ":" in name else name
        self.url = f"http://{shown}:{bound[1]}"
        return self.url

    async def stop(self, on_closed: Callable[[], None] | None = None) -> None:
        """Stop accepting (then ``on_closed()``), let in-flight requests and streams finish
        within the grace period (then cancel them), close the multiplexer."""
        self.draining = True
        runner, self._runner = self._runner, None
        try:
            if runner is not None:
                for site in list(runner.sites):
                    await site.stop()
                if on_closed is not None:
                    on_closed()
                await runner.cleanup()
        finally:
            await self.history.stop()
            self.mux._core.telemetry = None
            await self.mux.aclose()

    # -- tokens and bodies ------------------------------------------------------------------

    def _refuse(self, request: web.Request, provider: str) -> web.Response | None:
        """None when the request presents a valid proxy token, else the 401 answer."""
        if not self._auth:
            return None
        presented = credential_of(request.headers, request.query_string)
        if self._tokens.check(presented):
            return None
        self.metrics.request(provider, None, "unauthorized")
        return error_response(
            provider,
            401,
            _NO_TOKEN if not presented else _BAD_TOKEN,
            extra={"WWW-Authenticate": 'Bearer realm="keymux"'},
        )

    async def _body(self, request: web.Request, provider: str, json_body: bool) -> Any:
        """The body's bytes, or the 413/400 answer."""
        limit = self.config.max_body
        length = request.content_length
        if length is not None and length > limit:
            return self._too_large(provider)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._too_large(provider)
        if json_body:
            try:
                json.loads(body)
            except ValueError:
                self.metrics.request(provider, None, "bad_request")
                return error_response(
                    provider,
                    400,
                    "the request body is not valid JSON"
                    if body
                    else "the request needs a JSON body",
                )
        return body

    def _too_large(self, provider: str) -> web.Response:
        self.metrics.request(provider, None, "too_large")
        return error_response(
            provider,
            413,
            f"the request body is larger than this proxy accepts ({self.config.max_body} bytes; "
            "keymux serve --max-body)",
        )

    # -- native routes ----------------------------------------------------------------------

    def _native(self, provider: str, *, json_body: bool = False) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._forward(request, provider, json_body=json_body)

        return handler

    async def _shared(self, request: web.Request) -> web.StreamResponse:
        provider = sniff(request.headers, request.query, request.path)
        return await self._forward(request, provider, json_body=False)

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        refused = self._refuse(request, "gemini")
        if refused is not None:
            return refused
        _, sep, method = request.match_info["target"].rpartition(":")
        if not sep or method not in GEMINI_METHODS:
            self.metrics.request("gemini", None, "not_found")
            return error_response(
                "gemini",
                404,
                f"keymux serve does not pass on the Gemini method {method!r} "
                f"(it passes: {', '.join(sorted(GEMINI_METHODS))})",
            )
        return await self._forward(request, "gemini", json_body=True, checked=True)

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        provider = sniff(request.headers, request.query, request.path)
        refused = self._refuse(request, provider)
        if refused is not None:
            return refused
        self.metrics.request(provider, None, "not_found")
        return error_response(
            provider, 404, f"keymux serve has no route for {request.method} {request.path}"
        )

    async def _forward(
        self, request: web.Request, provider: str, *, json_body: bool, checked: bool = False
    ) -> web.StreamResponse:
        if not checked:
            refused = self._refuse(request, provider)
            if refused is not None:
                return refused
        body: bytes | None = None
        if request.body_exists or json_body:
            got = await self._body(request, provider, json_body)
            if isinstance(got, web.Response):
                return got
            body = got
        prepared = prepare_forward(
            provider,
            request.method,
            request.rel_url.raw_path,
            request.query_string,
            request.headers,
            body,
        )
        return await self._relay(request, provider, provider, prepared)

    async def _relay(
        self, request: web.Request, dialect: str, provider: str, prepared: Prepared
    ) -> web.StreamResponse:
        """Forward ``prepared`` and pass the answer back as it is (key scrubbed)."""
        started = time.perf_counter()
        gateway = self._gateway
        self.in_progress += 1
        outcome = "ok"
        key: str | None = None
        try:
            try:
                gen = generator(gateway.aforward(gateway.forwarded(provider, prepared)))
                head = await gen.__anext__()
            except KeymuxError as exc:
                outcome = "refused"
                key = exc.key_name
                return self._keymux_error(dialect, provider, exc)
            try:
                assert isinstance(head, Head)
                key = head.key_name
                secret = self._secrets.of(provider, key)
                headers = self._headers(head, secret)
                if head.error is None and is_stream(head):
                    resp = web.StreamResponse(status=head.status, headers=headers)
                    outcome = await self._pass_stream(
                        request, resp, gen, secret, started, provider, key
                    )
                    return resp
                body = await gen.__anext__()  # the whole body, in one piece
                assert isinstance(body, bytes)
                if head.error is not None:
                    outcome = "upstream_error"
                return web.Response(status=head.status, body=scrub(body, secret), headers=headers)
            finally:
                await gen.aclose()
        except asyncio.CancelledError:
            outcome = "client_gone"
            raise
        finally:
            self.in_progress -= 1
            self.metrics.request(provider, key, outcome)

    def _headers(self, head: Head, secret: Secret | None) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in answer_headers(head.headers):
            if secret is not None and secret[0] in value:
                value = value.replace(secret[0], secret[2])
            headers.add(name, value)
        headers["x-keymux-key"] = head.key_name
        headers["x-keymux-attempts"] = str(head.attempts)
        if head.error is not None:
            headers["x-should-retry"] = "false"
        return headers

    async def _pass_stream(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        gen: Any,
        secret: Secret | None,
        started: float,
        provider: str,
        key: str,
    ) -> str:
        """A 2xx event stream, chunk by chunk. The outcome label."""
        await resp.prepare(request)
        first = True
        try:
            async for chunk in gen:
                await resp.write(scrub(chunk, secret))
                if first:
                    first = False
                    self.metrics.first_byte_after(provider, key, time.perf_counter() - started)
        except StreamError as exc:
            log.warning("keymux serve: %s", exc)
            abort(request)  # the caller sees a cut stream, not a clean end
            return "stream_error"
        except ConnectionError:
            return "client_gone"
        await resp.write_eof()
        return "ok"

    def _keymux_error(self, dialect: str, provider: str, exc: KeymuxError) -> web.Response:
        exc.message = self._secrets.scrub_text(provider, exc.message)
        return keymux_error_response(dialect, exc)

    # -- OpenAI's chat API for every provider (``_chat.py``) ---------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await chat(self, request)

    # -- operations -------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        counts: dict[str, dict[str, int]] = {}
        for provider, keys in self.mux.get_usage_stats().items():
            if not keys:
                continue
            tally = dict.fromkeys(KEY_STATES, 0)
            for s in keys.values():
                status = s.get("status", "active")
                if status in tally:
                    tally[status] += 1
            counts[provider] = tally
        status = "draining" if self.draining else "ok"
        return web.json_response(
            {"status": status, "keys": counts}, status=503 if self.draining else 200
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        refused = self._refuse(request, "openai")
        if refused is not None:
            return refused
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": self.metrics.content_type})

    async def _dashboard(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._page,
            headers={
                "Content-Type": "text/html; charset=utf-8",
                "Cache-Control": "no-store",
                # the page runs only its own inline code and talks only to this proxy
                "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                "style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def _dashboard_data(self, request: web.Request) -> web.Response:
        refused = self._refuse(request, "openai")
        if refused is not None:
            return refused
        data = dashboard_data(self.mux.get_usage_stats(), self.history, self.started)
        return web.json_response(data, headers={"Cache-Control": "no-store"})
