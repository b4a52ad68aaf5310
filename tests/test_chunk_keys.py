"""Any zarr array opens.

zarr-python's own ``test_chunk_key_encoding`` cases on SharedMemoryStore; sharedzarr.open
reading and writing root arrays that zarr-python wrote with ``default``/``v2`` chunk key
encodings and ``/``/``.`` separators (also from spawned processes); the sharding codec."""

from __future__ import annotations

import json
import multiprocessing as mp
import re
import uuid
from collections.abc import Iterator

import _api_workers as W
import numpy as np
import pytest

import sharedzarr as sz
from sharedzarr._table import Table
from sharedzarr.storage.shm import delete_table, table_exists

zarr = pytest.importorskip("zarr")
from zarr.codecs import BytesCodec, GzipCodec, ShardingCodec, ZstdCodec  # noqa: E402
from zarr.codecs.sharding import ShardingCodecIndexLocation as IndexLocation  # noqa: E402
from zarr.core.array import ArrayV2Metadata  # noqa: E402

from sharedzarr.zarr_store import SharedMemoryStore, table_key_to_store_key  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")

CTX = mp.get_context("spawn")
ENCODINGS = [
    {"name": "default", "separator": "/"},
    {"name": "default", "separator": "."},
    {"name": "v2", "separator": "/"},
    {"name": "v2", "separator": "."},
]
IDS = [f"{e['name']}-{e['separator']}" for e in ENCODINGS]


@pytest.fixture
def store() -> Iterator[SharedMemoryStore]:
    s = SharedMemoryStore.create(f"ck-{uuid.uuid4().hex[:8]}")
    yield s
    if table_exists(s.table_name):
        delete_table(s.table_name)


# ----------------------------------------------------------------------------- zarr's own cases


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("name", ["v2", "default", "invalid"])
@pytest.mark.parametrize("separator", [".", "/"])
def test_chunk_key_encoding(
    name: str, separator: str, zarr_format: int, store: SharedMemoryStore
) -> None:
    """zarr-python's tests/test_api.py::TestCreateArray::test_chunk_key_encoding, on our store."""
    chunk_key_encoding = {"name": name, "separator": separator}
    error_msg = ""
    if name == "invalid":
        error_msg = "Unknown chunk key encoding"  # zarr 3.1.6 adds the registered names
    if zarr_format == 2 and name == "default":
        error_msg = (
            "Invalid chunk key encoding. For Zarr format 2 arrays, the `name` field of the "
            "chunk key encoding must be 'v2'."
        )
    if error_msg:
        with pytest.raises(ValueError, match=re.escape(error_msg)):
            zarr.create_array(
                store=store,
                dtype="uint8",
                shape=(10,),
                chunks=(1,),
                zarr_format=zarr_format,
                chunk_key_encoding=chunk_key_encoding,
            )
    else:
        arr = zarr.create_array(
            store=store,
            dtype="uint8",
            shape=(10,),
            chunks=(1,),
            zarr_format=zarr_format,
            chunk_key_encoding=chunk_key_encoding,
        )
        if isinstance(arr.metadata, ArrayV2Metadata):
            assert arr.metadata.dimension_separator == separator
        # and the array works: what it writes it reads back
        arr[:] = np.arange(10, dtype="uint8")
        np.testing.assert_array_equal(zarr.open_array(store=store)[:], np.arange(10))


# ----------------------------------------------------------------------------- sharedzarr.open


