"""`sharedzarr import` that is interrupted: SIGTERM removes the partial table; SIGKILL leaves
an orphan (not a persistent table) that `ls` shows as such and `gc` removes; only a complete
import is persistent.  Real subprocesses, real signals."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

zarr = pytest.importorskip("zarr")

from sharedzarr.storage import shm  # noqa: E402
from sharedzarr.storage.shm import table_exists  # noqa: E402

# the importing child: the real CLI, slowed down per chunk so the test can hit it mid-way
CHILD = """
import sys, time
import sharedzarr._export as E
from sharedzarr import cli
slow = E._is_fill
def is_fill(block, fill):
    time.sleep(0.002)
    return slow(block, fill)
E._is_fill = is_fill
sys.exit(cli.main(["import", "--no-progress", sys.argv[1], sys.argv[2]]))
"""


def _source(tmp_path: Path) -> Path:
    path = tmp_path / "src.zarr"
    z = zarr.create_array(str(path), shape=(400, 400), chunks=(10, 10), dtype="float64")
    z[:] = 1.0  # 1600 chunks
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sharedzarr", *args], capture_output=True, text=True, timeout=60
    )


def _start(tmp_path: Path, name: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(_source(tmp_path)), name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not table_exists(name):  # the table exists once the copy has started
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "the import never started"
        time.sleep(0.01)
    time.sleep(0.3)  # some chunks in, most not
    return p


def _state(name: str) -> dict:
    r = _cli("ls", "--json", name)
    assert r.returncode == 0, r.stderr
    docs = [d for d in json.loads(r.stdout) if d["name"] == name]
    assert len(docs) == 1, r.stdout
    return docs[0]


def test_sigterm_removes_the_partial_import(tmp_path: Path, cleanup: list[str]) -> None:
    name = f"imp-{secrets.token_hex(4)}"
    cleanup.append(name)
    p = _start(tmp_path, name)
    assert _state(name)["persistent"] is False  # not persistent while incomplete
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (out, err)
    assert not table_exists(name)
    assert not [f for f in os.listdir("/dev/shm") if f.startswith(f"sz.{name}.")]


def test_a_killed_import_is_an_orphan_that_gc_removes(tmp_path: Path, cleanup: list[str]) -> None:
    name = f"imp-{secrets.token_hex(4)}"
    cleanup.append(name)
    p = _start(tmp_path, name)
    p.kill()
    p.communicate(timeout=60)
    try:
        doc = _state(name)
        assert doc["state"] == "orphaned" and doc["persistent"] is False, doc
        r = _cli("gc", "--json", name)
        assert r.returncode == 0, r.stderr
        assert name in json.loads(r.stdout)["removed"]
        assert not table_exists(name)
    finally:
        if table_exists(name):
            shm.gc()


def test_a_complete_import_is_persistent(tmp_path: Path, cleanup: list[str]) -> None:
    name = f"imp-{secrets.token_hex(4)}"
    cleanup.append(name)
    r = _cli("import", "--no-progress", "--json", str(_source(tmp_path)), name)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["persistent"] is True
    doc = _state(name)
    assert doc["persistent"] is True and doc["state"] == "persistent", doc
    r = _cli("rm", name)
    assert r.returncode == 0, r.stderr
