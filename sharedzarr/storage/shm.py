"""The ``"shm"`` storage: arrays on shared-memory tables, and the seed's management functions.

ExZarr's ETS backend keeps a chunk under ``{:chunk, {i, j}}`` and the metadata
under ``:metadata``; so do we: ``("chunk", (i, j))`` and ``"metadata"`` in a
:class:`sharedzarr.Table`.  Any process reads them with
``sharedzarr.Table.attach(name).lookup(("chunk", (0, 0)))``, as with ``:ets.lookup``.
An array that zarr-python wrote through :class:`~sharedzarr.zarr_store.SharedMemoryStore` with
another chunk key encoding keeps its chunks under zarr's string keys (``"c.0.0"``, ``"0.0"``,
``"0/0"``); :func:`sharedzarr.open` switches the backend to them
(:meth:`SharedMemoryBackend.use_chunk_keys`).

The management functions keep the seed's names: :func:`clear_table`,
:func:`delete_table`, :func:`get_state`, :func:`table_exists` (``table_exists?``)
and :func:`table_info`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, cast

from .._layout import TABLE_TYPES, segment_names
from .._metadata import ArrayMetadata
from .._segment import Segment, map_os_errors, size_on_disk
from .._table import Table, collect_garbage, list_tables, probe, table_segments, validate_name
from .._table._catalog import _destroy as _destroy_table
from .._table._header import DEFAULT_TIMEOUT, _as_buffer
from ..errors import AccessDeniedError, TableExistsError, TableNotFoundError
from .base import Backend, ChunkIndex

__all__ = [
    "SharedMemoryBackend",
    "State",
    "TableInfo",
    "clear_table",
    "delete_table",
    "gc",
    "get_state",
    "list_tables",
    "table_exists",
    "table_info",
]

METADATA_KEY = "metadata"
CHUNK_TAG = "chunk"
_KEY_CACHE_MAX = 1 << 20


def _not_found(name: str) -> TableNotFoundError:
    return TableNotFoundError(
        f"table {name!r} does not exist; sharedzarr.create(..., table_name={name!r}) "
        "creates it, `sharedzarr ls` lists tables"
    )


class SharedMemoryBackend(Backend):
    """Array storage on a named shared-memory :class:`~sharedzarr.Table` (ExZarr's ETS backend).

    Chunk ``(i, j, ...)`` is the table key ``("chunk", (i, j, ...))``; the Zarr v3
    metadata document is the key ``"metadata"``.
    """

    id: ClassVar[str] = "shm"
    op_seq_counts_sessions: ClassVar[bool] = True
    # whole chunks this big are copied outside the lock when another writer waits (the
    # array's write_chunk, into a leased room); at 128 KiB too, two writers together were
    # 0.95-0.99x one alone against 0.96-1.06x without it, in alternating runs
    reserve_min: ClassVar[int] = 256 << 10

    def __init__(self, table: Table, readonly: bool = False) -> None:
        self.table = table
        self.name = table.name
        self.readonly = readonly
        # the table's own methods, bound here: one call less on the read path
        self.reuse_epoch = table.reuse_epoch  # type: ignore[method-assign]
        self.snapshot_epoch = table.snapshot_epoch  # type: ignore[method-assign]
        self.snapshot = table.snapshot  # type: ignore[method-assign]
        self.op_seq = table.op_seq  # type: ignore[method-assign]
        self.write_token = table.write_token  # type: ignore[method-assign]
        self._keys: dict[tuple[int, ...], tuple[bytes, int]] = {}
        self._meta_key = table.prepare_key(METADATA_KEY)
        self._chunk_key: Callable[[tuple[int, ...]], str] | None = None
        self._parse_key: Callable[[str], tuple[int, ...] | None] | None = None

    def use_chunk_keys(
        self,
        chunk_key: Callable[[tuple[int, ...]], str],
        parse_key: Callable[[str], tuple[int, ...] | None],
    ) -> None:
        """Keep chunks under zarr-python's string keys instead of ``("chunk", idx)``.

        For an array that zarr-python wrote through
        :class:`~sharedzarr.zarr_store.SharedMemoryStore` with a chunk key encoding other
        than the default ``c/0/0`` (``c.0.0``, ``0.0``, ``0/0``): the store keeps those
        chunks under their zarr keys, so the array reads and writes them there.

        Parameters
        ----------
        chunk_key : callable
            Chunk index -> zarr key (``ArrayMetadata.chunk_key``).
        parse_key : callable
            Zarr key -> chunk index, or None for a key that is no chunk.
        """
        self._chunk_key = chunk_key
        self._parse_key = parse_key
        self._keys.clear()

    def _key(self, idx: ChunkIndex) -> tuple[bytes, int]:
        pk = self._keys.get(idx)
        if pk is None:
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            norm = tuple(int(i) for i in idx)
            ck = self._chunk_key
            pk = self._keys[norm] = self.table.prepare_key(
                (CHUNK_TAG, norm) if ck is None else ck(norm)
            )
        return pk

    @classmethod
    def create(cls, name: str | None, *, overwrite: bool = False, **options: Any) -> Backend:
        """Create a table for a new array; see :meth:`sharedzarr.storage.base.Backend.create`."""
        table_type = options.pop("table_type", "set")
        if table_type not in TABLE_TYPES:
            raise ValueError(
                f"invalid table_type {table_type!r}: use one of {', '.join(TABLE_TYPES)}"
            )
        if table_type in ("bag", "duplicate_bag"):
            raise ValueError(
                f"table_type={table_type!r} cannot hold an array: arrays need one value per key "
                "('set' or 'ordered_set'); use sharedzarr.Table for a bag"
            )
        allowed = {"named_table", "access", "heir", "persistent", "mode"}
        unknown = set(options) - allowed
        if unknown:
            raise TypeError(f"unknown shm storage options: {sorted(unknown)}")
        if name is not None:
            validate_name(name)
            if overwrite and options.get("named_table", True) and table_exists(name):
                _destroy_table(name)
        try:
            t = Table.create(name, table_type=table_type, **options)
        except TableExistsError as e:
            if e.writer_pid is not None:
                raise
            if overwrite:  # another process created it between the delete and this create
                raise TableExistsError(
                    f"table {name!r} was created by another process while this one replaced "
                    f"it (overwrite=True); open it with sharedzarr.open({name!r}), or create "
                    "it again with overwrite=True to replace that one"
                ) from e
            raise TableExistsError(
                f"table {name!r} already exists; open it with sharedzarr.open({name!r}), "
                "pass overwrite=True to replace it, or delete it "
                f"(sharedzarr.storage.shm.delete_table({name!r}) / `sharedzarr rm {name}`)"
            ) from e
        return cls(t)

    @classmethod
    def open(cls, name: str, *, mode: str = "r+", trusted_uid: int | str | None = None) -> Backend:
        """Attach to the table ``name``; ``mode="r"`` maps it read-only."""
        if mode not in ("r", "r+"):
            raise ValueError(f"invalid mode {mode!r}: use 'r' (read-only) or 'r+' (read-write)")
        t = Table.attach(name, readonly=(mode == "r"), trusted_uid=trusted_uid)
        return cls(t, readonly=(mode == "r"))

    @classmethod
    def exists(cls, name: str) -> bool:
        """Return True when a live table ``name`` exists."""
        return table_exists(name)

    def read_chunk(self, idx: ChunkIndex, *, copy: bool = True) -> bytes | memoryview | None:
        """Return chunk ``idx``'s bytes (``copy=False``: a read-only view), or None."""
        return cast("bytes | memoryview | None", self.table.get_prepared(self._key(idx), copy=copy))

    def chunk_reader(self) -> Any:
        """A zero-copy ``read(idx)`` that goes straight to the table (no per-call dispatch).

        Its views are borrowed (see :meth:`reuse_epoch`): they pin nothing.
        """
        keys = self._keys
        key = self._key
        borrow = self.table.borrow_prepared

        def read(idx: ChunkIndex) -> memoryview | None:
            pk = keys.get(idx)
            return cast("memoryview | None", borrow(pk if pk is not None else key(idx)))

        return read

    def cached_chunk_reader(self, wrap: Any, *, normalize: Any = None, **options: Any) -> Any:
        """Cached views per chunk, revalidated on each call: ``Table.view_reader``, which
        takes the other options (``pin``, ``take``, ``fallback``, ``missing``) as they are.

        ``normalize`` runs on a cache miss only: a cached index passed it before.
        """
        key = self._key
        prepare = key if normalize is None else (lambda idx: key(normalize(idx)))
        return self.table.view_reader(prepare, wrap, **options)

    def reuse_epoch(self) -> int:
        """The table's reuse epoch (:meth:`sharedzarr._table.Table.reuse_epoch`)."""
        return int(self.table.reuse_epoch())

    def write_chunk(self, idx: ChunkIndex, data: Any) -> None:
        """Store chunk ``idx`` (one atomic publish; readers see old or new)."""
        self._check_writable()
        self.table.insert_prepared(self._key(idx), data)

    def write_chunk_if_unchanged(
        self,
        idx: ChunkIndex,
        data: memoryview,
        since: tuple[int, int],
        timeout: float | None,
        recheck: Callable[[], bool],
    ) -> tuple[int, int] | None:
        """Store chunk ``idx`` if no write ran since ``since`` or ``recheck()`` allows it
        (:meth:`sharedzarr.Table.insert_if_unchanged`), with a lease for the next chunk
        when it is big and another writer waits.  ``data`` may be a filled room
        (:meth:`leased_room`); None, with nothing done, if it does not fit the key."""
        if self.readonly:
            return None  # (the general path raises the right error)
        pk = self._key(idx)
        if type(data) is not memoryview and not data.fits(pk[0]):
            return None
        done: tuple[int, int] | None = self.table.insert_if_unchanged(
            pk, data, since, timeout, recheck, data.nbytes >= self.reserve_min
        )
        return done

    def reserve_chunk(self, idx: ChunkIndex, nbytes: int) -> Any:
        """The room of chunk ``idx``'s new value, when another writer waits for the lock:
        the copy then runs without it (:meth:`sharedzarr.Table.reserve`)."""
        table = self.table
        if not table._lock.contended():
            return None
        return table.reserve(self._key(idx), nbytes)

    def leased_room(self, nbytes: int) -> Any:
        """The room reserved at this handle's last big write for its next chunk, while
        another writer waited (a lease: see ``Reservation`` in ``sharedzarr._table``), if
        it holds ``nbytes``: filled without the writer lock and published by
        :meth:`write_chunk_if_unchanged` or :meth:`publish_reserved`, it makes a write one
        locked section instead of two.  None if there is none."""
        return self.table.take_lease(nbytes)

    def keep_room(self, room: Any) -> None:
        """A write failed before it published ``room``: it becomes this handle's lease
        again (see :meth:`leased_room`), or is given back."""
        self.table.keep_lease(room)

    def publish_reserved(self, room: Any, idx: ChunkIndex) -> bool:
        """Publish a filled room as chunk ``idx`` (writer lock held), with a lease for the
        next chunk while another writer waits; False, with nothing done, when the room
        does not fit that chunk's key."""
        pk = self._key(idx)
        if not room.fits(pk[0]):
            return False
        table = self.table
        room.publish(pk, table._lease is None and table._lock.contended())
        return True

    def write_chunk_filled(self, idx: ChunkIndex, nbytes: int, fill: Any) -> None:
        """Store chunk ``idx`` written in place into shared memory by ``fill``."""
        self._check_writable()
        self.table.insert_filled(self._key(idx), nbytes, fill)

    def write_chunks(
        self, items: Iterable[tuple[ChunkIndex, Any]], *, expected_bytes: int = 0
    ) -> None:
        """Store many chunks in one writer session, published in batches (see
        ``Table.insert_filled_many``, which copies a memoryview value in)."""
        self._check_writable()
        key = self._key
        self.table.insert_filled_many(
            ((key(idx), v.nbytes, v) for idx, v in ((i, _as_buffer(d)) for i, d in items)),
            None,
            expected_bytes=expected_bytes,
        )

    def write_chunks_filled(
        self, items: Iterable[tuple[Any, ...]], submit: Any = None, *, expected_bytes: int = 0
    ) -> None:
        """Store many whole chunks in one writer session (see ``Table.insert_filled_many``)."""
        self._check_writable()
        key = self._key
        self.table.insert_filled_many(
            ((key(idx), nbytes, fill) for idx, nbytes, fill in items),
            submit,
            expected_bytes=expected_bytes,
        )

    def delete_chunk(self, idx: ChunkIndex) -> None:
        """Delete chunk ``idx``; no error when absent."""
        self._check_writable()
        self.table.delete_prepared(self._key(idx))

    def list_chunks(self) -> list[ChunkIndex]:
        """Indices of the stored chunks."""
        out = []
        parse = self._parse_key
        for k in self.table.keys():
            if parse is not None:
                if type(k) is str:
                    idx = parse(k)
                    if idx is not None:
                        out.append(idx)
            elif isinstance(k, tuple) and len(k) == 2 and k[0] == CHUNK_TAG:
                out.append(tuple(k[1]))
        return out

    def chunk_spans(
        self, idxs: Sequence[ChunkIndex]
    ) -> tuple[int, list[tuple[int, int, int] | None], dict[int, memoryview]]:
        """Where the chunks lie in the table's arenas (:meth:`sharedzarr.Table.value_spans`)."""
        spans: tuple[int, list[tuple[int, int, int] | None], dict[int, memoryview]]
        spans = self.table.value_spans([self._key(i) for i in idxs])
        return spans

    def buffers_in_one_range(self, ids: Sequence[int]) -> tuple[Any, dict[int, int]] | None:
        """The arenas in one range (:meth:`sharedzarr.Table.arenas_in_one_range`)."""
        got: tuple[Any, dict[int, int]] | None = self.table.arenas_in_one_range(ids)
        return got

    def metadata_pin(self) -> tuple[int, int, int, int, int] | None:
        """Where the metadata record is (:meth:`sharedzarr.Table.value_pin`)."""
        pin: tuple[int, int, int, int, int] | None = self.table.value_pin(self._meta_key)
        return pin

    def metadata_pinned(self, pin: Any) -> bool:
        """Whether the metadata is still that record (:meth:`sharedzarr.Table.value_pinned`)."""
        return bool(self.table.value_pinned(pin))

    def metadata_token(self) -> tuple[int, int, int] | None:
        """The metadata record's identity (:meth:`sharedzarr.Table.value_token`)."""
        token: tuple[int, int, int] | None = self.table.value_token(self._meta_key)
        return token

    def read_metadata(self) -> bytes | None:
        """The ``zarr.json`` bytes, or None."""
        v = self.table.get_prepared(self._meta_key, copy=True)
        return None if v is None else bytes(v)

    def write_metadata(self, data: bytes) -> None:
        """Store the ``zarr.json`` bytes."""
        self._check_writable()
        self.table.insert_prepared(self._meta_key, data)

    def writer(
        self, timeout: float | None = DEFAULT_TIMEOUT, *, atomic: bool = False
    ) -> contextlib.AbstractContextManager[Any]:
        """The table's writer lock (reentrant per thread); with ``atomic``, the outermost
        session is undone if it raises (see "Rollback" in ``sharedzarr._table._session``)."""
        self._check_writable()
        return cast(
            "contextlib.AbstractContextManager[Any]", self.table.writer(timeout, atomic=atomic)
        )

    def repair_session(self) -> None:
        """Recount the table in this thread's writer session (``Table.repair_session``)."""
        self.table.repair_session()

    def write_count(self) -> int:
        """The table's write counter."""
        return int(self.table.write_count)

    def delete(self) -> None:
        """Delete the table (ETS ``delete/1``)."""
        self.table.delete_table()

    def close(self) -> None:
        """Release this process's mappings; the table stays."""
        self.table.close()

    def _check_writable(self) -> None:
        if self.readonly:
            from ..errors import AccessDeniedError

            raise AccessDeniedError(
                f"array {self.name!r} was opened with mode='r'; open it with mode='r+' to write"
            )


# ----------------------------------------------------------------------------- management


@dataclasses.dataclass(frozen=True)
class State:
    """Everything in a table holding an array (ExZarr ``get_state/1``).

    Attributes
    ----------
    chunks : dict
        Chunk index tuple -> chunk bytes.
    metadata : bytes or None
        The ``zarr.json`` document.
    """

    chunks: dict[tuple[int, ...], bytes]
    metadata: bytes | None


@dataclasses.dataclass(frozen=True)
class TableInfo:
    """What :func:`table_info` reports (ExZarr ``table_info/1``, ETS ``info/1``).

    Attributes
    ----------
    name : str
    size : int
        Objects in the table.
    memory : int
        Bytes of shared memory its segments use.
    type : str
    access : str
    owner : int
        Owner pid.
    owner_alive : bool
    heir : int or None
    named_table : bool
    persistent : bool
    segments : int
        Number of shared-memory segments.
    created : float
        Unix time of creation.
    array : dict or None
        ``shape``, ``chunks``, ``dtype`` when the table holds an array.
    """

    name: str
    size: int
    memory: int
    type: str
    access: str
    owner: int
    owner_alive: bool
    heir: int | None
    named_table: bool
    persistent: bool
    segments: int
    created: float
    array: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


def table_exists(name: str) -> bool:
    """Return True when a live table ``name`` exists (ExZarr ``table_exists?/1``).

    A table whose owner was killed and that has no live heir and is not
    persistent is deleted here, and reported as absent.  A table whose segment
    mode hides it from this user exists (attaching raises ``AccessDeniedError``).
    """
    validate_name(name)
    return probe(name) in ("alive", "orphan", "denied")


def _attach(name: str) -> Table:
    validate_name(name)
    if not table_exists(name):
        raise _not_found(name)
    return Table.attach(name)


def delete_table(name: str) -> None:
    """Delete table ``name`` (ExZarr ``delete_table/1``, ETS ``delete/1``).

    An administrative call: it works whatever the table's access level (the
    segment mode still applies).  Handles other processes hold raise
    :class:`~sharedzarr.errors.TableNotFoundError` on their next call.

    Raises
    ------
    TableNotFoundError
        When there is no such table (a second call raises).
    AccessDeniedError
        When the segment mode does not let this user write the table.
    """
    validate_name(name)
    state = probe(name)
    if state in ("missing", "reaped", "deleted"):
        raise _not_found(name)
    if state == "denied":
        raise _denied(name)
    try:
        with map_os_errors(name, "header"):
            Segment.attach(segment_names(name)[0]).close()  # may we write it?
    except TableNotFoundError:
        raise _not_found(name) from None
    except AccessDeniedError:
        raise _denied(name) from None
    _destroy_table(name)


def _denied(name: str) -> AccessDeniedError:
    return AccessDeniedError(
        f"table {name!r} belongs to another user and its segment mode does not let this "
        "user change it; run as that user (or root) to delete it"
    )


def clear_table(name: str) -> None:
    """Remove every object (chunks and metadata) and keep the table (ExZarr ``clear_table/1``)."""
    with _attach(name) as t:
        t.clear()


def get_state(name: str) -> State:
    """Return all chunks and the metadata of table ``name`` (ExZarr ``get_state/1``).

    Raises
    ------
    TableNotFoundError
        When there is no such table.
    """
    with _attach(name) as t:
        items = t.items()
    chunks: dict[tuple[int, ...], bytes] = {}
    metadata = next((bytes(v) for k, v in items if k == METADATA_KEY), None)
    parse = _chunk_key_parser(metadata)
    for k, v in items:
        if isinstance(k, tuple) and len(k) == 2 and k[0] == CHUNK_TAG:
            chunks[tuple(k[1])] = bytes(v)
        elif isinstance(k, str) and k != METADATA_KEY and parse is not None:
            idx = parse(k)  # a chunk zarr-python stored under its own key (c.0.0, 0.0, 0/0)
            if idx is not None:
                chunks[idx] = bytes(v)
    return State(chunks=chunks, metadata=metadata)


def _chunk_key_parser(metadata: bytes | None) -> Callable[[str], tuple[int, ...] | None] | None:
    """The chunk key parser of the array ``metadata`` describes (None: not an array)."""
    if metadata is None:
        return None
    try:
        return ArrayMetadata.from_json(metadata).parse_chunk_key
    except Exception:  # noqa: BLE001 - a group, another zarr version, not zarr: no chunks
        return None


def array_summary(t: Table) -> dict[str, Any] | None:
    """Summarise the array a table holds (for :func:`table_info` and ``sharedzarr ls``).

    Parameters
    ----------
    t : Table
        An attached table.

    Returns
    -------
    dict or None
        ``shape``, ``chunks`` and ``dtype`` (numpy's name, e.g. ``datetime64[s]``), or None
        when the table holds no readable ``zarr.json``.
    """
    raw = t.get(METADATA_KEY)
    if raw is None:
        return None
    try:
        doc = json.loads(bytes(raw))
        return {
            "shape": list(doc["shape"]),
            "chunks": list(doc["chunk_grid"]["configuration"]["chunk_shape"]),
            "dtype": _dtype_label(doc["data_type"]),
        }
    except (ValueError, KeyError, TypeError):
        return None


def _dtype_label(data_type: Any) -> Any:
    """numpy's short name of a zarr.json ``data_type`` (``datetime64[s]``), else it as is."""
    from .._dtypes import dtype_from_json, dtype_name

    try:
        return dtype_name(dtype_from_json(data_type))
    except (TypeError, ValueError):
        return data_type


def table_info(name: str) -> TableInfo:
    """Information about table ``name`` (ExZarr ``table_info/1``).

    Raises
    ------
    TableNotFoundError
        When there is no such table.
    """
    t = _attach_any(name)
    try:
        return _info_of(t)
    finally:
        t.close()


def _attach_any(name: str) -> Table:
    """Attach for inspection: private tables of other processes are inspected read-only."""
    validate_name(name)
    if not table_exists(name):
        raise _not_found(name)
    from ..errors import AccessDeniedError

    try:
        return Table.attach(name, trusted_uid="any")  # inspection: metadata, no data
    except AccessDeniedError:
        return Table._attach_for_admin(name)


def _info_of(t: Table) -> TableInfo:
    i = t.info()
    return TableInfo(
        name=i["name"],
        size=i["size"],
        memory=i["memory"],
        type=i["type"],
        access=i["access"],
        owner=i["owner"],
        owner_alive=i["owner_alive"],
        heir=i["heir"],
        named_table=i["named_table"],
        persistent=i["persistent"],
        segments=i["segments"],
        created=i["created"],
        array=array_summary(t) if t.access != "private" or t.is_owner else None,
    )


def list_infos() -> list[TableInfo]:
    """:class:`TableInfo` of every live table (orphans are reaped first)."""
    out = []
    for name in list_tables():
        try:
            out.append(table_info(name))
        except Exception:  # vanished or not ours to read: skip
            continue
    return out


def gc(*, dry_run: bool = False) -> list[str]:
    """Delete orphaned tables and stray segments of ours; return what was (or would be) removed.

    Orphaned: the owner and heir are dead and the table is not persistent.
    Stray: a ``sz.*`` segment whose table has no header (left by a crash),
    or a table marked deleted whose deleter died.

    Parameters
    ----------
    dry_run : bool
        Only report what would be removed.

    Returns
    -------
    list of str
        Table names, and the names of stray segments.
    """
    return collect_garbage(dry_run=dry_run)


def iter_array_tables() -> Iterator[str]:
    """Names of tables that hold an array (have a ``"metadata"`` key)."""
    for info in list_infos():
        if info.array is not None:
            yield info.name


def memory_of(name: str) -> int:
    """Bytes of shared memory the segments of table ``name`` use."""
    return sum(size_on_disk(n) for n in table_segments(name))
