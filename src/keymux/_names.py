"""The providers keymux knows, by canonical name, and the other names users give them.

The one table every part reads: the adapters (``providers/``), the emulator and the CLI.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["ALIASES", "PROVIDERS", "lookup_provider"]

#: canonical provider names, in the order keymux shows them
PROVIDERS: tuple[str, ...] = ("openai", "groq", "claude", "gemini")

#: other names users may use for a provider
ALIASES = MappingProxyType({"anthropic": "claude", "google": "gemini"})


def lookup_provider(name: object) -> str | None:
    """The canonical name for ``name`` (case and spaces ignored), or None if unknown."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in PROVIDERS else None
