"""The writer session: lock, holder, dirty word, operation sequence, rollback.

A session (:meth:`SessionMixin.writer`, or the one a single operation of :mod:`._write`
opens) takes the writer lock (:mod:`sharedzarr._lock`), stores the holder, repairs after
a dead writer (:mod:`._recovery`), marks the header dirty, and at its end reclaims once
and clears the mark.

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
``H_HOLDER``, ``H_DIRTY``, ``H_OPSEQ``.  The entry counts that a recovery recomputes are
stored by :mod:`._write`, which owns them (``_set_counts``).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from .. import _layout as L
from .. import _proc
from .._faults import crash_point as _crash_point
from .._index import key_hash
from .._threads import signals_deferred
from ..errors import AccessDeniedError
from ._header import DEFAULT_TIMEOUT, count_write
from ._ownership import _OWNED, _register_owned
from ._read import ReadMixin
from ._recovery import RecoveryMixin
from ._undo import NEW_KEYS, UndoLog

__all__ = [
    "PART_WAY_NOTE",
    "READER_PAUSE_NS",
    "UNDO_SMALL_MIN",
    "UNDO_SMALL_SHARE",
    "SessionMixin",
]

#: How long a writer defers its next operation for a reader that asked (see above).
READER_PAUSE_NS = 100_000_000


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


#: A write may be made atomic by default (:meth:`_Session.undo_if_small`) when it stores at
#: most this share of the live data, or at most ``UNDO_SMALL_MIN`` bytes: its undo keeps
#: the records it replaces until it ends (a whole rewrite would need twice the memory).
UNDO_SMALL_SHARE = 1 / 16
UNDO_SMALL_MIN = 1 << 20


def _undo_small(H: Any) -> int:
    """The most bytes a write may replace and still count as small (see above)."""
    return max(int(H[L.H_LIVE_RECORD] * UNDO_SMALL_SHARE), UNDO_SMALL_MIN)


class SessionMixin(ReadMixin, RecoveryMixin):
    """The writer session of a table handle: lock, holder, dirty mark, operation sequence,
    rollback (see the module docstring)."""

    _sessions = 0  # writer sessions this handle opened (see _begin_write)

    if TYPE_CHECKING:

        def _set_counts(self, keys: int, objects: int, live_value: int) -> None:
            """Store the entry counts (:mod:`._write`'s, which owns them)."""

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
            (see "Rollback" in :mod:`sharedzarr._table._session`), so that nothing of it
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
