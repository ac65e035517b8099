"""keymux: spread LLM API traffic across many API keys of OpenAI, Groq, Anthropic and Gemini.

from keymux import Multiplexer

with Multiplexer.from_env() as mux:
    client = mux.get_openai_client(strategy="rate-aware")
    print(client("chat", messages=[{"role": "user", "content": "Hello"}]).text)
"""

from __future__ import annotations

from ._client import ProviderClient
from ._clock import Clock, FakeClock, SystemClock
from ._config import Timeout
from ._errors import (
    AuthenticationError,
    BadRequestError,
    CapacityError,
    ClosedError,
    ConfigError,
    ConnectionError,
    KeymuxError,
    MalformedResponseError,
    NoKeyAvailableError,
    ProviderServerError,
    QueueFullError,
    QuotaExhaustedError,
    RateLimitedError,
    RequestTimeoutError,
    StreamError,
    TransportError,
    UnsupportedError,
    UpstreamError,
)
from ._multiplexer import ApiKeyMultiplexer, Multiplexer
from ._secret import Secret
from ._strategies import STRATEGIES
from ._types import Response, Usage

__version__ = "0.1.0.dev0"

__all__ = [
    "STRATEGIES",
    "ApiKeyMultiplexer",
    "AuthenticationError",
    "BadRequestError",
    "CapacityError",
    "Clock",
    "ClosedError",
    "ConfigError",
    "ConnectionError",
    "FakeClock",
    "KeymuxError",
    "MalformedResponseError",
    "Multiplexer",
    "NoKeyAvailableError",
    "ProviderClient",
    "ProviderServerError",
    "QueueFullError",
    "QuotaExhaustedError",
    "RateLimitedError",
    "RequestTimeoutError",
    "Response",
    "Secret",
    "StreamError",
    "SystemClock",
    "Timeout",
    "TransportError",
    "UnsupportedError",
    "UpstreamError",
    "Usage",
    "__version__",
]
