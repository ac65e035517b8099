"""The Redis store (``redis://``, ``rediss://``, ``redis+unix://``, ``redis+cluster://``).

redis-py's asyncio client with hiredis, imported only when such a URL is used. Every command
gets the URL's short timeout and no retry of the driver's own (keymux decides what a failure
means: the request goes on with local state); the pub/sub connection has its own client with
no read timeout. ``reserve`` is one ``EVALSHA``; everything else goes in pipelines. In a
cluster each script's keys share one hash tag (one slot), and pushes go through classic
``PUBLISH``, which every node of a cluster forwards, so one subscription hears them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._errors import ConfigError
from . import _keys, _lua
from ._store import (
    DAY,
    Ask,
    Change,
    Event,
    KeyStatus,
    Settle,
    Snapshot,
    Store,
    StoreError,
    Verdict,
)
from ._url import StateURL

__all__ = ["RedisStore", "import_driver"]

_US = 1_000_000
LIMITS_TTL_MS = _lua.LIMITS_TTL_MS
#: a disabled key's status: a week after it was disabled
STATUS_TTL_MS = 7 * int(DAY * 1000)
#: counters: a week after their last change
COUNTS_TTL_MS = 7 * int(DAY * 1000)
#: how long a pub/sub read waits before looking again (cancellation, health)
_LISTEN_POLL = 1.0

INSTALL = "pip install 'keymux[redis]'"


def import_driver() -> Any:
    """``redis.asyncio``, or ConfigError naming the extra to install."""
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:
        raise ConfigError(
            f"shared state on Redis needs redis-py: {INSTALL} (redis with hiredis)"
        ) from exc
    return aioredis


def _us(seconds: float) -> int:
    return int(seconds * _US)


def _s(us: Any) -> float:
    return int(us) / _US


class RedisStore(Store):
    """Shared facts in Redis (one server or a cluster)."""

    def __init__(self, spec: StateURL) -> None:
        self._aioredis = import_driver()
        self._spec = spec
        self.url = spec.masked
        self.prefix = spec.prefix
        self.timeout = spec.timeout
        self.channel = _keys.channel(spec.prefix)
        self._procs = _keys.procs_key(spec.prefix)
        self._client: Any = None
        self._reserve_script: Any = None
        self._beat_script: Any = None
        #: the pipelined scripts' SHA1s (loaded on first use, again after a restart)
        self._shas: dict[str, str] = {}
        #: reserves waiting for the end of this turn of the loop, and batches on their way
        self._batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    # -- connections ------------------------------------------------------------------------

    def _options(self, *, read_timeout: float | None) -> dict[str, Any]:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        return {
            "socket_timeout": read_timeout,
            "socket_connect_timeout": max(self.timeout, 0.5),
            # a pooled connection the server closed (a restart) is tried once more on a new
            # one; a timeout is not: it is the store being slow, and the caller goes on
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        }

    def _nodes(self) -> list[tuple[str, int]]:
        from urllib.parse import urlsplit

        netloc = urlsplit(self._spec.driver_url).netloc.rpartition("@")[2]
        nodes = []
        for item in netloc.split(","):
            host, _, port = item.rpartition(":")
            if not host:
                host, port = item, "6379"
            try:
                nodes.append((host.strip("[]"), int(port)))
            except ValueError:
                raise ConfigError(f"{self.url}: {item!r} is not host:port") from None
        return nodes

    def _make(self, *, read_timeout: float | None, single: bool = False) -> Any:
        """A client for the URL (``single``: a plain one to one node, for pub/sub)."""
        options = self._options(read_timeout=read_timeout)
        spec = self._spec
        if spec.kind == "cluster":
            nodes = self._nodes()
            password = _password(spec.driver_url)
            if single:
                host, port = nodes[0]
                return self._aioredis.Redis(host=host, port=port, password=password, **options)
            from redis.asyncio.cluster import ClusterNode

            return self._aioredis.RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in nodes],
                password=password,
                **options,
            )
        return self._aioredis.from_url(spec.driver_url, **options)

    async def connect(self) -> None:
        if self._client is None:
            self._client = self._make(read_timeout=self.timeout)
            self._reserve_script = self._client.register_script(_lua.RESERVE)
            self._beat_script = self._client.register_script(_lua.BEAT)

    async def _load_scripts(self, client: Any) -> None:
        """The pipelined scripts, loaded (on every master of a cluster)."""
        for script in (_lua.RESERVE, _lua.SETTLE, _lua.STATUS):
            self._shas[script] = await client.script_load(script)

    async def _scripted(self, build: Callable[[Callable[..., None]], None]) -> list[Any]:
        """A pipeline of scripts: ``build(run)`` queues them with ``run(script, numkeys,
        *keys_and_args)``. On one server they go as EVALSHA; when the server lost them (a
        restart) they are loaded and the pipeline runs once more (none of it ran: every
        command failed alike). A cluster pipeline takes only EVAL (redis-py's rule)."""
        from redis.exceptions import NoScriptError

        client = await self._ready()
        cluster = self._spec.kind == "cluster"
        if not cluster and not self._shas:
            await self._load_scripts(client)
        for attempt in (1, 2):
            try:
                async with client.pipeline(transaction=False) as pipe:
                    if cluster:
                        build(pipe.eval)
                    else:
                        build(lambda script, *args: pipe.evalsha(self._shas[script], *args))
                    return list(await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                await self._load_scripts(client)
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # a broken connection: nothing to save
                await client.aclose()

    def forget(self) -> None:
        self._client = None
        self._batch = []
        self._sending = set()

    async def _ready(self) -> Any:
        if self._client is None:
            await self.connect()
        return self._client

    # -- budgets ----------------------------------------------------------------------------

    async def reserve(self, ask: Ask) -> Verdict:
        keys: tuple[str, ...] = _keys.budget_keys(self.prefix, ask.tag, ask.scope)
        if ask.key:
            keys = (*keys, _keys.status_key(self.prefix, ask.key))
        keys_and_args = (
            len(keys),
            *keys,
            ask.member,
            ask.tokens,
            ask.req_limit,
            _us(ask.req_window),
            ask.tok_limit,
            _us(ask.tok_window),
            _us(ask.rpm_interval),
            _us(ask.tpm_interval),
            ask.rpd,
        )
        if self._spec.kind == "cluster":
            try:
                client = await self._ready()
                n = len(keys)
                r = await self._reserve_script(
                    keys=keys_and_args[1 : 1 + n], args=keys_and_args[1 + n :], client=client
                )
            except Exception as exc:
                raise _failure(exc) from exc
        else:
            # the reserves of one turn of the loop go out together: one pipeline, one write
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._batch.append((keys_and_args, future))
            if len(self._batch) == 1:
                asyncio.get_running_loop().call_soon(self._send_batch)
            r = await future
        return _verdict(r)

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.ensure_future(self._run_batch(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _run_batch(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        def build(run: Callable[..., None]) -> None:
            for keys_and_args, _ in batch:
                run(_lua.RESERVE, *keys_and_args)

        try:
            results = await self._scripted(build)
        except Exception as exc:
            error = _failure(exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def settle(self, items: Sequence[Settle]) -> None:
        if not items:
            return

        def build(run: Callable[..., None]) -> None:
            for s in items:
                run(
                    _lua.SETTLE,
                    4,
                    *_keys.budget_keys(self.prefix, s.tag, s.scope),
                    s.member,
                    _us(s.sent),
                    s.estimate,
                    s.actual,
                    int(s.refused),
                    s.req_limit,
                    _us(s.req_window),
                    s.tok_limit,
                    _us(s.tok_window),
                )

        try:
            await self._scripted(build)
        except Exception as exc:
            raise _failure(exc) from exc

    # -- status -----------------------------------------------------------------------------

    async def change(self, changes: Sequence[Change], origin: str) -> list[float]:
        if not changes:
            return []

        def build(run: Callable[..., None]) -> None:
            for c in changes:
                key = (
                    _keys.status_key(self.prefix, c.target)
                    if c.scope is None
                    else _keys.budget_keys(self.prefix, c.target, c.scope)[3]
                )
                run(
                    _lua.STATUS,
                    1,
                    key,
                    self.channel,
                    origin,
                    c.op,
                    c.target,
                    "" if c.scope is None else c.scope,
                    c.seconds,
                    c.reason,
                    c.error,
                    STATUS_TTL_MS if c.scope is None else LIMITS_TTL_MS,
                    "k" if c.scope is None else "b",
                )

        try:
            results = await self._scripted(build)
        except Exception as exc:
            raise _failure(exc) from exc
        return [_s(r) for r in results]

    async def status(self, keys: Sequence[str], budgets: Sequence[tuple[str, str]]) -> Snapshot:
        try:
            client = await self._ready()
            now = await client.time()
            async with client.pipeline(transaction=False) as pipe:
                for ident in keys:
                    pipe.hmget(_keys.status_key(self.prefix, ident), "dis", "err", "cool", "park")
                for tag, scope in budgets:
                    pipe.hmget(_keys.budget_keys(self.prefix, tag, scope)[3], "cool", "park")
                results = await pipe.execute()
        except Exception as exc:
            raise _failure(exc) from exc
        snap = Snapshot(int(now[0]) + int(now[1]) / _US)
        for ident, (dis, err, cool, park) in zip(keys, results, strict=False):
            if dis is not None or cool is not None or park is not None:
                snap.keys[ident] = KeyStatus(
                    None if dis is None else dis.decode(),
                    "" if err is None else err.decode(),
                    _s(cool or 0),
                    _s(park or 0),
                )
        for (tag, scope), (cool, park) in zip(budgets, results[len(keys) :], strict=False):
            if cool is not None or park is not None:
                snap.budgets[(tag, scope)] = (_s(cool or 0), _s(park or 0))
        return snap

    # -- counters and processes -------------------------------------------------------------

    async def add_counts(self, deltas: Mapping[str, Mapping[str, int]]) -> None:
        if not deltas:
            return
        try:
            client = await self._ready()
            async with client.pipeline(transaction=False) as pipe:
                for ident, fields in deltas.items():
                    key = _keys.counts_key(self.prefix, ident)
                    for name, value in fields.items():
                        pipe.hincrby(key, name, value)
                    pipe.pexpire(key, COUNTS_TTL_MS)
                await pipe.execute()
        except Exception as exc:
            raise _failure(exc) from exc

    async def counts(self, keys: Sequence[str]) -> dict[str, dict[str, int]]:
        try:
            client = await self._ready()
            async with client.pipeline(transaction=False) as pipe:
                for ident in keys:
                    pipe.hgetall(_keys.counts_key(self.prefix, ident))
                results = await pipe.execute()
        except Exception as exc:
            raise _failure(exc) from exc
        return {
            ident: {k.decode(): int(v) for k, v in found.items()}
            for ident, found in zip(keys, results, strict=True)
        }

    async def beat(self, process: str, every: float) -> tuple[float, int]:
        try:
            client = await self._ready()
            now, live = await self._beat_script(
                keys=(self._procs,),
                args=(process, _us(3 * every), int(10 * every * 1000)),
                client=client,
            )
        except Exception as exc:
            raise _failure(exc) from exc
        return _s(now), int(live)

    async def leave(self, process: str) -> None:
        try:
            client = await self._ready()
            await client.zrem(self._procs, process)
        except Exception as exc:
            raise _failure(exc) from exc

    async def listen(self, handler: Callable[[Event], None], ready: Callable[[], None]) -> None:
        client = self._make(read_timeout=None, single=True)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            ready()
            while True:
                message = await pubsub.get_message(timeout=_LISTEN_POLL)
                if message is None or message.get("type") != "message":
                    continue
                event = decode_event(message["data"])
                if event is not None:
                    handler(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _failure(exc) from exc
        finally:
            with contextlib.suppress(Exception):  # the subscription is gone either way
                await pubsub.aclose()
                await client.aclose()


def decode_event(data: bytes | str) -> Event | None:
    """A pushed change, or None for anything that is not one of ours."""
    try:
        raw = json.loads(data)
        return Event(
            origin=str(raw["o"]),
            op=str(raw["op"]),
            target=str(raw["t"]),
            scope=None if raw.get("l") == "k" else str(raw.get("s") or ""),
            until=_s(raw.get("u") or 0),
            reason=str(raw.get("r") or ""),
            error=str(raw.get("e") or ""),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _password(url: str) -> str | None:
    from urllib.parse import unquote, urlsplit

    password = urlsplit(url).password
    return None if password is None else unquote(password)


def _failure(exc: BaseException) -> StoreError:
    """The driver's error as a StoreError (its message names no password: redis-py's do not)."""
    if isinstance(exc, StoreError):
        return exc
    name = type(exc).__name__
    detail = str(exc) or name
    return StoreError(f"{name}: {detail}" if detail != name else name)


def _verdict(r: Sequence[Any]) -> Verdict:
    return Verdict(
        ok=bool(r[0]),
        now=_s(r[1]),
        requests=int(r[2]),
        requests_oldest=_s(r[3]),
        tokens=int(r[4]),
        tokens_oldest=_s(r[5]),
        req_limit=float(r[6]),
        req_window=_s(r[7]),
        tok_limit=float(r[8]),
        tok_window=_s(r[9]),
        rpm_tat=_s(r[10]),
        tpm_tat=_s(r[11]),
        day_count=int(r[12]),
        day_start=_s(r[13]),
        wait=_s(r[14]),
        cool=_s(r[15]),
        park=_s(r[16]),
        disabled=r[17].decode() if r[17] else None,
        error=r[18].decode() if r[18] else "",
    )
