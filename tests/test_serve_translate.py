"""OpenAI's chat API for every provider: ``"model": "claude/..."``, ``"gemini/..."``,
``"groq/..."`` through the proxy, plain and streamed, and the translation's pure parts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import KeyPlan
from keymux._types import Parsed, Usage
from keymux.emulator import Faults
from keymux.server._translate import (
    ChunkWriter,
    TranslationError,
    completion,
    finish_reason,
    split_model,
    translate_params,
)
from serve_support import (
    HI,
    GatedUpstream,
    OpenStream,
    ServeFactory,
    hello,
    parse_sse,
    plans,
    serve,
    wait_for,
)

__all__ = ["serve"]  # the fixture

CHAT = "/v1/chat/completions"


def _chunks(events: list[tuple[str | None, str]]) -> list[dict[str, Any]]:
    assert events[-1] == (None, "[DONE]"), events[-3:]
    return [json.loads(data) for _, data in events[:-1]]


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("provider", ["claude", "gemini", "groq"])
def test_plain_answer_in_openai_format(serve: ServeFactory, provider: str) -> None:
    served = serve(*plans("k1", provider=provider))
    native = {"claude": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}.get(
        provider, "llama-3.1-8b-instant"
    )
    answer = served.request("POST", CHAT, {"model": f"{provider}/{native}", "messages": HI})
    assert answer.status == 200, answer.body
    assert answer.headers["x-keymux-key"] == "k1"
    assert answer.headers["x-keymux-attempts"] == "1"
    body = answer.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": hello(provider),
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    stats = served.proxy.stats()[provider]["k1"]
    assert stats["output_tokens"] == usage["completion_tokens"]
    assert stats["current_requests"] == 0


@pytest.mark.e2e
@pytest.mark.parametrize("provider", ["claude", "gemini", "groq"])
def test_stream_in_openai_format_with_usage(serve: ServeFactory, provider: str) -> None:
    served = serve(*plans("k1", provider=provider))
    body = {
        "model": f"{provider}/" + ("llama-3.1-8b-instant" if provider == "groq" else "m"),
        "messages": HI,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if provider == "claude":
        body["model"] = "claude/claude-sonnet-4-5"
    if provider == "gemini":
        body["model"] = "gemini/gemini-2.5-flash"
    answer = served.request("POST", CHAT, body)
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"].startswith("text/event-stream")
    chunks = _chunks(answer.events())
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert _text(chunks) == hello(provider)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if provider != "groq":  # groq is Groq's own stream, passed through
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert all(c["usage"] is None for c in chunks[:-1])
        assert len({c["id"] for c in chunks}) == 1
        assert chunks[0]["model"] == body["model"]
    stats = served.proxy.stats()[provider]["k1"]
    assert stats["current_requests"] == 0
    assert stats["successes"] == 1  # the native stream was read to its end
    assert stats["output_tokens"] == usage["completion_tokens"]


@pytest.mark.e2e
def test_stream_without_include_usage_has_no_usage_chunk(serve: ServeFactory) -> None:
    served = serve(*plans("k1", provider="claude"))
    answer = served.request(
        "POST", CHAT, {"model": "claude/claude-sonnet-4-5", "messages": HI, "stream": True}
    )
    chunks = _chunks(answer.events())
    assert all(c["choices"] for c in chunks)  # OpenAI sends the usage chunk only when asked
    assert all("usage" not in c for c in chunks)


@pytest.mark.e2e
def test_native_request_is_what_the_adapter_writes(serve: ServeFactory) -> None:
    served = serve(*plans("c1", provider="claude"), *plans("m1", provider="gemini"))
    messages = [{"role": "system", "content": "be brief"}, *HI]
    common = {"messages": messages, "max_tokens": 20, "temperature": 0.5, "user": "u-1"}
    common["stream_options"] = {"include_usage": True}
    assert (
        served.request("POST", CHAT, {"model": "claude/claude-sonnet-4-5", **common}).status == 200
    )
    sent = served.rig.server.bodies("/v1/messages")[-1]
    assert sent["system"] == "be brief"
    assert sent["messages"] == HI
    assert sent["max_tokens"] == 20
    assert sent["temperature"] == 0.5
    assert sent["metadata"] == {"user_id": "u-1"}
    assert "stream_options" not in sent
    assert "user" not in sent
    assert (
        served.request("POST", CHAT, {"model": "gemini/gemini-2.5-flash", **common}).status == 200
    )
    sent = served.rig.server.bodies(":generateContent")[-1]
    assert sent["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert sent["generationConfig"] == {"maxOutputTokens": 20, "temperature": 0.5}
    assert "user" not in sent
    assert "stream_options" not in sent


@pytest.mark.e2e
def test_groq_body_is_forwarded_with_the_model_renamed(serve: ServeFactory) -> None:
    served = serve(*plans("g1", provider="groq"))
    body = {"model": "groq/llama-3.1-8b-instant", "messages": HI, "seed": 7, "x_extra": 1}
    assert served.request("POST", CHAT, body).status == 200
    last = served.rig.server.requests[-1]
    assert last.path == "/openai/v1/chat/completions"
    assert last.body == {**body, "model": "llama-3.1-8b-instant"}


@pytest.mark.e2e
def test_untranslatable_parameters_are_refused_before_any_key(serve: ServeFactory) -> None:
    served = serve(*plans("c1", provider="claude"))
    body = {
        "model": "claude/claude-sonnet-4-5",
        "messages": HI,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "n": 2,
    }
    answer = served.request("POST", CHAT, body)
    assert answer.status == 400
    message = answer.json()["error"]["message"]
    assert "tools" in message
    assert "n (only one choice" in message
    bad_role = served.request(
        "POST", CHAT, {"model": "claude/x", "messages": [{"role": "tool", "content": "r"}]}
    )
    assert bad_role.status == 400
    assert "role" in bad_role.json()["error"]["message"]
    assert served.rig.server.requests == []  # nothing reached the provider


@pytest.mark.e2e
def test_upstream_error_comes_back_in_openai_shape(serve: ServeFactory) -> None:
    served = serve(*plans("c1", provider="claude"))
    # Anthropic rejects an empty message list with its own 400: keymux passes the message on
    body = {"model": "claude/claude-sonnet-4-5", "messages": HI, "max_tokens": 0}
    answer = served.request("POST", CHAT, body)
    assert answer.status == 400
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "max_tokens" in error["message"]


@pytest.mark.e2e
def test_provider_without_keys_is_503_in_openai_shape(serve: ServeFactory) -> None:
    served = serve(*plans("k1"))
    answer = served.request("POST", CHAT, {"model": "gemini/gemini-2.5-flash", "messages": HI})
    assert answer.status == 503
    assert "no gemini keys are configured" in answer.json()["error"]["message"]
    assert answer.headers["x-should-retry"] == "false"


@pytest.mark.e2e
def test_revoked_key_fails_over_in_translation(serve: ServeFactory) -> None:
    served = serve(KeyPlan("gemini", "bad", faults=Faults(revoked=True)), KeyPlan("gemini", "good"))
    for _ in range(2):
        answer = served.request("POST", CHAT, {"model": "gemini/gemini-2.5-flash", "messages": HI})
        assert answer.status == 200
        assert answer.headers["x-keymux-key"] == "good"


@pytest.fixture
def upstream() -> Iterator[GatedUpstream]:
    gated = GatedUpstream()
    yield gated
    gated.stop()


MODELS = {"claude": "claude/claude-gated", "gemini": "gemini/gemini-gated"}


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["ok", "error", "cut"])
@pytest.mark.parametrize("provider", ["claude", "gemini"])
def test_stream_translated_as_it_arrives(
    serve: ServeFactory, upstream: GatedUpstream, provider: str, mode: str
) -> None:
    served = serve()
    served.proxy.mux.add_key(
        provider,
        "gated",
        f"gated-{provider}-0123456789abcdef",
        base_url=upstream.base_url(provider),
    )
    body = {"model": MODELS[provider], "messages": HI, "stream": True, "x_gate_mode": mode}
    body["stream_options"] = {"include_usage": True}
    stream = OpenStream(served.url + CHAT, body)
    try:
        assert stream.status == 200
        # the first delta reaches the caller while the provider still holds the rest
        stream.until(b'"content":"first "')
        assert served.proxy.in_flight(provider, "gated") == 1
        upstream.gate.set()
        data, cut = stream.rest()
    finally:
        stream.close()
    events = parse_sse(data)
    if mode == "ok":
        assert not cut
        chunks = _chunks(events)
        assert _text(chunks) == "first second"
        assert chunks[-1]["usage"]["completion_tokens"] == 2
    else:
        # a broken stream ends in OpenAI's error chunk and a cut connection, never [DONE]
        assert cut
        assert (None, "[DONE]") not in events
        error = json.loads(events[-1][1])["error"]
        assert error["message"]
        assert "gated-" not in error["message"]
    wait_for(lambda: served.proxy.in_flight(provider, "gated") == 0)


# --- the pure parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", None),
        ("ft:gpt-4o:org::id", None),
        ("claude/claude-sonnet-4-5", ("claude", "claude-sonnet-4-5")),
        ("anthropic/claude-haiku-4-5", ("claude", "claude-haiku-4-5")),
        ("gemini/gemini-2.5-flash", ("gemini", "gemini-2.5-flash")),
        ("Gemini/models/gemini-2.5-pro", ("gemini", "models/gemini-2.5-pro")),
        ("groq/openai/gpt-oss-120b", ("groq", "openai/gpt-oss-120b")),
        ("openai/gpt-oss-120b", None),  # OpenAI's own model name, not a prefix
        ("meta-llama/llama-4", None),
        (None, None),
        (42, None),
    ],
)
def test_split_model(model: Any, expected: Any) -> None:
    assert split_model(model) == expected


def test_split_model_without_a_name() -> None:
    with pytest.raises(TranslationError, match="names no model"):
        split_model("claude/")


def test_translate_params_drops_maps_refuses_and_passes() -> None:
    body = {
        "model": "claude/x",
        "messages": HI,
        "stream": True,
        "stream_options": {"include_usage": True},
        "store": False,
        "user": "u",
        "max_completion_tokens": 9,
        "top_k": 5,  # Anthropic's own: passed on
        "presence_penalty": 0,  # the default: harmless
        "tool_choice": "auto",  # no tools: asks for nothing
        "logprobs": False,
    }
    params, include_usage = translate_params("claude", body)
    assert include_usage is True
    assert params == {
        "model": "claude/x",
        "messages": HI,
        "metadata": {"user_id": "u"},
        "max_completion_tokens": 9,
        "top_k": 5,
    }
    params, include_usage = translate_params(
        "gemini", {"messages": HI, "seed": 3, "presence_penalty": 0.5, "user": "u"}
    )
    assert include_usage is False
    assert params == {"messages": HI, "seed": 3, "presence_penalty": 0.5}


@pytest.mark.parametrize(
    ("provider", "extra", "named"),
    [
        ("claude", {"seed": 1}, "seed"),
        ("claude", {"presence_penalty": 0.4}, "presence_penalty"),
        ("claude", {"response_format": {"type": "json_object"}}, "response_format"),
        ("gemini", {"tools": [{"type": "function"}]}, "tools"),
        ("gemini", {"tool_choice": "required"}, "tool_choice"),
        ("gemini", {"logprobs": True}, "logprobs"),
        ("gemini", {"n": 3}, "n (only one choice"),
        ("claude", {"logit_bias": {"1": 2}}, "logit_bias"),
        ("claude", {"modalities": ["text", "audio"]}, "modalities"),
    ],
)
def test_translate_params_refusals(provider: str, extra: dict[str, Any], named: str) -> None:
    with pytest.raises(TranslationError) as refused:
        translate_params(provider, {"messages": HI, **extra})
    assert named in str(refused.value)


def test_claude_accepts_its_defaults() -> None:
    params, _ = translate_params(
        "claude", {"messages": HI, "n": 1, "response_format": {"type": "text"}, "seed": None}
    )
    assert params == {"messages": HI}


@pytest.mark.parametrize(
    ("provider", "native", "openai"),
    [
        ("claude", "end_turn", "stop"),
        ("claude", "max_tokens", "length"),
        ("claude", "tool_use", "tool_calls"),
        ("claude", "refusal", "content_filter"),
        ("claude", None, "stop"),
        ("gemini", "STOP", "stop"),
        ("gemini", "MAX_TOKENS", "length"),
        ("gemini", "SAFETY", "content_filter"),
        ("gemini", "SOMETHING_NEW", "stop"),
    ],
)
def test_finish_reason(provider: str, native: str | None, openai: str) -> None:
    assert finish_reason(provider, native) == openai


def test_completion_shape() -> None:
    parsed = Parsed(text="hi", model="claude-x-1", usage=Usage(3, 4), finish_reason="max_tokens")
    body = json.loads(completion("claude", "claude-x", parsed, {"id": "msg_1"}))
    assert body["id"] == "chatcmpl-msg_1"
    assert body["model"] == "claude/claude-x-1"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_chunk_writer_shapes() -> None:
    writer = ChunkWriter("gemini", "gemini-2.5-flash", include_usage=True)
    role = json.loads(writer.role()[6:])
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert role["usage"] is None
    delta = json.loads(writer.delta("x")[6:])
    assert delta["choices"][0]["delta"] == {"content": "x"}
    end = writer.end(Parsed(text="x", model=None, usage=Usage(1, 2), finish_reason="STOP"))
    parts = [p for p in end.split(b"\n\n") if p]
    assert json.loads(parts[0][6:])["choices"][0]["finish_reason"] == "stop"
    assert json.loads(parts[1][6:])["usage"]["total_tokens"] == 3
    assert parts[2] == b"data: [DONE]"
    error = json.loads(ChunkWriter.error("boom")[6:])
    assert error["error"]["message"] == "boom"
