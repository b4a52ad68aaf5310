"""sharedzarr.Array on both built-in storages (memory and shm)."""

from __future__ import annotations

import pickle
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sharedzarr import storage as sz_storage
from sharedzarr.array import Array, create
from sharedzarr.array import open as sz_open
from sharedzarr.errors import AccessDeniedError, TableExistsError, TableNotFoundError

STORAGES = ["memory", "shm"]

DTYPES = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
]  # fmt: skip


def _drop(name: str, storage: str) -> None:
    cls = sz_storage.get(storage)
    if cls.exists(name):
        try:
            cls.open(name).delete()
        except TableNotFoundError:
            pass


@pytest.fixture(params=STORAGES)
def storage(request: pytest.FixtureRequest) -> str:
    """The storage id under test."""
    return request.param


@pytest.fixture
def make(storage: str) -> Iterator[Callable[..., Array]]:
    """Create arrays on the storage under test; all are deleted after the test."""
    made: list[Array] = []

    def _make(shape: Any, chunks: Any, dtype: Any = "float64", **kw: Any) -> Array:
        kw.setdefault("storage", storage)
        a = create(shape, chunks, dtype, **kw)
        made.append(a)
        return a

    yield _make
    for a in made:
        _drop(a.name, a.storage)
        a.close()


def _snapshot(a: Array) -> tuple[Any, ...]:
    return (a.shape, a.list_chunks(), a.get_slice().copy(), a.backend.write_count())


# -- the seed example ---------------------------------------------------------------------------


def test_seed_example(storage: str, make: Callable[..., Array]) -> None:
    array = make(shape=(1000, 1000), chunks=(100, 100), dtype="float64", table_name="my_array_data")
    data = np.random.rand(100, 100)
    array.set_slice(data, start=(0, 0), stop=(100, 100))
    result = array.get_slice(start=(0, 0), stop=(100, 100))
    np.testing.assert_array_equal(result, data)
    same = sz_open("my_array_data", storage=storage)
    np.testing.assert_array_equal(same.get_slice(start=(0, 0), stop=(100, 100)), data)
    assert same.list_chunks() == [(0, 0)]
    raw = same.backend.read_chunk((0, 0))
    np.testing.assert_array_equal(np.frombuffer(raw, "<f8").reshape(100, 100), data)
    same.close()


def test_register_shm_is_idempotent() -> None:
    sz_storage.register(sz_storage.SharedMemoryBackend)
    sz_storage.register(sz_storage.SharedMemoryBackend)
    assert sz_storage.get("shm") is sz_storage.SharedMemoryBackend


# -- properties -----------------------------------------------------------------------------


def test_properties(make: Callable[..., Array], storage: str) -> None:
    a = make(
        (10, 7), (3, 4), "int16", fill_value=-1, attributes={"u": "m"},
        dimension_names=["y", "x"], table_name="props-test",
    )  # fmt: skip
    assert a.shape == (10, 7)
    assert a.chunks == (3, 4)
    assert a.dtype == np.dtype("int16")
    assert a.fill_value == -1
    assert a.ndim == 2
    assert a.size == 70
    assert a.nbytes == 140
    assert a.nchunks == 8
    assert a.cdata_shape == (4, 2)
    assert a.nchunks_initialized == 0
    assert a.name == "props-test"
    assert a.storage == storage
    assert a.mode == "r+" and not a.readonly
    assert a.dimension_names == ("y", "x")
    assert dict(a.attrs) == {"u": "m"}
    assert a.compressor == []
    assert len(a) == 10
    assert "props-test" in repr(a)
    info = a.info
    assert info["shape"] == (10, 7) and info["dtype"] == "int16" and info["fill_value"] == -1
    assert info["nchunks_initialized"] == 0 and info["storage"] == storage
    a[0, 0] = 5
    assert a.nchunks_initialized == 1
    assert a.info["nchunks_initialized"] == 1


def test_unwritten_reads_fill_and_is_not_stored(make: Callable[..., Array]) -> None:
    a = make((5, 5), (2, 2), "float32", fill_value=float("nan"))
    assert np.isnan(a[...]).all()
    assert a.list_chunks() == []
    assert np.isnan(a.read_chunk((2, 2))).all()


# -- reading and writing ------------------------------------------------------------------------


def test_get_set_slice(make: Callable[..., Array]) -> None:
    a = make((10, 7), (3, 4), "float64", fill_value=2.5)
    ref = np.full((10, 7), 2.5)
    d = np.arange(20.0).reshape(4, 5)
    a.set_slice(d, start=(2, 1), stop=(6, 6))
    ref[2:6, 1:6] = d
    np.testing.assert_array_equal(a.get_slice(), ref)
    np.testing.assert_array_equal(a.get_slice((1, 1), (9, 3)), ref[1:9, 1:3])
    # stop defaults to start + data.shape
    a.set_slice(np.ones((2, 2)), start=(8, 5))
    ref[8:10, 5:7] = 1
    np.testing.assert_array_equal(a.get_slice(), ref)
    # a scalar fills the region; start/stop default to the whole array
    a.set_slice(7, start=(0, 0), stop=(1, 7))
    ref[0] = 7
    np.testing.assert_array_equal(a.get_slice(), ref)
    a.set_slice(3)
    np.testing.assert_array_equal(a.get_slice(), np.full((10, 7), 3.0))
    # empty regions are fine
    assert a.get_slice((4, 4), (4, 6)).shape == (0, 2)
    a.set_slice(np.empty((0, 2)), start=(4, 4), stop=(4, 6))


