"""datetime64/timedelta64, S<n>, U<n>, V<n> and structured dtypes: zarr-python 3.1's names and
zarr.json layout byte for byte, round trips across spawned processes, and both directions
through zarr-python and SharedMemoryStore."""

from __future__ import annotations

import json
import multiprocessing as mp
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import _api_workers as W
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sharedzarr as sz
from sharedzarr._metadata import (
    ArrayMetadata,
    decode_fill_value,
    dtype_from_json,
    dtype_to_json,
    encode_fill_value,
    normalize_fill_value,
    parse_dtype,
)
from sharedzarr.storage.shm import delete_table, table_exists

zarr = pytest.importorskip("zarr")
from zarr.storage import MemoryStore  # noqa: E402

from sharedzarr.zarr_store import SharedMemoryStore  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")

CTX = mp.get_context("spawn")
STRUCT = [("x", "<f4"), ("n", "<i8"), ("tag", "S3"), ("when", "<M8[ms]")]
NESTED = [("id", "<u2"), ("pos", [("lat", "<f8"), ("lon", "<f8")]), ("name", "<U4")]

#: dtype -> a fill value other than the default
DTYPES: dict[str, Any] = {
    "datetime64[s]": np.datetime64("2001-02-03T04:05:06", "s"),
    "datetime64[10ms]": np.datetime64("2020-01-01", "ms"),
    "datetime64[D]": "NaT",
    "timedelta64[ns]": np.timedelta64(5, "ns"),
    "timedelta64[h]": np.timedelta64(-3, "h"),
    "S7": b"fill",
    "U5": "fïll",
    "V4": b"\x01\x02\x03\x04",
    "struct": (1.5, -2, b"ab", np.datetime64("1999-12-31", "ms")),
    "nested": (7, (1.25, -3.5), "ünï"),
}


def _dtype(key: str) -> np.dtype:
    return np.dtype({"struct": STRUCT, "nested": NESTED}.get(key, key))


def _name(tag: str) -> str:
    return f"dt-{tag}-{uuid.uuid4().hex[:8]}"


