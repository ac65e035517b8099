"""Bad input: oversize bodies, malformed JSON, unknown paths, callers gone mid-stream, broken
upstream streams. Each answer in the caller's dialect; nothing bad reaches the provider."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from serve_support import (
    BEARER,
    HI,
    TOKEN,
    GatedUpstream,
    OpenStream,
    ServeFactory,
    parse_sse,
    plans,
    serve,
    wait_for,
)

__all__ = ["serve"]  # the fixture

pytestmark = pytest.mark.e2e

CLAUDE = {"x-api-key": TOKEN, "anthropic-version": "2023-06-01"}
GEMINI = {"x-goog-api-key": TOKEN}
#: dialect -> (a JSON route, the headers its SDK sends)
ROUTES = {
    "openai": ("/v1/chat/completions", BEARER),
    "groq": ("/openai/v1/chat/completions", BEARER),
    "claude": ("/v1/messages", CLAUDE),
    "gemini": ("/v1beta/models/gemini-2.5-flash:generateContent", GEMINI),
}


def _dialect_of(body: dict[str, object]) -> str:
    if body.get("type") == "error":
        return "claude"
    error = body["error"]
    assert isinstance(error, dict)
    return "gemini" if "status" in error else "openai"


@pytest.fixture
def upstream() -> Iterator[GatedUpstream]:
    gated = GatedUpstream()
    yield gated
    gated.stop()


@pytest.mark.parametrize("dialect", list(ROUTES))
def test_oversize_body_is_413_in_the_dialect(serve: ServeFactory, dialect: str) -> None:
    served = serve(*plans("k1", provider=dialect), max_body=1024)
    path, headers = ROUTES[dialect]
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 2000}]}
    answer = served.request("POST", path, big, headers=headers)
    assert answer.status == 413
    assert _dialect_of(answer.json()) == ("openai" if dialect == "groq" else dialect)
    assert "1024 bytes" in answer.body.decode()
    assert served.rig.server.requests == []


def test_oversize_chunked_body_without_a_length(serve: ServeFactory) -> None:
    served = serve(*plans("k1"), max_body=1024)
    parts = urlsplit(served.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("POST", "/v1/chat/completions")
        conn.putheader("Authorization", BEARER["Authorization"])
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b"x" * 800
        for _ in range(3):
            conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        assert resp.status == 413
        assert "error" in json.loads(resp.read())
    finally:
        conn.close()
    assert served.rig.server.requests == []


def test_a_body_at_the_limit_passes(serve: ServeFactory) -> None:
    body = json.dumps({"model": "gpt-4o", "messages": HI}).encode()
    served = serve(*plans("k1"), max_body=len(body))
    answer = served.request("POST", "/v1/chat/completions", raw=body)
    assert answer.status == 200


@pytest.mark.parametrize("dialect", list(ROUTES))
@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe\x00garbage"])
def test_malformed_json_is_400_in_the_dialect(
    serve: ServeFactory, dialect: str, raw: bytes
) -> None:
    served = serve(*plans("k1", provider=dialect))
    path, headers = ROUTES[dialect]
    answer = served.request("POST", path, raw=raw, headers=headers)
    assert answer.status == 400
    assert _dialect_of(answer.json()) == ("openai" if dialect == "groq" else dialect)
    assert "JSON" in answer.body.decode()
    assert served.rig.server.requests == []


def test_json_that_is_not_an_object_is_the_providers_to_judge(serve: ServeFactory) -> None:
    served = serve(*plans("k1"))
    answer = served.request("POST", "/v1/chat/completions", raw=b"[1, 2]")
    assert answer.status == 400  # the emulator's own refusal, passed back
    assert len(served.rig.server.requests) == 1


@pytest.mark.parametrize(
    ("method", "path", "headers", "dialect"),
    [
        ("GET", "/v1/nothing", BEARER, "openai"),
        ("POST", "/v2/chat/completions", BEARER, "openai"),
        ("GET", "/v1/chat/completions", BEARER, "openai"),  # a known path, the wrong method
        ("GET", "/openai/v1/nothing", BEARER, "openai"),
        ("POST", "/v1/messages/batches", CLAUDE, "claude"),
        ("GET", "/v1beta/cachedContents", GEMINI, "gemini"),
        ("POST", "/v1beta/models/gemini-2.5-flash:predict", GEMINI, "gemini"),
        ("POST", "/v1/models/gemini-2.5-flash", GEMINI, "gemini"),
    ],
)
def test_unknown_path_is_404_in_the_dialect(
    serve: ServeFactory, method: str, path: str, headers: dict[str, str], dialect: str
) -> None:
    served = serve(*plans("k1"))
    answer = served.request(method, path, headers=headers)
    assert answer.status == 404
    assert _dialect_of(answer.json()) == dialect
    assert served.rig.server.requests == []


def test_unknown_path_does_not_echo_the_query(serve: ServeFactory) -> None:
    served = serve(*plans("k1"))
    answer = served.request("GET", f"/nothing?key={TOKEN}", headers={})
    assert answer.status == 404
    assert TOKEN not in answer.body.decode()


def _gone_mid_stream(served: object, upstream: GatedUpstream, body: dict[str, object]) -> None:
    url = served.url + "/v1/chat/completions"  # type: ignore[attr-defined]
    stream = OpenStream(url, body)
    assert stream.status == 200
    stream.until(b"first ")
    # the caller goes away without a word: the socket is shut, not the request finished
    stream.conn.sock.shutdown(socket.SHUT_RDWR)
    stream.close()
    assert upstream.dropped.wait(10)  # the proxy cancelled the upstream request
    assert not upstream.finished.is_set()


def test_caller_gone_mid_stream_cancels_upstream_and_frees_the_slot(
    serve: ServeFactory, upstream: GatedUpstream
) -> None:
    served = serve(mux={"max_concurrent_requests": 1})
    served.proxy.mux.add_key(
        "openai", "up", "sk-up-00000000000000000001", base_url=upstream.base_url()
    )
    body = {"model": "gpt-4o", "messages": HI, "stream": True}
    _gone_mid_stream(served, upstream, body)
    assert served.proxy.in_flight("openai", "up") == 0  # freed before the upstream saw it
    # the key's only slot is free: the next request gets it at once
    upstream.gate.set()
    answer = served.request("POST", "/v1/chat/completions", body)
    assert answer.status == 200
    wait_for(lambda: served.proxy.call(lambda: served.proxy.proxy.in_progress == 0))
    data = served.request("GET", "/metrics").body.decode()
    assert 'keymux_requests_total{key="up",outcome="client_gone",provider="openai"} 1.0' in data


def test_caller_gone_mid_translated_stream(serve: ServeFactory, upstream: GatedUpstream) -> None:
    served = serve()
    served.proxy.mux.add_key(
        "claude", "up", "sk-ant-up-000000000000001", base_url=upstream.base_url("claude")
    )
    body = {"model": "claude/claude-gated", "messages": HI, "stream": True}
    _gone_mid_stream(served, upstream, body)
    assert served.proxy.in_flight("claude", "up") == 0


@pytest.mark.parametrize("mode", ["error", "cut"])
def test_native_stream_broken_midway_is_cut_not_ended(
    serve: ServeFactory, upstream: GatedUpstream, mode: str
) -> None:
    served = serve()
    served.proxy.mux.add_key(
        "openai", "up", "sk-up-00000000000000000001", base_url=upstream.base_url()
    )
    body = {"model": "gpt-4o", "messages": HI, "stream": True, "x_gate_mode": mode}
    stream = OpenStream(served.url + "/v1/chat/completions", body)
    try:
        stream.until(b"first ")
        upstream.gate.set()
        data, cut = stream.rest()
    finally:
        stream.close()
    events = parse_sse(data)
    if mode == "error":
        # the provider's own error event passes through as it is (the SDK raises on it)
        assert json.loads(events[-1][1])["error"]["message"] == "overloaded"
        assert not cut
    else:
        assert cut  # no clean end after a cut upstream
    assert (None, "[DONE]") not in events
    wait_for(lambda: served.proxy.in_flight("openai", "up") == 0)
