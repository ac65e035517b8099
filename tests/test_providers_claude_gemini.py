"""The Anthropic and Gemini adapters: request bodies, parsing, streams, classification, headers.

Wire examples are the ones in reference/providers.md (§3 Anthropic, §4 Gemini), copied verbatim.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from keymux._errors import InvalidRequestError, KeymuxError, UnsupportedError
from keymux._types import HttpRequest, Kind, LimitInfo, Parsed, RateSnapshot
from keymux.providers._base import SSEEvent, SSEParser, StreamDecoder, StreamFailure
from keymux.providers.claude import ClaudeAdapter, classify_claude
from keymux.providers.gemini import (
    GeminiAdapter,
    classify_gemini,
    seconds_until_pacific_midnight,
)

CLAUDE = ClaudeAdapter()
GEMINI = GeminiAdapter()
CLAUDE_KEY = "sk-ant-api03-CANARY0123456789abcdefXYZ"
GEMINI_KEY = "AIzaSyCANARY0123456789abcdefghijklmnopq"
CLAUDE_BASE = "https://api.anthropic.com"
GEMINI_BASE = "https://generativelanguage.googleapis.com"
NOW = datetime(2026, 8, 21, 12, 40, 0, tzinfo=UTC).timestamp()

USER_HI = [{"role": "user", "content": "Say hi"}]

#: the Unix time answers arrive at in these tests
WALL = 1_767_225_600.0

from keymux._types import USER_AGENT  # noqa: E402


def claude_build(params: dict[str, Any], *, stream: bool = False, model: str | None = None) -> Any:
    req = CLAUDE.build(
        "chat", params, model=model, stream=stream, base_url=CLAUDE_BASE, api_key=CLAUDE_KEY
    )
    assert req.body is not None
    return json.loads(req.body)


def gemini_build(
    params: dict[str, Any],
    *,
    endpoint: str = "chat",
    stream: bool = False,
    model: str | None = None,
) -> tuple[HttpRequest, Any]:
    req = GEMINI.build(
        endpoint, params, model=model, stream=stream, base_url=GEMINI_BASE, api_key=GEMINI_KEY
    )
    assert req.body is not None
    return req, json.loads(req.body)


def run_stream(decoder: StreamDecoder, chunks: list[bytes]) -> list[str]:
    """Feed raw bytes through SSEParser and the decoder; return the text deltas."""
    parser = SSEParser()
    deltas: list[str] = []
    for chunk in chunks:
        for event in parser.feed(chunk):
            delta = decoder.feed(event)
            if delta is not None:
                deltas.append(delta)
    for event in parser.close():
        delta = decoder.feed(event)
        if delta is not None:
            deltas.append(delta)
    return deltas


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


cut_points = st.lists(st.integers(min_value=0, max_value=10_000), max_size=40)


# ---------------------------------------------------------------------------------------------
# Claude: requests
# ---------------------------------------------------------------------------------------------


def test_claude_request_matches_the_reference_example() -> None:
    req = CLAUDE.build(
        "chat",
        {"messages": USER_HI, "max_tokens": 256},
        model=None,
        stream=False,
        base_url=CLAUDE_BASE,
        api_key=CLAUDE_KEY,
    )
    assert req.method == "POST"
    assert req.url == "https://api.anthropic.com/v1/messages"
    assert req.headers == {
        "x-api-key": CLAUDE_KEY,
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    assert req.body == (
        b'{"model":"claude-sonnet-4-5","max_tokens":256,'
        b'"messages":[{"role":"user","content":"Say hi"}]}'
    )
    assert CLAUDE_KEY not in repr(req)


def test_claude_stream_request_asks_for_sse() -> None:
    req = CLAUDE.build(
        "chat",
        {"messages": USER_HI, "stream": False},
        model="claude-haiku-4-5",
        stream=True,
        base_url="http://127.0.0.1:8080/",
        api_key=CLAUDE_KEY,
    )
    assert req.url == "http://127.0.0.1:8080/v1/messages"
    assert req.headers["accept"] == "text/event-stream"
    body = json.loads(req.body or b"")
    assert body["stream"] is True
    assert body["model"] == "claude-haiku-4-5"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({}, {"max_tokens": 1024}, id="default-max-tokens"),
        pytest.param({"max_tokens": 64}, {"max_tokens": 64}, id="max-tokens"),
        pytest.param({"max_completion_tokens": 99}, {"max_tokens": 99}, id="alias"),
        pytest.param(
            {"max_tokens": 5, "max_completion_tokens": 99}, {"max_tokens": 5}, id="max-tokens-wins"
        ),
        pytest.param({"max_tokens": None}, {"max_tokens": 1024}, id="none-is-default"),
        pytest.param({"stop": "END"}, {"stop_sequences": ["END"]}, id="stop-str"),
        pytest.param({"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}, id="stop-list"),
        pytest.param(
            {"temperature": 0.3, "top_p": 0.9, "top_k": 40},
            {"temperature": 0.3, "top_p": 0.9, "top_k": 40},
            id="sampling-passthrough",
        ),
        pytest.param(
            {"metadata": {"user_id": "u1"}, "tools": [{"name": "t", "input_schema": {}}]},
            {"metadata": {"user_id": "u1"}, "tools": [{"name": "t", "input_schema": {}}]},
            id="metadata-tools-passthrough",
        ),
        pytest.param({"model": "claude-opus-4-1"}, {"model": "claude-opus-4-1"}, id="model-param"),
    ],
)
def test_claude_parameters(params: dict[str, Any], expected: dict[str, Any]) -> None:
    body = claude_build({"messages": USER_HI, **params})
    for name, value in expected.items():
        assert body[name] == value
    assert "stop" not in body
    assert "max_completion_tokens" not in body
    assert "stream" not in body


@pytest.mark.parametrize(
    ("messages", "system", "turns"),
    [
        pytest.param(
            [{"role": "system", "content": "Be brief."}, *USER_HI],
            "Be brief.",
            [{"role": "user", "content": "Say hi"}],
            id="system-first",
        ),
        pytest.param(
            [
                {"role": "system", "content": "A"},
                {"role": "user", "content": "u1"},
                {"role": "assistant", "content": "a1"},
                {"role": "developer", "content": [{"type": "text", "text": "B"}]},
                {"role": "user", "content": "u2"},
            ],
            "A\n\nB",
            [
                {"role": "user", "content": "u1"},
                {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "u2"},
            ],
            id="system-anywhere-joined",
        ),
        pytest.param(
            [
                {"role": "user", "content": "one"},
                {"role": "system", "content": "S"},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
                {"role": "user", "content": "three"},
            ],
            "S",
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "one"},
                        {"type": "text", "text": "two"},
                        {"type": "text", "text": "three"},
                    ],
                }
            ],
            id="same-role-merged-across-system",
        ),
        pytest.param(
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "assistant", "content": "b"},
            ],
            None,
            [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
            ],
            id="assistant-merged",
        ),
        pytest.param(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                    ],
                }
            ],
            None,
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                    ],
                }
            ],
            id="openai-parts",
        ),
        pytest.param(
            [
                {"role": "user", "content": "run it"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
                },
            ],
            None,
            [
                {"role": "user", "content": "run it"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
                },
            ],
            id="native-blocks-pass-through",
        ),
    ],
)
def test_claude_messages(
    messages: list[dict[str, Any]], system: str | None, turns: list[dict[str, Any]]
) -> None:
    body = claude_build({"messages": messages})
    assert body.get("system") == system
    assert body["messages"] == turns


def test_claude_caller_system_is_combined_with_system_messages() -> None:
    messages = [{"role": "system", "content": "B"}, *USER_HI]
    assert claude_build({"messages": messages, "system": "A"})["system"] == "A\n\nB"
    blocks = [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}]
    assert claude_build({"messages": messages, "system": blocks})["system"] == [
        *blocks,
        {"type": "text", "text": "B"},
    ]
    assert claude_build({"messages": USER_HI, "system": "A"})["system"] == "A"


def test_claude_betas_become_a_header() -> None:
    req = CLAUDE.build(
        "chat",
        {"messages": USER_HI, "betas": ["a-1", "b-2"]},
        model=None,
        stream=False,
        base_url=CLAUDE_BASE,
        api_key=CLAUDE_KEY,
    )
    assert req.headers["anthropic-beta"] == "a-1,b-2"
    assert "betas" not in json.loads(req.body or b"")


@given(
    st.lists(
        st.tuples(st.sampled_from(["system", "user", "assistant"]), st.text(max_size=8)),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=150, deadline=None)
def test_claude_turns_always_alternate(pairs: list[tuple[str, str]]) -> None:
    messages = [{"role": role, "content": text} for role, text in pairs]
    if all(role == "system" for role, _ in pairs):
        with pytest.raises(InvalidRequestError):
            claude_build({"messages": messages})
        return
    body = claude_build({"messages": messages})
    roles = [turn["role"] for turn in body["messages"]]
    assert all(role in ("user", "assistant") for role in roles)
    assert all(a != b for a, b in itertools.pairwise(roles))
    texts = [
        block["text"] if isinstance(block, dict) else block
        for turn in body["messages"]
        for block in (turn["content"] if isinstance(turn["content"], list) else [turn["content"]])
    ]
    assert texts == [text for role, text in pairs if role != "system"]


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="no-messages"),
        pytest.param({"messages": []}, id="empty"),
        pytest.param({"messages": "hi"}, id="string"),
        pytest.param({"messages": [1]}, id="not-an-object"),
        pytest.param({"messages": [{"role": "system", "content": "only"}]}, id="only-system"),
        pytest.param({"messages": [{"role": "tool", "content": "x"}]}, id="tool-role"),
        pytest.param({"messages": [{"content": "x"}]}, id="no-role"),
        pytest.param({"messages": [{"role": ["user"], "content": "x"}]}, id="role-list"),
        pytest.param({"messages": [{"role": "user"}]}, id="no-content"),
        pytest.param({"messages": [{"role": "user", "content": 5}]}, id="content-int"),
        pytest.param({"messages": [{"role": "user", "content": [5]}]}, id="part-int"),
        pytest.param(
            {"messages": [{"role": "system", "content": [{"type": "image_url"}]}, *USER_HI]},
            id="system-image",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            id="image-without-url",
        ),
        pytest.param({"messages": USER_HI, "max_tokens": 0}, id="max-tokens-zero"),
        pytest.param({"messages": USER_HI, "max_tokens": "5"}, id="max-tokens-str"),
        pytest.param({"messages": USER_HI, "max_tokens": True}, id="max-tokens-bool"),
        pytest.param({"messages": USER_HI, "stop": 3}, id="stop-int"),
        pytest.param({"messages": USER_HI, "temperature": float("nan")}, id="nan"),
        pytest.param({"messages": USER_HI, "metadata": {1, 2}}, id="not-json"),
        pytest.param(
            {"messages": [{"role": "system", "content": "s"}, *USER_HI], "system": 7},
            id="system-int",
        ),
    ],
)
def test_claude_bad_requests(params: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as info:
        claude_build(params)
    assert info.value.provider == "claude"
    assert str(info.value).startswith("claude: ")
    assert CLAUDE_KEY not in str(info.value)


def test_claude_has_no_embeddings() -> None:
    assert CLAUDE.endpoints == frozenset({"chat"})
    assert CLAUDE.default_models == {"chat": "claude-sonnet-4-5"}
    with pytest.raises(UnsupportedError, match="Voyage") as info:
        CLAUDE.build(
            "embed", {"input": ["a"]}, model=None, stream=False, base_url=CLAUDE_BASE, api_key="k"
        )
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, KeymuxError)
    assert info.value.provider == "claude"


def test_claude_probe_and_estimate() -> None:
    req = CLAUDE.probe(base_url=CLAUDE_BASE, api_key=CLAUDE_KEY)
    assert (req.method, req.url, req.body) == ("GET", f"{CLAUDE_BASE}/v1/models?limit=1", None)
    assert req.headers["x-api-key"] == CLAUDE_KEY
    assert req.headers["anthropic-version"] == "2023-06-01"
    messages = [{"role": "system", "content": "abcd"}, {"role": "user", "content": "x" * 9}]
    # ceil(13 / 4) + 2 * 4 + default 1024
    assert CLAUDE.estimate_tokens("chat", {"messages": messages}) == 4 + 8 + 1024
    assert CLAUDE.estimate_tokens("chat", {"messages": messages, "max_tokens": 10}) == 22
    assert CLAUDE.estimate_tokens("chat", {"messages": "garbage", "max_tokens": -1}) == 1024


# ---------------------------------------------------------------------------------------------
# Claude: answers
# ---------------------------------------------------------------------------------------------

CLAUDE_MESSAGE = {
    "id": "msg_01AbC",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hi!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    },
}


def test_claude_parse_reference_example() -> None:
    parsed = CLAUDE.parse("chat", CLAUDE_MESSAGE)
    assert parsed.text == "Hi!"
    assert parsed.model == "claude-sonnet-4-5-20250929"
    assert parsed.finish_reason == "end_turn"
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (10, 5)
    assert parsed.embeddings is None


def test_claude_parse_counts_cache_tokens_and_skips_non_text_blocks() -> None:
    body = {
        **CLAUDE_MESSAGE,
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "A"},
            {"type": "tool_use", "id": "t", "name": "f", "input": {}},
            {"type": "text", "text": "B"},
        ],
        "usage": {
            "input_tokens": 3,
            "output_tokens": 7,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000,
        },
        "stop_reason": "tool_use",
    }
    parsed = CLAUDE.parse("chat", body)
    assert parsed.text == "AB"
    assert parsed.usage.input_tokens == 1103
    assert parsed.finish_reason == "tool_use"
    no_cache = {**CLAUDE_MESSAGE, "usage": {"input_tokens": 2, "output_tokens": 1}}
    assert CLAUDE.parse("chat", no_cache).usage.input_tokens == 2


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(None, id="null"),
        pytest.param([], id="list"),
        pytest.param("Hi!", id="string"),
        pytest.param({}, id="empty"),
        pytest.param({k: v for k, v in CLAUDE_MESSAGE.items() if k != "content"}, id="no-content"),
        pytest.param({**CLAUDE_MESSAGE, "content": "Hi!"}, id="content-str"),
        pytest.param({k: v for k, v in CLAUDE_MESSAGE.items() if k != "usage"}, id="no-usage"),
        pytest.param({**CLAUDE_MESSAGE, "usage": {"input_tokens": 1}}, id="no-output-tokens"),
        pytest.param({**CLAUDE_MESSAGE, "usage": {"output_tokens": 1}}, id="no-input-tokens"),
        pytest.param({"type": "error", "error": {"type": "api_error"}}, id="error-in-200"),
    ],
)
def test_claude_parse_malformed(body: Any) -> None:
    with pytest.raises(ValueError, match="claude"):
        CLAUDE.parse("chat", body)


CLAUDE_SSE = (
    "event: message_start\n"
    'data: {"type":"message_start","message":{"id":"msg_01AbC","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}\n'
    "\n"
    "event: content_block_start\n"
    'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n'
    "\n"
    "event: ping\n"
    'data: {"type":"ping"}\n'
    "\n"
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi!"}}\n'
    "\n"
    "event: content_block_stop\n"
    'data: {"type":"content_block_stop","index":0}\n'
    "\n"
    "event: message_delta\n"
    'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5}}\n'
    "\n"
    "event: message_stop\n"
    'data: {"type":"message_stop"}\n'
    "\n"
)
CLAUDE_SSE_ERROR = (
    "event: error\n"
    'data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n'
    "\n"
)


def claude_delta(text: str, index: int = 0) -> str:
    delta = {"type": "text_delta", "text": text}
    data = {"type": "content_block_delta", "index": index, "delta": delta}
    return f"event: content_block_delta\ndata: {json.dumps(data)}\n\n"


@given(cuts=cut_points, crlf=st.booleans())
@settings(max_examples=200, deadline=None)
def test_claude_stream_reference_example_in_any_split(cuts: list[int], crlf: bool) -> None:
    raw = CLAUDE_SSE.replace("\n", "\r\n") if crlf else CLAUDE_SSE
    decoder = CLAUDE.stream_decoder()
    assert run_stream(decoder, split_at(raw.encode(), cuts)) == ["Hi!"]
    assert decoder.done is True
    result = decoder.result()
    assert isinstance(result, Parsed)
    assert result.text == "Hi!"
    assert result.model == "claude-sonnet-4-5-20250929"
    assert result.finish_reason == "end_turn"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (10, 5)


@given(cuts=cut_points, texts=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=6))
@settings(max_examples=100, deadline=None)
def test_claude_stream_unicode_deltas_in_any_split(cuts: list[int], texts: list[str]) -> None:
    head, tail = CLAUDE_SSE.split("event: content_block_delta", 1)
    tail = "event: content_block_delta" + tail
    body = head + "".join(claude_delta(t) for t in texts) + tail.split("\n\n", 1)[1]
    decoder = CLAUDE.stream_decoder()
    deltas = run_stream(decoder, split_at(body.encode(), cuts))
    assert "".join(deltas) == "".join(texts)
    assert decoder.result().text == "".join(texts)
    assert decoder.done


def test_claude_stream_ignores_other_deltas_pings_and_unknown_events() -> None:
    events = "".join(
        [
            CLAUDE_SSE.split("event: content_block_start")[0],
            "event: content_block_delta\n"
            'data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"x"}}\n\n',
            "event: content_block_delta\n"
            'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{"}}\n\n',
            "event: some_future_event\ndata: not json at all\n\n",
            "event: ping\ndata: {}\n\n",
            claude_delta("ok"),
            "event: message_delta\n"
            'data: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":3}}\n\n',
            "event: message_delta\n"
            'data: {"type":"message_delta","delta":{},"usage":{"output_tokens":9,"input_tokens":12,"cache_read_input_tokens":4}}\n\n',
        ]
    )
    decoder = CLAUDE.stream_decoder()
    assert run_stream(decoder, [events.encode()]) == ["ok"]
    assert decoder.done is False  # no message_stop: the stream was cut
    result = decoder.result()
    assert result.text == "ok"
    assert result.finish_reason == "max_tokens"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (16, 9)  # cumulative


@pytest.mark.parametrize(
    ("error_type", "retryable"),
    [("overloaded_error", True), ("api_error", True), ("invalid_request_error", False)],
)
def test_claude_stream_error_event(error_type: str, retryable: bool) -> None:
    head = CLAUDE_SSE.split("event: content_block_stop")[0]
    error = CLAUDE_SSE_ERROR.replace("overloaded_error", error_type)
    decoder = CLAUDE.stream_decoder()
    with pytest.raises(StreamFailure) as info:
        run_stream(decoder, [head.encode(), error.encode()])
    assert info.value.error_type == error_type
    assert info.value.retryable is retryable
    assert info.value.message == "Overloaded"
    assert decoder.result().text == "Hi!"  # what arrived before the error


def test_claude_stream_reference_error_example() -> None:
    with pytest.raises(StreamFailure, match="Overloaded") as info:
        run_stream(CLAUDE.stream_decoder(), [CLAUDE_SSE_ERROR.encode()])
    assert info.value.retryable is True


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("event: content_block_delta\ndata: {not json\n\n", id="bad-json"),
        pytest.param("event: message_delta\ndata: [1, 2]\n\n", id="not-object"),
        pytest.param("data: nonsense\n\n", id="unnamed-garbage"),
    ],
)
def test_claude_stream_garbage(raw: str) -> None:
    with pytest.raises(ValueError, match="claude stream"):
        run_stream(CLAUDE.stream_decoder(), [raw.encode()])


# ---------------------------------------------------------------------------------------------
# Claude: errors and headers
# ---------------------------------------------------------------------------------------------

SPEND_CAP = {
    "type": "error",
    "error": {
        "type": "rate_limit_error",
        "message": "You have reached your API usage limits: … You will regain access on "
        "2026-09-01 at 00:00 UTC.",
        "details": {"error_code": "enforced_spend_limit_reached"},
    },
    "request_id": "req_018EeWyXxfu5pfWkrYcMdjWG",
}


def anthropic_error(error_type: str, message: str) -> bytes:
    body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "r"}
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind", "retry_after", "error_type", "code"),
    [
        pytest.param(
            429,
            {"retry-after": "30"},
            anthropic_error("rate_limit_error", "Number of request tokens has exceeded"),
            Kind.RATE_LIMITED,
            30.0,
            "rate_limit_error",
            None,
            id="429-rate-limit",
        ),
        pytest.param(
            429,
            {"Retry-After": "2.5"},
            anthropic_error("rate_limit_error", "slow down"),
            Kind.RATE_LIMITED,
            2.5,
            "rate_limit_error",
            None,
            id="429-mixed-case-header",
        ),
        pytest.param(
            429,
            {"retry-after": "Fri, 21 Aug 2026 12:40:45 GMT"},
            anthropic_error("rate_limit_error", "slow down"),
            Kind.RATE_LIMITED,
            45.0,
            "rate_limit_error",
            None,
            id="429-http-date",
        ),
        pytest.param(
            429,
            {},
            anthropic_error("rate_limit_error", "acceleration limit"),
            Kind.RATE_LIMITED,
            None,
            "rate_limit_error",
            None,
            id="429-no-retry-after",
        ),
        pytest.param(
            429,
            {},
            json.dumps(SPEND_CAP).encode(),
            Kind.QUOTA_SPENT,
            datetime(2026, 9, 1, tzinfo=UTC).timestamp() - NOW,
            "rate_limit_error",
            "enforced_spend_limit_reached",
            id="429-spend-cap",
        ),
        pytest.param(
            402,
            {},
            anthropic_error("billing_error", "payment failed"),
            Kind.QUOTA_SPENT,
            None,
            "billing_error",
            None,
            id="402-billing",
        ),
        pytest.param(
            400,
            {},
            anthropic_error(
                "invalid_request_error",
                "You have reached your specified API usage limits. You will regain access on "
                "2026-09-01 at 00:00 UTC.",
            ),
            Kind.QUOTA_SPENT,
            None,
            "invalid_request_error",
            None,
            id="400-specified-usage-limits",
        ),
        pytest.param(
            400,
            {},
            anthropic_error(
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API. Please go to "
                "Plans & Billing to upgrade or purchase credits.",
            ),
            Kind.QUOTA_SPENT,
            None,
            "invalid_request_error",
            None,
            id="400-credit-balance",
        ),
        pytest.param(
            400,
            {},
            anthropic_error("invalid_request_error", "messages: field required"),
            Kind.BAD_REQUEST,
            None,
            "invalid_request_error",
            None,
            id="400-bad-request",
        ),
        pytest.param(
            401,
            {},
            anthropic_error("authentication_error", "invalid x-api-key"),
            Kind.KEY_INVALID,
            None,
            "authentication_error",
            None,
            id="401",
        ),
        pytest.param(
            403,
            {},
            anthropic_error("permission_error", "no access to model"),
            Kind.KEY_INVALID,
            None,
            "permission_error",
            None,
            id="403",
        ),
        pytest.param(
            404,
            {},
            anthropic_error("not_found_error", "model: nope"),
            Kind.BAD_REQUEST,
            None,
            "not_found_error",
            None,
            id="404",
        ),
        pytest.param(
            409,
            {},
            anthropic_error("conflict_error", "conflict"),
            Kind.SERVER_ERROR,
            None,
            "conflict_error",
            None,
            id="409",
        ),
        pytest.param(408, {}, b"", Kind.SERVER_ERROR, None, None, None, id="408-empty"),
        pytest.param(
            413,
            {},
            anthropic_error("request_too_large", "Request exceeds the maximum size"),
            Kind.TOO_LARGE,
            None,
            "request_too_large",
            None,
            id="413",
        ),
        pytest.param(
            413,
            {},
            b"<html><body>413 Request Entity Too Large</body></html>",
            Kind.TOO_LARGE,
            None,
            None,
            None,
            id="413-cloudflare-html",
        ),
        pytest.param(
            422,
            {},
            anthropic_error("invalid_request_error", "bad"),
            Kind.BAD_REQUEST,
            None,
            "invalid_request_error",
            None,
            id="422",
        ),
        pytest.param(
            500,
            {},
            anthropic_error("api_error", "Internal server error"),
            Kind.SERVER_ERROR,
            None,
            "api_error",
            None,
            id="500",
        ),
        pytest.param(
            504,
            {},
            anthropic_error("timeout_error", "timeout"),
            Kind.SERVER_ERROR,
            None,
            "timeout_error",
            None,
            id="504",
        ),
        pytest.param(
            529,
            {},
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            Kind.OVERLOADED,
            None,
            "overloaded_error",
            None,
            id="529-reference",
        ),
        pytest.param(
            529, {"retry-after": "3"}, b"", Kind.OVERLOADED, 3.0, None, None, id="529-empty"
        ),
        pytest.param(
            502, {}, b"<html>Bad gateway</html>", Kind.SERVER_ERROR, None, None, None, id="502"
        ),
        pytest.param(
            503, {}, b"upstream connect error", Kind.SERVER_ERROR, None, None, None, id="503"
        ),
        pytest.param(418, {}, b"\xff\xfe", Kind.BAD_REQUEST, None, None, None, id="418-bytes"),
    ],
)
def test_claude_classify(
    status: int,
    headers: dict[str, str],
    body: bytes,
    kind: Kind,
    retry_after: float | None,
    error_type: str | None,
    code: str | None,
) -> None:
    outcome = classify_claude(status, headers, body, NOW)
    assert outcome.kind is kind
    assert outcome.status == status
    assert outcome.retry_after == pytest.approx(retry_after)
    assert outcome.error_type == error_type
    assert outcome.code == code
    assert outcome.message
    if error_type is not None:
        assert outcome.message == json.loads(body)["error"]["message"]
    # the protocol method (which reads the wall clock itself) agrees on the kind
    assert CLAUDE.classify(status, headers, body, WALL).kind is kind


def _emulator_claude_429(limit: int, wait: float, remaining: int = 0) -> tuple[Any, bytes]:
    """A 429 as the emulator's Anthropic dialect writes it, with its rate headers."""
    from keymux.emulator._claude import ClaudeDialect
    from keymux.emulator._dialect import Ctx
    from keymux.emulator._limits import Snapshot, Usage, Verdict

    dialect = ClaudeDialect()
    ctx = Ctx(0, 0.0, NOW)
    ctx.model = "claude-sonnet-4-5"
    reply = dialect.rate_limited(Verdict("rpm", limit, limit, 1, wait), ctx)
    headers = dict(reply.headers)
    headers.update(dialect.rate_headers(Snapshot(Usage(limit, remaining, wait), None, None), NOW))
    return headers, json.dumps(reply.body).encode()