def test_get_slice_out(make: Callable[..., Array]) -> None:
    a = make((6, 6), (4, 4), "float32")
    a[...] = np.arange(36, dtype="float32").reshape(6, 6)
    out = np.zeros((3, 5), "float64")
    got = a.get_slice((1, 1), (4, 6), out=out)
    assert got is out
    np.testing.assert_array_equal(out, np.arange(36).reshape(6, 6)[1:4, 1:6])
    view = np.zeros((12, 12), "float32")[::2, ::2]  # a non-contiguous out works
    a.get_slice(out=view)
    np.testing.assert_array_equal(view, a[...])
    with pytest.raises(ValueError, match="shape"):
        a.get_slice(out=np.zeros((6, 5), "float32"))
    with pytest.raises(TypeError, match="dtype"):
        a.get_slice(out=np.zeros((6, 6), "int32"))
    ro = np.zeros((6, 6), "float32")
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        a.get_slice(out=ro)
    with pytest.raises(TypeError):
        a.get_slice(out=[0] * 36)  # type: ignore[arg-type]


def test_numpy_indexing(make: Callable[..., Array]) -> None:
    a = make((9, 8, 3), (4, 3, 2), "int32")
    ref = np.arange(9 * 8 * 3, dtype="int32").reshape(9, 8, 3)
    a[...] = ref
    for key in [
        3, -1, (2, 5), (2, 5, 1), (slice(2, 9), slice(None, None, 3)), (..., 0),
        (slice(None, None, -1),), (slice(7, 1, -2), ..., slice(None, None, -1)), (1, ..., 2),
        (slice(100, 200),), (),
    ]:  # fmt: skip
        got = a[key]
        np.testing.assert_array_equal(got, ref[key])
        assert np.shape(got) == np.shape(ref[key])
    assert isinstance(a[1, 2, 0], np.integer)
    # writes with scalar broadcasting, steps and negative indices
    a[2:9, ::3] = 0
    ref[2:9, ::3] = 0
    a[-1, ::-2, 1] = np.array([1, 2, 3, 4])
    ref[-1, ::-2, 1] = [1, 2, 3, 4]
    a[..., 2] = np.arange(8)  # broadcast over the first axis
    ref[..., 2] = np.arange(8)
    np.testing.assert_array_equal(a[...], ref)
    np.testing.assert_array_equal(np.asarray(a), ref)
    np.testing.assert_array_equal(np.asarray(a, dtype="float64"), ref.astype("float64"))
    assert [x.shape for x in a][:1] == [(8, 3)]


def test_compressed_roundtrip(make: Callable[..., Array]) -> None:
    for compressor in ["zlib", "gzip", "zstd", "blosc", "lz4"]:
        a = make((20, 30), (7, 8), "int64", compressor=compressor, fill_value=-9)
        ref = np.full((20, 30), -9, "int64")
        a[3:17, 5:] = np.arange(14 * 25).reshape(14, 25)
        ref[3:17, 5:] = np.arange(14 * 25).reshape(14, 25)
        a[0, 0] = 1  # partial write: read-modify-write of a compressed chunk
        ref[0, 0] = 1
        np.testing.assert_array_equal(a[...], ref)
        assert a.compressor[0]["name"] in ("gzip", "zstd", "blosc", "numcodecs.lz4")
        stored = bytes(a.backend.read_chunk((1, 1)))
        assert len(stored) < 7 * 8 * 8
        np.testing.assert_array_equal(a.read_chunk((1, 1)), ref[7:14, 8:16])
        with pytest.raises(ValueError, match="uncompressed"):
            a.read_chunk((1, 1), copy=False)


def test_big_endian_storage(make: Callable[..., Array], storage: str) -> None:
    a = make((5,), (2,), "float64")
    raw = bytearray(a.backend.read_metadata())
    a.backend.write_metadata(bytes(raw).replace(b'"endian": "little"', b'"endian": "big"'))
    b = sz_open(a.name, storage=storage)
    b[...] = np.arange(5.0)
    assert bytes(b.backend.read_chunk((0,))) == np.array([0.0, 1.0], ">f8").tobytes()
    np.testing.assert_array_equal(b[...], np.arange(5.0))
    assert b.read_chunk((1,), copy=False).dtype == np.dtype(">f8")
    b.close()


def test_big_endian_2d_windows(make: Callable[..., Array], storage: str) -> None:
    """a[r0:r1, c0:c1] copies from cached views of the stored (big-endian) chunks."""
    a = make((5, 7), (2, 3), "float64", fill_value=-1.0)
    raw = bytearray(a.backend.read_metadata())
    a.backend.write_metadata(bytes(raw).replace(b'"endian": "little"', b'"endian": "big"'))
    b = sz_open(a.name, storage=storage)
    ref = np.full((5, 7), -1.0)
    ref[:4, :6] = np.arange(24.0).reshape(4, 6)
    b[:4, :6] = ref[:4, :6]
    for r0, r1, c0, c1 in [(1, 4, 2, 6), (0, 5, 0, 7), (4, 5, 5, 7), (0, 2, 0, 3)]:
        for _ in range(2):  # the second read comes from the cached views
            np.testing.assert_array_equal(b[r0:r1, c0:c1], ref[r0:r1, c0:c1])
    b[1:3, 1:5] = 100.0  # rewritten chunks: the cache follows
    ref[1:3, 1:5] = 100.0
    np.testing.assert_array_equal(b[0:5, 0:7], ref)
    b.close()


# -- chunks ---------------------------------------------------------------------------------


