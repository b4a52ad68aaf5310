"""Constructors against their numpy equivalents, chunks="auto", sharedzarr.array as both the
function and the module, create(permissions=) and the deprecated create(mode=), and
``with sharedzarr.open(...) as a``."""

from __future__ import annotations

import math
import os
import stat
import subprocess
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import sharedzarr as sz
from sharedzarr._metadata import AUTO_CHUNK_BYTES, AUTO_CHUNK_MAX_BYTES, auto_chunks
from sharedzarr.storage.shm import delete_table, table_exists

DTYPES = ["float64", "int16", "bool", "complex64", "M8[s]", "m8[ms]", "S4", "U3",
          [("a", "<i4"), ("b", "<f8")]]  # fmt: skip


def _name(tag: str = "ctor") -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def made() -> Iterator[list[sz.Array]]:
    """Arrays to delete after the test."""
    arrays: list[sz.Array] = []
    yield arrays
    for a in arrays:
        if not a.closed:
            a.delete()


def assert_like_numpy(a: sz.Array, expected: np.ndarray) -> None:
    got = a[...]
    assert a.shape == expected.shape
    assert a.dtype == expected.dtype
    assert got.dtype == expected.dtype
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(expected).tobytes()


# ----------------------------------------------------------------------------- vs numpy


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("ours", "theirs"), [(sz.zeros, np.zeros), (sz.ones, np.ones)], ids=["zeros", "ones"]
)
def test_zeros_ones_match_numpy(
    ours: Callable[..., sz.Array], theirs: Callable[..., np.ndarray], dtype: Any, made: list
) -> None:
    a = ours((5, 3), dtype, storage="memory")
    made.append(a)
    assert_like_numpy(a, theirs((5, 3), dtype))
    assert a.nchunks_initialized == 0  # nothing written: it is the fill value


def test_default_dtype_is_float64_and_shape_may_be_an_int(made: list) -> None:
    for f in (sz.zeros, sz.ones, sz.empty):
        a = f(4, storage="memory")
        made.append(a)
        assert a.shape == (4,) and a.dtype == np.float64


def test_empty(made: list) -> None:
    a = sz.empty((3, 2), "int32", storage="memory")
    made.append(a)
    assert a.shape == (3, 2) and a.dtype == np.int32 and a.nchunks_initialized == 0
    t = sz.empty(3, "M8[s]", storage="memory")
    made.append(t)
    assert np.isnat(t[...]).all()  # zarr-python's default fill value for datetimes


@pytest.mark.parametrize(
    ("fill", "dtype"),
    [(2.5, None), (7, None), (True, None), (1 + 2j, None), (np.float32(3), None),
     (b"ab", None), ("xy", None), (np.datetime64("2020-01-02"), None), (2.7, "int8"),
     (-1, "float32"), ("NaN", "float64"),
     (np.array((1, 2.0), [("a", "<i4"), ("b", "<f8")])[()], [("a", "<i4"), ("b", "<f8")])],
)  # fmt: skip
def test_full_matches_numpy(fill: Any, dtype: Any, made: list) -> None:
    a = sz.full((4, 3), fill, dtype, storage="memory")
    made.append(a)
    assert_like_numpy(a, np.full((4, 3), fill, dtype))


@pytest.mark.parametrize(
    "data",
    [
        [1, 2, 3],
        [[1.5, 2.5], [3.5, 4.5]],
        np.arange(24, dtype="uint16").reshape(2, 3, 4),
        np.array(3.25),
        7,
        [True, False],
        ["ab", "cde"],
        [b"x", b"yz"],
        np.arange(5).astype("M8[D]"),
        np.zeros(0),
        np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
    ],
    ids=lambda d: type(d).__name__ + str(np.asarray(d).dtype),
)
def test_array_matches_numpy(data: Any, made: list) -> None:
    a = sz.array(data, storage="memory")
    made.append(a)
    assert_like_numpy(a, np.array(data))


