"""The shared-memory byte format of a table: a spec, pinned by a golden-bytes test.

Every offset and struct format of the on-memory layout lives here and nowhere
else.  All integers are little-endian; every 64-bit word that other processes
read while a writer runs is 8-byte aligned and is loaded and stored whole
(see :func:`sharedzarr._table` for the memory-ordering argument).

Segments of table ``T`` (``ls /dev/shm`` shows the table name in each)::

    sz.T.hdr        header, HEADER_SIZE bytes (one page)
    sz.T.idx.<gen>  hash index of generation <gen>
    sz.T.a<id>      data arena <id> (an id is never reused; an arena's memory may be,
                    under a new id, see "Reuse" below)

Header byte map (``H_*`` are word indices: byte offset // 8)::

    off  size  field
      0     8  magic b"SZTABLE\\0"
      8     4  layout version (u32)            12  4  header size (u32)
     16     1  table type  17 1 access  18 1 named_table  19 1 persistent
     20     4  segment mode (u32)
     24     8  owner pid                      32  8  owner start time (ticks)
     40     8  heir pid (0: none)             48  8  heir start time
     56     8  created (f64, unix time)
     64     8  deleted flag                   72  8  index generation (published)
     80     8  lock holder pid                88  8  dirty: pid of a writer mid-operation
     96     8  write count                   104  8  objects (ETS size)
    112     8  keys (distinct live keys)     120  8  used index slots (incl. tombstones)
    128     8  live value bytes              136  8  live record bytes
    144     8  garbage record bytes          152  8  current arena id (0: none)
    160     8  next arena id                 168  8  reclaim generation
    176     8  reuse epoch: bumped before a retired arena is written again
    184     8  operation sequence: odd while a writer session is open (see "Operations")
    192    32  free-arena pool: POOL_SLOTS x [u64 arena id (0: empty)][u64 retired at,
               CLOCK_MONOTONIC ns]
    224     8  lock hint: pid of a process waiting for the writer lock (sharedzarr._lock)
    232     8  lock hint: how many times the writer lock was granted
    240     8  lock hint: release sequence, bumped at each release; a waiting process
               sleeps on its futex (low 32 bits) and the releaser wakes it
    248     8  lock hint: pid of the process that released the writer lock last
    256     8  reader wait: CLOCK_MONOTONIC ns at which a snapshot reader asked writers to
               pause (0: none; see "Operations")
    264     8  recoveries: how many times a writer repaired after a dead one

Index segment::

      0     8  magic b"SZINDEX\\0"            8  8  capacity (slots, a power of two)
     16     8  generation                    24..63 reserved
     64        capacity slots of 16 bytes: [u64 key hash][u64 reference]

A slot with hash 0 is empty (computed hashes are never 0).  Reference 0 means
"being filled", 1 is a tombstone; otherwise ``(arena_id << 40) | offset``.

Arena segment::

      0     8  magic b"SZARENA\\0"            8  8  size
     16     8  used (bump pointer)           24  8  reserved (fallocated) bytes
     32     8  live record bytes             40  8  garbage record bytes
     48     8  id: the arena's id, 0 once retired (readers validate against it)
     56     8  no-reuse bits: 1 a reader holds a zero-copy view, 2 a big value's own
               segment (0: reusable)
     64        records, each 64-byte aligned

Reuse (why a rewrite costs a copy, not fresh pages)
    An arena whose records are all garbage is *retired*: the writer stores 0 in its id
    word and parks it in the header's pool.  At least ``REUSE_GRACE_NS`` later, and only if
    no reader marked it no-reuse, a writer bumps the reuse epoch, renames the segment to a
    fresh id and appends records over the old ones (its pages are already allocated and
    mapped).  Copying readers load the epoch before their lookup and again after their copy
    and retry when it moved; a reader handing out a zero-copy view marks the arena no-reuse
    and then checks its id word (see ``sharedzarr._table``).

Write count (what cached readers trust)
    Every store that changes a slot's record (insert, overwrite, delete) is followed by a
    bump of the write count before the record it replaced becomes garbage (one bump may
    follow a batch of stores, see ``sharedzarr._table._write``); moving a record in a
    compaction is not, because the old
    bytes stay in place until their arena is unlinked or reused.  Unlinking or reusing an
    arena, recovery after a dead writer, and deleting the table bump the write count too
    (besides their own counters).  A reader that cached a key's view (or its absence)
    together with the write count therefore loads only the write count while it is
    unchanged, before and after its copy: no index page, no record.  When the count moved
    it compares the key's slot, and drops every cached view if the reclaim counter moved.
    Recovery's bump means a slot stored just before a crash is never hidden.

Record (immutable once published)::

      0     8  total length (a multiple of 64)
      8     4  key length                    12  4  number of values n
     16   8*n  value lengths
               key bytes (msgpack), zero padding to a multiple of 64
               value 0, padding to 64, value 1, padding to 64, ...

Values start 64-byte aligned, so numpy views of any dtype are aligned.
"""