def test_read_chunk_views(make: Callable[..., Array]) -> None:
    a = make((5, 5), (2, 3), "uint16", fill_value=7)
    a[...] = np.arange(25).reshape(5, 5)
    c = a.read_chunk((2, 1))
    assert c.shape == (2, 3)  # whole chunk, padding included
    np.testing.assert_array_equal(c[:1, :2], [[23, 24]])
    np.testing.assert_array_equal(c[1:, :], 7)
    np.testing.assert_array_equal(c[:, 2:], 7)
    c[0, 0] = 999  # a copy
    assert a[4, 3] == 23
    v = a.read_chunk((0, 0), copy=False)
    assert not v.flags.writeable
    with pytest.raises(ValueError):
        v[0, 0] = 1
    np.testing.assert_array_equal(v, [[0, 1, 2], [5, 6, 7]])
    a.delete_chunk((0, 0))
    np.testing.assert_array_equal(a.read_chunk((0, 0), copy=False), 7)
    with pytest.raises(IndexError, match="outside the chunk grid"):
        a.read_chunk((3, 0))
    with pytest.raises(IndexError):
        a.read_chunk((0,))
    # any sequence of ints names a chunk, before and after the tuple form was seen
    for idx in ([1, 1], (np.int64(1), 1), (1, 1), [1, 1]):
        np.testing.assert_array_equal(a.read_chunk(idx), [[13, 14, 7], [18, 19, 7]])
        np.testing.assert_array_equal(a.read_chunk(idx, copy=False), [[13, 14, 7], [18, 19, 7]])


def test_read_chunk_hot_path_validates_like_the_general_one(make: Callable[..., Array]) -> None:
    """Once every chunk was read (the hot reader installed and its cache warm), bad indices
    still raise the general path's errors, absent chunks read as the fill value, and a
    closed or dropped array lets go of everything."""
    a = make((6, 6), (2, 3), "float64", fill_value=-1.0)
    a[:4, :] = 5.0
    for _ in range(2):
        for i in range(3):
            for j in range(2):
                assert a.read_chunk((i, j)).max() == (5.0 if i < 2 else -1.0)
                assert a.read_chunk((i, j), copy=False).min() == (5.0 if i < 2 else -1.0)
    backend = a.backend
    backend.read_chunk = lambda *_a, **_k: pytest.fail("a warm absent chunk probed again")
    try:  # absent chunks read as the cached fill chunk: a fresh copy, or a read-only view
        c, v = a.read_chunk((2, 0)), a.read_chunk((2, 0), copy=False)
        assert c.max() == v.min() == -1.0 and c.flags.writeable and not v.flags.writeable
        c[...] = 9.0
        assert a.read_chunk((2, 0)).max() == -1.0
    finally:
        del backend.read_chunk
    for bad, exc, match in [
        ((3, 0), IndexError, "outside the chunk grid"),
        ((-1, 0), IndexError, "outside the chunk grid"),
        ((0,), IndexError, "dimension"),
        ((0, 0, 0), IndexError, "dimension"),
        ((0.5, 0), TypeError, "integer"),
        (([0], 0), TypeError, "integer"),
        ("ab", TypeError, "integer"),
        (None, TypeError, "tuple of integers"),
    ]:
        for copy in (True, False):
            with pytest.raises(exc, match=match):
                a.read_chunk(bad, copy=copy)
    assert a.read_chunk([1, 1]).max() == 5.0 and a.read_chunk((np.int64(0), 1)).min() == 5.0
    c = a.read_chunk((0, 0))
    c[...] = 0  # a copy, not the cached view
    assert a.read_chunk((0, 0)).min() == 5.0
    name = a.name
    b = sz_open(name, storage=a.storage)
    b.read_chunk((0, 0))
    b.read_chunk((0, 0))
    ref = weakref.ref(b)
    del b  # no reference cycle keeps a dropped array (and its mappings) alive
    assert ref() is None
    a.close()
    with pytest.raises(ValueError, match="closed"):
        a.read_chunk((0, 0))
    with pytest.raises(ValueError, match="closed"):
        a.read_chunk((0, 0), copy=False)


def test_write_delete_list_iter_chunks(make: Callable[..., Array]) -> None:
    a = make((5, 5), (2, 3), "int8")
    a.write_chunk((0, 0), np.ones((2, 3), "int8"))
    a.write_chunk((2, 1), np.full((1, 2), 4, "int8"))  # trimmed edge chunk
    a.write_chunk((1, 0), 3)  # scalar broadcast
    full_edge = np.arange(6, dtype="int8").reshape(2, 3)
    a.write_chunk((0, 1), full_edge)  # padded edge chunk: padding reset to the fill value
    assert a.list_chunks() == [(0, 0), (0, 1), (1, 0), (2, 1)]
    np.testing.assert_array_equal(a.read_chunk((0, 1))[:, 2], 0)
    ref = np.zeros((5, 5), "int8")
    ref[0:2, 0:3] = 1
    ref[4:5, 3:5] = 4
    ref[2:4, 0:3] = 3
    ref[0:2, 3:5] = full_edge[:, :2]
    np.testing.assert_array_equal(a[...], ref)
    chunks = dict(a.iter_chunks())
    assert len(chunks) == a.nchunks
    np.testing.assert_array_equal(chunks[(2, 1)], [[4, 4]])
    assert [i for i, _ in a.iter_chunks(initialized_only=True)] == a.list_chunks()
    a.delete_chunk((0, 0))
    a.delete_chunk((0, 0))  # absent: fine
    assert (0, 0) not in a.list_chunks()
    with pytest.raises(ValueError, match="does not fit chunk"):
        a.write_chunk((0, 0), np.ones((3, 3), "int8"))
    with pytest.raises(IndexError):
        a.write_chunk((5, 0), 1)
    with pytest.raises(IndexError):
        a.delete_chunk((0, 9))


