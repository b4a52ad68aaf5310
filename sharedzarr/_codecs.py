"""The codec pipeline that follows the Zarr v3 ``bytes`` codec.

A chunk is first serialised by the ``bytes`` codec (C order, little-endian; see
:mod:`sharedzarr._metadata`) and then passed through zero or more bytes-to-bytes codecs, in
the order ``zarr.json`` lists them.  With no such codec (the default) the stored value *is* the
array's memory, which is what lets :meth:`sharedzarr.Array.read_chunk` hand out a zero-copy view
of shared memory.

Supported codecs, each written to ``zarr.json`` under the name and configuration zarr-python 3.1
uses so that zarr-python decodes our chunks and we decode its chunks:

===========  ==============================================  ===================================
compressor   ``zarr.json`` entry                             implementation
===========  ==============================================  ===================================
``"gzip"``   ``{"name": "gzip", "configuration":             :mod:`zlib` (standard library)
             {"level": 5}}``
``"zlib"``   the same ``gzip`` entry.  The Zarr v3 core      :mod:`zlib` (standard library)
             spec has no ``zlib`` codec, so the name is an
             alias that writes the spec's ``gzip`` codec
             (DEFLATE in a gzip wrapper).
``"zstd"``   ``{"name": "zstd", "configuration":             numcodecs
             {"level": 0, "checksum": false}}``
``"blosc"``  ``{"name": "blosc", "configuration":            numcodecs
             {"typesize": <itemsize>, "cname": "zstd",
             "clevel": 5, "shuffle": "shuffle",
             "blocksize": 0}}`` (``"bitshuffle"`` for
             1-byte dtypes, as zarr-python chooses)
``"lz4"``    ``{"name": "numcodecs.lz4", "configuration":    numcodecs
             {"acceleration": 1}}``.  LZ4 is not in the
             Zarr v3 spec; zarr-python 3.1 reads it under
             this ``numcodecs.`` name
             (``zarr.codecs.numcodecs.LZ4``).
===========  ==============================================  ===================================

For reading documents written elsewhere we also accept ``crc32c`` (needs ``google-crc32c``,
installed with zarr) and the ``numcodecs.``-prefixed bytes codecs zarr-python 3.1 writes for
``zarr.codecs.numcodecs`` compressors (``numcodecs.zlib``, ``numcodecs.gzip``, ``numcodecs.bz2``,
``numcodecs.lzma``, ``numcodecs.zstd``, ``numcodecs.blosc``, ``numcodecs.lz4``).

Arrays that zarr-python writes with ``shards=`` use the ``sharding_indexed`` codec in place of
``bytes``; :class:`ShardingCodec` reads and writes them with the shard as the array's chunk
(inner chunks: ``bytes`` then any codecs above; index: ``bytes`` and optional ``crc32c``, at the
start or end).  ``transpose`` and nested sharding are refused with a ``ValueError``.

numcodecs is imported only when a codec that needs it first encodes or decodes, so a document
naming ``zstd`` can be opened (and its metadata inspected) without numcodecs installed; the first
read or write then raises an :class:`ImportError` that says ``pip install sharedzarr[codecs]``.
"""

from __future__ import annotations

import bz2
import importlib
import math
import zlib
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np

__all__ = [
    "COMPRESSORS",
    "Codec",
    "CodecPipeline",
    "ShardingCodec",
    "codec_from_dict",
    "compressor_to_codecs",
]

#: Names accepted by ``create(compressor=...)``.
COMPRESSORS: tuple[str, ...] = ("zlib", "gzip", "zstd", "blosc", "lz4")

_INSTALL_HINT = "pip install sharedzarr[codecs]"

Buffer = Any  # bytes, bytearray, memoryview or a C-contiguous numpy array


def _import_numcodecs(module: str, codec: str) -> Any:
    try:
        return importlib.import_module(f"numcodecs.{module}")
    except ImportError as exc:
        raise ImportError(
            f"the {codec!r} codec needs numcodecs, which is not installed; "
            f"install it with `{_INSTALL_HINT}` (or pip install numcodecs)"
        ) from exc


