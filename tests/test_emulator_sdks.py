"""The real official SDKs against the emulator on a loopback port (skipped when not installed).

keymux does not depend on the SDKs; where they are installed (e.g. by the SDK extra), these
check that what they send today is what the emulator answers: anthropic 2.x's Bearer auth and
``anthropic-version: 2026-10-21``, google-genai 3.x's ``/v1`` routes, openai and groq.
"""

from __future__ import annotations

import pytest

from conftest import StartEmulator
from keymux.emulator import EmulatorKey

OPENAI_KEY = "sk-sdk-openai-00000000000001"
GROQ_KEY = "gsk_sdk_groq_000000000000001"
CLAUDE_KEY = "sk-ant-sdk-claude-0000000001"
GEMINI_KEY = "AIza-sdk-gemini-000000000001"
HELLO = "Hello from the keymux emulator ({}). You said: hi"


def keys(rpm: int = 10) -> list[EmulatorKey]:
    return [
        EmulatorKey("openai", OPENAI_KEY, rpm=rpm),
        EmulatorKey("groq", GROQ_KEY, rpm=rpm),
        EmulatorKey("claude", CLAUDE_KEY, rpm=rpm, label="claude"),
        EmulatorKey("gemini", GEMINI_KEY, rpm=rpm),
    ]


def test_anthropic_sdk(start_emulator: StartEmulator) -> None:
    anthropic = pytest.importorskip("anthropic")
    server = start_emulator(*keys())
    client = anthropic.Anthropic(
        api_key=CLAUDE_KEY, base_url=server.base_url("claude"), max_retries=0
    )
    with client:
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-4-5-20250929",
            max_tokens=32,
            messages=[{"role": "user", "content": "hi"}],
        )
        assert raw.parse().content[0].text == HELLO.format("claude")
        assert raw.headers["anthropic-ratelimit-requests-remaining"] == "9"
        stream = client.messages.create(
            model="claude-sonnet-4-5",  # the same class: the same budget
            max_tokens=32,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
        text = "".join(e.delta.text for e in stream if e.type == "content_block_delta")
        assert text == HELLO.format("claude")
        assert next(iter(client.models.list())).id == "claude-sonnet-4-5-20250929"
    assert server.stats()["keys"]["claude"]["models"]["claude-sonnet-4-5"]["requests"] == 2


def test_google_genai_sdk(start_emulator: StartEmulator) -> None:
    genai = pytest.importorskip("google.genai")
    types = pytest.importorskip("google.genai.types")
    server = start_emulator(*keys(rpm=6))
    client = genai.Client(
        api_key=GEMINI_KEY, http_options=types.HttpOptions(base_url=server.base_url("gemini"))
    )
    with client:
        reply = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
        assert reply.text == HELLO.format("gemini")
        chunks = client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")
        assert "".join(c.text or "" for c in chunks) == HELLO.format("gemini")
        embedded = client.models.embed_content(model="gemini-embedding-001", contents=["a", "b"])
        assert [len(e.values) for e in embedded.embeddings or []] == [8, 8]
        assert "models/gemini-2.5-flash" in [m.name for m in client.models.list()]
        assert client.models.get(model="gemini-2.5-pro").name == "models/gemini-2.5-pro"
        for _ in range(4):  # gemini-2.5-flash's 6 per window: 2 used, 4 left
            client.models.generate_content(model="gemini-2.5-flash", contents="hi")
        with pytest.raises(genai.errors.ClientError) as refused:
            client.models.generate_content(model="gemini-2.5-flash", contents="hi")
        assert refused.value.code == 429
        assert refused.value.status == "RESOURCE_EXHAUSTED"
    paths = {r.path for r in server.requests}
    assert "/v1/models/gemini-2.5-flash:generateContent" in paths  # google-genai 3.x: /v1


def test_openai_and_groq_sdks(start_emulator: StartEmulator) -> None:
    openai = pytest.importorskip("openai")
    groq = pytest.importorskip("groq")
    server = start_emulator(*keys(rpm=2))
    with openai.OpenAI(
        api_key=OPENAI_KEY, base_url=server.base_url("openai"), max_retries=0
    ) as client:
        reply = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == HELLO.format("openai")
        assert len(client.embeddings.create(model="text-embedding-3-small", input="a").data) == 1
        assert client.models.retrieve("gpt-4o").id == "gpt-4o"
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
        assert refused.value.response.headers["retry-after"] == "60"
        # another model, its own budget
        other = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert other.model == "gpt-4o-mini"
    with groq.Groq(api_key=GROQ_KEY, base_url=server.base_url("groq"), max_retries=0) as client:
        reply = client.chat.completions.create(
            model="llama-3.1-8b-instant", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == HELLO.format("groq")
        assert "llama-3.1-8b-instant" in [m.id for m in client.models.list().data]