@pytest.mark.parametrize("codec", [None, "gzip"])
def test_write_chunks_as_write_chunk_each_checked_before_any(
    make: Callable[..., Array], codec: Any
) -> None:
    kw = {} if codec is None else {"compressor": codec}
    a = make((5, 5), (2, 3), "int8", **kw)
    b = make((5, 5), (2, 3), "int8", **kw)
    full_edge = np.arange(6, dtype="int8").reshape(2, 3)
    items = [
        ((0, 0), np.ones((2, 3), "int8")),
        ((2, 1), np.full((1, 2), 4, "int8")),  # trimmed edge chunk
        ([1, 0], 3),  # scalar broadcast, an index as a list
        ((0, 1), full_edge),  # padded edge chunk
        ((1, 1), np.ones((2, 3), "int8")),
        ((1, 1), np.full((2, 3), 9, "int16")),  # given twice: the last wins
    ]
    assert a.write_chunks(items) == 6
    for idx, data in items:
        b.write_chunk(idx, data)
    np.testing.assert_array_equal(a[...], b[...])
    assert a.list_chunks() == b.list_chunks()
    assert a.write_chunks({(2, 0): 5}) == 1 and (a[4, 0:3] == 5).all()
    assert a.write_chunks([]) == 0
    before = _snapshot(a)
    with pytest.raises(ValueError, match="does not fit chunk"):
        a.write_chunks([((0, 0), 7), ((1, 0), np.ones((3, 3), "int8"))])
    with pytest.raises(IndexError):
        a.write_chunks([((0, 0), 7), ((5, 0), 1)])
    with pytest.raises(TypeError, match="without losing"):
        a.write_chunks([((0, 0), 7), ((1, 0), 1.5)])
    after = _snapshot(a)  # unchanged, and the refused writes left nothing to repair
    assert after[0] == before[0] and after[1] == before[1] and after[3] == before[3]
    np.testing.assert_array_equal(after[2], before[2])


# -- resize / append ------------------------------------------------------------------------


def test_resize_drops_and_resets(make: Callable[..., Array]) -> None:
    a = make((10, 10), (4, 4), "int32", fill_value=-1)
    a[...] = np.arange(100).reshape(10, 10)
    a.resize((5, 10))
    assert a.shape == (5, 10)
    assert all(i < 2 for i, _ in a.list_chunks())
    np.testing.assert_array_equal(a[...], np.arange(50).reshape(5, 10))
    a.resize((10, 12))  # growing shows the fill value, not the old data
    ref = np.full((10, 12), -1)
    ref[:5, :10] = np.arange(50).reshape(5, 10)
    np.testing.assert_array_equal(a[...], ref)
    a.resize((0, 12))
    assert a.list_chunks() == [] and a[...].shape == (0, 12)
    with pytest.raises(ValueError, match="rank"):
        a.resize((3,))
    with pytest.raises(ValueError):
        a.resize((-1, 3))


def test_append(make: Callable[..., Array]) -> None:
    a = make((2, 3), (2, 2), "float64")
    a[...] = 1
    assert a.append(np.full((3, 3), 2.0)) == (5, 3)
    assert a.append(np.full((5, 1), 3.0), axis=1) == (5, 4)
    ref = np.array([[1, 1, 1, 3]] * 2 + [[2, 2, 2, 3]] * 3, dtype=float)
    np.testing.assert_array_equal(a[...], ref)
    before = _snapshot(a)
    with pytest.raises(ValueError, match="axis 1"):
        a.append(np.ones((2, 3)))
    with pytest.raises(ValueError, match="rank"):
        a.append(np.ones(4))
    with pytest.raises(ValueError, match="out of range"):
        a.append(np.ones((5, 1)), axis=2)
    with pytest.raises(TypeError):
        a.append(np.ones((1, 4), dtype=complex))
    after = _snapshot(a)
    assert before[0] == after[0] and before[1] == after[1]
    np.testing.assert_array_equal(before[2], after[2])
    # a writer session that raised is repaired by the next writer, and a repair moves the
    # write count (cached readers must look again): it may only grow
    assert after[3] >= before[3]


# -- attributes -----------------------------------------------------------------------------


def test_attrs_persist(make: Callable[..., Array], storage: str) -> None:
    a = make((4,), (2,), attributes={"a": 1})
    other = sz_open(a.name, storage=storage)
    a.attrs["b"] = [1, 2]
    a.attrs.update({"c": {"d": None}}, e="f")
    del a.attrs["a"]
    assert a.attrs.asdict() == {"b": [1, 2], "c": {"d": None}, "e": "f"}
    again = sz_open(a.name, storage=storage)
    assert dict(again.attrs) == {"b": [1, 2], "c": {"d": None}, "e": "f"}
    assert "a" not in other.attrs  # every handle sees the change on its next call
    other.attrs.refresh()
    assert "a" not in other.attrs and other.attrs["e"] == "f"
    # a stale handle updating attrs does not clobber the other handle's change
    a.resize((6,))
    other.attrs["z"] = 0
    again.refresh()
    assert again.shape == (6,) and again.attrs["z"] == 0
    with pytest.raises(KeyError):
        del a.attrs["nope"]
    with pytest.raises(TypeError, match="JSON"):
        a.attrs["bad"] = object()
    with pytest.raises(TypeError, match="JSON"):
        a.attrs["bad"] = float("nan")
    assert "bad" not in sz_open(a.name, storage=storage).attrs
    a.attrs.put({"only": True})
    assert dict(sz_open(a.name, storage=storage).attrs) == {"only": True}
    assert '"only": true' in bytes(a.backend.read_metadata()).decode()


