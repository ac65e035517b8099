"""``/metrics`` parsed as Prometheus does (``text_string_to_metric_families``), values
checked; ``/healthz``; the per-server registry; the missing extra."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from conftest import KeyPlan
from keymux import ConfigError
from keymux.emulator import Faults
from serve_support import HI, ServeFactory, plans, serve

__all__ = ["serve"]  # the fixture

prometheus = pytest.importorskip("prometheus_client.parser")

CHAT = "/v1/chat/completions"


def _scrape(served: Any) -> dict[str, Any]:
    answer = served.request("GET", "/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.body.decode()
    return {f.name: f for f in prometheus.text_string_to_metric_families(text)}


def _value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no {sample} {labels} in {families[family].samples}")


@pytest.mark.e2e
def test_metrics_count_requests_attempts_latency_and_key_state(serve: ServeFactory) -> None:
    served = serve(
        KeyPlan("openai", "good", rpm=100),
        KeyPlan("openai", "bad", faults=Faults(revoked=True)),
        KeyPlan("claude", "c1"),
    )
    for _ in range(3):
        assert served.request("POST", CHAT, {"model": "gpt-4o", "messages": HI}).status == 200
    stream = {"model": "claude/claude-sonnet-4-5", "messages": HI, "stream": True}
    assert served.request("POST", CHAT, stream).status == 200
    assert served.request("GET", "/v1/models", headers={}).status == 401
    assert served.request("POST", CHAT, raw=b"{").status == 400
    m = _scrape(served)

    req = "keymux_requests"
    assert _value(m, req, "keymux_requests_total", key="good", outcome="ok") == 3
    assert _value(m, req, "keymux_requests_total", provider="claude", key="c1", outcome="ok") == 1
    assert _value(m, req, "keymux_requests_total", key="", outcome="unauthorized") == 1
    assert _value(m, req, "keymux_requests_total", key="", outcome="bad_request") == 1

    att = "keymux_upstream_attempts"
    assert _value(m, att, "keymux_upstream_attempts_total", key="good", outcome="ok") == 3
    assert _value(m, att, "keymux_upstream_attempts_total", key="bad", outcome="key_invalid") == 1
    assert _value(m, att, "keymux_upstream_attempts_total", key="c1", outcome="ok") == 1

    lat = "keymux_upstream_latency_seconds"
    assert _value(m, lat, f"{lat}_count", key="good") == 3
    assert _value(m, lat, f"{lat}_bucket", key="good", le="+Inf") == 3
    assert _value(m, lat, f"{lat}_sum", key="good") > 0
    wait = "keymux_queue_wait_seconds"
    assert _value(m, wait, f"{wait}_count", key="good") == 3
    ttfb = "keymux_stream_first_byte_seconds"
    assert _value(m, ttfb, f"{ttfb}_count", provider="claude", key="c1") == 1

    state = "keymux_key_state"
    assert _value(m, state, state, key="good", state="active") == 1
    assert _value(m, state, state, key="good", state="disabled") == 0
    assert _value(m, state, state, key="bad", state="disabled") == 1
    assert _value(m, "keymux_queue_depth", "keymux_queue_depth", key="good") == 0
    assert _value(m, "keymux_in_flight", "keymux_in_flight", key="good") == 0
    assert _value(m, "keymux_max_concurrent", "keymux_max_concurrent", key="good") == 5
    # learned from the emulator's x-ratelimit-* headers: 100 per window, 3 spent
    limit, left = "keymux_limit_requests", "keymux_remaining_requests"
    assert _value(m, limit, limit, key="good", model="gpt-4o") == 100
    assert _value(m, left, left, key="good", model="gpt-4o") == 97
    assert _value(m, "keymux_key_successes", "keymux_key_successes_total", key="good") == 3
    assert _value(m, "keymux_tokens", "keymux_tokens_total", key="c1", direction="output") > 0
    assert _value(m, "keymux_proxy_requests_in_progress", "keymux_proxy_requests_in_progress") == 0
    assert "process_resident_memory_bytes" in m
    # key names only: no secret, no masked form
    text = served.request("GET", "/metrics").body.decode()
    for plan in served.rig.keys:
        assert plan.secret not in text
        assert plan.secret[-4:] not in text


@pytest.mark.e2e
def test_retries_and_429s(serve: ServeFactory) -> None:
    served = serve(
        KeyPlan("openai", "flaky", faults=Faults(server_error_rate=1.0)),
        KeyPlan("openai", "ok"),
        mux={"max_retries": 3},
    )
    for _ in range(2):
        assert served.request("POST", CHAT, {"model": "gpt-4o", "messages": HI}).status == 200
    m = _scrape(served)
    failed = _value(m, "keymux_key_failures", "keymux_key_failures_total", key="flaky")
    assert failed >= 1
    retries = sum(s.value for s in m["keymux_retries"].samples if s.name == "keymux_retries_total")
    assert retries >= 1
    assert (
        _value(
            m,
            "keymux_upstream_attempts",
            "keymux_upstream_attempts_total",
            key="flaky",
            outcome="server_error",
        )
        == failed
    )
    assert _value(m, "keymux_rate_limited", "keymux_rate_limited_total", key="ok") == 0


@pytest.mark.e2e
def test_each_server_has_its_own_registry(serve: ServeFactory) -> None:
    one = serve(*plans("k1"))
    two = serve(*plans("k1"))
    assert one.request("POST", CHAT, {"model": "gpt-4o", "messages": HI}).status == 200
    assert _value(_scrape(one), "keymux_requests", "keymux_requests_total", key="k1") == 1
    assert _scrape(two)["keymux_requests"].samples == []
    assert one.proxy.proxy.metrics.registry is not two.proxy.proxy.metrics.registry


@pytest.mark.e2e
def test_healthz(serve: ServeFactory) -> None:
    served = serve(*plans("key-a", "key-b"), *plans("key-c", provider="gemini"))
    answer = served.request("GET", "/healthz", headers={})
    assert answer.status == 200
    body = answer.json()
    assert body["status"] == "ok"
    assert body["keys"]["openai"] == {"active": 2, "cooling": 0, "parked": 0, "disabled": 0}
    assert body["keys"]["gemini"]["active"] == 1
    assert "claude" not in body["keys"]
    assert "key-" not in answer.body.decode()  # public: counts only, no key names


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from keymux.server._metrics import import_prometheus

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigError, match=r"pip install 'keymux\[serve\]'"):
        import_prometheus()
