"""Shared helpers for keymux's benchmarks.

* ``EmulatorProcess``: ``keymux emulate`` in a subprocess on a free loopback port (so its CPU is
  not counted as the client's), waited for until it answers, stopped with SIGTERM.
* CPU and memory: ``cpu()`` (this process, all threads), ``rss_kib()`` / ``peak_rss_kib()``
  (``/proc/self/status`` VmRSS / VmHWM, falling back to ``getrusage``), ``child_cpu()``.
* ``table()``: a plain aligned text table.

Benchmarks report ratios to a baseline measured in the same run and never fail on timing:
they print PASS/MISS as information and exit 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

__all__ = [
    "EmulatorProcess",
    "child_cpu",
    "cpu",
    "free_port",
    "machine",
    "median",
    "peak_rss_kib",
    "raise_fd_limit",
    "rss_kib",
    "table",
    "verdict",
]

HOST = "127.0.0.1"
#: the same chat body for every request of every benchmark
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
MODEL = "gpt-4o-mini"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft open-files limit toward ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- the emulator in a subprocess -----------------------------------------------------------


class EmulatorProcess:
    """``keymux emulate`` on a free loopback port, for the lifetime of a ``with`` block.

    ``extra`` are further CLI arguments (``--rpm``, ``--latency``, ...). With no ``--key`` the
    emulator accepts every key. ``root`` is ``http://127.0.0.1:PORT``; ``base_url("openai")`` is
    what ``add_openai_key(base_url=...)`` takes.
    """

    def __init__(self, *extra: str, startup_timeout: float = 30.0) -> None:
        self.extra = list(extra)
        self.startup_timeout = startup_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def root(self) -> str:
        return f"http://{HOST}:{self.port}"

    def base_url(self, provider: str = "openai") -> str:
        return self.root + ("/v1" if provider == "openai" else "")

    def start(self) -> EmulatorProcess:
        last = "no attempt"
        for _ in range(3):  # the free port may be taken between our probe and its bind
            self.port = free_port()
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
            cmd = [sys.executable, "-m", "keymux", "emulate", "--host", HOST]
            cmd += ["--port", str(self.port), *self.extra]
            env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1", TERM="dumb")
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C in the terminal goes to us; we stop it
            )
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last = f"exited with {self.proc.returncode}: {self._output()[-600:]}"
                    break
                if self._answers():
                    return self
                time.sleep(0.05)
            else:
                last = f"did not answer within {self.startup_timeout:g} s"
            self.stop()
        raise RuntimeError(f"keymux emulate did not start: {last}")

    def _answers(self) -> bool:
        try:
            self.get("/_emulator/stats", timeout=1.0)
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return True

    def get(self, path: str, timeout: float = 5.0) -> Any:
        """GET a control endpoint of the emulator (no proxies: loopback only)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.root + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get("/_emulator/stats")
        return data

    def cpu_seconds(self) -> float:
        """The emulator process's CPU time so far (user + system)."""
        return child_cpu(self.proc.pid) if self.proc is not None else 0.0

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return bytes(self._log.read()).decode("utf-8", "replace")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --- CPU and memory -------------------------------------------------------------------------


def cpu() -> float:
    """CPU seconds of this process, every thread, user + system."""
    return time.process_time()


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def child_cpu(pid: int) -> float:
    """CPU seconds (user + system) of another process, from /proc (0.0 where unavailable)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib() -> int:
    """Resident set size now, KiB."""
    value = _status_kib("VmRSS")
    if value is None:
        value = peak_rss_kib()
    return value


def peak_rss_kib() -> int:
    """Peak resident set size so far, KiB."""
    value = _status_kib("VmHWM")
    if value is None:
        ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        value = ru // 1024 if sys.platform == "darwin" else ru
    return value


# --- reporting ------------------------------------------------------------------------------


def machine() -> str:
    """CPUs and load average, printed with the results: other work on the machine skews them."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return f"{os.cpu_count()} CPUs"
    return (
        f"{os.cpu_count()} CPUs, load average {load:.2f} at start, Python {sys.version.split()[0]}"
    )


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> str:
    """A plain text table; numbers right-aligned, text left-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    numeric = [
        all(_is_number(row[i]) for row in cells[1:]) if len(cells) > 1 else False
        for i in range(len(headers))
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            row[i].rjust(widths[i]) if numeric[i] else row[i].ljust(widths[i])
            for i in range(len(row))
        ]
        return "  ".join(parts).rstrip()

    out = []
    if title:
        out.append(title)
    out.append(line(cells[0]))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(row) for row in cells[1:])
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").rstrip("x%"))
    except ValueError:
        return text == "n/a"
    return True