from __future__ import annotations

import struct
from typing import Any

MAGIC = b"SZTABLE\0"
INDEX_MAGIC = b"SZINDEX\0"
ARENA_MAGIC = b"SZARENA\0"
VERSION = 3  # 3: the writer lock has four hint words (28-31); reader-wait moved to 32
HEADER_SIZE = 4096
PREFIX = "sz."

# header: fixed fields
HDR_FIXED = struct.Struct("<8sII4BIQQQQd")  # magic .. created, 64 bytes
assert HDR_FIXED.size == 64

# header word indices (byte offset // 8)
H_OWNER_PID = 3
H_OWNER_START = 4
H_HEIR_PID = 5
H_HEIR_START = 6
H_DELETED = 8
H_GEN = 9
H_HOLDER = 10
H_DIRTY = 11
H_WRITES = 12
H_OBJECTS = 13
H_KEYS = 14
H_USED_SLOTS = 15
H_LIVE_VALUE = 16
H_LIVE_RECORD = 17
H_GARBAGE = 18
H_CUR_ARENA = 19
H_NEXT_ARENA = 20
H_RECLAIM = 21
H_REUSE = 22
H_OPSEQ = 23
H_POOL = 24  # POOL_SLOTS pairs of words: arena id, retired-at ns
POOL_SLOTS = 2
H_LOCK_WANT = 28  # the writer lock's hint words: [want pid, grants, release sequence,
H_LOCK_GRANTS = 29  # last releaser pid] (sharedzarr._lock; a waiter sleeps on the sequence
H_LOCK_SEQ = 30  # word's futex)
H_LOCK_LAST = 31
H_READER_WAIT = 32  # CLOCK_MONOTONIC ns at which a reader asked writers to pause (0: none)
H_RECOVERIES = 33  # recoveries so far (a reserved record's writer re-counts its arena after one)
H_UNDO = 34  # bytes of an atomic session's undo log that are valid (0: none open; _table._undo)
H_WORDS = HEADER_SIZE // 8

TABLE_TYPES = ("set", "ordered_set", "bag", "duplicate_bag")
ACCESS_LEVELS = ("public", "protected", "private")

# index
INDEX_HEADER = 64
SLOT = 16
INDEX_HDR = struct.Struct("<8sQQ")
MIN_CAPACITY = 64
MAX_LOAD = 0.5  # grow or rebuild when used slots (incl. tombstones) exceed this

# references
EMPTY_REF = 0
TOMBSTONE = 1
OFFSET_BITS = 40
OFFSET_MASK = (1 << OFFSET_BITS) - 1
MAX_ARENA_ID = (1 << 24) - 1

# arenas
ARENA_HEADER = 64
ARENA_HDR = struct.Struct("<8sQQQQQQQ")
assert ARENA_HDR.size == 64
A_SIZE = 1
A_USED = 2
A_RESERVED = 3
A_LIVE = 4
A_GARBAGE = 5
A_ID = 6
A_NOREUSE = 7
NOREUSE_VIEW = 1  # bit: a reader handed out a zero-copy view into it
NOREUSE_OWN = 2  # bit: a big value's own segment (never pooled; its room may be recycled)
REUSE_GRACE_NS = 200_000  # retired -> reusable: far beyond any store-buffer delay
# epoch bump -> a garbage record's room recycled (see sharedzarr._table._arenas): still
# orders of magnitude beyond a store-buffer delay; short, because the rooms freed this
# long ago are the memory a rewrite needs on top of the data
RECYCLE_GRACE_NS = 50_000
MIN_ARENA = 4 << 20  # 4 MiB (sparse: only what records use is allocated)
MAX_ARENA = 64 << 20  # 64 MiB; values over a quarter of an arena get an arena of their own
RESERVE_STEP = 256 << 10  # fallocate at most this much ahead of the bump pointer

