"""``"memory"``: an in-process backend (ExZarr's Memory backend, for one process).

Every store lives in a module-level dict from name to state, so any handle in the same process
reaches it by name (``sharedzarr.open(name, storage="memory")``) and pickling an array by name
works between threads and in-process executors — but not across processes: a child process
has its own (empty) dict.  Chunks are immutable :class:`bytes`, so a zero-copy read is a
read-only memoryview of them.  The store lives until :meth:`MemoryBackend.delete` (or
:func:`sharedzarr.storage.memory.delete_store`).
"""

from __future__ import annotations

import itertools
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from ..errors import AccessDeniedError, LockTimeoutError, TableExistsError, TableNotFoundError
from .base import ACCESS_LEVELS, MODES, TABLE_TYPES, Backend, ChunkIndex

__all__ = ["MemoryBackend", "delete_store", "list_stores"]

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class _State:
    """One store: chunks, metadata, writer lock and a write counter."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = name
        self.options = options
        self.chunks: dict[ChunkIndex, bytes] = {}
        self.metadata: bytes | None = None
        self.lock = threading.RLock()
        self.depth = 0  # writer sessions open (nested), under the lock
        self.writes = 0
        self.meta_writes = 0  # what handles compare to notice another handle's change
        self.deleted = False


_STORES: dict[str, _State] = {}
_STORES_LOCK = threading.Lock()
_counter = itertools.count()


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid storage name {name!r}: use 1 to 64 characters from A-Z a-z 0-9 _ . -"
        )
    return name


def _not_found(name: str) -> TableNotFoundError:
    return TableNotFoundError(
        f"memory store {name!r} does not exist in this process; "
        f"sharedzarr.create(..., storage='memory', table_name={name!r}) creates it "
        "(memory stores are per process: use storage='shm' to share between processes)"
    )


def list_stores() -> list[str]:
    """Return the names of the memory stores of this process.

    Returns
    -------
    list of str
    """
    with _STORES_LOCK:
        return sorted(_STORES)


def delete_store(name: str) -> bool:
    """Delete memory store ``name``.

    Parameters
    ----------
    name : str

    Returns
    -------
    bool
        True if it existed.
    """
    with _STORES_LOCK:
        state = _STORES.pop(name, None)
    if state is None:
        return False
    state.deleted = True
    state.chunks.clear()
    state.metadata = None
    return True


class MemoryBackend(Backend):
    """In-process storage: a dict of chunk bytes plus the metadata bytes.

    Parameters
    ----------
    state : _State
        Internal; use :meth:`create` or :meth:`open`.
    readonly : bool
        True for a ``mode="r"`` handle.

    Notes
    -----
    ``create`` validates the table options (``table_type``, ``access``) like the shm backend so
    that code moves between the two unchanged, but ignores ``named_table``, ``heir`` and
    ``persistent``, and does not enforce ``access``: there is only one process.
    """

    id: ClassVar[str] = "memory"

    _state: _State | None = None

    def __init__(self, state: _State, readonly: bool = False) -> None:
        self._state = state
        self.name = state.name
        self.readonly = readonly

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str | None,
        *,
        overwrite: bool = False,
        named_table: bool = True,
        table_type: str = "set",
        access: str = "public",
        heir: Any = None,
        persistent: bool = False,
        **options: Any,
    ) -> MemoryBackend:
        """Create an empty memory store (see :meth:`Backend.create`).

        Parameters
        ----------
        name : str or None
            None picks a unique name ``"mem-<hex>"``.
        overwrite : bool
            Replace an existing store of that name.
        named_table, heir, persistent
            Accepted for compatibility with the shm backend and ignored.
        table_type : {"set", "ordered_set", "bag", "duplicate_bag"}
            Validated and recorded.
        access : {"public", "protected", "private"}
            Validated and recorded.
        **options
            Unknown options raise TypeError.

        Returns
        -------
        MemoryBackend
        """
        if options:
            raise TypeError(f"MemoryBackend.create() got unknown option(s) {sorted(options)}")
        if table_type not in TABLE_TYPES:
            raise ValueError(f"table_type must be one of {list(TABLE_TYPES)}, got {table_type!r}")
        if access not in ACCESS_LEVELS:
            raise ValueError(f"access must be one of {list(ACCESS_LEVELS)}, got {access!r}")
        if name is None:
            name = f"mem-{uuid.uuid4().hex[:16]}-{next(_counter)}"
        _check_name(name)
        state = _State(
            name,
            {
                "named_table": bool(named_table),
                "table_type": table_type,
                "access": access,
                "heir": heir,
                "persistent": bool(persistent),
            },
        )
        with _STORES_LOCK:
            old = _STORES.get(name)
            if old is not None and not overwrite:
                raise TableExistsError(
                    f"memory store {name!r} already exists; open it with "
                    f"sharedzarr.open({name!r}, storage='memory'), or pass overwrite=True"
                )
            _STORES[name] = state
        if old is not None:
            old.deleted = True
        return cls(state)

    @classmethod
    def open(cls, name: str, *, mode: str = "r+") -> MemoryBackend:
        """Open an existing memory store (see :meth:`Backend.open`).

        Parameters
        ----------
        name : str
        mode : {"r+", "r"}

        Returns
        -------
        MemoryBackend
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        with _STORES_LOCK:
            state = _STORES.get(name) if isinstance(name, str) else None
        if state is None:
            raise _not_found(str(name))
        return cls(state, readonly=(mode == "r"))

    @classmethod
    def exists(cls, name: str) -> bool:
        """Return True if a memory store named ``name`` exists in this process.

        Parameters
        ----------
        name : str

        Returns
        -------
        bool
        """
        with _STORES_LOCK:
            return name in _STORES

    def close(self) -> None:
        """Drop this handle's reference to the store.  Idempotent."""
        self._state = None

    def delete(self) -> None:
        """Delete the store (every handle sees TableNotFoundError afterwards) and close."""
        state = self._live(write=True)
        with _STORES_LOCK:
            if _STORES.get(state.name) is state:
                del _STORES[state.name]
        state.deleted = True
        state.chunks.clear()
        state.metadata = None
        self.close()

    # -- data -------------------------------------------------------------------------------

    def _live(self, write: bool = False) -> _State:
        state = self._state
        if state is None:
            raise ValueError(f"memory store handle {self.name!r} is closed")
        if state.deleted:
            raise _not_found(self.name)
        if write and self.readonly:
            raise AccessDeniedError(
                f"memory store {self.name!r} was opened read-only (mode='r'); "
                f"open it with mode='r+' to write"
            )
        return state

    def read_chunk(self, idx: ChunkIndex, *, copy: bool = True) -> bytes | memoryview | None:
        """Return chunk ``idx``'s bytes (a read-only memoryview with ``copy=False``) or None."""
        data = self._live().chunks.get(idx)
        if data is None or copy:
            return data
        return memoryview(data)

    def write_chunk(self, idx: ChunkIndex, data: Any) -> None:
        """Store a copy of ``data`` as chunk ``idx``."""
        state = self._live(write=True)
        value = bytes(data) if not isinstance(data, bytes) else data
        with state.lock:
            state.chunks[tuple(idx)] = value
            state.writes += 1

    def delete_chunk(self, idx: ChunkIndex) -> None:
        """Delete chunk ``idx`` if present."""
        state = self._live(write=True)
        with state.lock:
            if state.chunks.pop(tuple(idx), None) is not None:
                state.writes += 1

    def list_chunks(self) -> list[ChunkIndex]:
        """Return the stored chunk indices."""
        return list(self._live().chunks)

    def read_metadata(self) -> bytes | None:
        """Return the metadata bytes, or None."""
        return self._live().metadata

    def write_metadata(self, data: bytes) -> None:
        """Store the metadata bytes."""
        state = self._live(write=True)
        with state.lock:
            state.metadata = bytes(data)
            state.writes += 1
            state.meta_writes += 1

    @contextmanager
    def _writer(self, timeout: float | None, atomic: bool) -> Iterator[MemoryBackend]:
        state = self._live(write=True)
        ok = state.lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout))
        if not ok:
            raise LockTimeoutError(
                f"memory store {self.name!r}: writer lock not acquired within {timeout} s "
                "(another thread of this process holds it)"
            )
        outer = atomic and state.depth == 0
        saved = (dict(state.chunks), state.metadata) if outer else None
        state.depth += 1
        try:
            yield self
        except BaseException:
            if saved is not None:  # undo: the chunks and metadata as they were
                state.chunks, state.metadata = saved
                state.writes += 1
                state.meta_writes += 1
            raise
        finally:
            state.depth -= 1
            state.lock.release()

    def writer(self, timeout: float | None = None, *, atomic: bool = False) -> Any:
        """Hold the store's writer lock (a reentrant :class:`threading.RLock`); with
        ``atomic``, the outermost session is undone if it raises."""
        return self._writer(timeout, atomic)

    def op_seq(self) -> int:
        """Moves with every metadata write (see :meth:`Backend.op_seq`)."""
        state = self._state
        return state.meta_writes if state is not None else 0

    def write_count(self) -> int:
        """Return the number of writes made to the store."""
        return self._live().writes

    @property
    def options(self) -> dict[str, Any]:
        """The table options given at create time."""
        return dict(self._live().options)
