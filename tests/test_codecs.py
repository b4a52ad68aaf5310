"""The bytes-to-bytes codec pipeline (sharedzarr._codecs)."""

from __future__ import annotations

import sys
import zlib

import numpy as np
import pytest

from sharedzarr._codecs import (
    COMPRESSORS,
    CodecPipeline,
    codec_from_dict,
    compressor_to_codecs,
)

DATA = np.arange(10_000, dtype="<f8").tobytes()


def _pipe(compressor: object, dtype: str = "float64") -> CodecPipeline:
    return CodecPipeline(compressor_to_codecs(compressor, np.dtype(dtype)))


@pytest.mark.parametrize("name", COMPRESSORS)
def test_roundtrip_each_compressor(name: str) -> None:
    pipe = _pipe(name)
    assert not pipe.raw
    enc = pipe.encode(memoryview(DATA))
    assert len(enc) < len(DATA)
    assert bytes(pipe.decode(enc)) == DATA


def test_none_is_raw() -> None:
    pipe = _pipe(None)
    assert pipe.raw
    assert pipe.to_list() == []
    assert pipe.encode(DATA) is DATA
    assert pipe.decode(DATA) is DATA


def test_default_configurations_match_zarr_python() -> None:
    f8 = np.dtype("float64")
    assert [c.to_dict() for c in compressor_to_codecs("gzip", f8)] == [
        {"name": "gzip", "configuration": {"level": 5}}
    ]
    # zlib is an alias that writes the spec's gzip codec
    assert [c.to_dict() for c in compressor_to_codecs("zlib", f8)] == [
        {"name": "gzip", "configuration": {"level": 5}}
    ]
    assert [c.to_dict() for c in compressor_to_codecs("zstd", f8)] == [
        {"name": "zstd", "configuration": {"level": 0, "checksum": False}}
    ]
    assert [c.to_dict() for c in compressor_to_codecs("blosc", f8)] == [
        {
            "name": "blosc",
            "configuration": {
                "typesize": 8,
                "cname": "zstd",
                "clevel": 5,
                "shuffle": "shuffle",
                "blocksize": 0,
            },
        }
    ]
    blosc_u1 = compressor_to_codecs("blosc", np.dtype("uint8"))[0].to_dict()
    assert blosc_u1["configuration"]["typesize"] == 1
    assert blosc_u1["configuration"]["shuffle"] == "bitshuffle"
    assert [c.to_dict() for c in compressor_to_codecs("lz4", f8)] == [
        {"name": "numcodecs.lz4", "configuration": {"acceleration": 1}}
    ]


def test_dict_and_list_compressors() -> None:
    f8 = np.dtype("float64")
    (c,) = compressor_to_codecs({"name": "gzip", "configuration": {"level": 9}}, f8)
    assert c.to_dict() == {"name": "gzip", "configuration": {"level": 9}}
    (c,) = compressor_to_codecs({"name": "zlib", "configuration": {"level": 1}}, f8)
    assert c.name == "gzip"
    codecs = compressor_to_codecs([{"name": "zstd"}, {"name": "crc32c"}], f8)
    assert [c.name for c in codecs] == ["zstd", "crc32c"]
    pipe = CodecPipeline(codecs)
    assert bytes(pipe.decode(pipe.encode(DATA))) == DATA


@pytest.mark.parametrize(
    ("compressor", "exc", "match"),
    [
        ("snappy", ValueError, "unknown compressor"),
        (42, TypeError, "compressor must be"),
        ({"name": "nope"}, ValueError, "unsupported codec"),
        ({"name": "gzip", "configuration": {"level": 10}}, ValueError, "between 0 and 9"),
        ({"name": "gzip", "configuration": {"level": "5"}}, TypeError, "integer"),
        ({"name": "gzip", "configuration": {"lvl": 5}}, ValueError, "unknown configuration"),
        ({"name": "zstd", "configuration": {"checksum": 1}}, TypeError, "true or false"),
        ({"name": "zstd", "configuration": {"level": 23}}, ValueError, "between"),
        ({"name": "blosc", "configuration": {"cname": "brotli"}}, ValueError, "cname"),
        ({"name": "blosc", "configuration": {"shuffle": "twice"}}, ValueError, "shuffle"),
        ({"configuration": {}}, TypeError, "codec must be a dict"),
        ({"name": "gzip", "bogus": 1}, ValueError, "unknown key"),
    ],
)
def test_bad_compressors(compressor: object, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        compressor_to_codecs(compressor, np.dtype("float64"))


def test_gzip_is_stdlib_and_deterministic() -> None:
    c = codec_from_dict({"name": "gzip", "configuration": {"level": 3}})
    a, b = c.encode(DATA), c.encode(DATA)
    assert a == b
    assert a[:2] == b"\x1f\x8b"  # a gzip stream
    assert zlib.decompress(a, 31) == DATA
    # decode also accepts concatenated members and zlib framing
    assert c.decode(a + a) == DATA + DATA
    assert c.decode(zlib.compress(DATA)) == DATA


def test_interop_with_numcodecs() -> None:
    numcodecs = pytest.importorskip("numcodecs")
    arr = np.frombuffer(DATA, "<f8")
    gz = codec_from_dict({"name": "gzip", "configuration": {"level": 5}})
    assert bytes(numcodecs.GZip(5).decode(gz.encode(DATA))) == DATA
    assert bytes(gz.decode(numcodecs.GZip(5).encode(arr))) == DATA
    zs = codec_from_dict({"name": "zstd"})
    assert bytes(numcodecs.Zstd().decode(zs.encode(DATA))) == DATA
    lz = codec_from_dict({"name": "numcodecs.lz4"})
    assert bytes(lz.decode(numcodecs.LZ4().encode(arr))) == DATA
    nz = codec_from_dict({"name": "numcodecs.zlib", "configuration": {"level": 1}})
    assert bytes(nz.decode(numcodecs.Zlib(1).encode(arr))) == DATA
    assert bytes(numcodecs.Zlib(1).decode(nz.encode(DATA))) == DATA
    bz = codec_from_dict({"name": "numcodecs.bz2"})
    assert bytes(bz.decode(numcodecs.BZ2(1).encode(arr))) == DATA


@pytest.mark.parametrize("name", ["zstd", "blosc", "lz4"])
def test_missing_numcodecs_says_how_to_install(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (codec,) = compressor_to_codecs(name, np.dtype("float64"))  # building needs no numcodecs
    module = {"zstd": "zstd", "blosc": "blosc", "lz4": "lz4"}[name]
    monkeypatch.setitem(sys.modules, f"numcodecs.{module}", None)
    with pytest.raises(ImportError, match=r"pip install sharedzarr\[codecs\]"):
        codec.encode(DATA)


def test_crc32c_detects_corruption() -> None:
    pytest.importorskip("google_crc32c")
    c = codec_from_dict({"name": "crc32c"})
    assert c.to_dict() == {"name": "crc32c"}
    enc = bytearray(c.encode(DATA))
    assert bytes(c.decode(enc)) == DATA
    enc[5] ^= 0xFF
    with pytest.raises(ValueError, match="corrupt"):
        c.decode(enc)
