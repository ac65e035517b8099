"""Thread and event-loop safety of one Multiplexer shared by many callers.

* many threads on one sync client while other threads add and remove keys;
* async callers on loops of their own, hopping to the loop the core is bound to;
* ``asyncio.run`` twice with the same multiplexer; no "Unclosed client session";
* a blocking call made on the multiplexer's own loop fails fast instead of deadlocking;
* ``os.fork`` after import and after use: the child works with its own loop thread.

The emulator runs in a thread of its own (real loopback socket, real time) or, for the fork
tests, as a ``keymux emulate`` subprocess. Every join has a timeout: a deadlock fails the test
instead of hanging the run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import keymux
from keymux.emulator import Emulator

MESSAGES = [{"role": "user", "content": "hello from a thread"}]
FAST: dict[str, Any] = {
    "initial_retry_delay": 0.01,
    "max_retry_delay": 0.05,
    "timeout": 10.0,
    "close_grace": 2.0,
}
JOIN = 60.0  # seconds: far more than any of these tests needs; a deadlock fails, not hangs


def secret(name: str) -> str:
    return f"sk-thread-{name}-0123456789abcdef"


# --- an emulator on its own loop in a thread --------------------------------------------------


class EmulatorThread:
    def __init__(self, **options: Any) -> None:
        self.emu = Emulator(accept_any_key=True, seed=0, **options)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.emu.start())
            started.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.emu.stop())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

        self.thread = threading.Thread(target=main, name="test-emulator", daemon=True)
        self.thread.start()
        assert started.wait(10), "the emulator did not start"

    def base_url(self, provider: str = "openai") -> str:
        return self.emu.base_url(provider)

    def requests_seen(self) -> int:
        async def count() -> int:
            return int(self.emu.stats()["total"]["requests"])

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def emulator() -> Iterator[EmulatorThread]:
    server = EmulatorThread(latency=0.002)
    yield server
    server.stop()


@pytest.fixture
def slow_emulator() -> Iterator[EmulatorThread]:
    server = EmulatorThread(latency=0.4)
    yield server
    server.stop()


_made: list[keymux.Multiplexer] = []


@pytest.fixture(autouse=True)
def _close_every_multiplexer() -> Iterator[None]:
    """Whatever a test (or a known bug) leaves open is closed: no stray loop threads or
    sessions to be garbage-collected during a later test."""
    yield
    made, _made[:] = list(_made), []
    for mux in made:
        try:
            mux.close()
        except keymux.KeymuxError:
            pass
        mux._runtime._stop_portal()


def make_mux(server: EmulatorThread, *names: str, **options: Any) -> keymux.Multiplexer:
    kwargs = dict(FAST)
    kwargs.update(options)
    mux = keymux.Multiplexer(**kwargs)
    _made.append(mux)
    for name in names:
        mux.add_openai_key(name, secret(name), base_url=server.base_url())
    return mux


def run_threads(targets: list[Callable[[], None]], *, names: str = "caller") -> None:
    """Run every target in a thread of its own; fail (instead of hanging) if one is still alive
    after ``JOIN`` seconds, and re-raise the first exception a target raised."""
    errors: list[BaseException] = []

    def guard(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [
        threading.Thread(target=guard(t), name=f"{names}-{i}", daemon=True)
        for i, t in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + JOIN
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"deadlock? threads still running after {JOIN} s: {alive}"
    if errors:
        raise errors[0]


def portal_thread(mux: keymux.Multiplexer) -> threading.Thread | None:
    """The loop thread this multiplexer started, if any."""
    thread: threading.Thread | None = mux._runtime._thread
    return thread


# --- many threads, one multiplexer ------------------------------------------------------------


def test_many_threads_share_a_sync_client_while_keys_come_and_go(
    emulator: EmulatorThread,
) -> None:
    mux = make_mux(emulator, "s0", "s1", max_concurrent_requests=2, queue_size=64)
    client = mux.get_openai_client(strategy="least-loaded")
    outcomes: list[tuple[str, Any]] = []  # (kind, Response or KeymuxError)
    unexpected: list[BaseException] = []
    stats_seen: list[dict[str, Any]] = []
    done = threading.Event()
    lock = threading.Lock()

    def record(kind: str, value: Any) -> None:
        with lock:
            outcomes.append((kind, value))

    def caller(i: int) -> Callable[[], None]:
        def run() -> None:
            for j in range(8):
                try:
                    if j % 4 == 3:  # pinned to a key that comes and goes
                        pinned = mux.get_openai_client(key_name=f"c{(i + j) % 3}")
                        record("pinned", pinned("chat", messages=MESSAGES))
                    else:
                        record("unpinned", client("chat", messages=MESSAGES))
                except keymux.KeymuxError as exc:
                    record("pinned" if j % 4 == 3 else "unpinned", exc)
                except BaseException as exc:  # anything else is a bug
                    unexpected.append(exc)

        return run

    def churner(k: int) -> Callable[[], None]:
        def run() -> None:
            name = f"c{k}"
            while not done.is_set():
                try:
                    mux.add_openai_key(name, secret(name), base_url=emulator.base_url())
                    time.sleep(0.002)
                    mux.remove_key("openai", name)
                except keymux.KeymuxError:
                    pass
                except BaseException as exc:
                    unexpected.append(exc)
                time.sleep(0.001)

        return run

    def watcher() -> None:
        while not done.is_set():
            try:
                stats = mux.get_usage_stats()
                json.dumps(stats)
                stats_seen.append(stats)
            except BaseException as exc:
                unexpected.append(exc)
            time.sleep(0.005)

    side = [threading.Thread(target=churner(k), daemon=True) for k in range(3)]
    side.append(threading.Thread(target=watcher, daemon=True))
    for thread in side:
        thread.start()
    try:
        run_threads([caller(i) for i in range(16)])
    finally:
        done.set()
        for thread in side:
            thread.join(JOIN)
    assert not [t for t in side if t.is_alive()], "a key-changing thread is stuck"

    assert not unexpected, unexpected
    assert len(outcomes) == 16 * 8  # every call ended, exactly once
    unpinned = [v for kind, v in outcomes if kind == "unpinned"]
    assert all(isinstance(v, keymux.Response) for v in unpinned), [
        v for v in unpinned if not isinstance(v, keymux.Response)
    ]
    for kind, value in outcomes:
        if kind == "pinned" and isinstance(value, keymux.Response):
            assert value.key_name.startswith("c")
        elif kind == "pinned":  # the key was not there, or went away while the call waited
            assert isinstance(value, keymux.ConfigError | keymux.CapacityError), repr(value)

    stats = mux.get_usage_stats()["openai"]
    for name, entry in stats.items():
        assert entry["current_requests"] == 0, (name, entry)
        assert entry["queue_size"] == 0, (name, entry)
    responses = [v for _, v in outcomes if isinstance(v, keymux.Response)]
    on_stable = [r for r in responses if r.key_name in ("s0", "s1")]
    assert stats["s0"]["successes"] + stats["s1"]["successes"] == len(on_stable)
    for snapshot in stats_seen:
        for entry in snapshot["openai"].values():
            assert 0 <= entry["current_requests"] <= entry["max_concurrent"]
            assert 0 <= entry["queue_size"] <= 64
    portal = portal_thread(mux)
    mux.close()
    assert portal is not None
    assert not portal.is_alive()


# --- async callers on loops of their own --------------------------------------------------------


def _async_callers(mux: keymux.Multiplexer, threads: int, calls: int) -> list[Any]:
    results: list[Any] = []
    lock = threading.Lock()

    def one_thread() -> None:
        async def main() -> list[Any]:
            client = mux.get_openai_client()
            got: list[Any] = list(
                await asyncio.gather(
                    *(client.acall("chat", messages=MESSAGES) for _ in range(calls)),
                    return_exceptions=True,
                )
            )
            items = [item async for item in client.astream("chat", messages=MESSAGES)]
            got.append(items[-1])
            return got

        try:
            got = asyncio.run(main())
        except BaseException as exc:
            got = [exc]
        with lock:
            results.extend(got)

    run_threads([one_thread] * threads, names="async-caller")
    return results


def test_async_callers_on_their_own_loops_hop_to_the_portal_loop(
    emulator: EmulatorThread,
) -> None:
    mux = make_mux(emulator, "a", "b")
    first = mux.get_openai_client()("chat", messages=MESSAGES)  # sync first: the portal thread
    assert first.text
    portal = mux._runtime.loop
    thread = portal_thread(mux)
    assert thread is not None
    assert thread.name == "keymux-loop"

    try:
        results = _async_callers(mux, threads=6, calls=5)
        assert mux._runtime.loop is portal  # nobody rebound the core to their own loop
        assert portal_thread(mux) is thread
    finally:
        mux.close()

    assert len(results) == 6 * 6
    assert all(isinstance(r, keymux.Response) for r in results), results
    assert mux._runtime.loop is None
    assert not thread.is_alive()


def test_async_callers_hop_to_a_loop_the_multiplexer_was_first_bound_to(
    emulator: EmulatorThread,
) -> None:
    """Async-first in a long-lived loop of another thread; others (async and sync) hop to it."""
    home = asyncio.new_event_loop()
    thread = threading.Thread(target=home.run_forever, name="home-loop", daemon=True)
    thread.start()
    mux = make_mux(emulator, "a", "b")
    try:
        asyncio.run_coroutine_threadsafe(mux.__aenter__(), home).result(10)
        assert mux._runtime.loop is home

        results = _async_callers(mux, threads=4, calls=5)
        sync_result = mux.get_openai_client()("chat", messages=MESSAGES)

        assert all(isinstance(r, keymux.Response) for r in results), results
        assert isinstance(sync_result, keymux.Response)
        assert mux._runtime.loop is home
        assert portal_thread(mux) is None  # no portal was started: the calls hopped to home
    finally:
        asyncio.run_coroutine_threadsafe(mux.aclose(), home).result(10)
        home.call_soon_threadsafe(home.stop)
        thread.join(10)
        home.close()


async def _until_in_flight(mux: keymux.Multiplexer) -> None:
    """Wait (on the home loop) until another thread's request is in flight on it."""
    for _ in range(2000):
        if mux.get_usage_stats()["openai"]["a"]["current_requests"]:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the other caller's request never started")