def test_claude_classify_reports_the_limit_and_prefers_the_finer_reset() -> None:
    headers, body = _emulator_claude_429(20, 0.2345)
    assert headers["retry-after"] == "1"
    outcome = classify_claude(429, headers, body, NOW)
    assert outcome.kind is Kind.RATE_LIMITED
    assert (outcome.limit, outcome.dimension, outcome.period) == (20.0, "requests", 60.0)
    # the spent dimension's millisecond reset, not the whole second
    assert outcome.retry_after == pytest.approx(0.235)
    # a reset of a dimension that is not spent says nothing about this wait
    headers, body = _emulator_claude_429(20, 0.2345, remaining=3)
    assert classify_claude(429, headers, body, NOW).retry_after == 1.0
    # Anthropic's own wording, tokens
    body = anthropic_error(
        "rate_limit_error",
        "This request would exceed the rate limit for your organization (abc) of 40,000 input "
        "tokens per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
    )
    outcome = classify_claude(429, {"retry-after": "12"}, body, NOW)
    assert (outcome.limit, outcome.dimension, outcome.period) == (40000.0, "tokens", 60.0)
    assert outcome.retry_after == 12.0


def test_claude_classify_messages() -> None:
    assert classify_claude(502, {}, b"", NOW).message == "HTTP 502 from Anthropic"
    html = b"<html>\n  <h1>502   Bad Gateway</h1>\n</html>" + b"x" * 1000
    message = classify_claude(502, {}, html, NOW).message
    assert message.startswith("<html> <h1>502 Bad Gateway</h1>")
    assert len(message) <= 200
    echoed = anthropic_error("authentication_error", f"invalid x-api-key {CLAUDE_KEY}")
    outcome = classify_claude(401, {}, echoed, NOW)
    assert CLAUDE_KEY not in outcome.message
    assert outcome.message.endswith("...fXYZ")


