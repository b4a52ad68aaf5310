"""SharedMemoryStore: zarr-python's own store conformance suite, its Hypothesis state
machines, the key mapping, and interoperability between sharedzarr and zarr-python."""

from __future__ import annotations

import pickle
import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from hypothesis import settings  # noqa: E402
from hypothesis.stateful import run_state_machine_as_test  # noqa: E402
from zarr.abc.store import (  # noqa: E402
    OffsetByteRequest,
    RangeByteRequest,
    SuffixByteRequest,
    SupportsSyncStore,
)
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype  # noqa: E402
from zarr.testing.stateful import ZarrHierarchyStateMachine, ZarrStoreStateMachine  # noqa: E402
from zarr.testing.store import StoreTests  # noqa: E402

import sharedzarr as sz  # noqa: E402
from sharedzarr._table import Table  # noqa: E402
from sharedzarr.errors import TableNotFoundError  # noqa: E402
from sharedzarr.storage.shm import delete_table, table_exists  # noqa: E402
from sharedzarr.zarr_store import (  # noqa: E402
    SharedMemoryStore,
    store_key_to_table_key,
    table_key_to_store_key,
)


def _name(tag: str = "zs") -> str:
    return f"{tag}-{secrets.token_hex(4)}"


@pytest.fixture
def table_name() -> Iterator[str]:
    """A fresh empty table, deleted after the test."""
    t = Table.create(_name())
    name = t.name
    t.close()
    yield name
    if table_exists(name):
        delete_table(name)


@pytest.fixture
def shm_store(table_name: str) -> SharedMemoryStore:
    return SharedMemoryStore(table_name)


# ----------------------------------------------------------------------------- conformance


class TestSharedMemoryStore(StoreTests[SharedMemoryStore, cpu.Buffer]):
    """zarr-python's store conformance suite, every test run (none skipped)."""

    store_cls = SharedMemoryStore
    buffer_cls = cpu.Buffer

    async def set(self, store: SharedMemoryStore, key: str, value: Buffer) -> None:
        with Table.attach(store.table_name) as t:
            t.insert(store_key_to_table_key(key), value.as_numpy_array())

    async def get(self, store: SharedMemoryStore, key: str) -> Buffer:
        with Table.attach(store.table_name) as t:
            return self.buffer_cls.from_bytes(t[store_key_to_table_key(key)])

    @pytest.fixture
    def store_kwargs(self, table_name: str) -> dict[str, Any]:
        return {"table_name": table_name}

    def test_store_repr(self, store: SharedMemoryStore) -> None:
        assert repr(store) == f"SharedMemoryStore('shm://{store.table_name}')"
        assert str(store) == f"shm://{store.table_name}"

    def test_store_supports_writes(self, store: SharedMemoryStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: SharedMemoryStore) -> None:
        assert store.supports_listing
        assert store.supports_deletes
        assert store.supports_consolidated_metadata
        assert not store.supports_partial_writes

    def test_implements_sync_protocol(self, store: SharedMemoryStore) -> None:
        assert isinstance(store, SupportsSyncStore)


def test_no_conformance_test_is_skipped(pytestconfig: pytest.Config) -> None:
    """Every inherited StoreTests test is collected for our class (none opted out)."""
    inherited = {n for n in dir(StoreTests) if n.startswith("test_")}
    ours = {n for n in dir(TestSharedMemoryStore) if n.startswith("test_")}
    assert inherited <= ours


# ----------------------------------------------------------------------------- state machines


def test_zarr_store_state_machine(shm_store: SharedMemoryStore) -> None:
    run_state_machine_as_test(
        lambda: ZarrStoreStateMachine(shm_store),
        settings=settings(max_examples=40, stateful_step_count=25, deadline=None),
    )


@pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")
def test_zarr_hierarchy_state_machine(shm_store: SharedMemoryStore) -> None:
    run_state_machine_as_test(
        lambda: ZarrHierarchyStateMachine(shm_store),
        settings=settings(max_examples=8, stateful_step_count=10, deadline=None),
    )


# ----------------------------------------------------------------------------- key mapping


