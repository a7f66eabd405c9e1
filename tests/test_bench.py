"""`make bench` is not part of the tests (it takes minutes); its scale part is run here small, so a
change to the store that breaks it, or a fixture that leaves out what a real store holds, shows."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _scale(count: int, cache: Path) -> tuple[dict, str]:
    run = subprocess.run([sys.executable, "-m", "benchmarks.scale", str(count), "--cache", str(cache)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout), run.stderr


def test_the_scale_benchmark_measures_a_store_like_a_real_one(tmp_path):
    # A fixture cached by an older version of the benchmark (no audit rows) is built again.
    stale = tmp_path / "scale-2000"
    stale.mkdir()
    (stale / "COMPLETE").write_text("2000")
    result, progress = _scale(2000, tmp_path)
    assert "rebuilding" in progress

    assert result["certificates"] == 2000
    assert result["reminders_due"] == 20  # 1% expire within the reminder window
    with sqlite3.connect(stale / "ca.sqlite3") as db:
        unaudited = db.execute("SELECT count(*) FROM certificates c WHERE NOT EXISTS (SELECT 1 FROM audit_log a"
                               " WHERE a.serial = c.serial AND a.action = 'issue')").fetchone()[0]
    assert unaudited == 0, "every certificate of a real store has its issuance in the audit log"
    assert result["audit_rows"] > result["certificates"]
    assert {"newest", "action=revoke + the busy actor", "serial"} <= set(result["audit_ms_by_query"])
    assert result["audit_ms"] == max(result["audit_ms_by_query"].values())
    assert result["search_ms"] == max(result["search_ms_by_query"].values())
    # A complete fixture of this version is used as it is: the second run signs nothing.
    again, progress = _scale(2000, tmp_path)
    assert "using the cached fixture" in progress and "fixture built" not in progress
    assert again["certificates"] == 2000