def _check_int(config: Mapping[str, Any], key: str, codec: str, lo: int, hi: int) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"codec {codec!r}: configuration {key!r} must be an integer, got {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(
            f"codec {codec!r}: configuration {key!r} must be between {lo} and {hi}, got {value}"
        )
    return value


def _check_keys(config: Mapping[str, Any], allowed: Sequence[str], codec: str) -> None:
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(
            f"codec {codec!r}: unknown configuration key(s) {unknown}; "
            f"allowed keys are {list(allowed)}"
        )


class Codec:
    """A bytes-to-bytes codec: one entry of the ``codecs`` list after ``bytes``.

    Attributes
    ----------
    name : str
        The Zarr v3 codec name written to ``zarr.json``.
    configuration : dict
        The codec's configuration, as written to ``zarr.json``.
    """

    name: str = ""

    def __init__(self, configuration: dict[str, Any]) -> None:
        self.configuration = configuration

    def to_dict(self) -> dict[str, Any]:
        """Return the ``zarr.json`` entry ``{"name": ..., "configuration": {...}}``.

        Returns
        -------
        dict
        """
        return {"name": self.name, "configuration": dict(self.configuration)}

    def check_available(self) -> None:
        """Import the codec's implementation now, so a missing library fails early.

        Raises
        ------
        ImportError
            If the library the codec needs (numcodecs, google-crc32c) is not installed; the
            message says what to install.
        """
        getattr(self, "_impl", None)

    def encode(self, data: Buffer) -> Buffer:
        """Encode one chunk's bytes.

        Parameters
        ----------
        data : bytes-like
            The input bytes.

        Returns
        -------
        bytes-like
        """
        raise NotImplementedError

    def decode(self, data: Buffer) -> Buffer:
        """Decode one chunk's bytes.

        Parameters
        ----------
        data : bytes-like
            The encoded bytes.

        Returns
        -------
        bytes-like
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.configuration!r})"


class GzipCodec(Codec):
    """Zarr v3 ``gzip``: DEFLATE in a gzip wrapper, through the standard library's zlib."""

    name = "gzip"

    def __init__(self, configuration: dict[str, Any]) -> None:
        cfg = {"level": 5, **configuration}
        _check_keys(cfg, ["level"], self.name)
        cfg["level"] = _check_int(cfg, "level", self.name, 0, 9)
        super().__init__(cfg)

    def encode(self, data: Buffer) -> Buffer:
        """Compress with a gzip header (mtime 0, so equal input gives equal output)."""
        comp = zlib.compressobj(self.configuration["level"], zlib.DEFLATED, 31)
        return comp.compress(data) + comp.flush()

    def decode(self, data: Buffer) -> Buffer:
        """Decompress gzip (or zlib) framed data, including concatenated gzip members."""
        out = []
        buf = data
        while True:
            d = zlib.decompressobj(47)  # 32 + 15: detect the gzip or zlib header
            out.append(d.decompress(buf))
            out.append(d.flush())
            buf = d.unused_data
            if not buf:
                break
        return out[0] if len(out) == 2 and not out[1] else b"".join(out)


class NumcodecsZlibCodec(Codec):
    """``numcodecs.zlib``: DEFLATE in a zlib wrapper (as zarr-python writes it), via stdlib."""

    name = "numcodecs.zlib"

    def __init__(self, configuration: dict[str, Any]) -> None:
        cfg = {"level": 1, **configuration}
        _check_keys(cfg, ["level"], self.name)
        cfg["level"] = _check_int(cfg, "level", self.name, -1, 9)
        super().__init__(cfg)

    def encode(self, data: Buffer) -> Buffer:
        """Compress with zlib framing."""
        return zlib.compress(data, self.configuration["level"])

    def decode(self, data: Buffer) -> Buffer:
        """Decompress zlib framed data."""
        return zlib.decompress(data)


class NumcodecsGzipCodec(GzipCodec):
    """``numcodecs.gzip``: the same stream as ``gzip``, under its numcodecs name."""

    name = "numcodecs.gzip"

    def __init__(self, configuration: dict[str, Any]) -> None:
        super().__init__({"level": 1, **configuration})