@pytest.mark.parametrize(
    ("store_key", "table_key"),
    [
        ("zarr.json", "metadata"),
        ("c", ("chunk", ())),
        ("c/0", ("chunk", (0,))),
        ("c/3/12/0", ("chunk", (3, 12, 0))),
        ("c/999999999999999999", ("chunk", (999999999999999999,))),
        ("metadata", ("key", "metadata")),
        ("c/00", "c/00"),
        ("c/-1", "c/-1"),
        ("c/+1", "c/+1"),
        ("c/1/", "c/1/"),
        ("c//1", "c//1"),
        ("c/1.0", "c/1.0"),
        ("c/1000000000000000000", "c/1000000000000000000"),
        ("c.0.0", "c.0.0"),
        ("foo/zarr.json", "foo/zarr.json"),
        ("foo/c/0/0", "foo/c/0/0"),
        ("", ""),
    ],
)
def test_key_mapping_roundtrip(store_key: str, table_key: Any) -> None:
    assert store_key_to_table_key(store_key) == table_key
    assert table_key_to_store_key(table_key) == store_key


@pytest.mark.parametrize(
    "table_key",
    [1, b"x", ("chunk", (-1,)), ("chunk", (True,)), ("chunk", 3), ("other", (1,)), "c/0"],
)
def test_table_keys_without_store_spelling_are_not_listed(table_key: Any) -> None:
    assert table_key_to_store_key(table_key) is None


async def test_foreign_table_keys_are_invisible(table_name: str) -> None:
    with Table.attach(table_name) as t:
        t.insert(1, b"int key")
        t.insert(("chunk", (-1,)), b"negative")
        t.insert("c/0", b"a string that the store spells as a tuple")
        t.insert("plain", b"visible")
    store = SharedMemoryStore(table_name)
    assert [k async for k in store.list()] == ["plain"]
    assert await store.get("c/0") is None


async def test_store_metadata_key_does_not_clobber_zarr_json(shm_store: SharedMemoryStore) -> None:
    await shm_store.set("zarr.json", cpu.Buffer.from_bytes(b"{}"))
    await shm_store.set("metadata", cpu.Buffer.from_bytes(b"other"))
    assert (await shm_store.get("zarr.json")).to_bytes() == b"{}"
    assert (await shm_store.get("metadata")).to_bytes() == b"other"
    assert sorted([k async for k in shm_store.list()]) == ["metadata", "zarr.json"]


# ----------------------------------------------------------------------------- store behaviour


async def test_byte_ranges_out_of_bounds(shm_store: SharedMemoryStore) -> None:
    await shm_store.set("k", cpu.Buffer.from_bytes(b"0123456789"))
    get = shm_store.get
    assert (await get("k", byte_range=SuffixByteRequest(100))).to_bytes() == b"0123456789"
    assert (await get("k", byte_range=RangeByteRequest(8, 100))).to_bytes() == b"89"
    assert (await get("k", byte_range=OffsetByteRequest(20))).to_bytes() == b""
    assert (await get("k", byte_range=RangeByteRequest(2, 5))).to_bytes() == b"234"


async def test_get_is_zero_copy_and_read_only(shm_store: SharedMemoryStore) -> None:
    await shm_store.set("c/0", cpu.Buffer.from_bytes(b"\x01" * 4096))
    buf = await shm_store.get("c/0", default_buffer_prototype())
    arr = buf.as_numpy_array()
    assert not arr.flags.writeable
    assert not arr.flags.owndata
    # an overwrite publishes a new record: the view a reader holds never changes
    await shm_store.set("c/0", cpu.Buffer.from_bytes(b"\x02" * 4096))
    assert arr.tobytes() == b"\x01" * 4096
    assert (await shm_store.get("c/0")).to_bytes() == b"\x02" * 4096


async def test_getsize_does_not_copy(shm_store: SharedMemoryStore) -> None:
    await shm_store.set("big", cpu.Buffer.from_bytes(bytes(1 << 20)))
    assert await shm_store.getsize("big") == 1 << 20
    assert await shm_store.getsize_prefix("") == 1 << 20
    with pytest.raises(FileNotFoundError):
        await shm_store.getsize("missing")


async def test_set_if_not_exists_uses_insert_new(shm_store: SharedMemoryStore) -> None:
    await shm_store.set_if_not_exists("zarr.json", cpu.Buffer.from_bytes(b"a"))
    await shm_store.set_if_not_exists("zarr.json", cpu.Buffer.from_bytes(b"b"))
    assert (await shm_store.get("zarr.json")).to_bytes() == b"a"


