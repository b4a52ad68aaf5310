"""Data arenas: this handle's map of them, and the allocator that appends records.

The arena map caches a mapping per data segment (bounded by ``MAX_MAPPED``) and forgets
the ones a writer unlinked.  The allocator hands out room for a record: the room of a
garbage record of the same length (recycled, see below), in the current arena, in a
retired arena taken back from the pool (renamed to a fresh id), or in a new segment (a
big value gets one of its own).

Recycling (why a rewrite costs a copy, not fresh pages or a compaction)
-----------------------------------------------------------------------
When a write replaces a record, the old one becomes garbage and this handle keeps its
place (:class:`_Recycler`, process-local: only the writer that freed a record knows it).
Each room has one keeper: a child forked with the handle starts with none
(:meth:`ArenaMixin._forget_rooms`), else it and its parent would both write
a record into one room, and the first one's chunk would be lost; a session that raised
drops its rooms too (an interrupt may have left one on two lists: see "Interrupts" in
``_session``).
Its room takes a new record of exactly the same length (so the arena stays walkable by
its length words) once three things hold, in this order:

1. the reuse epoch ``H_REUSE`` was bumped after the record became garbage.  A copying
   reader loads the epoch before its probe and again after its copy (invariant I2 of
   :mod:`._read`); one that found the record did so before it became garbage, so it sees
   the bump and reads again;
2. at least ``RECYCLE_GRACE_NS`` passed since that bump;
3. the arena is still linked (another writer's compaction or clear may have unlinked it:
   its mapping here outlives the name, so the handle first forgets the arenas unlinked
   since it last looked), its ``A_ID`` still is its id and ``A_NOREUSE`` is 0.  A reader
   handing out a zero-copy view stores ``A_NOREUSE`` and then checks the epoch (I3): a
   view made before the bump has its mark visible here long since; one made after it
   fails its epoch check.

The epoch is bumped for the rooms freed since the last bump when a writer takes a room,
and when a write session that freed one of ``SETTLE_MIN`` or more ends
(:meth:`ArenaMixin._settle_rooms`): a big chunk rewritten now and again later reuses the
room its previous version left, instead of needing a third room while that one waits
for the next take.
Bumps are at least ``RECYCLE_GRACE_NS // 2`` apart, so copying readers retry rarely (and
one whose copy is longer makes its last attempts under the writer lock, see I2).  A
record freed inside an atomic session is recycled only once the session commits (a
rollback may restore it until then: ``_session`` hands the rooms over), and a record in a
read-only mapping never is.  So a whole rewrite in an atomic session reuses the rooms the
previous one left: such sessions keep two versions' worth of memory, as copy-on-write
stores do.  A session that is not atomic needs no more than a batch's worth: the first
one after such a commit lets the rooms go (``_trim_rooms``).  A big value's own segment
holds one record: when that record becomes garbage the segment is kept for its room
instead of unlinked (compaction unlinks it if the room is not taken).  A crash
while a recycled room is being written leaves it garbage: no slot references it until
the record is whole and published.  The recycled bytes leave the garbage counts when the
record is written (``A_GARBAGE`` here, ``H_GARBAGE`` by :mod:`._space` through
:meth:`ArenaMixin._recycled_taken`); garbage a handle keeps for recycling is not
compacted by it (:meth:`ArenaMixin._recyclable`) while it keeps using it, and it lets
go of it after ``_RECYCLE_IDLE_NS`` unused.  A *swap*: when a put replaces a record by one
of the same length and the room it gets is in the replaced record's arena, the arena's
live and garbage bytes stand (one record's worth leaves garbage, the old one's joins it),
and so do the table's: nothing is counted (``swap_aid`` of :meth:`ArenaMixin._room`; the
write module then only keeps the old record's room, see ``_put_one``).

Words stored here, and only here
--------------------------------
``H_CUR_ARENA``, ``H_NEXT_ARENA``, ``H_REUSE`` and the pool words of the header; every
arena header word (``A_USED``, ``A_RESERVED``, ``A_LIVE``, ``A_GARBAGE``, ``A_ID``,
``A_NOREUSE``).  ``A_LIVE``/``A_GARBAGE`` are stored here too, although their policy is
the space accounting's (:mod:`._space`): the allocator writes them whenever it creates,
reuses or retires an arena, so keeping their stores here spares the allocator an upward
call; :mod:`._space` changes them through :meth:`ArenaMixin._account_arena`.  A reader's
no-reuse mark (``A_NOREUSE``) is stored by :meth:`ArenaMixin._pin`, which the read path
calls.
"""

from __future__ import annotations

import collections
import struct
import time
from collections.abc import Iterator
from typing import Any

