"""Real ``redis-server`` processes for the shared-state tests (Debian's package).

``start_redis`` runs one on a free loopback port in a temporary directory, with nothing
persisted (``--save "" --appendonly no``), and waits (a bounded poll) until it answers PING.
It is stopped, paused and resumed by its PID only. ``start_cluster`` makes a Redis Cluster of
three masters the same way.

Outside CI (``CI`` unset) a missing ``redis-server`` skips the test with a reason that says
how to install it; in CI it fails: CI installs it (``scripts/system-deps.sh``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import free_port

INSTALL_HINT = "install redis-server (Debian: apt-get install redis-server; scripts/system-deps.sh)"


def redis_binary(name: str = "redis-server") -> str:
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed: the shared-state tests need it; {INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _ask(port: int, command: bytes, timeout: float = 0.5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(command)
        return sock.recv(65536)


def wait_answering(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server on {port} exited with {proc.returncode}")
        try:
            if _ask(port, b"PING\r\n").startswith(b"+PONG"):
                return
        except OSError as exc:
            last = exc
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on {port} did not answer within {timeout} s: {last}")


@dataclass
class RedisServer:
    """One ``redis-server``; ``url(prefix)`` is a state URL for it."""

    directory: Path
    port: int = 0
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False

    def start(self) -> RedisServer:
        if not self.port:
            self.port = free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        wait_answering(self.port, self.proc)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, prefix: str, **query: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"redis://127.0.0.1:{self.port}/0?prefix={prefix}{extra}"

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            self.paused = False
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        """Stopped and started again on the same port, empty (nothing was persisted)."""
        self.stop()
        self.start()

    def client(self) -> object:
        """A plain synchronous redis-py client, for looking inside."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


@dataclass
class RedisCluster:
    """Three masters, no replicas."""

    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port of at most 55535 whose cluster bus port (+10000) is free too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 55000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def start_cluster(directory: Path, masters: int = 3) -> RedisCluster:
    cli = redis_binary("redis-cli")
    cluster = RedisCluster()
    try:
        for i in range(masters):
            node = RedisServer(
                directory / f"node{i}",
                port=cluster_port(),
                extra=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{i}.conf",
                    "--cluster-node-timeout",
                    "2000",
                ),
            )
            cluster.nodes.append(node.start())
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in cluster.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while True:
            states = [_ask(n.port, b"CLUSTER INFO\r\n") for n in cluster.nodes]
            if all(b"cluster_state:ok" in s for s in states):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become ok within 20 s")
            time.sleep(0.05)
    except BaseException:
        cluster.stop()
        raise
    return cluster