def test_claude_classify_accepts_aiohttp_headers() -> None:
    headers = CIMultiDictProxy(CIMultiDict({"Retry-After": "7"}))
    assert classify_claude(429, headers, b"", NOW).retry_after == 7.0


RATE_HEADERS = {
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "49",
    "anthropic-ratelimit-requests-reset": "2026-08-21T12:40:59Z",
    "anthropic-ratelimit-tokens-limit": "90000",
    "anthropic-ratelimit-tokens-remaining": "89000",
    "anthropic-ratelimit-tokens-reset": "2026-08-21T12:40:01.5Z",
    "anthropic-ratelimit-input-tokens-limit": "40000",
    "anthropic-ratelimit-input-tokens-remaining": "39000",
    "anthropic-ratelimit-input-tokens-reset": "2026-08-21T12:40:30Z",
    "request-id": "req_1",
}


def test_claude_rate_snapshot() -> None:
    snap = CLAUDE.rate_snapshot(RATE_HEADERS, NOW)
    assert snap == RateSnapshot(
        requests=LimitInfo(limit=50.0, remaining=49.0, reset_after=59.0),
        tokens=LimitInfo(limit=90000.0, remaining=89000.0, reset_after=1.5),
        requests_window="minute",
    )


def test_claude_rate_snapshot_falls_back_to_input_tokens() -> None:
    headers = {k: v for k, v in RATE_HEADERS.items() if "-tokens-" not in k or "input" in k}
    snap = CLAUDE.rate_snapshot(headers, NOW)
    assert snap is not None
    assert snap.tokens == LimitInfo(limit=40000.0, remaining=39000.0, reset_after=30.0)


