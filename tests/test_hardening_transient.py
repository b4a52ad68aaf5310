"""A transient error is no verdict: when mapping a header fails for a passing reason (no
address space or no descriptors left), ``gc`` skips the table instead of calling it corrupt
and deleting it, and ``table_exists`` raises instead of answering.  A real subprocess with
RLIMIT_AS and RLIMIT_NOFILE exhausted, a real live table owned by this process."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import sharedzarr as sz

CHILD = """
import errno, os, resource, sys
from sharedzarr.storage import shm
name = sys.argv[1]
# 1. no address space left: listing /dev/shm works, mapping a header does not (ENOMEM)
vm = int([ln for ln in open("/proc/self/status") if ln.startswith("VmSize")][0].split()[1])
resource.setrlimit(resource.RLIMIT_AS, (vm * 1024, resource.RLIM_INFINITY))
removed = shm.gc()
try:
    shm.table_exists(name)
    print("ANSWERED")
except OSError as e:
    print("RAISED", e.errno in (errno.ENOMEM, errno.ENOSPC))
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print("REMOVED", name in removed)
# 2. no descriptor left (EMFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    assert e.errno == errno.EMFILE
try:
    shm.table_exists(name)
    print("ANSWERED")
except OSError as e:
    print("RAISED", e.errno == errno.EMFILE)
for fd in held:
    os.close(fd)
"""


def test_gc_never_deletes_on_a_transient_error(cleanup) -> None:
    name = f"emfile-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    a = sz.create((8,), chunks=(8,), table_name=name)
    a[:] = 3.0
    hdr = f"/dev/shm/sz.{name}.hdr"
    os.utime(hdr, (0, 0))  # an old header: gc's "stale corrupt" rule would apply
    r = subprocess.run(
        [sys.executable, "-c", CHILD, name], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "REMOVED False" in r.stdout, r.stdout
    assert r.stdout.count("RAISED True") == 2, r.stdout
    assert a[:].tolist() == [3.0] * 8 and os.path.exists(hdr)
    a.delete()
