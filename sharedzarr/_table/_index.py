"""The hash index of a table: map its current generation, probe it, store its slots.

The index is a segment per generation (``/sz.T.idx.<gen>``) of 16-byte slots
(key hash, reference); :mod:`sharedzarr._index` holds its pure parts (key codec,
hash, vectorised rebuild).  Readers check ``H_GEN`` (one load) and remap when it moved.
The identities of a key's record live here too (``value_token``, and ``value_pin``, which a
writer checks with a few word loads): they are questions about the key's slot.

Words stored here, and only here
--------------------------------
Every index slot (:meth:`IndexMixin._store_ref` publishes a reference with one aligned
8-byte store; :meth:`IndexMixin._store_new_slot` fills the tombstone a deleted key of the
same hash left on the probe path, with one reference store, or else an empty slot, hash
first), the
index segment header, ``H_GEN`` (a new generation is published by one store) and
``H_USED_SLOTS``.  The write counter that follows a slot store is the header's
(:func:`._header.count_write`): callers bump it right after the slot, with their crash
points in between.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _layout as L
from .._faults import crash_point as _crash_point
from .._faults import pause_point as _pause_point
from .._index import place_slots, plan_slots
from .._segment import map_os_errors, take_name
from .._segment import unlink as _unlink
from ..errors import CorruptTableError, SharedZarrError
from ._arenas import _NAME_TRIES, RECYCLE_MIN, ArenaMixin, _names_taken
from ._header import _OFFSET_BITS, _OFFSET_MASK, Segment

__all__ = ["IndexMixin", "create_index_segment", "init_generation"]

_REC_HEAD = L.REC_HEAD  # assigned, not imported: see _header, "Hot paths"
_REC_HEAD1 = L.REC_HEAD1  # assigned, not imported: see _header, "Hot paths"


def create_index_segment(table: str, name: str, cap: int, gen: int, mode: int) -> None:
    """Create index segment ``name``: ``cap`` empty slots of generation ``gen`` (unpublished)."""
    with map_os_errors(table, "index"):
        seg = Segment.create(name, L.index_bytes(cap), mode)
    try:
        L.INDEX_HDR.pack_into(seg.buf, 0, L.INDEX_MAGIC, cap, gen)
    finally:
        seg.close()


def init_generation(H: memoryview, gen: int = 1) -> None:
    """A new header: index generation ``gen`` (created by :func:`create_index_segment`)."""
    H[L.H_GEN] = gen


def free_index_name(table: str, uid: int, first: int = 1) -> tuple[int, str]:
    """The first index generation from ``first`` whose name is free: ``(generation, name)``.

    A stray of the table's user there (a crashed rebuild) is removed; a generation whose
    name another user's file holds is skipped (readers follow ``H_GEN``).
    """
    for g in range(first, first + _NAME_TRIES):
        name = L.segment_names(table)[1] + str(g)
        if take_name(name, uid):
            return g, name
    raise _names_taken(table, "index segment")


class IndexMixin(ArenaMixin):
    """Index mapping, the lock-free probes, growth, and the only slot stores."""

    # ------------------------------------------------------------------ mapping

    def _remap(self, *, readonly: bool) -> None:
        hdr = Segment.attach(L.segment_names(self.name)[0], readonly=readonly, keep_fd=True)
        if self._hdr is not None and not hdr.same_file(self._hdr):
            hdr.close()  # the name holds another table now: this one was deleted
            raise self._not_found()
        self._drop_maps()
        old = self._hdr
        self._hdr = hdr
        self._H = hdr.buf.cast("Q")  # (the old view is not released: threads may hold it)
        with self._idx_swap:
            self._ro = readonly
            self._idx_gen = -1
        self._drop_hints()
        self._lock.close()
        self._lock = self._new_lock()
        if old is not None:
            old.close()

    def _drop_maps(self) -> None:
        """Forget this handle's mappings (close, remap, fork).

        Threads sharing a handle may be reading through them right now: nothing here
        releases a view or unmaps.  The mappings go when the last thread drops its
        reference (:func:`sharedzarr._segment.map_shared`); the index pair stays in
        ``_imap`` until the next :meth:`_load_index` replaces it.
        """
        for seg in self._arenas.values():
            seg.close()
        self._arenas.clear()
        with self._idx_swap:
            self._idx = None  # type: ignore[assignment]
            self._idx_seg = None
            self._idx_gen = -1
        if self._wseg is not None:
            self._wseg.close()
            self._wseg = None

    def _load_index(self) -> None:
        """Map the current index generation (retrying while a writer replaces it).

        Threads sharing the handle may call this at once.  The index view and its mask
        are published together as one attribute (``_imap``, what the probes load), and
        only forward: a thread that mapped an older generation, or mapped it read-only
        while the handle became writable, does not store it over a newer one (a writer
        would otherwise publish slots into a stale index).
        """
        H = self._H
        for _ in range(1000):
            gen = H[L.H_GEN]
            ro = self._ro
            if H[L.H_DELETED]:
                raise self._not_found()
            try:
                seg = Segment.attach(self._seg_name_idx(gen), readonly=ro, uid=self._uid)
            except Exception as e:
                if H[L.H_GEN] != gen:
                    continue  # replaced meanwhile: map the newer one
                if self._hdr.unlinked() or H[L.H_DELETED]:
                    raise self._not_found() from None
                with map_os_errors(self.name, f"index generation {gen}"):
                    raise e
            if seg.size < L.INDEX_HEADER:
                seg.close()
                raise CorruptTableError(f"table {self.name!r}: index segment is truncated")
            magic, cap, sgen = L.INDEX_HDR.unpack_from(seg.buf, 0)
            if (
                magic != L.INDEX_MAGIC
                or cap < 1
                or cap & (cap - 1)
                or seg.size < L.index_bytes(cap)
                or sgen != gen
            ):
                seg.close()
                raise CorruptTableError(
                    f"table {self.name!r}: index segment generation {gen} is damaged "
                    f"(`sharedzarr rm {self.name}` removes the table)"
                )
            idx = seg.buf[L.INDEX_HEADER : L.index_bytes(cap)].cast("Q")
            with self._idx_swap:
                if ro != self._ro:
                    continue  # remapped meanwhile: map it as the handle is now
                if gen >= self._idx_gen:
                    self._imap = (idx, cap - 1)  # first: probes load the pair from here
                    self._idx_seg = seg
                    self._idx = idx
                    self._mask = cap - 1
                    self._idx_gen = gen  # last: a thread that sees it sees the pair
            return
        raise SharedZarrError(f"table {self.name!r}: index kept changing; retry")

    # ------------------------------------------------------------------ probes

    def _live_refs(self) -> set[int]:
        """The references of every key's record (the index's occupied slots)."""
        if self._H[L.H_GEN] != self._idx_gen:
            self._load_index()
        arr = np.frombuffer(self._idx, dtype=np.uint64).reshape(-1, 2)
        refs = set(arr[arr[:, 1] > 1, 1].tolist())  # (0: empty, 1: tombstone)
        del arr  # (releases the buffer export of the index mapping)
        return refs

    def _find(self, kb: bytes, h: int) -> tuple[int, int, Any, int]:
        """Locate key bytes ``kb``: ``(slot, ref, arena segment, record offset)`` or ``(-1, ...)``.

        Lock-free.  Retries when the arena a reference points to was reclaimed
        between loading the reference and mapping the arena.
        """
        H = self._check_open()
        for _attempt in range(100):
            if H[L.H_GEN] != self._idx_gen:
                self._load_index()
            idx, mask = self._imap
            i = h & mask
            arenas = self._arenas
            for _ in range(mask + 1):
                j = i << 1
                sh = idx[j]
                if sh == h:
                    ref = idx[j + 1]
                    if ref > 1:
                        aid = ref >> _OFFSET_BITS
                        off = ref & _OFFSET_MASK
                        seg = arenas.get(aid)
                        if seg is None:
                            try:
                                seg = self._map_arena(aid)
                            except Exception:
                                break  # reclaimed meanwhile (or gone): look again
                        mm = seg.mm
                        try:
                            _total, klen, n = _REC_HEAD.unpack_from(mm, off)
                        except struct.error:
                            raise self._corrupt(ref) from None
                        ko = off + 16 + 8 * n
                        if mm[ko : ko + klen] == kb:
                            return i, ref, seg, off
                elif sh == 0:
                    return -1, 0, None, 0
                i = (i + 1) & mask
            else:
                return -1, 0, None, 0
            # retry after a reclaimed arena: the slot now holds the moved reference
            if H[L.H_DELETED] or self._hdr.unlinked():
                raise self._not_found()
            time.sleep(0)
        raise SharedZarrError(
            f"table {self.name!r}: a data segment is missing; the table is damaged"
        )

    def value_token(self, pk: tuple[bytes, int]) -> tuple[int, int, int] | None:
        """An identity of the value of prepared key ``pk``: equal tokens mean the very same
        record, unchanged (invariants of :mod:`._read`: I1; moving or reusing one bumps
        ``H_RECLAIM``, I4; a record whose room may be recycled adds the reuse epoch, I2).
        A few loads: a handle that cached a value checks it with this.  None when the fast
        probe cannot tell (absent, not in its home slot): compare the value itself then."""
        H = self._H
        if H is None:
            H = self._check_open()
        gen, epoch = H[L.H_RECLAIM], H[L.H_REUSE]
        hit = self._probe_home(pk[0], pk[1], H)
        if hit is None or H[L.H_RECLAIM] != gen:
            return None
        seg, ref = hit[0], hit[1]
        total = _REC_HEAD.unpack_from(seg.mm, ref & _OFFSET_MASK)[0]
        return ref, gen, epoch if total >= RECYCLE_MIN else 0

    def value_pin(self, pk: tuple[bytes, int]) -> tuple[int, int, int, int, int] | None:
        """Where the value of prepared key ``pk`` is: a pin that :meth:`value_pinned` checks
        with a few word loads and no probe.  None when the key is absent.

        The identity is :meth:`value_token`'s (the record's reference, ``H_RECLAIM``, the
        reuse epoch for a record whose room may be recycled), plus the index generation
        and the key's slot in it.  For a writer that checks, on each of its writes, that a
        small value it cached (an array's ``zarr.json``) is still the stored one: take the
        pin under the writer lock, right after checking the value."""
        H = self._H
        if H is None:
            H = self._check_open()
        gen, epoch = H[L.H_RECLAIM], H[L.H_REUSE]
        slot, ref, seg, off = self._find(pk[0], pk[1])
        if slot < 0 or H[L.H_RECLAIM] != gen:
            return None
        total = _REC_HEAD.unpack_from(seg.mm, off)[0]
        return self._idx_gen, gen, epoch if total >= RECYCLE_MIN else -1, slot, ref

    def value_pinned(self, pin: tuple[int, int, int, int, int]) -> bool:
        """Whether the key of ``pin`` (:meth:`value_pin`) still has that very record: its slot
        in the same index generation holds the same reference, and no record moved or was
        reused since (I1, I4; I2 for a recyclable record).  False means "look again"."""
        H = self._H
        if H is None or H[L.H_GEN] != pin[0] or self._idx_gen != pin[0]:
            return False
        if H[L.H_RECLAIM] != pin[1] or (pin[2] >= 0 and H[L.H_REUSE] != pin[2]):
            return False
        return bool(self._imap[0][(pin[3] << 1) + 1] == pin[4])

    def _probe_home(
        self, kb: bytes, h: int, H: memoryview | None
    ) -> tuple[Segment, int, int, int] | None:
        """The lock-free fast probe: ``(segment, reference, value offset, value length)`` when
        ``kb`` sits in its home slot of a current index with its arena mapped (the common
        case at load <= 0.5); None sends the caller to the full probe (:meth:`_get_slow`).

        Literal word indices: 8 deleted, 9 index generation.  The result is borrowed.
        """
        if H is None or H[8] or H[9] != self._idx_gen:
            return None
        self._reads += 1
        if not self._reads & 255 and self._hdr.unlinked():
            raise self._not_found()
        idx, mask = self._imap
        j = (h & mask) << 1
        if idx[j] != h:
            return None
        ref = idx[j + 1]
        seg = self._arenas.get(ref >> _OFFSET_BITS) if ref > 1 else None
        if seg is None:
            return None
        off = ref & _OFFSET_MASK
        mm = seg.mm
        try:
            _total, klen, n, vlen = _REC_HEAD1.unpack_from(mm, off)
        except (struct.error, TypeError):
            return None
        ko = off + 16 + 8 * n
        pos = off + ((16 + 8 * n + klen + 63) & ~63)  # L.value_offset, inlined (hot path)
        if n and pos + vlen <= seg.size and mm[ko : ko + klen] == kb:
            return seg, ref, pos, vlen
        return None

    def _locate(self, kb: bytes, h: int) -> tuple[int, int, Segment, int, int] | None:
        """The full probe: ``(slot, reference, segment, value offset, value length)``, or None
        when ``kb`` is absent (or has no value).  Borrowed, like :meth:`_probe_home`: callers
        check the reuse epoch around it and repeat on a change (see :meth:`_get_slow`).

        Raises
        ------
        CorruptTableError, struct.error
            On a record that does not parse (damage, or an arena reused meanwhile).
        """
        slot, ref, seg, off = self._find(kb, h)
        if slot < 0:
            return None
        _total, klen, n, vlen = _REC_HEAD1.unpack_from(seg.mm, off)
        if n == 0:
            return None
        pos = off + L.value_offset(klen, n)
        if pos + vlen > seg.size:
            raise self._corrupt(off)
        return slot, ref, seg, pos, vlen

    # ------------------------------------------------------------------ stores (lock held)

    def _store_ref(self, slot: int, ref: int) -> None:
        """Publish ``ref`` (or ``L.TOMBSTONE``) in ``slot``: one aligned 8-byte store."""
        self._idx[(slot << 1) + 1] = ref

    def _store_new_slot(self, h: int, ref: int) -> int:
        """Publish ``ref`` under hash ``h`` in a free slot; return the slot.

        A key deleted and inserted again (a cache entry, an array's chunk after a shrink
        and a regrowth) takes back its own tombstone: a slot of the same hash on its probe
        path, before the first empty one, gets the reference (one store, as an overwrite;
        a reader that finds a slot of its hash always compares the record's key bytes).
        Otherwise the first empty slot is filled, hash first, and counted used.  Without
        the reuse, every delete and insert of one key left a tombstone on the probe paths
        until the next rebuild.  Lock held; the caller checked that the key is absent."""
        idx, mask = self._imap
        i = h & mask
        for _ in range(mask + 1):
            sh = idx[i << 1]
            if sh == 0:
                idx[i << 1] = h
                idx[(i << 1) + 1] = ref  # publish
                self._H[L.H_USED_SLOTS] += 1  # (tombstones keep a slot used until a rebuild)
                return i
            if sh == h and idx[(i << 1) + 1] == L.TOMBSTONE:
                idx[(i << 1) + 1] = ref  # publish
                return i
            i = (i + 1) & mask
        raise self._no_empty_slot()

    def _set_used_slots(self, n: int) -> None:
        """Recovery: store the recounted number of used slots."""
        self._H[L.H_USED_SLOTS] = n

    def _no_empty_slot(self) -> CorruptTableError:
        """An index with no empty slot although the header counts room is damaged (the
        probes are bounded: not a reason to spin)."""
        mask = self._mask
        return CorruptTableError(
            f"table {self.name!r}: its index has no empty slot although the header counts "
            f"{self._H[L.H_USED_SLOTS]} used of {mask + 1}; the table is damaged "
            f"(`sharedzarr export` can copy what is readable, `sharedzarr rm {self.name}` "
            "removes it)"
        )

    def _grow_if_needed(self, extra: int = 1) -> None:
        H = self._H
        if H[L.H_GEN] != self._idx_gen:
            self._load_index()
        cap = self._mask + 1
        if H[L.H_USED_SLOTS] + extra <= cap * L.MAX_LOAD:
            return
        need = max(H[L.H_KEYS] + extra, 1)
        new_cap = L.MIN_CAPACITY
        while need > new_cap * L.MAX_LOAD / 2:
            new_cap *= 2
        self._rebuild_index(new_cap)

    def _rebuild_index(self, new_cap: int, extra: np.ndarray | None = None) -> None:
        """Build index generation gen+1 with ``new_cap`` slots, publish it, drop the old one.

        ``extra``: ``(hash, reference)`` rows of absent keys to hold as well (a bulk
        insert: the one store that publishes the generation publishes them all)."""
        self._switch_index(*self._build_index(new_cap, extra))

    def _build_index(
        self,
        new_cap: int,
        extra: np.ndarray | None = None,
        refs: Callable[[], np.ndarray] | None = None,
    ) -> tuple[int, str, int]:
        """The unpublished half of :meth:`_rebuild_index`: generation gen+1 built in its
        own segment; returns ``(generation, segment name, slots used)``.  It stores no
        shared word, so a bulk insert runs it on a helper thread while it writes its
        records (nothing changes the index meanwhile: the writer lock is held).

        ``refs``: ``extra`` holds only the hashes of the new keys, and ``refs()`` returns
        their references (it waits until the bulk insert has allocated the records, and
        raises if it gave up): the slots are planned and the segment made first."""
        old_gen = self._idx_gen
        arr = np.frombuffer(self._idx, dtype=np.uint64).reshape(-1, 2)
        live = arr[arr[:, 1] > 1].copy()
        del arr
        if refs is not None:
            assert extra is not None
            hashes = np.concatenate([live[:, 0], extra])
        elif extra is not None:
            live = np.concatenate([live, extra])
            hashes = live[:, 0]
        else:
            hashes = live[:, 0]
        plan = plan_slots(hashes, new_cap)
        _pause_point("grow.start")
        new_gen, name = self._next_index_name(old_gen)
        with map_os_errors(self.name, "index growth"):
            seg = Segment.create(name, L.index_bytes(new_cap), self.mode)
        try:
            L.INDEX_HDR.pack_into(seg.buf, 0, L.INDEX_MAGIC, new_cap, new_gen)
            if refs is not None:
                assert extra is not None
                new_rows = np.empty((len(extra), 2), dtype=np.uint64)
                new_rows[:, 0] = extra
                new_rows[:, 1] = refs()
                live = np.concatenate([live, new_rows])
                del new_rows
            slots = np.frombuffer(seg.buf, np.uint64, 2 * new_cap, L.INDEX_HEADER)
            place_slots(live, plan, slots.reshape(new_cap, 2))  # (a new file: zeroed)
            del slots
        except BaseException:
            seg.close()
            _unlink(name)
            raise
        seg.close()
        _crash_point("grow.built")
        return new_gen, name, len(live)

    def _switch_index(self, new_gen: int, name: str, used: int) -> None:
        """Publish generation ``new_gen`` (built by :meth:`_build_index`, ``used`` slots
        filled) with one store, and drop the old one."""
        H = self._H
        old_gen = self._idx_gen
        H[L.H_USED_SLOTS] = used
        H[L.H_GEN] = new_gen  # publish
        _crash_point("grow.published")
        self._same_table()
        _unlink(self._seg_name_idx(old_gen))
        self._load_index()

    def _drop_built_index(self, name: str) -> None:
        """Remove a generation built and never published (a bulk insert that failed)."""
        self._same_table()
        _unlink(name)

    def _maybe_present(self, hashes: np.ndarray) -> np.ndarray:
        """Which of ``hashes`` (uint64) meet a slot of their hash on their probe path before
        an empty slot: the keys that may be in the table; the others certainly are not (a
        bulk insert looks the few candidates up with :meth:`_find`).  Vectorised: one pass
        over the hashes still probing per probe step.  Lock held."""
        H = self._H
        if H[L.H_GEN] != self._idx_gen:
            self._load_index()
        out = np.zeros(len(hashes), dtype=bool)
        if not H[L.H_USED_SLOTS]:
            return out
        idx, mask = self._imap
        slots = np.frombuffer(idx, dtype=np.uint64)[0::2]
        todo = np.arange(len(hashes))
        want = hashes
        pos = hashes & np.uint64(mask)
        for _ in range(mask + 1):
            sh = slots[pos.astype(np.intp)]
            hit = sh == want
            out[todo[hit]] = True
            go = (sh != 0) & ~hit
            if not go.any():
                break
            todo, want = todo[go], want[go]
            pos = (pos[go] + np.uint64(1)) & np.uint64(mask)
        del slots
        return out

    def _bulk_index_cap(self, n: int) -> int:
        """For ``n`` absent keys about to be published (lock held): the capacity of the new
        index generation that should hold them and the live slots (one store publishes all
        of them, see :meth:`_rebuild_index`) when they are many or the index is too full
        for them; 0 when they go in slot by slot (:meth:`_store_new_slot`)."""
        H = self._H
        if H[L.H_GEN] != self._idx_gen:
            self._load_index()
        keys = H[L.H_KEYS] + n
        if n * 4 < keys and H[L.H_USED_SLOTS] + n <= (self._mask + 1) * L.MAX_LOAD:
            return 0
        cap = L.MIN_CAPACITY
        while keys > cap * L.MAX_LOAD / 2:
            cap *= 2
        return cap

    def _next_index_name(self, gen: int) -> tuple[int, str]:
        """The first generation after ``gen`` whose name is free (:func:`free_index_name`)."""
        self._same_table()
        return free_index_name(self.name, self._uid, gen + 1)

    def _new_empty_index(self) -> str:
        """Publish an empty index of the next generation (``clear``); return its segment name."""
        H = self._H
        old_gen = self._idx_gen if self._idx_gen >= 0 else H[L.H_GEN]
        new_gen, name = self._next_index_name(old_gen)
        create_index_segment(self.name, name, L.MIN_CAPACITY, new_gen, self.mode)
        H[L.H_GEN] = new_gen  # publish the empty index
        H[L.H_USED_SLOTS] = 0
        return name