def test_array_takes_a_dtype_chunks_and_create_options(made: list) -> None:
    name = _name()
    data = np.arange(100).reshape(10, 10)
    a = sz.array(data, "float32", chunks=(4, 5), table_name=name, compressor="zlib",
                 attributes={"units": "m"}, dimension_names=["y", "x"])  # fmt: skip
    made.append(a)
    assert a.chunks == (4, 5) and a.compressor  # the compressor was passed on
    b = sz.open(name)
    assert_like_numpy(b, data.astype("float32"))
    assert b.attrs["units"] == "m" and b.dimension_names == ("y", "x")
    b.close()


def test_array_copies_another_array(made: list) -> None:
    src = sz.array(np.arange(30).reshape(5, 6), chunks=(2, 2), storage="memory")
    made.append(src)
    dst = sz.array(src, storage="memory")
    made.append(dst)
    assert_like_numpy(dst, src[...])
    zarr = pytest.importorskip("zarr")
    z = zarr.array(np.linspace(0, 1, 9).reshape(3, 3))
    made.append(c := sz.array(z, storage="memory"))
    assert_like_numpy(c, z[...])


def test_array_refuses_object_data_and_creates_nothing() -> None:
    name = _name()
    with pytest.raises(TypeError, match="supported dtypes are"):
        sz.array([{"a": 1}, None], table_name=name)
    with pytest.raises(TypeError, match="supported dtypes are"):
        sz.array(np.array(["a", "bb"], dtype=np.dtypes.StringDType()), table_name=name)
    assert not table_exists(name)


def test_array_deletes_the_table_when_the_write_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    name = _name()

    def boom(self: sz.Array, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(sz.Array, "set_slice", boom)
    with pytest.raises(OSError, match="disk on fire"):
        sz.array([1, 2, 3], table_name=name)
    assert not table_exists(name)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(sz.zeros_like, np.zeros_like), (sz.ones_like, np.ones_like)],
    ids=["zeros_like", "ones_like"],
)
def test_like_constructors_match_numpy(ours: Any, theirs: Any, made: list) -> None:
    src = np.arange(12, dtype="int8").reshape(3, 4)
    a = ours(src, storage="memory")
    made.append(a)
    assert_like_numpy(a, theirs(src))
    b = ours(src, dtype="float32", shape=(2, 2), storage="memory")
    made.append(b)
    assert_like_numpy(b, theirs(src, dtype="float32", shape=(2, 2)))


def test_full_like_and_empty_like(made: list) -> None:
    src = np.arange(6.0).reshape(2, 3)
    a = sz.full_like(src, 4.5, storage="memory")
    made.append(a)
    assert_like_numpy(a, np.full_like(src, 4.5))
    b = sz.full_like(np.arange(3), 2.9, storage="memory")  # numpy casts: 2
    made.append(b)
    assert_like_numpy(b, np.full_like(np.arange(3), 2.9))
    c = sz.empty_like(src, storage="memory")
    made.append(c)
    assert c.shape == src.shape and c.dtype == src.dtype


def test_like_keeps_the_chunks_compressor_and_dimension_names(made: list) -> None:
    src = sz.create((10, 6), (3, 2), "uint8", compressor="zlib", dimension_names=["t", "x"],
                    storage="memory")  # fmt: skip
    made.append(src)
    a = sz.zeros_like(src, storage="memory")
    made.append(a)
    assert a.chunks == (3, 2) and a.compressor == src.compressor
    assert a.dimension_names == ("t", "x") and a.dtype == np.uint8
    b = sz.full_like(src, 5, chunks="auto", compressor=None, storage="memory")
    made.append(b)
    assert b.chunks == (10, 6) and b.compressor == [] and (b[...] == 5).all()