# -- handles --------------------------------------------------------------------------------


def test_readonly_handle(make: Callable[..., Array], storage: str) -> None:
    a = make((4, 4), (2, 2))
    a[...] = 1
    ro = sz_open(a.name, storage=storage, mode="r")
    assert ro.readonly and ro.mode == "r"
    np.testing.assert_array_equal(ro[...], 1)
    before = _snapshot(a)
    for op in [
        lambda: ro.__setitem__(0, 5),
        lambda: ro.set_slice(np.zeros((2, 2)), (0, 0), (2, 2)),
        lambda: ro.write_chunk((0, 0), 0),
        lambda: ro.delete_chunk((0, 0)),
        lambda: ro.resize((8, 8)),
        lambda: ro.append(np.ones((1, 4))),
        lambda: ro.attrs.__setitem__("x", 1),
    ]:
        with pytest.raises(AccessDeniedError):
            op()
    with pytest.raises(AccessDeniedError, match="read-only|mode='r'"):
        ro.delete()  # (as zarr's read-only stores: the array stays)
    after = _snapshot(a)
    assert before[:2] == after[:2] and before[3] == after[3]
    ro.close()


def test_open_errors(storage: str, make: Callable[..., Array]) -> None:
    with pytest.raises(TableNotFoundError):
        sz_open("no-such-array-xyz", storage=storage)
    with pytest.raises(ValueError, match="mode"):
        sz_open("whatever", storage=storage, mode="w")
    with pytest.raises(ValueError, match="unknown storage"):
        sz_open("whatever", storage="nope")
    with pytest.raises(TypeError):
        sz_open(42, storage=storage)  # type: ignore[arg-type]
    cls = sz_storage.get(storage)
    bare = cls.create("bare-table-no-meta")
    try:
        with pytest.raises(ValueError, match="holds no array"):
            sz_open("bare-table-no-meta", storage=storage)
    finally:
        bare.delete()


def test_create_existing_name(make: Callable[..., Array], storage: str) -> None:
    a = make((4,), (2,), table_name="taken-name")
    a[...] = 1
    with pytest.raises(TableExistsError):
        create((4,), (2,), storage=storage, table_name="taken-name")
    np.testing.assert_array_equal(a[...], 1)
    b = make((3,), (3,), "int8", table_name="taken-name", overwrite=True)
    np.testing.assert_array_equal(b[...], 0)
    assert sz_open("taken-name", storage=storage).dtype == np.dtype("int8")


def test_overwrite_racing_another_creator_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """``overwrite=True`` deletes the old table, then creates; if another process creates
    the name in between, the error says that, not "pass overwrite=True"."""
    from sharedzarr._table import Table
    from sharedzarr.storage import shm

    name = "overwrite-race"
    create((4,), (2,), table_name=name)
    destroy = shm._destroy_table

    def destroy_then_another_creates(n: str) -> None:
        destroy(n)
        Table.create(n)  # (as another process would, at that moment)

    monkeypatch.setattr(shm, "_destroy_table", destroy_then_another_creates)
    try:
        with pytest.raises(TableExistsError, match="created by another process while this one"):
            create((4,), (2,), table_name=name, overwrite=True)
    finally:
        monkeypatch.undo()
        shm.delete_table(name)


def test_close_and_context_manager(make: Callable[..., Array], storage: str) -> None:
    a = make((4,), (2,))
    with sz_open(a.name, storage=storage) as b:
        b[0] = 1
    assert b.closed
    with pytest.raises(ValueError, match="closed"):
        b[0]
    with pytest.raises(ValueError, match="closed"):
        b[0] = 1
    b.close()  # idempotent
    assert a[0] == 1


def test_pickle_by_name(make: Callable[..., Array], storage: str) -> None:
    a = make((4, 4), (2, 2), "int32")
    a[...] = 3
    b = pickle.loads(pickle.dumps(a))
    assert b.name == a.name and b.storage == storage and b.mode == "r+"
    np.testing.assert_array_equal(b[...], 3)
    ro = pickle.loads(pickle.dumps(sz_open(a.name, storage=storage, mode="r")))
    assert ro.mode == "r"
    assert len(pickle.dumps(a)) < 200  # the name, not the data


def test_dask_tokenize_changes_on_write(make: Callable[..., Array]) -> None:
    a = make((4,), (2,))
    t0 = a.__dask_tokenize__()
    assert a.__dask_tokenize__() == t0
    a[0] = 1
    t1 = a.__dask_tokenize__()
    assert t1 != t0 and a.name in t1


def test_give_away_needs_table(make: Callable[..., Array], storage: str) -> None:
    a = make((4,), (2,))
    if a.table is not None:
        pytest.skip("table-backed storage: covered by the shm tests")
    with pytest.raises(TypeError, match="table-backed"):
        a.give_away(1)
    with pytest.raises(TypeError, match="table-backed"):
        a.set_heir(1)


def test_stale_handle_follows_resize(make: Callable[..., Array], storage: str) -> None:
    a = make((4,), (2,))
    b = sz_open(a.name, storage=storage)
    a.resize((8,))
    # a read past the old bounds re-reads the metadata and retries
    np.testing.assert_array_equal(b.get_slice((0,), (8,)), 0)
    a.resize((2,))
    b[...] = 5  # writes re-read the metadata under the lock: the shape is now (2,)
    assert b.shape == (2,)
    assert a.list_chunks() == [(0,)]
    a.refresh()
    np.testing.assert_array_equal(a[...], 5)


