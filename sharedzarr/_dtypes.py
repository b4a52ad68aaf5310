"""Zarr v3 data types and fill values: parsing, names, ``data_type`` and ``fill_value`` JSON.

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
import math
from collections.abc import Mapping
from typing import Any, cast

import numpy as np

__all__ = [
    "DTYPES",
    "SUPPORTED_DTYPES",
    "decode_fill_value",
    "dtype_from_json",
    "dtype_name",
    "dtype_to_json",
    "encode_fill_value",
    "has_endian",
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


def has_endian(dtype: np.dtype) -> bool:
    """Whether zarr-python writes the ``bytes`` codec's ``endian`` for this dtype."""
    return dtype.fields is None and dtype.kind in "iufcMmU" and dtype.itemsize > 1


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
