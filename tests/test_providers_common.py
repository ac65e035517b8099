"""What the provider adapters share (``keymux.providers._common``), tested once as tables; the
adapter suites cover the same code through each provider."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest

import keymux.providers
from keymux._errors import InvalidRequestError
from keymux.providers._common import (
    InlineImage,
    Turns,
    bad,
    convert_messages,
    dumps,
    event_object,
    image_source,
    positive_int,
    prompt_tokens,
    read_json,
    snippet,
    stop_sequences,
)

#: a made-up provider: roles renamed, contents wrapped, merged turns joined
TOY = Turns(
    provider="toy",
    roles={"user": "human", "assistant": "bot"},
    field="said",
    content=lambda content, where: [f"{where}:{content}"],
    system_text=lambda content, where: f"sys:{content}",
    merge=lambda earlier, later: earlier + later,
    tool_results="toy results",
    tool_calls="toy calls",
)


def test_convert_messages_splits_system_and_merges_same_role_turns() -> None:
    system, turns = convert_messages(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "a"},
            {"role": "developer", "content": "also"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
        ],
        TOY,
    )
    assert system == ["sys:be brief", "sys:also"]
    assert turns == [
        {"role": "human", "said": ["messages[1]:a", "messages[3]:b"]},
        {"role": "bot", "said": ["messages[4]:c"]},
    ]


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        (None, "toy: messages must be a non-empty list of {'role': ..., 'content': ...} objects"),
        ([], "toy: messages must be a non-empty list"),
        (["hi"], "toy: messages[0] must be an object with 'role' and 'content'"),
        (
            [{"role": "tool", "content": "x"}],
            "toy: messages[0] has role 'tool'; use 'system', 'user' or 'assistant' "
            "(for tool results send toy results in a user message)",
        ),
        ([{"role": ["user"], "content": "x"}], "toy: messages[0] has role None; use"),
        (
            [{"role": "assistant", "tool_calls": []}],
            "toy: messages[0] has no content (OpenAI tool_calls are not translated; send toy "
            "calls instead)",
        ),
        (
            [{"role": "system", "content": "x"}],
            "toy: messages need at least one user or assistant message besides system ones",
        ),
    ],
)
def test_convert_messages_refuses(messages: Any, error: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        convert_messages(messages, TOY)
    assert str(info.value).startswith(error)
    assert info.value.provider == "toy"


def test_a_missing_content_without_a_native_alternative_says_only_what_is_not_translated() -> None:
    quiet = dataclasses.replace(TOY, tool_calls=None)
    with pytest.raises(InvalidRequestError, match=r"not translated\)$"):
        convert_messages([{"role": "user"}], quiet)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("data:image/png;base64,iVBORw0K", InlineImage("image/png", "iVBORw0K")),
        ({"url": "data:image/svg+xml;base64,PHN2"}, InlineImage("image/svg+xml", "PHN2")),
        ("https://example.com/cat.png", "https://example.com/cat.png"),
        ({"url": "gs://bucket/cat.png", "detail": "low"}, "gs://bucket/cat.png"),
    ],
)
def test_image_source(url: Any, expected: InlineImage | str) -> None:
    part = {"type": "image_url", "image_url": url}
    schemes = ("https://", "gs://")
    assert image_source(part, "m", "toy", schemes=schemes, named="a URI") == expected


@pytest.mark.parametrize(
    ("url", "error"),
    [
        (None, "toy: m: an image_url part needs a url"),
        ({"url": ""}, "toy: m: an image_url part needs a url"),
        ("ftp://example.com/cat.png", "toy: m: an image url must be a data: URL (base64) or a URI"),
        ("data:image/png,raw", "toy: m: an image url must be a data: URL (base64) or a URI"),
    ],
)
def test_image_source_refuses(url: Any, error: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        image_source({"image_url": url}, "m", "toy", schemes=("https://",), named="a URI")
    assert str(info.value) == error


def test_stop_sequences() -> None:
    assert stop_sequences("END", "toy") == ["END"]
    assert stop_sequences(("a", "b"), "toy") == ["a", "b"]
    for refused in (3, ["a", 3], None):
        with pytest.raises(InvalidRequestError, match=r"^toy: stop must be a string or a list"):
            stop_sequences(refused, "toy")


def test_dumps_and_bad() -> None:
    assert dumps({"a": [1, "é"], "b": None}, "toy") == b'{"a":[1,"\\u00e9"],"b":null}'
    for value in (float("nan"), {1, 2}):
        with pytest.raises(InvalidRequestError, match=r"^toy: the request parameters are not JSON"):
            dumps({"a": value}, "toy")
    error = bad("toy", "no")
    assert (str(error), error.provider) == ("toy: no", "toy")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1), (4096, 4096), (0, None), (-1, None), (True, None), (2.0, None), ("3", None)],
)
def test_positive_int(value: Any, expected: int | None) -> None:
    assert positive_int(value) == expected


@pytest.mark.parametrize(
    ("messages", "part_chars", "expected"),
    [
        (None, 0, 0),
        ([{"role": "user", "content": "abcde"}], 0, 2 + 4),
        ([{"content": ["abcd", {"text": "abcd"}, {"type": "image_url"}]}], 0, 2 + 4),
        ([{"content": ["abcd", {"text": "abcd"}, {"type": "image_url"}]}], 1000, 252 + 4),
        ([{"content": None}, "not a message", {"content": 7}], 0, 0 + 4 + 4),
    ],
)
def test_prompt_tokens(messages: Any, part_chars: int, expected: int) -> None:
    assert prompt_tokens(messages, part_chars=part_chars) == expected


def test_error_body_readers() -> None:
    assert read_json(b'{"error": {}}') == {"error": {}}
    assert read_json(b"") is None
    assert read_json(b"<html>") is None
    assert read_json(b"\xff\xfe") is None
    assert snippet(b"  <p>\n  Bad   gateway </p>\n") == "<p> Bad gateway </p>"
    assert snippet(b"x" * 500) == "x" * 200
    assert snippet(b"x" * 500, 160) == "x" * 160


def test_event_object() -> None:
    assert event_object('{"type": "ping"}', "toy") == {"type": "ping"}
    with pytest.raises(ValueError, match=r"^toy stream: event data is not JSON: 'oops'$"):
        event_object("oops", "toy")
    with pytest.raises(ValueError, match=r"^toy stream: event data is not an object: '\[1\]'$"):
        event_object("[1]", "toy")


def test_no_provider_module_imports_another_providers_module() -> None:
    """Shared helpers live in ``_common``; only Groq builds on OpenAI (it is a subclass)."""
    folder = Path(keymux.providers.__file__).parent
    providers = {"openai", "groq", "claude", "gemini"}
    allowed = {"groq": {"openai"}}
    for name in providers:
        tree = ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        imported = {
            (node.module or "").lstrip(".").split(".")[-1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1
        }
        assert imported & providers <= allowed.get(name, set()), (name, imported)
