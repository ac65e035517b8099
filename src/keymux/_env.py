"""Key discovery from the environment and a ``.env`` file, in one place and without globals.

``discover_keys()`` reads a snapshot of the environment (``os.environ`` unless a mapping is given)
and, optionally, a ``.env`` file parsed with python-dotenv's own parser. It never changes
``os.environ``. What it finds is returned as data: the keys (``KeySpec``), the base URLs, and a list
of problems that name variables and line numbers but never a value.

Which variables are read is described by one table, ``PROVIDER_VARIABLES``.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import stat
from collections import ChainMap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from dotenv.parser import parse_stream
from dotenv.variables import parse_variables

from ._config import KeySpec, check_base_url
from ._errors import ConfigError
from ._secret import Secret

__all__ = [
    "PROVIDER_VARIABLES",
    "EnvProblem",
    "EnvScan",
    "ProviderVariables",
    "check_dotenv_permissions",
    "discover_keys",
    "looked_for",
]

Level = Literal["error", "warning", "info"]

#: the ``source`` of keys and problems that come from the process environment
ENV_SOURCE = "env"


@dataclass(frozen=True, slots=True)
class ProviderVariables:
    """The variable names one provider's keys and base URL are read from.

    Keys come out in this order: the ``primary`` variables (in the order listed), then the
    ``numbered`` ones (``<prefix>_<n>``, ``<n>`` ASCII digits, by number), then the items of the
    comma-separated ``plural`` lists (named ``<VAR>[0]``, ``<VAR>[1]``, ...).
    """

    provider: str
    primary: tuple[str, ...]
    numbered: tuple[str, ...]
    plural: tuple[str, ...]
    #: base URL variables; the first one that is set (non-empty) is used
    base_url: tuple[str, ...]

    def patterns(self) -> list[str]:
        """Human-readable name patterns, for "no keys found" messages."""
        return [
            *self.primary,
            *(f"{prefix}_<n>" for prefix in self.numbered),
            *(f"{name} (comma-separated)" for name in self.plural),
        ]


#: provider -> the variables its keys are read from, in provider order
PROVIDER_VARIABLES: Mapping[str, ProviderVariables] = MappingProxyType(
    {
        spec.provider: spec
        for spec in (
            ProviderVariables(
                provider="openai",
                primary=("OPENAI_API_KEY",),
                numbered=("OPENAI_API_KEY",),
                plural=("OPENAI_API_KEYS",),
                base_url=("OPENAI_BASE_URL",),
            ),
            ProviderVariables(
                provider="groq",
                primary=("GROQ_API_KEY",),
                numbered=("GROQ_API_KEY",),
                plural=("GROQ_API_KEYS",),
                base_url=("GROQ_BASE_URL",),
            ),
            ProviderVariables(
                provider="claude",
                primary=("CLAUDE_API_KEY", "ANTHROPIC_API_KEY"),
                numbered=("ANTHROPIC_API_KEY", "CLAUDE_API_KEY"),
                plural=("ANTHROPIC_API_KEYS", "CLAUDE_API_KEYS"),
                base_url=("ANTHROPIC_BASE_URL",),
            ),
            ProviderVariables(
                provider="gemini",
                primary=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
                numbered=("GEMINI_API_KEY",),
                plural=("GEMINI_API_KEYS",),
                base_url=("GOOGLE_GEMINI_BASE_URL", "GEMINI_BASE_URL"),
            ),
        )
    }
)


def looked_for() -> list[str]:
    """Every variable name pattern ``discover_keys`` reads keys from, in order."""
    return [pattern for spec in PROVIDER_VARIABLES.values() for pattern in spec.patterns()]


# --- lookup tables derived from PROVIDER_VARIABLES (constants, built once) -------------------

_Kind = Literal["primary", "numbered", "plural"]


@dataclass(frozen=True, slots=True)
class _Slot:
    """Where a key variable sits: its provider and its place in the key order."""

    provider: str
    kind: _Kind
    order: tuple[int, ...]


def _exact_slots() -> dict[str, _Slot]:
    slots: dict[str, _Slot] = {}
    for spec in PROVIDER_VARIABLES.values():
        for i, name in enumerate(spec.primary):
            slots[name] = _Slot(spec.provider, "primary", (0, i))
        for i, name in enumerate(spec.plural):
            slots[name] = _Slot(spec.provider, "plural", (2, i))
    return slots


_EXACT_SLOTS: Mapping[str, _Slot] = MappingProxyType(_exact_slots())
_NUMBERED_PREFIXES: Mapping[str, tuple[str, int]] = MappingProxyType(
    {
        prefix: (spec.provider, i)
        for spec in PROVIDER_VARIABLES.values()
        for i, prefix in enumerate(spec.numbered)
    }
)
_NUMBERED = re.compile(r"(?P<prefix>[A-Z_]+?)_(?P<n>[0-9]+)", re.ASCII)
_BASE_URL_VARS: frozenset[str] = frozenset(
    name for spec in PROVIDER_VARIABLES.values() for name in spec.base_url
)
_PROVIDER_ORDER: Mapping[str, int] = MappingProxyType(
    {provider: i for i, provider in enumerate(PROVIDER_VARIABLES)}
)


def _slot(name: str) -> _Slot | None:
    """The key slot of a variable name, or None if keymux does not read keys from it."""
    exact = _EXACT_SLOTS.get(name)
    if exact is not None:
        return exact
    match = _NUMBERED.fullmatch(name)
    if match is None:
        return None
    found = _NUMBERED_PREFIXES.get(match["prefix"])
    if found is None:
        return None
    provider, prefix_index = found
    digits = match["n"]
    significant = digits.lstrip("0") or "0"
    # numeric order without int() (no limit on the number of digits): shorter is smaller
    order = (1, len(significant), *map(ord, significant), prefix_index, len(digits))
    return _Slot(provider, "numbered", order)


def _is_known(name: str) -> bool:
    return name in _BASE_URL_VARS or _slot(name) is not None


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvProblem:
    """Something wrong (or worth knowing) about the key configuration. Never holds a secret.

    ``source`` is ``"env"`` or ``".env (<path>)"``; ``line`` is the 1-based line in the .env file
    (None for the environment); ``variable`` is the variable concerned, if known.
    ``level`` is ``"error"`` (a value could not be used), ``"warning"`` (something was skipped or
    is risky) or ``"info"`` (nothing lost, e.g. a duplicate key added once).
    """

    source: str
    line: int | None
    variable: str | None
    message: str
    level: Level = "warning"

    @property
    def where(self) -> str:
        """``source:line`` (just ``source`` for the environment)."""
        return _where(self.source, self.line)

    def __str__(self) -> str:
        """``source:line: message``: how the log, ``keymux keys`` and ``keymux check`` show it."""
        return f"{self.where}: {self.message}"


def _where(source: str, line: int | None) -> str:
    return source if line is None else f"{source}:{line}"


@dataclass(frozen=True, slots=True)
class EnvScan:
    """What ``discover_keys`` found."""

    #: keys in a stable order: providers openai, groq, claude, gemini; within one provider the
    #: primary variables, then ``*_<n>`` by number, then the items of the plural lists
    keys: list[KeySpec] = field(default_factory=list)
    problems: list[EnvProblem] = field(default_factory=list)
    #: provider -> base URL from OPENAI_BASE_URL etc. (already applied to ``keys``)
    base_urls: dict[str, str] = field(default_factory=dict)
    #: the variable name patterns that were searched
    looked_for: list[str] = field(default_factory=looked_for)
    #: absolute path of the .env file that was read, or None (missing, unreadable or not used)
    dotenv_file: str | None = None

    def by_provider(self) -> dict[str, list[KeySpec]]:
        """The keys grouped by provider (every provider present, in provider order)."""
        grouped: dict[str, list[KeySpec]] = {provider: [] for provider in PROVIDER_VARIABLES}
        for key in self.keys:
            grouped[key.provider].append(key)
        return grouped


# --- .env reading ------------------------------------------------------------------------------

_NEWLINE = re.compile(r"\r\n|\n|\r")
_LEADING_SPACE = re.compile(r"\s*")
_ASSIGNED_NAME = re.compile(r"[ \t]*(?:export[ \t]+)?'?([A-Za-z_][A-Za-z0-9_]*)'?[ \t]*=", re.ASCII)


@dataclass(frozen=True, slots=True)
class _Statement:
    """One statement of a .env file. ``key`` is None for comments and unparsable lines."""

    key: str | None
    value: str | None
    line: int
    error: bool = False
    #: for an unparsable line: the variable it seems to set, if that is a variable keymux reads
    guessed_key: str | None = None


def _parse_dotenv(text: str) -> Iterator[_Statement]:
    """The statements of a .env text, parsed by python-dotenv's parser, with true line numbers.

    python-dotenv numbers a statement by the first blank line before it, and an unterminated
    quote makes it swallow the following lines up to the next quote character. Here each
    statement carries the line it starts on, and after an unparsable statement parsing resumes
    on the next line, so one bad line costs only that line.
    """
    text = text.removeprefix("\ufeff")
    start, first_line = 0, 1
    while start < len(text):
        offset, resume = start, -1
        for binding in parse_stream(io.StringIO(text[start:])):
            original = binding.original.string
            lead = _LEADING_SPACE.match(original)
            lead_len = lead.end() if lead else 0
            line = (
                first_line
                + binding.original.line
                - 1
                + len(_NEWLINE.findall(original, 0, lead_len))
            )
            if binding.error:
                newline = _NEWLINE.search(original, lead_len)
                first = original[lead_len : newline.start() if newline else len(original)]
                assigned = _ASSIGNED_NAME.match(first)
                guessed = assigned[1] if assigned and _is_known(assigned[1]) else None
                yield _Statement(None, None, line, error=True, guessed_key=guessed)
                if newline is not None and newline.end() < len(original):
                    resume, first_line = offset + newline.end(), line + 1
                    break
            elif binding.key is not None:
                yield _Statement(binding.key, binding.value, line)
            offset += len(original)
        if resume < 0:
            return
        start = resume


@dataclass(frozen=True, slots=True)
class _Value:
    """A variable's value and where it came from."""

    value: str | None
    source: str
    line: int | None


