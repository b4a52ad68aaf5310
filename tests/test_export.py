"""sz.export / sz.load: round trips through a directory and through a real S3 API (moto's
server on loopback), streaming, codecs, consistency, and the CLI subcommands."""

from __future__ import annotations

import argparse
import os
import secrets
import tracemalloc
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

import sharedzarr as sz  # noqa: E402
from sharedzarr._export import export, load  # noqa: E402
from sharedzarr.cli._transfer import add_cli_parsers  # noqa: E402
from sharedzarr.storage.shm import table_exists  # noqa: E402
from sharedzarr.zarr_store import SharedMemoryStore  # noqa: E402


def _name(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(4)}"


def _make(cleanup: list[str], **kw: Any) -> sz.Array:
    name = _name("exp")
    cleanup.append(name)
    kw.setdefault("attributes", {"units": "K", "nested": {"a": [1, 2]}})
    a = sz.create(
        (37, 23),
        (8, 5),
        kw.pop("dtype", "float64"),
        fill_value=kw.pop("fill_value", np.nan),
        table_name=name,
        dimension_names=("y", "x"),
        **kw,
    )
    rng = np.random.default_rng(1)
    a[:30] = rng.normal(size=(30, 23)).astype(a.dtype)
    return a


# ----------------------------------------------------------------------------- directory


@pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3")
@pytest.mark.parametrize("compressor", [None, "zstd", "gzip", "blosc", "lz4"])
def test_export_directory_roundtrip(tmp_path: Path, cleanup: list[str], compressor: Any) -> None:
    a = _make(cleanup, compressor=compressor)
    z = export(a, tmp_path / "a.zarr")
    # a standard Zarr v3 array: zarr-python opens it from the directory alone
    z = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    assert z.shape == a.shape and z.chunks == a.chunks and z.dtype == a.dtype
    assert dict(z.attrs) == dict(a.attrs)
    np.testing.assert_array_equal(z[:], a[:])
    # chunks never written are not exported (rows 32.. are fill only)
    assert len(os.listdir(tmp_path / "a.zarr" / "c")) == 4  # row chunks 0..3
    name = _name("back")
    cleanup.append(name)
    b = load(tmp_path / "a.zarr", name)
    assert b.compressor == []  # raw in shared memory by default
    np.testing.assert_array_equal(b[:], a[:])
    assert b.list_chunks() == a.list_chunks()
    assert dict(b.attrs) == dict(a.attrs) and b.dimension_names == ("y", "x")
    assert np.isnan(b.fill_value)


def test_export_copies_stored_bytes_unchanged(tmp_path: Path, cleanup: list[str]) -> None:
    a = _make(cleanup, compressor="zstd")
    export(a.name, tmp_path / "a.zarr")
    stored = a.table.get(("chunk", (1, 2)))
    assert (tmp_path / "a.zarr" / "c" / "1" / "2").read_bytes() == stored
    meta = (tmp_path / "a.zarr" / "zarr.json").read_bytes()
    assert meta == a.table.get("metadata")


def test_export_recompresses(tmp_path: Path, cleanup: list[str]) -> None:
    a = _make(cleanup)  # raw in shared memory
    z = export(a, tmp_path / "z.zarr", compressor="zstd")
    assert [c.to_dict()["name"] for c in z.metadata.codecs] == ["bytes", "zstd"]
    np.testing.assert_array_equal(z[:], a[:])
    z = export(a, tmp_path / "z.zarr", compressor=None, overwrite=True)
    assert [c.to_dict()["name"] for c in z.metadata.codecs] == ["bytes"]


def test_export_refuses_to_overwrite(tmp_path: Path, cleanup: list[str]) -> None:
    a = _make(cleanup)
    export(a, tmp_path / "a.zarr")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export(a, tmp_path / "a.zarr")
    a[:] = 1.0
    export(a, tmp_path / "a.zarr", overwrite=True)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a.zarr"))[:], 1.0)


def test_export_into_a_group_path_of_any_store(cleanup: list[str]) -> None:
    a = _make(cleanup, dtype="int32", fill_value=0)
    dest = SharedMemoryStore.create(_name("dest"))
    cleanup.append(dest.table_name)
    zarr.open_group(store=dest, mode="w")
    export(a, dest, path="arrays/first")
    g = zarr.open_group(store=dest, mode="r")
    np.testing.assert_array_equal(g["arrays/first"][:], a[:])


