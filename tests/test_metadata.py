"""zarr.json encode/decode (sharedzarr._metadata), checked against zarr-python 3.1."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pytest

from sharedzarr._metadata import (
    DTYPES,
    ArrayMetadata,
    decode_fill_value,
    encode_fill_value,
    normalize_fill_value,
    parse_dtype,
)
from sharedzarr.array import create

zarr = pytest.importorskip("zarr")
from zarr.core.buffer import cpu  # noqa: E402
from zarr.core.metadata.v3 import ArrayV3Metadata  # noqa: E402
from zarr.storage import MemoryStore  # noqa: E402

ALL_DTYPES = list(DTYPES)


def _zarr_doc(**kwargs: Any) -> tuple[bytes, dict[str, Any]]:
    """What zarr-python writes for zarr.create_array(**kwargs)."""
    store = MemoryStore()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.create_array(store, name="a", **kwargs)
    raw = store._store_dict["a/zarr.json"].to_bytes()
    return raw, json.loads(raw)


def _zarr_compressors(compressor: Any) -> Any:
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec
    from zarr.codecs.numcodecs import LZ4

    if compressor is None:
        return None
    if compressor == "lz4":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "numcodecs codecs are not in the v3 spec"
            return [LZ4(acceleration=1)]
    return {
        "gzip": [GzipCodec(level=5)],
        "zstd": [ZstdCodec(level=0, checksum=False)],
        "blosc": [BloscCodec(cname="zstd", clevel=5)],
    }[compressor]


FILLS: list[tuple[str, Any]] = [
    ("bool", True),
    ("int8", -3),
    ("int64", -(2**63)),
    ("uint8", 255),
    ("uint64", 2**64 - 1),
    ("float16", 0.1),
    ("float32", float("nan")),
    ("float64", float("-inf")),
    ("float64", 0),
    ("complex64", complex(1.5, -2)),
    ("complex128", complex(float("nan"), float("inf"))),
]


@pytest.mark.parametrize(("dtype", "fill"), FILLS)
def test_same_document_as_zarr_python(dtype: str, fill: Any) -> None:
    ours = ArrayMetadata.create((4, 5), (2, 3), dtype, fill_value=fill).to_json()
    raw, doc = _zarr_doc(
        shape=(4, 5), chunks=(2, 3), dtype=dtype, fill_value=fill, compressors=None
    )
    assert json.loads(ours) == doc
    assert ours == raw  # byte for byte, key order and indentation included


@pytest.mark.parametrize("compressor", ["gzip", "zstd", "blosc", "lz4"])
@pytest.mark.parametrize("dtype", ["uint8", "float64"])
def test_same_codecs_as_zarr_python(compressor: str, dtype: str) -> None:
    ours = ArrayMetadata.create(
        (10,),
        (4,),
        dtype,
        compressor=compressor,
        attributes={"a": [1, 2], "b": {"c": None}},
        dimension_names=["x"],
    ).to_dict()
    _, doc = _zarr_doc(
        shape=(10,),
        chunks=(4,),
        dtype=dtype,
        compressors=_zarr_compressors(compressor),
        attributes={"a": [1, 2], "b": {"c": None}},
        dimension_names=["x"],
    )
    assert ours == doc


def test_rank0_document() -> None:
    ours = ArrayMetadata.create((), (), "int32").to_json()
    raw, _ = _zarr_doc(shape=(), chunks=(), dtype="int32", compressors=None)
    assert ours == raw


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_zarr_python_accepts_our_document(dtype: str) -> None:
    meta = ArrayMetadata.create((3, 0, 2), (2, 1, 2), dtype, fill_value=1, compressor="zstd")
    parsed = ArrayV3Metadata.from_dict(json.loads(meta.to_json()))
    assert parsed.shape == (3, 0, 2)
    assert parsed.chunks == (2, 1, 2)
    again = ArrayMetadata.from_dict(parsed.to_dict())
    assert again.shape == meta.shape and again.dtype == meta.dtype
    assert again.fill_value == meta.fill_value


def _to_zarr_store(arr: Any) -> MemoryStore:
    """Copy a sharedzarr array's zarr.json and chunks into a zarr MemoryStore."""
    meta = arr.metadata
    d = {"zarr.json": cpu.Buffer.from_bytes(arr.backend.read_metadata())}
    for idx in arr.list_chunks():
        d[meta.chunk_key(idx)] = cpu.Buffer.from_bytes(bytes(arr.backend.read_chunk(idx)))
    return MemoryStore(d)


