"""``keymux serve``: each provider's own API at its own paths, passed through with the key
swapped, over real loopback sockets (the emulator behind an in-process proxy)."""

from __future__ import annotations

import json
import threading

import pytest

from conftest import KeyPlan, fake_key, free_port
from keymux.emulator import Faults
from serve_support import (
    BEARER,
    HI,
    TOKEN,
    GatedUpstream,
    ServeFactory,
    every_provider,
    hello,
    plans,
    request,
    serve,
    wait_for,
)

__all__ = ["serve"]  # the fixture

pytestmark = pytest.mark.e2e

CLAUDE_HEADERS = {"x-api-key": TOKEN, "anthropic-version": "2023-06-01"}
CLAUDE_2_HEADERS = {"Authorization": f"Bearer {TOKEN}", "anthropic-version": "2026-10-21"}
GEMINI_HEADERS = {"x-goog-api-key": TOKEN}


def _settled(served: object, *names: tuple[str, str]) -> None:
    """Every key's slot is free again (also: the double-release workaround still evens out)."""
    proxy = served.proxy  # type: ignore[attr-defined]
    for provider, name in names:
        assert proxy.in_flight(provider, name) == 0, (provider, name)


def test_openai_chat_embeddings_models(serve: ServeFactory) -> None:
    served = serve(*plans("k1", "k2"))
    answer = served.request("POST", "/v1/chat/completions", {"model": "gpt-4o", "messages": HI})
    assert answer.status == 200
    assert answer.json()["choices"][0]["message"]["content"] == hello("openai")
    assert answer.headers["x-keymux-key"] in ("k1", "k2")
    assert answer.headers["x-keymux-attempts"] == "1"
    assert answer.headers["content-type"].startswith("application/json")
    assert "x-request-id" in answer.headers  # the provider's own headers pass through
    emb = served.request(
        "POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"]}
    )
    assert emb.status == 200
    assert len(emb.json()["data"]) == 2
    models = served.request("GET", "/v1/models")
    assert models.status == 200
    assert "gpt-4o" in [m["id"] for m in models.json()["data"]]
    one = served.request("GET", "/v1/models/gpt-4o")
    assert one.json()["id"] == "gpt-4o"
    # round-robin: both keys served
    keys = {answer.headers["x-keymux-key"], emb.headers["x-keymux-key"]}
    assert keys == {"k1", "k2"}
    _settled(served, ("openai", "k1"), ("openai", "k2"))
    stats = served.proxy.stats()["openai"]
    assert stats["k1"]["current_requests"] == 0
    assert sum(s["successes"] for s in stats.values()) == 4