def sample(dtype: np.dtype, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Distinct, non-fill values of ``dtype``."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if dtype.fields is not None:
        out = np.zeros(n, dtype)
        for name in dtype.names or ():
            out[name] = sample(dtype.fields[name][0], (n,), seed + 1)
        return out.reshape(shape)
    kind = dtype.kind
    if kind in "Mm":
        return rng.integers(-(10**6), 10**6, n).astype(np.int64).view(dtype).reshape(shape)
    if kind == "S":
        words = [
            bytes(rng.integers(97, 123, rng.integers(1, dtype.itemsize + 1))) for _ in range(n)
        ]
        return np.array(words, dtype).reshape(shape)
    if kind == "U":
        chars = "abcäöü€𝄞"
        k = dtype.itemsize // 4
        words = ["".join(rng.choice(list(chars), rng.integers(1, k + 1))) for _ in range(n)]
        return np.array(words, dtype).reshape(shape)
    if kind == "V":
        return rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8).view(dtype).reshape(shape)
    if kind == "f":
        return rng.random(n).astype(dtype).reshape(shape)
    return rng.integers(0, 100, n).astype(dtype).reshape(shape)


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal values, dtypes and shapes, comparing bytes (NaT and structured included)."""
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(expected).tobytes()


@pytest.fixture(scope="module")
def pool() -> Iterator[Any]:
    with CTX.Pool(2) as p:
        yield p


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for n in names:
        if table_exists(n):
            delete_table(n)


# ----------------------------------------------------------------------------- zarr.json layout


@pytest.mark.parametrize("key", sorted(DTYPES))
@pytest.mark.parametrize("default_fill", [True, False])
def test_zarr_json_matches_zarr_python_byte_for_byte(key: str, default_fill: bool) -> None:
    dtype = _dtype(key)
    fill = None if default_fill else DTYPES[key]
    store = MemoryStore()
    zarr.create_array(store, shape=(7, 5), chunks=(3, 2), dtype=dtype, fill_value=fill,
                      compressors=None)  # fmt: skip
    theirs = store._store_dict["zarr.json"].to_bytes()
    ours = ArrayMetadata.create((7, 5), (3, 2), dtype, fill_value=fill).to_json()
    assert ours == theirs
    back = ArrayMetadata.from_json(theirs)
    assert back.dtype == dtype
    assert_same(np.array(back.fill_value), np.array(normalize_fill_value(fill, dtype)))


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("M8[s]", {"name": "numpy.datetime64", "configuration": {"unit": "s", "scale_factor": 1}}),
        ("m8[25us]", {"name": "numpy.timedelta64",
                      "configuration": {"unit": "us", "scale_factor": 25}}),
        ("M8", {"name": "numpy.datetime64", "configuration": {"unit": "generic",
                                                                "scale_factor": 1}}),
        ("S9", {"name": "null_terminated_bytes", "configuration": {"length_bytes": 9}}),
        (">U3", {"name": "fixed_length_utf32", "configuration": {"length_bytes": 12}}),
        ("V2", {"name": "raw_bytes", "configuration": {"length_bytes": 2}}),
        ([("a", ">i2"), ("b", "?")], {"name": "structured", "configuration": {
            "fields": [["a", "int16"], ["b", "bool"]]}}),
    ],
)  # fmt: skip
def test_data_type_json(dtype: Any, expected: Any) -> None:
    assert dtype_to_json(dtype) == expected
    assert dtype_from_json(expected) == parse_dtype(dtype)
    zdt = zarr.core.dtype.get_data_type_from_native_dtype(parse_dtype(dtype))
    assert zdt.to_json(zarr_format=3) == expected


@pytest.mark.parametrize("unit", ["Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps",
                                  "fs", "as"])  # fmt: skip
@pytest.mark.parametrize("kind", ["M", "m"])
def test_every_time_unit(unit: str, kind: str) -> None:
    dt = np.dtype(f"{kind}8[3{unit}]")
    assert dtype_from_json(dtype_to_json(dt)) == dt
    for fill in (None, 0, -5, "NaT"):
        value = normalize_fill_value(fill, dt)
        assert_same(np.array(decode_fill_value(encode_fill_value(value, dt), dt)), np.array(value))


def test_fill_values() -> None:
    m = np.dtype("M8[s]")
    assert np.isnat(normalize_fill_value(None, m))  # zarr-python's default: NaT
    assert encode_fill_value(normalize_fill_value(None, m), m) == -(2**63)
    assert normalize_fill_value(0, m) == np.datetime64(0, "s")  # 0 is the epoch
    assert normalize_fill_value("2000-01-01", m) == np.datetime64("2000-01-01", "s")
    assert normalize_fill_value(12, np.dtype("m8[ms]")) == np.timedelta64(12, "ms")
    assert np.isnat(decode_fill_value("NaT", m))
    assert normalize_fill_value(None, np.dtype("S3")) == b""
    assert encode_fill_value(normalize_fill_value(b"ab", np.dtype("S3")), "S3") == "YWI="
    assert decode_fill_value("YWI=", np.dtype("S3")) == b"ab"
    assert encode_fill_value(normalize_fill_value("hé", np.dtype("U3")), "U3") == "hé"
    s = np.dtype(STRUCT)
    assert normalize_fill_value(0, s).tobytes() == bytes(s.itemsize)
    v = normalize_fill_value(DTYPES["struct"], s)
    assert decode_fill_value(encode_fill_value(v, s), s).tobytes() == v.tobytes()
    assert normalize_fill_value(v.tobytes(), s).tobytes() == v.tobytes()


@pytest.mark.parametrize(
    ("dtype", "fill", "exc"),
    [
        ("M8[s]", 1.5, TypeError),
        ("M8[s]", np.timedelta64(1, "s"), TypeError),
        ("M8[s]", np.datetime64("2000-01-01T00:00:00.5"), ValueError),  # loses precision
        ("m8[s]", np.datetime64(1, "s"), TypeError),
        ("S3", "abc", TypeError),
        ("S3", b"abcd", ValueError),
        ("U2", b"ab", TypeError),
        ("U2", "abc", ValueError),
        ("V2", b"abc", ValueError),
        (STRUCT, "x", TypeError),
        (STRUCT, (1, 2), TypeError),
    ],
)
def test_bad_fill_values(dtype: Any, fill: Any, exc: type) -> None:
    with pytest.raises(exc):
        normalize_fill_value(fill, np.dtype(dtype))


@pytest.mark.parametrize(
    "dtype",
    [
        object,
        "T",
        np.dtypes.StringDType(),
        "S",
        "U",
        "V",
        "float128",
        "(2,)f4",
        [("a", "i4", (2,))],
        np.dtype([("a", "u1"), ("b", "i8")], align=True),
        np.dtype({"names": ["a"], "formats": ["i4"], "offsets": [4], "itemsize": 8}),
        [("a", object)],
    ],
)
def test_unsupported_dtypes_name_the_supported_ones(dtype: Any) -> None:
    with pytest.raises(TypeError, match="supported dtypes are bool, int8.*datetime64.*S<n>"):
        parse_dtype(dtype)
    with pytest.raises(TypeError, match="supported dtypes are"):
        sz.create((4,), (2,), dtype, storage="memory")


@pytest.mark.parametrize(
    "data_type",
    [
        "string",
        {"name": "numpy.datetime64", "configuration": {"unit": "parsec", "scale_factor": 1}},
        {"name": "numpy.datetime64", "configuration": {"unit": "s"}},
        {"name": "fixed_length_utf32", "configuration": {"length_bytes": 6}},
        {"name": "null_terminated_bytes", "configuration": {"length_bytes": 0}},
        {"name": "structured", "configuration": {"fields": []}},
        {"name": "structured", "configuration": {"fields": [["a", "string"]]}},
    ],
)
def test_unsupported_data_types_in_zarr_json(data_type: Any) -> None:
    doc = json.loads(ArrayMetadata.create((4,), (2,), "int8").to_json())
    doc["data_type"] = data_type
    with pytest.raises(ValueError, match="unsupported data_type"):
        ArrayMetadata.from_dict(doc)


# ----------------------------------------------------------------------------- processes


@pytest.mark.parametrize("key", sorted(DTYPES))
def test_round_trip_across_processes(key: str, pool: Any, cleanup: list[str]) -> None:
    dtype = _dtype(key)
    name = _name("mp")
    cleanup.append(name)
    a = sz.create((7, 5), (3, 2), dtype, fill_value=DTYPES[key], table_name=name)
    expected = np.full((7, 5), normalize_fill_value(DTYPES[key], dtype), dtype)
    data = sample(dtype, (5, 3), seed=1)
    a[1:6, 1:4] = data
    expected[1:6, 1:4] = data
    assert_same(a[...], expected)
    assert_same(pool.apply(W.read_all, (name,)), expected)  # another process reads
    row = sample(dtype, (5,), seed=2)
    pool.apply(W.write, (name, 6, row))  # another process writes
    expected[6] = row
    assert_same(a[...], expected)
    assert np.asarray(a[0, 0]).tobytes() == np.asarray(expected[0, 0]).tobytes()  # a scalar
    assert pool.apply(W.dtype_of, (name,)) == str(dtype)
    a.delete()


# ----------------------------------------------------------------------------- zarr-python


@pytest.mark.parametrize("key", sorted(DTYPES))
def test_zarr_python_reads_what_sharedzarr_writes(key: str, cleanup: list[str]) -> None:
    dtype = _dtype(key)
    name = _name("zr")
    cleanup.append(name)
    a = sz.create((7, 5), (3, 2), dtype, fill_value=DTYPES[key], table_name=name)
    data = sample(dtype, (6, 5), seed=3)
    a[:6] = data
    z = zarr.open_array(store=SharedMemoryStore(name, read_only=True))
    assert z.dtype == dtype
    assert_same(np.asarray(z[:6]), data)
    assert_same(np.asarray(z[6]), np.asarray(a[6]))
    assert np.asarray(z.fill_value).tobytes() == np.asarray(a.fill_value).tobytes()
    a.delete()


@pytest.mark.parametrize("key", sorted(DTYPES))
@pytest.mark.parametrize("compressors", [None, "auto"])
def test_sharedzarr_reads_what_zarr_python_writes(
    key: str, compressors: Any, pool: Any, cleanup: list[str]
) -> None:
    dtype = _dtype(key)
    store = SharedMemoryStore.create(_name("zw"))
    name = store.table_name
    cleanup.append(name)
    z = zarr.create_array(store, shape=(7, 5), chunks=(3, 2), dtype=dtype,
                          fill_value=DTYPES[key], compressors=compressors)  # fmt: skip
    data = sample(dtype, (4, 5), seed=4)
    z[2:6] = data
    expected = np.asarray(z[...])
    with sz.open(name) as a:
        assert a.dtype == dtype
        assert_same(a[...], expected)
        row = sample(dtype, (5,), seed=5)
        a[0] = row  # and zarr-python reads what sharedzarr writes into its array
    expected[0] = row
    assert_same(np.asarray(z[...]), expected)
    assert_same(pool.apply(W.zarr_read_all, (name,)), expected)
    assert_same(pool.apply(W.read_all, (name,)), expected)


def test_sharedzarr_writes_structured_data_given_in_another_field_order(
    cleanup: list[str],
) -> None:
    name = _name("st")
    cleanup.append(name)
    a = sz.create((4,), (2,), [("a", "<i4"), ("b", "<f8")], table_name=name)
    a[:2] = np.array([(1, 2.0), (3, 4.0)], dtype=[("a", ">i4"), ("b", ">f8")])  # big-endian
    assert a[1]["a"] == 3 and a[1]["b"] == 4.0
    with pytest.raises(TypeError, match="without losing"):
        a[:2] = np.array([1, 2])
    a.delete()


def test_records_given_as_tuples_are_written_as_numpy_writes_them(cleanup: list[str]) -> None:
    name = _name("tu")
    cleanup.append(name)
    dt = np.dtype([("x", "<i4"), ("y", "<f8")])
    a = sz.zeros((7,), dtype=dt, chunks=(3,), table_name=name)
    expected = np.zeros((7,), dt)
    for key, value in [(2, (1, 2.5)), (slice(4, 6), [(3, 4.5), (5, 6.5)]), ([0, 6], (9, 9.5))]:
        a[key] = value
        expected[key] = value
    assert a[...].tolist() == expected.tolist()
    with pytest.raises(TypeError, match="records of"):
        a[1] = (1, 2, 3)  # three values for two fields
    with pytest.raises(TypeError, match=r"a\.dtype"):
        a[1] = 1.5  # the hint names code that works for a structured dtype
    assert a[...].tolist() == expected.tolist()
    a.delete()


FIELD_KEYS = ["x", ["x", "y"], ["z", "x"], ("y", slice(2, 5)), (slice(2, 5), "y"), (1, "x"),
              ("x", [0, 3]), ("z", 1, 2), ("y", ..., slice(None, None, -2))]  # fmt: skip


def _field_ref(e: np.ndarray, key: Any) -> Any:
    """numpy's answer: the records the rest of the key selects, then the field(s)."""
    if type(key) is not tuple:
        return e[key]
    names = [k for k in key if type(k) is str]
    rest = tuple(k for k in key if type(k) is not str)
    return e[rest][names[0]]


