"""The emulator over a real loopback socket: answers, streams, strictness, limits, faults, control.

Time is a FakeClock starting at 960.0 (a multiple of the 60 s window), so windows are exact.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import signal
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from keymux._clock import FakeClock
from keymux._headers import parse_go_duration, parse_proto_duration, parse_rfc3339
from keymux.emulator import Emulator, EmulatorKey, Faults, serve
from keymux.emulator._openai import OpenAIDialect

OPENAI_KEY = "sk-emu-openai-000000000001"
GROQ_KEY = "gsk_emu_groq_000000000001"
CLAUDE_KEY = "sk-ant-emu-claude-000000001"
GEMINI_KEY = "AIza-emu-gemini-00000000001"
KEYS = {"openai": OPENAI_KEY, "groq": GROQ_KEY, "claude": CLAUDE_KEY, "gemini": GEMINI_KEY}
PROVIDERS = list(KEYS)
START = 960.0  # 16 * 60: the clock starts at the beginning of a window

MakeEmu = Callable[..., Awaitable[Emulator]]


class Answer:
    """One HTTP answer, read completely."""

    def __init__(self, status: int, headers: Any, raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw

    def json(self) -> Any:
        return json.loads(self.raw)


# --- fixtures -------------------------------------------------------------------------------


class ParkingClock(FakeClock):
    """A FakeClock that tells when someone starts waiting on it (a timer is set)."""

    def __init__(self, start: float) -> None:
        super().__init__(start=start)
        self._parked = asyncio.Event()

    def call_at(self, when: float, callback: object) -> Any:
        handle = super().call_at(when, callback)
        self._parked.set()
        return handle

    async def parked(self, timeout: float = 5.0) -> None:
        """Return once a timer has been set since the last call; fail after ``timeout``."""
        await asyncio.wait_for(self._parked.wait(), timeout)
        self._parked.clear()


@pytest.fixture
def clock() -> ParkingClock:
    return ParkingClock(start=START)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
async def make_emu(clock: FakeClock) -> AsyncIterator[MakeEmu]:
    started: list[Emulator] = []

    async def factory(*keys: EmulatorKey, **options: Any) -> Emulator:
        options.setdefault("clock", clock)
        emu = Emulator(list(keys), **options)
        await emu.start()
        started.append(emu)
        return emu

    yield factory
    for emu in started:
        await emu.stop()


# --- request helpers ------------------------------------------------------------------------


def auth_headers(provider: str, key: str) -> dict[str, str]:
    if provider in ("openai", "groq"):
        return {"Authorization": f"Bearer {key}"}
    if provider == "claude":
        return {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return {"x-goog-api-key": key}


def chat_request(
    emu: Emulator,
    provider: str,
    *,
    text: str = "Say hi",
    stream: bool = False,
    max_tokens: int | None = None,
    model: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """(url, body) of a chat request in the provider's own format."""
    base = emu.base_url(provider)
    if provider in ("openai", "groq"):
        path = "/chat/completions" if provider == "openai" else "/openai/v1/chat/completions"
        body: dict[str, Any] = {"messages": [{"role": "user", "content": text}]}
        if model:
            body["model"] = model
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if max_tokens is not None:
            body["max_completion_tokens"] = max_tokens
        return base + path, body
    if provider == "claude":
        body = {
            "model": model or "claude-sonnet-4-5",
            "max_tokens": max_tokens or 64,
            "messages": [{"role": "user", "content": text}],
        }
        if stream:
            body["stream"] = True
        return base + "/v1/messages", body
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if max_tokens is not None:
        body["generationConfig"] = {"maxOutputTokens": max_tokens}
    return f"{base}/v1beta/models/{model or 'gemini-2.5-flash'}:{method}", body


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
    data: bytes | None = None,
) -> Answer:
    async with session.request(method, url, headers=headers, json=json_body, data=data) as resp:
        return Answer(resp.status, resp.headers, await resp.read())


async def chat(
    session: aiohttp.ClientSession,
    emu: Emulator,
    provider: str,
    key: str | None = None,
    **options: Any,
) -> Answer:
    url, body = chat_request(emu, provider, **options)
    headers = auth_headers(provider, key or KEYS[provider])
    return await send(session, "POST", url, headers=headers, json_body=body)


