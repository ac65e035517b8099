"""The three readers of the attempt loop — streams, forwarded requests, and the deadline's
account of what went wrong — on a FakeClock with a ScriptedEngine whose bodies arrive in
scripted pieces (``Chunks``), so every interleaving here is exact.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fakes import Chunks, ScriptedEngine, error, ok, rate_limited, transport_failure
from keymux import (
    AuthenticationError,
    MalformedResponseError,
    Multiplexer,
    NoKeyAvailableError,
    RequestTimeoutError,
    Response,
    StreamError,
)
from keymux._core import Head
from keymux._forward import prepare_forward
from keymux.testing import FakeClock

HI = [{"role": "user", "content": "Say hi"}]
SSE = {"Content-Type": "text/event-stream"}


def secret(name: str) -> str:
    return f"sk-test-{name}-0123456789abcdef"


def event(text: str | None = None, **extra: Any) -> bytes:
    chunk: dict[str, Any] = {"model": "gpt-4o-mini", "choices": []}
    if text is not None:
        chunk["choices"] = [{"index": 0, "delta": {"content": text}}]
    chunk.update(extra)
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
USAGE = event(usage={"prompt_tokens": 5, "completion_tokens": 2})


def stream(*parts: bytes | float | Exception) -> tuple[int, dict[str, str], Chunks]:
    return 200, SSE, Chunks(*parts)  # type: ignore[arg-type]


class Rig:
    def __init__(self, *names: str, **options: Any) -> None:
        self.clock = FakeClock()
        options.setdefault("max_concurrent_requests", 2)
        options.setdefault("initial_retry_delay", 0.5)
        self.mux = Multiplexer(clock=self.clock, seed=0, close_grace=0.0, **options)
        for name in names:
            self.mux.add_openai_key(name, secret(name))
        self.engine = ScriptedEngine(self.clock)
        self.mux._core.engine = self.engine  # type: ignore[assignment]

    def script(self, name: str, *replies: Any) -> None:
        self.engine.script(secret(name), *replies)

    def stats(self, name: str) -> dict[str, Any]:
        return self.mux.get_usage_stats()["openai"][name]

    def in_flight(self) -> int:
        return sum(s["current_requests"] for s in self.mux.get_usage_stats()["openai"].values())

    def forwarded(self, *, stream: bool = False, auth: str = "Bearer keymux") -> Any:
        body = json.dumps({"model": "gpt-4o-mini", "messages": HI, "stream": stream}).encode()
        prepared = prepare_forward(
            "openai",
            "POST",
            "/v1/chat/completions",
            "",
            {"Authorization": auth, "Content-Type": "application/json"},
            body,
        )
        return self.mux._gateway.forwarded("openai", prepared)

    async def forward(self, **kw: Any) -> tuple[Head, bytes]:
        items = [item async for item in self.mux._gateway.aforward(self.forwarded(**kw))]
        head = items[0]
        assert isinstance(head, Head)
        body = b"".join(item for item in items[1:] if isinstance(item, bytes))
        return head, body


@pytest.fixture
async def rigs() -> AsyncIterator[Any]:
    made: list[Rig] = []

    def factory(*names: str, **options: Any) -> Rig:
        rig = Rig(*names, **options)
        made.append(rig)
        return rig

    yield factory
    for rig in made:
        await rig.mux.aclose()


async def collect(gen: AsyncIterator[str | Response]) -> tuple[list[str], Response]:
    deltas: list[str] = []
    async for item in gen:
        if isinstance(item, Response):
            return deltas, item
        deltas.append(item)
    raise AssertionError("the stream ended without a final Response")


# --- streams ---------------------------------------------------------------------------------


async def test_stream_deltas_arrive_in_order_then_the_final_response(rigs: Any) -> None:
    rig = rigs("a")
    rig.script("a", stream(event("Hel"), event("lo"), USAGE, DONE))
    deltas, final = await collect(rig.mux.get_openai_client().astream(messages=HI))
    assert deltas == ["Hel", "lo"]
    assert (final.text, final.key_name, final.usage.output_tokens) == ("Hello", "a", 2)
    assert rig.stats("a")["current_requests"] == 0
    assert rig.stats("a")["successes"] == 1


async def test_each_delta_reaches_the_caller_before_the_next_chunk_exists(rigs: Any) -> None:
    rig = rigs("a")
    rig.script("a", stream(event("one"), 5.0, event("two"), DONE))
    gen = rig.mux.get_openai_client().astream(messages=HI)
    assert await gen.__anext__() == "one"  # the clock has not moved: the second chunk waits
    assert rig.clock.now() == 1000.0
    nxt = asyncio.ensure_future(gen.__anext__())
    await rig.clock.advance(5.0)
    assert await nxt == "two"
    await gen.aclose()


async def test_a_stream_cut_before_any_delta_is_retried_on_another_key(rigs: Any) -> None:
    rig = rigs("a", "b")
    rig.script("a", stream(transport_failure()))
    rig.script("b", stream(event("fine"), DONE))
    deltas, final = await collect(rig.mux.get_openai_client().astream(messages=HI))
    assert (deltas, final.key_name, final.attempts) == (["fine"], "b", 2)
    assert rig.stats("a")["failures"] == 1


async def test_an_error_event_before_any_delta_is_retried(rigs: Any) -> None:
    rig = rigs("a", "b")
    rig.script("a", stream(event(error={"message": "overloaded", "type": "server_error"})))
    rig.script("b", stream(event("ok"), DONE))
    task = asyncio.ensure_future(collect(rig.mux.get_openai_client().astream(messages=HI)))
    await rig.clock.advance(0)
    assert not task.done()  # a provider-wide overload: the request backs off first
    await rig.clock.advance(0.5)
    deltas, final = await task
    assert (deltas, final.key_name, final.attempts) == (["ok"], "b", 2)


async def test_a_stream_broken_after_deltas_is_a_stream_error_and_not_retried(rigs: Any) -> None:
    rig = rigs("a", "b")
    rig.script("a", stream(event("par"), event("tial"), transport_failure()))
    received: list[str] = []
    with pytest.raises(StreamError) as info:
        async for item in rig.mux.get_openai_client().astream(messages=HI):
            assert isinstance(item, str)
            received.append(item)
    assert received == ["par", "tial"]
    assert (info.value.chunks_received, info.value.text_received) == (2, "partial")
    assert len(rig.engine.calls()) == 1  # never sent again
    assert rig.in_flight() == 0


async def test_a_stream_that_ends_without_its_end_marker(rigs: Any) -> None:
    rig = rigs("a", "b")
    rig.script("a", stream())  # ends at once, no [DONE]: retried
    rig.script("b", stream(event("x")))  # ends after a delta, no [DONE]: broken
    with pytest.raises(StreamError, match="end marker"):
        await collect(rig.mux.get_openai_client().astream(messages=HI))
    assert [rig.engine.keys_used()] == [[secret("a"), secret("b")]]


async def test_garbage_in_a_stream_is_malformed_and_not_retried(rigs: Any) -> None:
    rig = rigs("a", "b")
    rig.script("a", stream(b"data: {not json\n\n"))
    with pytest.raises(MalformedResponseError, match="garbage"):
        await collect(rig.mux.get_openai_client().astream(messages=HI))
    assert len(rig.engine.calls()) == 1
    assert (rig.stats("a")["failures"], rig.in_flight()) == (1, 0)


async def test_a_stream_the_caller_abandons_frees_its_slot_at_once(rigs: Any) -> None:
    rig = rigs("a")
    rig.script("a", stream(event("first"), 60.0, event("never read"), DONE))
    gen = rig.mux.get_openai_client().astream(messages=HI)
    assert await gen.__anext__() == "first"
    assert rig.in_flight() == 1
    await gen.aclose()
    assert rig.in_flight() == 0
    assert rig.engine.total_in_flight() == 0  # the exchange was closed too
    assert rig.clock.now() == 1000.0


async def test_a_deadline_between_chunks_ends_the_stream_and_frees_the_slot(rigs: Any) -> None:
    rig = rigs("a")
    rig.script("a", stream(event("slow"), 30.0, event("late"), DONE))
    gen = rig.mux.get_openai_client().astream(messages=HI, deadline=10.0)
    assert await gen.__anext__() == "slow"
    nxt = asyncio.ensure_future(gen.__anext__())
    await rig.clock.advance(10.0)
    with pytest.raises(RequestTimeoutError, match="deadline"):
        await nxt
    assert rig.in_flight() == 0


# --- the deadline names the last cause ---------------------------------------------------------


async def test_a_deadline_error_keeps_the_cause_of_the_last_failed_attempt(rigs: Any) -> None:
    rig = rigs("a", initial_retry_delay=1.0, max_retries=10)
    rig.engine.default = transport_failure()
    task = asyncio.ensure_future(rig.mux.get_openai_client().acall(messages=HI, deadline=5.0))
    for _ in range(10):
        await rig.clock.advance(1.0)
    with pytest.raises(RequestTimeoutError) as info:
        await task
    message = str(info.value)
    assert "the deadline passed" in message
    assert "the server closed the connection" in message  # what the attempts ran into
    assert "key 'a'" in message


# --- forwarded requests ----------------------------------------------------------------------


async def test_a_forwarded_request_puts_the_lanes_key_where_the_placeholder_was(rigs: Any) -> None:
    rig = rigs("a")
    head, body = await rig.forward()
    sent = rig.engine.calls()[0]
    assert sent.url == "https://api.openai.com/v1/chat/completions"
    assert sent.headers["Authorization"] == "Bearer " + secret("a")
    assert "keymux" not in json.dumps(dict(sent.headers))
    assert (head.status, head.key_name, head.attempts, head.error) == (200, "a", 1, None)
    assert json.loads(body)["choices"][0]["message"]["content"] == "hello"
    assert rig.stats("a")["output_tokens"] == 2  # usage read from the passed-through JSON


async def test_a_forwarded_request_fails_over_on_429_before_the_caller_sees_it(rigs: Any) -> None:
    rig = rigs("a", "b")
    rig.script("a", rate_limited(30.0))
    head, _ = await rig.forward()
    assert (head.status, head.key_name, head.attempts) == (200, "b", 2)
    assert rig.stats("a")["rate_limited"] == 1
    assert rig.clock.now() == 1000.0  # moved on at once, nobody slept


async def test_when_keymux_gives_up_the_caller_gets_the_last_error_answer(rigs: Any) -> None:
    rig = rigs("a", "b")
    echo = f"Incorrect API key provided: {secret('b')}"
    rig.script("a", error(401, "Incorrect API key provided", code="invalid_api_key"))
    rig.script("b", error(401, echo, code="invalid_api_key"))
    head, body = await rig.forward()
    assert (head.status, head.key_name, head.attempts) == (401, "b", 2)
    assert isinstance(head.error, AuthenticationError)
    assert secret("b").encode() not in body  # the echoed key is masked
    assert b"sk-...cdef" in body
    assert [rig.stats(n)["status"] for n in "ab"] == ["disabled", "disabled"]


async def test_with_no_answer_to_show_the_error_is_raised(rigs: Any) -> None:
    rig = rigs()
    with pytest.raises(NoKeyAvailableError, match="no openai keys are configured"):
        await rig.forward()


async def test_a_forwarded_stream_passes_chunks_through_as_they_arrive(rigs: Any) -> None:
    rig = rigs("a")
    first, second = event("one"), event("two")
    rig.script("a", stream(first, 5.0, second, USAGE, DONE))
    gen = rig.mux._gateway.aforward(rig.forwarded(stream=True))
    head = await gen.__anext__()
    assert isinstance(head, Head)
    assert head.status == 200
    assert await gen.__anext__() == first  # unchanged bytes, before the next chunk exists
    assert rig.clock.now() == 1000.0
    rest = asyncio.ensure_future(_drain(gen))
    await rig.clock.advance(5.0)
    assert await rest == second + USAGE + DONE
    assert rig.stats("a")["output_tokens"] == 2  # counted from the stream's events
    assert rig.in_flight() == 0


async def test_a_forwarded_stream_failing_at_its_first_event_is_retried(rigs: Any) -> None:
    rig = rigs("a", "b")
    rig.script("a", stream(event(error={"message": "busy", "type": "server_error"})))
    rig.script("b", stream(event("ok"), DONE))
    task = asyncio.ensure_future(rig.forward(stream=True))
    await rig.clock.advance(0.5)
    head, body = await task
    assert (head.key_name, head.attempts) == ("b", 2)
    assert body == event("ok") + DONE


async def test_a_forwarded_stream_broken_after_bytes_went_out(rigs: Any) -> None:
    rig = rigs("a", "b")
    rig.script("a", stream(event("half"), transport_failure()))
    gen = rig.mux._gateway.aforward(rig.forwarded(stream=True))
    assert isinstance(await gen.__anext__(), Head)
    assert await gen.__anext__() == event("half")
    with pytest.raises(StreamError, match=r"after \d+ bytes"):
        await gen.__anext__()
    assert len(rig.engine.calls()) == 1
    assert rig.in_flight() == 0


async def test_closing_a_forwarded_stream_early_frees_the_slot(rigs: Any) -> None:
    rig = rigs("a")
    rig.script("a", stream(event("one"), 60.0, DONE))
    gen = rig.mux._gateway.aforward(rig.forwarded(stream=True))
    await gen.__anext__()
    await gen.__anext__()
    assert rig.in_flight() == 1
    await gen.aclose()
    assert (rig.in_flight(), rig.engine.total_in_flight()) == (0, 0)


async def _drain(gen: AsyncIterator[Any]) -> bytes:
    return b"".join([item async for item in gen])


def test_a_sync_forward_hops_to_the_loop_thread() -> None:
    rig = Rig("a")
    try:
        rig.mux._core.engine = ScriptedEngine(None, default=ok("from a thread"))  # type: ignore[assignment]
        items = list(rig.mux._gateway.forward(rig.forwarded()))
        assert isinstance(items[0], Head)
        assert json.loads(items[1])["choices"][0]["message"]["content"] == "from a thread"
    finally:
        rig.mux.close()
