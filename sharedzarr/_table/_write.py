"""The write side: the writer session (lock, holder, dirty word) and every write operation.

A session (:meth:`SessionMixin.writer`, or the one a single operation opens) takes the
writer lock (:mod:`sharedzarr._lock`), stores the holder, repairs after a dead writer
(:mod:`._recovery`), marks the header dirty, and at its end reclaims once and clears the
mark.  A write appends its record unpublished (allocator), writes the value into it, then
publishes it (:meth:`WriteMixin._publish_filled`, or ``_publish`` for several values).

Publishing
----------
Each record is published by one aligned store of its reference in the key's slot
(index).  The write counter (header) is bumped after the slot stores of a batch of
records (one record, or up to ``PUBLISH_BATCH`` filled one after the other by one
bulk write) and *before* any record they replaced is counted garbage: a cached reader
that loads an unchanged counter reads an old record, and that record's room is recycled
only after it became garbage (see "Recycling" in :mod:`._arenas`), so its copy is whole
or its second load of the counter sees the bump.  The counts are then updated once.

Operations (what makes a session atomic for readers)
----------------------------------------------------
A session is one *operation*: ``H_OPSEQ`` becomes odd when it opens (after recovery,
before the first change) and even when it closes, whether it succeeded or raised; a
dead writer's odd value is moved on by the next session.  Readers that need a snapshot
accept only reads that no operation overlapped (:mod:`._read`, invariant I6), so an
array's multi-chunk write, append or resize (one session each) is seen whole or not at
all, and every handle sees the current shape on its next call.  Before opening, a
writer pauses while a reader's ``H_READER_WAIT`` stamp is fresh (at most
``READER_PAUSE_NS`` from the stamp), so back-to-back operations cannot starve readers.

Rollback (an *atomic* session)
------------------------------
A session opened with ``writer(atomic=True)`` (an array's ``atomic()`` block) logs each
key it changes with the reference the key had before, in shared memory and before the
change is stored (the undo log, :mod:`._undo`, which owns the write-ahead protocol;
0 for a new key; a bulk insert logs its new keys in one entry).  While the log is on,
nothing moves or frees a record: ``_reclaim`` and the retirement of emptied arenas wait
for the end of the session, so every old reference stays valid.  The session commits by
closing the log before its reclaim.  If the session raises (any exception,
``OutOfSpaceError`` included), its end restores the old references (each key its oldest
entry's), under the lock and inside the still odd operation (so no snapshot reader
accepts a state in between), then recounts as recovery does (:mod:`._recovery`), which
unlinks the segments only the failed write used; what it appended to the arena that was
current is cut off and its pages given back (``_give_back_tail``, unless a zero-copy
view pins that arena).  Nothing of it stays visible, and the space it took is free again.
A writer killed (SIGKILL) midway leaves its log open: the next writer finds it with the
dirty mark and runs the same rollback from it (:meth:`SessionMixin._begin_write`), before
it recounts anything.  A session that is not atomic keeps no log; a writer killed in it
leaves the values it had published, each whole.  (``append`` and ``resize`` order their
stores so that even that is atomic.)  A session may also become atomic after it opened,
before its first change: :meth:`_Session.undo_if_small`, which an array's write of a few
chunks calls (see "Small writes are atomic" in :mod:`sharedzarr._array._write`).

Interrupts
----------
Python runs a signal handler between bytecodes of the main thread (at a function's first
bytecode, a backward jump, after a call into C), and a handler may raise:
``KeyboardInterrupt`` from Ctrl-C, ``SystemExit`` from a SIGTERM handler.  A session
survives such an exception wherever it comes:

* The end of the outermost session (``_end_write``) closes the operation and lets the lock
  go in ``finally`` blocks: an interrupt in its reclaim leaves the dirty mark (the next
  writer repairs) instead of a lock held by a live process.  A rollback runs with the
  signals held back (:func:`sharedzarr._threads.signals_deferred`).
* The handler can raise at the first bytecode of the end itself, before any of it ran.
  Every call of the end is made inside a ``try`` whose handler ends the session if it
  still holds the lock (``_end_interrupted``, signals held back).
* A nested session whose end was skipped leaves a level; the end of the outermost session
  drops it (``_unwind``): it knows it is the outermost from :meth:`_begin_write`.
* An exception out of a session drops the rooms this handle kept for reuse
  (``_forget_rooms``): an interrupt inside the recycler can leave a room on two of its
  lists, and two records written into one room lose one of them.
* A write that goes on in the same session after an exception (an array finishing an
  interrupted write) first calls :meth:`SessionMixin.repair_session`: the recount the next
  writer would make.  Going on with counts an interrupt left half updated can retire an
  arena that a published record is still in.

One place stays open: the call a ``with`` statement makes to ``__exit__`` itself.  A
handler that raises at its first bytecode leaves the outermost session open, the lock held
by this thread until the process exits.  Python offers no way to close it (a finaliser
would run handlers too, and swallow their exceptions); array writes make it rare by
running pending handlers inside the operation just before it ends.

What an interrupted write stored is whole, as after any exception (an array finishes its
write first: see :mod:`sharedzarr._array._write`).

Words stored here, and only here
--------------------------------
``H_HOLDER``, ``H_DIRTY``, ``H_OPSEQ``, and the entry counts ``H_KEYS``, ``H_OBJECTS``,
``H_LIVE_VALUE`` (recovery recounts them and hands them back to be stored here).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Self

import numpy as np

from .. import _layout as L
from .. import _proc
from .._faults import CRASHES
from .._faults import crash_point as _crash_point
from .._index import encode_key, key_hash
from .._segment import unlink as _unlink
from .._threads import signals_deferred
from ..errors import AccessDeniedError, NotFoundError
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
from ._ownership import _OWNED, _register_owned
from ._read import ReadMixin
from ._recovery import RecoveryMixin
from ._reserve import Reservation, renew_lease, reserve_record
from ._space import RECLAIM_RATIO_BUSY
from ._undo import NEW_KEYS, UndoLog

__all__ = ["PART_WAY_NOTE", "READER_PAUSE_NS", "RESERVE_MIN", "Reservation", "WriteMixin"]

#: How long a writer defers its next operation for a reader that asked (see above).
READER_PAUSE_NS = 100_000_000
#: :meth:`WriteMixin.insert` copies a value this big outside the writer lock while another
#: writer waits (:class:`Reservation`); a smaller one goes in under the lock: the extra lock
#: round trip costs more than the copy.  Two processes inserting values read from memory,
#: two together against one alone: 256 KiB 0.93-0.94x with it, 1.00x without; 512 KiB
#: 1.12-1.16x with it, 1.02x without; 2 MiB 1.47x with it, 0.84x without.
RESERVE_MIN = 512 << 10


def _let_readers_in(H: memoryview) -> None:
    """Pause while a snapshot reader's ``H_READER_WAIT`` stamp is fresh (bounded)."""
    while True:
        w = H[L.H_READER_WAIT]
        if not w or time.monotonic_ns() >= w + READER_PAUSE_NS:
            return
        time.sleep(50e-6)


