"""Running the proxy: one process, or ``--workers N`` processes sharing one port.

One process: bind, print where, serve until SIGTERM/SIGINT, then stop accepting, let the
requests and streams in flight finish within ``--grace`` seconds, close, exit 0.

``--workers N``: N processes (spawned, so none inherits a running loop) each bind the same
port with ``SO_REUSEPORT`` and run their own multiplexer; the kernel spreads connections
across them. The parent only watches: a signal is passed on to every worker, and it exits once
they have all finished (0 when they all exited 0). With ``--state memory://`` each worker
paces its keys alone (together they may send up to N times a key's limits); with
``--state redis://...`` the workers (and every host on the same URL) share each key's
status, budgets and counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from multiprocessing.connection import wait
from typing import Any

from .._config import Timeout
from .._errors import ConfigError
from .._multiplexer import Multiplexer
from ._app import Proxy
from ._config import ServerConfig, masked_state_url

__all__ = ["build_multiplexer", "run", "serve_async"]

log = logging.getLogger("keymux")


def build_multiplexer(
    config: ServerConfig, environ: Mapping[str, str] | None = None
) -> Multiplexer:
    """The multiplexer ``keymux serve`` runs: every key of env/.env, as ``from_env`` finds them.
    ConfigError when there is none."""
    mux = Multiplexer.from_env(
        dotenv_path=config.dotenv_path,
        environ=environ,
        max_concurrent_requests=config.max_concurrent,
        queue_size=config.queue_size,
        timeout=Timeout(total=config.timeout, connect=min(10.0, config.timeout)),
        close_grace=config.grace,
        state=config.state,
    )
    if not any(mux.get_usage_stats().values()):
        raise ConfigError(
            "no API keys found in the environment or .env: set OPENAI_API_KEY, GROQ_API_KEY, "
            "ANTHROPIC_API_KEY or GEMINI_API_KEY (numbered _1, _2, ... for several)"
        )
    return mux


def _summary(mux: Multiplexer) -> str:
    counts = [f"{p} {len(keys)}" for p, keys in mux.get_usage_stats().items() if keys]
    return ", ".join(counts)


def _say(line: str) -> None:
    sys.stderr.write(f"keymux serve: {line}\n")
    sys.stderr.flush()


async def serve_async(
    config: ServerConfig,
    mux: Multiplexer,
    *,
    on_ready: Callable[[str], None] | None = None,
    quiet: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop gracefully."""
    proxy = Proxy(mux, config)
    url = await proxy.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            signals.append(sig)
    try:
        if not quiet:
            auth = "no auth (--no-auth)" if config.no_auth else f"{len(config.tokens)} token(s)"
            state = (
                "" if config.state == "memory://" else f"; state {masked_state_url(config.state)}"
            )
            _say(
                f"listening on {url} ({_summary(mux)} keys; {auth}{state}); "
                f"dashboard {url}/dashboard, metrics {url}/metrics"
            )
        if on_ready is not None:
            on_ready(url)
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)

        def closed() -> None:
            if not quiet:
                _say(
                    f"stopping: no longer listening; {proxy.in_progress} request(s) in flight "
                    f"get up to {config.grace:g} s to finish"
                )

        await proxy.stop(on_closed=closed)
    if not quiet:
        _say("stopped")


def run(config: ServerConfig, *, environ: Mapping[str, str] | None = None) -> int:
    """``keymux serve``: blocking; the exit status. ConfigError / OSError for the caller to
    report in one line."""
    config.check_auth()
    if config.workers == 1:
        mux = build_multiplexer(config, environ)
        asyncio.run(serve_async(config, mux))
        return 0
    return _run_workers(config, environ)


def _check_port(config: ServerConfig) -> None:
    """Fail early, once, when the port cannot be had (rather than in every worker)."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.host, config.port))


def _run_workers(config: ServerConfig, environ: Mapping[str, str] | None) -> int:
    if not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - not Linux/BSD/macOS
        raise ConfigError("--workers above 1 needs SO_REUSEPORT, which this system lacks")
    mux = build_multiplexer(config, environ)  # the keys are checked once, here
    summary = _summary(mux)
    mux.close()
    _check_port(config)
    worker_config = _replace(config, reuse_port=True)
    ctx = multiprocessing.get_context("spawn")
    ready = [ctx.Event() for _ in range(config.workers)]
    workers = [
        ctx.Process(
            target=_worker,
            args=(worker_config, dict(environ) if environ else None, event),
            daemon=False,
        )
        for event in ready
    ]
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.pid is not None and proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for proc in workers:
            proc.start()
        for proc, event in zip(workers, ready, strict=True):
            while not event.wait(0.5):  # a worker that dies while starting is not waited for
                if not proc.is_alive() or stopping:
                    break
        if all(event.is_set() for event in ready) and not stopping:
            root = f"http://{config.host}:{config.port}"
            sharing = (
                "each worker paces its keys alone"
                if config.state == "memory://"
                else f"state shared at {masked_state_url(config.state)}"
            )
            _say(
                f"listening on {root} with {config.workers} workers ({summary} keys each; "
                f"{sharing})"
            )
        elif not stopping:
            _say("a worker did not start; stopping the others")
            on_signal(signal.SIGTERM, None)
        alive = list(workers)
        while alive:
            wait([p.sentinel for p in alive])
            for proc in [p for p in alive if not p.is_alive()]:
                alive.remove(proc)
                proc.join()
                if not stopping:  # a worker died on its own: take the rest down too
                    _say(f"a worker exited with status {proc.exitcode}; stopping the others")
                    on_signal(signal.SIGTERM, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [p.exitcode for p in workers]
    _say("stopped")
    return 0 if all(code == 0 for code in codes) else 1


def _worker(config: ServerConfig, environ: Mapping[str, str] | None, ready: Any) -> None:
    """One ``--workers`` process: its own multiplexer on the shared port; ``ready`` is set
    once it listens."""
    logging.basicConfig(level=logging.WARNING, format="keymux serve: %(message)s")
    try:
        mux = build_multiplexer(config, environ)
        asyncio.run(serve_async(config, mux, quiet=True, on_ready=lambda _url: ready.set()))
    except OSError as exc:
        _say(f"a worker could not listen: {exc.strerror or exc}")
        sys.exit(2 if exc.errno in (errno.EADDRINUSE, errno.EACCES) else 1)
    except ConfigError as exc:
        _say(str(exc))
        sys.exit(2)


def _replace(config: ServerConfig, **changes: Any) -> ServerConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)
