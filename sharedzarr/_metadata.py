"""Zarr v3 ``zarr.json`` for one array: the document, encoded and decoded.

:class:`ArrayMetadata` is the parsed document.  :meth:`ArrayMetadata.to_json` writes it the way
zarr-python 3.1 does (same keys, key order, ``indent=2``; the ``bytes`` codec's ``endian`` omitted
for 1-byte dtypes; ``dimension_names`` omitted when unset), and :meth:`ArrayMetadata.from_json`
reads what zarr-python 3.1 writes (``dimension_names: null``, ``endian`` omitted, ``gzip``,
``zstd``, ``blosc``, ``crc32c`` and ``numcodecs.*`` compressors, the ``sharding_indexed``
codec, ``default`` and ``v2`` chunk key encodings with either separator).

Data types and fill values (parsing, names, JSON forms) are :mod:`sharedzarr._dtypes`'s;
this module re-exports them.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._chunking import normalize_chunks, normalize_shape
from ._codecs import Codec, ShardingCodec, codec_from_dict, compressor_to_codecs
from ._dtypes import (
    DTYPES,
    SUPPORTED_DTYPES,
    decode_fill_value,
    dtype_from_json,
    dtype_name,
    dtype_to_json,
    encode_fill_value,
    has_endian,
    normalize_fill_value,
    parse_dtype,
)

__all__ = [
    "DEFAULT_CHUNK_KEY_ENCODING",
    "DTYPES",
    "SUPPORTED_DTYPES",
    "ArrayMetadata",
    "auto_chunks",
    "decode_fill_value",
    "dtype_from_json",
    "dtype_name",
    "dtype_to_json",
    "encode_fill_value",
    "normalize_fill_value",
    "parse_dtype",
    "with_shape_json",
]

DEFAULT_CHUNK_KEY_ENCODING: dict[str, Any] = {
    "name": "default",
    "configuration": {"separator": "/"},
}


def _shape_json(shape: Sequence[int]) -> bytes:
    """The ``"shape"`` member of a document :meth:`ArrayMetadata.to_json` wrote."""
    if not shape:
        return b'\n  "shape": []'
    return b'\n  "shape": [\n    ' + ",\n    ".join(map(str, shape)).encode() + b"\n  ]"


def with_shape_json(raw: bytes, old: Sequence[int], new: Sequence[int]) -> bytes | None:
    """``zarr.json`` bytes ``raw`` of an array of shape ``old``, as :meth:`ArrayMetadata.to_json`
    wrote them, with the shape ``new`` instead: what ``to_json`` would write after the change,
    without encoding the whole document again (appends change the shape every call).

    Returns None when ``raw`` does not hold the top-level shape member exactly once in that
    layout (the caller then encodes the document).
    """
    member = _shape_json(old)
    if raw.count(member) != 1:
        return None
    return raw.replace(member, _shape_json(new), 1)


#: ``chunks="auto"`` aims at chunks of this many bytes (see :func:`auto_chunks`).
AUTO_CHUNK_BYTES = 4 << 20
#: ... and keeps whole trailing blocks up to this many bytes.
AUTO_CHUNK_MAX_BYTES = 16 << 20


def auto_chunks(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    """Chunk shape for ``chunks="auto"``: about 4 MiB, whole rows, split along axis 0 first.

    The rule, for row-wise access (``a[i]``, ``a[i:j]``, batches of rows):

    1. An array of at most :data:`AUTO_CHUNK_BYTES` (4 MiB) is one chunk.
    2. Otherwise find the first axis ``k`` whose trailing block ``shape[k+1:]`` is at most
       :data:`AUTO_CHUNK_MAX_BYTES` (16 MiB); axes before ``k`` get chunk length 1 and axes after
       it are whole.  (``k`` is 0 unless one row is larger than 16 MiB.)
    3. Axis ``k`` is cut into ``n = ceil(bytes / 4 MiB)`` equal pieces of
       ``ceil(shape[k] / n)``, so chunks hold between 2 and 4 MiB plus at most one
       trailing block, and the last chunk is not mostly padding.

    Chunks are therefore between about 2 and 16 MiB (smaller only when the whole array is),
    a row never spans two chunks unless it is over 16 MiB, and zero-length axes get length 1.

    Parameters
    ----------
    shape : sequence of int
    itemsize : int
        Bytes per element.

    Returns
    -------
    tuple of int
    """
    shape = tuple(int(n) for n in shape)
    if not shape:
        return ()
    dims = [max(1, n) for n in shape]
    if math.prod(dims) * itemsize <= AUTO_CHUNK_BYTES:
        return tuple(dims)
    k = 0
    while k < len(dims) - 1 and math.prod(dims[k + 1 :]) * itemsize > AUTO_CHUNK_MAX_BYTES:
        k += 1
    inner = math.prod(dims[k + 1 :]) * itemsize
    n = max(1, math.ceil(dims[k] * inner / AUTO_CHUNK_BYTES))
    return (*([1] * k), math.ceil(dims[k] / n), *dims[k + 1 :])


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what} must be JSON-serializable (dicts with str keys, lists, str, int, finite "
            f"float, bool, None): {exc}"
        ) from None


def _normalize_dimension_names(names: Any, ndim: int) -> tuple[str | None, ...] | None:
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(
            f"dimension_names must be a sequence of str or None (one per dimension), got {names!r}"
        )
    out = tuple(names)
    if len(out) != ndim:
        raise ValueError(
            f"dimension_names {list(out)} has {len(out)} entries but the array has "
            f"{ndim} dimension(s)"
        )
    for n in out:
        if n is not None and not isinstance(n, str):
            raise TypeError(f"dimension_names entries must be str or None, got {n!r}")
    return out


def _chunk_key_encoding(data: Any) -> dict[str, Any]:
    if isinstance(data, str):
        data = {"name": data}
    if not isinstance(data, Mapping) or data.get("name") not in ("default", "v2"):
        raise ValueError(
            f"zarr.json: unsupported chunk_key_encoding {data!r}; expected 'default' or 'v2'"
        )
    name = data["name"]
    config = dict(data.get("configuration") or {})
    sep = config.get("separator", "/" if name == "default" else ".")
    if sep not in ("/", "."):
        raise ValueError(f"zarr.json: chunk_key_encoding separator must be '/' or '.', got {sep!r}")
    return {"name": name, "configuration": {"separator": sep}}


@dataclass
class ArrayMetadata:
    """One array's ``zarr.json``, parsed.

    Attributes
    ----------
    shape : tuple of int
    chunks : tuple of int
        The regular chunk grid's chunk shape.
    dtype : numpy.dtype
        Native byte order; one of :data:`SUPPORTED_DTYPES`.
    fill_value : numpy.generic
    codecs : tuple of Codec
        The bytes-to-bytes codecs after the ``bytes`` codec (empty: raw chunks).
    endian : {"little", "big"}
        The ``bytes`` codec's byte order.
    attributes : dict
    dimension_names : tuple of (str or None), or None
    chunk_key_encoding : dict
        How zarr-python names chunk keys (``c/0/0``); kept so adapters can translate keys.
    extra : dict
        Unknown top-level fields marked ``"must_understand": false``, kept on rewrite.
    """

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    fill_value: np.generic
    codecs: tuple[Codec, ...] = ()
    endian: str = "little"
    attributes: dict[str, Any] = field(default_factory=dict)
    dimension_names: tuple[str | None, ...] | None = None
    chunk_key_encoding: dict[str, Any] = field(
        default_factory=lambda: json.loads(json.dumps(DEFAULT_CHUNK_KEY_ENCODING))
    )
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        shape: Any,
        chunks: Any,
        dtype: Any = "float64",
        *,
        fill_value: Any = 0,
        compressor: Any = None,
        attributes: Mapping[str, Any] | None = None,
        dimension_names: Sequence[str | None] | None = None,
    ) -> ArrayMetadata:
        """Validate user arguments and build the metadata of a new array.

        Parameters
        ----------
        shape : int or sequence of int
        chunks : int, sequence of int, "auto" or None
            ``"auto"`` (or None) picks a chunk shape with :func:`auto_chunks`.
        dtype : dtype-like
        fill_value : scalar, optional
        compressor : None, str, dict or list of dict, optional
            See :func:`sharedzarr._codecs.compressor_to_codecs`.
        attributes : mapping, optional
        dimension_names : sequence of (str or None), optional

        Returns
        -------
        ArrayMetadata

        Raises
        ------
        TypeError, ValueError
            For any invalid argument.
        """
        shp = normalize_shape(shape)
        dt = parse_dtype(dtype)
        if isinstance(chunks, str) and chunks != "auto":
            hint = ""
            try:
                np.dtype(chunks)
                hint = f"; to give the dtype, pass dtype={chunks!r} (the third argument)"
            except TypeError:
                pass
            raise ValueError(
                f"chunks must be 'auto', an int or a sequence of int (one per dimension), "
                f"got {chunks!r}{hint}"
            )
        if chunks is None or chunks == "auto":
            chunks = auto_chunks(shp, dt.itemsize)
        chk = normalize_chunks(chunks, shp)
        fv = normalize_fill_value(fill_value, dt)
        codecs = tuple(compressor_to_codecs(compressor, dt))
        attrs = {} if attributes is None else attributes
        if not isinstance(attrs, Mapping):
            raise TypeError(f"attributes must be a dict, got {attributes!r}")
        attrs = dict(attrs)
        for k in attrs:
            if not isinstance(k, str):
                raise TypeError(f"attribute names must be str, got {k!r}")
        _check_json(attrs, "attributes")
        attrs = json.loads(json.dumps(attrs))  # detach from the caller's objects
        dims = _normalize_dimension_names(dimension_names, len(shp))
        return cls(shp, chk, dt, fv, codecs, "little", attrs, dims)

    def evolve(self, **changes: Any) -> ArrayMetadata:
        """Return a copy with some fields replaced.

        Parameters
        ----------
        **changes
            Field values, e.g. ``shape=(10, 10)``.

        Returns
        -------
        ArrayMetadata
        """
        return replace(self, **changes)

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return len(self.shape)

    def to_dict(self) -> dict[str, Any]:
        """Return the ``zarr.json`` document as a dict (zarr-python 3.1 key order).

        Returns
        -------
        dict
        """
        if self.codecs and isinstance(self.codecs[0], ShardingCodec):
            codecs = [c.to_dict() for c in self.codecs]  # sharding replaces bytes
        elif not has_endian(self.dtype):
            codecs = [{"name": "bytes"}, *(c.to_dict() for c in self.codecs)]
        else:
            bytes_codec = {"name": "bytes", "configuration": {"endian": self.endian}}
            codecs = [bytes_codec, *(c.to_dict() for c in self.codecs)]
        doc: dict[str, Any] = {
            "shape": list(self.shape),
            "data_type": dtype_to_json(self.dtype),
            "chunk_grid": {
                "name": "regular",
                "configuration": {"chunk_shape": list(self.chunks)},
            },
            "chunk_key_encoding": json.loads(json.dumps(self.chunk_key_encoding)),
            "fill_value": encode_fill_value(self.fill_value, self.dtype),
            "codecs": codecs,
            "attributes": json.loads(json.dumps(self.attributes)),
        }
        if self.dimension_names is not None:
            doc["dimension_names"] = list(self.dimension_names)
        doc["zarr_format"] = 3
        doc["node_type"] = "array"
        doc["storage_transformers"] = []
        doc.update(self.extra)
        return doc

    def to_json(self) -> bytes:
        """Return the ``zarr.json`` bytes (UTF-8, ``indent=2``, as zarr-python writes).

        Returns
        -------
        bytes
        """
        return json.dumps(self.to_dict(), indent=2, allow_nan=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | bytearray | memoryview | str) -> ArrayMetadata:
        """Parse ``zarr.json`` bytes.

        Parameters
        ----------
        data : bytes or str

        Returns
        -------
        ArrayMetadata

        Raises
        ------
        ValueError
            If the bytes are not a Zarr v3 array document sharedzarr can read.
        """
        try:
            doc = json.loads(bytes(data) if not isinstance(data, str) else data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"zarr.json is not valid JSON: {exc}") from None
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ArrayMetadata:
        """Parse a ``zarr.json`` document.

        Parameters
        ----------
        doc : mapping

        Returns
        -------
        ArrayMetadata

        Raises
        ------
        ValueError, TypeError
            If the document is not a Zarr v3 array document sharedzarr can read.
        """
        if not isinstance(doc, Mapping):
            raise ValueError(f"zarr.json must hold a JSON object, got {type(doc).__name__}")
        if doc.get("zarr_format") != 3:
            raise ValueError(
                f"zarr.json: zarr_format is {doc.get('zarr_format')!r}; only Zarr v3 (3) "
                "documents are supported"
            )
        if doc.get("node_type") != "array":
            raise ValueError(f"zarr.json: node_type is {doc.get('node_type')!r}; expected 'array'")
        for key in ("shape", "data_type", "chunk_grid", "fill_value", "codecs"):
            if key not in doc:
                raise ValueError(f"zarr.json: required field {key!r} is missing")
        shape = normalize_shape(doc["shape"], "zarr.json shape")
        grid = doc["chunk_grid"]
        if not isinstance(grid, Mapping) or grid.get("name") != "regular":
            raise ValueError(
                f"zarr.json: unsupported chunk_grid {grid!r}; only 'regular' grids are supported"
            )
        chunks = normalize_chunks((grid.get("configuration") or {}).get("chunk_shape"), shape)
        dtype = dtype_from_json(doc["data_type"])
        fill_value = decode_fill_value(doc["fill_value"], dtype)
        endian, codecs = _parse_codecs(doc["codecs"], dtype, chunks, fill_value)
        attrs = doc.get("attributes")
        attrs = {} if attrs is None else attrs
        if not isinstance(attrs, Mapping):
            raise ValueError(f"zarr.json: attributes must be an object, got {attrs!r}")
        dims = _normalize_dimension_names(doc.get("dimension_names"), len(shape))
        cke = _chunk_key_encoding(doc.get("chunk_key_encoding", DEFAULT_CHUNK_KEY_ENCODING))
        transformers = doc.get("storage_transformers") or []
        if transformers:
            raise ValueError(f"zarr.json: storage_transformers {transformers!r} are not supported")
        known = {
            "zarr_format", "node_type", "shape", "data_type", "chunk_grid",
            "chunk_key_encoding", "fill_value", "codecs", "attributes", "dimension_names",
            "storage_transformers",
        }  # fmt: skip
        extra = {}
        for key, value in doc.items():
            if key in known:
                continue
            if isinstance(value, Mapping) and value.get("must_understand") is False:
                extra[key] = value
            else:
                raise ValueError(
                    f"zarr.json: unknown field {key!r} that does not say 'must_understand': false"
                )
        return cls(shape, chunks, dtype, fill_value, codecs, endian, dict(attrs), dims, cke, extra)

    def chunk_key(self, idx: Sequence[int]) -> str:
        """Return the zarr-python store key of chunk ``idx`` (``"c/0/1"`` by default).

        Parameters
        ----------
        idx : sequence of int

        Returns
        -------
        str
        """
        sep = self.chunk_key_encoding["configuration"]["separator"]
        if self.chunk_key_encoding["name"] == "v2":
            return sep.join(map(str, idx)) if len(idx) else "0"
        return "c" + "".join(sep + str(operator.index(i)) for i in idx)

    def parse_chunk_key(self, key: str) -> tuple[int, ...] | None:
        """Return the chunk index a zarr-python store key names, or None if it names none.

        Parameters
        ----------
        key : str

        Returns
        -------
        tuple of int or None
        """
        sep = self.chunk_key_encoding["configuration"]["separator"]
        if self.chunk_key_encoding["name"] == "v2":
            if not self.shape:
                return () if key == "0" else None
            parts = key.split(sep)
        elif key == "c":
            parts = []
        elif key.startswith("c" + sep):
            parts = key[2:].split(sep)
        else:
            return None
        if len(parts) != len(self.shape) or not all(p.isdigit() for p in parts):
            return None
        return tuple(int(p) for p in parts)


def _parse_codecs(
    data: Any, dtype: np.dtype, chunks: tuple[int, ...] = (), fill_value: Any = 0
) -> tuple[str, tuple[Codec, ...]]:
    if not isinstance(data, (list, tuple)) or not data:
        raise ValueError(f"zarr.json: codecs must be a non-empty list, got {data!r}")
    entries = [{"name": c} if isinstance(c, str) else c for c in data]
    first = entries[0]
    if not isinstance(first, Mapping):
        raise ValueError(f"zarr.json: malformed codec entry {first!r}")
    name = first.get("name")
    if name == "sharding_indexed":
        return _parse_sharding(first, entries[1:], dtype, chunks, fill_value)
    if name != "bytes":
        if name in ("transpose", "vlen-utf8", "vlen-bytes"):
            raise ValueError(
                f"zarr.json: the {name!r} codec is not supported; sharedzarr reads arrays "
                "whose codecs start with 'bytes' followed by compressors"
            )
        raise ValueError(
            f"zarr.json: the first codec must be 'bytes' (array to bytes), got {name!r}"
        )
    config = first.get("configuration") or {}
    if not isinstance(config, Mapping):
        raise ValueError(
            f"zarr.json: the bytes codec's configuration must be an object, got {config!r}"
        )
    endian = config.get("endian", "little")
    if endian is None:
        endian = "little"
    if endian not in ("little", "big"):
        raise ValueError(f"zarr.json: bytes codec endian must be 'little' or 'big', got {endian!r}")
    codecs = tuple(codec_from_dict(c, dtype.itemsize) for c in entries[1:])
    return endian, codecs


def _parse_sharding(
    first: Mapping[str, Any],
    rest: list[Any],
    dtype: np.dtype,
    chunks: tuple[int, ...],
    fill_value: Any,
) -> tuple[str, tuple[Codec, ...]]:
    """The ``sharding_indexed`` serializer: the shard is the array's chunk."""
    config = first.get("configuration") or {}
    if not isinstance(config, Mapping):
        raise ValueError(f"zarr.json: sharding configuration must be an object, got {config!r}")
    inner = (config.get("codecs") or [{}])[0]
    inner_cfg = (inner.get("configuration") or {}) if isinstance(inner, Mapping) else {}
    endian = inner_cfg.get("endian", "little") or "little"
    chunk_dtype = (
        dtype.newbyteorder("<" if endian == "little" else ">") if has_endian(dtype) else dtype
    )
    fill = np.array(fill_value, chunk_dtype).tobytes()
    try:
        shard = ShardingCodec(dict(config), chunks, chunk_dtype, fill)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"zarr.json: {exc}") from None
    return endian, (shard, *(codec_from_dict(c, dtype.itemsize) for c in rest))
