"""Exceptions raised by sharedzarr.

Every error is a :class:`SharedZarrError` *and* the builtin exception a Python
programmer would catch for the same situation (zarr's ``NodeNotFoundError`` does
the same), so ``except FileNotFoundError`` keeps working.  Each error carries a
``reason`` attribute holding the atom the ExZarr ETS backend returns for the
same situation (``"table_not_found"``, ``"not_found"``, ``"access_denied"``) or
an atom-like name of our own.  Messages name the table and say what to do.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "AccessDeniedError",
    "CorruptTableError",
    "LockTimeoutError",
    "NotFoundError",
    "OutOfSpaceError",
    "SharedZarrError",
    "TableExistsError",
    "TableNotFoundError",
    "TooManyOpenFilesError",
]


class SharedZarrError(Exception):
    """Base class of every sharedzarr error.

    Attributes
    ----------
    reason : str
        The ETS-style atom naming the failure, e.g. ``"table_not_found"``.
    """

    reason: str = "error"

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(message, *args)
        self.message = message

    def __str__(self) -> str:
        return self.message


class TableNotFoundError(SharedZarrError, FileNotFoundError):
    """The table does not exist (ETS ``:table_not_found``)."""

    reason = "table_not_found"

    def __init__(self, message: str = "", *args: object) -> None:
        SharedZarrError.__init__(self, message, *args)
        self.errno = _errno.ENOENT
        self.strerror = message


class NotFoundError(SharedZarrError, KeyError):
    """The key is not in the table (ETS ``:not_found``)."""

    reason = "not_found"

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class AccessDeniedError(SharedZarrError, PermissionError):
    """The table's access level or segment mode forbids the operation (``:access_denied``)."""

    reason = "access_denied"

    def __init__(self, message: str = "", *args: object) -> None:
        SharedZarrError.__init__(self, message, *args)
        self.errno = _errno.EACCES
        self.strerror = message


class TableExistsError(SharedZarrError, FileExistsError):
    """A live table already has this name (ETS ``badarg`` on a taken named table)."""

    reason = "table_exists"
    #: The pid of a writer still inside an operation on a deleted table of this name (the
    #: name is free again once it finishes or exits), or None.
    writer_pid: int | None = None

    def __init__(self, message: str = "", *args: object) -> None:
        SharedZarrError.__init__(self, message, *args)
        self.errno = _errno.EEXIST
        self.strerror = message


class LockTimeoutError(SharedZarrError, TimeoutError):
    """The writer lock was not acquired in time.

    Attributes
    ----------
    holder_pid : int or None
        The pid of the process holding the lock when the wait gave up.
    """

    reason = "lock_timeout"

    def __init__(self, message: str = "", holder_pid: int | None = None) -> None:
        SharedZarrError.__init__(self, message)
        self.holder_pid = holder_pid


class CorruptTableError(SharedZarrError, ValueError):
    """A segment's bytes are not a sharedzarr table of this layout version."""

    reason = "corrupt_table"


class TooManyOpenFilesError(SharedZarrError, OSError):
    """The process (``EMFILE``) or the system (``ENFILE``) has no file descriptor left.

    Each mapped data segment holds a descriptor while it is mapped (Python's ``mmap`` keeps
    one), so a process that reads many tables or very large ones needs a higher
    ``ulimit -n``.  The table is unchanged.
    """

    reason = "too_many_open_files"

    def __init__(self, message: str = "", *args: object, errno: int = _errno.EMFILE) -> None:
        SharedZarrError.__init__(self, message, *args)
        self.errno = errno
        self.strerror = message


class OutOfSpaceError(SharedZarrError, OSError):
    """``/dev/shm`` has no room for the write (``ENOSPC``); the table is unchanged."""

    reason = "out_of_space"

    def __init__(self, message: str = "", *args: object) -> None:
        SharedZarrError.__init__(self, message, *args)
        self.errno = _errno.ENOSPC
        self.strerror = message
