"""Zarr v3 ``zarr.json`` for one array: dtypes, fill values, encode and decode.

:class:`ArrayMetadata` is the parsed document.  :meth:`ArrayMetadata.to_json` writes it the way
zarr-python 3.1 does (same keys, key order, ``indent=2``; the ``bytes`` codec's ``endian`` omitted
for 1-byte dtypes; ``dimension_names`` omitted when unset), and :meth:`ArrayMetadata.from_json`
reads what zarr-python 3.1 writes (``dimension_names: null``, ``endian`` omitted, ``gzip``,
``zstd``, ``blosc``, ``crc32c`` and ``numcodecs.*`` compressors, the ``sharding_indexed``
codec, ``default`` and ``v2`` chunk key encodings with either separator).

Fill values are encoded as zarr-python encodes them: booleans as ``true``/``false``, integers as
JSON integers, floats as numbers or the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
(hex bit patterns such as ``"0x7fc00000"`` are accepted on read, as the spec allows), complex
numbers as ``[real, imag]`` with each part encoded like a float.

Data types (zarr-python 3.1 names and ``data_type`` layout, matched byte for byte):

==============================  ============================================================
numpy                           ``data_type`` in ``zarr.json``, ``fill_value`` form
==============================  ============================================================
bool, int8..uint64, float16..   ``"bool"``, ``"int8"``, ... ``"complex128"``; as above
``datetime64[<n><unit>]``       ``{"name": "numpy.datetime64", "configuration": {"unit": unit,
                                "scale_factor": n}}``; the int64 count (NaT is -2**63)
``timedelta64[<n><unit>]``      ``"numpy.timedelta64"``, the same configuration and fill value
``S<n>`` (fixed-length bytes)   ``{"name": "null_terminated_bytes", "configuration":
                                {"length_bytes": n}}``; base64 of the bytes
``U<n>`` (fixed-length str)     ``{"name": "fixed_length_utf32", "configuration":
                                {"length_bytes": 4 * n}}``; the string itself
``V<n>`` (raw bytes)            ``{"name": "raw_bytes", "configuration": {"length_bytes":
                                n}}``; base64 of the n bytes
structured (packed fields of    ``{"name": "structured", "configuration": {"fields": [[name,
any type above)                 data_type], ...]}}``; base64 of the record's bytes
==============================  ============================================================

Arrays are stored little-endian (a ``big`` endian ``bytes`` codec is accepted on read and
honoured on write).  As zarr-python does, the ``bytes`` codec names an ``endian`` only for types
that have one (multi-byte numbers, datetimes, ``U<n>``), not for ``S<n>``, ``V<n>`` or
structured types (whose fields are stored little-endian).  Object arrays and variable-length
strings (numpy's ``StringDType``) have no fixed item size and are refused with a ``TypeError``.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np

from ._chunking import normalize_chunks, normalize_shape
from ._codecs import Codec, ShardingCodec, codec_from_dict, compressor_to_codecs

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


#: What a ``TypeError`` for an unsupported dtype lists.
SUPPORTED_DTYPES = (
    "bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float16, float32, "
    "float64, complex64, complex128, datetime64[unit] and timedelta64[unit] (any unit), "
    "S<n> (fixed-length bytes), U<n> (fixed-length str), V<n> (raw bytes), and structured "
    "dtypes of packed fields of these types"
)

_TIME_NAMES = {"M": "numpy.datetime64", "m": "numpy.timedelta64"}
_TIME_KINDS = {name: kind for kind, name in _TIME_NAMES.items()}
_TIME_UNITS = ("Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as", "generic")
_NAT = -(2**63)
_SIZED = {"S": "null_terminated_bytes", "U": "fixed_length_utf32", "V": "raw_bytes"}
_SIZED_KINDS = {name: kind for kind, name in _SIZED.items()}


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


def _unsupported(dt: Any, dtype: Any, why: str = "") -> TypeError:
    what = f"{dt} ({dtype!r})" if str(dt) != str(dtype) else repr(dtype)
    return TypeError(f"unsupported dtype {what}{why}; supported dtypes are {SUPPORTED_DTYPES}")


def _native(dt: np.dtype, dtype: Any) -> np.dtype:
    """The canonical native-order dtype of ``dt``, or a TypeError naming the supported ones."""
    if dt.fields is not None:
        if dt.subdtype is not None:
            raise _unsupported(dt, dtype, ": subarray fields are not supported")
        fields = []
        offset = 0
        for name in dt.names or ():
            fdt, off, *title = dt.fields[name]
            if title:
                raise _unsupported(dt, dtype, ": field titles are not supported")
            if off != offset:
                raise _unsupported(
                    dt, dtype, ": fields must be packed (no offsets or alignment padding)"
                )
            if fdt.subdtype is not None:
                raise _unsupported(
                    dt, dtype, f": field {name!r} is a subarray; use one field per element"
                )
            fields.append((name, _native(fdt, dtype)))
            offset += fdt.itemsize
        if not fields or offset != dt.itemsize:
            raise _unsupported(dt, dtype, ": a structured dtype needs packed, non-empty fields")
        return np.dtype(fields)
    if dt.subdtype is not None:
        raise _unsupported(dt, dtype, ": subarray dtypes are not supported (add a dimension)")
    kind = dt.kind
    if kind in "biufc":
        native = dt.newbyteorder("=") if dt.byteorder not in ("=", "|") else dt
        if native in _BY_NUMPY:
            return DTYPES[_BY_NUMPY[native]]
    elif kind in "Mm":
        unit, count = np.datetime_data(dt)
        return np.dtype(f"{kind}8" if unit == "generic" else f"{kind}8[{count}{unit}]")
    elif kind in "SUV" and type(dt) in (
        np.dtypes.BytesDType,
        np.dtypes.StrDType,
        np.dtypes.VoidDType,
    ):
        n = dt.itemsize // 4 if kind == "U" else dt.itemsize
        if n < 1:
            raise _unsupported(dt, dtype, f": give a length, e.g. '{kind}10'")
        return np.dtype(f"{kind}{n}")
    raise _unsupported(dt, dtype)


def parse_dtype(dtype: Any) -> np.dtype:
    """Return the native-order numpy dtype for a supported data type.

    Parameters
    ----------
    dtype : str, type or numpy.dtype
        Anything :func:`numpy.dtype` understands (``"float64"``, ``"<f8"``, ``np.float64``,
        ``"M8[ms]"``, ``"S10"``, ``"U4"``, ``[("x", "f4"), ("n", "i8")]``), as long as it is
        one of :data:`SUPPORTED_DTYPES` (any byte order).

    Returns
    -------
    numpy.dtype
        Native byte order; structured dtypes get native-order fields.

    Raises
    ------
    TypeError
        For an unsupported or unknown dtype; the message lists the supported ones.
    """
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(
            f"unknown dtype {dtype!r}; supported dtypes are {SUPPORTED_DTYPES}"
        ) from exc
    return _native(dt, dtype)


def dtype_to_json(dtype: np.dtype) -> Any:
    """Return the Zarr v3 ``data_type`` of a supported dtype, as zarr-python 3.1 writes it.

    Parameters
    ----------
    dtype : numpy.dtype

    Returns
    -------
    str or dict
        A name (``"float64"``) or a ``{"name": ..., "configuration": {...}}`` object.
    """
    dt = parse_dtype(dtype)
    if dt.fields is not None:
        fields = [[name, dtype_to_json(dt.fields[name][0])] for name in dt.names or ()]
        return {"name": "structured", "configuration": {"fields": fields}}
    kind = dt.kind
    if kind in "Mm":
        unit, count = np.datetime_data(dt)
        return {"name": _TIME_NAMES[kind], "configuration": {"unit": unit, "scale_factor": count}}
    if kind in _SIZED:
        return {"name": _SIZED[kind], "configuration": {"length_bytes": dt.itemsize}}
    return _BY_NUMPY[dt]


def dtype_from_json(data: Any) -> np.dtype:
    """Return the numpy dtype of a Zarr v3 ``data_type`` (the inverse of :func:`dtype_to_json`).

    Parameters
    ----------
    data : str or dict

    Returns
    -------
    numpy.dtype

    Raises
    ------
    ValueError
        For a data type sharedzarr does not read; the message lists the supported ones.
    """
    bad = ValueError(
        f"zarr.json: unsupported data_type {data!r}; supported data types are {SUPPORTED_DTYPES}"
    )
    if isinstance(data, str):
        if data in DTYPES:
            return DTYPES[data]
        raise bad
    if not isinstance(data, Mapping) or set(data) != {"name", "configuration"}:
        raise bad
    name, config = data["name"], data["configuration"]
    if not isinstance(config, Mapping):
        raise bad
    if name in _TIME_KINDS and set(config) == {"unit", "scale_factor"}:
        unit, count = config["unit"], config["scale_factor"]
        if unit not in _TIME_UNITS or type(count) is not int or not 1 <= count < 2**31:
            raise bad
        kind = _TIME_KINDS[name]
        return np.dtype(f"{kind}8" if unit == "generic" else f"{kind}8[{count}{unit}]")
    if name in _SIZED_KINDS and set(config) == {"length_bytes"}:
        n, kind = config["length_bytes"], _SIZED_KINDS[name]
        if type(n) is not int or n < 1 or (kind == "U" and n % 4):
            raise bad
        return np.dtype(f"{kind}{n // 4 if kind == 'U' else n}")
    if name == "structured" and set(config) == {"fields"}:
        fields = config["fields"]
        if not isinstance(fields, list) or not fields:
            raise bad
        out = []
        for f in fields:
            if not isinstance(f, list) or len(f) != 2 or not isinstance(f[0], str):
                raise bad
            out.append((f[0], dtype_from_json(f[1])))
        try:
            return np.dtype(out)
        except (TypeError, ValueError):
            raise bad from None
    raise bad


def dtype_name(dtype: np.dtype) -> str:
    """Return a short name of a supported dtype (the Zarr name of a plain numeric type).

    Parameters
    ----------
    dtype : numpy.dtype

    Returns
    -------
    str
        ``"float64"``, ``"datetime64[ms]"``, ``"|S10"``, ``"<U4"`` or numpy's spelling of a
        structured dtype.
    """
    dt = parse_dtype(dtype)
    name = _BY_NUMPY.get(dt) if dt.fields is None else None
    return name if name is not None else str(dt)


def _has_endian(dtype: np.dtype) -> bool:
    """Whether zarr-python writes the ``bytes`` codec's ``endian`` for this dtype."""
    return dtype.fields is None and dtype.kind in "iufcMmU" and dtype.itemsize > 1


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
        ``None`` means zarr-python 3's default: zero (``False`` for bool, ``b""``/``""`` for
        ``S``/``U``, zero bytes for ``V``, numpy's conversion of ``0`` for structured types,
        which is ``"0"`` in their string fields) and NaT for datetimes and timedeltas.
        Complex fill values may be given as ``complex`` or ``[real, imag]``; float ones may
        be ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``.  ``0`` is the zero
        value of every type (the epoch for datetimes).  Datetimes take ``numpy.datetime64``,
        ``datetime.datetime``/``date``, ISO strings, ``"NaT"`` or an integer count of units;
        timedeltas the same with ``timedelta64``/``datetime.timedelta``; structured types a
        tuple of field values, a ``numpy.void`` or the record's bytes.
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
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    kind = dtype.kind
    if dtype.fields is not None or kind in "MmSUV":
        return _normalize_other_fill(value, dtype, what)
    if value is None:
        return _scalar(dtype.type(0))
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
        return _scalar(dtype.type(ivalue))
    if kind == "f":
        if isinstance(value, (complex, np.complexfloating)):
            raise TypeError(f"{what} is complex but the dtype is {dtype}")
        f = _float_from_json(value, dtype, what)
        with np.errstate(over="ignore"):
            out = dtype.type(f)
        if math.isfinite(f) and not np.isfinite(out):
            raise ValueError(f"{what} is out of range for {dtype}")
        return _scalar(out)
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
    return _scalar(dtype.type(complex(re, im)))


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
    dtype = np.dtype(dtype)
    kind = dtype.kind
    if dtype.fields is not None or kind == "V":
        return base64.standard_b64encode(np.asarray(value, dtype).tobytes()).decode("ascii")
    if kind in "Mm":
        return int(np.asarray(value, dtype).view(np.int64))
    if kind == "S":
        return base64.standard_b64encode(bytes(cast(Any, value))).decode("ascii")
    if kind == "U":
        return str(value)
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
    dtype = np.dtype(dtype)
    kind = dtype.kind
    if dtype.fields is not None or kind in "SV":
        if not isinstance(data, str):
            raise ValueError(
                f"zarr.json: the fill_value of a {dtype} array must be a base64 string, "
                f"got {data!r}"
            )
        try:
            raw = base64.standard_b64decode(data.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError):
            raise ValueError(f"zarr.json: fill_value {data!r} is not base64") from None
        if kind == "S":
            return normalize_fill_value(raw, dtype)
        if len(raw) != dtype.itemsize:
            raise ValueError(
                f"zarr.json: fill_value {data!r} holds {len(raw)} bytes; {dtype} needs "
                f"{dtype.itemsize}"
            )
        return _scalar(np.frombuffer(raw, dtype)[0])
    if kind in "Mm":
        if data == "NaT":
            return _scalar(np.array(_NAT, np.int64).view(dtype)[()])
        if type(data) is not int or not _NAT <= data < 2**63:
            raise ValueError(
                f"zarr.json: the fill_value of a {dtype} array must be an int64 or 'NaT', "
                f"got {data!r}"
            )
        return _scalar(np.array(data, np.int64).view(dtype)[()])
    if kind == "U" and not isinstance(data, str):
        raise ValueError(f"zarr.json: the fill_value of a {dtype} array must be a string")
    return normalize_fill_value(data, dtype)