def test_sync_protocol(shm_store: SharedMemoryStore) -> None:
    shm_store.set_sync("c/1/2", cpu.Buffer.from_bytes(b"abc"))
    got = shm_store.get_sync("c/1/2", byte_range=RangeByteRequest(1, 3))
    assert got.to_bytes() == b"bc"
    with Table.attach(shm_store.table_name) as t:
        assert t[("chunk", (1, 2))] == b"abc"
    shm_store.delete_sync("c/1/2")
    assert shm_store.get_sync("c/1/2") is None


def test_pickles_by_name_and_compares_by_name(shm_store: SharedMemoryStore) -> None:
    data = pickle.dumps(shm_store)
    assert len(data) < 300
    assert shm_store.table_name.encode() in data
    clone = pickle.loads(data)
    assert clone == shm_store
    assert hash(clone) == hash(shm_store)
    assert clone._table is None  # attached lazily, on first use
    ro = pickle.loads(pickle.dumps(shm_store.with_read_only(True)))
    assert ro.read_only and ro == shm_store


def test_missing_table_raises_table_not_found() -> None:
    with pytest.raises(TableNotFoundError) as exc:
        SharedMemoryStore(_name("missing"))
    assert isinstance(exc.value, FileNotFoundError)


def test_read_only_store_maps_read_only(shm_store: SharedMemoryStore) -> None:
    ro = shm_store.with_read_only(True)
    assert ro.table._ro
    with pytest.raises(ValueError, match="read-only"):
        ro.set_sync("k", cpu.Buffer.from_bytes(b"x"))


def test_close_then_reuse(shm_store: SharedMemoryStore) -> None:
    shm_store.set_sync("k", cpu.Buffer.from_bytes(b"x"))
    shm_store.close()
    assert shm_store.get_sync("k").to_bytes() == b"x"


def test_create_and_delete_table() -> None:
    name = _name("create")
    store = SharedMemoryStore.create(name)
    assert store.table_name == name and table_exists(name)
    with pytest.raises(sz.TableExistsError, match="overwrite=True"):
        SharedMemoryStore.create(name)
    store.set_sync("k", cpu.Buffer.from_bytes(b"x"))
    store2 = SharedMemoryStore.create(name, overwrite=True)
    assert store2.get_sync("k") is None
    with pytest.raises(TableNotFoundError):
        store.get_sync("k")  # the old handle sees its table was deleted
    store2.delete_table()
    assert not table_exists(name)
    with pytest.raises(ValueError, match="one value per key"):
        SharedMemoryStore.create(None, table_type="bag")
    auto = SharedMemoryStore.create()
    try:
        assert table_exists(auto.table_name)
    finally:
        auto.delete_table()


# ----------------------------------------------------------------------------- interop


@pytest.mark.parametrize(
    ("dtype", "fill", "compressor"),
    [("float64", np.nan, None), ("int16", -7, "zstd"), ("uint8", 3, "gzip"), ("bool", True, None)],
)
def test_sz_array_opens_in_zarr(cleanup: list[str], dtype: str, fill: Any, compressor: Any) -> None:
    name = _name("sz2zarr")
    cleanup.append(name)
    a = sz.create(
        (13, 7),
        (4, 3),
        dtype,
        fill_value=fill,
        compressor=compressor,
        table_name=name,
        attributes={"units": "m", "n": 3},
        dimension_names=("y", "x"),
    )
    rng = np.random.default_rng(0)
    data = (rng.random((13, 7)) * 100).astype(dtype)
    a[:10, :] = data[:10]  # rows 10.. stay fill
    expected = np.array(a[:])
    z = zarr.open_array(store=SharedMemoryStore(name), mode="r")
    assert z.shape == (13, 7) and z.chunks == (4, 3)
    assert z.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(z.fill_value, a.fill_value)
    assert dict(z.attrs) == {"units": "m", "n": 3}
    assert z.metadata.dimension_names == ("y", "x")
    np.testing.assert_array_equal(z[:], expected)
    np.testing.assert_array_equal(z[2:11, 1:5], expected[2:11, 1:5])