@pytest.mark.parametrize("key", FIELD_KEYS, ids=[repr(k) for k in FIELD_KEYS])
def test_fields_read_and_write_as_numpy_does(key: Any, cleanup: list[str]) -> None:
    dt = np.dtype([("x", "<i4"), ("y", "<f8"), ("z", "u1")])
    e = np.zeros((9, 4), dt)
    e["x"] = np.arange(36).reshape(9, 4)
    e["y"] = 0.5
    e["z"] = 3
    name = _name("fl")
    cleanup.append(name)
    a = sz.array(e, chunks=(4, 3), table_name=name)
    got, want = a[key], _field_ref(e, key)
    assert np.asarray(got).dtype == np.asarray(want).dtype
    assert np.asarray(got).tolist() == np.asarray(want).tolist()
    if type(key) is not list:  # one field: the records it names get the new values
        rest = tuple(k for k in key if type(k) is not str) if type(key) is tuple else ...
        field = [k for k in key if type(k) is str][0] if type(key) is tuple else key
        value = np.arange(np.size(want)).reshape(np.shape(want)) + 100
        a[key] = value
        records = np.array(e[rest])
        records[field] = value
        e[rest] = records
        assert a[...].tolist() == e.tolist()
    a.delete()


def test_field_errors_name_the_fields(cleanup: list[str]) -> None:
    names = [_name("fe"), _name("fe")]
    cleanup.extend(names)
    a = sz.zeros((3,), dtype=[("x", "<i4"), ("y", "<f8")], chunks=(2,), table_name=names[0])
    with pytest.raises(IndexError, match=r"no field 'w': the dtype's fields are \['x', 'y'\]"):
        a["w"]
    with pytest.raises((TypeError, ValueError), match="cannot write field 'x'"):
        a["x"] = "abc"
    assert a[...].tolist() == [(0, 0.0)] * 3  # nothing written
    b = sz.zeros((3,), chunks=(2,), table_name=names[1])
    with pytest.raises(IndexError, match="has no fields"):
        b["x"]
    a.delete()
    b.delete()


