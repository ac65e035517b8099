"""The fault matrix: what every kind of broken upstream does to a call, end to end.

Faults that the provider *answers* (revoked keys, 5xx and 529 storms, hangs, malformed bodies,
broken streams) come from the emulator, run in-process on the test's event loop on a loopback
port. Faults below HTTP (refused connections, a reset or truncated body, a server that stops
sending) come from a raw ``asyncio`` server that speaks just enough HTTP/1.1 to misbehave.

Every test keeps its delays tiny (``initial_retry_delay=0.01``); the file runs in seconds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

import keymux
from keymux.emulator import Emulator, EmulatorKey, Faults
from keymux.testing import FakeClock

MESSAGES = [{"role": "user", "content": "tell me something in a few words"}]
FAST = {"initial_retry_delay": 0.01, "max_retry_delay": 0.05, "close_grace": 1.0}


def secret(provider: str, name: str) -> str:
    prefix = {
        "openai": "sk-fault-",
        "groq": "gsk_fault_",
        "claude": "sk-ant-fault-",
        "gemini": "AIzaFault-",
    }[provider]
    return f"{prefix}{name}-0123456789abcdef"


# --- the in-process emulator ------------------------------------------------------------------


@dataclass
class Emu:
    emu: Emulator

    def base_url(self, provider: str) -> str:
        return self.emu.base_url(provider)

    def stats(self, provider: str, name: str) -> dict[str, Any]:
        entry: dict[str, Any] = self.emu.stats()["keys"][f"{provider}:{name}"]
        return entry

    def set_faults(self, provider: str, name: str, **fields: Any) -> None:
        self.emu.set_faults(secret(provider, name), provider=provider, **fields)


MakeEmu = Callable[..., Awaitable[Emu]]


@pytest.fixture
async def make_emu() -> AsyncIterator[MakeEmu]:
    """``await make_emu((provider, name, Faults, latency), ...)``: an emulator on this loop."""
    started: list[Emulator] = []

    async def factory(*keys: tuple[str, str, Faults, float | None], **options: Any) -> Emu:
        emu = Emulator(
            [
                EmulatorKey(p, secret(p, n), faults=f, latency=lat, label=f"{p}:{n}")
                for p, n, f, lat in keys
            ],
            seed=0,
            **options,
        )
        await emu.start()
        started.append(emu)
        return Emu(emu)

    yield factory
    for emu in started:
        await emu.stop()


def key(
    provider: str, name: str, faults: Faults | None = None, latency: float | None = None
) -> tuple[str, str, Faults, float | None]:
    return provider, name, faults or Faults(), latency


def add_keys(mux: keymux.Multiplexer, base: str | Emu, provider: str, *names: str) -> None:
    for name in names:
        url = base.base_url(provider) if isinstance(base, Emu) else base
        mux.add_key(provider, name, secret(provider, name), base_url=url)


# --- a raw server for transport-level faults --------------------------------------------------


@dataclass
class RawServer:
    """Reads one HTTP/1.1 request per connection, then does ``mode``."""

    mode: str
    requests: int = 0
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    handlers: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        task = asyncio.current_task()
        if task is not None:
            self.handlers.append(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            self.requests += 1
            await self.misbehave(writer, json.loads(body) if body else {})
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()

    async def misbehave(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        full = json.dumps(
            {
                "id": "chatcmpl-raw",
                "object": "chat.completion",
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "hi"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        if self.mode == "stall_before_headers":
            await asyncio.sleep(3600)
        if self.mode == "stream_then_reset":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for word in ("Hello ", "there "):
                event = (
                    b"data: "
                    + json.dumps(
                        {
                            "id": "c",
                            "object": "chat.completion.chunk",
                            "model": "gpt-4o-mini",
                            "choices": [
                                {"index": 0, "delta": {"content": word}, "finish_reason": None}
                            ],
                        }
                    ).encode()
                    + b"\n\n"
                )
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.05)
            _reset(writer)
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(full)
        )
        writer.write(full[: len(full) // 2])
        await writer.drain()
        if self.mode == "reset_mid_body":
            await asyncio.sleep(0.02)
            _reset(writer)
        elif self.mode == "truncated":
            await asyncio.sleep(0.02)
            writer.close()
        elif self.mode == "stall_mid_body":
            await asyncio.sleep(3600)
        else:
            raise AssertionError(self.mode)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:
            task.cancel()
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


MakeRaw = Callable[[str], Awaitable[RawServer]]


@pytest.fixture
async def raw_server() -> AsyncIterator[MakeRaw]:
    servers: list[RawServer] = []

    async def factory(mode: str) -> RawServer:
        raw = RawServer(mode)
        raw.server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        servers.append(raw)
        return raw

    yield factory
    for raw in servers:
        await raw.stop()


def closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there any more


def assert_names_key(exc: keymux.KeymuxError, provider: str, name: str) -> None:
    assert exc.provider == provider
    assert exc.key_name == name
    assert provider in str(exc)
    assert repr(name) in str(exc)


async def gather_outcomes(coros: Sequence[Awaitable[Any]]) -> list[Any]:
    return list(await asyncio.gather(*coros, return_exceptions=True))


async def wait_until(condition: Callable[[], bool], what: str, *, within: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail loudly, naming ``what``, if it does not within
    ``within`` seconds (a bound against hanging, not a timing assertion)."""
    for _ in range(int(within / 0.002)):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"still waiting after {within} s for: {what}")