@pytest.mark.parametrize("compressors", [None, "gzip", "zstd"])
def test_zarr_array_opens_in_sharedzarr(cleanup: list[str], compressors: Any) -> None:
    from zarr.codecs import GzipCodec, ZstdCodec

    codec = {"gzip": GzipCodec(level=3), "zstd": ZstdCodec(level=1), None: None}[compressors]
    name = _name("zarr2sz")
    store = SharedMemoryStore.create(name)
    cleanup.append(name)
    data = np.arange(11 * 9, dtype="<i4").reshape(11, 9)
    z = zarr.create_array(
        store,
        shape=data.shape,
        chunks=(5, 4),
        dtype="int32",
        fill_value=-1,
        compressors=codec,
        attributes={"source": "zarr-python"},
    )
    z[:] = data
    z[0, 0] = -1  # a chunk holding the fill value is still written
    data[0, 0] = -1
    a = sz.open(name)
    assert a.shape == data.shape and a.chunks == (5, 4) and a.dtype == np.int32
    assert a.fill_value == -1
    assert dict(a.attrs) == {"source": "zarr-python"}
    np.testing.assert_array_equal(a[:], data)
    # and back: sharedzarr writes, zarr-python reads
    a[3:7, 2:8] = 42
    data[3:7, 2:8] = 42
    np.testing.assert_array_equal(zarr.open_array(store=store, mode="r")[:], data)


def test_rank0_array_both_ways(cleanup: list[str]) -> None:
    name = _name("rank0")
    cleanup.append(name)
    a = sz.create((), (), "float32", table_name=name)
    a[()] = 2.5
    z = zarr.open_array(store=SharedMemoryStore(name))
    assert z[()] == 2.5
    z[()] = 4.0
    assert sorted(SharedMemoryStore(name).table.keys(), key=str) == [("chunk", ()), "metadata"]
    assert a[()] == 4.0


def test_group_with_several_arrays_in_one_store(cleanup: list[str]) -> None:
    name = _name("group")
    store = SharedMemoryStore.create(name)
    cleanup.append(name)
    root = zarr.open_group(store=store, mode="w", attributes={"title": "demo"})
    temps = root.create_array("temps", shape=(6, 4), chunks=(3, 2), dtype="float32")
    temps[:] = np.arange(24, dtype="float32").reshape(6, 4)
    sub = root.create_group("sub")
    counts = sub.create_array("counts", shape=(10,), chunks=(4,), dtype="int64", fill_value=0)
    counts[:5] = 1
    # another process (here: a new handle by name) sees the whole hierarchy
    g = zarr.open_group(store=SharedMemoryStore(name), mode="r")
    assert g.attrs["title"] == "demo"
    assert sorted(k for k, _ in g.members(max_depth=None)) == ["sub", "sub/counts", "temps"]
    np.testing.assert_array_equal(g["temps"][:], temps[:])
    np.testing.assert_array_equal(g["sub/counts"][:], [1] * 5 + [0] * 5)
    keys = Table.attach(name).keys()
    assert "metadata" in keys  # the root group's zarr.json
    assert "temps/c/0/0" in keys and "sub/counts/zarr.json" in keys
    with pytest.raises(ValueError, match="node_type"):
        sz.open(name)  # the root is a group, not an array


def test_zarr_writes_are_visible_to_open_sharedzarr_handles(cleanup: list[str]) -> None:
    name = _name("live")
    cleanup.append(name)
    a = sz.create((8,), (4,), "int64", table_name=name)
    z = zarr.open_array(store=SharedMemoryStore(name))
    z[:] = np.arange(8)
    np.testing.assert_array_equal(a[:], np.arange(8))
    z.attrs["k"] = "v"
    a.refresh()
    assert a.attrs["k"] == "v"


def test_zarr_sharded_array_in_store(cleanup: list[str]) -> None:
    """Sharding reads byte ranges of one stored shard through the store."""
    name = _name("shard")
    store = SharedMemoryStore.create(name)
    cleanup.append(name)
    data = np.arange(64, dtype="uint16").reshape(8, 8)
    z = zarr.create_array(
        store, name="s", shape=(8, 8), chunks=(2, 2), shards=(4, 4), dtype="uint16"
    )
    z[:] = data
    np.testing.assert_array_equal(zarr.open_array(store=store, path="s")[1:7, 3:5], data[1:7, 3:5])
