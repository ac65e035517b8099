"""Provider adapters, found by name in one table."""

from __future__ import annotations

from .._errors import ConfigError
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
    "get_adapter",
]

#: provider name -> adapter
ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "groq": GroqAdapter(),
    "claude": ClaudeAdapter(),
    "gemini": GeminiAdapter(),
}

#: other names users may use for a provider
ALIASES: dict[str, str] = {"anthropic": "claude", "google": "gemini"}


def canonical_provider(name: str) -> str:
    """The canonical provider name, or a ConfigError naming the known ones."""
    if not isinstance(name, str):
        raise ConfigError(f"provider must be a string, got {type(name).__name__}")
    key = ALIASES.get(name.lower().strip(), name.lower().strip())
    if key not in ADAPTERS:
        known = ", ".join(sorted([*ADAPTERS, *ALIASES]))
        raise ConfigError(f"unknown provider {name!r}: use one of {known}")
    return key


def get_adapter(name: str) -> Adapter:
    return ADAPTERS[canonical_provider(name)]
