"""The mapped header page of a table: hot word indices, handle state, header accessors.

Layer 2, bottom.  Everything above builds on :class:`TableBase`, which holds a
handle's state (the header mapping ``_H``, the index mapping, the arena maps) and the
checks every operation starts with.

Hot word indices
----------------
The read path indexes the header and arena words with literal ints (an attribute
lookup there costs measurable time).  This is the one place that says which literal
is which word; :func:`_check_hot_words` verifies them against :mod:`sharedzarr._layout`
at import (an explicit check, not an ``assert``, so ``python -O`` keeps it).

Hot paths
---------
A module that calls a method of a shared object on a hot path binds it by assignment
(``_REC_HEAD1 = L.REC_HEAD1``), never by ``from ... import``: CPython 3.11 compiles
``name.method(...)`` without its method-call fast path when ``name`` was imported (it
takes it for a module), which costs a bound-method object per call (~40 ns per probe,
measured).  ``tests/test_engine_structure.py`` checks this.

Words stored here
-----------------
``H_WRITES`` and ``H_RECLAIM``, the two "look again" counters cached readers trust
(:func:`count_write`, :func:`count_reclaim`); the fixed fields of a new header (created
time, options, magic: :func:`init_created`, :func:`publish_header`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import struct
import threading
from typing import TYPE_CHECKING, Any

from .. import _layout as L
from .. import _proc
from .._index import decode_key
from .._lock import WriterLock
from .._segment import Segment as _Segment
from .._segment import exists as _seg_exists
from ..errors import AccessDeniedError, CorruptTableError, SharedZarrError, TableNotFoundError

__all__ = [
    "DEFAULT_TIMEOUT",
    "HOT_WORDS",
    "TableBase",
    "count_reclaim",
    "count_write",
    "init_created",
    "publish_header",
    "validate_name",
]

if TYPE_CHECKING:
    from ._undo import UndoLog

    class _Mapped(ctypes.Array[ctypes.c_char]):
        """A segment's mapping as the type checker sees it: a ``c_char`` array, whose
        slices are ``bytes`` (typeshed types them as lists)."""

        def __getitem__(self, key: int | slice) -> bytes: ...  # type: ignore[override]

    class Segment(_Segment):
        """For the type checker only: a segment the engine holds is mapped.

        ``Segment`` types ``mm``, ``buf``, ``rbuf`` and ``words`` as optional (they are
        None once closed); the engine only reaches segments it has mapped, so it types
        them as mapped instead of paying a cast (a call) on the hot paths.
        """

        mm: _Mapped
        buf: memoryview
        rbuf: memoryview
        words: memoryview

else:
    Segment = _Segment

DEFAULT_TIMEOUT = 60.0
_READ_RETRIES = 10_000  # a retry needs a writer to reuse an arena during one read
_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # fullmatch: "$" would let a "\n" in
_OFFSET_MASK = L.OFFSET_MASK
_OFFSET_BITS = L.OFFSET_BITS

#: The literal word indices the hot read paths use, by name (header ``H_*``, arena ``A_*``).
HOT_WORDS: dict[str, int] = {
    "H_DELETED": 8,
    "H_GEN": 9,
    "H_WRITES": 12,
    "H_RECLAIM": 21,
    "H_REUSE": 22,
    "H_OPSEQ": 23,
    "A_ID": 6,
    "A_NOREUSE": 7,
    "NOREUSE_VIEW": 1,
}


def _check_hot_words() -> None:
    wrong = {k: getattr(L, k) for k, v in HOT_WORDS.items() if getattr(L, k) != v}
    if wrong:  # pragma: no cover - a layout change must update the literals
        raise ImportError(
            f"sharedzarr._layout moved hot words {wrong}; update HOT_WORDS and the literal "
            "indices in sharedzarr/_table/_read.py and _index.py"
        )


_check_hot_words()


def count_write(H: memoryview) -> None:
    """Bump the write counter: cached readers (``view_reader``) look at their slot again."""
    H[L.H_WRITES] += 1


def count_reclaim(H: memoryview) -> None:
    """Count a reclaim, a reuse or a recovery: cached readers drop their views.

    The write counter moves as well: a cached read (``Table.view_reader``) loads nothing
    else while that counter stands still.
    """
    H[L.H_RECLAIM] += 1
    H[L.H_WRITES] += 1


def init_created(buf: memoryview, when: float) -> None:
    """Store the creation time of a new header (not yet published)."""
    struct.pack_into("<d", buf, 56, when)


def publish_header(
    buf: memoryview,
    ttype: int,
    access: int,
    named: bool,
    persistent: bool,
    mode: int,
) -> None:
    """Store the options of a new header, then its magic: attachers wait for the magic."""
    struct.pack_into(
        "<IIBBBBI",
        buf,
        8,
        L.VERSION,
        L.HEADER_SIZE,
        ttype,
        access,
        int(named),
        int(persistent),
        mode,
    )
    buf[0:8] = L.MAGIC  # last: attachers wait for the magic


def validate_name(name: str) -> str:
    """Check a table name: letters, digits, ``_ . -``, 1 to 64 characters.

    Raises
    ------
    ValueError
        When the name is not valid; the message says which characters are allowed.
    """
    if not isinstance(name, str):
        raise TypeError(f"table name must be a str, got {type(name).__name__}")
    if not _NAME_RE.fullmatch(name) or name in (".", ".."):
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
    if "O" in mv.format:  # numpy object arrays export pointers to this process's objects
        raise TypeError(
            "values must hold bytes, not Python objects: a numpy object array stores "
            "pointers that mean nothing to another process; encode the objects first "
            "(e.g. pickle.dumps(value), or a numpy array of a numeric dtype)"
        )
    if not mv.c_contiguous:
        raise ValueError(
            "values must be C-contiguous; pass np.ascontiguousarray(value) or bytes(value)"
        )
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv


def _arena_word(seg: Segment, i: int) -> int:
    return int(seg.words[i])  # one aligned 8-byte load


class TableBase:
    """A handle's state: the header mapping, the maps of index and arenas, and the checks.

    Attributes
    ----------
    name : str
        The table name.
    table_type : str
        ``"set"``, ``"ordered_set"``, ``"bag"`` or ``"duplicate_bag"``.
    access : str
        ``"public"``, ``"protected"`` or ``"private"``.
    """

    # class-level defaults: close() is safe on a half-built object.  ``_hdr``, ``_H`` and
    # ``_idx`` are None only on a closed (or half-built) handle, which every operation
    # checks first (``_check_open``, ``_check_alive``); they are typed as mapped so that
    # the hot paths need no casts (a cast is a call).
    _hdr: Segment = None  # type: ignore[assignment]
    _H: memoryview = None  # type: ignore[assignment]
    _idx_seg: Segment | None = None
    _idx: memoryview = None  # type: ignore[assignment]
    _wseg: Segment | None = None
    _dedicated: Segment | None = None  # a big record's own segment, while it is written
    _lease: Any = None  # a record reserved ahead for this handle's next value (_reserve)
    _lease_polled = False  # the poll thread looks at _lease (_reserve)
    # the undo log while this handle's atomic writer session runs (see _session, _undo)
    _undo: UndoLog | None = None
    _undo_map: UndoLog | None = None  # the log's mapping, kept between sessions
    _undo_rooms: list[tuple[Segment, int, int]] = []  # freed in it (_arenas: "Recycling")
    _atomic_rooms: bool = False  # the rooms kept are an atomic commit's (_session)
    _rooms_at: int = -(1 << 62)  # monotonic ns this handle last freed others' rooms (_space)
    _rooms_seen: int = 0  # the garbage of other handles then (_space)
    _closed: bool = True
    _deleted: bool = False
    name: str = ""

    def __init__(self, name: str, hdr: Segment, readonly: bool) -> None:
        self.name = name
        self._hdr = hdr
        self._ro = readonly
        self._asked_ro = False  # the caller asked for read-only: never remapped to write
        self._pid = os.getpid()
        self._arenas: dict[int, Segment] = {}
        self._idx_gen = -1
        self._mask = 0
        # the index view and its mask, published together for threads sharing the handle
        # (see IndexMixin._load_index); empty until the first load
        self._imap: tuple[memoryview, int] = (memoryview(bytes(16)).cast("Q"), 0)
        self._idx_swap = threading.Lock()
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
        # the user the table's segments belong to: another user's file among its names is
        # never mapped, adopted, reused or unlinked (see _segment.take_name)
        self._uid = hdr.owner_uid()
        self._H = hdr.buf.cast("Q")
        self._reclaim_seen = self._H[L.H_RECLAIM]
        self._hint_seg: Segment | None = None  # read-only handles: see _hint_words
        self._hint_H: memoryview | None = None
        self._hint_tried = False
        self._lock = self._new_lock()
        self._reads = 0
        self._size_hint = 0  # bytes a bulk write is about to store (sizes new arenas)
        self._closed = False

    # ------------------------------------------------------------------ identity

    def _owner_start(self) -> int:
        return int(self._H[L.H_OWNER_START])

    def _store_persistent(self) -> None:
        """Mark the table persistent: the options byte 19, stored only at creation and here
        (under the writer lock; the owner's exit reads it then)."""
        self._hdr.buf[19] = 1
        self.persistent = True

    def _new_lock(self) -> WriterLock:
        """The writer lock: its own descriptor of the header (opened on first use, closed in
        forked children) and the two hint words that make it fair (see :mod:`.._lock`)."""
        return WriterLock(
            self._hdr.reopen_path(),
            self._holder,
            self.name,
            hint_words=self._lock_hint,
        )

    def _lock_hint(self) -> memoryview | None:
        W = self._hint_words()
        return None if W is None else W[L.H_LOCK_WANT : L.H_LOCK_LAST + 1]

    def _hint_words(self) -> memoryview | None:
        """The header as writable words, for the hints only: the lock's ``want`` and
        ``grants`` and the reader-wait stamp, which ask other processes to take turns and
        are no table data.  A read-only handle gets them through a second, writable
        mapping of the header page when this user may write it (checked to be the same
        table); None when it may not (another user's protected table).
        """
        H = self._H
        if H is None or not self._ro:
            return H
        if self._hint_H is None and not self._hint_tried:
            self._hint_tried = True
            try:
                seg = Segment.attach(L.segment_names(self.name)[0], keep_fd=True)
            except Exception:  # noqa: BLE001 - no permission, or gone: no hints
                return None
            if not seg.same_file(self._hdr):
                seg.close()  # the name holds another table now
                return None
            seg.close_fd()
            self._hint_seg, self._hint_H = seg, seg.buf.cast("Q")
        return self._hint_H

    def _drop_hints(self) -> None:
        """Release the hint mapping of :meth:`_hint_words` (close, remap)."""
        W, self._hint_H = self._hint_H, None
        seg, self._hint_seg = self._hint_seg, None
        self._hint_tried = False
        if W is not None:
            with contextlib.suppress(BufferError):
                W.release()
        if seg is not None:
            seg.close()

    def _holder(self) -> int:
        H = self._H
        return H[L.H_HOLDER] if H is not None else 0

    # ------------------------------------------------------------------ checks

    def _not_found(self) -> TableNotFoundError:
        if _seg_exists(L.segment_names(self.name)[0]):  # the name holds another table now
            return TableNotFoundError(
                f"table {self.name!r} was replaced by a new table of the same name (a "
                "create with overwrite=True, or a delete and a create); this handle still "
                f"refers to the old one. Open the new one: sharedzarr.open({self.name!r}) "
                f"or sharedzarr.Table.attach({self.name!r})"
            )
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

    def _same_table(self) -> None:
        """A writer, before it creates, renames or unlinks a segment by name: stop if the
        table was deleted.  (Holding the writer lock, the name still leads to this table:
        see ``_catalog._destroy``; a deleter that could not get the lock marks the header
        and waits for the writer to leave.)  The header removed from outside (``rm -f``,
        which sets no flag) stops it too: a segment made now would be left over."""
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

    def _corrupt(
        self, ref: int, what: str = "points outside its data segment"
    ) -> CorruptTableError:
        return CorruptTableError(
            f"table {self.name!r}: reference {ref:#x} {what}; the table is damaged "
            f"(`sharedzarr export` copies what is readable, `sharedzarr rm {self.name}` "
            "removes it)"
        )

    def _decode_key(self, kb: bytes) -> Any:
        """A stored key's value; CorruptTableError for bytes that do not decode."""
        try:
            return decode_key(kb)
        except Exception as e:  # msgpack raises ValueError and friends
            raise CorruptTableError(
                f"table {self.name!r}: a stored key does not decode ({e}); the table is "
                f"damaged (`sharedzarr rm {self.name}` removes it)"
            ) from None

    def _read_only_handle(self) -> AccessDeniedError:
        return AccessDeniedError(
            f"this handle of table {self.name!r} was opened read-only (readonly=True, or "
            f"mode='r'); attach or open it again without that to write"
        )

    def _kept_changing(self) -> SharedZarrError:
        return SharedZarrError(
            f"table {self.name!r}: a read was retried {_READ_RETRIES} times because writers "
            "kept reusing memory under it; retry, or read under table.writer()"
        )

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

    def _seg_name_idx(self, gen: int) -> str:
        return f"{L.PREFIX}{self.name}.idx.{gen}"

    def _seg_name_arena(self, aid: int) -> str:
        return f"{L.PREFIX}{self.name}.a{aid}"
