"""Every example in examples/ runs as a user would run it, and cleans up after itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
COVERED_ELSEWHERE = {"zarr_interop.py", "dask_workers.py", "xarray_roundtrip.py"}


def test_every_example_is_exercised():
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert "producer_consumer.py" in scripts
    assert scripts <= COVERED_ELSEWHERE | {"producer_consumer.py"}, (
        "a new example needs a test: add it here or to test_examples_ecosystem.py"
    )


def test_producer_consumer_demo():
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "producer_consumer.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=EXAMPLES.parent,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "producer: wrote 15.3 MiB in 32 chunks" in out
    assert out.count("consumer: rows") == 2
    assert "done: table deleted, /dev/shm clean" in out
    assert r.stderr == ""