class NumcodecsBZ2Codec(Codec):
    """``numcodecs.bz2`` through the standard library's :mod:`bz2`."""

    name = "numcodecs.bz2"

    def __init__(self, configuration: dict[str, Any]) -> None:
        cfg = {"level": 1, **configuration}
        _check_keys(cfg, ["level"], self.name)
        cfg["level"] = _check_int(cfg, "level", self.name, 1, 9)
        super().__init__(cfg)

    def encode(self, data: Buffer) -> Buffer:
        """Compress with bz2."""
        return bz2.compress(data, self.configuration["level"])

    def decode(self, data: Buffer) -> Buffer:
        """Decompress bz2."""
        return bz2.decompress(data)


class NumcodecsLZMACodec(Codec):
    """``numcodecs.lzma`` through numcodecs."""

    name = "numcodecs.lzma"

    def __init__(self, configuration: dict[str, Any]) -> None:
        cfg = dict(configuration)
        _check_keys(cfg, ["format", "check", "preset", "filters"], self.name)
        super().__init__(cfg)

    @cached_property
    def _impl(self) -> Any:
        return _import_numcodecs("lzma", self.name).LZMA(**self.configuration)

    def encode(self, data: Buffer) -> Buffer:
        """Compress with numcodecs' LZMA."""
        return self._impl.encode(data)

    def decode(self, data: Buffer) -> Buffer:
        """Decompress with numcodecs' LZMA."""
        return self._impl.decode(data)


class ZstdCodec(Codec):
    """Zarr v3 ``zstd`` through numcodecs."""

    name = "zstd"

    def __init__(self, configuration: dict[str, Any]) -> None:
        cfg = {"level": 0, "checksum": False, **configuration}
        _check_keys(cfg, ["level", "checksum"], self.name)
        cfg["level"] = _check_int(cfg, "level", self.name, -131072, 22)
        if not isinstance(cfg["checksum"], bool):
            raise TypeError(
                f"codec {self.name!r}: configuration 'checksum' must be true or false, "
                f"got {cfg['checksum']!r}"
            )
        super().__init__(cfg)

    @cached_property
    def _impl(self) -> Any:
        mod = _import_numcodecs("zstd", self.name)
        return mod.Zstd(level=self.configuration["level"], checksum=self.configuration["checksum"])

    def encode(self, data: Buffer) -> Buffer:
        """Compress with zstd."""
        return self._impl.encode(data)

    def decode(self, data: Buffer) -> Buffer:
        """Decompress zstd."""
        return self._impl.decode(data)


class NumcodecsZstdCodec(ZstdCodec):
    """``numcodecs.zstd``: the zstd stream under its numcodecs name."""

    name = "numcodecs.zstd"


_BLOSC_CNAMES = ("lz4", "lz4hc", "blosclz", "zstd", "snappy", "zlib")
_BLOSC_SHUFFLES = ("noshuffle", "shuffle", "bitshuffle")


class BloscCodec(Codec):
    """Zarr v3 ``blosc`` through numcodecs (configuration as zarr-python 3.1 writes it)."""

    name = "blosc"

    def __init__(self, configuration: dict[str, Any], itemsize: int = 1) -> None:
        cfg = {
            "typesize": itemsize,
            "cname": "zstd",
            "clevel": 5,
            "shuffle": "shuffle" if itemsize > 1 else "bitshuffle",
            "blocksize": 0,
            **configuration,
        }
        _check_keys(cfg, ["typesize", "cname", "clevel", "shuffle", "blocksize"], self.name)
        cfg["typesize"] = _check_int(cfg, "typesize", self.name, 1, 2**31 - 1)
        cfg["clevel"] = _check_int(cfg, "clevel", self.name, 0, 9)
        cfg["blocksize"] = _check_int(cfg, "blocksize", self.name, 0, 2**31 - 1)
        if cfg["cname"] not in _BLOSC_CNAMES:
            raise ValueError(
                f"codec 'blosc': cname must be one of {list(_BLOSC_CNAMES)}, got {cfg['cname']!r}"
            )
        shuffle = cfg["shuffle"]
        if isinstance(shuffle, int) and not isinstance(shuffle, bool) and 0 <= shuffle <= 2:
            shuffle = _BLOSC_SHUFFLES[shuffle]
        if shuffle not in _BLOSC_SHUFFLES:
            raise ValueError(
                f"codec 'blosc': shuffle must be one of {list(_BLOSC_SHUFFLES)}, got {shuffle!r}"
            )
        cfg["shuffle"] = shuffle
        super().__init__(cfg)

    @cached_property
    def _impl(self) -> Any:
        mod = _import_numcodecs("blosc", self.name)
        cfg = self.configuration
        kwargs = {
            "cname": cfg["cname"],
            "clevel": cfg["clevel"],
            "shuffle": _BLOSC_SHUFFLES.index(cfg["shuffle"]),
            "blocksize": cfg["blocksize"],
        }
        try:
            return mod.Blosc(typesize=cfg["typesize"], **kwargs)
        except TypeError:  # numcodecs < 0.16 has no typesize argument
            return mod.Blosc(**kwargs)

    def encode(self, data: Buffer) -> Buffer:
        """Compress with blosc."""
        return self._impl.encode(data)

    def decode(self, data: Buffer) -> Buffer:
        """Decompress blosc."""
        return self._impl.decode(data)


