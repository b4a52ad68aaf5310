"""The ``Table`` facade: lifecycle (create, attach, close), ownership calls, info.

Everything else a ``Table`` does comes from the engine modules it is built from
(see the package docstring of :mod:`sharedzarr._table`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .. import _layout as L
from .. import _proc
from .._faults import crash_point as _crash_point
from .._platform import check_platform
from .._segment import changed_before, list_names, map_os_errors, size_on_disk
from .._segment import exists as seg_exists
from .._segment import unlink as _unlink
from ..errors import AccessDeniedError, SharedZarrError, TableExistsError, TableNotFoundError
from ._arenas import init_arena_ids
from ._bulk import BulkMixin
from ._catalog import _destroy, _wait_for_magic, list_tables, table_segments
from ._header import Segment, init_created, publish_header, validate_name
from ._index import create_index_segment, free_index_name, init_generation
from ._ownership import (
    _heir_ident,
    _owner_state,
    _reap_if_orphaned,
    _register_owned,
    _try_reap,
    forget_owned,
    init_owner,
    probe,
    register_attached,
    register_handle,
)
from ._ownership import (
    set_heir as _store_heir,
)
from ._ownership import (
    set_owner as _store_owner,
)
from ._reserve import Reservation, drop_lease, keep_lease, lease_for

__all__ = ["Table", "collect_garbage"]


class Table(BulkMixin):
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

    def __init__(self, name: str, hdr: Segment, readonly: bool) -> None:
        super().__init__(name, hdr, readonly)
        register_handle(self)

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
        check_platform()
        for attempt in range(2):
            try:
                with map_os_errors(name, "header"):
                    hdr = Segment.create(hdr_name, L.HEADER_SIZE, mode, keep_fd=True)
                hdr.lock_creation()  # until the magic: a prober can tell we are alive
                _crash_point("create.header")
                break
            except TableExistsError:
                if attempt == 0 and _try_reap(name):
                    continue
                holder = _deleted_but_held(hdr_name)
                if holder is not None:
                    err = TableExistsError(
                        f"table {name!r} was deleted, but a writer (pid {holder}) is still "
                        "inside an operation on it; the name is free again once that writer "
                        "finishes or exits"
                    )
                    err.writer_pid = holder
                    raise err from None
                raise TableExistsError(
                    f"table {name!r} already exists; attach with "
                    f"sharedzarr.Table.attach({name!r}), pass overwrite=True to "
                    f"sharedzarr.create, or delete it (`sharedzarr rm {name}`)"
                ) from None
        try:
            # we hold the name: anything else named like our segments is a stray
            uid = hdr.owner_uid()
            for n in table_segments(name, uid=uid):  # (another user's files stay)
                if n != hdr_name:
                    _unlink(n)
            gen, idx_name = free_index_name(name, uid)
            create_index_segment(name, idx_name, L.MIN_CAPACITY, gen, mode)
            me = _proc.current()
            buf = hdr.buf
            H = buf.cast("Q")
            init_owner(H, me, heir_ident)
            init_created(buf, time.time())
            init_generation(H, gen)
            init_arena_ids(H)
            H.release()
            publish_header(
                buf,
                L.TABLE_TYPES.index(table_type),
                L.ACCESS_LEVELS.index(access),
                named_table,
                persistent,
                mode,
            )  # last: its magic; attachers wait for it
            hdr.unlock_creation()
        except BaseException:
            with contextlib.suppress(Exception):
                _destroy(name, hdr=hdr)  # ours: we hold its creation lock
            hdr.close()
            raise
        _register_owned(name, hdr)
        return cls(name, hdr, readonly=False)

    @classmethod
    def attach(
        cls, name: str, *, readonly: bool = False, trusted_uid: int | str | None = None
    ) -> Table:
        """Attach to an existing table by name, from any process.

        Parameters
        ----------
        name : str
            The table name.
        readonly : bool
            Map the segments read-only; writes through this handle raise
            :class:`AccessDeniedError`.
        trusted_uid : int or "any", optional
            A table that another user created is attached only when its user id is named
            here (or ``"any"``, for inspection tools): names are not bound to users, so
            another user could have created ``prices`` first, with data of its choosing.

        Returns
        -------
        Table

        Raises
        ------
        TableNotFoundError
            When no such table exists (or its owner died and it was deleted).
        AccessDeniedError
            For a private table of another process, a segment mode that denies this
            user, or a table of another user not named by ``trusted_uid``.
        CorruptTableError
            When the segment is not a table of this layout version.
        """
        validate_name(name)
        check_platform()
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
        # a table being created: its header's name appears a moment before its size is set
        # (a header of another nonzero size is no table of this version: no wait for it);
        # a creator may also replace an unsized header (unlink, create again): while the
        # wait lasts, a name gone for a moment is waited for too
        deadline = time.monotonic() + 1.0
        while hdr.size == 0 and time.monotonic() < deadline:
            hdr.close()
            while True:
                time.sleep(0.002)
                try:
                    with map_os_errors(name, "header"):
                        hdr = Segment.attach(hdr_name, readonly=readonly, keep_fd=True)
                    break
                except TableNotFoundError:
                    if time.monotonic() >= deadline:
                        raise
        asked = readonly
        try:
            _check_trusted(name, hdr.owner_uid(), trusted_uid)
            _wait_for_magic(name, hdr)
            t = cls(name, hdr, readonly=readonly)
            t._asked_ro = asked
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
                _register_owned(name, hdr)
            else:
                register_attached(name)
                if t.access == "protected" and not t._ro:
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

    def _reap_check(self) -> bool:
        H = self._H
        if _proc.alive(H[L.H_OWNER_PID], H[L.H_OWNER_START]):
            return False
        return _reap_if_orphaned(self.name, self._hdr, self.persistent)

    def take_lease(self, nbytes: int) -> Reservation | None:
        """The record this handle reserved ahead for its next value of ``nbytes``, to be
        filled without the writer lock and published by :meth:`insert_if_unchanged` or
        ``Reservation.publish``; None if there is none (see "Leases" in
        :class:`._reserve.Reservation`)."""
        return lease_for(self, nbytes)

    def keep_lease(self, room: Reservation) -> None:
        """A write that took :meth:`take_lease`'s room failed before publishing it: keep it
        for the next write (or give it back if this handle holds another)."""
        keep_lease(self, room)

    def close(self) -> None:
        """Release this process's mappings; the table itself is untouched. Idempotent."""
        if self._closed:
            return
        drop_lease(self)  # (while the lock can still be taken)
        self._closed = True
        self._drop_maps()
        # drop every reference to a mapping now: a handle can live on in a reference cycle
        # until the garbage collector runs, and must not keep segments mapped meanwhile
        self._imap = (memoryview(bytes(16)).cast("Q"), 0)
        self._dedicated = None
        log, self._undo_map = self._undo_map, None
        if log is not None:
            log.release()
        if self._H is not None:
            with contextlib.suppress(BufferError):
                self._H.release()
            self._H = None  # type: ignore[assignment]
        if self._hdr is not None:
            self._hdr.close()  # closing an inherited copy of the fd does not touch the parent
            self._hdr = None  # type: ignore[assignment]
        self._lock.close()
        self._drop_hints()

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (Table.attach, (self.name,))

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self)} objects"
        return f"<sharedzarr.Table {self.name!r} {self.table_type} {self.access}, {state}>"

    def _after_fork(self) -> None:
        # the lock closes the child's copy of its description (sharedzarr._lock)
        self._lock.reset_after_fork()
        self._idx_swap = threading.Lock()  # a parent's thread may have held it at the fork
        self._wseg = None
        self._forget_rooms()  # the parent's to reuse, not this child's
        self._undo = None  # (a session of a parent's thread, which the child is not in)

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
            _store_owner(self._H, ident)
        forget_owned(self.name)
        register_attached(self.name)  # given to this very process: still ours at exit

    def set_heir(self, pid: int | None) -> None:
        """Set (or with None clear) the heir.  ETS: ``ets:setopts(T, {heir, Pid, Data})``.

        Raises
        ------
        AccessDeniedError
            When this process is not the owner.
        """
        ident = _heir_ident(pid)
        with self._owner_write("set_heir"):
            _store_heir(self._H, ident)

    def persist(self) -> None:
        """Keep the table after its owner exits, until it is deleted, as ``persistent=True``
        at creation does.  A producer that fills a table before it is worth keeping (an
        import) calls it last, so a producer killed half-way leaves an orphan, not a
        persistent partial table.

        Raises
        ------
        AccessDeniedError
            When this process is not the owner.
        """
        with self._owner_write("persist"):
            self._store_persistent()

    @contextlib.contextmanager
    def _owner_write(self, what: str) -> Iterator[None]:
        if not self.is_owner:
            raise AccessDeniedError(
                f"only the owner (pid {self.owner_pid}) of table {self.name!r} may call {what}"
            )
        if self._asked_ro:
            raise self._read_only_handle()
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
            When the table is protected or private and this process is not the owner, or
            this handle was opened read-only (``readonly=True``, an array's ``mode='r'``).
        """
        self._check_alive()
        if self._asked_ro:  # (as for writes: a read-only handle changes nothing)
            raise AccessDeniedError(
                f"this handle of table {self.name!r} was opened read-only (readonly=True, or "
                "mode='r'), so it may not delete the table: delete it through a read-write "
                f"handle, or with sharedzarr.storage.shm.delete_table({self.name!r}) "
                f"(`sharedzarr rm {self.name}`)"
            )
        if self.access != "public" and not self.is_owner:
            raise AccessDeniedError(
                f"table {self.name!r} is {self.access}: only its owner (pid {self.owner_pid}) "
                "may delete it (`sharedzarr rm` can, as an administrator)"
            )
        if self._lock.depth:
            raise RuntimeError(
                f"delete_table() inside a writer session of table {self.name!r}: leave "
                "`with table.writer():` first"
            )
        name, hdr = self.name, self._hdr
        if hdr.readonly:  # mapped read-only (mode, access or asked): may this user write it?
            with map_os_errors(name, "header"):
                hdr = Segment.attach(hdr.name, keep_fd=True)
            if not hdr.same_file(self._hdr):  # deleted, and the name holds another table
                hdr.close()
                self.close()
                self._deleted = True
                return
        else:
            self._hdr = None  # type: ignore[assignment]  # kept open: the identity to delete
        try:
            self.close()
            self._deleted = True
            forget_owned(name)
            _destroy(name, hdr=hdr)
        finally:
            hdr.close()

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
        segs = table_segments(self.name, uid=self._uid)
        created = struct.unpack_from("<d", self._hdr.buf, 56)[0]
        return {
            "name": self.name,
            "type": self.table_type,
            "access": self.access,
            "size": int(H[L.H_OBJECTS]),
            "keys": int(H[L.H_KEYS]),
            "memory": sum(size_on_disk(n) for n in segs),
            "owner": int(H[L.H_OWNER_PID]),
            "owner_alive": _owner_state(H, self._hdr.fd) == "alive",
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


def _deleted_but_held(hdr_name: str) -> int | None:
    """The lock holder's pid when the header at ``hdr_name`` is marked deleted (its deleter
    found a live writer inside; see ``_catalog._destroy``), else None."""
    try:
        seg = Segment.attach(hdr_name, readonly=True)
    except Exception:
        return None
    try:
        if seg.size < L.HEADER_SIZE or bytes(seg.buf[:8]) != L.MAGIC:
            return None
        H = seg.buf.cast("Q")
        try:
            return int(H[L.H_HOLDER]) if H[L.H_DELETED] else None
        finally:
            H.release()
    finally:
        seg.close()


def _check_trusted(name: str, uid: int, trusted: int | str | None) -> None:
    """Refuse a table another user created unless the caller named that user."""
    me = os.geteuid()
    if uid == me or trusted == "any" or (trusted is not None and trusted == uid):
        return
    raise AccessDeniedError(
        f"table {name!r} was created by user id {uid}, not by you (uid {me}): table names "
        "are not bound to users, so another user could have made it with data of its "
        f"choosing. If you trust that user, pass trusted_uid={uid} (sharedzarr.open, "
        "Table.attach)"
    )


def collect_garbage(
    match: Callable[[str], bool] | None = None, *, dry_run: bool = False
) -> list[str]:
    """Delete orphaned tables and stray segments of ours; return what was (or would be)
    removed: table names, and the names of stray segments.

    Orphaned: the owner and heir are dead and the table is not persistent.  Stray: an index
    or arena segment whose table has no header (left by a crash), a table marked deleted
    whose deleter died, or a header that has not been a valid table for 10 s.  Only tables
    whose name satisfies ``match`` are looked at (all when None).  ``dry_run`` changes
    nothing.  ``sharedzarr.storage.shm.gc`` and ``sharedzarr gc`` are this.
    """

    def wanted(name: str) -> bool:
        return match is None or match(name)

    def unlink_ours(segment: str) -> bool:  # False: gone, or another user's
        try:
            with map_os_errors(segment, "unlink"):
                return _unlink(segment)
        except AccessDeniedError:
            return False

    removed: list[str] = []
    tables = set(list_tables())
    for name in sorted(n for n in tables if wanted(n)):
        try:
            state = probe(name, reap=not dry_run)
        except (OSError, SharedZarrError):
            continue  # could not look (EMFILE, ENOMEM, ...): an error is no verdict
        if state in ("reaped", "deleted") or (dry_run and state == "orphan" and _orphan(name)):
            removed.append(name)
        elif state == "corrupt" and changed_before(L.segment_names(name)[0], 10.0):
            if dry_run or all(unlink_ours(n) for n in table_segments(name)):
                removed.append(name)
    for seg in list_names(L.PREFIX):
        owner = L.table_of_segment(seg)
        if owner is None or owner in tables or not wanted(owner):
            continue
        if seg_exists(L.segment_names(owner)[0]):
            continue  # a table created after we listed the headers: its header came first
        if dry_run or unlink_ours(seg):
            removed.append(seg)
    return removed


def _orphan(name: str) -> bool:
    """Owner and heir dead, not persistent (read without reaping: ``gc --dry-run``)."""
    try:
        t = Table._attach_for_admin(name)
    except Exception:
        return False
    try:
        return not t.persistent and _owner_state(t._H, t._hdr.fd) == "dead"
    finally:
        t.close()
