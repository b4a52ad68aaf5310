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