def parse_sse(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) per event."""
    events: list[tuple[str | None, str]] = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        events.append((name, "\n".join(data)))
    return events


def reply_text(provider: str, body: dict[str, Any]) -> str:
    if provider in ("openai", "groq"):
        return str(body["choices"][0]["message"]["content"])
    if provider == "claude":
        return str(body["content"][0]["text"])
    return str(body["candidates"][0]["content"]["parts"][0]["text"])


# --- answers --------------------------------------------------------------------------------


async def test_base_urls(make_emu: MakeEmu) -> None:
    emu = await make_emu()
    root = emu.url
    assert root.startswith("http://127.0.0.1:")
    assert emu.base_url("openai") == root + "/v1"
    assert emu.base_url("groq") == root
    assert emu.base_url("claude") == emu.base_url("anthropic") == root
    assert emu.base_url("gemini") == root


async def test_openai_chat(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY))
    answer = await chat(session, emu, "openai", text="What is   up?", model="gpt-4o")
    assert answer.status == 200
    assert answer.headers["x-request-id"].startswith("req_")
    assert "x-ratelimit-limit-requests" not in answer.headers  # no limits configured
    body = answer.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == (
        "Hello from the keymux emulator (openai). You said: What is up?"
    )
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["completion_tokens"] == 11  # one token per word
    assert usage["prompt_tokens"] == 3 + 4 + math.ceil(len("What is   up?") / 4)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_openai_chat_is_cut_at_max_tokens(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY))
    body = (await chat(session, emu, "openai", max_tokens=3)).json()
    assert body["choices"][0]["message"]["content"] == "Hello from the"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


async def test_openai_stream_with_usage(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY))
    answer = await chat(session, emu, "openai", stream=True)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    events = parse_sse(answer.raw)
    assert all(name is None for name, _ in events)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello from the keymux emulator (openai). You said: Say hi"
    finish = chunks[-2]
    assert finish["choices"][0]["finish_reason"] == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 10
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_groq_chat_and_stream(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("groq", GROQ_KEY))
    body = (await chat(session, emu, "groq")).json()
    assert body["model"] == "llama-3.1-8b-instant"
    assert body["x_groq"]["id"].startswith("req_")
    assert body["usage"]["total_time"] >= 0
    url, req = chat_request(emu, "groq", stream=True)
    del req["stream_options"]
    answer = await send(session, "POST", url, headers=auth_headers("groq", GROQ_KEY), json_body=req)
    events = parse_sse(answer.raw)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    request_id = answer.headers["x-request-id"]
    assert chunks[0]["x_groq"] == {"id": request_id}
    assert all("x_groq" not in c for c in chunks[1:-1])
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["x_groq"]["id"] == request_id
    assert final["x_groq"]["usage"]["completion_tokens"] == len(chunks) - 2
    assert all("usage" not in c for c in chunks)  # include_usage was not asked for


async def test_claude_messages(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("claude", CLAUDE_KEY))
    answer = await chat(session, emu, "claude")
    assert answer.status == 200
    assert answer.headers["request-id"].startswith("req_")
    body = answer.json()
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["content"][0]["type"] == "text"
    assert body["content"][0]["text"].startswith("Hello from the keymux emulator (claude).")
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["output_tokens"] == 10
    url, req = chat_request(emu, "claude")
    req["system"] = "You are terse and precise."
    with_system = await send(
        session, "POST", url, headers=auth_headers("claude", CLAUDE_KEY), json_body=req
    )
    extra = with_system.json()["usage"]["input_tokens"] - body["usage"]["input_tokens"]
    assert extra == 4 + math.ceil(len("You are terse and precise.") / 4)


async def test_claude_stream_event_order(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("claude", CLAUDE_KEY))
    answer = await chat(session, emu, "claude", stream=True, max_tokens=4)
    events = parse_sse(answer.raw)
    names = [name for name, _ in events]
    assert names == (
        ["message_start", "content_block_start", "ping"]
        + ["content_block_delta"] * 4
        + ["content_block_stop", "message_delta", "message_stop"]
    )
    for name, data in events:
        assert json.loads(data)["type"] == name
    start = json.loads(events[0][1])["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    deltas = [json.loads(d)["delta"]["text"] for n, d in events if n == "content_block_delta"]
    assert "".join(deltas) == "Hello from the keymux"
    delta = json.loads(events[-2][1])
    assert delta["delta"]["stop_reason"] == "max_tokens"
    assert delta["usage"]["output_tokens"] == 4
    assert b"[DONE]" not in answer.raw


async def test_gemini_generate(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("gemini", GEMINI_KEY, rpm=100, tpm=10_000))
    answer = await chat(session, emu, "gemini")
    assert answer.status == 200
    assert not any(
        h.lower().startswith(("x-ratelimit", "retry-after", "x-request-id")) for h in answer.headers
    )
    body = answer.json()
    candidate = body["candidates"][0]
    assert candidate["content"]["role"] == "model"
    assert candidate["finishReason"] == "STOP"
    usage = body["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert body["modelVersion"] == "gemini-2.5-flash"
    assert body["responseId"]


async def test_gemini_stream_sse_and_array(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("gemini", GEMINI_KEY))
    answer = await chat(session, emu, "gemini", stream=True)
    events = parse_sse(answer.raw)
    assert all(name is None for name, _ in events)
    chunks = [json.loads(data) for _, data in events]  # no [DONE]: every event is JSON
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    final = chunks[-1]
    assert final["candidates"][0]["finishReason"] == "STOP"
    assert final["usageMetadata"]["candidatesTokenCount"] == len(chunks) - 1
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == "Hello from the keymux emulator (gemini). You said: Say hi"
    url, body = chat_request(emu, "gemini", stream=True)
    array = await send(
        session,
        "POST",
        url.replace("?alt=sse", ""),
        headers=auth_headers("gemini", GEMINI_KEY),
        json_body=body,
    )
    assert array.headers["Content-Type"].startswith("application/json")
    items = array.json()
    assert isinstance(items, list)
    assert len(items) == len(chunks)
    assert items[-1]["candidates"][0]["finishReason"] == "STOP"


async def test_gemini_key_in_query(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("gemini", GEMINI_KEY))
    url, body = chat_request(emu, "gemini")
    answer = await send(session, "POST", f"{url}?key={GEMINI_KEY}", json_body=body)
    assert answer.status == 200


async def test_openai_embeddings_float_and_base64(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY))
    url = emu.base_url("openai") + "/embeddings"
    headers = auth_headers("openai", OPENAI_KEY)
    req = {"model": "text-embedding-3-small", "input": ["hello", "world", "hello"]}
    floats = (await send(session, "POST", url, headers=headers, json_body=req)).json()
    assert floats["object"] == "list"
    assert floats["model"] == "text-embedding-3-small"
    assert floats["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    vectors = [item["embedding"] for item in floats["data"]]
    assert [item["index"] for item in floats["data"]] == [0, 1, 2]
    assert len(vectors[0]) == 8
    assert vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(sum(v * v for v in vectors[0]), 1.0, rel_tol=1e-5)
    b64 = (
        await send(
            session, "POST", url, headers=headers, json_body={**req, "encoding_format": "base64"}
        )
    ).json()
    for item, expected in zip(b64["data"], vectors, strict=True):
        raw = base64.b64decode(item["embedding"])
        decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
        assert decoded == pytest.approx(expected, abs=1e-6)
    sized = (
        await send(
            session, "POST", url, headers=headers, json_body={"input": "hello", "dimensions": 32}
        )
    ).json()
    assert len(sized["data"][0]["embedding"]) == 32


async def test_gemini_embed_and_batch(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("gemini", GEMINI_KEY))
    base = emu.base_url("gemini") + "/v1beta/models/gemini-embedding-001"
    headers = auth_headers("gemini", GEMINI_KEY)
    single = await send(
        session,
        "POST",
        base + ":embedContent",
        headers=headers,
        json_body={"content": {"parts": [{"text": "hello"}]}},
    )
    assert single.status == 200
    values = single.json()["embedding"]["values"]
    assert len(values) == 8
    batch = await send(
        session,
        "POST",
        base + ":batchEmbedContents",
        headers=headers,
        json_body={
            "requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello"}]}},
                {
                    "model": "models/gemini-embedding-001",
                    "content": {"parts": [{"text": "world"}]},
                    "outputDimensionality": 16,
                },
            ]
        },
    )
    embeddings = batch.json()["embeddings"]
    assert len(embeddings) == 2
    assert embeddings[0]["values"][:8] != embeddings[1]["values"][:8]
    assert len(embeddings[1]["values"]) == 16
    missing = await send(
        session, "POST", base + ":batchEmbedContents", headers=headers, json_body={}
    )
    assert missing.status == 400
    assert missing.json()["error"]["status"] == "INVALID_ARGUMENT"


async def test_counting_tokens(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    """Anthropic's count_tokens and Gemini's countTokens: the prompt's tokens, faults as for
    any request, and none of the key's chat limits spent (the providers limit them apart)."""
    emu = await make_emu(
        EmulatorKey("claude", CLAUDE_KEY, rpm=1), EmulatorKey("gemini", GEMINI_KEY, rpm=1)
    )
    claude_url = emu.base_url("claude") + "/v1/messages/count_tokens"
    claude_headers = auth_headers("claude", CLAUDE_KEY)
    short = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}
    long = {**short, "system": "be brief " * 20}
    counts = []
    for body in (short, long, short):
        answer = await send(session, "POST", claude_url, headers=claude_headers, json_body=body)
        assert answer.status == 200, answer.body
        counts.append(answer.json()["input_tokens"])
    assert 0 < counts[0] < counts[1]
    assert counts[2] == counts[0]
    bad = await send(session, "POST", claude_url, headers=claude_headers, json_body={})
    assert bad.status == 400
    assert bad.json()["error"]["message"] == "messages: Field required"

    gemini_url = emu.base_url("gemini") + "/v1beta/models/gemini-2.5-flash:countTokens"
    gemini_headers = auth_headers("gemini", GEMINI_KEY)
    contents = {"contents": [{"role": "user", "parts": [{"text": "hi there"}]}]}
    plain = await send(session, "POST", gemini_url, headers=gemini_headers, json_body=contents)
    assert plain.status == 200, plain.body
    total = plain.json()["totalTokens"]
    assert total > 0
    assert plain.json()["promptTokensDetails"] == [{"modality": "TEXT", "tokenCount": total}]
    wrapped = await send(
        session,
        "POST",
        gemini_url,
        headers=gemini_headers,
        json_body={"generateContentRequest": {"model": "models/gemini-2.5-flash", **contents}},
    )
    assert wrapped.json()["totalTokens"] == total
    empty = await send(session, "POST", gemini_url, headers=gemini_headers, json_body={})
    assert empty.status == 400
    assert empty.json()["error"]["status"] == "INVALID_ARGUMENT"

    # rpm=1 and several counts so far: the one chat request a minute is still there
    for provider, key in (("claude", CLAUDE_KEY), ("gemini", GEMINI_KEY)):
        assert (await chat(session, emu, provider, key)).status == 200
        assert (await chat(session, emu, provider, key)).status == 429
    emu.set_faults(CLAUDE_KEY, revoked=True)
    revoked = await send(session, "POST", claude_url, headers=claude_headers, json_body=short)
    assert revoked.status == 401


