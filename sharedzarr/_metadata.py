"""Zarr v3 ``zarr.json`` for one array: dtypes, fill values, encode and decode.

:class:`ArrayMetadata` is the parsed document.  :meth:`ArrayMetadata.to_json` writes it the way
zarr-python 3.1 does (same keys, key order, ``indent=2``; the ``bytes`` codec's ``endian`` omitted
for 1-byte dtypes; ``dimension_names`` omitted when unset), and :meth:`ArrayMetadata.from_json`
reads what zarr-python 3.1 writes (``dimension_names: null``, ``endian`` omitted, ``gzip``,
``zstd``, ``blosc``, ``crc32c`` and ``numcodecs.*`` compressors, ``v2`` chunk key encoding).

Fill values are encoded as zarr-python encodes them: booleans as ``true``/``false``, integers as
JSON integers, floats as numbers or the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
(hex bit patterns such as ``"0x7fc00000"`` are accepted on read, as the spec allows), complex
numbers as ``[real, imag]`` with each part encoded like a float.

Only the data types below are supported; they are stored little-endian (a ``big`` endian
``bytes`` codec is accepted on read and honoured on write).
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
from ._codecs import Codec, codec_from_dict, compressor_to_codecs

__all__ = [
    "DEFAULT_CHUNK_KEY_ENCODING",
    "DTYPES",
    "ArrayMetadata",
    "decode_fill_value",
    "dtype_name",
    "encode_fill_value",
    "normalize_fill_value",
    "parse_dtype",
]

#: Zarr v3 ``data_type`` name -> numpy dtype (native byte order).
DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name)
    for name in (
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
    )
}
_BY_NUMPY: dict[np.dtype, str] = {dt: name for name, dt in DTYPES.items()}

DEFAULT_CHUNK_KEY_ENCODING: dict[str, Any] = {
    "name": "default",
    "configuration": {"separator": "/"},
}


def parse_dtype(dtype: Any) -> np.dtype:
    """Return the native-order numpy dtype for a supported data type.

    Parameters
    ----------
    dtype : str, type or numpy.dtype
        Anything :func:`numpy.dtype` understands (``"float64"``, ``"<f8"``, ``np.float64``),
        as long as it names one of the supported types (any byte order).

    Returns
    -------
    numpy.dtype

    Raises
    ------
    TypeError
        For an unsupported or unknown dtype; the message lists the supported ones.
    """
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(
            f"unknown dtype {dtype!r}; supported dtypes are {', '.join(DTYPES)}"
        ) from exc
    native = dt.newbyteorder("=") if dt.byteorder not in ("=", "|") else dt
    if native not in _BY_NUMPY or dt.fields is not None or dt.subdtype is not None:
        raise TypeError(
            f"unsupported dtype {dt} ({dtype!r}); supported dtypes are {', '.join(DTYPES)}"
        )
    return np.dtype(_BY_NUMPY[native])


def dtype_name(dtype: np.dtype) -> str:
    """Return the Zarr v3 ``data_type`` name of a supported dtype.

    Parameters
    ----------
    dtype : numpy.dtype

    Returns
    -------
    str
    """
    return _BY_NUMPY[parse_dtype(dtype)]


def _float_from_json(value: Any, dtype: np.dtype, what: str) -> float:
    if isinstance(value, str):
        special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
        if value in special:
            return special[value]
        if value.startswith("0x"):
            fdt = np.dtype(f"f{dtype.itemsize // 2}") if dtype.kind == "c" else dtype
            try:
                raw = bytes.fromhex(value[2:])
            except ValueError:
                raw = b""
            if len(raw) != fdt.itemsize:
                raise ValueError(
                    f"{what}: hex fill value {value!r} must have {fdt.itemsize} bytes for {dtype}"
                )
            return float(np.frombuffer(raw, fdt.newbyteorder(">"))[0])
        raise ValueError(
            f"{what}: {value!r} is not a float; use a number, 'NaN', 'Infinity' or '-Infinity'"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what}: expected a number for dtype {dtype}, got {value!r}")
    return float(value)


def _float_to_json(value: float) -> Any:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def normalize_fill_value(value: Any, dtype: np.dtype) -> np.generic:
    """Validate a fill value and return it as a numpy scalar of ``dtype``.

    Parameters
    ----------
    value : scalar, sequence or None
        ``None`` means zero (``False`` for bool), as in zarr-python 3.  Complex fill values may
        be given as ``complex`` or ``[real, imag]``; float ones may be ``"NaN"``,
        ``"Infinity"`` or ``"-Infinity"``.
    dtype : numpy.dtype

    Returns
    -------
    numpy.generic

    Raises
    ------
    TypeError
        If the value's type does not fit the dtype (e.g. a float for an integer dtype).
    ValueError
        If the value is out of the dtype's range.
    """
    dtype = parse_dtype(dtype)
    what = f"fill_value {value!r}"
    if value is None:
        return dtype.type(0)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    kind = dtype.kind
    if kind == "b":
        if isinstance(value, (bool, np.bool_)):
            return np.bool_(value)
        if isinstance(value, (int, np.integer)) and value in (0, 1):
            return np.bool_(bool(value))
        raise TypeError(f"{what} does not fit dtype bool; use True or False")
    if kind in "iu":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            if isinstance(value, (float, np.floating)) and float(value).is_integer():
                value = int(value)
            else:
                raise TypeError(f"{what} does not fit integer dtype {dtype}; use an integer")
        info = np.iinfo(dtype)
        ivalue = int(value)
        if not info.min <= ivalue <= info.max:
            raise ValueError(
                f"{what} is out of range for {dtype} (valid: {info.min} to {info.max})"
            )
        return dtype.type(ivalue)
    if kind == "f":
        if isinstance(value, (complex, np.complexfloating)):
            raise TypeError(f"{what} is complex but the dtype is {dtype}")
        f = _float_from_json(value, dtype, what)
        with np.errstate(over="ignore"):
            out = dtype.type(f)
        if math.isfinite(f) and not np.isfinite(out):
            raise ValueError(f"{what} is out of range for {dtype}")
        return out
    # complex
    if isinstance(value, (complex, np.complexfloating)):
        re, im = float(value.real), float(value.imag)
    elif isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{what}: a complex fill value must be [real, imag]")
        re = _float_from_json(value[0], dtype, what)
        im = _float_from_json(value[1], dtype, what)
    else:
        re, im = _float_from_json(value, dtype, what), 0.0
    return dtype.type(complex(re, im))


def encode_fill_value(value: np.generic, dtype: np.dtype) -> Any:
    """Return the JSON form of a (normalised) fill value, as zarr-python writes it.

    Parameters
    ----------
    value : numpy.generic
        The fill value, from :func:`normalize_fill_value`.
    dtype : numpy.dtype

    Returns
    -------
    bool, int, float, str or list
    """
    kind = np.dtype(dtype).kind
    if kind == "b":
        return bool(value)
    if kind in "iu":
        return int(value)
    if kind == "f":
        return _float_to_json(float(value))
    c = complex(value)
    return [_float_to_json(c.real), _float_to_json(c.imag)]


def decode_fill_value(data: Any, dtype: np.dtype) -> np.generic:
    """Parse the JSON ``fill_value`` of a ``zarr.json`` document.

    Parameters
    ----------
    data : JSON value
    dtype : numpy.dtype

    Returns
    -------
    numpy.generic

    Raises
    ------
    ValueError, TypeError
        If the value does not fit the dtype.
    """
    if data is None:
        raise ValueError("zarr.json: fill_value must not be null for a Zarr v3 array")
    return normalize_fill_value(data, dtype)


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
        Native byte order; one of :data:`DTYPES`.
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
        chunks : int or sequence of int
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
        chk = normalize_chunks(chunks, shp)
        dt = parse_dtype(dtype)
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
        if self.dtype.itemsize == 1:
            bytes_codec: dict[str, Any] = {"name": "bytes"}
        else:
            bytes_codec = {"name": "bytes", "configuration": {"endian": self.endian}}
        doc: dict[str, Any] = {
            "shape": list(self.shape),
            "data_type": dtype_name(self.dtype),
            "chunk_grid": {
                "name": "regular",
                "configuration": {"chunk_shape": list(self.chunks)},
            },
            "chunk_key_encoding": json.loads(json.dumps(self.chunk_key_encoding)),
            "fill_value": encode_fill_value(self.fill_value, self.dtype),
            "codecs": [bytes_codec, *(c.to_dict() for c in self.codecs)],
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
        dtype_json = doc["data_type"]
        if not isinstance(dtype_json, str) or dtype_json not in DTYPES:
            raise ValueError(
                f"zarr.json: unsupported data_type {dtype_json!r}; supported data types are "
                f"{', '.join(DTYPES)}"
            )
        dtype = DTYPES[dtype_json]
        fill_value = decode_fill_value(doc["fill_value"], dtype)
        endian, codecs = _parse_codecs(doc["codecs"], dtype)
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


def _parse_codecs(data: Any, dtype: np.dtype) -> tuple[str, tuple[Codec, ...]]:
    if not isinstance(data, (list, tuple)) or not data:
        raise ValueError(f"zarr.json: codecs must be a non-empty list, got {data!r}")
    entries = [{"name": c} if isinstance(c, str) else c for c in data]
    first = entries[0]
    if not isinstance(first, Mapping):
        raise ValueError(f"zarr.json: malformed codec entry {first!r}")
    name = first.get("name")
    if name != "bytes":
        if name in ("transpose", "sharding_indexed", "vlen-utf8", "vlen-bytes"):
            raise ValueError(
                f"zarr.json: the {name!r} codec is not supported; sharedzarr reads arrays "
                "whose codecs start with 'bytes' followed by compressors"
            )
        raise ValueError(
            f"zarr.json: the first codec must be 'bytes' (array to bytes), got {name!r}"
        )
    config = first.get("configuration") or {}
    endian = config.get("endian", "little")
    if endian is None:
        endian = "little"
    if endian not in ("little", "big"):
        raise ValueError(f"zarr.json: bytes codec endian must be 'little' or 'big', got {endian!r}")
    codecs = tuple(codec_from_dict(c, dtype.itemsize) for c in entries[1:])
    return endian, codecs
