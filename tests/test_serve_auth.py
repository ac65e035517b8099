"""Proxy tokens: taken from where each SDK sends its key, compared in constant time, refused
in the caller's dialect without reaching the upstream; and the start-up rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from keymux import ConfigError
from keymux.server import ServerConfig, TokenSet, load_tokens
from keymux.server._config import check_state_url, is_loopback
from serve_support import HI, TOKEN, ServeFactory, plans, serve

__all__ = ["serve"]  # the fixture

CLAUDE = {"anthropic-version": "2023-06-01"}
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}

#: (dialect, method, path, body, headers carrying a token ``{t}``)
CASES = [
    (
        "openai",
        "POST",
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": HI},
        {"Authorization": "Bearer {t}"},
    ),
    ("openai", "GET", "/v1/models", None, {"Authorization": "Bearer {t}"}),
    (
        "groq",
        "POST",
        "/openai/v1/chat/completions",
        {"model": "llama-3.1-8b-instant", "messages": HI},
        {"Authorization": "Bearer {t}"},
    ),
    (
        "claude",
        "POST",
        "/v1/messages",
        {"model": "claude-sonnet-4-5", "max_tokens": 9, "messages": HI},
        {"x-api-key": "{t}", **CLAUDE},
    ),
    (
        "claude",
        "POST",
        "/v1/messages",
        {"model": "claude-sonnet-4-5", "max_tokens": 9, "messages": HI},
        {"Authorization": "Bearer {t}", "anthropic-version": "2026-10-21"},
    ),
    ("claude", "GET", "/v1/models", None, {"x-api-key": "{t}", **CLAUDE}),
    (
        "gemini",
        "POST",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        GEMINI_BODY,
        {"x-goog-api-key": "{t}"},
    ),
    (
        "gemini",
        "POST",
        "/v1/models/gemini-2.5-flash:generateContent",
        GEMINI_BODY,
        {"x-goog-api-key": "{t}"},
    ),
    ("gemini", "GET", "/v1/models", None, {"x-goog-api-key": "{t}"}),
]


def _shape(dialect: str, body: dict[str, object]) -> None:
    """The body is the provider's own error shape, as its SDK parses it."""
    if dialect in ("openai", "groq"):
        assert set(body["error"]) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
    elif dialect == "claude":
        assert body["type"] == "error"
        assert body["error"]["type"] == "authentication_error"  # type: ignore[index]
    else:
        assert body["error"]["status"] == "UNAUTHENTICATED"  # type: ignore[index]
        assert body["error"]["code"] == 401  # type: ignore[index]


@pytest.mark.e2e
@pytest.mark.parametrize("token", ["missing", "wrong", "right"])
@pytest.mark.parametrize(("dialect", "method", "path", "body", "headers"), CASES)
def test_tokens_in_every_dialect(
    serve: ServeFactory,
    dialect: str,
    method: str,
    path: str,
    body: object,
    headers: dict[str, str],
    token: str,
) -> None:
    served = serve(*plans("k1", provider=dialect))
    value = {"wrong": TOKEN + "x", "right": TOKEN}.get(token)
    sent = {k: v.format(t=value) for k, v in headers.items() if value is not None or "{t}" not in v}
    answer = served.request(method, path, body, headers=sent)
    if token == "right":
        assert answer.status == 200, answer.body
        assert len(served.rig.server.requests) == 1
        return
    assert answer.status == 401
    assert answer.headers["x-should-retry"] == "false"
    if not sent and path == "/v1/models":
        dialect = "openai"  # nothing tells a shared path's caller apart: OpenAI's shape
    _shape(dialect, answer.json())
    assert served.rig.server.requests == []  # never reached the provider
    assert TOKEN not in answer.body.decode()


@pytest.mark.e2e
def test_gemini_key_query_parameter_is_a_token_too(serve: ServeFactory) -> None:
    served = serve(*plans("m1", provider="gemini"))
    path = "/v1beta/models/gemini-2.5-flash:generateContent"
    assert served.request("POST", f"{path}?key={TOKEN}", GEMINI_BODY, headers={}).status == 200
    refused = served.request("POST", f"{path}?key=nope", GEMINI_BODY, headers={})
    assert refused.status == 401
    assert refused.json()["error"]["status"] == "UNAUTHENTICATED"


@pytest.mark.e2e
def test_unknown_paths_want_a_token_first(serve: ServeFactory) -> None:
    served = serve(*plans("k1"))
    assert served.request("GET", "/v1/nothing", headers={}).status == 401
    assert served.request("GET", "/v1/nothing").status == 404


