"""Shared fixtures: every test must leave /dev/shm as it found it."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

SHM = "/dev/shm"


def _ours() -> set[str]:
    try:
        names = os.listdir(SHM)
    except FileNotFoundError:
        return set()
    ignore = os.environ.get("SHAREDZARR_LEAK_IGNORE")  # for concurrent runs on a dev box
    return {
        n
        for n in names
        if (n.startswith("sz.") or n.startswith("sem.sz."))
        and not (ignore and n.startswith(ignore))
    }


@pytest.fixture(autouse=True)
def no_shm_leaks():
    """Fail a test that leaves a segment or semaphore of ours in /dev/shm."""
    before = _ours()
    yield
    # children may still be exiting (atexit cleanup); give them a moment
    deadline = time.monotonic() + 5.0
    leaked = _ours() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _ours() - before
    if leaked:
        for n in leaked:  # clean up so one leak does not fail every later test
            try:
                os.unlink(os.path.join(SHM, n))
            except OSError:
                pass
        pytest.fail(f"test leaked shared-memory entries: {sorted(leaked)}")
