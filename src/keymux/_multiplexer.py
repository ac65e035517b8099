"""The public Multiplexer: keys, clients, statistics, lifecycle."""

from __future__ import annotations

import logging
import os
import random
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from . import transports
from ._client import ProviderClient
from ._clock import Clock, SystemClock
from ._config import KeySpec, MuxConfig, RetryPolicy, Timeout
from ._core import Core
from ._env import EnvProblem, EnvScan, discover_keys
from ._errors import ClosedError, ConfigError, UsageError
from ._gateway import Gateway
from ._secret import Secret
from ._stats import lane_stats, merge_totals
from ._strategies import Strategy, resolve_strategy
from ._sync import Runtime
from .providers import canonical_provider
from .state import open_state

__all__ = ["ApiKeyMultiplexer", "Multiplexer"]

log = logging.getLogger("keymux")

_UNSET: Any = object()

#: the environment variable ``from_env`` reads the state URL from
STATE_VARIABLE = "KEYMUX_STATE"


class Multiplexer:
    """Spreads requests for each provider across many API keys.

    One lane per key with a bounded queue, a concurrency limit, its own backoff and rate
    budget; one asyncio core with a thin synchronous facade. Thread-safe.

    ``state``: where the keys' shared facts live. ``memory://`` (the default): this process.
    ``redis://host:6379/0`` (also ``rediss://``, ``redis+unix://``, ``redis+cluster://``):
    every process and host using the same URL shares each key's status, budgets and counters
    (``pip install 'keymux[redis]'``).
    """

    def __init__(
        self,
        max_concurrent_requests: int = 5,
        queue_size: int = 100,
        initial_retry_delay: float = 1.0,
        backoff_factor: float = 2.0,
        max_retries: int = 5,
        timeout: float | Timeout | None = 60.0,
        *,
        max_retry_delay: float = 60.0,
        close_grace: float = 10.0,
        clock: Clock | None = None,
        seed: int | None = None,
        state: str = "memory://",
    ) -> None:
        self._config = MuxConfig(
            max_concurrent_requests=max_concurrent_requests,
            queue_size=queue_size,
            retry=RetryPolicy(
                initial_retry_delay=initial_retry_delay,
                backoff_factor=backoff_factor,
                max_retries=max_retries,
                max_retry_delay=max_retry_delay,
            ),
            timeout=Timeout.of(timeout),
        )
        if close_grace < 0:
            raise ConfigError(f"close_grace must be zero or more, got {close_grace!r}")
        self._close_grace = close_grace
        self._clock: Clock = clock or SystemClock()
        self._core = Core(self._config, clock=self._clock, rng=random.Random(seed))
        shared = open_state(state, clock=self._clock)
        if shared is not None:
            shared.attach(self._core)
            self._core.shared = shared
        self._runtime = Runtime(on_shutdown=self._core.release_loop, on_fork=self._core.forget_loop)
        self._gateway = Gateway(self._core, self._runtime, self._clock, self._config.timeout)
        #: problems found by ``from_env`` (malformed .env lines, empty values), never secrets
        self.env_problems: list[EnvProblem] = []
        self._finalizer = weakref.finalize(self, _finalize, self._runtime, self._core)

    # -- construction from the environment --------------------------------------------------

    @classmethod
    def from_env(
        cls,
        *,
        dotenv_path: str | os.PathLike[str] | None = ".env",
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Multiplexer:
        """A multiplexer with every key found in ``environ`` (default ``os.environ``) and the
        ``dotenv_path`` file (default ``./.env``; None for none).

        Malformed lines and bad key values are logged (by file, line and variable name, never
        by value), kept in ``env_problems`` and skipped. A ``*_BASE_URL`` variable that is set
        but is not a usable URL raises ``ConfigError`` instead of sending to the real API.
        ``KEYMUX_STATE`` (in ``environ``) is the ``state`` URL unless ``state=`` is given.
        """
        scan = discover_keys(environ, dotenv_path=dotenv_path, use_dotenv=dotenv_path is not None)
        if "state" not in kwargs:
            found = (os.environ if environ is None else environ).get(STATE_VARIABLE, "").strip()
            kwargs["state"] = found or "memory://"
        mux = cls(**kwargs)
        mux._load_scan(scan)
        return mux

    def _load_scan(self, scan: EnvScan) -> None:
        self.env_problems = list(scan.problems)
        for problem in scan.problems:  # names files, lines and variables, never values
            if problem.level != "info":
                log.warning("keymux: %s", problem)
        for spec in scan.keys:
            self._add_spec(spec)

    # -- keys -------------------------------------------------------------------------------

    def add_key(
        self,
        provider: str,
        name: str,
        api_key: str | Secret,
        *,
        max_concurrent: int | None = None,
        base_url: str | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        rpd: float | None = None,
        weight: float = 1.0,
        group: str | None = None,
        priority: int = 0,
    ) -> None:
        """Add a key. ``provider``: "openai", "groq", "claude" ("anthropic") or "gemini".

        ``priority`` is the key's tier (0 first): a key of a later tier gets work only while no
        key of an earlier tier has both budget and a free slot."""
        provider = canonical_provider(provider)
        if isinstance(api_key, Secret):
            secret = api_key
        elif isinstance(api_key, str):
            secret = Secret(api_key)
        else:
            raise ConfigError(f"{provider} key {name!r}: api_key must be a string")
        spec = KeySpec(
            provider=provider,
            name=name,
            secret=secret,
            max_concurrent=max_concurrent,
            base_url=base_url,
            rpm=rpm,
            tpm=tpm,
            rpd=rpd,
            weight=weight,
            group=group,
            priority=priority,
        )
        self._add_spec(spec)

    def _add_spec(self, spec: KeySpec) -> None:
        if self._gateway.closed:
            raise ClosedError("the multiplexer is closed")
        self._runtime.call_soon(lambda: self._core.dispatch.add_lane(spec))
        if spec.tpm:
            self._gateway.counts_tokens = True

    def add_openai_key(self, name: str, api_key: str | Secret, **options: Any) -> None:
        """Add an OpenAI key (same options as ``add_key``)."""
        self.add_key("openai", name, api_key, **options)

    def add_groq_key(self, name: str, api_key: str | Secret, **options: Any) -> None:
        """Add a Groq key (same options as ``add_key``)."""
        self.add_key("groq", name, api_key, **options)

    def add_claude_key(self, name: str, api_key: str | Secret, **options: Any) -> None:
        """Add an Anthropic (Claude) key (same options as ``add_key``)."""
        self.add_key("claude", name, api_key, **options)

    add_anthropic_key = add_claude_key

    def add_gemini_key(self, name: str, api_key: str | Secret, **options: Any) -> None:
        """Add a Google Gemini key (same options as ``add_key``)."""
        self.add_key("gemini", name, api_key, **options)

    def remove_key(self, provider: str, name: str) -> None:
        """Remove a key: its waiting requests move to other keys or fail clearly; requests in
        flight on it finish."""
        provider = canonical_provider(provider)
        self._runtime.call_soon(lambda: self._core.dispatch.remove_lane(provider, name))

    def key_info(self) -> list[dict[str, Any]]:
        """The keys, masked: provider, name, masked key, fingerprint, source, status."""
        now = self._clock.now()
        out = []
        for ps in self._core.dispatch.providers.values():
            for lane in list(ps.lanes.values()):
                out.append(
                    {
                        "provider": lane.provider,
                        "name": lane.name,
                        "key": lane.secret.masked,
                        "key_id": lane.secret.key_id,
                        "source": lane.source,
                        "status": lane.status(now),
                        "base_url": lane.base_url,
                    }
                )
        return out

    # -- clients ----------------------------------------------------------------------------

    def get_client(
        self,
        provider: str,
        key_name: str | None = None,
        strategy: str | Strategy[Any] = "round-robin",
    ) -> ProviderClient:
        """A client for one provider: pinned to ``key_name`` ("specific"), or choosing a key per
        request with ``strategy``."""
        provider = canonical_provider(provider)
        if strategy == "specific" and key_name is None:
            raise ConfigError('strategy "specific" needs key_name=')
        if key_name is not None:
            lanes = self._core.dispatch.providers[provider].lanes
            if key_name not in lanes:
                known = ", ".join(lanes) or "none"
                raise ConfigError(f"{provider} has no key named {key_name!r} (known: {known})")
            return ProviderClient(
                self._gateway, provider, key_name=key_name, strategy="specific", strategy_fn=None
            )
        name, fn = resolve_strategy(strategy)
        return ProviderClient(self._gateway, provider, key_name=None, strategy=name, strategy_fn=fn)

    def get_openai_client(
        self, key_name: str | None = None, strategy: str | Strategy[Any] = "round-robin"
    ) -> ProviderClient:
        return self.get_client("openai", key_name=key_name, strategy=strategy)

    def get_groq_client(
        self, key_name: str | None = None, strategy: str | Strategy[Any] = "round-robin"
    ) -> ProviderClient:
        return self.get_client("groq", key_name=key_name, strategy=strategy)

    def get_claude_client(
        self, key_name: str | None = None, strategy: str | Strategy[Any] = "round-robin"
    ) -> ProviderClient:
        return self.get_client("claude", key_name=key_name, strategy=strategy)

    get_anthropic_client = get_claude_client

    def get_gemini_client(
        self, key_name: str | None = None, strategy: str | Strategy[Any] = "round-robin"
    ) -> ProviderClient:
        return self.get_client("gemini", key_name=key_name, strategy=strategy)

    # -- the official SDKs, through keymux ---------------------------------------------------

    def http_client(
        self,
        provider: str,
        *,
        key_name: str | None = None,
        strategy: str | Strategy[Any] = "round-robin",
        library: str | None = None,
    ) -> Any:
        """An ``httpx2.Client`` (or with ``library="httpx"`` an ``httpx.Client``) for an official
        SDK's ``http_client=``: every request goes through this multiplexer's keys. The default
        library is the one ``provider``'s current SDK builds on (groq: httpx; the others: httpx2).
        Used from sync code, its requests run on keymux's loop thread."""
        provider, library = self._sdk_library(provider, library)
        return transports.sync_client(self._sdk_route(provider, key_name, strategy), library)

    def async_http_client(
        self,
        provider: str,
        *,
        key_name: str | None = None,
        strategy: str | Strategy[Any] = "round-robin",
        library: str | None = None,
    ) -> Any:
        """An ``httpx2.AsyncClient`` (or ``httpx.AsyncClient``) for an official SDK's async
        client; its requests run on the caller's event loop."""
        provider, library = self._sdk_library(provider, library)
        return transports.async_client(self._sdk_route(provider, key_name, strategy), library)

    def _sdk_library(self, provider: str, library: str | None) -> tuple[str, str]:
        """The canonical provider and the HTTP library for its drop-in client (importable:
        ConfigError naming the extra to install otherwise)."""
        provider = canonical_provider(provider)
        library = transports.DEFAULT_LIBRARY[provider] if library is None else library
        transports.flavour(library)
        return provider, library

    def _sdk_route(
        self, provider: str, key_name: str | None, strategy: str | Strategy[Any]
    ) -> transports.Route:
        """Where a drop-in client's requests go: pinned to ``key_name``, or spread by
        ``strategy`` (checked as ``get_client`` checks them)."""
        if key_name is not None:
            lanes = self._core.dispatch.providers[provider].lanes
            if key_name not in lanes:
                known = ", ".join(lanes) or "none"
                raise ConfigError(f"{provider} has no key named {key_name!r} (known: {known})")
            name, fn = "specific", None
        elif strategy == "specific":
            raise ConfigError('strategy "specific" needs key_name=')
        else:
            name, fn = resolve_strategy(strategy)
        return transports.Route(
            gateway=self._gateway,
            core=self._core,
            runtime=self._runtime,
            provider=provider,
            pin=key_name,
            strategy=fn,
            strategy_name=name,
        )

    # -- statistics -------------------------------------------------------------------------

    def get_usage_stats(
        self, *, all_processes: bool = False
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """Per provider, per key name: usage, queue_size, current_requests, successes,
        failures, retries, rate_limited, status, and more. JSON-serialisable.

        ``all_processes=True``: the counters (usage, successes, failures, retries,
        rate_limited, input_tokens, output_tokens) are those of every process sharing this
        multiplexer's state, and ``processes`` says how many are alive; queue_size and
        current_requests stay this process's. From sync code the figures are read from the
        store then; on the multiplexer's own event loop they are the last ones read (use
        ``await aget_usage_stats(all_processes=True)`` there for fresh ones)."""
        totals = None
        shared = self._core.shared
        if all_processes and shared is not None:
            if self._runtime.is_home():
                totals = shared.totals
            else:
                totals = self._runtime.run(shared.refresh_totals)
        return self._stats(totals if all_processes else None, all_processes)

    async def aget_usage_stats(
        self, *, all_processes: bool = False
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """``get_usage_stats`` from async code (fresh figures of every process)."""
        totals = None
        shared = self._core.shared
        if all_processes and shared is not None:
            totals = await self._runtime.arun(shared.refresh_totals)
        return self._stats(totals, all_processes)

    def _stats(
        self, totals: dict[str, dict[str, int]] | None, all_processes: bool
    ) -> dict[str, dict[str, dict[str, Any]]]:
        now = self._clock.now()
        wall = self._clock.wall()
        shared = self._core.shared
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for provider, ps in self._core.dispatch.providers.items():
            keys = out[provider] = {}
            for lane in list(ps.lanes.values()):
                stats = keys[lane.name] = lane_stats(lane, now, wall)
                if not all_processes:
                    continue
                if shared is None:
                    stats["processes"] = 1
                    continue
                merge_totals(stats, (totals or {}).get(shared.ident(lane)))
                stats["processes"] = shared.live
        return out

    # -- lifecycle --------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        await self._core.aclose(self._close_grace)

    def close(self) -> None:
        """Finish or fail every accepted request, then release connections and the loop."""
        if self._runtime.is_home():
            raise UsageError(
                "close() was called inside the multiplexer's event loop: use `await mux.aclose()`"
            )
        self._gateway.closed = True
        self._core.closed = True
        self._runtime.close(self._shutdown)

    async def aclose(self) -> None:
        """Finish or fail every accepted request, then release connections."""
        self._gateway.closed = True
        self._core.closed = True
        await self._runtime.aclose(self._shutdown)

    @property
    def closed(self) -> bool:
        return self._gateway.closed

    def __enter__(self) -> Multiplexer:
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Multiplexer:
        await self._runtime.arun(_noop)  # bind to this loop now
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        counts = ", ".join(
            f"{name}={len(ps.lanes)}"
            for name, ps in self._core.dispatch.providers.items()
            if ps.lanes
        )
        state = " closed" if self._gateway.closed else ""
        return f"<keymux.Multiplexer keys({counts or 'none'}){state}>"


#: ``Multiplexer`` under its longer name, kept as an alias
ApiKeyMultiplexer = Multiplexer


async def _noop() -> None:
    return None


def _finalize(runtime: Runtime, core: Core) -> None:
    """At garbage collection or interpreter exit: stop a portal loop we own, closing the
    session on it first (no "unclosed session" noise)."""
    core.closed = True
    loop = runtime.loop
    if loop is None or loop.is_closed() or not loop.is_running():
        return
    if runtime._thread is None:
        return  # a caller's loop: it closes the core when it shuts down
    try:
        runtime.close(lambda: core.aclose(0.0))
    except Exception:
        pass