def test_claude_rate_snapshot_edge_cases() -> None:
    assert CLAUDE.rate_snapshot({}, NOW) is None
    assert CLAUDE.rate_snapshot({"request-id": "r", "retry-after": "3"}, NOW) is None
    past = {"Anthropic-RateLimit-Requests-Reset": "2026-08-21T12:00:00+00:00"}
    snap = CLAUDE.rate_snapshot(past, NOW)
    assert snap == RateSnapshot(requests=LimitInfo(None, None, 0.0), tokens=None)
    junk = {"anthropic-ratelimit-tokens-remaining": "lots", "anthropic-ratelimit-tokens-reset": "x"}
    assert CLAUDE.rate_snapshot(junk, NOW) is None
    multidict = CIMultiDictProxy(CIMultiDict(RATE_HEADERS))
    assert CLAUDE.rate_snapshot(multidict, NOW) == CLAUDE.rate_snapshot(RATE_HEADERS, NOW)


# ---------------------------------------------------------------------------------------------
# Gemini: requests
# ---------------------------------------------------------------------------------------------


def test_gemini_request_matches_the_reference_example() -> None:
    req, body = gemini_build({"messages": USER_HI, "max_tokens": 64, "temperature": 0.7})
    assert req.method == "POST"
    assert req.url == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert req.headers == {
        "x-goog-api-key": GEMINI_KEY,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "Say hi"}]}],
        "generationConfig": {"maxOutputTokens": 64, "temperature": 0.7},
    }


@pytest.mark.parametrize(
    ("endpoint", "stream", "model", "url_tail"),
    [
        ("chat", False, None, "/v1beta/models/gemini-2.5-flash:generateContent"),
        ("chat", True, None, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
        ("chat", False, "models/gemini-2.5-pro", "/v1beta/models/gemini-2.5-pro:generateContent"),
        ("chat", False, "gemini-2.5-pro", "/v1beta/models/gemini-2.5-pro:generateContent"),
        ("chat", False, "tunedModels/my-1", "/v1beta/tunedModels/my-1:generateContent"),
        ("chat", False, "x?key=1#y", "/v1beta/models/x%3Fkey%3D1%23y:generateContent"),
        ("embed", False, None, "/v1beta/models/gemini-embedding-001:batchEmbedContents"),
        ("embed", False, "models/text-embedding-004", "/models/text-embedding-004:batchEmbed"),
    ],
)
def test_gemini_urls_never_carry_the_key(
    endpoint: str, stream: bool, model: str | None, url_tail: str
) -> None:
    params = {"input": ["a"]} if endpoint == "embed" else {"messages": USER_HI}
    req, _ = gemini_build(params, endpoint=endpoint, stream=stream, model=model)
    assert url_tail in req.url
    assert req.url.startswith(GEMINI_BASE + "/v1beta/")
    assert GEMINI_KEY not in req.url
    assert "key=" not in req.url
    assert req.headers["x-goog-api-key"] == GEMINI_KEY
    assert GEMINI_KEY not in repr(req)
    if stream:
        assert req.headers["accept"] == "text/event-stream"
    probe = GEMINI.probe(base_url=GEMINI_BASE + "/", api_key=GEMINI_KEY)
    assert probe.url == f"{GEMINI_BASE}/v1beta/models?pageSize=1"
    assert probe.headers == {"x-goog-api-key": GEMINI_KEY, "user-agent": USER_AGENT}
    assert probe.method == "GET"


@pytest.mark.parametrize(
    ("messages", "system", "contents"),
    [
        pytest.param(
            [{"role": "system", "content": "Be brief."}, *USER_HI],
            "Be brief.",
            [{"role": "user", "parts": [{"text": "Say hi"}]}],
            id="system",
        ),
        pytest.param(
            [
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"},
                {"role": "system", "content": [{"type": "text", "text": "S1"}]},
                {"role": "developer", "content": "S2"},
                {"role": "user", "content": [{"type": "text", "text": "q2"}]},
            ],
            "S1\n\nS2",
            [
                {"role": "user", "parts": [{"text": "q1"}]},
                {"role": "model", "parts": [{"text": "a1"}]},
                {"role": "user", "parts": [{"text": "q2"}]},
            ],
            id="roles-and-system-anywhere",
        ),
        pytest.param(
            [
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "text", "text": "b"}, "c"]},
                {"role": "assistant", "content": "x"},
                {"role": "model", "content": "y"},
            ],
            None,
            [
                {"role": "user", "parts": [{"text": "a"}, {"text": "b"}, {"text": "c"}]},
                {"role": "model", "parts": [{"text": "x"}, {"text": "y"}]},
            ],
            id="merged",
        ),
        pytest.param(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
                        {"type": "image_url", "image_url": "gs://bucket/cat.png"},
                        {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
                    ],
                }
            ],
            None,
            [
                {
                    "role": "user",
                    "parts": [
                        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}},
                        {"fileData": {"fileUri": "gs://bucket/cat.png"}},
                        {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
                    ],
                }
            ],
            id="images-and-native-parts",
        ),
    ],
)
def test_gemini_messages(
    messages: list[dict[str, Any]], system: str | None, contents: list[dict[str, Any]]
) -> None:
    _, body = gemini_build({"messages": messages})
    if system is None:
        assert "systemInstruction" not in body
    else:
        assert body["systemInstruction"] == {"parts": [{"text": system}]}
    assert body["contents"] == contents