class NumcodecsBloscCodec(Codec):
    """``numcodecs.blosc``: numcodecs' own (Zarr v2 style) blosc configuration."""

    name = "numcodecs.blosc"

    def __init__(self, configuration: dict[str, Any]) -> None:
        cfg = dict(configuration)
        _check_keys(cfg, ["cname", "clevel", "shuffle", "blocksize", "typesize"], self.name)
        super().__init__(cfg)

    @cached_property
    def _impl(self) -> Any:
        mod = _import_numcodecs("blosc", self.name)
        return mod.Blosc.from_config(dict(self.configuration))

    def encode(self, data: Buffer) -> Buffer:
        """Compress with blosc."""
        return self._impl.encode(data)

    def decode(self, data: Buffer) -> Buffer:
        """Decompress blosc."""
        return self._impl.decode(data)


class LZ4Codec(Codec):
    """``numcodecs.lz4`` (zarr-python 3.1's name for LZ4, which the v3 spec lacks)."""

    name = "numcodecs.lz4"

    def __init__(self, configuration: dict[str, Any]) -> None:
        cfg = {"acceleration": 1, **configuration}
        _check_keys(cfg, ["acceleration"], self.name)
        cfg["acceleration"] = _check_int(cfg, "acceleration", self.name, 1, 2**31 - 1)
        super().__init__(cfg)

    @cached_property
    def _impl(self) -> Any:
        mod = _import_numcodecs("lz4", self.name)
        return mod.LZ4(acceleration=self.configuration["acceleration"])

    def encode(self, data: Buffer) -> Buffer:
        """Compress with LZ4 (numcodecs framing: a 4-byte length prefix)."""
        return self._impl.encode(data)

    def decode(self, data: Buffer) -> Buffer:
        """Decompress LZ4."""
        return self._impl.decode(data)


