"""Provider adapters, found by name in one table."""

from __future__ import annotations

from .._errors import ConfigError
from .._names import ALIASES, PROVIDERS, lookup_provider
from ._base import Adapter, SSEEvent, SSEParser, StreamDecoder, StreamFailure
from .claude import ClaudeAdapter
from .gemini import GeminiAdapter
from .groq import GroqAdapter
from .openai import OpenAIAdapter

__all__ = [
    "ADAPTERS",
    "ALIASES",
    "Adapter",
    "SSEEvent",
    "SSEParser",
    "StreamDecoder",
    "StreamFailure",
    "canonical_provider",
]

#: provider name -> adapter
ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "groq": GroqAdapter(),
    "claude": ClaudeAdapter(),
    "gemini": GeminiAdapter(),
}

assert tuple(ADAPTERS) == PROVIDERS, "one adapter per provider in keymux._names"


def canonical_provider(name: str) -> str:
    """The canonical provider name, or a ConfigError naming the known ones."""
    if not isinstance(name, str):
        raise ConfigError(f"provider must be a string, got {type(name).__name__}")
    key = lookup_provider(name)
    if key is None:
        known = ", ".join(sorted([*PROVIDERS, *ALIASES]))
        raise ConfigError(f"unknown provider {name!r}: use one of {known}")
    return key