#: What an exception out of a session that is not atomic tells about the session's writes,
#: when it had published some (see :meth:`_Session.__exit__`).
PART_WAY_NOTE = (
    "this write stopped part-way: what it had stored before the error stays (each chunk or "
    "value whole) and the rest keeps its old values. To make a write all or nothing "
    "(against errors and killed processes alike), run it inside `with array.atomic():` "
    "(a Table: `with table.writer(atomic=True):`)"
)


class _Session:
    """``with table.writer(...)``: a writer session (a class, not a generator: it is on
    every write's path)."""

    __slots__ = ("atomic", "auto", "outer", "table", "timeout", "writes")

    def __init__(self, table: SessionMixin, timeout: float | None, atomic: bool) -> None:
        self.table, self.timeout, self.atomic = table, timeout, atomic
        self.outer = False
        self.auto = False  # made atomic by undo_if_small
        self.writes = 0

    def __enter__(self) -> Any:
        t = self.table
        self.outer = outer = t._begin_write(self.timeout, self.atomic)
        try:
            if self.atomic and outer:
                t._start_undo()
            self.writes = t._H[L.H_WRITES]
        except BaseException:  # (an interrupt: see "Interrupts")
            t._end_write(False, outer=outer)
            raise
        return t

    def __exit__(self, et: object, ev: object, tb: object) -> None:
        # a write refused before it changed anything (``_check_room``, or data an array
        # refused under the lock, marked ``changed_nothing``) leaves the counts right: no
        # dirty mark, so the next writer does not recount the table.  An error out of an
        # outermost session that published something and is not undone gets a note saying so
        # (an interrupt is no such error: an array finishes its write first)
        try:
            if ev is not None and self.outer and not self.atomic and isinstance(ev, Exception):
                H = self.table._H
                if H is not None and H[L.H_WRITES] != self.writes:
                    ev.add_note(PART_WAY_NOTE)
            self.table._end_write(et is None, getattr(ev, "changed_nothing", False), self.outer)
        except BaseException:
            self.close_interrupted(et is None)
            raise

    def close_interrupted(self, done: bool = False) -> None:
        """After an exception out of :meth:`__exit__`: end the session if an interrupt
        stopped it before it let the lock go (see "Interrupts").  ``done``: the session's
        body had finished; a session :meth:`undo_if_small` made atomic then commits (its
        write is whole), any other is ended as after an error."""
        self.table._end_interrupted(self.outer, done and self.auto)

    def undo_if_small(self, nbytes: int) -> bool:
        """Make this session atomic (see "Rollback") for a write about to store at most
        ``nbytes``, if that is small: at most ``UNDO_SMALL_SHARE`` of the live data or
        ``UNDO_SMALL_MIN`` bytes, which is the memory the undo keeps on top of the data
        until the session ends.  Only this thread's outermost session, and only before it
        changed anything.  An array's write of a few chunks asks for it (see
        :mod:`sharedzarr._array._write`).  Returns whether it made the session atomic
        (False for one opened atomic: its opener decides what an interrupt undoes; False
        when the undo log cannot be opened).
        """
        t = self.table
        H = t._H
        if self.atomic or not self.outer or H is None or H[L.H_WRITES] != self.writes:
            return False
        if nbytes > _undo_small(H):
            return False
        try:
            t._start_undo()
        except Exception:  # no log (a full /dev/shm, a segment this user cannot write):
            return False  # the write goes on as it would have (it may need no new space)
        self.atomic = self.auto = True
        return True