class Crc32cCodec(Codec):
    """Zarr v3 ``crc32c``: a little-endian CRC32C appended to the bytes (google-crc32c)."""

    name = "crc32c"

    def __init__(self, configuration: dict[str, Any]) -> None:
        _check_keys(configuration, [], self.name)
        super().__init__({})

    def check_available(self) -> None:
        """Import google-crc32c now (see :meth:`Codec.check_available`)."""
        getattr(self, "_crc", None)

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"name": "crc32c"}`` (zarr-python writes no configuration)."""
        return {"name": self.name}

    @cached_property
    def _crc(self) -> Any:
        try:
            import google_crc32c
        except ImportError as exc:
            raise ImportError(
                "the 'crc32c' codec needs google-crc32c, which is not installed; "
                "pip install google-crc32c"
            ) from exc
        return google_crc32c.value

    def encode(self, data: Buffer) -> Buffer:
        """Append the checksum."""
        raw = bytes(data)
        return raw + int(self._crc(raw)).to_bytes(4, "little")

    def decode(self, data: Buffer) -> Buffer:
        """Check and strip the checksum; a mismatch raises ValueError."""
        view = memoryview(data).cast("B")
        if len(view) < 4:
            raise ValueError("crc32c: encoded chunk is shorter than its 4-byte checksum")
        inner = bytes(view[:-4])
        if int(self._crc(inner)).to_bytes(4, "little") != bytes(view[-4:]):
            raise ValueError("crc32c: stored and computed checksums differ; the chunk is corrupt")
        return inner


_MISSING = 2**64 - 1  # an absent inner chunk's offset and length in a shard index


class ShardingCodec(Codec):
    """Zarr v3 ``sharding_indexed`` (the array-to-bytes codec that replaces ``bytes``).

    One stored value (a shard) holds a grid of inner chunks, each encoded with the inner
    ``codecs`` (``bytes`` then bytes-to-bytes codecs), plus an index of ``(offset, nbytes)``
    uint64 pairs (``2**64 - 1`` for an absent inner chunk) encoded with ``index_codecs``
    (``bytes``, optionally ``crc32c``) at the shard's ``end`` (default) or ``start``.  To the
    array the shard is one chunk: :meth:`decode` returns the whole shard's C-order bytes
    (absent inner chunks read as the fill value) and :meth:`encode` cuts such bytes into inner
    chunks again, leaving out those that hold only the fill value, as zarr-python does.

    Parameters
    ----------
    configuration : dict
        ``chunk_shape``, ``codecs``, ``index_codecs`` and ``index_location``, as in
        ``zarr.json``; written back unchanged.
    shard_shape : tuple of int
        The chunk grid's chunk shape (the shard shape).
    dtype : numpy.dtype
        The chunk dtype in the inner ``bytes`` codec's byte order.
    fill : bytes
        One element of the fill value, in that dtype.
    """

    name = "sharding_indexed"

    def __init__(
        self,
        configuration: dict[str, Any],
        shard_shape: Sequence[int] = (),
        dtype: Any = "uint8",
        fill: bytes = b"\0",
    ) -> None:
        _check_keys(
            configuration, ["chunk_shape", "codecs", "index_codecs", "index_location"], self.name
        )
        super().__init__(dict(configuration))
        inner = configuration.get("chunk_shape")
        shard = tuple(int(n) for n in shard_shape)
        if (
            not isinstance(inner, (list, tuple))
            or len(inner) != len(shard)
            or not all(isinstance(n, int) and n >= 1 for n in inner)
            or any(s % n for s, n in zip(shard, inner, strict=True))
        ):
            raise ValueError(
                f"sharding_indexed: chunk_shape {inner!r} must divide the shard shape {shard}"
            )
        self.inner_shape = tuple(inner)
        self.shard_shape = shard
        self.grid = tuple(s // n for s, n in zip(shard, inner, strict=True))
        self.location = configuration.get("index_location", "end")
        if self.location not in ("start", "end"):
            raise ValueError(
                f"sharding_indexed: index_location must be 'start' or 'end', got {self.location!r}"
            )
        self.dtype = np.dtype(dtype)
        self.fill = bytes(fill)
        itemsize = self.dtype.itemsize
        endian, codecs = _split_bytes_codec(configuration.get("codecs"), "codecs", itemsize)
        self.inner_dtype = self.dtype.newbyteorder("<" if endian == "little" else ">")
        if itemsize == 1 or self.dtype.fields is not None or self.dtype.kind in "SV":
            self.inner_dtype = self.dtype
        self.inner = CodecPipeline(codecs)
        iendian, icodecs = _split_bytes_codec(
            configuration.get("index_codecs", [{"name": "bytes"}, {"name": "crc32c"}]),
            "index_codecs",
            8,
        )
        if any(c.name != "crc32c" for c in icodecs):
            raise ValueError("sharding_indexed: index_codecs may only be 'bytes' and 'crc32c'")
        self.index_dtype = np.dtype("<u8" if iendian == "little" else ">u8")
        self.index_pipeline = CodecPipeline(icodecs)
        self.index_nbytes = 16 * math.prod(self.grid) + 4 * len(icodecs)

    def check_available(self) -> None:
        """Import the inner and index codecs' libraries now."""
        for c in (*self.inner.codecs, *self.index_pipeline.codecs):
            c.check_available()

    def _blocks(self) -> Any:
        for idx in np.ndindex(*self.grid):
            yield (
                idx,
                tuple(
                    slice(i * n, (i + 1) * n) for i, n in zip(idx, self.inner_shape, strict=True)
                ),
            )

    def decode(self, data: Buffer) -> Buffer:
        """Assemble the whole shard from its inner chunks (absent ones: the fill value)."""
        view = memoryview(data).cast("B")
        n = self.index_nbytes
        if len(view) < n:
            raise ValueError(f"sharding_indexed: a shard of {len(view)} bytes has no index")
        raw_index = view[:n] if self.location == "start" else view[len(view) - n :]
        index = np.frombuffer(self.index_pipeline.decode(raw_index), self.index_dtype)
        index = index.reshape((*self.grid, 2))
        out = np.empty(self.shard_shape, self.dtype)
        fill = np.frombuffer(self.fill, self.dtype)[0]
        for idx, where in self._blocks():
            offset, nbytes = (int(x) for x in index[idx])
            if offset == _MISSING and nbytes == _MISSING:
                out[where] = fill
                continue
            if offset + nbytes > len(view):
                raise ValueError(f"sharding_indexed: inner chunk {idx} lies outside the shard")
            raw = self.inner.decode(view[offset : offset + nbytes])
            out[where] = np.frombuffer(raw, self.inner_dtype).reshape(self.inner_shape)
        return out.tobytes()

    def encode(self, data: Buffer) -> Buffer:
        """Cut the shard into inner chunks and write them with their index."""
        arr = np.frombuffer(data, self.dtype).reshape(self.shard_shape)
        empty = self.fill * math.prod(self.inner_shape)
        index = np.full((*self.grid, 2), _MISSING, np.uint64)
        pieces = []
        offset = self.index_nbytes if self.location == "start" else 0
        for idx, where in self._blocks():
            block = np.ascontiguousarray(arr[where], self.inner_dtype).tobytes()
            if block == empty:
                continue
            enc = bytes(self.inner.encode(block))
            index[idx] = (offset, len(enc))
            offset += len(enc)
            pieces.append(enc)
        raw_index = bytes(self.index_pipeline.encode(index.astype(self.index_dtype).tobytes()))
        parts = [raw_index, *pieces] if self.location == "start" else [*pieces, raw_index]
        return b"".join(parts)


