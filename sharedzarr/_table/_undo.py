"""The undo log of an atomic writer session, in shared memory, so that a writer killed
midway is rolled back by the next one.

An atomic session (``writer(atomic=True)``, an array's ``atomic()`` block) changes keys
by publishing new references; the records the old references point to stay where they
are until the session ends (see "Rollback" in :mod:`._session`).  Undoing the session is
therefore storing the old references back.  This module keeps the list of them where
every process can read it: the segment ``/sz.T.undo``, written only here.

Write-ahead protocol
--------------------
* :meth:`UndoLog.open` (the outermost atomic session starts, lock held) writes the log's
  header: a magic, the session's operation number (``H_OPSEQ``, odd) and where the
  session starts appending (the allocator's tail mark).  Then it stores ``H_UNDO``, the
  number of valid bytes, which makes the log live.
* Before the session changes a key's slot, :meth:`UndoLog.key` (or
  :meth:`UndoLog.new_keys` for a bulk insert) appends an entry and then stores the new
  length in ``H_UNDO``.  A slot is stored only after its entry is counted, so every
  change a dead writer made has its entry below ``H_UNDO``; an entry past it was never
  acted on.
* The session commits with :meth:`UndoLog.close`, ``H_UNDO = 0``, before anything is
  freed or moved (reclaim).  A rollback closes it after the old references are back
  and recounted.
* The next writer that finds the dirty mark and ``H_UNDO`` set reads the entries
  (:meth:`UndoLog.entries`) and restores them (``_session``'s ``_rollback``), inside the
  dead writer's still odd operation, so no snapshot reader accepts a state in between.
  A restore is idempotent (each key gets the reference it had before the session), so a
  writer killed while rolling back is rolled back again by the next.
* A log whose header does not name the operation that is open, or the one just closed by
  a session whose rollback failed (the segment removed from outside and made again, a
  damaged header, lengths out of bounds) is not trusted:
  :meth:`UndoLog.entries` returns None and the recovery keeps what was published, as
  after a session that was not atomic.

Entry format (little-endian, 8-byte aligned): ``u32 kind, u32 n, u64 a, u64 b`` then data.
Kind 1, one key: ``n`` key length, ``a`` hash, ``b`` old reference (0: the key was
absent), then the key bytes.  Kind 2, keys absent before a bulk insert: ``a`` keys, then
the new reference of each (u64; one copy of the bulk insert's own column of them: the
rollback reads each key from its new record, which the session wrote before it logged
the entry and does not free before it ends).

Space: the segment is sparse (:data:`LOG_SPAN` of address space); it is allocated
(``posix_fallocate``) ahead of the entries in steps of :data:`LOG_STEP`, so a full
``/dev/shm`` is an ``OutOfSpaceError`` before the change it would log, and the pages
beyond the first :data:`LOG_FIRST` bytes (enough for a small write's entries: every
table an array writes a few chunks of has a log) are given back when a session ends.

Words stored here, and only here
--------------------------------
``H_UNDO``; and every byte of the undo segment.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from .. import _layout as L
from .._segment import Segment, map_os_errors
from .._segment import exists as _seg_exists

__all__ = ["LOG_FIRST", "LOG_SPAN", "LOG_STEP", "NEW_KEYS", "UndoLog"]

#: The undo segment's size: address space only, allocated as entries need it.
LOG_SPAN = 1 << 30
#: Allocation step ahead of the entries.
LOG_STEP = 64 << 10
#: Bytes allocated when the segment is made, and kept between sessions (about 250 entries
#: of short keys: a small write's, see ``undo_if_small`` in ``_session``).
LOG_FIRST = 8 << 10
#: The old reference of an entry that stands for many keys absent before (a bulk insert).
NEW_KEYS = -1

_MAGIC = b"SZUNDO\0\0"
_UNDO_HDR = struct.Struct("<8sQQQ")  # magic, operation number, tail arena id, tail offset
_START = 64  # the first entry
_UNDO_ENTRY = struct.Struct("<IIQQ")
_ONE, _MANY = 1, 2


def _pad(n: int) -> int:
    return (n + 7) & ~7


class UndoLog:
    """The undo log of the table of handle ``table``, mapped on first use.

    One per table handle; only the writer-lock holder calls it.  See the module
    docstring for the protocol.
    """

    __slots__ = ("_reserved", "_seg", "_used", "mode", "name", "table", "uid")

    def __init__(self, table: Any) -> None:
        self.table = table  # (its header view ``_H`` is read at each call: a remap replaces it)
        self.name, self.mode, self.uid = table.name, table.mode, table._uid
        self._seg: Segment | None = None
        self._used = 0  # bytes written, this session
        self._reserved = 0  # bytes allocated, this session

    # -- the mapping -------------------------------------------------------------------
    def _segment(self, create: bool) -> Segment | None:
        """The mapped undo segment (mapped again once it was unlinked: one ``fstat``); made
        when ``create`` and it does not exist yet."""
        seg = self._seg
        if seg is not None and not seg.closed:
            if not seg.unlinked():
                return seg
            self.release()
        name = L.undo_segment_name(self.name)
        with map_os_errors(self.name, f"undo log {name}"):  # (lock held: no other creator)
            if _seg_exists(name):
                seg = Segment.attach(name, uid=self.uid, keep_fd=True)
            elif create:
                seg = Segment.create(name, LOG_SPAN, self.mode, reserve=LOG_FIRST, keep_fd=True)
            else:
                return None
        if seg.size < LOG_SPAN or seg.readonly:
            seg.close()
            return None
        self._seg = seg
        return seg

    def _ensure(self, seg: Segment, end: int) -> None:
        """Allocate the log up to byte ``end`` (``OutOfSpaceError`` when ``/dev/shm`` is full;
        a clear error past :data:`LOG_SPAN`)."""
        if end <= self._reserved:
            return
        if end > LOG_SPAN:
            raise RuntimeError(
                f"table {self.name!r}: an atomic writer session changed too many keys for its "
                f"undo log ({LOG_SPAN >> 20} MiB); split the work into several atomic "
                "sessions, or write it in a session that is not atomic"
            )
        step = max(LOG_STEP, _pad(end - self._reserved))
        step = min(step, LOG_SPAN - self._reserved)
        with map_os_errors(self.name, "undo log"):
            seg.reserve(self._reserved, step)
        self._reserved += step

    # -- a session ---------------------------------------------------------------------
    def open(self) -> None:
        """Start the log of the atomic session that just opened (``H_OPSEQ`` odd, lock
        held), with where it starts appending: the current arena's id and bump pointer
        (a rollback gives back what lies beyond: ``_arenas._give_back_tail``)."""
        t = self.table
        cur = t._H[L.H_CUR_ARENA]
        arena = t._arenas.get(cur) if cur else None
        tail = (0, 0) if arena is None or arena.closed else (cur, int(arena.words[L.A_USED]))
        seg = self._segment(create=True)
        if seg is None:
            raise RuntimeError(
                f"table {self.name!r}: its undo log segment cannot be written (made by "
                "another user or with a mode that lets this one read only); atomic sessions "
                "need it"
            )
        self._reserved = LOG_FIRST  # (allocated when the segment was made; never given back)
        assert seg.buf is not None
        _UNDO_HDR.pack_into(seg.buf, 0, _MAGIC, self.table._H[L.H_OPSEQ], tail[0], tail[1])
        self._used = _START
        self.table._H[L.H_UNDO] = _START  # live

    def key(self, kb: bytes, h: int, old: int) -> None:
        """Log that key ``kb`` (hash ``h``) referenced ``old`` (0: absent) before the change
        about to be stored."""
        seg = self._seg
        assert seg is not None and seg.buf is not None
        at = self._used
        end = at + _UNDO_ENTRY.size + _pad(len(kb))
        if end > self._reserved:
            self._ensure(seg, end)
        buf = seg.buf
        _UNDO_ENTRY.pack_into(buf, at, _ONE, len(kb), h, old)
        buf[at + _UNDO_ENTRY.size : at + _UNDO_ENTRY.size + len(kb)] = kb
        self._used = end
        self.table._H[L.H_UNDO] = end  # after the bytes: the entry counts from now on

    def new_keys(self, refs: np.ndarray) -> None:
        """Log keys absent before, about to be published: the uint64 references ``refs``
        of their new records, already written."""
        seg = self._seg
        assert seg is not None and seg.buf is not None
        data = np.ascontiguousarray(refs, dtype=np.uint64)
        at = self._used
        end = at + _UNDO_ENTRY.size + data.nbytes
        if end > self._reserved:
            self._ensure(seg, end)
        buf = seg.buf
        _UNDO_ENTRY.pack_into(buf, at, _MANY, 0, len(data), 0)
        p = at + _UNDO_ENTRY.size
        np.frombuffer(buf, dtype=np.uint64, count=data.size, offset=p)[:] = data
        self._used = end
        self.table._H[L.H_UNDO] = end

    def tail(self) -> tuple[int, int]:
        """Where the logged session started appending (see :meth:`open`)."""
        seg = self._segment(create=False)
        if seg is None or seg.buf is None:
            return 0, 0
        _m, _op, aid, off = _UNDO_HDR.unpack_from(seg.buf, 0)
        return int(aid), int(off)

    def close(self) -> None:
        """End the log: the session committed, or its rollback is complete.  Gives back the
        pages past the first step."""
        self.table._H[L.H_UNDO] = 0
        seg = self._seg
        if seg is not None and not seg.closed and self._reserved > LOG_FIRST:
            seg.discard(LOG_FIRST, self._reserved - LOG_FIRST)
        self._used = self._reserved = 0

    # -- reading it back ---------------------------------------------------------------
    def entries(self) -> list[tuple[Any, Any, int]] | None:
        """The logged changes, oldest first: ``(key bytes, hash, old ref)``, or ``(None,
        uint64 array of new refs, NEW_KEYS)``; None when the log is not the open
        operation's (see the module docstring: then it is not trusted)."""
        end = self.table._H[L.H_UNDO]
        seg = self._segment(create=False)
        if seg is None or seg.buf is None or not _START <= end <= seg.size:
            return None
        buf = seg.buf
        magic, opseq, _aid, _off = _UNDO_HDR.unpack_from(buf, 0)
        now = self.table._H[L.H_OPSEQ]  # (the logged operation is open, or an ended
        if magic != _MAGIC or not opseq & 1 or now not in (opseq, opseq + 1):  # rollback failed)
            return None
        out: list[tuple[Any, Any, int]] = []
        at = _START
        while at < end:
            if at + _UNDO_ENTRY.size > end:
                return None
            kind, n, a, b = _UNDO_ENTRY.unpack_from(buf, at)
            p = at + _UNDO_ENTRY.size
            if kind == _ONE:
                nxt = p + _pad(n)
                if nxt > end:
                    return None
                out.append((bytes(buf[p : p + n]), a, b))
            elif kind == _MANY:
                nxt = p + 8 * a
                if nxt > end:
                    return None
                refs = np.frombuffer(buf, dtype=np.uint64, count=a, offset=p).copy()
                out.append((None, refs, NEW_KEYS))
            else:
                return None
            at = nxt
        return out

    def release(self) -> None:
        """Unmap (the handle closes); the log itself stays."""
        seg, self._seg = self._seg, None
        if seg is not None:
            seg.close()
