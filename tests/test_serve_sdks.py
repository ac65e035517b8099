"""The real official SDKs pointed at the proxy (base URL + the proxy token as their API key),
plain and streamed: openai, anthropic, groq, google-genai. Skipped where one is not installed
(the ``test`` extra installs them all)."""

from __future__ import annotations

import pytest

from serve_support import TOKEN, ServeFactory, every_provider, hello, serve

__all__ = ["serve"]  # the fixture

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "hi"}]


def test_openai_sdk(serve: ServeFactory) -> None:
    openai = pytest.importorskip("openai")
    served = serve(*every_provider(2))
    with openai.OpenAI(api_key=TOKEN, base_url=served.url + "/v1", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        assert raw.headers["x-keymux-key"] in ("k1", "k2")
        assert raw.parse().choices[0].message.content == hello("openai")
        stream = client.chat.completions.create(
            model="gpt-4o", messages=HI, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == hello("openai")
        assert chunks[-1].usage is not None
        vectors = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        assert len(vectors.data) == 2  # the SDK's base64 default, passed through
        assert "gpt-4o" in [m.id for m in client.models.list()]
        # any provider through the OpenAI SDK
        for model, provider in (
            ("claude/claude-sonnet-4-5", "claude"),
            ("gemini/gemini-2.5-flash", "gemini"),
            ("groq/llama-3.1-8b-instant", "groq"),
        ):
            reply = client.chat.completions.create(model=model, messages=HI)
            assert reply.choices[0].message.content == hello(provider)
            assert reply.usage is not None
            assert reply.usage.total_tokens > 0
            chunks = list(
                client.chat.completions.create(
                    model=model,
                    messages=HI,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
                hello(provider)
            )
            assert chunks[-1].usage is not None
            assert chunks[-1].usage.completion_tokens > 0
    wrong = openai.OpenAI(api_key="wrong", base_url=served.url + "/v1", max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError):
        wrong.models.list()


async def test_openai_async_sdk(serve: ServeFactory) -> None:
    openai = pytest.importorskip("openai")
    served = serve(*every_provider(1))
    client = openai.AsyncOpenAI(api_key=TOKEN, base_url=served.url + "/v1", max_retries=0)
    async with client:
        reply = await client.chat.completions.create(model="claude/claude-sonnet-4-5", messages=HI)
        assert reply.choices[0].message.content == hello("claude")
        stream = await client.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == hello("openai")


def test_anthropic_sdk(serve: ServeFactory) -> None:
    anthropic = pytest.importorskip("anthropic")
    served = serve(*every_provider(2))
    with anthropic.Anthropic(api_key=TOKEN, base_url=served.url, max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-4-5", max_tokens=32, messages=HI
        )
        assert raw.headers["x-keymux-key"] in ("k1", "k2")
        assert raw.parse().content[0].text == hello("claude")
        with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=32, messages=HI
        ) as stream:
            assert "".join(stream.text_stream) == hello("claude")
            final = stream.get_final_message()
        assert final.usage.output_tokens > 0
        assert next(iter(client.models.list())).id.startswith("claude-")
        counted = client.messages.count_tokens(model="claude-sonnet-4-5", messages=HI)
        assert counted.input_tokens > 0
    wrong = anthropic.Anthropic(api_key="wrong", base_url=served.url, max_retries=0)
    with wrong, pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=HI)
    assert served.proxy.stats()["claude"]["k1"]["current_requests"] == 0


def test_groq_sdk(serve: ServeFactory) -> None:
    groq = pytest.importorskip("groq")
    served = serve(*every_provider(1))
    with groq.Groq(api_key=TOKEN, base_url=served.url, max_retries=0) as client:
        reply = client.chat.completions.create(model="llama-3.1-8b-instant", messages=HI)
        assert reply.choices[0].message.content == hello("groq")
        stream = client.chat.completions.create(
            model="llama-3.1-8b-instant", messages=HI, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream) == hello("groq")
        assert "llama-3.1-8b-instant" in [m.id for m in client.models.list().data]
    wrong = groq.Groq(api_key="wrong", base_url=served.url, max_retries=0)
    with wrong, pytest.raises(groq.AuthenticationError):
        wrong.models.list()


def test_google_genai_sdk(serve: ServeFactory) -> None:
    genai = pytest.importorskip("google.genai")
    types = pytest.importorskip("google.genai.types")
    served = serve(*every_provider(2))
    client = genai.Client(api_key=TOKEN, http_options=types.HttpOptions(base_url=served.url))
    with client:
        reply = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
        assert reply.text == hello("gemini")
        chunks = client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")
        assert "".join(c.text or "" for c in chunks) == hello("gemini")
        embedded = client.models.embed_content(model="gemini-embedding-001", contents=["a", "b"])
        assert len(embedded.embeddings or []) == 2
        assert "models/gemini-2.5-flash" in [m.name for m in client.models.list()]
        counted = client.models.count_tokens(model="gemini-2.5-flash", contents="hi there")
        assert counted.total_tokens is not None
        assert counted.total_tokens > 0
    paths = {r.path for r in served.rig.server.requests}
    assert "/v1/models/gemini-2.5-flash:countTokens" in paths
    assert "/v1/models/gemini-2.5-flash:generateContent" in paths  # google-genai 3.x: /v1
    wrong = genai.Client(api_key="wrong", http_options=types.HttpOptions(base_url=served.url))
    with wrong, pytest.raises(genai.errors.ClientError) as refused:
        wrong.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert refused.value.code == 401


async def test_google_genai_async_sdk(serve: ServeFactory) -> None:
    genai = pytest.importorskip("google.genai")
    types = pytest.importorskip("google.genai.types")
    httpx2 = pytest.importorskip("httpx2")
    served = serve(*every_provider(1))
    http = httpx2.AsyncClient()  # else google-genai builds an aiohttp session of its own
    client = genai.Client(
        api_key=TOKEN,
        http_options=types.HttpOptions(base_url=served.url, httpx_async_client=http),
    )
    reply = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert reply.text == hello("gemini")
    text = ""
    async for chunk in await client.aio.models.generate_content_stream(
        model="gemini-2.5-flash", contents="hi"
    ):
        text += chunk.text or ""
    assert text == hello("gemini")
    await client.aio.aclose()
    await http.aclose()
