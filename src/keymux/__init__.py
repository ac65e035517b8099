"""keymux: spread LLM API traffic across many API keys of OpenAI, Groq, Anthropic and Gemini.

from keymux import Multiplexer

with Multiplexer.from_env() as mux:
    client = mux.get_openai_client(strategy="rate-aware")
    print(client("chat", messages=[{"role": "user", "content": "Hello"}]).text)

The public names are the ones in ``__all__``; every module whose name starts with ``_`` is
private and may change. Test helpers (``FakeClock``) live in ``keymux.testing``.
"""

import logging as _logging

from ._client import ProviderClient
from ._clock import Clock, SystemClock
from ._config import Timeout
from ._errors import (
    AuthenticationError,
    BadRequestError,
    CapacityError,
    ClosedError,
    ConfigError,
    ConnectionError,
    InvalidRequestError,
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
    UsageError,
)
from ._multiplexer import ApiKeyMultiplexer, Multiplexer
from ._secret import Secret
from ._strategies import STRATEGIES, Strategy
from ._strategies import LaneView as KeyView
from ._types import Response, Usage

__version__ = "0.1.0.dev0"

# a library's loggers stay silent until the application configures logging (keymux's own CLI
# shows its warnings on stderr itself)
_logging.getLogger("keymux").addHandler(_logging.NullHandler())

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
    "InvalidRequestError",
    "KeyView",
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
    "Strategy",
    "StreamError",
    "SystemClock",
    "Timeout",
    "TransportError",
    "UnsupportedError",
    "UpstreamError",
    "Usage",
    "UsageError",
    "__version__",
]