def test_constructors_take_create_options(made: list) -> None:
    name = _name()
    a = sz.zeros((4, 4), "int32", table_name=name, attributes={"k": 1}, permissions=0o640)
    made.append(a)
    with sz.open(name, mode="r") as b:
        assert b.attrs["k"] == 1 and b.shape == (4, 4)
    with pytest.raises(TypeError):
        sz.zeros((4,), fill_value=3, storage="memory")  # zeros are zeros


# ----------------------------------------------------------------------------- chunks="auto"


@pytest.mark.parametrize(
    ("shape", "itemsize", "expected"),
    [
        ((), 8, ()),
        ((10,), 8, (10,)),
        ((0, 5), 4, (1, 5)),
        ((1000, 1000), 4, (1000, 1000)),  # 4 MB: one chunk
        ((1000, 1000), 8, (500, 1000)),  # 8 MB: two chunks of 4 MB
        ((12_500_000,), 8, (520_834,)),  # 100 MB 1-d: 24 equal pieces of ~4 MiB
        ((100_000, 128), 4, (7_693, 128)),  # 51 MB: 13 equal pieces of whole rows
        ((3, 5000, 5000), 8, (1, 105, 5000)),  # one row is 200 MB: split axis 1
        ((2, 3, 3000, 3000), 2, (1, 1, 600, 3000)),  # rows of 54 and 18 MB: split axis 2
    ],
)
def test_auto_chunks_rule(shape: tuple, itemsize: int, expected: tuple) -> None:
    assert auto_chunks(shape, itemsize) == expected


@pytest.mark.parametrize(
    "shape",
    [(1000,), (10**7,), (3000, 3000), (500, 100, 100), (7, 7, 600, 600), (10**6, 3),
     (40, 9000, 9000), (123_457, 17), (2**20 + 1, 4)],
)  # fmt: skip
@pytest.mark.parametrize("itemsize", [1, 4, 8, 16])
def test_auto_chunks_properties(shape: tuple, itemsize: int) -> None:
    chunks = auto_chunks(shape, itemsize)
    nbytes = math.prod(chunks) * itemsize
    total = math.prod(shape) * itemsize
    assert len(chunks) == len(shape)
    assert all(1 <= c <= n for c, n in zip(chunks, shape, strict=True))
    assert nbytes <= AUTO_CHUNK_MAX_BYTES
    if total > AUTO_CHUNK_BYTES:
        assert nbytes >= AUTO_CHUNK_BYTES // 2 - itemsize * math.prod(chunks[1:])
    else:
        assert chunks == shape
    k = next((i for i, c in enumerate(chunks) if c != 1), len(chunks) - 1)
    assert chunks[k + 1 :] == shape[k + 1 :]  # whole trailing dimensions
    assert all(c == 1 for c in chunks[:k])
    # equal pieces: the last chunk along the split axis is not mostly padding
    n = math.ceil(shape[k] / chunks[k])
    assert shape[k] - (n - 1) * chunks[k] > chunks[k] // 2 or n == 1 or chunks[k] <= 2


def test_chunks_default_to_auto_everywhere(made: list) -> None:
    a = sz.create((3000, 1000), dtype="float64", storage="memory")
    made.append(a)
    assert a.chunks == auto_chunks((3000, 1000), 8) == (500, 1000)
    b = sz.create((10,), "auto", "int8", storage="memory")
    made.append(b)
    assert b.chunks == (10,)
    c = sz.create((10,), None, "int8", storage="memory")
    made.append(c)
    assert c.chunks == (10,)
    with pytest.raises(ValueError, match="'auto'"):
        sz.create((10,), "big", storage="memory")
    with pytest.raises(ValueError, match=r"pass dtype='int8' \(the third argument\)"):
        sz.create((10,), "int8", storage="memory")


# ----------------------------------------------------------------------------- sz.array names