@pytest.mark.parametrize(
    ("params", "config"),
    [
        pytest.param({}, None, id="none"),
        pytest.param(
            {"temperature": 0.2, "top_p": 0.9, "top_k": 20},
            {"temperature": 0.2, "topP": 0.9, "topK": 20},
            id="sampling",
        ),
        pytest.param({"max_tokens": 100}, {"maxOutputTokens": 100}, id="max-tokens"),
        pytest.param({"max_completion_tokens": 50}, {"maxOutputTokens": 50}, id="alias"),
        pytest.param(
            {"max_completion_tokens": 50, "max_tokens": 7}, {"maxOutputTokens": 7}, id="max-wins"
        ),
        pytest.param({"stop": "END"}, {"stopSequences": ["END"]}, id="stop-str"),
        pytest.param({"stop": ["a", "b"]}, {"stopSequences": ["a", "b"]}, id="stop-list"),
        pytest.param({"n": 2}, {"candidateCount": 2}, id="n"),
        pytest.param(
            {"generationConfig": {"temperature": 1.0, "thinkingConfig": {"thinkingBudget": 0}}},
            {"temperature": 1.0, "thinkingConfig": {"thinkingBudget": 0}},
            id="caller-config",
        ),
        pytest.param(
            {"generation_config": {"temperature": 1.0, "topK": 3}, "temperature": 0.1},
            {"temperature": 0.1, "topK": 3},
            id="snake-config-merged-explicit-wins",
        ),
        pytest.param(
            {"generationConfig": {"stopSequences": "X"}}, {"stopSequences": ["X"]}, id="config-stop"
        ),
        pytest.param(
            {"response_format": {"type": "json_object"}},
            {"responseMimeType": "application/json"},
            id="json-object",
        ),
        pytest.param(
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "x"}}}},
            {"responseMimeType": "application/json", "responseJsonSchema": {"type": "x"}},
            id="json-schema",
        ),
        pytest.param({"response_format": {"type": "text"}}, None, id="text-format"),
        pytest.param(
            {"thinking_config": {"thinkingBudget": 128}, "seed": 4},
            {"thinkingConfig": {"thinkingBudget": 128}, "seed": 4},
            id="native-names",
        ),
    ],
)
def test_gemini_generation_config(params: dict[str, Any], config: dict[str, Any] | None) -> None:
    given_config = params.get("generationConfig")
    snapshot = json.dumps(given_config)
    _, body = gemini_build({"messages": USER_HI, **params})
    assert body.get("generationConfig") == config
    for name in ("temperature", "top_p", "max_tokens", "stop", "n", "generation_config"):
        assert name not in body
    assert json.dumps(given_config) == snapshot  # the caller's dict is not modified


def test_gemini_top_level_passthrough() -> None:
    tools = [{"functionDeclarations": [{"name": "f"}]}]
    _, body = gemini_build(
        {
            "messages": USER_HI,
            "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}],
            "tools": tools,
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
            "cached_content": "cachedContents/abc",
        }
    )
    assert body["safetySettings"] == [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]
    assert body["tools"] == tools
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert body["cachedContent"] == "cachedContents/abc"
    assert "generationConfig" not in body


def test_gemini_caller_system_instruction_is_combined() -> None:
    messages = [{"role": "system", "content": "B"}, *USER_HI]
    _, body = gemini_build({"messages": messages, "systemInstruction": "A"})
    assert body["systemInstruction"] == {"parts": [{"text": "A"}, {"text": "B"}]}
    _, body = gemini_build({"messages": USER_HI, "system_instruction": {"parts": [{"text": "Z"}]}})
    assert body["systemInstruction"] == {"parts": [{"text": "Z"}]}


@pytest.mark.parametrize(
    ("params", "requests"),
    [
        pytest.param(
            {"input": "hello"},
            [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello"}]}}],
            id="one-string",
        ),
        pytest.param(
            {"input": ["hello", "world"]},
            [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello"}]}},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "world"}]}},
            ],
            id="reference-batch",
        ),
        pytest.param(
            {"input": ["q"], "dimensions": 768, "task_type": "RETRIEVAL_QUERY", "title": "T"},
            [
                {
                    "model": "models/gemini-embedding-001",
                    "content": {"parts": [{"text": "q"}]},
                    "outputDimensionality": 768,
                    "taskType": "RETRIEVAL_QUERY",
                    "title": "T",
                }
            ],
            id="options",
        ),
        pytest.param(
            {"input": ["q"], "taskType": "CLUSTERING", "encoding_format": "float"},
            [
                {
                    "model": "models/gemini-embedding-001",
                    "content": {"parts": [{"text": "q"}]},
                    "taskType": "CLUSTERING",
                }
            ],
            id="camel-task-type",
        ),
    ],
)
def test_gemini_embed_body(params: dict[str, Any], requests: list[dict[str, Any]]) -> None:
    _, body = gemini_build(params, endpoint="embed")
    assert body == {"requests": requests}


def test_gemini_embed_model_matches_url() -> None:
    req, body = gemini_build({"input": ["a", "b"]}, endpoint="embed", model="text-embedding-004")
    assert req.url.endswith("/v1beta/models/text-embedding-004:batchEmbedContents")
    assert {r["model"] for r in body["requests"]} == {"models/text-embedding-004"}


@pytest.mark.parametrize(
    ("endpoint", "params"),
    [
        pytest.param("chat", {}, id="no-messages"),
        pytest.param("chat", {"messages": []}, id="empty"),
        pytest.param("chat", {"messages": [{"role": "system", "content": "s"}]}, id="only-system"),
        pytest.param("chat", {"messages": [{"role": "tool", "content": "x"}]}, id="tool-role"),
        pytest.param("chat", {"messages": [{"role": {}, "content": "x"}]}, id="role-dict"),
        pytest.param(
            "chat", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}, id="text-none"
        ),
        pytest.param("chat", {"messages": [{"role": "user", "content": None}]}, id="none"),
        pytest.param("chat", {"messages": [{"role": "user", "content": {"a": 1}}]}, id="dict"),
        pytest.param(
            "chat",
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            id="unsupported-part",
        ),
        pytest.param(
            "chat",
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
            id="image-relative-url",
        ),
        pytest.param(
            "chat",
            {"messages": [{"role": "system", "content": [{"inlineData": {}}]}, *USER_HI]},
            id="system-non-text",
        ),
        pytest.param("chat", {"messages": USER_HI, "stop": [1]}, id="stop-ints"),
        pytest.param("chat", {"messages": USER_HI, "generationConfig": "hot"}, id="config-str"),
        pytest.param("chat", {"messages": USER_HI, "systemInstruction": 3}, id="instruction-int"),
        pytest.param(
            "chat", {"messages": USER_HI, "response_format": {"type": "xml"}}, id="format"
        ),
        pytest.param(
            "chat",
            {"messages": USER_HI, "response_format": {"type": "json_schema"}},
            id="format-no-schema",
        ),
        pytest.param("chat", {"messages": USER_HI, "temperature": float("inf")}, id="inf"),
        pytest.param("embed", {}, id="embed-no-input"),
        pytest.param("embed", {"input": []}, id="embed-empty"),
        pytest.param("embed", {"input": [1, 2]}, id="embed-tokens"),
        pytest.param("embed", {"input": ["a"], "encoding_format": "base64"}, id="embed-base64"),
        pytest.param("chat", {"messages": USER_HI, "model": "  "}, id="blank-model"),
    ],
)
def test_gemini_bad_requests(endpoint: str, params: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as info:
        gemini_build(params, endpoint=endpoint)
    assert info.value.provider == "gemini"
    assert str(info.value).startswith("gemini: ")


def test_gemini_unsupported_endpoints() -> None:
    assert GEMINI.endpoints == frozenset({"chat", "embed"})
    assert GEMINI.default_models == {"chat": "gemini-2.5-flash", "embed": "gemini-embedding-001"}
    with pytest.raises(UnsupportedError):
        gemini_build({"input": "a"}, endpoint="embed", stream=True)
    with pytest.raises(UnsupportedError):
        gemini_build({"input": "a"}, endpoint="images")


def test_gemini_estimate_tokens() -> None:
    messages = [{"role": "user", "content": "x" * 8}]
    assert GEMINI.estimate_tokens("chat", {"messages": messages}) == 2 + 4 + 256
    assert GEMINI.estimate_tokens("chat", {"messages": messages, "max_tokens": 10}) == 16
    config = {"messages": messages, "generationConfig": {"maxOutputTokens": 20}}
    assert GEMINI.estimate_tokens("chat", config) == 26
    assert GEMINI.estimate_tokens("chat", {"messages": messages, "n": 3}) == 6 + 3 * 256
    assert GEMINI.estimate_tokens("embed", {"input": ["abcde", "xy"]}) == 3
    assert GEMINI.estimate_tokens("embed", {"input": "abcd"}) == 1


# ---------------------------------------------------------------------------------------------
# Gemini: answers
# ---------------------------------------------------------------------------------------------

GEMINI_RESPONSE = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "Hi!"}]},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 3,
        "candidatesTokenCount": 2,
        "totalTokenCount": 5,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 3}],
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "x7Abc123",
}


