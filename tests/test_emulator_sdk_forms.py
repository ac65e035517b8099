"""The requests the current official SDKs send, byte for byte in method, path, query and auth
headers, answered by the emulator over a loopback socket.

The shapes were captured from anthropic 2.16 / 0.x, openai 3.60, groq 1.7 and google-genai
3.6 pointed at a local capture server (no real provider involved). ``/v1/models`` is shared by
OpenAI, Anthropic and Gemini and decided by headers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from keymux.emulator import Emulator, EmulatorKey
from test_emulator import (
    CLAUDE_KEY,
    GEMINI_KEY,
    GROQ_KEY,
    OPENAI_KEY,
    START,
    ParkingClock,
    parse_sse,
    send,
)

#: what anthropic 2.16 sends besides the key
ANTHROPIC_2 = {
    "Accept": "application/json",
    "Content-Type": "application/json",
    "User-Agent": "Anthropic/Python 2.16.0",
    "anthropic-version": "2026-10-21",
}
#: what google-genai 3.6 sends besides the key
GENAI_3 = {
    "Accept": "*/*",
    "Content-Type": "application/json",
    "User-Agent": "google-genai-sdk/3.6.1 gl-python/3.11.7",
    "x-goog-api-client": "google-genai-sdk/3.6.1 gl-python/3.11.7",
}
HI = {"contents": [{"parts": [{"text": "hi"}], "role": "user"}]}


@pytest.fixture
def clock() -> ParkingClock:
    return ParkingClock(start=START)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
async def emu(clock: ParkingClock) -> AsyncIterator[Emulator]:
    emulator = Emulator(
        [
            EmulatorKey("openai", OPENAI_KEY, rpm=10),
            EmulatorKey("groq", GROQ_KEY, rpm=10),
            EmulatorKey("claude", CLAUDE_KEY, rpm=10),
            EmulatorKey("gemini", GEMINI_KEY, rpm=10),
        ],
        clock=clock,
    )
    await emulator.start()
    yield emulator
    await emulator.stop()


def genai(key: str = GEMINI_KEY) -> dict[str, str]:
    return {**GENAI_3, "x-goog-api-key": key}


# --- Anthropic ----------------------------------------------------------------------------------


async def test_anthropic_2x_messages_with_bearer(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    body = {
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "model": "claude-sonnet-4-5",
    }
    headers = {**ANTHROPIC_2, "Authorization": f"Bearer {CLAUDE_KEY}"}
    answer = await send(session, "POST", emu.url + "/v1/messages", headers=headers, json_body=body)
    assert answer.status == 200, answer.raw
    assert answer.json()["content"][0]["text"] == (
        "Hello from the keymux emulator (claude). You said: hi"
    )
    assert answer.headers["anthropic-ratelimit-requests-remaining"] == "9"
    streamed = await send(
        session,
        "POST",
        emu.url + "/v1/messages",
        headers=headers,
        json_body={**body, "stream": True},
    )
    assert [name for name, _ in parse_sse(streamed.raw)][-1] == "message_stop"


async def test_anthropic_0x_messages_with_x_api_key(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "X-Api-Key": CLAUDE_KEY,
        "anthropic-version": "2023-06-01",
    }
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "model": "x"}
    answer = await send(session, "POST", emu.url + "/v1/messages", headers=headers, json_body=body)
    assert answer.status == 200
    assert answer.json()["type"] == "message"


@pytest.mark.parametrize(
    "auth",
    [{"Authorization": f"Bearer {CLAUDE_KEY}"}, {"x-api-key": CLAUDE_KEY}],
    ids=["bearer", "x-api-key"],
)
async def test_anthropic_models_list(
    auth: dict[str, str], emu: Emulator, session: aiohttp.ClientSession
) -> None:
    headers = {**ANTHROPIC_2, **auth}
    del headers["Content-Type"]
    listing = await send(session, "GET", emu.url + "/v1/models", headers=headers)
    assert listing.status == 200
    body = listing.json()
    assert body["has_more"] is False
    assert [m["id"] for m in body["data"]] == [
        "claude-sonnet-4-5-20250929",
        "claude-haiku-4-5-20251001",
        "claude-opus-4-1-20250805",
    ]
    one = await send(
        session, "GET", emu.url + "/v1/models/claude-haiku-4-5-20251001", headers=headers
    )
    assert one.json() == {
        "type": "model",
        "id": "claude-haiku-4-5-20251001",
        "display_name": "Claude Haiku 4.5",
        "created_at": "2025-10-01T00:00:00Z",
    }


# --- Gemini under /v1 (google-genai 3.x) ----------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v1beta"])
async def test_genai_generate_content(
    version: str, emu: Emulator, session: aiohttp.ClientSession
) -> None:
    url = f"{emu.url}/{version}/models/gemini-2.5-flash:generateContent"
    answer = await send(session, "POST", url, headers=genai(), json_body=HI)
    assert answer.status == 200, answer.raw
    body = answer.json()
    assert body["candidates"][0]["content"]["parts"][0]["text"] == (
        "Hello from the keymux emulator (gemini). You said: hi"
    )
    assert body["modelVersion"] == "gemini-2.5-flash"


async def test_genai_stream_generate_content(emu: Emulator, session: aiohttp.ClientSession) -> None:
    url = emu.url + "/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    answer = await send(session, "POST", url, headers=genai(), json_body=HI)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    chunks = [json.loads(data) for _, data in parse_sse(answer.raw)]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == "Hello from the keymux emulator (gemini). You said: hi"


async def test_genai_embeddings(emu: Emulator, session: aiohttp.ClientSession) -> None:
    batch = {
        "requests": [
            {
                "content": {"parts": [{"text": "a"}], "role": "user"},
                "model": "models/gemini-embedding-001",
            },
            {
                "content": {"parts": [{"text": "b"}], "role": "user"},
                "model": "models/gemini-embedding-001",
            },
        ]
    }
    url = emu.url + "/v1/models/gemini-embedding-001"
    answer = await send(
        session, "POST", url + ":batchEmbedContents", headers=genai(), json_body=batch
    )
    assert answer.status == 200, answer.raw
    vectors = [e["values"] for e in answer.json()["embeddings"]]
    assert len(vectors) == 2
    assert vectors[0] != vectors[1]
    single = await send(
        session,
        "POST",
        url + ":embedContent",
        headers=genai(),
        json_body={"content": {"parts": [{"text": "a"}]}},
    )
    assert single.json()["embedding"]["values"] == vectors[0]


async def test_genai_models_list_and_get(emu: Emulator, session: aiohttp.ClientSession) -> None:
    listing = await send(session, "GET", emu.url + "/v1/models", headers=genai())
    assert listing.status == 200
    names = [m["name"] for m in listing.json()["models"]]
    assert "models/gemini-2.5-flash" in names
    one = await send(session, "GET", emu.url + "/v1/models/gemini-2.5-flash", headers=genai())
    assert one.json()["name"] == "models/gemini-2.5-flash"
    assert "generateContent" in one.json()["supportedGenerationMethods"]


async def test_gemini_key_in_the_query_on_v1(emu: Emulator, session: aiohttp.ClientSession) -> None:
    plain = {"Content-Type": "application/json"}
    answer = await send(
        session,
        "POST",
        f"{emu.url}/v1/models/gemini-2.5-flash:generateContent?key={GEMINI_KEY}",
        headers=plain,
        json_body=HI,
    )
    assert answer.status == 200
    listing = await send(session, "GET", f"{emu.url}/v1/models?key={GEMINI_KEY}")
    assert "models" in listing.json()
    one = await send(session, "GET", f"{emu.url}/v1/models/gemini-2.5-pro?key={GEMINI_KEY}")
    assert one.json()["name"] == "models/gemini-2.5-pro"
    stream = await send(
        session,
        "POST",
        f"{emu.url}/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={GEMINI_KEY}",
        json_body=HI,
    )
    assert stream.status == 200
    assert parse_sse(stream.raw)


async def test_gemini_v1_errors_are_geminis(emu: Emulator, session: aiohttp.ClientSession) -> None:
    url = emu.url + "/v1/models/gemini-2.5-flash:generateContent"
    missing = await send(session, "POST", url, headers=GENAI_3, json_body=HI)
    assert missing.status == 403  # not OpenAI's 401, not a 405 from the router
    assert missing.json()["error"]["status"] == "PERMISSION_DENIED"
    wrong = await send(
        session, "POST", url, headers=genai("AIza-not-registered-0000"), json_body=HI
    )
    assert wrong.status == 400
    assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    unknown = await send(
        session,
        "POST",
        emu.url + "/v1/models/gemini-2.5-flash:explode",
        headers=genai(),
        json_body={},
    )
    assert unknown.status == 404
    assert unknown.json()["error"]["status"] == "NOT_FOUND"


# --- OpenAI and Groq, and who owns /v1/models -------------------------------------------------


async def test_openai_3x_and_groq_1x(emu: Emulator, session: aiohttp.ClientSession) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    openai = {
        "Authorization": f"Bearer {OPENAI_KEY}",
        "Accept": "application/json",
        "Content-Type": "application/json",
        "User-Agent": "OpenAI/Python 3.60.0",
    }
    answer = await send(
        session, "POST", emu.url + "/v1/chat/completions", headers=openai, json_body=body
    )
    assert answer.status == 200
    assert answer.json()["object"] == "chat.completion"
    groq = {**openai, "Authorization": f"Bearer {GROQ_KEY}", "User-Agent": "Groq/Python 1.7.0"}
    answer = await send(
        session,
        "POST",
        emu.url + "/openai/v1/chat/completions",
        headers=groq,
        json_body={**body, "model": "llama-3.1-8b-instant"},
    )
    assert answer.status == 200
    assert answer.json()["x_groq"]["id"].startswith("req_")


_OWNERS: list[tuple[str, dict[str, str], str, str]] = [
    # (case, headers, query, whose list)
    ("openai-bearer", {"Authorization": f"Bearer {OPENAI_KEY}"}, "", "openai"),
    (
        "anthropic-2x",
        {"Authorization": f"Bearer {CLAUDE_KEY}", "anthropic-version": "2026-10-21"},
        "",
        "claude",
    ),
    ("anthropic-0x", {"x-api-key": CLAUDE_KEY, "anthropic-version": "2023-06-01"}, "", "claude"),
    ("genai-header", {"x-goog-api-key": GEMINI_KEY}, "", "gemini"),
    ("gemini-query", {}, f"?key={GEMINI_KEY}", "gemini"),
]


def _whose(body: dict[str, Any]) -> str:
    if "models" in body:
        return "gemini"
    if "has_more" in body:
        return "claude"
    assert body["object"] == "list"
    return "openai"


@pytest.mark.parametrize(
    ("headers", "query", "owner"), [case[1:] for case in _OWNERS], ids=[c[0] for c in _OWNERS]
)
async def test_shared_models_route_is_decided_by_headers(
    headers: dict[str, str], query: str, owner: str, emu: Emulator, session: aiohttp.ClientSession
) -> None:
    listing = await send(session, "GET", emu.url + "/v1/models" + query, headers=headers)
    assert listing.status == 200, listing.raw
    assert _whose(listing.json()) == owner


async def test_shared_models_route_without_credentials_is_openais_401(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    answer = await send(session, "GET", emu.url + "/v1/models")
    assert answer.status == 401
    assert answer.json()["error"]["message"].startswith("You didn't provide an API key.")
    anthropic = await send(
        session, "GET", emu.url + "/v1/models", headers={"anthropic-version": "2026-10-21"}
    )
    assert anthropic.status == 401
    assert anthropic.json()["error"] == {
        "type": "authentication_error",
        "message": "x-api-key header is required",
    }
