"""bench/ddp_teardown.py: it launches both kinds of job and writes its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "ddp_teardown.py"


def test_one_job_of_each_kind_is_counted(tmp_path: Path) -> None:
    out = tmp_path / "teardown.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--runs", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = json.loads(out.read_text())
    assert {mode: row["runs"] for mode, row in table["rows"].items()} == {"old": 1, "new": 1}
    for row in table["rows"].values():
        assert 0 <= row["aborted"] <= 1 and len(row["first_messages"]) == row["aborted"]
