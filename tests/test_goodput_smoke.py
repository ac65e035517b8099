"""Smoke test of ``benchmarks/goodput.py``: its quick mode runs end to end and prints its tables.

No timing is asserted (the machine may be busy); only that every scenario ran, the table has its
columns, and the script exits 0. The emulator runs in a subprocess on 127.0.0.1.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "goodput.py"


@pytest.mark.e2e
def test_goodput_quick_mode_prints_the_tables() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--requests", "40", "--no-litellm"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:] + out[-2000:]
    for header in ("row", "goodput", "429s served", "failed", "CPU ms/req", "wall s", "verdict"):
        assert header in out, header
    for scenario in ("== configured:", "== learned:", "== mixed:"):
        assert scenario in out, scenario
    for row in ("keymux async rate-aware", "keymux sync rate-aware", "naive round-robin"):
        assert row in out, row
    # every row that ran answered every request (40 each) or says why not
    assert "Traceback" not in proc.stderr