@pytest.mark.parametrize("encoding", ENCODINGS, ids=IDS)
def test_get_state_lists_the_chunks_of_every_encoding(
    encoding: dict[str, str], store: SharedMemoryStore
) -> None:
    """ExZarr's get_state: every stored chunk by its index, whatever key zarr-python gave it."""
    from sharedzarr.storage.shm import get_state

    z = zarr.create_array(store, shape=(7, 9), chunks=(3, 4), dtype="int32", fill_value=-1,
                          chunk_key_encoding=encoding, compressors=None)  # fmt: skip
    z[:5, 2:] = 5
    state = get_state(store.table_name)
    assert set(state.chunks) == {(i // 3, j // 4) for i in range(5) for j in range(2, 9)}
    assert state.metadata is not None and json.loads(state.metadata)["node_type"] == "array"
    with sz.open(store.table_name) as a:
        for idx, raw in state.chunks.items():
            assert np.frombuffer(raw, "<i4").reshape(3, 4).tolist() == a.read_chunk(idx).tolist()


def _chunk_keys(store: SharedMemoryStore) -> set[str]:
    """zarr-python's names of the stored chunks."""
    with Table.attach(store.table_name) as t:
        keys = {table_key_to_store_key(k) for k in t.keys()}
    return {k for k in keys if k is not None and k != "zarr.json"}


@pytest.mark.parametrize("encoding", ENCODINGS, ids=IDS)
def test_open_reads_and_writes_every_encoding(
    encoding: dict[str, str], store: SharedMemoryStore
) -> None:
    z = zarr.create_array(store, shape=(7, 9), chunks=(3, 4), dtype="int32", fill_value=-1,
                          chunk_key_encoding=encoding)  # fmt: skip
    data = np.arange(63, dtype="int32").reshape(7, 9)
    z[:5, 2:] = data[:5, 2:]
    expected = np.asarray(z[...])
    sep = encoding["separator"]
    prefix = "c" + sep if encoding["name"] == "default" else ""
    written = {(i // 3, j // 4) for i in range(5) for j in range(2, 9)}
    assert _chunk_keys(store) == {f"{prefix}{i}{sep}{j}" for i, j in written}
    with sz.open(store.table_name) as a:
        assert a.metadata.chunk_key_encoding == {
            "name": encoding["name"],
            "configuration": {"separator": sep},
        }
        np.testing.assert_array_equal(a[...], expected)
        assert set(a.list_chunks()) == written
        assert a.nchunks_initialized == len(written)
        a[6, :] = 100  # chunks zarr never wrote
        a[0, 0] = 7  # read-modify-write of a chunk zarr wrote
        a.delete_chunk((1, 2))
    expected[6, :] = 100
    expected[0, 0] = 7
    expected[3:6, 8:9] = -1
    np.testing.assert_array_equal(zarr.open_array(store=store)[...], expected)
    written = (written | {(2, 0), (2, 1), (2, 2)}) - {(1, 2)}
    assert _chunk_keys(store) == {f"{prefix}{i}{sep}{j}" for i, j in written}


@pytest.mark.parametrize("encoding", ENCODINGS, ids=IDS)
def test_spawned_process_reads_every_encoding(
    encoding: dict[str, str], store: SharedMemoryStore
) -> None:
    z = zarr.create_array(store, shape=(10, 4), chunks=(4, 3), dtype="float64",
                          chunk_key_encoding=encoding)  # fmt: skip
    z[...] = np.arange(40.0).reshape(10, 4)
    with CTX.Pool(1) as pool:
        np.testing.assert_array_equal(pool.apply(W.read_all, (store.table_name,)), z[...])
        pool.apply(W.write, (store.table_name, (slice(8, 10), 3), -5.0))
    assert (z[8:10, 3] == -5.0).all()


@pytest.mark.parametrize("encoding", ENCODINGS, ids=IDS)
def test_rank_zero_array(encoding: dict[str, str], store: SharedMemoryStore) -> None:
    z = zarr.create_array(store, shape=(), dtype="int16", chunk_key_encoding=encoding)
    z[()] = 12
    with sz.open(store.table_name) as a:
        assert a[()] == 12
        assert a.list_chunks() == [()]
        a[()] = -3
    assert z[()] == -3


@pytest.mark.parametrize("encoding", ENCODINGS[1:], ids=IDS[1:])
def test_resize_keeps_zarr_keys(encoding: dict[str, str], store: SharedMemoryStore) -> None:
    z = zarr.create_array(store, shape=(6,), chunks=(2,), dtype="uint8",
                          chunk_key_encoding=encoding)  # fmt: skip
    z[:] = np.arange(1, 7, dtype="uint8")
    with sz.open(store.table_name) as a:
        a.resize((3,))
        a.resize((8,))
        a[6:] = 9
    np.testing.assert_array_equal(
        zarr.open_array(store=store)[:], np.array([1, 2, 3, 0, 0, 0, 9, 9], dtype="uint8")
    )


def test_arrays_below_the_root_keep_any_encoding(store: SharedMemoryStore) -> None:
    for i, encoding in enumerate(ENCODINGS):
        z = zarr.create_array(store, name=f"sub{i}", shape=(4,), chunks=(2,), dtype="i4",
                              chunk_key_encoding=encoding)  # fmt: skip
        z[:] = i
        np.testing.assert_array_equal(zarr.open_array(store=store, path=f"sub{i}")[:], i)


def test_sharedzarr_arrays_use_the_default_encoding() -> None:
    a = sz.create((4, 4), (2, 2), "int8", storage="memory")
    assert a.metadata.chunk_key_encoding == {
        "name": "default",
        "configuration": {"separator": "/"},
    }
    a.delete()


# ----------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("index_location", ["end", "start"])
@pytest.mark.parametrize(
    ("dtype", "inner_codecs"),
    [
        ("int32", [BytesCodec()]),
        ("float64", [BytesCodec(endian="big"), ZstdCodec()]),
        ("M8[s]", [BytesCodec(), GzipCodec()]),
        ("U3", [BytesCodec()]),
    ],
    ids=["int32-raw", "float64-big-zstd", "datetime-gzip", "U3"],
)
def test_open_reads_and_writes_sharded_arrays(
    dtype: str, inner_codecs: list, index_location: str, store: SharedMemoryStore
) -> None:
    shard = ShardingCodec(chunk_shape=(2, 3), codecs=inner_codecs,
                          index_location=IndexLocation(index_location))  # fmt: skip
    z = zarr.create_array(store, shape=(10, 13), chunks=(4, 6), serializer=shard, dtype=dtype,
                          compressors=None)  # fmt: skip
    values = np.arange(72).reshape(8, 9)
    data = values.astype(str).astype(dtype) if dtype == "U3" else values.astype(dtype)
    z[1:9, 2:11] = data
    with sz.open(store.table_name) as a:
        assert a.chunks == (4, 6)  # the shard is sharedzarr's chunk
        assert a[...].tobytes() == np.asarray(z[...]).tobytes()
        assert a[3:5, 4].tobytes() == np.asarray(z[3:5, 4]).tobytes()
        a[0, :] = data[0, 0]  # read-modify-write of whole shards
        a[9, 12] = data[1, 1]
        expected = a[...]
    assert np.asarray(zarr.open_array(store=store)[...]).tobytes() == expected.tobytes()
    with CTX.Pool(1) as pool:
        assert pool.apply(W.read_all, (store.table_name,)).tobytes() == expected.tobytes()


def test_sharded_array_metadata_round_trips(store: SharedMemoryStore) -> None:
    zarr.create_array(store, shape=(8, 8), chunks=(2, 2), shards=(4, 4), dtype="uint16")
    raw = store.get_sync("zarr.json").to_bytes()
    with sz.open(store.table_name) as a:
        assert a.metadata.to_json() == raw
        assert a.compressor[0]["name"] == "sharding_indexed"


@pytest.mark.parametrize(
    "codecs",
    [
        [{"name": "transpose", "configuration": {"order": [1, 0]}}, {"name": "bytes"}],
        [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": [3, 3], "codecs": [{"name": "bytes"}],
            "index_codecs": [{"name": "bytes"}], "index_location": "end"}}],
        [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": [2, 2], "codecs": [{"name": "transpose",
                                               "configuration": {"order": [1, 0]}}],
            "index_codecs": [{"name": "bytes"}], "index_location": "end"}}],
    ],
    ids=["transpose", "inner-chunks-do-not-divide", "inner-transpose"],
)  # fmt: skip
def test_unsupported_codecs_fail_clearly(codecs: list) -> None:
    from sharedzarr._metadata import ArrayMetadata

    doc = json.loads(ArrayMetadata.create((8, 8), (4, 4), "int8").to_json())
    doc["codecs"] = codecs
    with pytest.raises(ValueError, match="transpose|sharding_indexed"):
        ArrayMetadata.from_dict(doc)


def test_a_zarr_format_2_array_gets_a_clear_error(store: SharedMemoryStore) -> None:
    z = zarr.create_array(store, shape=(4,), chunks=(2,), dtype="i4", zarr_format=2)
    z[:] = 3
    with pytest.raises(ValueError, match="Zarr format 2 array"):
        sz.open(store.table_name)
    copy = sz.array(zarr.open_array(store=store), chunks=z.chunks, storage="memory")
    np.testing.assert_array_equal(copy[...], 3)
    copy.delete()
