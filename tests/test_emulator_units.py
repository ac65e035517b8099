"""The emulator's pure parts: time formats, window counters, key and fault validation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import keymux.emulator
from keymux._headers import parse_go_duration, parse_proto_duration, parse_rfc3339
from keymux.emulator import Emulator, EmulatorKey, Faults
from keymux.emulator._content import embedding, plan_reply, prompt_tokens, text_of
from keymux.emulator._limits import (
    Limits,
    go_duration,
    proto_duration,
    retry_after,
    rfc3339_ms,
)


def test_public_names() -> None:
    assert sorted(keymux.emulator.__all__) == [
        "BASE_PATHS",
        "Emulator",
        "EmulatorKey",
        "Faults",
        "PROVIDERS",
        "run",
        "serve",
    ]
    for name in keymux.emulator.__all__:
        assert hasattr(keymux.emulator, name)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.0004, "1ms"),
        (0.012, "12ms"),
        (0.734, "734ms"),
        (0.7339999, "734ms"),
        (1.0, "1s"),
        (1.25, "1.25s"),
        (59.999, "59.999s"),
        (60.0, "1m0s"),
        (360.0, "6m0s"),
        (252.172, "4m12.172s"),
        (3600.0, "1h0m0s"),
        (83909.144, "23h18m29.144s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10 * 86_400_000))
def test_go_duration_round_trips_milliseconds(ms: int) -> None:
    assert parse_go_duration(go_duration(ms / 1000)) == pytest.approx(ms / 1000, abs=1e-9)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.734, "0.734s"), (26.0, "26s"), (26.4, "26.4s"), (0.0, "0s")]
)
def test_proto_duration(seconds: float, text: str) -> None:
    assert proto_duration(seconds) == text
    assert parse_proto_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.001, "1"), (0.734, "1"), (1.0, "1"), (1.2, "2"), (60.0, "60")]
)
def test_retry_after(seconds: float, text: str) -> None:
    assert retry_after(seconds) == text


def test_rfc3339_ms() -> None:
    assert rfc3339_ms(1_767_225_600.0) == "2026-01-01T00:00:00.000Z"
    assert rfc3339_ms(1_767_225_659.2341) == "2026-01-01T00:00:59.235Z"  # rounded up
    assert parse_rfc3339(rfc3339_ms(1_767_225_600.5)) == 1_767_225_600.5


def test_limits_windows_are_aligned_and_refusals_are_free() -> None:
    limits = Limits(rpm=2, tpm=100, rpd=3, window=10.0, day_window=100.0, rate_model="fixed")
    assert limits.admit(95.0, 10) is None
    assert limits.admit(99.9, 10) is None
    refused = limits.admit(99.95, 10)
    assert refused is not None
    assert (refused.dimension, refused.limit, refused.used) == ("rpm", 2, 2)
    assert refused.reset_in == pytest.approx(0.05)
    assert limits.admit(100.0, 10) is None  # a new window and a new day
    too_large = limits.admit(100.0, 101)
    assert too_large is not None
    assert too_large.too_large
    assert too_large.dimension == "tpm"
    over = limits.admit(100.0, 95)
    assert over is not None
    assert not over.too_large
    assert over.used == 10
    snap = limits.snapshot(105.0)
    assert snap is not None
    assert snap.rpm is not None
    assert snap.rpd is not None
    assert (snap.rpm.remaining, snap.rpm.reset_in) == (1, 5.0)
    assert (snap.rpd.remaining, snap.rpd.reset_in) == (2, 95.0)
    assert limits.admit(105.0, 1) is None
    assert limits.admit(110.0, 1) is None
    daily = limits.admit(110.0, 1)
    assert daily is not None
    assert daily.dimension == "rpd"
    assert daily.reset_in == 90.0


def test_unlimited_key_has_no_snapshot() -> None:
    limits = Limits(rpm=None, tpm=None, rpd=None, window=60.0, day_window=86400.0)
    assert limits.snapshot(1.0) is None
    assert all(limits.admit(1.0, 10**6) is None for _ in range(1000))


def test_emulator_key_validation_and_repr() -> None:
    key = EmulatorKey("anthropic", "sk-ant-secret-value-1234", rpm=5, faults=Faults(revoked=True))
    assert key.provider == "claude"
    assert "secret-value" not in repr(key)
    assert repr(key) == (
        "keymux.emulator.EmulatorKey('claude', 'sk-...1234', rpm=5, faults={'revoked': True})"
    )
    for bad in ({"rpm": 0}, {"tpm": -1}, {"rpd": 1.5}, {"latency": -1.0}, {"label": ""}):
        with pytest.raises(ValueError):
            EmulatorKey("openai", "sk-x", **bad)
    with pytest.raises(ValueError, match="unknown provider"):
        EmulatorKey("mistral", "k")
    with pytest.raises(ValueError):
        EmulatorKey("openai", " ")


def test_faults_validation() -> None:
    assert Faults().active() == {}
    assert Faults(stream_cut_after=0).active() == {"stream_cut_after": 0}
    for bad in (
        {"server_error_rate": 1.5},
        {"overloaded_rate": -0.1},
        {"hang": 1},
        {"stream_error_after": -1},
        {"revoked": "yes"},
    ):
        with pytest.raises(ValueError):
            Faults(**bad)
    with pytest.raises(ValueError, match="unknown fault"):
        Faults.from_dict({"explode": True})


def test_emulator_options_are_checked() -> None:
    with pytest.raises(ValueError):
        Emulator(window=0)
    with pytest.raises(ValueError):
        Emulator(latency=-1)
    emu = Emulator()
    with pytest.raises(RuntimeError, match="not running"):
        emu.base_url("openai")


def test_content_helpers() -> None:
    assert text_of([{"type": "text", "text": "a"}, {"type": "image_url"}, "b"]) == "a b"
    assert text_of({"role": "user", "parts": [{"text": "x"}, {"text": "y"}]}) == "x y"
    assert prompt_tokens(["abcd", "abcde"]) == 3 + (4 + 1) + (4 + 2)
    chunks, truncated = plan_reply("openai", "", None)
    assert "".join(chunks) == "Hello from the keymux emulator (openai)."
    assert not truncated
    chunks, truncated = plan_reply("gemini", "one two", 7)
    assert chunks[-1] == "You"
    assert truncated
    vector = embedding("hello", 12)
    assert len(vector) == 12
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-5)
    assert embedding("hello") == embedding("hello") != embedding("hellO")


def test_providers_come_from_the_shared_table() -> None:
    from keymux import _names
    from keymux.emulator._keys import normalize_provider

    assert keymux.emulator.PROVIDERS is _names.PROVIDERS
    for alias, canonical in _names.ALIASES.items():
        assert normalize_provider(alias) == canonical
        assert normalize_provider(f" {alias.upper()} ") == canonical
    for provider in _names.PROVIDERS:
        assert normalize_provider(provider) == provider
    for bad in ("mistral", "", None, 3):
        with pytest.raises(ValueError, match="provider"):
            normalize_provider(bad)


def test_emulator_key_from_dict_takes_every_field() -> None:
    key = EmulatorKey.from_dict(
        {
            "provider": "google",
            "key": "AIza-from-dict-000000000001",
            "rpm": 5,
            "tpm": 1000,
            "rpd": 50,
            "latency": [0.1, 0.2],
            "faults": {"overloaded_rate": 0.5},
            "label": "g1",
            "rate_model": "token-bucket",
            "models": {"gemini-2.5-pro": {"rpm": 2, "rpd": None}},
        }
    )
    assert (key.provider, key.rpm, key.tpm, key.rpd) == ("gemini", 5, 1000, 50)
    assert key.latency == (0.1, 0.2)
    assert key.faults == Faults(overloaded_rate=0.5)
    assert (key.label, key.rate_model) == ("g1", "token-bucket")
    assert key.limits_for("gemini-2.5-pro") == {"rpm": 2, "tpm": 1000, "rpd": None}
    assert key.limits_for("gemini-2.5-flash") == {"rpm": 5, "tpm": 1000, "rpd": 50}
    with pytest.raises(ValueError, match="unknown key field"):
        EmulatorKey.from_dict({"provider": "openai", "key": "k", "burst": 3})
