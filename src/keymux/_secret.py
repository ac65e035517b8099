"""Secrets are a type: masked everywhere, revealed in exactly one place (the auth header)."""

from __future__ import annotations

import hashlib
from typing import NoReturn

__all__ = ["Secret", "mask"]


def mask(value: str) -> str:
    """A masked form that is safe to show: a short prefix and the last four characters."""
    if len(value) <= 12:
        return "***"
    prefix = value[:3] if value[:3].isascii() else ""
    return f"{prefix}...{value[-4:]}"


class Secret:
    """An API key. ``repr``/``str``/formatting show a masked form; ``reveal()`` gives the value."""

    __slots__ = ("_value", "fingerprint", "key_id", "masked")

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("an API key must be a str")
        self._value = value
        self.masked = mask(value)
        digest = hashlib.sha256(value.encode()).hexdigest()
        #: a short stable fingerprint, safe for logs and metrics
        self.key_id = digest[:8]
        #: a longer one (64 bits) that names the key in shared state, where keys of many
        #: deployments meet
        self.fingerprint = digest[:16]

    def reveal(self) -> str:
        """The key itself. Used only where the provider's auth header is built."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{self.masked}')"

    def __str__(self) -> str:
        return self.masked

    def __format__(self, spec: str) -> str:
        return format(self.masked, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("keymux.Secret cannot be pickled (it would write the key out)")