def test_openai_stream_passes_through_unchanged(serve: ServeFactory) -> None:
    served = serve(*plans("k1"))
    body = {
        "model": "gpt-4o",
        "messages": HI,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    answer = served.request("POST", "/v1/chat/completions", body)
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["x-keymux-key"] == "k1"
    events = answer.events()
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == hello("openai")
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    # the stream's usage was counted by the core from its events
    stats = served.proxy.stats()["openai"]["k1"]
    assert stats["output_tokens"] == chunks[-1]["usage"]["completion_tokens"]
    _settled(served, ("openai", "k1"))


def test_groq_under_openai_v1(serve: ServeFactory) -> None:
    served = serve(*plans("g1", provider="groq"))
    body = {"model": "llama-3.1-8b-instant", "messages": HI}
    answer = served.request("POST", "/openai/v1/chat/completions", body)
    assert answer.status == 200
    assert answer.json()["choices"][0]["message"]["content"] == hello("groq")
    stream = served.request("POST", "/openai/v1/chat/completions", {**body, "stream": True})
    assert stream.events()[-1] == (None, "[DONE]")
    models = served.request("GET", "/openai/v1/models")
    assert "llama-3.1-8b-instant" in [m["id"] for m in models.json()["data"]]
    assert served.request("GET", "/openai/v1/models/llama-3.1-8b-instant").status == 200
    _settled(served, ("groq", "g1"))


@pytest.mark.parametrize("headers", [CLAUDE_HEADERS, CLAUDE_2_HEADERS], ids=["0.x", "2.x"])
def test_anthropic_messages_both_auth_forms(serve: ServeFactory, headers: dict[str, str]) -> None:
    served = serve(*plans("c1", provider="claude"))
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": HI}
    answer = served.request("POST", "/v1/messages", body, headers=headers)
    assert answer.status == 200, answer.body
    assert answer.json()["content"][0]["text"] == hello("claude")
    assert answer.headers["x-keymux-key"] == "c1"
    stream = served.request("POST", "/v1/messages", {**body, "stream": True}, headers=headers)
    names = [name for name, _ in stream.events()]
    assert names[0] == "message_start"
    assert names[-1] == "message_stop"
    # /v1/models is Anthropic's when the caller speaks Anthropic
    models = served.request("GET", "/v1/models", headers=headers)
    assert models.status == 200
    assert models.json()["data"][0]["type"] == "model"
    stats = served.proxy.stats()["claude"]["c1"]
    assert stats["successes"] == 3
    assert stats["output_tokens"] > 0
    _settled(served, ("claude", "c1"))


def test_anthropic_count_tokens_is_forwarded(serve: ServeFactory) -> None:
    served = serve(*plans("c1", provider="claude"))
    body = {"model": "claude-sonnet-4-5", "messages": HI}
    answer = served.request("POST", "/v1/messages/count_tokens", body, headers=CLAUDE_HEADERS)
    assert answer.status == 200, answer.body
    assert answer.json()["input_tokens"] > 0
    assert answer.headers["x-keymux-key"] == "c1"
    assert served.rig.server.requests[-1].path == "/v1/messages/count_tokens"
    assert served.rig.server.requests[-1].body == body  # the body, unchanged


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_gemini_methods(serve: ServeFactory, version: str) -> None:
    served = serve(*plans("m1", provider="gemini"))
    hi = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    path = f"/{version}/models/gemini-2.5-flash"
    answer = served.request("POST", f"{path}:generateContent", hi, headers=GEMINI_HEADERS)
    assert answer.status == 200, answer.body
    assert answer.json()["candidates"][0]["content"]["parts"][0]["text"] == hello("gemini")
    stream = served.request(
        "POST", f"{path}:streamGenerateContent?alt=sse", hi, headers=GEMINI_HEADERS
    )
    assert stream.headers["content-type"].startswith("text/event-stream")
    text = "".join(
        json.loads(data)["candidates"][0]["content"]["parts"][0]["text"]
        for _, data in stream.events()
    )
    assert text == hello("gemini")
    emb_path = f"/{version}/models/gemini-embedding-001"
    one = {"content": {"parts": [{"text": "a"}]}}
    assert (
        served.request("POST", f"{emb_path}:embedContent", one, headers=GEMINI_HEADERS).status
        == 200
    )
    batch = {"requests": [{"model": "models/gemini-embedding-001", **one}] * 2}
    answer = served.request("POST", f"{emb_path}:batchEmbedContents", batch, headers=GEMINI_HEADERS)
    assert len(answer.json()["embeddings"]) == 2
    models = served.request("GET", f"/{version}/models", headers=GEMINI_HEADERS)
    assert "models/gemini-2.5-flash" in [m["name"] for m in models.json()["models"]]
    one_model = served.request("GET", f"/{version}/models/gemini-2.5-pro", headers=GEMINI_HEADERS)
    assert one_model.json()["name"] == "models/gemini-2.5-pro"
    _settled(served, ("gemini", "m1"))


def test_gemini_key_query_parameter_is_moved_to_a_header(serve: ServeFactory) -> None:
    served = serve(*plans("m1", provider="gemini"))
    hi = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    answer = served.request(
        "POST",
        f"/v1beta/models/gemini-2.5-flash:generateContent?key={TOKEN}",
        hi,
        headers={},
    )
    assert answer.status == 200, answer.body
    last = served.rig.server.requests[-1]
    assert "key=" not in last.query  # neither the token nor the lane's key is in the URL


def test_shared_models_path_by_headers(serve: ServeFactory) -> None:
    served = serve(*every_provider(1))
    openai = served.request("GET", "/v1/models")
    assert openai.json()["object"] == "list"
    assert openai.headers["x-keymux-key"] == "k1"
    claude = served.request("GET", "/v1/models", headers=CLAUDE_HEADERS)
    assert "has_more" in claude.json()
    gemini = served.request("GET", "/v1/models", headers=GEMINI_HEADERS)
    assert "models" in gemini.json()
    assert {r.path for r in served.rig.server.requests} == {"/v1/models"}


def test_unknown_but_valid_body_passes_through(serve: ServeFactory) -> None:
    served = serve(*plans("k1"))
    body = {"model": "gpt-4o", "messages": HI, "x_future_field": {"nested": [1, 2]}}
    answer = served.request("POST", "/v1/chat/completions", body)
    assert answer.status == 200
    assert served.rig.server.requests[-1].body == body


def test_upstream_error_answer_is_passed_with_should_retry_false(serve: ServeFactory) -> None:
    served = serve(*plans("k1"))
    answer = served.request("POST", "/v1/chat/completions", {"model": "gpt-4o", "messages": []})
    assert answer.status == 400
    assert answer.headers["x-should-retry"] == "false"
    assert answer.headers["x-keymux-key"] == "k1"
    assert "error" in answer.json()
    _settled(served, ("openai", "k1"))


def test_a_spent_key_is_avoided(serve: ServeFactory) -> None:
    served = serve(KeyPlan("openai", "k1", rpm=1), KeyPlan("openai", "k2"))
    keys = []
    for _ in range(4):
        answer = served.request("POST", "/v1/chat/completions", {"model": "gpt-4o", "messages": HI})
        assert answer.status == 200
        keys.append(answer.headers["x-keymux-key"])
    # k1 had one request in its window: keymux learned it from the headers (or a 429) and
    # sent the rest to k2
    assert keys.count("k1") == 1
    assert keys.count("k2") == 3


def test_revoked_key_is_disabled_and_the_request_moves_on(serve: ServeFactory) -> None:
    served = serve(KeyPlan("openai", "bad", faults=Faults(revoked=True)), KeyPlan("openai", "good"))
    for _ in range(2):
        answer = served.request("POST", "/v1/chat/completions", {"model": "gpt-4o", "messages": HI})
        assert answer.status == 200
        assert answer.headers["x-keymux-key"] == "good"
    stats = served.proxy.stats()["openai"]
    assert stats["bad"]["status"] == "disabled"


def test_no_usable_key_is_503_in_the_dialect(serve: ServeFactory) -> None:
    served = serve(*plans("c1", provider="claude"))  # no OpenAI key at all
    answer = served.request("POST", "/v1/chat/completions", {"model": "gpt-4o", "messages": HI})
    assert answer.status == 503
    assert answer.headers["x-should-retry"] == "false"
    error = answer.json()["error"]
    assert "no openai keys are configured" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}  # OpenAI's shape