_REC_HEAD1 = L.REC_HEAD1  # assigned, not imported: see _header, "Hot paths"

#: Filled records published together by one thread (one write-count bump, one update of
#: the counts), and at most this fraction of the live data in bytes (records filled and
#: not yet published are memory a rewrite needs on top of the data; 1/128 left 8 MiB of
#: 8 KiB chunks at 1.052x the data after 100 rewrites, 1/256 at 1.044-1.05x).
PUBLISH_BATCH = 32
PUBLISH_SHARE = 1 / 256
PUBLISH_MIN = 16 << 10  # (a batch of small records in a small table)
#: A write may be made atomic by default (:meth:`_Session.undo_if_small`) when it stores at
#: most this share of the live data, or at most ``UNDO_SMALL_MIN`` bytes: its undo keeps
#: the records it replaces until it ends (a whole rewrite would need twice the memory).
UNDO_SMALL_SHARE = 1 / 16
UNDO_SMALL_MIN = 1 << 20


def _undo_small(H: Any) -> int:
    """The most bytes a write may replace and still count as small (see above)."""
    return max(int(H[L.H_LIVE_RECORD] * UNDO_SMALL_SHARE), UNDO_SMALL_MIN)


def _prepared(objects: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, ...]]:
    """``(key, value)`` objects as ``insert_filled_many`` items: ``(prepared key, value
    length, value)``."""
    for key, value in objects:
        kb = encode_key(key)
        v = _as_buffer(value)
        yield (kb, key_hash(kb)), v.nbytes, v


