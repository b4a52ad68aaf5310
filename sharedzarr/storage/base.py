"""The storage backend protocol that :class:`sharedzarr.Array` runs on.

A backend stores one array: its chunks, keyed by chunk index tuples, and its ``zarr.json``
metadata bytes.  The array layer does everything else (selections, codecs, fill values), so a
backend is a small key-value store with a writer lock.  Implement :class:`Backend`, register the
class with :func:`sharedzarr.storage.register`, and run the contract tests by subclassing
:class:`sharedzarr.testing.BackendTests`.

The built-in backends are ``"shm"`` (:class:`~sharedzarr.storage.SharedMemoryBackend`, named
shared-memory tables whose chunk keys are ``("chunk", (i, j, ...))`` and whose metadata key is
``"metadata"``, as in ExZarr's ETS backend) and ``"memory"``
(:class:`~sharedzarr.storage.MemoryBackend`, an in-process dict).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, TypeVar

_T = TypeVar("_T")

__all__ = ["Backend", "ChunkIndex", "OP_OPEN", "TABLE_TYPES", "ACCESS_LEVELS", "MODES"]

ChunkIndex = tuple[int, ...]

#: Set in :meth:`Backend.snapshot_epoch` while a write operation is open (the shared-memory
#: backend puts the table's operation sequence, odd while open, in the upper half).
OP_OPEN = 1 << 32

#: ETS table types. Arrays need one value per key, so only ``set``/``ordered_set`` hold arrays.
TABLE_TYPES: tuple[str, ...] = ("set", "ordered_set", "bag", "duplicate_bag")
#: ETS access levels.
ACCESS_LEVELS: tuple[str, ...] = ("public", "protected", "private")
#: Modes accepted by :meth:`Backend.open`.
MODES: tuple[str, ...] = ("r", "r+")


class Backend(abc.ABC):
    """One array's chunk and metadata storage.

    Attributes
    ----------
    id : str
        The registry id of the backend class (``"shm"``, ``"memory"``); a class attribute.
    name : str
        The storage's (table's) name; :meth:`open` with this name reaches the same storage.
    readonly : bool
        True for handles opened with ``mode="r"``; their writes raise
        :class:`sharedzarr.errors.AccessDeniedError`.
    table : object or None
        The underlying :class:`sharedzarr.Table` for table backends, else None.

    Notes
    -----
    Chunk indices are tuples of non-negative ints (``()`` for a rank-0 array).  Chunk values are
    opaque bytes: the array layer encodes and decodes them.  Reads never block on the writer
    lock; a reader sees each chunk either before or after a concurrent write, never torn.
    """

    id: ClassVar[str]
    #: True when :meth:`op_seq` moves by one when a writer session opens and by one when it
    #: closes (whatever it wrote); handles then skip the metadata check of a write
    #: when nothing ran since their previous one.
    op_seq_counts_sessions: ClassVar[bool] = False
    #: Chunks of at least this many bytes are worth :meth:`reserve_chunk` (copied without
    #: the writer lock while another writer waits); the default, never.
    reserve_min: ClassVar[int] = 1 << 62
    name: str
    readonly: bool = False
    table: Any = None

    @classmethod
    @abc.abstractmethod
    def create(cls, name: str | None, *, overwrite: bool = False, **options: Any) -> Backend:
        """Create new, empty storage and return a read-write handle.

        Parameters
        ----------
        name : str or None
            The storage name; None picks a fresh unique name.
        overwrite : bool
            Replace existing storage of that name instead of raising.
        **options
            Backend options.  The table options are ``named_table``, ``table_type``,
            ``access``, ``heir`` and ``persistent`` (see :func:`sharedzarr.create`); a backend
            ignores the ones that mean nothing to it but validates ``table_type``.

        Returns
        -------
        Backend

        Raises
        ------
        sharedzarr.errors.TableExistsError
            If ``name`` exists and ``overwrite`` is false.
        ValueError
            For an invalid name or option.
        """

    @classmethod
    @abc.abstractmethod
    def open(cls, name: str, *, mode: str = "r+") -> Backend:
        """Open existing storage by name.

        Parameters
        ----------
        name : str
        mode : {"r+", "r"}
            ``"r"`` gives a read-only handle.

        Returns
        -------
        Backend

        Raises
        ------
        sharedzarr.errors.TableNotFoundError
            If no storage has that name.
        ValueError
            For an unknown mode.
        """

    @classmethod
    @abc.abstractmethod
    def exists(cls, name: str) -> bool:
        """Return True if storage named ``name`` exists.

        Parameters
        ----------
        name : str

        Returns
        -------
        bool
        """

    @abc.abstractmethod
    def read_chunk(self, idx: ChunkIndex, *, copy: bool = True) -> bytes | memoryview | None:
        """Return the stored bytes of chunk ``idx``, or None if it was never written.

        Parameters
        ----------
        idx : tuple of int
        copy : bool
            With False the backend may return a read-only memoryview of its own memory
            (zero-copy); it stays valid and unchanged while referenced.

        Returns
        -------
        bytes, memoryview or None
        """

    @abc.abstractmethod
    def write_chunk(self, idx: ChunkIndex, data: Any) -> None:
        """Store ``data`` (any bytes-like object) as chunk ``idx``, replacing any old value.

        Parameters
        ----------
        idx : tuple of int
        data : bytes-like
            Copied; the caller may reuse the buffer afterwards.

        Raises
        ------
        sharedzarr.errors.AccessDeniedError
            On a read-only handle.
        """

    def write_chunk_if_unchanged(
        self,
        idx: ChunkIndex,
        data: memoryview,
        since: tuple[int, int],
        timeout: float | None,
        recheck: Callable[[], bool],
    ) -> tuple[int, int] | None:
        """Store chunk ``idx`` in a write operation of its own, if no write ran since
        ``since`` or ``recheck()`` (called under the writer lock) returns True; else store
        nothing and return None (the default: never).

        An array's :meth:`~sharedzarr.Array.write_chunk` tries this first: while it is the
        only writer it skips checking its metadata, and otherwise checks it in the same
        write operation.

        Parameters
        ----------
        idx : tuple of int
        data : memoryview
            The chunk's bytes, copied.
        since : tuple of int
            What the previous successful call returned, or what the array remembered of
            its last write (``(operation sequence, write counter)``).
        timeout : float or None
            Seconds to wait for the writer lock.
        recheck : callable
            Whether the write may go on although another write ran since ``since``.

        Returns
        -------
        tuple of int or None
            The pair to pass next time, or None when nothing was stored.
        """
        return None

    @abc.abstractmethod
    def delete_chunk(self, idx: ChunkIndex) -> None:
        """Delete chunk ``idx``; deleting an absent chunk is not an error.

        Parameters
        ----------
        idx : tuple of int

        Raises
        ------
        sharedzarr.errors.AccessDeniedError
            On a read-only handle.
        """

    @abc.abstractmethod
    def list_chunks(self) -> list[ChunkIndex]:
        """Return the indices of all stored chunks (any order).

        Returns
        -------
        list of tuple of int
        """

    @abc.abstractmethod
    def read_metadata(self) -> bytes | None:
        """Return the ``zarr.json`` bytes, or None if none were written.

        Returns
        -------
        bytes or None
        """

    @abc.abstractmethod
    def write_metadata(self, data: bytes) -> None:
        """Store the ``zarr.json`` bytes.

        Parameters
        ----------
        data : bytes

        Raises
        ------
        sharedzarr.errors.AccessDeniedError
            On a read-only handle.
        """

    @abc.abstractmethod
    def writer(
        self, timeout: float | None = None, *, atomic: bool = False
    ) -> AbstractContextManager[Any]:
        """Return a context manager holding the storage's single-writer lock.

        The lock is reentrant within one thread.  The array layer holds it around
        read-modify-write of partial chunks and metadata updates, so concurrent writers from
        any process never lose each other's updates.

        Parameters
        ----------
        timeout : float or None
            Seconds to wait; None waits forever.
        atomic : bool
            If the outermost session raises, undo every change it made.

        Returns
        -------
        context manager

        Raises
        ------
        sharedzarr.errors.LockTimeoutError
            If the lock was not acquired in time.
        """

    def repair_session(self) -> None:
        """In this thread's writer session, after an exception stopped a write midway: make
        the storage's bookkeeping whole, as the next writer would, so that the session can
        go on writing (an array finishes a write that Ctrl-C stopped).  Nothing to do for
        a storage whose writes an exception cannot cut in the middle (the default)."""
        return None

    @abc.abstractmethod
    def write_count(self) -> int:
        """Return a counter that changes on every write (chunks or metadata).

        Used as a cheap change token, e.g. by ``Array.__dask_tokenize__``.

        Returns
        -------
        int
        """

    @abc.abstractmethod
    def delete(self) -> None:
        """Delete the whole storage (all chunks and the metadata) and close this handle.

        Raises
        ------
        sharedzarr.errors.AccessDeniedError
            If this handle may not delete the storage.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release this handle's resources.  Idempotent; does not delete the storage."""

    # Conveniences with default implementations -------------------------------------------

    def reserve_chunk(self, idx: ChunkIndex, nbytes: int) -> Any:
        """Under the writer lock, when another writer waits: the room of chunk ``idx``'s new
        value, to be filled without the lock and published under it (see
        :class:`sharedzarr._table._reserve.Reservation`); None (the default) to write as usual.

        Parameters
        ----------
        idx : tuple of int
        nbytes : int

        Returns
        -------
        object or None
            With ``buffer`` (writable, ``nbytes``), ``publish()`` and ``abandon()``.
        """
        return None

    def leased_room(self, nbytes: int) -> Any:
        """A room reserved ahead for this handle's next whole chunk of ``nbytes``, to be
        filled before the writer lock is taken and given to :meth:`publish_reserved`; None
        (the default) when there is none."""
        return None

    def keep_room(self, room: Any) -> None:
        """A write failed before it published ``room`` (from :meth:`leased_room` or
        :meth:`reserve_chunk`): keep it for a later write, or give it back.  The default
        gives it back if the writer lock can be had at once."""
        try:
            with self.writer(0.05):
                room.abandon()
        except Exception:
            pass

    def publish_reserved(self, room: Any, idx: ChunkIndex) -> bool:
        """Publish a filled room (from :meth:`reserve_chunk` or :meth:`leased_room`) as
        chunk ``idx``, writer lock held.  Returns False, with nothing done, when the room
        cannot hold that chunk (the caller gives it up and writes the chunk)."""
        room.publish()
        return True

    def write_chunk_filled(self, idx: ChunkIndex, nbytes: int, fill: Any) -> None:
        """Store chunk ``idx`` of ``nbytes`` bytes written by ``fill(writable_buffer)``.

        Lets the array layer gather a chunk straight into the backend's memory.  The
        default fills a temporary buffer and calls :meth:`write_chunk`.

        Parameters
        ----------
        idx : tuple of int
        nbytes : int
        fill : callable
            Called once with a writable buffer of ``nbytes`` bytes.
        """
        buf = bytearray(nbytes)
        fill(memoryview(buf))
        self.write_chunk(idx, buf)

    def write_chunks(
        self, items: Iterable[tuple[ChunkIndex, Any]], *, expected_bytes: int = 0
    ) -> None:
        """Store many chunks, in order, in one write operation (see :meth:`write_chunk`).

        The default calls :meth:`write_chunk` for each; backends may batch them.

        Parameters
        ----------
        items : iterable of (chunk index, bytes-like)
            Copied; an index given twice: the last value wins.
        expected_bytes : int
            As for :meth:`write_chunks_filled`.
        """
        for idx, data in items:
            self.write_chunk(idx, data)

    def write_chunks_filled(
        self, items: Iterable[tuple[Any, ...]], submit: Any = None, *, expected_bytes: int = 0
    ) -> None:
        """Store many whole chunks, each written by its ``fill(buffer)``.

        The default calls :meth:`write_chunk_filled` for each; backends may batch them
        (one writer session) and run fills on another thread via ``submit``.

        Parameters
        ----------
        items : iterable of (chunk index, nbytes, fill)
        submit : callable, optional
            An executor's ``submit(fn) -> concurrent.futures.Future``, to fill on another
            thread as well as the calling one.
        expected_bytes : int
            At least how many bytes the write stores, ``items`` and the chunks the caller
            writes with them (0: unknown).  A backend may size its storage for them up
            front, and should refuse a write that certainly cannot fit before it stores
            anything (:class:`~sharedzarr.errors.OutOfSpaceError`).
        """
        for idx, nbytes, fill in items:
            self.write_chunk_filled(idx, nbytes, fill)

    def chunk_reader(self) -> Any:
        """Return a fast ``read(idx) -> buffer or None`` for zero-copy reads of many chunks.

        The default wraps :meth:`read_chunk`; backends may return something quicker
        (the array layer calls it once per multi-chunk read).  The buffers it returns are
        *borrowed*: valid while :meth:`reuse_epoch` keeps the value it had before the call,
        so a caller copies them and then checks the epoch.

        Returns
        -------
        callable
        """
        read = self.read_chunk
        return lambda idx: read(idx, copy=False)

    def cached_chunk_reader(
        self,
        wrap: Any,
        *,
        pin: bool = False,
        take: Any = None,
        normalize: Any = None,
        fallback: Any = None,
        missing: Any = None,
    ) -> Any:
        """Return ``read(idx) -> wrap(buffer) or None`` for repeated reads of single chunks.

        Backends may cache the wrapped object per chunk (the shm backend does, checking on
        each call that the chunk was not replaced).  With ``pin=False`` the objects are
        borrowed like :meth:`chunk_reader`'s buffers; with ``pin=True`` they stay valid
        while held, like ``read_chunk(idx, copy=False)``.

        Parameters
        ----------
        wrap : callable
            ``buffer -> object``, or None for a buffer it cannot wrap.
        pin : bool
            See above.
        take : callable, optional
            ``read`` returns ``take(object)`` instead (with ``pin=False`` e.g. a copy, made
            so that it is never torn; with ``pin=True`` e.g. a view).
        normalize : callable, optional
            ``idx -> validated idx`` (raising for a bad one); a reader calls it at least
            once per distinct ``idx`` before reading it.
        fallback : callable, optional
            ``fallback(idx)``: what ``read(idx)`` returns when the chunk is absent (and
            ``missing`` is None) or cannot be wrapped, and for an ``idx`` that is not
            hashable or not integers (see ``Table.view_reader``).
        missing : object, optional
            What an absent chunk reads as (passed through ``take``), instead of None.

        Returns
        -------
        callable
        """
        read = self.read_chunk
        valid: set[Any] = set()  # indices that passed ``normalize``

        def cached(idx: ChunkIndex) -> Any:
            try:
                if normalize is not None and idx not in valid:
                    idx = normalize(idx)
                    if len(valid) < 1 << 20:
                        valid.add(idx)
            except TypeError:
                if fallback is None:
                    raise
                return fallback(idx)  # unhashable, or not integers: it explains
            v = read(idx, copy=False)
            obj = missing if v is None else wrap(v)
            if obj is None:
                return None if fallback is None else fallback(idx)
            return obj if take is None else take(obj)

        return cached

    def op_seq(self) -> int:
        """A counter that moves with every write operation (odd while one is open).

        Handles compare it with the value they cached to notice another handle's
        metadata change.  Backends without sharing (the default) return 0.

        Returns
        -------
        int
        """
        return 0

    def chunk_spans(self, idxs: Sequence[ChunkIndex]) -> Any:
        """Where raw chunks lie in shared buffers, for a one-operation gather; or None.

        Backends that keep chunks in a few large mappings return ``(token, spans,
        buffers)`` (see :meth:`sharedzarr.Table.value_spans`): ``spans[i]`` is ``(buffer
        id, offset, length)`` of chunk ``idxs[i]`` (None when absent), valid while
        :meth:`write_token` returns ``token``, and a copy from them is whole when
        :meth:`reuse_epoch` did not move around it.  The default, None, means "not
        available": readers take chunks one by one.
        """
        return None

    def buffers_in_one_range(self, ids: Sequence[int]) -> Any:
        """The buffers of :meth:`chunk_spans` mapped back to back in one range, or None.

        Returns ``(range, offsets)``: ``numpy.asarray(range)`` holds the bytes, and
        ``offsets[id]`` is where buffer ``id`` starts.  The default, None: not available.
        """
        return None

    def write_token(self) -> int:
        """A counter that moves whenever any stored chunk changes (see :meth:`chunk_spans`)."""
        return 0

    def metadata_pin(self) -> Any:
        """Where the stored metadata is, for :meth:`metadata_pinned`; None (the default)
        when the backend cannot tell.  Taken under the writer lock, right after the caller
        checked that the stored metadata is the one it holds."""
        return None

    def metadata_pinned(self, pin: Any) -> bool:
        """Whether the stored metadata is still the record of ``pin`` (a few word loads);
        False (the default) means "check it the general way"."""
        return False

    def metadata_token(self) -> Any:
        """An identity of the stored metadata: equal tokens mean it did not change.

        Handles call it when :meth:`op_seq` moved, to tell a metadata change from any other
        write without reading the metadata.  The default, None, means "unknown": the handle
        reads the metadata and compares.

        Returns
        -------
        object or None
        """
        return None

    def snapshot_epoch(self) -> int:
        """A value that is unchanged across a read iff no write overlapped it.

        Loaded without waiting.  :data:`OP_OPEN` set means a write operation is open now:
        the caller must not accept a read started then, and hands it to :meth:`snapshot`
        instead (waiting itself, it would miss the short gaps between a busy writer's
        operations; :meth:`snapshot` asks the writer to pause).  The default is :meth:`reuse_epoch`.

        Returns
        -------
        int
        """
        return self.reuse_epoch()

    def snapshot(self, read: Callable[[], _T]) -> _T:
        """Run ``read()`` so that it sees the storage as of one moment between writes.

        The default runs it once: backends whose writes a reader cannot overlap need no more.

        Parameters
        ----------
        read : callable
            Reads and copies several values; may be called more than once.

        Returns
        -------
        Whatever ``read()`` returned.
        """
        return read()

    def reuse_epoch(self) -> int:
        """A counter that moves when memory a borrowed buffer may point to is reused.

        Backends that never reuse memory under a reader (the default) return 0.

        Returns
        -------
        int
        """
        return 0

    def iter_chunks(self) -> Iterator[ChunkIndex]:
        """Iterate over the stored chunk indices.

        Yields
        ------
        tuple of int
        """
        yield from self.list_chunks()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "r" if self.readonly else "r+"
        return f"<{type(self).__name__} {getattr(self, 'name', '?')!r} mode={mode!r}>"