@pytest.mark.parametrize("compressor", [None, "gzip", "zlib", "zstd", "blosc", "lz4"])
@pytest.mark.parametrize("dtype", ["bool", "int16", "uint32", "float32", "complex128"])
def test_zarr_python_reads_our_chunks(compressor: Any, dtype: str) -> None:
    rng = np.random.default_rng(0)
    ref = (rng.random((7, 5)) * 100).astype(dtype)
    a = create((7, 5), (3, 2), dtype, storage="memory", compressor=compressor, fill_value=1)
    try:
        a[1:, :4] = ref[1:, :4]
        expected = ref.copy()
        expected[0, :] = 1
        expected[:, 4] = 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            z = zarr.open_array(_to_zarr_store(a), mode="r")
            got = z[...]
        np.testing.assert_array_equal(got, expected)
        assert z.dtype == np.dtype(dtype)
    finally:
        a.delete()


@pytest.mark.parametrize("compressor", [None, "gzip", "zstd", "blosc", "lz4", "crc32c"])
def test_we_read_zarr_python_chunks(compressor: Any) -> None:
    from zarr.codecs import Crc32cCodec

    store = MemoryStore()
    compressors = [Crc32cCodec()] if compressor == "crc32c" else _zarr_compressors(compressor)
    ref = np.arange(35, dtype="int32").reshape(7, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z = zarr.create_array(
            store, shape=(7, 5), chunks=(3, 2), dtype="int32", compressors=compressors,
            fill_value=-1,
        )  # fmt: skip
        z[...] = ref
    meta = ArrayMetadata.from_json(store._store_dict["zarr.json"].to_bytes())
    assert meta.fill_value == -1
    from sharedzarr._codecs import CodecPipeline

    pipe = CodecPipeline(meta.codecs)
    out = np.empty((9, 6), "int32")
    for key, buf in store._store_dict.items():
        idx = meta.parse_chunk_key(key)
        if idx is None:
            continue
        chunk = np.frombuffer(pipe.decode(buf.to_bytes()), "<i4").reshape(meta.chunks)
        out[idx[0] * 3 : idx[0] * 3 + 3, idx[1] * 2 : idx[1] * 2 + 2] = chunk
    np.testing.assert_array_equal(out[:7, :5], ref)


def test_decode_lenient_zarr_python_forms() -> None:
    doc = json.loads(ArrayMetadata.create((4,), (2,), "uint8").to_json())
    doc["dimension_names"] = None
    assert "configuration" not in doc["codecs"][0]
    meta = ArrayMetadata.from_dict(doc)
    assert meta.dimension_names is None and meta.endian == "little"
    doc2 = json.loads(ArrayMetadata.create((4,), (2,), "float32").to_json())
    del doc2["codecs"][0]["configuration"]
    assert ArrayMetadata.from_dict(doc2).endian == "little"
    doc2["codecs"][0] = "bytes"
    assert ArrayMetadata.from_dict(doc2).endian == "little"
    doc2["codecs"].append({"name": "gzip", "configuration": {"level": 1}})
    doc2["codecs"].append({"name": "zstd", "configuration": {"level": 3, "checksum": True}})
    doc2["codecs"].append(
        {
            "name": "blosc",
            "configuration": {
                "typesize": 4,
                "cname": "lz4",
                "clevel": 1,
                "shuffle": "noshuffle",
                "blocksize": 0,
            },
        }
    )
    meta = ArrayMetadata.from_dict(doc2)
    assert [c.name for c in meta.codecs] == ["gzip", "zstd", "blosc"]
    doc2["chunk_key_encoding"] = {"name": "v2", "configuration": {"separator": "."}}
    meta = ArrayMetadata.from_dict(doc2)
    assert meta.chunk_key((3,)) == "3"
    assert meta.parse_chunk_key("3") == (3,)
    doc2["ext"] = {"must_understand": False, "x": 1}
    meta = ArrayMetadata.from_dict(doc2)
    assert meta.to_dict()["ext"] == {"must_understand": False, "x": 1}


def test_big_endian_bytes_codec_roundtrip() -> None:
    doc = json.loads(ArrayMetadata.create((4,), (2,), "float32").to_json())
    doc["codecs"][0]["configuration"]["endian"] = "big"
    meta = ArrayMetadata.from_dict(doc)
    assert meta.endian == "big"
    assert json.loads(meta.to_json())["codecs"][0]["configuration"]["endian"] == "big"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"zarr_format": 2}, "zarr_format"),
        ({"node_type": "group"}, "node_type"),
        ({"data_type": "string"}, "supported data types are bool, int8"),
        ({"data_type": "float8"}, "unsupported data_type"),
        ({"chunk_grid": {"name": "rectilinear"}}, "regular"),
        ({"codecs": [{"name": "transpose", "configuration": {"order": [0]}}]}, "transpose"),
        ({"codecs": [{"name": "sharding_indexed"}]}, "sharding_indexed"),
        ({"codecs": []}, "non-empty"),
        ({"codecs": [{"name": "bytes"}, {"name": "bogus"}]}, "unsupported codec"),
        ({"storage_transformers": [{"name": "x"}]}, "storage_transformers"),
        ({"unknown_field": 1}, "must_understand"),
        ({"fill_value": None}, "null"),
        ({"fill_value": 1.5}, "integer"),
        ({"dimension_names": ["a", "b"]}, "dimension"),
        ({"chunk_key_encoding": {"name": "weird"}}, "chunk_key_encoding"),
    ],
)
def test_decode_rejects(change: dict[str, Any], match: str) -> None:
    doc = json.loads(ArrayMetadata.create((4,), (2,), "int32").to_json())
    doc.update(change)
    with pytest.raises((ValueError, TypeError), match=match):
        ArrayMetadata.from_dict(doc)


