"""OpenAI's chat API for every provider: ``POST /v1/chat/completions`` with ``"model":
"claude/..."``, ``"gemini/..."`` or ``"groq/..."`` (any other model is OpenAI's own, passed
through).

Anthropic and Gemini: the target's adapter writes the native request from the OpenAI body
(``_translate.py`` says which parameters go where); the native answer is forwarded through the
core like any pass-through (so the ``Head`` gives the key's name and the attempts before the
body, the core counts usage from the native events, and closing the forward frees the slot),
then read with the adapter's own ``parse`` / ``stream_decoder`` and written as OpenAI's
``chat.completion`` or ``chat.completion.chunk`` events. Groq speaks OpenAI's API: its body is
forwarded with the model renamed.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict

from .._core import Head
from .._errors import KeymuxError, StreamError
from .._forward import prepare_forward
from ..providers import ADAPTERS, SSEParser, StreamFailure
from ._dialect import error_response
from ._translate import ChunkWriter, TranslationError, completion, split_model, translate_params
from ._util import EVENT_STREAM, Secret, abort, generator, scrub

if TYPE_CHECKING:
    from ._app import Proxy

__all__ = ["chat"]


async def chat(proxy: Proxy, request: web.Request) -> web.StreamResponse:
    refused = proxy._refuse(request, "openai")
    if refused is not None:
        return refused
    got = await proxy._body(request, "openai", True)
    if isinstance(got, web.Response):
        return got
    body: bytes = got
    data = json.loads(body)
    try:
        target = split_model(data.get("model")) if isinstance(data, dict) else None
    except TranslationError as exc:
        proxy.metrics.request("openai", None, "bad_request")
        return error_response("openai", 400, str(exc))
    if target is None:
        prepared = prepare_forward(
            "openai",
            "POST",
            request.rel_url.raw_path,
            request.query_string,
            request.headers,
            body,
        )
        return await proxy._relay(request, "openai", "openai", prepared)
    provider, model = target
    if provider == "groq":  # Groq speaks OpenAI's API: only the model's name changes
        data["model"] = model
        prepared = prepare_forward(
            "groq",
            "POST",
            "/openai/v1/chat/completions",
            request.query_string,
            request.headers,
            json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(),
        )
        return await proxy._relay(request, "openai", "groq", prepared)
    return await _translated(proxy, request, provider, model, data)


async def _translated(
    proxy: Proxy, request: web.Request, provider: str, model: str, data: dict[str, Any]
) -> web.StreamResponse:
    adapter = ADAPTERS[provider]
    stream = data.get("stream") is True
    try:
        params, include_usage = translate_params(provider, data)
        prepared = adapter.prepare("chat", params, model=model, stream=stream)
    except KeymuxError as exc:
        proxy.metrics.request(provider, None, "bad_request")
        return error_response("openai", 400, str(exc))
    gateway = proxy._gateway
    tokens = adapter.estimate_tokens("chat", params) if gateway.counts_tokens else 0
    started = time.perf_counter()
    proxy.in_progress += 1
    outcome = "ok"
    key: str | None = None
    try:
        try:
            gen = generator(gateway.aforward(gateway.forwarded(provider, prepared, tokens=tokens)))
            head = await gen.__anext__()
        except KeymuxError as exc:
            outcome = "refused"
            key = exc.key_name
            return proxy._keymux_error("openai", provider, exc)
        try:
            assert isinstance(head, Head)
            key = head.key_name
            secret = proxy._secrets.of(provider, key)
            headers: CIMultiDict[str] = CIMultiDict()
            headers["x-keymux-key"] = head.key_name
            headers["x-keymux-attempts"] = str(head.attempts)
            if head.error is not None:  # keymux gave up: the provider's last answer
                outcome = "upstream_error"
                message = str(head.error) if head.error is not None else "upstream error"
                return error_response(
                    "openai",
                    head.status,
                    proxy._secrets.scrub_text(provider, message),
                    key_name=head.key_name,
                    attempts=head.attempts,
                )
            if stream:
                headers["Content-Type"] = EVENT_STREAM
                headers["Cache-Control"] = "no-cache"
                resp = web.StreamResponse(status=200, headers=headers)
                writer = ChunkWriter(provider, model, include_usage)
                outcome = await _translate_stream(
                    proxy, request, resp, gen, writer, secret, started, key
                )
                return resp
            raw = await gen.__anext__()  # the whole body, in one piece
            assert isinstance(raw, bytes)
            try:
                native = json.loads(raw)
                parsed = adapter.parse("chat", native)
            except (ValueError, TypeError, KeyError, AttributeError):
                outcome = "upstream_error"
                return error_response(
                    "openai",
                    502,
                    f"{provider} key {head.key_name!r}: the provider's answer could not be read",
                    key_name=head.key_name,
                    attempts=head.attempts,
                )
            headers["Content-Type"] = "application/json"
            out = completion(provider, model, parsed, native)
            return web.Response(status=200, body=scrub(out, secret), headers=headers)
        finally:
            await gen.aclose()
    except asyncio.CancelledError:
        outcome = "client_gone"
        raise
    finally:
        proxy.in_progress -= 1
        proxy.metrics.request(provider, key, outcome)


async def _translate_stream(
    proxy: Proxy,
    request: web.Request,
    resp: web.StreamResponse,
    gen: Any,
    writer: ChunkWriter,
    secret: Secret | None,
    started: float,
    key: str,
) -> str:
    """A native stream rewritten as OpenAI chunks. The outcome label."""
    provider = writer.provider
    decoder = ADAPTERS[provider].stream_decoder()
    parser = SSEParser()
    await resp.prepare(request)
    try:
        await resp.write(writer.role())
        proxy.metrics.first_byte_after(provider, key, time.perf_counter() - started)
        finished = False
        while not finished:
            try:
                chunk = await gen.__anext__()
            except StopAsyncIteration:
                events = parser.close()
                finished = True
            else:
                events = parser.feed(chunk)
            out: list[bytes] = []
            for event in events:
                text = decoder.feed(event)
                if text:
                    out.append(writer.delta(text))
                if decoder.done:
                    finished = True
                    break
            if out:
                await resp.write(scrub(b"".join(out), secret))
        if not decoder.done:
            await resp.write(writer.error(f"the {provider} stream ended before its end"))
            abort(request)
            return "stream_error"
        await resp.write(writer.end(decoder.result()))
        # read the provider's stream to its end: only then does the core count the answer
        # (and its usage) as a success
        try:
            async for _ in gen:
                pass
        except StreamError:  # after the end marker: the caller has its whole answer
            pass
    except (StreamFailure, StreamError) as exc:
        message = proxy._secrets.scrub_text(provider, str(exc))
        try:
            await resp.write(writer.error(message, getattr(exc, "error_type", None) or ""))
        except ConnectionError:
            return "client_gone"
        abort(request)
        return "stream_error"
    except (ValueError, TypeError, KeyError) as exc:
        await resp.write(writer.error(f"the {provider} stream could not be read: {exc}"))
        abort(request)
        return "stream_error"
    except ConnectionError:
        return "client_gone"
    await resp.write_eof()
    return "ok"
