"""The OpenAI and Groq adapters: requests, answers, streams, errors and rate-limit headers.

Example bodies, streams and headers are the ones in reference/providers.md §1 and §2.
"""

from __future__ import annotations

import base64
import email.utils
import itertools
import json
import struct
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from keymux._errors import InvalidRequestError, KeymuxError, UnsupportedError
from keymux._headers import parse_go_duration
from keymux._secret import scrub_secrets
from keymux._types import HttpRequest, Kind, LimitInfo, Parsed, RateSnapshot, Usage
from keymux.providers._base import Adapter, SSEEvent, SSEParser, StreamDecoder, StreamFailure
from keymux.providers.groq import GroqAdapter
from keymux.providers.openai import OpenAIAdapter

OPENAI = OpenAIAdapter()
GROQ = GroqAdapter()
#: both satisfy the Adapter protocol (checked by mypy)
ADAPTERS: dict[str, Adapter] = {"openai": OPENAI, "groq": GROQ}

KEY = "sk-test-SECRET-0123456789abcdefXYZ"
HI = [{"role": "user", "content": "Say hi"}]

#: the Unix time answers arrive at in these tests
WALL = 1_767_225_600.0

from keymux._types import USER_AGENT  # noqa: E402


def body_of(request: HttpRequest) -> Any:
    assert request.body is not None
    return json.loads(request.body)


def build(
    adapter: Adapter,
    endpoint: str = "chat",
    *,
    model: str | None = None,
    stream: bool = False,
    base_url: str | None = None,
    **params: Any,
) -> HttpRequest:
    return adapter.build(
        endpoint,
        params,
        model=model,
        stream=stream,
        base_url=adapter.default_base_url if base_url is None else base_url,
        api_key=KEY,
    )


def jbytes(value: object) -> bytes:
    return json.dumps(value).encode()


# --- identity -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adapter", "name", "base_url", "models", "endpoints"),
    [
        (
            OPENAI,
            "openai",
            "https://api.openai.com/v1",
            {"chat": "gpt-4o-mini", "embed": "text-embedding-3-small"},
            {"chat", "embed"},
        ),
        (GROQ, "groq", "https://api.groq.com", {"chat": "llama-3.1-8b-instant"}, {"chat", "embed"}),
    ],
)
def test_identity(
    adapter: Adapter, name: str, base_url: str, models: dict[str, str], endpoints: set[str]
) -> None:
    assert adapter.name == name
    assert adapter.default_base_url == base_url
    assert dict(adapter.default_models) == models
    assert adapter.endpoints == frozenset(endpoints)


# --- build ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adapter", "endpoint", "base_url", "url"),
    [
        (OPENAI, "chat", None, "https://api.openai.com/v1/chat/completions"),
        (
            OPENAI,
            "chat",
            "https://api.openai.com/v1/",
            "https://api.openai.com/v1/chat/completions",
        ),
        (OPENAI, "embed", None, "https://api.openai.com/v1/embeddings"),
        (OPENAI, "chat", "http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1/chat/completions"),
        (GROQ, "chat", None, "https://api.groq.com/openai/v1/chat/completions"),
        (GROQ, "chat", "https://api.groq.com/", "https://api.groq.com/openai/v1/chat/completions"),
        # the OpenAI-SDK style Groq base URL already holds the prefix: it is not doubled
        (
            GROQ,
            "chat",
            "https://api.groq.com/openai/v1",
            "https://api.groq.com/openai/v1/chat/completions",
        ),
        (
            GROQ,
            "chat",
            "http://127.0.0.1:9/emu",
            "http://127.0.0.1:9/emu/openai/v1/chat/completions",
        ),
        (GROQ, "embed", None, "https://api.groq.com/openai/v1/embeddings"),
    ],
)
def test_build_url(adapter: Adapter, endpoint: str, base_url: str | None, url: str) -> None:
    params: dict[str, Any] = {"messages": HI} if endpoint == "chat" else {"input": "x"}
    request = build(adapter, endpoint, base_url=base_url, model="m", **params)
    assert request.method == "POST"
    assert request.url == url


@pytest.mark.parametrize(
    ("adapter", "model"), [(OPENAI, "gpt-4o-mini"), (GROQ, "llama-3.1-8b-instant")]
)
def test_build_chat_exact_body(adapter: Adapter, model: str) -> None:
    request = build(adapter, messages=HI, max_completion_tokens=16)
    expected = {"model": model, "messages": HI, "max_completion_tokens": 16}
    assert request.body == json.dumps(expected, separators=(",", ":")).encode()
    assert request.headers == {
        "Authorization": f"Bearer {KEY}",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
    }
    assert KEY not in repr(request)


