"""The emulator over a loopback socket: rate models, per-model budgets, latency ranges.

Time is a FakeClock starting at 960.0 (a multiple of the 60 s window) that only moves when a
test moves it; wall time starts at FakeClock's default (2026-01-01T00:00:00Z at 0 s).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from keymux._headers import parse_go_duration, parse_proto_duration, parse_rfc3339
from keymux.emulator import Emulator, EmulatorKey, Faults
from test_emulator import (
    CLAUDE_KEY,
    GEMINI_KEY,
    GROQ_KEY,
    OPENAI_KEY,
    START,
    Answer,
    MakeEmu,
    ParkingClock,
    auth_headers,
    chat,
    send,
)


@pytest.fixture
def clock() -> ParkingClock:
    return ParkingClock(start=START)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
async def make_emu(clock: ParkingClock) -> AsyncIterator[MakeEmu]:
    started: list[Emulator] = []

    async def factory(*keys: EmulatorKey, **options: Any) -> Emulator:
        options.setdefault("clock", clock)
        emu = Emulator(list(keys), **options)
        await emu.start()
        started.append(emu)
        return emu

    yield factory
    for emu in started:
        await emu.stop()


def retry_delay(answer: Answer) -> float | None:
    details = answer.json()["error"]["details"]
    info = next(d for d in details if d["@type"].endswith("RetryInfo"))
    return parse_proto_duration(info["retryDelay"])


# --- sliding windows over HTTP -------------------------------------------------------------


async def test_openai_sliding_window(
    clock: ParkingClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, rpm=3))  # the default model
    for n, when in enumerate((960.0, 970.0, 980.0)):
        await clock.set(when)
        answer = await chat(session, emu, "openai")
        assert answer.status == 200
        assert answer.headers["x-ratelimit-remaining-requests"] == str(2 - n)
        assert answer.headers["x-ratelimit-reset-requests"] == "1m0s"  # until this one leaves
    await clock.set(990.0)
    refused = await chat(session, emu, "openai")
    assert refused.status == 429
    message = refused.json()["error"]["message"]
    assert "Limit 3, Used 3, Requested 1. Please try again in 30s." in message  # 960 leaves at 1020
    assert refused.headers["retry-after"] == "30"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "50s"  # 980 leaves at 1040
    await clock.advance(29.999)
    late = await chat(session, emu, "openai")
    assert late.status == 429
    assert "Please try again in 1ms." in late.json()["error"]["message"]
    await clock.advance(0.001)
    again = await chat(session, emu, "openai")
    assert again.status == 200
    assert again.headers["x-ratelimit-remaining-requests"] == "0"  # 970, 980, 1020 in the window
    await clock.set(1100.0)
    drained = await chat(session, emu, "openai")
    assert drained.headers["x-ratelimit-remaining-requests"] == "2"


async def test_sliding_tokens_wait_for_enough_capacity(
    clock: ParkingClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, tpm=60))
    first = await chat(session, emu, "openai")  # 19 tokens at 960
    cost = first.json()["usage"]["total_tokens"]
    assert cost == 19
    await clock.set(975.0)
    assert (await chat(session, emu, "openai")).status == 200  # 38
    await clock.set(990.0)
    assert (await chat(session, emu, "openai")).status == 200  # 57
    await clock.set(1000.0)
    refused = await chat(session, emu, "openai")  # 57 + 19 > 60: the 19 of 960 must leave
    assert refused.status == 429
    error = refused.json()["error"]
    assert error["type"] == "tokens"
    assert "Limit 60, Used 57, Requested 19. Please try again in 20s." in error["message"]
    assert refused.headers["x-ratelimit-remaining-tokens"] == "3"
    assert refused.headers["x-ratelimit-reset-tokens"] == "50s"
    await clock.set(1020.0)
    assert (await chat(session, emu, "openai")).status == 200


async def test_claude_sliding_headers_and_retry_after(
    clock: ParkingClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("claude", CLAUDE_KEY, rpm=2, tpm=10_000))
    first = await chat(session, emu, "claude")
    reset = parse_rfc3339(first.headers["anthropic-ratelimit-requests-reset"])
    assert reset == pytest.approx(clock.wall() + 60.0, abs=0.001)
    assert (
        first.headers["anthropic-ratelimit-tokens-reset"]
        == (first.headers["anthropic-ratelimit-requests-reset"])
    )
    await clock.advance(12.5)
    second = await chat(session, emu, "claude")
    assert second.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert parse_rfc3339(second.headers["anthropic-ratelimit-requests-reset"]) == pytest.approx(
        clock.wall() + 60.0, abs=0.001
    )
    await clock.advance(30.0)
    refused = await chat(session, emu, "claude")
    assert refused.status == 429
    assert refused.headers["retry-after"] == "18"  # the first leaves 60 s after it came
    await clock.advance(17.5)
    assert (await chat(session, emu, "claude")).status == 200


async def test_gemini_sliding_retry_delay(
    clock: ParkingClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    await clock.advance(5.0)  # not at a window boundary: a fixed window would end at 1020
    emu = await make_emu(EmulatorKey("gemini", GEMINI_KEY, rpm=2))
    assert (await chat(session, emu, "gemini")).status == 200
    await clock.advance(0.25)
    assert (await chat(session, emu, "gemini")).status == 200
    await clock.advance(0.516)
    refused = await chat(session, emu, "gemini")
    assert refused.status == 429
    assert retry_delay(refused) == pytest.approx(59.234)
    assert refused.json()["error"]["message"].endswith("Please retry in 59.234s.")
    await clock.advance(59.234)
    assert (await chat(session, emu, "gemini")).status == 200


async def test_groq_sliding_day_and_minute(
    clock: ParkingClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(
        EmulatorKey("groq", GROQ_KEY, rpm=1, rpd=3, tpm=500), day_window=600.0, window=60.0
    )
    first = await chat(session, emu, "groq")
    assert first.headers["x-ratelimit-limit-requests"] == "3"  # Groq's requests headers are rpd
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    assert first.headers["x-ratelimit-reset-requests"] == "10m0s"
    assert first.headers["x-ratelimit-reset-tokens"] == "1m0s"
    await clock.advance(10.0)
    refused = await chat(session, emu, "groq")
    assert refused.status == 429
    assert "requests per minute (RPM)" in refused.json()["error"]["message"]
    assert refused.headers["retry-after"] == "50"
    for _ in range(2):
        await clock.advance(60.0)
        assert (await chat(session, emu, "groq")).status == 200
    await clock.advance(60.0)
    daily = await chat(session, emu, "groq")  # at 1150: the day's three are 960, 1030, 1090
    assert daily.status == 429
    assert "requests per day (RPD): Limit 3, Used 3" in daily.json()["error"]["message"]
    assert daily.headers["retry-after"] == str(960 + 600 - 1150)


async def test_quota_spent_under_sliding_lasts_a_day_window(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("groq", GROQ_KEY, faults=Faults(quota_spent=True)))
    answer = await chat(session, emu, "groq")
    assert answer.status == 429
    assert answer.headers["retry-after"] == "86400"
    assert answer.headers["x-ratelimit-reset-requests"] == "24h0m0s"


# --- token buckets over HTTP ---------------------------------------------------------------


async def test_openai_token_bucket(
    clock: ParkingClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, rpm=4), rate_model="token-bucket")
    for n in range(4):  # a full bucket: a burst of 4, then one per 15 s
        answer = await chat(session, emu, "openai")
        assert answer.status == 200
        assert answer.headers["x-ratelimit-remaining-requests"] == str(3 - n)
        assert parse_go_duration(answer.headers["x-ratelimit-reset-requests"]) == 15.0 * (n + 1)
    refused = await chat(session, emu, "openai")
    assert refused.status == 429
    assert "Please try again in 15s." in refused.json()["error"]["message"]
    assert refused.headers["retry-after"] == "15"
    await clock.advance(7.5)
    half = await chat(session, emu, "openai")
    assert half.status == 429
    assert "Please try again in 7.5s." in half.json()["error"]["message"]
    assert half.headers["x-ratelimit-reset-requests"] == "52.5s"
    await clock.advance(7.5)
    answer = await chat(session, emu, "openai")
    assert answer.status == 200
    assert answer.headers["x-ratelimit-remaining-requests"] == "0"
    await clock.advance(45.0)  # three more tokens
    answer = await chat(session, emu, "openai")
    assert answer.headers["x-ratelimit-remaining-requests"] == "2"
    assert answer.headers["x-ratelimit-reset-requests"] == "30s"


async def test_token_bucket_per_key_over_an_emulator_default(
    clock: ParkingClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(
        EmulatorKey("gemini", GEMINI_KEY, rpm=2, rate_model="token-bucket"),
        EmulatorKey("claude", CLAUDE_KEY, rpm=2),  # the emulator's default: fixed here
        rate_model="fixed",
    )
    for _ in range(2):
        assert (await chat(session, emu, "gemini")).status == 200
        assert (await chat(session, emu, "claude")).status == 200
    await clock.advance(1.0)
    bucket = await chat(session, emu, "gemini")
    assert retry_delay(bucket) == pytest.approx(29.0)  # one token per 30 s
    fixed = await chat(session, emu, "claude")
    assert fixed.headers["retry-after"] == "59"  # the aligned window ends at 1020
    stats = emu.stats()["keys"]
    assert {entry["provider"]: entry["rate_model"] for entry in stats.values()} == {
        "gemini": "token-bucket",
        "claude": "fixed",
    }


# --- per-model budgets -----------------------------------------------------------------------


async def test_each_model_has_its_own_budget(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, rpm=2, tpm=1000))
    for n in range(2):
        answer = await chat(session, emu, "openai", model="gpt-4o-mini")
        assert answer.headers["x-ratelimit-remaining-requests"] == str(1 - n)
    refused = await chat(session, emu, "openai", model="gpt-4o-mini")
    assert refused.status == 429
    assert refused.json()["error"]["message"].startswith("Rate limit reached for gpt-4o-mini")
    other = await chat(session, emu, "openai", model="gpt-4o")
    assert other.status == 200
    # the headers describe the budget of the model that was asked
    assert other.headers["x-ratelimit-limit-requests"] == "2"
    assert other.headers["x-ratelimit-remaining-requests"] == "1"
    assert other.headers["x-ratelimit-remaining-tokens"] == str(1000 - 19)
    embed = await send(
        session,
        "POST",
        emu.base_url("openai") + "/embeddings",
        headers=auth_headers("openai", OPENAI_KEY),
        json_body={"model": "text-embedding-3-small", "input": "hello"},
    )
    assert embed.status == 200
    assert embed.headers["x-ratelimit-remaining-requests"] == "1"
    stats = emu.stats()["keys"]["sk-...0001"]
    assert stats["requests"] == 5
    assert stats["rate_limited"] == 1
    assert stats["models"] == {
        "gpt-4o-mini": {"requests": 3, "rate_limited": 1, "tokens": 38},
        "gpt-4o": {"requests": 1, "rate_limited": 0, "tokens": 19},
        "text-embedding-3-small": {"requests": 1, "rate_limited": 0, "tokens": 2},
    }
    emu.reset_stats()
    assert emu.stats()["keys"]["sk-...0001"]["models"]["gpt-4o"]["requests"] == 0
    assert (await chat(session, emu, "openai", model="gpt-4o-mini")).status == 429  # still spent


async def test_models_overrides_limits_for_named_models(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    key = EmulatorKey(
        "openai",
        OPENAI_KEY,
        rpm=100,
        tpm=20,
        models={"gpt-4o": {"rpm": 1, "tpm": None}, "gpt-4.1-mini": {"tpm": 50}},
    )
    emu = await make_emu(key)
    big = await chat(session, emu, "openai", model="gpt-4o")
    assert big.status == 200
    assert big.headers["x-ratelimit-limit-requests"] == "1"
    assert "x-ratelimit-limit-tokens" not in big.headers  # tpm None for gpt-4o
    refused = await chat(session, emu, "openai", model="gpt-4o")
    assert (
        "Rate limit reached for gpt-4o in organization org-emulator on requests per min "
        in (refused.json()["error"]["message"])
    )
    mini = await chat(session, emu, "openai", model="gpt-4.1-mini")
    assert mini.status == 200
    assert mini.headers["x-ratelimit-limit-requests"] == "100"  # the key's, not overridden
    assert mini.headers["x-ratelimit-limit-tokens"] == "50"
    plain = await chat(session, emu, "openai", model="gpt-4o-mini")
    assert plain.status == 200  # 19 tokens fit the key's own tpm of 20
    assert plain.headers["x-ratelimit-limit-tokens"] == "20"
    assert (await chat(session, emu, "openai", model="gpt-4o-mini")).status == 429


async def test_claude_dated_ids_share_their_class(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    key = EmulatorKey("claude", CLAUDE_KEY, rpm=2, models={"claude-haiku-4-5-20251001": {"rpm": 1}})
    emu = await make_emu(key)
    dated = await chat(session, emu, "claude", model="claude-sonnet-4-5-20250929")
    assert dated.headers["anthropic-ratelimit-requests-remaining"] == "1"
    alias = await chat(session, emu, "claude", model="claude-sonnet-4-5")
    assert alias.status == 200
    assert alias.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert (await chat(session, emu, "claude", model="claude-sonnet-4-5-20250929")).status == 429
    haiku = await chat(session, emu, "claude", model="claude-haiku-4-5")  # override by dated id
    assert haiku.status == 200
    assert haiku.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert (await chat(session, emu, "claude", model="claude-haiku-4-5-20251001")).status == 429
    assert set(emu.stats()["keys"]["sk-...0001"]["models"]) == {
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
    }


async def test_gemini_models_and_api_versions(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("gemini", GEMINI_KEY, rpm=1))
    root = emu.base_url("gemini")
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    headers = auth_headers("gemini", GEMINI_KEY)
    url = "/models/gemini-2.5-flash:generateContent"
    assert (
        await send(session, "POST", root + "/v1beta" + url, headers=headers, json_body=body)
    ).status == 200
    # /v1 and /v1beta are one API: the same model's budget
    refused = await send(session, "POST", root + "/v1" + url, headers=headers, json_body=body)
    assert refused.status == 429
    violation = refused.json()["error"]["details"][0]["violations"][0]
    assert violation["quotaDimensions"]["model"] == "gemini-2.5-flash"
    pro = await send(
        session,
        "POST",
        root + "/v1/models/gemini-2.5-pro:generateContent",
        headers=headers,
        json_body=body,
    )
    assert pro.status == 200
    assert pro.json()["modelVersion"] == "gemini-2.5-pro"


async def test_model_lists_are_not_rate_limited(
    make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(
        EmulatorKey("openai", OPENAI_KEY, rpm=1), EmulatorKey("gemini", GEMINI_KEY, rpm=1)
    )
    for _ in range(3):
        for url, headers in (
            (emu.base_url("openai") + "/models", auth_headers("openai", OPENAI_KEY)),
            (emu.base_url("openai") + "/models/gpt-4o", auth_headers("openai", OPENAI_KEY)),
            (emu.url + "/v1/models", auth_headers("gemini", GEMINI_KEY)),
            (emu.url + "/v1beta/models/gemini-2.5-flash", auth_headers("gemini", GEMINI_KEY)),
        ):
            listing = await send(session, "GET", url, headers=headers)
            assert listing.status == 200
            assert not any(h.lower().startswith("x-ratelimit") for h in listing.headers)
    assert (await chat(session, emu, "openai")).status == 200  # the budget is untouched
    assert (await chat(session, emu, "gemini")).status == 200
    assert emu.total_429 == 0


async def test_replacing_a_key_keeps_each_models_usage(
    clock: ParkingClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(EmulatorKey("openai", OPENAI_KEY, rpm=2))
    await chat(session, emu, "openai", model="gpt-4o")
    await chat(session, emu, "openai", model="gpt-4o")
    emu.add_key(EmulatorKey("openai", OPENAI_KEY, rpm=3))
    answer = await chat(session, emu, "openai", model="gpt-4o")
    assert answer.status == 200
    assert answer.headers["x-ratelimit-remaining-requests"] == "0"  # 3 - the 3 it used
    emu.add_key(EmulatorKey("openai", OPENAI_KEY, rpm=3, models={"gpt-4o": {"rpm": 5}}))
    assert (await chat(session, emu, "openai", model="gpt-4o")).headers[
        "x-ratelimit-remaining-requests"
    ] == "1"
    emu.add_key(EmulatorKey("openai", OPENAI_KEY, rpm=3, rate_model="token-bucket"))
    fresh = await chat(session, emu, "openai", model="gpt-4o")  # a new model starts afresh
    assert fresh.headers["x-ratelimit-remaining-requests"] == "2"
    assert parse_go_duration(fresh.headers["x-ratelimit-reset-requests"]) == 20.0


# --- the control endpoint ----------------------------------------------------------------------


async def test_control_endpoint_takes_rate_model_models_and_latency_ranges(
    clock: ParkingClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(rate_model="fixed", latency=(0.0, 0.0))
    root = emu.url
    added = await send(
        session,
        "POST",
        root + "/_emulator/keys",
        json_body={
            "provider": "openai",
            "key": OPENAI_KEY,
            "rpm": 10,
            "rate_model": "token-bucket",
            "models": {"gpt-4o": {"rpm": 2, "tpm": 5000}},
            "latency": [0.5, 1.5],
        },
    )
    assert added.status == 200, added.raw
    listing = (await send(session, "GET", root + "/_emulator/keys")).json()
    entry = listing["keys"][0]
    assert entry["rate_model"] == "token-bucket"
    assert entry["models"] == {"gpt-4o": {"rpm": 2, "tpm": 5000}}
    assert entry["latency"] == [0.5, 1.5]
    assert listing["defaults"]["rate_model"] == "fixed"
    assert listing["defaults"]["latency"] == [0.0, 0.0]
    assert OPENAI_KEY not in json.dumps(listing)
    for bad in (
        {"rate_model": "leaky"},
        {"models": {"gpt-4o": {"rps": 1}}},
        {"models": {"gpt-4o": {"rpm": 0}}},
        {"models": ["gpt-4o"]},
        {"models": {"gpt-4o": 5}},
        {"latency": [2, 1]},
        {"latency": [1, 2, 3]},
        {"latency": "fast"},
    ):
        refused = await send(
            session,
            "POST",
            root + "/_emulator/keys",
            json_body={"provider": "openai", "key": OPENAI_KEY, **bad},
        )
        assert refused.status == 400, bad
        assert "error" in refused.json()
    # the key works as configured: gpt-4o's token bucket of 2, answered after a drawn latency
    task = asyncio.create_task(chat(session, emu, "openai", model="gpt-4o"))
    await clock.parked()
    due = clock.next_timer()
    assert due is not None
    latency = due - START
    assert 0.5 <= latency <= 1.5
    await clock.advance(latency)
    answer = await task
    assert answer.headers["x-ratelimit-limit-requests"] == "2"
    assert answer.headers["x-ratelimit-remaining-requests"] == "1"
    # one token refills per 30 s; the headers are of the answer's time, after the latency
    reset = parse_go_duration(answer.headers["x-ratelimit-reset-requests"])
    assert reset == pytest.approx(30.0 - latency, abs=0.001)


# --- latency ranges ---------------------------------------------------------------------------


async def test_latency_range_is_drawn_from_the_seeded_rng(
    clock: ParkingClock, make_emu: MakeEmu, session: aiohttp.ClientSession
) -> None:
    emu = await make_emu(
        EmulatorKey("openai", OPENAI_KEY),
        EmulatorKey("groq", GROQ_KEY, latency=(10.0, 20.0)),
        EmulatorKey("claude", CLAUDE_KEY, latency=4.0),
        latency=(1.0, 3.0),
        seed=42,
    )
    expected = random.Random(42)
    for provider, low, high in (
        ("openai", 1.0, 3.0),
        ("groq", 10.0, 20.0),
        ("openai", 1.0, 3.0),
        ("claude", 4.0, 4.0),
    ):
        task = asyncio.create_task(chat(session, emu, provider))
        await clock.parked()
        due = clock.next_timer()
        assert due is not None
        wanted = low if low == high else expected.uniform(low, high)
        assert due - clock.now() == pytest.approx(wanted)
        assert low <= due - clock.now() <= high
        assert not task.done()
        await clock.advance(due - clock.now())
        assert (await task).status == 200


@pytest.mark.parametrize(
    "bad", [-1.0, (2.0, 1.0), (-1.0, 1.0), (1.0,), (0.1, 0.2, 0.3), float("inf"), "0.1", True]
)
def test_latency_is_checked(bad: object) -> None:
    with pytest.raises(ValueError, match="latency"):
        Emulator(latency=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latency"):
        EmulatorKey("openai", "sk-x", latency=bad)  # type: ignore[arg-type]


def test_latency_pairs_become_tuples() -> None:
    assert EmulatorKey("openai", "sk-x", latency=[0.25, 0.5]).latency == (0.25, 0.5)  # type: ignore[arg-type]
    assert Emulator(latency=[1, 2]).latency == (1.0, 2.0)  # type: ignore[arg-type]
    key = EmulatorKey(
        "openai",
        "sk-secret-value-0001",
        latency=(0.25, 0.5),
        rate_model="token-bucket",
        models={"gpt-4o": {"rpm": 3}},
    )
    assert repr(key) == (
        "keymux.emulator.EmulatorKey('openai', 'sk-...0001', latency=(0.25, 0.5), "
        "rate_model='token-bucket', models={'gpt-4o': {'rpm': 3}})"
    )


@pytest.mark.parametrize(
    "models",
    [
        {"": {"rpm": 1}},
        {"gpt-4o": {"rpm": 1.5}},
        {"gpt-4o": {"rpm": True}},
        {"gpt-4o": {"burst": 2}},
        {"gpt-4o": None},
        [("gpt-4o", {"rpm": 1})],
    ],
)
def test_models_are_checked(models: object) -> None:
    with pytest.raises(ValueError, match="models"):
        EmulatorKey("openai", "sk-x", models=models)  # type: ignore[arg-type]


def test_models_are_frozen() -> None:
    given = {"gpt-4o": {"rpm": 3}}
    key = EmulatorKey("openai", "sk-x", models=given)
    given["gpt-4o"]["rpm"] = 99
    assert key.models["gpt-4o"]["rpm"] == 3
    with pytest.raises(TypeError):
        key.models["gpt-4o"]["rpm"] = 4  # type: ignore[index]
