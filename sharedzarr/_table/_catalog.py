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
from collections.abc import Callable

from .. import _layout as L
from .._lock import WriterLock
from .._segment import exists as _seg_exists
from .._segment import list_names, map_os_errors
from .._segment import unlink as _unlink
from ..errors import AccessDeniedError
from ._header import Segment, count_write

__all__ = ["list_tables", "table_segments"]


def table_segments(name: str, uid: int | None = None) -> list[str]:
    """Every segment in ``/dev/shm`` named as a segment of table ``name`` (header last).

    With ``uid`` (the table's user), only that user's files: another user's file among
    the names is never the table's (see ``_segment.take_name``).
    """
    hdr, idx, arena = L.segment_names(name)
    out = []
    base = L.PREFIX + name + "."
    for n in list_names(base, uid=uid):
        rest = n[len(base) :]
        if (
            (rest.startswith("idx.") and rest[4:].isdigit())
            or (rest.startswith("a") and rest[1:].isdigit())
            or rest == "undo"
        ):
            out.append(n)
    out.sort()
    if _seg_exists(hdr):
        out.append(hdr)
    return out


def _destroy(
    name: str,
    timeout: float = 2.0,
    *,
    hdr: Segment | None = None,
    still: Callable[[Segment], bool] | None = None,
) -> bool:
    """Delete table ``name``; return True when it is gone for its users.

    The protocol (the one place segments of a live name are removed):

    * A table is identified by its header segment (its inode), never by its name alone:
      ``hdr`` is the header the caller looked at (by default, the one at the name now).
      Everything below happens to *that* table; if the name no longer leads to it (it was
      deleted, and maybe a new table took the name), nothing is done.
    * The header is unlinked only by a process holding the table's writer lock, after it
      checked that the name still leads to this header.  So while a writer holds the lock,
      its table's name cannot be taken by another table, and the segment names it creates
      or unlinks are its own.  A writer checks ``H_DELETED`` before each of them
      (``TableBase._same_table``) and stops.
    * A *reap* (``still`` given: the owner-death rules decided to delete) happens only
      with the lock taken and ``still(hdr)`` true again under it: a decision read from the
      header without the lock (the owner dead, no live heir) is checked again where
      nobody can change it.  No lock within ``timeout`` (a live writer is inside): no
      reap.
    * An explicit delete (``still`` None) marks ``H_DELETED`` first (handles see it at
      their next call, a writer inside stops at its next segment), then takes the lock.
      If a live writer still holds it after ``timeout`` (stopped, or in a long bulk
      write), the data segments are unlinked and the header is left, marked deleted: the
      name stays taken until that writer finishes or dies, and the next :func:`probe`
      removes the header then.
    """
    own = hdr is None
    if hdr is None:
        try:
            with map_os_errors(name, "header"):
                hdr = Segment.attach(L.segment_names(name)[0], keep_fd=True)
        except AccessDeniedError:
            raise  # the segment mode makes it another user's table: not ours to delete
        except Exception:
            return False  # no header: nothing of a table to delete (strays are gc's)
    try:
        return _destroy_header(name, hdr, timeout, still)
    finally:
        if own:
            hdr.close()


def _destroy_header(
    name: str, hdr: Segment, timeout: float, still: Callable[[Segment], bool] | None
) -> bool:
    if hdr.fd < 0:
        raise ValueError("_destroy needs a header segment with its descriptor kept")
    H = hdr.buf.cast("Q") if hdr.buf is not None and hdr.size >= L.HEADER_SIZE else None
    try:
        if still is None and H is not None and bytes(hdr.buf[:8]) == L.MAGIC:
            H[L.H_DELETED] = 1
            count_write(H)  # cached readers look at the header again
        lock = WriterLock(lambda: hdr.fd, lambda: 0, name)
        took = False
        with contextlib.suppress(Exception):
            took = lock.acquire(timeout)
        try:
            if not hdr.is_at_name():
                return False  # deleted meanwhile by someone else; the name may be another's
            if still is not None and not (took and still(hdr)):
                return False
            if H is not None and bytes(hdr.buf[:8]) == L.MAGIC:
                H[L.H_DELETED] = 1
                count_write(H)  # again: a writer's bump may have raced the first one
            for n in table_segments(name, uid=hdr.owner_uid()):
                if n != hdr.name:
                    _unlink(n)
            if took:
                _unlink(hdr.name)
            return True
        finally:
            if took:
                lock.release()
    finally:
        if H is not None:
            H.release()


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
