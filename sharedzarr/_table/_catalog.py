"""Tables by name: list them, list a table's segments, destroy one.

Mechanics only: the owner-death rules that decide *when* a table is destroyed live in
:mod:`._ownership`, which calls :func:`_destroy`.

Words stored here, and only here
--------------------------------
``H_DELETED``: set before any segment of the table is unlinked, so attached processes
get ``TableNotFoundError`` on their next call instead of reading freed state.
"""

from __future__ import annotations

import contextlib
import time

from .. import _layout as L
from .._lock import WriterLock
from .._segment import exists as _seg_exists
from .._segment import list_names, map_os_errors
from .._segment import unlink as _unlink
from ..errors import AccessDeniedError
from ._header import Segment, count_write

__all__ = ["list_tables", "table_segments"]


def table_segments(name: str) -> list[str]:
    """Every segment in ``/dev/shm`` that belongs to table ``name`` (header last)."""
    hdr, idx, arena = L.segment_names(name)
    out = []
    base = L.PREFIX + name + "."
    for n in list_names(base):
        rest = n[len(base) :]
        if (rest.startswith("idx.") and rest[4:].isdigit()) or (
            rest.startswith("a") and rest[1:].isdigit()
        ):
            out.append(n)
    out.sort()
    if _seg_exists(hdr):
        out.append(hdr)
    return out


def _destroy(name: str, timeout: float = 2.0) -> bool:
    """Mark table ``name`` deleted, then unlink all its segments; False if it had no header."""
    hdr_name = L.segment_names(name)[0]
    try:
        with map_os_errors(name, "header"):
            hdr = Segment.attach(hdr_name, keep_fd=True)
    except AccessDeniedError:
        raise  # the segment mode makes it another user's table: not ours to delete
    except Exception:
        hdr = None
    try:
        if hdr is not None and hdr.size >= L.HEADER_SIZE:
            H = hdr.buf.cast("Q")
            H[L.H_DELETED] = 1
            count_write(H)  # cached readers look at the header again
            # let a writer in mid-operation finish (bounded: it may be stopped)
            lock = WriterLock(lambda: hdr.fd, lambda: 0, name)
            took = False
            with contextlib.suppress(Exception):
                took = lock.acquire(timeout)
            if took:
                count_write(H)  # again, in case a writer's bump raced the first one
            H.release()
            try:
                for n in table_segments(name):
                    if n != hdr_name:
                        _unlink(n)
                _unlink(hdr_name)
            finally:
                if took:
                    lock.release()
            return True
        for n in table_segments(name):
            _unlink(n)
        return hdr is not None
    finally:
        if hdr is not None:
            hdr.close()


def list_tables() -> list[str]:
    """Names of all tables with a header in ``/dev/shm`` (no liveness check)."""
    out = []
    for n in list_names(L.PREFIX):
        if n.endswith(".hdr"):
            out.append(n[len(L.PREFIX) : -4])
    return sorted(out)


def _wait_for_magic(name: str, hdr: Segment, timeout: float = 1.0) -> None:
    """A table being created has no magic yet: wait briefly for its creator."""
    if hdr.size < L.HEADER_SIZE:
        return
    deadline = time.monotonic() + timeout
    while bytes(hdr.buf[:8]) == b"\0" * 8 and time.monotonic() < deadline:
        time.sleep(0.005)
