"""The benchmarks' ``--quick`` modes run and print their tables (no timing is asserted).

Each benchmark starts ``keymux emulate`` in a subprocess on a free loopback port, so these are
end-to-end; the figures themselves are information, never a pass/fail condition here.
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


def test_common_table_aligns_numbers_and_text() -> None:
    common = _load("_common")
    text = common.table(["name", "ms"], [["a", 1.5], ["bbb", 12.25]], title="t")
    lines = text.splitlines()
    assert lines[0] == "t"
    assert lines[1].split() == ["name", "ms"]
    assert lines[3].startswith("a  ")
    assert lines[3].endswith("1.50")
    assert lines[4].endswith("12.2")
    assert common.verdict(True) == "PASS"
    assert common.verdict(False) == "MISS"


def test_overhead_quick(capsys: pytest.CaptureFixture[str]) -> None:
    overhead = _load("overhead")
    assert overhead.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "client CPU per request" in out
    for mode in ("aiohttp (baseline)", "keymux async", "keymux sync", "httpx2 (reference)"):
        assert re.search(rf"^{re.escape(mode)}\s", out, re.MULTILINE), mode
    assert re.search(r"^aiohttp \(baseline\)\s+[\d.]+\s+1\.00x", out, re.MULTILINE)
    for mode in ("async", "sync"):
        # each event loop measured (asyncio, and uvloop where it is installed) gets its verdict
        assert re.search(
            rf"^(PASS|MISS)  keymux {mode} \(asyncio\): [\d.]+x plain aiohttp", out, re.MULTILINE
        )


def test_scale_quick(capsys: pytest.CaptureFixture[str]) -> None:
    scale = _load("scale")
    assert scale.main(["--quick"]) == 0
    out = capsys.readouterr().out
    for title in ("1. lane choice", "2. end to end", "3. memory per waiting", "4. soak"):
        assert title in out
    for keys in ("10", "100", "1,000"):
        assert re.search(rf"^\s*{keys}\s+[\d.,]+\s+[\d.,]+$", out, re.MULTILINE), keys
    assert re.search(r"^(PASS|MISS)  round_robin: [\d.]+ µs/req at 1,000 keys", out, re.M)
    assert re.search(r"^(PASS|MISS)  [\d,]+ bytes per waiting request", out, re.MULTILINE)
    assert re.search(r"^(PASS|MISS)  memory across the soak", out, re.MULTILINE)
    # the end-to-end rows and the soak answered every request
    assert re.search(r"^keymux, 4 keys\s+300\s+20\s+280\s.*none$", out, re.MULTILINE)
    assert re.search(r"^keymux, 40 keys\s+300\s+200\s+100\s.*none$", out, re.MULTILINE)
    assert len(re.findall(r"^aiohttp \(baseline\)\s+300\s.*1\.00x.*none$", out, re.M)) == 2
    assert "errors: none" in out


def test_multiproc_quick(capsys: pytest.CaptureFixture[str]) -> None:
    multiproc = _load("multiproc")
    assert multiproc.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^memory://\s+[\d.]+\s+-?[\d.]+\s+\d+", out, re.MULTILINE)
    if "redis:// rows are skipped" in out:
        return
    for row in ("redis://", "redis://, key 0 revoked halfway", "redis://, Redis restarted halfway"):
        assert re.search(rf"^{re.escape(row)}\s+[\d.]+\s+-?[\d.]+\s+\d+", out, re.M), row
    assert re.search(r"^(PASS|MISS)  redis://: goodput [\d.]+", out, re.MULTILINE)
    assert re.search(r"^(PASS|MISS)  revoked key: \d+ requests across 4 processes", out, re.M)
    assert re.search(r"^(PASS|MISS)  Redis restart: \d+ of \d+ answered, 0 failed", out, re.M)
    assert "per-attempt cost" in out
    assert re.search(r"^redis://\s+[\d.]+\s+1\.000\s", out, re.MULTILINE)
