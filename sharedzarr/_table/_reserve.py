"""A record reserved under the writer lock and filled without it (a big value's copy while
another writer waits): :class:`Reservation`, made by :func:`reserve_record` (for
``_write``'s ``WriteMixin.reserve``), and a handle's lease of the next one ("Leases").

Stores no shared word: it calls the allocator to append the record and the write module to
publish or abandon it.  The one thing it writes is the head (key) of a leased record that
nothing references yet, just before it is published under that key.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING

from .. import _layout as L
from .. import _proc
from .._lock import ReservationHold
from .._segment import fd_unlinked
from .._threads import poll

if TYPE_CHECKING:
    from ._write import WriteMixin

__all__ = [
    "LEASE_IDLE_NS",
    "Reservation",
    "drop_lease",
    "keep_lease",
    "lease_for",
    "renew_lease",
    "reserve_record",
]


def reserve_record(
    t: WriteMixin, kb: bytes, h: int, nbytes: int, hold: ReservationHold | None = None
) -> Reservation | None:
    """Append the unfilled record of a value of ``nbytes`` under key ``kb`` (hash ``h``),
    writer lock held, and lock its arena's file: a :class:`Reservation`, or None when the
    kernel cannot lock the file (the record is then garbage; write as usual).

    ``hold``: a hold this process has on the arena the record may land in (a renewal, see
    "Leases"); it is used if the record lands there, and released if not."""
    try:
        new_ref, total, buf, _ = t._append_unfilled(kb, nbytes)
    except BaseException:
        if hold is not None:
            hold.release()
        raise
    aid, off = new_ref >> L.OFFSET_BITS, new_ref & L.OFFSET_MASK
    if hold is None or hold.fd < 0 or hold.tag != aid:
        if hold is not None:
            hold.release()
        hold = ReservationHold(t._seg_path_arena(aid), aid)
        if hold.fd < 0:
            t._abandon(new_ref, total)
            return None
    seg = t._arenas.get(aid)  # (None: a big record's own segment, never re-keyed)
    head = seg.buf[off : off + L.value_offset(len(kb), 1)] if seg is not None else None
    return Reservation(t, kb, h, nbytes, new_ref, total, buf, hold, head)


#: A lease unused this long is given back (by the poll thread: see "Leases").
LEASE_IDLE_NS = 20_000_000

#: Guards every handle's lease slot (``_lease``, ``_lease_polled``) against the poll thread.
#: Never held while waiting for the writer lock.
_SLOT = threading.Lock()


def renew_lease(
    t: WriteMixin, kb: bytes, h: int, nbytes: int, hold: ReservationHold | None = None
) -> Reservation | None:
    """Reserve table handle ``t``'s lease, the record of its next value of ``nbytes``
    (writer lock held; see "Leases"): :func:`reserve_record`, except that a failure (no
    room left, say) leaves no lease instead of failing the write that asked for it."""
    try:
        lease = reserve_record(t, kb, h, nbytes, hold)
    except Exception:
        return None
    if lease is not None and not _put_lease(t, lease):
        _give_back(t, lease)  # (another thread of this process put one there meanwhile)
        return None
    return lease


def _put_lease(t: WriteMixin, lease: Reservation) -> bool:
    """Make ``lease`` handle ``t``'s lease, if its slot is free and the handle open, and
    have the poll thread look at it; whether it was put."""
    with _SLOT:
        if t._lease is not None or t._closed:
            return False
        t._lease = lease
        start = not t._lease_polled
        t._lease_polled = True
    if start:  # (once per burst of leases: the check goes on while the handle has one)
        ref = weakref.ref(t)
        poll(ref, lambda: _reap_idle(ref))
    return True


def _reap_idle(ref: weakref.ref[WriteMixin]) -> bool:
    """The poll thread's check of a handle's lease: give it back once unused for
    :data:`LEASE_IDLE_NS`, if the writer lock can be had at once (else next time).  Returns
    whether to look again."""
    t = ref()
    if t is None or t._closed:
        return False
    with _SLOT:
        lease: Reservation | None = t._lease
        if lease is None:
            t._lease_polled = False
            return False
        if time.monotonic_ns() - lease.born < LEASE_IDLE_NS:
            return True
        t._lease = None  # out of the slot: no write takes it from here on
    try:
        with t.writer(0):
            lease.abandon()
        return True
    except Exception:
        pass
    keep_lease(t, lease)  # (busy: another try next time)
    return True


def lease_for(t: WriteMixin, nbytes: int) -> Reservation | None:
    """Take table handle ``t``'s lease (see "Leases" in :class:`Reservation`) for a value
    of ``nbytes``, or None; a lease of another length, or one this process may not use (a
    forked child's copy), is given back."""
    with _SLOT:
        lease: Reservation | None = t._lease
        t._lease = None
    if lease is None:
        return None
    if lease.nbytes == nbytes and lease.usable:
        return lease
    _give_back(t, lease)
    return None


def keep_lease(t: WriteMixin, room: Reservation) -> None:
    """A write that took ``room`` (its lease, filled or not) failed before it published
    it: keep it as table handle ``t``'s lease for the next write, or give it back."""
    if not (room.usable and room.table is t and _put_lease(t, room)):
        _give_back(t, room)


def drop_lease(t: WriteMixin) -> None:
    """Give table handle ``t``'s lease back (when it closes)."""
    with _SLOT:
        lease, t._lease = t._lease, None
    if lease is not None:
        _give_back(t, lease)


def _give_back(t: WriteMixin, lease: Reservation) -> None:
    """Make a lease garbage under the writer lock if that can be had at once; else only let
    go of its file lock (the record is then garbage that the next recount finds)."""
    if lease.usable and lease.table is t:
        try:
            with t.writer(0.05):
                lease.abandon()
            return
        except Exception:
            pass
    lease._release()


class Reservation:
    """A record allocated under the writer lock and published later, so that its value can
    be copied in without the lock (:meth:`WriteMixin.reserve`).

    Copying outside the lock
        1. Under the lock, the record is appended unfilled: counted live in its arena, not
           published.  This process takes a shared lock on the arena's file
           (:class:`sharedzarr._lock.ReservationHold`); writers leave an arena whose file
           is locked alone: no retirement, compaction or unlink (``_reserved``).  The
           kernel drops the lock if this process dies (a child forked meanwhile lets go
           of its copy at once, and :attr:`usable` is False in it), and the record is
           then garbage that the next recount or compaction finds.
        2. Without the lock, the value is copied into :attr:`buffer`.
        3. Under the lock, :meth:`publish` stores the reference, as any write does.  If a
           recovery ran meanwhile, it counted the record as garbage, so it is counted live
           again first; if the table was cleared meanwhile (the file has no name), the value
           is written anew.  :meth:`abandon` makes the record garbage instead.
        Either ends the reservation and lets go of the file lock (or hands it on).

    Leases
        A writer that copies outside the lock while another writer waits takes the lock
        twice per value: to reserve, then to publish.  ``publish(pk, renew=True)`` reserves,
        in the same locked section, the record of the writer's *next* value of the same
        length, before that value's key is known: the lease.  The next write fills it
        before it takes the lock and publishes it under its own key (:meth:`fits`: any key
        whose record has the same layout; the head, key included, is written again under
        the lock, and no reader looks at it before the reference is stored).  So each
        value takes the lock once.  An unused lease is a reservation like any other: live
        until abandoned, garbage if its process dies.  When the next record lands in the
        same arena, the file lock is handed on instead of taken again.  A lease holds a
        record and keeps writers from compacting its arena, so one left unused for
        :data:`LEASE_IDLE_NS` (its writer stopped) is given back by the process's poll
        thread (``_threads.poll``); so is a handle's lease when it closes.  The slot is
        taken and put back under :data:`_SLOT`, so the poll thread and a write never both
        hold a lease.
    """

    __slots__ = (
        "_head",
        "_hold",
        "_pid",
        "_reclaims",
        "_recoveries",
        "born",
        "buffer",
        "h",
        "kb",
        "nbytes",
        "ref",
        "table",
        "total",
    )

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
        head: memoryview | None = None,
    ) -> None:
        self.table, self.kb, self.h, self.nbytes = table, kb, h, nbytes
        self.ref, self.total, self.buffer = ref, total, buffer
        self._hold: ReservationHold | None = hold
        self._head = head
        self._recoveries = table._H[L.H_RECOVERIES]
        self._reclaims = table._H[L.H_RECLAIM]  # (an unlink by a writer moves it first)
        self._pid = _proc.pid()
        self.born = time.monotonic_ns()

    @property
    def usable(self) -> bool:
        """Whether this process may still fill and publish the record: neither published
        nor abandoned, and not a forked child's copy."""
        hold = self._hold
        return hold is not None and hold.fd >= 0 and self._pid == _proc.pid()

    def fits(self, kb: bytes) -> bool:
        """Whether the record can be published under key ``kb`` (see "Leases"): its own
        key, or one whose record has the same layout, in an arena."""
        if kb == self.kb:
            return True
        head = self._head
        return head is not None and L.one_value_record(len(kb), self.nbytes) == (
            self.total,
            len(head),
        )

    def publish(
        self, pk: tuple[bytes, int] | None = None, renew: bool = False
    ) -> Reservation | None:
        """Publish the record (writer lock held): readers see the new value, whole.

        Parameters
        ----------
        pk : (bytes, int), optional
            Publish it under this prepared key instead of the one it was reserved for
            (:meth:`fits` must be True; see "Leases").
        renew : bool
            Also reserve the record of a next value of the same length: the table handle's
            lease (see "Leases"), unless it holds one.

        Returns
        -------
        Reservation or None
            The lease, when ``renew`` and one could be reserved.
        """
        t, hold = self.table, self._hold
        if hold is None:
            raise RuntimeError("this reservation was already published or abandoned")
        if pk is not None and pk[0] != self.kb:
            if not self.fits(pk[0]) or self._head is None:
                raise ValueError(
                    f"a reserved record of {self.total} bytes cannot hold key {pk[0]!r}: "
                    "check fits() first, and abandon() it if False"
                )
            self.kb, self.h = pk
            L.pack_head1(self._head, 0, self.kb, self.total, self.nbytes)
        try:
            if self._unlinked(hold):  # cleared meanwhile: the value goes in anew
                t._grow_if_needed()
                t._put(self.kb, self.h, [self.buffer], "replace")
                return None
            if t._H[L.H_RECOVERIES] != self._recoveries:
                t._count_reserved_live(self.ref, self.total)
            t._grow_if_needed()
            t._publish_filled([(self.kb, self.h, self.nbytes, self.ref, self.total)])
            if not renew or t._lease is not None:
                return None
            self._hold = None  # handed on, or released, by reserve_record
            return renew_lease(t, self.kb, self.h, self.nbytes, hold)
        finally:
            self._release()

    def abandon(self) -> None:
        """Give the record up (writer lock held): it becomes garbage, never published."""
        t, hold = self.table, self._hold
        if hold is None:
            return
        try:
            if not self._unlinked(hold) and t._H[L.H_RECOVERIES] == self._recoveries:
                t._abandon(self.ref, self.total)  # (a recovery counted it as garbage already)
        finally:
            self._release()

    def _unlinked(self, hold: ReservationHold) -> bool:
        """Whether the record's segment was unlinked (the table cleared) since it was
        reserved; the file is looked at only if some writer unlinked something."""
        return self.table._H[L.H_RECLAIM] != self._reclaims and fd_unlinked(hold.fd)

    def _release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            hold.release()

    def __del__(self) -> None:
        self._release()  # never published nor abandoned: the record stays garbage