# --- refused connections ----------------------------------------------------------------------


async def test_connection_refused_ends_in_connection_error_after_the_retries() -> None:
    url = closed_port_url()
    async with keymux.Multiplexer(max_retries=2, **FAST) as mux:
        mux.add_openai_key("dead", secret("openai", "dead"), base_url=url)
        with pytest.raises(keymux.ConnectionError) as info:
            await mux.get_openai_client(key_name="dead").acall(messages=MESSAGES)
    exc = info.value
    assert_names_key(exc, "openai", "dead")
    assert exc.attempts == 3
    assert "cannot connect" in str(exc)
    stats = mux.get_usage_stats()["openai"]["dead"]
    assert stats["failures"] == 3
    assert stats["current_requests"] == 0


async def test_connection_refused_on_one_key_moves_the_work_to_a_healthy_key(
    make_emu: MakeEmu,
) -> None:
    emu = await make_emu(key("openai", "good"))
    async with keymux.Multiplexer(max_retries=3, **FAST) as mux:
        mux.add_openai_key("dead", secret("openai", "dead"), base_url=closed_port_url())
        add_keys(mux, emu, "openai", "good")
        client = mux.get_openai_client()
        results = await gather_outcomes([client.acall(messages=MESSAGES) for _ in range(8)])
    assert all(isinstance(r, keymux.Response) for r in results), results
    assert {r.key_name for r in results} == {"good"}
    stats = mux.get_usage_stats()["openai"]
    assert stats["dead"]["failures"] >= 1
    assert stats["good"]["successes"] == 8


# --- transport faults from the raw server ----------------------------------------------------


@pytest.mark.parametrize("mode", ["reset_mid_body", "truncated"])
async def test_a_body_cut_off_mid_response_is_a_retried_connection_error(
    raw_server: MakeRaw, mode: str
) -> None:
    raw = await raw_server(mode)
    async with keymux.Multiplexer(max_retries=2, **FAST) as mux:
        mux.add_openai_key("cut", secret("openai", "cut"), base_url=raw.url)
        with pytest.raises(keymux.ConnectionError) as info:
            await mux.get_openai_client(key_name="cut").acall(messages=MESSAGES)
    assert_names_key(info.value, "openai", "cut")
    assert info.value.attempts == 3
    assert raw.requests == 3
    assert not isinstance(info.value, keymux.MalformedResponseError)


async def test_a_reset_mid_response_moves_to_a_healthy_key(
    raw_server: MakeRaw, make_emu: MakeEmu
) -> None:
    raw = await raw_server("reset_mid_body")
    emu = await make_emu(key("openai", "good"))
    async with keymux.Multiplexer(max_retries=3, **FAST) as mux:
        mux.add_openai_key("cut", secret("openai", "cut"), base_url=raw.url)
        add_keys(mux, emu, "openai", "good")
        client = mux.get_openai_client()
        results = await gather_outcomes([client.acall(messages=MESSAGES) for _ in range(6)])
    assert all(isinstance(r, keymux.Response) and r.key_name == "good" for r in results), results
    assert raw.requests >= 1


