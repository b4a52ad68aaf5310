"""Chunk-level I/O: ``read_chunk``, ``write_chunk(s)``, ``delete_chunk``, ``list_chunks``.

``read_chunk`` becomes one call into a cached reader of the backend on first use.
``write_chunk`` of a big whole chunk, when another writer waits for the lock, reserves its
record under the lock, copies without it and publishes under it again
(:meth:`ChunkMixin._write_reserved`; the protocol is explained by
:class:`sharedzarr._table._reserve.Reservation`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .._chunking import chunk_valid_shape, iter_chunk_indices, normalize_chunk_index
from ..storage.base import Backend
from ._base import _INNER_CHUNKS_MAX, _byte_view
from ._write import _INTERRUPTS, WriteMixin, _finish, _run_pending_handlers

__all__ = ["ChunkMixin"]


class ChunkMixin(WriteMixin):
    """Chunk-level reads and writes of :class:`~sharedzarr.Array`."""

    def read_chunk(self, idx: Sequence[int] | int, copy: bool = True) -> np.ndarray:
        """Return one whole chunk (edge chunks include their fill-value padding).

        Parameters
        ----------
        idx : sequence of int
            The chunk's position in the chunk grid.
        copy : bool
            False returns a read-only view of the stored bytes (shared memory for ``shm``),
            with no copy.  Only possible for uncompressed arrays.

        Returns
        -------
        numpy.ndarray
            Of shape :attr:`chunks`.  A never-written chunk reads as the fill value.

        Raises
        ------
        IndexError
            If ``idx`` is outside the chunk grid.
        ValueError
            For ``copy=False`` on a compressed array.
        """
        # the hot paths (per-chunk readers), once installed: one call into the backend's
        # cached numpy view of the chunk, revalidated by one load, then copied and checked
        # (or viewed: the view's segment is pinned)
        if copy is True:
            return self._read_hot(idx)
        if copy is False:
            return self._view_hot(idx)
        return self._read_chunk(idx, copy)

    def _read_chunk(self, idx: Any, copy: Any) -> np.ndarray:
        """:meth:`read_chunk` off the hot paths (and before they are installed): other
        index types, encoded chunks; the hot readers' fallback."""
        backend = self._live()
        if self._fast_chunks and "_read_hot" not in self.__dict__:
            self._install_hot_readers()
            if copy is True or copy is False:
                return self.read_chunk(idx, copy)  # through the readers just installed
        idx = normalize_chunk_index(idx, self._grid)
        if not copy and not self._raw:
            names = [c.name for c in self._pipeline.codecs]
            raise ValueError(
                f"read_chunk(copy=False) needs an uncompressed array, but {self.name!r} stores "
                f"its chunks encoded with {names}: there is no array in memory to view. Use "
                "copy=True, or create the array with compressor=None for zero-copy reads"
            )
        stored = backend.read_chunk(idx, copy=copy)  # bytes when copying: read consistently
        if stored is None:
            return (
                self._fill_chunk() if not copy else np.full(self._chunks, self._fill, self._dtype)
            )
        arr = self._decode(stored, idx)
        if copy:
            return np.array(arr, dtype=self._dtype)
        if arr.flags.writeable:
            arr.flags.writeable = False
        return arr

    # read_chunk's paths until _install_hot_readers replaces them
    def _read_hot(self, idx: Any) -> np.ndarray:
        return self._read_chunk(idx, True)

    def _view_hot(self, idx: Any) -> np.ndarray:
        return self._read_chunk(idx, False)

    def _install_hot_readers(self) -> None:
        """Make :meth:`read_chunk` one call into a cached reader (raw chunks in the array's
        dtype): copies for ``copy=True``, views of pinned segments for ``copy=False``.
        An absent chunk reads as a copy (or view) of the fill chunk.  They hand the rest
        (indices that are not hashable, values that are not a whole raw chunk) back to
        :meth:`_read_chunk`, holding the array weakly (no reference cycle keeps a dropped
        array mapped)."""
        method = weakref.WeakMethod(self._read_chunk)
        name = self.name

        def fallback(copy: bool) -> Callable[[Any], np.ndarray]:
            def read(idx: Any) -> np.ndarray:
                general = method()
                if general is None:
                    raise ValueError(f"array {name!r} is closed")
                return general(idx, copy)

            return read

        # instance attributes over the methods: read_chunk's hot path is one call
        self._read_hot = self._chunk_view_reader(True, fallback(True))  # type: ignore[method-assign]
        self._view_hot = self._chunk_view_reader(False, fallback(False))  # type: ignore[method-assign]

    def write_chunk(
        self, idx: Sequence[int] | int, data: Any, *, timeout: float | None = None
    ) -> None:
        """Replace one whole chunk.

        Parameters
        ----------
        idx : sequence of int
            The chunk's position in the chunk grid.
        data : array_like or scalar
            The chunk's values: shape :attr:`chunks`, or for an edge chunk also just its
            in-bounds part; anything broadcastable to one of those.  Values in an edge chunk's
            padding are replaced by the fill value.
        timeout : float or None, optional
            Seconds to wait for the writer lock; default :attr:`write_timeout`.

        Raises
        ------
        IndexError
            If ``idx`` is outside the chunk grid.
        ValueError, TypeError, sharedzarr.errors.AccessDeniedError
            As for :meth:`set_slice`.
        """
        if (  # a whole raw chunk inside the array, while this handle is the only writer
            self._fast_chunks
            and type(data) is np.ndarray
            and type(idx) is tuple
            and data.shape == self._chunks
            and data.dtype == self._chunk_dtype
            and data.flags.c_contiguous
            and not self._closed
        ):
            inner = self._inner_chunks.get(idx)
            backend = self._backend
            if inner is None and backend is not None and data.nbytes >= backend.reserve_min:
                try:  # (a big chunk this handle has not written yet: it may take a lease)
                    inner = self._inner_index(idx)[1]
                except IndexError:
                    pass  # (the general path raises it, after a look at the metadata)
            if inner is not None and backend is not None:
                # a big chunk goes into the room reserved for it ahead (a lease), filled
                # before the lock is taken (see _write_reserved)
                room = None
                if data.nbytes >= backend.reserve_min:
                    room = backend.leased_room(data.nbytes)
                    if room is not None:
                        self._fill_room(backend, room, data)
                wait = self._write_timeout if timeout is None else timeout
                try:
                    since = backend.write_chunk_if_unchanged(
                        inner,
                        _byte_view(data) if room is None else room,
                        self._quiet,
                        wait,
                        self._metadata_unchanged,
                    )
                except BaseException:
                    if room is not None:  # (a lock timeout, say: kept for the next write)
                        backend.keep_room(room)
                    raise
                if since is not None:  # stored: nothing changed since this handle's write
                    self._quiet = since
                    return
                if room is not None:
                    self._publish_room(backend, room, inner, data, timeout)
                    return
        op = self._write_op(timeout, data)
        with op:
            room = self._write_chunk_locked(op.backend, idx, op.data)
        if room is None:
            self._quiet_after(op.seq)
        else:  # another writer waits: copy without the lock, publish under it
            self._write_reserved(op.backend, room, idx, op.data, timeout)

    def _metadata_unchanged(self) -> bool:
        """Under the writer lock, after another write: whether this handle's metadata is
        still the stored one (it adopts the stored one if not).  A write that finds it so
        goes on in the same operation (see :meth:`write_chunk`).

        While two handles take turns writing, every write asks this.  The first time, it
        checks the metadata the general way and pins the record (the lock is held: it is
        the one this handle holds); later, the pin's few word loads answer."""
        backend = self._live()
        pin = self._meta_pin
        if pin is not None and backend.metadata_pinned(pin):
            return True
        if self._sync_locked():
            return False  # adopted another handle's change (which drops the pin)
        self._meta_pin = backend.metadata_pin()
        return True

    def _write_reserved(
        self, backend: Backend, room: Any, idx: Any, arr: np.ndarray, timeout: float | None
    ) -> None:
        """Fill a reserved chunk record without the writer lock and publish it under it
        (see ``Backend.reserve_chunk``); if the array's metadata changed meanwhile, the
        record is given up and the chunk written again under the lock, checked anew."""
        self._fill_room(backend, room, arr)
        self._publish_room(backend, room, idx, arr, timeout)

    @staticmethod
    def _fill_room(backend: Backend, room: Any, arr: np.ndarray) -> None:
        """Copy ``arr`` into a reserved room without the writer lock; on failure the room
        is given up."""
        try:
            room.buffer[:] = _byte_view(arr)
        except BaseException:
            with backend.writer(None):
                room.abandon()
            raise

    def _publish_room(
        self, backend: Backend, room: Any, idx: Any, arr: np.ndarray, timeout: float | None
    ) -> None:
        """Publish a filled room as chunk ``idx`` in a write operation.  If the array's
        metadata changed (a leased room was filled before this handle looked: its index
        is checked again, as a whole chunk inside the array), or the room does not fit that
        chunk, it is given up and the chunk written under the lock, checked anew."""
        entered = False
        try:
            with self._write_op(timeout) as op:  # (arr was checked before the copy)
                entered = True
                # (the chunks known to be inside the array are forgotten when it changes)
                inner = (
                    None if op.changed or type(idx) is not tuple else self._inner_chunks.get(idx)
                )
                if inner is None or not backend.publish_reserved(room, inner):
                    room.abandon()
                    self._check_data(arr)
                    self._write_chunk_locked(backend, idx, arr, reserve=False)
        except BaseException:
            if not entered:  # (a lock timeout, say: the room is kept for the next write)
                backend.keep_room(room)
            raise

    def _write_chunk_locked(
        self, backend: Backend, idx: Any, arr: np.ndarray, reserve: bool = True
    ) -> Any:
        """:meth:`write_chunk` under the writer lock, the metadata checked.  Returns the
        reserved room of a big whole chunk when another writer waits (see
        :meth:`_write_reserved`), else None once the chunk is written."""
        idx, buf, whole = self._stored_chunk(idx, arr)
        if whole and reserve and buf.nbytes >= backend.reserve_min:
            room = backend.reserve_chunk(idx, buf.nbytes)
            if room is not None:
                return room
        backend.write_chunk(idx, buf)
        return None

    def _inner_index(self, idx: Any) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        """``(normalised index, the same if the chunk lies whole inside the array else
        None)``; IndexError for an index outside the grid.  The chunks known to lie whole
        inside are kept (forgotten when the metadata changes): their index needs no checks."""
        inner = self._inner_chunks.get(idx) if type(idx) is tuple else None
        if inner is not None:
            return inner, inner
        idx = normalize_chunk_index(idx, self._grid)
        ends = zip(idx, self._chunks, self._shape, strict=True)
        if all((i + 1) * c <= n for i, c, n in ends):
            if len(self._inner_chunks) < _INNER_CHUNKS_MAX:
                self._inner_chunks[idx] = idx
            return idx, idx
        return idx, None

    def _stored_chunk(self, idx: Any, arr: np.ndarray) -> tuple[tuple[int, ...], Any, bool]:
        """What :meth:`write_chunk` stores for ``arr`` at ``idx`` (writer lock held, metadata
        checked): ``(normalised index, the bytes to store, whether they are arr's own)``.

        Raises IndexError for an index outside the grid and ValueError for data that does
        not fit the chunk, before anything is written."""
        idx, inner = self._inner_index(idx)
        if (
            inner is not None
            and self._raw
            and type(arr) is np.ndarray
            and arr.shape == self._chunks
            and arr.dtype == self._chunk_dtype
            and arr.flags.c_contiguous
        ):  # a whole raw chunk as it will be stored: its bytes go in as they are
            return idx, _byte_view(arr), True
        valid = chunk_valid_shape(idx, self._shape, self._chunks)
        target = valid if arr.shape == valid else self._chunks
        try:
            value = np.broadcast_to(arr, target)
        except ValueError:
            raise ValueError(
                f"chunk data of shape {arr.shape} does not fit chunk {idx} of shape "
                f"{self._chunks} (in-bounds part {valid})"
            ) from None
        if valid == self._chunks:
            chunk = np.ascontiguousarray(value, dtype=self._chunk_dtype)
        else:
            chunk = self._fill_chunk().copy()
            region = tuple(slice(0, v) for v in valid)
            chunk[region] = value[region]
        buf = _byte_view(chunk)
        return idx, buf if self._raw else self._pipeline.encode(buf), False

    def write_chunks(
        self,
        chunks: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
        *,
        timeout: float | None = None,
    ) -> int:
        """Replace many whole chunks in one write operation.

        Faster than :meth:`write_chunk` in a loop or in a ``with a.atomic():`` block: one
        writer session, and the chunks' records are published in batches.  Readers that take
        a snapshot (``a[...]``, ``get_slice``) see all of the chunks or none of them.

        Parameters
        ----------
        chunks : mapping or iterable of (index, data)
            Chunk index -> values, each as for :meth:`write_chunk`.  An index given twice:
            the last data wins.
        timeout : float or None, optional
            Seconds to wait for the writer lock; default :attr:`write_timeout`.

        Returns
        -------
        int
            The number of chunks written.

        Raises
        ------
        IndexError, ValueError, TypeError, sharedzarr.errors.AccessDeniedError
            As for :meth:`write_chunk`.  Every chunk is checked before the first one is
            written: on error the array is unchanged.

        Notes
        -----
        A batch that stores at most 1/16 of the array's data (or at most 1 MiB) is all or
        nothing, as in :meth:`atomic`: an error part-way (``OutOfSpaceError``) or a SIGKILL
        leaves every chunk as it was.  A bigger one keeps the chunks it stored, each whole.
        Ctrl-C finishes the batch before the exception goes on.

        Examples
        --------
        >>> a.write_chunks({(0, 0): np.zeros(a.chunks), (0, 1): 1.0})  # doctest: +SKIP
        2
        """
        pairs = list(chunks.items() if isinstance(chunks, Mapping) else chunks)
        datas = [self._check_data(data) for _idx, data in pairs]  # before the lock
        op = self._write_op(timeout)
        with op:
            if op.changed:  # another handle changed the array: check again
                datas = [self._check_data(data) for data in datas]
            try:
                stored = [self._stored_chunk(p[0], d) for p, d in zip(pairs, datas, strict=True)]
            except (IndexError, ValueError, TypeError) as exc:
                exc.changed_nothing = True  # type: ignore[union-attr]  # a clean session end
                raise
            nbytes = sum(memoryview(buf).nbytes for _idx, buf, _whole in stored)
            if len(stored) > 1:  # all or nothing when small (see "Small writes are atomic")
                op.undo_if_small(nbytes)
            backend, items = op.backend, [(idx, buf) for idx, buf, _whole in stored]
            try:
                backend.write_chunks(items, expected_bytes=nbytes)
            except _INTERRUPTS:  # finished first (see "Interrupted writes" in _write)
                _finish(backend, lambda: backend.write_chunks(items, expected_bytes=0), op)
                raise
            _run_pending_handlers()
        self._quiet_after(op.seq)
        return len(stored)

    def delete_chunk(self, idx: Sequence[int] | int) -> None:
        """Delete one chunk, so it reads as the fill value.  Absent chunks are fine.

        Parameters
        ----------
        idx : sequence of int

        Raises
        ------
        IndexError
            If ``idx`` is outside the chunk grid.
        sharedzarr.errors.AccessDeniedError
            On a read-only handle.
        """
        with self._write_op() as op:  # (the grid as it is now, another handle's resize too)
            op.backend.delete_chunk(normalize_chunk_index(idx, self._grid))

    def list_chunks(self) -> list[tuple[int, ...]]:
        """Return the indices of the stored (initialized) chunks, sorted.

        Returns
        -------
        list of tuple of int
        """
        return sorted(tuple(i) for i in self._live().list_chunks())

    def iter_chunks(
        self, *, initialized_only: bool = False
    ) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        """Iterate over chunks in C order of their index.

        Parameters
        ----------
        initialized_only : bool
            Only the stored chunks; by default every chunk of the grid (unwritten ones read as
            the fill value).

        Yields
        ------
        index : tuple of int
            The chunk's grid position; its first element is at ``index * chunks``.
        data : numpy.ndarray
            A copy of the chunk's in-bounds part (edge chunks are trimmed).
        """
        indices = self.list_chunks() if initialized_only else iter_chunk_indices(self._grid)
        for idx in indices:
            chunk = self.read_chunk(idx)
            valid = chunk_valid_shape(idx, self._shape, self._chunks)
            if valid != self._chunks:
                chunk = chunk[tuple(slice(0, v) for v in valid)]
            yield idx, chunk
