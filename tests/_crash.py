"""Run Python code in a child process whose crash points are armed (see
``sharedzarr._faults``): it is SIGKILLed at the ``after``-th point it passes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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


def kill_while_running(ctx, target, make_args, rng, longest: float = 0.25) -> None:
    """Start ``target(*make_args(ready))`` in a process of ``ctx``, wait until it sets the
    ``ready`` event, let it run a random while (at most ``longest`` seconds, ``rng``), then
    SIGKILL it and check that it died of that."""
    ready = ctx.Event()
    args = make_args(ready)  # (kept here until the child has them: start() lets go of them)
    p = ctx.Process(target=target, args=args)
    p.start()
    assert ready.wait(60)
    time.sleep(rng.uniform(0.01, longest))
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
