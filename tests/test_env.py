"""Key discovery from an explicit environ mapping and a .env file under tmp_path.

No test reads keys from, or writes to, the real os.environ.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import NoReturn

import pytest
from dotenv import dotenv_values
from hypothesis import given, settings
from hypothesis import strategies as st

from keymux._config import KeySpec
from keymux._env import (
    PROVIDER_VARIABLES,
    EnvProblem,
    EnvScan,
    ProviderVariables,
    check_dotenv_permissions,
    discover_keys,
    looked_for,
)
from keymux._errors import ConfigError

CANARY = "sk-CANARY-0123456789abcdef"
CANARY_PARTS = ("CANARY-0123456789", "0123456789abcdef")
posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def key(tag: str) -> str:
    """A plausible, distinct key value."""
    return f"sk-test-{tag}-0123456789abcdef"


def scan_env(environ: dict[str, str]) -> EnvScan:
    return discover_keys(environ, use_dotenv=False)


def write_env(tmp_path: Path, text: str, *, mode: int = 0o600) -> Path:
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def names(scan: EnvScan) -> list[str]:
    return [k.name for k in scan.keys]


def secrets(scan: EnvScan) -> dict[str, str]:
    return {k.name: k.secret.reveal() for k in scan.keys}


def problems_of(scan: EnvScan, level: str | None = None) -> list[EnvProblem]:
    return [p for p in scan.problems if level is None or p.level == level]


def assert_no_secret(scan: EnvScan, *values: str) -> None:
    texts = [repr(scan), *(str(p) for p in scan.problems), *(repr(p) for p in scan.problems)]
    texts += [repr(k) for k in scan.keys] + [str(k) for k in scan.keys]
    for text in texts:
        for value in values:
            assert value not in text


# --- the table -----------------------------------------------------------------------------


def test_table_is_data_in_provider_order() -> None:
    assert list(PROVIDER_VARIABLES) == ["openai", "groq", "claude", "gemini"]
    for provider, spec in PROVIDER_VARIABLES.items():
        assert isinstance(spec, ProviderVariables)
        assert spec.provider == provider
    with pytest.raises(TypeError):
        PROVIDER_VARIABLES["x"] = PROVIDER_VARIABLES["openai"]  # type: ignore[index]


def test_looked_for_lists_every_pattern() -> None:
    patterns = looked_for()
    for expected in (
        "OPENAI_API_KEY",
        "OPENAI_API_KEY_<n>",
        "OPENAI_API_KEYS (comma-separated)",
        "GROQ_API_KEY_<n>",
        "CLAUDE_API_KEY",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_API_KEY_<n>",
        "CLAUDE_API_KEY_<n>",
        "CLAUDE_API_KEYS (comma-separated)",
        "GEMINI_API_KEY_<n>",
        "GOOGLE_API_KEY",
        "GEMINI_API_KEYS (comma-separated)",
    ):
        assert expected in patterns
    assert scan_env({}).looked_for == patterns


# --- every naming form ---------------------------------------------------------------------

FORMS = [
    ("OPENAI_API_KEY", "openai"),
    ("OPENAI_API_KEY_1", "openai"),
    ("OPENAI_API_KEY_42", "openai"),
    ("GROQ_API_KEY", "groq"),
    ("GROQ_API_KEY_3", "groq"),
    ("CLAUDE_API_KEY", "claude"),
    ("ANTHROPIC_API_KEY", "claude"),
    ("ANTHROPIC_API_KEY_1", "claude"),
    ("CLAUDE_API_KEY_7", "claude"),
    ("GEMINI_API_KEY", "gemini"),
    ("GEMINI_API_KEY_2", "gemini"),
    ("GOOGLE_API_KEY", "gemini"),
]
PLURALS = [
    ("OPENAI_API_KEYS", "openai"),
    ("GROQ_API_KEYS", "groq"),
    ("ANTHROPIC_API_KEYS", "claude"),
    ("CLAUDE_API_KEYS", "claude"),
    ("GEMINI_API_KEYS", "gemini"),
]


@pytest.mark.parametrize(("variable", "provider"), FORMS)
def test_every_single_form_from_environ(variable: str, provider: str) -> None:
    scan = scan_env({variable: key("a"), "UNRELATED": "x"})
    assert [(k.provider, k.name, k.source) for k in scan.keys] == [(provider, variable, "env")]
    assert scan.keys[0].secret.reveal() == key("a")
    assert scan.problems == []


@pytest.mark.parametrize(("variable", "provider"), FORMS)
def test_every_single_form_from_dotenv(tmp_path: Path, variable: str, provider: str) -> None:
    path = write_env(tmp_path, f"{variable}={key('a')}\n")
    scan = discover_keys({}, dotenv_path=path)
    assert [(k.provider, k.name) for k in scan.keys] == [(provider, variable)]
    assert scan.keys[0].source == f".env ({path})"
    assert scan.dotenv_file == str(path)
    assert scan.problems == []


@pytest.mark.parametrize(("variable", "provider"), PLURALS)
def test_every_plural_form(variable: str, provider: str) -> None:
    scan = scan_env({variable: f"{key('a')},{key('b')}"})
    assert [(k.provider, k.name) for k in scan.keys] == [
        (provider, f"{variable}[0]"),
        (provider, f"{variable}[1]"),
    ]
    assert secrets(scan) == {f"{variable}[0]": key("a"), f"{variable}[1]": key("b")}


@pytest.mark.parametrize(
    "variable",
    [
        "OPENAI_API_KEY_",
        "OPENAI_API_KEY_X",
        "OPENAI_API_KEY_1A",
        "OPENAI_API_KEY_-1",
        "OPENAI_API_KEY_\u0661",  # ARABIC-INDIC DIGIT ONE: <n> is ASCII digits
        "openai_api_key",
        "MY_OPENAI_API_KEY",
        "OPENAI_API_KEYS_1",
        "GOOGLE_API_KEY_1",
        "ANTHROPIC_KEY",
        "OPENAI_BASE_URL_1",
    ],
)
def test_other_names_are_ignored(variable: str) -> None:
    scan = scan_env({variable: key("a")})
    assert scan.keys == []
    assert scan.problems == []


def test_seed_example(tmp_path: Path) -> None:
    path = write_env(
        tmp_path,
        "# OpenAI API Keys\n"
        "OPENAI_API_KEY=sk-your-main-key               # Primary key\n"
        "OPENAI_API_KEY_1=sk-your-first-key            # Key 1 for multiplexing\n"
        "OPENAI_API_KEY_2=sk-your-second-key           # Key 2 for multiplexing\n"
        "OPENAI_API_KEY_3=sk-your-third-key            # Key 3 for multiplexing\n"
        "\n"
        "# Groq API Keys\n"
        "GROQ_API_KEY=gsk-your-main-key                # Primary key\n"
        "GROQ_API_KEY_1=gsk-your-first-key             # Key 1 for multiplexing\n"
        "GROQ_API_KEY_2=gsk-your-second-key            # Key 2 for multiplexing\n"
        "\n"
        "# Claude API Keys\n"
        "CLAUDE_API_KEY=sk-ant-your-main-key           # Primary key\n"
        "ANTHROPIC_API_KEY_1=sk-ant-your-first-key     # Key 1 for multiplexing\n"
        "ANTHROPIC_API_KEY_2=sk-ant-your-second-key    # Key 2 for multiplexing\n"
        "\n"
        "# Gemini API Keys\n"
        "GEMINI_API_KEY=your-main-key                  # Primary key\n"
        "GEMINI_API_KEY_1=your-first-key               # Key 1 for multiplexing\n"
        "GEMINI_API_KEY_2=your-second-key              # Key 2 for multiplexing\n",
    )
    scan = discover_keys({}, dotenv_path=path)
    assert scan.problems == []
    assert [(k.provider, k.name) for k in scan.keys] == [
        ("openai", "OPENAI_API_KEY"),
        ("openai", "OPENAI_API_KEY_1"),
        ("openai", "OPENAI_API_KEY_2"),
        ("openai", "OPENAI_API_KEY_3"),
        ("groq", "GROQ_API_KEY"),
        ("groq", "GROQ_API_KEY_1"),
        ("groq", "GROQ_API_KEY_2"),
        ("claude", "CLAUDE_API_KEY"),
        ("claude", "ANTHROPIC_API_KEY_1"),
        ("claude", "ANTHROPIC_API_KEY_2"),
        ("gemini", "GEMINI_API_KEY"),
        ("gemini", "GEMINI_API_KEY_1"),
        ("gemini", "GEMINI_API_KEY_2"),
    ]
    assert secrets(scan)["OPENAI_API_KEY_1"] == "sk-your-first-key"  # inline comment dropped
    assert scan.by_provider()["groq"][0].name == "GROQ_API_KEY"


# --- order -----------------------------------------------------------------------------------


def test_numbered_keys_in_numeric_order() -> None:
    environ = {f"OPENAI_API_KEY_{n}": key(f"n{n}") for n in (10, 2, 1, 100, 9, 11)}
    assert names(scan_env(environ)) == [f"OPENAI_API_KEY_{n}" for n in (1, 2, 9, 10, 11, 100)]


def test_leading_zeros_and_huge_numbers() -> None:
    huge = "9" * 5000  # beyond int()'s default digit limit: still ordered, no crash
    environ = {
        f"GROQ_API_KEY_{huge}": key("huge"),
        "GROQ_API_KEY_01": key("01"),
        "GROQ_API_KEY_1": key("1"),
        "GROQ_API_KEY_0": key("0"),
        "GROQ_API_KEY_002": key("002"),
    }
    assert names(scan_env(environ)) == [
        "GROQ_API_KEY_0",
        "GROQ_API_KEY_1",
        "GROQ_API_KEY_01",
        "GROQ_API_KEY_002",
        f"GROQ_API_KEY_{huge}",
    ]


def test_order_across_forms_and_providers() -> None:
    environ = {
        "GEMINI_API_KEYS": f"{key('g3')},{key('g4')}",
        "GOOGLE_API_KEY": key("g1"),
        "GEMINI_API_KEY_1": key("g2"),
        "GEMINI_API_KEY": key("g0"),
        "CLAUDE_API_KEYS": key("c7"),
        "ANTHROPIC_API_KEYS": key("c6"),
        "CLAUDE_API_KEY_2": key("c5"),
        "ANTHROPIC_API_KEY_2": key("c4"),
        "CLAUDE_API_KEY_1": key("c3"),
        "ANTHROPIC_API_KEY": key("c1"),
        "ANTHROPIC_API_KEY_1": key("c2"),
        "CLAUDE_API_KEY": key("c0"),
        "GROQ_API_KEYS": key("q2"),
        "GROQ_API_KEY_1": key("q1"),
        "GROQ_API_KEY": key("q0"),
        "OPENAI_API_KEYS": key("o2"),
        "OPENAI_API_KEY_1": key("o1"),
        "OPENAI_API_KEY": key("o0"),
    }
    assert names(scan_env(environ)) == [
        "OPENAI_API_KEY",
        "OPENAI_API_KEY_1",
        "OPENAI_API_KEYS[0]",
        "GROQ_API_KEY",
        "GROQ_API_KEY_1",
        "GROQ_API_KEYS[0]",
        "CLAUDE_API_KEY",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_API_KEY_1",
        "CLAUDE_API_KEY_1",
        "ANTHROPIC_API_KEY_2",
        "CLAUDE_API_KEY_2",
        "ANTHROPIC_API_KEYS[0]",
        "CLAUDE_API_KEYS[0]",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GEMINI_API_KEY_1",
        "GEMINI_API_KEYS[0]",
        "GEMINI_API_KEYS[1]",
    ]


def test_order_does_not_depend_on_source(tmp_path: Path) -> None:
    path = write_env(tmp_path, f"OPENAI_API_KEY_2={key('2')}\nOPENAI_API_KEY={key('0')}\n")
    scan = discover_keys(
        {"OPENAI_API_KEY_10": key("10"), "OPENAI_API_KEY_1": key("1")}, dotenv_path=path
    )
    assert names(scan) == [
        "OPENAI_API_KEY",
        "OPENAI_API_KEY_1",
        "OPENAI_API_KEY_2",
        "OPENAI_API_KEY_10",
    ]
    assert [k.source == "env" for k in scan.keys] == [False, True, False, True]


# --- plural lists ----------------------------------------------------------------------------


def test_plural_list_strips_spaces_and_reports_empty_items() -> None:
    scan = scan_env({"OPENAI_API_KEYS": f"  {key('a')} ,, {key('b')},\t,"})
    assert secrets(scan) == {"OPENAI_API_KEYS[0]": key("a"), "OPENAI_API_KEYS[2]": key("b")}
    empties = problems_of(scan, "warning")
    assert [p.variable for p in empties] == ["OPENAI_API_KEYS"] * 3
    for index, problem in zip((1, 3, 4), empties, strict=True):
        assert f"OPENAI_API_KEYS[{index}]" in problem.message
        assert "empty" in problem.message
        assert problem.source == "env"
        assert problem.line is None


def test_plural_list_from_dotenv_quoted(tmp_path: Path) -> None:
    path = write_env(tmp_path, f'# keys\nGROQ_API_KEYS="{key("a")}, {key("b")}"\n')
    scan = discover_keys({}, dotenv_path=path)
    assert names(scan) == ["GROQ_API_KEYS[0]", "GROQ_API_KEYS[1]"]
    assert scan.problems == []


def test_empty_plural_variable_is_one_problem() -> None:
    scan = scan_env({"GEMINI_API_KEYS": "   "})
    assert scan.keys == []
    [problem] = scan.problems
    assert problem.variable == "GEMINI_API_KEYS"
    assert "GEMINI_API_KEYS is empty" in problem.message


def test_plural_item_with_inner_whitespace_is_reported_by_index() -> None:
    scan = scan_env({"CLAUDE_API_KEYS": f"{key('a')},sk-bad key-0123456789"})
    assert names(scan) == ["CLAUDE_API_KEYS[0]"]
    [problem] = scan.problems
    assert problem.level == "error"
    assert "CLAUDE_API_KEYS[1]" in problem.message
    assert "whitespace" in problem.message
    assert "sk-bad" not in problem.message


# --- dedupe ----------------------------------------------------------------------------------


def test_same_secret_is_added_once_first_name_wins() -> None:
    environ = {
        "OPENAI_API_KEYS": f"{key('b')},{key('a')}",
        "OPENAI_API_KEY_3": key("a"),
        "OPENAI_API_KEY": key("a"),
        "OPENAI_API_KEY_1": key("b"),
    }
    scan = scan_env(environ)
    assert secrets(scan) == {"OPENAI_API_KEY": key("a"), "OPENAI_API_KEY_1": key("b")}
    infos = problems_of(scan, "info")
    assert len(infos) == 3
    assert scan.problems == infos
    by_var = {p.message.split()[0]: p.message for p in infos}
    assert "OPENAI_API_KEY" in by_var["OPENAI_API_KEY_3"]
    assert "OPENAI_API_KEY_1" in by_var["OPENAI_API_KEYS[0]"]
    assert "OPENAI_API_KEY" in by_var["OPENAI_API_KEYS[1]"]
    assert_no_secret(scan, key("a"), key("b"))


def test_dedupe_across_claude_aliases_and_env_and_dotenv(tmp_path: Path) -> None:
    path = write_env(tmp_path, f"ANTHROPIC_API_KEY={key('a')}\nCLAUDE_API_KEYS={key('a')}\n")
    scan = discover_keys({"CLAUDE_API_KEY": key("a")}, dotenv_path=path)
    assert [(k.name, k.source) for k in scan.keys] == [("CLAUDE_API_KEY", "env")]
    infos = problems_of(scan, "info")
    assert [(p.variable, p.line) for p in infos] == [
        ("ANTHROPIC_API_KEY", 1),
        ("CLAUDE_API_KEYS", 2),
    ]
    assert all("CLAUDE_API_KEY" in p.message for p in infos)


def test_gemini_and_google_key_are_one_key_when_equal() -> None:
    scan = scan_env({"GOOGLE_API_KEY": key("g"), "GEMINI_API_KEY": key("g")})
    assert names(scan) == ["GEMINI_API_KEY"]
    [info] = scan.problems
    assert info.level == "info"
    assert info.variable == "GOOGLE_API_KEY"
    assert "GEMINI_API_KEY" in info.message


def test_google_api_key_alone_is_a_gemini_key() -> None:
    scan = scan_env({"GOOGLE_API_KEY": key("g")})
    assert [(k.provider, k.name) for k in scan.keys] == [("gemini", "GOOGLE_API_KEY")]


def test_same_secret_in_two_providers_is_kept_for_each() -> None:
    scan = scan_env({"OPENAI_API_KEY": key("x"), "GROQ_API_KEY": key("x")})
    assert [k.provider for k in scan.keys] == ["openai", "groq"]
    assert scan.problems == []


# --- env vs .env -----------------------------------------------------------------------------


def test_environ_wins_over_dotenv(tmp_path: Path) -> None:
    path = write_env(
        tmp_path,
        f"OPENAI_API_KEY={key('file')}\nGROQ_API_KEY={key('same')}\nGEMINI_API_KEY={key('g')}\n",
    )
    environ = {"OPENAI_API_KEY": key("env"), "GROQ_API_KEY": key("same")}
    scan = discover_keys(environ, dotenv_path=path)
    assert secrets(scan) == {
        "OPENAI_API_KEY": key("env"),
        "GROQ_API_KEY": key("same"),
        "GEMINI_API_KEY": key("g"),
    }
    assert [k.source for k in scan.keys] == ["env", "env", f".env ({path})"]
    [info] = scan.problems  # only the differing value is worth a note
    assert (info.level, info.variable, info.line) == ("info", "OPENAI_API_KEY", 1)
    assert "environment" in info.message
    assert_no_secret(scan, key("file"), key("env"))


def test_empty_environ_value_still_wins_like_python_dotenv(tmp_path: Path) -> None:
    path = write_env(tmp_path, f"OPENAI_API_KEY={key('file')}\n")
    scan = discover_keys({"OPENAI_API_KEY": ""}, dotenv_path=path)
    assert scan.keys == []
    assert {(p.source, p.variable) for p in scan.problems} == {
        ("env", "OPENAI_API_KEY"),
        (f".env ({path})", "OPENAI_API_KEY"),
    }


def test_dotenv_does_not_mutate_os_environ(tmp_path: Path) -> None:
    variable = "GROQ_API_KEY_987654321"
    assert variable not in os.environ
    before = dict(os.environ)
    path = write_env(tmp_path, f"{variable}={key('q')}\nKEYMUX_TEST_OTHER=1\n")
    scan = discover_keys({}, dotenv_path=path)
    assert names(scan) == [variable]
    assert dict(os.environ) == before


def test_explicit_environ_is_not_mutated(tmp_path: Path) -> None:
    path = write_env(tmp_path, f"OPENAI_API_KEY={key('a')}\n")
    environ = {"GROQ_API_KEY": key("q")}
    discover_keys(environ, dotenv_path=path)
    assert environ == {"GROQ_API_KEY": key("q")}


def test_default_environ_is_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # monkeypatch restores os.environ; the real environment is never read for keys here
    for variable in list(os.environ):
        monkeypatch.delenv(variable)
    monkeypatch.setenv("GROQ_API_KEY", key("q"))
    scan = discover_keys(dotenv_path=tmp_path / "missing.env")
    assert names(scan) == ["GROQ_API_KEY"]


def test_relative_default_path_is_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_env(tmp_path, f"OPENAI_API_KEY={key('a')}\n")
    monkeypatch.chdir(tmp_path)
    scan = discover_keys({})
    assert scan.keys[0].source == f".env ({tmp_path / '.env'})"
    assert scan.dotenv_file == str(tmp_path / ".env")


def test_interpolation_uses_given_environ_not_os_environ(tmp_path: Path) -> None:
    path = write_env(
        tmp_path,
        "BASE=sk-test-from-file-0123456789\n"
        "OPENAI_API_KEY=${BASE}\n"
        "GROQ_API_KEY=${HOME_KEY}\n"
        "GEMINI_API_KEY=${NOT_SET:-sk-test-default-0123456789}\n",
    )
    scan = discover_keys({"HOME_KEY": "gsk-test-env-0123456789"}, dotenv_path=path)
    assert secrets(scan) == {
        "OPENAI_API_KEY": "sk-test-from-file-0123456789",
        "GROQ_API_KEY": "gsk-test-env-0123456789",
        "GEMINI_API_KEY": "sk-test-default-0123456789",
    }


def test_parsing_agrees_with_dotenv_values(tmp_path: Path) -> None:
    text = (
        "# comment\n"
        "export OPENAI_API_KEY=sk-test-export-0123456789\n"
        "  GROQ_API_KEY = 'gsk-test-single-0123456789'  \n"
        'CLAUDE_API_KEY="sk-ant-test-double-0123456789" # trailing\n'
        "\n\n"
        "GEMINI_API_KEY_1=AIza-test-0123456789#not-a-comment\n"
        "GEMINI_API_KEY_2=AIza-test-9876543210 # a comment\n"
    )
    path = write_env(tmp_path, text)
    expected = dotenv_values(path, interpolate=False)
    scan = discover_keys({}, dotenv_path=path)
    assert secrets(scan) == expected
    assert scan.problems == []


def test_use_dotenv_false_and_none_path(tmp_path: Path) -> None:
    path = write_env(tmp_path, f"OPENAI_API_KEY={key('a')}\n")
    assert discover_keys({}, dotenv_path=path, use_dotenv=False).keys == []
    assert discover_keys({}, dotenv_path=None).keys == []


def test_python_dotenv_disabled_switch(tmp_path: Path) -> None:
    path = write_env(tmp_path, f"OPENAI_API_KEY={key('a')}\n")
    scan = discover_keys({"PYTHON_DOTENV_DISABLED": "true"}, dotenv_path=path)
    assert scan.keys == []
    assert scan.dotenv_file is None
    [info] = scan.problems
    assert info.level == "info"
    assert discover_keys({"PYTHON_DOTENV_DISABLED": "0"}, dotenv_path=path).keys


def test_repeated_variable_in_dotenv_last_wins(tmp_path: Path) -> None:
    path = write_env(tmp_path, f"OPENAI_API_KEY={key('a')}\nOPENAI_API_KEY={key('b')}\n")
    scan = discover_keys({}, dotenv_path=path)
    assert secrets(scan) == {"OPENAI_API_KEY": key("b")}
    [info] = scan.problems
    assert (info.level, info.line, info.variable) == ("info", 2, "OPENAI_API_KEY")
    assert "line 1" in info.message


# --- the .env file itself ----------------------------------------------------------------------


def test_missing_dotenv_is_fine(tmp_path: Path) -> None:
    scan = discover_keys({"GROQ_API_KEY": key("q")}, dotenv_path=tmp_path / "nope" / ".env")
    assert names(scan) == ["GROQ_API_KEY"]
    assert scan.problems == []
    assert scan.dotenv_file is None
    assert discover_keys({}, dotenv_path=tmp_path / ".env").problems == []


def test_dotenv_through_a_file_path_component_is_missing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert discover_keys({}, dotenv_path=tmp_path / "file" / ".env").problems == []


def test_dotenv_directory_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / ".env").mkdir()
    [problem] = discover_keys({}, dotenv_path=tmp_path / ".env").problems
    assert problem.level == "error"
    assert "directory" in problem.message


@posix_only
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_dotenv_is_a_problem(tmp_path: Path) -> None:
    path = write_env(tmp_path, f"OPENAI_API_KEY={CANARY}\n", mode=0o000)
    scan = discover_keys({"GROQ_API_KEY": key("q")}, dotenv_path=path)
    assert names(scan) == ["GROQ_API_KEY"]
    [problem] = scan.problems
    assert problem.level == "error"
    assert str(path) in problem.message
    assert problem.source == f".env ({path})"
    assert_no_secret(scan, *CANARY_PARTS)


def test_read_error_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # works as root too: the module's open() fails the way an unreadable file does
    path = write_env(tmp_path, f"OPENAI_API_KEY={CANARY}\n")

    def denied(*args: object, **kwargs: object) -> NoReturn:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("keymux._env.open", denied, raising=False)
    scan = discover_keys({}, dotenv_path=path)
    assert scan.keys == []
    assert scan.dotenv_file is None
    [problem] = scan.problems
    assert (problem.level, problem.line) == ("error", None)
    assert "Permission denied" in problem.message
    assert_no_secret(scan, *CANARY_PARTS)


def test_non_utf8_dotenv_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"OPENAI_API_KEY=sk-\xff\xfe" + CANARY.encode() + b"\n")
    scan = discover_keys({}, dotenv_path=path)
    assert scan.keys == []
    [problem] = scan.problems
    assert "UTF-8" in problem.message
    assert_no_secret(scan, *CANARY_PARTS)


def test_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(
        b"\xef\xbb\xbfOPENAI_API_KEY=" + key("a").encode() + b"\r\n\r\nGROQ_API_KEY=\r\n"
    )
    path.chmod(0o600)
    scan = discover_keys({}, dotenv_path=path)
    assert secrets(scan) == {"OPENAI_API_KEY": key("a")}
    [problem] = scan.problems
    assert (problem.variable, problem.line) == ("GROQ_API_KEY", 3)


# --- malformed lines and empty values ----------------------------------------------------------


def test_malformed_lines_reported_by_line_and_skipped(tmp_path: Path) -> None:
    path = write_env(
        tmp_path,
        f"OPENAI_API_KEY={key('o')}\n"  # 1
        "# a comment\n"  # 2
        "\n"  # 3
        f"this is not an assignment {CANARY}\n"  # 4
        f'GROQ_API_KEY="{CANARY}"trailing\n'  # 5
        "\n"  # 6
        f"=orphan-{CANARY}\n"  # 7
        f"GEMINI_API_KEY={key('g')}\n",  # 8
    )
    scan = discover_keys({}, dotenv_path=path)
    assert secrets(scan) == {"OPENAI_API_KEY": key("o"), "GEMINI_API_KEY": key("g")}
    assert [(p.line, p.variable, p.level) for p in scan.problems] == [
        (4, None, "warning"),
        (5, "GROQ_API_KEY", "warning"),
        (7, None, "warning"),
    ]
    assert all(p.source == f".env ({path})" for p in scan.problems)
    assert str(scan.problems[1]).startswith(f".env ({path}):5: ")
    assert "GROQ_API_KEY" in scan.problems[1].message
    assert_no_secret(scan, *CANARY_PARTS)


def test_unterminated_quote_costs_only_its_line(tmp_path: Path) -> None:
    # python-dotenv alone would swallow lines 2-3 up to the next quote
    path = write_env(
        tmp_path,
        f'OPENAI_API_KEY_1="{CANARY}\n'
        f"GROQ_API_KEY={key('q')}\n"
        f'GEMINI_API_KEY="{key("g")}"\n'
        f"OPENAI_API_KEY_2={key('o')}\n",
    )
    scan = discover_keys({}, dotenv_path=path)
    assert secrets(scan) == {
        "OPENAI_API_KEY_2": key("o"),
        "GROQ_API_KEY": key("q"),
        "GEMINI_API_KEY": key("g"),
    }
    [problem] = scan.problems
    assert (problem.line, problem.variable) == (1, "OPENAI_API_KEY_1")
    assert_no_secret(scan, *CANARY_PARTS)


def test_multiline_quoted_value_keeps_line_numbers(tmp_path: Path) -> None:
    path = write_env(tmp_path, 'CERT="-----BEGIN\nabc\n-----END"\n\nGROQ_API_KEY=\n')
    [problem] = discover_keys({}, dotenv_path=path).problems
    assert (problem.line, problem.variable) == (5, "GROQ_API_KEY")


@pytest.mark.parametrize(
    ("line", "word"),
    [
        ("OPENAI_API_KEY=", "empty"),
        ("OPENAI_API_KEY=   ", "empty"),
        ("OPENAI_API_KEY= # set me", "empty"),
        ('OPENAI_API_KEY=""', "empty"),
        ("OPENAI_API_KEY='  '", "empty"),
        ("OPENAI_API_KEY", "no value"),
    ],
)
def test_empty_values_reported_by_name_and_line(tmp_path: Path, line: str, word: str) -> None:
    path = write_env(tmp_path, f"GROQ_API_KEY={key('q')}\n{line}\n")
    scan = discover_keys({}, dotenv_path=path)
    assert names(scan) == ["GROQ_API_KEY"]
    [problem] = scan.problems
    assert (problem.line, problem.variable, problem.level) == (2, "OPENAI_API_KEY", "warning")
    assert word in problem.message
    assert "OPENAI_API_KEY" in problem.message


def test_empty_environ_value_reported() -> None:
    scan = scan_env({"ANTHROPIC_API_KEY_3": ""})
    assert scan.keys == []
    [problem] = scan.problems
    assert (problem.source, problem.line, problem.variable) == ("env", None, "ANTHROPIC_API_KEY_3")


def test_unrelated_empty_values_are_not_reported(tmp_path: Path) -> None:
    path = write_env(tmp_path, "DEBUG=\nFLAG\n")
    assert discover_keys({"EMPTY": ""}, dotenv_path=path).problems == []


@pytest.mark.parametrize(
    "value", [f" {CANARY}", f"{CANARY}\n", "sk-CANARY 0123456789abcdef", f"{CANARY}\t"]
)
def test_whitespace_in_key_is_an_error_naming_the_variable(value: str) -> None:
    scan = scan_env({"OPENAI_API_KEY": value, "OPENAI_API_KEY_1": key("a")})
    assert names(scan) == ["OPENAI_API_KEY_1"]
    [problem] = scan.problems
    assert (problem.level, problem.variable) == ("error", "OPENAI_API_KEY")
    assert "whitespace" in problem.message
    assert "OPENAI_API_KEY" in problem.message
    assert_no_secret(scan, *CANARY_PARTS, "0123456789abcdef")


# --- base URLs -------------------------------------------------------------------------------


def test_base_urls_apply_to_keys_from_env_and_dotenv(tmp_path: Path) -> None:
    path = write_env(
        tmp_path,
        f"OPENAI_API_KEY_1={key('f')}\nANTHROPIC_BASE_URL=http://localhost:8080\n"
        f"CLAUDE_API_KEY={key('c')}\n",
    )
    environ = {
        "OPENAI_API_KEY": key("o"),
        "OPENAI_BASE_URL": "https://proxy.example.com/v1/",
        "GROQ_API_KEY": key("q"),
    }
    scan = discover_keys(environ, dotenv_path=path)
    assert scan.base_urls == {
        "openai": "https://proxy.example.com/v1",
        "claude": "http://localhost:8080",
    }
    assert {k.name: k.base_url for k in scan.keys} == {
        "OPENAI_API_KEY": "https://proxy.example.com/v1",
        "OPENAI_API_KEY_1": "https://proxy.example.com/v1",
        "GROQ_API_KEY": None,
        "CLAUDE_API_KEY": "http://localhost:8080",
    }
    assert scan.problems == []


@pytest.mark.parametrize(
    ("variable", "provider"),
    [
        ("OPENAI_BASE_URL", "openai"),
        ("GROQ_BASE_URL", "groq"),
        ("ANTHROPIC_BASE_URL", "claude"),
        ("GOOGLE_GEMINI_BASE_URL", "gemini"),
        ("GEMINI_BASE_URL", "gemini"),
    ],
)
def test_each_base_url_variable(variable: str, provider: str) -> None:
    scan = scan_env({variable: "https://gw.example/x"})
    assert scan.base_urls == {provider: "https://gw.example/x"}
    assert scan.keys == []


@pytest.mark.parametrize("bad", ["api.openai.com/v1", "ftp://host/v1", "https://", "not a url"])
def test_an_unusable_base_url_in_dotenv_is_an_error_naming_file_and_line(
    tmp_path: Path, bad: str
) -> None:
    """Never a silent switch to the real API (the keys would go there too)."""
    path = write_env(tmp_path, f"GROQ_API_KEY={key('q')}\nGROQ_BASE_URL={bad}\n")
    with pytest.raises(ConfigError) as info:
        discover_keys({}, dotenv_path=path)
    message = str(info.value)
    assert message.startswith(f"GROQ_BASE_URL (at .env ({path}):2) is not a usable base URL")
    assert "https://api.groq.com" in message  # what a usable one looks like
    assert "unset it" in message
    assert bad == "https://" or bad not in message  # never the value
    assert key("q") not in message


@pytest.mark.parametrize(
    ("variable", "provider"),
    [
        ("OPENAI_BASE_URL", "openai"),
        ("GROQ_BASE_URL", "groq"),
        ("ANTHROPIC_BASE_URL", "claude"),
        ("GOOGLE_GEMINI_BASE_URL", "gemini"),
        ("GEMINI_BASE_URL", "gemini"),
    ],
)
def test_an_unusable_base_url_in_the_environment_is_an_error(variable: str, provider: str) -> None:
    with pytest.raises(ConfigError) as info:
        scan_env({variable: "bad-url", "OPENAI_API_KEY": key("o")})
    assert str(info.value).startswith(f"{variable} (in the environment) is not a usable base URL")
    assert f"{provider}'s real API" in str(info.value)


def test_every_unusable_base_url_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        scan_env({"OPENAI_BASE_URL": "bad", "ANTHROPIC_BASE_URL": "also bad"})
    assert "OPENAI_BASE_URL" in str(info.value)
    assert "ANTHROPIC_BASE_URL" in str(info.value)


def test_a_base_url_that_is_not_used_is_not_checked(tmp_path: Path) -> None:
    """The environment's value wins over the .env file's, and GOOGLE_GEMINI_BASE_URL over
    GEMINI_BASE_URL: the value that is not used cannot send anything anywhere."""
    path = write_env(tmp_path, "OPENAI_BASE_URL=not a url\n")
    scan = discover_keys(
        {
            "OPENAI_BASE_URL": "https://env.example",
            "GOOGLE_GEMINI_BASE_URL": "https://a.example",
            "GEMINI_BASE_URL": "nope",
        },
        dotenv_path=path,
    )
    assert scan.base_urls == {"openai": "https://env.example", "gemini": "https://a.example"}


def test_from_env_raises_for_an_unusable_base_url(tmp_path: Path) -> None:
    from keymux import Multiplexer

    path = write_env(tmp_path, f"OPENAI_API_KEY={CANARY}\nOPENAI_BASE_URL=bad-url\n")
    with pytest.raises(ConfigError, match=r"OPENAI_BASE_URL \(at .*\.env\):2\)") as info:
        Multiplexer.from_env(dotenv_path=path, environ={})
    assert CANARY not in str(info.value)
    with pytest.raises(ConfigError, match=r"OPENAI_BASE_URL \(in the environment\)"):
        Multiplexer.from_env(
            dotenv_path=None, environ={"OPENAI_API_KEY": CANARY, "OPENAI_BASE_URL": "bad-url"}
        )


def test_google_gemini_base_url_wins_over_gemini_base_url() -> None:
    scan = scan_env(
        {
            "GEMINI_BASE_URL": "https://b.example",
            "GOOGLE_GEMINI_BASE_URL": "https://a.example",
            "GEMINI_API_KEY": key("g"),
        }
    )
    assert scan.base_urls == {"gemini": "https://a.example"}
    assert scan.keys[0].base_url == "https://a.example"
    [info] = scan.problems
    assert (info.level, info.variable) == ("info", "GEMINI_BASE_URL")
    scan = scan_env({"GEMINI_BASE_URL": "https://b.example", "GOOGLE_GEMINI_BASE_URL": ""})
    assert scan.base_urls == {"gemini": "https://b.example"}
    assert scan.problems == []


def test_empty_base_url_means_default() -> None:
    scan = scan_env({"OPENAI_BASE_URL": "", "OPENAI_API_KEY": key("o")})
    assert scan.base_urls == {}
    assert scan.keys[0].base_url is None
    assert scan.problems == []


def test_environ_base_url_wins_over_dotenv(tmp_path: Path) -> None:
    path = write_env(tmp_path, "OPENAI_BASE_URL=https://file.example\n")
    scan = discover_keys({"OPENAI_BASE_URL": "https://env.example"}, dotenv_path=path)
    assert scan.base_urls == {"openai": "https://env.example"}


# --- permissions ---------------------------------------------------------------------------


@posix_only
def test_permissions_private_file_is_fine(tmp_path: Path) -> None:
    path = write_env(tmp_path, "", mode=0o600)
    assert check_dotenv_permissions(path) is None
    assert check_dotenv_permissions(tmp_path / "missing") is None


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_permissions_warning(tmp_path: Path, mode: int) -> None:
    path = write_env(tmp_path, "", mode=mode)
    warning = check_dotenv_permissions(path)
    assert warning is not None
    assert "chmod 600" in warning
    assert f"{mode:04o}" in warning
    assert str(path) in warning


@posix_only
def test_permissions_warning_is_in_the_scan(tmp_path: Path) -> None:
    path = write_env(tmp_path, f"OPENAI_API_KEY={CANARY}\n", mode=0o644)
    scan = discover_keys({}, dotenv_path=path)
    assert names(scan) == ["OPENAI_API_KEY"]
    [problem] = scan.problems
    assert problem.level == "warning"
    assert "chmod 600" in problem.message
    assert_no_secret(scan, *CANARY_PARTS)


@pytest.mark.skipif(os.name == "posix", reason="non-POSIX behaviour")
def test_permissions_not_checked_off_posix(tmp_path: Path) -> None:  # pragma: no cover
    assert check_dotenv_permissions(write_env(tmp_path, "", mode=0o644)) is None


# --- secrets never leak ----------------------------------------------------------------------


def test_canary_never_appears_anywhere(tmp_path: Path) -> None:
    path = write_env(
        tmp_path,
        f"OPENAI_API_KEY={CANARY}\n"
        f"OPENAI_API_KEY_1={CANARY}\n"
        f"OPENAI_API_KEYS={CANARY}, ,{CANARY} x\n"
        f'GROQ_API_KEY="{CANARY}\n'
        f"{CANARY}\n"
        f"CLAUDE_API_KEY=' {CANARY}'\n"
        f"GEMINI_API_KEY={CANARY}\n"
        f"GEMINI_API_KEY={CANARY}2\n",
        mode=0o644,
    )
    environ = {"OPENAI_API_KEY": f"{CANARY}-env", "GOOGLE_API_KEY": f"{CANARY}2"}
    scan = discover_keys(environ, dotenv_path=path)
    assert len(scan.problems) >= 7
    assert {k.name for k in scan.keys} == {"OPENAI_API_KEY", "OPENAI_API_KEY_1", "GEMINI_API_KEY"}
    assert_no_secret(scan, *CANARY_PARTS)
    # a key pasted into a base URL variable is an error that does not show it
    with path.open("a", encoding="utf-8") as stream:
        stream.write(f"GEMINI_BASE_URL={CANARY}\n")
    with pytest.raises(ConfigError) as info:
        discover_keys(environ, dotenv_path=path)
    assert "GEMINI_BASE_URL" in str(info.value)
    assert not any(part in str(info.value) for part in CANARY_PARTS)


# --- properties ------------------------------------------------------------------------------

numbered = st.dictionaries(
    keys=st.integers(min_value=0, max_value=10_000),
    values=st.sampled_from([f"sk-prop-{i:02d}-0123456789" for i in range(8)]),
    max_size=20,
)


@settings(max_examples=60, deadline=None)
@given(numbered=numbered, in_file=st.sets(st.integers(0, 10_000)), primary=st.booleans())
def test_numbered_keys_complete_deduped_ordered(
    numbered: dict[int, str], in_file: set[int], primary: bool
) -> None:
    environ = {f"OPENAI_API_KEY_{n}": v for n, v in numbered.items() if n not in in_file}
    file_vars = {f"OPENAI_API_KEY_{n}": v for n, v in numbered.items() if n in in_file}
    if primary:
        environ["OPENAI_API_KEY"] = "sk-prop-00-0123456789"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ".env"
        path.write_text("".join(f"{k}={v}\n" for k, v in file_vars.items()), encoding="utf-8")
        path.chmod(0o600)
        scan = discover_keys(environ, dotenv_path=path)

    ordered = (["OPENAI_API_KEY"] if primary else []) + [
        f"OPENAI_API_KEY_{n}" for n in sorted(numbered)
    ]
    every = {**environ, **file_vars}
    expected: dict[str, str] = {}
    for name in ordered:  # first name of each distinct value wins
        if every[name] not in expected.values():
            expected[name] = every[name]
    assert secrets(scan) == expected
    assert names(scan) == list(expected)
    assert all(k.provider == "openai" for k in scan.keys)
    assert all(p.level == "info" for p in scan.problems)
    assert len(scan.problems) == len(ordered) - len(expected)
    assert_no_secret(scan, *set(every.values()))


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        keys=st.sampled_from(
            [
                f"{spec}_API_KEY{suffix}"
                for spec in ("OPENAI", "GROQ", "CLAUDE", "ANTHROPIC", "GEMINI")
                for suffix in ("", "_1", "S")
            ]
            + ["GOOGLE_API_KEY"]
        ),
        values=st.text(alphabet=st.sampled_from(list("ab,  \t\n")), max_size=6).map(
            lambda tail: f"sk-CANARY-x{tail}"
        ),
        max_size=8,
    )
)
def test_no_value_ever_reaches_a_problem_or_repr(environ: dict[str, str]) -> None:
    scan = scan_env(environ)
    assert_no_secret(scan, "sk-CANARY", "CANARY-x")
    for problem in scan.problems:
        assert problem.variable is None or problem.variable in environ
    for k in scan.keys:
        assert isinstance(k, KeySpec)
        assert k.source == "env"


def test_scan_is_plain_data() -> None:
    scan = EnvScan()
    assert (scan.keys, scan.problems, scan.base_urls, scan.dotenv_file) == ([], [], {}, None)
    assert scan.by_provider() == {"openai": [], "groq": [], "claude": [], "gemini": []}
    problem = EnvProblem("env", None, "X", "msg")
    assert problem.level == "warning"
    assert str(problem) == "env: msg"


def test_from_env_reports_problems_by_line_in_the_log_never_the_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from keymux import Multiplexer

    canary = "sk-CANARY-from-env-0123456789abcdef"
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"OPENAI_API_KEY_1={canary}\nthis line is not an assignment\nGROQ_API_KEY=\n")
    dotenv.chmod(0o600)
    caplog.set_level(logging.DEBUG)
    mux = Multiplexer.from_env(dotenv_path=dotenv, environ={})
    try:
        assert [k["name"] for k in mux.key_info()] == ["OPENAI_API_KEY_1"]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(":2:" in w for w in warnings)  # the malformed line, by number
        assert any("GROQ_API_KEY" in w for w in warnings)  # the empty value, by name
        assert all(canary not in r.getMessage() for r in caplog.records)
        assert len(mux.env_problems) >= 2
    finally:
        mux.close()
