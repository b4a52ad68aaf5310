"""The lock-free read protocol, all in one place.

Invariants readers rely on (writers keep them; see :mod:`sharedzarr._layout`)
-----------------------------------------------------------------------------
I1  A record is immutable while any slot references it and until its arena is
    unlinked or reused or its room recycled (I2).  A reference is published by one
    aligned 8-byte store of the slot (x86-64 TSO: a reader that sees the reference sees
    the record).
I2  Reuse: a writer bumps ``H_REUSE`` (word 22) before the first byte of a reused arena
    changes, and before it recycles the room of a garbage record (at least
    ``RECYCLE_GRACE_NS`` before; see "Recycling" in :mod:`._arenas`).  A copying read loads
    it before its probe and again after its copy, and repeats on a change
    (:meth:`ReadMixin._consistent`, :meth:`ReadMixin._get_slow`, ``view_reader``'s
    ``fill``); after ``_LOCKED_AFTER`` failed attempts it makes the next one holding the
    writer lock (:meth:`ReadMixin._retrying`), so a long copy under a busy writer still
    finishes.
I3  Pinning: a zero-copy view marks its arena no-reuse (``A_NOREUSE``, stored by
    :meth:`._arenas.ArenaMixin._pin`), then checks ``A_ID`` still holds its arena's id
    and the reuse epoch did not move; a writer reads the mark at least
    ``REUSE_GRACE_NS`` after retiring the arena, or ``RECYCLE_GRACE_NS`` after the epoch
    bump that precedes recycling a room in it.
I4  Every change of a slot's record is followed by a bump of ``H_WRITES`` (word 12);
    every reclaim, reuse, recovery and deletion bumps ``H_RECLAIM`` (21) and
    ``H_WRITES``.  An unchanged ``H_WRITES`` therefore means an unchanged slot and a
    live record: the cached readers (``view_reader``) load nothing else.
I5  A new index generation is published by one store of ``H_GEN`` (9); ``H_DELETED``
    (8) is set before a table's segments are unlinked.
I6  Operations: ``H_OPSEQ`` is odd exactly while a writer session is open (stored by
    :mod:`._session`, which explains the writer's side).  A reader that needs several
    values as of one moment (an array's multi-chunk read) runs
    :meth:`ReadMixin.snapshot`: it waits for an even sequence, reads, and accepts the
    result only if the sequence (and the reuse epoch) did not move; otherwise it reads
    again.  Before it waits for a writer, and after an attempt failed, it stores the
    time in ``H_READER_WAIT`` (the only store of that word; cleared when the read is
    done), and a writer about to open its next session pauses while that stamp is fresh
    (at most ``READER_PAUSE_NS``), so a reader under a writer that never stops still
    finishes.  (Fast paths load :meth:`ReadMixin.snapshot_epoch`, which never waits, and
    hand over to ``snapshot`` when an operation is open or the value moved: waiting
    without the stamp, a reader could poll a busy writer's microsecond gaps for its
    whole wait.)  A session that stays open longer than ``OP_WAIT_S`` (a writer stopped
    or killed mid-operation) is not waited for again by that handle until the sequence
    moves: the reader reads each value whole, as it stands.  A read-only handle stores
    the stamp through a writable mapping of the header kept for such hints
    (``_hint_words``); one that may not write the header (another user's table) cannot
    ask.  The last resort, for every reader:
    after ``_LOCKED_AFTER`` failed attempts (``_LOCKED_AFTER_RO`` when it cannot ask) it
    takes the writer lock (``flock`` needs only a read-only descriptor) for one read, and
    that read cannot be overlapped.  A thread reading inside its own session reads its
    own writes.

Hot paths stay flat: ``get_prepared``, ``borrow_prepared`` and the closures of
``view_reader`` bind the header, index and arena map as locals and use the literal word
indices of :data:`._header.HOT_WORDS`; moving them here added no call per read.
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, TypeVar

import numpy as np

from .. import _layout as L
from .._index import encode_key, key_hash, sort_key
from ..errors import CorruptTableError, LockTimeoutError, NotFoundError
from ._header import _OFFSET_BITS, _READ_RETRIES, Segment
from ._space import SpaceMixin

__all__ = ["OP_WAIT_S", "ReadMixin"]

#: A reader waits at most this long for one open write operation (invariant I6).
OP_WAIT_S = 1.0
_clock = time.monotonic  # the clock of that wait (the tests count its calls)
#: Failed snapshot attempts after which a reader reads once under the writer lock (I6).
_LOCKED_AFTER = 16
_LOCKED_AFTER_RO = 2

_REC_HEAD = L.REC_HEAD  # assigned, not imported: see _header, "Hot paths"

_T = TypeVar("_T")
_AGAIN = object()  # one attempt of a read saw a writer reuse memory under it: repeat
_VIEW_CACHE_MAX = 1 << 16  # entries per view_reader (each holds a view, not a copy)


class ReadMixin(SpaceMixin):
    """The lock-free read operations of a table handle."""

    def _values(
        self, seg: Segment, off: int, copy: bool, aid: int = 0, borrow: bool = False
    ) -> list[Any] | None:
        """The values of the record at ``off``: ``bytes``, or with ``copy=False`` views.

        Views pin arena ``aid`` (see :meth:`_pin`); None means it was retired meanwhile
        and the caller must look the key up again.  ``borrow`` views pin nothing: for
        callers that hold the writer lock (nothing is reused meanwhile).
        """
        mm = seg.mm
        _total, klen, n = _REC_HEAD.unpack_from(mm, off)
        lens = struct.unpack_from(f"<{n}Q", mm, off + 16)
        pos = off + L.value_offset(klen, n)
        out: list[Any] = []
        view = not copy and (borrow or seg.words_writable)
        if view and not borrow and not self._pin(seg, aid):
            return None
        buf = seg.rbuf
        for vlen in lens:
            if pos + vlen > seg.size:
                raise self._corrupt((0 << 40) | off)
            if view:
                out.append(buf[pos : pos + vlen])
            else:
                v = mm[pos : pos + vlen]
                out.append(v if copy else memoryview(v))
            pos += (vlen + 63) & ~63
        return out

    def prepare_key(self, key: Any) -> tuple[bytes, int]:
        """Encode and hash a key once, for repeated use with :meth:`get_prepared`."""
        kb = encode_key(key)
        return kb, key_hash(kb)

    def op_seq(self) -> int:
        """The operation sequence: odd while a writer session is open (invariant I6).

        One word load; a handle that cached something derived from the table (an array's
        metadata) compares it with the value it cached to know whether to look again.
        """
        H = self._H
        return (H if H is not None else self._check_open())[23]  # L.H_OPSEQ

    def snapshot_epoch(self) -> int:
        """The operation sequence and reuse epoch as one value, loaded without waiting: a
        read is a snapshot iff it had an even upper half before the read and did not move;
        otherwise hand the read to :meth:`snapshot` (I6)."""
        H = self._H
        if H is None:
            H = self._check_open()
        return (H[23] << 32) | H[22]  # L.H_OPSEQ, L.H_REUSE

    def _retrying(self, once: Callable[..., Any], *args: Any) -> Any:
        """Repeat the one-value read attempt ``once(*args)`` while it returns ``_AGAIN``;
        late attempts hold the writer lock (invariant I2)."""
        for attempt in range(_READ_RETRIES):
            locked = False
            if attempt >= _LOCKED_AFTER and not self._lock.depth:  # (not in our session)
                try:
                    self._lock.acquire(OP_WAIT_S)
                    locked = True
                except LockTimeoutError:
                    pass  # a stopped writer keeps it: attempt without it
            try:
                got = once(*args)
            finally:
                if locked:
                    self._lock.release()
            if got is not _AGAIN:
                return got
        raise self._kept_changing()

    _stuck_op = 0  # an operation this handle waited OP_WAIT_S for in vain (see I6)

    def _wait_operation(self, H: memoryview, s: int) -> int:
        """Wait until the open operation ``s`` ends (not again for one that outlasted a
        whole wait, see I6); return the sequence to read under."""
        if self._lock.depth or s == self._stuck_op:  # our own session: read our own writes
            return s
        end = _clock() + OP_WAIT_S
        spins = 0
        while True:
            s = H[L.H_OPSEQ]
            if not s & 1:
                return s
            if _clock() >= end:
                self._stuck_op = s  # stopped or killed mid-operation: read values whole,
                return s  # as they are, now and on later reads
            spins += 1
            if spins < 64:
                os.sched_yield()
            else:
                time.sleep(50e-6)

    def snapshot(self, read: Callable[[], _T]) -> _T:
        """Run the lock-free ``read()`` until it saw the table as of one moment (I6).

        Parameters
        ----------
        read : callable
            Reads several values (copies them out); may be called more than once.

        Returns
        -------
        The result of the first ``read()`` that no write operation or arena reuse
        overlapped.

        Raises
        ------
        SharedZarrError
            When writers kept interfering for ``_READ_RETRIES`` attempts.
        """
        H = self._check_open()
        W = self._hint_words()  # writable even for most read-only handles (None: cannot ask)
        stamp = 0
        try:
            for attempt in range(_READ_RETRIES):
                start = self.snapshot_epoch()
                if start >> 32 & 1 and not self._lock.depth:  # a writer's operation is open:
                    if not stamp and W is not None:  # ask it to pause before its next one,
                        stamp = time.monotonic_ns()  # so we get in; then wait for this one
                        W[L.H_READER_WAIT] = stamp
                    start = (self._wait_operation(H, start >> 32) << 32) | H[L.H_REUSE]
                try:
                    out = read()
                except (CorruptTableError, struct.error, TypeError):
                    if ((H[L.H_OPSEQ] << 32) | H[L.H_REUSE]) != start:
                        continue
                    raise
                if ((H[L.H_OPSEQ] << 32) | H[L.H_REUSE]) == start:
                    return out
                if W is not None:  # ask writers to pause before their next operation
                    stamp = time.monotonic_ns()
                    W[L.H_READER_WAIT] = stamp
                if attempt >= (_LOCKED_AFTER_RO if W is None else _LOCKED_AFTER):
                    try:  # last resort: keep writers out for one read (any descriptor flocks)
                        self._lock.acquire(OP_WAIT_S)
                    except LockTimeoutError:
                        continue  # a writer stopped mid-operation holds it: retry as before
                    try:
                        return read()
                    finally:
                        self._lock.release()
        finally:
            if stamp and W is not None and W[L.H_READER_WAIT] == stamp:
                W[L.H_READER_WAIT] = 0
        raise self._kept_changing()

    @contextlib.contextmanager
    def writers_held(self, timeout: float | None = 60.0) -> Iterator[None]:
        """Keep every writer out while the block runs: what it reads is one snapshot.

        For a reader of many values at once (an export).  It takes the writer lock (an
        ``flock``, which any handle may take, read-only ones included) but opens no write
        session, so it needs no write permission and changes nothing.

        Parameters
        ----------
        timeout : float or None
            Seconds to wait for the lock; None waits forever.

        Raises
        ------
        LockTimeoutError
            When a writer keeps the lock longer.
        """
        self._check_open()
        self._lock.acquire(timeout)
        try:
            yield
        finally:
            self._lock.release()

    def reuse_epoch(self) -> int:
        """The reuse epoch (I2): a reader of a *borrowed* view (``borrow=True``) loads it
        before the lookup and after its copy, and reads again when it moved."""
        H = self._H
        return (H if H is not None else self._check_open())[22]  # L.H_REUSE

    def get_prepared(
        self, pk: tuple[bytes, int], *, copy: bool = True, borrow: bool = False
    ) -> Any:
        """The first value of a prepared key (see :meth:`prepare_key`), or None when absent.

        The fastest read: one probe, no list.

        Parameters
        ----------
        pk : tuple
            From :meth:`prepare_key`.
        copy : bool
            ``True`` returns ``bytes``.  ``False`` returns a read-only memoryview into
            shared memory that stays valid and unchanged while held (its data segment is
            then never reused in place; a user who may not write the segment gets a view
            of a copy).
        borrow : bool
            With ``copy=False``: a view that is valid only while :meth:`reuse_epoch`
            keeps the value it had before this call; for readers that copy it at once and
            then check the epoch (the array's read path).  Costs no shared-memory store.
        """
        kb, h = pk
        H = self._H
        if H is not None:
            epoch = H[22]  # L.H_REUSE, loaded before the probe
            hit = self._probe_home(kb, h, H)
            if hit is not None:
                seg, ref, pos, vlen = hit
                if copy:
                    v = seg.mm[pos : pos + vlen]
                    if H[22] == epoch:
                        return v
                elif borrow:
                    return seg.rbuf[pos : pos + vlen]
                elif seg.words_writable:
                    w = seg.words
                    if not w[7] & 1:  # no NOREUSE_VIEW yet: pin (the store is _arenas')
                        self._pin(seg, ref >> _OFFSET_BITS)
                    if w[6] == ref >> _OFFSET_BITS and H[22] == epoch:  # A_ID
                        return seg.rbuf[pos : pos + vlen]
        return self._get_slow(kb, h, copy, borrow)

    def borrow_prepared(self, pk: tuple[bytes, int]) -> memoryview | None:
        """``get_prepared(pk, copy=False, borrow=True)`` without keyword dispatch.

        The array's chunk reader calls it once per chunk.
        """
        kb, h = pk
        hit = self._probe_home(kb, h, self._H)
        if hit is not None:
            return hit[0].rbuf[hit[2] : hit[2] + hit[3]]
        return self._get_slow(kb, h, False, True)  # type: ignore[return-value]  # a view

    def view_reader(
        self,
        prepare: Callable[[Any], tuple[bytes, int]],
        wrap: Callable[[memoryview], Any],
        *,
        pin: bool = False,
        take: Callable[[Any], Any] | None = None,
        fallback: Callable[[Any], Any] | None = None,
        missing: Any = None,
    ) -> Callable[[Any], Any]:
        """A reader for repeated reads of the same keys: ``read(k) -> wrap(view) or None``.

        ``k`` is any hashable name of a key and ``prepare(k)`` its prepared key.  The first
        read of ``k`` probes the index and caches ``wrap(view of the first value)``; later
        reads return the cached object after loading one header word: the write counter
        did not move since the entry was checked.  Every change of a slot's record is
        followed by a bump of the counter (moving a record in a compaction leaves the old
        bytes in place until their arena is reclaimed or reused), and so are every reclaim,
        reuse, recovery and deletion, so an unchanged counter means an unchanged slot and a
        live record: the read touches no page of the index.  ``take`` copies are checked by
        loading the counter again.  When the counter moved, the key's slot is loaded and
        compared (and every cached view dropped if an arena was reclaimed meanwhile).
        Every 4096th cached read also asks the OS whether the table was removed (deleting
        a table moves the counter, but ``rm -f`` of its segments does not).

        Parameters
        ----------
        prepare : callable
            ``k -> prepared key`` (see :meth:`prepare_key`).
        wrap : callable
            ``memoryview -> object`` (e.g. a numpy array over it); may return None for a
            value it cannot wrap, which ``read`` then returns (uncached).  An absent key is
            remembered too, until the write counter moves.
        pin : bool
            False: the objects are *borrowed* (copy them, then check :meth:`reuse_epoch`).
            True: their data segments are marked never to be reused, so they stay valid
            and unchanged while held (a handle that cannot mark gets wrapped copies).
        take : callable, optional
            ``read`` returns ``take(object)`` instead: with ``pin=False`` typically a copy,
            made and checked inside ``read``, so it is never torn; with ``pin=True`` e.g. a
            view, so callers never share the cached object.
        fallback : callable, optional
            ``fallback(k) -> object``: ``read(k)`` returns it when the key is absent (and
            ``missing`` is None), when its value cannot be wrapped, and when ``k`` is not
            hashable.  (``Array.read_chunk`` uses such readers: one call on the hot path,
            its general case behind.)
        missing : object, optional
            What an absent key reads as, cached like a value (and passed through ``take``):
            e.g. a chunk of fill values.  None: ``read`` returns None (or the fallback's
            answer) for an absent key.

        Returns
        -------
        callable
            ``read(k)``; None when the key is absent (without ``fallback``).
        """
        cache: dict[Any, tuple[Any, ...]] = {}
        tick = 0  # cached reads so far: every 4096th asks whether the table was removed

        def read(k: Any) -> Any:
            nonlocal tick
            H = self._H
            try:
                ent = cache.get(k)
            except TypeError:  # an unhashable name: never cached
                if fallback is None:
                    raise
                return fallback(k)
            if ent is not None and H is not None:
                writes, obj, gen, j, ref, rec = ent
                tick += 1
                if tick & 4095 or not (H[8] or self._hdr.unlinked()):
                    now = H[12]  # L.H_WRITES, loaded before the slot and the copy
                    if now != writes:
                        # something was written, reclaimed, recovered or deleted since the
                        # entry was checked: the key's slot must still hold the same record
                        if H[21] != rec:  # L.H_RECLAIM
                            # drop every cached view, so none keeps the memory of an
                            # unlinked segment mapped
                            cache.clear()
                            return miss(k)
                        try:
                            # j < 0: the key was absent (no slot to check; a write may add it)
                            if H[8] or H[9] != gen or j < 0 or self._idx[j] != ref:
                                return miss(k)  # (L.H_DELETED, L.H_GEN)
                        except (TypeError, ValueError):
                            return miss(k)  # the index was replaced under this thread
                        cache[k] = (now, obj, gen, j, ref, rec)
                    if obj is None:  # absent, and no ``missing`` to stand for it
                        return None if fallback is None else fallback(k)
                    if take is None:
                        return obj
                    out = take(obj)
                    if H[12] == now:  # no store since: the record was live all along
                        return out
                else:  # the periodic check: removed without the deleted flag (rm -f)
                    raise self._not_found()
            return miss(k)

        def miss(k: Any) -> Any:
            out = fill(k)
            return out if out is not None or fallback is None else fallback(k)

        def fill(k: Any) -> Any:
            kb, h = prepare(k)
            H = self._check_open()
            return self._retrying(_fill_once, k, kb, h, H)

        def _fill_once(k: Any, kb: bytes, h: int, H: memoryview) -> Any:
            """One attempt of ``fill``: the value, or ``_AGAIN`` when it must be repeated."""
            epoch, rec, writes = H[L.H_REUSE], H[L.H_RECLAIM], H[L.H_WRITES]
            if H[L.H_GEN] != self._idx_gen:
                self._load_index()
            gen = self._idx_gen
            hit = self._located(kb, h, H, epoch)
            if hit is False:
                return _AGAIN
            if hit is None:  # absent: remembered until the write counter moves
                if len(cache) >= _VIEW_CACHE_MAX:
                    cache.clear()
                cache[k] = (writes, missing, gen, -1, 0, rec)
                return missing if take is None or missing is None else take(missing)
            slot, ref, seg, pos, vlen = hit
            if pin and not seg.words_writable:  # cannot mark: a copy, not cached
                obj = wrap(memoryview(seg.mm[pos : pos + vlen]))
                if H[L.H_REUSE] == epoch:
                    return obj
                return _AGAIN
            if pin and not self._pin(seg, ref >> _OFFSET_BITS):
                return _AGAIN
            obj = wrap(seg.rbuf[pos : pos + vlen])
            out = obj if take is None or obj is None else take(obj)
            if H[L.H_REUSE] != epoch:
                return _AGAIN
            if obj is not None:
                if len(cache) >= _VIEW_CACHE_MAX:
                    cache.clear()
                cache[k] = (writes, obj, gen, (slot << 1) + 1, ref, rec)
            return out

        return read

    def _located(
        self, kb: bytes, h: int, H: memoryview, epoch: int
    ) -> tuple[int, int, Segment, int, int] | None | Literal[False]:
        """:meth:`_locate` for a reader that loaded the reuse epoch ``epoch`` first.

        False means "look again" (an absent key or an unparsable record while a writer
        reused memory); an error that persists with the epoch unchanged is raised.
        """
        try:
            hit = self._locate(kb, h)
        except (CorruptTableError, struct.error):
            if H[L.H_REUSE] != epoch:
                return False
            raise
        if hit is None and H[L.H_REUSE] != epoch:
            return False  # a probe may have skipped a reused record
        return hit

    def value_spans(
        self, pks: Sequence[tuple[bytes, int]]
    ) -> tuple[int, list[tuple[int, int, int] | None], dict[int, memoryview]]:
        """Where the values of prepared keys lie in this handle's arena mappings (borrowed).

        For readers that gather from many values at once with one numpy operation (the
        array's ``a[idx]``).  Returns ``(token, spans, buffers)``: ``spans[i]`` is
        ``(arena id, value offset, value length)`` of ``pks[i]`` (None when absent) and
        ``buffers[id]`` the arena's read-only mapping.  They stay right while
        :meth:`write_token` returns ``token`` (I4: no slot changed, no record moved); a
        copy made from them is whole if :meth:`reuse_epoch` did not move around it (I2).
        """
        H = self._check_open()
        for _attempt in range(_READ_RETRIES):
            token, epoch = H[L.H_WRITES], H[L.H_REUSE]
            spans: list[tuple[int, int, int] | None] = []
            buffers: dict[int, memoryview] = {}
            again = False
            for kb, h in pks:
                hit = self._located(kb, h, H, epoch)
                if hit is False:
                    again = True
                    break
                if hit is None:
                    spans.append(None)
                    continue
                _slot, ref, seg, pos, vlen = hit
                aid = ref >> _OFFSET_BITS
                if aid not in buffers:
                    rbuf = seg.rbuf
                    if rbuf is None:
                        raise self._kept_changing()
                    buffers[aid] = rbuf
                spans.append((aid, pos, vlen))
            if not again and H[L.H_WRITES] == token and H[L.H_REUSE] == epoch:
                return token, spans, buffers
        raise self._kept_changing()

    def arenas_in_one_range(self, aids: Sequence[int]) -> tuple[Any, dict[int, int]] | None:
        """Map arenas ``aids`` read-only back to back in one address range, for a gather
        across them in one numpy operation (see :class:`sharedzarr._segment.Concatenated`).

        Returns ``(range, offsets)`` (``numpy.asarray(range)`` is the bytes; ``offsets``
        maps an arena id to where it starts), or None when an arena is gone or renamed
        meanwhile, or the mapping fails: the caller keeps its per-arena views.  Each
        arena's id word is checked in the new mapping, so the range holds these arenas;
        as with every borrowed read, copies from it are checked against the reuse epoch.
        """
        import numpy as np

        from .._segment import Concatenated

        try:
            uid = os.fstat(self._hdr.fd).st_uid if self._hdr.fd >= 0 else os.geteuid()
            rng = Concatenated([self._seg_name_arena(a) for a in aids], uid)
        except OSError:
            return None
        data = np.asarray(rng)
        offsets = dict(zip(aids, rng.offsets, strict=True))
        for aid, off in offsets.items():
            if int(data[off + 8 * L.A_ID : off + 8 * L.A_ID + 8].view("<u8")[0]) != aid:
                return None  # the name now holds another arena
        return rng, offsets

    def write_token(self) -> int:
        """The write counter (``H_WRITES``): unchanged means no slot changed (I4)."""
        H = self._H
        return (H if H is not None else self._check_open())[12]  # L.H_WRITES

    def _get_slow(self, kb: bytes, h: int, copy: bool, borrow: bool) -> bytes | memoryview | None:
        """:meth:`get_prepared` by a full probe, repeated while arenas are reused under it."""
        H = self._check_open()
        got = self._get_once(kb, h, copy, borrow, H)  # (absent keys come here: no retry loop)
        if got is _AGAIN:
            got = self._retrying(self._get_once, kb, h, copy, borrow, H)
        return got  # type: ignore[no-any-return]

    def _get_once(self, kb: bytes, h: int, copy: bool, borrow: bool, H: memoryview) -> Any:
        """One attempt of :meth:`_get_slow`: the value, None, or ``_AGAIN``."""
        epoch = H[L.H_REUSE]
        hit = self._located(kb, h, H, epoch)
        if hit is None or hit is False:
            return _AGAIN if hit is False else None
        _slot, ref, seg, pos, vlen = hit
        v: bytes | memoryview  # (an annotation: no code runs)
        if copy:
            v = seg.mm[pos : pos + vlen]
        elif borrow:
            return seg.rbuf[pos : pos + vlen]
        elif not seg.words_writable:
            v = memoryview(seg.mm[pos : pos + vlen])  # cannot pin: hand out a copy
        else:
            if not self._pin(seg, ref >> _OFFSET_BITS):
                return _AGAIN
            v = seg.rbuf[pos : pos + vlen]
        return v if H[L.H_REUSE] == epoch else _AGAIN

    def _consistent(self, read: Callable[[], _T]) -> _T:
        """Run the lock-free ``read()``; repeat it when a reused arena may have changed under it."""
        H = self._check_open()

        def once() -> Any:
            epoch = H[L.H_REUSE]
            try:
                out = read()
            except (CorruptTableError, struct.error, TypeError):
                if H[L.H_REUSE] != epoch:
                    return _AGAIN
                raise
            return out if H[L.H_REUSE] == epoch else _AGAIN

        return self._retrying(once)  # type: ignore[no-any-return]

    def get(self, key: Any, default: Any = None, *, copy: bool = True) -> Any:
        """Return the (first) value stored under ``key``, or ``default``.

        ETS: ``ets:lookup_element/3`` with a default (``lookup_element/4``).

        Parameters
        ----------
        key : key
            The key.
        default : object
            Returned when the key is absent.
        copy : bool
            ``False`` returns a read-only memoryview into shared memory (zero copy).
        """
        kb = encode_key(key)
        v = self.get_prepared((kb, key_hash(kb)), copy=copy)
        return default if v is None else v

    def lookup(self, key: Any, *, copy: bool = True) -> list[Any]:
        """Return the list of values stored under ``key`` (empty when absent).

        ETS: ``ets:lookup/2``.  ``set``/``ordered_set`` give at most one value.

        Parameters
        ----------
        key : key
            The key.
        copy : bool
            ``True`` (default) returns ``bytes``; ``False`` returns read-only
            memoryviews into shared memory that stay valid and unchanged while
            held, even if the key is overwritten or deleted meanwhile.
        """
        kb = encode_key(key)
        h = key_hash(kb)
        if not self._bag:
            v = self.get_prepared((kb, h), copy=copy)
            return [] if v is None else [v]

        def read() -> list[Any] | None:
            slot, ref, seg, off = self._find(kb, h)
            if slot < 0:
                return []
            return self._values(seg, off, copy, ref >> _OFFSET_BITS)

        for _attempt in range(_READ_RETRIES):
            vals = self._consistent(read)
            if vals is not None:
                return vals
        raise self._kept_changing()

    def __getitem__(self, key: Any) -> bytes:
        """Return the value of ``key`` in a set/ordered_set table.

        ETS: ``ets:lookup_element(T, Key, 2)``.

        Raises
        ------
        NotFoundError
            When the key is absent (also a ``KeyError``).
        """
        kb = encode_key(key)
        h = key_hash(kb)

        def read() -> list[Any] | None:
            slot, _ref, seg, off = self._find(kb, h)
            return None if slot < 0 else self._values(seg, off, True)

        vals = self._consistent(read)
        if vals is None:
            raise NotFoundError(f"key {key!r} is not in table {self.name!r}")
        if self._bag:
            raise TypeError(
                f"table {self.name!r} is a {self.table_type}: use table.lookup(key), "
                "which returns every value"
            )
        first: bytes = vals[0]
        return first

    def __contains__(self, key: Any) -> bool:
        return self.member(key)

    def member(self, key: Any) -> bool:
        """Return True when ``key`` is in the table.  ETS: ``ets:member/2``."""
        kb = encode_key(key)
        h = key_hash(kb)
        return self._consistent(lambda: self._find(kb, h)[0] >= 0)

    def __len__(self) -> int:
        """Number of objects (ETS ``info(T, size)``; a bag counts every value)."""
        return int(self._check_open()[L.H_OBJECTS])

    def _raw_items(self, with_values: bool, copy: bool = True) -> list[Any]:
        """``(key bytes, values)`` of every live slot, each read consistently.

        The slot's reference is reloaded inside each checked read (see :meth:`_consistent`),
        so a record moved or reused meanwhile is read at its new place.
        """
        H = self._check_open()
        for _scan in range(100):
            if H[L.H_GEN] != self._idx_gen:
                self._load_index()
            gen = self._idx_gen
            idx = self._idx
            arr = np.frombuffer(idx, dtype=np.uint64).reshape(-1, 2)
            slots = np.nonzero(arr[:, 1] > 1)[0].tolist()
            del arr
            out = []
            rebuilt = False
            for slot in slots:
                item = None
                for _attempt in range(_READ_RETRIES):
                    if H[L.H_GEN] != gen:
                        rebuilt = True  # the index was rebuilt (slots moved): scan again
                        break
                    item = self._consistent(
                        functools.partial(self._read_slot, idx, slot, with_values, copy)
                    )
                    if item is not None:
                        break
                    time.sleep(0)
                if rebuilt:
                    break
                if item is None:
                    raise self._kept_changing()
                if item:
                    out.append(item)
            if not rebuilt:
                return out
        raise self._kept_changing()

    def _read_slot(self, idx: memoryview, slot: int, with_values: bool, copy: bool) -> Any:
        """One slot's ``(key bytes, values)``; ``()`` if deleted, None to look again."""
        try:
            ref = idx[(slot << 1) + 1]
        except ValueError:  # released: another thread of this process replaced the index
            return None
        if ref <= 1:
            return ()
        r = self._record_at(ref)
        if r is None:
            return None  # its arena is gone: look again
        seg, off = r
        try:
            kb = self._key_at(seg, off)
            if not with_values:
                return (kb, None)
            vals = self._values(seg, off, copy, ref >> _OFFSET_BITS)
        except (struct.error, ValueError, IndexError):
            raise self._corrupt(ref, "holds a record that does not parse") from None
        return None if vals is None else (kb, vals)

    def keys(self) -> list[Any]:
        """All keys (``ordered_set``: sorted; others: any order).  ETS: ``first/next``."""
        keys = [self._decode_key(kb) for kb, _ in self._raw_items(False)]
        if self.table_type == "ordered_set":
            keys.sort(key=sort_key)
        return keys

    def __iter__(self) -> Iterator[Any]:
        """Iterate over the keys (a snapshot; ``ordered_set`` in key order)."""
        return iter(self.keys())

    def items(self, *, copy: bool = True) -> list[tuple[Any, Any]]:
        """All objects as ``(key, value)`` pairs; a bag gives one pair per value.

        ETS: ``ets:tab2list/1``.
        """
        pairs = []
        for kb, vals in self._raw_items(True, copy):
            k = self._decode_key(kb)
            for v in vals:
                pairs.append((k, v))
        if self.table_type == "ordered_set":
            pairs.sort(key=lambda kv: sort_key(kv[0]))
        return pairs
