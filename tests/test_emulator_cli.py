"""``keymux emulate``: its flags parsed and checked, its banner, and end to end in a subprocess."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from conftest import EmulateProcess
from keymux._errors import ConfigError
from keymux._headers import parse_go_duration
from keymux.cli import _parser, main
from keymux.cli._emulate import parse_latency
from keymux.emulator._rates import RATE_MODELS


@pytest.mark.parametrize(
    ("text", "latency"),
    [
        ("0", 0.0),
        ("0.015", 0.015),
        ("2", 2.0),
        ("0.01:0.03", (0.01, 0.03)),
        ("0:1", (0.0, 1.0)),
        ("0.5:0.5", (0.5, 0.5)),
    ],
)
def test_parse_latency(text: str, latency: float | tuple[float, float]) -> None:
    assert parse_latency(text) == latency


@pytest.mark.parametrize("text", ["", "fast", "-1", "0.03:0.01", "1:", ":1", "1:2:3", "inf", "nan"])
def test_parse_latency_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="--latency"):
        parse_latency(text)


def test_emulate_flags() -> None:
    args = _parser().parse_args(["emulate"])
    assert (args.rate_model, args.latency) == ("sliding", "0")
    args = _parser().parse_args(["emulate", "--rate-model", "token-bucket", "--latency", "1:2"])
    assert (args.rate_model, args.latency) == ("token-bucket", "1:2")
    for name in RATE_MODELS:  # the CLI offers every model
        assert _parser().parse_args(["emulate", "--rate-model", name]).rate_model == name


@pytest.mark.parametrize(
    ("flag", "value", "reason"),
    [
        ("--port", "-1", "-1 is not a port: use 1-65535 (0 picks a free one)"),
        ("--port", "65536", "65536 is not a port: use 1-65535 (0 picks a free one)"),
        ("--port", "http", "needs a port number, got 'http'"),
        ("--rpm", "0", "needs a whole number of 1 or more, got 0"),
        ("--tpm", "-5", "needs a whole number of 1 or more, got -5"),
        ("--rpd", "1.5", "needs a whole number, got '1.5'"),
        ("--window", "0", "needs a number above 0, got 0"),
        ("--window", "inf", "needs a number above 0, got inf"),
        ("--day-window", "-1", "needs a number above 0, got -1"),
        ("--day-window", "a day", "needs a number, got 'a day'"),
        ("--seed", "x", "invalid int value: 'x'"),
    ],
)
def test_emulate_refuses_bad_numbers_when_parsing(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, reason: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["emulate", f"{flag}={value}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"keymux emulate: error: argument {flag}: {reason} (see 'keymux emulate --help')\n"
    )


def test_emulate_accepts_the_edges() -> None:
    args = _parser().parse_args(
        ["emulate", "--port", "0", "--rpm", "1", "--tpm", "1", "--rpd", "1", "--window", "0.5"]
    )
    assert (args.port, args.rpm, args.tpm, args.rpd, args.window) == (0, 1, 1, 1, 0.5)
    args = _parser().parse_args(["emulate", "--port", "65535", "--day-window", "3600"])
    assert (args.port, args.day_window) == (65535, 3600.0)
    args = _parser().parse_args(["emulate"])
    assert (args.port, args.window, args.day_window, args.seed) == (8700, 60.0, 86400.0, 0)
    assert (args.rpm, args.tpm, args.rpd, args.key) == (None, None, None, None)


def test_emulate_prints_its_banner_once_bound_with_the_bound_url_unwrapped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import keymux.cli._emulate

    calls: list[tuple[str, int]] = []

    def run(emulator: Any, *, host: str, port: int, on_ready: Callable[[str], None]) -> None:
        calls.append((host, port))
        assert capsys.readouterr().out == ""  # nothing before the socket is bound
        on_ready("http://127.0.0.1:54321")  # what serve() passes: the port actually bound

    monkeypatch.setattr(keymux.cli._emulate, "run", run)
    assert main(["emulate", "--port", "0", "--rpm", "2"]) == 0
    assert calls == [("127.0.0.1", 0)]
    root = "http://127.0.0.1:54321"
    # the second line is wider than the 120 columns the CLI's console has off a terminal
    assert capsys.readouterr().out.splitlines() == [
        f"keymux emulator on {root} (Ctrl-C stops it)",
        f"  OPENAI_BASE_URL={root}/v1  GROQ_BASE_URL={root}  ANTHROPIC_BASE_URL={root}  "
        f"GOOGLE_GEMINI_BASE_URL={root}",
        "  every key is accepted (limits per key and model: rpm=2 tpm=None rpd=None per 60 s "
        "window, sliding)",
    ]


def _get(url: str, headers: dict[str, str] | None = None, body: Any = None) -> tuple[int, Any, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def _chat(emu: EmulateProcess) -> tuple[int, Any, Any]:
    return _get(
        emu.root + "/v1/chat/completions",
        {"Authorization": "Bearer sk-cli-test-000000000001", "Content-Type": "application/json"},
        {"messages": [{"role": "user", "content": "hi"}]},
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("rate_model", "first_reset"),
    [("sliding", 60.0), ("token-bucket", 30.0)],
)
def test_emulate_rate_model_end_to_end(
    emulate_process: Callable[..., EmulateProcess], rate_model: str, first_reset: float
) -> None:
    emu = emulate_process("--rpm", "2", "--rate-model", rate_model, "--latency", "0.2:0.3")
    started = time.monotonic()
    status, headers, _ = _chat(emu)
    took = time.monotonic() - started
    assert status == 200
    assert took >= 0.2  # the drawn latency, at least the range's low end
    assert headers["x-ratelimit-remaining-requests"] == "1"
    reset = parse_go_duration(headers["x-ratelimit-reset-requests"])
    assert reset is not None
    # a full window (sliding) or one token of two per 60 s (bucket), less the latency since
    assert first_reset - 0.3 - 0.5 <= reset <= first_reset
    assert _chat(emu)[0] == 200
    status, headers, body = _chat(emu)
    assert status == 429
    assert body["error"]["code"] == "rate_limit_exceeded"
    _, _, listing = _get(emu.root + "/_emulator/keys")
    assert listing["defaults"]["rate_model"] == rate_model
    assert listing["defaults"]["latency"] == [0.2, 0.3]
    assert listing["defaults"]["default_limits"] == {"rpm": 2, "tpm": None, "rpd": None}
    stats = emu.stats()["keys"]
    (entry,) = stats.values()
    assert entry["rate_model"] == rate_model
    assert entry["models"] == {"gpt-4o-mini": {"requests": 3, "rate_limited": 1, "tokens": 34}}


def test_emulate_refuses_a_bad_latency_before_serving(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulate", "--port", "0", "--latency", "0.3:0.1"]) == 2
    out = capsys.readouterr().out
    assert "keymux emulate: --latency takes seconds >= 0 or LOW:HIGH" in out
    assert "'0.3:0.1'" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["emulate", "--rate-model", "leaky"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'leaky'" in capsys.readouterr().err
