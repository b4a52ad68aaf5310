"""Bad input is refused with a clear error: a table name with a trailing newline, a numpy
object array as a Table value, and array writes whose cast would overflow to inf or round
an integer."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

import sharedzarr as sz
from sharedzarr import Table


@pytest.mark.parametrize("bad", ["prices\n", "a\nb", "\nx", "x\r"])
def test_names_with_line_breaks_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="name"):
        Table.create(bad)
    with pytest.raises(ValueError, match="name"):
        sz.create((4,), chunks=(4,), table_name=bad)


def test_object_arrays_are_not_table_values(cleanup) -> None:
    name = f"obj-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    t = Table.create(name)
    with pytest.raises(TypeError, match="Python objects"):
        t.insert("k", np.array([object(), "x"], dtype=object))
    assert "k" not in t
    t.delete_table()


def test_unsafe_float_and_int_casts_raise(cleanup) -> None:
    name = f"cast-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    f32 = sz.create((4,), chunks=(4,), dtype="float32", table_name=name)
    with pytest.raises(ValueError, match="inf"):
        f32[:] = np.array([1.0, 1e300, 2.0, 3.0])
    f32[:] = np.array([1.5, np.inf, np.nan, -2.0])  # representable (inf/nan as such)
    f32[:2] = 0.1  # float64 -> float32 rounding is fine: in range
    assert (f32[:2] == np.float32(0.1)).all()
    f32.delete()
    f64 = sz.create((3,), chunks=(3,), dtype="float64", table_name=name)
    with pytest.raises(ValueError, match="not exactly representable"):
        f64[:] = np.array([1, 2**53 + 1, 3], dtype=np.int64)
    f64[:] = np.array([1, 2**53, 3], dtype=np.int64)  # exact
    assert f64[1] == 2.0**53
    f64.delete()
