"""keymux's public face: ``keymux.__all__`` is exactly the public names, and each is documented.

Modelled on httpx's ``tests/test_exported_members.py``: a name imported into ``keymux`` without
being added to ``__all__`` (or the other way round) fails here, so the API changes only on
purpose.
"""

from __future__ import annotations

import builtins
import inspect
import types
from collections.abc import Mapping

import pytest

import keymux
import keymux.testing

PUBLIC = {
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
}

ERRORS = sorted(
    name
    for name in PUBLIC
    if isinstance(getattr(keymux, name), type) and issubclass(getattr(keymux, name), Exception)
)


def test_all_is_exactly_the_public_names() -> None:
    assert set(keymux.__all__) == PUBLIC
    assert len(keymux.__all__) == len(PUBLIC)  # no name twice


def test_every_public_attribute_is_exported() -> None:
    """Nothing public-looking sits in the package without being in ``__all__`` (submodules
    such as ``keymux.emulator`` and ``keymux.testing`` are reached as modules)."""
    visible = {
        name
        for name, value in vars(keymux).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert visible | {"__version__"} == set(keymux.__all__)


def test_every_exported_name_resolves() -> None:
    for name in keymux.__all__:
        assert hasattr(keymux, name), name


def test_fake_clock_lives_in_keymux_testing() -> None:
    assert keymux.testing.__all__ == ["FakeClock"]
    assert "FakeClock" not in keymux.__all__
    assert not hasattr(keymux, "FakeClock")
    assert isinstance(keymux.testing.FakeClock(), keymux.Clock)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        keymux.Nope  # noqa: B018


def test_strategies_are_a_read_only_view() -> None:
    assert isinstance(keymux.STRATEGIES, Mapping)
    assert set(keymux.STRATEGIES) == {"round-robin", "least-loaded", "weighted", "rate-aware"}
    with pytest.raises(TypeError):
        keymux.STRATEGIES["mine"] = keymux.STRATEGIES["round-robin"]  # type: ignore[index]
    assert "mine" not in keymux.STRATEGIES


def test_a_custom_strategy_typed_with_the_public_protocols() -> None:
    def busiest_last(candidates: list[keymux.KeyView], now: float) -> keymux.KeyView:
        return min(candidates, key=lambda c: (c.in_flight, c.headroom(now)))

    strategy: keymux.Strategy[keymux.KeyView] = busiest_last
    with keymux.Multiplexer() as mux:
        mux.add_openai_key("a", "sk-test-exported-members-0000000000")
        client = mux.get_openai_client(strategy=strategy)
    assert client.strategy == "busiest_last"
    members = {name for name, _ in inspect.getmembers(keymux.KeyView) if not name.startswith("_")}
    assert members >= {"name", "last_used", "in_flight", "waiting", "usage", "weight", "latency"}
    assert "headroom" in members


@pytest.mark.parametrize("name", ERRORS)
def test_each_public_error_has_a_one_line_docstring(name: str) -> None:
    cls = getattr(keymux, name)
    doc = cls.__dict__.get("__doc__")  # its own, not inherited
    assert doc, f"{name} has no docstring"
    assert "\n" not in doc.strip(), f"{name}'s docstring is more than one line"
    assert doc.strip().endswith("."), name


def test_the_error_tree() -> None:
    assert issubclass(keymux.ConnectionError, builtins.ConnectionError)
    assert issubclass(keymux.ConnectionError, keymux.TransportError)
    assert issubclass(keymux.RequestTimeoutError, TimeoutError)
    assert issubclass(keymux.ConfigError, ValueError)
    assert all(issubclass(getattr(keymux, name), keymux.KeymuxError) for name in ERRORS)


def test_keymux_connection_error_is_caught_by_the_builtin_name() -> None:
    err = keymux.ConnectionError("openai key 'k': cannot connect", provider="openai", key_name="k")
    with pytest.raises(builtins.ConnectionError) as info:
        raise err
    assert info.value is err
    assert str(err) == "openai key 'k': cannot connect"
    assert (err.provider, err.key_name) == ("openai", "k")
    with pytest.raises(keymux.TransportError):
        raise keymux.ConnectionError("again")


def test_the_keymux_logger_is_silent_until_the_application_configures_logging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A NullHandler on "keymux": with no logging configured, a library warning does not reach
    stderr through Python's last-resort handler."""
    import logging

    reached: list[logging.LogRecord] = []

    class LastResort(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reached.append(record)

    monkeypatch.setattr(logging, "lastResort", LastResort())
    root = logging.getLogger()
    configured = root.handlers[:]  # pytest's own; put back before the test ends
    for handler in configured:
        root.removeHandler(handler)
    try:
        logging.getLogger("keymux._core").warning("keymux: a warning nobody asked to see")
        logging.getLogger("not-keymux").warning("an application's warning")
    finally:
        for handler in configured:
            root.addHandler(handler)
    assert [r.getMessage() for r in reached] == ["an application's warning"]
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("keymux").handlers)
