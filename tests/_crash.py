"""Run Python code in a child process whose crash points are armed (see
``sharedzarr._faults``): it is SIGKILLed at the ``after``-th point it passes."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_crashing(code: str, after: int | None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with every crash point armed, killed at point number ``after`` (None:
    never, the points are only counted); its output is captured."""
    env = dict(
        os.environ,
        SHAREDZARR_CRASH_AT="*",
        SHAREDZARR_CRASH_AFTER=str(10**9 if after is None else after),
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
