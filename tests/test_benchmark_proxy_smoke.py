"""``benchmarks/proxy.py --quick`` runs and prints its figures (no timing is asserted).

It starts ``keymux emulate``, ``keymux serve`` and a bare aiohttp forwarder as subprocesses on
free loopback ports, so this is end to end; the figures are information, never pass/fail here.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # for their shared `_common`
    spec = importlib.util.spec_from_file_location(f"keymux_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_proxy_quick(capsys: pytest.CaptureFixture[str]) -> None:
    proxy = _load("proxy")
    assert proxy.main(["--quick"]) == 0
    out = capsys.readouterr().out
    for mode in ("direct (baseline)", "aiohttp forwarder (reference)", "keymux serve"):
        assert len(re.findall(rf"^{re.escape(mode)}\s+(64|1)\s", out, re.MULTILINE)) == 2, mode
    assert re.search(r"^direct \(baseline\)\s+64\s+400\s+[\d,]+\s+1\.00x", out, re.MULTILINE)
    for figure in (
        "proxy req/s per core",
        "added p50 at 1 concurrent",
        "added p99 at 64 concurrent",
        "proxy RSS after the load",
        "time to ready",
    ):
        assert figure in out
    for line in (
        "throughput: ",
        "added p50 latency at 1 concurrent: ",
        "proxy RSS: ",
        "time to ready: ",
    ):
        assert re.search(rf"^(PASS|MISS)  {line}[\d.,]+", out, re.MULTILINE), line
    # every request of the run was answered by the proxy (warm-ups included)
    assert re.search(r"^answers counted by the proxy\s+[\d,]+$", out, re.MULTILINE)