def test_decode_rejects_non_json() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        ArrayMetadata.from_json(b"\xff{")
    with pytest.raises(ValueError, match="object"):
        ArrayMetadata.from_json(b"[1]")


def test_parse_dtype() -> None:
    assert parse_dtype("float64") == np.dtype("float64")
    assert parse_dtype(">f8") == np.dtype("float64")
    assert parse_dtype(np.int8) == np.dtype("int8")
    assert parse_dtype("?") == np.dtype(bool)
    for bad in [object, "T", "S", "float128", "no-such-dtype", [("a", "i4", (2,))]]:
        with pytest.raises(TypeError, match="supported dtypes are bool, int8"):
            parse_dtype(bad)


def test_fill_values() -> None:
    f8 = np.dtype("float64")
    assert encode_fill_value(normalize_fill_value(float("nan"), f8), f8) == "NaN"
    assert encode_fill_value(normalize_fill_value("Infinity", f8), f8) == "Infinity"
    assert math.isnan(decode_fill_value("NaN", f8))
    assert decode_fill_value("0x3ff0000000000000", f8) == 1.0
    assert decode_fill_value("0x3c00", np.dtype("float16")) == 1.0
    c8 = np.dtype("complex64")
    assert decode_fill_value(["0x3f800000", "-Infinity"], c8) == complex(1, float("-inf"))
    assert encode_fill_value(normalize_fill_value([1, 2], c8), c8) == [1.0, 2.0]
    assert normalize_fill_value(None, np.dtype("int16")) == 0
    assert normalize_fill_value(2.0, np.dtype("int16")) == 2
    b = np.dtype(bool)
    assert encode_fill_value(normalize_fill_value(1, b), b) is True
    for value, dtype, exc in [
        (256, "uint8", ValueError),
        (-1, "uint16", ValueError),
        (1.5, "int32", TypeError),
        (2, "bool", TypeError),
        ("x", "float32", ValueError),
        (1e300, "float16", ValueError),
        (1j, "float64", TypeError),
        ([1, 2, 3], "complex64", ValueError),
        ("0x12", "float64", ValueError),
    ]:
        with pytest.raises(exc):
            normalize_fill_value(value, np.dtype(dtype))


def test_create_validation() -> None:
    with pytest.raises(TypeError, match="JSON"):
        ArrayMetadata.create((4,), (2,), attributes={"x": object()})
    with pytest.raises(TypeError, match="JSON"):
        ArrayMetadata.create((4,), (2,), attributes={"x": float("nan")})
    with pytest.raises(TypeError, match="attribute names"):
        ArrayMetadata.create((4,), (2,), attributes={1: 2})
    with pytest.raises(TypeError, match="dict"):
        ArrayMetadata.create((4,), (2,), attributes=[1])
    with pytest.raises(ValueError, match="dimension_names"):
        ArrayMetadata.create((4,), (2,), dimension_names=["a", "b"])
    with pytest.raises(TypeError, match="dimension_names"):
        ArrayMetadata.create((4,), (2,), dimension_names="a")
    with pytest.raises(TypeError, match="str or None"):
        ArrayMetadata.create((4,), (2,), dimension_names=[3])
    meta = ArrayMetadata.create((4, 4), (2, 2), dimension_names=["y", None])
    assert meta.to_dict()["dimension_names"] == ["y", None]


def test_chunk_keys() -> None:
    meta = ArrayMetadata.create((4, 4), (2, 2))
    assert meta.chunk_key((1, 0)) == "c/1/0"
    assert meta.parse_chunk_key("c/1/0") == (1, 0)
    assert meta.parse_chunk_key("zarr.json") is None
    assert meta.parse_chunk_key("c/1") is None
    assert meta.parse_chunk_key("c/x/0") is None
    rank0 = ArrayMetadata.create((), ())
    assert rank0.chunk_key(()) == "c"
    assert rank0.parse_chunk_key("c") == ()
