"""The proxy (``keymux.server.Proxy``) on a real loopback socket, for the ``test_serve_*`` files.

``ProxyThread`` runs one proxy on its own event loop in a daemon thread (like the emulator in
``conftest.py``), so sync tests, the official SDKs and a browser all talk to it over HTTP. Its
multiplexer binds to that loop when the proxy starts.

``GatedUpstream`` is a tiny OpenAI-shaped upstream whose streams stop after their first event
until the test opens the gate, and which records when the proxy dropped it: the deterministic
way to have a stream in flight (no sleeps).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from conftest import KeyPlan, MakeRig, Rig
from keymux import Multiplexer
from keymux.server import Proxy, ServerConfig, TokenSet

T = TypeVar("T")

TOKEN = "kmx-test-proxy-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
HI = [{"role": "user", "content": "hi"}]


def hello(provider: str, said: str = "hi") -> str:
    return f"Hello from the keymux emulator ({provider}). You said: {said}"


class LoopThread:
    """An event loop in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def run(self, factory: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(factory(), self.loop).result(timeout=timeout)

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapper() -> T:
            return fn()

        return self.run(wrapper)

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)


class ProxyThread(LoopThread):
    """A started ``Proxy`` on 127.0.0.1 (a free port)."""

    def __init__(self, mux: Multiplexer, config: ServerConfig) -> None:
        super().__init__("keymux-test-proxy")
        self.mux = mux
        self.proxy = self.run(lambda: _make_proxy(mux, config))
        self.url = self.run(lambda: self.proxy.start(port=0))
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            try:
                self.run(self.proxy.stop)
            finally:
                self.close()

    def lane(self, provider: str, name: str) -> Any:
        return self.mux._core.dispatch.providers[provider].lanes[name]

    def in_flight(self, provider: str, name: str) -> int:
        return self.call(lambda: int(self.lane(provider, name).in_flight))

    def stats(self) -> dict[str, Any]:
        return self.call(self.mux.get_usage_stats)


async def _make_proxy(mux: Multiplexer, config: ServerConfig) -> Proxy:
    return Proxy(mux, config)


def config(**options: Any) -> ServerConfig:
    """A test ServerConfig: the test token, tiny sampling interval, loopback."""
    options.setdefault("tokens", TokenSet([TOKEN]))
    options.setdefault("sample_interval", 0.2)
    options.setdefault("grace", 2.0)
    return ServerConfig(**options)


@dataclass
class Served:
    """An emulator rig and a proxy in front of its keys."""

    rig: Rig
    proxy: ProxyThread

    @property
    def url(self) -> str:
        return self.proxy.url

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Answer:
        return request(method, self.url + path, body, **kw)


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    #: the connection closed before the body's end (a stream the proxy cut)
    cut: bool = False

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[tuple[str | None, str]]:
        return parse_sse(self.body)


def request(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    raw: bytes | None = None,
    timeout: float = 20,
) -> Answer:
    """One HTTP exchange with http.client (no library's own retries or auth)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    sent = dict(headers if headers is not None else BEARER)
    if data is not None:
        sent.setdefault("Content-Type", "application/json")
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=data, headers=sent)
        resp = conn.getresponse()
        cut = False
        try:
            payload = resp.read()
        except http.client.IncompleteRead as exc:
            payload, cut = exc.partial, True
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload, cut)
    finally:
        conn.close()


def parse_sse(data: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of each server-sent event."""
    events: list[tuple[str | None, str]] = []
    name: str | None = None
    lines: list[str] = []
    for line in data.decode().replace("\r\n", "\n").split("\n"):
        if not line:
            if lines:
                events.append((name, "\n".join(lines)))
            name, lines = None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            lines.append(line[5:].lstrip())
    if lines:
        events.append((name, "\n".join(lines)))
    return events


ServeFactory = Callable[..., Served]


@pytest.fixture
def serve(make_rig: MakeRig) -> Iterator[ServeFactory]:
    """``serve(*KeyPlan, mux={...}, emulator={...}, **ServerConfig options) -> Served``."""
    started: list[ProxyThread] = []

    def factory(
        *keys: KeyPlan,
        mux: Mapping[str, Any] | None = None,
        emulator: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Served:
        rig = make_rig(*keys, **dict(emulator or {}))
        proxy = ProxyThread(rig.multiplexer(**dict(mux or {})), config(**options))
        started.append(proxy)
        return Served(rig, proxy)

    yield factory
    for proxy in started:
        proxy.stop()


# --- an upstream under the test's control ---------------------------------------------------


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(data).encode() + b"\n\n"


def _openai_chunk(text: str, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    return _sse({"id": "chatcmpl-gated", "object": "chat.completion.chunk", "choices": [choice]})


def _claude_delta(text: str) -> bytes:
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }
    return _sse(delta, "content_block_delta")


def _gemini_part(text: str, finish: str | None = None) -> bytes:
    cand: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    chunk: dict[str, Any] = {"candidates": [cand], "modelVersion": "gemini-gated"}
    if finish:
        cand["finishReason"] = finish
        chunk["usageMetadata"] = {"promptTokenCount": 1, "candidatesTokenCount": 2}
    return _sse(chunk)


_MESSAGE = {
    "id": "msg_gated",
    "type": "message",
    "role": "assistant",
    "model": "claude-gated",
    "content": [],
    "usage": {"input_tokens": 1, "output_tokens": 0},
}

#: provider -> (events before the gate, events after it, the error event)
SCRIPTS: dict[str, tuple[list[bytes], list[bytes], bytes]] = {
    "openai": (
        [_openai_chunk("first ")],
        [_openai_chunk("second"), _openai_chunk("", "stop"), b"data: [DONE]\n\n"],
        _sse({"error": {"message": "overloaded", "type": "server_error"}}),
    ),
    "claude": (
        [
            _sse({"type": "message_start", "message": _MESSAGE}, "message_start"),
            _sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
            _claude_delta("first "),
        ],
        [
            _claude_delta("second"),
            _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": 2},
                },
                "message_delta",
            ),
            _sse({"type": "message_stop"}, "message_stop"),
        ],
        _sse(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "error",
        ),
    ),
    "gemini": (
        [_gemini_part("first ")],
        [_gemini_part("second", "STOP")],
        _sse({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}),
    ),
}