def _scalar(x: object) -> np.generic:
    """``x``, the numpy scalar that indexing or ``dtype.type`` made (numpy's stubs type
    ``a[()]`` and ``a[0]`` as arrays or Any)."""
    if not isinstance(x, np.generic):
        raise TypeError(f"expected a numpy scalar, got {type(x).__name__}")
    return x


def _normalize_other_fill(value: Any, dtype: np.dtype, what: str) -> np.generic:
    """normalize_fill_value for datetimes, timedeltas, S, U, V and structured dtypes."""
    kind = dtype.kind
    # np.timedelta64 subclasses np.integer: it is a time, not a number, here
    integer = isinstance(value, (int, np.integer)) and not isinstance(
        value, (bool, np.bool_, np.timedelta64)
    )
    zero = integer and int(value) == 0
    if dtype.fields is not None or kind == "V":
        if value is None and dtype.fields is not None:
            return _scalar(np.array([0], dtype)[0])  # zarr-python's default ("0" in string fields)
        if value is None or zero:
            return _scalar(np.zeros((), dtype)[()])
        if isinstance(value, (bytes, np.bytes_)) or (
            isinstance(value, np.void) and value.dtype.fields is None
        ):
            raw = bytes(cast(Any, value))
            if len(raw) != dtype.itemsize:
                raise ValueError(f"{what} has {len(raw)} bytes; {dtype} needs {dtype.itemsize}")
            return _scalar(np.frombuffer(raw, dtype)[0])
        if kind == "V" and dtype.fields is None:
            raise TypeError(f"{what} does not fit {dtype}; give {dtype.itemsize} bytes")
        if isinstance(value, np.void):
            value = value.item()
        if not isinstance(value, (tuple, list)):
            raise TypeError(
                f"{what} does not fit structured dtype {dtype}; give a tuple of field values"
            )
        try:
            return _scalar(np.array(tuple(value), dtype)[()])
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{what} does not fit structured dtype {dtype}: {exc}") from None
    if kind in "Mm":
        scalar = np.datetime64 if kind == "M" else np.timedelta64
        other = np.timedelta64 if kind == "M" else np.datetime64
        if value is None:
            return _scalar(np.array(_NAT, np.int64).view(dtype)[()])
        if isinstance(value, (bool, np.bool_, float, np.floating, complex, other)):
            raise TypeError(f"{what} does not fit {dtype}")
        if integer:
            if not _NAT <= int(value) < 2**63:
                raise ValueError(f"{what} is out of range for {dtype}")
            return _scalar(np.array(int(value), np.int64).view(dtype)[()])
        if kind == "m" and isinstance(value, datetime.datetime | datetime.date):
            raise TypeError(f"{what} does not fit {dtype}; give a timedelta")
        try:
            v = value if isinstance(value, scalar) else scalar(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{what} does not fit {dtype}: {exc}") from None
        out = np.array(v).astype(dtype)[()]
        if not np.isnat(v) and np.array(out).astype(v.dtype)[()] != v:
            raise ValueError(f"{what} is not representable in {dtype} without losing precision")
        return _scalar(out)
    n = dtype.itemsize // 4 if kind == "U" else dtype.itemsize
    if value is None or zero:
        return _scalar(dtype.type(b"" if kind == "S" else ""))
    if kind == "S":
        if not isinstance(value, (bytes, np.bytes_)):
            raise TypeError(f"{what} does not fit {dtype}; give bytes, e.g. b'abc'")
        text: bytes | str = bytes(value)
    else:
        if not isinstance(value, str):
            raise TypeError(f"{what} does not fit {dtype}; give a str")
        text = value
    if len(text) > n:
        raise ValueError(f"{what} is longer than the {n} characters of {dtype}")
    return _scalar(dtype.type(text))


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
        elif not _has_endian(self.dtype):
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
        dtype.newbyteorder("<" if endian == "little" else ">") if _has_endian(dtype) else dtype
    )
    fill = np.array(fill_value, chunk_dtype).tobytes()
    try:
        shard = ShardingCodec(dict(config), chunks, chunk_dtype, fill)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"zarr.json: {exc}") from None
    return endian, (shard, *(codec_from_dict(c, dtype.itemsize) for c in rest))