@pytest.mark.e2e
def test_operations_endpoints(serve: ServeFactory) -> None:
    served = serve(*plans("k1"))
    assert served.request("GET", "/healthz", headers={}).status == 200  # public
    assert served.request("GET", "/dashboard", headers={}).status == 200  # the page: public
    assert served.request("GET", "/metrics", headers={}).status == 401
    assert served.request("GET", "/metrics").status == 200
    assert served.request("GET", "/dashboard/data", headers={}).status == 401
    assert served.request("GET", "/dashboard/data").status == 200


@pytest.mark.e2e
def test_no_auth_accepts_anyone(serve: ServeFactory) -> None:
    served = serve(*plans("k1"), no_auth=True, tokens=TokenSet([]))
    answer = served.request(
        "POST", "/v1/chat/completions", {"model": "gpt-4o", "messages": HI}, headers={}
    )
    assert answer.status == 200


@pytest.mark.e2e
def test_several_tokens(serve: ServeFactory) -> None:
    served = serve(*plans("k1"), tokens=TokenSet(["tok-a-1234567890", "tok-b-1234567890"]))
    for token in ("tok-a-1234567890", "tok-b-1234567890"):
        headers = {"Authorization": f"Bearer {token}"}
        assert served.request("GET", "/v1/models", headers=headers).status == 200
    assert (
        served.request("GET", "/v1/models", headers={"Authorization": "Bearer tok-a"}).status == 401
    )


# --- the pure parts ----------------------------------------------------------------------------


def test_token_set_checks_every_token_and_hides_them() -> None:
    tokens = TokenSet(["alpha-0123456789", "beta-0123456789", "alpha-0123456789"])
    assert len(tokens) == 2
    assert tokens.check("beta-0123456789")
    assert not tokens.check("beta-012345678")
    assert not tokens.check("")
    assert not tokens.check(None)
    assert not tokens.check("alpha-0123456789 ")
    assert not tokens.check("ünïcode")
    assert "alpha" not in repr(tokens)
    assert not TokenSet([]).check("")
    with pytest.raises(ConfigError):
        TokenSet(["has space"])


def test_token_set_survives_pickling_for_workers() -> None:
    import pickle

    tokens = pickle.loads(pickle.dumps(TokenSet(["p-0123456789"])))
    assert tokens.check("p-0123456789")


def test_load_tokens(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text("# comment\n\nfile-token-1\n  file-token-2  \n")
    tokens = load_tokens({"KEYMUX_PROXY_TOKEN": "env-1, env-2"}, str(file))
    assert len(tokens) == 4
    assert all(tokens.check(t) for t in ("env-1", "env-2", "file-token-1", "file-token-2"))
    assert len(load_tokens({}, None)) == 0


@pytest.mark.parametrize(
    ("environ", "content", "message"),
    [
        ({"KEYMUX_PROXY_TOKEN": "a,,b"}, None, "empty item"),
        ({}, "", "no token in it"),
        ({}, "# only a comment\n", "no token in it"),
        ({}, "two words\n", ":1: a token holds no whitespace"),
    ],
)
def test_load_tokens_mistakes(
    tmp_path: Path, environ: dict[str, str], content: str | None, message: str
) -> None:
    path = None
    if content is not None:
        file = tmp_path / "tokens"
        file.write_text(content)
        path = str(file)
    with pytest.raises(ConfigError, match=message) as refused:
        load_tokens(environ, path)
    assert "two words" not in str(refused.value)


def test_unreadable_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_tokens({}, str(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_start_rules() -> None:
    ServerConfig(tokens=TokenSet(["t-0123456789"])).check_auth()
    ServerConfig(no_auth=True).check_auth()
    with pytest.raises(ConfigError, match="no proxy token"):
        ServerConfig().check_auth()
    with pytest.raises(ConfigError, match="only on a loopback host"):
        ServerConfig(host="0.0.0.0", no_auth=True).check_auth()


def test_state_urls() -> None:
    assert check_state_url("memory://") == "memory://"
    assert check_state_url("redis://:secret-password@host:6379/0") == (
        "redis://:secret-password@host:6379/0"
    )
    assert check_state_url("redis+cluster://h1:7000,h2:7001") == "redis+cluster://h1:7000,h2:7001"
    with pytest.raises(ConfigError, match=r"mongodb:// is not known") as refused:
        check_state_url("mongodb://:secret-password@host")
    assert "secret-password" not in str(refused.value)
    with pytest.raises(ConfigError, match=r"timeout=") as refused:
        check_state_url("rediss://:secret-password@host/0?timeout=-1")
    assert "secret-password" not in str(refused.value)
    with pytest.raises(ConfigError, match="takes a URL"):
        check_state_url("memory")
