"""Named POSIX shared-memory segments: create, attach, map, reserve, close, unlink.

One of the modules that touch the OS (with ``_lock``, ``_proc`` and ``_threads``).
Segments are opened with ``posix_ipc.SharedMemory`` and mapped with ``mmap(2)`` by us
(:func:`map_shared`), so that:

* attaching never resizes a segment (``size=0`` is always passed to posix_ipc:
  with ``size>0`` it truncates an existing segment);
* no resource tracker is involved (``multiprocessing.shared_memory`` on Python
  <= 3.12 unlinks segments an attaching process opened when that process exits);
* the file descriptor is closed right after mapping and the mapping keeps none
  (a process attached to 100,000 chunks holds no descriptors for them), except
  where a caller asks to keep it (the header, whose descriptor carries the
  identity and lock checks, and the arena being appended to, which is reserved
  with ``posix_fallocate``);
* a mapping is never unmapped under a reader: it lives while the segment or any
  view of it is referenced, so threads sharing a handle never see a released view;
* memory is reserved with ``posix_fallocate`` before it is written, so a full
  ``/dev/shm`` is an :class:`~sharedzarr.errors.OutOfSpaceError` from the write
  that needed the space, never a SIGBUS.

All posix_ipc and OS errors are translated to sharedzarr errors in
:func:`map_os_errors`, the single boundary where that happens.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import mmap
import os
import stat as stat_mod
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Self

import posix_ipc

from ._layout import PREFIX as L_PREFIX
from .errors import (
    AccessDeniedError,
    CorruptTableError,
    OutOfSpaceError,
    SharedZarrError,
    TableExistsError,
    TableNotFoundError,
    TooManyOpenFilesError,
)

SHM_DIR = "/dev/shm"
_MAP_FIXED = 0x10  # Linux; the mmap module does not export it
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux >= 5.14
_POPULATE_MIN = 64 << 10
_MADV_REMOVE = getattr(mmap, "MADV_REMOVE", 9)

__all__ = [
    "SHM_DIR",
    "segment_path",
    "Segment",
    "exists",
    "fd_unlinked",
    "list_names",
    "map_os_errors",
    "out_of_space_message",
    "shm_space",
    "size_on_disk",
    "take_name",
    "unlink",
]


@contextlib.contextmanager
def map_os_errors(table: str, what: str = "") -> Iterator[None]:
    """Translate posix_ipc / OS errors raised inside the block to sharedzarr errors.

    Parameters
    ----------
    table : str
        The table name, used in messages.
    what : str
        The segment or operation, used in messages.
    """
    try:
        yield
    except SharedZarrError:
        raise
    except posix_ipc.ExistentialError as e:
        if "already exists" in str(e).lower():
            raise TableExistsError(
                f"table {table!r} already exists ({what}); attach to it with "
                f"sharedzarr.Table.attach({table!r}), or delete it first "
                f"(sharedzarr.storage.shm.delete_table({table!r}) or `sharedzarr rm {table}`)"
            ) from e
        raise TableNotFoundError(
            f"table {table!r} does not exist ({what} is missing); "
            f"sharedzarr.create(..., table_name={table!r}) creates it, `sharedzarr ls` lists tables"
        ) from e
    except posix_ipc.PermissionsError as e:
        raise AccessDeniedError(
            f"access to table {table!r} denied by its segment mode ({what}): it belongs to "
            "another user or was created with a restrictive `mode`; create it with e.g. "
            "mode=0o660 and a shared group to share it between users"
        ) from e
    except (posix_ipc.BusyError, posix_ipc.SignalError, posix_ipc.Error) as e:
        raise SharedZarrError(f"table {table!r}: shared-memory call failed ({what}): {e}") from e
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise OutOfSpaceError(
                out_of_space_message(table, what, getattr(e, "needed", None))
            ) from e
        if e.errno in (errno.EACCES, errno.EPERM):
            raise AccessDeniedError(
                f"access to table {table!r} denied ({what}): {e.strerror}"
            ) from e
        if e.errno == errno.ENOENT:
            raise TableNotFoundError(
                f"table {table!r} does not exist ({what} is missing); "
                f"sharedzarr.create(..., table_name={table!r}) creates it, "
                "`sharedzarr ls` lists tables"
            ) from e
        code = e.errno
        if code is None and "maximum number of files" in str(e):
            code = errno.EMFILE  # posix_ipc says so in words, with no errno
        elif code is None and "system limit" in str(e) and "files" in str(e):
            code = errno.ENFILE
        if code in (errno.EMFILE, errno.ENFILE):
            who = "this process" if code == errno.EMFILE else "the system"
            raise TooManyOpenFilesError(
                f"table {table!r}: {who} has no file descriptor left ({what}); each mapped "
                "segment holds one. Raise the limit (`ulimit -n 65536` in the shell that "
                "starts the program, or resource.setrlimit(resource.RLIMIT_NOFILE, ...)), "
                "or close handles you no longer need",
                errno=code,
            ) from e
        if e.errno == errno.ELOOP:
            raise CorruptTableError(
                f"table {table!r}: {what or 'a segment'} in {SHM_DIR} is a symbolic link, not "
                "a segment sharedzarr made; it is never followed. Remove the link (`ls -l "
                f"{SHM_DIR}/{L_PREFIX}{table}.*`) and create the table again"
            ) from e
        if e.errno == errno.ENOMEM:
            raise OutOfSpaceError(
                f"table {table!r}: out of memory or mappings while mapping {what}: {e.strerror}"
            ) from e
        raise


SMALL_SHM = 1 << 30
"""A ``/dev/shm`` smaller than this (1 GiB) gets advice on enlarging it in out-of-space errors."""


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def shm_space(path: str = SHM_DIR) -> tuple[int, int] | None:
    """``(free, total)`` bytes of the filesystem at ``path`` (``os.statvfs``), or None.

    Parameters
    ----------
    path : str
        A path on the filesystem (default ``/dev/shm``).

    Returns
    -------
    tuple of int, or None
        Bytes available to this user and the size of the filesystem; None when
        ``statvfs`` fails.
    """
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def allocated_bytes(name: str) -> int:
    """The memory segment ``name`` takes in ``/dev/shm`` (its allocated blocks); 0 when it
    is gone."""
    try:
        return os.stat(segment_path(name)).st_blocks * 512
    except OSError:
        return 0


def out_of_space_message(
    table: str, what: str, needed: int | None = None, *, refused: bool = False
) -> str:
    """The message of an :class:`OutOfSpaceError`: what was needed, what is free, the fix.

    Parameters
    ----------
    table : str
        The table name.
    what : str
        The operation or segment that ran out of space.
    needed : int, optional
        Bytes the failed reservation asked for.
    refused : bool
        The write was refused before it stored anything, because it cannot fit
        (``/dev/shm`` is not full).

    Returns
    -------
    str
    """
    space = shm_space()
    if refused:
        parts = [f"table {table!r}: {what} does not fit in {SHM_DIR}; nothing was stored"]
    else:
        parts = [f"table {table!r}: {SHM_DIR} is full ({what})"]
    facts = []
    if needed is not None:
        facts.append(f"the write needed {_human(needed)}")
    if space is not None:
        facts.append(f"{SHM_DIR} has {_human(space[0])} free of {_human(space[1])}")
    if facts:
        parts.append(", ".join(facts))
    parts.append(
        "free space (delete tables with `sharedzarr rm NAME` or `sharedzarr gc`) or enlarge "
        f"{SHM_DIR}; the table is still usable"
    )
    if space is not None and space[1] < SMALL_SHM:
        parts.append(
            f"{SHM_DIR} is only {_human(space[1])}: in Docker, start the container with "
            "`docker run --shm-size=2g ...` (Compose: `shm_size: 2gb`); on a host, as root, "
            f"`mount -o remount,size=2G {SHM_DIR}`"
        )
    return "; ".join(parts)


_LIBC: ctypes.CDLL | None = None
_MAP_FAILED = ctypes.c_void_p(-1).value
#: ``munmap(addr, length)`` with a third argument that it never reads (x86-64 passes it in a
#: register): the dead weak reference a callback receives (see :func:`map_shared`)
_UNMAP_WITH_REF: Any = None
#: The weak references that unmap the live mappings, by address (a reference must outlive
#: its object for its callback to run); dead ones go every ``_SWEEP_EVERY`` new mappings
_UNMAPPERS: dict[int, weakref.ref[Any]] = {}
_SWEEP_EVERY = 256
_mapped = 0
_unmappers_lock = threading.Lock()  # (threads map segments too; a new one in a forked child)


def _new_unmappers_lock() -> None:
    global _unmappers_lock
    _unmappers_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_unmappers_lock)


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.madvise.restype = ctypes.c_int
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        global _UNMAP_WITH_REF
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.py_object)
        _UNMAP_WITH_REF = proto(("munmap", libc))
        _LIBC = libc
    return _LIBC


def map_shared(fd: int, size: int, *, writable: bool) -> ctypes.Array[ctypes.c_char]:
    """Map ``size`` bytes of ``fd`` shared; return the mapping as a ``c_char`` array.

    Why not :class:`mmap.mmap`: it keeps a duplicate of the descriptor for as long as the
    mapping lives, so a process that maps many segments runs out of descriptors (a reader
    of many chunks with their own segments).  A mapping needs no descriptor once made:
    this one keeps none.

    Lifetime: the array is the mapping's only owner.  Every view of it (``memoryview``,
    numpy arrays over those) holds a reference to it, and it is unmapped when the last
    reference goes, so a view never outlives its memory.  Nothing is unmapped at
    interpreter exit (views may still be read then; the kernel unmaps at exit).

    The unmapping runs no Python code: it is a weak reference's callback made of C calls
    only (``functools.partial`` of ``munmap``).  Python runs signal handlers between
    bytecodes, and a handler that raised inside a Python finaliser (``weakref.finalize``)
    was reported and swallowed: that Ctrl-C was lost, the mapping never unmapped, and an
    unlinked segment's pages stayed in ``/dev/shm`` until the process exited.

    A ``c_char`` array always claims to be writable: of a read-only mapping, only slice
    it (bytes) or read it with ``struct``, and hand out :attr:`Segment.buf` /
    :attr:`Segment.rbuf`, which are read-only views.  A store through it would fault.
    """
    libc = _libc()
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    addr = libc.mmap(None, size, prot, mmap.MAP_SHARED, fd, 0)
    if addr is None or addr == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    arr = (ctypes.c_char * size).from_address(addr)
    _unmap_when_gone(arr, addr, size)
    return arr


def _unmap_when_gone(owner: Any, addr: int, size: int) -> None:
    """Unmap ``size`` bytes at ``addr`` when ``owner`` goes, by C calls only (see
    :func:`map_shared`)."""
    global _mapped
    ref = weakref.ref(owner, functools.partial(_UNMAP_WITH_REF, addr, size))
    with _unmappers_lock:
        _mapped += 1
        if _mapped % _SWEEP_EVERY == 0:
            for a in [a for a, r in _UNMAPPERS.items() if r() is None]:
                del _UNMAPPERS[a]
        _UNMAPPERS[addr] = ref


class Segment:
    """One mapped shared-memory segment.

    Attributes
    ----------
    name : str
        The segment name without the leading slash (the file in ``/dev/shm``).
    size : int
        The mapped size in bytes.
    mm : ctypes c_char array, or None for an empty segment
        The mapping (see :func:`map_shared`; slices are ``bytes``).
    buf : memoryview or None
        A byte view of the mapping (read-only for read-only mappings).
    rbuf : memoryview or None
        A read-only byte view of the mapping (what zero-copy reads hand out).
    words : memoryview or None
        The first 64 bytes as eight ``uint64`` words: each item is one aligned 8-byte
        load or store (a data segment's header words).
    words_writable : bool
        Whether ``words`` can be stored to (a read-only mapping may still get a small
        writable mapping of its header, see :meth:`attach`).
    fd : int
        The open descriptor, or -1 when it was closed after mapping.
    closed : bool
        Set by :meth:`close`; the mapping stays valid while referenced.
    """

    # class-level defaults make close() safe on a half-built object
    name: str = ""
    size: int = 0
    mm: ctypes.Array[ctypes.c_char] | None = None
    buf: memoryview | None = None
    rbuf: memoryview | None = None
    words: memoryview | None = None
    words_writable: bool = False
    _wmm: ctypes.Array[ctypes.c_char] | None = None
    fd: int = -1
    readonly: bool = False
    closed: bool = False

    def __init__(self, name: str, fd: int, size: int, readonly: bool, keep_fd: bool) -> None:
        self.name = name
        self.readonly = readonly
        try:
            if size > 0:
                self.mm = map_shared(fd, size, writable=not readonly)
                self.buf = memoryview(self.mm).cast("B")
                self.rbuf = self.buf.toreadonly()
                if readonly:
                    self.buf = self.rbuf
                if size >= 64:
                    self.words = self.buf[:64].cast("Q")
                    self.words_writable = not readonly
            self.size = size
        except BaseException:
            os.close(fd)
            raise
        if keep_fd:
            self.fd = fd
        else:
            os.close(fd)

    @classmethod
    def create(
        cls, name: str, size: int, mode: int, *, reserve: int | None = None, keep_fd: bool = False
    ) -> Self:
        """Create segment ``name`` (exclusive) of ``size`` bytes and map it read-write.

        ``reserve`` bytes (default: all) are allocated up front with ``posix_fallocate``;
        on ENOSPC the segment is unlinked and :class:`OutOfSpaceError` propagates.
        """
        shm = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, mode=mode, size=0)
        fd = shm.fd
        try:
            os.fchmod(fd, mode)  # shm_open applies the umask; the table's mode is exact
            os.ftruncate(fd, size)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            unlink(name)
            raise
        try:
            seg = cls(name, fd, size, False, keep_fd=True)  # closes fd itself on failure
        except BaseException:
            unlink(name)
            raise
        try:
            r = size if reserve is None else min(reserve, size)
            if r > 0:
                seg.reserve(0, r)
            if not keep_fd:
                seg.close_fd()
            return seg
        except BaseException:
            seg.close()
            unlink(name)
            raise

    @classmethod
    def attach(
        cls,
        name: str,
        *,
        readonly: bool = False,
        keep_fd: bool = False,
        words_rw: bool = False,
        uid: int | None = None,
    ) -> Self:
        """Attach existing segment ``name`` without changing its size.

        ``words_rw`` with ``readonly``: also map the first page read-write, when this
        user may, so that :attr:`words` can be stored to (a reader's marks in a data
        segment's header); the data stays mapped read-only.  ``uid``: the user the
        segment must belong to (a table's own); another user's file of that name is
        refused with :class:`CorruptTableError` before it is mapped.
        """
        shm = posix_ipc.SharedMemory("/" + name, 0, size=0, read_only=readonly)
        fd = shm.fd
        try:
            st = os.fstat(fd)
            size = st.st_size
            if uid is not None and st.st_uid != uid:
                raise CorruptTableError(_foreign_message(name, st.st_uid, uid))
        except BaseException:
            os.close(fd)
            raise
        seg = cls(name, fd, size, readonly, keep_fd)
        if readonly and words_rw and seg.words is not None:
            try:
                wfd = posix_ipc.SharedMemory("/" + name, 0, size=0).fd
            except posix_ipc.PermissionsError:
                return seg  # this user may not write: words stay read-only
            try:
                wmm = map_shared(wfd, 64, writable=True)
            except OSError:
                return seg
            finally:
                os.close(wfd)
            seg.words.release()
            seg._wmm = wmm
            seg.words = memoryview(wmm).cast("B").cast("Q")
            seg.words_writable = True
        return seg

    def reserve(self, offset: int, length: int) -> None:
        """Allocate ``[offset, offset+length)`` of the segment, then map it in.

        ``posix_fallocate`` reserves the memory (ENOSPC here, not SIGBUS later);
        ``MADV_POPULATE_WRITE`` maps the pages in one call instead of one fault
        per page on the first write (ignored where the kernel lacks it).
        """
        try:
            os.posix_fallocate(self.fd, offset, length)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                e.needed = length  # type: ignore[attr-defined]  # for the error message
            raise
        if self.mm is not None and length >= _POPULATE_MIN:
            start = offset & ~(mmap.PAGESIZE - 1)
            end = min(offset + length, self.size)
            if end > start:  # errors ignored: the pages then fault in on first write
                _libc().madvise(
                    ctypes.addressof(self.mm) + start, end - start, _MADV_POPULATE_WRITE
                )

    def discard(self, offset: int, length: int) -> None:
        """Give the memory of ``[offset, offset+length)`` back to ``/dev/shm`` (whole pages
        only; ``MADV_REMOVE`` punches them out of the file).  It reads as zeros after."""
        start = (offset + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
        end = min(offset + length, self.size) & ~(mmap.PAGESIZE - 1)
        if self.mm is not None and end > start and not self.readonly:
            _libc().madvise(ctypes.addressof(self.mm) + start, end - start, _MADV_REMOVE)

    def rename(self, new_name: str) -> None:
        """Give the segment a new name (``rename(2)`` in ``/dev/shm``); the mapping stays."""
        os.rename(os.path.join(SHM_DIR, self.name), os.path.join(SHM_DIR, new_name))
        self.name = new_name

    def open_fd(self) -> int:
        """Return a read-write descriptor of the segment, opening it by name if needed."""
        if self.fd < 0:
            self.fd = posix_ipc.SharedMemory("/" + self.name, 0, size=0).fd
        return self.fd

    def reopen_path(self) -> str:
        """A path that opens *this* segment again as a new open file description.

        Through the kept descriptor (``/proc/self/fd/N``) it names this segment even after
        it was unlinked or its name was reused by another table; without one, its name.
        """
        if self.fd >= 0:
            return f"/proc/self/fd/{self.fd}"
        return os.path.join(SHM_DIR, self.name)

    def lock_creation(self) -> None:
        """Hold an exclusive ``flock`` on this descriptor while the segment is being filled
        in (a table's header before its magic): the kernel drops it if this process dies,
        which is how :func:`creator_gone` tells a dead creator from a slow one."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def unlock_creation(self) -> None:
        """Release :meth:`lock_creation`."""
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def owner_uid(self) -> int:
        """The user id that owns the segment (needs a kept descriptor, else its name)."""
        if self.fd >= 0:
            return os.fstat(self.fd).st_uid
        return os.stat(os.path.join(SHM_DIR, self.name)).st_uid

    def same_file(self, other: Segment) -> bool:
        """True when both segments are the same file (both need a kept descriptor)."""
        try:
            a, b = os.fstat(self.fd), os.fstat(other.fd)
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def is_at_name(self) -> bool:
        """True when the name still leads to *this* segment (same inode; needs a kept
        descriptor): not unlinked, and not replaced by another segment of that name."""
        try:
            mine = os.fstat(self.fd)
            there = os.stat(os.path.join(SHM_DIR, self.name), follow_symlinks=False)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)

    def unlinked(self) -> bool:
        """Return True when the segment was unlinked (needs a kept descriptor)."""
        if self.fd < 0:
            return not exists(self.name)
        return fd_unlinked(self.fd)

    def close_fd(self) -> None:
        """Close the kept descriptor, if any (idempotent)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Mark the segment closed and close its descriptor (idempotent; never unlinks).

        The memory is unmapped when the last reference to the segment or a view of it
        goes (caches drop theirs when they close it; zero-copy reads a caller holds,
        another thread's read in progress keep theirs), so those stay valid.
        """
        self.close_fd()
        # Nothing is released or dropped here: another thread may be reading through this
        # segment right now (it loaded it from a cache before this call).  The mapping
        # goes when the last reference to the segment and its views does (map_shared).
        self.closed = True

    def __repr__(self) -> str:
        return f"<Segment {self.name} size={self.size}{' ro' if self.readonly else ''}>"


def unlink(name: str) -> bool:
    """Unlink segment ``name``; return False when it did not exist."""
    try:
        posix_ipc.unlink_shared_memory("/" + name)
        return True
    except posix_ipc.ExistentialError:
        return False


def fd_unlinked(fd: int) -> bool:
    """True when the file open as ``fd`` no longer has a name (it was unlinked)."""
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return True


def segment_path(name: str) -> str:
    """The file of segment ``name``."""
    return os.path.join(SHM_DIR, name)


def exists(name: str) -> bool:
    """Return True when segment ``name`` exists."""
    return os.path.exists(os.path.join(SHM_DIR, name))


def list_names(prefix: str, uid: int | None = None) -> list[str]:
    """Names of the segments in ``/dev/shm`` that start with ``prefix``.

    With ``uid``, only regular files of that user: a table never lists, maps, adopts or
    unlinks a file another user put among its names.
    """
    try:
        names = [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]
    except FileNotFoundError:
        return []
    if uid is None:
        return names
    return [n for n in names if _owned_by(n, uid) is True]


def _owned_by(name: str, uid: int) -> bool | None:
    """True: a regular file of ``uid``; False: something else; None: nothing there."""
    try:
        st = os.lstat(os.path.join(SHM_DIR, name))
    except FileNotFoundError:
        return None
    except OSError:
        return False
    return stat_mod.S_ISREG(st.st_mode) and st.st_uid == uid


def take_name(name: str, uid: int) -> bool:
    """Make segment name ``name`` free for a table of user ``uid`` to create.

    A file of ``uid`` there is a stray of that table (a crash left it) and is unlinked.
    Anything else (another user's file, planted where the table's next segment would go)
    is left alone, and False tells the caller to use another name.
    """
    owned = _owned_by(name, uid)
    if owned is None:
        return True
    if not owned:
        return False
    unlink(name)
    return _owned_by(name, uid) is None


def _foreign_message(name: str, found: int, want: int) -> str:
    return (
        f"segment {name!r} belongs to user {found}, not to its table's user {want}: another "
        f"user created it among the table's names; it was not read (remove "
        f"{SHM_DIR}/{name} as that user or root)"
    )


def size_on_disk(name: str) -> int:
    """Bytes of shared memory a segment really uses (allocated blocks), 0 if gone."""
    try:
        return os.stat(os.path.join(SHM_DIR, name)).st_blocks * 512
    except OSError:
        return 0


def stat(name: str) -> os.stat_result | None:
    """``os.stat`` of a segment, or None when it does not exist."""
    try:
        return os.stat(os.path.join(SHM_DIR, name))
    except OSError:
        return None


def changed_before(name: str, age: float) -> bool:
    """True when segment ``name`` exists and was last changed more than ``age`` seconds ago."""
    st = stat(name)
    return st is not None and time.time() - st.st_mtime > age


def creator_gone(name: str, grace: float = 2.0) -> bool:
    """True when segment ``name`` is still all zeros at its start (a table header before its
    magic) and nobody holds its creation lock (:meth:`Segment.lock_creation`) any more:
    its creator died half-way.  A segment younger than ``grace`` seconds is given the
    benefit of the doubt (its creator may not have taken the lock yet)."""
    try:
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if time.time() - st.st_ctime < grace:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: a creator (or a writer) is alive
        return os.pread(fd, 8, 0).strip(b"\0") == b""
    finally:
        os.close(fd)  # also releases the flock


class Concatenated:
    """Segments mapped read-only back to back in one address range.

    One numpy view then spans them all, so a gather across them is one operation (the
    array's ``a[idx]``).  The range is reserved first (``PROT_NONE``), then each segment
    is mapped into its place (``MAP_FIXED``); a mapping of a shared segment sees what
    every other mapping of it sees.  ``numpy.asarray(c)`` is the whole range as read-only
    ``uint8``, and every numpy view of it keeps ``c`` alive: the range is unmapped only
    when the last one is gone (never under a reader).

    Parameters
    ----------
    names : iterable of str
        The segments, in order.
    uid : int
        Every segment must belong to this user (the table's), or none is mapped.

    Attributes
    ----------
    offsets : list of int
        Where each segment starts in the range.

    Raises
    ------
    OSError
        When a segment is gone, belongs to another user, or cannot be mapped.
    """

    def __init__(self, names: Iterable[str], uid: int) -> None:
        libc = _libc()
        mmap_ = libc.mmap
        self._munmap = libc.munmap
        self._base = 0
        self._size = 0
        self.offsets: list[int] = []
        fds: list[int] = []
        try:
            sizes = []
            for name in names:
                flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
                fds.append(os.open(os.path.join(SHM_DIR, name), flags))
                st = os.fstat(fds[-1])
                if st.st_uid != uid:
                    raise OSError(errno.EPERM, f"segment {name!r} belongs to uid {st.st_uid}")
                sizes.append(st.st_size)
            total = sum(sizes)
            if not total or any(n % mmap.PAGESIZE for n in sizes):
                raise OSError(errno.EINVAL, "segments must be whole pages")
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
            base = mmap_(None, total, 0, flags, -1, 0)  # PROT_NONE: reserved only
            if base is None or base == ctypes.c_void_p(-1).value:
                raise OSError(ctypes.get_errno(), "cannot reserve an address range")
            self._base, self._size = base, total
            off = 0
            for fd, n in zip(fds, sizes, strict=True):
                got = mmap_(base + off, n, mmap.PROT_READ, mmap.MAP_SHARED | _MAP_FIXED, fd, 0)
                if got != base + off:
                    raise OSError(ctypes.get_errno(), "cannot map a segment into the range")
                self.offsets.append(off)
                off += n
            _unmap_when_gone(self, base, total)  # (no Python finaliser: see map_shared)
        except BaseException:
            self._unmap()
            raise
        finally:
            for fd in fds:
                os.close(fd)

    @property
    def __array_interface__(self) -> dict[str, object]:
        """The range as read-only ``uint8`` (numpy's array interface)."""
        return {"shape": (self._size,), "typestr": "|u1", "data": (self._base, True), "version": 3}

    def _unmap(self) -> None:
        """Unmap the range now (a constructor that failed; the mapped range is unmapped
        when this object goes)."""
        base, self._base = self._base, 0
        if base:
            with _unmappers_lock:
                _UNMAPPERS.pop(base, None)
            self._munmap(base, self._size)
