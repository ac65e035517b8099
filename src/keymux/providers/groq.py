"""Groq: OpenAI's wire protocol with Groq's quirks.

- The SDK's base URL is ``https://api.groq.com``; paths start ``/openai/v1`` (a base URL that
  already ends in ``/openai/v1``, as the OpenAI SDK would use it, is accepted too).
- ``x-ratelimit-*-requests`` headers count the **day** (tokens count the minute), so a 429 with
  no requests left, or whose message names a per-day limit, parks the key until the daily reset.
- 413 means "this request alone is over the key's TPM limit"; 498 means flex-tier capacity.
- Streams carry usage (and a possible error string) in ``x_groq`` of the final chunk; the shared
  ``OpenAIStreamDecoder`` reads it.
- Groq documents no embedding model: ``embed`` needs an explicit ``model=``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .._errors import UnsupportedError
from .._types import Prepared
from .openai import OpenAIAdapter

__all__ = ["GroqAdapter"]


class GroqAdapter(OpenAIAdapter):
    """Groq's OpenAI-compatible API: ``POST {base_url}/openai/v1/chat/completions``."""

    __slots__ = ()

    name: str = "groq"
    default_base_url: str = "https://api.groq.com"
    default_models: Mapping[str, str] = MappingProxyType({"chat": "llama-3.1-8b-instant"})
    endpoints: frozenset[str] = frozenset({"chat", "embed"})

    _api_prefix: str = "/openai/v1"
    _requests_window: str = "day"
    _overload_statuses: frozenset[int] = frozenset({498, 503})
    _oversize_413: bool = True

    def prepare(
        self, endpoint: str, params: Mapping[str, Any], *, model: str | None, stream: bool
    ) -> Prepared:
        if endpoint == "embed" and model is None and params.get("model") is None:
            raise UnsupportedError(
                "groq documents no embedding model, so keymux has no default for 'embed': "
                "pass model= with an embedding model your Groq account serves",
                provider=self.name,
            )
        return super().prepare(endpoint, params, model=model, stream=stream)