def test_an_async_caller_on_another_loop_gets_closed_error_when_the_home_loop_ends(
    slow_emulator: EmulatorThread,
) -> None:
    """When the loop the core is bound to ends (asyncio.run returns) while a caller from another
    loop awaits a request on it, that caller gets a KeymuxError, not a bare CancelledError
    (found here; fixed in fbf77a3)."""
    mux = make_mux(slow_emulator, "a", close_grace=0.0)
    bound = threading.Event()
    outcome: dict[str, Any] = {}

    async def home() -> None:
        await mux.get_openai_client().acall("chat", messages=MESSAGES)  # binds to this loop
        bound.set()
        await _until_in_flight(mux)  # then this asyncio.run ends, with the other call in flight

    def visitor() -> None:
        assert bound.wait(10)

        async def main() -> Any:
            try:
                return await mux.get_openai_client().acall("chat", messages=MESSAGES)
            except BaseException as exc:  # CancelledError included: that is the point
                return exc

        outcome["value"] = asyncio.run(main())

    thread = threading.Thread(target=visitor, daemon=True)
    thread.start()
    asyncio.run(home())
    thread.join(JOIN)
    assert not thread.is_alive()
    value = outcome["value"]
    assert isinstance(value, keymux.ClosedError), repr(value)
    assert "shut down" in str(value) or "closed" in str(value)