def test_export_warns_when_written_meanwhile(
    tmp_path: Path, cleanup: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sharedzarr._export as ex

    a = _make(cleanup)
    real = ex._export_async

    async def racing(arr: Any, *args: Any) -> None:
        a[0, 0] = 42.0  # another writer, during the export
        await real(arr, *args)

    monkeypatch.setattr(ex, "_export_async", racing)
    with pytest.warns(RuntimeWarning, match="lock=True"):
        export(a, tmp_path / "w.zarr")
    monkeypatch.setattr(ex, "_export_async", real)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export(a.name, tmp_path / "l.zarr", lock=True)  # writers wait: no warning


def test_load_any_codec_zarr_decodes(tmp_path: Path, cleanup: list[str]) -> None:
    """Sharding + transpose + big-endian + crc32c: sharedzarr reads none of them directly."""
    from zarr.codecs import BytesCodec, Crc32cCodec, TransposeCodec

    src = tmp_path / "s.zarr"
    data = np.arange(19 * 13, dtype=">i8").reshape(19, 13)
    z = zarr.create_array(
        str(src),
        shape=data.shape,
        chunks=(2, 3),
        shards=(4, 6),
        dtype=">i8",
        fill_value=-5,
        filters=[TransposeCodec(order=(1, 0))],
        serializer=BytesCodec(endian="big"),
        compressors=[Crc32cCodec()],
    )
    z[:16] = data[:16]
    name = _name("anycodec")
    cleanup.append(name)
    a = load(src, name)
    assert a.chunks == (2, 3) and a.dtype == np.dtype("int64") and a.fill_value == -5
    np.testing.assert_array_equal(a[:], z[:])
    assert max(a.list_chunks())[0] == 7  # rows >= 16 are fill: not stored


def test_load_zarr_v2_and_rank0(tmp_path: Path, cleanup: list[str]) -> None:
    v2 = zarr.create_array(
        str(tmp_path / "v2.zarr"), shape=(10,), chunks=(3,), dtype="uint16", zarr_format=2
    )
    v2[:] = np.arange(10)
    r0 = zarr.create_array(str(tmp_path / "r0.zarr"), shape=(), dtype="float32", fill_value=0)
    r0[()] = 7.5
    n1, n2 = _name("v2"), _name("r0")
    cleanup += [n1, n2]
    np.testing.assert_array_equal(load(tmp_path / "v2.zarr", n1)[:], np.arange(10))
    b = load(tmp_path / "r0.zarr", n2)
    assert b.shape == () and b[()] == 7.5
    z = export(b, tmp_path / "r0b.zarr")
    assert z[()] == 7.5


def test_load_failure_deletes_the_new_table(tmp_path: Path, cleanup: list[str]) -> None:
    z = zarr.create_array(str(tmp_path / "s.zarr"), shape=(4,), chunks=(2,), dtype="int8")
    z[:] = 1
    (tmp_path / "s.zarr" / "c" / "1").write_bytes(b"garbage that zstd cannot decode")
    name = _name("fail")
    cleanup.append(name)
    with pytest.raises(Exception):  # noqa: B017 - whatever zarr's codec raises
        load(tmp_path / "s.zarr", name)
    assert not table_exists(name)


@pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")
def test_load_refuses_unsupported_dtype(tmp_path: Path, cleanup: list[str]) -> None:
    from zarr.core.dtype import VariableLengthBytes

    zarr.create_array(
        str(tmp_path / "t.zarr"), shape=(3,), chunks=(3,), dtype=VariableLengthBytes()
    )
    with pytest.raises(TypeError, match="cannot load the root array"):
        load(tmp_path / "t.zarr", _name("dt"))


def test_load_refuses_variable_length_strings_and_says_how(tmp_path: Path) -> None:
    z = zarr.create_array(str(tmp_path / "s.zarr"), shape=(4,), chunks=(2,), dtype=str)
    z[:] = np.array(["a", "bb", "ccc", "dddd"], dtype=object)
    name = _name("vlen")
    with pytest.raises(TypeError, match=r"variable-length strings.*fixed-length dtype.*U32"):
        load(tmp_path / "s.zarr", name)
    assert not table_exists(name)  # nothing was created


def test_streaming_memory_is_bounded(tmp_path: Path, cleanup: list[str]) -> None:
    """Export and load allocate a few chunks' worth, not the array (64 MiB here)."""
    name = _name("big")
    cleanup.append(name)
    a = sz.create((2048, 4096), (64, 4096), "float64", table_name=name)  # 32 chunks of 2 MiB
    for i in range(32):
        a.write_chunk((i, 0), float(i))
    tracemalloc.start()
    try:
        export(a, tmp_path / "big.zarr", concurrency=2)
        _, peak_export = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        n2 = _name("big2")
        cleanup.append(n2)
        b = load(tmp_path / "big.zarr", n2, concurrency=2)
        _, peak_load = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_export < 1 << 20  # zero-copy: not even one 2 MiB chunk is copied
    assert peak_load < 16 << 20  # a few chunks in flight (each read + decoded), not 64 MiB
    assert b.get_slice((2047, 0), (2048, 2)).tolist() == [[31.0, 31.0]]


# ----------------------------------------------------------------------------- S3 (moto)


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """A real S3 API on 127.0.0.1 (moto's server mode) and fsspec options for it."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    opts = {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": f"http://{host}:{port}",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    boto3 = pytest.importorskip("boto3")
    boto3.client(
        "s3",
        endpoint_url=opts["endpoint_url"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket="sharedzarr-test")
    try:
        yield opts
    finally:
        _close_s3_sessions()
        server.stop()


def _close_s3_sessions() -> None:
    """Close the aiohttp sessions of the (cached) s3fs instances on zarr's event loop."""
    import s3fs
    from zarr.core.sync import sync

    async def close(fs: Any) -> None:
        if getattr(fs, "_s3", None) is not None:
            await fs._s3.__aexit__(None, None, None)
            fs._s3 = None

    for fs in list(s3fs.S3FileSystem._cache.values()):
        if fs.asynchronous:
            sync(close(fs))
    s3fs.S3FileSystem.clear_instance_cache()


def test_export_to_s3_and_load_back(s3: dict[str, Any], cleanup: list[str]) -> None:
    from zarr.storage import FsspecStore

    a = _make(cleanup, compressor="zstd")
    url = "s3://sharedzarr-test/arrays/a.zarr"
    store = FsspecStore.from_url(url, storage_options=s3)
    export(a, store)
    # zarr-python reads it back over the S3 API, knowing nothing of sharedzarr
    z = zarr.open_array(store=FsspecStore.from_url(url, storage_options=s3, read_only=True))
    np.testing.assert_array_equal(z[:], a[:])
    assert dict(z.attrs) == dict(a.attrs)
    name = _name("froms3")
    cleanup.append(name)
    b = load(url, name, storage_options=s3)  # a URL works too
    np.testing.assert_array_equal(b[:], a[:])
    assert b.list_chunks() == a.list_chunks()
    # and a URL destination with re-encoding
    export(b, "s3://sharedzarr-test/arrays/b.zarr", storage_options=s3, compressor="gzip")
    z = zarr.open_array(
        store=FsspecStore.from_url("s3://sharedzarr-test/arrays/b.zarr", storage_options=s3)
    )
    np.testing.assert_array_equal(z[:], a[:])


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sharedzarr")
    add_cli_parsers(p.add_subparsers(dest="command", required=True))
    return p


def test_cli_functions_fit_the_command_registry() -> None:
    """What sharedzarr.cli's ``command(name, help, configure)(run)`` registration needs."""
    from sharedzarr.cli._transfer import (
        EXPORT_HELP,
        IMPORT_HELP,
        cli_export,
        cli_import,
        configure_export,
        configure_import,
    )

    for help_, configure, run in (
        (EXPORT_HELP, configure_export, cli_export),
        (IMPORT_HELP, configure_import, cli_import),
    ):
        p = argparse.ArgumentParser()
        configure(p)
        assert isinstance(help_, str) and callable(run)
    args = p.parse_args(["dir.zarr", "name", "-o", "anon=true", "--access", "protected"])
    assert args.storage_option == ["anon=true"] and args.access == "protected"


def test_cli_export_and_import(
    tmp_path: Path, cleanup: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    a = _make(cleanup)
    dest = str(tmp_path / "cli.zarr")
    args = _parser().parse_args(["export", a.name, dest, "--compressor", "zstd"])
    assert args.func(args) == 0
    out = capsys.readouterr()
    assert f"exported {a.name!r}" in out.out and out.err == ""  # no bar off a terminal
    assert args.func(args) == 1  # exists
    assert "overwrite" in capsys.readouterr().err
    name = _name("cliimp")
    cleanup.append(name)
    args = _parser().parse_args(["import", dest, name])
    assert args.func(args) == 0
    assert "sharedzarr rm" in capsys.readouterr().out
    b = sz.open(name)
    assert b.table.persistent  # outlives the command that made it
    np.testing.assert_array_equal(b[:], a[:])
    args = _parser().parse_args(["import", str(tmp_path / "nope.zarr"), _name("nope")])
    assert args.func(args) == 1
    assert "sharedzarr: error" in capsys.readouterr().err


def test_cli_progress_bar_on_a_terminal(
    tmp_path: Path, cleanup: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tqdm")
    import io

    import sharedzarr._export as ex

    a = _make(cleanup)

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Tty()
    monkeypatch.setattr(ex.sys, "stderr", err)
    args = _parser().parse_args(["export", a.name, str(tmp_path / "t.zarr")])
    assert args.func(args) == 0
    assert "chunk" in err.getvalue()  # tqdm drew "n/N [..., chunk/s]"
    args = _parser().parse_args(["export", a.name, str(tmp_path / "u.zarr"), "--no-progress"])
    err.seek(0)
    err.truncate()
    assert args.func(args) == 0
    assert err.getvalue() == ""
