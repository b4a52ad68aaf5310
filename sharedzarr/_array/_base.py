"""An array handle's state: metadata, the per-array constants the hot paths use, and how
a handle stays current.

Metadata coherence
    Every call that depends on the shape (reads, ``shape``, ``len``) first loads the table's
    operation sequence (one word, :meth:`ArrayBase._sync`); only when it moved, and the
    ``zarr.json`` record changed, does the handle read the metadata again.  Writes check the
    same under the writer lock (:meth:`ArrayBase._sync_locked`), in two word loads when this
    handle wrote last (:meth:`ArrayBase._quiet_after`).  So every handle in every process
    sees a ``resize``, ``append`` or ``attrs`` change on its next call; ``refresh()`` is
    kept for compatibility.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._chunking import DimSelection, chunk_grid_shape, normalize_chunk_index
from .._codecs import CodecPipeline
from .._metadata import ArrayMetadata
from ..errors import AccessDeniedError, CorruptTableError
from ..storage.base import Backend
from ._attributes import Attributes

__all__ = ["ArrayBase"]

_PARALLEL_BYTES = 16 << 20  # reads at least this big copy on two threads
DEFAULT_WRITE_TIMEOUT = 60.0  # seconds a write waits for the writer lock (Array.write_timeout)
_INNER_CHUNKS_MAX = 1 << 16  # write_chunk's cache of checked chunk indices (per handle)
# multi-chunk reads keep a cached view per chunk (see Array._copy_pieces) up to this many
# chunks; a bigger array would cycle through the backend's cache faster than it helps
_CACHED_VIEWS_MAX_CHUNKS = 1 << 15
# For each destination dtype kind, the source kinds that convert without losing information
# ("same kind" in numpy's terms; integer narrowing is range-checked).
_SOURCE_KINDS = {"b": "b", "i": "biu", "u": "biu", "f": "biuf", "c": "biufc"}
_SOURCE_KINDS.update({"M": "M", "m": "m", "S": "S", "U": "U", "V": "V"})  # no parsing mid-write


def _is_fill_value(part: np.ndarray, fill: Any) -> bool:
    """True when every element of ``part`` is ``fill`` (NaN matches NaN)."""
    try:
        return bool(np.array_equal(part, np.broadcast_to(fill, part.shape), equal_nan=True))
    except TypeError:  # no NaN for this dtype (ints, strings, structured)
        return bool((part == fill).all())


def _whole_floats(arr: np.ndarray, dst: np.dtype[Any]) -> np.ndarray:
    """Return float ``arr`` if integer dtype ``dst`` holds every value exactly (whole, finite,
    in range), else raise: ``TypeError`` for a fraction, NaN or infinity (as for any lossy
    conversion), ``ValueError`` for a whole number out of range (as for integers)."""
    if not arr.size:
        return arr
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(arr) | (arr != np.trunc(arr))
    if bad.any():
        first = arr.reshape(-1)[bad.reshape(-1)][0]
        raise TypeError(
            f"cannot write data of dtype {arr.dtype} into a {dst} array without losing "
            f"information: {float(first)!r} is not a whole number; round or convert it explicitly "
            f"first (e.g. np.round(data).astype({str(dst)!r}))"
        )
    info = np.iinfo(dst)
    lo, hi = arr.min(), arr.max()
    # (compared as floats: the bounds of a 64-bit dtype round to the nearest float, so the
    # upper one is exclusive; a float equal to 2**63 does not fit int64)
    if lo < info.min or hi >= float(info.max) + 1:
        raise ValueError(
            f"data values range from {float(lo)!r} to {float(hi)!r}, which does not fit {dst} "
            f"({info.min} to {info.max})"
        )
    return arr


def _byte_view(arr: np.ndarray) -> memoryview:
    """Return a 1-d unsigned-byte memoryview of a C-contiguous array (no copy)."""
    exported: Any = arr  # (numpy arrays export the buffer protocol)
    try:  # on every write's path: one buffer export, no numpy views on the way
        return memoryview(exported).cast("B")
    except (TypeError, ValueError, NotImplementedError):
        pass  # dtypes the buffer protocol does not describe (datetime, some structured)
    flat: Any = arr.reshape(-1).view(np.uint8)
    return memoryview(flat)


_NO_DATA: Any = object()  # _write_op without data

_RowPlan = tuple[int, tuple[int, ...], Any]


def _row_plan(meta: ArrayMetadata) -> _RowPlan | None:
    """For :meth:`Array._row`: ``(rows per chunk, chunk index after the first axis, trim)``
    when one chunk spans whole rows (one chunk along every axis after the first), else
    None.  ``trim`` cuts an edge chunk's padding off a row (or is None).  Rows of no
    elements (a later axis of length 0: no chunks at all) take the general path."""
    shape, chunks = meta.shape, meta.chunks
    if not shape or any(c < n or not n for c, n in zip(chunks[1:], shape[1:], strict=True)):
        return None
    trim = None if chunks[1:] == shape[1:] else tuple(slice(0, n) for n in shape[1:])
    return chunks[0], (0,) * (len(shape) - 1), trim


class ArrayBase:
    """The state every part of :class:`~sharedzarr.Array` shares, and its metadata upkeep."""

    _backend: Backend | None = None
    _closed: bool = True

    def __init__(
        self, backend: Backend, metadata: ArrayMetadata, metadata_bytes: bytes | None = None
    ) -> None:
        self._backend = backend
        self._reader = backend.chunk_reader()  # borrowed views; see Backend.reuse_epoch
        # multi-chunk reads are snapshots: the epoch moves when a write operation or a
        # reuse overlaps a read, and snapshot() repeats a read until none did
        self._epoch = backend.snapshot_epoch
        self._snapshot = backend.snapshot
        self._op_seq = backend.op_seq  # metadata coherence: see _sync
        self._meta_seq = self._op_seq()
        self._quiet = (-1, -1)  # see _quiet_after
        self._meta_token: Any = None
        self._meta_pin: Any = None  # see ChunkMixin._metadata_unchanged
        self._write_timeout: float | None = DEFAULT_WRITE_TIMEOUT
        self._attrs: Attributes | None = None
        self._set_metadata(metadata, metadata_bytes)
        self._closed = False

    def _set_metadata(self, meta: ArrayMetadata, raw: bytes | None = None) -> None:
        """Install metadata and precompute the per-array constants the hot paths use."""
        self._meta = meta
        self._meta_raw = raw if raw is not None else meta.to_json()
        self._meta_pin = None
        self._shape = meta.shape
        self._chunks = meta.chunks
        self._dtype = meta.dtype
        little = meta.endian == "little"
        self._chunk_dtype = (
            meta.dtype.newbyteorder("<" if little else ">")
            if meta.dtype.itemsize > 1
            else meta.dtype
        )
        self._pipeline = CodecPipeline(meta.codecs)
        self._raw = self._pipeline.raw
        self._grid = chunk_grid_shape(meta.shape, meta.chunks)
        self._chunk_size = math.prod(meta.chunks)
        self._chunk_nbytes = self._chunk_size * meta.dtype.itemsize
        self._fill = self._chunk_dtype.type(meta.fill_value)
        self._fill_chunk_cache: np.ndarray | None = None
        # read_chunk fast path: raw chunks already in the array's dtype (the readers validate
        # indices against this grid, which changes only with the metadata)
        self._fast_chunks = self._raw and self._chunk_dtype == self._dtype
        self._window_2d = self._raw and len(meta.shape) == 2  # see _window2d
        self._cached_views = self._raw and math.prod(self._grid) <= _CACHED_VIEWS_MAX_CHUNKS
        self._chunk_views: dict[bool | None, Any] = {}  # copy -> cached_chunk_reader
        # write_chunk: indices of chunks that lie whole inside the array (as given -> checked)
        self._inner_chunks: dict[tuple[Any, ...], tuple[int, ...]] = {}
        # a[i] and a[idx] of arrays whose chunks span whole rows: see _row and _take
        self._takes: _RowPlan | None = (
            _row_plan(meta) if self._fast_chunks and self._cached_views else None
        )
        self._rows: _RowPlan | None = self._takes if len(meta.shape) > 1 else None
        self._span_plan: Any = None  # a[idx] as one gather: see _take_spans
        self._spans_ok = True
        self._span_stride = 0
        self._span_uses = 0
        self._span_skip = 0
        self._span_range: Any = None  # (arena ids, range, offsets): see _plan_spans
        self._drop_hot_readers()  # read_chunk's, installed on first use

    def _fill_chunk(self) -> np.ndarray:
        """A read-only chunk full of the fill value (chunk dtype), built on first use."""
        fc = self._fill_chunk_cache
        if fc is None:
            fc = np.full(self._chunks, self._fill, dtype=self._chunk_dtype)
            fc.flags.writeable = False
            self._fill_chunk_cache = fc
        return fc

    def _load_metadata(self) -> tuple[ArrayMetadata, bytes]:
        raw = self._live().read_metadata()
        if raw is None:
            raise CorruptTableError(
                f"array {self.name!r}: its zarr.json ('metadata' key) is gone; the storage no "
                "longer holds an array"
            )
        raw = bytes(raw)
        if raw == self._meta_raw:
            return self._meta, raw
        return ArrayMetadata.from_json(raw), raw

    def refresh(self) -> bool:
        """Re-read ``zarr.json`` so this handle sees another handle's resize or attrs change.

        Returns
        -------
        bool
            True if the metadata had changed.
        """
        meta, raw = self._load_metadata()
        if raw == self._meta_raw:
            return False
        self._set_metadata(meta, raw)
        return True

    def _live(self) -> Backend:
        backend = self._backend
        if backend is None or self._closed:
            raise ValueError(f"array {self._name_or_unknown()!r} is closed")
        return backend

    def _writable(self) -> Backend:
        backend = self._live()
        if backend.readonly:
            raise AccessDeniedError(
                f"array {backend.name!r} was opened read-only (mode='r'); "
                f"open it with sharedzarr.open({backend.name!r}, mode='r+') to write"
            )
        return backend

    def _name_or_unknown(self) -> str:
        backend = self._backend
        return getattr(backend, "name", "?") if backend is not None else "?"

    def _decode(self, raw: Any, idx: tuple[int, ...]) -> np.ndarray:
        """Stored bytes -> ndarray of the chunk shape (chunk dtype); read-only if ``raw`` is."""
        if not self._raw:
            raw = self._pipeline.decode(raw)
        if len(raw) != self._chunk_nbytes:
            size = memoryview(raw).nbytes
            if size != self._chunk_nbytes:
                raise CorruptTableError(
                    f"array {self.name!r}: chunk {idx} holds {size} bytes after decoding, "
                    f"expected {self._chunk_nbytes} ({self._chunks} x {self._dtype})"
                )
        # frombuffer, not ndarray(buffer=...): numpy then keeps the memoryview (and so the
        # mapping's export) as the base; with ndarray(buffer=) the base is the bare mmap,
        # which a later close would unmap under the array
        return np.frombuffer(raw, self._chunk_dtype).reshape(self._chunks)

    def _check_data(self, data: Any) -> np.ndarray:
        """Return ``data`` as an ndarray whose values convert to the array dtype without loss.

        The conversion itself happens when the values are copied into chunks.
        """
        dst = self._dtype
        if dst.fields is not None and type(data) in (tuple, list):
            # records given as tuples (a[2] = (1, 2.5)), as numpy takes them: they only
            # mean something in the array's own dtype
            try:
                return np.asarray(data, dtype=dst)
            except (ValueError, TypeError) as exc:
                raise TypeError(f"cannot convert data to records of {dst}: {exc}") from None
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"cannot convert data to an array: {exc}") from None
        src = arr.dtype
        if src == dst:
            return arr
        if src.kind == "f" and dst.kind in "iu":  # whole numbers given as floats (a[:] = 0.0)
            return _whole_floats(arr, dst)
        if src.kind not in _SOURCE_KINDS[dst.kind]:
            how = "data.astype(a.dtype)" if dst.fields is not None else f"data.astype({str(dst)!r})"
            raise TypeError(
                f"cannot write data of dtype {src} into a {dst} array without losing "
                f"information; convert it explicitly first (e.g. {how})"
            )
        if dst.kind in "iu" and src.kind in "iu" and arr.size and not np.can_cast(src, dst):
            info = np.iinfo(dst)
            lo, hi = int(arr.min()), int(arr.max())
            if lo < info.min or hi > info.max:
                raise ValueError(
                    f"data values range from {lo} to {hi}, which does not fit {dst} "
                    f"({info.min} to {info.max})"
                )
        elif dst.kind == "f" and arr.size and src.kind in "fiu":
            if src.kind == "f" and np.can_cast(src, dst):
                pass  # a wider float: every value fits
            elif src.kind == "f":  # narrower floats: overflow would store inf
                big = np.finfo(dst).max
                with np.errstate(invalid="ignore"):
                    over = np.abs(arr[np.isfinite(arr)]) > big
                if over.any():
                    raise ValueError(
                        f"data holds values beyond {dst}'s range (+-{big:.4g}); they would be "
                        f"stored as inf. Scale them, or create the array with a wider dtype"
                    )
            elif src.itemsize * 8 > np.finfo(dst).nmant + 1:  # ints the mantissa may not hold
                back = arr.astype(dst).astype(src)  # (numpy calls int64 -> float64 "safe")
                if (back != arr).any():
                    bad = arr.reshape(-1)[(back != arr).reshape(-1)][0]
                    raise ValueError(
                        f"the integer {int(bad)} is not exactly representable in {dst}; it "
                        f"would be rounded. Convert explicitly (data.astype({str(dst)!r})) "
                        "if rounding is what you want"
                    )
        return arr

    @staticmethod
    def _broadcast(
        arr: np.ndarray, sels: Sequence[DimSelection], result_shape: tuple[int, ...]
    ) -> np.ndarray:
        """Broadcast data to the selection and add the integer-indexed axes back (views)."""
        try:
            value = np.broadcast_to(arr, result_shape)
        except ValueError:
            raise ValueError(
                f"data of shape {arr.shape} does not fit a selection of shape {result_shape}"
            ) from None
        if any(s.dropped for s in sels):
            value = value[tuple(None if s.dropped else slice(None) for s in sels)]
        return value

    def _refreshed(self) -> bool:
        """After a failed bounds check: re-read the metadata; True if it had changed."""
        return self._backend is not None and not self._closed and self.refresh()

    def _consistent(self, read: Any) -> Any:
        """Run ``read()`` until no write operation or memory reuse overlapped it: a snapshot.

        The protocol (waiting for an open operation, retries, asking writers to pause) is
        the table's: :meth:`sharedzarr._table.Table.snapshot`.
        """
        return self._snapshot(read)

    @property
    def write_timeout(self) -> float | None:
        """Seconds a write waits for the writer lock before ``LockTimeoutError`` (None: forever).

        Used by ``a[...] = v`` and every write without its own ``timeout=``; 60 by default.
        """
        return self._write_timeout

    @write_timeout.setter
    def write_timeout(self, seconds: float | None) -> None:
        if seconds is not None and not seconds >= 0:
            raise ValueError(
                f"write_timeout must be a number of seconds >= 0 or None, not {seconds!r}"
            )
        self._write_timeout = seconds

    def _write_op(
        self, timeout: float | None = None, data: Any = _NO_DATA, *, atomic: bool = False
    ) -> WriteOp:
        """Begin one write operation: what every write of an array does first.

        Checks that the handle may write and that ``data`` (if given) converts to the array's
        dtype without loss, before anything is locked; entering the returned
        :class:`WriteOp` takes the writer lock and makes the handle's metadata current.

        Parameters
        ----------
        timeout : float or None
            Seconds to wait for the writer lock; None: :attr:`write_timeout`.
        data : array_like, optional
            The values the operation writes (``op.data`` holds them, checked).
        atomic : bool
            Undo everything the operation wrote if it raises (see :meth:`atomic`).
        """
        backend = self._writable()
        checked = None if data is _NO_DATA else self._check_data(data)
        wait = self._write_timeout if timeout is None else timeout
        session = backend.writer(wait, atomic=True) if atomic else backend.writer(wait)
        return WriteOp(self, backend, session, checked)

    def _sync(self) -> None:
        """Adopt another handle's resize, append or attrs change: one word load when none.

        Every write operation moves the table's operation sequence (see
        :meth:`sharedzarr._table.Table.op_seq`); when it moved since this handle last
        looked, the handle reads ``zarr.json`` again, as a snapshot.
        """
        if self._op_seq() != self._meta_seq and not self._closed:
            seq = self._op_seq()
            token = self._live().metadata_token()
            if token is not None and token == self._meta_token:
                self._meta_seq = seq  # another write, not of the metadata: nothing to adopt
            else:
                self._resync()

    def _resync(self) -> None:
        """Read ``zarr.json`` again.  No snapshot is needed: it is one record, read whole,
        and writers publish a new shape only after the data it covers (see
        :meth:`_resize_locked`, :meth:`append`).  The sequence and token are loaded before
        the record, so a change after them is noticed by the next :meth:`_sync`."""
        backend = self._live()
        seq = backend.op_seq()
        token = backend.metadata_token()
        raw = backend.read_metadata()
        if raw is not None and raw != self._meta_raw:
            self._set_metadata(ArrayMetadata.from_json(raw), raw)
        self._meta_seq = seq
        self._meta_token = token

    def _synced(self) -> ArrayMetadata:
        """The current metadata (after :meth:`_sync`)."""
        self._sync()
        return self._meta

    def _sync_locked(self) -> bool:
        """Under the writer lock: adopt metadata another handle wrote; True if it changed.

        Two word loads when nothing was written since this handle's last write session
        (:meth:`_quiet_after`); one probe when the metadata record is the one this handle
        read last (its token, see :meth:`_sync`); otherwise the record is read and
        compared."""
        quiet = self._quiet
        if self._op_seq() == quiet[0] and self._live().write_token() == quiet[1]:
            return False
        token = self._live().metadata_token()
        if token is not None and token == self._meta_token:
            return False
        meta, raw = self._load_metadata()
        self._meta_token = token
        if raw == self._meta_raw:
            return False
        self._set_metadata(meta, raw)
        return True

    def _quiet_after(self, seq: int) -> None:
        """After a write that ran at operation sequence ``seq`` and left this handle's
        metadata the stored one: remember the sequence the next write will see if nothing
        else runs, and the write counter, so that :meth:`_sync_locked` knows then, from two
        words, that nothing changed.  If the write's session was the outermost one and
        nothing ran since it closed, that is the next session's sequence; if an enclosing
        session of this thread is still open, it is the same sequence (only this thread can
        write meanwhile, and any metadata write moves the write counter).  Only for
        backends whose sequence counts sessions."""
        backend = self._live()
        if not backend.op_seq_counts_sessions:
            return
        after = self._op_seq()
        if after == seq + 1:
            self._quiet = (after + 1, backend.write_token())
        elif after == seq and seq & 1:
            self._quiet = (seq, backend.write_token())

    def _drop_hot_readers(self) -> None:
        self.__dict__.pop("_read_hot", None)
        self.__dict__.pop("_view_hot", None)

    def _chunk_view_reader(self, copy: bool | None, fallback: Any = None) -> Any:
        """The backend's cached reader of whole chunks (see ``read_chunk``): copies made
        from borrowed numpy views (``copy=True``), pinned numpy views (False), or the
        borrowed views themselves (None: copy from them, then check the reuse epoch; a
        stored value that is not a whole raw chunk comes back as its bytes)."""
        # the stored dtype (read_chunk's fast path runs only where it is the array's dtype)
        shape, dtype, nbytes = self._chunks, self._chunk_dtype, self._chunk_nbytes

        def wrap(buf: Any) -> np.ndarray | None:
            # frombuffer keeps the memoryview as the base (see _decode)
            return np.frombuffer(buf, dtype).reshape(shape) if len(buf) == nbytes else None

        def wrap_any(buf: Any) -> Any:
            # a whole raw chunk as an array; anything else as its bytes, to decode
            return np.frombuffer(buf, dtype).reshape(shape) if len(buf) == nbytes else buf

        backend = self._live()
        grid = self._grid

        def normalize(idx: Any) -> tuple[int, ...]:
            return normalize_chunk_index(idx, grid)

        if copy is None:
            reader = backend.cached_chunk_reader(wrap_any, normalize=normalize)
        else:
            # an absent chunk reads as the fill chunk, cached too: no second probe
            kw = {"normalize": normalize, "fallback": fallback, "missing": self._fill_chunk()}
            if copy:
                reader = backend.cached_chunk_reader(wrap, take=np.ndarray.copy, **kw)
            else:  # views of the pinned cached view (or fill chunk): its flags stay ours
                reader = backend.cached_chunk_reader(wrap, pin=True, take=np.ndarray.view, **kw)
        self._chunk_views[copy] = reader
        return reader

    @property
    def name(self) -> str:
        """The storage (table) name: what :func:`sharedzarr.open` takes."""
        return self._name_or_unknown()


class WriteOp:
    """One write operation of an array handle, as a context manager.

    Entering it opens the storage's writer session (one operation, which a snapshot reader
    sees whole: invariant I6 of :mod:`sharedzarr._table._read`), then adopts the metadata
    another handle wrote meanwhile (:meth:`ArrayBase._sync_locked`).  When it did adopt a
    change, ``changed`` is True and ``data`` is checked again against it.  ``seq`` is the
    operation sequence the session opened at (for :meth:`ArrayBase._quiet_after`).
    Leaving it closes the session; if the session was opened ``atomic`` and the block
    raised, the backend undoes the operation.

    Made by :meth:`ArrayBase._write_op`; every array write goes through it.
    """

    __slots__ = ("_array", "_session", "backend", "changed", "data", "finished", "seq")

    def __init__(
        self, array: ArrayBase, backend: Backend, session: Any, data: np.ndarray | None
    ) -> None:
        self._array = array
        self._session = session
        self.backend = backend
        self.data: Any = data
        self.changed = False
        self.seq = 0
        self.finished = False  # the write ran whole after an interrupt (see _write._finish)

    def undo_if_small(self, nbytes: int) -> None:
        """Make the operation all or nothing, as an ``atomic()`` block, when the write it
        is about to run stores at most ``nbytes`` and that is small next to the array (the
        storage decides: the undo keeps what the write replaces until it ends).  Only the
        operation the write opened itself, before it changed anything; a storage without
        the means keeps the write as it is."""
        make = getattr(self._session, "undo_if_small", None)
        if make is not None:
            make(nbytes)

    def __enter__(self) -> WriteOp:
        session = self._session
        session.__enter__()
        try:
            array = self._array
            self.seq = array._op_seq()
            if array._sync_locked():
                self.changed = True
                if self.data is not None:  # another handle changed the array: check again
                    array._check_data(self.data)
        except BaseException:
            session.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> Any:
        # (three parameters, not ``*exc``: a tuple made before the first bytecode could start
        # a garbage collection there, a pause a signal handler then raises at)
        session = self._session
        if self.finished and not isinstance(ev, Exception) and getattr(session, "auto", False):
            et = ev = tb = None  # an interrupt after the write ran whole: keep it, as numpy
        try:
            return session.__exit__(et, ev, tb)
        except BaseException:  # an interrupt before the session could end: end it
            close = getattr(session, "close_interrupted", None)  # (see the table's writer)
            if close is not None:
                close(et is None)
            raise