def test_a_sync_caller_gets_closed_error_when_the_home_loop_ends(
    slow_emulator: EmulatorThread,
) -> None:
    """The same for a sync caller in another thread: no concurrent.futures.CancelledError
    (fixed in fbf77a3)."""
    mux = make_mux(slow_emulator, "a", close_grace=0.0)
    bound = threading.Event()
    outcome: dict[str, Any] = {}

    async def home() -> None:
        await mux.get_openai_client().acall("chat", messages=MESSAGES)
        bound.set()
        await _until_in_flight(mux)

    def visitor() -> None:
        assert bound.wait(10)
        try:
            outcome["value"] = mux.get_openai_client()("chat", messages=MESSAGES)
        except BaseException as exc:
            outcome["value"] = exc

    thread = threading.Thread(target=visitor, daemon=True)
    thread.start()
    asyncio.run(home())
    thread.join(JOIN)
    assert not thread.is_alive()
    value = outcome["value"]
    assert not isinstance(value, concurrent.futures.CancelledError), repr(value)
    assert isinstance(value, keymux.ClosedError), repr(value)


# --- asyncio.run, twice -----------------------------------------------------------------------


class _Unclosed(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "Unclosed" in text or "unclosed" in text:
            self.messages.append(text)


def _unclosed_after(fn: Callable[[], None]) -> list[str]:
    """Run ``fn``, collect garbage, and return every "Unclosed ..." warning or log line."""
    handler = _Unclosed()
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
            gc.collect()
            gc.collect()
    finally:
        asyncio_log.removeHandler(handler)
    return handler.messages + [str(w.message) for w in caught if "nclosed" in str(w.message)]


async def _one_call(mux: keymux.Multiplexer) -> str:
    resp = await mux.get_openai_client().acall("chat", messages=MESSAGES)
    return resp.text


def test_asyncio_run_closes_the_session_it_opened(emulator: EmulatorThread) -> None:
    mux = make_mux(emulator, "a")
    texts: list[str] = []
    leaks = _unclosed_after(lambda: texts.append(asyncio.run(_one_call(mux))))
    assert texts
    assert leaks == []
    assert mux._runtime.loop is None  # unbound when that loop shut down


def test_asyncio_run_twice_with_the_same_multiplexer(emulator: EmulatorThread) -> None:
    """The loop ending releases the core without closing it: the next asyncio.run and a later
    sync call bind anew (found here: every request used to fail with ClosedError; fixed in
    fbf77a3)."""
    mux = make_mux(emulator, "a")
    texts: list[str] = []

    def twice() -> None:
        texts.append(asyncio.run(_one_call(mux)))
        texts.append(asyncio.run(_one_call(mux)))
        texts.append(mux.get_openai_client()("chat", messages=MESSAGES).text)
        mux.close()

    leaks = _unclosed_after(twice)
    assert len(texts) == 3
    assert leaks == []


# --- blocking calls on the multiplexer's own loop ---------------------------------------------


def test_a_blocking_call_on_the_multiplexers_own_loop_raises_instead_of_deadlocking(
    emulator: EmulatorThread,
) -> None:
    mux = make_mux(emulator, "a")
    caught: dict[str, Any] = {}

    async def main() -> None:
        async with mux:
            client = mux.get_openai_client()
            await client.acall("chat", messages=MESSAGES)
            for what, blocking in (
                ("call", lambda: client("chat", messages=MESSAGES)),
                ("stream", lambda: list(client.stream("chat", messages=MESSAGES))),
            ):
                # refused up front: nothing was sent (a deadlock would fail run_threads)
                before = emulator.requests_seen()
                try:
                    blocking()
                except keymux.KeymuxError as exc:
                    caught[what] = exc
                assert emulator.requests_seen() == before, what
            # and the multiplexer still works afterwards
            caught["after"] = await client.acall("chat", messages=MESSAGES)

    # in a thread, so that a deadlock fails the test instead of hanging the run
    run_threads([lambda: asyncio.run(main())], names="own-loop")
    assert set(caught) == {"call", "stream", "after"}, caught
    for what in ("call", "stream"):
        assert "acall" in str(caught[what]) or "astream" in str(caught[what])
        assert "deadlock" in str(caught[what])
    assert isinstance(caught["after"], keymux.Response)


def test_a_refused_close_on_the_own_loop_leaves_the_multiplexer_usable(
    emulator: EmulatorThread,
) -> None:
    """close() on the own loop is refused before anything changes (it used to leave the
    multiplexer half-closed; fixed in fbf77a3)."""
    mux = make_mux(emulator, "a")
    caught: dict[str, Any] = {}

    async def main() -> None:
        async with mux:
            client = mux.get_openai_client()
            await client.acall("chat", messages=MESSAGES)
            try:
                mux.close()
            except keymux.UsageError as exc:
                caught["close"] = exc
            try:
                caught["after"] = await client.acall("chat", messages=MESSAGES)
            except keymux.KeymuxError as exc:
                caught["after"] = exc

    run_threads([lambda: asyncio.run(main())], names="own-loop")
    assert "aclose" in str(caught["close"])
    assert isinstance(caught["after"], keymux.Response), repr(caught["after"])


# --- loop binding races and leftovers -----------------------------------------------------------


def test_add_key_racing_the_portal_start_runs_on_the_loop(emulator: EmulatorThread) -> None:
    """add_key racing a portal start still runs on the loop thread (call_soon used to check the
    binding outside its lock and mutate the core from the caller's thread; fixed in fbf77a3)."""
    mux = make_mux(emulator, "a")
    runtime = mux._runtime
    real_lock = runtime._lock
    adder_at_lock = threading.Event()
    portal_up = threading.Event()

    class GatedLock:
        """The adder thread reaches the lock, then waits until the portal is running."""

        def __enter__(self) -> Any:
            if threading.current_thread().name == "adder":
                adder_at_lock.set()
                portal_up.wait(10)
            return real_lock.__enter__()

        def __exit__(self, *exc: object) -> Any:
            return real_lock.__exit__(*exc)

    runtime._lock = GatedLock()  # type: ignore[assignment]
    ran_on: list[str] = []
    add_lane = mux._core.dispatch.add_lane

    def recording_add_lane(spec: Any) -> Any:
        ran_on.append(threading.current_thread().name)
        return add_lane(spec)

    mux._core.dispatch.add_lane = recording_add_lane  # type: ignore[method-assign]
    adder = threading.Thread(
        target=lambda: mux.add_openai_key("b", secret("b"), base_url=emulator.base_url()),
        name="adder",
        daemon=True,
    )
    try:
        adder.start()
        assert adder_at_lock.wait(10)
        mux.get_openai_client()("chat", messages=MESSAGES)  # starts the portal loop
        portal_up.set()
        adder.join(JOIN)
        assert not adder.is_alive()
        assert ran_on == ["keymux-loop"], ran_on
    finally:
        portal_up.set()
        runtime._lock = real_lock
        mux.close()


def test_a_call_after_close_starts_no_thread(emulator: EmulatorThread) -> None:
    """A call after close() is refused without starting a loop thread (fixed in fbf77a3)."""
    mux = make_mux(emulator, "a")
    mux.get_openai_client()("chat", messages=MESSAGES)
    mux.close()
    assert portal_thread(mux) is None
    with pytest.raises(keymux.ClosedError):
        mux.get_openai_client()("chat", messages=MESSAGES)
    try:
        assert portal_thread(mux) is None
    finally:
        mux._runtime._stop_portal()


# --- fork -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def emulate_subprocess() -> Iterator[str]:
    """``keymux emulate`` on a free loopback port; yields the OpenAI base URL."""
    yield from _emulate_subprocess()


@pytest.fixture(scope="module")
def slow_emulate_subprocess() -> Iterator[str]:
    """The same, answering each request after 0.25 s: a request stays in flight that long."""
    yield from _emulate_subprocess("--latency", "0.25")


def _emulate_subprocess(*options: str) -> Iterator[str]:
    port = _free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keymux",
            "emulate",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *options,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(root + "/_emulator/stats", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, "keymux emulate exited"
                assert time.monotonic() < deadline, "keymux emulate did not start"
                time.sleep(0.05)
        yield root + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait(10)


def _fork(child: Callable[[], int]) -> int:
    """Run ``child`` in a forked process; return its exit code (it never returns to pytest)."""
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads; that is what we test
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 99
        try:
            code = child()
        except BaseException:
            code = 98
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child hung (a broken loop thread inherited?)")
        time.sleep(0.02)


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _child_call(mux: keymux.Multiplexer, parent_portal: threading.Thread | None = None) -> int:
    """In the child: one sync call through a loop thread of the child's own; an exit code."""
    resp = mux.get_openai_client()("chat", messages=MESSAGES)
    if not isinstance(resp, keymux.Response) or not resp.text:
        return 3
    if mux.get_usage_stats()["openai"]["a"]["current_requests"] != 0:
        return 4
    portal = portal_thread(mux)
    if portal is None or not portal.is_alive() or portal is parent_portal:
        return 5
    mux.close()
    return 0 if not portal.is_alive() else 8


@needs_fork
def test_fork_after_import_a_fresh_multiplexer_works_in_the_child(
    emulate_subprocess: str,
) -> None:
    def child() -> int:
        mux = keymux.Multiplexer(**FAST)
        mux.add_openai_key("a", secret("a"), base_url=emulate_subprocess)
        return _child_call(mux)

    assert _fork(child) == 0


@needs_fork
def test_fork_after_use_the_child_gets_its_own_loop_thread(emulate_subprocess: str) -> None:
    mux = keymux.Multiplexer(**FAST)
    _made.append(mux)
    mux.add_openai_key("a", secret("a"), base_url=emulate_subprocess)
    client = mux.get_openai_client()
    assert client("chat", messages=MESSAGES).text  # the parent's portal thread is running
    parent_loop = mux._runtime.loop
    parent_portal = portal_thread(mux)
    assert parent_portal is not None

    def child() -> int:
        # only the forking thread survives fork: the inherited loop thread is gone
        if parent_portal.is_alive():
            return 6
        return _child_call(mux, parent_portal)

    assert _fork(child) == 0
    # the parent is unaffected
    assert client("chat", messages=MESSAGES).text
    assert mux._runtime.loop is parent_loop
    mux.close()


@needs_fork
def test_fork_while_requests_are_in_flight_in_the_parent(slow_emulate_subprocess: str) -> None:
    mux = keymux.Multiplexer(**FAST)
    _made.append(mux)
    mux.add_openai_key("a", secret("a"), base_url=slow_emulate_subprocess)
    client = mux.get_openai_client()
    results: list[Any] = []

    def background() -> None:
        for _ in range(2):
            try:
                results.append(client("chat", messages=MESSAGES))
            except BaseException as exc:
                results.append(exc)

    def in_flight() -> int:
        return int(mux.get_usage_stats()["openai"]["a"]["current_requests"])

    thread = threading.Thread(target=background, daemon=True)
    thread.start()
    # fork only once a request is really in flight (each is held 0.25 s by the emulator)
    deadline = time.monotonic() + 10
    while in_flight() != 1:
        assert time.monotonic() < deadline, "no request went in flight within 10 s"
        time.sleep(0.001)

    def child() -> int:
        # the parent's counters (requests in flight, queues) must not leak into the child:
        # _child_call checks the child sees 0 in flight after its own call
        return _child_call(mux)

    assert results == []  # the first request has not come back: it is in flight now
    code = _fork(child)
    thread.join(JOIN)
    assert code == 0
    assert len(results) == 2
    assert all(isinstance(r, keymux.Response) for r in results), results
    mux.close()
