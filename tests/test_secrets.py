"""Secret hygiene audit: no key in any exception, log, repr, stats or file, ever.

One canary key is used as every provider's key and pushed through every error path keymux has:
against the emulator (invalid key, quota, 5xx, malformed body, broken streams, hangs, 400s),
against fake engines whose servers *echo* the key back, against a closed port, through
configuration mistakes, and through the command line. For each, neither the canary nor its
distinctive middle may appear in ``str``/``repr`` of the exception and every exception in its
chain, the formatted traceback, any log record at DEBUG (message and exception text), the
``repr`` of the multiplexer, its clients, lanes and key specs, the JSON stats, or CLI output
and files.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

import keymux
from fakes import AnswerExchange
from keymux._types import HttpRequest
from keymux.emulator import Emulator, EmulatorKey, Faults

CANARY = "sk-CANARY-7f3a9c1e5b2d4680"
MIDDLE = "7f3a9c1e5b2d"
FRAGMENTS = (CANARY, MIDDLE, "CANARY-7f3a", "9c1e5b2d")
PROVIDERS = ("openai", "groq", "claude", "gemini")
MESSAGES = [{"role": "user", "content": "say something"}]
FAST: dict[str, Any] = {
    "initial_retry_delay": 0.01,
    "max_retry_delay": 0.05,
    "max_retries": 1,
    "close_grace": 1.0,
}


def leaks(text: str) -> list[str]:
    return [f for f in FRAGMENTS if f in text]


def assert_clean(text: str, where: str) -> None:
    found = leaks(text)
    assert not found, f"the canary leaked into {where}: {found} in {text[:2000]!r}"


def exception_texts(exc: BaseException) -> Iterator[tuple[str, str]]:
    """Everything an exception shows: str, repr, attributes, its whole chain, the traceback."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        name = type(current).__name__
        yield f"str({name})", str(current)
        yield f"repr({name})", repr(current)
        yield f"args of {name}", repr(current.args)
        for attr, value in vars(current).items():
            yield f"{name}.{attr}", repr(value)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)
    yield "traceback", "".join(traceback.format_exception(exc))


