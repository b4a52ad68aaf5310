"""A record reserved under the writer lock and filled without it (a big value's copy while
another writer waits): :class:`Reservation`, made by ``_write``'s ``WriteMixin.reserve``.

Stores nothing itself: it calls the write module to publish or abandon the record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _layout as L
from .._lock import ReservationHold
from .._segment import fd_unlinked

if TYPE_CHECKING:
    from ._write import WriteMixin

__all__ = ["Reservation"]


class Reservation:
    """A record allocated under the writer lock and published later, so that its value can
    be copied in without the lock (:meth:`WriteMixin.reserve`).

    Copying outside the lock
        1. Under the lock, the record is appended unfilled: counted live in its arena, not
           published.  This process takes a shared lock on the arena's file
           (:class:`sharedzarr._lock.ReservationHold`); writers leave an arena whose file
           is locked alone: no retirement, compaction or unlink (``_reserved``).  The
           kernel drops the lock if this process dies (a child forked meanwhile lets go
           of its copy at once), and the record is then garbage that the next recount or
           compaction finds.
        2. Without the lock, the value is copied into :attr:`buffer`.
        3. Under the lock, :meth:`publish` stores the reference, as any write does.  If a
           recovery ran meanwhile, it counted the record as garbage, so it is counted live
           again first; if the table was cleared meanwhile (the file has no name), the value
           is written anew.  :meth:`abandon` makes the record garbage instead.
        Either ends the reservation and lets go of the file lock.
    """

    __slots__ = ("_hold", "_recoveries", "buffer", "h", "kb", "nbytes", "ref", "table", "total")

    def __init__(
        self,
        table: WriteMixin,
        kb: bytes,
        h: int,
        nbytes: int,
        ref: int,
        total: int,
        buffer: memoryview,
        hold: ReservationHold,
    ) -> None:
        self.table, self.kb, self.h, self.nbytes = table, kb, h, nbytes
        self.ref, self.total, self.buffer = ref, total, buffer
        self._hold = hold
        self._recoveries = table._H[L.H_RECOVERIES]

    def publish(self) -> None:
        """Publish the record (writer lock held): readers see the new value, whole."""
        t = self.table
        try:
            if fd_unlinked(self._hold.fd):  # cleared meanwhile: the value goes in anew
                t._grow_if_needed()
                t._put(self.kb, self.h, [self.buffer], "replace")
                return
            if t._H[L.H_RECOVERIES] != self._recoveries:
                t._count_reserved_live(self.ref, self.total)
            t._grow_if_needed()
            t._publish_filled([(self.kb, self.h, self.nbytes, self.ref, self.total)])
        finally:
            self._release()

    def abandon(self) -> None:
        """Give the record up (writer lock held): it becomes garbage, never published."""
        t = self.table
        try:
            if not fd_unlinked(self._hold.fd) and t._H[L.H_RECOVERIES] == self._recoveries:
                t._abandon(self.ref, self.total)  # (a recovery counted it as garbage already)
        finally:
            self._release()

    def _release(self) -> None:
        self._hold.release()

    def __del__(self) -> None:
        self._hold.release()  # never published nor abandoned: the record stays garbage