def test_partial_writes_same_chunk_threads(make: Callable[..., Array], storage: str) -> None:
    a = make((64,), (64,), "int64")
    n = 8

    def worker(k: int) -> None:
        h = sz_open(a.name, storage=storage)
        for i in range(k, 64, n):
            h[i] = i + 1
        h.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    np.testing.assert_array_equal(a[...], np.arange(1, 65))


# -- rank 0 and zero-length ------------------------------------------------------------------


def test_rank0(make: Callable[..., Array]) -> None:
    a = make((), (), "complex64", fill_value=1j)
    assert a[()] == 1j and a.nchunks == 1 and a.size == 1
    assert a[...].shape == ()
    a[()] = 2 + 3j
    assert a.list_chunks() == [()]
    assert a.get_slice() == 2 + 3j
    a.set_slice(5)
    assert a[...] == 5
    a.write_chunk((), 7)
    assert a.read_chunk(()) == 7
    with pytest.raises(TypeError):
        len(a)
    with pytest.raises(ValueError, match="rank-0"):
        a.append(1)
    with pytest.raises(IndexError):
        a[0]


def test_zero_length(make: Callable[..., Array]) -> None:
    a = make((0, 5), (3, 2), "uint8")
    assert a.nchunks == 0 and a[...].shape == (0, 5) and a[:, 1].shape == (0,)
    a[...] = 1
    a.set_slice(np.empty((0, 5), "uint8"))
    assert a.list_chunks() == []
    assert list(a.iter_chunks()) == []
    a.append(np.ones((2, 5), "uint8"))
    np.testing.assert_array_equal(a[...], 1)


@pytest.mark.parametrize(("shape", "chunks"), [((7, 0), (3, 1)), ((6, 2, 0), (1, 2, 4))])
def test_rows_of_no_elements_read_as_numpy_reads_them(
    make: Callable[..., Array], shape: tuple[int, ...], chunks: tuple[int, ...]
) -> None:
    """An axis after the first of length 0 leaves no chunks: a row, or rows picked by an
    integer array, are empty, as in numpy (the row fast paths asked for chunk (i, 0))."""
    a = make(shape, chunks, "int32")
    ref = np.zeros(shape, "int32")
    for key in (3, -1, [3, 1], np.array([5, 0, 5]), ([3, 1], Ellipsis), (slice(1, 4), ...)):
        got = a[key]
        assert got.shape == ref[key].shape, key
    with pytest.raises(IndexError, match="out of bounds"):
        a[[0, 7]]
    a.append(np.zeros((2, *shape[1:]), "int32"))
    assert a[[-1]].shape == (1, *shape[1:])


# -- bad input (issue section 4): a clear error, the array unchanged ------------------------------


BAD_WRITES: list[tuple[str, Callable[[Array], Any], type[BaseException], str]] = [
    ("shape", lambda a: a.set_slice(np.ones((3, 3), "int32"), (0, 0), (2, 2)), ValueError, "shape"),
    ("float->int", lambda a: a.set_slice(np.ones((2, 2)) * 1.5, (0, 0), (2, 2)), TypeError,
     "without losing"),
    ("complex->int", lambda a: a.__setitem__(0, 1j), TypeError, "without losing"),
    ("overflow", lambda a: a.__setitem__(0, 2**40), ValueError, "does not fit"),
    ("int64 too big", lambda a: a.__setitem__(0, np.array([2**31], "int64")), ValueError,
     "does not fit"),
    ("uint64 too big", lambda a: a.__setitem__(0, np.uint64(2**63)), ValueError, "does not fit"),
    ("string", lambda a: a.__setitem__(0, "x"), TypeError, "without losing"),
    ("stop oob", lambda a: a.set_slice(1, (0, 0), (7, 2)), ValueError, "out of bounds"),
    ("start oob", lambda a: a.set_slice(1, (-1, 0), (2, 2)), ValueError, "out of bounds"),
    ("start>stop", lambda a: a.set_slice(1, (3, 0), (2, 2)), ValueError, "greater than stop"),
    ("rank", lambda a: a.set_slice(1, (0,), (2,)), ValueError, "dimension"),
    ("index oob", lambda a: a.__setitem__((6, 0), 1), IndexError, "out of bounds"),
    ("too many", lambda a: a.__setitem__((0, 0, 0), 1), IndexError, "too many"),
    ("fancy oob", lambda a: a.__setitem__([0, 6], 1), IndexError, "out of bounds"),
    ("start type", lambda a: a.set_slice(1, (0.5, 0), (2, 2)), TypeError, "integer"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "op", "exc", "match"), BAD_WRITES, ids=[b[0] for b in BAD_WRITES])
def test_bad_writes_leave_array_unchanged(
    make: Callable[..., Array], what: str, op: Callable[[Array], Any], exc: type, match: str
) -> None:
    a = make((6, 6), (4, 4), "int32", fill_value=-1)
    a[1:5, 1:5] = 9
    before = _snapshot(a)
    with pytest.raises(exc, match=match):
        op(a)
    after = _snapshot(a)
    assert before[0] == after[0] and before[1] == after[1]
    np.testing.assert_array_equal(before[2], after[2])
    # a writer session that raised is repaired by the next writer, and a repair moves the
    # write count (cached readers must look again): it may only grow
    assert after[3] >= before[3]


