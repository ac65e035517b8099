"""``/dashboard`` in a real browser: Debian's Chromium, headless, driven by playwright (no
browser download). The page shows every key's name and follows a key being disabled.

Without Chromium the browser test is skipped with a loud reason on a developer's machine, and
fails in CI (``CI`` set), where ``.ci/run`` installs it.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import KeyPlan
from keymux.server._dashboard import History, dashboard_data
from serve_support import HI, TOKEN, ServeFactory, browser, serve

__all__ = ["browser", "serve"]  # the fixtures

KEYS = (
    KeyPlan("openai", "OPENAI_API_KEY"),
    KeyPlan("openai", "OPENAI_API_KEY_2"),
    KeyPlan("groq", "GROQ_API_KEY"),
    KeyPlan("claude", "ANTHROPIC_API_KEY"),
    KeyPlan("gemini", "GEMINI_API_KEY"),
)


@pytest.mark.e2e
def test_dashboard_shows_every_key_and_follows_a_disabled_one(
    serve: ServeFactory, browser: Any
) -> None:
    served = serve(*KEYS)
    page = browser.new_page()
    page.goto(f"{served.url}/dashboard?token={TOKEN}&interval=100")
    for plan in KEYS:
        page.wait_for_selector(f'tr[data-key="{plan.provider}/{plan.name}"]', timeout=10_000)
    table = page.inner_text("#keys")
    for plan in KEYS:
        assert plan.name in table
        assert plan.secret not in page.content()
    assert "token=" not in page.url  # taken out of the address bar (and history)
    assert page.get_attribute('tr[data-key="openai/OPENAI_API_KEY"] .state', "data-state") == (
        "active"
    )

    # the provider revokes a key: the next request that uses it gets a 401, keymux disables it
    target = served.rig.key("OPENAI_API_KEY")
    served.rig.server.set_faults(target.secret, revoked=True)
    for _ in range(2):
        answer = served.request("POST", "/v1/chat/completions", {"model": "gpt-4o", "messages": HI})
        assert answer.status == 200
    page.wait_for_selector(
        'tr[data-key="openai/OPENAI_API_KEY"] .state[data-state="disabled"]', timeout=10_000
    )
    row = page.inner_text('tr[data-key="openai/OPENAI_API_KEY"]')
    assert "invalid key" in row
    assert page.get_attribute('tr[data-key="openai/OPENAI_API_KEY_2"] .state', "data-state") == (
        "active"
    )
    page.close()


@pytest.mark.e2e
def test_dashboard_asks_for_the_token(serve: ServeFactory, browser: Any) -> None:
    served = serve(*KEYS[:1])
    page = browser.new_page()
    page.goto(f"{served.url}/dashboard?interval=100")
    page.wait_for_selector("#login.shown", timeout=10_000)
    assert page.query_selector('tr[data-key="openai/OPENAI_API_KEY"]') is None
    page.fill("#token", TOKEN)
    page.click("#login-form button")
    page.wait_for_selector('tr[data-key="openai/OPENAI_API_KEY"]', timeout=10_000)
    assert page.get_attribute("#login", "class") == "panel"
    page.close()


@pytest.mark.e2e
def test_dashboard_page_is_self_contained(serve: ServeFactory) -> None:
    served = serve(*KEYS[:1])
    answer = served.request("GET", "/dashboard", headers={})
    html = answer.body.decode()
    assert answer.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    for external in ("http://", "https://", "//cdn", "<link", "src="):
        assert external not in html.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
            '"http://www.w3.org/2000/svg"', ""
        )


def test_dashboard_data_rates_and_history() -> None:
    counts = {"successes": 0, "rate_limited": 0}

    def stats() -> dict[str, dict[str, dict[str, Any]]]:
        entry = {
            "successes": counts["successes"],
            "rate_limited": counts["rate_limited"],
            "status": "active",
            "queue_size": 1,
            "current_requests": 2,
            "max_concurrent": 5,
            "avg_latency_s": 0.0123,
            "learned_requests": {"limit": 100, "remaining": 40, "reset_s": 3},
            "key": "sk-...abcd",
        }
        return {"openai": {"k1": entry}, "groq": {}}

    history = History(stats, interval=2.0)
    history.sample(now=100.0)
    assert list(history.samples) == []  # no rate from a single sample
    counts["successes"], counts["rate_limited"] = 10, 2
    history.sample(now=102.0)
    data = dashboard_data(stats(), history, started=0.0)
    (row,) = data["keys"]
    assert row["rps"] == 5.0
    assert row["rate_limited_per_s"] == 1.0
    assert row["remaining_requests"] == 40
    assert row["limit_requests"] == 100
    assert row["remaining_tokens"] is None
    assert row["avg_latency_ms"] == 12.3
    assert "key" not in row  # not even the masked form
    assert data["history"] == [
        {"t": 102.0, "providers": {"openai": {"ok": 5.0, "rate_limited": 1.0}}}
    ]