@pytest.mark.parametrize(
    "code",
    [
        # the function, then the module
        "import sharedzarr as sz\n"
        "a = sz.array([1, 2], storage='memory'); assert a[1] == 2\n"
        "import sharedzarr.array\n"
        "from sharedzarr.array import Array, create\n"
        "assert isinstance(a, Array) and callable(sharedzarr.array)\n"
        "assert sharedzarr.array is sz.array\n"
        "assert sz.array.__module__ == 'sharedzarr._constructors'\n"
        "b = sharedzarr.array([3], storage='memory'); assert b[0] == 3",
        # the module first, then the function
        "import sharedzarr.array\n"
        "from sharedzarr.array import Array\n"
        "import sys; assert sys.modules['sharedzarr.array'].Array is Array\n"
        "a = sharedzarr.array([[1.5]], storage='memory'); assert isinstance(a, Array)\n"
        "import sharedzarr as sz; assert sz.array is sharedzarr.array\n"
        "assert sz.array([4], storage='memory')[0] == 4",
        # from-imports of both
        "from sharedzarr.array import Array, open\n"
        "from sharedzarr import array\n"
        "assert isinstance(array([1], storage='memory'), Array)\n"
        "import importlib; m = importlib.import_module('sharedzarr.array')\n"
        "assert m.Array is Array and m.open is open",
        # pickling an array still goes through the module's _open_by_name
        "import pickle, sharedzarr as sz\n"
        "a = sz.zeros((3,), 'int8', table_name='PICKLED')\n"
        "b = pickle.loads(pickle.dumps(a)); assert b.shape == (3,) and b.name == a.name\n"
        "b.close(); a.delete()",
    ],
    ids=["function-first", "module-first", "from-imports", "pickle"],
)
def test_array_is_the_function_and_the_module_stays_importable(code: str) -> None:
    code = code.replace("PICKLED", _name("pk"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------- permissions


def _segment_mode(name: str) -> int:
    entry = next(e for e in os.listdir("/dev/shm") if e == f"sz.{name}.hdr")
    return stat.S_IMODE(os.stat(os.path.join("/dev/shm", entry)).st_mode)


def test_permissions_set_the_segment_mode(made: list) -> None:
    name = _name("perm")
    a = sz.create((4,), (2,), "int8", table_name=name, permissions=0o640)
    made.append(a)
    assert _segment_mode(name) == 0o640
    name2 = _name("perm")
    b = sz.zeros((4,), table_name=name2)
    made.append(b)
    assert _segment_mode(name2) == 0o600  # the default: this user only


def test_create_mode_is_deprecated_but_works(made: list) -> None:
    name = _name("perm")
    with pytest.warns(DeprecationWarning, match="permissions=") as record:
        a = sz.create((4,), (2,), "int8", table_name=name, mode=0o660)
    made.append(a)
    assert record[0].filename == __file__  # points at the caller
    assert _segment_mode(name) == 0o660
    with pytest.warns(DeprecationWarning, match="permissions="):
        b = sz.ones((2,), table_name=_name("perm"), mode=0o600)  # constructors pass it on
    made.append(b)


def test_permissions_and_mode_together_are_an_error() -> None:
    name = _name("perm")
    with pytest.raises(TypeError, match="permissions"), warnings.catch_warnings():
        warnings.simplefilter("error")
        sz.create((4,), (2,), table_name=name, permissions=0o600, mode=0o600)
    assert not table_exists(name)


def test_permissions_alone_warn_nothing(made: list) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = sz.create((4,), permissions=0o600, table_name=_name("perm"))
    made.append(a)


# ----------------------------------------------------------------------------- with open


def test_with_open_closes_the_handle() -> None:
    name = _name("with")
    a = sz.array(np.arange(6), table_name=name)
    try:
        with sz.open(name) as b:
            assert isinstance(b, sz.Array) and not b.closed
            b[0] = 9
        assert b.closed
        with pytest.raises(ValueError, match="closed"):
            b[0]
        with sz.open(name, mode="r") as c:
            assert c[0] == 9
        assert c.closed and not a.closed  # closing one handle leaves the others
        assert table_exists(name)  # close is not delete
    finally:
        a.delete()
    if table_exists(name):
        delete_table(name)