def test_bad_reads(make: Callable[..., Array]) -> None:
    a = make((6, 6), (4, 4))
    with pytest.raises(ValueError, match="out of bounds"):
        a.get_slice((0, 0), (7, 6))
    with pytest.raises(ValueError, match="greater than stop"):
        a.get_slice((3, 3), (2, 2))
    with pytest.raises(ValueError, match="dimension"):
        a.get_slice((0,), (1,))
    with pytest.raises(IndexError):
        a[6]
    with pytest.raises(IndexError, match="out of bounds"):
        a[None, 6]  # the new axis counts for nothing: axis 0 has 6 rows
    with pytest.raises(IndexError):
        a[np.array([True] * 5)]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"shape": (4, 4), "chunks": (0, 2)}, ValueError, ">= 1"),
        ({"shape": (4, 4), "chunks": (-2, 2)}, ValueError, ">= 1"),
        ({"shape": (4, -4), "chunks": (2, 2)}, ValueError, ">= 0"),
        ({"shape": (4, 4), "chunks": (2,)}, ValueError, "dimension"),
        ({"shape": (4,), "chunks": (2,), "dtype": "T"}, TypeError, "supported dtypes are"),
        ({"shape": (4,), "chunks": (2,), "dtype": object}, TypeError, "supported dtypes are"),
        ({"shape": (4,), "chunks": (2,), "table_type": "bag"}, ValueError, "one value"),
        ({"shape": (4,), "chunks": (2,), "table_type": "duplicate_bag"}, ValueError,
         "sharedzarr.Table"),
        ({"shape": (4,), "chunks": (2,), "table_type": "heap"}, ValueError, "table_type"),
        ({"shape": (4,), "chunks": (2,), "dtype": "uint8", "fill_value": 300}, ValueError,
         "out of range"),
        ({"shape": (4,), "chunks": (2,), "compressor": "snappy"}, ValueError, "compressor"),
        ({"shape": (4,), "chunks": (2,), "attributes": {"x": {1, 2}}}, TypeError, "JSON"),
        ({"shape": (4,), "chunks": (2,), "dimension_names": ["a", "b"]}, ValueError,
         "dimension_names"),
        ({"shape": (4,), "chunks": (2,), "table_name": "bad name!"}, ValueError, "name"),
        ({"shape": (4,), "chunks": (2,), "storage": "nope"}, ValueError, "registered"),
    ],
)  # fmt: skip
def test_bad_create(storage: str, kwargs: dict[str, Any], exc: type, match: str) -> None:
    kwargs = {"storage": storage, "table_name": "bad-create-test", **kwargs}
    with pytest.raises(exc, match=match):
        create(**kwargs)
    assert not sz_storage.get(storage).exists("bad-create-test")


@pytest.mark.parametrize(("compressor", "module"), [("zstd", "zstd"), ("blosc", "blosc")])
def test_create_without_numcodecs(
    storage: str, compressor: str, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, f"numcodecs.{module}", None)
    with pytest.raises(ImportError, match=r"pip install sharedzarr\[codecs\]"):
        create((4,), (2,), storage=storage, compressor=compressor, table_name="no-numcodecs")
    assert not sz_storage.get(storage).exists("no-numcodecs")


def test_unsigned_rejects_negative(make: Callable[..., Array]) -> None:
    a = make((4,), (2,), "uint8")
    with pytest.raises(ValueError, match="does not fit"):
        a[...] = -1
    with pytest.raises(ValueError, match="does not fit"):
        a[...] = np.array([1, 2, 3, -4], "int8")
    a[...] = np.array([1, 2, 3, 4], "int64")  # fits: fine
    a[0] = True  # bool -> int is lossless
    np.testing.assert_array_equal(a[...], [1, 2, 3, 4])
    b = make((2,), (2,), "bool")
    with pytest.raises(TypeError):
        b[...] = 1
    c = make((2,), (2,), "float32")
    c[...] = np.array([1.5, 2.5])  # float64 -> float32: same kind, allowed
    np.testing.assert_array_equal(c[...], [1.5, 2.5])


# -- Hypothesis: random arrays and operations against a numpy model -----------------------------


def _index_strategy(shape: tuple[int, ...]) -> st.SearchStrategy[tuple[Any, ...]]:
    parts = []
    for n in shape:
        sl = st.builds(
            slice,
            st.none() | st.integers(-n - 2, n + 2),
            st.none() | st.integers(-n - 2, n + 2),
            st.none() | st.integers(-3, 3).filter(bool),
        )
        parts.append(st.integers(-n, n - 1) | sl if n else sl)
    return st.tuples(*parts)


@st.composite
def _scenario(draw: st.DrawFn) -> dict[str, Any]:
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 7), min_size=ndim, max_size=ndim)))
    chunks = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    elements = hnp.from_dtype(dtype, allow_subnormal=False)
    fill = draw(elements)
    compressor = draw(st.sampled_from([None, None, None, "gzip"]))
    ops = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["set_slice", "setitem", "get_slice", "getitem"]))
        if kind in ("set_slice", "get_slice"):
            start = tuple(draw(st.integers(0, n)) for n in shape)
            stop = tuple(draw(st.integers(s, n)) for s, n in zip(start, shape, strict=True))
            region = tuple(b - a for a, b in zip(start, stop, strict=True))
            data = (
                draw(hnp.arrays(dtype, region, elements=elements)) if kind == "set_slice" else None
            )
            ops.append((kind, start, stop, data))
        else:
            key = draw(_index_strategy(shape))
            if ndim and draw(st.booleans()):
                cut = draw(st.integers(0, ndim))
                key = key[:cut] + (...,) + key[cut + draw(st.integers(0, ndim - cut)) :]
            if kind == "setitem":
                target = np.empty(shape, dtype)[key]
                tshape = np.shape(target)
                if draw(st.booleans()):
                    data = draw(elements)  # scalar broadcast
                else:
                    data = draw(hnp.arrays(dtype, tshape, elements=elements))
                ops.append((kind, key, None, data))
            else:
                ops.append((kind, key, None, None))
    return {"shape": shape, "chunks": chunks, "dtype": dtype, "fill": fill,
            "compressor": compressor, "ops": ops}  # fmt: skip


