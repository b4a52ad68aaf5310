"""The write operations: put and remove, filled and reserved inserts, conditional
inserts, clear.

Each runs in a writer session (:mod:`._session`: lock, dirty mark, operation sequence,
rollback, interrupts).  A write appends its record unpublished (allocator), writes the
value into it, then publishes it (:meth:`WriteMixin._publish_filled`, or ``_publish`` for
several values).

Publishing
----------
Each record is published by one aligned store of its reference in the key's slot
(index).  The write counter (header) is bumped after the slot stores of a batch of
records (one record, or up to ``PUBLISH_BATCH`` filled one after the other by one
bulk write) and *before* any record they replaced is counted garbage: a cached reader
that loads an unchanged counter reads an old record, and that record's room is recycled
only after it became garbage (see "Recycling" in :mod:`._arenas`), so its copy is whole
or its second load of the counter sees the bump.  The counts are then updated once.

Words stored here, and only here
--------------------------------
The entry counts ``H_KEYS``, ``H_OBJECTS``, ``H_LIVE_VALUE`` (a recovery recounts them
and the session hands them back to be stored here, ``_set_counts``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import _layout as L
from .._faults import CRASHES
from .._faults import crash_point as _crash_point
from .._index import encode_key, key_hash
from .._segment import unlink as _unlink
from ..errors import NotFoundError
from ._arenas import _Filler
from ._catalog import table_segments
from ._header import (
    _OFFSET_BITS,
    _OFFSET_MASK,
    DEFAULT_TIMEOUT,
    _as_buffer,
    count_reclaim,
    count_write,
)
from ._reserve import Reservation, keep_lease, lease_for, renew_lease, reserve_record
from ._session import PART_WAY_NOTE, READER_PAUSE_NS, SessionMixin
from ._space import RECLAIM_RATIO_BUSY

__all__ = ["PART_WAY_NOTE", "READER_PAUSE_NS", "RESERVE_MIN", "Reservation", "WriteMixin"]

#: :meth:`WriteMixin.insert` copies a value this big outside the writer lock while another
#: writer waits (into its lease, see "Leases" in :class:`Reservation`); a smaller one goes
#: in under the lock.  Two processes inserting values read from memory, two together
#: against one alone, when each value took the lock twice (reserve, then publish): 256 KiB
#: 0.93-0.94x with it, 1.00x without; 512 KiB 1.12-1.16x with it, 1.02x without; 2 MiB
#: 1.47x with it, 0.84x without.
RESERVE_MIN = 512 << 10


_REC_HEAD1 = L.REC_HEAD1  # assigned, not imported: see _header, "Hot paths"

#: Filled records published together by one thread (one write-count bump, one update of
#: the counts), and at most this fraction of the live data in bytes (records filled and
#: not yet published are memory a rewrite needs on top of the data; 1/128 left 8 MiB of
#: 8 KiB chunks at 1.052x the data after 100 rewrites, 1/256 at 1.044-1.05x).
PUBLISH_BATCH = 32
PUBLISH_SHARE = 1 / 256
PUBLISH_MIN = 16 << 10  # (a batch of small records in a small table)


def _prepared(objects: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, ...]]:
    """``(key, value)`` objects as ``insert_filled_many`` items: ``(prepared key, value
    length, value)``."""
    for key, value in objects:
        kb = encode_key(key)
        v = _as_buffer(value)
        yield (kb, key_hash(kb)), v.nbytes, v


class WriteMixin(SessionMixin):
    """The write operations of a table handle (each in a session, see :class:`SessionMixin`)."""

    def _set_counts(self, keys: int, objects: int, live_value: int) -> None:
        """Store the entry counts (after recovery; ``clear`` stores zeros; a bulk insert,
        :mod:`._bulk`, stores its sums)."""
        H = self._H
        H[L.H_KEYS] = keys
        H[L.H_OBJECTS] = objects
        H[L.H_LIVE_VALUE] = live_value

    def _put(self, kb: bytes, h: int, values: list[Any], mode: str) -> bool:
        """The one write primitive.  Call with the writer lock held.

        ``mode``: "replace" (set insert, bag rewrite), "new" (insert_new).
        Returns False when ``mode == "new"`` and the key exists.
        """
        slot, ref, seg, off = self._find(kb, h)
        if slot >= 0 and mode == "new":
            return False
        if len(values) == 1 and type(values[0]) is memoryview:
            self._put_one(kb, h, values[0], slot, ref, seg, off)
            return True
        old = None
        if slot >= 0:
            old = self._record_info(seg, off)
        else:
            if not values:
                return True
            self._grow_if_needed()
        new_ref, total = self._append(kb, values)
        self._log_undo(kb, h, slot, ref)
        self._publish(h, [v.nbytes for v in values], new_ref, total, slot, ref, old)
        self._maybe_reclaim(RECLAIM_RATIO_BUSY)
        return True

    def _put_one(
        self, kb: bytes, h: int, v: memoryview, slot: int, ref: int, seg: Any, off: int
    ) -> None:
        """:meth:`_put` of one bytes value (the common write: a chunk, a cache entry), the
        key found at ``slot`` (``ref``, ``seg``, ``off``; ``slot < 0``: absent): the same
        steps and stores as :meth:`_publish`, in the same order, without its lists."""
        nbytes = v.nbytes
        if slot < 0:
            self._grow_if_needed()
            new_ref, total, room, swapped = self._append_unfilled(kb, nbytes)
        else:
            old_total, old_lens = self._record_info(seg, off)
            aid = ref >> _OFFSET_BITS
            new_ref, total, room, swapped = self._append_unfilled(kb, nbytes, (aid, old_total))
        room[:] = v  # (the same length: nothing to fail)
        if self._undo is not None:
            self._log_undo(kb, h, slot, ref)
        H = self._H
        if slot >= 0:
            self._store_ref(slot, new_ref)  # publish: one aligned 8-byte store
            if CRASHES:
                _crash_point("put.stored")  # a crash here leaves the count to recovery
            count_write(H)  # right after the slot: cached readers look at it again
            if CRASHES:
                _crash_point("put.published")
            if len(old_lens) != 1:
                H[L.H_OBJECTS] += 1 - len(old_lens)
            if len(old_lens) != 1 or nbytes != old_lens[0]:
                H[L.H_LIVE_VALUE] += nbytes - sum(old_lens)
            if swapped:  # the counts stand (see "Recycling" in _arenas)
                self._recycle(seg, ref, old_total)
            else:
                self._add_live_record(total)
                self._garbage_in(seg, aid, [(ref, old_total)], old_total)
        else:  # a new key (an insert, not the rewrite this path is for)
            self._publish(h, [nbytes], new_ref, total, -1, 0, None)
        self._maybe_reclaim(RECLAIM_RATIO_BUSY)

    def _publish(
        self,
        h: int,
        lens: list[int],
        new_ref: int,
        total: int,
        slot: int,
        ref: int,
        old: tuple[int, list[int]] | None,
    ) -> None:
        """Make record ``new_ref`` (``total`` bytes, values of ``lens``) the key's object.

        ``slot``/``ref``/``old``: the key's slot, reference and old record info when it
        exists (else ``slot < 0``).  Lock held.
        """
        H = self._H
        vbytes = sum(lens)
        if slot >= 0:
            assert old is not None  # the key exists: its old record was read
            old_total, old_lens = old
            if lens:
                self._store_ref(slot, new_ref)  # publish: one aligned 8-byte store
            else:
                self._store_ref(slot, L.TOMBSTONE)
                H[L.H_KEYS] -= 1
            _crash_point("put.stored")  # a crash here leaves the count to recovery
            count_write(H)  # right after the slot: cached readers look at it again
            _crash_point("put.published")
            H[L.H_OBJECTS] += len(lens) - len(old_lens)
            H[L.H_LIVE_VALUE] += vbytes - sum(old_lens)
            self._add_live_record(total)
            self._garbage(ref, old_total)
        else:
            self._store_new_slot(h, new_ref)  # publish
            _crash_point("put.stored")
            count_write(H)
            _crash_point("put.published")
            H[L.H_KEYS] += 1
            H[L.H_OBJECTS] += len(lens)
            H[L.H_LIVE_VALUE] += vbytes
            self._add_live_record(total)

    def reserve(self, pk: tuple[bytes, int], nbytes: int) -> Reservation | None:
        """Allocate the record of a value of ``nbytes`` for prepared key ``pk``, to be copied
        in without the writer lock and published under it later (see :class:`Reservation`).

        For a writer whose copy is long while other writers wait: call it inside
        ``with table.writer():``, leave the block, fill ``reservation.buffer``, and call
        ``reservation.publish()`` (or ``abandon()``) inside a new ``with table.writer():``.
        Set tables only; not inside an atomic session.

        Returns
        -------
        Reservation or None
            None when the kernel cannot lock the record's segment (then write as usual).

        Raises
        ------
        RuntimeError
            Outside a writer session, or inside an atomic one.
        """
        if self._bag:
            raise TypeError(f"reserve needs a set table; {self.name!r} is a bag")
        if not self._lock.depth:
            raise RuntimeError("reserve needs the writer lock: call it inside table.writer()")
        if self._undo is not None:
            raise RuntimeError("reserve cannot be used inside an atomic writer session")
        return reserve_record(self, pk[0], pk[1], nbytes)

    def insert_prepared(self, pk: tuple[bytes, int], value: Any) -> None:
        """:meth:`insert` with a prepared key (see :meth:`prepare_key`); set types only."""
        v = _as_buffer(value)
        if self._bag:
            raise TypeError(f"insert_prepared needs a set table; {self.name!r} is a bag")
        if self._lock.depth:  # in this thread's session (an array's write): a nested session
            self._put(pk[0], pk[1], [v], "replace")  # would only count the lock's depth
            return
        outer = self._begin_write(DEFAULT_TIMEOUT)
        ok = False
        try:
            self._put(pk[0], pk[1], [v], "replace")
            ok = True
        finally:
            try:
                self._end_write(ok, outer=outer)
            except BaseException:  # (see "Interrupts" in _session)
                self._end_interrupted(outer)
                raise

    def insert_if_unchanged(
        self,
        pk: tuple[bytes, int],
        value: memoryview | Reservation,
        since: tuple[int, int],
        timeout: float | None = DEFAULT_TIMEOUT,
        recheck: Callable[[], bool] | None = None,
        lease: bool = False,
    ) -> tuple[int, int] | None:
        """Insert ``value`` under prepared key ``pk`` in a writer session of its own, if no
        write ran since ``since`` or ``recheck`` allows it; set types only.

        For a handle that caches something derived from the table (an array its metadata):
        it writes without looking at that again while only it writes.  ``since`` is what
        the previous call returned: the operation sequence the next session opens at (see
        "Operations" in :mod:`._session`) and the write counter.  When either moved,
        ``recheck()`` is called under the lock (another writer ran: is what the caller
        cached still right?); True lets the write go on.  Without it, or when it returns
        False, nothing is written and None is returned: the caller then writes the general
        way.  Inside a session of this thread the value is written in that session (the
        pair then holds its sequence, which the session's later writes keep).  ``value``
        may be a filled :class:`Reservation`, published under ``pk``.  ``lease``: while
        another writer waits, also reserve the record of this handle's next value of the
        same length (see "Leases" in :class:`Reservation`; taken with
        :func:`._reserve.lease_for`).

        Returns
        -------
        tuple of int or None
            The pair to pass next time, or None when nothing was written.
        """
        if self._bag:
            return None
        nested = bool(self._lock.depth)  # a write of this thread's session
        if not nested:
            nested = not self._begin_write(timeout)
        ok = False
        try:
            H = self._H
            s = H[L.H_OPSEQ]
            if (s != since[0] or H[L.H_WRITES] != since[1]) and (recheck is None or not recheck()):
                ok = True  # nothing written: the session ends clean
                return None
            lease = lease and self._lease is None and self._lock.contended()
            if type(value) is Reservation:
                value.publish(pk, lease)
            else:
                self._put(pk[0], pk[1], [value], "replace")
                if lease:
                    renew_lease(self, pk[0], pk[1], value.nbytes)
            ok = True
            # (a session of its own closes at s + 1, so the next one opens at s + 2)
            return (s if nested else s + 2), H[L.H_WRITES]
        finally:
            if not nested:
                try:
                    self._end_write(ok, outer=True)
                except BaseException:  # (see "Interrupts" in _session)
                    self._end_interrupted(True)
                    raise

    def insert_filled(self, pk: tuple[bytes, int], nbytes: int, fill: Any) -> None:
        """Insert a value of ``nbytes`` written in place by ``fill(buffer)``; set types only.

        ``fill`` receives a writable memoryview of the new record's value and must
        fill it; the value is published only after ``fill`` returns, so readers never
        see it half-written.  Saves the copy into an intermediate buffer.
        """
        if self._bag:
            raise TypeError(f"insert_filled needs a set table; {self.name!r} is a bag")
        kb, h = pk
        outer = self._begin_write(DEFAULT_TIMEOUT)
        ok = False
        try:
            self._put(kb, h, [_Filler(nbytes, fill)], "replace")
            ok = True
        finally:
            try:
                self._end_write(ok, outer=outer)
            except BaseException:  # (see "Interrupts" in _session)
                self._end_interrupted(outer)
                raise

    def delete_prepared(self, pk: tuple[bytes, int]) -> None:
        """:meth:`delete` with a prepared key (see :meth:`prepare_key`)."""
        with self.writer():
            self._remove(pk[0], pk[1])

    def _publish_filled(self, recs: list[tuple[Any, ...]]) -> None:
        """Publish filled one-value records ``(key bytes, hash, value length, reference,
        record length)``, in order (lock held): each is one slot store, as in
        :meth:`_publish`; the write count is bumped once after the last store (before any
        replaced record becomes garbage, so cached readers never trust a recycled room),
        and the counts are updated once."""
        H = self._H
        find, undo, arenas = self._find, self._undo, self._arenas
        olds: dict[int, tuple[Any, list[tuple[int, int]], list[int]]] = {}
        keys = objects = value = live = 0
        if H[L.H_GEN] != self._idx_gen:
            self._load_index()
        idx, mask = self._imap
        for kb, h, nbytes, new_ref, total in recs:
            # the key in its home slot (most keys): _find's first probe, inline
            j = (h & mask) << 1
            ref = idx[j + 1] if idx[j] == h else 0
            seg: Any = arenas.get(ref >> _OFFSET_BITS) if ref > 1 else None
            slot = -1
            if seg is not None:
                off = ref & _OFFSET_MASK
                mm = seg.mm
                old_total, klen, n, first = _REC_HEAD1.unpack_from(mm, off)
                ko = off + 16 + 8 * n
                if klen == len(kb) and mm[ko : ko + klen] == kb:
                    slot = j >> 1
            if slot < 0:
                slot, ref, seg, off = find(kb, h)
                if slot >= 0:
                    old_total, _k, n, first = _REC_HEAD1.unpack_from(seg.mm, off)
            if undo is not None:
                self._log_undo(kb, h, slot, ref)
            live += total
            if slot >= 0:
                self._store_ref(slot, new_ref)  # publish: one aligned 8-byte store
                if n != 1:
                    old_lens = self._record_info(seg, off)[1]
                    objects += 1 - n
                    value += nbytes - sum(old_lens)
                else:
                    value += nbytes - first
                aid = ref >> _OFFSET_BITS
                o = olds.get(aid)
                if o is None:
                    o = olds[aid] = (seg, [], [0])
                o[1].append((ref, old_total))
                o[2][0] += old_total
            else:
                self._grow_if_needed()  # (a rebuild keeps the slots stored so far)
                self._store_new_slot(h, new_ref)  # publish (and counts a slot it fills)
                idx, mask = self._imap  # (a new generation after a rebuild)
                keys += 1
                objects += 1
                value += nbytes
        _crash_point("put.stored")  # a crash here leaves the count to recovery
        count_write(H)  # after the slots: cached readers look at them again
        _crash_point("put.published")
        H[L.H_KEYS] += keys
        H[L.H_OBJECTS] += objects
        H[L.H_LIVE_VALUE] += value
        self._add_live_record(live)
        for aid, (seg, rooms, nb) in olds.items():
            self._garbage_in(seg, aid, rooms, nb[0])

    def _remove(self, kb: bytes, h: int) -> list[Any] | None:
        """Delete a key (lock held); return its values (copies) or None when absent."""
        H = self._H
        slot, ref, seg, off = self._find(kb, h)
        if slot < 0:
            return None
        vals = self._values(seg, off, True)
        total, lens = self._record_info(seg, off)
        self._log_undo(kb, h, slot, ref)
        self._store_ref(slot, L.TOMBSTONE)  # publish the deletion
        count_write(H)  # right after the slot: cached readers look at it again
        _crash_point("delete.published")
        H[L.H_KEYS] -= 1
        H[L.H_OBJECTS] -= len(lens)
        H[L.H_LIVE_VALUE] -= sum(lens)
        self._garbage(ref, total)
        self._maybe_reclaim(RECLAIM_RATIO_BUSY)
        return vals

    def insert(self, key: Any, value: Any) -> None:
        """Insert an object.  ETS: ``ets:insert/2``.

        ``set``/``ordered_set``: replaces the value of ``key``.  ``bag``: adds
        the value unless the same value is already stored under ``key``.
        ``duplicate_bag``: always adds.

        Parameters
        ----------
        key : key
            str, int, float, bool, None, bytes, or tuples/lists of these.
        value : bytes-like
            bytes, bytearray, memoryview or C-contiguous numpy array (0 bytes to
            hundreds of MiB).
        """
        kb = encode_key(key)
        h = key_hash(kb)
        v = _as_buffer(value)
        big = v.nbytes >= RESERVE_MIN and not self._bag and not self._lock.depth
        if big and self._insert_leased(kb, h, v):
            return
        outer = self._begin_write(DEFAULT_TIMEOUT)
        ok = False
        try:
            if not self._bag:
                self._put(kb, h, [v], "replace")
                # a big value while another writer waits, in a session of its own: reserve
                # the record of the next one, filled without the lock (see "Leases")
                if big and self._lease is None and self._lock.contended():
                    renew_lease(self, kb, h, v.nbytes)
            else:
                old = self._existing(kb, h)
                if self._dup or not any(o == v for o in old):
                    self._put(kb, h, old + [v], "replace")
            ok = True
        finally:
            try:
                self._end_write(ok, outer=outer)
            except BaseException:  # (see "Interrupts" in _session)
                self._end_interrupted(outer)
                raise

    def _insert_leased(self, kb: bytes, h: int, v: memoryview) -> bool:
        """:meth:`insert` of a big value into this handle's lease (see "Leases" in
        :class:`Reservation`): copied before the lock is taken, then published, and the
        next lease reserved while another writer waits, in one locked section.  False,
        with nothing done, when the handle holds no lease that fits."""
        lease = lease_for(self, v.nbytes)
        if lease is None:
            return False
        if not lease.fits(kb):
            keep_lease(self, lease)  # (for a key of its layout; else the poll gives it back)
            return False
        entered = False
        try:
            lease.buffer[:] = v
            with self.writer():
                entered = True
                lease.publish((kb, h), self._lease is None and self._lock.contended())
        except BaseException:
            if not entered:  # (a lock timeout, say: kept for the next write)
                keep_lease(self, lease)
            raise
        return True

    def _existing(self, kb: bytes, h: int) -> list[memoryview]:
        slot, _ref, seg, off = self._find(kb, h)
        if slot < 0:
            return []
        return self._values(seg, off, False, borrow=True) or []

    def insert_new(self, key: Any, value: Any) -> bool:
        """Insert only if ``key`` is absent; return whether it was inserted.

        ETS: ``ets:insert_new/2``.  Atomic: the check and the insert happen
        under the writer lock.
        """
        kb = encode_key(key)
        h = key_hash(kb)
        v = _as_buffer(value)
        with self.writer():
            return self._put(kb, h, [v], "new")

    def delete(self, key: Any) -> None:
        """Delete every object with ``key``; no error when absent.  ETS: ``ets:delete/2``."""
        kb = encode_key(key)
        h = key_hash(kb)
        with self.writer():
            self._remove(kb, h)

    def delete_object(self, key: Any, value: Any) -> None:
        """Delete the exact object ``(key, value)``.  ETS: ``ets:delete_object/2``.

        In a ``duplicate_bag`` every instance of the object is deleted.
        """
        kb = encode_key(key)
        h = key_hash(kb)
        v = _as_buffer(value)
        with self.writer():
            old = self._existing(kb, h)
            keep = [o for o in old if o != v]
            if len(keep) == len(old):
                return
            if keep:
                self._put(kb, h, keep, "replace")
            else:
                self._remove(kb, h)

    def take(self, key: Any) -> list[bytes]:
        """Return and delete the values of ``key`` (empty when absent).  ETS: ``ets:take/2``."""
        kb = encode_key(key)
        h = key_hash(kb)
        with self.writer():
            vals = self._remove(kb, h)
        return vals or []

    def __setitem__(self, key: Any, value: Any) -> None:
        self.insert(key, value)

    def __delitem__(self, key: Any) -> None:
        if not self.member(key):
            raise NotFoundError(f"key {key!r} is not in table {self.name!r}")
        self.delete(key)

    def clear(self) -> None:
        """Delete every object, keeping the table.  ETS: ``ets:delete_all_objects/1``.

        Zero-copy views that readers hold stay valid (the data segments are
        unlinked, not overwritten).
        """
        with self.writer():
            if self._undo is not None:  # a clear cannot be undone: a failure after it is
                self._undo.close()  # repaired
                self._undo = None
                self._undo_rooms = []  # (in arenas the clear unlinks: not kept mapped)
            H = self._H
            name = self._new_empty_index()  # publishes the empty index
            self._set_counts(0, 0, 0)
            self._set_space(0, 0)
            self._reset_arenas()
            count_write(H)
            self._set_wseg(None)
            for n in table_segments(self.name, uid=self._uid):
                if n.endswith(".hdr") or n == name or n == L.undo_segment_name(self.name):
                    continue
                _unlink(n)
            count_reclaim(H)
            self._forget_reclaimed()
            self._load_index()

    def reclaim(self) -> int:
        """Compact now and give memory back: copy live records out of wasteful data segments,
        unlink them, free the pool of retired segments kept for reuse, and give back the
        pages of the garbage left (records too few to be worth a compaction's copy).

        Compaction also runs by itself when garbage exceeds 40% of the live data (the pool
        is then kept: it makes the next rewrite a plain copy).  The rooms whose pages were
        given back are still reused by later writes (which fault fresh pages in).

        Returns
        -------
        int
            The bytes of garbage freed: compacted, or whose pages were given back (a
            later call counts the latter again).
        """
        with self.writer():
            self._drain_pool()  # first: garbage kept for recycling is compacted too
            freed = self._reclaim()
            self._drain_pool()
            freed += self._free_garbage_pages(self._live_refs)
        return freed
