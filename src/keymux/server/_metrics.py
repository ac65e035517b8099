"""``GET /metrics``: the proxy's Prometheus metrics, one registry per server (no global state).

Events are counted as they happen: every request the proxy answers (``keymux_requests_total``
by provider, key name and outcome), every upstream attempt and its latency and queue wait
(this class is the core's ``Telemetry``), the time to the first byte of each stream. Per-key
state (queue depth, in flight, active/cooling/parked/disabled, the budget learned from the
provider's headers, retries and 429s) is read from the multiplexer's statistics when
Prometheus scrapes, by a custom collector, so nothing is sampled in between.

Labels hold key *names* (``OPENAI_API_KEY_2``), never a secret or its masked form.

``prometheus-client`` is imported lazily: the extra ``keymux[serve]`` brings it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from .._lane import Lane

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = ["KEY_STATES", "Metrics", "import_prometheus"]

log = logging.getLogger("keymux")

#: the states a key is reported in (``keymux_key_state``); "removed" keys are not listed
KEY_STATES = ("active", "cooling", "parked", "disabled")

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
_WAIT_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)


def import_prometheus() -> Any:
    """``prometheus_client``, or a ConfigError naming the install command."""
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError(
            "keymux serve needs prometheus-client for /metrics: pip install 'keymux[serve]'"
        ) from None
    return prometheus_client


StatsSource = Callable[[], dict[str, dict[str, dict[str, Any]]]]


class Metrics:
    """The proxy's registry and the core's Telemetry."""

    def __init__(self, stats: StatsSource) -> None:
        pc = import_prometheus()
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        self.registry: CollectorRegistry = pc.CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.content_type: str = pc.CONTENT_TYPE_LATEST
        self._generate: Callable[[CollectorRegistry], bytes] = pc.generate_latest
        self.requests = pc.Counter(
            "keymux_requests",
            "Requests the proxy answered, by provider, key name and outcome (ok, "
            "upstream_error, refused, stream_error, client_gone, unauthorized, bad_request, "
            "not_found, too_large)",
            ["provider", "key", "outcome"],
            registry=reg,
        )
        self.attempts = pc.Counter(
            "keymux_upstream_attempts",
            "Upstream attempts by provider, key name and outcome (ok, rate_limited, "
            "server_error, overloaded, transport, key_invalid, ...)",
            ["provider", "key", "outcome"],
            registry=reg,
        )
        self.latency = pc.Histogram(
            "keymux_upstream_latency_seconds",
            "Seconds from sending an attempt to the end of its answer",
            ["provider", "key"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.queue_wait = pc.Histogram(
            "keymux_queue_wait_seconds",
            "Seconds a request waited for a key's slot and budget",
            ["provider", "key"],
            buckets=_WAIT_BUCKETS,
            registry=reg,
        )
        self.first_byte = pc.Histogram(
            "keymux_stream_first_byte_seconds",
            "Seconds from a streamed request's arrival to its first byte sent to the caller",
            ["provider", "key"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.in_progress = pc.Gauge(
            "keymux_proxy_requests_in_progress",
            "Requests the proxy is answering now",
            registry=reg,
        )
        pc.ProcessCollector(registry=reg)
        reg.register(_KeyCollector(stats, CounterMetricFamily, GaugeMetricFamily))
        # children cached: a label lookup takes a lock; these are on every request's path
        self._request_children: dict[tuple[str, str, str], Any] = {}
        self._attempt_children: dict[tuple[Lane, str], Any] = {}
        self._lane_children: dict[Lane, tuple[Any, Any]] = {}
        self._first_byte_children: dict[tuple[str, str], Any] = {}

    # -- the proxy's own events -------------------------------------------------------------

    def request(self, provider: str, key: str | None, outcome: str) -> None:
        label = (provider, key or "", outcome)
        child = self._request_children.get(label)
        if child is None:
            child = self._request_children[label] = self.requests.labels(*label)
        child.inc()

    def first_byte_after(self, provider: str, key: str, seconds: float) -> None:
        label = (provider, key)
        child = self._first_byte_children.get(label)
        if child is None:
            child = self._first_byte_children[label] = self.first_byte.labels(*label)
        child.observe(seconds)

    # -- Telemetry (called by the core on its loop) -----------------------------------------

    def _lane(self, lane: Lane) -> tuple[Any, Any]:
        pair = self._lane_children.get(lane)
        if pair is None:
            pair = self._lane_children[lane] = (
                self.latency.labels(lane.provider, lane.name),
                self.queue_wait.labels(lane.provider, lane.name),
            )
        return pair

    def waited(self, lane: Lane, seconds: float) -> None:
        self._lane(lane)[1].observe(max(0.0, seconds))

    def attempted(self, lane: Lane, outcome: str, status: int, seconds: float) -> None:
        self._lane(lane)[0].observe(max(0.0, seconds))
        label = (lane, outcome)
        child = self._attempt_children.get(label)
        if child is None:
            child = self._attempt_children[label] = self.attempts.labels(
                lane.provider, lane.name, outcome
            )
        child.inc()

    # -- exposition -------------------------------------------------------------------------

    def render(self) -> bytes:
        return self._generate(self.registry)


class _KeyCollector:
    """Per-key gauges and counters, read from the multiplexer's statistics at scrape time."""

    def __init__(self, stats: StatsSource, counter: Any, gauge: Any) -> None:
        self._stats = stats
        self._counter = counter
        self._gauge = gauge

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot = self._stats()
        except Exception:  # a scrape must not take the proxy down: say so, and show nothing
            log.exception("keymux: reading the statistics for /metrics failed")
            snapshot = {}
        yield from self._families(snapshot)

    def _families(self, snapshot: dict[str, dict[str, dict[str, Any]]] | None = None) -> Any:
        gauge, counter = self._gauge, self._counter
        labels = ["provider", "key"]
        queue = gauge("keymux_queue_depth", "Requests waiting for the key", labels=labels)
        in_flight = gauge("keymux_in_flight", "Requests in flight on the key", labels=labels)
        slots = gauge(
            "keymux_max_concurrent", "Requests the key may have in flight at once", labels=labels
        )
        state = gauge(
            "keymux_key_state",
            "1 for the key's state (active, cooling, parked, disabled), 0 for the others",
            labels=[*labels, "state"],
        )
        per_model = [*labels, "model"]
        remaining_requests = gauge(
            "keymux_remaining_requests",
            "Requests left in the window of the key's budget for a model (or model class), as "
            "learned from the provider's headers",
            labels=per_model,
        )
        remaining_tokens = gauge(
            "keymux_remaining_tokens",
            "Tokens left in the window of the key's budget for a model, as learned from the "
            "provider's headers",
            labels=per_model,
        )
        limit_requests = gauge(
            "keymux_limit_requests",
            "The key's request limit per window for a model, as learned from the provider's "
            "headers",
            labels=per_model,
        )
        limit_tokens = gauge(
            "keymux_limit_tokens",
            "The key's token limit per window for a model, as learned from the provider's headers",
            labels=per_model,
        )
        successes = counter("keymux_key_successes", "Answers the key completed", labels=labels)
        failures = counter("keymux_key_failures", "Attempts that failed on the key", labels=labels)
        retries = counter("keymux_retries", "Retries sent to the key", labels=labels)
        limited = counter(
            "keymux_rate_limited", "429 (rate-limited) answers the key got", labels=labels
        )
        tokens = counter(
            "keymux_tokens",
            "Tokens the key's answers reported, by direction (input, output)",
            labels=[*labels, "direction"],
        )
        for provider, keys in (snapshot or {}).items():
            for name, s in keys.items():
                key = [provider, name]
                queue.add_metric(key, s.get("queue_size", 0))
                in_flight.add_metric(key, s.get("current_requests", 0))
                slots.add_metric(key, s.get("max_concurrent", 0))
                status = s.get("status", "active")
                for each in KEY_STATES:
                    state.add_metric([*key, each], 1.0 if status == each else 0.0)
                for model, facts in _budgets(s):
                    for dim, remaining, limit in (
                        ("requests", remaining_requests, limit_requests),
                        ("tokens", remaining_tokens, limit_tokens),
                    ):
                        learned = facts.get(f"learned_{dim}")
                        if isinstance(learned, dict):
                            if learned.get("remaining") is not None:
                                remaining.add_metric([*key, model], float(learned["remaining"]))
                            if learned.get("limit") is not None:
                                limit.add_metric([*key, model], float(learned["limit"]))
                successes.add_metric(key, s.get("successes", 0))
                failures.add_metric(key, s.get("failures", 0))
                retries.add_metric(key, s.get("retries", 0))
                limited.add_metric(key, s.get("rate_limited", 0))
                tokens.add_metric([*key, "input"], s.get("input_tokens", 0))
                tokens.add_metric([*key, "output"], s.get("output_tokens", 0))
        yield from (
            queue,
            in_flight,
            slots,
            state,
            remaining_requests,
            remaining_tokens,
            limit_requests,
            limit_tokens,
            successes,
            failures,
            retries,
            limited,
            tokens,
        )


def _budgets(stats: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(model, facts) of each budget a key keeps: one per model (or model class) it served
    (``stats["models"]``); a key's top-level facts when there is no per-model breakdown."""
    models = stats.get("models")
    if isinstance(models, dict) and models:
        return [(str(m), f) for m, f in models.items() if isinstance(f, dict)]
    return [("", stats)]
