"""What the provider adapters share, in one place; nothing here knows a provider.

- ``bad`` and ``dumps``: a refused request as ``"<provider>: <message>"``, and request bodies as
  compact JSON.
- ``convert_messages``: OpenAI-style chat messages as a provider's own turns (Anthropic and
  Gemini), parametrised by a ``Turns`` that says what differs; with ``image_source`` for the
  ``image_url`` parts and ``stop_sequences`` for ``stop``.
- readers of answers: ``lowered`` headers, ``read_json`` and ``snippet`` for error bodies,
  ``event_object`` for a stream event's data.
- estimates: ``prompt_tokens`` and ``positive_int``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

from .._errors import InvalidRequestError

__all__ = [
    "InlineImage",
    "Turns",
    "bad",
    "convert_messages",
    "dumps",
    "event_object",
    "image_source",
    "lowered",
    "positive_int",
    "prompt_tokens",
    "read_json",
    "snippet",
    "stop_sequences",
]

_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)
#: OpenAI roles whose messages are instructions, not turns
_SYSTEM_ROLES = frozenset({"system", "developer"})


# --- requests ------------------------------------------------------------------------------


def bad(provider: str, message: str) -> InvalidRequestError:
    """The error for a request keymux refuses before sending it."""
    return InvalidRequestError(f"{provider}: {message}", provider=provider)


def dumps(body: Mapping[str, Any], provider: str) -> bytes:
    """``body`` as compact JSON; ``bad`` for a value JSON cannot carry (NaN, a set, ...)."""
    try:
        return _ENCODER.encode(body).encode()
    except (TypeError, ValueError) as exc:
        raise bad(provider, f"the request parameters are not JSON-serialisable: {exc}") from exc


def stop_sequences(stop: Any, provider: str) -> list[str]:
    """OpenAI's ``stop`` (a string or a list of strings) as a list."""
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list | tuple) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise bad(provider, "stop must be a string or a list of strings")


class InlineImage(NamedTuple):
    """The two halves of a base64 ``data:`` URL."""

    media_type: str
    data: str


def image_source(
    part: Mapping[str, Any], where: str, provider: str, *, schemes: tuple[str, ...], named: str
) -> InlineImage | str:
    """What an OpenAI ``image_url`` part points at: a base64 ``data:`` URL, split, or a URL that
    starts with one of ``schemes`` (``named`` says which in the error), as it is."""
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, Mapping) else spec
    if not isinstance(url, str) or not url:
        raise bad(provider, f"{where}: an image_url part needs a url")
    match = _DATA_URL.fullmatch(url)
    if match:
        return InlineImage(match.group(1), match.group(2))
    if url.startswith(schemes):
        return url
    raise bad(provider, f"{where}: an image url must be a data: URL (base64) or {named}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Turns:
    """What differs between providers that take a conversation as alternating turns."""

    provider: str
    #: OpenAI role -> the provider's role of a turn (a role not here is refused)
    roles: Mapping[str, str]
    #: the field of a turn that holds its content ("content", "parts")
    field: str
    #: ``(content, where)`` -> a user or assistant content in the provider's own form
    content: Callable[[Any, str], Any]
    #: ``(content, where)`` -> a system message's content as one text
    system_text: Callable[[Any, str], str]
    #: ``(earlier, later)`` -> the contents of two turns of one role, as one turn's content
    merge: Callable[[Any, Any], Any]
    #: what carries tool results in this provider's messages (named when a role is refused)
    tool_results: str
    #: what to send instead of OpenAI ``tool_calls`` (told when a message has no content)
    tool_calls: str | None = None


def convert_messages(messages: Any, turns: Turns) -> tuple[list[str], list[dict[str, Any]]]:
    """OpenAI-style messages -> (the system texts, the provider's turns).

    System messages may stand anywhere; the others become turns of the provider's roles, and
    consecutive turns of one role are merged (these providers want user and model turns to
    alternate).
    """
    provider = turns.provider
    if not isinstance(messages, list | tuple) or not messages:
        raise bad(
            provider, "messages must be a non-empty list of {'role': ..., 'content': ...} objects"
        )
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise bad(provider, f"{where} must be an object with 'role' and 'content'")
        role = msg.get("role")
        if not isinstance(role, str):  # also keeps unhashable garbage out of the lookups
            role = None
        content = msg.get("content")
        if role in _SYSTEM_ROLES:
            system.append(turns.system_text(content, where))
            continue
        native = turns.roles.get(role) if role is not None else None
        if native is None:
            raise bad(
                provider,
                f"{where} has role {role!r}; use 'system', 'user' or 'assistant' "
                f"(for tool results send {turns.tool_results} in a user message)",
            )
        if content is None:
            instead = f"; send {turns.tool_calls} instead" if turns.tool_calls else ""
            raise bad(
                provider, f"{where} has no content (OpenAI tool_calls are not translated{instead})"
            )
        converted = turns.content(content, where)
        if out and out[-1]["role"] == native:
            out[-1][turns.field] = turns.merge(out[-1][turns.field], converted)
        else:
            out.append({"role": native, turns.field: converted})
    if not out:
        raise bad(
            provider, "messages need at least one user or assistant message besides system ones"
        )
    return system, out


# --- answers -------------------------------------------------------------------------------


def lowered(headers: Mapping[str, str]) -> Mapping[str, str]:
    """Headers for lowercase lookups: a case-insensitive multidict as it is, others lowercased."""
    if isinstance(headers, CIMultiDictProxy | CIMultiDict):  # aiohttp's: case-insensitive
        return headers
    return {k.lower(): v for k, v in headers.items()}


def read_json(body: bytes) -> Any:
    """An error body's JSON, or None when it is empty or not JSON."""
    try:
        return json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return None


def event_object(data: str, provider: str) -> dict[str, Any]:
    """The JSON object a stream event carries; ``ValueError`` naming the provider otherwise."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{provider} stream: event data is not JSON: {data[:200]!r}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{provider} stream: event data is not an object: {data[:200]!r}")
    return value


def snippet(body: bytes, limit: int = 200) -> str:
    """The start of a body that is not JSON, on one line, at most ``limit`` characters."""
    return " ".join(body[:400].decode("utf-8", "replace").split())[:limit]


# --- estimates -----------------------------------------------------------------------------


def positive_int(value: Any) -> int | None:
    """``value`` if it is a positive int (not a bool), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def prompt_tokens(messages: Any, *, part_chars: int = 0) -> int:
    """A quick prompt estimate: ceil(characters / 4) + 4 per message. A content part counts its
    ``text``; a part without text (an image, audio) counts ``part_chars`` characters."""
    chars = 0
    count = 0
    if isinstance(messages, list | tuple):
        for msg in messages:
            if isinstance(msg, Mapping):
                count += 1
                chars += _chars(msg.get("content"), part_chars)
    return (chars + 3) // 4 + 4 * count


def _chars(content: Any, part_chars: int) -> int:
    if isinstance(content, str):
        return len(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, str):
            total += len(part)
        elif isinstance(part, Mapping):
            text = part.get("text")
            total += len(text) if isinstance(text, str) else part_chars
    return total
