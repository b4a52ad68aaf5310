"""Bulk writes: many records in one writer session.

``Table.insert_filled_many`` writes records whose values are filled in place (an array's
multi-chunk write): in batches, each batch's recycled rooms taken in one go, its records
filled in order and then published together (:meth:`._write.WriteMixin._publish_filled`);
or on two threads (:class:`._fill.SharedFill`).

``Table.insert_many`` (bulk insert): a set table takes a big batch of objects in
vectorised steps instead of one put per object:

1. the keys are encoded and hashed in one pass each (:func:`sharedzarr._index.encode_keys`,
   :func:`~sharedzarr._index.key_hashes`), the values checked, and a key given twice keeps
   its last value (a big batch's hashes are sorted for repeats on the process's helper
   thread, :func:`sharedzarr._threads.copy_pool`, while the values are measured);
2. one vectorised probe of the index (:meth:`._index.IndexMixin._maybe_present`) tells
   which keys certainly are absent; the few that may exist are looked up one by one, and
   the ones that do exist are rewritten the filled way (:meth:`BulkMixin._fill_serial`);
3. the records of the absent keys, grouped by key and value length, get room in runs at
   the bump pointer (:meth:`._arenas.ArenaMixin._alloc`), so their references are known,
   and each run is written by three numpy copies (head words, keys, values), not yet
   published;
4. they are published together: when they are many (:meth:`._index.IndexMixin._bulk_index_cap`),
   by a new index generation that holds them, built on a helper thread while this one
   allocates and writes the records (:meth:`._index.IndexMixin._build_index`: numpy and
   the kernel release the GIL): the helper plans the slots from the hashes and makes the
   segment during step 3's allocation, and places the rows once it is handed their
   references (:class:`_IndexJob`), so one store publishes them all; else slot by slot.
   Then the write counter is bumped and the counts are updated once.

Everything that can refuse the batch (a key, a value, the room) is checked before the
first record is stored.  The session is the caller's atomic one (see "Rollback" in
:mod:`._session`): each new key is logged for the undo before it is published.  A failure
after records were appended and before they were published leaves them garbage: the
rollback cuts them off, an enclosing non-atomic session counts them garbage here.  This
module stores no shared word itself: it calls the owners of the words it changes.
"""

from __future__ import annotations

import itertools
import operator
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import _layout as L
from .._faults import CRASHES
from .._faults import crash_point as _crash_point
from .._index import encode_keys, key_hashes
from .._threads import copy_pool
from ._fill import FILL_AHEAD, FILL_AHEAD_SHARE, SharedFill
from ._header import _OFFSET_BITS, DEFAULT_TIMEOUT, _as_buffer, count_write
from ._write import PUBLISH_BATCH, PUBLISH_MIN, PUBLISH_SHARE, WriteMixin, _prepared

__all__ = ["BULK_MIN", "BulkMixin"]

#: ``insert_many`` of fewer objects puts them one by one (the vectorised steps cost more).
BULK_MIN = 256
#: Objects taken in one vectorised pass (bounds the memory of the pass's lists).
BULK_SLICE = 1 << 20
#: Records bigger than this are put one by one: their copy outweighs the Python around it.
BULK_MAX_RECORD = 64 << 10
#: A batch's hashes are checked for equal ones on the helper thread from this many on.
_THREAD_SORT_MIN = 1 << 16

_KEY, _VALUE = operator.itemgetter(0), operator.itemgetter(1)


