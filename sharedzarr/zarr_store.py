"""A zarr-python 3 store over a shared-memory table: :class:`SharedMemoryStore`.

Any zarr-python, xarray or dask code that takes a ``zarr.abc.store.Store``
can read and write a :class:`sharedzarr.Table` through this class, and every
process on the machine that knows the table's name sees the same data::

    >>> import zarr, sharedzarr as sz                              # doctest: +SKIP
    >>> from sharedzarr.zarr_store import SharedMemoryStore        # doctest: +SKIP
    >>> a = sz.create((100, 100), (10, 10), "float64", table_name="prices")  # doctest: +SKIP
    >>> z = zarr.open_array(store=SharedMemoryStore("prices"))     # doctest: +SKIP

Key mapping
-----------
A table that holds a :mod:`sharedzarr` array keeps its ``zarr.json`` under the
key ``"metadata"`` and chunk ``(i, j)`` under ``("chunk", (i, j))`` (ExZarr's
ETS layout).  The store translates zarr-python's keys to and from those, so an
array made by :func:`sharedzarr.create` opens with ``zarr.open_array`` and an
array zarr-python writes at the root of the store opens with
:func:`sharedzarr.open`:

=========================  ==================================
zarr-python key            table key
=========================  ==================================
``zarr.json``              ``"metadata"``
``c/i/j/...``              ``("chunk", (i, j, ...))``
``c`` (rank-0 array)       ``("chunk", ())``
``metadata``               ``("key", "metadata")`` (escaped)
anything else              the same string
=========================  ==================================

Only canonical indices map to tuples (``c/0/12``, not ``c/00`` or ``c/+1``),
and only integers of at most 18 digits, so the mapping is a bijection: every
store key comes back from :meth:`SharedMemoryStore.list` exactly as written.
Table keys with no store spelling (integers, other tuples, bytes: entries
written through :class:`~sharedzarr.Table` directly) are not listed.
Groups and arrays below the root (``foo/zarr.json``, ``foo/c/0/0``) are plain
string keys; :func:`sharedzarr.open` reads only the root array.  Chunk keys of
the other chunk key encodings (``c.0.0``, ``0.0``, ``0/0``) are plain string keys
too: :func:`sharedzarr.open` reads the root array's ``chunk_key_encoding`` and
looks its chunks up under those keys, so a root array with any encoding opens.

Reads and writes
----------------
``get`` looks the key up without a lock and hands zarr a read-only, zero-copy
view of the stored record (``Buffer.from_bytes`` on the view is
``np.frombuffer``).  Records are immutable once published, so the view never
changes under zarr even if another process overwrites the key; the mapping
stays alive while the view does.  ``set`` is one atomic publish,
``set_if_not_exists`` is :meth:`sharedzarr.Table.insert_new` (the check and
the insert happen under the writer lock), ``getsize`` reads the record's
length without copying.  The table operations never block on I/O, so the
async methods call them directly, as zarr's ``MemoryStore`` does.

Handles
-------
A store pickles and compares by table name (and pickles its ``read_only``
flag).  The table is attached when the store is constructed (so a missing
table fails early, with :class:`~sharedzarr.errors.TableNotFoundError`, a
``FileNotFoundError``), lazily after unpickling (so a dask graph can pass
through a process that never touches it), and again after :meth:`close`.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import AsyncIterator, Iterable
from typing import Any

import numpy as np

try:
    from zarr.abc.store import (
        ByteRequest,
        OffsetByteRequest,
        RangeByteRequest,
        Store,
        SuffixByteRequest,
    )
    from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "sharedzarr.zarr_store needs zarr-python 3.1: pip install 'sharedzarr[zarr]'"
    ) from e

from ._table import Table, encode_key, key_hash, validate_name
from .errors import TableExistsError
from .storage.shm import CHUNK_TAG, METADATA_KEY

__all__ = [
    "ESCAPE_TAG",
    "SharedMemoryStore",
    "store_key_to_table_key",
    "table_key_to_store_key",
]

ZARR_JSON = "zarr.json"
ESCAPE_TAG = "key"
"""Tag of the tuple key that holds a zarr key which would collide with a table key."""

_INDEX_PART = re.compile(r"0|[1-9][0-9]{0,17}")  # canonical, fits in int64
_INDEX_MAX = 10**18
_KEY_CACHE_MAX = 1 << 16


def store_key_to_table_key(key: str) -> Any:
    """Return the table key that holds zarr-python store key ``key``.

    Parameters
    ----------
    key : str
        A zarr-python store key such as ``"zarr.json"``, ``"c/0/1"`` or ``"foo/zarr.json"``.

    Returns
    -------
    str or tuple
        ``"metadata"`` for ``zarr.json``, ``("chunk", (i, j, ...))`` for a canonical
        ``c/i/j/...`` (and ``("chunk", ())`` for ``c``), ``("key", "metadata")`` for the
        store key ``metadata``, else ``key`` itself.
    """
    if key == ZARR_JSON:
        return METADATA_KEY
    if key == "c":
        return (CHUNK_TAG, ())
    if key.startswith("c/"):
        parts = key[2:].split("/")
        if all(_INDEX_PART.fullmatch(p) for p in parts):
            return (CHUNK_TAG, tuple(int(p) for p in parts))
        return key
    if key == METADATA_KEY:
        return (ESCAPE_TAG, key)
    return key


def table_key_to_store_key(table_key: Any) -> str | None:
    """Return the zarr-python store key of a table key, or None when it has none.

    The inverse of :func:`store_key_to_table_key`: for every store key ``k``,
    ``table_key_to_store_key(store_key_to_table_key(k)) == k``.

    Parameters
    ----------
    table_key : object
        A key as :meth:`sharedzarr.Table.keys` returns it.

    Returns
    -------
    str or None
    """
    if type(table_key) is str:
        if table_key == METADATA_KEY:
            return ZARR_JSON
        # a string that maps elsewhere ("zarr.json", "c/0") was written around the store
        return table_key if store_key_to_table_key(table_key) == table_key else None
    if type(table_key) is tuple and len(table_key) == 2:
        tag, rest = table_key
        if tag == CHUNK_TAG and type(rest) is tuple:
            if all(type(i) is int and 0 <= i < _INDEX_MAX for i in rest):
                return "c" + "".join(f"/{i}" for i in rest)
            return None
        if tag == ESCAPE_TAG and rest == METADATA_KEY:
            return METADATA_KEY
    return None


def _byte_slice(size: int, byte_range: ByteRequest | None) -> slice:
    """The slice of a value of ``size`` bytes that ``byte_range`` asks for."""
    if byte_range is None:
        return slice(0, size)
    if isinstance(byte_range, RangeByteRequest):
        return slice(byte_range.start, byte_range.end)
    if isinstance(byte_range, OffsetByteRequest):
        return slice(byte_range.offset, size)
    if isinstance(byte_range, SuffixByteRequest):
        return slice(max(0, size - byte_range.suffix), size)
    raise ValueError(
        f"Unexpected byte_range, got {byte_range!r}; use zarr.abc.store.RangeByteRequest, "
        "OffsetByteRequest or SuffixByteRequest"
    )


def _as_bytes_view(value: Buffer) -> Any:
    """The bytes of a zarr Buffer as a C-contiguous uint8 array (no copy for host buffers)."""
    if not isinstance(value, Buffer):
        raise TypeError(
            f"SharedMemoryStore.set(): `value` must be a Buffer instance. Got an instance of "
            f"{type(value)} instead."
        )
    arr = value.as_numpy_array()
    if arr.dtype != np.uint8 or arr.ndim != 1:
        arr = arr.reshape(-1).view(np.uint8)
    return np.ascontiguousarray(arr)


class SharedMemoryStore(Store):
    """A zarr-python store whose keys live in a named shared-memory table.

    Parameters
    ----------
    table_name : str
        The name of an existing :class:`sharedzarr.Table` (for example the name of an
        array made by :func:`sharedzarr.create`).  :meth:`create` makes a new table.
    read_only : bool
        Refuse writes (zarr's ``ValueError``) and map the table read-only.

    Raises
    ------
    sharedzarr.errors.TableNotFoundError
        When no table has that name (also a ``FileNotFoundError``).
    ValueError
        For an invalid table name.

    Attributes
    ----------
    table_name : str
        The table's name: what another process passes to open the same store.

    Notes
    -----
    See the module docstring for how zarr keys map to table keys.  The store is
    safe to use from zarr's I/O thread and from dask threads and processes: every
    process attaches by name, readers take no lock, writers serialise on the
    table's writer lock.

    Examples
    --------
    >>> store = SharedMemoryStore.create("demo_group")            # doctest: +SKIP
    >>> g = zarr.open_group(store=store, mode="w")                # doctest: +SKIP
    """

    supports_writes: bool = True
    supports_deletes: bool = True
    supports_listing: bool = True

    _table: Table | None = None

    def __init__(self, table_name: str, *, read_only: bool = False) -> None:
        super().__init__(read_only=read_only)
        self.table_name = validate_name(table_name)
        self._keys: dict[str, tuple[Any, tuple[bytes, int]]] = {}
        self._table = Table.attach(table_name, readonly=read_only)

    @classmethod
    def create(
        cls,
        table_name: str | None = None,
        *,
        overwrite: bool = False,
        read_only: bool = False,
        **table_options: Any,
    ) -> SharedMemoryStore:
        """Create a new, empty table and return a store over it.

        The calling process owns the table: it is deleted when this process exits,
        unless ``persistent=True`` or a live ``heir`` takes it over (see
        :meth:`sharedzarr.Table.create`).

        Parameters
        ----------
        table_name : str, optional
            The table's name; ``None`` generates a unique one (see :attr:`table_name`).
        overwrite : bool
            Delete an existing table of that name first.
        read_only : bool
            Return a read-only store (of a new, empty table: rarely useful).
        **table_options
            ``table_type`` (``"set"`` or ``"ordered_set"``), ``access``, ``heir``,
            ``named_table``, ``persistent``, ``mode``: as for :meth:`sharedzarr.Table.create`.

        Returns
        -------
        SharedMemoryStore

        Raises
        ------
        sharedzarr.errors.TableExistsError
            When the name is taken and ``overwrite`` is false.
        ValueError
            For a bag table type (a store needs one value per key) or invalid options.
        """
        table_type = table_options.get("table_type", "set")
        if table_type in ("bag", "duplicate_bag"):
            raise ValueError(
                f"table_type={table_type!r} cannot back a zarr store: a store holds one value "
                "per key; use 'set' (default) or 'ordered_set'"
            )
        if table_name is not None:
            validate_name(table_name)
            if overwrite and table_options.get("named_table", True):
                from .storage.shm import delete_table, table_exists

                if table_exists(table_name):
                    delete_table(table_name)
        try:
            table = Table.create(table_name, **table_options)
        except TableExistsError as e:
            raise TableExistsError(
                f"table {table_name!r} already exists; open it with "
                f"SharedMemoryStore({table_name!r}), pass overwrite=True to replace it, or "
                f"delete it (`sharedzarr rm {table_name}`)"
            ) from e
        store = cls.__new__(cls)
        Store.__init__(store, read_only=read_only)
        store.table_name = table.name
        store._keys = {}
        store._table = table
        return store

    # ------------------------------------------------------------------ plumbing

    @property
    def table(self) -> Table:
        """The attached :class:`sharedzarr.Table` (attached again after :meth:`close`)."""
        t = self._table
        if t is None or t._closed:
            t = self._table = Table.attach(self.table_name, readonly=self.read_only)
        return t

    def _key(self, key: str) -> tuple[Any, tuple[bytes, int]]:
        """The table key and prepared (encoded, hashed) key of store key ``key``."""
        hit = self._keys.get(key)
        if hit is None:
            if not isinstance(key, str):
                raise TypeError(f"store keys are str, got {type(key).__name__}")
            tk = store_key_to_table_key(key)
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            kb = encode_key(tk)
            hit = self._keys[key] = (tk, (kb, key_hash(kb)))
        return hit

    def _view(self, key: str) -> memoryview | None:
        """A zero-copy read-only view of the value of ``key``, or None."""
        view: memoryview | None = self.table.get_prepared(self._key(key)[1], copy=False)
        return view

    def delete_table(self) -> None:
        """Delete the table for every process (ETS ``delete/1``); the store is then unusable."""
        self.table.delete_table()
        self._table = None

    async def _open(self) -> None:
        self.table  # noqa: B018 - attach (again) if needed
        await super()._open()

    def close(self) -> None:
        """Close the store and release this process's mappings; the table stays."""
        super().close()
        t, self._table = self._table, None
        if t is not None:
            t.close()

    def with_read_only(self, read_only: bool = False) -> SharedMemoryStore:
        """Return a new (unopened) store over the same table with another ``read_only``.

        Parameters
        ----------
        read_only : bool

        Returns
        -------
        SharedMemoryStore
        """
        return type(self)(self.table_name, read_only=read_only)

    def __getstate__(self) -> dict[str, Any]:
        return {"table_name": self.table_name, "read_only": self._read_only}

    def __setstate__(self, state: dict[str, Any]) -> None:
        Store.__init__(self, read_only=state["read_only"])
        self.table_name = state["table_name"]
        self._keys = {}
        self._table = None  # attach on first use

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SharedMemoryStore) and self.table_name == other.table_name

    def __hash__(self) -> int:
        return hash(("sharedzarr.SharedMemoryStore", self.table_name))

    def __str__(self) -> str:
        return f"shm://{self.table_name}"

    def __repr__(self) -> str:
        return f"SharedMemoryStore('{self}')"

    # ------------------------------------------------------------------ sync protocol

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Return the value of ``key`` (or part of it), or None when absent.

        Parameters
        ----------
        key : str
        prototype : BufferPrototype, optional
            The buffer type to return; default zarr's default prototype.
        byte_range : ByteRequest, optional
            ``RangeByteRequest``, ``OffsetByteRequest`` or ``SuffixByteRequest``.

        Returns
        -------
        Buffer or None
            For host buffers, a zero-copy view of shared memory.
        """
        if prototype is None:
            prototype = default_buffer_prototype()
        view = self._view(key)
        if view is None:
            return None
        if byte_range is not None:
            view = view[_byte_slice(view.nbytes, byte_range)]
        return prototype.buffer.from_bytes(view)

    def set_sync(self, key: str, value: Buffer) -> None:
        """Store ``value`` under ``key`` (one atomic publish).

        Parameters
        ----------
        key : str
        value : Buffer

        Raises
        ------
        ValueError
            On a read-only store.
        """
        self._check_writable()
        data = _as_bytes_view(value)
        self.table.insert_prepared(self._key(key)[1], data)

    def delete_sync(self, key: str) -> None:
        """Delete ``key``; no error when it is absent.

        Parameters
        ----------
        key : str
        """
        self._check_writable()
        self.table.delete_prepared(self._key(key)[1])

    # ------------------------------------------------------------------ Store API

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Return the value of ``key`` (or part of it), or None; see :meth:`get_sync`."""
        return self.get_sync(key, prototype=prototype, byte_range=byte_range)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> builtins.list[Buffer | None]:
        """Return the requested parts of several values, None for absent keys.

        Parameters
        ----------
        prototype : BufferPrototype
        key_ranges : iterable of (str, ByteRequest or None)

        Returns
        -------
        list of Buffer or None
        """
        return [self.get_sync(k, prototype=prototype, byte_range=r) for k, r in key_ranges]

    async def exists(self, key: str) -> bool:
        """Return True when ``key`` is in the store."""
        return self._view(key) is not None

    async def set(self, key: str, value: Buffer) -> None:
        """Store ``value`` under ``key``; see :meth:`set_sync`."""
        self.set_sync(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """Store ``value`` under ``key`` unless the key exists (atomic: ETS ``insert_new/2``).

        Parameters
        ----------
        key : str
        value : Buffer
        """
        self._check_writable()
        data = _as_bytes_view(value)
        self.table.insert_new(self._key(key)[0], data)

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        self._check_writable()
        table = self.table
        with table.writer():
            for key, value in values:
                table.insert_prepared(self._key(key)[1], _as_bytes_view(value))

    async def delete(self, key: str) -> None:
        """Delete ``key``; see :meth:`delete_sync`."""
        self.delete_sync(key)

    async def delete_dir(self, prefix: str) -> None:
        """Delete every key under ``prefix`` (all keys for ``""``), under one writer lock.

        Parameters
        ----------
        prefix : str
        """
        self._check_writable()
        if prefix != "" and not prefix.endswith("/"):
            prefix += "/"
        table = self.table
        with table.writer():
            for key in self._store_keys():
                if key.startswith(prefix):
                    table.delete_prepared(self._key(key)[1])

    async def clear(self) -> None:
        """Remove every object from the table (ETS ``delete_all_objects/1``)."""
        self._check_writable()
        self.table.clear()

    async def getsize(self, key: str) -> int:
        """Return the size in bytes of the value of ``key``, without reading it.

        Raises
        ------
        FileNotFoundError
            When the key is absent.
        """
        view = self._view(key)
        if view is None:
            raise FileNotFoundError(key)
        n = view.nbytes
        view.release()
        return n

    async def getsize_prefix(self, prefix: str) -> int:
        """Return the total size in bytes of the values of the keys under ``prefix``."""
        total = 0
        for key in self._store_keys():
            if key.startswith(prefix):
                view = self._view(key)
                if view is not None:
                    total += view.nbytes
                    view.release()
        return total

    def _store_keys(self) -> builtins.list[str]:
        """A snapshot of all store keys (table keys that have a store spelling)."""
        out = []
        for tk in self.table.keys():
            k = table_key_to_store_key(tk)
            if k is not None:
                out.append(k)
        return out

    async def list(self) -> AsyncIterator[str]:
        """Yield every key in the store (a snapshot)."""
        for key in self._store_keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        """Yield every key that starts with ``prefix`` (a snapshot)."""
        for key in self._store_keys():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        """Yield the names directly below ``prefix`` (keys and pseudo-directories)."""
        prefix = prefix.rstrip("/")
        if prefix == "":
            names = {k.split("/", 1)[0] for k in self._store_keys()}
        else:
            head = prefix + "/"
            names = {
                k[len(head) :].split("/", 1)[0] for k in self._store_keys() if k.startswith(head)
            }
        for name in sorted(names):
            yield name
