"""Smoke test of bench (m), the reader under a back-to-back writer: it runs with real
spawned processes, every read is a snapshot (no mixed read), and it writes its report.
Never asserts a time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_snapshot_bench_runs_and_reads_are_whole(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.snapshot", "--reads", "5", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "snapshot.json").read_text())
    assert [row["reader"] for row in rows] == [
        'mode="r+"',
        'mode="r"',
        'mode="r+", get_slice(out=buf)',
    ]
    assert all(row["mixed_reads"] == 0 for row in rows)
    assert "p99 / quiet" in (tmp_path / "snapshot.md").read_text()
