"""``keymux serve --cors-origin``: pages on another origin call the proxy from a browser.

Off by default; with origins listed, a preflight is answered before routing and the token
check, every answer to a listed origin (streams, 401s) carries ``Access-Control-Allow-Origin``,
and an origin not listed gets no CORS header. The end-to-end test runs a page on its own
loopback origin in Debian's Chromium (``serve_support.browser``) that calls the proxy with
``fetch``: a chat answer, a stream read chunk by chunk, and a page from an origin not listed
that the browser keeps the answer from.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from conftest import KeyPlan
from keymux import ConfigError
from keymux.server._config import ServerConfig
from keymux.server._cors import CorsPolicy, check_origin
from serve_support import BEARER, HI, TOKEN, LoopThread, ServeFactory, browser, serve

__all__ = ["browser", "serve"]  # the fixtures

APP = "http://app.example:3000"
KEY = KeyPlan("openai", "OPENAI_API_KEY")
CHAT = {"model": "gpt-4o-mini", "messages": HI}


def _preflight(origin: str, **extra: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
        **extra,
    }


# --- the origins it takes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "origin"),
    [
        ("*", "*"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("HTTP://LocalHost:3000/", "http://localhost:3000"),
        ("https://app.example:443", "https://app.example"),
        ("http://app.example:80", "http://app.example"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("  https://ui.example  ", "https://ui.example"),
    ],
)
def test_an_origin_is_read_as_browsers_send_it(given: str, origin: str) -> None:
    assert check_origin(given) == origin


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ("localhost:3000", "is not an origin"),
        ("ftp://files.example", "is not an origin"),
        ("http://", "is not an origin"),
        ("http://app.example:99999", "is not an origin"),
        ("http://app.example/ui", "more than an origin"),
        ("http://app.example?x=1", "more than an origin"),
        ("http://user@app.example", "more than an origin"),
        ("", "is not an origin"),
    ],
)
def test_a_bad_origin_is_a_clear_config_error(given: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named) as caught:
        ServerConfig(cors_origins=(given,))
    assert "e.g. http://localhost:3000" in str(caught.value)


def test_the_policy_answers_listed_origins_only() -> None:
    policy = CorsPolicy([APP, "https://ui.example"])
    assert policy
    assert policy.allowed(APP) == APP
    assert policy.allowed("http://app.example:3001") is None
    assert policy.allowed(None) is None
    assert CorsPolicy(["*"]).allowed("http://anything.example") == "*"
    assert not CorsPolicy()


# --- over a real socket ---------------------------------------------------------------------


def test_cors_is_off_by_default(serve: ServeFactory) -> None:
    served = serve(KEY)
    answer = served.request("POST", "/v1/chat/completions", CHAT, headers={**BEARER, "Origin": APP})
    assert answer.status == 200
    assert "access-control-allow-origin" not in answer.headers
    refused = served.request("OPTIONS", "/v1/chat/completions", headers=_preflight(APP))
    assert "access-control-allow-origin" not in refused.headers
    assert refused.status == 401  # routed like any request without a token


def test_a_preflight_from_a_listed_origin_is_answered_without_a_token(serve: ServeFactory) -> None:
    served = serve(KEY, cors_origins=(APP,))
    asked = _preflight(
        APP,
        **{
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    answer = served.request("OPTIONS", "/v1/chat/completions", headers=asked)
    assert answer.status == 204
    assert answer.headers["access-control-allow-origin"] == APP
    assert answer.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    assert answer.headers["access-control-allow-headers"] == (
        "authorization, content-type, x-stainless-os"
    )
    assert answer.headers["access-control-allow-private-network"] == "true"
    assert answer.headers["access-control-max-age"] == "600"
    assert "Origin" in answer.headers["vary"]
    assert "access-control-allow-credentials" not in answer.headers
    assert served.rig.server.stats()["total"]["requests"] == 0  # nothing went upstream


def test_a_preflight_asking_for_garbage_headers_gets_none_allowed(serve: ServeFactory) -> None:
    served = serve(KEY, cors_origins=(APP,))
    asked = _preflight(APP, **{"Access-Control-Request-Headers": "authorization, (bad)"})
    answer = served.request("OPTIONS", "/v1/messages", headers=asked)
    assert answer.status == 204
    assert "access-control-allow-headers" not in answer.headers


def test_answers_to_a_listed_origin_are_marked_streams_and_refusals_too(
    serve: ServeFactory,
) -> None:
    served = serve(KEY, cors_origins=(APP, "https://ui.example"))
    sent = {**BEARER, "Origin": APP}
    plain = served.request("POST", "/v1/chat/completions", CHAT, headers=sent)
    assert plain.status == 200
    assert plain.headers["access-control-allow-origin"] == APP
    assert plain.headers["access-control-expose-headers"] == "*"
    assert "Origin" in plain.headers["vary"]
    assert plain.headers["x-keymux-key"] == "OPENAI_API_KEY"

    stream = served.request("POST", "/v1/chat/completions", {**CHAT, "stream": True}, headers=sent)
    assert stream.status == 200
    assert stream.headers["access-control-allow-origin"] == APP
    assert stream.events()[-1][1] == "[DONE]"

    refused = served.request("POST", "/v1/chat/completions", CHAT, headers={"Origin": APP})
    assert refused.status == 401  # the token still decides who is served
    assert refused.headers["access-control-allow-origin"] == APP

    other = served.request(
        "POST", "/v1/chat/completions", CHAT, headers={**BEARER, "Origin": "https://evil.example"}
    )
    assert other.status == 200  # served (the token is good), but the browser gets no grant
    assert "access-control-allow-origin" not in other.headers
    assert "Origin" in other.headers["vary"]


def test_any_origin(serve: ServeFactory) -> None:
    served = serve(KEY, cors_origins=("*",))
    answer = served.request(
        "GET", "/v1/models", headers={**BEARER, "Origin": "http://whatever.example"}
    )
    assert answer.status == 200
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "vary" not in answer.headers or "Origin" not in answer.headers["vary"]


# --- in a browser ---------------------------------------------------------------------------

PAGE = """<!doctype html><meta charset="utf-8"><title>app</title>
<script>
async function chat(proxy, token) {
  const r = await fetch(proxy + "/v1/chat/completions", {
    method: "POST",
    headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    body: JSON.stringify({model: "gpt-4o-mini", messages: [{role: "user", content: "hi"}]}),
  });
  const body = await r.json();
  return {status: r.status, key: r.headers.get("x-keymux-key"),
          text: body.choices[0].message.content};
}
async function stream(proxy, token) {
  const r = await fetch(proxy + "/v1/chat/completions", {
    method: "POST",
    headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    body: JSON.stringify({model: "gpt-4o-mini", stream: true,
                          messages: [{role: "user", content: "hi"}]}),
  });
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let chunks = 0, text = "";
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    chunks += 1;
    text += decoder.decode(value, {stream: true});
  }
  return {status: r.status, chunks, done: text.includes("data: [DONE]")};
}
async function denied(proxy, token) {
  try {
    await chat(proxy, token);
    return "read";
  } catch (e) {
    return e.name;
  }
}
</script>"""


class PageServer(LoopThread):
    """The page above, on its own loopback origin (another port: another origin)."""

    def __init__(self) -> None:
        super().__init__("cors-page")
        self.origin = self.run(self._start)

    async def _start(self) -> str:
        async def index(request: web.Request) -> web.Response:
            return web.Response(text=PAGE, content_type="text/html")

        app = web.Application()
        app.router.add_get("/", index)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.run(self._runner.cleanup)
        self.close()


@pytest.fixture
def app_page() -> Iterator[PageServer]:
    server = PageServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.e2e
def test_a_page_on_a_listed_origin_calls_the_proxy_with_fetch(
    serve: ServeFactory, browser: Any, app_page: PageServer
) -> None:
    served = serve(KEY, cors_origins=(app_page.origin,))
    page = browser.new_page()
    page.goto(app_page.origin + "/")
    got = page.evaluate("([proxy, token]) => chat(proxy, token)", [served.url, TOKEN])
    assert got["status"] == 200
    assert got["key"] == "OPENAI_API_KEY"  # an exposed header the page can read
    assert got["text"].startswith("Hello from the keymux emulator")
    streamed = page.evaluate("([proxy, token]) => stream(proxy, token)", [served.url, TOKEN])
    assert streamed["status"] == 200
    assert streamed["done"]
    assert streamed["chunks"] >= 1
    page.close()


@pytest.mark.e2e
def test_a_page_on_an_origin_not_listed_cannot_read_the_answer(
    serve: ServeFactory, browser: Any, app_page: PageServer
) -> None:
    served = serve(KEY, cors_origins=("http://elsewhere.example",))
    page = browser.new_page()
    page.goto(app_page.origin + "/")
    assert page.evaluate("([proxy, token]) => denied(proxy, token)", [served.url, TOKEN]) == (
        "TypeError"  # the browser's "Failed to fetch": the preflight got no grant
    )
    assert served.rig.server.stats()["total"]["requests"] == 0
    page.close()


def test_serve_flag_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from keymux.cli._serve import _cors_origins

    monkeypatch.setenv("KEYMUX_CORS_ORIGINS", "http://a.example, http://b.example:8080 ,")
    assert _cors_origins(None) == ("http://a.example", "http://b.example:8080")
    assert _cors_origins(["*"]) == ("*",)  # the flag wins over the variable
    monkeypatch.delenv("KEYMUX_CORS_ORIGINS")
    assert _cors_origins(None) == ()
