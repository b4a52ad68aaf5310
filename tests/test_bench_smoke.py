"""Smoke test of ``make bench``: the benchmark runs at the tiny size and reports every peer.

Never asserts timings: it checks that the run completes, prints the table with a row for every
peer and every target, writes its files into the given directory (not benchmarks/results), and
leaves nothing behind in /dev/shm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ARRAY_PEERS = [
    "np.copyto (limit)",
    "shared_memory array",
    "sharedzarr shm",
    "sharedzarr memory",
    "zarr MemoryStore",
    "zarr LocalStore (/dev/shm)",
    "LMDB (/dev/shm)",
    "Manager().dict()",
]
TABLE_PEERS = ["dict (in-process)", "sharedzarr Table", "LMDB (/dev/shm)", "Manager().dict()"]
WORKLOADS = ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)"]


def _bench_entries() -> set[str]:
    """What the benchmark may create in /dev/shm (sharedzarr's own sz.* are checked by conftest)."""
    try:
        return {n for n in os.listdir("/dev/shm") if "szbench" in n}
    except FileNotFoundError:
        return set()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """Run ``python -m benchmarks.run --size tiny --out DIR`` once for all tests here."""
    out = tmp_path_factory.mktemp("bench")
    before = _bench_entries()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--size", "tiny", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert _bench_entries() - before == set(), "the benchmark left files in /dev/shm"
    return proc, out


def _rows(table: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("| ")
    ]


def test_prints_every_peer_and_workload(tiny_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    proc, _ = tiny_run
    peers_seen = {r[1] for r in _rows(proc.stdout) if len(r) == 7}
    for peer in ARRAY_PEERS:
        assert peer in peers_seen, f"no row for {peer!r}"
    for peer in TABLE_PEERS:
        assert any(p.startswith(peer) for p in peers_seen), f"no (f) row for {peer!r}"
    for w in WORKLOADS:
        assert f"| {w} " in proc.stdout, f"no workload {w}"
    assert "## Targets" in proc.stdout


def test_every_reference_row_has_numbers(
    tiny_run: tuple[subprocess.CompletedProcess, Path],
) -> None:
    """The peers that need nothing of sharedzarr must measure (not error) in every workload."""
    _, out = tiny_run
    data = json.loads((out / "latest.json").read_text())
    errors = [r for r in data["rows"] if r["note"].startswith("error")]
    assert not [r for r in errors if not r["peer"].startswith("sharedzarr")], errors
    for r in data["rows"]:
        assert r["values"] or r["note"], r


def test_writes_results_into_out_dir(tiny_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    _, out = tiny_run
    md = (out / "latest.md").read_text()
    assert "## Machine" in md and "CPU:" in md and "numpy" in md and "lmdb" in md
    for peer in ARRAY_PEERS:
        assert f"| {peer} |" in md
    png = (out / "read_gbps.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    data = json.loads((out / "latest.json").read_text())
    assert data["size"] == "tiny"
    verdicts = {c["verdict"] for c in data["checks"]}
    assert verdicts <= {"PASS", "FAIL", "n/a"}
    assert not list(out.glob("*.tmp"))


def test_list_peers() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--list-peers"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed = proc.stdout.splitlines()
    for peer in ARRAY_PEERS + TABLE_PEERS:
        assert peer in listed
