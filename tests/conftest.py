"""Shared fixtures: the emulator in a background thread, multiplexers wired to it, subprocesses.

The emulator runs on its own event loop in a daemon thread, on a real loopback socket
(127.0.0.1, port 0), so one fixture serves sync tests (``with Multiplexer()``; keymux then runs
its own portal thread) and async tests (``async with Multiplexer()`` on the test's loop) alike.

By default the emulator's clock is a *frozen* ``FakeClock`` whose ``now()`` sits at the start of
a 60 s window and whose ``wall()`` is real time: every request of a test falls in the same
rate-limit window (no flaky window boundaries), and the reset times the emulator reports
(``retry-after``, Anthropic's absolute timestamps) are consistent with the real clock keymux
uses. A frozen clock means emulator ``latency``/``stream_chunk_delay`` would never elapse, so
tests that want them pass ``clock=SystemClock()``.

A recording middleware keeps every request the emulator received (method, path, JSON body) so
tests can check where keymux put things, e.g. Anthropic's top-level ``system``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from hypothesis import settings

from keymux import Multiplexer
from keymux._clock import Clock, FakeClock
from keymux.emulator import Emulator, EmulatorKey, Faults

T = TypeVar("T")

# every property test draws the same examples each run (no database, no fresh randomness): a
# failure is the code's, reproducible, never a lucky draw in CI. Explore with a fresh search:
# pytest --hypothesis-profile=explore
settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", max_examples=1000)
settings.load_profile("deterministic")

PROVIDERS = ("openai", "groq", "claude", "gemini")

#: a prefix per provider that looks like the real thing; the rest makes each key unique
_PREFIX = {
    "openai": "sk-test-",
    "groq": "gsk_test_",
    "claude": "sk-ant-test-",
    "gemini": "AIzaTest-",
}

#: the emulator's clock starts here: a multiple of the 60 s window
WINDOW_START = 960.0


def fake_key(provider: str, name: str) -> str:
    """A fake secret for ``provider``'s key ``name``: long enough to be masked, and unique."""
    return f"{_PREFIX[provider]}{name}-{provider}-0123456789abcdef"


@dataclass(frozen=True)
class Recorded:
    """One request the emulator received."""

    method: str
    path: str
    query: str
    body: Any  # the parsed JSON body, or None


