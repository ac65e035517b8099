"""Which event loop the core runs on, and how calls from elsewhere reach it.

* Async use first (``acall``, ``async with``): the core binds to the caller's running loop, so
  async callers pay no thread hop. When that loop shuts down (``asyncio.run`` finalising async
  generators), the core closes its HTTP session and unbinds; the next use binds again.
* Sync use first: the core gets its own loop in a daemon thread ("portal"); sync callers hand
  coroutines to it and wait on a ``concurrent.futures.Future``.
* A call from another loop or thread hops to the bound loop. A sync call made *on* the bound
  loop's thread would deadlock, so it is refused with a clear error.
* After ``fork`` the child forgets the parent's loop and thread and binds anew.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ._errors import ClosedError, UsageError

__all__ = ["Runtime"]

T = TypeVar("T")


class Runtime:
    """The core's loop binding. All methods are thread-safe."""

    def __init__(
        self,
        *,
        on_shutdown: Callable[[], Awaitable[None]],
        on_fork: Callable[[], None],
        name: str = "keymux",
    ) -> None:
        self._on_shutdown = on_shutdown
        self._on_fork = on_fork
        self._name = name
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None  # set when we own the loop (portal)
        self._sentinel: AsyncIterator[None] | None = None

    # -- binding ----------------------------------------------------------------------------

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            with self._lock:
                if os.getpid() != self._pid:
                    self._pid = os.getpid()
                    self.loop = None
                    self._thread = None
                    self._sentinel = None
                    self._on_fork()

    def _usable(self, loop: asyncio.AbstractEventLoop | None) -> bool:
        return (
            loop is not None
            and not loop.is_closed()
            and (loop.is_running() or self._thread is not None)
        )

    def _start_portal(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                loop.close()

        thread = threading.Thread(target=run, name=f"{self._name}-loop", daemon=True)
        thread.start()
        ready.wait()
        self.loop = loop
        self._thread = thread
        return loop

    def loop_for_sync(self) -> asyncio.AbstractEventLoop:
        """The loop sync callers hand work to (starting the portal thread if needed)."""
        self._check_fork()
        loop = self.loop
        if not self._usable(loop):
            with self._lock:
                loop = self.loop
                if not self._usable(loop):
                    loop = self._start_portal()
        assert loop is not None
        if _running_loop() is loop:
            raise UsageError(
                "a blocking keymux call was made inside the event loop the multiplexer runs on; "
                "it would deadlock: use `await client.acall(...)` / `client.astream(...)` there"
            )
        return loop

    async def _bind_here(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._usable(self.loop):
                assert self.loop is not None
                return self.loop
            self.loop = loop
            self._thread = None
        sentinel = self._watch(loop)
        await sentinel.__anext__()  # registers with the loop's async-generator finaliser
        self._sentinel = sentinel
        return loop

    async def _watch(self, loop: asyncio.AbstractEventLoop) -> AsyncIterator[None]:
        try:
            yield
        finally:
            # the loop is shutting down its async generators: close while it still runs
            if self.loop is loop:
                try:
                    await self._on_shutdown()
                finally:
                    with self._lock:
                        if self.loop is loop:
                            self.loop = None
                            self._sentinel = None

    # -- running ----------------------------------------------------------------------------

    def run(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a coroutine on the core's loop from synchronous code and wait for it."""
        loop = self.loop_for_sync()
        future = asyncio.run_coroutine_threadsafe(factory(), loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError as exc:
            raise _loop_gone() from exc
        except BaseException:
            future.cancel()
            raise

    async def arun(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a coroutine on the core's loop from async code (no hop when already on it)."""
        self._check_fork()
        here = asyncio.get_running_loop()
        loop = self.loop
        if loop is here:
            return await factory()
        if not self._usable(loop):
            loop = await self._bind_here()
            if loop is here:
                return await factory()
        assert loop is not None
        future = asyncio.run_coroutine_threadsafe(factory(), loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if future.cancelled() and not (task is not None and task.cancelling()):
                raise _loop_gone() from exc  # the other loop ended it, not our caller
            raise

    def is_home(self) -> bool:
        """True when called on the bound loop, in the process that bound it."""
        loop = self.loop
        return loop is not None and _running_loop() is loop and os.getpid() == self._pid

    def call_soon(self, fn: Callable[[], T]) -> T:
        """Run a plain function where the core's state may be changed, and return its result:
        directly when unbound or already on the loop, else on the loop thread."""
        self._check_fork()
        with self._lock:  # a portal cannot start between this check and fn()
            loop = self.loop
            if loop is None or not self._usable(loop) or _running_loop() is loop:
                return fn()

        async def wrapper() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), loop).result()

    # -- closing ----------------------------------------------------------------------------

    def close(self, closer: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Close from sync code: run ``closer`` on the loop, stop the portal thread."""
        self._check_fork()
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        if _running_loop() is loop:
            raise UsageError(
                "close() was called inside the multiplexer's event loop: use `await mux.aclose()`"
            )
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(closer(), loop).result()
        self._stop_portal()

    async def aclose(self, closer: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._check_fork()
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        here = asyncio.get_running_loop()
        if loop is here:
            await closer()
            sentinel, self._sentinel = self._sentinel, None
            self.loop = None
            if sentinel is not None:
                await sentinel.aclose()  # type: ignore[attr-defined]
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(closer(), loop))
            await asyncio.to_thread(self._stop_portal)

    def _stop_portal(self) -> None:
        with self._lock:
            thread, loop = self._thread, self.loop
            if thread is None or loop is None:
                return
            self._thread = None
            self.loop = None
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(timeout=10)


def _loop_gone() -> ClosedError:
    return ClosedError(
        "the event loop the multiplexer ran on shut down before the request finished"
    )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