@pytest.mark.parametrize("mode", ["stall_before_headers", "stall_mid_body"])
async def test_read_timeout_ends_each_attempt_and_the_call(raw_server: MakeRaw, mode: str) -> None:
    raw = await raw_server(mode)
    async with keymux.Multiplexer(max_retries=1, **FAST) as mux:
        mux.add_openai_key("slow", secret("openai", "slow"), base_url=raw.url)
        client = mux.get_openai_client(key_name="slow")
        with pytest.raises(keymux.RequestTimeoutError) as info:
            await client.acall(messages=MESSAGES, timeout=keymux.Timeout(total=5.0, read=0.2))
    assert_names_key(info.value, "openai", "slow")
    assert isinstance(info.value, TimeoutError)
    # the read timeout (0.2 s without a byte) ended each attempt, not the 5 s total
    assert "timed out waiting for data" in str(info.value)
    assert info.value.attempts == 2
    assert raw.requests == 2


async def test_a_stream_reset_after_some_chunks_is_a_stream_error_not_a_retry(
    raw_server: MakeRaw,
) -> None:
    raw = await raw_server("stream_then_reset")
    async with keymux.Multiplexer(max_retries=3, **FAST) as mux:
        mux.add_openai_key("cut", secret("openai", "cut"), base_url=raw.url)
        got: list[Any] = []
        with pytest.raises(keymux.StreamError) as info:
            async for item in mux.get_openai_client().astream(messages=MESSAGES):
                got.append(item)
    assert got == ["Hello ", "there "]
    exc = info.value
    assert_names_key(exc, "openai", "cut")
    assert exc.chunks_received == 2
    assert exc.text_received == "Hello there "
    assert "after 2 chunks" in str(exc)
    assert raw.requests == 1  # never retried once bytes reached the caller


# --- faults the provider answers (emulator) ---------------------------------------------------


async def test_a_hanging_key_times_out_per_attempt_and_its_work_moves(make_emu: MakeEmu) -> None:
    emu = await make_emu(key("openai", "hang", Faults(hang=True)), key("openai", "good"))
    timeout = keymux.Timeout(total=0.25)
    # keymux's time stands still (the attempt timeout is the HTTP client's, in real time): a
    # key that timed out stays cooling, so each request meets the hanging key at most once
    clock = FakeClock()
    async with keymux.Multiplexer(max_retries=3, clock=clock, **FAST) as mux:
        add_keys(mux, emu, "openai", "hang", "good")
        client = mux.get_openai_client()
        results = await gather_outcomes(
            [client.acall(messages=MESSAGES, timeout=timeout) for _ in range(10)]
        )
        stats = mux.get_usage_stats()["openai"]
    assert all(isinstance(r, keymux.Response) and r.key_name == "good" for r in results), results
    moved = [r for r in results if r.attempts > 1]
    assert moved, "no request was ever sent to the hanging key"
    assert all(r.attempts == 2 for r in moved)  # one timeout, then the healthy key
    assert emu.stats("openai", "hang")["faults"]["hang"] == len(moved)
    assert stats["hang"]["status"] == "cooling"
    assert stats["hang"]["failures"] == len(moved)
    # pinned to the hanging key: every attempt times out, then the call does
    async with keymux.Multiplexer(max_retries=3, **FAST) as mux:
        add_keys(mux, emu, "openai", "hang")
        with pytest.raises(keymux.RequestTimeoutError) as info:
            await mux.get_openai_client(key_name="hang").acall(messages=MESSAGES, timeout=timeout)
    assert_names_key(info.value, "openai", "hang")
    assert "the attempt timed out" in str(info.value)
    assert info.value.attempts == 4


async def test_a_200_with_a_malformed_body_is_a_clear_error(make_emu: MakeEmu) -> None:
    emu = await make_emu(key("openai", "bad", Faults(malformed=True)), key("openai", "good"))
    async with keymux.Multiplexer(max_retries=2, **FAST) as mux:
        add_keys(mux, emu, "openai", "bad", "good")
        with pytest.raises(keymux.MalformedResponseError) as info:
            await mux.get_openai_client(key_name="bad").acall(messages=MESSAGES)
        # the healthy key is not affected
        resp = await mux.get_openai_client(key_name="good").acall(messages=MESSAGES)
    assert_names_key(info.value, "openai", "bad")
    assert info.value.status == 200
    assert "HTTP 200" in str(info.value)
    assert resp.key_name == "good"
    assert mux.get_usage_stats()["openai"]["bad"]["failures"] == 1


