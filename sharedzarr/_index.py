"""The hash index's pure parts: key encoding, the stable hash, key order, slot placement.

No OS calls: everything here works on bytes and numpy arrays (the byte format of
the index segment is in :mod:`sharedzarr._layout`; the lock-free probe that reads
it lives in :meth:`sharedzarr._table._index.IndexMixin._find`, inlined for speed).

* Keys are encoded with msgpack (lists and tuples both as arrays, so tuples come
  back as tuples); dicts are rejected by type.
* The slot hash is CRC-32 spread over 64 bits by a Fibonacci multiplier, the same
  in every process (never Python's ``hash()``); equal hashes are resolved by
  comparing key bytes.  DESIGN.md suggests blake2b: CRC-32 is 4x cheaper here
  (0.3 vs 1.2 us per key) and the byte compare makes its 32 bits of entropy enough.
* Slots are placed by linear probing; :func:`build_slots` rebuilds a whole index
  generation at once, vectorised.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import msgpack
import numpy as np

__all__ = [
    "build_slots",
    "place_slots",
    "plan_slots",
    "decode_key",
    "encode_key",
    "encode_keys",
    "key_hash",
    "key_hashes",
    "sort_key",
]


def _check_key(key: Any, depth: int = 0) -> None:
    if key is None or isinstance(key, (str, bytes, int, float, bool, np.generic)):
        return
    if isinstance(key, (tuple, list)) and depth < 32:
        for k in key:
            _check_key(k, depth + 1)
        return
    raise TypeError(
        f"unsupported key type {type(key).__name__}: keys are str, int, float, bool, None, "
        "bytes, or tuples/lists of these (e.g. ('chunk', (0, 1)))"
    )


def encode_key(key: Any) -> bytes:
    """Encode a key to its canonical msgpack bytes (lists encode as tuples).

    Raises
    ------
    TypeError
        For a key that is not msgpack-encodable as a supported type.
    """
    try:
        kb: bytes = _packer.pack(key)
    except (TypeError, ValueError, OverflowError) as e:
        _packer.reset()
        _check_key(key)
        raise TypeError(f"key {key!r} cannot be encoded: {e} (integers must fit in 64 bits)") from e
    if not kb.isascii() and _MAP_BYTES.search(kb):
        _check_key(key)  # may hold a dict (a msgpack map): reject it by type
    return kb


_MAP_BYTES = re.compile(rb"[\x80-\x8f\xde\xdf]")

#: Key types whose encoding needs no check: msgpack packs them as themselves (never a map).
_PLAIN_KEYS = frozenset((bytes, str, int))


def encode_keys(keys: Any) -> list[bytes]:
    """:func:`encode_key` of each of ``keys`` (a sequence), in one C-level pass when they
    are all ``bytes``, ``str`` or ``int``.

    Raises
    ------
    TypeError
        As :func:`encode_key`, for the first key that cannot be encoded.
    """
    if set(map(type, keys)) <= _PLAIN_KEYS:
        try:
            return list(map(_packer.pack, keys))
        except (TypeError, ValueError, OverflowError):
            _packer.reset()  # (an int out of range: encode_key names it below)
    return [encode_key(k) for k in keys]


def _numpy_scalar(o: Any) -> Any:
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"can not serialize {type(o).__name__!r} object")


_packer = msgpack.Packer(use_bin_type=True, default=_numpy_scalar)


def decode_key(kb: bytes) -> Any:
    """Decode msgpack key bytes (arrays come back as tuples)."""
    return msgpack.unpackb(kb, use_list=False, raw=False, strict_map_key=False)


def key_hash(kb: bytes) -> int:
    """Stable 64-bit hash of encoded key bytes (never 0; the same in every process).

    CRC-32 spread over 64 bits by a Fibonacci multiplier: slot placement uses
    the low bits, which keep CRC-32's distribution; equal hashes are resolved
    by comparing the key bytes, so 32 bits of entropy only cost a compare.
    """
    return ((zlib.crc32(kb) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) or 1


def key_hashes(kbs: list[bytes]) -> np.ndarray:
    """:func:`key_hash` of each of ``kbs``, as a uint64 array (the multiply wraps as the
    scalar one's mask does)."""
    h = np.fromiter(map(zlib.crc32, kbs), dtype=np.uint64, count=len(kbs))
    h *= np.uint64(0x9E3779B97F4A7C15)
    h[h == 0] = 1
    return h


_TYPE_ORDER = {type(None): 0, bool: 1, int: 1, float: 1, str: 2, bytes: 3, tuple: 4, list: 4}


def sort_key(k: Any) -> tuple[Any, ...]:
    """A total order on keys (numbers < str < bytes < tuples), like ETS term order."""
    t = _TYPE_ORDER.get(type(k), 5)
    if t == 4:
        return (t, len(k), tuple(sort_key(x) for x in k))
    if t == 1:
        return (
            t,
            float(k) if not isinstance(k, int) or abs(k) < 2**53 else k,
            0 if isinstance(k, int) else 1,
        )
    return (t, k)


def build_slots(live: np.ndarray, cap: int, out: np.ndarray | None = None) -> np.ndarray:
    """Place ``(hash, ref)`` rows into a linear-probing table of ``cap`` slots (vectorised).

    Rows sorted by home slot are placed at ``max(home, previous + 1)``, a
    cumulative maximum; the few that run past the end wrap to the first free
    slots from 0.  This is exactly the table that inserting the rows one by one in
    order of home slot (stable) builds.
    ``out``: a zeroed ``(cap, 2)`` uint64 array to build in (a new index segment's
    memory, which saves a copy); returned.  The two halves, :func:`plan_slots` (from
    the hashes alone) and :func:`place_slots`, may run apart: a bulk insert plans while
    it allocates its records, whose references the placing needs.
    """
    if out is None:
        out = np.zeros((cap, 2), dtype=np.uint64)
    place_slots(live, plan_slots(live[:, 0], cap), out)
    return out


def plan_slots(hashes: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Where :func:`build_slots` puts the rows of ``hashes`` (uint64) in ``cap`` slots:
    ``(order, pos)``, the rows in placing order and each one's slot (``>= cap``: it wraps
    to the first free slot, see :func:`place_slots`)."""
    n = len(hashes)
    if n == 0:
        return np.empty(0, np.intp), np.empty(0, np.int64)
    mask = np.uint64(cap - 1)
    home = hashes & mask
    bits = max((n - 1).bit_length(), 1)
    if (cap - 1).bit_length() + bits <= 63:
        # one sort of (home, row number) packed in a word: the stable order, and faster
        # than a stable argsort (as int64: numpy sorts it faster than uint64)
        packed = home << np.uint64(bits)
        packed |= np.arange(n, dtype=np.uint64)
        packed = packed.view(np.int64)
        packed.sort()
        order = (packed & ((1 << bits) - 1)).astype(np.intp)
        packed >>= bits
        home = packed
    else:
        order = np.argsort(home, kind="stable")
        home = home[order].astype(np.int64)
    k = np.arange(n, dtype=np.int64)
    home -= k
    pos = np.maximum.accumulate(home)
    pos += k
    return order, pos


def place_slots(live: np.ndarray, plan: tuple[np.ndarray, np.ndarray], out: np.ndarray) -> None:
    """Store the ``(hash, ref)`` rows of ``live`` into the zeroed ``(cap, 2)`` table
    ``out`` as ``plan`` (:func:`plan_slots` of their hashes) says."""
    order, pos = plan
    if len(order) == 0:
        return
    cap = len(out)
    # rows move as opaque 16-byte items: one copy each (a 2-d fancy index is ~7x slower)
    rows = np.ascontiguousarray(live).view("V16").reshape(-1)[order]
    slots = out.view("V16").reshape(-1)
    fit = pos < cap
    if fit.all():
        slots[pos] = rows
        return
    slots[pos[fit]] = rows[fit]
    free = np.nonzero(out[:, 0] == 0)[0]
    spill = rows[~fit]
    slots[free[: len(spill)]] = spill