def _dotenv_disabled(environ: Mapping[str, str]) -> bool:
    """python-dotenv's switch: PYTHON_DOTENV_DISABLED=1/true/yes turns .env loading off."""
    value = environ.get("PYTHON_DOTENV_DISABLED")
    return value is not None and value.casefold() in {"1", "true", "t", "yes", "y"}


def _read_dotenv(
    path: str, environ: Mapping[str, str], label: str, problems: list[EnvProblem]
) -> dict[str, _Value] | None:
    """The variables keymux reads from a .env file (None if there is no file to read)."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        problems.append(
            EnvProblem(label, None, None, f"{path} is a directory, not a .env file", "error")
        )
        return None
    except UnicodeDecodeError as exc:
        problems.append(
            EnvProblem(
                label,
                None,
                None,
                f"{path} is not UTF-8 text (undecodable byte at offset {exc.start}); "
                "nothing was loaded from it",
                "error",
            )
        )
        return None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        problems.append(
            EnvProblem(
                label,
                None,
                None,
                f"could not read {path} ({reason}); no keys loaded from it",
                "error",
            )
        )
        return None

    found: dict[str, _Value] = {}
    # python-dotenv's variable expansion (${NAME} / ${NAME:-default}), resolved the way
    # load_dotenv(override=False) does: the environment wins over earlier lines of the file
    earlier: dict[str, str | None] = {}
    scope: ChainMap[str, str | None] = ChainMap(dict(environ), earlier)
    for statement in _parse_dotenv(text):
        if statement.error:
            problems.append(_unparsable(label, statement))
            continue
        assert statement.key is not None
        value = statement.value
        if value is not None and "${" in value:
            value = "".join(atom.resolve(scope) for atom in parse_variables(value))
        earlier[statement.key] = value
        if not _is_known(statement.key):
            continue
        before = found.get(statement.key)
        if before is not None and before.value != value:
            problems.append(
                EnvProblem(
                    label,
                    statement.line,
                    statement.key,
                    f"{statement.key} is set again (first on line {before.line}); "
                    "this later line is used, as python-dotenv does",
                    "info",
                )
            )
        found[statement.key] = _Value(value, label, statement.line)
    return found


def _unparsable(label: str, statement: _Statement) -> EnvProblem:
    message = "this line could not be parsed and was skipped"
    if statement.guessed_key is not None:
        message += f"; it seems to set {statement.guessed_key}, which was not loaded from it"
    message += " (check its quotes and the NAME=value form)"
    return EnvProblem(label, statement.line, statement.guessed_key, message, "warning")


def check_dotenv_permissions(path: str | os.PathLike[str]) -> str | None:
    """On POSIX, a warning if the file can be accessed by its group or other users, else None."""
    if os.name != "posix":
        return None
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    who = [label for bits, label in ((0o070, "its group"), (0o007, "other users")) if mode & bits]
    where = os.fspath(path)
    return (
        f"{where} is accessible to {' and '.join(who)} (mode {mode:04o}); API keys belong in a "
        f"private file: chmod 600 {shlex.quote(where)}"
    )


# --- discovery ---------------------------------------------------------------------------------


def discover_keys(
    environ: Mapping[str, str] | None = None,
    *,
    dotenv_path: str | os.PathLike[str] | None = ".env",
    use_dotenv: bool = True,
) -> EnvScan:
    """Find API keys and base URLs in ``environ`` (default: ``os.environ``) and a ``.env`` file.

    The environment wins over the .env file for the same variable (python-dotenv's default
    ``override=False``); the file is parsed, never loaded into ``os.environ``. A missing file
    is fine. A malformed line or a bad key value is reported in ``EnvScan.problems`` and
    skipped. A base URL variable that is set but unusable raises ``ConfigError`` naming it (and
    its file and line): using the provider's real API instead would send requests, and keys,
    somewhere the user did not ask for.
    """
    env = dict(os.environ if environ is None else environ)  # a snapshot: no torn reads
    problems: list[EnvProblem] = []
    dotenv_file: str | None = None

    values: dict[str, _Value] = {
        name: _Value(value, ENV_SOURCE, None) for name, value in env.items() if _is_known(name)
    }
    if use_dotenv and dotenv_path is not None:
        path = os.path.abspath(os.fspath(dotenv_path))
        label = f".env ({path})"
        if _dotenv_disabled(env):
            problems.append(
                EnvProblem(
                    ENV_SOURCE,
                    None,
                    "PYTHON_DOTENV_DISABLED",
                    f"{path} was not read because PYTHON_DOTENV_DISABLED is set",
                    "info",
                )
            )
        else:
            from_file = _read_dotenv(path, env, label, problems)
            if from_file is not None:
                dotenv_file = path
                warning = check_dotenv_permissions(path)
                if warning is not None:
                    problems.append(EnvProblem(label, None, None, warning, "warning"))
                for name, value in from_file.items():
                    if name not in values:
                        values[name] = value
                    elif values[name].value != value.value:
                        problems.append(
                            EnvProblem(
                                label,
                                value.line,
                                name,
                                f"{name} is set both in the environment and in the .env file; "
                                "the environment's value is used",
                                "info",
                            )
                        )

    base_urls = _base_urls(values, problems)
    keys = _keys(values, base_urls, problems)
    return EnvScan(
        keys=keys,
        problems=problems,
        base_urls=base_urls,
        looked_for=looked_for(),
        dotenv_file=dotenv_file,
    )


def _base_urls(values: Mapping[str, _Value], problems: list[EnvProblem]) -> dict[str, str]:
    """provider -> base URL; ConfigError naming every base URL variable set to something that is
    not a URL. An empty value means the provider's default, as if unset."""
    urls: dict[str, str] = {}
    unusable: list[str] = []
    for spec in PROVIDER_VARIABLES.values():
        chosen: str | None = None
        for name in spec.base_url:
            found = values.get(name)
            if found is None or found.value is None or not found.value.strip():
                continue  # unset or empty: the provider's default
            if chosen is not None:
                if found.value.strip().rstrip("/") != urls.get(spec.provider):
                    problems.append(
                        EnvProblem(
                            found.source,
                            found.line,
                            name,
                            f"{name} is ignored because {chosen} is set",
                            "info",
                        )
                    )
                continue
            chosen = name
            try:
                url = check_base_url(found.value, what=name)
            except ConfigError:
                unusable.append(_unusable_base_url(spec.provider, name, found))
                continue
            if url is not None:
                urls[spec.provider] = url
    if unusable:
        raise ConfigError("; ".join(unusable))
    return urls