@pytest.mark.parametrize("fault", ["stream_cut_after", "stream_error_after"])
async def test_a_stream_broken_after_some_chunks_says_how_far_it_got(
    make_emu: MakeEmu, fault: str
) -> None:
    emu = await make_emu(key("openai", "broken", Faults(**{fault: 2})), key("openai", "good"))
    async with keymux.Multiplexer(max_retries=3, **FAST) as mux:
        add_keys(mux, emu, "openai", "broken", "good")
        got: list[Any] = []
        with pytest.raises(keymux.StreamError) as info:
            # unpinned, with a healthy key available: still not retried
            async for item in mux.get_openai_client(strategy="least-loaded").astream(
                messages=MESSAGES
            ):
                got.append(item)
                if len(got) == 1:
                    # make sure the first try lands on the broken key
                    assert emu.stats("openai", "broken")["streams"] == 1
    exc = info.value
    assert_names_key(exc, "openai", "broken")
    assert exc.chunks_received == 2
    assert len(got) == 2
    assert exc.text_received == "".join(got)
    assert "after 2 chunks" in str(exc)
    assert "not retried" in str(exc)
    assert emu.stats("openai", "broken")["streams"] == 1
    assert emu.stats("openai", "good")["streams"] == 0


async def test_a_stream_broken_before_any_chunk_is_retried_transparently(
    make_emu: MakeEmu,
) -> None:
    emu = await make_emu(key("openai", "broken", Faults(stream_cut_after=0)), key("openai", "good"))
    async with keymux.Multiplexer(max_retries=3, **FAST) as mux:
        add_keys(mux, emu, "openai", "broken", "good")
        client = mux.get_openai_client()
        finals = []
        for _ in range(4):
            items = [item async for item in client.astream(messages=MESSAGES)]
            assert all(isinstance(i, str) for i in items[:-1])
            finals.append(items[-1])
    assert all(isinstance(f, keymux.Response) and f.key_name == "good" for f in finals)
    assert any(f.attempts > 1 for f in finals)
    assert emu.stats("openai", "broken")["streams"] >= 1


def test_a_broken_stream_through_the_sync_facade() -> None:
    """The same through ``client.stream`` (keymux's portal thread; the emulator in another)."""
    box: dict[str, Any] = {}
    ready = threading.Event()
    stop = threading.Event()

    def serve() -> None:
        async def main() -> None:
            emu = Emulator(
                [
                    EmulatorKey(
                        "openai",
                        secret("openai", "broken"),
                        faults=Faults(stream_error_after=1),
                        label="openai:broken",
                    )
                ],
                seed=0,
            )
            await emu.start()
            box["emu"] = Emu(emu)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.01)
            await emu.stop()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        with keymux.Multiplexer(max_retries=2, **FAST) as mux:
            add_keys(mux, box["emu"], "openai", "broken")
            got: list[Any] = []
            with pytest.raises(keymux.StreamError) as info:
                for item in mux.get_openai_client().stream(messages=MESSAGES):
                    got.append(item)
        assert info.value.chunks_received == 1 == len(got)
        assert info.value.key_name == "broken"
    finally:
        stop.set()
        thread.join(10)


async def test_a_5xx_storm_on_every_key_ends_in_provider_server_error(make_emu: MakeEmu) -> None:
    names = ("s1", "s2", "s3")
    emu = await make_emu(*(key("openai", n, Faults(server_error_rate=1.0)) for n in names))
    async with keymux.Multiplexer(max_retries=3, **FAST) as mux:
        add_keys(mux, emu, "openai", *names)
        client = mux.get_openai_client()
        results = await gather_outcomes([client.acall(messages=MESSAGES) for _ in range(5)])
    assert all(isinstance(r, keymux.ProviderServerError) for r in results), results
    assert all(r.status == 500 and r.attempts == 4 for r in results)
    served = sum(emu.stats("openai", n)["requests"] for n in names)
    assert served == 5 * 4  # bounded: the first attempt and max_retries retries, no more
    stats = mux.get_usage_stats()["openai"]
    assert sum(stats[n]["current_requests"] + stats[n]["queue_size"] for n in names) == 0


