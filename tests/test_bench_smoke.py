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
from typing import Any

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
WORKLOADS = ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)", "(g)", "(h)", "(i)", "(j)", "(k)", "(l)"]
HANDOFF_PEERS = ["sharedzarr Table.writer()", "LMDB (/dev/shm) write txn", "fcntl.flock (blocking)"]
APPEND_PEERS = [
    "shared_memory array np.copyto(buf[n], frame)",
    "sharedzarr shm a.append(frame)",
    "LMDB (/dev/shm) txn.put(next key, frame)",
]
LOADER_PEERS = ["shared_memory array", "sharedzarr shm", "multiprocessing.Queue", "LMDB (/dev/shm)"]
#: new workload -> peers (label prefixes) that must have a row in it
NEW_ROWS = {
    "h.batch": ["shared_memory array", "sharedzarr shm", "LMDB (/dev/shm)"],
    "h.write_w": ["np.copyto (limit)", "shared_memory array", "sharedzarr shm", "LMDB (/dev/shm)"],
    "h.mem_a": ["shared_memory array", "sharedzarr shm", "LMDB (/dev/shm)"],
    "h.mem_b": ["shared_memory array", "sharedzarr shm", "LMDB (/dev/shm)"],
    **{
        f"i.{m}_{k}": ["shared_memory array", "sharedzarr shm", "LMDB (/dev/shm)"]
        for m in ("w1", "w2", "scale")
        for k in "abw"
    },
    "j.p50": HANDOFF_PEERS,
    "j.p99": HANDOFF_PEERS,
    "k.append": APPEND_PEERS,
    "l.batch": LOADER_PEERS,
    "l.row": ["shared_memory array", "sharedzarr shm", "LMDB (/dev/shm)"],
}


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
    assert "## Read targets" in proc.stdout and "## Write targets" in proc.stdout


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
    for plot in ("read_gbps.png", "write_gbps.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG"), plot
    assert "## Write targets" in md and "## Data-loader targets" in md
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
    for peer in ARRAY_PEERS + TABLE_PEERS + HANDOFF_PEERS + APPEND_PEERS + LOADER_PEERS:
        assert peer in listed


def test_one_row_per_peer_and_workload(
    tiny_run: tuple[subprocess.CompletedProcess, Path],
) -> None:
    """Taking turns still gives one row per peer and workload, with every repetition."""
    _, out = tiny_run
    data = json.loads((out / "latest.json").read_text())
    keys = [(r["workload"], r["peer"]) for r in data["rows"]]
    assert len(keys) == len(set(keys)), "a peer has two rows for one workload"
    sz = {r["workload"]: r for r in data["rows"] if r["peer"] == "sharedzarr shm"}
    for w in ("a.write", "a.read", "a.win_aligned", "b.chunk_read", "c.read2", "d.attach"):
        assert len(sz[w]["values"]) == 2, sz[w]  # tiny: 2 repetitions
    for w in ("h.batch", "h.write_w", "i.w1_a", "i.w2_b", "i.scale_w"):
        assert len(sz[w]["values"]) == 2 or sz[w]["note"], sz[w]


def test_new_workloads_have_a_row_for_every_peer(
    tiny_run: tuple[subprocess.CompletedProcess, Path],
) -> None:
    """The write, hand-off, append and data-loader workloads report every peer, with numbers
    (or, for sharedzarr, an error note), and their targets are checked."""
    _, out = tiny_run
    data = json.loads((out / "latest.json").read_text())
    for key, peers in NEW_ROWS.items():
        rows = [r for r in data["rows"] if r["workload"] == key]
        for peer in peers:
            found = [r for r in rows if r["peer"].startswith(peer)]
            assert found, f"no {key} row for {peer!r}"
            assert found[0]["values"] or found[0]["note"], found[0]
    groups = {c["group"] for c in data["checks"]}
    assert groups == {"read", "write", "loader"}
    targets = " ".join(c["target"] for c in data["checks"])
    for words in ("hand-off", "append", "2 writers", "bulk insert", "rewrites", "a[idx]", "a[i]"):
        assert words in targets, words
    # the data loader says which batch read sharedzarr used
    sz_batch = [r for r in data["rows"] if r["workload"] == "l.batch" and "sharedzarr" in r["peer"]]
    assert sz_batch[0]["peer"].split(": ", 1)[1] in (
        "a[idx]",
        "np.stack([a[int(i)] for i in idx]) fallback",
    )
    # the lock hand-off produced latencies, not nonsense
    for r in data["rows"]:
        if r["workload"].startswith("j.") and r["values"]:
            assert all(v > 0 for v in r["values"]), r


def test_lmdb_opens_at_its_best(tmp_path: Path) -> None:
    """LMDB runs with writemap, map_async and no syncs, as on tmpfs it should."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.peers import _lmdb_close, _lmdb_open
    finally:
        sys.path.remove(str(ROOT))
    env = _lmdb_open(str(tmp_path / "env"), 1 << 20)
    try:
        flags = env.flags()
        assert flags["writemap"] and flags["map_async"]
        assert not flags["sync"] and not flags["metasync"]
    finally:
        _lmdb_close(env)


def _bench_modules() -> tuple[Any, Any, Any]:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import run
        from benchmarks.config import get_config
        from benchmarks.report import Results
    finally:
        sys.path.remove(str(ROOT))
    return run, get_config, Results


def test_peers_take_turns_workload_by_workload() -> None:
    """Every peer runs one repetition of a workload before any runs its next one; the
    order reverses every pass; a workload starts when no peer waits for an earlier one."""
    run, _, _ = _bench_modules()
    log: list[tuple[str, str, int]] = []

    def peer(name: str, steps: list[tuple[str, int]]) -> Any:
        log.append((name, "set-up", 0))
        for key, reps in steps:
            for rep in range(reps):
                yield key
                log.append((name, key, rep))

    run._take_turns(
        [
            peer("p", [("a.write", 2), ("a.read", 2)]),
            peer("q", [("a.read", 2)]),  # no write: waits for p's writes
            peer("r", [("a.write", 2), ("a.read", 2), ("b.read", 1)]),
        ]
    )
    assert log[:3] == [("p", "set-up", 0), ("q", "set-up", 0), ("r", "set-up", 0)]
    assert log[3:] == [
        ("p", "a.write", 0),
        ("r", "a.write", 0),
        ("r", "a.write", 1),
        ("p", "a.write", 1),
        ("p", "a.read", 0),
        ("q", "a.read", 0),
        ("r", "a.read", 0),
        ("r", "a.read", 1),
        ("q", "a.read", 1),
        ("p", "a.read", 1),
        ("r", "b.read", 0),
    ]


def test_results_add_joins_and_failures_win() -> None:
    """Values added again join the row; a failure replaces the values and stays."""
    _, get_config, Results = _bench_modules()
    res = Results(get_config("tiny"))
    res.add("a.read", "p", "other", [1.0])
    res.add("a.read", "p", "other", [3.0, 2.0])
    assert res.get("a.read", "p").values == [1.0, 3.0, 2.0]
    assert res.median("a.read", "p") == 2.0
    res.note("a.read", "p", "other", "error: boom")
    res.add("a.read", "p", "other", [5.0])
    row = res.get("a.read", "p")
    assert row.values == [] and row.note == "error: boom"
    assert len([r for r in res.rows if r.workload == "a.read"]) == 1