from .. import _layout as L
from .._faults import CRASHES
from .._faults import crash_point as _crash_point
from .._lock import reservation_held
from .._segment import exists as _seg_exists
from .._segment import list_names, map_os_errors, segment_path, take_name
from .._segment import unlink as _unlink
from ..errors import SharedZarrError
from ._header import (
    _OFFSET_BITS,
    _OFFSET_MASK,
    Segment,
    TableBase,
    _arena_word,
    count_reclaim,
)

__all__ = ["MAX_MAPPED", "SETTLE_MIN", "ArenaMixin", "init_arena_ids"]

_REC_HEAD = L.REC_HEAD  # assigned, not imported: see _header, "Hot paths"
_REC_HEAD1 = L.REC_HEAD1

MAX_MAPPED = 4096  # arena mappings cached per handle (Linux allows ~65k maps)


def init_arena_ids(H: memoryview) -> None:
    """A new header: the first arena gets id 1 (0 means "no arena")."""
    H[L.H_NEXT_ARENA] = 1


def _set_arena_word(seg: Segment, i: int, v: int) -> None:
    seg.words[i] = v  # one aligned 8-byte store


class _Filler:
    """A value that writes itself into the record (see ``Table.insert_filled``)."""

    __slots__ = ("fill", "nbytes")

    def __init__(self, nbytes: int, fill: Any) -> None:
        self.nbytes = nbytes
        self.fill = fill


#: The pool keeps retired arenas while they hold at most a quarter of the live data, or at
#: most this much (a table emptied and filled again, as a stream reset between runs, then
#: reuses allocated pages instead of faulting in fresh ones; ``reclaim()`` frees them).
POOL_KEEP = 2 * L.MIN_ARENA

_NAME_TRIES = 64  # names of new segments tried past other users' files, then an error

RECYCLE_MIN = 4096  # shorter records are left to compaction (they cost no page faults)
_RECYCLE_MAX = 1 << 16  # rooms a handle keeps for recycling
#: A session that freed a room this big starts the rooms' grace period as it ends (for
#: smaller rooms the check would cost more than the memory it saves; see "Recycling").
SETTLE_MIN = 256 << 10
_RECYCLE_IDLE_NS = 1_000_000_000  # kept rooms unused this long are let go (compaction's)
_BUMP_EVERY_NS = L.RECYCLE_GRACE_NS // 2  # at most one reuse-epoch bump per this long


class _Recycler:
    """The rooms of garbage records this handle freed, by record length (see "Recycling").

    ``limbo`` holds rooms freed since the last epoch bump, ``cooling`` the rooms of each
    bump with its time, ``free`` the rooms past their grace period (not yet checked
    against pinning, which is checked when one is taken).
    """

    __slots__ = ("bumped", "cooling", "count", "free", "held", "limbo", "pending", "used")

    def __init__(self) -> None:
        self.limbo: list[tuple[int, int]] = []  # (record length, reference)
        self.cooling: collections.deque[tuple[int, list[tuple[int, int]]]] = collections.deque()
        self.free: dict[int, list[int]] = {}
        self.count = 0  # rooms held in all three
        self.held = 0  # their bytes
        self.bumped = 0  # monotonic ns of the last bump
        self.used = 0  # monotonic ns a room was last kept or taken
        self.pending = 0  # bytes taken, not yet out of H_GARBAGE (see _recycled_taken)

    def clear(self) -> None:
        self.limbo = []
        self.cooling.clear()
        self.free = {}
        self.count = 0
        self.held = 0


def _names_taken(table: str, what: str) -> SharedZarrError:
    return SharedZarrError(
        f"table {table!r}: the names of its next {what}s are taken by another user's files "
        f"(/dev/shm/sz.{table}.*, not owned by the table's user): remove them as that user or "
        "root, then write again"
    )