async def test_a_5xx_storm_on_one_key_moves_the_work_to_the_others(make_emu: MakeEmu) -> None:
    emu = await make_emu(
        key("groq", "sick", Faults(server_error_rate=1.0)), key("groq", "g1"), key("groq", "g2")
    )
    # keymux's time stands still: the sick key's backoff after a 500 cannot end in the test
    clock = FakeClock()
    async with keymux.Multiplexer(max_retries=3, clock=clock, **FAST) as mux:
        add_keys(mux, emu, "groq", "sick", "g1", "g2")
        client = mux.get_groq_client()
        results = await gather_outcomes([client.acall(messages=MESSAGES) for _ in range(12)])
        sick = mux.get_usage_stats()["groq"]["sick"]
        assert sick["status"] == "cooling"
        await clock.advance(3600.0)  # past any backoff: the key is offered work again
        assert mux.get_usage_stats()["groq"]["sick"]["status"] == "active"
    assert all(isinstance(r, keymux.Response) for r in results), results
    assert {r.key_name for r in results} <= {"g1", "g2"}
    # each request that met the sick key moved on after that one 500
    assert all(r.attempts <= 2 for r in results)
    assert sick["failures"] == emu.stats("groq", "sick")["requests"] >= 1
    assert sick["failures"] == sum(1 for r in results if r.attempts == 2)


async def test_a_connection_reset_before_any_answer(make_emu: MakeEmu) -> None:
    emu = await make_emu(key("gemini", "rst", Faults(reset_connection=True)), key("gemini", "ok"))
    async with keymux.Multiplexer(max_retries=2, **FAST) as mux:
        add_keys(mux, emu, "gemini", "rst", "ok")
        with pytest.raises(keymux.ConnectionError) as info:
            await mux.get_gemini_client(key_name="rst").acall(messages=MESSAGES)
        moved = await gather_outcomes(
            [mux.get_gemini_client().acall(messages=MESSAGES) for _ in range(4)]
        )
    assert_names_key(info.value, "gemini", "rst")
    assert info.value.attempts == 3
    assert emu.stats("gemini", "rst")["faults"]["reset_connection"] >= 3
    assert all(isinstance(r, keymux.Response) and r.key_name == "ok" for r in moved), moved


async def test_a_529_storm_on_claude_ends_in_provider_server_error(make_emu: MakeEmu) -> None:
    names = ("c1", "c2")
    emu = await make_emu(*(key("claude", n, Faults(overloaded_rate=1.0)) for n in names))
    async with keymux.Multiplexer(max_retries=2, **FAST) as mux:
        add_keys(mux, emu, "claude", *names)
        client = mux.get_claude_client()
        results = await gather_outcomes([client.acall(messages=MESSAGES) for _ in range(4)])
    assert all(isinstance(r, keymux.ProviderServerError) for r in results), results
    assert all(r.status == 529 and r.attempts == 3 for r in results)
    assert all(r.provider == "claude" and r.key_name in names for r in results)
    served = sum(emu.stats("claude", n)["errors"].get("529", 0) for n in names)
    assert served == 4 * 3  # bounded: the first attempt and max_retries retries, no more


async def test_a_key_revoked_while_requests_are_in_flight(make_emu: MakeEmu) -> None:
    emu = await make_emu(key("openai", "a", latency=0.1), key("openai", "b", latency=0.25))
    async with keymux.Multiplexer(max_concurrent_requests=2, max_retries=3, **FAST) as mux:
        add_keys(mux, emu, "openai", "a", "b")
        client = mux.get_openai_client()
        for name in ("a", "b"):  # past slow start: each key answered once
            await mux.get_openai_client(key_name=name).acall(messages=MESSAGES)
        tasks = [asyncio.ensure_future(client.acall(messages=MESSAGES)) for _ in range(10)]
        await wait_until(
            lambda: (
                mux.get_usage_stats()["openai"]["a"]["current_requests"] == 2
                and emu.stats("openai", "a")["requests"] == 1 + 2
            ),
            "two requests in flight on key a, and at the emulator",
        )
        emu.set_faults("openai", "a", revoked=True)
        results = await gather_outcomes(tasks)
        after = await client.acall(messages=MESSAGES)
    assert all(isinstance(r, keymux.Response) for r in results), results
    # the two requests in flight when the key was revoked ended with their answers
    assert sum(1 for r in results if r.key_name == "a") == 2
    stats = mux.get_usage_stats()["openai"]
    assert stats["a"]["status"] == "disabled"
    assert "invalid key" in stats["a"]["disabled_reason"]
    assert after.key_name == "b"
    # later requests moved to b; the revoked key saw only what was sent before it was disabled
    assert emu.stats("openai", "a")["errors"].get("401", 0) >= 1


