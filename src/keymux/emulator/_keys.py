"""What the emulator knows about one key: its provider, limits, latency and injected faults."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from types import MappingProxyType
from typing import Any

from .._names import PROVIDERS, lookup_provider
from .._secret import mask
from ._rates import RATE_MODELS

__all__ = [
    "LIMIT_NAMES",
    "PROVIDERS",
    "EmulatorKey",
    "Faults",
    "Latency",
    "check_latency",
    "check_rate_model",
    "normalize_provider",
]

#: a fixed number of seconds, or a (low, high) range drawn uniformly per request
Latency = float | tuple[float, float]
#: the limits a key (and each of its models) may set
LIMIT_NAMES = ("rpm", "tpm", "rpd")


def normalize_provider(name: object) -> str:
    """``"anthropic"`` -> ``"claude"``; ValueError for a provider the emulator does not know."""
    if not isinstance(name, str):
        raise ValueError(f"provider must be a string, not {type(name).__name__}")
    provider = lookup_provider(name)
    if provider is None:
        raise ValueError(f"unknown provider {name!r}; expected one of {', '.join(PROVIDERS)}")
    return provider


def check_rate_model(value: object, name: str = "rate_model") -> str:
    """A rate model's name (a key of ``RATE_MODELS``), or ValueError."""
    if not isinstance(value, str) or value not in RATE_MODELS:
        raise ValueError(f"{name} must be one of {', '.join(RATE_MODELS)}, not {value!r}")
    return value


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 <= value < math.inf:
        return None
    return float(value)


def check_latency(value: object, name: str = "latency") -> Latency:
    """Seconds (a finite number >= 0) or a ``(low, high)`` pair with ``0 <= low <= high``;
    ValueError otherwise. A list pair (from JSON) becomes a tuple."""
    if isinstance(value, list | tuple):
        if len(value) == 2:
            low, high = _seconds(value[0]), _seconds(value[1])
            if low is not None and high is not None and low <= high:
                return (low, high)
        raise ValueError(f"{name} must be seconds >= 0 or a (low, high) pair with low <= high")
    seconds = _seconds(value)
    if seconds is None:
        raise ValueError(f"{name} must be seconds >= 0 or a (low, high) pair with low <= high")
    return seconds


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


def _check_models(value: object) -> MappingProxyType[str, MappingProxyType[str, int | None]]:
    """``{"gpt-4o": {"rpm": 10}}`` frozen; ValueError naming what is wrong."""
    if not isinstance(value, Mapping):
        raise ValueError('models must map model names to limits, e.g. {"gpt-4o": {"rpm": 10}}')
    frozen: dict[str, MappingProxyType[str, int | None]] = {}
    for model, limits in value.items():
        if not isinstance(model, str) or not model.strip():
            raise ValueError("models: each model name must be a non-empty string")
        if not isinstance(limits, Mapping):
            raise ValueError(f"models[{model!r}] must be an object of rpm, tpm and rpd")
        unknown = sorted(set(limits) - set(LIMIT_NAMES))
        if unknown:
            raise ValueError(
                f"models[{model!r}] takes rpm, tpm and rpd, not {', '.join(map(str, unknown))}"
            )
        for name, limit in limits.items():
            _check_count(f"models[{model!r}].{name}", limit, minimum=1)
        frozen[model] = MappingProxyType(dict(limits))
    return MappingProxyType(frozen)


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

    ``rpm`` and ``tpm`` count per the emulator's ``window``, ``rpd`` per its ``day_window``,
    separately for each model (each model scope: Anthropic's dated ids share their class)
    under ``rate_model`` (None = the emulator's default). ``models`` overrides limits for
    named models, e.g. ``{"gpt-4o": {"rpm": 10, "tpm": 20000}}``: a limit it names replaces
    the key's for that model (None = unlimited), the others stay the key's. ``latency``
    (seconds, or a ``(low, high)`` range) overrides the emulator's default answer latency.
    ``label`` names the key in stats (default: a masked form such as ``sk-...abcd``); the key
    itself is never shown.
    """

    provider: str
    key: str
    _: KW_ONLY
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    latency: Latency | None = None
    faults: Faults = field(default_factory=Faults)
    label: str | None = None
    rate_model: str | None = None
    models: Mapping[str, Mapping[str, int | None]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "provider", normalize_provider(self.provider))
        if not isinstance(self.key, str) or not self.key.strip():
            raise ValueError("an emulator key must be a non-empty string")
        for name in LIMIT_NAMES:
            _check_count(name, getattr(self, name), minimum=1)
        if self.latency is not None:
            object.__setattr__(self, "latency", check_latency(self.latency))
        if self.rate_model is not None:
            check_rate_model(self.rate_model)
        object.__setattr__(self, "models", _check_models(self.models))
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
        allowed = {
            "provider",
            "key",
            "rpm",
            "tpm",
            "rpd",
            "latency",
            "faults",
            "label",
            "rate_model",
            "models",
        }
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
            rate_model=data.get("rate_model"),
            models=data.get("models") or {},
        )

    def limits_for(self, scope: str, scope_of: Callable[[str], str] = str) -> dict[str, int | None]:
        """The limits of one model scope: ``{"rpm": .., "tpm": .., "rpd": ..}``, the key's own
        with what ``models`` says for every name whose ``scope_of(name)`` is ``scope``."""
        limits: dict[str, int | None] = {name: getattr(self, name) for name in LIMIT_NAMES}
        for model, override in self.models.items():
            if scope_of(model) == scope:
                limits.update(override)
        return limits

    def __repr__(self) -> str:
        parts = [repr(self.provider), repr(self.display)]
        for name in (*LIMIT_NAMES, "latency", "rate_model"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        if self.models:
            models = {model: dict(limits) for model, limits in self.models.items()}
            parts.append(f"models={models!r}")
        active = self.faults.active()
        if active:
            parts.append(f"faults={active!r}")
        return f"keymux.emulator.EmulatorKey({', '.join(parts)})"