@dataclass
class GatedUpstream(LoopThread):
    """An upstream for OpenAI (base ``root/v1``), Anthropic and Gemini (base ``root``): each
    stream sends its first events, waits for ``gate``, then ends as the request's
    ``x_gate_mode`` says: "ok" (the rest), "error" (an error event), "cut" (the connection
    closed mid-body). ``/echo/v1/chat/completions`` answers with the key it was sent, in a
    header and the body."""

    gate: threading.Event = field(default_factory=threading.Event)
    first_sent: threading.Event = field(default_factory=threading.Event)
    dropped: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    keys_seen: list[str] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    root: str = ""

    def __post_init__(self) -> None:
        LoopThread.__init__(self, "keymux-test-upstream")
        self.root = self.run(self._start)

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._stream("openai"))
        app.router.add_post("/v1/messages", self._stream("claude"))
        app.router.add_post("/v1beta/models/{target}", self._stream("gemini"))
        app.router.add_post("/echo/v1/chat/completions", self._echo)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def base_url(self, provider: str = "openai", *, echo: bool = False) -> str:
        if echo:
            return self.root + "/echo/v1"
        return self.root + ("/v1" if provider == "openai" else "")

    def _stream(self, provider: str) -> Callable[[web.Request], Coroutine[Any, Any, Any]]:
        before, after, error = SCRIPTS[provider]

        async def handler(request: web.Request) -> web.StreamResponse:
            self.keys_seen.append(
                request.headers.get("Authorization")
                or request.headers.get("x-api-key")
                or request.headers.get("x-goog-api-key", "")
            )
            self.headers_seen.append(dict(request.headers))
            mode = (await request.json()).get("x_gate_mode", "ok")
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            try:
                await resp.prepare(request)
                for event in before:
                    await resp.write(event)
                self.first_sent.set()
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self.gate.wait, 30)
                if mode == "cut":
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                for event in after if mode == "ok" else [error]:
                    await resp.write(event)
                await resp.write_eof()
                self.finished.set()
            except (asyncio.CancelledError, ConnectionError):
                self.dropped.set()
                raise
            return resp

        return handler

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.keys_seen.append(key)
        body = await request.json()
        status = int(body.get("status", 400))
        payload: dict[str, Any] = {
            "error": {"message": f"Incorrect API key provided: {key}", "type": "x", "code": None}
        }
        if status == 200:
            payload = {
                "id": "chatcmpl-echo",
                "object": "chat.completion",
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"you sent {key}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        return web.json_response(payload, status=status, headers={"x-echo-key": key})

    def stop(self) -> None:
        self.gate.set()
        try:
            self.run(self._runner.cleanup)
        finally:
            self.close()


class OpenStream:
    """A request whose answer is read line by line as it arrives (http.client)."""

    def __init__(
        self, url: str, body: Any, headers: Mapping[str, str] | None = None, timeout: float = 20
    ) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        sent = {**(headers if headers is not None else BEARER), "Content-Type": "application/json"}
        self.conn.request("POST", parts.path, body=json.dumps(body).encode(), headers=sent)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        self.seen = b""

    def until(self, marker: bytes) -> bytes:
        """Read lines until one holds ``marker``; everything read so far."""
        while marker not in self.seen:
            line = self.resp.readline()
            if not line:
                raise AssertionError(f"the stream ended before {marker!r}: {self.seen!r}")
            self.seen += line
        return self.seen

    def rest(self) -> tuple[bytes, bool]:
        """The rest of the body, and whether the connection was cut before its end."""
        try:
            self.seen += self.resp.read()
            return self.seen, False
        except http.client.IncompleteRead as exc:
            self.seen += exc.partial
            return self.seen, True

    def close(self) -> None:
        self.conn.close()


def plans(*names: str, provider: str = "openai", **limits: Any) -> tuple[KeyPlan, ...]:
    return tuple(KeyPlan(provider, name, **limits) for name in names)


ALL_PROVIDERS = ("openai", "groq", "claude", "gemini")


def every_provider(count: int = 2) -> tuple[KeyPlan, ...]:
    """``count`` keys of each provider, named k1..kN."""
    return tuple(
        KeyPlan(provider, f"k{i}") for provider in ALL_PROVIDERS for i in range(1, count + 1)
    )


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Block until ``condition()`` holds (checked on each emulator/proxy event, bounded)."""
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not done.is_set():
            if condition():
                return
            done.wait(0.01)
        raise AssertionError(f"condition not met within {timeout} s")
    finally:
        deadline.cancel()


# --- a real browser: Debian's Chromium, headless, driven by playwright -----------------------

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing(what: str) -> None:
    reason = (
        f"{what}: the browser tests cannot run. Install it (apt-get install -y "
        "chromium; pip install playwright) - .ci/run does so in CI."
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip("LOUD SKIP: " + reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        _missing(f"Chromium is not at {CHROMIUM}")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()