def test_every_queue_full_is_429(serve: ServeFactory) -> None:
    upstream = GatedUpstream()
    try:
        served = serve(mux={"max_concurrent_requests": 1, "queue_size": 1})
        served.proxy.call(
            lambda: served.proxy.mux.add_key(
                "openai", "only", "sk-gated-000000000000000001", base_url=upstream.base_url()
            )
        )
        body = {"model": "gpt-4o", "messages": HI, "stream": True}
        results: list[int] = []

        def call() -> None:
            results.append(request("POST", served.url + "/v1/chat/completions", body).status)

        first = threading.Thread(target=call)
        first.start()
        assert upstream.first_sent.wait(10)  # the slot is taken
        second = threading.Thread(target=call)
        second.start()
        wait_for(lambda: served.proxy.stats()["openai"]["only"]["queue_size"] == 1)
        third = served.request("POST", "/v1/chat/completions", body)
        assert third.status == 429
        assert third.headers["x-should-retry"] == "false"
        assert "queue" in third.json()["error"]["message"]
        upstream.gate.set()
        first.join(10)
        second.join(10)
        assert results == [200, 200]
    finally:
        upstream.stop()


def test_upstream_unreachable_is_502(serve: ServeFactory) -> None:
    served = serve(mux={"max_retries": 1})
    dead = f"http://127.0.0.1:{free_port()}/v1"
    served.proxy.call(
        lambda: served.proxy.mux.add_key(
            "openai", "dead", "sk-dead-00000000000000001", base_url=dead
        )
    )
    answer = served.request("POST", "/v1/chat/completions", {"model": "gpt-4o", "messages": HI})
    assert answer.status == 502
    assert answer.headers["x-should-retry"] == "false"
    assert answer.headers["x-keymux-key"] == "dead"
    assert "cannot connect" in answer.json()["error"]["message"]


def test_keys_echoed_by_an_upstream_are_masked_everywhere(serve: ServeFactory) -> None:
    upstream = GatedUpstream()
    secret = "sk-echo-0123456789abcdefghijklmn"
    try:
        served = serve()
        served.proxy.call(
            lambda: served.proxy.mux.add_key(
                "openai", "echo", secret, base_url=upstream.base_url(echo=True)
            )
        )
        for status in (400, 200):
            answer = served.request(
                "POST",
                "/v1/chat/completions",
                {"model": "gpt-4o", "messages": HI, "status": status},
            )
            assert answer.status == status
            assert secret.encode() not in answer.body
            assert all(secret not in value for value in answer.headers.values())
            assert answer.headers["x-echo-key"] == "sk-...klmn"
        assert upstream.keys_seen == [secret, secret]  # the lane's key went upstream
        assert TOKEN not in json.dumps(upstream.keys_seen)
    finally:
        upstream.stop()


def test_the_proxy_token_never_goes_upstream(serve: ServeFactory) -> None:
    upstream = GatedUpstream()
    upstream.gate.set()
    try:
        served = serve()
        served.proxy.call(
            lambda: served.proxy.mux.add_key(
                "openai", "up", "sk-up-000000000000000000001", base_url=upstream.base_url()
            )
        )
        body = {"model": "gpt-4o", "messages": HI, "stream": True}
        answer = served.request(
            "POST",
            "/v1/chat/completions",
            body,
            headers={**BEARER, "x-api-key": TOKEN, "X-Custom": "kept"},
        )
        assert answer.status == 200
        seen = upstream.headers_seen[-1]
        assert TOKEN not in json.dumps(seen)
        assert seen["Authorization"] == "Bearer sk-up-000000000000000000001"
        assert seen["X-Custom"] == "kept"
    finally:
        upstream.stop()


def test_fake_keys_reach_the_emulator(serve: ServeFactory) -> None:
    served = serve(*plans("k1"))
    served.request("POST", "/v1/chat/completions", {"model": "gpt-4o", "messages": HI})
    stats = served.rig.server.key_stats("openai:k1")
    assert stats["requests"] == 1
    assert fake_key("openai", "k1").startswith("sk-test-")
