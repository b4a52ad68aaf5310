"""Run a script with a small tmpfs on /dev/shm, in a private mount namespace (root only):
how the tests fill /dev/shm for real without touching the machine's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def available() -> bool:
    """True when this process may ``unshare --mount`` (root, and the tool is there)."""
    if os.geteuid() != 0:
        return False
    try:
        r = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True
        )
    except FileNotFoundError:
        return False
    return r.returncode == 0


#: Marks a test that needs :func:`available` (skipped otherwise, with the reason).
needs = pytest.mark.skipif(
    not available(),
    reason="needs root and `unshare --mount` to mount a small tmpfs on /dev/shm in a private "
    "mount namespace",
)


def run(script: Path, size: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with this Python, with a ``size`` tmpfs (e.g. ``"1m"``) on /dev/shm."""
    mount = f"mount -t tmpfs -o size={size} tmpfs /dev/shm && exec {sys.executable} {script}"
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount],
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_ok(tmp_path: Path, script: str, size: str, marker: str = "ENOSPC-OK") -> str:
    """Write ``script`` into ``tmp_path``, run it with a ``size`` tmpfs on /dev/shm, and
    check that it exited 0 (not -7: SIGBUS) and printed ``marker``; return its output."""
    path = tmp_path / "small_shm_script.py"
    path.write_text(script)
    r = run(path, size)
    assert r.returncode == 0, r.stdout + r.stderr
    assert marker in r.stdout, r.stdout + r.stderr
    return r.stdout