@pytest.mark.parametrize("adapter", [OPENAI, GROQ])
def test_build_chat_stream_flags(adapter: Adapter) -> None:
    request = build(adapter, messages=HI, stream=True, model="m", temperature=0.2)
    assert body_of(request) == {
        "model": "m",
        "messages": HI,
        "temperature": 0.2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert request.headers["Accept"] == "text/event-stream"


@pytest.mark.parametrize("adapter", [OPENAI, GROQ])
def test_build_stream_keeps_callers_stream_options(adapter: Adapter) -> None:
    params = {"messages": HI, "stream_options": {"include_usage": False}}
    request = adapter.build(
        "chat", params, model=None, stream=True, base_url=adapter.default_base_url, api_key=KEY
    )
    assert body_of(request)["stream_options"] == {"include_usage": False}
    assert params == {"messages": HI, "stream_options": {"include_usage": False}}  # untouched


@pytest.mark.parametrize("adapter", [OPENAI, GROQ])
def test_build_non_stream_drops_stream_params(adapter: Adapter) -> None:
    body = body_of(build(adapter, messages=HI, stream_options={"include_usage": True}, stream_x=1))
    assert "stream" not in body
    assert "stream_options" not in body
    assert body["stream_x"] == 1


def test_build_model_from_params_when_argument_is_none() -> None:
    assert body_of(build(OPENAI, messages=HI))["model"] == "gpt-4o-mini"
    assert body_of(build(OPENAI, messages=HI, model="gpt-4o"))["model"] == "gpt-4o"


@pytest.mark.parametrize(
    ("adapter", "kwargs", "expected"),
    [
        (
            OPENAI,
            {"input": ["hello", "world"]},
            {
                "model": "text-embedding-3-small",
                "input": ["hello", "world"],
                "encoding_format": "float",
            },
        ),
        (
            OPENAI,
            {"input": "hello", "dimensions": 256, "model": "text-embedding-3-large"},
            {
                "model": "text-embedding-3-large",
                "input": "hello",
                "encoding_format": "float",
                "dimensions": 256,
            },
        ),
        (
            OPENAI,
            {"input": "hello", "encoding_format": "base64"},
            {"model": "text-embedding-3-small", "input": "hello", "encoding_format": "base64"},
        ),
        (
            GROQ,
            {"input": ["a"], "model": "some-embedder"},
            {"model": "some-embedder", "input": ["a"], "encoding_format": "float"},
        ),
    ],
)
def test_build_embed_body(
    adapter: Adapter, kwargs: dict[str, Any], expected: dict[str, Any]
) -> None:
    request = build(adapter, "embed", **kwargs)
    assert body_of(request) == expected
    assert request.headers["Authorization"] == f"Bearer {KEY}"


def test_groq_embed_without_model_is_unsupported() -> None:
    with pytest.raises(UnsupportedError, match=r"(?s)no embedding model.*model=") as info:
        build(GROQ, "embed", input="hello")
    assert info.value.provider == "groq"


@pytest.mark.parametrize(
    ("endpoint", "kwargs", "error", "needle"),
    [
        ("chat", {}, InvalidRequestError, "non-empty list"),
        ("chat", {"messages": []}, InvalidRequestError, "non-empty list"),
        ("chat", {"messages": "hi"}, InvalidRequestError, "non-empty list"),
        ("chat", {"messages": ["hi"]}, InvalidRequestError, r"messages\[0\] must be a dict"),
        ("chat", {"messages": [{"content": "x"}]}, InvalidRequestError, r"\[0\] needs a 'role'"),
        ("chat", {"messages": [*HI, {"role": "user"}]}, InvalidRequestError, r"\[1\].*'content'"),
        ("chat", {"messages": [{"role": "user", "content": 3}]}, InvalidRequestError, "or a list"),
        ("chat", {"messages": HI, "model": ""}, InvalidRequestError, "model must be"),
        ("chat", {"messages": HI, "temperature": {1, 2}}, InvalidRequestError, "JSON-serialisable"),
        (
            "chat",
            {"messages": HI, "temperature": float("nan")},
            InvalidRequestError,
            "serialisable",
        ),
        ("embed", {}, InvalidRequestError, "input="),
        ("embed", {"input": []}, InvalidRequestError, "input="),
        ("embed", {"input": ["a", 3]}, InvalidRequestError, "input="),
        ("images", {"prompt": "x"}, UnsupportedError, "no 'images' endpoint"),
    ],
)
@pytest.mark.parametrize("adapter", [OPENAI, GROQ])
def test_build_rejects_bad_requests(
    adapter: Adapter,
    endpoint: str,
    kwargs: dict[str, Any],
    error: type[KeymuxError],
    needle: str,
) -> None:
    kwargs = {"model": "m", **kwargs}
    with pytest.raises(error, match=needle) as info:
        build(adapter, endpoint, **kwargs)
    assert info.value.provider == adapter.name
    assert KEY not in str(info.value)
    assert "SECRET" not in repr(info.value)


def test_build_accepts_tool_messages_without_content() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert body_of(build(OPENAI, messages=messages))["messages"] == messages


def test_streaming_embeddings_is_unsupported() -> None:
    with pytest.raises(UnsupportedError):
        build(OPENAI, "embed", stream=True, input="x")


@pytest.mark.parametrize(
    ("adapter", "url"),
    [(OPENAI, "https://api.openai.com/v1/models"), (GROQ, "https://api.groq.com/openai/v1/models")],
)
def test_probe(adapter: Adapter, url: str) -> None:
    request = adapter.probe(base_url=adapter.default_base_url, api_key=KEY)
    assert (request.method, request.url, request.body) == ("GET", url, None)
    assert request.headers["Authorization"] == f"Bearer {KEY}"


# --- parse ----------------------------------------------------------------------------------

CHAT_200 = {
    "id": "chatcmpl-7xYz",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 2,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
    "system_fingerprint": "fp_0a1b2c",
}


@pytest.mark.parametrize("adapter", [OPENAI, GROQ])
def test_parse_chat(adapter: Adapter) -> None:
    assert adapter.parse("chat", CHAT_200) == Parsed(
        text="Hi!", model="gpt-4o-mini-2024-07-18", usage=Usage(9, 2), finish_reason="stop"
    )


def test_parse_chat_tool_call_has_no_text_and_missing_usage_is_zero() -> None:
    body = {
        "model": "gpt-4o",
        "choices": [
            {"message": {"role": "assistant", "content": None}, "finish_reason": "tool_calls"}
        ],
    }
    parsed = OPENAI.parse("chat", body)
    assert (parsed.text, parsed.finish_reason, parsed.usage) == (None, "tool_calls", Usage(0, 0))


def f32_base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


@pytest.mark.parametrize(
    "data",
    [
        [
            {"object": "embedding", "index": 0, "embedding": [0.0123, -0.0045]},
            {"object": "embedding", "index": 1, "embedding": [0.0311, 0.0007]},
        ],
        [  # out of order: sorted by index
            {"object": "embedding", "index": 1, "embedding": [0.0311, 0.0007]},
            {"object": "embedding", "index": 0, "embedding": [0.0123, -0.0045]},
        ],
        [  # base64 of little-endian float32 (the SDK's default encoding)
            {"object": "embedding", "index": 1, "embedding": f32_base64([0.0311, 0.0007])},
            {"object": "embedding", "index": 0, "embedding": f32_base64([0.0123, -0.0045])},
        ],
    ],
)
def test_parse_embeddings(data: list[dict[str, Any]]) -> None:
    body = {
        "object": "list",
        "data": data,
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    parsed = OPENAI.parse("embed", body)
    assert parsed.embeddings is not None
    assert [[pytest.approx(x, rel=1e-6) for x in v] for v in parsed.embeddings] == [
        [0.0123, -0.0045],
        [0.0311, 0.0007],
    ]
    assert (parsed.text, parsed.model) == (None, "text-embedding-3-small")
    assert parsed.usage == Usage(2, 0)


def test_parse_embedding_ints_become_floats() -> None:
    parsed = OPENAI.parse("embed", {"data": [{"index": 0, "embedding": [0, 1]}]})
    assert parsed.embeddings == [[0.0, 1.0]]
    assert all(type(x) is float for x in parsed.embeddings[0])


@pytest.mark.parametrize(
    ("endpoint", "body", "needle"),
    [
        ("chat", None, "JSON object"),
        ("chat", [], "JSON object"),
        ("chat", {}, "choices"),
        ("chat", {"choices": []}, "choices"),
        ("chat", {"choices": "x"}, "choices"),
        ("chat", {"choices": [3]}, r"choices\[0\]"),
        ("chat", {"choices": [{}]}, "message"),
        ("chat", {"choices": [{"message": "hi"}]}, "message"),
        ("chat", {"choices": [{"message": {"content": 5}}]}, "'content'"),
        ("chat", {"choices": [{"message": {"content": "a"}}], "model": 3}, "'model'"),
        ("chat", {"choices": [{"message": {"content": "a"}}], "usage": "x"}, "usage"),
        (
            "chat",
            {"choices": [{"message": {"content": "a"}}], "usage": {"prompt_tokens": "9"}},
            "prompt_tokens",
        ),
        (
            "chat",
            {"choices": [{"message": {"content": "a"}}], "usage": {"completion_tokens": -1}},
            "completion_tokens",
        ),
        ("chat", {"choices": [{"message": {"content": "a"}, "finish_reason": 1}]}, "finish_reason"),
        ("embed", "x", "JSON object"),
        ("embed", {}, "'data'"),
        ("embed", {"data": []}, "'data'"),
        ("embed", {"data": ["x"]}, r"data\[0\]"),
        ("embed", {"data": [{"index": 0}]}, r"data\[0\]"),
        ("embed", {"data": [{"index": 0, "embedding": []}]}, r"data\[0\]"),
        ("embed", {"data": [{"index": 0, "embedding": [1.0, "x"]}]}, "not a number"),
        ("embed", {"data": [{"index": 0, "embedding": "!!notbase64"}]}, "base64"),
        ("embed", {"data": [{"index": 0, "embedding": "AAAAAAA="}]}, "float32"),
        (
            "embed",
            {"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]},
            "index",
        ),
        ("embed", {"data": [{"index": 5, "embedding": [1.0]}]}, "index"),
        ("embed", {"data": [{"index": "0", "embedding": [1.0]}]}, "index"),
    ],
)
@pytest.mark.parametrize("adapter", [OPENAI, GROQ])
def test_parse_malformed_raises_value_error(
    adapter: Adapter, endpoint: str, body: Any, needle: str
) -> None:
    with pytest.raises(ValueError, match=needle):
        adapter.parse(endpoint, body)


# --- streams --------------------------------------------------------------------------------

# reference/providers.md §1.3, byte for byte
OPENAI_SSE = (
    'data: {"id":"chatcmpl-7xYz","object":"chat.completion.chunk","created":176722560'
    '0,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0a1b2c","choices":[{'
    '"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reas'
    'on":null}],"usage":null}\n'
    "\n"
    'data: {"id":"chatcmpl-7xYz","object":"chat.completion.chunk","created":176722560'
    '0,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0a1b2c","choices":[{'
    '"index":0,"delta":{"content":"Hi!"},"logprobs":null,"finish_reason":null}],"usag'
    'e":null}\n'
    "\n"
    'data: {"id":"chatcmpl-7xYz","object":"chat.completion.chunk","created":176722560'
    '0,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0a1b2c","choices":[{'
    '"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n'
    "\n"
    'data: {"id":"chatcmpl-7xYz","object":"chat.completion.chunk","created":176722560'
    '0,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0a1b2c","choices":[]'
    ',"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}\n'
    "\n"
    "data: [DONE]\n"
    "\n"
)
# reference/providers.md §2.2, byte for byte
GROQ_SSE = (
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"'
    'model":"llama-3.1-8b-instant","choices":[{"index":0,"delta":{"role":"assistant",'
    '"content":""},"logprobs":null,"finish_reason":null}],"x_groq":{"id":"req_01abc"}'
    "}\n"
    "\n"
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"'
    'model":"llama-3.1-8b-instant","choices":[{"index":0,"delta":{"content":"Hi!"},"l'
    'ogprobs":null,"finish_reason":null}]}\n'
    "\n"
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"'
    'model":"llama-3.1-8b-instant","choices":[{"index":0,"delta":{},"logprobs":null,"'
    'finish_reason":"stop"}],"x_groq":{"id":"req_01abc","usage":{"queue_time":0.01,"p'
    'rompt_tokens":9,"prompt_time":0.001,"completion_tokens":2,"completion_time":0.00'
    '2,"total_tokens":11,"total_time":0.003}}}\n'
    "\n"
    "data: [DONE]\n"
    "\n"
)


def sse(*chunks: object) -> str:
    """An OpenAI-style stream of the given chunk objects, ended with [DONE]."""
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def delta(text: str) -> dict[str, Any]:
    return {"model": "m", "choices": [{"index": 0, "delta": {"content": text}}]}


UNICODE_SSE = sse(
    delta("Grüße, "),
    delta("世界 👋"),
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
)

STREAMS = [
    (
        OPENAI,
        OPENAI_SSE,
        Parsed("Hi!", "gpt-4o-mini-2024-07-18", Usage(9, 2), None, "stop"),
        ["Hi!"],
    ),
    (GROQ, GROQ_SSE, Parsed("Hi!", "llama-3.1-8b-instant", Usage(9, 2), None, "stop"), ["Hi!"]),
    (
        OPENAI,
        UNICODE_SSE,
        Parsed("Grüße, 世界 👋", "m", Usage(), None, "length"),
        ["Grüße, ", "世界 👋"],
    ),
]


def run_stream(decoder: StreamDecoder, pieces: list[bytes]) -> list[str]:
    parser = SSEParser()
    deltas: list[str] = []
    for piece in pieces:
        for event in parser.feed(piece):
            text = decoder.feed(event)
            if text is not None:
                deltas.append(text)
    for event in parser.close():
        text = decoder.feed(event)
        if text is not None:
            deltas.append(text)
    return deltas


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


@pytest.mark.parametrize(("adapter", "stream", "expected", "deltas"), STREAMS)
def test_stream_decoder_whole(
    adapter: Adapter, stream: str, expected: Parsed, deltas: list[str]
) -> None:
    decoder = adapter.stream_decoder()
    done_at_start = decoder.done
    assert run_stream(decoder, [stream.encode()]) == deltas
    assert (done_at_start, decoder.done) == (False, True)
    assert decoder.result() == expected


@settings(max_examples=60, deadline=None)
@given(
    case=st.sampled_from(STREAMS),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=25),
)
def test_stream_decoder_any_byte_split(
    case: tuple[Adapter, str, Parsed, list[str]], newline: str, cuts: list[int]
) -> None:
    adapter, stream, expected, deltas = case
    data = stream.replace("\n", newline).encode()
    decoder = adapter.stream_decoder()
    received = run_stream(decoder, split(data, [c % (len(data) + 1) for c in cuts]))
    assert "".join(received) == "".join(deltas)
    assert decoder.done is True
    assert decoder.result() == expected


def test_stream_result_before_the_end() -> None:
    decoder = OPENAI.stream_decoder()
    run_stream(decoder, [OPENAI_SSE.split("data: [DONE]")[0].encode()])
    assert decoder.done is False
    assert decoder.result().text == "Hi!"


def test_stream_only_choice_zero_is_the_text() -> None:
    chunk = {
        "choices": [
            {"index": 1, "delta": {"content": "B"}},
            {"index": 0, "delta": {"content": "A"}},
        ]
    }
    decoder = OPENAI.stream_decoder()
    assert run_stream(decoder, [sse(chunk).encode()]) == ["A"]


@pytest.mark.parametrize(
    ("adapter", "chunk", "message", "error_type", "retryable"),
    [
        (
            OPENAI,
            {
                "error": {
                    "message": "The server had an error",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
            "The server had an error",
            "server_error",
            True,
        ),
        (
            GROQ,
            {"error": {"message": "bad tool call", "type": "invalid_request_error"}},
            "bad tool call",
            "invalid_request_error",
            False,
        ),
        (OPENAI, {"error": "upstream went away"}, "upstream went away", None, False),
        (OPENAI, {"error": {"type": "server_error"}}, "reported an error", "server_error", True),
        (
            GROQ,
            {"choices": [], "x_groq": {"id": "req_1", "error": "stream stopped: over capacity"}},
            "stream stopped: over capacity",
            None,
            False,
        ),
    ],
)
def test_stream_error_chunk(
    adapter: Adapter,
    chunk: dict[str, Any],
    message: str,
    error_type: str | None,
    retryable: bool,
) -> None:
    decoder = adapter.stream_decoder()
    stream = sse(delta("partial")).replace("data: [DONE]\n\n", "") + sse(chunk)
    with pytest.raises(StreamFailure) as info:
        run_stream(decoder, [stream.encode()])
    assert message in info.value.message
    assert (info.value.error_type, info.value.retryable) == (error_type, retryable)
    assert decoder.result().text == "partial"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{"error": {"message": "overloaded", "type": "server_error"}}', "overloaded"),
        ('{"message": "went away"}', "went away"),
        ("plain words", "plain words"),
    ],
)
def test_stream_named_error_event(data: str, message: str) -> None:
    with pytest.raises(StreamFailure, match=message):
        OPENAI.stream_decoder().feed(SSEEvent("error", data))


def test_stream_error_message_is_scrubbed() -> None:
    decoder = OPENAI.stream_decoder()
    event = SSEEvent(None, json.dumps({"error": {"message": f"bad key {KEY}"}}))
    with pytest.raises(StreamFailure) as info:
        decoder.feed(event)
    assert KEY not in info.value.message
    assert "sk-...fXYZ" in info.value.message


@pytest.mark.parametrize(
    "data", ['{"choices": [', "not json", "[1, 2]", '"text"', '{"choices": 5}', '{"choices": [1]}']
)
def test_stream_garbage_raises_value_error(data: str) -> None:
    with pytest.raises(ValueError, match="stream chunk"):
        OPENAI.stream_decoder().feed(SSEEvent(None, data))


def test_stream_ignores_blank_data_and_events_after_done() -> None:
    decoder = OPENAI.stream_decoder()
    assert decoder.feed(SSEEvent(None, "")) is None
    assert decoder.feed(SSEEvent(None, "[DONE]")) is None
    assert decoder.feed(SSEEvent(None, "garbage after the end")) is None
    assert decoder.done


# --- classify -------------------------------------------------------------------------------

OPENAI_401 = (
    "Incorrect API key provided: sk-proj-abc1************************************************wxyz. "
    "You can find your API key at https://platform.openai.com/account/api-keys."
)
OPENAI_QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details. "
        "For more information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}
OPENAI_RPM = {
    "error": {
        "message": "Rate limit reached for gpt-4o-mini in organization org-abc on requests per min "
        "(RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
OPENAI_TPM_MSG = (
    "Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, "
    "Used 29937, Requested 385. Please try again in 644ms. Visit "
    "https://platform.openai.com/account/rate-limits to learn more."
)
OPENAI_TOO_LARGE_MSG = (
    "Request too large for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, "
    "Requested 61337. The input or output tokens must be reduced in order to run successfully."
)
GROQ_413 = {
    "error": {
        "message": "Request too large for model `llama-3.3-70b-versatile` in organization "
        "`org_01abc` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested "
        "14810, please reduce your message size and try again. Need more tokens? Upgrade to Dev "
        "Tier today at https://console.groq.com/settings/billing",
        "type": "tokens",
        "code": "rate_limit_exceeded",
    }
}
GROQ_TPM_MSG = (
    "Rate limit reached for model `llama-3.1-8b-instant` in organization `org_01abc` service tier "
    "`on_demand` on tokens per minute (TPM): Limit 6000, Used 5034, Requested 1443. Please try "
    "again in 4.77s. Need more tokens? Upgrade to Dev Tier today at "
    "https://console.groq.com/settings/billing"
)
GROQ_TPD_MSG = (
    "Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_01abc` service "
    "tier `on_demand` on tokens per day (TPD): Limit 100000, Used 99742, Requested 1200. Please "
    "try again in 9m38.016s. Need more tokens? Upgrade to Dev Tier today at "
    "https://console.groq.com/settings/billing"
)
GROQ_RPD_MSG = (
    "Rate limit reached for model `llama-3.1-8b-instant` in organization `org_01abc` service tier "
    "`on_demand` on requests per day (RPD): Limit 14400, Used 14400, Requested 1."
)


def err(message: str, etype: str | None = None, code: str | None = None) -> bytes:
    error: dict[str, Any] = {"message": message}
    if etype is not None:
        error["type"] = etype
    if code is not None:
        error["code"] = code
    return jbytes({"error": error})


RL = "rate_limit_exceeded"
HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
H = dict[str, str]

# adapter, status, headers, body, kind, retry_after, error_type, code
CLASSIFY = [
    # --- OpenAI 4xx
    (
        OPENAI,
        400,
        {},
        err(
            "This model's maximum context length is 128000 tokens.",
            "invalid_request_error",
            "context_length_exceeded",
        ),
        Kind.BAD_REQUEST,
        None,
        "invalid_request_error",
        "context_length_exceeded",
    ),
    (
        OPENAI,
        401,
        {},
        err(OPENAI_401, "invalid_request_error", "invalid_api_key"),
        Kind.KEY_INVALID,
        None,
        "invalid_request_error",
        "invalid_api_key",
    ),
    (
        OPENAI,
        401,
        {},
        err("You must be a member of an organization to use the API.", "invalid_request_error"),
        Kind.KEY_INVALID,
        None,
        "invalid_request_error",
        None,
    ),
    (
        OPENAI,
        403,
        {},
        err(
            "Country, region, or territory not supported",
            "request_forbidden",
            "unsupported_country_region_territory",
        ),
        Kind.KEY_INVALID,
        None,
        "request_forbidden",
        "unsupported_country_region_territory",
    ),
    (
        OPENAI,
        404,
        {},
        err(
            "The model `gpt-x` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        ),
        Kind.BAD_REQUEST,
        None,
        "invalid_request_error",
        "model_not_found",
    ),
    (
        OPENAI,
        422,
        {},
        err("Unprocessable", "invalid_request_error"),
        Kind.BAD_REQUEST,
        None,
        "invalid_request_error",
        None,
    ),
    (OPENAI, 413, {}, b"", Kind.BAD_REQUEST, None, None, None),
    (OPENAI, 498, {}, b"", Kind.BAD_REQUEST, None, None, None),
    (OPENAI, 408, {}, b"", Kind.SERVER_ERROR, None, None, None),
    (OPENAI, 409, {}, err("lock timeout"), Kind.SERVER_ERROR, None, None, None),
    # --- OpenAI 429: short-term limits
    (OPENAI, 429, {}, jbytes(OPENAI_RPM), Kind.RATE_LIMITED, 0.12, "requests", RL),
    (OPENAI, 429, {}, err(OPENAI_TPM_MSG, "tokens", RL), Kind.RATE_LIMITED, 0.644, "tokens", RL),
    (
        OPENAI,
        429,
        {"retry-after-ms": "1500"},
        err(OPENAI_TPM_MSG, "tokens", RL),
        Kind.RATE_LIMITED,
        1.5,
        "tokens",
        RL,
    ),
    (
        OPENAI,
        429,
        {"retry-after": "3"},
        err(OPENAI_TPM_MSG, "tokens", RL),
        Kind.RATE_LIMITED,
        3.0,
        "tokens",
        RL,
    ),
    (
        OPENAI,
        429,
        {
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "6m0s",
            "x-ratelimit-remaining-requests": "10",
            "x-ratelimit-reset-requests": "1s",
        },
        err("Rate limit reached.", "tokens", RL),
        Kind.RATE_LIMITED,
        360.0,
        "tokens",
        RL,
    ),
    (
        OPENAI,
        429,
        {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "12ms",
            "x-ratelimit-reset-tokens": "1s",
        },
        err("Rate limit reached.", "requests", RL),
        Kind.RATE_LIMITED,
        0.012,
        "requests",
        RL,
    ),
    (
        OPENAI,
        429,
        {"x-ratelimit-remaining-tokens": "5", "x-ratelimit-reset-tokens": "4m12.172s"},
        err("Rate limit reached on tokens per min (TPM).", "tokens", RL),
        Kind.RATE_LIMITED,
        252.172,
        "tokens",
        RL,
    ),
    (
        OPENAI,
        429,
        {},
        err("You are sending requests too quickly.", "rate_limit_error", "slow_down"),
        Kind.RATE_LIMITED,
        None,
        "rate_limit_error",
        "slow_down",
    ),
    (OPENAI, 429, {}, b"", Kind.RATE_LIMITED, None, None, None),
    # --- OpenAI 429: too large, billing, daily
    (OPENAI, 429, {}, err(OPENAI_TOO_LARGE_MSG, "tokens", RL), Kind.TOO_LARGE, None, "tokens", RL),
    (
        OPENAI,
        429,
        {},
        jbytes(OPENAI_QUOTA),
        Kind.QUOTA_SPENT,
        None,
        "insufficient_quota",
        "insufficient_quota",
    ),
    (
        OPENAI,
        429,
        {},
        err("Your credit balance is exhausted.", "insufficient_quota", "credit_balance_exhausted"),
        Kind.QUOTA_SPENT,
        None,
        "insufficient_quota",
        "credit_balance_exhausted",
    ),
    (
        OPENAI,
        429,
        {},
        err("Spend limit reached.", "insufficient_quota", "organization_spend_limit_exceeded"),
        Kind.QUOTA_SPENT,
        None,
        "insufficient_quota",
        "organization_spend_limit_exceeded",
    ),
    (
        OPENAI,
        429,
        {},
        err("Spend limit reached.", "insufficient_quota", "project_spend_limit_exceeded"),
        Kind.QUOTA_SPENT,
        None,
        "insufficient_quota",
        "project_spend_limit_exceeded",
    ),
    (
        OPENAI,
        429,
        {},
        err("Usage limit reached.", "billing_error", "organization_usage_limit_exceeded"),
        Kind.QUOTA_SPENT,
        None,
        "billing_error",
        "organization_usage_limit_exceeded",
    ),
    (
        OPENAI,
        429,
        {},
        err(
            "Rate limit reached for gpt-3.5-turbo on requests per day (RPD): Limit 200, Used 200, Requested 1. Please try again in 7m12s.",
            "requests",
            RL,
        ),
        Kind.DAILY_LIMIT,
        432.0,
        "requests",
        RL,
    ),
    # --- x-should-retry
    (
        OPENAI,
        429,
        {"x-should-retry": "false"},
        err(OPENAI_TPM_MSG, "tokens", RL),
        Kind.BAD_REQUEST,
        None,
        "tokens",
        RL,
    ),
    (
        OPENAI,
        429,
        {"x-should-retry": "false"},
        jbytes(OPENAI_QUOTA),
        Kind.QUOTA_SPENT,
        None,
        "insufficient_quota",
        "insufficient_quota",
    ),
    (OPENAI, 500, {"x-should-retry": "false"}, b"", Kind.BAD_REQUEST, None, None, None),
    (OPENAI, 503, {"x-should-retry": "false"}, b"", Kind.BAD_REQUEST, None, None, None),
    (
        OPENAI,
        400,
        {"x-should-retry": "true"},
        err("try me again"),
        Kind.SERVER_ERROR,
        None,
        None,
        None,
    ),
    # --- OpenAI 5xx
    (
        OPENAI,
        500,
        {},
        err(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        ),
        Kind.SERVER_ERROR,
        None,
        "server_error",
        None,
    ),
    (
        OPENAI,
        500,
        {},
        err("The engine is currently overloaded, please try again later"),
        Kind.OVERLOADED,
        None,
        None,
        None,
    ),
    (OPENAI, 502, {}, HTML_502, Kind.SERVER_ERROR, None, None, None),
    (
        OPENAI,
        503,
        {"retry-after": "2"},
        err("Service unavailable.", "service_unavailable_error", "server_is_overloaded"),
        Kind.OVERLOADED,
        2.0,
        "service_unavailable_error",
        "server_is_overloaded",
    ),
    (OPENAI, 504, {}, b"upstream timeout", Kind.SERVER_ERROR, None, None, None),
    (OPENAI, 520, {}, b"  ", Kind.SERVER_ERROR, None, None, None),
    # --- Groq
    (
        GROQ,
        400,
        {},
        err("'messages' must be an array", "invalid_request_error"),
        Kind.BAD_REQUEST,
        None,
        "invalid_request_error",
        None,
    ),
    (
        GROQ,
        400,
        {},
        err(
            "Organization has been restricted.", "invalid_request_error", "organization_restricted"
        ),
        Kind.KEY_INVALID,
        None,
        "invalid_request_error",
        "organization_restricted",
    ),
    (
        GROQ,
        401,
        {},
        err("Invalid API Key", "invalid_request_error", "invalid_api_key"),
        Kind.KEY_INVALID,
        None,
        "invalid_request_error",
        "invalid_api_key",
    ),
    (
        GROQ,
        403,
        {},
        err("Forbidden", "permissions_error"),
        Kind.KEY_INVALID,
        None,
        "permissions_error",
        None,
    ),
    (
        GROQ,
        404,
        {},
        err(
            "The model `x` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        ),
        Kind.BAD_REQUEST,
        None,
        "invalid_request_error",
        "model_not_found",
    ),
    (GROQ, 413, {}, jbytes(GROQ_413), Kind.TOO_LARGE, None, "tokens", RL),
    (GROQ, 413, {}, b"<html>413 Request Entity Too Large</html>", Kind.TOO_LARGE, None, None, None),
    (GROQ, 424, {}, err("Failed Dependency"), Kind.BAD_REQUEST, None, None, None),
    # a whole-second retry-after is the message's "try again in 4.77s" rounded up: the finer
    (
        GROQ,
        429,
        {"retry-after": "5"},
        err(GROQ_TPM_MSG, "tokens", RL),
        Kind.RATE_LIMITED,
        4.77,
        "tokens",
        RL,
    ),
    # ... but one that says something else than its rounding up is what counts
    (
        GROQ,
        429,
        {"retry-after": "20"},
        err(GROQ_TPM_MSG, "tokens", RL),
        Kind.RATE_LIMITED,
        20.0,
        "tokens",
        RL,
    ),
    # and retry-after-ms is fine already
    (
        GROQ,
        429,
        {"retry-after-ms": "5100", "retry-after": "6"},
        err(GROQ_TPM_MSG, "tokens", RL),
        Kind.RATE_LIMITED,
        5.1,
        "tokens",
        RL,
    ),
    (GROQ, 429, {}, err(GROQ_TPM_MSG, "tokens", RL), Kind.RATE_LIMITED, 4.77, "tokens", RL),
    (
        GROQ,
        429,
        {
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "7.66s",
            "x-ratelimit-remaining-requests": "14370",
            "x-ratelimit-reset-requests": "2m59.56s",
        },
        err("Rate limit reached on tokens per minute (TPM).", "tokens", RL),
        Kind.RATE_LIMITED,
        7.66,
        "tokens",
        RL,
    ),
    # a per-minute request limit: the requests reset header is the day's, so it is not used
    (
        GROQ,
        429,
        {"x-ratelimit-remaining-requests": "14000", "x-ratelimit-reset-requests": "2h"},
        err("Rate limit reached on requests per minute (RPM).", "requests", RL),
        Kind.RATE_LIMITED,
        None,
        "requests",
        RL,
    ),
    (GROQ, 429, {}, err(GROQ_TPD_MSG, "tokens", RL), Kind.DAILY_LIMIT, 578.016, "tokens", RL),
    (
        GROQ,
        429,
        {"retry-after": "38"},
        err(GROQ_RPD_MSG, "requests", RL),
        Kind.DAILY_LIMIT,
        38.0,
        "requests",
        RL,
    ),
    (
        GROQ,
        429,
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "23h18m29.144s"},
        err(GROQ_RPD_MSG, "requests", RL),
        Kind.DAILY_LIMIT,
        83909.144,
        "requests",
        RL,
    ),
    (
        GROQ,
        429,
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "16m33.562s"},
        err("Rate limit reached.", "tokens", RL),
        Kind.DAILY_LIMIT,
        993.562,
        "tokens",
        RL,
    ),
    # a daily limit waits for the longest wait that speaks of the day
    (
        GROQ,
        429,
        {
            "retry-after": "5",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "2h",
        },
        err(GROQ_TPM_MSG, "tokens", RL),
        Kind.DAILY_LIMIT,
        7200.0,
        "tokens",
        RL,
    ),
    (
        GROQ,
        429,
        {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1h"},
        err(GROQ_RPD_MSG, "requests", RL),
        Kind.DAILY_LIMIT,
        3600.0,
        "requests",
        RL,
    ),
    (
        GROQ,
        429,
        {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1h"},
        err(GROQ_TPD_MSG, "tokens", RL),
        Kind.DAILY_LIMIT,
        578.016,
        "tokens",
        RL,
    ),
    (
        GROQ,
        498,
        {},
        err("`flex` tier capacity exceeded. Please try again later.", "capacity_exceeded"),
        Kind.OVERLOADED,
        None,
        "capacity_exceeded",
        None,
    ),
    (
        GROQ,
        500,
        {},
        err("Internal Server Error", "internal_server_error"),
        Kind.SERVER_ERROR,
        None,
        "internal_server_error",
        None,
    ),
    (GROQ, 502, {}, HTML_502, Kind.SERVER_ERROR, None, None, None),
    (
        GROQ,
        503,
        {},
        err("Service Unavailable", "internal_server_error"),
        Kind.OVERLOADED,
        None,
        "internal_server_error",
        None,
    ),
]


@pytest.mark.parametrize(
    ("adapter", "status", "headers", "body", "kind", "retry_after", "error_type", "code"),
    CLASSIFY,
)
def test_classify(
    adapter: Adapter,
    status: int,
    headers: H,
    body: bytes,
    kind: Kind,
    retry_after: float | None,
    error_type: str | None,
    code: str | None,
) -> None:
    outcome = adapter.classify(status, headers, body, WALL)
    assert outcome.kind is kind
    assert outcome.status == status
    assert (outcome.error_type, outcome.code) == (error_type, code)
    if retry_after is None:
        assert outcome.retry_after is None
    else:
        assert outcome.retry_after == pytest.approx(retry_after)
    assert outcome.message
    if body.strip().startswith(b"{"):
        assert outcome.message == json.loads(body)["error"]["message"] or "sk-" in body.decode()


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (502, HTML_502, "HTTP 502 with a non-JSON body"),
        (504, b"upstream timeout", "HTTP 504 with a non-JSON body: upstream timeout"),
        (500, b"", "HTTP 500 with an empty body"),
        (503, b"{}", "HTTP 503 without an error object"),
        (500, b'{"error": {"type": "server_error"}}', "HTTP 500 (server_error)"),
        (429, b'{"error": "slow down please"}', "slow down please"),
        (500, b"\xff\xfe\x00garbage", "HTTP 500 with a non-JSON body"),
    ],
)
@pytest.mark.parametrize("adapter", [OPENAI, GROQ])
def test_classify_messages_without_an_error_object(
    adapter: Adapter, status: int, body: bytes, message: str
) -> None:
    assert adapter.classify(status, {}, body, WALL).message.startswith(message)


GROQ_RPM_MSG = (
    "Rate limit reached for model `llama-3.1-8b-instant` in organization `org_01abc` service tier "
    "`on_demand` on requests per minute (RPM): Limit 30, Used 30, Requested 1. Please try again "
    "in 1.2s. Need more requests? Upgrade to Dev Tier today at "
    "https://console.groq.com/settings/billing"
)

# adapter, headers, body, (limit, dimension, period), retry_after
NAMED_LIMITS = [
    (OPENAI, {}, jbytes(OPENAI_RPM), (500.0, "requests", 60.0), 0.12),
    (OPENAI, {}, err(OPENAI_TPM_MSG, "tokens", RL), (30000.0, "tokens", 60.0), 0.644),
    # the older form: "Limit: 3 / min"
    (
        OPENAI,
        {},
        err(
            "Rate limit reached for default-gpt-3.5-turbo in organization org-abc on requests "
            "per min. Limit: 3 / min. Please try again in 20s.",
            "requests",
            RL,
        ),
        (3.0, "requests", 60.0),
        20.0,
    ),
    # the emulator's: the whole-second header beside the message's milliseconds
    (
        OPENAI,
        {"retry-after": "1"},
        err(
            "Rate limit reached for gpt-4o-mini in organization org-emulator on requests per min "
            "(RPM): Limit 20, Used 20, Requested 1. Please try again in 734ms.",
            "requests",
            RL,
        ),
        (20.0, "requests", 60.0),
        0.734,
    ),
    (GROQ, {}, err(GROQ_RPM_MSG, "requests", RL), (30.0, "requests", 60.0), 1.2),
    (GROQ, {"retry-after": "5"}, err(GROQ_TPM_MSG, "tokens", RL), (6000.0, "tokens", 60.0), 4.77),
    # a per-day limit says so (the key is parked; the limit is reported all the same)
    (GROQ, {}, err(GROQ_RPD_MSG, "requests", RL), (14400.0, "requests", 86400.0), None),
    (GROQ, {}, err(GROQ_TPD_MSG, "tokens", RL), (100000.0, "tokens", 86400.0), 578.016),
    # a message that names no limit
    (OPENAI, {"retry-after": "2"}, err("Rate limit exceeded.", "requests", RL), (None,) * 3, 2.0),
]


@pytest.mark.parametrize(("adapter", "headers", "body", "named", "retry_after"), NAMED_LIMITS)
def test_classify_reports_the_limit_a_429_names(
    adapter: Adapter,
    headers: dict[str, str],
    body: bytes,
    named: tuple[float | None, str | None, float | None],
    retry_after: float | None,
) -> None:
    outcome = adapter.classify(429, headers, body, WALL)
    assert (outcome.limit, outcome.dimension, outcome.period) == named
    if retry_after is None:
        assert outcome.retry_after is None
    else:
        assert outcome.retry_after == pytest.approx(retry_after)


def test_only_rate_limits_report_a_limit() -> None:
    for status in (400, 413, 500):
        outcome = OPENAI.classify(status, {}, jbytes(OPENAI_RPM), WALL)
        assert (outcome.limit, outcome.dimension, outcome.period) == (None, None, None)


def test_classify_retry_after_http_date() -> None:
    when = email.utils.formatdate(WALL + 30, usegmt=True)
    outcome = OPENAI.classify(429, {"retry-after": when}, err(OPENAI_TPM_MSG, "tokens", RL), WALL)
    assert outcome.retry_after == 30.0  # read against the wall time passed in, not time.time()


def test_classify_reads_case_insensitive_aiohttp_headers() -> None:
    headers = CIMultiDictProxy(
        CIMultiDict({"Retry-After": "7", "X-RateLimit-Remaining-Requests": "0"})
    )
    outcome = GROQ.classify(429, headers, err(GROQ_RPD_MSG, "requests", RL), WALL)
    assert (outcome.kind, outcome.retry_after) == (Kind.DAILY_LIMIT, 7.0)


@pytest.mark.parametrize("adapter", [OPENAI, GROQ])
def test_classify_scrubs_the_key_from_a_401(adapter: Adapter) -> None:
    outcome = adapter.classify(
        401, {}, err(OPENAI_401, "invalid_request_error", "invalid_api_key"), WALL
    )
    assert outcome.kind is Kind.KEY_INVALID
    assert "abc1" not in outcome.message
    assert "*" not in outcome.message
    assert outcome.message == (
        "Incorrect API key provided: sk-...wxyz. "
        "You can find your API key at https://platform.openai.com/account/api-keys."
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key {KEY} rejected", "key sk-...fXYZ rejected"),
        ("Incorrect API key provided: sk-abc***xyz9.", "Incorrect API key provided: ***."),
        ("Incorrect API key provided: sk-1234.", "Incorrect API key provided: ***."),
        ("gsk_0123456789abcdefghijABCDEFGHIJ0123456789abcdefgh bad", "gsk...efgh bad"),
        ("AIzaSyA-0123456789abcdefghijklmnopqrstu", "AIz...rstu"),
        # the Anthropic and Google forms the claude and gemini adapters meet
        (
            "invalid x-api-key: sk-ant-api03-CANARY0123456789abcdefXYZ",
            "invalid x-api-key: sk-...fXYZ",
        ),
        (
            "Consumer 'api_key:AIzaSyCANARY0123456789abcdefghijklmnopq' has been suspended.",
            "Consumer 'api_key:AIz...nopq' has been suspended.",
        ),
        ("Authorization: Bearer opaque.token-value_123", "Authorization: Bearer opa..._123"),
        ("token ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34 leaked", "token ab1...cd34 leaked"),
        # not secrets: left alone
        ("already masked sk-...a1b2", "already masked sk-...a1b2"),
        (
            "Rate limit reached for gpt-4o in organization org-abc",
            "Rate limit reached for gpt-4o in organization org-abc",
        ),
        (
            "request req_01abc for llama-3.3-70b-versatile",
            "request req_01abc for llama-3.3-70b-versatile",
        ),
        (
            "see https://platform.openai.com/account/api-keys",
            "see https://platform.openai.com/account/api-keys",
        ),
        (
            "a task-force of risk-averse desk-bound folk",
            "a task-force of risk-averse desk-bound folk",
        ),
    ],
)
def test_scrub_secrets(text: str, expected: str) -> None:
    assert scrub_secrets(text) == expected


@pytest.mark.parametrize("status", [400, 401, 429, 500, 502])
@pytest.mark.parametrize("adapter", [OPENAI, GROQ])
def test_no_key_survives_any_error_path(adapter: Adapter, status: int) -> None:
    for body in (err(f"bad {KEY}", "x", "y"), f"<p>{KEY}</p> oops".encode(), KEY.encode()):
        outcome = adapter.classify(status, {}, body, WALL)
        assert "SECRET" not in outcome.message


# --- rate-limit headers ---------------------------------------------------------------------

OPENAI_HEADERS = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "6m0s",
}
GROQ_HEADERS = {
    "retry-after": "2",
    "x-ratelimit-limit-requests": "14400",
    "x-ratelimit-limit-tokens": "18000",
    "x-ratelimit-remaining-requests": "14370",
    "x-ratelimit-remaining-tokens": "17997",
    "x-ratelimit-reset-requests": "2m59.56s",
    "x-ratelimit-reset-tokens": "7.66s",
}


@pytest.mark.parametrize(
    ("adapter", "headers", "expected"),
    [
        (
            OPENAI,
            OPENAI_HEADERS,
            RateSnapshot(LimitInfo(60, 59, 1.0), LimitInfo(150000, 149984, 360.0), "minute"),
        ),
        (
            GROQ,
            GROQ_HEADERS,
            RateSnapshot(LimitInfo(14400, 14370, 179.56), LimitInfo(18000, 17997, 7.66), "day"),
        ),
        (
            OPENAI,
            {"x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": "9ms"},
            RateSnapshot(None, LimitInfo(None, 10, 0.009), "minute"),
        ),
        (
            GROQ,
            {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"},
            RateSnapshot(LimitInfo(None, 0, None), None, "day"),
        ),
        (OPENAI, {"content-type": "application/json", "x-request-id": "req_1"}, None),
        (GROQ, {}, None),
    ],
)
def test_rate_snapshot(
    adapter: Adapter, headers: Mapping[str, str], expected: RateSnapshot | None
) -> None:
    snapshot = adapter.rate_snapshot(headers, 1_767_225_600.0)
    if expected is None or snapshot is None:
        assert snapshot == expected
        return
    assert snapshot.requests_window == expected.requests_window
    for got, want in ((snapshot.requests, expected.requests), (snapshot.tokens, expected.tokens)):
        if want is None or got is None:
            assert got == want
        else:
            assert (got.limit, got.remaining) == (want.limit, want.remaining)
            assert got.reset_after == pytest.approx(want.reset_after)


def test_rate_snapshot_from_aiohttp_headers() -> None:
    headers = CIMultiDictProxy(CIMultiDict({k.upper(): v for k, v in OPENAI_HEADERS.items()}))
    snapshot = OPENAI.rate_snapshot(headers, 0.0)
    assert snapshot is not None
    assert snapshot.tokens is not None
    assert snapshot.tokens.reset_after == 360.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("12ms", 0.012),
        ("9ms", 0.009),
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("4m12.172s", 252.172),
        ("16m33.562s", 993.562),
        ("23h18m29.144s", 83909.144),
        ("2m59.56s", 179.56),
        ("7.66s", 7.66),
        ("9m38.016s", 578.016),
        ("1h", 3600.0),
        ("250us", 0.00025),
        ("2", 2.0),
        ("", None),
        ("soon", None),
        ("5 s", None),
        ("1x", None),
        (None, None),
    ],
)
def test_go_durations(text: str | None, seconds: float | None) -> None:
    if seconds is None:
        assert parse_go_duration(text) is None
    else:
        assert parse_go_duration(text) == pytest.approx(seconds)


# --- estimates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "params", "tokens"),
    [
        ("chat", {"messages": HI}, 2 + 4 + 256),  # ceil(6 / 4) + 4 per message + default output
        ("chat", {"messages": HI, "max_completion_tokens": 16}, 2 + 4 + 16),
        ("chat", {"messages": HI, "max_tokens": 100}, 2 + 4 + 100),
        ("chat", {"messages": HI, "max_completion_tokens": 10, "max_tokens": 100}, 2 + 4 + 10),
        ("chat", {"messages": HI, "max_tokens": 10, "n": 3}, 2 + 4 + 30),
        (
            "chat",
            {"messages": [{"role": "system", "content": "abcdefgh"}, *HI], "max_tokens": 1},
            4 + 8 + 1,
        ),
        (
            "chat",
            {
                "messages": [{"role": "user", "content": [{"type": "text", "text": "abcd"}]}],
                "max_tokens": 1,
            },
            1 + 4 + 1,
        ),
        ("chat", {"messages": "garbage"}, 256),
        ("embed", {"input": "hello world!!"}, 4),
        ("embed", {"input": ["abcd", "abcd"]}, 2),
        ("embed", {"input": None}, 1),
    ],
)
@pytest.mark.parametrize("adapter", [OPENAI, GROQ])
def test_estimate_tokens(
    adapter: Adapter, endpoint: str, params: dict[str, Any], tokens: int
) -> None:
    assert adapter.estimate_tokens(endpoint, params) == tokens