def test_warnings_stay_quiet() -> None:
    """sharedzarr itself emits no UnstableSpecificationWarning for these dtypes."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ArrayMetadata.create((4,), (2,), STRUCT).to_json()


@pytest.mark.parametrize(
    ("dtype", "data"),
    [
        ("M8[s]", ["2020-01-01"]),  # strings would be parsed mid-write: convert first
        ("M8[s]", [1]),
        ("m8[s]", np.array([1], "M8[s]")),
        ("S3", ["ab"]),
        ("U3", [b"ab"]),
        ("U3", [1]),
        ("int32", np.array(["1"])),
    ],
)
def test_writes_that_would_convert_are_refused_before_writing(dtype: str, data: Any) -> None:
    a = sz.zeros((1,), dtype, storage="memory")
    try:
        with pytest.raises(TypeError, match="without losing information"):
            a[:] = data
        assert a.nchunks_initialized == 0
        a[:] = np.asarray(data).astype(dtype) if dtype != "m8[s]" else np.timedelta64(1, "s")
    finally:
        a.delete()


@pytest.mark.parametrize("storage", ["shm", "memory"])
def test_whole_floats_go_into_integer_arrays_and_fractions_are_refused(
    storage: str, cleanup: list[str]
) -> None:
    """Floats that are whole numbers in range convert exactly, so every write takes them;
    a fraction, NaN or infinity is refused as a lossy conversion, a whole number out of
    range as an overflow, before anything is written."""
    name = _name("wf")
    if storage == "shm":
        cleanup.append(name)
    a = sz.zeros((6, 4), chunks=(3, 2), dtype="int16", table_name=name, storage=storage)
    a[0] = 1.0
    a[1] = np.float32(2)
    a[2:4] = np.full((2, 4), 3.0)
    a.write_chunk((1, 0), np.full((3, 2), 4.0))
    a.set_slice(np.full((1, 2), 5.0), (5, 2), (6, 4))
    a.oindex[[0, 1], [3]] = np.array([[6.0], [7.0]])
    a.vindex[[2], [3]] = 8.0
    a.write_chunks([((1, 1), -0.0)])
    a.append(np.full((1, 4), 32767.0))
    expected = [[1, 1, 1, 6], [2, 2, 2, 7], [3, 3, 3, 8]] + [[4, 4, 0, 0]] * 3 + [[32767] * 4]
    assert a[...].tolist() == expected
    for bad, exc, match in [
        (1.5, TypeError, r"without losing information: 1\.5 is not a whole number"),
        (np.nan, TypeError, "nan is not a whole number"),
        (-np.inf, TypeError, "-inf is not a whole number"),
        (np.array([1.0, 2.5, np.nan, 3.0]), TypeError, r"2\.5 is not a whole number"),
        (32768.0, ValueError, r"32768\.0 to 32768\.0, which does not fit int16"),
        (np.array([-32769.0, 0, 0, 0], "f4"), ValueError, "does not fit int16"),
    ]:
        with pytest.raises(exc, match=match):
            a[0] = bad
        with pytest.raises(exc, match=match):
            a.write_chunk((0, 0), np.resize(bad, (3, 2)))
    assert a[...].tolist() == expected  # nothing written
    b = sz.zeros((3,), dtype="int64", storage="memory")
    b[:2] = [-(2.0**63), 2.0**63 - 1024]  # the extremes a float64 holds
    assert b[:2].tolist() == [-(2**63), 2**63 - 1024]
    with pytest.raises(ValueError, match="does not fit int64"):
        b[2] = 2.0**63  # (int64's maximum rounds up to it as a float)
    u = sz.zeros((1,), dtype="uint8", storage="memory")
    with pytest.raises(ValueError, match="does not fit uint8"):
        u[0] = -1.0
    a.delete()


_UNITS = ["Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as"]
_FIELD = st.one_of(
    st.sampled_from(["?", "i1", "<i2", ">i4", "<i8", "u1", ">u2", "<u4", "u8", "<f2", ">f4",
                     "<f8", "<c8", ">c16"]),
    st.builds(lambda k, n, u, e: f"{e}{k}8[{n}{u}]", st.sampled_from("Mm"),
              st.integers(1, 1000), st.sampled_from(_UNITS), st.sampled_from("<>")),
    st.builds(lambda n: f"S{n}", st.integers(1, 40)),
    st.builds(lambda n, e: f"{e}U{n}", st.integers(1, 10), st.sampled_from("<>")),
)  # fmt: skip
# zarr-python 3.1 cannot make the default fill value of a structured type with a V field
_RAW = st.builds(lambda n: f"V{n}", st.integers(1, 16))


def _structured(children: Any) -> Any:
    return st.lists(
        st.tuples(st.text("abcxyz_", min_size=1, max_size=4), children),
        min_size=1,
        max_size=4,
        unique_by=lambda f: f[0],
    )


_DTYPE = st.one_of(_RAW, st.recursive(_FIELD, _structured, max_leaves=8))


@given(dtype=_DTYPE)
@settings(max_examples=150, deadline=None)
def test_random_dtypes_match_zarr_python(dtype: Any) -> None:
    """Any supported dtype: our zarr.json is zarr-python's, byte for byte, and reads back."""
    dt = np.dtype(dtype)
    native = parse_dtype(dt)
    store = MemoryStore()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.create_array(store, shape=(3,), chunks=(2,), dtype=native, compressors=None)
    theirs = store._store_dict["zarr.json"].to_bytes()
    assert ArrayMetadata.create((3,), (2,), dt, fill_value=None).to_json() == theirs
    assert ArrayMetadata.from_json(theirs).dtype == native
