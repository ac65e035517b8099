"""What the emulator knows about one key: its provider, limits, latency and injected faults."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from .._secret import mask

__all__ = ["PROVIDERS", "EmulatorKey", "Faults", "normalize_provider"]

#: the providers the emulator imitates
PROVIDERS: tuple[str, ...] = ("openai", "groq", "claude", "gemini")
_ALIASES = {"anthropic": "claude", "google": "gemini"}


def normalize_provider(name: object) -> str:
    """``"anthropic"`` -> ``"claude"``; ValueError for a provider the emulator does not know."""
    if not isinstance(name, str):
        raise ValueError(f"provider must be a string, not {type(name).__name__}")
    lowered = name.strip().lower()
    provider = _ALIASES.get(lowered, lowered)
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {name!r}; expected one of {', '.join(PROVIDERS)}")
    return provider


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")


def _check_rate(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability between 0 and 1")


def _check_count(name: str, value: object, *, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be None or an integer >= {minimum}")


@dataclass(frozen=True, slots=True)
class Faults:
    """Faults injected on one key's answers; all off by default.

    Probabilities are drawn from the emulator's seeded RNG, once per admitted request.
    ``stream_cut_after`` / ``stream_error_after`` count content chunks (words); when the reply has
    fewer chunks the cut or error comes after the last one, so the stream is always broken.
    """

    revoked: bool = False
    quota_spent: bool = False
    server_error_rate: float = 0.0
    overloaded_rate: float = 0.0
    hang: bool = False
    malformed: bool = False
    missing_fields: bool = False
    stream_cut_after: int | None = None
    stream_error_after: int | None = None
    reset_connection: bool = False

    def __post_init__(self) -> None:
        for name in (
            "revoked",
            "quota_spent",
            "hang",
            "malformed",
            "missing_fields",
            "reset_connection",
        ):
            _check_flag(name, getattr(self, name))
        _check_rate("server_error_rate", self.server_error_rate)
        _check_rate("overloaded_rate", self.overloaded_rate)
        _check_count("stream_cut_after", self.stream_cut_after, minimum=0)
        _check_count("stream_error_after", self.stream_error_after, minimum=0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Faults:
        """Build from JSON-like data; ValueError names any unknown field."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> Faults:
        """A copy with some fields changed; ValueError names any unknown field."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def active(self) -> dict[str, Any]:
        """The fields that differ from the defaults."""
        default = _NO_FAULTS
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


_NO_FAULTS = Faults()


@dataclass(frozen=True, slots=True, repr=False)
class EmulatorKey:
    """One key the emulator accepts, with its limits (None = unlimited).

    ``rpm`` and ``tpm`` count per the emulator's ``window``, ``rpd`` per its ``day_window``.
    ``latency`` overrides the emulator's default answer latency. ``label`` names the key in
    stats (default: a masked form such as ``sk-...abcd``); the key itself is never shown.
    """

    provider: str
    key: str
    _: KW_ONLY
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    latency: float | None = None
    faults: Faults = field(default_factory=Faults)
    label: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "provider", normalize_provider(self.provider))
        if not isinstance(self.key, str) or not self.key.strip():
            raise ValueError("an emulator key must be a non-empty string")
        for name in ("rpm", "tpm", "rpd"):
            _check_count(name, getattr(self, name), minimum=1)
        latency = self.latency
        if latency is not None and (
            isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0
        ):
            raise ValueError("latency must be None or a number of seconds >= 0")
        if not isinstance(self.faults, Faults):
            raise ValueError("faults must be a keymux.emulator.Faults")
        if self.label is not None and (not isinstance(self.label, str) or not self.label):
            raise ValueError("label must be None or a non-empty string")

    @property
    def display(self) -> str:
        """How the key shows in stats and reprs: its label, or a masked form."""
        return self.label if self.label is not None else mask(self.key)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmulatorKey:
        """Build from JSON-like data (the control endpoint); ValueError on anything wrong."""
        allowed = {"provider", "key", "rpm", "tpm", "rpd", "latency", "faults", "label"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"unknown key field(s): {', '.join(unknown)}")
        if "provider" not in data or "key" not in data:
            raise ValueError("a key needs 'provider' and 'key'")
        faults = data.get("faults") or {}
        if not isinstance(faults, Mapping):
            raise ValueError("faults must be an object")
        return cls(
            data["provider"],
            data["key"],
            rpm=data.get("rpm"),
            tpm=data.get("tpm"),
            rpd=data.get("rpd"),
            latency=data.get("latency"),
            faults=Faults.from_dict(faults),
            label=data.get("label"),
        )

    def __repr__(self) -> str:
        parts = [repr(self.provider), repr(self.display)]
        for name in ("rpm", "tpm", "rpd", "latency"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        active = self.faults.active()
        if active:
            parts.append(f"faults={active!r}")
        return f"keymux.emulator.EmulatorKey({', '.join(parts)})"
