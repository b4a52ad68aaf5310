"""Run the zarr / dask / xarray examples as a user would: each must succeed and clean up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "needs"),
    [
        ("zarr_interop.py", ["zarr"]),
        ("dask_workers.py", ["zarr", "dask.array", "distributed"]),
        ("xarray_roundtrip.py", ["zarr", "xarray"]),
    ],
)
def test_example_runs(script: str, needs: list[str]) -> None:
    for module in needs:
        pytest.importorskip(module)
    r = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=EXAMPLES.parent,
    )
    assert r.returncode == 0, f"{script} failed:\n{r.stdout}\n{r.stderr}"
    assert "done: table" in r.stdout and "/dev/shm clean" in r.stdout
    assert "Warning" not in r.stderr, r.stderr
