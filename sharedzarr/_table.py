"""Table: an ETS-style key/value table in named POSIX shared memory.

A table is a header segment, a hash-index segment and append-only data arenas
(byte map in :mod:`sharedzarr._layout`).  Any process that knows the name
attaches and reads with no lock; writers serialise on one writer lock
(:mod:`sharedzarr._lock`).

Why a reader never sees a torn value
------------------------------------
Records are immutable once published.  A writer appends a new record past the
arena's bump pointer, then publishes it with one aligned 8-byte store of the
slot's reference (``memoryview.cast("Q")`` item assignment: CPython packs it
with a fixed-size ``memcpy`` that compilers emit as one ``mov``, unlike
``struct``'s ``'<Q'`` which stores byte by byte).  A reader loads the
reference once (one aligned 8-byte load) and reads the immutable record, so it
sees the old or the new value, whole.  Memory ordering: we rely on x86-64's
TSO (stores become visible in program order, loads are not reordered with
older loads), so a reader that sees a reference also sees the record it
points to.  On a weakly ordered CPU this needs fences; the package refuses to
publish on anything but x86-64/little-endian (see ``_check_platform``).

Overwritten and deleted records become garbage; when garbage exceeds 40% of the
live data the writer copies the live records of the most wasteful arena forward
and republishes them.  An arena left with no live record is *retired*: unlinked
(a mapping of an unlinked segment stays valid), or parked in a small pool and,
after a grace period, renamed to a fresh id and appended to again, so that a
rewrite costs a copy instead of fresh tmpfs pages.  Reuse is the one case where
bytes a reader may be reading change, and readers handle it:

* a copying read loads the header's reuse epoch before its lookup and again
  after its copy; a writer bumps the epoch before the first byte of a reused
  arena changes (TSO: a reader that saw any such byte sees the bump), so a read
  that overlapped a reuse is repeated, and one that did not is whole;
* a zero-copy view marks its arena no-reuse, then checks that the arena's id
  word still holds the id of its reference.  A writer stores 0 there when it
  retires the arena and reads the mark at least ``REUSE_GRACE_NS`` (0.2 ms)
  later; a reader whose check saw the old id stored its mark before that check,
  and a store is visible to other CPUs within nanoseconds (the store buffer
  drains continuously), so the writer sees the mark and unlinks the arena
  instead of reusing it.  A view therefore never changes while it is held.

Crash consistency
-----------------
A writer stores its pid in the header's dirty word while it works.  The
kernel releases the ``flock`` writer lock when a writer dies, and the next
writer that finds the dirty word set recomputes the counters from the index
and unlinks the segments nothing references (``_recover``).  Because a value
becomes visible only through the single publishing store, a killed write is
either fully visible or not at all.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import os
import re
import secrets
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import wait as futures_wait
from typing import Any

import numpy as np

from . import _layout as L
from . import _proc
from ._index import build_slots, decode_key, encode_key, key_hash, sort_key
from ._lock import WriterLock
from ._segment import Segment, list_names, map_os_errors, size_on_disk
from ._segment import exists as _seg_exists
from ._segment import unlink as _unlink
from .errors import (
    AccessDeniedError,
    CorruptTableError,
    NotFoundError,
    SharedZarrError,
    TableExistsError,
    TableNotFoundError,
)

__all__ = ["Table", "validate_name", "encode_key", "decode_key"]

DEFAULT_TIMEOUT = 60.0
MAX_MAPPED = 4096  # arena mappings cached per handle (Linux allows ~65k maps)
RECLAIM_MIN = 1 << 20  # don't bother reclaiming less garbage than this
RECLAIM_RATIO = 0.4  # reclaim when garbage > this fraction of live records (<= 1.5x memory)
RECLAIM_RATIO_BUSY = 1.0  # ... and within a long writer session, at this fraction
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_REC_HEAD = L.REC_HEAD
_REC_HEAD1 = L.REC_HEAD1
_OFFSET_MASK = L.OFFSET_MASK
_OFFSET_BITS = L.OFFSET_BITS
_READ_RETRIES = 10_000  # a retry needs a writer to reuse an arena during one read
_VIEW_CACHE_MAX = 1 << 16  # entries per view_reader (each holds a view, not a copy)
# inlined as literals on the read path (an attribute lookup there costs measurable time)
assert (L.H_DELETED, L.H_GEN, L.H_WRITES, L.H_RECLAIM, L.H_REUSE) == (8, 9, 12, 21, 22)
assert (L.A_ID, L.A_NOREUSE, L.NOREUSE_VIEW) == (6, 7, 1)


def _count_reclaim(H: memoryview) -> None:
    """Count a reclaim, a reuse or a recovery: cached readers drop their views.

    The write counter moves as well: a cached read (``Table.view_reader``) loads nothing
    else while that counter stands still.
    """
    H[L.H_RECLAIM] += 1
    H[L.H_WRITES] += 1


def _check_platform() -> None:
    if sys.byteorder != "little" or os.uname().machine not in ("x86_64", "AMD64", "amd64"):
        raise RuntimeError(
            "sharedzarr publishes values with plain aligned 8-byte stores and relies on "
            "x86-64 (TSO) memory ordering; this machine is "
            f"{os.uname().machine}/{sys.byteorder}-endian, which is not supported yet"
        )


_check_platform()

_sort_key = sort_key  # the old private name, kept for callers


# --------------------------------------------------------------------------- keys


def validate_name(name: str) -> str:
    """Check a table name: letters, digits, ``_ . -``, 1 to 64 characters.

    Raises
    ------
    ValueError
        When the name is not valid; the message says which characters are allowed.
    """
    if not isinstance(name, str):
        raise TypeError(f"table name must be a str, got {type(name).__name__}")
    if not _NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(
            f"invalid table name {name!r}: use 1 to 64 letters, digits, '_', '.' or '-' "
            "(e.g. 'my_array_data')"
        )
    return name


def _as_buffer(value: Any) -> memoryview:
    if isinstance(value, bytes):
        return memoryview(value)
    if isinstance(value, str):
        raise TypeError("values must be bytes-like; encode str values first (value.encode())")
    try:
        mv = memoryview(value)
    except TypeError as e:
        raise TypeError(
            f"values must be bytes-like (bytes, bytearray, memoryview, numpy array), "
            f"got {type(value).__name__}"
        ) from e
    if not mv.c_contiguous:
        raise ValueError(
            "values must be C-contiguous; pass np.ascontiguousarray(value) or bytes(value)"
        )
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv


# --------------------------------------------------------------------------- registry


_OWNED: dict[str, None] = {}
_HANDLES: weakref.WeakSet[Table] = weakref.WeakSet()
_cleanup_registered = False
_registry_lock = threading.Lock()


def _register_owned(name: str) -> None:
    global _cleanup_registered
    with _registry_lock:
        _OWNED[name] = None
        if not _cleanup_registered:
            atexit.register(_exit_cleanup)
            try:  # forked multiprocessing children skip atexit but run these finalizers
                from multiprocessing import util

                util.Finalize(None, _exit_cleanup, exitpriority=-100)
            except Exception:  # pragma: no cover
                pass
            _cleanup_registered = True


def _exit_cleanup() -> None:
    """At exit: delete the tables this process owns, or hand them to a live heir."""
    me = _proc.current()
    for name in list(_OWNED):
        _OWNED.pop(name, None)
        with contextlib.suppress(Exception):
            _release_ownership(name, me)


def _after_fork_in_child() -> None:
    global _cleanup_registered
    _OWNED.clear()
    # multiprocessing's fork bootstrap clears the inherited Finalize registry (and
    # skips atexit): register again when this child creates or takes a table
    _cleanup_registered = False
    for t in list(_HANDLES):
        with contextlib.suppress(Exception):
            t._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _release_ownership(name: str, me: tuple[int, int]) -> None:
    """Owner ``me`` exits: hand the table to a live heir, keep it if persistent, else delete."""
    try:
        hdr = Segment.attach(L.segment_names(name)[0], keep_fd=False)
    except Exception:
        return
    try:
        H = hdr.buf.cast("Q")
        try:
            if bytes(hdr.buf[:8]) != L.MAGIC or H[L.H_DELETED]:
                return
            if (H[L.H_OWNER_PID], H[L.H_OWNER_START]) != me:
                return  # given away meanwhile
            heir = (H[L.H_HEIR_PID], H[L.H_HEIR_START])
            if heir[0] and _proc.alive(*heir):
                H[L.H_OWNER_START] = heir[1]
                H[L.H_OWNER_PID] = heir[0]
                H[L.H_HEIR_PID] = 0
                H[L.H_HEIR_START] = 0
                return
            if hdr.buf[19]:  # persistent
                return
        finally:
            H.release()
    finally:
        hdr.close()
    _destroy(name)


def _owner_state(H: memoryview) -> str:
    """'alive' when the owner runs, 'heir' when only the heir does, else 'dead'."""
    if _proc.alive(H[L.H_OWNER_PID], H[L.H_OWNER_START]):
        return "alive"
    if H[L.H_HEIR_PID] and _proc.alive(H[L.H_HEIR_PID], H[L.H_HEIR_START]):
        return "heir"
    return "dead"


def _reap_if_orphaned(name: str, H: memoryview, persistent: bool) -> bool:
    """Apply the owner-death rules to a table; return True when it was deleted.

    The owner is dead (it was killed and could not clean up): a live heir becomes
    the owner; otherwise a non-persistent table is deleted.
    """
    state = _owner_state(H)
    if state == "alive":
        return False
    if state == "heir":
        H[L.H_OWNER_START] = H[L.H_HEIR_START]
        H[L.H_OWNER_PID] = H[L.H_HEIR_PID]
        H[L.H_HEIR_PID] = 0
        H[L.H_HEIR_START] = 0
        return False
    if persistent:
        return False
    _destroy(name)
    return True


def table_segments(name: str) -> list[str]:
    """Every segment in ``/dev/shm`` that belongs to table ``name`` (header last)."""
    hdr, idx, arena = L.segment_names(name)
    out = []
    base = L.PREFIX + name + "."
    for n in list_names(base):
        rest = n[len(base) :]
        if (rest.startswith("idx.") and rest[4:].isdigit()) or (
            rest.startswith("a") and rest[1:].isdigit()
        ):
            out.append(n)
    out.sort()
    if _seg_exists(hdr):
        out.append(hdr)
    return out


def _destroy(name: str, timeout: float = 2.0) -> bool:
    """Mark table ``name`` deleted, then unlink all its segments; False if it had no header."""
    hdr_name = L.segment_names(name)[0]
    try:
        with map_os_errors(name, "header"):
            hdr = Segment.attach(hdr_name, keep_fd=True)
    except AccessDeniedError:
        raise  # the segment mode makes it another user's table: not ours to delete
    except Exception:
        hdr = None
    try:
        if hdr is not None and hdr.size >= L.HEADER_SIZE:
            H = hdr.buf.cast("Q")
            H[L.H_DELETED] = 1
            H[L.H_WRITES] += 1  # cached readers look at the header again
            # let a writer in mid-operation finish (bounded: it may be stopped)
            lock = WriterLock(lambda: hdr.fd, lambda: 0, name)
            took = False
            with contextlib.suppress(Exception):
                took = lock.acquire(timeout)
            if took:
                H[L.H_WRITES] += 1  # again, in case a writer's bump raced the first one
            H.release()
            try:
                for n in table_segments(name):
                    if n != hdr_name:
                        _unlink(n)
                _unlink(hdr_name)
            finally:
                if took:
                    lock.release()
            return True
        for n in table_segments(name):
            _unlink(n)
        return hdr is not None
    finally:
        if hdr is not None:
            hdr.close()


def list_tables() -> list[str]:
    """Names of all tables with a header in ``/dev/shm`` (no liveness check)."""
    out = []
    for n in list_names(L.PREFIX):
        if n.endswith(".hdr"):
            out.append(n[len(L.PREFIX) : -4])
    return sorted(out)


# --------------------------------------------------------------------------- Table


class Table:
    """An ETS-style table shared between processes through named POSIX shared memory.

    Create one with :meth:`create`, attach to it from any process with
    :meth:`attach`.  Reads take no lock; writes serialise on one writer lock
    per table (:meth:`writer`).  A handle pickles as its name: a worker process
    that receives it attaches, copying no data.

    Attributes
    ----------
    name : str
        The table name (what :meth:`attach` takes).
    table_type : str
        ``"set"``, ``"ordered_set"``, ``"bag"`` or ``"duplicate_bag"``.
    access : str
        ``"public"``, ``"protected"`` or ``"private"``.
    """

    # class-level defaults: close() is safe on a half-built object
    _hdr: Segment | None = None
    _H: memoryview | None = None
    _idx_seg: Segment | None = None
    _idx: memoryview | None = None
    _wseg: Segment | None = None
    _closed: bool = True
    _deleted: bool = False
    name: str = ""

    # ------------------------------------------------------------------ lifecycle

    def __init__(self, name: str, hdr: Segment, readonly: bool) -> None:
        self.name = name
        self._hdr = hdr
        self._ro = readonly
        self._pid = os.getpid()
        self._arenas: dict[int, Segment] = {}
        self._idx_gen = -1
        self._mask = 0
        self._lock_fd = hdr.fd
        if hdr.size < L.HEADER_SIZE:
            raise CorruptTableError(
                f"table {name!r}: header segment is {hdr.size} bytes, expected {L.HEADER_SIZE}; "
                f"it is not a sharedzarr table of this version (`sharedzarr rm {name}` removes it)"
            )
        magic, version, hsize, ttype, access, named, persistent, mode = struct.unpack_from(
            "<8sII4BI", hdr.buf, 0
        )
        if magic != L.MAGIC or version != L.VERSION or hsize != L.HEADER_SIZE:
            raise CorruptTableError(
                f"table {name!r}: header has magic {magic!r} version {version}, expected "
                f"{L.MAGIC!r} version {L.VERSION}; it was not made by this sharedzarr version "
                f"or is damaged (`sharedzarr rm {name}` removes it)"
            )
        if ttype >= len(L.TABLE_TYPES) or access >= len(L.ACCESS_LEVELS):
            raise CorruptTableError(f"table {name!r}: header has invalid type/access bytes")
        self.table_type = L.TABLE_TYPES[ttype]
        self.access = L.ACCESS_LEVELS[access]
        self.named_table = bool(named)
        self.persistent = bool(persistent)
        self.mode = mode
        self._bag = ttype >= 2
        self._dup = ttype == 3
        self._H = hdr.buf.cast("Q")
        self._reclaim_seen = self._H[L.H_RECLAIM]
        self._lock = WriterLock(self._get_lock_fd, self._holder, name)
        self._reads = 0
        self._size_hint = 0  # bytes a bulk write is about to store (sizes new arenas)
        self._closed = False
        _HANDLES.add(self)

    @classmethod
    def create(
        cls,
        name: str | None = None,
        *,
        table_type: str = "set",
        access: str = "public",
        heir: int | None = None,
        named_table: bool = True,
        persistent: bool = False,
        mode: int = 0o600,
    ) -> Table:
        """Create a new table owned by this process.

        ETS: ``ets:new/2``.

        Parameters
        ----------
        name : str, optional
            1-64 letters, digits, ``_ . -``.  ``None`` generates a unique name.
        table_type : {"set", "ordered_set", "bag", "duplicate_bag"}
            ETS table type.
        access : {"public", "protected", "private"}
            Who may read and write (see the README for what this can and cannot stop).
        heir : int, optional
            Pid of a running process that becomes the owner when this one exits.
        named_table : bool
            With ``False`` the name gets a unique suffix (like an ETS tid), so
            several unnamed tables may share a base name; use ``table.name``.
        persistent : bool
            Keep the table after the owner exits, until it is deleted.
        mode : int
            Permission bits of the segments (default ``0o600``: this user only).

        Returns
        -------
        Table

        Raises
        ------
        TableExistsError
            When a live table already has this name.
        ValueError
            For an invalid name, type, access or heir.
        """
        if table_type not in L.TABLE_TYPES:
            raise ValueError(
                f"invalid table_type {table_type!r}: use one of {', '.join(L.TABLE_TYPES)}"
            )
        if access not in L.ACCESS_LEVELS:
            raise ValueError(f"invalid access {access!r}: use one of {', '.join(L.ACCESS_LEVELS)}")
        if not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise ValueError(f"invalid mode {mode!r}: use permission bits such as 0o600 or 0o660")
        if not mode & 0o600 == 0o600:
            raise ValueError(f"mode {oct(mode)} must give the owner read and write (0o600)")
        heir_ident = _heir_ident(heir)
        if name is None:
            name = f"t{os.getpid()}-{secrets.token_hex(4)}"
        validate_name(name)
        if not named_table:
            name = f"{name[:55]}.{secrets.token_hex(4)}"
        hdr_name = L.segment_names(name)[0]
        for attempt in range(2):
            try:
                with map_os_errors(name, "header"):
                    hdr = Segment.create(hdr_name, L.HEADER_SIZE, mode, keep_fd=True)
                break
            except TableExistsError:
                if attempt == 0 and _try_reap(name):
                    continue
                raise TableExistsError(
                    f"table {name!r} already exists; attach with "
                    f"sharedzarr.Table.attach({name!r}), pass overwrite=True to "
                    f"sharedzarr.create, or delete it (`sharedzarr rm {name}`)"
                ) from None
        try:
            # we hold the name: anything else named like our segments is a stray
            for n in table_segments(name):
                if n != hdr_name:
                    _unlink(n)
            with map_os_errors(name, "index"):
                idx = Segment.create(
                    L.segment_names(name)[1] + "1", L.index_bytes(L.MIN_CAPACITY), mode
                )
            L.INDEX_HDR.pack_into(idx.buf, 0, L.INDEX_MAGIC, L.MIN_CAPACITY, 1)
            idx.close()
            me = _proc.current()
            buf = hdr.buf
            H = buf.cast("Q")
            H[L.H_OWNER_PID], H[L.H_OWNER_START] = me
            if heir_ident:
                H[L.H_HEIR_PID], H[L.H_HEIR_START] = heir_ident
            struct.pack_into("<d", buf, 56, time.time())
            H[L.H_GEN] = 1
            H[L.H_NEXT_ARENA] = 1
            H.release()
            struct.pack_into(
                "<IIBBBBI",
                buf,
                8,
                L.VERSION,
                L.HEADER_SIZE,
                L.TABLE_TYPES.index(table_type),
                L.ACCESS_LEVELS.index(access),
                int(named_table),
                int(persistent),
                mode,
            )
            buf[0:8] = L.MAGIC  # last: attachers wait for the magic
        except BaseException:
            hdr.close()
            _destroy(name)
            raise
        _register_owned(name)
        return cls(name, hdr, readonly=False)

    @classmethod
    def attach(cls, name: str, *, readonly: bool = False) -> Table:
        """Attach to an existing table by name, from any process.

        Parameters
        ----------
        name : str
            The table name.
        readonly : bool
            Map the segments read-only; writes through this handle raise
            :class:`AccessDeniedError`.

        Returns
        -------
        Table

        Raises
        ------
        TableNotFoundError
            When no such table exists (or its owner died and it was deleted).
        AccessDeniedError
            For a private table of another process, or a segment mode that
            denies this user.
        CorruptTableError
            When the segment is not a table of this layout version.
        """
        validate_name(name)
        hdr_name = L.segment_names(name)[0]
        try:
            with map_os_errors(name, "header"):
                hdr = Segment.attach(hdr_name, readonly=readonly, keep_fd=True)
        except AccessDeniedError:  # (translated at the boundary, so caught outside it)
            if readonly:
                raise
            with map_os_errors(name, "header"):  # the mode may still let us read
                hdr = Segment.attach(hdr_name, readonly=True, keep_fd=True)
            readonly = True
        try:
            _wait_for_magic(name, hdr)
            t = cls(name, hdr, readonly=readonly)
        except BaseException:
            hdr.close()
            raise
        try:
            t._check_alive()
            if not t._ro and t._reap_check():
                raise t._not_found()
            owner = t.is_owner
            if t.access == "private" and not owner:
                raise AccessDeniedError(
                    f"table {name!r} is private to its owner (pid {t.owner_pid}); create it "
                    "with access='protected' or 'public' to share it"
                )
            if owner:
                _register_owned(name)
            elif t.access == "protected" and not t._ro:
                t._remap(readonly=True)
        except BaseException:
            t.close()
            raise
        return t

    @classmethod
    def _attach_for_admin(cls, name: str) -> Table:
        """A read-only handle for inspection (``info``, ``ls``), ignoring the access level."""
        validate_name(name)
        with map_os_errors(name, "header"):
            hdr = Segment.attach(L.segment_names(name)[0], readonly=True, keep_fd=True)
        try:
            _wait_for_magic(name, hdr)
            t = cls(name, hdr, readonly=True)
        except BaseException:
            hdr.close()
            raise
        return t

    def _owner_start(self) -> int:
        return int(self._H[L.H_OWNER_START])

    def _reap_check(self) -> bool:
        H = self._H
        if _proc.alive(H[L.H_OWNER_PID], H[L.H_OWNER_START]):
            return False
        return _reap_if_orphaned(self.name, H, self.persistent)

    def _remap(self, *, readonly: bool) -> None:
        hdr = Segment.attach(L.segment_names(self.name)[0], readonly=readonly, keep_fd=True)
        self._drop_maps()
        old = self._hdr
        if self._H is not None:
            self._H.release()
        self._hdr = hdr
        self._H = hdr.buf.cast("Q")
        self._lock_fd = hdr.fd
        self._ro = readonly
        self._lock = WriterLock(self._get_lock_fd, self._holder, self.name)
        if old is not None:
            old.close()

    def _drop_maps(self) -> None:
        for seg in self._arenas.values():
            seg.close()
        self._arenas.clear()
        if self._idx is not None:
            with contextlib.suppress(BufferError):
                self._idx.release()
            self._idx = None
        if self._idx_seg is not None:
            self._idx_seg.close()
            self._idx_seg = None
        self._idx_gen = -1
        if self._wseg is not None:
            self._wseg.close()
            self._wseg = None

    def close(self) -> None:
        """Release this process's mappings; the table itself is untouched. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._drop_maps()
        if self._H is not None:
            with contextlib.suppress(BufferError):
                self._H.release()
            self._H = None
        hdr_fd = -1
        if self._hdr is not None:
            hdr_fd = self._hdr.fd
            self._hdr.close()  # closing an inherited copy of the fd does not touch the parent
            self._hdr = None
        if self._lock_fd >= 0 and self._lock_fd != hdr_fd:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # reopened after fork
        self._lock_fd = -1

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __reduce__(self) -> tuple:
        return (Table.attach, (self.name,))

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self)} objects"
        return f"<sharedzarr.Table {self.name!r} {self.table_type} {self.access}, {state}>"

    def _after_fork(self) -> None:
        # the child must not share the parent's flock description nor close its fd
        self._lock.reset_after_fork()
        self._lock_fd = -1
        self._wseg = None

    def _get_lock_fd(self) -> int:
        if self._lock_fd < 0 or os.getpid() != self._pid:
            path = os.path.join("/dev/shm", L.segment_names(self.name)[0])
            with map_os_errors(self.name, "header"):
                self._lock_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            self._pid = os.getpid()
        return self._lock_fd

    def _holder(self) -> int:
        H = self._H
        return H[L.H_HOLDER] if H is not None else 0

    # ------------------------------------------------------------------ checks

    def _not_found(self) -> TableNotFoundError:
        return TableNotFoundError(
            f"table {self.name!r} was deleted; sharedzarr.create(..., table_name={self.name!r}) "
            "creates a new one, `sharedzarr ls` lists tables"
        )

    def _check_alive(self) -> None:
        if self._closed:
            if self._deleted:
                raise self._not_found()
            raise ValueError(f"operation on a closed handle of table {self.name!r}; attach again")
        if self._H[L.H_DELETED] or self._hdr.unlinked():
            raise self._not_found()

    def _check_open(self) -> memoryview:
        H = self._H
        if H is None:
            if self._deleted:
                raise self._not_found()
            raise ValueError(f"operation on a closed handle of table {self.name!r}; attach again")
        if H[L.H_DELETED]:
            raise self._not_found()
        self._reads += 1
        if not self._reads & 255 and self._hdr.unlinked():
            raise self._not_found()
        return H

    @property
    def owner_pid(self) -> int:
        """Pid of the owning process (ETS ``info(T, owner)``)."""
        return int(self._H[L.H_OWNER_PID])

    @property
    def heir_pid(self) -> int | None:
        """Pid of the heir, or None (ETS ``info(T, heir)``)."""
        return int(self._H[L.H_HEIR_PID]) or None

    @property
    def is_owner(self) -> bool:
        """True when this process owns the table."""
        H = self._H
        return (H[L.H_OWNER_PID], H[L.H_OWNER_START]) == _proc.current()

    @property
    def write_count(self) -> int:
        """Number of write operations ever applied (changes on every write)."""
        return int(self._check_open()[L.H_WRITES])

    # ------------------------------------------------------------------ mapping

    def _seg_name_idx(self, gen: int) -> str:
        return f"{L.PREFIX}{self.name}.idx.{gen}"

    def _seg_name_arena(self, aid: int) -> str:
        return f"{L.PREFIX}{self.name}.a{aid}"

    def _load_index(self) -> None:
        """Map the current index generation (retrying while a writer replaces it)."""
        H = self._H
        for _ in range(1000):
            gen = H[L.H_GEN]
            if H[L.H_DELETED]:
                raise self._not_found()
            try:
                seg = Segment.attach(self._seg_name_idx(gen), readonly=self._ro)
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
            if self._idx is not None:
                with contextlib.suppress(BufferError):
                    self._idx.release()
            if self._idx_seg is not None:
                self._idx_seg.close()
            self._idx_seg = seg
            self._idx = seg.buf[L.INDEX_HEADER : L.index_bytes(cap)].cast("Q")
            self._mask = cap - 1
            self._idx_gen = gen
            return
        raise SharedZarrError(f"table {self.name!r}: index kept changing; retry")

    def _map_arena(self, aid: int) -> Segment:
        arenas = self._arenas
        if len(arenas) >= MAX_MAPPED:
            for k in list(arenas)[: MAX_MAPPED // 2]:
                arenas.pop(k).close()
        if self._H[L.H_RECLAIM] != self._reclaim_seen:
            self._forget_reclaimed()
        seg = Segment.attach(self._seg_name_arena(aid), readonly=self._ro, words_rw=True)
        arenas[aid] = seg
        return seg

    def _forget_reclaimed(self) -> None:
        """Drop cached mappings of arenas a writer unlinked (their memory can then be freed)."""
        self._reclaim_seen = self._H[L.H_RECLAIM]
        for aid in list(self._arenas):
            if not _seg_exists(self._seg_name_arena(aid)):
                self._arenas.pop(aid).close()

    # ------------------------------------------------------------------ read path

    def _find(self, kb: bytes, h: int) -> tuple[int, int, Segment | None, int]:
        """Locate key bytes ``kb``: ``(slot, ref, arena segment, record offset)`` or ``(-1, ...)``.

        Lock-free.  Retries when the arena a reference points to was reclaimed
        between loading the reference and mapping the arena.
        """
        H = self._check_open()
        for _attempt in range(100):
            if H[L.H_GEN] != self._idx_gen:
                self._load_index()
            idx = self._idx
            mask = self._mask
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

    def _corrupt(self, ref: int) -> CorruptTableError:
        return CorruptTableError(
            f"table {self.name!r}: reference {ref:#x} points outside its data segment; "
            f"the table is damaged (`sharedzarr rm {self.name}` removes it)"
        )

    def _values(
        self, seg: Segment, off: int, copy: bool, aid: int = 0, borrow: bool = False
    ) -> list | None:
        """The values of the record at ``off``: ``bytes``, or with ``copy=False`` views.

        Views pin arena ``aid`` (see :meth:`_pin`); None means it was retired meanwhile
        and the caller must look the key up again.  ``borrow`` views pin nothing: for
        callers that hold the writer lock (nothing is reused meanwhile).
        """
        mm = seg.mm
        _total, klen, n = _REC_HEAD.unpack_from(mm, off)
        lens = struct.unpack_from(f"<{n}Q", mm, off + 16)
        pos = off + L.value_offset(klen, n)
        out = []
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

    def reuse_epoch(self) -> int:
        """The reuse epoch: a counter a writer bumps before it overwrites a retired arena.

        A reader of a *borrowed* view (``get_prepared(..., borrow=True)``) loads it before
        the lookup and again after copying the view; if it moved, the copy may be torn and
        the read must be repeated.  See :mod:`sharedzarr._layout`, "Reuse".
        """
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
                    if w[7] == 0:  # A_NOREUSE: pin (see _pin)
                        w[7] = 1
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
        return self._get_slow(kb, h, False, True)

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
        idx = self._idx
        j = (h & self._mask) << 1
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
        cache: dict[Any, tuple] = {}
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
            for _attempt in range(_READ_RETRIES):
                epoch, rec, writes = H[L.H_REUSE], H[L.H_RECLAIM], H[L.H_WRITES]
                if H[L.H_GEN] != self._idx_gen:
                    self._load_index()
                gen = self._idx_gen
                hit = self._located(kb, h, H, epoch)
                if hit is False:
                    continue
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
                    continue
                if pin and not self._pin(seg, ref >> _OFFSET_BITS):
                    continue
                obj = wrap(seg.rbuf[pos : pos + vlen])
                out = obj if take is None or obj is None else take(obj)
                if H[L.H_REUSE] != epoch:
                    continue
                if obj is not None:
                    if len(cache) >= _VIEW_CACHE_MAX:
                        cache.clear()
                    cache[k] = (writes, obj, gen, (slot << 1) + 1, ref, rec)
                return out
            raise self._kept_changing()

        return read

    def _located(
        self, kb: bytes, h: int, H: memoryview, epoch: int
    ) -> tuple[int, int, Segment, int, int] | None | bool:
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

    def _get_slow(self, kb: bytes, h: int, copy: bool, borrow: bool) -> Any:
        """:meth:`get_prepared` by a full probe, repeated while arenas are reused under it."""
        H = self._check_open()
        for _attempt in range(_READ_RETRIES):
            epoch = H[L.H_REUSE]
            hit = self._located(kb, h, H, epoch)
            if hit is False:
                continue
            if hit is None:
                return None
            _slot, ref, seg, pos, vlen = hit
            if copy:
                v = seg.mm[pos : pos + vlen]
            elif borrow:
                return seg.rbuf[pos : pos + vlen]
            elif not seg.words_writable:
                v = memoryview(seg.mm[pos : pos + vlen])  # cannot pin: hand out a copy
            else:
                if not self._pin(seg, ref >> _OFFSET_BITS):
                    continue
                v = seg.rbuf[pos : pos + vlen]
            if H[L.H_REUSE] == epoch:
                return v
        raise self._kept_changing()

    def _pin(self, seg: Segment, aid: int) -> bool:
        """Mark arena ``aid`` never to be reused (a zero-copy view into it is handed out).

        Returns False when it was already retired: the caller looks the key up again.
        The mark is stored before the id is checked; a writer checks the mark at least
        ``REUSE_GRACE_NS`` after it retired the arena, so one of the two sees the other.
        """
        w = seg.words
        if w[7] == 0:  # A_NOREUSE
            w[7] = L.NOREUSE_VIEW
        return w[6] == aid  # A_ID

    def _kept_changing(self) -> SharedZarrError:
        return SharedZarrError(
            f"table {self.name!r}: a read was retried {_READ_RETRIES} times because writers "
            "kept reusing memory under it; retry, or read under table.writer()"
        )

    def _consistent(self, read: Any) -> Any:
        """Run the lock-free ``read()``; repeat it when a reused arena may have changed under it."""
        H = self._check_open()
        for _attempt in range(_READ_RETRIES):
            epoch = H[L.H_REUSE]
            try:
                out = read()
            except (CorruptTableError, struct.error, TypeError):
                if H[L.H_REUSE] != epoch:
                    continue
                raise
            if H[L.H_REUSE] == epoch:
                return out
        raise self._kept_changing()

    def insert_prepared(self, pk: tuple[bytes, int], value: Any) -> None:
        """:meth:`insert` with a prepared key (see :meth:`prepare_key`); set types only."""
        v = _as_buffer(value)
        if self._bag:
            raise TypeError(f"insert_prepared needs a set table; {self.name!r} is a bag")
        self._begin_write(DEFAULT_TIMEOUT)
        ok = False
        try:
            self._put(pk[0], pk[1], [v], "replace")
            ok = True
        finally:
            self._end_write(ok)

    def insert_filled(self, pk: tuple[bytes, int], nbytes: int, fill: Any) -> None:
        """Insert a value of ``nbytes`` written in place by ``fill(buffer)``; set types only.

        ``fill`` receives a writable memoryview of the new record's value and must
        fill it; the value is published only after ``fill`` returns, so readers never
        see it half-written.  Saves the copy into an intermediate buffer.
        """
        if self._bag:
            raise TypeError(f"insert_filled needs a set table; {self.name!r} is a bag")
        kb, h = pk
        self._begin_write(DEFAULT_TIMEOUT)
        ok = False
        try:
            self._put(kb, h, [_Filler(nbytes, fill)], "replace")
            ok = True
        finally:
            self._end_write(ok)

    def delete_prepared(self, pk: tuple[bytes, int]) -> None:
        """:meth:`delete` with a prepared key (see :meth:`prepare_key`)."""
        with self.writer():
            self._remove(pk[0], pk[1])

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

    def lookup(self, key: Any, *, copy: bool = True) -> list:
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

        def read() -> list | None:
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

        def read() -> list | None:
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
        return vals[0]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.insert(key, value)

    def __delitem__(self, key: Any) -> None:
        if not self.member(key):
            raise NotFoundError(f"key {key!r} is not in table {self.name!r}")
        self.delete(key)

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

    def _record_at(self, ref: int) -> tuple[Segment, int] | None:
        aid, off = ref >> _OFFSET_BITS, ref & _OFFSET_MASK
        seg = self._arenas.get(aid)
        if seg is None:
            try:
                seg = self._map_arena(aid)
            except Exception:
                return None
        return seg, off

    def _key_at(self, seg: Segment, off: int) -> bytes:
        _t, klen, n = _REC_HEAD.unpack_from(seg.mm, off)
        ko = off + 16 + 8 * n
        return seg.mm[ko : ko + klen]

    def _raw_items(self, with_values: bool, copy: bool = True) -> list:
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
        kb = self._key_at(seg, off)
        if not with_values:
            return (kb, None)
        vals = self._values(seg, off, copy, ref >> _OFFSET_BITS)
        return None if vals is None else (kb, vals)

    def keys(self) -> list:
        """All keys (``ordered_set``: sorted; others: any order).  ETS: ``first/next``."""
        keys = [decode_key(kb) for kb, _ in self._raw_items(False)]
        if self.table_type == "ordered_set":
            keys.sort(key=sort_key)
        return keys

    def __iter__(self) -> Iterator:
        """Iterate over the keys (a snapshot; ``ordered_set`` in key order)."""
        return iter(self.keys())

    def items(self, *, copy: bool = True) -> list[tuple[Any, Any]]:
        """All objects as ``(key, value)`` pairs; a bag gives one pair per value.

        ETS: ``ets:tab2list/1``.
        """
        pairs = []
        for kb, vals in self._raw_items(True, copy):
            k = decode_key(kb)
            for v in vals:
                pairs.append((k, v))
        if self.table_type == "ordered_set":
            pairs.sort(key=lambda kv: sort_key(kv[0]))
        return pairs

    # ------------------------------------------------------------------ write path

    @contextlib.contextmanager
    def writer(self, timeout: float | None = DEFAULT_TIMEOUT) -> Iterator[Table]:
        """Hold the table's writer lock across several operations.

        Single operations take the lock by themselves; reads never take it.
        Reentrant within a thread.

        Parameters
        ----------
        timeout : float or None
            Seconds to wait; ``None`` waits forever.

        Raises
        ------
        LockTimeoutError
            When the lock is not acquired in time; names the holder's pid.
        AccessDeniedError
            When this process may not write (protected table, read-only handle).
        """
        self._begin_write(timeout)
        ok = False
        try:
            yield self
            ok = True
        finally:
            self._end_write(ok)

    def _writable_check(self) -> None:
        if self._closed:
            if self._deleted:
                raise self._not_found()
            raise ValueError(f"operation on a closed handle of table {self.name!r}; attach again")
        if self.access != "public" and not self.is_owner:
            raise AccessDeniedError(
                f"table {self.name!r} is {self.access}: only its owner (pid {self.owner_pid}) "
                "may write; create it with access='public' to let every process write"
            )
        if self._ro:
            if self.access == "public" or self.is_owner:
                try:
                    self._remap(readonly=False)
                    return
                except Exception:
                    pass
            raise AccessDeniedError(
                f"this handle of table {self.name!r} is read-only; attach with "
                "readonly=False (and a segment mode that lets this user write) to write"
            )

    def _begin_write(self, timeout: float | None) -> None:
        if self._lock.depth:
            self._lock.acquire(timeout)
            return
        self._writable_check()
        self._lock.acquire(timeout)
        try:
            H = self._H
            if H[L.H_DELETED] or self._hdr.unlinked():
                raise self._not_found()
            H[L.H_HOLDER] = os.getpid()
            if H[L.H_DIRTY]:
                self._recover()
            H[L.H_DIRTY] = os.getpid()
            if self.name not in _OWNED and self.is_owner:
                _register_owned(self.name)
        except BaseException:
            self._lock.release()
            raise

    def _end_write(self, ok: bool) -> None:
        if self._lock.depth == 1:
            H = self._H
            if ok and H is not None and not self._deleted:
                try:  # reclaim once per writer session: a bulk write's old records are
                    self._maybe_reclaim()  # all garbage by now, so whole arenas just go
                except Exception:
                    ok = False  # the write itself is done; the next writer repairs
            if H is not None:
                if ok:
                    H[L.H_DIRTY] = 0  # an exception leaves it set: the next writer repairs
                H[L.H_HOLDER] = 0
        self._lock.release()

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

    def _rebuild_index(self, new_cap: int) -> None:
        """Build index generation gen+1 with ``new_cap`` slots, publish it, drop the old one."""
        H = self._H
        old_gen = self._idx_gen
        arr = np.frombuffer(self._idx, dtype=np.uint64).reshape(-1, 2)
        live = arr[arr[:, 1] > 1].copy()
        del arr
        new = build_slots(live, new_cap)
        new_gen = old_gen + 1
        name = self._seg_name_idx(new_gen)
        _unlink(name)  # a stray from a crashed rebuild
        with map_os_errors(self.name, "index growth"):
            seg = Segment.create(name, L.index_bytes(new_cap), self.mode)
        try:
            L.INDEX_HDR.pack_into(seg.buf, 0, L.INDEX_MAGIC, new_cap, new_gen)
            seg.buf[L.INDEX_HEADER : L.index_bytes(new_cap)] = new.view(np.uint8).reshape(-1)
        finally:
            seg.close()
        _crash_point("grow.built")
        H[L.H_USED_SLOTS] = len(live)
        H[L.H_GEN] = new_gen  # publish
        _crash_point("grow.published")
        _unlink(self._seg_name_idx(old_gen))
        self._load_index()

    def _slot_for_new(self, h: int) -> int:
        idx = self._idx
        mask = self._mask
        i = h & mask
        while idx[i << 1] != 0:
            i = (i + 1) & mask
        return i

    def _write_arena(self, total: int) -> tuple[Segment, int, int]:
        """Return ``(segment, arena id, offset)`` with room for a record of ``total`` bytes."""
        H = self._H
        cur = H[L.H_CUR_ARENA]
        seg = self._wseg
        if cur:
            name = self._seg_name_arena(cur)
            if seg is None or seg.mm is None or seg.name != name:
                # the current arena is mapped once, shared with the read path: a reused
                # arena's pages are then already in this process's page tables
                seg = self._arenas.get(cur)
                if seg is None or seg.mm is None or seg.name != name:
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
        aid = H[L.H_NEXT_ARENA]
        if aid > L.MAX_ARENA_ID:
            raise SharedZarrError(f"table {self.name!r}: arena ids exhausted; copy the table")
        name = self._seg_name_arena(aid)
        _unlink(name)
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
            if seg is None or seg.mm is None:
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
            new = H[L.H_NEXT_ARENA]
            if new > L.MAX_ARENA_ID:
                return None
            H[w] = 0  # out of the pool (a crash from here on: recovery unlinks it)
            H[L.H_REUSE] += 1  # before any byte changes: copying readers in it retry
            _count_reclaim(H)  # readers drop their mapping of the old name
            name = self._seg_name_arena(new)
            _unlink(name)  # a stray from a crash
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
            and seg.mm is not None
            and not seg.readonly
            and _arena_word(seg, L.A_NOREUSE) == 0
            and (L.POOL_SLOTS - len(free) + 1) * _arena_word(seg, L.A_RESERVED)
            <= H[L.H_LIVE_RECORD] // 4
        ):
            _set_arena_word(seg, L.A_ID, 0)  # retired: readers that pin it now look again
            _set_arena_word(seg, L.A_GARBAGE, 0)
            w = free[0]
            H[w + 1] = time.monotonic_ns()
            H[w] = aid
            _crash_point("arena.retired")
            return
        self._unlink_arena(aid)

    def _unlink_arena(self, aid: int) -> None:
        H = self._H
        _count_reclaim(H)
        _unlink(self._seg_name_arena(aid))
        s = self._arenas.pop(aid, None)
        if s is not None:
            if s is self._wseg:
                self._wseg = None
            s.close()

    def _alloc(self, total: int) -> tuple[Segment, int, int]:
        """Room for a record of ``total`` bytes, reserved (fallocated) and mapped: (seg, id, off).

        The caller writes the record at ``off``, then calls :meth:`_commit`.
        """
        self._dedicated = None
        seg, aid, off = self._write_arena(total)
        try:
            reserved = _arena_word(seg, L.A_RESERVED)
            if off + total > reserved:
                seg.open_fd()
                # small records reserve ahead (fewer calls); big ones exactly what they need
                ahead = min(L.RESERVE_STEP, off // 8) if total < L.RESERVE_STEP // 4 else 0
                want = min(seg.size, max((off + total + 4095) & ~4095, reserved + ahead))
                with map_os_errors(self.name, "reserving memory"):
                    seg.reserve(reserved, want - reserved)
                _set_arena_word(seg, L.A_RESERVED, want)
        except BaseException:
            self._release_dedicated()
            raise
        return seg, aid, off

    def _commit(self, seg: Segment, off: int, total: int) -> None:
        """Account a record written at ``off`` (not yet published)."""
        _set_arena_word(seg, L.A_USED, off + total)
        _set_arena_word(seg, L.A_LIVE, _arena_word(seg, L.A_LIVE) + total)
        self._release_dedicated()

    def _release_dedicated(self) -> None:
        if self._dedicated is not None:
            self._dedicated.close()
            self._dedicated = None

    def _append(self, kb: bytes, values: list[memoryview]) -> tuple[int, int]:
        """Append a record; return ``(reference, record length)``.  Not yet published."""
        total, _offs = L.record_layout(len(kb), [v.nbytes for v in values])
        seg, aid, off = self._alloc(total)
        try:
            L.pack_record(seg.buf, off, kb, values)
            _crash_point("append.written")
        except BaseException:
            self._release_dedicated()
            raise
        self._commit(seg, off, total)
        return L.make_ref(aid, off), total

    def _append_raw(self, rec: memoryview) -> int:
        total = rec.nbytes
        seg, aid, off = self._alloc(total)
        try:
            seg.buf[off : off + total] = rec
        except BaseException:
            self._release_dedicated()
            raise
        self._commit(seg, off, total)
        return L.make_ref(aid, off)

    def _garbage(self, ref: int, total: int) -> None:
        """Account the record at ``ref`` (``total`` bytes) as garbage."""
        H = self._H
        H[L.H_GARBAGE] += total
        H[L.H_LIVE_RECORD] -= total
        r = self._record_at(ref)
        if r is None or r[0].readonly:
            return
        seg = r[0]
        live = _arena_word(seg, L.A_LIVE) - total
        garbage = _arena_word(seg, L.A_GARBAGE) + total
        _set_arena_word(seg, L.A_LIVE, live)
        _set_arena_word(seg, L.A_GARBAGE, garbage)
        aid = ref >> _OFFSET_BITS
        if live <= 0 and aid != H[L.H_CUR_ARENA]:
            # nothing left in it: reuse its pages (or free a big value's own segment)
            H[L.H_GARBAGE] -= min(garbage, H[L.H_GARBAGE])
            self._retire(aid)

    def _record_info(self, seg: Segment, off: int) -> tuple[int, list[int]]:
        total, klen, n = _REC_HEAD.unpack_from(seg.mm, off)
        lens = list(struct.unpack_from(f"<{n}Q", seg.mm, off + 16))
        return total, lens

    def _put(self, kb: bytes, h: int, values: list[memoryview], mode: str) -> bool:
        """The one write primitive.  Call with the writer lock held.

        ``mode``: "replace" (set insert, bag rewrite), "new" (insert_new).
        Returns False when ``mode == "new"`` and the key exists.
        """
        slot, ref, seg, off = self._find(kb, h)
        if slot >= 0 and mode == "new":
            return False
        old = None
        if slot >= 0:
            old = self._record_info(seg, off)
        else:
            if not values:
                return True
            self._grow_if_needed()
        new_ref, total = self._append(kb, values)
        self._publish(h, [v.nbytes for v in values], new_ref, total, slot, ref, old)
        self._maybe_reclaim(RECLAIM_RATIO_BUSY)
        return True

    def _publish(
        self,
        h: int,
        lens: list[int],
        new_ref: int,
        total: int,
        slot: int,
        ref: int,
        old: tuple[int, list[int]] | None,
    ) -> None:
        """Make record ``new_ref`` (``total`` bytes, values of ``lens``) the key's object.

        ``slot``/``ref``/``old``: the key's slot, reference and old record info when it
        exists (else ``slot < 0``).  Lock held.
        """
        H = self._H
        vbytes = sum(lens)
        if slot >= 0:
            old_total, old_lens = old
            if lens:
                self._idx[(slot << 1) + 1] = new_ref  # publish: one aligned 8-byte store
            else:
                self._idx[(slot << 1) + 1] = L.TOMBSTONE
                H[L.H_KEYS] -= 1
            _crash_point("put.stored")  # a crash here leaves the count to recovery
            H[L.H_WRITES] += 1  # right after the slot: cached readers look at it again
            _crash_point("put.published")
            H[L.H_OBJECTS] += len(lens) - len(old_lens)
            H[L.H_LIVE_VALUE] += vbytes - sum(old_lens)
            H[L.H_LIVE_RECORD] += total
            self._garbage(ref, old_total)
        else:
            i = self._slot_for_new(h)
            self._idx[i << 1] = h
            self._idx[(i << 1) + 1] = new_ref  # publish
            _crash_point("put.stored")
            H[L.H_WRITES] += 1
            _crash_point("put.published")
            H[L.H_USED_SLOTS] += 1
            H[L.H_KEYS] += 1
            H[L.H_OBJECTS] += len(lens)
            H[L.H_LIVE_VALUE] += vbytes
            H[L.H_LIVE_RECORD] += total

    def _append_unfilled(self, kb: bytes, nbytes: int) -> tuple[int, int, memoryview]:
        """Append a one-value record whose value is not written yet (lock held).

        Returns ``(reference, record length, writable view of the value)``.  The record
        is accounted live but unpublished: :meth:`_publish` it once the value is written,
        or :meth:`_abandon` it.  (The view keeps a big value's own segment mapped.)
        """
        views: list[memoryview] = []
        new_ref, total = self._append(kb, [_Filler(nbytes, views.append)])
        return new_ref, total, views[0]

    def _abandon(self, new_ref: int, total: int) -> None:
        """Account an appended, never published record as garbage (lock held)."""
        self._H[L.H_LIVE_RECORD] += total
        self._garbage(new_ref, total)

    def insert_filled_many(
        self, items: Iterable[tuple], submit: Any = None, *, expected_bytes: int = 0
    ) -> int:
        """Insert many values, each written in place by its ``fill(buffer)``; set types only.

        One writer session for all.  Each value is published only after its ``fill``
        returned, in order, so readers never see one half-written.  If a fill raises, the
        values before it are published and it and the later ones are not; the exception
        propagates.

        Parameters
        ----------
        items : iterable of (prepared key, nbytes, fill)
            Prepared keys come from :meth:`prepare_key`.
        submit : callable, optional
            ``submit(fill, buffer) -> concurrent.futures.Future``.  Given, two fills in
            three run there (another thread: numpy releases the GIL while it copies) while
            this thread prepares the records and runs the third.
        expected_bytes : int
            About how many bytes ``items`` hold, when known.  New arenas are then sized for
            a table of at least this much data from the first record on (instead of growing
            from the smallest size), so a table written in one go has arenas of one size,
            which the next rewrite reuses instead of allocating fresh memory.

        Returns
        -------
        int
            The number of values inserted.
        """
        if self._bag:
            raise TypeError(f"insert_filled_many needs a set table; {self.name!r} is a bag")
        pending: collections.deque = collections.deque()
        done = 0
        head_failed = False
        with self.writer():
            self._size_hint = max(int(expected_bytes), 0)
            try:
                for k, ((kb, h), nbytes, fill) in enumerate(items):
                    self._grow_if_needed(len(pending) + 1)
                    new_ref, total, buf = self._append_unfilled(kb, nbytes)
                    if submit is not None and k % 3 != 2:
                        pending.append((submit(fill, buf), kb, h, nbytes, new_ref, total))
                    else:
                        try:
                            fill(buf)
                        except BaseException:
                            self._abandon(new_ref, total)
                            raise
                        pending.append((None, kb, h, nbytes, new_ref, total))
                    while pending and (
                        len(pending) > 4 or pending[0][0] is None or pending[0][0].done()
                    ):
                        head_failed = True  # a fill that failed is the oldest pending one
                        self._finish_filled(pending.popleft())
                        head_failed = False
                        done += 1
                while pending:
                    head_failed = True
                    self._finish_filled(pending.popleft())
                    head_failed = False
                    done += 1
            except BaseException:
                # publish, in order, the values filled before the first failure; the failed
                # one and those after it become garbage
                failed = head_failed
                while pending:
                    p = pending.popleft()
                    if p[0] is not None:
                        futures_wait([p[0]])
                    if failed:
                        self._abandon(p[4], p[5])
                        continue
                    try:
                        self._finish_filled(p)  # abandons its record itself if it failed
                        done += 1
                    except BaseException:
                        failed = True
                raise
            finally:
                self._size_hint = 0
        return done

    def _finish_filled(self, p: tuple) -> None:
        fut, kb, h, nbytes, new_ref, total = p
        if fut is not None:
            try:
                fut.result()
            except BaseException:
                self._abandon(new_ref, total)
                raise
        slot, ref, seg, off = self._find(kb, h)
        old = self._record_info(seg, off) if slot >= 0 else None
        self._publish(h, [nbytes], new_ref, total, slot, ref, old)

    def _remove(self, kb: bytes, h: int) -> list | None:
        """Delete a key (lock held); return its values (copies) or None when absent."""
        H = self._H
        slot, ref, seg, off = self._find(kb, h)
        if slot < 0:
            return None
        vals = self._values(seg, off, True)
        total, lens = self._record_info(seg, off)
        self._idx[(slot << 1) + 1] = L.TOMBSTONE  # publish the deletion
        H[L.H_WRITES] += 1  # right after the slot: cached readers look at it again
        _crash_point("delete.published")
        H[L.H_KEYS] -= 1
        H[L.H_OBJECTS] -= len(lens)
        H[L.H_LIVE_VALUE] -= sum(lens)
        self._garbage(ref, total)
        self._maybe_reclaim(RECLAIM_RATIO_BUSY)
        return vals

    def insert(self, key: Any, value: Any) -> None:
        """Insert an object.  ETS: ``ets:insert/2``.

        ``set``/``ordered_set``: replaces the value of ``key``.  ``bag``: adds
        the value unless the same value is already stored under ``key``.
        ``duplicate_bag``: always adds.

        Parameters
        ----------
        key : key
            str, int, float, bool, None, bytes, or tuples/lists of these.
        value : bytes-like
            bytes, bytearray, memoryview or C-contiguous numpy array (0 bytes to
            hundreds of MiB).
        """
        kb = encode_key(key)
        h = key_hash(kb)
        v = _as_buffer(value)
        self._begin_write(DEFAULT_TIMEOUT)
        ok = False
        try:
            if not self._bag:
                self._put(kb, h, [v], "replace")
            else:
                old = self._existing(kb, h)
                if self._dup or not any(o == v for o in old):
                    self._put(kb, h, old + [v], "replace")
            ok = True
        finally:
            self._end_write(ok)

    def _existing(self, kb: bytes, h: int) -> list[memoryview]:
        slot, _ref, seg, off = self._find(kb, h)
        if slot < 0:
            return []
        return self._values(seg, off, False, borrow=True) or []

    def insert_new(self, key: Any, value: Any) -> bool:
        """Insert only if ``key`` is absent; return whether it was inserted.

        ETS: ``ets:insert_new/2``.  Atomic: the check and the insert happen
        under the writer lock.
        """
        kb = encode_key(key)
        h = key_hash(kb)
        v = _as_buffer(value)
        with self.writer():
            return self._put(kb, h, [v], "new")

    def delete(self, key: Any) -> None:
        """Delete every object with ``key``; no error when absent.  ETS: ``ets:delete/2``."""
        kb = encode_key(key)
        h = key_hash(kb)
        with self.writer():
            self._remove(kb, h)

    def delete_object(self, key: Any, value: Any) -> None:
        """Delete the exact object ``(key, value)``.  ETS: ``ets:delete_object/2``.

        In a ``duplicate_bag`` every instance of the object is deleted.
        """
        kb = encode_key(key)
        h = key_hash(kb)
        v = _as_buffer(value)
        with self.writer():
            old = self._existing(kb, h)
            keep = [o for o in old if o != v]
            if len(keep) == len(old):
                return
            if keep:
                self._put(kb, h, keep, "replace")
            else:
                self._remove(kb, h)

    def take(self, key: Any) -> list[bytes]:
        """Return and delete the values of ``key`` (empty when absent).  ETS: ``ets:take/2``."""
        kb = encode_key(key)
        h = key_hash(kb)
        with self.writer():
            vals = self._remove(kb, h)
        return vals or []

    def clear(self) -> None:
        """Delete every object, keeping the table.  ETS: ``ets:delete_all_objects/1``.

        Zero-copy views that readers hold stay valid (the data segments are
        unlinked, not overwritten).
        """
        with self.writer():
            H = self._H
            old_gen = self._idx_gen if self._idx_gen >= 0 else H[L.H_GEN]
            new_gen = old_gen + 1
            name = self._seg_name_idx(new_gen)
            _unlink(name)
            with map_os_errors(self.name, "index"):
                seg = Segment.create(name, L.index_bytes(L.MIN_CAPACITY), self.mode)
            L.INDEX_HDR.pack_into(seg.buf, 0, L.INDEX_MAGIC, L.MIN_CAPACITY, new_gen)
            seg.close()
            H[L.H_GEN] = new_gen  # publish the empty index
            for f in (L.H_OBJECTS, L.H_KEYS, L.H_USED_SLOTS, L.H_LIVE_VALUE):
                H[f] = 0
            H[L.H_LIVE_RECORD] = 0
            H[L.H_GARBAGE] = 0
            H[L.H_CUR_ARENA] = 0
            for w in self._pool_words():
                H[w] = 0
            H[L.H_WRITES] += 1
            self._set_wseg(None)
            for n in table_segments(self.name):
                if n.endswith(".hdr") or n == name:
                    continue
                _unlink(n)
            _count_reclaim(H)
            self._forget_reclaimed()
            self._load_index()

    # ------------------------------------------------------------------ reclamation

    def _maybe_reclaim(self, ratio: float = RECLAIM_RATIO) -> None:
        H = self._H
        garbage = H[L.H_GARBAGE]
        if garbage <= RECLAIM_MIN or garbage <= H[L.H_LIVE_RECORD] * ratio:
            return
        self._reclaim()

    def reclaim(self) -> int:
        """Compact now and give memory back: copy live records out of wasteful data segments,
        unlink them, and free the pool of retired segments kept for reuse.

        Compaction also runs by itself when garbage exceeds 40% of the live data (the pool
        is then kept: it makes the next rewrite a plain copy).  Returns the bytes of
        garbage freed.
        """
        with self.writer():
            freed = self._reclaim()
            H = self._H
            for w in self._pool_words():
                aid = H[w]
                if aid:
                    H[w] = 0
                    self._unlink_arena(aid)
        return freed

    def _reclaim(self) -> int:
        freed = 0
        with self.writer():
            H = self._H
            ids = self._arena_ids()
            for _ in range(64):
                garbage = H[L.H_GARBAGE]
                if garbage <= RECLAIM_MIN // 2 or garbage <= H[L.H_LIVE_RECORD] * RECLAIM_RATIO / 2:
                    break
                victim = self._most_garbage(ids)
                if victim is None:
                    break
                freed += self._compact(victim)
                ids.remove(victim)
        return freed

    def _arena_ids(self) -> list[int]:
        base = f"{L.PREFIX}{self.name}.a"
        out = []
        for n in list_names(base):
            rest = n[len(base) :]
            if rest.isdigit():
                out.append(int(rest))
        return sorted(out)

    def _most_garbage(self, ids: list[int]) -> int | None:
        """The arena with the largest share of garbage (frees most per byte copied)."""
        best, best_gain = None, 0.0
        for aid in ids:
            r = self._arenas.get(aid)
            if r is None:
                try:
                    r = self._map_arena(aid)
                except Exception:
                    continue
            if not _arena_word(r, L.A_ID):
                continue  # retired, waiting in the pool: nothing to compact
            g = _arena_word(r, L.A_GARBAGE)
            gain = g / (g + _arena_word(r, L.A_LIVE) + 1)
            if gain > best_gain:
                best, best_gain = aid, gain
        return best

    def _compact(self, aid: int) -> int:
        """Move the live records of arena ``aid`` forward, then unlink it."""
        H = self._H
        if H[L.H_CUR_ARENA] == aid:
            H[L.H_CUR_ARENA] = 0  # seal it: new records go elsewhere
            self._set_wseg(None)
        seg = self._arenas.get(aid) or self._map_arena(aid)
        used = _arena_word(seg, L.A_USED)
        garbage = _arena_word(seg, L.A_GARBAGE)
        off = L.ARENA_HEADER if _arena_word(seg, L.A_LIVE) > 0 else used  # all dead: no walk
        mm = seg.mm
        while off < used:
            total, klen, n = _REC_HEAD.unpack_from(mm, off)
            if total < L.ALIGN or off + total > used:
                break
            ko = off + 16 + 8 * n
            kb = mm[ko : ko + klen]
            slot, ref, _s, _o = self._find(kb, key_hash(kb))
            if slot >= 0 and ref == L.make_ref(aid, off):
                new_ref = self._append_raw(seg.buf[off : off + total])
                self._idx[(slot << 1) + 1] = new_ref  # republish
                _crash_point("reclaim.moved")
            off += total
        H[L.H_GARBAGE] -= min(garbage, H[L.H_GARBAGE])
        _set_arena_word(seg, L.A_LIVE, 0)
        self._retire(aid)
        return garbage

    # ------------------------------------------------------------------ recovery

    def _recover(self) -> None:
        """Repair after a writer died mid-operation (lock held).

        Recomputes the counters from the published index and unlinks the
        segments nothing references.  Every published value was complete
        before it was published, so no value needs repair.
        """
        H = self._H
        gen = H[L.H_GEN]
        base_idx = f"{L.PREFIX}{self.name}.idx."
        for n in list_names(base_idx):
            rest = n[len(base_idx) :]
            if rest.isdigit() and int(rest) != gen:
                _unlink(n)
        self._load_index()
        arr = np.frombuffer(self._idx, dtype=np.uint64).reshape(-1, 2)
        used_slots = int(np.count_nonzero(arr[:, 0]))
        refs = arr[arr[:, 1] > 1, 1].tolist()
        del arr
        keys = objects = live_value = live_record = 0
        per_arena: dict[int, int] = {}
        for ref in refs:
            r = self._record_at(ref)
            if r is None:
                continue
            seg, off = r
            total, lens = self._record_info(seg, off)
            keys += 1
            objects += len(lens)
            live_value += sum(lens)
            live_record += total
            aid = ref >> _OFFSET_BITS
            per_arena[aid] = per_arena.get(aid, 0) + total
        cur = H[L.H_CUR_ARENA]
        garbage = 0
        max_id = 0
        for aid in self._arena_ids():
            max_id = max(max_id, aid)
            if aid not in per_arena and aid != cur:
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
        H[L.H_USED_SLOTS] = used_slots
        H[L.H_KEYS] = keys
        H[L.H_OBJECTS] = objects
        H[L.H_LIVE_VALUE] = live_value
        H[L.H_LIVE_RECORD] = live_record
        H[L.H_GARBAGE] = garbage
        for w in self._pool_words():
            H[w] = 0  # pooled arenas hold no live record: unlinked above
        # also drops every reader's cached views, which trust an unchanged write counter: a
        # writer may have died between a slot's store and the counter's bump
        _count_reclaim(H)
        self._set_wseg(None)
        H[L.H_DIRTY] = 0

    # ------------------------------------------------------------------ ownership

    def give_away(self, pid: int) -> None:
        """Make process ``pid`` the owner.  ETS: ``ets:give_away/3``.

        Raises
        ------
        AccessDeniedError
            When this process is not the owner.
        ValueError
            When ``pid`` is not a running process.
        """
        ident = _heir_ident(pid)
        if ident is None:
            raise ValueError("give_away needs the pid of a running process")
        with self._owner_write("give_away"):
            H = self._H
            H[L.H_OWNER_START] = ident[1]
            H[L.H_OWNER_PID] = ident[0]
        _OWNED.pop(self.name, None)

    def set_heir(self, pid: int | None) -> None:
        """Set (or with None clear) the heir.  ETS: ``ets:setopts(T, {heir, Pid, Data})``.

        Raises
        ------
        AccessDeniedError
            When this process is not the owner.
        """
        ident = _heir_ident(pid)
        with self._owner_write("set_heir"):
            H = self._H
            H[L.H_HEIR_START] = ident[1] if ident else 0
            H[L.H_HEIR_PID] = ident[0] if ident else 0

    @contextlib.contextmanager
    def _owner_write(self, what: str) -> Iterator[None]:
        if not self.is_owner:
            raise AccessDeniedError(
                f"only the owner (pid {self.owner_pid}) of table {self.name!r} may call {what}"
            )
        if self._ro:
            self._remap(readonly=False)
        with self.writer():
            yield

    def delete_table(self) -> None:
        """Delete the table for every process.  ETS: ``ets:delete/1``.

        Other handles get :class:`TableNotFoundError` on their next call;
        zero-copy views they hold stay readable.

        Raises
        ------
        AccessDeniedError
            When the table is protected or private and this process is not the owner.
        """
        self._check_alive()
        if self.access != "public" and not self.is_owner:
            raise AccessDeniedError(
                f"table {self.name!r} is {self.access}: only its owner (pid {self.owner_pid}) "
                "may delete it (`sharedzarr rm` can, as an administrator)"
            )
        name = self.name
        self.close()
        self._deleted = True
        _OWNED.pop(name, None)
        _destroy(name)

    # ------------------------------------------------------------------ info

    def info(self) -> dict[str, Any]:
        """Table information.  ETS: ``ets:info/1``.

        Returns
        -------
        dict
            name, type, access, size (objects), keys, memory (bytes of shared
            memory), owner, heir, named_table, persistent, segments, created,
            write_count, live_bytes, garbage_bytes, index_capacity, index_generation.
        """
        H = self._check_open()
        if H[L.H_GEN] != self._idx_gen:
            self._load_index()
        segs = table_segments(self.name)
        created = struct.unpack_from("<d", self._hdr.buf, 56)[0]
        return {
            "name": self.name,
            "type": self.table_type,
            "access": self.access,
            "size": int(H[L.H_OBJECTS]),
            "keys": int(H[L.H_KEYS]),
            "memory": sum(size_on_disk(n) for n in segs),
            "owner": int(H[L.H_OWNER_PID]),
            "owner_alive": _proc.alive(H[L.H_OWNER_PID], H[L.H_OWNER_START]),
            "heir": int(H[L.H_HEIR_PID]) or None,
            "named_table": self.named_table,
            "persistent": self.persistent,
            "segments": len(segs),
            "created": created,
            "write_count": int(H[L.H_WRITES]),
            "live_bytes": int(H[L.H_LIVE_VALUE]),
            "record_bytes": int(H[L.H_LIVE_RECORD]),
            "garbage_bytes": int(H[L.H_GARBAGE]),
            "index_capacity": self._mask + 1,
            "index_generation": int(H[L.H_GEN]),
            "mode": self.mode,
        }


# --------------------------------------------------------------------------- helpers


class _Filler:
    """A value that writes itself into the record (see :meth:`Table.insert_filled`)."""

    __slots__ = ("fill", "nbytes")

    def __init__(self, nbytes: int, fill: Any) -> None:
        self.nbytes = nbytes
        self.fill = fill


def _arena_word(seg: Segment, i: int) -> int:
    return seg.words[i]  # one aligned 8-byte load


def _set_arena_word(seg: Segment, i: int, v: int) -> None:
    seg.words[i] = v  # one aligned 8-byte store


def _heir_ident(pid: int | None) -> tuple[int, int] | None:
    if pid is None or pid == "none":
        return None
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError(f"heir/owner must be a process id (a positive int) or None, got {pid!r}")
    ident = _proc.ident_of(pid)
    if ident is None:
        raise ValueError(f"process {pid} is not running; the heir must be a live process")
    return ident


def _wait_for_magic(name: str, hdr: Segment, timeout: float = 1.0) -> None:
    """A table being created has no magic yet: wait briefly for its creator."""
    if hdr.size < L.HEADER_SIZE:
        return
    deadline = time.monotonic() + timeout
    while bytes(hdr.buf[:8]) == b"\0" * 8 and time.monotonic() < deadline:
        time.sleep(0.005)


def probe(name: str, *, reap: bool = True) -> str:
    """Classify table ``name`` and apply the owner-death rules.

    Returns ``"missing"`` (no header), ``"alive"`` (usable), ``"orphan"`` (owner
    and heir dead, persistent: kept), ``"reaped"`` (it was orphaned and has just
    been deleted; only when ``reap``), ``"deleted"`` (marked deleted, segments
    left behind by a crashed deleter), ``"corrupt"`` (not a table of ours) or
    ``"denied"`` (the segment mode hides it from this user).
    A live heir of a dead owner becomes the owner here.  A process that may only
    read the header (mode) never deletes: it reports an orphan as ``"orphan"``.
    """
    hdr_name = L.segment_names(name)[0]
    try:
        hdr = Segment.attach(hdr_name, keep_fd=False)
    except Exception:
        try:
            with map_os_errors(name, "header"):
                hdr = Segment.attach(hdr_name, readonly=True, keep_fd=False)
        except AccessDeniedError:
            return "denied"
        except Exception:
            return "missing" if not _seg_exists(hdr_name) else "corrupt"
    try:
        if hdr.size < L.HEADER_SIZE:
            return "corrupt"
        _wait_for_magic(name, hdr)
        if bytes(hdr.buf[:8]) != L.MAGIC:
            return "corrupt"
        H = hdr.buf.cast("Q")
        try:
            if H[L.H_DELETED]:
                state = "deleted"
            else:
                who = _owner_state(H)
                persistent = bool(hdr.buf[19])
                if who == "alive":
                    state = "alive"
                elif who == "heir" and not hdr.readonly:
                    _reap_if_orphaned(name, H, persistent)  # the heir takes over
                    state = "alive"
                elif persistent or who == "heir":
                    state = "alive" if who == "heir" else "orphan"
                else:
                    state = "reaped" if reap and not hdr.readonly else "orphan"
        finally:
            H.release()
    finally:
        hdr.close()
    if state in ("reaped", "deleted") and reap and not hdr.readonly:
        _destroy(name)
    return state


def _try_reap(name: str) -> bool:
    """For create(): if table ``name`` is orphaned or half-deleted, delete it; True if gone."""
    return probe(name) in ("reaped", "deleted", "missing")


# --------------------------------------------------------------------------- crash injection

_CRASH_AT: str | None = os.environ.get("SHAREDZARR_CRASH_AT") or None
_CRASH_AFTER = int(os.environ.get("SHAREDZARR_CRASH_AFTER", "0") or 0)
_crash_count = 0


def _crash_point(where: str) -> None:
    """Test hook: SIGKILL this process at the N-th pass of a named point.

    Enabled only by ``SHAREDZARR_CRASH_AT`` (a point name or ``*``) and
    ``SHAREDZARR_CRASH_AFTER`` (N) in the environment; a no-op otherwise.
    """
    global _crash_count
    if _CRASH_AT is None:
        return
    if _CRASH_AT != "*" and _CRASH_AT != where:
        return
    _crash_count += 1
    if _crash_count > _CRASH_AFTER:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