@dataclass
class EmulatorThread:
    """An ``Emulator`` serving on a loopback port from its own loop in a daemon thread."""

    emu: Emulator
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    root: str
    requests: list[Recorded] = field(default_factory=list)

    def run(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a coroutine on the emulator's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(factory(), self.loop).result(timeout=10)

    def call(self, fn: Callable[[], T]) -> T:
        """Run a plain function on the emulator's loop (its state is not locked)."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper)

    def base_url(self, provider: str) -> str:
        return self.emu.base_url(provider)

    def set_faults(self, secret: str, **fields: Any) -> None:
        self.call(lambda: self.emu.set_faults(secret, **fields))

    def stats(self) -> dict[str, Any]:
        return self.call(self.emu.stats)

    def key_stats(self, label: str) -> dict[str, Any]:
        stats: dict[str, Any] = self.stats()["keys"][label]
        return stats

    @property
    def total_429(self) -> int:
        return self.call(lambda: self.emu.total_429)

    def bodies(self, path_suffix: str = "") -> list[Any]:
        return [r.body for r in list(self.requests) if r.path.endswith(path_suffix)]

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        try:
            self.run(self.emu.stop)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


def _recorder(sink: list[Recorded]) -> Any:
    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read() if request.can_read_body else b""  # cached for the handler
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        sink.append(Recorded(request.method, request.path, request.query_string, body))
        response: web.StreamResponse = await handler(request)
        return response

    return record


def start_emulator_thread(
    keys: list[EmulatorKey], *, clock: Clock | None = None, **options: Any
) -> EmulatorThread:
    """Start an emulator on 127.0.0.1 (a free port) in a new thread; returns when it listens."""
    if clock is None:
        clock = FakeClock(start=WINDOW_START, wall_start=time.time())
    emu = Emulator(keys, clock=clock, **options)
    sink: list[Recorded] = []
    emu.app.middlewares.append(_recorder(sink))
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def main() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            try:
                box["root"] = await emu.start(host="127.0.0.1", port=0)
            except BaseException as exc:  # pragma: no cover - reported to the test
                box["error"] = exc
            finally:
                ready.set()

        booting = loop.create_task(boot())
        try:
            loop.run_forever()
        finally:
            booting.cancel()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=main, name="keymux-test-emulator", daemon=True)
    thread.start()
    if not ready.wait(timeout=10):  # pragma: no cover
        raise RuntimeError("the emulator did not start within 10 s")
    if "error" in box:  # pragma: no cover
        raise box["error"]
    return EmulatorThread(emu=emu, loop=loop, thread=thread, root=box["root"], requests=sink)


StartEmulator = Callable[..., EmulatorThread]


@pytest.fixture
def start_emulator() -> Iterator[StartEmulator]:
    """``start_emulator(*EmulatorKey, **Emulator options) -> EmulatorThread``; stopped after."""
    started: list[EmulatorThread] = []

    def factory(*keys: EmulatorKey, **options: Any) -> EmulatorThread:
        server = start_emulator_thread(list(keys), **options)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@dataclass(frozen=True)
class KeyPlan:
    """One key of a test: the name keymux knows it by, its secret, its emulator settings."""

    provider: str
    name: str
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    faults: Faults = field(default_factory=Faults)

    @property
    def secret(self) -> str:
        return fake_key(self.provider, self.name)

    def emulator_key(self) -> EmulatorKey:
        # the label is the keymux key name, so emulator stats and keymux stats line up
        return EmulatorKey(
            self.provider,
            self.secret,
            rpm=self.rpm,
            tpm=self.tpm,
            rpd=self.rpd,
            faults=self.faults,
            label=f"{self.provider}:{self.name}",
        )


@dataclass
class Rig:
    """An emulator and the keys a test wires to it."""

    server: EmulatorThread
    keys: list[KeyPlan]

    def multiplexer(self, **options: Any) -> Multiplexer:
        """A new Multiplexer with every key of the rig (not entered yet). Tiny retry delays
        unless the test says otherwise."""
        options.setdefault("initial_retry_delay", 0.01)
        options.setdefault("max_retry_delay", 0.2)
        options.setdefault("timeout", 10.0)
        options.setdefault("close_grace", 2.0)
        mux = Multiplexer(**options)
        for k in self.keys:
            mux.add_key(k.provider, k.name, k.secret, base_url=self.server.base_url(k.provider))
        return mux

    def key(self, name: str, provider: str | None = None) -> KeyPlan:
        for k in self.keys:
            if k.name == name and (provider is None or k.provider == provider):
                return k
        raise KeyError(name)

    def emu_stats(self, k: KeyPlan) -> dict[str, Any]:
        return self.server.key_stats(f"{k.provider}:{k.name}")


MakeRig = Callable[..., Rig]


@pytest.fixture
def make_rig(start_emulator: StartEmulator) -> MakeRig:
    """``make_rig(*KeyPlan, **Emulator options) -> Rig``: an emulator knowing exactly those keys."""

    def factory(*keys: KeyPlan, **options: Any) -> Rig:
        server = start_emulator(*(k.emulator_key() for k in keys), **options)
        return Rig(server, list(keys))

    return factory


# --- subprocesses ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def minimal_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for subprocesses with none of the developer's keys in it."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "COLUMNS": "200",
        "PYTHONUTF8": "1",
    }
    env.update(extra or {})
    return env


@dataclass
class EmulateProcess:
    """``keymux emulate`` running as a subprocess on a loopback port."""

    proc: subprocess.Popen[bytes]
    root: str

    def base_url(self, provider: str) -> str:
        return self.root + ("/v1" if provider == "openai" else "")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.root + "/_emulator/stats", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data


def _wait_until_answering(proc: subprocess.Popen[bytes], root: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"keymux emulate exited with {proc.returncode}: {out}")
        try:
            with urllib.request.urlopen(root + "/_emulator/stats", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"keymux emulate did not answer within {timeout} s: {last}")


@pytest.fixture
def emulate_process(tmp_path: Path) -> Iterator[Callable[..., EmulateProcess]]:
    """``emulate_process(*extra_args) -> EmulateProcess``; killed in the finalizer."""
    procs: list[subprocess.Popen[bytes]] = []

    def factory(*args: str) -> EmulateProcess:
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "keymux",
            "emulate",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ]
        proc = subprocess.Popen(
            cmd,
            env=minimal_env(),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        root = f"http://127.0.0.1:{port}"
        _wait_until_answering(proc, root, timeout=15.0)
        return EmulateProcess(proc, root)

    yield factory
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
                proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


# --- redis-server for the shared-state tests ------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One ``redis-server`` for the session (tests keep apart by a prefix each)."""
    from redis_support import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test's own."""
    import uuid

    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_url(redis_server: Any, redis_prefix: str) -> str:
    """A state URL on the session's redis-server, with this test's own prefix."""
    url: str = redis_server.url(redis_prefix)
    return url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Any]:
    """A ``redis-server`` of this test's own (to stop, pause and restart)."""
    from redis_support import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
