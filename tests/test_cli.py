"""The ``keymux`` command line: demo, keys, check (against ``keymux emulate`` in a subprocess),
and ``python -m keymux``.

In-process runs clear every provider variable from the environment first; subprocesses get an
explicit minimal environment, so a developer's real keys are never read, let alone used.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import EmulateProcess, minimal_env
from keymux._secret import mask
from keymux.cli import main
from keymux.cli._demo import DEMO_KEYS, fake_key

PROVIDERS = ("openai", "groq", "claude", "gemini")

#: variables keymux reads keys and base URLs from (api.md), and its own CLI defaults
_KEY_VARIABLE = re.compile(
    r"^(OPENAI|GROQ|CLAUDE|ANTHROPIC|GEMINI|GOOGLE)_API_KEYS?(_\d+)?$"
    r"|^(OPENAI|GROQ|ANTHROPIC|GOOGLE_GEMINI|GEMINI)_BASE_URL$|^KEYMUX_"
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No provider variables in os.environ, a wide terminal for rich, cwd in a temp dir (so no
    stray ./.env is read). Returns that directory."""
    import os

    for name in list(os.environ):
        if _KEY_VARIABLE.match(name):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60.0) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "keymux", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- keymux demo ----------------------------------------------------------------------------


def test_demo_runs_every_key_and_writes_json(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "out" / "demo.json"
    code = main(["demo", "--requests", "60", "--json-out", str(out_file)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 0, text

    secrets = [fake_key(provider, suffix) for provider, suffix, _, _ in DEMO_KEYS]
    names = [f"{provider}-{suffix}" for provider, suffix, _, _ in DEMO_KEYS]
    # the per-key table
    assert "per-key distribution" in text
    for name in names:
        assert name in text
    for column in ("usage", "retries", "rate-limited"):
        assert column in text

    raw = out_file.read_text(encoding="utf-8")
    data = json.loads(raw)
    # the summary tells the faults the emulator injected on purpose, and that keymux retried
    # them, instead of a bare "0 failed" under a table full of failures and retries
    summary = re.search(
        r"^60/60 answered in [0-9.]+ s \([0-9]+ req/s\); the emulator injected (\d+) server "
        r"errors? \(500\) and (\d+) overloads? \(529\) and sent (\d+) rate-limit answers? "
        r"\(429\)(; keymux retried them, on other keys where one was free)?\.$",
        out.out,
        re.MULTILINE,
    )
    assert summary, text
    served = data["emulator"]
    injected = [int(summary[1]), int(summary[2]), int(summary[3])]
    assert injected == [
        served["faults"].get("server_error", 0),
        served["faults"].get("overloaded", 0),
        served["rate_limited"],
    ]
    assert bool(summary[4]) == (sum(injected) > 0)
    keys = [k for per_provider in data["keys"].values() for k in per_provider.values()]
    assert sum(k["retries"] for k in keys) == sum(injected)  # every fault was retried
    assert "0 failed" not in text
    assert data["summary"]["requests"] == 60
    assert data["summary"]["succeeded"] == 60
    assert data["summary"]["failed"] == 0
    assert set(data["keys"]) == set(PROVIDERS)
    for provider, suffix, _, _ in DEMO_KEYS:
        stats = data["keys"][provider][f"{provider}-{suffix}"]
        assert stats["usage"] > 0, f"{provider}-{suffix} was not used"
        assert stats["successes"] > 0
        assert stats["key"] == mask(fake_key(provider, suffix))
    assert sum(k["successes"] for keys in data["keys"].values() for k in keys.values()) == 60
    for secret in secrets:
        assert secret not in raw
        assert secret not in text


# --- keymux keys ----------------------------------------------------------------------------

CANARY = "sk-CANARY-5f1e0c2a-0000-1111-2222-feedfacecafe"


def test_keys_lists_masked_keys_and_their_sources(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "keys.env"
    others = {
        "GROQ_API_KEY_2": "gsk_test_groq_aaaaaaaaaaaaaaaa_wxyz",
        "ANTHROPIC_API_KEYS[0]": "sk-ant-test-one-aaaaaaaaaaaa1234",
        "ANTHROPIC_API_KEYS[1]": "sk-ant-test-two-bbbbbbbbbbbb5678",
        "GEMINI_API_KEY": "AIzaTest-gemini-cccccccccccc9876",
    }
    broken = "sk-CANARY-in-a-broken-line-00000000000000"
    env_file.write_text(
        f"OPENAI_API_KEY={CANARY}\n"
        f"GROQ_API_KEY_2={others['GROQ_API_KEY_2']}\n"
        f"ANTHROPIC_API_KEYS={others['ANTHROPIC_API_KEYS[0]']},"
        f"{others['ANTHROPIC_API_KEYS[1]']}\n"
        f"GEMINI_API_KEY={others['GEMINI_API_KEY']}\n"
        "OPENAI_API_KEY_7=\n"
        f'OPENAI_API_KEY_8="{broken}\n',
        encoding="utf-8",
    )
    env_file.chmod(0o600)
    code = main(["keys", "--env-file", str(env_file)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 0, text
    assert CANARY not in text
    assert broken not in text
    for secret in others.values():
        assert secret not in text
    assert mask(CANARY) in text
    for name, secret in others.items():
        assert name in text
        assert mask(secret) in text
    assert "OPENAI_API_KEY" in text
    for provider in PROVIDERS:
        assert provider in text
    assert "keys.env" in text  # where each key came from
    # problems are reported by variable name (or line), never by value
    assert "OPENAI_API_KEY_7" in text


def test_keys_from_the_environment_show_env_as_source(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    code = main(["keys", "--env-file", ""])
    text = "".join(capsys.readouterr())
    assert code == 0
    assert CANARY not in text
    assert mask(CANARY) in text
    assert re.search(r"OPENAI_API_KEY\s.*\benv\b", text)


def test_keys_without_any_key_says_where_it_looked(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["keys", "--env-file", ""])
    text = "".join(capsys.readouterr())
    assert code != 0
    for variable in ("OPENAI_API_KEY", "GROQ_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        assert variable in text


# --- keymux check against `keymux emulate` in a subprocess -----------------------------------

CHECK_KEYS = {
    "OPENAI_API_KEY": ("openai", "sk-test-openai-aaaaaaaaaaaaaaaa-1111"),
    "OPENAI_API_KEY_2": ("openai", "sk-test-openai-bbbbbbbbbbbbbbbb-2222"),
    "GROQ_API_KEY": ("groq", "gsk_test_groq_cccccccccccccccc_3333"),
    "ANTHROPIC_API_KEY": ("claude", "sk-ant-test-dddddddddddddddd-4444"),
    "GEMINI_API_KEY": ("gemini", "AIzaTest-gemini-eeeeeeeeeeeeeeee-5555"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("how", ["flags", "env", "dotenv"])
def test_check_end_to_end_against_the_emulator(
    emulate_process: Callable[..., EmulateProcess], tmp_path: Path, how: str
) -> None:
    emu = emulate_process()
    json_out = tmp_path / "check.json"
    keys = {name: secret for name, (_, secret) in CHECK_KEYS.items()}
    args = ["check", "--json-out", str(json_out), "--requests", "4"]
    extra: dict[str, str] = {}
    cwd = tmp_path
    if how == "flags":
        extra.update(keys)
        args += ["--env-file", ""]
        for provider in PROVIDERS:
            args += [f"--{provider}-base-url", emu.base_url(provider)]
        # the flags win over the variables (these point where nothing listens)
        extra.update(
            OPENAI_BASE_URL="http://127.0.0.1:9/v1",
            ANTHROPIC_BASE_URL="http://127.0.0.1:9",
            GEMINI_BASE_URL="http://127.0.0.1:9",
        )
    elif how == "env":
        extra.update(keys)
        args += ["--env-file", ""]
        extra.update(
            OPENAI_BASE_URL=emu.base_url("openai"),
            GROQ_BASE_URL=emu.base_url("groq"),
            ANTHROPIC_BASE_URL=emu.base_url("claude"),
            GOOGLE_GEMINI_BASE_URL=emu.base_url("gemini"),
        )
    else:  # keys and base URLs from ./.env in the working directory
        cwd = tmp_path / "project"
        cwd.mkdir()
        lines = [f"{name}={secret}" for name, secret in keys.items()]
        lines += [
            f"OPENAI_BASE_URL={emu.base_url('openai')}",
            f"GROQ_BASE_URL={emu.base_url('groq')}",
            f"ANTHROPIC_BASE_URL={emu.base_url('claude')}",
            f"GEMINI_BASE_URL={emu.base_url('gemini')}",
        ]
        dotenv = cwd / ".env"
        dotenv.write_text("\n".join(lines) + "\n", encoding="utf-8")
        dotenv.chmod(0o600)
    result = run(args, minimal_env(extra), cwd)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    for name, (_, secret) in CHECK_KEYS.items():
        assert name in output
        assert mask(secret) in output
        assert secret not in output
        # the key table says where each key came from (from_env's sources)
        [row] = [line for line in output.splitlines() if mask(secret) in line and "│" in line][:1]
        source = ".env (" if how == "dotenv" else " env "
        assert source in row, row
    for provider in PROVIDERS:
        assert provider in output
    assert "per-key distribution" in output

    raw = json_out.read_text(encoding="utf-8")
    for _, secret in CHECK_KEYS.values():
        assert secret not in raw
    data = json.loads(raw)
    assert set(data["keys"]) == set(PROVIDERS)
    for name, (provider, _) in CHECK_KEYS.items():
        stats = data["keys"][provider][name]
        assert stats["successes"] > 0, (name, stats)
        assert stats["failures"] == 0
        assert stats["status"] == "active"
    assert data["summary"]["requests"] == 4 * len(PROVIDERS)
    assert data["summary"]["failed"] == 0

    # the traffic really went to the emulator, one key each as registered on first use
    served = emu.stats()
    assert served["total"]["requests"] == 4 * len(PROVIDERS)
    assert served["total"]["ok"] == 4 * len(PROVIDERS)
    assert len(served["keys"]) == len(CHECK_KEYS)
    assert all(secret not in json.dumps(served) for _, secret in CHECK_KEYS.values())


@pytest.mark.e2e
@pytest.mark.parametrize("command", [["check"], []], ids=["check", "bare"])
def test_check_without_keys_names_the_variables_and_fails(
    tmp_path: Path, command: list[str]
) -> None:
    json_out = tmp_path / "check.json"
    args = [*command, "--env-file", "", "--json-out", str(json_out)] if command else []
    result = run(args, minimal_env(), tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for variable in (
        "OPENAI_API_KEY",
        "GROQ_API_KEY",
        "ANTHROPIC_API_KEY",
        "CLAUDE_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
    ):
        assert variable in output
    assert not json_out.exists()
    assert "Traceback" not in output


# --- python -m keymux / the console script --------------------------------------------------


def test_python_m_keymux_help(tmp_path: Path) -> None:
    result = run(["--help"], minimal_env(), tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("demo", "check", "keys", "emulate"):
        assert command in result.stdout


def test_console_script_help(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "keymux"
    if not script.exists():  # pragma: no cover - keymux not installed into this interpreter
        pytest.skip("the keymux console script is not installed next to this interpreter")
    result = subprocess.run(
        [str(script), "--help"],
        env=minimal_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: keymux" in result.stdout


def test_main_without_a_command_prints_help(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "keymux" in capsys.readouterr().out


def test_a_bad_keymux_default_variable_does_not_break_other_commands(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KEYMUX_DEMO_REQUESTS", "lots")
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    assert main(["keys", "--env-file", ""]) == 0
    assert mask(CANARY) in capsys.readouterr().out


# --- mistakes on the command line: one line, exit 2, never a traceback -------------------------


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The single line a CLI mistake prints on stderr (and nothing on stdout)."""
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert "Traceback" not in out.err + out.out
    return lines[0]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["check", "--concurrency", "0"], "--concurrency"),
        (["check", "--concurrency", "-1"], "--concurrency"),
        (["check", "--requests", "-3"], "--requests"),
        (["check", "--requests", "0"], "--requests"),
        (["check", "--requests", "2.5"], "--requests"),
        (["check", "--deadline", "0"], "--deadline"),
        (["check", "--deadline", "-5"], "--deadline"),
        (["check", "--deadline", "nan"], "--deadline"),
        (["check", "--deadline", "inf"], "--deadline"),
        (["demo", "--requests", "0"], "--requests"),
        (["demo", "--requests", "lots"], "--requests"),
        (["demo", "--window", "0"], "--window"),
        (["demo", "--window", "-1"], "--window"),
        (["check", "--strategy", "bogus"], "--strategy"),
        (["demo", "--strategy", "bogus"], "--strategy"),
        (["demo", "--strategy", "specific"], "--strategy"),
        (["check", "--openai-base-url", "bad-url"], "--openai-base-url"),
        (["check", "--anthropic-base-url", "ftp://x"], "--claude-base-url/--anthropic-base-url"),
    ],
)
def test_bad_flag_values_fail_at_parse_time_in_one_line(
    clean_env: Path, capsys: pytest.CaptureFixture[str], args: list[str], flag: str
) -> None:
    # (`check --concurrency 0` used to hang forever; `--requests -3` ran and exited 0)
    with pytest.raises(SystemExit) as info:
        main([*args, "--env-file", ""] if args[0] == "check" else args)
    assert info.value.code == 2
    line = one_line_error(capsys)
    assert line.startswith(f"keymux {args[0]}: error: argument {flag}")
    assert f"'keymux {args[0]} --help'" in line


def test_a_bad_strategy_names_the_ones_there_are(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--strategy", "bogus"])
    line = one_line_error(capsys)
    assert "'bogus'" in line
    for name in ("round-robin", "least-loaded", "weighted", "rate-aware"):
        assert name in line


def test_a_bad_base_url_flag_does_not_echo_its_value(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--groq-base-url", CANARY])
    line = one_line_error(capsys)
    assert "http://127.0.0.1:8700" in line  # what a usable one looks like
    assert CANARY not in line


def test_strategy_aliases_are_accepted(clean_env: Path) -> None:
    from keymux.cli import _parser

    args = _parser().parse_args(["check", "--strategy", "rate_aware"])
    assert args.strategy == "rate-aware"


@pytest.mark.parametrize("command", ["check", "keys"])
@pytest.mark.parametrize("what", ["missing", "directory", "not-utf8"])
def test_an_unreadable_env_file_is_one_line_and_exit_2(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, what: str
) -> None:
    path = tmp_path / "given.env"
    if what == "directory":
        path.mkdir()
    elif what == "not-utf8":
        path.write_bytes(b"OPENAI_API_KEY=\xff\xfe\n")
    assert main([command, "--env-file", str(path)]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"keymux {command}: error: ")
    assert str(path) in line
    assert "--env-file ''" in line  # what to do instead


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_an_env_file_without_read_permission_is_one_line_and_exit_2(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # pragma: no cover - the suite runs as root in CI
    path = tmp_path / "locked.env"
    path.write_text("OPENAI_API_KEY=sk-test-locked-0000000000000000\n", encoding="utf-8")
    path.chmod(0o000)
    assert main(["keys", "--env-file", str(path)]) == 2
    assert "chmod 600" in one_line_error(capsys)


def test_an_unreadable_default_dotenv_is_an_error_but_a_missing_one_is_fine(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    assert main(["keys"]) == 0  # no ./.env at all
    capsys.readouterr()
    (clean_env / ".env").mkdir()
    assert main(["keys"]) == 2
    assert "./.env is a directory" in one_line_error(capsys)


def test_check_with_an_unusable_base_url_variable_stops_in_one_line(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("OPENAI_BASE_URL", "bad-url")
    assert main(["check", "--env-file", ""]) == 2
    line = one_line_error(capsys)
    assert line.startswith("keymux check: error: OPENAI_BASE_URL (in the environment)")
    assert CANARY not in line


def test_emulate_on_a_port_in_use_is_one_line_and_exit_2(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["emulate", "--host", "127.0.0.1", "--port", str(port)]) == 2
    out = capsys.readouterr()
    assert out.err.strip().splitlines() == [
        f"keymux emulate: error: cannot listen on 127.0.0.1:{port}: the port is in use; "
        "choose another --port"
    ]
    assert "http://" not in out.out  # the banner waits for the bound socket


def test_emulate_on_a_port_that_is_no_port_is_one_line_and_exit_2(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # refused when the flags are parsed, before anything is printed or bound
    with pytest.raises(SystemExit) as exit_info:
        main(["emulate", "--host", "127.0.0.1", "--port", "99999"])
    assert exit_info.value.code == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.strip().splitlines() == [
        "keymux emulate: error: argument --port: 99999 is not a port: use 1-65535 "
        "(0 picks a free one) (see 'keymux emulate --help')"
    ]


def test_a_keymux_error_from_any_command_is_one_line_and_exit_2(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["emulate", "--key", "openai"]) == 2  # _emulate.py raises ConfigError
    line = one_line_error(capsys)
    assert line.startswith("keymux emulate: error: --key takes PROVIDER:KEY")


def test_ctrl_c_is_one_line_and_exit_130(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import keymux.cli

    def interrupted(*args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(keymux.cli, "_run", interrupted)
    assert main(["check", "--env-file", ""]) == 130
    assert one_line_error(capsys) == "keymux check: error: interrupted"


def test_the_cli_shows_keymux_warnings_on_stderr_one_line_each(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    import keymux.cli

    logger = logging.getLogger("keymux")
    handlers = list(logger.handlers)

    def warns(*args: Any) -> int:
        logging.getLogger("keymux._core").warning(
            "keymux: %s key %r disabled:\nthe key is invalid", "openai", "a"
        )
        try:
            raise ValueError("bad value")
        except ValueError:
            logger.warning("keymux: with an exception", exc_info=True)
        logger.info("keymux: not a warning")
        return 0

    monkeypatch.setattr(keymux.cli, "_run", warns)
    assert main(["keys"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "keymux: openai key 'a' disabled: the key is invalid",
        "keymux: with an exception (ValueError: bad value)",
    ]
    assert logger.handlers == handlers  # the command's handler is gone when it returns


def test_json_out_that_cannot_be_written_is_a_cli_error(tmp_path: Path) -> None:
    from rich.console import Console

    from keymux.cli._args import CliError
    from keymux.cli._render import write_json

    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(
        CliError, match=r"cannot write the statistics to .*choose another --json-out"
    ):
        write_json(blocker / "stats.json", {}, Console())


# --- help ------------------------------------------------------------------------------------


def _subparsers() -> dict[str, Any]:
    import argparse

    from keymux.cli import _parser

    [action] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("command", ["demo", "check", "keys", "emulate"])
def test_every_flag_has_help_and_the_help_shows_defaults(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps at hyphens too
    sub = _subparsers()[command]
    assert sub.description
    for action in sub._actions:
        assert action.help, f"keymux {command} {action.option_strings} has no help"
    text = " ".join(sub.format_help().split())  # unwrapped
    for action in sub._actions:
        if action.default not in (None, False, argparse.SUPPRESS):
            assert f"(default: {action.default})" in text, action.option_strings
    if command == "check":
        assert "requests in flight at once, in all (default: 8)" in text
    if command in ("check", "keys"):
        assert "--env-file FILE the .env file to read ('' for none; default: ./.env" in text
    assert "(default: None)" not in text


def test_every_command_has_help() -> None:
    from keymux.cli import _parser

    text = _parser().format_help()
    for command in _subparsers():
        assert re.search(rf"^\s+{command}\s+\S", text, re.MULTILINE), command


# --- the .env problems keymux check prints ------------------------------------------------------


def test_check_prints_env_problems_with_their_line_number(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "check.env"
    env_file.write_text("# keys\nthis line is not an assignment\nGROQ_API_KEY=\n", encoding="utf-8")
    env_file.chmod(0o600)
    assert main(["check", "--env-file", str(env_file)]) == 2  # no key to check
    text = capsys.readouterr().out
    # the same `file:line: message` as `keymux keys` and the from_env log
    assert f".env ({env_file}):2: this line could not be parsed" in text
    assert f".env ({env_file}):3: GROQ_API_KEY is empty" in text
    assert main(["keys", "--env-file", str(env_file)]) == 1
    assert f".env ({env_file}):2: this line could not be parsed" in capsys.readouterr().out


def test_check_environ_turns_the_flags_into_the_base_url_variables() -> None:
    from keymux.cli._check import check_environ

    flags = {p: f"http://127.0.0.1:1/{p}" for p in PROVIDERS}
    environ = check_environ(flags, {"OPENAI_BASE_URL": "https://other.example", "PATH": "/bin"})
    assert environ == {
        "PATH": "/bin",
        "OPENAI_BASE_URL": "http://127.0.0.1:1/openai",
        "GROQ_BASE_URL": "http://127.0.0.1:1/groq",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:1/claude",
        "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:1/gemini",
    }


def test_check_builds_its_multiplexer_through_the_public_api() -> None:
    """No private Multiplexer method: the check is the same program a user would write."""
    import inspect

    import keymux.cli._check

    source = inspect.getsource(keymux.cli._check)
    assert "_add_spec" not in source
    assert "Multiplexer.from_env(" in source


# --- tables never cut names in output that is not a terminal -------------------------------------


def test_keys_never_cuts_a_long_name_or_source(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "OPENAI_API_KEY_" + "1234567890" * 12
    deep = tmp_path.joinpath(*(["a-rather-long-directory-name"] * 4))
    deep.mkdir(parents=True)
    env_file = deep / "keys.env"
    env_file.write_text(f"{name}={CANARY}\n", encoding="utf-8")
    env_file.chmod(0o600)
    assert main(["keys", "--env-file", str(env_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    [row] = [line for line in lines if mask(CANARY) in line]
    assert name in row  # whole, on the row's one line
    assert f".env ({env_file})" in row
    assert "…" not in "".join(lines)


def test_the_stats_table_never_cuts_names_on_a_narrow_non_terminal() -> None:
    import io

    from rich.console import Console

    from keymux.cli._render import print_table, stats_table

    name = "a-key-name-far-longer-than-the-console-is-wide-" + "x" * 60
    stats = {
        "openai": {
            name: {
                "key": "sk-...a1b2",
                "usage": 3,
                "successes": 2,
                "retries": 1,
                "rate_limited": 0,
                "failures": 1,
                "status": "disabled",
                "disabled_reason": "invalid key (401): a long reason from the provider, kept whole",
            }
        }
    }
    out = io.StringIO()
    console = Console(file=out, width=60)
    print_table(console, stats_table(stats, "per-key distribution"))
    text = out.getvalue()
    assert name in text
    assert "a long reason from the provider, kept whole" in text
    assert "…" not in text
    assert console.width == 60  # put back
