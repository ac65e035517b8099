"""Smoke test of ``benchmarks/goodput.py``: its quick mode runs end to end and prints its tables.

No timing is asserted (the machine may be busy); only that every scenario ran with the rows it
promises, and every row answered every request (40 each; below the free keys' limit the tiers rows' paid keys answer none) with none failed, and the script exits
0. The emulator runs in a subprocess on 127.0.0.1. (429 counts are not asserted either: the
quick subset includes Gemini without rpm, whose limits are learned from 429s.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "goodput.py"
REQUESTS = 40
HEADERS = ["row", "goodput", "ok", "429s", "failed", "CPU ms/req", "allows", "verdict"]

#: scenario -> rows ``--quick --no-litellm`` runs in it (at least these)
EXPECTED_ROWS = {
    "matrix": [
        "sliding c=5 10-30ms async openai",
        "sliding c=5 10-30ms async gemini",
        "sliding c=5 10-30ms sync openai",
        "sliding c=5 10-30ms sync gemini",
    ],
    "tiers": [
        "sliding offered 30/s async openai tiers",
        "sliding offered 30/s sync openai tiers",
        "sliding offered 60/s async openai tiers",
        "sliding offered 60/s sync openai tiers",
    ],
    "reference": [
        "naive round-robin + retry-after",
        "keymux async (same scenario)",
    ],
}


def parse_tables(out: str) -> dict[str, list[dict[str, str]]]:
    """The benchmark's tables: ``== <scenario>: ... ==``, a header line, a line of dashes that
    marks each column's width, then one line per row until a blank line."""
    tables: dict[str, list[dict[str, str]]] = {}
    lines = out.splitlines()
    for i, line in enumerate(lines):
        title = re.match(r"== (\w+): .* ==$", line)
        if title is None:
            continue
        header, dashes = lines[i + 1], lines[i + 2]
        spans = [(m.start(), m.end()) for m in re.finditer(r"-+", dashes)]
        assert [header[a:b].strip() for a, b in spans] == HEADERS, header
        rows = []
        for row in lines[i + 3 :]:
            if not row.strip() or row.startswith(("  note:", "  tiers:")):
                break
            cells = [row[a:b].strip() for a, b in spans[:-1]] + [row[spans[-1][0] :].strip()]
            rows.append(dict(zip(HEADERS, cells, strict=True)))
        tables[title[1]] = rows
    return tables


def test_parse_tables_reads_the_benchmarks_format() -> None:
    out = (
        "\n== matrix: 4 keys x 20 requests per 1 s window ==\n"
        "row                   goodput  ok      429s  failed  CPU ms/req  allows  verdict\n"
        "--------------------  -------  --  --------  ------  ----------  ------  -------\n"
        "sliding c=5 x y         1.067  40  0 (0.0%)       0       0.403     yes  PASS\n"
        "naive round-robin      16.557  38  2 (5.0%)       2       0.218      no  MISS failures\n"
        "\nrows the concurrency allows: 1, PASS 1\n"
    )
    assert parse_tables(out) == {
        "matrix": [
            dict(
                zip(
                    HEADERS,
                    ["sliding c=5 x y", "1.067", "40", "0 (0.0%)", "0", "0.403", "yes", "PASS"],
                    strict=True,
                )
            ),
            dict(
                zip(
                    HEADERS,
                    [
                        "naive round-robin",
                        "16.557",
                        "38",
                        "2 (5.0%)",
                        "2",
                        "0.218",
                        "no",
                        "MISS failures",
                    ],
                    strict=True,
                )
            ),
        ]
    }


@pytest.mark.e2e
def test_goodput_quick_mode_answers_every_request_of_every_row() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--requests", str(REQUESTS), "--no-litellm"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:] + out[-2000:]
    assert "Traceback" not in proc.stderr
    tables = parse_tables(out)
    assert set(tables) == set(EXPECTED_ROWS)
    for name, expected in EXPECTED_ROWS.items():
        ran = [row["row"] for row in tables[name]]
        assert set(expected) <= set(ran), f"{name}: expected rows {expected}, got {ran}"
    for name, rows in tables.items():
        for row in rows:
            where = f"{name}: {row['row']}"
            assert row["verdict"] != "skipped", where
            assert row["ok"] == str(REQUESTS), f"{where} answered {row['ok']} of {REQUESTS}"
            assert row["failed"] == "0", f"{where}: {row['failed']} failed"
    assert "note:" not in out  # the benchmark's note lists the errors a row met
    # below the free keys' limit, the paid keys answer nothing
    shares = dict(re.findall(r"^  tiers: (.+?): paid keys' share ([\d.]+)", out, re.MULTILINE))
    assert set(shares) == set(EXPECTED_ROWS["tiers"])
    assert shares["sliding offered 30/s async openai tiers"] == "0.000"
    assert shares["sliding offered 30/s sync openai tiers"] == "0.000"
