"""Secrets are a type: masked everywhere, revealed in exactly one place (the auth header)."""

from __future__ import annotations

import hashlib
import re
from typing import NoReturn, overload

__all__ = ["Secret", "mask", "scrub_secrets"]

#: provider key prefixes (OpenAI ``sk-``, Anthropic ``sk-ant-``, Groq ``gsk_``, xAI ``xai-``,
#: Google ``AIza``; also OpenAI's half-masked echo ``sk-abc1****wxyz``), long random tokens that
#: mix letters and digits, and bearer credentials
_SECRET = re.compile(
    r"(?<![\w-])(?:sk-|gsk_|xai-|AIza)[\w*-]{4,}"
    r"|(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{40,}"
    r"|(?<=Bearer )[\w.~+/-]{8,}=*",
    re.ASCII,
)


def mask(value: str) -> str:
    """A masked form that is safe to show: a short prefix and the last four characters."""
    if len(value) <= 12:
        return "***"
    prefix = value[:3] if value[:3].isascii() else ""
    return f"{prefix}...{value[-4:]}"


def scrub_secrets(text: str) -> str:
    """``text`` with anything that looks like an API key replaced by its masked form (for
    upstream messages, which may echo a key; ``Secret.scrub`` masks one known key)."""
    return _SECRET.sub(_mask_match, text)


def _mask_match(match: re.Match[str]) -> str:
    return mask(match.group().replace("*", ""))


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

    @overload
    def scrub(self, text: str) -> str: ...
    @overload
    def scrub(self, text: bytes) -> bytes: ...

    def scrub(self, text: str | bytes) -> str | bytes:
        """``text`` (or a body of bytes) with this key, wherever it appears, replaced by its
        masked form: for upstream text that may echo the key it was sent with."""
        if isinstance(text, bytes):
            raw = self._value.encode()
            return text.replace(raw, self.masked.encode()) if raw and raw in text else text
        value = self._value
        return text.replace(value, self.masked) if value and value in text else text

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