def test_gemini_parse_reference_example() -> None:
    parsed = GEMINI.parse("chat", GEMINI_RESPONSE)
    assert parsed.text == "Hi!"
    assert parsed.model == "gemini-2.5-flash"
    assert parsed.finish_reason == "STOP"
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (3, 2)


def test_gemini_parse_thinking_model() -> None:
    body = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "pondering", "thought": True}, {"text": "4"}, {"text": "2"}],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 30,
            "totalTokenCount": 42,
        },
        "modelVersion": "gemini-2.5-pro",
    }
    parsed = GEMINI.parse("chat", body)
    assert parsed.text == "42"
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (10, 32)


@pytest.mark.parametrize(
    ("body", "text", "finish"),
    [
        pytest.param(
            {
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
                "modelVersion": "gemini-2.5-flash",
            },
            "",
            "SAFETY",
            id="prompt-blocked",
        ),
        pytest.param(
            {"candidates": [], "promptFeedback": {"blockReason": "OTHER"}},
            "",
            "OTHER",
            id="blocked-empty-candidates",
        ),
        pytest.param(
            {"candidates": [{"finishReason": "SAFETY", "index": 0}]},
            "",
            "SAFETY",
            id="candidate-without-content",
        ),
        pytest.param(
            {"candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS"}]},
            "",
            "MAX_TOKENS",
            id="thinking-spent-all-tokens",
        ),
        pytest.param(
            {
                "candidates": [
                    {"content": {"parts": [{"text": "second"}]}, "index": 1},
                    {"content": {"parts": [{"text": "first"}]}, "index": 0},
                ]
            },
            "first",
            None,
            id="candidate-zero",
        ),
    ],
)
def test_gemini_parse_edge_answers(body: dict[str, Any], text: str, finish: str | None) -> None:
    parsed = GEMINI.parse("chat", body)
    assert parsed.text == text
    assert parsed.finish_reason == finish


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(None, id="null"),
        pytest.param([GEMINI_RESPONSE], id="array"),
        pytest.param({}, id="empty"),
        pytest.param({"modelVersion": "x"}, id="no-candidates"),
        pytest.param({"candidates": "Hi"}, id="candidates-str"),
        pytest.param({"candidates": ["Hi"]}, id="candidate-str"),
        pytest.param({"candidates": [{"content": "Hi"}]}, id="content-str"),
        pytest.param({"candidates": [{"content": {"parts": "Hi"}}]}, id="parts-str"),
        pytest.param({"error": {"code": 500, "message": "x"}}, id="error-object"),
    ],
)
def test_gemini_parse_malformed(body: Any) -> None:
    with pytest.raises(ValueError, match="gemini"):
        GEMINI.parse("chat", body)


@pytest.mark.parametrize(
    ("body", "vectors"),
    [
        pytest.param(
            {"embeddings": [{"values": [0.0123, -0.0045]}, {"values": [0.0311, 0.0007]}]},
            [[0.0123, -0.0045], [0.0311, 0.0007]],
            id="reference-batch",
        ),
        pytest.param(
            {"embedding": {"values": [0.0123, -0.0045, 0.0311]}},
            [[0.0123, -0.0045, 0.0311]],
            id="reference-single",
        ),
        pytest.param({"embeddings": []}, [], id="none"),
    ],
)
def test_gemini_parse_embeddings(body: dict[str, Any], vectors: list[list[float]]) -> None:
    parsed = GEMINI.parse("embed", body)
    assert parsed.embeddings == vectors
    assert parsed.text is None
    assert parsed.usage.total_tokens == 0
    assert parsed.model is None  # the answer names no model ...
    assert GEMINI.parse("embed", body, model="gemini-embedding-001").model == (
        "gemini-embedding-001"  # ... so the model asked for is given
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="empty"),
        pytest.param({"embeddings": {"values": [1.0]}}, id="not-list"),
        pytest.param({"embeddings": [{"value": [1.0]}]}, id="misspelt"),
        pytest.param({"embeddings": [[1.0]]}, id="bare-list"),
        pytest.param({"embedding": {"values": None}}, id="null-values"),
    ],
)
def test_gemini_parse_embeddings_malformed(body: Any) -> None:
    with pytest.raises(ValueError, match="gemini"):
        GEMINI.parse("embed", body)


GEMINI_SSE = (
    'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]},"index":0}],"usageMetadata":{"promptTokenCount":3,"totalTokenCount":3},"modelVersion":"gemini-2.5-flash","responseId":"x7Abc123"}\n'
    "\n"
    'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"!"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5},"modelVersion":"gemini-2.5-flash","responseId":"x7Abc123"}\n'
    "\n"
)


def gemini_chunk(text: str, finish: str | None = None) -> str:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return f"data: {json.dumps({'candidates': [cand], 'modelVersion': 'm'})}\n\n"


@given(cuts=cut_points, crlf=st.booleans())
@settings(max_examples=200, deadline=None)
def test_gemini_stream_reference_example_in_any_split(cuts: list[int], crlf: bool) -> None:
    raw = GEMINI_SSE.replace("\n", "\r\n") if crlf else GEMINI_SSE
    decoder = GEMINI.stream_decoder()
    assert run_stream(decoder, split_at(raw.encode(), cuts)) == ["Hi", "!"]
    assert decoder.done is True
    result = decoder.result()
    assert result.text == "Hi!"
    assert result.model == "gemini-2.5-flash"
    assert result.finish_reason == "STOP"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (3, 2)


@given(cuts=cut_points, texts=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=6))
@settings(max_examples=100, deadline=None)
def test_gemini_stream_unicode_chunks_in_any_split(cuts: list[int], texts: list[str]) -> None:
    raw = "".join(gemini_chunk(t) for t in texts) + gemini_chunk("", finish="STOP")
    decoder = GEMINI.stream_decoder()
    deltas = run_stream(decoder, split_at(raw.encode(), cuts))
    assert "".join(deltas) == "".join(texts)
    assert decoder.done
    assert decoder.result().finish_reason == "STOP"


def test_gemini_stream_without_finish_is_not_done() -> None:
    decoder = GEMINI.stream_decoder()
    assert run_stream(decoder, [GEMINI_SSE.split("\n\n")[0].encode() + b"\n\n"]) == ["Hi"]
    assert decoder.done is False
    assert decoder.result().usage.input_tokens == 3