def _split_bytes_codec(data: Any, what: str, itemsize: int) -> tuple[str, list[Codec]]:
    """``[bytes, *bytes_to_bytes]`` -> (endian, codecs); anything else is a ValueError."""
    entries = [{"name": c} if isinstance(c, str) else c for c in (data or [])]
    if not entries or not isinstance(entries[0], Mapping) or entries[0].get("name") != "bytes":
        raise ValueError(
            f"sharding_indexed: {what} must start with the 'bytes' codec (no transpose or "
            f"nested sharding), got {data!r}"
        )
    config = entries[0].get("configuration") or {}
    endian = (config.get("endian", "little") if isinstance(config, Mapping) else None) or "little"
    if endian not in ("little", "big"):
        raise ValueError("sharding_indexed: bytes codec endian must be 'little' or 'big'")
    return endian, [codec_from_dict(c, itemsize) for c in entries[1:]]


_CODECS: dict[str, type[Codec]] = {
    cls.name: cls
    for cls in (
        GzipCodec,
        ZstdCodec,
        BloscCodec,
        LZ4Codec,
        Crc32cCodec,
        NumcodecsZlibCodec,
        NumcodecsGzipCodec,
        NumcodecsBZ2Codec,
        NumcodecsLZMACodec,
        NumcodecsZstdCodec,
        NumcodecsBloscCodec,
    )
}