def _unusable_base_url(provider: str, name: str, found: _Value) -> str:
    # never the value: a key pasted into the wrong variable must not reach a log
    from .providers import ADAPTERS

    where = "in the environment" if found.line is None else f"at {_where(found.source, found.line)}"
    return (
        f"{name} ({where}) is not a usable base URL: it needs an http:// or https:// scheme and "
        f"a host, like {ADAPTERS[provider].default_base_url}. keymux does not fall back to "
        f"{provider}'s real API for a base URL you set: fix {name}, or unset it to use the "
        "real API"
    )


@dataclass(frozen=True, slots=True)
class _Candidate:
    """One key value found under a name, before validation and de-duplication."""

    provider: str
    order: tuple[int, ...]
    name: str
    variable: str
    value: str
    source: str
    line: int | None


def _candidates(values: Mapping[str, _Value], problems: list[EnvProblem]) -> list[_Candidate]:
    found: list[_Candidate] = []
    for variable, where in values.items():
        slot = _slot(variable)
        if slot is None:
            continue
        if where.value is None:
            problems.append(
                EnvProblem(
                    where.source,
                    where.line,
                    variable,
                    f"{variable} has no value (no '='); skipped",
                    "warning",
                )
            )
            continue
        if not where.value.strip():
            problems.append(
                EnvProblem(where.source, where.line, variable, f"{variable} is empty; skipped")
            )
            continue
        if slot.kind != "plural":
            found.append(
                _Candidate(
                    slot.provider,
                    slot.order,
                    variable,
                    variable,
                    where.value,
                    where.source,
                    where.line,
                )
            )
            continue
        for index, item in enumerate(where.value.split(",")):
            name = f"{variable}[{index}]"
            if not item.strip():
                problems.append(
                    EnvProblem(
                        where.source,
                        where.line,
                        variable,
                        f"{name} is empty (nothing between the commas); skipped",
                    )
                )
                continue
            found.append(
                _Candidate(
                    slot.provider,
                    (*slot.order, index),
                    name,
                    variable,
                    item.strip(),
                    where.source,
                    where.line,
                )
            )
    found.sort(key=lambda c: (_PROVIDER_ORDER[c.provider], c.order))
    return found


def _keys(
    values: Mapping[str, _Value], base_urls: Mapping[str, str], problems: list[EnvProblem]
) -> list[KeySpec]:
    keys: list[KeySpec] = []
    first_name: dict[tuple[str, str], str] = {}  # (provider, value) -> name that was added
    for cand in _candidates(values, problems):
        seen = first_name.get((cand.provider, cand.value))
        if seen is not None:
            problems.append(
                EnvProblem(
                    cand.source,
                    cand.line,
                    cand.variable,
                    f"{cand.name} holds the same {cand.provider} key as {seen}; "
                    f"it is used once, as {seen}",
                    "info",
                )
            )
            continue
        try:
            key = KeySpec(
                provider=cand.provider,
                name=cand.name,
                secret=Secret(cand.value),
                source=cand.source,
                base_url=base_urls.get(cand.provider),
            )
        except ConfigError as exc:  # its message names the key, never the value
            problems.append(
                EnvProblem(cand.source, cand.line, cand.variable, f"{exc}; skipped", "error")
            )
            continue
        first_name[(cand.provider, cand.value)] = cand.name
        keys.append(key)
    return keys
