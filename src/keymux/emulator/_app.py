"""The emulator: one aiohttp application serving all four providers' APIs on one port.

One request goes: route -> dialect (provider; ``/v1/models`` and the Gemini ``/v1`` routes
are shared, decided by headers) -> key lookup -> connection faults (revoked, reset, hang) ->
header checks -> body -> the model's budget (its scope) -> billing fault -> limits (counted at
arrival) -> probabilistic 5xx -> latency -> answer (malformed / missing fields / stream
faults). Rejections before the limits (auth, 400s) use no budget and have no latency; 429s
have no latency either. Every answer about a model of a key with limits carries that
provider's rate-limit headers for that model's budget.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NoReturn

from aiohttp import web

from .._clock import Clock, SystemClock
from .._secret import mask
from ._claude import ClaudeDialect
from ._content import BadRequest, ChatPlan, EmbedPlan, embedding
from ._dialect import Ctx, Dialect, Reply, StreamPlan, dumps
from ._gemini import GEMINI_METHODS, GeminiDialect, split_target
from ._keys import (
    LIMIT_NAMES,
    EmulatorKey,
    Faults,
    Latency,
    check_latency,
    check_rate_model,
    normalize_provider,
)
from ._limits import Limits
from ._openai import GroqDialect, OpenAIDialect
from ._stats import Counters

__all__ = ["Emulator"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: per provider, what follows the host in its official SDK's base URL (only OpenAI's ends in
#: ``/v1``): the emulator's root URL plus this is the base URL a client is given
BASE_PATHS = {"openai": "/v1", "groq": "", "claude": "", "gemini": ""}
#: the API versions Gemini's methods are served under
_GEMINI = ("/v1beta", "/v1")
_HANG_SLICE = 1e9
_MAX_BODY = 32 * 1024 * 1024


class _Scope:
    """The budget of one model scope of one key, and what it has seen: ``requests`` that
    reached its limits, how many of them the limits refused, the ``tokens`` charged."""

    __slots__ = ("limits", "rate_limited", "requests", "tokens")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.requests = 0
        self.rate_limited = 0
        self.tokens = 0

    def zero(self) -> None:
        self.requests = self.rate_limited = self.tokens = 0

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "rate_limited": self.rate_limited, "tokens": self.tokens}


class _KeyState:
    """A key, its per-model budgets (created on a model's first request) and its stats."""

    __slots__ = ("dialect", "emu", "key", "scopes", "stats")

    def __init__(self, key: EmulatorKey, dialect: Dialect, emu: Emulator) -> None:
        self.key = key
        self.dialect = dialect
        self.emu = emu
        self.scopes: dict[str, _Scope] = {}
        self.stats = Counters()

    @property
    def rate_model(self) -> str:
        return self.key.rate_model or self.emu.rate_model

    def _limits(self, scope: str) -> Limits:
        limits = self.key.limits_for(scope, self.dialect.model_scope)
        emu = self.emu
        return Limits(
            **limits, window=emu.window, day_window=emu.day_window, rate_model=self.rate_model
        )

    def scope(self, name: str) -> _Scope:
        scope = self.scopes.get(name)
        if scope is None:
            scope = self.scopes[name] = _Scope(self._limits(name))
        return scope

    def replace(self, key: EmulatorKey, now: float) -> None:
        """New settings: each model keeps what it used, unless the rate model changed."""
        self.key = key
        for name, scope in self.scopes.items():
            if scope.limits.rate_model != self.rate_model:
                scope.limits = self._limits(name)
            else:
                scope.limits.reconfigure(now, **key.limits_for(name, self.dialect.model_scope))


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


class Emulator:
    """Imitates OpenAI, Groq, Anthropic and Gemini with per-key limits and injected faults.

    Time comes only from ``clock`` and randomness only from ``random.Random(seed)``, so a
    ``FakeClock`` makes window tests exact. ``window`` is the length in seconds of the "per
    minute" window (rpm, tpm), ``day_window`` of the "per day" one (rpd). ``rate_model``
    (``"sliding"``, ``"token-bucket"`` or ``"fixed"``) is how keys without their own refill
    their budgets; each model of a key has its own budget. ``latency`` is seconds per answer or
    a ``(low, high)`` range drawn per request. With ``accept_any_key`` an unknown key is
    registered on first use, with ``default_limits`` (``{"rpm": .., "tpm": .., "rpd": ..}``,
    None = none).
    """

    def __init__(
        self,
        keys: Iterable[EmulatorKey] = (),
        *,
        clock: Clock | None = None,
        window: float = 60.0,
        day_window: float = 86400.0,
        latency: Latency = 0.0,
        stream_chunk_delay: float = 0.0,
        seed: int = 0,
        accept_any_key: bool = False,
        default_limits: Mapping[str, int | None] | None = None,
        rate_model: str = "sliding",
    ) -> None:
        for name, value in (("window", window), ("day_window", day_window)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds")
        if not stream_chunk_delay >= 0:
            raise ValueError("stream_chunk_delay must be >= 0 seconds")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.window = float(window)
        self.day_window = float(day_window)
        self.latency: Latency = check_latency(latency)
        self.stream_chunk_delay = float(stream_chunk_delay)
        self.rate_model = check_rate_model(rate_model)
        self.accept_any_key = accept_any_key
        limits = dict(default_limits or {})
        unknown = sorted(set(limits) - set(LIMIT_NAMES))
        if unknown:
            raise ValueError(f"default_limits takes rpm, tpm and rpd, not {', '.join(unknown)}")
        self.default_limits: dict[str, int | None] = limits
        self._default_key("openai", "default-limits")  # checked like a key's own limits
        self._rng = random.Random(seed)
        self._keys: dict[tuple[str, str], _KeyState] = {}
        self._total = Counters()
        self._seq = 0
        self._sleepers: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._root: str | None = None
        self._dialects: dict[str, Dialect] = {
            "openai": OpenAIDialect(),
            "groq": GroqDialect(),
            "claude": ClaudeDialect(),
            "gemini": GeminiDialect(),
        }
        for key in keys:
            self.add_key(key)
        self.app = self._build_app()

    # --- keys -----------------------------------------------------------------------------

    def add_key(self, key: EmulatorKey) -> None:
        """Register a key, or replace the settings of one already registered (what each model
        used in the current windows and the stats are kept; a new rate model starts afresh)."""
        if not isinstance(key, EmulatorKey):
            raise TypeError("add_key takes a keymux.emulator.EmulatorKey")
        ident = (key.provider, key.key)
        state = self._keys.get(ident)
        if state is None:
            self._keys[ident] = _KeyState(key, self._dialects[key.provider], self)
        else:
            state.replace(key, self.clock.now())

    def remove_key(self, secret: str, *, provider: str | None = None) -> None:
        """Forget a key (for every provider, or just ``provider``); KeyError if unknown."""
        for ident in self._matching(secret, provider):
            del self._keys[ident]

    def set_faults(self, secret: str, *, provider: str | None = None, **fields: Any) -> None:
        """Change some fault fields of a key at runtime, e.g. ``set_faults(k, revoked=True)``."""
        idents = self._matching(secret, provider)
        for ident in idents:
            state = self._keys[ident]
            state.key = dataclasses.replace(state.key, faults=state.key.faults.replace(**fields))

    def keys(self) -> list[EmulatorKey]:
        """The registered keys (their reprs are masked)."""
        return [state.key for state in self._keys.values()]

    def _matching(self, secret: str, provider: str | None) -> list[tuple[str, str]]:
        wanted = None if provider is None else normalize_provider(provider)
        idents = [
            ident
            for ident in self._keys
            if ident[1] == secret and (wanted is None or ident[0] == wanted)
        ]
        if not idents:
            raise KeyError(f"no emulator key {mask(secret)}")
        return idents

    def _default_key(self, provider: str, secret: str) -> EmulatorKey:
        limits = self.default_limits
        return EmulatorKey(
            provider, secret, rpm=limits.get("rpm"), tpm=limits.get("tpm"), rpd=limits.get("rpd")
        )

    def _resolve(self, provider: str, secret: str) -> _KeyState | None:
        state = self._keys.get((provider, secret))
        if state is None and self.accept_any_key:
            state = _KeyState(self._default_key(provider, secret), self._dialects[provider], self)
            self._keys[(provider, secret)] = state
        return state

    # --- stats ----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A JSON-able snapshot: ``{"total": {...}, "keys": {label: {...}}}``; keys masked."""
        keys: dict[str, Any] = {}
        for state in self._keys.values():
            label = state.key.display
            if label in keys:
                label = f"{label} [{state.key.provider}:{_fingerprint(state.key.key)}]"
            entry = state.stats.as_dict()
            entry["provider"] = state.key.provider
            entry["limits"] = {
                name: getattr(state.key, name)
                for name in LIMIT_NAMES
                if getattr(state.key, name) is not None
            }
            entry["rate_model"] = state.rate_model
            entry["models"] = {name: scope.as_dict() for name, scope in state.scopes.items()}
            keys[label] = entry
        total = self._total.as_dict()
        total["unknown_key"] = self._total.unknown_key
        return {"total": total, "keys": keys}

    @property
    def total_429(self) -> int:
        """How many 429s the emulator has served."""
        return self._total.rate_limited

    def reset_stats(self) -> None:
        """Zero every counter (limits and their windows are untouched)."""
        self._total = Counters()
        for state in self._keys.values():
            state.stats = Counters()
            for scope in state.scopes.values():
                scope.zero()

    def _count(self, state: _KeyState | None, status: int) -> None:
        self._total.status(status)
        if state is not None:
            state.stats.status(status)

    def _fault(self, state: _KeyState, name: str) -> None:
        self._total.fault(name)
        state.stats.fault(name)

    # --- server ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = any free port); returns the root URL."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=5.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else "[::1]" if host == "::" else host
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        self._root = f"http://{shown}:{bound_port}"
        return self._root

    async def stop(self) -> None:
        """Stop serving; requests parked in latency, streams or hangs are cancelled."""
        runner, self._runner = self._runner, None
        self._root = None
        for task in list(self._sleepers):
            task.cancel()
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The root URL while running."""
        if self._root is None:
            raise RuntimeError("the emulator is not running; await emu.start() first")
        return self._root

    def base_url(self, provider: str) -> str:
        """What keymux (and the official SDKs) use as ``provider``'s base URL."""
        return self.url + BASE_PATHS[normalize_provider(provider)]

    def __repr__(self) -> str:
        where = self._root or "not running"
        return f"keymux.emulator.Emulator(keys={len(self._keys)}, {where})"

    # --- routing --------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        d = self._dialects
        routes: list[tuple[str, str, Handler]] = []
        for prefix, dialect in (("/v1", d["openai"]), ("/openai/v1", d["groq"])):
            routes += [
                ("POST", f"{prefix}/chat/completions", self._route(dialect, "chat")),
                ("POST", f"{prefix}/embeddings", self._route(dialect, "embed")),
            ]
        routes += [
            ("GET", "/openai/v1/models", self._route(d["groq"], "models")),
            ("GET", "/openai/v1/models/{model:.+}", self._route(d["groq"], "model")),
            # OpenAI's, Anthropic's and (google-genai 3.x) Gemini's: decided by headers
            ("GET", "/v1/models", self._shared_route("models")),
            ("GET", "/v1/models/{model:.+}", self._shared_route("model")),
            ("POST", "/v1/messages", self._route(d["claude"], "chat")),
            ("POST", "/v1/messages/count_tokens", self._route(d["claude"], "count")),
            ("GET", "/v1beta/models", self._route(d["gemini"], "models")),
            ("GET", "/v1beta/models/{target}", self._route(d["gemini"], "model")),
        ]
        # Gemini's methods under /v1beta (the REST docs, google-genai 2.x) and /v1 (3.x)
        routes += [("POST", f"{p}/models/{{target}}", self._gemini_route()) for p in _GEMINI]
        routes += [
            ("GET", "/_emulator/stats", self._ctl_stats),
            ("GET", "/_emulator/keys", self._ctl_list_keys),
            ("POST", "/_emulator/keys", self._ctl_add_keys),
            ("POST", "/_emulator/reset", self._ctl_reset),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        return app

    def _route(self, dialect: Dialect, op: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._handle(request, dialect, op)

        return handler

    def _shared_dialect(self, request: web.Request) -> Dialect:
        """Whose ``/v1/models`` this is: ``anthropic-version`` or ``x-api-key`` -> Anthropic,
        ``x-goog-api-key`` or a ``key=`` query -> Gemini, anything else -> OpenAI."""
        headers = request.headers
        if "anthropic-version" in headers or "x-api-key" in headers:
            return self._dialects["claude"]
        if "x-goog-api-key" in headers or "key" in request.query:
            return self._dialects["gemini"]
        return self._dialects["openai"]

    def _shared_route(self, op: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._handle(request, self._shared_dialect(request), op)

        return handler

    def _gemini_route(self) -> Handler:
        gemini = self._dialects["gemini"]

        async def handler(request: web.Request) -> web.StreamResponse:
            _, method = split_target(request.match_info["target"])
            return await self._handle(request, gemini, GEMINI_METHODS.get(method, "unknown"))

        return handler

    # --- the request path -----------------------------------------------------------------

    async def _handle(self, request: web.Request, dialect: Dialect, op: str) -> web.StreamResponse:
        self._seq += 1
        ctx = Ctx(self._seq, self.clock.now(), self.clock.wall())
        holder: list[_KeyState] = []
        try:
            return await self._serve(request, dialect, op, ctx, holder)
        except asyncio.CancelledError:
            raise
        except Exception:  # never crash a handler: the provider's own 500 instead
            state = holder[0] if holder else None
            self._total.fault("internal_error")
            if state is not None:
                state.stats.fault("internal_error")
            return self._reply(dialect, ctx, state, dialect.server_error(ctx))

    async def _serve(
        self, request: web.Request, dialect: Dialect, op: str, ctx: Ctx, holder: list[_KeyState]
    ) -> web.StreamResponse:
        self._total.requests += 1
        secret = dialect.credential(request)
        if secret is None:
            self._total.unknown_key += 1
            return self._reply(dialect, ctx, None, dialect.missing_key(ctx))
        state = self._resolve(dialect.provider, secret)
        if state is None:
            self._total.unknown_key += 1
            return self._reply(dialect, ctx, None, dialect.invalid_key(secret, ctx))
        holder.append(state)
        state.stats.requests += 1
        key = state.key
        faults = key.faults
        if faults.revoked:
            return self._reply(dialect, ctx, state, dialect.invalid_key(secret, ctx))
        if faults.reset_connection:
            self._fault(state, "reset_connection")
            return self._reset(request)
        if faults.hang:
            self._fault(state, "hang")
            await self._hang()
        refusal = dialect.precheck(request, ctx)
        if refusal is not None:
            return self._reply(dialect, ctx, state, refusal)
        if op == "models":
            return self._reply(dialect, ctx, state, dialect.models(ctx))
        if op == "model":
            name = request.match_info.get("model") or request.match_info.get("target", "")
            return self._reply(dialect, ctx, state, dialect.model(name, ctx))
        try:
            if op == "unknown":
                _, method = split_target(request.match_info.get("target", ""))
                raise BadRequest(f"Method '{method}' is not found for this model.", status=404)
            body = await self._read_json(request)
            if body is None:
                return self._reply(dialect, ctx, state, dialect.bad_json(ctx))
            if op == "count":  # its own limits at the providers, not the key's chat limits
                return self._reply(dialect, ctx, state, dialect.count_tokens(body, request, ctx))
            plan: ChatPlan | EmbedPlan = (
                dialect.parse_chat(body, request)
                if op == "chat"
                else dialect.parse_embed(body, request)
            )
        except BadRequest as exc:
            return self._reply(dialect, ctx, state, dialect.bad_request(exc, ctx))
        ctx.model = plan.model
        ctx.scope = dialect.model_scope(plan.model)
        scope = state.scope(ctx.scope)
        scope.requests += 1
        if faults.quota_spent:
            day_reset_in = scope.limits.day_reset_in(ctx.now)
            rpd = key.limits_for(ctx.scope, dialect.model_scope)["rpd"]
            return self._reply(dialect, ctx, state, dialect.quota_spent(rpd, day_reset_in, ctx))
        verdict = scope.limits.admit(ctx.now, plan.tokens)
        if verdict is not None:
            scope.rate_limited += 1
            return self._reply(dialect, ctx, state, dialect.rate_limited(verdict, ctx))
        scope.tokens += plan.tokens
        state.stats.tokens += plan.tokens
        self._total.tokens += plan.tokens
        outcome = self._draw(faults)
        latency = self._latency(self.latency if key.latency is None else key.latency)
        if latency > 0:
            await self._sleep(latency)
        if outcome == "overloaded":
            self._fault(state, "overloaded")
            return self._reply(dialect, ctx, state, dialect.overloaded(ctx))
        if outcome == "server_error":
            self._fault(state, "server_error")
            return self._reply(dialect, ctx, state, dialect.server_error(ctx))
        if isinstance(plan, ChatPlan) and plan.stream:
            return await self._stream(request, dialect, ctx, state, plan)
        if faults.malformed:
            self._fault(state, "malformed")
            return self._reply(dialect, ctx, state, dialect.malformed(ctx))
        if isinstance(plan, ChatPlan):
            if faults.missing_fields:
                self._fault(state, "missing_fields")
                return self._reply(dialect, ctx, state, dialect.chat_stub(plan, ctx))
            return self._reply(dialect, ctx, state, dialect.chat(plan, ctx))
        if faults.missing_fields:
            self._fault(state, "missing_fields")
            return self._reply(dialect, ctx, state, dialect.embed_stub(plan, ctx))
        vectors = [embedding(text, plan.dimensions) for text in plan.texts]
        return self._reply(dialect, ctx, state, dialect.embed(plan, vectors, ctx))

    async def _read_json(self, request: web.Request) -> dict[str, Any] | None:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise BadRequest(
                f"Request too large: the body exceeds {_MAX_BODY} bytes.", status=413
            ) from exc
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _latency(self, latency: Latency) -> float:
        """This answer's latency: the number, or a uniform draw from the (low, high) range."""
        if isinstance(latency, tuple):
            low, high = latency
            return self._rng.uniform(low, high) if high > low else low
        return latency

    def _draw(self, faults: Faults) -> str | None:
        overloaded, failing = faults.overloaded_rate, faults.server_error_rate
        if overloaded <= 0 and failing <= 0:
            return None
        roll = self._rng.random()
        if roll < overloaded:
            return "overloaded"
        if roll < overloaded + failing:
            return "server_error"
        return None

    def _headers(self, dialect: Dialect, ctx: Ctx, state: _KeyState | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if dialect.request_id_header is not None:
            headers[dialect.request_id_header] = ctx.request_id
        scope = state.scopes.get(ctx.scope) if state is not None and ctx.scope else None
        if scope is not None:
            snap = scope.limits.snapshot(self.clock.now())
            if snap is not None:
                headers.update(dialect.rate_headers(snap, self.clock.wall()))
        return headers

    def _reply(
        self, dialect: Dialect, ctx: Ctx, state: _KeyState | None, reply: Reply
    ) -> web.Response:
        headers = self._headers(dialect, ctx, state)
        headers["Content-Type"] = "application/json"
        headers.update(reply.headers)
        self._count(state, reply.status)
        body = reply.body if isinstance(reply.body, bytes) else dumps(reply.body)
        return web.Response(status=reply.status, body=body, headers=headers)

    async def _stream(
        self, request: web.Request, dialect: Dialect, ctx: Ctx, state: _KeyState, plan: ChatPlan
    ) -> web.StreamResponse:
        faults = state.key.faults
        sp: StreamPlan
        if faults.malformed:
            self._fault(state, "malformed")
            sp = dialect.stream_malformed(plan, ctx)
        elif faults.missing_fields:
            self._fault(state, "missing_fields")
            sp = dialect.stream_stub(plan, ctx)
        else:
            sp = dialect.stream(plan, ctx)
        count = len(sp.content)
        stop, mode = count, ""
        cut, err = faults.stream_cut_after, faults.stream_error_after
        if cut is not None and (err is None or cut <= err):
            stop, mode = min(cut, count), "stream_cut"
        elif err is not None:
            stop, mode = min(err, count), "stream_error"
        if mode:
            self._fault(state, mode)
        headers = self._headers(dialect, ctx, state)
        headers["Content-Type"] = sp.content_type
        headers["Cache-Control"] = "no-cache"
        response = web.StreamResponse(status=200, headers=headers)
        self._count(state, 200)
        state.stats.streams += 1
        self._total.streams += 1
        frames = sp.content[:stop]
        ending = b"".join(sp.tail) if not mode else sp.error if mode == "stream_error" else b""
        delay = self.stream_chunk_delay
        try:
            await response.prepare(request)
            if delay <= 0:
                await response.write(b"".join(sp.head) + b"".join(frames) + ending)
            else:
                if sp.head:
                    await response.write(b"".join(sp.head))
                for frame in frames:
                    await self._sleep(delay)
                    await response.write(frame)
                if ending:
                    if not mode:
                        await self._sleep(delay)
                    await response.write(ending)
            if mode == "stream_cut":
                if request.transport is not None:
                    request.transport.close()  # what was written is flushed, then the FIN
                return response
            await response.write_eof()
        except ConnectionError:  # the client went away mid-stream
            pass
        except Exception:  # a bug after the 200 went out: end the stream like a cut
            self._fault(state, "internal_error")
            if request.transport is not None:
                request.transport.close()
        return response

    # --- waiting and connection faults ----------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        """Sleep on the clock; ``stop()`` cancels whoever is parked here."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - handlers always run in a task
            await self.clock.sleep(seconds)
            return
        self._sleepers.add(task)
        try:
            await self.clock.sleep(seconds)
        finally:
            self._sleepers.discard(task)

    async def _hang(self) -> NoReturn:
        while True:
            await self._sleep(_HANG_SLICE)

    def _reset(self, request: web.Request) -> web.Response:
        """Drop the connection without an answer (an RST where the platform allows it)."""
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            transport.abort()
        # aiohttp tries to send this on the dead transport and drops it quietly
        return web.Response(status=500)

    # --- control endpoints (for out-of-process use; loopback only by default) -------------

    async def _ctl_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _ctl_list_keys(self, request: web.Request) -> web.Response:
        listing = [
            {
                "provider": k.provider,
                "label": k.display,
                "rpm": k.rpm,
                "tpm": k.tpm,
                "rpd": k.rpd,
                "models": {model: dict(limits) for model, limits in k.models.items()},
                "rate_model": k.rate_model,
                "latency": k.latency,
                "faults": k.faults.active(),
            }
            for k in self.keys()
        ]
        defaults = {
            "rate_model": self.rate_model,
            "window": self.window,
            "day_window": self.day_window,
            "latency": self.latency,
            "stream_chunk_delay": self.stream_chunk_delay,
            "accept_any_key": self.accept_any_key,
            "default_limits": self.default_limits,
        }
        return web.json_response({"keys": listing, "defaults": defaults})

    async def _ctl_add_keys(self, request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read())
            items = data if isinstance(data, list) else data.get("keys", [data])
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise ValueError('expected a key object, a list of them, or {"keys": [...]}')
            keys = [EmulatorKey.from_dict(item) for item in items]
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        for key in keys:
            self.add_key(key)
        return web.json_response({"added": [key.display for key in keys]})

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"ok": True})