# records
ALIGN = 64
REC_HEAD = struct.Struct("<QII")  # total, key length, n values
REC_HEAD1 = struct.Struct("<QIIQ")  # the same plus the first value length


def align(n: int) -> int:
    """Round ``n`` up to a multiple of :data:`ALIGN`."""
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def make_ref(arena_id: int, offset: int) -> int:
    """Pack an arena id and an offset into a 64-bit reference."""
    return (arena_id << OFFSET_BITS) | offset


def record_layout(key_len: int, value_lens: list[int]) -> tuple[int, list[int]]:
    """Return ``(total length, [value offsets])`` of a record, offsets relative to its start."""
    pos = align(16 + 8 * len(value_lens) + key_len)
    offs = []
    for n in value_lens:
        offs.append(pos)
        pos += align(n)
    return max(pos, ALIGN), offs


def value_offset(key_len: int, n_values: int) -> int:
    """Offset of the first value in a record."""
    return align(16 + 8 * n_values + key_len)


def one_value_record(key_len: int, nbytes: int) -> tuple[int, int]:
    """Return ``(total length, value offset)`` of a record with one value of ``nbytes``."""
    vo = (16 + 8 + key_len + ALIGN - 1) & ~(ALIGN - 1)
    return (vo + ((nbytes + ALIGN - 1) & ~(ALIGN - 1)) if nbytes else max(vo, ALIGN)), vo


def pack_head1(buf: memoryview, off: int, key: bytes, total: int, nbytes: int) -> None:
    """Write the head and key of a one-value record at ``buf[off:]`` (the value is written
    at its offset, :func:`one_value_record`, by the caller)."""
    REC_HEAD1.pack_into(buf, off, total, len(key), 1, nbytes)
    buf[off + 24 : off + 24 + len(key)] = key


def pack_record(buf: memoryview, off: int, key: bytes, values: list[Any]) -> int:
    """Write a record at ``buf[off:]``; return its total length.

    ``buf`` is a writable buffer (an arena memoryview); ``values`` are buffers
    of bytes (``memoryview(v).cast("B")``).  Padding is not written: nothing reads it
    (lengths bound every key and value), and a reused arena holds old bytes there.
    """
    if len(values) == 1 and not hasattr(values[0], "fill"):  # the common record
        v = values[0]
        n = v.nbytes
        total, vo = one_value_record(len(key), n)
        pack_head1(buf, off, key, total, n)
        if n:
            buf[off + vo : off + vo + n] = v
        return total
    lens = [v.nbytes for v in values]
    total, offs = record_layout(len(key), lens)
    REC_HEAD.pack_into(buf, off, total, len(key), len(values))
    if lens:
        struct.pack_into(f"<{len(lens)}Q", buf, off + 16, *lens)
    kpos = off + 16 + 8 * len(lens)
    buf[kpos : kpos + len(key)] = key
    for v, vo, n in zip(values, offs, lens, strict=True):
        if n:
            fill = getattr(v, "fill", None)
            if fill is not None:  # writes itself (Table.insert_filled)
                fill(buf[off + vo : off + vo + n])
            else:
                buf[off + vo : off + vo + n] = v
    return total


def index_bytes(capacity: int) -> int:
    """Size in bytes of an index segment with ``capacity`` slots."""
    return INDEX_HEADER + capacity * SLOT


def segment_names(table: str) -> tuple[str, str, str]:
    """Return the header name and the index/arena name prefixes of ``table``."""
    base = PREFIX + table
    return base + ".hdr", base + ".idx.", base + ".a"


def undo_segment_name(table: str) -> str:
    """Return the name of ``table``'s undo log segment (atomic sessions, ``_table._undo``)."""
    return PREFIX + table + ".undo"


def table_of_segment(segment: str) -> str | None:
    """The table an index, arena or undo segment belongs to (``sz.T.a3``, ``sz.T.idx.2`` and
    ``sz.T.undo`` -> ``T``); None for a header or a name that is not one of ours (the
    inverse of :func:`segment_names` and :func:`undo_segment_name`)."""
    if not segment.startswith(PREFIX) or segment.endswith(".hdr"):
        return None
    head, _, tail = segment[len(PREFIX) :].rpartition(".")
    if tail == "undo" and head:
        return head
    if tail.startswith("a") and tail[1:].isdigit() and head:
        return head
    if tail.isdigit():
        h2, _, mid = head.rpartition(".")
        if mid == "idx" and h2:
            return h2
    return None