async def test_models_endpoints(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(*(EmulatorKey(p, k) for p, k in KEYS.items()))
    openai = (
        await send(
            session,
            "GET",
            emu.base_url("openai") + "/models",
            headers=auth_headers("openai", OPENAI_KEY),
        )
    ).json()
    assert openai["object"] == "list"
    assert {
        "id": "gpt-4o-mini",
        "object": "model",
        "created": 1721172741,
        "owned_by": "system",
    } in openai["data"]
    one = (
        await send(
            session,
            "GET",
            emu.base_url("openai") + "/models/gpt-4o",
            headers=auth_headers("openai", OPENAI_KEY),
        )
    ).json()
    assert one["id"] == "gpt-4o"
    assert one["object"] == "model"
    # the same path with x-api-key is Anthropic's
    claude = (
        await send(
            session,
            "GET",
            emu.base_url("claude") + "/v1/models",
            headers=auth_headers("claude", CLAUDE_KEY),
        )
    ).json()
    assert claude["has_more"] is False
    assert claude["first_id"] == claude["data"][0]["id"]
    assert all(m["type"] == "model" for m in claude["data"])
    groq = (
        await send(
            session,
            "GET",
            emu.base_url("groq") + "/openai/v1/models",
            headers=auth_headers("groq", GROQ_KEY),
        )
    ).json()
    assert groq["data"][0]["context_window"] == 131072
    gemini = (
        await send(
            session,
            "GET",
            emu.base_url("gemini") + "/v1beta/models",
            headers=auth_headers("gemini", GEMINI_KEY),
        )
    ).json()
    assert any(m["name"] == "models/gemini-2.5-flash" for m in gemini["models"])
    flash = (
        await send(
            session,
            "GET",
            emu.base_url("gemini") + "/v1beta/models/gemini-2.5-flash",
            headers=auth_headers("gemini", GEMINI_KEY),
        )
    ).json()
    assert flash["name"] == "models/gemini-2.5-flash"
    assert "generateContent" in flash["supportedGenerationMethods"]


# --- strictness -----------------------------------------------------------------------------


async def test_claude_requires_anthropic_version(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("claude", CLAUDE_KEY))
    url, body = chat_request(emu, "claude")
    answer = await send(session, "POST", url, headers={"x-api-key": CLAUDE_KEY}, json_body=body)
    assert answer.status == 400
    error = answer.json()
    assert error["type"] == "error"
    assert error["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }
    assert error["request_id"] == answer.headers["request-id"]


async def test_claude_requires_max_tokens(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("claude", CLAUDE_KEY))
    url, body = chat_request(emu, "claude")
    del body["max_tokens"]
    answer = await send(
        session, "POST", url, headers=auth_headers("claude", CLAUDE_KEY), json_body=body
    )
    assert answer.status == 400
    assert answer.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


@pytest.mark.parametrize(
    ("auth", "version"),
    [
        ({"x-api-key": CLAUDE_KEY}, "2023-06-01"),  # anthropic 0.x
        ({"Authorization": f"Bearer {CLAUDE_KEY}"}, "2026-10-21"),  # anthropic 2.x
        ({"x-api-key": CLAUDE_KEY}, "2026-10-21"),
        ({"Authorization": f"bearer {CLAUDE_KEY}"}, "2023-06-01"),
    ],
    ids=["x-api-key", "bearer", "x-api-key-2026", "bearer-lowercase"],
)
async def test_claude_accepts_both_auth_forms_and_versions(
    auth: dict[str, str], version: str, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("claude", CLAUDE_KEY, rpm=3))
    url, body = chat_request(emu, "claude")
    headers = {**auth, "anthropic-version": version}
    answer = await send(session, "POST", url, headers=headers, json_body=body)
    assert answer.status == 200, answer.raw
    assert answer.json()["type"] == "message"
    assert answer.headers["anthropic-ratelimit-requests-remaining"] == "2"
    assert emu.stats()["keys"]["sk-...0001"]["ok"] == 1


async def test_claude_refuses_wrong_bearer_and_unknown_version(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("claude", CLAUDE_KEY))
    url, body = chat_request(emu, "claude")
    wrong = {"Authorization": "Bearer sk-ant-not-this-one-0000", "anthropic-version": "2026-10-21"}
    answer = await send(session, "POST", url, headers=wrong, json_body=body)
    assert answer.status == 401
    assert answer.json()["error"] == {
        "type": "authentication_error",
        "message": "invalid x-api-key",
    }
    basic = {"Authorization": f"Basic {CLAUDE_KEY}", "anthropic-version": "2026-10-21"}
    answer = await send(session, "POST", url, headers=basic, json_body=body)
    assert answer.status == 401
    assert answer.json()["error"]["message"] == "x-api-key header is required"
    old = {"x-api-key": CLAUDE_KEY, "anthropic-version": "2020-01-01"}
    answer = await send(session, "POST", url, headers=old, json_body=body)
    assert answer.status == 400
    assert answer.json()["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: '2020-01-01' is not a valid version",
    }


async def test_gemini_requires_contents(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("gemini", GEMINI_KEY))
    url, _ = chat_request(emu, "gemini")
    answer = await send(
        session,
        "POST",
        url,
        headers=auth_headers("gemini", GEMINI_KEY),
        json_body={"generationConfig": {}},
    )
    assert answer.status == 400
    error = answer.json()["error"]
    assert error["code"] == 400
    assert error["status"] == "INVALID_ARGUMENT"
    assert "contents is not specified" in error["message"]


async def test_openai_requires_messages(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY))
    answer = await send(
        session,
        "POST",
        emu.base_url("openai") + "/chat/completions",
        headers=auth_headers("openai", OPENAI_KEY),
        json_body={"model": "x"},
    )
    assert answer.status == 400
    assert answer.json()["error"] == {
        "message": "Missing required parameter: 'messages'.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "missing_required_parameter",
    }


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_malformed_request_json(
    provider: str, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey(provider, KEYS[provider]))
    url, _ = chat_request(emu, provider)
    headers = {**auth_headers(provider, KEYS[provider]), "Content-Type": "application/json"}
    answer = await send(session, "POST", url, headers=headers, data=b'{"messages": [')
    assert answer.status == 400
    body = answer.json()
    if provider == "claude":
        assert body["error"]["type"] == "invalid_request_error"
    elif provider == "gemini":
        assert body["error"]["status"] == "INVALID_ARGUMENT"
    else:
        assert body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_unknown_key(
    provider: str, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey(provider, KEYS[provider]))
    stranger = "sk-not-registered-anywhere-9876"
    answer = await chat(session, emu, provider, key=stranger)
    assert stranger.encode() not in answer.raw
    body = answer.json()
    if provider == "openai":
        assert answer.status == 401
        assert body["error"]["code"] == "invalid_api_key"
        assert body["error"]["type"] == "invalid_request_error"
        assert "sk-...9876" in body["error"]["message"]
    elif provider == "groq":
        assert answer.status == 401
        assert body["error"] == {
            "message": "Invalid API Key",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    elif provider == "claude":
        assert answer.status == 401
        assert body["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    else:
        assert answer.status == 400
        error = body["error"]
        assert error["status"] == "INVALID_ARGUMENT"
        assert error["message"] == "API key not valid. Please pass a valid API key."
        assert error["details"][0]["reason"] == "API_KEY_INVALID"
        assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert emu.stats()["total"]["unknown_key"] == 1


async def test_key_of_another_provider_is_invalid(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY))
    answer = await chat(session, emu, "groq", key=OPENAI_KEY)
    assert answer.status == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"


async def test_missing_credentials(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY), EmulatorKey("gemini", GEMINI_KEY))
    url, body = chat_request(emu, "openai")
    answer = await send(session, "POST", url, json_body=body)
    assert answer.status == 401
    assert answer.json()["error"]["message"].startswith("You didn't provide an API key.")
    url, body = chat_request(emu, "gemini")
    answer = await send(session, "POST", url, json_body=body)
    assert answer.status == 403
    assert answer.json()["error"]["status"] == "PERMISSION_DENIED"


async def test_accept_any_key(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(accept_any_key=True)
    secret = "sk-anything-goes-0000000042"
    for provider in PROVIDERS:
        assert (await chat(session, emu, provider, key=secret)).status == 200
    stats = emu.stats()
    assert sorted(entry["provider"] for entry in stats["keys"].values()) == sorted(PROVIDERS)
    assert secret not in json.dumps(stats)


async def test_accept_any_key_with_default_limits(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(accept_any_key=True, default_limits={"rpm": 1, "tpm": None})
    first = await chat(session, emu, "openai", key="sk-whatever-0000000001")
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    assert (await chat(session, emu, "openai", key="sk-whatever-0000000001")).status == 429
    assert (await chat(session, emu, "openai", key="sk-whatever-0000000002")).status == 200
    with pytest.raises(ValueError):
        Emulator(default_limits={"rpm": 0})
    with pytest.raises(ValueError):
        Emulator(default_limits={"rps": 1})


# --- limits ---------------------------------------------------------------------------------


async def test_rpm_window(
    clock: FakeClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    await clock.set(1019.266)  # 0.734 s before the window ends
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, rpm=20), rate_model="fixed")
    for n in range(20):
        answer = await chat(session, emu, "openai")
        assert answer.status == 200
        assert answer.headers["x-ratelimit-limit-requests"] == "20"
        assert answer.headers["x-ratelimit-remaining-requests"] == str(19 - n)
        assert answer.headers["x-ratelimit-reset-requests"] == "734ms"
        assert "x-ratelimit-limit-tokens" not in answer.headers  # tpm not configured
    refused = await chat(session, emu, "openai")
    assert refused.status == 429
    assert refused.json() == {
        "error": {
            "message": "Rate limit reached for gpt-4o-mini in organization org-emulator on requests "
            "per min (RPM): Limit 20, Used 20, Requested 1. Please try again in 734ms. "
            "Visit https://platform.openai.com/account/rate-limits to learn more.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert emu.total_429 == 1
    await clock.advance(0.734)
    again = await chat(session, emu, "openai")
    assert again.status == 200
    assert again.headers["x-ratelimit-remaining-requests"] == "19"
    assert again.headers["x-ratelimit-reset-requests"] == "1m0s"


async def test_reset_headers_count_down(
    clock: FakeClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(
        EmulatorKey("openai", OPENAI_KEY, rpm=100, tpm=100_000), rate_model="fixed"
    )
    seen: list[float] = []
    for step in (0.0, 0.5, 30.0, 29.25):
        await clock.advance(step)
        answer = await chat(session, emu, "openai")
        reset = parse_go_duration(answer.headers["x-ratelimit-reset-requests"])
        assert reset == parse_go_duration(answer.headers["x-ratelimit-reset-tokens"])
        assert reset is not None
        seen.append(reset)
    assert seen == [60.0, 59.5, 29.5, 0.25]
    await clock.advance(0.25)
    fresh = await chat(session, emu, "openai")
    assert fresh.headers["x-ratelimit-remaining-requests"] == "99"


async def test_tpm_limit(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, tpm=50))
    first = await chat(session, emu, "openai")
    cost = first.json()["usage"]["total_tokens"]  # 19
    assert first.headers["x-ratelimit-limit-tokens"] == "50"
    assert first.headers["x-ratelimit-remaining-tokens"] == str(50 - cost)
    assert (await chat(session, emu, "openai")).status == 200
    refused = await chat(session, emu, "openai")
    assert refused.status == 429
    error = refused.json()["error"]
    assert error["type"] == "tokens"
    assert error["code"] == "rate_limit_exceeded"
    assert (
        f"tokens per min (TPM): Limit 50, Used {2 * cost}, Requested {cost}." in (error["message"])
    )
    too_large = await chat(session, emu, "openai", text="x" * 400)
    assert too_large.status == 429
    assert too_large.json()["error"]["message"].startswith("Request too large for gpt-4o-mini")
    assert "retry-after" not in too_large.headers


async def test_rpd_limit(
    clock: FakeClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, rpd=3), day_window=480.0)
    for _ in range(3):
        assert (await chat(session, emu, "openai")).status == 200
    refused = await chat(session, emu, "openai")
    assert refused.status == 429
    message = refused.json()["error"]["message"]
    assert "requests per day (RPD): Limit 3, Used 3, Requested 1" in message
    assert "Please try again in 8m0s." in message  # 960 is also the start of a 480 s day
    assert refused.headers["retry-after"] == "480"
    await clock.advance(60)  # a new minute is not a new day
    assert (await chat(session, emu, "openai")).status == 429
    await clock.advance(420)
    assert (await chat(session, emu, "openai")).status == 200


async def test_groq_headers_are_per_day_and_413(
    clock: FakeClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(
        EmulatorKey("groq", GROQ_KEY, rpm=2, rpd=1000, tpm=200, rate_model="fixed")
    )
    first = await chat(session, emu, "groq")
    assert first.headers["x-ratelimit-limit-requests"] == "1000"
    assert first.headers["x-ratelimit-remaining-requests"] == "999"
    reset = parse_go_duration(first.headers["x-ratelimit-reset-requests"])
    assert reset == 86400.0 - START
    assert first.headers["x-ratelimit-reset-tokens"] == "1m0s"
    assert first.headers["x-ratelimit-limit-tokens"] == "200"
    await chat(session, emu, "groq")
    refused = await chat(session, emu, "groq")
    assert refused.status == 429
    error = refused.json()["error"]
    assert "on requests per minute (RPM): Limit 2, Used 2, Requested 1" in error["message"]
    assert error["code"] == "rate_limit_exceeded"
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["x-ratelimit-remaining-requests"] == "998"  # still the day's count
    await clock.advance(60)
    too_large = await chat(session, emu, "groq", text="y" * 2000)
    assert too_large.status == 413
    body = too_large.json()["error"]
    assert body["type"] == "tokens"
    assert body["code"] == "rate_limit_exceeded"
    assert body["message"].startswith("Request too large for model `llama-3.1-8b-instant`")
    assert "tokens per minute (TPM): Limit 200" in body["message"]


async def test_claude_rate_limit_headers(
    clock: FakeClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    await clock.advance(12.3456)
    emu = await make_emu(EmulatorKey("claude", CLAUDE_KEY, rpm=1, tpm=1000), rate_model="fixed")
    first = await chat(session, emu, "claude")
    headers = first.headers
    assert headers["anthropic-ratelimit-requests-limit"] == "1"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    reset = headers["anthropic-ratelimit-requests-reset"]
    assert reset.endswith("Z")
    assert len(reset.split(".")[1]) == 4
    assert parse_rfc3339(reset) == pytest.approx(clock.wall() + 60 - 12.3456, abs=0.001)
    tokens = first.json()["usage"]
    used = tokens["input_tokens"] + tokens["output_tokens"]
    for kind in ("tokens", "input-tokens", "output-tokens"):
        assert headers[f"anthropic-ratelimit-{kind}-limit"] == "1000"
        assert headers[f"anthropic-ratelimit-{kind}-remaining"] == str(1000 - used)
        assert headers[f"anthropic-ratelimit-{kind}-reset"] == reset
    refused = await chat(session, emu, "claude")
    assert refused.status == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.headers["retry-after"] == "48"
    assert refused.headers["request-id"] == refused.json()["request_id"]


async def test_gemini_quota_errors(
    clock: FakeClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    await clock.advance(59.266)
    emu = await make_emu(EmulatorKey("gemini", GEMINI_KEY, rpm=1, rpd=2), rate_model="fixed")
    assert (await chat(session, emu, "gemini")).status == 200
    refused = await chat(session, emu, "gemini")
    assert refused.status == 429
    assert "retry-after" not in refused.headers
    error = refused.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    details = {d["@type"].rsplit(".", 1)[1]: d for d in error["details"]}
    violation = details["QuotaFailure"]["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    assert violation["quotaValue"] == "1"
    assert details["RetryInfo"]["retryDelay"] == "0.734s"
    assert parse_proto_duration(details["RetryInfo"]["retryDelay"]) == 0.734
    assert error["message"].endswith("Please retry in 0.734s.")
    await clock.advance(0.734)
    assert (await chat(session, emu, "gemini")).status == 200
    await clock.advance(60)
    daily = (await chat(session, emu, "gemini")).json()["error"]
    quota_id = daily["details"][0]["violations"][0]["quotaId"]
    assert quota_id == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"


async def test_refused_requests_use_no_budget(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, rpm=1))
    assert (await chat(session, emu, "openai")).status == 200
    for _ in range(3):
        refused = await chat(session, emu, "openai")
        assert "Used 1, Requested 1" in refused.json()["error"]["message"]
    stats = emu.stats()["keys"]["sk-...0001"]
    assert stats["requests"] == 4
    assert stats["ok"] == 1
    assert stats["rate_limited"] == 3
    assert stats["errors"] == {"429": 3}


# --- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_fault_revoked(
    provider: str, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    key = EmulatorKey(provider, KEYS[provider], rpm=5, faults=Faults(revoked=True))
    emu = await make_emu(key)
    answer = await chat(session, emu, provider)
    assert answer.status == (400 if provider == "gemini" else 401)
    text = answer.raw.decode()
    assert {
        "openai": "invalid_api_key",
        "groq": "invalid_api_key",
        "claude": "authentication_error",
        "gemini": "API_KEY_INVALID",
    }[provider] in text
    assert KEYS[provider] not in text


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_fault_quota_spent(
    provider: str, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(
        EmulatorKey(provider, KEYS[provider], faults=Faults(quota_spent=True)), rate_model="fixed"
    )
    answer = await chat(session, emu, provider)
    assert answer.status == 429
    body = answer.json()
    if provider == "openai":
        assert body["error"]["type"] == "insufficient_quota"
        assert body["error"]["code"] == "insufficient_quota"
        assert "retry-after" not in answer.headers
    elif provider == "groq":
        assert "requests per day (RPD)" in body["error"]["message"]
        assert answer.headers["x-ratelimit-remaining-requests"] == "0"
        assert int(answer.headers["retry-after"]) == 86400 - START
    elif provider == "claude":
        assert body["error"]["type"] == "rate_limit_error"
        assert body["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}
        assert "2026-02-01 at 00:00 UTC" in body["error"]["message"]
        assert "retry-after" not in answer.headers
    else:
        quota_id = body["error"]["details"][0]["violations"][0]["quotaId"]
        assert "PerDay" in quota_id
    assert emu.total_429 == 1


_SERVER_ERRORS = {
    "openai": (500, "server_error"),
    "groq": (500, "internal_server_error"),
    "claude": (500, "api_error"),
    "gemini": (500, "INTERNAL"),
}
_OVERLOADED = {
    "openai": (503, "service_unavailable_error"),
    "groq": (498, "flex"),
    "claude": (529, "overloaded_error"),
    "gemini": (503, "UNAVAILABLE"),
}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_fault_server_error_and_overloaded(
    provider: str, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    secret = KEYS[provider]
    emu = await make_emu(EmulatorKey(provider, secret, faults=Faults(server_error_rate=1.0)))
    answer = await chat(session, emu, provider)
    status, marker = _SERVER_ERRORS[provider]
    assert answer.status == status
    assert marker in answer.raw.decode()
    emu.set_faults(secret, server_error_rate=0.0, overloaded_rate=1.0)
    answer = await chat(session, emu, provider)
    status, marker = _OVERLOADED[provider]
    assert answer.status == status
    assert marker in answer.raw.decode()
    emu.set_faults(secret, overloaded_rate=0.0)
    assert (await chat(session, emu, provider)).status == 200
    faults = emu.stats()["keys"][next(iter(emu.stats()["keys"]))]["faults"]
    assert faults == {"overloaded": 1, "server_error": 1}


async def test_fault_rates_are_seeded(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    async def statuses(emu: Emulator) -> list[int]:
        return [(await chat(session, emu, "openai")).status for _ in range(16)]

    faults = Faults(server_error_rate=0.3, overloaded_rate=0.3)
    first = await statuses(await make_emu(EmulatorKey("openai", OPENAI_KEY, faults=faults), seed=7))
    second = await statuses(
        await make_emu(EmulatorKey("openai", OPENAI_KEY, faults=faults), seed=7)
    )
    assert first == second
    assert {200, 500, 503} <= set(first)


async def test_fault_malformed_and_missing_fields(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    keys = [EmulatorKey(p, KEYS[p], faults=Faults(malformed=True)) for p in PROVIDERS]
    emu = await make_emu(*keys)
    for provider in PROVIDERS:
        answer = await chat(session, emu, provider)
        assert answer.status == 200
        with pytest.raises(ValueError):
            json.loads(answer.raw)
        emu.set_faults(KEYS[provider], malformed=False, missing_fields=True)
        body = (await chat(session, emu, provider)).json()
        content_field = {
            "openai": "choices",
            "groq": "choices",
            "claude": "content",
            "gemini": "candidates",
        }[provider]
        assert content_field not in body


async def test_fault_malformed_stream(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, faults=Faults(malformed=True)))
    events = parse_sse((await chat(session, emu, "openai", stream=True)).raw)
    assert events[-1][1] == "[DONE]"
    with pytest.raises(ValueError):
        json.loads(events[0][1])


async def test_fault_hang(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, faults=Faults(hang=True)))
    url, body = chat_request(emu, "openai")
    with pytest.raises(asyncio.TimeoutError):
        async with session.post(
            url,
            json=body,
            headers=auth_headers("openai", OPENAI_KEY),
            timeout=aiohttp.ClientTimeout(total=0.2),
        ) as resp:
            await resp.read()
    assert emu.stats()["total"]["faults"] == {"hang": 1}


async def test_fault_reset_connection(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, faults=Faults(reset_connection=True)))
    with pytest.raises(aiohttp.ClientConnectionError):
        await chat(session, emu, "openai")
    emu.set_faults(OPENAI_KEY, reset_connection=False)
    assert (await chat(session, emu, "openai")).status == 200


_END_MARKERS = {
    "openai": b"[DONE]",
    "groq": b"[DONE]",
    "claude": b"message_stop",
    "gemini": b"finishReason",
}


async def _read_broken_stream(
    session: aiohttp.ClientSession, emu: Emulator, provider: str
) -> tuple[bytes, bool]:
    url, body = chat_request(emu, provider, stream=True)
    received = b""
    broken = False
    async with session.post(url, json=body, headers=auth_headers(provider, KEYS[provider])) as r:
        assert r.status == 200
        try:
            async for piece in r.content.iter_any():
                received += piece
        except aiohttp.ClientPayloadError:
            broken = True
    return received, broken


def _content_count(provider: str, raw: bytes) -> int:
    events = parse_sse(raw)
    if provider == "claude":
        return sum(1 for name, _ in events if name == "content_block_delta")
    if provider == "gemini":
        return sum(1 for _, data in events if "candidates" in data)
    return sum(1 for _, data in events if '"content":"' in data and '"role"' not in data)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_fault_stream_cut(
    provider: str, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey(provider, KEYS[provider], faults=Faults(stream_cut_after=2)))
    raw, broken = await _read_broken_stream(session, emu, provider)
    assert broken  # the connection closed mid-body
    assert _content_count(provider, raw) == 2
    assert _END_MARKERS[provider] not in raw
    assert emu.stats()["total"]["faults"] == {"stream_cut": 1}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_fault_stream_error(
    provider: str, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey(provider, KEYS[provider], faults=Faults(stream_error_after=3)))
    raw, broken = await _read_broken_stream(session, emu, provider)
    assert not broken
    assert _content_count(provider, raw) == 3
    assert _END_MARKERS[provider] not in raw
    name, data = parse_sse(raw)[-1]
    error = json.loads(data)
    if provider == "claude":
        assert name == "error"
        assert error == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
        }
    else:
        assert name is None
        assert "error" in error
        assert "message" in error["error"]


async def test_latency_waits_on_the_clock(
    clock: ParkingClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, latency=5.0))
    task = asyncio.create_task(chat(session, emu, "openai"))
    await clock.parked()
    assert clock.next_timer() == pytest.approx(START + 5.0)
    assert not task.done()
    await clock.advance(5.0)
    assert (await task).status == 200


async def test_stream_chunk_delay(
    clock: FakeClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("claude", CLAUDE_KEY), stream_chunk_delay=0.5)
    task = asyncio.create_task(chat(session, emu, "claude", stream=True, max_tokens=3))
    ticks = 0
    for _ in range(2000):
        if task.done():
            break
        if clock.next_timer() is not None:
            await clock.advance(0.5)
            ticks += 1
        else:
            await asyncio.sleep(0.001)
    answer = await task
    assert ticks == 3 + 1  # before each content chunk, and before the tail
    assert parse_sse(answer.raw)[-1][0] == "message_stop"


async def test_stop_cancels_parked_requests(
    clock: ParkingClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, latency=1000.0))
    task = asyncio.create_task(chat(session, emu, "openai"))
    await clock.parked()  # the request reached the emulator and waits out its latency
    assert emu.stats()["total"]["requests"] == 1
    assert not task.done()
    await asyncio.wait_for(emu.stop(), timeout=2)
    # the server hung up on a request it had accepted (not "connection refused")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await task


async def test_handler_bug_becomes_provider_500(
    make_emu: MakeEmu, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(OpenAIDialect, "chat", boom)
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, rpm=3))
    answer = await chat(session, emu, "openai")
    assert answer.status == 500
    assert answer.json()["error"]["type"] == "server_error"
    assert answer.headers["x-ratelimit-limit-requests"] == "3"
    assert emu.stats()["total"]["faults"] == {"internal_error": 1}


# --- runtime changes, stats, control --------------------------------------------------------


async def test_add_remove_and_set_faults(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu()
    assert (await chat(session, emu, "openai")).status == 401
    emu.add_key(EmulatorKey("openai", OPENAI_KEY))
    assert (await chat(session, emu, "openai")).status == 200
    emu.set_faults(OPENAI_KEY, revoked=True)
    assert (await chat(session, emu, "openai")).status == 401
    with pytest.raises(ValueError, match="unknown fault"):
        emu.set_faults(OPENAI_KEY, exploded=True)
    emu.remove_key(OPENAI_KEY)
    with pytest.raises(KeyError):
        emu.remove_key(OPENAI_KEY)
    assert emu.stats()["keys"] == {}


async def test_stats_never_show_the_key(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(
        EmulatorKey("openai", OPENAI_KEY, rpm=1),
        EmulatorKey("groq", GROQ_KEY, label="groq-main"),
        EmulatorKey("gemini", "sk-emu-openai-111110000001"),  # masks like OPENAI_KEY
    )
    await chat(session, emu, "openai")
    await chat(session, emu, "openai")
    await chat(session, emu, "groq", stream=True)
    stats = emu.stats()
    dumped = json.dumps(stats)
    for secret in (OPENAI_KEY, GROQ_KEY, "sk-emu-openai-111110000001"):
        assert secret not in dumped
        assert secret not in repr(emu)
        assert secret not in repr(EmulatorKey("openai", secret))
    labels = sorted(stats["keys"])
    assert labels[:2] == ["groq-main", "sk-...0001"]
    assert labels[2].startswith("sk-...0001 [gemini:")  # a fingerprint tells them apart
    openai = stats["keys"]["sk-...0001"]
    assert openai == {
        "requests": 2,
        "ok": 1,
        "rate_limited": 1,
        "errors": {"429": 1},
        "tokens": 19,
        "streams": 0,
        "faults": {},
        "provider": "openai",
        "limits": {"rpm": 1},
        "rate_model": "sliding",
        "models": {"gpt-4o-mini": {"requests": 2, "rate_limited": 1, "tokens": 19}},
    }
    assert stats["keys"]["groq-main"]["streams"] == 1
    assert stats["total"]["requests"] == 3
    assert emu.total_429 == 1
    emu.reset_stats()
    assert emu.total_429 == 0
    assert emu.stats()["total"]["requests"] == 0


async def test_control_endpoints(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu()
    root = emu.url
    added = await send(
        session,
        "POST",
        root + "/_emulator/keys",
        json_body={
            "provider": "anthropic",
            "key": CLAUDE_KEY,
            "rpm": 5,
            "tpm": None,
            "rpd": None,
            "latency": 0,
            "faults": {"overloaded_rate": 1.0},
        },
    )
    assert added.status == 200
    assert added.json() == {"added": ["sk-...0001"]}
    assert (await chat(session, emu, "claude")).status == 529
    replaced = await send(
        session,
        "POST",
        root + "/_emulator/keys",
        json_body=[{"provider": "claude", "key": CLAUDE_KEY, "rpm": 5}],
    )
    assert replaced.status == 200
    assert (await chat(session, emu, "claude")).status == 200
    listing = (await send(session, "GET", root + "/_emulator/keys")).json()
    assert listing["keys"][0]["label"] == "sk-...0001"
    assert CLAUDE_KEY not in json.dumps(listing)
    for bad in (
        {"provider": "nope", "key": "k"},
        {"key": "k"},
        {"provider": "openai", "key": "k", "faults": {"boom": True}},
        {"provider": "openai", "key": "k", "rpm": 0},
    ):
        refused = await send(session, "POST", root + "/_emulator/keys", json_body=bad)
        assert refused.status == 400
        assert "error" in refused.json()
    stats = (await send(session, "GET", root + "/_emulator/stats")).json()
    assert stats == emu.stats()
    assert stats["total"]["requests"] == 2
    assert stats["total"]["errors"] == {"529": 1}
    reset = await send(session, "POST", root + "/_emulator/reset")
    assert reset.json() == {"ok": True}
    assert emu.stats()["total"]["requests"] == 0


async def test_gemini_unknown_method(make_emu: MakeEmu, session: aiohttp.ClientSession) -> None:
    emu = await make_emu(EmulatorKey("gemini", GEMINI_KEY))
    url = emu.base_url("gemini") + "/v1beta/models/gemini-2.5-flash:explode"
    answer = await send(
        session, "POST", url, headers=auth_headers("gemini", GEMINI_KEY), json_body={}
    )
    assert answer.status == 404
    assert answer.json()["error"]["status"] == "NOT_FOUND"


async def test_serve_until_cancelled(session: aiohttp.ClientSession) -> None:
    emu = Emulator([EmulatorKey("openai", OPENAI_KEY)])
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(emu, port=0, on_ready=ready.set_result))
    root = await asyncio.wait_for(ready, timeout=5)
    assert root.startswith("http://127.0.0.1:")
    assert (await chat(session, emu, "openai")).status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(RuntimeError):
        emu.base_url("openai")


@pytest.mark.e2e
async def test_run_in_another_process(session: aiohttp.ClientSession) -> None:
    code = (
        "from keymux.emulator import Emulator, run\n"
        "run(Emulator(accept_any_key=True), port=0, on_ready=lambda u: print(u, flush=True))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        root = (await asyncio.wait_for(proc.stdout.readline(), timeout=10)).decode().strip()
        url = root + "/v1/chat/completions"
        body = {"messages": [{"role": "user", "content": "hi"}]}
        answer = await send(
            session,
            "POST",
            url,
            json_body=body,
            headers=auth_headers("openai", "sk-out-of-process-0001"),
        )
        assert answer.status == 200
        stats = (await send(session, "GET", root + "/_emulator/stats")).json()
        assert stats["total"]["ok"] == 1
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