def test_gemini_stream_blocked_prompt_and_other_candidates() -> None:
    blocked = 'data: {"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"}}\n\n'
    decoder = GEMINI.stream_decoder()
    assert run_stream(decoder, [blocked.encode()]) == []
    assert decoder.done
    assert decoder.result().finish_reason == "PROHIBITED_CONTENT"
    other = 'data: {"candidates":[{"content":{"parts":[{"text":"B"}]},"index":1}]}\n\n'
    decoder = GEMINI.stream_decoder()
    assert run_stream(decoder, [gemini_chunk("A").encode(), other.encode()]) == ["A"]


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        ({"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}, True),
        ({"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}, True),
        ({"code": 400, "message": "Bad.", "status": "INVALID_ARGUMENT"}, False),
        ({"code": 503, "message": "no status"}, True),
    ],
)
def test_gemini_stream_error_chunk(error: dict[str, Any], retryable: bool) -> None:
    decoder = GEMINI.stream_decoder()
    raw = gemini_chunk("partial") + f"data: {json.dumps({'error': error})}\n\n"
    with pytest.raises(StreamFailure) as info:
        run_stream(decoder, [raw.encode()])
    assert info.value.retryable is retryable
    assert info.value.error_type == error.get("status")
    assert info.value.message == error["message"]
    assert decoder.result().text == "partial"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("data: {oops\n\n", id="bad-json"),
        pytest.param("data: [1]\n\n", id="array"),
        pytest.param('data: {"candidates":"x"}\n\n', id="candidates-str"),
        pytest.param('data: {"candidates":[{"content":{"parts":7}}]}\n\n', id="parts-int"),
    ],
)
def test_gemini_stream_garbage(raw: str) -> None:
    with pytest.raises(ValueError, match="gemini"):
        run_stream(GEMINI.stream_decoder(), [raw.encode()])


# ---------------------------------------------------------------------------------------------
# Gemini: errors
# ---------------------------------------------------------------------------------------------

GEMINI_INVALID_KEY = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": "API key not valid. Please pass a valid API key.",
            },
        ],
    }
}


def gemini_quota(quota_id: str, retry_delay: str | None = "26s", message: str | None = None) -> Any:
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/"
                    "generate_content_free_tier_requests",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
                    "quotaValue": "10",
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
    ]
    if retry_delay is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        )
    if message is None:
        message = (
            "You exceeded your current quota, please check your plan and billing details. For "
            "more information on this error, head to: "
            "https://ai.google.dev/gemini-api/docs/rate-limits. …\nPlease retry in 26.4s."
        )
    return {
        "error": {
            "code": 429,
            "message": message,
            "status": "RESOURCE_EXHAUSTED",
            "details": details,
        }
    }


def rpc(code: int, status: str, message: str) -> Any:
    return {"error": {"code": code, "message": message, "status": status}}


PER_MINUTE = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
PER_DAY = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
UNTIL_MIDNIGHT_PT = seconds_until_pacific_midnight(NOW)


