"""The platform guard: the table engine publishes with plain stores and needs x86-64.

A value becomes visible through one aligned 8-byte store, and a reader that sees the
reference must see the record written before it.  x86-64 (TSO) keeps stores in order
and does not reorder loads with older loads, so no fence is needed there; a weakly
ordered CPU (ARM, POWER) would need fences the engine does not issue.  The byte format
is little-endian.

The check runs when a table is created or attached (:func:`check_platform`), not at
import: ``import sharedzarr`` works on any machine, so tools that only read metadata,
build docs or run the in-process ``memory`` backend are not blocked.
"""

from __future__ import annotations

import os
import sys

from .errors import SharedZarrError

__all__ = ["SUPPORTED_MACHINES", "UnsupportedPlatformError", "check_platform"]

SUPPORTED_MACHINES = ("x86_64", "AMD64", "amd64")


class UnsupportedPlatformError(SharedZarrError, RuntimeError):
    """This machine's memory ordering or byte order is not supported by shared-memory tables.

    Raised by ``Table.create``/``Table.attach`` (and so by ``sharedzarr.create``/``open``
    on the shared-memory backend).  The in-process ``memory`` backend still works.
    """


def check_platform() -> None:
    """Raise :class:`UnsupportedPlatformError` unless this is a little-endian x86-64 machine.

    Raises
    ------
    UnsupportedPlatformError
        On any other CPU or byte order; the message names the machine.
    """
    machine = os.uname().machine  # not platform.machine(): its cache fills at import of uuid
    if sys.byteorder != "little" or machine not in SUPPORTED_MACHINES:
        raise UnsupportedPlatformError(
            "sharedzarr publishes values with plain aligned 8-byte stores and relies on "
            "x86-64 (TSO) memory ordering; this machine is "
            f"{machine}/{sys.byteorder}-endian, which is not supported yet"
        )