@settings(max_examples=150)
@given(_scenario())
def test_hypothesis_against_numpy(storage: str, sc: dict[str, Any]) -> None:
    dtype = sc["dtype"]
    a = create(
        sc["shape"], sc["chunks"], dtype, storage=storage, fill_value=sc["fill"],
        compressor=sc["compressor"],
    )  # fmt: skip
    try:
        ref = np.full(sc["shape"], sc["fill"], dtype)
        for kind, x, y, data in sc["ops"]:
            if kind == "set_slice":
                a.set_slice(data, start=x, stop=y)
                ref[tuple(slice(s, e) for s, e in zip(x, y, strict=True))] = data
            elif kind == "setitem":
                a[x] = data
                ref[x] = data
            elif kind == "get_slice":
                got = a.get_slice(start=x, stop=y)
                want = ref[tuple(slice(s, e) for s, e in zip(x, y, strict=True))]
                np.testing.assert_array_equal(got, want)
                assert got.dtype == dtype
            else:
                got = a[x]
                want = ref[x]
                assert np.shape(got) == np.shape(want)
                assert isinstance(got, np.ndarray) == isinstance(want, np.ndarray)
                np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(a.get_slice(), ref)
        grid = [-(-s // c) for s, c in zip(sc["shape"], sc["chunks"], strict=True)]
        assert all(
            all(0 <= i < g for i, g in zip(idx, grid, strict=True)) for idx in a.list_chunks()
        )
    finally:
        a.delete()


@pytest.mark.parametrize("dtype", ["<f8", ">i4", "uint8"])
def test_random_2d_windows_match_numpy(make: Callable[..., Array], dtype: str) -> None:
    """The 2-D window fast path: edges, partial chunks, missing chunks, every bound form."""
    rng = np.random.default_rng(5)
    a = make((37, 29), (8, 6), dtype, fill_value=3)
    ref = np.full((37, 29), 3, dtype=dtype)
    data = rng.integers(0, 100, (37, 29)).astype(dtype)
    a[5:30, 2:25] = data[5:30, 2:25]
    ref[5:30, 2:25] = data[5:30, 2:25]
    a.delete_chunk((2, 2))
    ref[16:24, 12:18] = 3
    for _ in range(300):
        r0, r1 = sorted(int(x) for x in rng.integers(-40, 40, 2))
        c0, c1 = sorted(int(x) for x in rng.integers(-32, 32, 2))
        got = a[r0:r1, c0:c1]
        np.testing.assert_array_equal(got, ref[r0:r1, c0:c1])
        assert got.dtype == a.dtype and got.flags.writeable
    np.testing.assert_array_equal(a[:, :], ref)
    np.testing.assert_array_equal(a[3:, :7], ref[3:, :7])
    np.testing.assert_array_equal(a[3:20:1, None:9], ref[3:20, :9])


@pytest.mark.parametrize("codec", [None, "zlib"])
def test_box_writes_match_numpy(make: Callable[..., Array], codec: Any) -> None:
    """``a[box] = block`` with data of the box's shape (the write fast path: one whole
    chunk goes in as it is, other boxes skip normalising and broadcasting) against numpy:
    whole chunks, edge chunks, partial and multi-chunk boxes, clamped bounds, a
    transposed (non-contiguous) block, data of another dtype, and ``append`` of frames."""
    rng = np.random.default_rng(7)
    kw = {} if codec is None else {"compressor": codec}
    a = make((45, 38), (8, 8), "float64", **kw)
    ref = np.zeros((45, 38))
    boxes = [
        (slice(8, 16), slice(16, 24)),  # one whole chunk
        (slice(40, 45), slice(32, 38)),  # the corner edge chunk, whole
        (slice(0, 8), slice(0, 8)),
        (slice(3, 29), slice(5, 30)),  # partial chunks around whole ones
        (slice(40, 99), slice(-6, None)),  # clamped and negative bounds
        (slice(1, 2), slice(0, 38)),
    ]
    for key in boxes:
        shape = ref[key].shape
        block = rng.random(shape)
        a[key] = block
        ref[key] = block
        np.testing.assert_array_equal(a[...], ref)
    block = rng.random((8, 8)).T  # not C-contiguous: the general path
    a[16:24, 0:8] = block
    ref[16:24, 0:8] = block
    ints = rng.integers(-100, 100, (8, 8))  # another dtype, converted on the way
    a[24:32, 8:16] = ints
    ref[24:32, 8:16] = ints
    np.testing.assert_array_equal(a[...], ref)
    with pytest.raises(TypeError):
        a[0:8, 0:8] = rng.random((8, 8)) + 1j  # refused before anything is written
    np.testing.assert_array_equal(a[...], ref)

    s = make((0, 4, 3), (1, 4, 3), "int32", **kw)
    frames = rng.integers(0, 1000, (6, 4, 3)).astype("int32")
    for i in range(6):
        assert s.append(frames[i : i + 1]) == (i + 1, 4, 3)
    assert s.append(frames[:2].astype("int16")) == (8, 4, 3)  # two frames, converted
    np.testing.assert_array_equal(s[...], np.concatenate([frames, frames[:2]]))