@pytest.mark.parametrize(
    ("status", "body", "kind", "retry_after", "error_type", "code"),
    [
        pytest.param(
            400,
            GEMINI_INVALID_KEY,
            Kind.KEY_INVALID,
            None,
            "INVALID_ARGUMENT",
            "API_KEY_INVALID",
            id="invalid-key-reference",
        ),
        pytest.param(
            400,
            rpc(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
            Kind.KEY_INVALID,
            None,
            "INVALID_ARGUMENT",
            None,
            id="invalid-key-message-only",
        ),
        pytest.param(
            400,
            rpc(400, "INVALID_ARGUMENT", "API key expired. Please renew the API key."),
            Kind.KEY_INVALID,
            None,
            "INVALID_ARGUMENT",
            None,
            id="expired-key",
        ),
        pytest.param(
            403,
            rpc(403, "PERMISSION_DENIED", "You do not have permission to access tuned model"),
            Kind.KEY_INVALID,
            None,
            "PERMISSION_DENIED",
            None,
            id="403",
        ),
        pytest.param(
            401,
            rpc(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
            Kind.KEY_INVALID,
            None,
            "UNAUTHENTICATED",
            None,
            id="401",
        ),
        pytest.param(
            429,
            gemini_quota(PER_MINUTE),
            Kind.RATE_LIMITED,
            26.0,
            "RESOURCE_EXHAUSTED",
            PER_MINUTE,
            id="per-minute-reference",
        ),
        pytest.param(
            429,
            gemini_quota(PER_MINUTE, "45.837906927s"),
            Kind.RATE_LIMITED,
            45.837906927,
            "RESOURCE_EXHAUSTED",
            PER_MINUTE,
            id="fractional-retry-delay",
        ),
        pytest.param(
            429,
            gemini_quota("GenerateContentInputTokensPerModelPerMinute-FreeTier", None),
            Kind.RATE_LIMITED,
            26.4,
            "RESOURCE_EXHAUSTED",
            "GenerateContentInputTokensPerModelPerMinute-FreeTier",
            id="retry-in-message",
        ),
        pytest.param(
            429,
            gemini_quota(PER_MINUTE, None, "Quota exceeded. Please retry in 850.5ms."),
            Kind.RATE_LIMITED,
            0.8505,
            "RESOURCE_EXHAUSTED",
            PER_MINUTE,
            id="retry-in-ms",
        ),
        pytest.param(
            429,
            gemini_quota(PER_DAY, "26s"),
            Kind.DAILY_LIMIT,
            UNTIL_MIDNIGHT_PT,
            "RESOURCE_EXHAUSTED",
            PER_DAY,
            id="per-day",
        ),
        pytest.param(
            429,
            rpc(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
            Kind.RATE_LIMITED,
            None,
            "RESOURCE_EXHAUSTED",
            None,
            id="429-no-details",
        ),
        pytest.param(
            429,
            rpc(
                429,
                "RESOURCE_EXHAUSTED",
                "Your prepayment credits are depleted. Please go to AI Studio at "
                "https://ai.studio/projects to manage your project and billing.",
            ),
            Kind.QUOTA_SPENT,
            None,
            "RESOURCE_EXHAUSTED",
            None,
            id="prepayment-depleted",
        ),
        pytest.param(
            400,
            rpc(
                400,
                "FAILED_PRECONDITION",
                "Gemini API free tier is not available in your country. Please enable billing "
                "on your project in Google AI Studio.",
            ),
            Kind.QUOTA_SPENT,
            None,
            "FAILED_PRECONDITION",
            None,
            id="failed-precondition-billing",
        ),
        pytest.param(
            400,
            rpc(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
            Kind.BAD_REQUEST,
            None,
            "FAILED_PRECONDITION",
            None,
            id="failed-precondition-location",
        ),
        pytest.param(
            400,
            rpc(400, "INVALID_ARGUMENT", "Request payload size exceeds the limit: 20971520 bytes."),
            Kind.BAD_REQUEST,
            None,
            "INVALID_ARGUMENT",
            None,
            id="400-payload",
        ),
        pytest.param(
            404,
            rpc(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta"),
            Kind.BAD_REQUEST,
            None,
            "NOT_FOUND",
            None,
            id="404",
        ),
        pytest.param(
            503,
            rpc(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
            Kind.OVERLOADED,
            None,
            "UNAVAILABLE",
            None,
            id="503",
        ),
        pytest.param(
            500,
            rpc(500, "INTERNAL", "An internal error has occurred."),
            Kind.SERVER_ERROR,
            None,
            "INTERNAL",
            None,
            id="500",
        ),
        pytest.param(
            504,
            rpc(504, "DEADLINE_EXCEEDED", "Deadline exceeded"),
            Kind.SERVER_ERROR,
            None,
            "DEADLINE_EXCEEDED",
            None,
            id="504",
        ),
        pytest.param(
            413,
            b"<html>Request Entity Too Large</html>",
            Kind.TOO_LARGE,
            None,
            None,
            None,
            id="413-gateway",
        ),
        pytest.param(502, b"<html>502</html>", Kind.SERVER_ERROR, None, None, None, id="502"),
        pytest.param(429, b"Too Many Requests", Kind.RATE_LIMITED, None, None, None, id="429-txt"),
        pytest.param(503, b"", Kind.OVERLOADED, None, None, None, id="503-empty"),
        pytest.param(
            500,
            [rpc(500, "INTERNAL", "array form")],
            Kind.SERVER_ERROR,
            None,
            "INTERNAL",
            None,
            id="error-array",
        ),
    ],
)
def test_gemini_classify(
    status: int,
    body: Any,
    kind: Kind,
    retry_after: float | None,
    error_type: str | None,
    code: str | None,
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    outcome = classify_gemini(status, {}, raw, NOW)
    assert outcome.kind is kind
    assert outcome.status == status
    assert outcome.retry_after == pytest.approx(retry_after)
    assert outcome.error_type == error_type
    assert outcome.code == code
    assert outcome.message
    assert GEMINI.classify(status, {}, raw, WALL).kind is kind


def _emulator_gemini_429(dimension: str, limit: int, wait: float) -> bytes:
    """A 429 as the emulator's Gemini dialect writes it."""
    from keymux.emulator._gemini import GeminiDialect

    return json.dumps(
        GeminiDialect()._exhausted(dimension, limit, wait, "gemini-2.5-flash").body
    ).encode()


@pytest.mark.parametrize(
    ("body", "kind", "named", "retry_after"),
    [
        pytest.param(
            gemini_quota(PER_MINUTE), Kind.RATE_LIMITED, (10.0, "requests", 60.0), 26.0, id="rpm"
        ),
        pytest.param(
            gemini_quota(PER_DAY, None),
            Kind.DAILY_LIMIT,
            (10.0, "requests", 86400.0),
            None,
            id="rpd",
        ),
        pytest.param(
            gemini_quota("GenerateContentInputTokensPerModelPerMinute-FreeTier"),
            Kind.RATE_LIMITED,
            (10.0, "tokens", 60.0),
            26.0,
            id="tpm",
        ),
        pytest.param(
            _emulator_gemini_429("rpm", 20, 0.7341),
            Kind.RATE_LIMITED,
            (20.0, "requests", 60.0),
            0.735,
            id="emulator-rpm",
        ),
        pytest.param(
            _emulator_gemini_429("tpm", 250000, 12.0),
            Kind.RATE_LIMITED,
            (250000.0, "tokens", 60.0),
            12.0,
            id="emulator-tpm",
        ),
        # no details at all: nothing named (backoff, and the adapted rate, decide)
        pytest.param(
            rpc(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
            Kind.RATE_LIMITED,
            (None, None, None),
            None,
            id="bare",
        ),
        # a violation without a value: the message's "limit: N"
        pytest.param(
            {
                "error": {
                    "code": 429,
                    "status": "RESOURCE_EXHAUSTED",
                    "message": "* Quota exceeded for metric: generativelanguage.googleapis.com/"
                    "generate_content_free_tier_requests, limit: 15, model: gemini-2.0-flash",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": [{"quotaId": PER_MINUTE}],
                        }
                    ],
                }
            },
            Kind.RATE_LIMITED,
            (15.0, "requests", 60.0),
            None,
            id="message-limit",
        ),
    ],
)
def test_gemini_classify_reports_the_quota_a_429_names(
    body: Any,
    kind: Kind,
    named: tuple[float | None, str | None, float | None],
    retry_after: float | None,
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    outcome = classify_gemini(429, {}, raw, NOW)
    assert outcome.kind is kind
    assert (outcome.limit, outcome.dimension, outcome.period) == named
    if kind is Kind.RATE_LIMITED:
        assert outcome.retry_after == pytest.approx(retry_after)


def test_gemini_classify_messages_never_show_a_key() -> None:
    suspended = rpc(
        403, "PERMISSION_DENIED", f"Permission denied: Consumer 'api_key:{GEMINI_KEY}' suspended."
    )
    outcome = classify_gemini(403, {}, json.dumps(suspended).encode(), NOW)
    assert outcome.kind is Kind.KEY_INVALID
    assert GEMINI_KEY not in outcome.message
    assert "api_key:AIz...nopq" in outcome.message
    assert classify_gemini(500, {}, b"", NOW).message == "HTTP 500 from Gemini"


def test_gemini_classify_honours_a_proxy_retry_after() -> None:
    body = json.dumps(rpc(429, "RESOURCE_EXHAUSTED", "exhausted")).encode()
    assert classify_gemini(429, {"Retry-After": "12"}, body, NOW).retry_after == 12.0
    assert classify_gemini(503, {"retry-after": "4"}, b"", NOW).retry_after == 4.0


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        ("2026-01-15T12:00:00-08:00", 12 * 3600.0),  # winter: PST
        ("2026-07-15T23:30:00-07:00", 1800.0),  # summer: PDT
        ("2026-03-08T00:00:00-08:00", 23 * 3600.0),  # the day clocks spring forward
        ("2026-08-21T12:40:00+00:00", 18 * 3600.0 + 20 * 60),  # 05:40 PDT
    ],
)
def test_gemini_daily_reset_is_midnight_pacific(instant: str, expected: float) -> None:
    now = datetime.fromisoformat(instant).timestamp()
    assert seconds_until_pacific_midnight(now) == pytest.approx(expected)


def test_gemini_has_no_rate_limit_headers() -> None:
    headers = {"x-ratelimit-remaining-requests": "5", "retry-after": "3"}
    assert GEMINI.rate_snapshot(headers, NOW) is None


# ---------------------------------------------------------------------------------------------
# Both
# ---------------------------------------------------------------------------------------------


def test_adapters_are_registered_by_name() -> None:
    from keymux.providers import ADAPTERS, canonical_provider

    assert isinstance(ADAPTERS["claude"], ClaudeAdapter)
    assert isinstance(ADAPTERS["gemini"], GeminiAdapter)
    assert ADAPTERS[canonical_provider("anthropic")] is ADAPTERS["claude"]
    assert (CLAUDE.name, GEMINI.name) == ("claude", "gemini")
    assert CLAUDE.default_base_url == "https://api.anthropic.com"
    assert GEMINI.default_base_url == "https://generativelanguage.googleapis.com"


@pytest.mark.parametrize("adapter", [CLAUDE, GEMINI], ids=["claude", "gemini"])
def test_decoders_are_fresh_and_builds_do_not_mutate_params(adapter: Any) -> None:
    first, second = adapter.stream_decoder(), adapter.stream_decoder()
    assert first is not second
    assert first.done is False
    assert first.result().text == ""
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "user", "content": "b"},
    ]
    params = {"messages": messages, "stop": "X", "max_tokens": 3}
    before = json.dumps(params)
    adapter.build("chat", params, model=None, stream=True, base_url="http://h", api_key="k")
    adapter.build("chat", params, model=None, stream=False, base_url="http://h", api_key="k")
    assert json.dumps(params) == before


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
messy_messages = st.lists(
    st.dictionaries(
        st.sampled_from(["role", "content", "name"]),
        st.sampled_from(["user", "assistant", "system", "tool", "model"]) | json_values,
        max_size=3,
    )
    | json_values,
    max_size=4,
)


@given(
    messages=messy_messages | json_values,
    extra=st.dictionaries(
        st.sampled_from(["stop", "max_tokens", "n", "generationConfig", "system", "input"]),
        json_values,
        max_size=2,
    ),
)
@settings(max_examples=150, deadline=None)
def test_builds_fail_only_with_keymux_errors(messages: Any, extra: dict[str, Any]) -> None:
    params = {"messages": messages, **extra}
    for adapter, endpoint in ((CLAUDE, "chat"), (GEMINI, "chat"), (GEMINI, "embed")):
        try:
            req = adapter.build(
                endpoint, params, model=None, stream=False, base_url="http://h", api_key="k"
            )
        except InvalidRequestError:
            continue
        json.loads(req.body or b"")
        assert adapter.estimate_tokens(endpoint, params) >= 0


@given(body=json_values)
@settings(max_examples=150, deadline=None)
def test_parsers_fail_only_with_value_errors(body: Any) -> None:
    for adapter, endpoint in ((CLAUDE, "chat"), (GEMINI, "chat"), (GEMINI, "embed")):
        try:
            adapter.parse(endpoint, body)
        except ValueError:
            pass
    for adapter in (CLAUDE, GEMINI):
        decoder = adapter.stream_decoder()
        for name in (None, "message_start", "content_block_delta", "message_delta", "error"):
            try:
                decoder.feed(SSEEvent(name, json.dumps(body)))
            except (ValueError, StreamFailure):
                pass
        decoder.result()


@given(
    status=st.integers(min_value=300, max_value=599),
    body=st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()),
)
@settings(max_examples=150, deadline=None)
def test_classify_never_raises(status: int, body: bytes) -> None:
    for classify in (classify_claude, classify_gemini):
        outcome = classify(status, {}, body, NOW)
        assert outcome.status == status
        assert outcome.message
        assert outcome.retry_after is None or outcome.retry_after >= 0