class ArenaMixin(TableBase):
    """The arena map and the allocator of a table handle (see the module docstring)."""

    # ------------------------------------------------------------------ arena map

    def _map_arena(self, aid: int) -> Segment:
        arenas = self._arenas
        if len(arenas) >= MAX_MAPPED:
            for k in list(arenas)[: MAX_MAPPED // 2]:
                arenas.pop(k).close()
        if self._H[L.H_RECLAIM] != self._reclaim_seen:
            self._forget_reclaimed()
        seg = Segment.attach(
            self._seg_name_arena(aid), readonly=self._ro, words_rw=True, uid=self._uid
        )
        arenas[aid] = seg
        return seg

    def _forget_reclaimed(self) -> None:
        """Drop cached mappings of arenas a writer unlinked (their memory can then be freed)."""
        self._reclaim_seen = self._H[L.H_RECLAIM]
        for aid in list(self._arenas):
            if not _seg_exists(self._seg_name_arena(aid)):
                self._arenas.pop(aid).close()

    def _record_at(self, ref: int) -> tuple[Segment, int] | None:
        aid, off = ref >> _OFFSET_BITS, ref & _OFFSET_MASK
        seg = self._arenas.get(aid)
        if seg is None:
            try:
                seg = self._map_arena(aid)
            except Exception:
                return None
        return seg, off

    def _records(self, seg: Segment) -> Iterator[tuple[int, int, int, int]]:
        """Walk an arena's records by their length words, up to its bump pointer:
        ``(offset, record length, key length, value count)`` of each (compaction, and
        the search for garbage rooms, read the arena this way)."""
        mm, off, used = seg.mm, L.ARENA_HEADER, _arena_word(seg, L.A_USED)
        while off < used:
            total, klen, n = _REC_HEAD.unpack_from(mm, off)
            if total < L.ALIGN or off + total > used:
                return
            yield off, total, klen, n
            off += total

    def _key_at(self, seg: Segment, off: int) -> bytes:
        _t, klen, n = _REC_HEAD.unpack_from(seg.mm, off)
        ko = off + 16 + 8 * n
        return seg.mm[ko : ko + klen]

    def _record_info(self, seg: Segment, off: int) -> tuple[int, list[int]]:
        total, klen, n, first = _REC_HEAD1.unpack_from(seg.mm, off)
        if n == 1:
            return total, [first]
        return total, list(struct.unpack_from(f"<{n}Q", seg.mm, off + 16))

    def _arena_ids(self) -> list[int]:
        """Ids of this table's arenas in ``/dev/shm``: its user's files, ids it allocated."""
        base = f"{L.PREFIX}{self.name}.a"
        nxt = self._H[L.H_NEXT_ARENA]
        out = []
        for n in list_names(base, uid=self._uid):
            rest = n[len(base) :]
            if rest.isdigit() and 0 < int(rest) < nxt:
                out.append(int(rest))
        return sorted(out)

    def _next_arena_name(self) -> tuple[int, str]:
        """The next arena id whose name is free: ``(id, name)``; ids whose name another
        user's file holds are skipped for good (``H_NEXT_ARENA`` moves past them)."""
        H = self._H
        for _ in range(_NAME_TRIES):
            aid = H[L.H_NEXT_ARENA]
            if aid > L.MAX_ARENA_ID:
                raise SharedZarrError(f"table {self.name!r}: arena ids exhausted; copy the table")
            name = self._seg_name_arena(aid)
            self._same_table()
            if take_name(name, self._uid):
                return aid, name
            H[L.H_NEXT_ARENA] = aid + 1
        raise _names_taken(self.name, "data segment")

    def _pin(self, seg: Segment, aid: int) -> bool:
        """Mark arena ``aid`` never to be reused (a zero-copy view into it is handed out).

        Returns False when it was already retired: the caller looks the key up again.
        The mark is stored before the id is checked; a writer checks the mark at least
        ``REUSE_GRACE_NS`` after it retired the arena, so one of the two sees the other.
        """
        w = seg.words
        if not w[7] & 1:  # A_NOREUSE has no NOREUSE_VIEW bit yet (a big value's own: 2)
            w[7] = w[7] | L.NOREUSE_VIEW
        return w[6] == aid  # A_ID

    # ------------------------------------------------------------------ allocator

    def _write_arena(self, total: int) -> tuple[Segment, int, int]:
        """Return ``(segment, arena id, offset)`` with room for a record of ``total`` bytes."""
        H = self._H
        cur = H[L.H_CUR_ARENA]
        seg = self._wseg
        if cur:
            name = self._seg_name_arena(cur)
            if seg is None or seg.closed or seg.name != name:
                # the current arena is mapped once, shared with the read path: a reused
                # arena's pages are then already in this process's page tables
                seg = self._arenas.get(cur)
                if seg is None or seg.closed or seg.name != name:
                    try:
                        seg = self._map_arena(cur)
                    except Exception:
                        seg = None
                        H[L.H_CUR_ARENA] = cur = 0
                self._set_wseg(seg)
            if seg is not None:
                used = _arena_word(seg, L.A_USED)
                if used + total <= seg.size:
                    return seg, cur, used
        # a new arena: sized to the table, or a dedicated one for a big record
        # arenas are sparse: memory is reserved as records arrive, so the size only bounds
        # how much garbage one arena can hold (about 1/8 of the live data) and how many
        # mappings a reader needs
        live = max(H[L.H_LIVE_RECORD], self._size_hint)
        size = L.MIN_ARENA
        while size < L.MAX_ARENA and size < live // 8:
            size *= 2
        dedicated = total + L.ARENA_HEADER > size // 4
        if dedicated:
            size = (total + L.ARENA_HEADER + 4095) & ~4095
            reserve = size
        else:
            pooled = self._take_pooled(size)
            if pooled is not None:
                seg, aid = pooled
                self._set_wseg(seg)
                H[L.H_CUR_ARENA] = aid
                return seg, aid, L.ARENA_HEADER
            reserve = L.ARENA_HEADER
        aid, name = self._next_arena_name()
        with map_os_errors(self.name, f"data segment {name}"):
            new = Segment.create(name, size, self.mode, reserve=reserve, keep_fd=True)
        noreuse = L.NOREUSE_OWN if dedicated else 0
        L.ARENA_HDR.pack_into(
            new.buf, 0, L.ARENA_MAGIC, size, L.ARENA_HEADER, reserve, 0, 0, aid, noreuse
        )
        H[L.H_NEXT_ARENA] = aid + 1
        _crash_point("arena.created")
        if dedicated:  # a big record's own segment: never the current arena
            self._dedicated = new
            return new, aid, L.ARENA_HEADER
        self._arenas[aid] = new
        self._set_wseg(new)
        H[L.H_CUR_ARENA] = aid
        return new, aid, L.ARENA_HEADER

    def _set_wseg(self, seg: Segment | None) -> None:
        """Make ``seg`` the arena this handle appends to (only it keeps a descriptor)."""
        old = self._wseg
        if old is not None and old is not seg:
            old.close_fd()
        self._wseg = seg

    def _pool_words(self) -> list[int]:
        """Header word indices of the free-arena pool's id words."""
        return [L.H_POOL + 2 * k for k in range(L.POOL_SLOTS)]

    def _take_pooled(self, size: int) -> tuple[Segment, int] | None:
        """Reuse a retired arena of about ``size`` bytes under a fresh id: ``(segment, id)``.

        Its pages are allocated (and mapped here, if this process wrote it), so appending to
        it costs a copy instead of fresh tmpfs pages.  Waits out the rest of the grace period
        (a fraction of a millisecond) rather than allocating.
        """
        H = self._H
        for w in self._pool_words():
            aid = H[w]
            if not aid:
                continue
            seg = self._arenas.get(aid)
            if seg is None or seg.closed:
                try:
                    seg = self._map_arena(aid)
                except Exception:
                    H[w] = 0  # gone (rm from outside): forget it
                    continue
            if not size // 2 <= seg.size <= size * 2:
                H[w] = 0  # sized for a table of another size: free its memory instead
                self._unlink_arena(aid)
                continue
            wait = H[w + 1] + L.REUSE_GRACE_NS - time.monotonic_ns()
            if wait > 0:
                time.sleep(min(wait, L.REUSE_GRACE_NS) / 1e9)
            if _arena_word(seg, L.A_NOREUSE) or _arena_word(seg, L.A_ID):
                H[w] = 0  # a reader holds a zero-copy view into it: never overwrite
                self._unlink_arena(aid)
                continue
            if H[L.H_NEXT_ARENA] > L.MAX_ARENA_ID:
                return None
            new, name = self._next_arena_name()
            H[w] = 0  # out of the pool (a crash from here on: recovery unlinks it)
            H[L.H_REUSE] += 1  # before any byte changes: copying readers in it retry
            count_reclaim(H)  # readers drop their mapping of the old name
            with map_os_errors(self.name, f"data segment {name}"):
                seg.rename(name)
            H[L.H_NEXT_ARENA] = new + 1
            self._arenas.pop(aid, None)
            self._arenas[new] = seg
            _set_arena_word(seg, L.A_USED, L.ARENA_HEADER)
            _set_arena_word(seg, L.A_LIVE, 0)
            _set_arena_word(seg, L.A_GARBAGE, 0)
            _set_arena_word(seg, L.A_ID, new)
            _crash_point("arena.reused")
            return seg, new
        return None

    def _retire(self, aid: int) -> None:
        """Arena ``aid`` holds no live record: park it in the pool for reuse, or unlink it."""
        H = self._H
        seg = self._arenas.get(aid)
        free = [w for w in self._pool_words() if not H[w]]
        if (
            free
            and seg is not None
            and not seg.closed
            and not seg.readonly
            and _arena_word(seg, L.A_NOREUSE) == 0
            and (L.POOL_SLOTS - len(free) + 1) * _arena_word(seg, L.A_RESERVED)
            <= max(H[L.H_LIVE_RECORD] // 4, POOL_KEEP)
        ):
            _set_arena_word(seg, L.A_ID, 0)  # retired: readers that pin it now look again
            _set_arena_word(seg, L.A_GARBAGE, 0)
            w = free[0]
            H[w + 1] = time.monotonic_ns()
            H[w] = aid
            _crash_point("arena.retired")
            return
        self._unlink_arena(aid)

    def _give_back_tail(self, mark: tuple[int, int]) -> None:
        """A rolled-back session appended past ``mark`` (``_undo.UndoLog.open``) in the
        arena that was current, and nothing references those records now: move the bump pointer
        back and give their pages back, unless a reader holds a zero-copy view into the
        arena.  The bytes will be written again, so copying readers retry (reuse epoch)."""
        cur, used = mark
        H = self._H
        seg = self._arenas.get(cur) if cur else None
        if (
            seg is None
            or seg.closed
            or seg.readonly
            or not _arena_word(seg, L.A_ID)  # retired meanwhile
            or _arena_word(seg, L.A_NOREUSE)
            or _arena_word(seg, L.A_USED) <= used
        ):
            return
        H[L.H_REUSE] += 1  # before any byte changes (see the module docstring)
        _set_arena_word(seg, L.A_USED, used)
        # appending continues there; an arena the session started after it holds nothing
        # referenced now, and recovery unlinks it
        H[L.H_CUR_ARENA] = cur
        self._set_wseg(seg)
        keep = (used + 4095) & ~4095
        reserved = _arena_word(seg, L.A_RESERVED)
        if reserved > keep:
            seg.discard(keep, reserved - keep)
            _set_arena_word(seg, L.A_RESERVED, keep)

    def _unlink_arena(self, aid: int) -> None:
        H = self._H
        self._same_table()
        count_reclaim(H)
        _unlink(self._seg_name_arena(aid))
        s = self._arenas.pop(aid, None)
        if s is not None:
            if s is self._wseg:
                self._wseg = None
            s.close()

    def _alloc(self, total: int, count: int = 1) -> tuple[Segment, int, int, int]:
        """Room for a record of ``total`` bytes, reserved (fallocated) and mapped, or for up
        to ``count`` such records one after the other (a bulk insert's run):
        ``(segment, id, offset, how many fit)``, at least one.

        The caller writes the records from ``offset`` on, then calls :meth:`_commit`.  Runs
        are for records well under a quarter of an arena (not a segment of their own).
        """
        self._dedicated = None
        seg, aid, off = self._write_arena(total)
        k = max(min(count, (seg.size - off) // total), 1)
        end = off + k * total
        try:
            reserved = _arena_word(seg, L.A_RESERVED)
            if end > reserved:
                seg.open_fd()
                # one small record reserves ahead (fewer calls); others exactly what they need
                small = k == 1 and total < L.RESERVE_STEP // 4
                ahead = min(L.RESERVE_STEP, off // 8) if small else 0
                want = min(seg.size, max((end + 4095) & ~4095, reserved + ahead))
                with map_os_errors(self.name, "reserving memory"):
                    seg.reserve(reserved, want - reserved)
                _set_arena_word(seg, L.A_RESERVED, want)
        except BaseException:
            self._release_dedicated()
            raise
        return seg, aid, off, k

    def _reserved(self, aid: int) -> bool:
        """A writer copies into a record of arena ``aid`` outside the writer lock (it holds
        a lock on the file, see ``_reserve``'s ``Reservation``): do not retire, compact or
        unlink the arena now."""
        return reservation_held(self._seg_path_arena(aid))

    def _seg_path_arena(self, aid: int) -> str:
        seg = self._arenas.get(aid)
        if seg is not None and not seg.closed:
            return seg.reopen_path()
        return segment_path(self._seg_name_arena(aid))

    # ------------------------------------------------------------------ recycling

    _recycler: _Recycler | None = None

    def _recycle(self, seg: Segment, ref: int, total: int) -> None:
        """Keep the room of the record at ``ref`` (``total`` bytes), which just became
        garbage, for a later record of the same length (see "Recycling"); in an atomic
        session, once it commits (``_session``)."""
        if total < RECYCLE_MIN or seg.readonly:
            return
        if self._undo is not None:
            self._undo_rooms.append((seg, ref, total))
            return
        if not seg.words_writable or seg.words[7] & 1:  # A_NOREUSE: a view pins it
            return
        r = self._recycler
        if r is None:
            r = self._recycler = _Recycler()
        if r.count < _RECYCLE_MAX:
            r.limbo.append((total, ref))
            r.count += 1
            r.held += total
            r.used = time.monotonic_ns()  # in use: not idle (see _recyclable)

    def _trim_rooms(self) -> None:
        """Let go of the kept rooms, as of idle ones (compaction's then; see "Recycling")."""
        if self._recycler is not None:
            self._recycler.clear()

    def _forget_rooms(self) -> None:
        """Keep no rooms: in a forked child, or after an exception (see "Recycling")."""
        self._recycler = None

    def _settle_rooms(self) -> None:
        """A write session ends: the big rooms it freed start their grace period."""
        r = self._recycler
        if r is not None and r.limbo and r.limbo[-1][0] >= SETTLE_MIN:  # see "Recycling"
            self._advance_recycler(r, time.monotonic_ns())

    def _take_recycled(self, total: int, swap_aid: int = 0) -> tuple[Segment, int, int] | None:
        """A recycled room for a record of ``total`` bytes: ``(segment, id, offset)``, counted
        out of its arena's garbage unless the arena is ``swap_aid`` (a swap: see "Recycling")."""
        r = self._recycler
        if r is None or not r.count:
            return None
        now = time.monotonic_ns()
        free = r.free.get(total)
        if not free or now - r.bumped >= _BUMP_EVERY_NS:
            self._advance_recycler(r, now)
            free = r.free.get(total)
        if free and self._H[L.H_RECLAIM] != self._reclaim_seen:
            # another writer unlinked arenas (a compaction, a clear) since this handle last
            # looked: forget them, so that no room in one is written (it would be lost)
            self._forget_reclaimed()
        while free:
            ref = free.pop()
            r.count -= 1
            r.held -= total
            aid, off = ref >> _OFFSET_BITS, ref & _OFFSET_MASK
            seg = self._arenas.get(aid)
            if seg is None or seg.closed:
                continue
            w = seg.words
            if w[6] != aid or w[7] & 1 or off + total > w[2]:  # A_ID, a view's pin, A_USED
                continue  # retired, reused or pinned since: compaction's now
            r.used = now
            if aid == swap_aid:
                return seg, aid, off
            _set_arena_word(seg, L.A_LIVE, w[4] + total)
            _set_arena_word(seg, L.A_GARBAGE, max(w[5] - total, 0))
            r.pending += total
            return seg, aid, off
        return None

    def _take_recycled_many(self, total: int, count: int) -> list[tuple[Segment, int, int]]:
        """Up to ``count`` recycled rooms for records of ``total`` bytes, as ``count`` calls
        of :meth:`_take_recycled` would take them (no swap), each arena's words stored once:
        ``[(segment, id, offset), ...]``, maybe fewer (the rest come from :meth:`_room`).
        The checks must stay those of :meth:`_take_recycled`; that one is not written on
        top of this one because the list and dict cost a single write 3-6% (measured)."""
        r = self._recycler
        if r is None or not r.count:
            return []
        now = time.monotonic_ns()
        free = r.free.get(total)
        if not free or len(free) < count or now - r.bumped >= _BUMP_EVERY_NS:
            self._advance_recycler(r, now)
            free = r.free.get(total)
        if not free:
            return []
        if self._H[L.H_RECLAIM] != self._reclaim_seen:
            self._forget_reclaimed()  # (as in _take_recycled)
        arenas = self._arenas
        out: list[tuple[Segment, int, int]] = []
        taken: dict[int, int] = {}  # arena id -> rooms taken in it
        while free and len(out) < count:
            ref = free.pop()
            r.count -= 1
            r.held -= total
            aid, off = ref >> _OFFSET_BITS, ref & _OFFSET_MASK
            seg = arenas.get(aid)
            if seg is None or seg.closed:
                continue
            w = seg.words
            if w[6] != aid or w[7] & 1 or off + total > w[2]:  # as in _take_recycled
                continue
            out.append((seg, aid, off))
            taken[aid] = taken.get(aid, 0) + 1
        if out:
            r.used = now
            r.pending += total * len(out)
            for aid, k in taken.items():
                seg = arenas[aid]
                w = seg.words
                _set_arena_word(seg, L.A_LIVE, w[4] + total * k)
                _set_arena_word(seg, L.A_GARBAGE, max(w[5] - total * k, 0))
        return out

    def _advance_recycler(self, r: _Recycler, now: int) -> None:
        """Move rooms past their grace period to ``free``; bump the epoch for new ones."""
        cooling = r.cooling
        while cooling and cooling[0][0] + L.RECYCLE_GRACE_NS <= now:
            free = r.free
            for total, ref in cooling.popleft()[1]:
                lst = free.get(total)
                if lst is None:
                    free[total] = [ref]
                else:
                    lst.append(ref)
        if r.limbo and now - r.bumped >= _BUMP_EVERY_NS:
            self._H[L.H_REUSE] += 1  # after the records became garbage (step 1)
            r.bumped = time.monotonic_ns()
            cooling.append((r.bumped, r.limbo))
            r.limbo = []

    def _recycled_taken(self) -> int:
        """Bytes of recycled rooms taken since the last call (they leave ``H_GARBAGE``)."""
        r = self._recycler
        if r is None or not r.pending:
            return 0
        n, r.pending = r.pending, 0
        return n

    def _recyclable(self) -> int:
        """Garbage bytes this handle keeps for recycling (compaction leaves them); kept
        rooms unused for ``_RECYCLE_IDLE_NS`` are let go first."""
        r = self._recycler
        if r is None or not r.count:
            return 0
        if time.monotonic_ns() - max(r.used, r.bumped) > _RECYCLE_IDLE_NS:
            r.clear()
            return 0
        return r.held

    def _room_candidates(self) -> list[tuple[int, Segment]]:
        """``(id, segment)`` of the arenas whose garbage records' pages may be given back:
        linked, writable here, with garbage, no view pinning them and no writer copying
        into them outside the lock."""
        if self._H[L.H_RECLAIM] != self._reclaim_seen:
            self._forget_reclaimed()
        out = []
        for aid in self._arena_ids():
            seg = self._arenas.get(aid)
            if seg is None or seg.closed:
                try:
                    seg = self._map_arena(aid)
                except Exception:
                    continue
            w = seg.words
            if (
                seg.readonly
                or not seg.words_writable
                or w[6] != aid  # A_ID: retired
                or w[7] & 1  # a zero-copy view pins it
                or w[5] < RECYCLE_MIN  # A_GARBAGE: no room worth it
                or self._reserved(aid)  # a writer copies into it outside the lock
            ):
                continue
            out.append((aid, seg))
        return out

    def _rooms_held(self) -> int:
        """Bytes of the rooms this handle keeps (whether or not idle, see ``_recyclable``)."""
        r = self._recycler
        return r.held if r is not None else 0

    def _own_rooms(self) -> set[int]:
        """References of the rooms this handle keeps (see "Recycling")."""
        r = self._recycler
        if r is None or not r.count:
            return set()
        cooling = (room for _at, rooms in r.cooling for room in rooms)
        return {ref for _t, ref in (*r.limbo, *cooling)}.union(*r.free.values())

    def _free_room_pages(self, rooms: list[tuple[int, int, int]]) -> int:
        """Give back the pages of garbage records (``(reference, record length, value
        offset)``) that no handle reuses, keeping each record's head, so the arena stays
        walkable and its owner may still write a record there (the pages come back then).

        The same protocol as reuse (see "Recycling"): the reuse epoch is bumped after the
        records became garbage and the pages are punched out ``RECYCLE_GRACE_NS`` later, so
        a copying reader that found one of them before retries; an arena a zero-copy view
        pins (checked after the grace period) is left alone.  Writer lock held.  Returns
        the bytes of the records whose pages were given back.
        """
        if not rooms:
            return 0
        H = self._H
        H[L.H_REUSE] += 1  # after the records became garbage (step 1)
        r = self._recycler
        if r is not None:
            r.bumped = time.monotonic_ns()
        time.sleep(L.RECYCLE_GRACE_NS / 1e9)
        freed = 0
        for ref, total, vo in rooms:
            aid, off = ref >> _OFFSET_BITS, ref & _OFFSET_MASK
            seg = self._arenas.get(aid)
            if seg is None or seg.closed or seg.readonly:
                continue
            w = seg.words
            if w[6] != aid or w[7] & 1 or off + total > w[2]:  # retired, pinned, cut back
                continue
            seg.discard(off + vo, total - vo)
            freed += total
        return freed

    def _commit(self, seg: Segment, off: int, total: int) -> None:
        """Account a record written at ``off`` (not yet published)."""
        _set_arena_word(seg, L.A_USED, off + total)
        _set_arena_word(seg, L.A_LIVE, _arena_word(seg, L.A_LIVE) + total)
        self._release_dedicated()

    def _release_dedicated(self) -> None:
        if self._dedicated is not None:
            self._dedicated.close()
            self._dedicated = None

    def _append(self, kb: bytes, values: list[Any]) -> tuple[int, int]:
        # values: memoryviews, or _Filler that write themselves
        """Append a record; return ``(reference, record length)``.  Not yet published."""
        if len(values) == 1 and type(values[0]) is memoryview:  # the common record
            v = values[0]
            new_ref, total, room, _ = self._append_unfilled(kb, v.nbytes)
            room[:] = v  # (the same length: nothing to fail)
            return new_ref, total
        total = L.record_layout(len(kb), [v.nbytes for v in values])[0]
        seg, aid, off, fresh = self._room(total)
        try:
            L.pack_record(seg.buf, off, kb, values)  # a failure leaves a recycled room garbage
            _crash_point("append.written")
        except BaseException:
            if fresh:
                self._release_dedicated()
            raise
        if fresh:
            self._commit(seg, off, total)
        return L.make_ref(aid, off), total

    def _room(self, total: int, swap_aid: int = 0) -> tuple[Segment, int, int, bool]:
        """Room for a record of ``total`` bytes: ``(segment, id, offset, fresh)``, a recycled
        room, else a fresh one at the bump pointer (reserved and mapped; :meth:`_commit` it
        once written).  ``swap_aid``: see :meth:`_take_recycled`."""
        got = self._take_recycled(total, swap_aid) if self._recycler is not None else None
        if got is not None:
            return got[0], got[1], got[2], False
        seg, aid, off, _ = self._alloc(total)
        return seg, aid, off, True

    def _append_raw(self, rec: memoryview) -> int:
        total = rec.nbytes
        seg, aid, off, _ = self._alloc(total)
        try:
            seg.buf[off : off + total] = rec
        except BaseException:
            self._release_dedicated()
            raise
        self._commit(seg, off, total)
        return L.make_ref(aid, off)

    def _append_unfilled(
        self, kb: bytes, nbytes: int, swap: tuple[int, int] = (0, 0)
    ) -> tuple[int, int, memoryview, bool]:
        """Append a one-value record whose value is not written yet (lock held).

        Returns ``(reference, record length, writable view of the value, swapped)``.  The
        record is accounted live but unpublished: :meth:`_publish` it once the value is
        written, or :meth:`_abandon` it.  (The view keeps a big value's own segment
        mapped.)  ``swap``: ``(arena id, record length)`` of the record this one replaces;
        ``swapped`` is True when the room is a swap (see "Recycling"): then nothing was
        accounted, and the caller accounts nothing for the replaced record either.
        """
        total, vo = L.one_value_record(len(kb), nbytes)
        swap_aid = swap[0] if swap[1] == total else 0
        seg, aid, off, fresh = self._room(total, swap_aid)
        mem = seg.buf
        try:
            L.pack_head1(mem, off, kb, total, nbytes)
            if CRASHES:
                _crash_point("append.written")
        except BaseException:
            if fresh:
                self._release_dedicated()
            raise
        if fresh:
            self._commit(seg, off, total)
        return (
            (aid << _OFFSET_BITS) | off,
            total,
            mem[off + vo : off + vo + nbytes],
            aid == swap_aid and not fresh,
        )

    # ------------------------------------------------------------------ for _space, _recovery

    def _account_arena(self, seg: Segment, live: int, garbage: int) -> None:
        """Store arena ``seg``'s live and garbage byte counts (space accounting)."""
        _set_arena_word(seg, L.A_LIVE, live)
        _set_arena_word(seg, L.A_GARBAGE, garbage)

    def _seal_current(self, aid: int) -> None:
        """Arena ``aid`` is about to be compacted: if it is the current one, append elsewhere."""
        H = self._H
        if H[L.H_CUR_ARENA] == aid:
            H[L.H_CUR_ARENA] = 0  # seal it: new records go elsewhere
            self._set_wseg(None)

    def _reset_arenas(self) -> None:
        """The table was cleared: no current arena, an empty pool (clear unlinks them)."""
        H = self._H
        H[L.H_CUR_ARENA] = 0
        for w in self._pool_words():
            H[w] = 0
        if self._recycler is not None:
            self._recycler.clear()

    def _drain_pool(self) -> None:
        """Unlink every retired arena kept in the pool, and let go of the rooms kept for
        recycling (``reclaim()`` gives memory back)."""
        H = self._H
        if self._recycler is not None:
            self._recycler.clear()
        for w in self._pool_words():
            aid = H[w]
            if aid:
                H[w] = 0
                self._unlink_arena(aid)

    def _recount_arenas(self, per_arena: dict[int, int]) -> int:
        """Recovery: unlink arenas nothing references, recount the rest; return the garbage.

        ``per_arena`` maps arena id -> live record bytes, counted from the index.
        """
        H = self._H
        if self._recycler is not None:
            self._recycler.clear()  # recounted below: the counts no longer know them
        cur = H[L.H_CUR_ARENA]
        garbage = 0
        max_id = 0
        for aid in self._arena_ids():
            max_id = max(max_id, aid)
            if aid not in per_arena and aid != cur and not self._reserved(aid):
                self._same_table()
                _unlink(self._seg_name_arena(aid))
                s = self._arenas.pop(aid, None)
                if s is not None:
                    s.close()
                continue
            seg = self._arenas.get(aid) or self._map_arena(aid)
            used = _arena_word(seg, L.A_USED)
            live = per_arena.get(aid, 0)
            _set_arena_word(seg, L.A_LIVE, live)
            _set_arena_word(seg, L.A_GARBAGE, max(used - L.ARENA_HEADER - live, 0))
            garbage += max(used - L.ARENA_HEADER - live, 0)
        if cur and not _seg_exists(self._seg_name_arena(cur)):
            H[L.H_CUR_ARENA] = 0
        H[L.H_NEXT_ARENA] = max(H[L.H_NEXT_ARENA], max_id + 1)
        for w in self._pool_words():
            H[w] = 0  # pooled arenas hold no live record: unlinked above
        return garbage
