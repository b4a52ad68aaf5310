"""Every ```python block of README.md runs as written, in a fresh process, and cleans up."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
FENCE = re.compile(r"^```python\n(.*?)^```\n", re.S | re.M)


def _blocks() -> list[tuple[int, str]]:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


def _ours() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("sz.")}


def test_readme_is_short_and_has_blocks():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    assert len(text) <= 15_000, len(text)
    assert len(_blocks()) >= 7
    assert "issue" not in text.lower()


@pytest.mark.parametrize("line,code", _blocks(), ids=[f"line{n}" for n, _ in _blocks()])
def test_readme_block_runs(line, code, tmp_path):
    needs = {"zarr": "zarr", "xarray": "xarray", "dask": "dask"}
    for word, module in needs.items():
        if re.search(rf"^\s*import {word}\b|^\s*from {word}\b|^import {word}\.", code, re.M):
            pytest.importorskip(module)
    script = tmp_path / f"readme_line{line}.py"
    script.write_text(code)
    before = _ours()
    r = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # a fresh directory: the block imports only the installed package
    )
    assert r.returncode == 0, f"README block at line {line} failed:\n{r.stdout}\n{r.stderr}"
    left = {n for n in _ours() - before if any(n.startswith(f"sz.{t}.") for t in _names(code))}
    assert not left, f"README block at line {line} left {sorted(left)} in /dev/shm"


def _names(code: str) -> set[str]:
    return set(re.findall(r'"([A-Za-z0-9_.-]+)"', code))
