"""Running out of file descriptors is a typed error that names ``ulimit -n``, never a raw
``OSError``; the table is unchanged and opens again once descriptors are free.  A real
subprocess with RLIMIT_NOFILE exhausted."""

from __future__ import annotations

import subprocess
import sys
import uuid

import sharedzarr as sz

CHILD = """
import errno, os, resource, sys
import sharedzarr as sz
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
for keep in (0, 1):  # none left; one left (the header opens, its mapping cannot)
    if keep:
        os.close(held.pop())
    try:
        sz.open(sys.argv[1])
        print("OPENED")
    except sz.TooManyOpenFilesError as e:
        print("TYPED", isinstance(e, OSError), e.errno == errno.EMFILE, "ulimit -n" in str(e))
for fd in held:
    os.close(fd)
with sz.open(sys.argv[1]) as a:
    print("VALUES", a[:].tolist())
"""


def test_out_of_descriptors_is_typed_and_names_the_limit(cleanup) -> None:
    name = f"fds-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    a = sz.create((4,), chunks=(4,), table_name=name)
    a[:] = 7.0
    r = subprocess.run(
        [sys.executable, "-c", CHILD, name], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("TYPED True True True") == 2, r.stdout
    assert "VALUES [7.0, 7.0, 7.0, 7.0]" in r.stdout
    a.delete()


MANY = """
import os, resource, sys
import numpy as np
import sharedzarr as sz
from sharedzarr._table import Table
name, n_arrays = sys.argv[1], int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
fds = lambda: len(os.listdir("/proc/self/fd"))
t = Table.attach(name)
before = fds()
views = [t.lookup(i, copy=False)[0] for i in range(40)]  # 40 segments, all kept mapped
print("VIEW_FDS", fds() - before)
print("VIEWS_OK", all(np.frombuffer(v, dtype=np.uint8)[-1] == i for i, v in enumerate(views)))
arrays = [sz.open(f"{name}-{i}") for i in range(n_arrays)]
print("ARRAYS_OK", all(a[:].tolist() == [float(i)] * 4 for i, a in enumerate(arrays)))
"""


def test_a_reader_holds_no_descriptor_per_segment(cleanup) -> None:
    """Mappings keep no descriptor: a reader holding views into 30-odd segments, and one with
    30 arrays open, fit in 48 descriptors (each mapping held one before)."""
    name = f"fdm-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    t = sz.Table.create(name)
    for i in range(40):  # over a quarter of an arena: each value gets its own segment
        t.insert(i, bytes([i]) * (1 << 20 | 4096))
    assert t.info()["segments"] >= 30
    arrays = []
    for i in range(30):
        cleanup.append(f"{name}-{i}")
        a = sz.create((4,), chunks=(2,), table_name=f"{name}-{i}")
        a[:] = float(i)
        arrays.append(a)
    r = subprocess.run(
        [sys.executable, "-c", MANY, name, "30"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "VIEW_FDS 0" in r.stdout, r.stdout
    assert "VIEWS_OK True" in r.stdout and "ARRAYS_OK True" in r.stdout, r.stdout
    for a in arrays:
        a.delete()
    t.delete_table()