async def test_a_revoked_key_gets_no_request_after_the_first_401(make_emu: MakeEmu) -> None:
    """A disabled key is sent nothing more, with a real server (regression: the freed slot
    used to go to a waiter before the key was disabled, fixed in 10f9d96)."""
    emu = await make_emu(key("openai", "a", latency=0.1), key("openai", "b", latency=0.25))
    async with keymux.Multiplexer(max_concurrent_requests=2, max_retries=3, **FAST) as mux:
        add_keys(mux, emu, "openai", "a", "b")
        client = mux.get_openai_client()
        tasks = [asyncio.ensure_future(client.acall(messages=MESSAGES)) for _ in range(10)]
        await wait_until(
            lambda: mux.get_usage_stats()["openai"]["a"]["current_requests"] == 2,
            "two requests in flight on key a",
        )
        emu.set_faults("openai", "a", revoked=True)
        results = await gather_outcomes(tasks)
    assert all(isinstance(r, keymux.Response) for r in results), results
    # at 0.1 s key a answers its two requests and takes two waiters; both meet the revocation.
    # Those two were sent before anything was known; nothing may follow them.
    assert emu.stats("openai", "a")["errors"].get("401", 0) <= 2


async def test_removing_a_key_with_a_full_queue(make_emu: MakeEmu) -> None:
    emu = await make_emu(key("openai", "a", latency=0.3), key("openai", "b", latency=0.1))

    def prefer_a(candidates: Sequence[Any], now: float) -> Any:
        return next((c for c in candidates if c.name == "a"), candidates[0])

    async with keymux.Multiplexer(
        max_concurrent_requests=1, queue_size=3, max_retries=2, **FAST
    ) as mux:
        add_keys(mux, emu, "openai", "a", "b")
        on_a = mux.get_openai_client(key_name="a")
        on_b = mux.get_openai_client(key_name="b")
        unpinned = mux.get_openai_client(strategy=prefer_a)

        def spawn(client: Any) -> asyncio.Future[keymux.Response]:
            return asyncio.ensure_future(client.acall(messages=MESSAGES))

        busy_b = spawn(on_b)
        await asyncio.sleep(0)
        first_a = spawn(on_a)  # in flight on a
        await asyncio.sleep(0)
        pinned_waiting = spawn(on_a)
        moved = [spawn(unpinned), spawn(unpinned)]

        def a_is_full() -> bool:
            a = mux.get_usage_stats()["openai"]["a"]
            return bool(a["queue_size"] == 3 and a["current_requests"] == 1)

        await wait_until(a_is_full, "key a: one request in flight and three queued")
        stats = mux.get_usage_stats()["openai"]
        assert stats["a"]["queue_size"] == 3  # full
        assert stats["a"]["current_requests"] == 1
        with pytest.raises(keymux.QueueFullError):
            await on_a.acall(messages=MESSAGES)

        mux.remove_key("openai", "a")

        with pytest.raises(keymux.NoKeyAvailableError) as info:
            await pinned_waiting
        assert info.value.key_name == "a"
        assert "removed" in str(info.value)
        assert "pinned" in str(info.value)
        results = await gather_outcomes(moved)
        assert all(isinstance(r, keymux.Response) and r.key_name == "b" for r in results), results
        assert (await first_a).key_name == "a"  # in flight when removed: it finishes
        assert (await busy_b).key_name == "b"
        assert "a" not in mux.get_usage_stats()["openai"]
        with pytest.raises(keymux.NoKeyAvailableError):
            await on_a.acall(messages=MESSAGES)
