"""The real official SDKs (openai, groq, anthropic, google-genai), unchanged, on keymux's drop-in
HTTP clients, behind one small façade the SDK tests share.

``Sdk(provider, mode)`` builds the provider's SDK client (``api_key="keymux"``, nothing but
``http_client=mux.http_client(...)`` / ``async_http_client(...)``) and calls it the way a user
would: ``mode`` "sync" calls the blocking client from a worker thread (keymux then runs on its
own loop thread), "async" awaits the async client on the test's loop. ``Sdk.sent`` counts the
requests the SDK handed to its HTTP client (an httpx event hook), so a test can tell keymux's
retries from the SDK's own.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from keymux import KeymuxError, Multiplexer

PROVIDERS = ("openai", "groq", "claude", "gemini")
MODES = ("sync", "async")
PLACEHOLDER = "keymux"
HELLO = [{"role": "user", "content": "Hello"}]
#: the emulator's answer to HELLO
REPLY = "Hello from the keymux emulator ({provider}). You said: Hello"
MODELS = {
    "openai": "gpt-4o-mini",
    "groq": "llama-3.1-8b-instant",
    "claude": "claude-sonnet-4-5",
    "gemini": "gemini-2.5-flash",
}
EMBED_MODELS = {"openai": "text-embedding-3-small", "gemini": "gemini-embedding-001"}

#: environment variables the SDKs read (a developer's real ones must not leak into a test)
SDK_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_CUSTOM_HEADERS",
    "GROQ_API_KEY",
    "GROQ_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_GENAI_HTTP_CLIENT",
)


def reply_for(provider: str) -> str:
    return REPLY.format(provider=provider)


def clean_sdk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SDK_ENV:
        monkeypatch.delenv(name, raising=False)


@dataclass
class Reply:
    """One non-streamed answer as the SDK gave it."""

    text: str
    headers: Mapping[str, str]
    input_tokens: int
    output_tokens: int
    model: str | None

    @property
    def key_name(self) -> str:
        return self.headers["x-keymux-key"]

    @property
    def attempts(self) -> int:
        return int(self.headers["x-keymux-attempts"])


@dataclass
class Streamed:
    """What an SDK stream gave before it ended, and the exception that ended it (if any)."""

    deltas: list[str]
    error: BaseException | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(self.deltas)


@dataclass
class Failure:
    """An SDK exception, flattened: the HTTP answer it carries (if any) and the KeymuxError
    found in its chain of causes (if any)."""

    exc: BaseException
    status: int | None
    headers: Mapping[str, str]
    body: str
    keymux: KeymuxError | None

    @property
    def key_name(self) -> str | None:
        if self.keymux is not None:
            return self.keymux.key_name
        return self.headers.get("x-keymux-key")


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it was raised from or during."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)


def failure_of(exc: BaseException) -> Failure:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    headers: Mapping[str, str] = dict(response.headers) if response is not None else {}
    body = ""
    if response is not None:
        try:
            body = response.text
        except Exception:  # a streamed response not read
            body = ""
    keymux = next((e for e in chain(exc) if isinstance(e, KeymuxError)), None)
    return Failure(exc, status, headers, body, keymux)


# --- the three SDK families ---------------------------------------------------------------


class _Stainless:
    """openai and groq: the same chat/embeddings API."""

    def __init__(self, module: Any, sync_cls: str, async_cls: str) -> None:
        self.module = module
        self.sync_cls = getattr(module, sync_cls)
        self.async_cls = getattr(module, async_cls)

    def build(self, http: Any, is_async: bool, max_retries: int | None) -> Any:
        cls = self.async_cls if is_async else self.sync_cls
        kw: dict[str, Any] = {} if max_retries is None else {"max_retries": max_retries}
        return cls(api_key=PLACEHOLDER, http_client=http, **kw)

    def _kw(self, model: str, messages: Any, timeout: float | None) -> dict[str, Any]:
        kw: dict[str, Any] = {"model": model, "messages": messages}
        if timeout is not None:
            kw["timeout"] = timeout
        return kw

    @staticmethod
    def _reply(raw: Any, parsed: Any) -> Reply:
        usage = parsed.usage
        return Reply(
            parsed.choices[0].message.content,
            raw.headers,
            usage.prompt_tokens,
            usage.completion_tokens,
            parsed.model,
        )

    def chat(self, client: Any, model: str, messages: Any, timeout: float | None) -> Reply:
        raw = self._create(client)(**self._kw(model, messages, timeout))
        return self._reply(raw, raw.parse())

    async def achat(self, client: Any, model: str, messages: Any, timeout: float | None) -> Reply:
        raw = await self._create(client)(**self._kw(model, messages, timeout))
        parsed = raw.parse()
        return self._reply(raw, await parsed if inspect.isawaitable(parsed) else parsed)

    @staticmethod
    def _create(client: Any) -> Any:
        return client.chat.completions.with_raw_response.create

    def _stream_kw(self, model: str, messages: Any, timeout: float | None) -> dict[str, Any]:
        kw = self._kw(model, messages, timeout)
        if self.module.__name__ == "openai":  # usage in the stream only when asked (Groq: always)
            kw["stream_options"] = {"include_usage": True}
        return kw

    def open_stream(self, client: Any, model: str, messages: Any, timeout: float | None) -> Any:
        return client.chat.completions.create(
            stream=True, **self._stream_kw(model, messages, timeout)
        )

    async def aopen_stream(
        self, client: Any, model: str, messages: Any, timeout: float | None
    ) -> Any:
        return await client.chat.completions.create(
            stream=True, **self._stream_kw(model, messages, timeout)
        )

    @staticmethod
    def delta(chunk: Any) -> str | None:
        return (chunk.choices[0].delta.content or None) if chunk.choices else None

    @staticmethod
    def stream_headers(stream: Any, event: Any) -> Mapping[str, str]:
        return stream.response.headers  # type: ignore[no-any-return]

    def embed(self, client: Any, model: str, inputs: list[str]) -> list[list[float]]:
        return [d.embedding for d in client.embeddings.create(model=model, input=inputs).data]

    async def aembed(self, client: Any, model: str, inputs: list[str]) -> list[list[float]]:
        resp = await client.embeddings.create(model=model, input=inputs)
        return [d.embedding for d in resp.data]

    def close(self, client: Any) -> None:
        client.close()

    async def aclose(self, client: Any) -> None:
        await client.close()


class _Anthropic(_Stainless):
    def _kw(self, model: str, messages: Any, timeout: float | None) -> dict[str, Any]:
        kw: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": 64}
        if timeout is not None:
            kw["timeout"] = timeout
        return kw

    @staticmethod
    def _reply(raw: Any, parsed: Any) -> Reply:
        return Reply(
            parsed.content[0].text,
            raw.headers,
            parsed.usage.input_tokens,
            parsed.usage.output_tokens,
            parsed.model,
        )

    @staticmethod
    def _create(client: Any) -> Any:
        return client.messages.with_raw_response.create

    def open_stream(self, client: Any, model: str, messages: Any, timeout: float | None) -> Any:
        return client.messages.create(stream=True, **self._kw(model, messages, timeout))

    async def aopen_stream(
        self, client: Any, model: str, messages: Any, timeout: float | None
    ) -> Any:
        return await client.messages.create(stream=True, **self._kw(model, messages, timeout))

    @staticmethod
    def delta(event: Any) -> str | None:
        if event.type == "content_block_delta":
            return str(event.delta.text)
        return None


class _Genai:
    def __init__(self) -> None:
        from google import genai
        from google.genai import types

        self.genai = genai
        self.types = types

    def build(self, http: tuple[Any, Any], is_async: bool, max_retries: int | None) -> Any:
        sync_http, async_http = http
        options = self.types.HttpOptions(httpx_client=sync_http, httpx_async_client=async_http)
        client = self.genai.Client(api_key=PLACEHOLDER, http_options=options)
        self.outer = client  # client.aio does not keep it alive
        return client.aio if is_async else client

    def _config(self, timeout: float | None) -> Any:
        if timeout is None:
            return None
        return self.types.GenerateContentConfig(
            http_options=self.types.HttpOptions(timeout=int(timeout * 1000))
        )

    @staticmethod
    def _reply(resp: Any) -> Reply:
        usage = resp.usage_metadata
        headers = resp.sdk_http_response.headers if resp.sdk_http_response else {}
        return Reply(
            resp.text,
            {k.lower(): v for k, v in headers.items()},
            usage.prompt_token_count,
            usage.candidates_token_count,
            resp.model_version,
        )

    def _contents(self, messages: Any) -> Any:
        return [
            self.types.Content(role="user", parts=[self.types.Part(text=m["content"])])
            for m in messages
        ]

    def chat(self, client: Any, model: str, messages: Any, timeout: float | None) -> Reply:
        return self._reply(
            client.models.generate_content(
                model=model, contents=self._contents(messages), config=self._config(timeout)
            )
        )

    async def achat(self, client: Any, model: str, messages: Any, timeout: float | None) -> Reply:
        return self._reply(
            await client.models.generate_content(
                model=model, contents=self._contents(messages), config=self._config(timeout)
            )
        )

    def open_stream(self, client: Any, model: str, messages: Any, timeout: float | None) -> Any:
        return client.models.generate_content_stream(
            model=model, contents=self._contents(messages), config=self._config(timeout)
        )

    async def aopen_stream(
        self, client: Any, model: str, messages: Any, timeout: float | None
    ) -> Any:
        return await client.models.generate_content_stream(
            model=model, contents=self._contents(messages), config=self._config(timeout)
        )

    @staticmethod
    def delta(chunk: Any) -> str | None:
        return chunk.text or None

    @staticmethod
    def stream_headers(stream: Any, event: Any) -> Mapping[str, str]:
        if event is None or event.sdk_http_response is None:
            return {}
        return {k.lower(): v for k, v in (event.sdk_http_response.headers or {}).items()}

    def embed(self, client: Any, model: str, inputs: list[str]) -> list[list[float]]:
        resp = client.models.embed_content(model=model, contents=inputs)
        return [e.values for e in resp.embeddings]

    async def aembed(self, client: Any, model: str, inputs: list[str]) -> list[list[float]]:
        resp = await client.models.embed_content(model=model, contents=inputs)
        return [e.values for e in resp.embeddings]

    def close(self, client: Any) -> None:
        client.close()

    async def aclose(self, client: Any) -> None:
        await client.aclose()


def _family(provider: str) -> Any:
    """The SDK family for ``provider`` (skips the test when the SDK is not installed)."""
    if provider == "openai":
        return _Stainless(pytest.importorskip("openai"), "OpenAI", "AsyncOpenAI")
    if provider == "groq":
        return _Stainless(pytest.importorskip("groq"), "Groq", "AsyncGroq")
    if provider == "claude":
        return _Anthropic(pytest.importorskip("anthropic"), "Anthropic", "AsyncAnthropic")
    pytest.importorskip("google.genai")
    return _Genai()


# --- the façade -----------------------------------------------------------------------------


@dataclass
class Sdk:
    """One provider's official SDK on keymux's drop-in client, called sync or async."""

    provider: str
    mode: str
    family: Any = field(init=False, repr=False)
    client: Any = field(default=None, init=False, repr=False)
    http: Any = field(default=None, init=False, repr=False)
    #: requests the SDK handed to its HTTP client (each of its own attempts counts once)
    sent: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.family = _family(self.provider)

    def __str__(self) -> str:
        return f"{self.provider}-{self.mode}"

    @property
    def is_async(self) -> bool:
        return self.mode == "async"

    def build(
        self,
        mux: Multiplexer,
        *,
        key_name: str | None = None,
        strategy: str = "round-robin",
        max_retries: int | None = None,
    ) -> Any:
        """The SDK client (its own default max_retries unless told)."""
        kw: dict[str, Any] = {"key_name": key_name, "strategy": strategy}

        def count(request: Any) -> None:
            self.sent += 1

        async def acount(request: Any) -> None:
            self.sent += 1

        if self.provider == "gemini":
            sync_http = mux.http_client("gemini", **kw)
            async_http = mux.async_http_client("gemini", **kw)
            sync_http.event_hooks["request"].append(count)
            async_http.event_hooks["request"].append(acount)
            self.http = (sync_http, async_http)
        elif self.is_async:
            self.http = mux.async_http_client(self.provider, **kw)
            self.http.event_hooks["request"].append(acount)
        else:
            self.http = mux.http_client(self.provider, **kw)
            self.http.event_hooks["request"].append(count)
        self.client = self.family.build(self.http, self.is_async, max_retries)
        return self.client

    async def _run(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(fn)

    async def chat(
        self, *, messages: Any = HELLO, model: str | None = None, timeout: float | None = None
    ) -> Reply:
        model = model or MODELS[self.provider]
        if self.is_async:
            reply: Reply = await self.family.achat(self.client, model, messages, timeout)
            return reply
        return await self._run(lambda: self.family.chat(self.client, model, messages, timeout))  # type: ignore[no-any-return]

    async def stream(
        self, *, messages: Any = HELLO, model: str | None = None, timeout: float | None = None
    ) -> Streamed:
        """Read a whole stream; an exception that ends it is kept, not raised."""
        model = model or MODELS[self.provider]
        family = self.family
        out = Streamed([])
        if self.is_async:
            try:
                stream = await family.aopen_stream(self.client, model, messages, timeout)
                out.headers = family.stream_headers(stream, None)
                async for event in stream:
                    out.headers = out.headers or family.stream_headers(stream, event)
                    if (d := family.delta(event)) is not None:
                        out.deltas.append(d)
            except Exception as exc:
                out.error = exc
            return out

        def collect() -> Streamed:
            try:
                stream = family.open_stream(self.client, model, messages, timeout)
                out.headers = family.stream_headers(stream, None)
                for event in stream:
                    out.headers = out.headers or family.stream_headers(stream, event)
                    if (d := family.delta(event)) is not None:
                        out.deltas.append(d)
            except Exception as exc:
                out.error = exc
            return out

        return await self._run(collect)  # type: ignore[no-any-return]

    async def embed(self, inputs: list[str], *, model: str | None = None) -> list[list[float]]:
        model = model or EMBED_MODELS[self.provider]
        if self.is_async:
            return await self.family.aembed(self.client, model, inputs)  # type: ignore[no-any-return]
        return await self._run(lambda: self.family.embed(self.client, model, inputs))  # type: ignore[no-any-return]

    async def error(self, kind: str = "chat", **kw: Any) -> Failure:
        """The exception a chat call (kind "chat") or a stream (kind "stream") fails with."""
        if kind == "stream":
            streamed = await self.stream(**kw)
            assert streamed.error is not None, f"expected an error, got {streamed.deltas!r}"
            return failure_of(streamed.error)
        try:
            reply = await self.chat(**kw)
        except Exception as exc:
            return failure_of(exc)
        raise AssertionError(f"expected an error, got {reply!r}")

    async def close(self) -> None:
        if self.client is None:
            return
        if self.is_async:
            await self.family.aclose(self.client)
        else:
            await self._run(lambda: self.family.close(self.client))