class BulkMixin(WriteMixin):
    """``insert_filled_many`` and ``insert_many`` of a table handle (see the module
    docstring)."""

    def insert_many(
        self, objects: Iterable[tuple[Any, Any]], *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> int:
        """Insert many objects at once, all or none.  ETS: ``ets:insert/2`` with a list.

        The objects go in within one atomic writer session: a reader that takes a snapshot
        sees all of them or none, and if a key or value is refused midway (or the memory
        runs out), the objects inserted before it are undone and the table is as it was.
        Much faster than :meth:`insert` in a loop: keys are encoded, hashed and looked up
        in vectorised passes, and the new records are written and published in bulk.
        Inside an enclosing :meth:`writer` session the outermost session decides (an
        enclosing non-atomic session keeps what was inserted before the error).  For a set
        table, when a key appears more than once, the last object wins.

        Parameters
        ----------
        objects : iterable of (key, value)
            As for :meth:`insert`.  The undo keeps one small entry per object in this
            process, so one call is for up to a few million objects.
        timeout : float or None
            Seconds to wait for the writer lock; ``None`` waits forever.

        Returns
        -------
        int
            The number of objects inserted (a key given twice counts twice).

        Examples
        --------
        >>> t.insert_many((i, b"value") for i in range(1000))  # doctest: +SKIP
        1000
        """
        n = 0
        with self.writer(timeout, atomic=True):
            if self._bag:
                for key, value in objects:
                    self.insert(key, value)
                    n += 1
                return n
            it = iter(objects)
            while True:
                part = list(itertools.islice(it, BULK_SLICE))
                if not part:
                    return n
                if len(part) < BULK_MIN:
                    n += self._fill_serial(_prepared(part))
                else:
                    self._insert_bulk(part)
                    n += len(part)

    def insert_filled_many(
        self, items: Iterable[tuple[Any, ...]], submit: Any = None, *, expected_bytes: int = 0
    ) -> int:
        """Insert many values, each written in place by its ``fill(buffer)``; set types only.

        One writer session for all.  Each value is published only after its ``fill``
        returned, in order, so readers never see one half-written.  If a fill raises, the
        values before it are published and it and the later ones are not; the exception
        propagates.

        Parameters
        ----------
        items : iterable of (prepared key, nbytes, fill)
            Prepared keys come from :meth:`prepare_key`.  ``fill`` may also be the value
            itself, a 1-d memoryview of ``nbytes`` unsigned bytes, which is copied in.
        submit : callable, optional
            An executor's ``submit(fn) -> concurrent.futures.Future``.  Given, the fills
            are shared by this thread and one of the executor's (numpy releases
            the GIL while it copies): see :class:`._fill.SharedFill`.
        expected_bytes : int
            At least how many bytes the write stores (``items`` and what the caller writes
            with them), when known.  A write that certainly cannot fit is refused before
            anything is stored (:meth:`_check_room`).  New arenas are sized for a table of
            at least this much data from the first record on (instead of growing from the
            smallest size), so a table written in one go has arenas of one size, which the
            next rewrite reuses instead of allocating fresh memory.

        Returns
        -------
        int
            The number of values inserted.
        """
        if self._bag:
            raise TypeError(f"insert_filled_many needs a set table; {self.name!r} is a bag")
        with self.writer():
            if expected_bytes > 0:
                self._check_room(int(expected_bytes))
                self._maybe_free_foreign_rooms(int(expected_bytes))  # before any append
            self._size_hint = max(int(expected_bytes), 0)
            try:
                if submit is None:
                    return self._fill_serial(items)
                return self._fill_shared(items, submit)
            finally:
                self._size_hint = 0

    def _fill_serial(self, items: Iterable[tuple[Any, ...]]) -> int:
        """``insert_filled_many`` on this thread, in batches of up to ``PUBLISH_BATCH``
        records and the byte budget (:meth:`_fill_batch`)."""
        done = 0
        budget = max(
            int(max(self._H[L.H_LIVE_RECORD], self._size_hint) * PUBLISH_SHARE), PUBLISH_MIN
        )
        it = iter(items)
        batch: list[tuple[Any, ...]] = []
        while True:
            ahead = 0
            try:
                for (kb, h), nbytes, fill in it:
                    batch.append((kb, h, nbytes, fill))
                    ahead += nbytes
                    if len(batch) >= PUBLISH_BATCH or ahead >= budget:
                        break
            except BaseException:  # the items before the failure are written
                if batch:
                    self._fill_batch(batch)
                raise
            if not batch:
                return done
            done += self._fill_batch(batch)
            batch = []

    def _fill_batch(self, batch: list[tuple[Any, ...]]) -> int:
        """Fill, in order, then publish the records of ``batch`` (``(key bytes, hash, value
        length, fill)`` each); return how many were published.

        The recycled rooms of the batch's common record length are taken in one go
        (:meth:`_take_recycled_many`), the others one by one (:meth:`_append_unfilled`).
        If a fill raises, the records filled before it are published, and it, the rest of
        the batch and the rooms not used become garbage; the exception propagates.
        """
        kb0, _h, n0, _f = batch[0]
        total0, vo = L.one_value_record(len(kb0), n0)
        rooms = self._take_recycled_many(total0, len(batch)) if self._recycler else []
        pack_head1 = L.pack_head1
        pend: list[tuple[Any, ...]] = []  # filled, not yet published
        try:
            for kb, h, nbytes, fill in batch:
                klen = len(kb)
                if rooms and nbytes == n0 and klen == len(kb0):  # a room of its length
                    seg, aid, off = rooms.pop()
                    mem, total = seg.buf, total0
                    pack_head1(mem, off, kb, total, nbytes)  # as _append_unfilled
                    if CRASHES:
                        _crash_point("append.written")
                    new_ref = (aid << _OFFSET_BITS) | off
                    room = mem[off + vo : off + vo + nbytes]
                else:
                    new_ref, total, room, _ = self._append_unfilled(kb, nbytes)
                try:
                    if type(fill) is memoryview:  # the value itself (see insert_filled_many)
                        room[:] = fill
                    else:
                        fill(room)
                except BaseException:
                    self._abandon(new_ref, total)
                    raise
                pend.append((kb, h, nbytes, new_ref, total))
        finally:
            for _seg, aid, off in rooms:  # taken and not used (a fill raised)
                self._abandon((aid << _OFFSET_BITS) | off, total0)
            if pend:  # the values filled before a failure are published
                self._publish_filled(pend)
        return len(pend)

    def _fill_shared(self, items: Iterable[tuple[Any, ...]], submit: Any) -> int:
        """``insert_filled_many`` with a helper thread (:class:`._fill.SharedFill`)."""
        sf = SharedFill(submit)
        recs, errors = sf.recs, sf.errors
        budget = int(max(self._H[L.H_LIVE_RECORD], self._size_hint) * FILL_AHEAD_SHARE)
        published = ahead = 0  # records published; bytes appended and not published

        def publish_whole() -> None:
            """Publish, in order, the records filled so far (one batch)."""
            nonlocal published, ahead
            k = sf.whole_from(published)
            if k > published:
                batch, published = recs[published:k], k  # (never published twice)
                ahead -= sum(rec[2] for rec in batch)
                self._publish_filled(batch)

        try:
            for (kb, h), nbytes, fill in items:
                while (
                    not errors
                    and published < len(recs)
                    and (len(recs) - published >= FILL_AHEAD or ahead >= budget)
                ):
                    sf.step(True)
                    publish_whole()
                if errors:
                    break
                new_ref, total, buf, _ = self._append_unfilled(kb, nbytes)
                sf.add((kb, h, nbytes, new_ref, total), fill, buf)
                ahead += nbytes
                sf.step(False)
                publish_whole()
        finally:
            # publish, in order, the values filled before the first failure (the write's
            # or the loop's); the rest become garbage
            sf.finish()
            try:
                publish_whole()
            finally:
                for rec in recs[published:]:
                    self._abandon(rec[3], rec[4])
        if published < len(recs):
            raise errors[min(errors)]
        return published

    def _insert_bulk(self, objs: list[tuple[Any, Any]]) -> None:
        """Steps 1-4 of the module docstring for ``objs`` (writer lock held)."""
        keys, vals = _unzip(objs)
        kbs = encode_keys(keys)
        n = len(kbs)
        hashes = key_hashes(kbs)
        # a big batch's hashes are sorted on the helper thread while the values are
        # measured (numpy's sort releases the GIL)
        twice = copy_pool().submit(_has_equal, hashes) if n >= _THREAD_SORT_MIN else None
        if set(map(type, vals)) != {bytes}:
            vals = [_as_buffer(v) for v in vals]  # (bytes are measured by len)
        vlens = _lengths(vals)  # (of a cast view: its bytes)
        klens = _lengths(kbs)
        repeated = twice.result() if twice is not None else _has_equal(hashes)
        if repeated:  # equal hashes: maybe a key given twice
            last = dict(zip(kbs, range(n), strict=True))
            if len(last) < n:  # its last value wins
                keep = sorted(last.values())
                kbs = [kbs[i] for i in keep]
                vals = [vals[i] for i in keep]
                vlens, hashes, klens = vlens[keep], hashes[keep], klens[keep]
                n = len(kbs)
        vos = (16 + 8 + klens + L.ALIGN - 1) & ~(L.ALIGN - 1)
        totals = np.maximum(vos + ((vlens + L.ALIGN - 1) & ~(L.ALIGN - 1)), L.ALIGN)
        serial = totals > BULK_MAX_RECORD
        maybe = self._maybe_present(hashes)
        for i in np.nonzero(maybe)[0].tolist():
            if self._find(kbs[i], int(hashes[i]))[0] >= 0:
                serial[i] = True  # it exists: rewritten the serial way
        new = np.nonzero(~serial)[0]
        if len(new):
            self._check_room(int(totals.sum()))  # the new records and the rewritten ones
            self._append_new(kbs, vals, hashes, klens, vlens, totals, new)
        if serial.any():
            self._fill_serial(
                ((kbs[i], int(hashes[i])), int(vlens[i]), memoryview(vals[i]).cast("B"))
                for i in np.nonzero(serial)[0].tolist()
            )

    def _append_new(
        self,
        kbs: list[bytes],
        vals: list[Any],
        hashes: np.ndarray,
        klens: np.ndarray,
        vlens: np.ndarray,
        totals: np.ndarray,
        new: np.ndarray,
    ) -> None:
        """Steps 3-4 for the absent keys at positions ``new`` (see the module docstring)."""
        refs = np.empty(len(new), dtype=np.uint64)
        groups = (klens[new] << 32) | vlens[new]
        if (groups == groups[0]).all():  # (the common batch: one key and value length)
            parts = [np.arange(len(new))]
        else:
            order = np.argsort(groups, kind="stable")
            parts = np.split(order, np.nonzero(np.diff(groups[order]))[0] + 1)
        runs: list[tuple[int, int]] = []  # (reference of a run's first record, its bytes)
        nbytes = int(totals[new].sum())
        self._size_hint = max(nbytes, 0)  # arenas sized for the whole batch
        appended = False
        index: _IndexJob | None = None
        try:
            cap = self._bulk_index_cap(len(new))
            if cap:  # planned from the hashes while the records get their room
                index = _IndexJob(self, cap, hashes[new])
            writes = [
                w
                for part in parts
                for w in self._place_group(kbs, vals, new[part], totals, refs, part, runs)
            ]
            rows = np.empty((len(new), 2), dtype=np.uint64)
            rows[:, 0] = hashes[new]
            rows[:, 1] = refs
            if index is not None:
                index.give_refs(refs)
            for w in writes:
                _write_run(*w)
            _crash_point("append.written")
            built = index.result() if index is not None else None
            if self._undo is not None:  # (before the publish, as _log_undo)
                self._log_new_keys(rows[:, 1])
            appended = True
            # (an error inside the publish leaves the session dirty: the next writer's
            # recount decides what is live, so nothing is counted garbage here)
            if built is not None:
                self._switch_index(*built)
            else:
                for h, ref in rows.tolist():
                    self._store_new_slot(h, ref)
        finally:
            self._size_hint = 0
            if not appended:
                if index is not None:
                    index.discard()
                if self._undo is None:
                    for ref, size in runs:  # appended, never published: garbage
                        self._abandon(ref, size)
        _crash_point("put.stored")
        count_write(self._H)  # after the slots: cached readers look at them again
        _crash_point("put.published")
        H = self._H
        self._set_counts(
            H[L.H_KEYS] + len(new),
            H[L.H_OBJECTS] + len(new),
            H[L.H_LIVE_VALUE] + int(vlens[new].sum()),
        )
        self._add_live_record(nbytes)

    def _place_group(
        self,
        kbs: list[bytes],
        vals: list[Any],
        ix: np.ndarray,
        totals: np.ndarray,
        refs: np.ndarray,
        at: np.ndarray,
        runs: list[tuple[int, int]],
    ) -> list[tuple[Any, ...]]:
        """Room, in runs, for the records of positions ``ix``, whose keys and values all
        have one length; their references go to ``refs[at]``.  Returns the writes that
        fill the runs (arguments of :func:`_write_run`)."""
        m = len(ix)
        if m != len(kbs):
            il = ix.tolist()
            kbs, vals = [kbs[i] for i in il], [vals[i] for i in il]
        total = int(totals[ix[0]])
        klen, vlen = len(kbs[0]), len(vals[0])
        vo = (16 + 8 + klen + L.ALIGN - 1) & ~(L.ALIGN - 1)
        # bytes go straight into the records through a fixed-width bytes view (each is
        # exactly that wide); other buffers are joined first
        joined = None if type(vals[0]) is bytes else b"".join(vals)
        writes = []
        done = 0
        while done < m:
            seg, aid, off, k = self._alloc(total, m - done)
            # the heads first, then the bump pointer past them: an arena is walked by its
            # length words (compaction), so it never covers a record without its head
            _write_heads(seg, off, k, total, klen, vlen)
            self._commit(seg, off, k * total)  # (live, not published)
            first = (aid << _OFFSET_BITS) | off
            runs.append((first, k * total))
            refs[at[done : done + k]] = first + np.arange(k, dtype=np.uint64) * np.uint64(total)
            if joined is None:
                values: Any = vals[done : done + k]
            else:
                values = np.frombuffer(joined, np.uint8, k * vlen, done * vlen)
            writes.append((seg, off, k, total, kbs[done : done + k], values, vo))
            done += k
        return writes


def _write_heads(seg: Any, off: int, k: int, total: int, klen: int, vlen: int) -> None:
    """Write the head words (:data:`sharedzarr._layout.REC_HEAD1`) of ``k`` one-value
    records of ``total`` bytes at ``off`` of ``seg``."""
    head = np.frombuffer(seg.buf, dtype=np.uint64, count=k * total // 8, offset=off)
    head = head.reshape(k, total // 8)[:, :3]
    head[:, 0] = total
    head[:, 1] = klen | (1 << 32)  # key length, one value
    head[:, 2] = vlen
    del head  # (the arena's buffer may be closed later: no export left)


def _write_run(
    seg: Any, off: int, k: int, total: int, keys: list[bytes], values: Any, vo: int
) -> None:
    """Write the keys and values of ``k`` one-value records of ``total`` bytes at ``off``
    of ``seg`` (heads written, see :func:`_write_heads`); ``values`` is a list of
    ``bytes`` of one length, or their bytes as one uint8 array."""
    klen = len(keys[0])
    rec = np.frombuffer(seg.buf, dtype=np.uint8, count=k * total, offset=off)
    rec = rec.reshape(k, total)
    rec[:, 24 : 24 + klen].view(f"S{klen}")[:, 0] = keys
    vlen = len(values[0]) if type(values) is list else len(values) // k
    if vlen and type(values) is list:
        rec[:, vo : vo + vlen].view(f"S{vlen}")[:, 0] = values
    elif vlen:
        rec[:, vo : vo + vlen] = values.reshape(k, vlen)
    del rec  # (the arena's buffer may be closed later: no export left)


class _IndexJob:
    """:meth:`._index.IndexMixin._build_index` on a helper thread (see step 4): it plans
    the new keys' slots from their hashes and makes the segment while this thread
    allocates their records, then places them once :meth:`give_refs` hands over the
    references."""

    def __init__(self, table: BulkMixin, cap: int, hashes: np.ndarray) -> None:
        self.table = table
        self.built: tuple[int, str, int] | None = None
        self.error: BaseException | None = None
        self._refs: np.ndarray | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(cap, hashes), daemon=True)
        self.thread.start()

    def _run(self, cap: int, hashes: np.ndarray) -> None:
        try:
            self.built = self.table._build_index(cap, hashes, self._wait_refs)
        except BaseException as e:  # handed to the writer's thread by result()
            self.error = e

    def _wait_refs(self) -> np.ndarray:
        self._ready.wait()
        if self._refs is None:
            raise _GaveUp
        return self._refs

    def give_refs(self, refs: np.ndarray) -> None:
        """The new records' references, in the order of the hashes: the build goes on."""
        self._refs = refs
        self._ready.set()

    def result(self) -> tuple[int, str, int]:
        """Wait for the build; its result, or its exception raised here."""
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.built is not None
        return self.built

    def discard(self) -> None:
        """The insert failed: stop or wait for the build and remove what it built."""
        self._ready.set()  # (no references: the build gives up, removing its segment)
        self.thread.join()
        if self.built is not None:
            self.table._drop_built_index(self.built[1])
            self.built = None


class _GaveUp(Exception):
    """The bulk insert failed before its records had references: no index to build."""


def _has_equal(hashes: np.ndarray) -> bool:
    """Whether two of ``hashes`` are equal (one sort)."""
    s = np.sort(hashes.view(np.int64))
    return bool((s[1:] == s[:-1]).any())


def _lengths(items: list[Any]) -> np.ndarray:
    """``len`` of each item, as an int64 array (one pass to find that they are all equal,
    the usual batch, is cheaper than filling the array)."""
    one = set(map(len, items))
    if len(one) == 1:
        return np.full(len(items), one.pop(), dtype=np.int64)
    return np.fromiter(map(len, items), dtype=np.int64, count=len(items))


def _unzip(objs: list[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    """Keys and values of ``(key, value)`` pairs, with a clear error for anything else."""
    try:
        pairs = set(map(len, objs)) == {2}
    except TypeError:
        pairs = False
    if not pairs:
        for o in objs:
            if not (isinstance(o, (tuple, list)) and len(o) == 2):
                raise TypeError(f"insert_many takes (key, value) pairs, got {o!r:.80}")
    return list(map(_KEY, objs)), list(map(_VALUE, objs))
