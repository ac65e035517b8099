"""keymux.emulator: a local imitation of the OpenAI, Groq, Anthropic and Gemini HTTP APIs.

One ``aiohttp.web`` application serves all four on one port, with per-key, per-model rate
limits (rpm, tpm, rpd), latency and injected faults, answering with each provider's real
rate-limit headers and error bodies. keymux's tests run it in-process; ``keymux emulate``
runs it as a server::

    emu = Emulator([EmulatorKey("openai", "sk-emu-openai-1", rpm=20)], window=1.0)
    root = await emu.start()                 # "http://127.0.0.1:PORT"
    base = emu.base_url("openai")            # root + "/v1"
    ...
    await emu.stop()

Rate models
    ``rpm`` and ``tpm`` count over the emulator's ``window`` (seconds, default 60), ``rpd``
    over its ``day_window`` (default 86400), each under a rate model: ``Emulator(...,
    rate_model=...)`` for every key, ``EmulatorKey(..., rate_model=...)`` for one.

    * ``"sliding"`` (the default): an exact sliding log. A request is admitted iff fewer than
      ``rpm`` requests (and, with its tokens, at most ``tpm`` tokens) were admitted in the last
      ``window`` seconds. ``remaining`` is the limit minus what the last window used; the
      reset is the time until the window has fully drained (the newest admitted request
      leaves): "the time until the limit resets to its initial state".
    * ``"token-bucket"``: a bucket of ``limit`` refilled continuously at ``limit / window``
      per second (how OpenAI and Anthropic describe their limits: 60 rpm may be enforced as
      one request per second). ``remaining`` is the whole tokens in it; the reset is the time
      until it is full.
    * ``"fixed"``: windows aligned to the clock (index ``floor(now / window)``) that reset
      when the index changes; the reset is the time until the window ends. This is friendlier
      than any provider (a full budget at every boundary) and was the only model before.

    A 429 says how long to wait in the provider's own way (``retry-after`` and OpenAI/Groq's
    "Please try again in 734ms", Anthropic's ``retry-after``, Gemini's ``RetryInfo.retryDelay``):
    the time until enough capacity for *that* request frees up (for ``fixed``: the window's
    end). When several limits refuse, the 429 names the one that frees up last. A 429 uses no
    budget, and a request whose tokens alone exceed ``tpm`` is "too large" (Groq: a 413).

Per-model limits
    Providers limit each model separately, so every key keeps one budget per model scope: by
    default each model gets the key's own ``rpm``/``tpm``/``rpd``; ``EmulatorKey(...,
    models={"gpt-4o": {"rpm": 10, "tpm": 20000}})`` overrides limits for named models (a limit
    it names replaces the key's, None = unlimited; the others stay the key's). The scope is
    the model name, except for Anthropic, where a dated id counts against its class
    (``claude-sonnet-4-5-20250929`` -> ``claude-sonnet-4-5``). The rate-limit headers of an
    answer describe the budget of the model that was asked; model-list endpoints are not
    limited. Stats stay per key, with a per-model breakdown under ``"models"``.

Latency
    ``latency`` (for the emulator, or per key) is seconds per answer or a ``(low, high)``
    range drawn uniformly per request from the emulator's seeded RNG; ``stream_chunk_delay``
    is the pause before each stream chunk. Both wait on the injected clock.

What the official SDKs send
    Anthropic accepts ``x-api-key`` (SDK 0.x) and ``Authorization: Bearer`` (2.x), with
    ``anthropic-version`` ``2023-06-01`` or ``2026-10-21``. Gemini's methods (generateContent,
    streamGenerateContent, embedContent, batchEmbedContents, models list/get) are served
    under ``/v1beta`` and ``/v1`` (google-genai 3.x), with the key in ``x-goog-api-key`` or
    ``?key=``. ``GET /v1/models[/{model}]`` is shared: ``anthropic-version`` or ``x-api-key``
    means Anthropic, ``x-goog-api-key`` or ``key=`` means Gemini, anything else OpenAI.

Control endpoints for out-of-process use: ``GET /_emulator/stats``, ``GET /_emulator/keys``
(the keys, masked, and the emulator's defaults), ``POST /_emulator/keys`` (add or replace keys:
``EmulatorKey.from_dict`` fields, including ``rate_model``, ``models`` and a ``[low, high]``
``latency``), ``POST /_emulator/reset`` (zero the stats).
"""

from ._app import BASE_PATHS, Emulator
from ._keys import PROVIDERS, EmulatorKey, Faults
from ._server import run, serve

__all__ = ["BASE_PATHS", "PROVIDERS", "Emulator", "EmulatorKey", "Faults", "run", "serve"]