class SessionMixin(ReadMixin, RecoveryMixin):
    """The writer session of a table handle: lock, holder, dirty mark, operation sequence,
    rollback (see the module docstring)."""

    _sessions = 0  # writer sessions this handle opened (see _begin_write)

    def _set_counts(self, keys: int, objects: int, live_value: int) -> None:
        """Store the entry counts (after recovery; ``clear`` stores zeros; a bulk insert,
        :mod:`._bulk`, stores its sums)."""
        H = self._H
        H[L.H_KEYS] = keys
        H[L.H_OBJECTS] = objects
        H[L.H_LIVE_VALUE] = live_value

    def writer(
        self, timeout: float | None = DEFAULT_TIMEOUT, *, atomic: bool = False
    ) -> contextlib.AbstractContextManager[Self]:
        """Hold the table's writer lock across several operations.

        Single operations take the lock by themselves; reads never take it.
        Reentrant within a thread.  Readers that ask for a snapshot see the whole
        session or nothing of it.

        Parameters
        ----------
        timeout : float or None
            Seconds to wait; ``None`` waits forever.
        atomic : bool
            If the session raises, or its process is killed, undo every change it made
            (see "Rollback" in :mod:`sharedzarr._table._write`), so that nothing of it
            stays visible (after a kill, the next writer undoes it).  It logs one small
            entry per changed key in shared memory (up to 1 GiB of log: tens of millions
            of keys).  Only the outermost session decides.

        Returns
        -------
        context manager
            Entering it takes the lock (and returns this table); leaving it ends the
            session.

        Raises
        ------
        LockTimeoutError
            When the lock is not acquired in time; names the holder's pid.
        AccessDeniedError
            When this process may not write (protected table, read-only handle).
        """
        return _Session(self, timeout, atomic)

    def _writable_check(self) -> None:
        if self._closed:
            if self._deleted:
                raise self._not_found()
            raise ValueError(f"operation on a closed handle of table {self.name!r}; attach again")
        if self.access != "public" and not self.is_owner:
            raise AccessDeniedError(
                f"table {self.name!r} is {self.access}: only its owner (pid {self.owner_pid}) "
                "may write; create it with access='public' to let every process write"
            )
        if self._asked_ro:
            raise self._read_only_handle()
        if self._ro:
            if self.access == "public" or self.is_owner:
                try:
                    self._remap(readonly=False)
                    return
                except Exception:
                    pass
            raise AccessDeniedError(
                f"this handle of table {self.name!r} is read-only; attach with "
                "readonly=False (and a segment mode that lets this user write) to write"
            )

    def _begin_write(self, timeout: float | None, atomic: bool = False) -> bool:
        """Open a session (take the lock, repair, open the operation; ``atomic``: see
        "Rollback"); return True when it is this thread's outermost one, False when it
        nests in one (see "Interrupts")."""
        if self._lock.acquire_nested():
            return False
        if self._closed or self._ro or self._asked_ro or self.access != "public":
            self._writable_check()  # (raises, or maps a read-only handle writable)
        self._lock.acquire(timeout)
        try:
            H = self._H
            self._sessions += 1
            # the header removed from outside (rm -f sets no deleted flag): asked of the
            # OS on a handle's first session and every 64th after it
            if H[L.H_DELETED] or (self._sessions & 63 == 1 and self._hdr.unlinked()):
                raise self._not_found()
            me = _proc.pid()
            H[L.H_HOLDER] = me
            if H[L.H_DIRTY]:
                if H[L.H_UNDO]:  # a dead atomic session: undone (see "Rollback")
                    self._rollback(self._undo_log())
                else:
                    self._set_counts(*self._recover())
                H[L.H_DIRTY] = 0
            if H[L.H_READER_WAIT]:
                _let_readers_in(H)
            H[L.H_DIRTY] = me
            if H[L.H_OWNER_PID] == me and self.name not in _OWNED and self.is_owner:
                _register_owned(self.name, self._hdr)
            s = H[L.H_OPSEQ]
            H[L.H_OPSEQ] = s + 2 if s & 1 else s + 1  # open: odd (and moved past a dead one)
            if self._atomic_rooms and not atomic:  # a version's worth of rooms an atomic
                self._atomic_rooms = False  # commit kept, which a session that reuses as
                self._trim_rooms()  # it goes does not need (see "Recycling" in _arenas)
        except BaseException:
            self._lock.release()
            raise
        return True

    def _end_write(self, ok: bool, clean: bool = False, outer: bool = False) -> None:
        """End a session (``outer``: what :meth:`_begin_write` returned for it): the
        outermost one closes the operation and lets the lock go, even when an interrupt
        stops its reclaim (see "Interrupts")."""
        lock = self._lock
        if not ok:
            self._forget_rooms()  # (see "Interrupts")
            self._undo_rooms = []
        try:
            if lock.outermost() or (outer and self._unwind()):
                H = self._H
                undo, self._undo = self._undo, None
                if clean and undo is None:
                    ok = True  # what the session wrote before the refusal is whole, counted
                try:
                    if not ok and undo is not None and H is not None and not self._deleted:
                        try:
                            with signals_deferred():  # (a rollback is not left half done)
                                self._rollback(undo)
                            ok = True  # undone and recounted: nothing for the next writer
                        except Exception:
                            pass  # the dirty mark stays: the next writer repairs
                    elif ok and H is not None and not self._deleted:
                        if undo is not None:
                            undo.close()  # commit: before reclaim moves or frees a record
                            _crash_point("session.committed")
                            rooms, self._undo_rooms = self._undo_rooms, []
                            for room in rooms:  # garbage now: recycled as any other's
                                self._recycle(*room)  # (see "Recycling" in _arenas)
                            if rooms and not self._atomic_rooms:  # (a small write's few
                                held = sum(r[2] for r in rooms)  # rooms are reused as it goes)
                                self._atomic_rooms = held > _undo_small(H)
                        try:  # reclaim once per writer session: a bulk write's old records
                            self._maybe_reclaim()  # are all garbage by now: arenas just go
                            self._settle_rooms()  # (a big chunk's next rewrite reuses a room)
                        except Exception:
                            ok = False  # the write itself is done; the next writer repairs
                except BaseException:
                    ok = False  # (an interrupt)
                    raise
                finally:
                    if H is not None:
                        if ok:
                            H[L.H_DIRTY] = 0  # an exception leaves it: the next writer repairs
                        H[L.H_HOLDER] = 0
                        if H[L.H_OPSEQ] & 1:  # (not twice: see _end_interrupted)
                            H[L.H_OPSEQ] += 1  # close the operation: even
        finally:
            lock.release()

    def repair_session(self) -> None:
        """In this thread's writer session, after an exception stopped a write midway (an
        interrupt can leave the counts and this handle's rooms half updated): recount as the
        next writer would, so that the session can go on writing (see "Interrupts").  The
        dirty mark stays, so the next writer recounts again unless the session succeeds.

        Raises
        ------
        RuntimeError
            If this thread does not hold the writer lock.
        """
        if not self._lock.depth:
            raise RuntimeError(f"repair_session() outside a writer session of {self.name!r}")
        self._forget_rooms()
        if self._undo is None:  # (an atomic session frees nothing until it ends, and a
            self._set_counts(*self._recover())  # recount would unlink what its undo needs)

    def _end_interrupted(self, outer: bool, commit: bool = False) -> None:
        """End this thread's outermost session (``outer``) if it still holds the lock: an
        interrupt raised where its end was called, before the end could run (see
        "Interrupts").  The signals wait meanwhile.  ``commit``: an atomic session whose
        writes are whole commits, if its end had not begun to (its log still open)."""
        if outer and self._lock.depth:
            with signals_deferred():
                self._end_write(commit and self._undo is not None, outer=True)

    def _unwind(self) -> bool:
        """At the end of an outermost session that holds the lock more than once: drop the
        levels of nested sessions whose end an interrupt skipped (see "Interrupts")."""
        lock = self._lock
        while lock.depth > 1:
            lock.release()
        return lock.outermost()

    def _start_undo(self) -> None:
        """Make this thread's outermost session atomic (lock held, nothing changed yet):
        open the undo log (see "Rollback")."""
        log = self._undo_log()
        log.open()
        self._undo_rooms = []
        self._undo = log

    def _undo_log(self) -> UndoLog:
        """This handle's view of the table's undo log (see :mod:`._undo`)."""
        log = self._undo_map
        if log is None:
            log = self._undo_map = UndoLog(self)
        return log

    def _rollback(self, undo: UndoLog) -> None:
        """Undo an atomic session's changes (lock held; see "Rollback"): this handle's
        session that raised, or a dead writer's (its log in shared memory).  Each key
        gets the reference of its oldest entry, so a rollback run twice (a writer killed
        while rolling back) ends in the same state."""
        H = self._H
        entries = undo.entries()
        olds: dict[bytes, tuple[int, int]] = {}
        for kb, h, old in entries or ():
            if old == NEW_KEYS:  # many new keys (_log_new_keys): delete them
                for ref in h.tolist():
                    r = self._record_at(ref)
                    if r is not None:
                        k = self._key_at(*r)
                        olds.setdefault(k, (key_hash(k), 0))
            else:
                olds.setdefault(kb, (h, old))
        for kb, (h, old) in olds.items():
            slot = self._find(kb, h)[0]
            if slot >= 0:
                self._store_ref(slot, old if old > 1 else L.TOMBSTONE)
            elif old > 1:  # deleted in the session: its old record gets a slot again
                self._grow_if_needed()
                self._store_new_slot(h, old)
        count_write(H)
        _crash_point("rollback.restored")
        if entries is not None:
            self._give_back_tail(undo.tail())
        self._set_counts(*self._recover())
        undo.close()

    def _log_undo(self, kb: bytes, h: int, slot: int, ref: int) -> None:
        """In an atomic session: log what key ``kb`` referenced before this change (before
        the change is stored: see :mod:`._undo`)."""
        undo = self._undo
        if undo is not None:
            undo.key(kb, h, ref if slot >= 0 else 0)

    def _log_new_keys(self, refs: np.ndarray) -> None:
        """In an atomic session: keys absent before are about to be published (a bulk
        insert; ``refs``: their new records' uint64 references): one entry for all."""
        undo = self._undo
        if undo is not None:
            undo.new_keys(refs)


