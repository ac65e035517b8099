"""The ``keymux`` command line: demo, keys, check (against ``keymux emulate`` in a subprocess),
and ``python -m keymux``.

In-process runs clear every provider variable from the environment first; subprocesses get an
explicit minimal environment, so a developer's real keys are never read, let alone used.
"""

from __future__ import annotations

import json
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
    assert "60/60 answered, 0 failed" in text

    raw = out_file.read_text(encoding="utf-8")
    data = json.loads(raw)
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