def codec_from_dict(spec: Mapping[str, Any], itemsize: int = 1) -> Codec:
    """Build a codec from a ``zarr.json`` entry ``{"name": ..., "configuration": {...}}``.

    Parameters
    ----------
    spec : mapping
        The codec entry.  ``configuration`` may be omitted.
    itemsize : int
        The array's element size; the default ``typesize`` for blosc.

    Returns
    -------
    Codec

    Raises
    ------
    ValueError
        For an unknown codec name or a bad configuration.
    TypeError
        For a malformed entry.
    """
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise TypeError(
            f"a codec must be a dict {{'name': str, 'configuration': dict}}, got {spec!r}"
        )
    extra = sorted(set(spec) - {"name", "configuration"})
    if extra:
        raise ValueError(f"codec entry {spec!r} has unknown key(s) {extra}")
    name = spec["name"]
    config = spec.get("configuration") or {}
    if not isinstance(config, Mapping):
        raise TypeError(f"codec {name!r}: configuration must be a dict, got {config!r}")
    if name == "zlib":  # our alias: the v3 core spec has no zlib codec
        name = "gzip"
    elif name == "lz4":
        name = "numcodecs.lz4"
    cls = _CODECS.get(name)
    if cls is None:
        raise ValueError(
            f"unsupported codec {spec['name']!r}; sharedzarr supports the compressors "
            f"{list(COMPRESSORS)} and decodes the bytes-to-bytes codecs {sorted(_CODECS)}"
        )
    if cls is BloscCodec:
        return BloscCodec(dict(config), itemsize)
    return cls(dict(config))


def compressor_to_codecs(compressor: Any, dtype: np.dtype) -> list[Codec]:
    """Turn ``create(compressor=...)`` into the list of bytes-to-bytes codecs.

    Parameters
    ----------
    compressor : None, str, dict or sequence of dict
        ``None`` for raw chunks; one of :data:`COMPRESSORS` for the default configuration;
        a ``zarr.json`` style ``{"name": ..., "configuration": {...}}`` dict (``"zlib"`` and
        ``"lz4"`` are accepted as names there too); or a list of such dicts applied in order.
    dtype : numpy.dtype
        The array's dtype (blosc's default ``typesize``).

    Returns
    -------
    list of Codec

    Raises
    ------
    ValueError
        For an unknown name or a bad configuration.
    TypeError
        For a value of the wrong type.
    """
    if compressor is None:
        return []
    itemsize = int(np.dtype(dtype).itemsize)
    if isinstance(compressor, str):
        if compressor not in COMPRESSORS:
            raise ValueError(
                f"unknown compressor {compressor!r}; choose one of {list(COMPRESSORS)} "
                "or None for raw (zero-copy) chunks"
            )
        return [codec_from_dict({"name": compressor}, itemsize)]
    if isinstance(compressor, Mapping):
        return [codec_from_dict(compressor, itemsize)]
    if isinstance(compressor, (list, tuple)):
        return [codec_from_dict(c, itemsize) for c in compressor]
    raise TypeError(
        f"compressor must be None, a name from {list(COMPRESSORS)}, or a dict "
        f"{{'name': ..., 'configuration': {{...}}}}; got {compressor!r}"
    )


class CodecPipeline:
    """The bytes-to-bytes codecs of one array, applied in order on encode, reversed on decode.

    Parameters
    ----------
    codecs : sequence of Codec

    Attributes
    ----------
    codecs : tuple of Codec
    raw : bool
        True when there is no codec: stored bytes are the chunk's memory (zero-copy readable).
    """

    def __init__(self, codecs: Sequence[Codec] = ()) -> None:
        self.codecs = tuple(codecs)
        self.raw = not self.codecs

    def encode(self, data: Buffer) -> Buffer:
        """Encode one chunk's serialised bytes.

        Parameters
        ----------
        data : bytes-like
            The output of the ``bytes`` codec.

        Returns
        -------
        bytes-like
        """
        for codec in self.codecs:
            data = codec.encode(data)
        return data

    def decode(self, data: Buffer) -> Buffer:
        """Decode one stored chunk back to the ``bytes`` codec's output.

        Parameters
        ----------
        data : bytes-like
            The stored bytes.

        Returns
        -------
        bytes-like
        """
        for codec in reversed(self.codecs):
            data = codec.decode(data)
        return data

    def to_list(self) -> list[dict[str, Any]]:
        """Return the codecs' ``zarr.json`` entries.

        Returns
        -------
        list of dict
        """
        return [c.to_dict() for c in self.codecs]

    def __repr__(self) -> str:
        return f"CodecPipeline({list(self.codecs)!r})"