class WriteMixin(SessionMixin):
    """The write operations of a table handle (each in a session, see :class:`SessionMixin`)."""

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
            except BaseException:  # (see "Interrupts")
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
        "Operations") and the write counter.  When either moved, ``recheck()`` is called
        under the lock (another writer ran: is what the caller cached still right?); True
        lets the write go on.  Without it, or when it returns False, nothing is written and
        None is returned: the caller then writes the general way.  Inside a session of
        this thread the value is written in that session (the pair then holds its
        sequence, which the session's later writes keep).  ``value`` may be a filled
        :class:`Reservation`, published under ``pk``.  ``lease``: while another writer
        waits, also reserve the record of this handle's next value of the same length
        (see "Leases" in :class:`Reservation`; taken with :func:`._reserve.lease_for`).

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
                except BaseException:  # (see "Interrupts")
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
            except BaseException:  # (see "Interrupts")
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
        outer = self._begin_write(DEFAULT_TIMEOUT)
        ok = False
        room = None
        try:
            if not self._bag:
                # a big value, another writer waiting, and the session this call's own:
                # copy the value without the lock (see Reservation)
                if v.nbytes >= RESERVE_MIN and self._lock.depth == 1 and self._lock.contended():
                    room = self.reserve((kb, h), v.nbytes)
                if room is None:
                    self._put(kb, h, [v], "replace")
            else:
                old = self._existing(kb, h)
                if self._dup or not any(o == v for o in old):
                    self._put(kb, h, old + [v], "replace")
            ok = True
        finally:
            try:
                self._end_write(ok, outer=outer)
            except BaseException:  # (see "Interrupts")
                self._end_interrupted(outer)
                raise
        if room is not None:
            self._fill_reserved(room, v)

    def _fill_reserved(self, room: Reservation, v: memoryview) -> None:
        """Copy a big value into its reserved record without the writer lock, while another
        writer works, then publish it under the lock (see :class:`Reservation`)."""
        try:
            room.buffer[:] = v
        except BaseException:
            with self.writer(None):
                room.abandon()
            raise
        with self.writer(None):
            room.publish()

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
