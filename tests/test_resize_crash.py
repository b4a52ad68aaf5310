"""An `append` or a `resize` stopped anywhere leaves a right array: SIGKILL mid-way (real
processes, the engine's crash points), and an append refused for space (a real full
/dev/shm: a 2 MiB tmpfs in a private mount namespace).

Not asserted yet: that the space a refused append took is free again at once.  Its chunks
are deleted, but their records stay in the arena until a compaction, and on a full
/dev/shm the compaction itself may find no room."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import _small_shm
import numpy as np
import pytest

import sharedzarr as sz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = """
import sys
import numpy as np
import sharedzarr as sz
a = sz.open(sys.argv[1])
if sys.argv[2] == "append":
    a.append(np.full((40, 8), 9.0))
else:
    a.resize((10, 8))
raise SystemExit("the crash point was never reached")
"""


def _killed_at(name: str, what: str, point: str, after: int) -> None:
    env = dict(os.environ, SHAREDZARR_CRASH_AT=point, SHAREDZARR_CRASH_AFTER=str(after))
    r = subprocess.run(
        [sys.executable, "-c", CHILD, name, what], env=env, capture_output=True, timeout=60
    )
    assert r.returncode == -9, r.stderr.decode()


@pytest.fixture
def arr(cleanup: list[str]):
    name = f"rsz-{secrets.token_hex(4)}"
    cleanup.append(name)
    a = sz.create((25, 8), chunks=(10, 8), dtype="f8", table_name=name)  # edge chunk at 20..25
    a[:] = np.arange(25.0)[:, None]
    yield a
    a.close()


# the append's data publishes: its whole chunks (one batch), then the two partial edge
# chunks; the shape (zarr.json) is published after them
@pytest.mark.parametrize("after", [0, 1, 2])
def test_a_killed_append_leaves_the_old_array(arr: sz.Array, after: int) -> None:
    _killed_at(arr.name, "append", "put.published", after)
    b = sz.open(arr.name)  # a fresh handle, and the old one without a refresh
    for h in (b, arr):
        assert h.shape == (25, 8)
        np.testing.assert_array_equal(h[:], np.arange(25.0)[:, None] * np.ones(8))
    # growing exposes the fill value, not what the killed append had written
    b.resize((65, 8))
    assert (arr[25:] == 0).all() and (arr[:25, 0] == np.arange(25.0)).all()
    arr.append(np.full((5, 8), 1.0))
    assert arr.shape == (70, 8) and (b[65:] == 1).all()
    b.close()


@pytest.mark.parametrize("after", [0, 1])
def test_a_killed_shrink_never_shows_the_old_shape_with_zeros(arr: sz.Array, after: int) -> None:
    _killed_at(arr.name, "shrink", "delete.published", after)
    b = sz.open(arr.name)
    assert b.shape in ((10, 8), (25, 8))
    n = b.shape[0]
    np.testing.assert_array_equal(b[:], np.arange(float(n))[:, None] * np.ones(8))
    b.resize((30, 8))  # what the shrink cut off comes back as the fill value
    assert (b[n:] == 0).all()
    b.close()


def test_a_failed_append_gives_its_space_back(arr: sz.Array, monkeypatch) -> None:
    """An error part-way (as OutOfSpaceError would): the old array, and no chunk left behind."""
    backend = arr._live()
    real = backend.write_chunks_filled
    before = sorted(backend.list_chunks())

    def fail(items, *args, **kw):
        def some():
            for i, item in enumerate(items):
                if i == 2:
                    raise sz.errors.OutOfSpaceError("simulated: /dev/shm is full")
                yield item

        return real(some(), *args, **kw)

    monkeypatch.setattr(backend, "write_chunks_filled", fail)
    with pytest.raises(sz.errors.OutOfSpaceError):
        arr.append(np.full((40, 8), 9.0))
    monkeypatch.undo()
    assert arr.shape == (25, 8) and sorted(backend.list_chunks()) == before
    with sz.open(arr.name) as b:
        assert b.shape == (25, 8)
        np.testing.assert_array_equal(b[:, 0], np.arange(25.0))


ENOSPC = r"""
import sys
sys.path.insert(0, {root!r})
import numpy as np
import sharedzarr as sz
from sharedzarr.errors import OutOfSpaceError
a = sz.create((0, 128, 128), chunks=(1, 128, 128), dtype="f8", table_name="frames")
n = 0
try:
    while True:
        a.append(np.full((4, 128, 128), float(n + 1)))  # 512 KiB per append
        n += 1
except OutOfSpaceError as e:
    assert "needed" in str(e), e
assert n >= 1, n
with sz.open("frames") as b:  # the refused append is not there, not even as fill rows
    assert b.shape == (4 * n, 128, 128), (b.shape, n)
    assert all((b[4 * i : 4 * i + 4] == i + 1).all() for i in range(n))
assert a.shape[0] == 4 * n and (a[4 * n - 1] == n).all()  # this handle agrees
print("ENOSPC-OK", n)
"""


@_small_shm.needs
def test_an_append_refused_for_space_leaves_the_old_array(tmp_path) -> None:
    _small_shm.run_ok(tmp_path, ENOSPC.format(root=ROOT), "2m")  # -7 would be SIGBUS
