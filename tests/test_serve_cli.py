"""``keymux serve`` as a subprocess: start-up, refusals (one line, exit 2), SIGTERM with a
stream in flight (it completes, exit 0), ``--workers``. Synchronised on the lines the server
prints and on a gated upstream, never on sleeps."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from conftest import free_port, minimal_env
from serve_support import BEARER, HI, TOKEN, GatedUpstream, OpenStream, parse_sse, request

pytestmark = pytest.mark.e2e

KEY = "sk-cli-000000000000000000000001"


@pytest.fixture
def upstream() -> Iterator[GatedUpstream]:
    gated = GatedUpstream()
    yield gated
    gated.stop()


def _env(upstream: GatedUpstream | None = None, **extra: str) -> dict[str, str]:
    env = {"KEYMUX_PROXY_TOKEN": TOKEN, "OPENAI_API_KEY": KEY}
    if upstream is not None:
        env["OPENAI_BASE_URL"] = upstream.base_url()
    env.update(extra)
    return minimal_env(env)


def _serve(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "keymux", "serve", *args],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _line(stream: IO[str] | None, marker: str) -> str:
    """Block until the server prints a line holding ``marker``; every line so far."""
    assert stream is not None
    seen = ""
    while marker not in seen:
        line = stream.readline()
        if not line:
            raise AssertionError(f"the server ended before {marker!r}:\n{seen}")
        seen += line
    return seen


def _refused(tmp_path: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "keymux", "serve", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # one line, no traceback
    return lines[0]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_sigterm_lets_a_stream_in_flight_finish(
    tmp_path: Path, upstream: GatedUpstream, procs: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    proc = _serve(tmp_path, _env(upstream), "--port", str(port), "--grace", "20")
    procs.append(proc)
    _line(proc.stderr, "listening on")
    root = f"http://127.0.0.1:{port}"
    stream = OpenStream(
        root + "/v1/chat/completions", {"model": "gpt-4o", "messages": HI, "stream": True}
    )
    try:
        assert stream.status == 200
        stream.until(b"first ")  # in flight: the upstream holds the rest
        proc.send_signal(signal.SIGTERM)
        _line(proc.stderr, "stopping: no longer listening; 1 request(s) in flight")
        with pytest.raises(ConnectionRefusedError):  # new callers are turned away
            request("GET", root + "/healthz", headers={})
        assert proc.poll() is None  # still finishing the stream
        upstream.gate.set()
        data, cut = stream.rest()
    finally:
        stream.close()
    assert not cut
    events = parse_sse(data)
    assert events[-1] == (None, "[DONE]")
    text = "".join(
        json.loads(d)["choices"][0]["delta"].get("content") or "" for _, d in events[:-1]
    )
    assert text == "first second"
    assert proc.wait(timeout=30) == 0
    assert "stopped" in (proc.stderr.read() if proc.stderr else "")


def test_sigint_with_nothing_in_flight_exits_0(
    tmp_path: Path, upstream: GatedUpstream, procs: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    proc = _serve(tmp_path, _env(upstream), "--port", str(port))
    procs.append(proc)
    _line(proc.stderr, "listening on")
    answer = request("GET", f"http://127.0.0.1:{port}/healthz", headers={})
    assert answer.status == 200
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0


def test_flags_from_the_environment(
    tmp_path: Path, upstream: GatedUpstream, procs: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    token_file = tmp_path / "tokens"
    token_file.write_text("# callers\nfrom-file-token-0123\n")
    env = _env(
        upstream,
        KEYMUX_PORT=str(port),
        KEYMUX_TOKEN_FILE=str(token_file),
        KEYMUX_MAX_BODY="1k",
    )
    proc = _serve(tmp_path, env)
    procs.append(proc)
    lines = _line(proc.stderr, "listening on")
    assert f"127.0.0.1:{port}" in lines
    assert "2 token(s)" in lines
    root = f"http://127.0.0.1:{port}"
    ok = request("GET", root + "/metrics", headers={"Authorization": "Bearer from-file-token-0123"})
    assert ok.status == 200
    big = request("POST", root + "/v1/chat/completions", {"messages": [{"content": "x" * 2000}]})
    assert big.status == 413
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        ((), {"KEYMUX_PROXY_TOKEN": ""}, "no proxy token: set KEYMUX_PROXY_TOKEN"),
        (("--no-auth", "--host", "0.0.0.0"), {"KEYMUX_PROXY_TOKEN": ""}, "only on a loopback"),
        (("--state", "mongodb://:pw@localhost:27017"), {}, "state URL scheme mongodb:// is not"),
        (("--port", "abc"), {}, "argument --port: needs a port number, got 'abc'"),
        (("--max-body", "lots"), {}, "argument --max-body: needs a size"),
        (("--workers", "0"), {}, "argument --workers: needs a whole number of 1 or more"),
        (("--grace", "-1"), {}, "argument --grace: needs zero or more seconds"),
        (("--token-file", "/nonexistent/tokens"), {}, "--token-file /nonexistent/tokens: cannot"),
        (("--workers", "2", "--port", "0"), {}, "--workers above 1 needs a fixed --port"),
        (
            (),
            {"KEYMUX_PORT": "99999"},
            "99999 is not a port: use 1-65535 (0 picks a free one) (from",
        ),
        ((), {"OPENAI_API_KEY": ""}, "no API keys found"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], extra: dict[str, str], message: str
) -> None:
    env = _env(**extra)
    if env.get("OPENAI_API_KEY") == "":
        del env["OPENAI_API_KEY"]
    line = _refused(tmp_path, env, *args)
    assert message in line
    assert line.startswith("keymux serve: error: ")
    assert TOKEN not in line
    assert "pw@" not in line


def test_port_in_use_is_one_line(tmp_path: Path, upstream: GatedUpstream) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _refused(tmp_path, _env(upstream), "--port", str(port))
    assert "the port is in use" in line


def test_help_names_every_flag_and_its_variable(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "keymux", "serve", "--help"],
        env=minimal_env({"COLUMNS": "200"}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    out = " ".join(done.stdout.split())
    for flag, variable in (
        ("--host", "KEYMUX_HOST"),
        ("--port", "KEYMUX_PORT"),
        ("--token-file", "KEYMUX_TOKEN_FILE"),
        ("--no-auth", "KEYMUX_NO_AUTH"),
        ("--grace", "KEYMUX_GRACE"),
        ("--max-body", "KEYMUX_MAX_BODY"),
        ("--workers", "KEYMUX_WORKERS"),
        ("--state", "KEYMUX_STATE"),
    ):
        assert flag in out
        assert variable in out
    assert "(default: 127.0.0.1)" in out
    assert "(default: 8787)" in out


@pytest.mark.skipif(not hasattr(__import__("socket"), "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_workers_share_one_port(
    tmp_path: Path, upstream: GatedUpstream, procs: list[subprocess.Popen[str]]
) -> None:
    upstream.gate.set()
    port = free_port()
    proc = _serve(tmp_path, _env(upstream), "--port", str(port), "--workers", "2")
    procs.append(proc)
    _line(proc.stderr, "with 2 workers")
    root = f"http://127.0.0.1:{port}"
    body = {"model": "gpt-4o", "messages": HI, "stream": True}
    for _ in range(4):
        answer = request("POST", root + "/v1/chat/completions", body, headers=BEARER)
        assert answer.status == 200
        assert answer.headers["x-keymux-key"] == "OPENAI_API_KEY"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    if os.path.exists("/proc"):  # the workers are gone too
        assert not [p for p in os.listdir("/proc") if p.isdigit() and _parent(p) == str(proc.pid)]


@pytest.mark.skipif(not hasattr(__import__("socket"), "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_workers_share_state_on_redis(
    tmp_path: Path, upstream: GatedUpstream, procs: list[subprocess.Popen[str]], redis_url: str
) -> None:
    """``--state redis://... --workers 2``: both workers count in Redis, under one key."""
    import redis

    upstream.gate.set()
    port = free_port()
    state = redis_url.replace("redis://", "redis://:@", 1)  # an empty password is fine
    proc = _serve(tmp_path, _env(upstream), "--port", str(port), "--workers", "2", "--state", state)
    procs.append(proc)
    lines = _line(proc.stderr, "with 2 workers")
    assert "state shared at redis://:***@127.0.0.1:" in lines
    root = f"http://127.0.0.1:{port}"
    for _ in range(6):
        answer = request("POST", root + "/v1/chat/completions", {"messages": HI}, headers=BEARER)
        assert answer.status == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    prefix = redis_url.rsplit("prefix=", 1)[1]
    client = redis.Redis.from_url(redis_url.split("?")[0])
    counters = [client.hgetall(k) for k in client.scan_iter(match=f"{prefix}:*:n")]
    client.close()
    assert len(counters) == 1  # one key, whichever worker sent with it
    assert int(counters[0][b"successes"]) == 6


def _parent(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[1]
    except (OSError, IndexError):
        return ""


def test_connection_refused_after_exit_is_not_a_leak(tmp_path: Path) -> None:
    """A server that never started leaves nothing listening."""
    port = free_port()
    _refused(tmp_path, _env(KEYMUX_PROXY_TOKEN=""), "--port", str(port))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    with pytest.raises(ConnectionRefusedError):
        conn.request("GET", "/healthz")
    conn.close()
