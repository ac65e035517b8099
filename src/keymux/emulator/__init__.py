"""keymux.emulator: a local imitation of the OpenAI, Groq, Anthropic and Gemini HTTP APIs.

One ``aiohttp.web`` application serves all four on one port, with per-key rate limits (rpm,
tpm, rpd over configurable fixed windows), latency and injected faults, answering with each
provider's real rate-limit headers and error bodies. keymux's tests run it in-process; ``keymux
emulate`` runs it as a server::

    emu = Emulator([EmulatorKey("openai", "sk-emu-openai-1", rpm=20)], window=1.0)
    root = await emu.start()                 # "http://127.0.0.1:PORT"
    base = emu.base_url("openai")            # root + "/v1"
    ...
    await emu.stop()

Control endpoints for out-of-process use: ``GET /_emulator/stats``, ``GET /_emulator/keys``,
``POST /_emulator/keys`` (add or replace keys), ``POST /_emulator/reset`` (zero the stats).
"""

from ._app import BASE_PATHS, Emulator
from ._keys import PROVIDERS, EmulatorKey, Faults
from ._server import run, serve

__all__ = ["BASE_PATHS", "PROVIDERS", "Emulator", "EmulatorKey", "Faults", "run", "serve"]
