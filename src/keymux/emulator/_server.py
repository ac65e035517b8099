"""Running the emulator as a server: ``serve`` (async, until cancelled) and ``run`` (blocking)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from ._app import Emulator

__all__ = ["run", "serve"]


async def serve(
    emu: Emulator,
    host: str = "127.0.0.1",
    port: int = 8700,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``emu`` on ``host:port`` until this task is cancelled, then stop it cleanly.

    ``on_ready(root_url)`` is called once the socket is bound (e.g. to print the URL).
    """
    root = await emu.start(host=host, port=port)
    try:
        if on_ready is not None:
            on_ready(root)
        await asyncio.Event().wait()
    finally:
        await emu.stop()


def run(
    emu: Emulator,
    host: str = "127.0.0.1",
    port: int = 8700,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Blocking: serve ``emu`` until SIGINT/SIGTERM (or Ctrl-C), then return."""

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(emu, host, port, on_ready=on_ready)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