def assert_exception_clean(exc: BaseException) -> None:
    for where, text in exception_texts(exc):
        assert_clean(text, where)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record at DEBUG from everywhere; checked for the canary when the test ends."""
    caplog.set_level(logging.DEBUG)
    for name in ("keymux", "aiohttp", "aiohttp.client", "aiohttp.server", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog
    assert_logs_clean(caplog)


def assert_logs_clean(caplog: pytest.LogCaptureFixture) -> None:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in caplog.records:
        assert_clean(record.getMessage(), f"log record {record.name}")
        assert_clean(formatter.format(record), f"formatted log record {record.name}")
        assert_clean(repr(record.args), f"log record args {record.name}")


def assert_answer_clean(answer: Any) -> None:
    """A Response (or a stream's items): repr, text and the provider's raw JSON."""
    for item in answer if isinstance(answer, list) else [answer]:
        assert_clean(repr(item), "repr(answer)")
        if isinstance(item, keymux.Response):
            assert_clean(item.text, "Response.text")
            assert_clean(json.dumps(item.raw), "Response.raw")


def assert_mux_clean(mux: keymux.Multiplexer) -> None:
    """repr of the multiplexer, its clients, lanes, key specs; stats; the key listing."""
    assert_clean(repr(mux), "repr(mux)")
    assert_clean(str(mux), "str(mux)")
    stats = mux.get_usage_stats()
    assert_clean(json.dumps(stats), "json.dumps(get_usage_stats())")
    assert_clean(json.dumps(mux.key_info()), "json.dumps(mux.key_info())")
    for provider, ps in mux._core.dispatch.providers.items():
        assert_clean(repr(mux.get_client(provider)), "repr(client)")
        for name, lane in ps.lanes.items():
            assert_clean(repr(mux.get_client(provider, key_name=name)), "repr(pinned client)")
            assert_clean(repr(lane), "repr(lane)")
            assert_clean(repr(lane.spec), "repr(KeySpec)")
            assert_clean(str(lane.spec), "str(KeySpec)")
            assert_clean(repr(lane.secret), "repr(Secret)")
            assert_clean(str(lane.secret), "str(Secret)")
            assert_clean(f"{lane.secret}|{lane.secret:>40}", "format(Secret)")
            for scope, budget in lane.book.items():
                assert_clean(repr(budget.snapshot(0.0)), f"budget snapshot of {scope}")


# --- the emulator (in-process, on the test's loop) --------------------------------------------


MakeEmu = Callable[..., Awaitable[Emulator]]


@pytest.fixture
async def make_emu() -> AsyncIterator[MakeEmu]:
    started: list[Emulator] = []

    async def factory(*keys: EmulatorKey, **options: Any) -> Emulator:
        emu = Emulator(list(keys), seed=0, **options)
        await emu.start()
        started.append(emu)
        return emu

    yield factory
    for emu in started:
        await emu.stop()


def canary_key(provider: str, **faults: Any) -> EmulatorKey:
    return EmulatorKey(provider, CANARY, faults=Faults(**faults), label=f"{provider}-canary")


async def expect_error(
    awaitable: Awaitable[Any], error: type[BaseException] = keymux.KeymuxError
) -> BaseException:
    try:
        result = await awaitable
    except error as exc:
        return exc
    raise AssertionError(f"expected {error.__name__}, got {result!r}")


async def outcome_of(awaitable: Awaitable[Any]) -> Any:
    """What ``awaitable`` returned, or the KeymuxError it raised."""
    try:
        return await awaitable
    except keymux.KeymuxError as exc:
        return exc


async def drain_stream(client: keymux.ProviderClient, **kwargs: Any) -> list[Any]:
    return [item async for item in client.astream("chat", messages=MESSAGES, **kwargs)]


# every provider-answered fault: (name, emulator faults, how to call, expected error)
EMULATED = [
    ("invalid-key", None, "call", keymux.KeymuxError),
    ("quota", {"quota_spent": True}, "call", keymux.KeymuxError),
    ("5xx", {"server_error_rate": 1.0}, "call", keymux.ProviderServerError),
    ("overloaded", {"overloaded_rate": 1.0}, "call", keymux.ProviderServerError),
    ("malformed", {"malformed": True}, "call", keymux.MalformedResponseError),
    ("missing-fields", {"missing_fields": True}, "call", keymux.MalformedResponseError),
    ("malformed-stream", {"malformed": True}, "stream", keymux.KeymuxError),
    ("stream-cut", {"stream_cut_after": 1}, "stream", keymux.StreamError),
    ("stream-error", {"stream_error_after": 1}, "stream", keymux.StreamError),
    ("stream-cut-at-once", {"stream_cut_after": 0}, "stream", keymux.KeymuxError),
    ("reset", {"reset_connection": True}, "call", keymux.ConnectionError),
    ("hang", {"hang": True}, "call", keymux.RequestTimeoutError),
    ("hang-stream", {"hang": True}, "stream", keymux.RequestTimeoutError),
    ("bad-request", {}, "bad-request", keymux.BadRequestError),
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("case", "faults", "how", "error"), EMULATED, ids=[c[0] for c in EMULATED])
async def test_emulated_failures_never_show_the_key(
    make_emu: MakeEmu,
    logs: pytest.LogCaptureFixture,
    provider: str,
    case: str,
    faults: dict[str, Any] | None,
    how: str,
    error: type[keymux.KeymuxError],
) -> None:
    keys = [] if faults is None else [canary_key(provider, **faults)]
    emu = await make_emu(*keys)
    hangs = case.startswith("hang")
    timeout = keymux.Timeout(total=0.15 if hangs else 5.0)
    async with keymux.Multiplexer(timeout=timeout, **FAST) as mux:
        mux.add_key(provider, "canary", CANARY, base_url=emu.base_url(provider))
        client = mux.get_client(provider)
        if how == "call":
            exc = await expect_error(client.acall("chat", messages=MESSAGES), error)
        elif how == "stream":
            exc = await expect_error(drain_stream(client), error)
        else:  # a request the provider rejects as malformed (400)
            bad = [{"role": "wizard", "content": 42}]
            exc = await expect_error(client.acall("chat", messages=bad), keymux.KeymuxError)
        assert_exception_clean(exc)
        assert_mux_clean(mux)
        if case == "invalid-key":  # the log capture works: the disabling was logged
            assert any("disabled" in r.getMessage() for r in logs.records)
        # the pinned client's view of the same key after the failure: an error again while the
        # fault lasts (or the key is disabled), an answer after a mere bad request; either is
        # checked clean
        if not hangs:  # (a hang would only cost time)
            pinned = mux.get_client(provider, key_name="canary")
            answer = await outcome_of(
                drain_stream(pinned) if how == "stream" else pinned.acall("chat", messages=MESSAGES)
            )
            if case == "bad-request":
                assert not isinstance(answer, BaseException), f"a healthy key failed: {answer!r}"
                assert_answer_clean(answer)
            else:
                assert isinstance(answer, keymux.KeymuxError), f"{case} did not recur: {answer!r}"
                assert_exception_clean(answer)
    assert_mux_clean(mux)
    assert_clean(json.dumps(emu.stats()), "emulator stats")
    assert_clean(repr(emu.keys()), "emulator keys")


async def test_deadline_queue_full_closed_and_unsupported_errors(
    make_emu: MakeEmu, logs: pytest.LogCaptureFixture
) -> None:
    emu = await make_emu(*(EmulatorKey(p, CANARY, latency=0.3) for p in PROVIDERS))
    mux = keymux.Multiplexer(max_concurrent_requests=1, queue_size=0, **FAST)
    async with mux:
        for provider in PROVIDERS:
            mux.add_key(provider, "canary", CANARY, base_url=emu.base_url(provider))
        client = mux.get_openai_client()
        busy = asyncio.ensure_future(client.acall("chat", messages=MESSAGES))
        # the one slot is taken once the request is in flight (the emulator holds it 0.3 s)
        for _ in range(2500):
            if mux.get_usage_stats()["openai"]["canary"]["current_requests"] == 1:
                break
            await asyncio.sleep(0.002)
        else:
            raise AssertionError("the first request never went in flight")
        errors = [
            await expect_error(client.acall("chat", messages=MESSAGES), keymux.QueueFullError),
            await expect_error(
                mux.get_claude_client().acall("embed", input=["x"]), keymux.UnsupportedError
            ),
            await expect_error(
                mux.get_gemini_client().acall("chat", messages=MESSAGES, deadline=0.05),
                keymux.RequestTimeoutError,
            ),
        ]
        await busy
    errors.append(await expect_error(client.acall("chat", messages=MESSAGES), keymux.ClosedError))
    for exc in errors:
        assert_exception_clean(exc)
    assert_mux_clean(mux)


async def test_connection_refused_never_shows_the_key(logs: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with keymux.Multiplexer(**FAST) as mux:
        for provider in PROVIDERS:
            mux.add_key(provider, "canary", CANARY, base_url=f"http://127.0.0.1:{port}")
            exc = await expect_error(
                mux.get_client(provider).acall("chat", messages=MESSAGES), keymux.ConnectionError
            )
            assert_exception_clean(exc)
            exc = await expect_error(drain_stream(mux.get_client(provider)), keymux.KeymuxError)
            assert_exception_clean(exc)
        assert_mux_clean(mux)


# --- servers that echo the key back -----------------------------------------------------------


class EchoEngine:
    """A fake engine whose 'server' puts the caller's key into its answers, as a misbehaving
    gateway or proxy might: in the error message, or in a field of a 200 body."""

    def __init__(self, status: int, body: Callable[[str], Any]) -> None:
        self.status = status
        self.body = body

    async def send(self, req: HttpRequest, timeout: Any) -> tuple[int, Mapping[str, str], bytes]:
        key = _key_of(req.headers)
        return self.status, CIMultiDictProxy(CIMultiDict()), json.dumps(self.body(key)).encode()

    async def open(self, req: HttpRequest, timeout: Any) -> AnswerExchange:
        return AnswerExchange(*await self.send(req, timeout))

    async def close(self) -> None:
        pass

    def forget(self) -> None:
        pass


def _key_of(headers: Mapping[str, str]) -> str:
    lower = {k.lower(): v for k, v in headers.items()}
    value = lower.get("authorization") or lower.get("x-api-key") or lower.get("x-goog-api-key")
    assert value is not None
    return value.removeprefix("Bearer ")


def _error_body(provider: str, key: str) -> Any:
    message = f"The key {key} is not valid for this request"
    if provider == "claude":
        return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    if provider == "gemini":
        return {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


@pytest.mark.parametrize(
    "provider",
    [
        "openai",
        "groq",
        "claude",
        "gemini",
    ],
)
@pytest.mark.parametrize("status", [400, 401, 429, 500])
async def test_a_key_echoed_in_an_error_body_is_masked(
    logs: pytest.LogCaptureFixture, provider: str, status: int
) -> None:
    engine = EchoEngine(status, lambda key: _error_body(provider, key))
    async with keymux.Multiplexer(**{**FAST, "max_retries": 0}) as mux:
        mux._core.engine = engine  # type: ignore[assignment]
        mux.add_key(provider, "canary", CANARY)
        exc = await expect_error(
            mux.get_client(provider, key_name="canary").acall("chat", messages=MESSAGES)
        )
        assert_exception_clean(exc)
        assert_mux_clean(mux)


def _malformed_body(provider: str, key: str) -> Any:
    """A 200 whose token counts are the key: the parse error names the bad value."""
    if provider == "claude":
        return {
            "type": "message",
            "content": [{"type": "text", "text": "hi"}],
            "model": "m",
            "usage": {"input_tokens": key, "output_tokens": key},
            "stop_reason": "end_turn",
        }
    if provider == "gemini":
        return {
            "candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": key, "candidatesTokenCount": key},
        }
    return {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "model": "m",
        "usage": {"prompt_tokens": key, "completion_tokens": key, "total_tokens": key},
    }


@pytest.mark.parametrize(
    "provider",
    [
        "openai",
        "groq",
        "claude",
        "gemini",
    ],
)
async def test_a_key_echoed_in_a_malformed_200_is_masked(
    logs: pytest.LogCaptureFixture, provider: str
) -> None:
    engine = EchoEngine(200, lambda key: _malformed_body(provider, key))
    async with keymux.Multiplexer(**{**FAST, "max_retries": 0}) as mux:
        mux._core.engine = engine  # type: ignore[assignment]
        mux.add_key(provider, "canary", CANARY)
        try:
            resp = await mux.get_client(provider).acall("chat", messages=MESSAGES)
        except keymux.KeymuxError as exc:
            assert_exception_clean(exc)
        else:  # accepted: what keymux adds around the provider's own JSON must be clean
            assert_clean(f"{resp.text} {resp.usage!r} {resp.model}", "Response fields")
        assert_mux_clean(mux)


# --- configuration mistakes -------------------------------------------------------------------


def _config_mistakes(mux: keymux.Multiplexer) -> Iterator[Callable[[], Any]]:
    yield lambda: mux.add_openai_key("dup", CANARY)  # duplicate name (added below first)
    yield lambda: mux.add_openai_key("bad-url", CANARY, base_url="ftp:/nowhere")
    yield lambda: mux.add_openai_key("bad-url2", CANARY, base_url="api.openai.com/v1")
    yield lambda: mux.add_openai_key("bad-rpm", CANARY, rpm=-1)
    yield lambda: mux.add_openai_key("bad-tpm", CANARY, tpm=float("nan"))
    yield lambda: mux.add_openai_key("bad-rpd", CANARY, rpd=0)
    yield lambda: mux.add_openai_key("bad-mc", CANARY, max_concurrent=0)
    yield lambda: mux.add_openai_key("bad-weight", CANARY, weight=-2.0)
    yield lambda: mux.add_openai_key("bad-group", CANARY, group="")
    yield lambda: mux.add_openai_key("", CANARY)  # empty name
    yield lambda: mux.add_openai_key("spaces", f" {CANARY} ")
    yield lambda: mux.add_openai_key("newline", f"{CANARY}\n")
    yield lambda: mux.add_openai_key("tab", CANARY.replace("-", "\t", 1))
    yield lambda: mux.add_key("nope", "k", CANARY)  # unknown provider
    yield lambda: mux.add_key("openai", "k", 12345)  # type: ignore[arg-type]
    yield lambda: mux.get_openai_client(key_name="missing")  # unknown key_name
    yield lambda: mux.get_client("openai", strategy="specific")
    yield lambda: mux.get_client("openai", strategy="fastest-please")
    yield lambda: mux.remove_key("openai", "missing")
    yield lambda: keymux.Multiplexer(max_concurrent_requests=0)
    yield lambda: keymux.Multiplexer(queue_size=-1)
    yield lambda: keymux.Multiplexer(timeout=-1)


def test_configuration_errors_never_show_the_key(logs: pytest.LogCaptureFixture) -> None:
    mux = keymux.Multiplexer()
    mux.add_openai_key("dup", CANARY)
    raised = 0
    for mistake in _config_mistakes(mux):
        with pytest.raises((keymux.KeymuxError, TypeError)) as info:
            mistake()
        assert_exception_clean(info.value)
        raised += 1
    assert raised == 22
    assert_mux_clean(mux)
    mux.close()


def test_env_problems_never_show_the_key(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"OPENAI_API_KEY={CANARY}\n"
        f"BROKEN LINE {CANARY}\n"
        f'GROQ_API_KEY="{CANARY}\n'
        f"OPENAI_API_KEY_2=\n"
        f"GEMINI_API_KEYS={CANARY},,{CANARY}\n"
        f"ANTHROPIC_API_KEY={CANARY} trailing\n"
    )
    env_file.chmod(0o644)
    mux = keymux.Multiplexer.from_env(dotenv_path=env_file, environ={})
    for problem in mux.env_problems:
        assert_clean(repr(problem), "repr(EnvProblem)")
        assert_clean(str(problem), "str(EnvProblem)")
    assert_mux_clean(mux)
    mux.close()
    # an unusable base URL is an error, not a problem: it must not show the value either
    with env_file.open("a", encoding="utf-8") as stream:
        stream.write(f"OPENAI_BASE_URL=not-a-url-{CANARY}\n")
    with pytest.raises(keymux.ConfigError, match="OPENAI_BASE_URL") as info:
        keymux.Multiplexer.from_env(dotenv_path=env_file, environ={})
    assert_exception_clean(info.value)


# --- Secret itself ----------------------------------------------------------------------------


def test_a_secret_masks_itself_in_text_and_bytes() -> None:
    secret = keymux.Secret(CANARY)
    echoed = f"proxy says: bad key {CANARY} (again: {CANARY})"
    assert secret.scrub(echoed) == f"proxy says: bad key {secret.masked} (again: {secret.masked})"
    assert secret.scrub(echoed.encode()) == (
        f"proxy says: bad key {secret.masked} (again: {secret.masked})".encode()
    )
    other = "nothing to hide, sk-other-0000000000000000"
    assert secret.scrub(other) is other  # untouched, not copied
    assert secret.scrub(other.encode()) == other.encode()
    assert keymux.Secret("").scrub("abc") == "abc"  # an empty key matches nothing
    assert keymux.Secret("").scrub(b"abc") == b"abc"


def test_secret_cannot_be_pickled_or_copied_into_the_open() -> None:
    secret = keymux.Secret(CANARY)
    assert secret.reveal() == CANARY  # the one accessor
    for attempt in (
        lambda: pickle.dumps(secret),
        lambda: pickle.dumps(secret, protocol=0),
        lambda: pickle.dumps({"key": secret}),
        lambda: copy.copy(secret),
        lambda: copy.deepcopy(secret),
        lambda: json.dumps(secret),
    ):
        try:
            result = attempt()
        except (TypeError, pickle.PicklingError, copy.Error) as exc:
            assert_exception_clean(exc)
        else:  # a copy is fine as long as it stays masked
            assert_clean(repr(result), "a copy of Secret")
            assert isinstance(result, keymux.Secret)
    spec_mux = keymux.Multiplexer()
    spec_mux.add_openai_key("k", CANARY)
    lane = spec_mux._core.dispatch.providers["openai"].lanes["k"]
    with pytest.raises((TypeError, pickle.PicklingError)) as info:
        pickle.dumps(lane.spec)
    assert_exception_clean(info.value)
    assert_clean(repr(vars(lane.spec)) if hasattr(lane.spec, "__dict__") else "", "vars(spec)")
    for attr in ("_value", "masked", "key_id"):
        if attr != "_value":
            assert_clean(repr(getattr(secret, attr)), f"Secret.{attr}")
    assert not hasattr(secret, "__dict__")
    spec_mux.close()


# --- the command line -------------------------------------------------------------------------


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A subprocess environment without the developer's own keys."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "COLUMNS": "200",
        "PYTHONUTF8": "1",
    }
    env.update(extra or {})
    return env


def _keymux(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keymux", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _canary_env_file(tmp_path: Path, mode: int) -> Path:
    env_file = tmp_path / "keys.env"
    env_file.write_text(
        f"OPENAI_API_KEY={CANARY}\n"
        f"GROQ_API_KEY_1={CANARY}\n"
        f"ANTHROPIC_API_KEY={CANARY}\n"
        f"GEMINI_API_KEYS={CANARY},{CANARY}\n"
        f"NOT A VALID LINE {CANARY}\n"
        f'OPENAI_API_KEY_7="{CANARY}\n'
    )
    env_file.chmod(mode)
    return env_file


def test_keymux_keys_lists_masked_keys_and_warns_about_a_readable_env_file(
    tmp_path: Path,
) -> None:
    env_file = _canary_env_file(tmp_path, 0o644)
    run = _keymux("keys", "--env-file", str(env_file), cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert_clean(out, "keymux keys output")
    for provider in PROVIDERS:
        assert provider in out
    assert "sk-...4680" in out  # the masked form
    assert "0644" in out
    assert "chmod 600" in out


def test_keymux_keys_on_a_private_env_file_has_no_permission_warning(tmp_path: Path) -> None:
    env_file = _canary_env_file(tmp_path, 0o600)
    run = _keymux("keys", "--env-file", str(env_file), cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert_clean(out, "keymux keys output")
    assert "chmod" not in out


def test_keymux_demo_writes_no_secret(tmp_path: Path) -> None:
    from keymux.cli._demo import DEMO_KEYS, fake_key

    json_out = tmp_path / "stats.json"
    run = _keymux("demo", "--requests", "24", "--json-out", str(json_out), cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    written = json_out.read_text()
    json.loads(written)
    secrets = {fake_key(provider, suffix) for provider, suffix, _, _ in DEMO_KEYS}
    for secret in secrets:
        middle = secret[len(secret) // 2 - 6 : len(secret) // 2 + 6]
        for text, where in ((out, "demo output"), (written, "demo JSON")):
            assert secret not in text, where
            assert middle not in text, (where, middle)


@pytest.fixture
def emulate(tmp_path: Path) -> Iterator[str]:
    """``keymux emulate`` that knows one key (not the canary): the canary is rejected."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keymux",
            "emulate",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--key",
            "openai:sk-known-0123456789abcdef",
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(root + "/_emulator/stats", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, "keymux emulate exited"
                assert time.monotonic() < deadline, "keymux emulate did not start"
                time.sleep(0.05)
        yield root
    finally:
        proc.terminate()
        proc.wait(10)


def test_keymux_check_with_a_rejected_canary_writes_no_secret(tmp_path: Path, emulate: str) -> None:
    env_file = tmp_path / "keys.env"
    env_file.write_text(f"OPENAI_API_KEY={CANARY}\n")
    env_file.chmod(0o600)
    json_out = tmp_path / "check.json"
    run = _keymux(
        "check",
        "--env-file",
        str(env_file),
        "--json-out",
        str(json_out),
        "--requests",
        "3",
        "--deadline",
        "20",
        "--openai-base-url",
        emulate + "/v1",
        cwd=tmp_path,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0, out  # the key was rejected
    assert_clean(out, "keymux check output")
    if json_out.exists():
        assert_clean(json_out.read_text(), "keymux check JSON")
    with urllib.request.urlopen(emulate + "/_emulator/stats", timeout=5) as resp:
        assert_clean(resp.read().decode(), "emulator stats endpoint")
