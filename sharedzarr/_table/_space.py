"""Space accounting and compaction: count garbage, decide when to reclaim, compact.

Overwritten and deleted records become garbage.  When garbage exceeds
``RECLAIM_RATIO`` of the live data (``RECLAIM_RATIO_BUSY`` inside a writer session),
the writer copies the live records of the most wasteful arena forward, republishes
them (through the index's slot store) and retires the arena (the allocator's pool).

Garbage other handles keep
--------------------------
The rooms of garbage records are reused by the handle that freed them (the allocator's
recycler, see :mod:`._arenas`); the rooms of a handle that stopped writing (a worker that
exited, or went idle) are garbage no one reuses until compaction, and their pages stay
allocated.  So a write that replaces half the table or more, when that garbage has grown
by over ``1/ROOMS_SHARE`` of the live data (and ``ROOMS_MIN``) since this handle last
looked, first walks the
arenas for garbage records (no key references them) that are not its own rooms, and
gives their pages back (:meth:`._arenas.ArenaMixin._free_room_pages`: same grace
protocol as reuse; the record heads stay, so the owner may still write there).  At most
once per ``_ROOMS_EVERY_NS`` per handle, and before the write appends anything.

Words stored here, and only here
--------------------------------
``H_GARBAGE`` and ``H_LIVE_RECORD`` (the table's totals).  The per-arena counts
(``A_LIVE``, ``A_GARBAGE``) are decided here and stored by the allocator
(:meth:`._arenas.ArenaMixin._account_arena`).  Everything here runs with the writer
lock held.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import _layout as L
from .._faults import crash_point as _crash_point
from .._index import key_hash
from .._segment import allocated_bytes, out_of_space_message, shm_space
from ..errors import OutOfSpaceError
from ._arenas import RECYCLE_MIN
from ._header import _OFFSET_BITS, Segment, _arena_word
from ._index import IndexMixin

__all__ = [
    "ROOMS_MIN",
    "ROOMS_SHARE",
    "RECLAIM_MIN",
    "RECLAIM_RATIO",
    "RECLAIM_RATIO_BUSY",
    "SpaceMixin",
]


RECLAIM_MIN = 1 << 20  # don't bother reclaiming less garbage than this
RECLAIM_RATIO = 0.4  # reclaim when garbage > this fraction of live records (<= 1.5x memory)
RECLAIM_RATIO_BUSY = 1.0  # ... and within a long writer session, at this fraction
ROOMS_SHARE = 128  # free other handles' rooms when they grew by 1/ROOMS_SHARE of the live data
ROOMS_MIN = 64 << 10  # ... and by at least this much
_ROOMS_EVERY_NS = 1_000_000_000  # ... at most once per this long per handle


class SpaceMixin(IndexMixin):
    """Garbage accounting, reclaim policy and compaction (lock held throughout)."""

    def _add_live_record(self, total: int) -> None:
        """A record of ``total`` bytes became live (published, or appended and abandoned).

        Recycled rooms taken for records since the last call stop being garbage now.
        """
        H = self._H
        H[L.H_LIVE_RECORD] += total
        if self._recycler is not None:
            taken = self._recycled_taken()
            if taken:
                H[L.H_GARBAGE] -= min(taken, H[L.H_GARBAGE])

    def _check_room(self, nbytes: int) -> None:
        """Refuse, before anything is stored, a bulk write of ``nbytes`` that cannot fit.

        The write stores at least ``nbytes``; the records it replaces (at most every live
        record) and the garbage already there (at most ``H_GARBAGE``) can give it room
        back, and so can the retired arenas of the pool and the current arena's reserved
        tail; the rest must come from the free space of ``/dev/shm``.  When even that
        upper bound falls short, the write would fill ``/dev/shm`` (every other user of
        it then fails too) and stop part-way, leaving the chunks it had stored: raise
        :class:`~sharedzarr.errors.OutOfSpaceError` instead, with nothing changed.  A write
        that might fit is never refused; one that fails later raises where it fails.
        """
        H = self._H
        short = nbytes - H[L.H_LIVE_RECORD] - H[L.H_GARBAGE] - L.RESERVE_STEP
        if short <= 0:
            return  # (every rewrite, and every write the table's own memory covers)
        space = shm_space()
        if space is None or short <= space[0]:
            return
        pooled = sum(
            allocated_bytes(self._seg_name_arena(H[w])) for w in self._pool_words() if H[w]
        )
        if short <= space[0] + pooled:
            return
        err = OutOfSpaceError(out_of_space_message(self.name, "the write", short, refused=True))
        err.changed_nothing = True  # type: ignore[attr-defined]  # the session ends clean
        raise err

    def _set_space(self, live_record: int, garbage: int) -> None:
        """Store recounted totals (recovery; ``clear`` stores zeros)."""
        H = self._H
        H[L.H_LIVE_RECORD] = live_record
        H[L.H_GARBAGE] = garbage

    def _garbage(self, ref: int, total: int) -> None:
        """Account the record at ``ref`` (``total`` bytes) as garbage."""
        r = self._record_at(ref)
        if r is None:
            H = self._H
            H[L.H_GARBAGE] += total
            H[L.H_LIVE_RECORD] -= total
            return
        self._garbage_in(r[0], ref >> _OFFSET_BITS, [(ref, total)], total)

    def _garbage_in(
        self, seg: Segment, aid: int, rooms: list[tuple[int, int]], nbytes: int
    ) -> None:
        """Account records of arena ``aid`` (``(reference, record length)`` of each,
        ``nbytes`` in all) as garbage: one update of the counts for all of them."""
        H = self._H
        H[L.H_GARBAGE] += nbytes
        H[L.H_LIVE_RECORD] -= nbytes
        if seg.readonly:
            return
        w = seg.words
        live = w[L.A_LIVE] - nbytes
        garbage = w[L.A_GARBAGE] + nbytes
        self._account_arena(seg, live, garbage)
        if (
            live <= 0
            and aid != H[L.H_CUR_ARENA]
            and self._undo is None
            and not (w[L.A_NOREUSE] == L.NOREUSE_OWN and nbytes >= RECYCLE_MIN)
            and not self._reserved(aid)
        ):
            # (an atomic session may restore its records: _reclaim retires it later; a big
            # value's own segment is kept for its room, see "Recycling" in _arenas)
            # nothing left in it: reuse its pages (or free a big value's own segment)
            H[L.H_GARBAGE] -= min(garbage, H[L.H_GARBAGE])
            self._retire(aid)
        else:
            recycle = self._recycle
            for ref, total in rooms:  # each room may take a record of its length
                recycle(seg, ref, total)

    def _count_reserved_live(self, ref: int, total: int) -> None:
        """A recovery ran while the record at ``ref`` was reserved and counted it as garbage
        (it was not published): count it live in its arena again, before it is published."""
        H = self._H
        H[L.H_GARBAGE] -= min(total, H[L.H_GARBAGE])
        r = self._record_at(ref)
        if r is not None:
            seg = r[0]
            live, garbage = _arena_word(seg, L.A_LIVE), _arena_word(seg, L.A_GARBAGE)
            self._account_arena(seg, live + total, max(garbage - total, 0))

    def _abandon(self, new_ref: int, total: int) -> None:
        """Account an appended, never published record as garbage (lock held)."""
        self._add_live_record(total)
        self._garbage(new_ref, total)

    def _maybe_reclaim(self, ratio: float = RECLAIM_RATIO) -> None:
        H = self._H
        garbage = H[L.H_GARBAGE]
        if garbage <= RECLAIM_MIN or garbage <= H[L.H_LIVE_RECORD] * ratio:
            return
        # garbage this handle is about to recycle is not worth compacting (see _arenas)
        garbage -= self._recyclable()
        if garbage <= RECLAIM_MIN or garbage <= H[L.H_LIVE_RECORD] * ratio:
            return
        self._reclaim()

    def _reclaim(self) -> int:
        """Compact the most wasteful arenas until garbage is low (writer lock held).

        Not while an atomic session logs its changes: a rollback needs every old record
        where it was (see ``_session``); the session's end reclaims.
        """
        if self._undo is not None:
            return 0
        freed = 0
        H = self._H
        ids = self._arena_ids()
        for _ in range(64):
            garbage = H[L.H_GARBAGE]
            if garbage <= RECLAIM_MIN // 2 or garbage <= H[L.H_LIVE_RECORD] * RECLAIM_RATIO / 2:
                break
            victim = self._most_garbage(ids)
            if victim is None:
                break
            ids.remove(victim)
            if not self._reserved(victim):  # (a writer copies into it: leave it for now)
                freed += self._compact(victim)
        return freed

    def _most_garbage(self, ids: list[int]) -> int | None:
        """The arena with the largest share of garbage (frees most per byte copied)."""
        best, best_gain = None, 0.0
        for aid in ids:
            r = self._arenas.get(aid)
            if r is None:
                try:
                    r = self._map_arena(aid)
                except Exception:
                    continue
            if not _arena_word(r, L.A_ID):
                continue  # retired, waiting in the pool: nothing to compact
            g = _arena_word(r, L.A_GARBAGE)
            gain = g / (g + _arena_word(r, L.A_LIVE) + 1)
            if gain > best_gain:
                best, best_gain = aid, gain
        return best

    def _maybe_free_foreign_rooms(self, nbytes: int) -> None:
        """Before a write of ``nbytes``: give back the pages of the garbage other handles
        keep, when it pays (see "Garbage other handles keep")."""
        H = self._H
        live = H[L.H_LIVE_RECORD]
        if self._undo is not None or nbytes < live // 2:
            return
        # (not _recyclable(): it lets go of rooms idle for a second, which this write is
        # about to reuse)
        foreign = H[L.H_GARBAGE] - self._rooms_held()
        self._rooms_seen = seen = min(self._rooms_seen, foreign)  # (compaction lowers it)
        if foreign - seen < max(ROOMS_MIN, live // ROOMS_SHARE):
            return
        now = time.monotonic_ns()
        if now - self._rooms_at < _ROOMS_EVERY_NS:
            return
        self._rooms_at, self._rooms_seen = now, foreign
        self._free_garbage_pages(lambda: self._live_refs() | self._own_rooms())  # keys', ours

    def _free_garbage_pages(self, keep: Callable[[], set[int]]) -> int:
        """Give back the pages of the garbage records (no key references them) except those
        at the references ``keep()`` returns, in the arenas that allow it; their heads stay,
        so whoever keeps a room may still write a record there (see "Garbage other handles
        keep").  Returns the bytes of the records whose pages were given back."""
        candidates = self._room_candidates()
        if not candidates:
            return 0
        kept = keep()
        rooms = []
        for aid, seg in candidates:
            for off, total, klen, n in self._records(seg):
                here = L.make_ref(aid, off)
                if total >= RECYCLE_MIN and here not in kept:
                    rooms.append((here, total, L.value_offset(klen, n)))
        return self._free_room_pages(rooms)

    def _compact(self, aid: int) -> int:
        """Move the live records of arena ``aid`` forward, then unlink it."""
        H = self._H
        self._seal_current(aid)
        seg = self._arenas.get(aid) or self._map_arena(aid)
        garbage = _arena_word(seg, L.A_GARBAGE)
        mm = seg.mm
        walk = self._records(seg) if _arena_word(seg, L.A_LIVE) > 0 else ()  # all dead: none
        for off, total, klen, n in walk:
            ko = off + 16 + 8 * n
            kb = mm[ko : ko + klen]
            slot, ref, _s, _o = self._find(kb, key_hash(kb))
            if slot >= 0 and ref == L.make_ref(aid, off):
                new_ref = self._append_raw(seg.buf[off : off + total])
                self._store_ref(slot, new_ref)  # republish
                _crash_point("reclaim.moved")
        H[L.H_GARBAGE] -= min(garbage, H[L.H_GARBAGE])
        self._account_arena(seg, 0, _arena_word(seg, L.A_GARBAGE))
        self._retire(aid)
        return garbage
