"""Selections on a regular chunk grid (sharedzarr._chunking), checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sharedzarr._chunking import (
    DimSelection,
    chunk_grid_shape,
    chunk_valid_shape,
    covers_chunk,
    iter_chunk_indices,
    iter_chunk_selections,
    normalize_chunk_index,
    normalize_chunks,
    normalize_index,
    normalize_shape,
    normalize_start_stop,
    selection_shape,
)


def _gather(ref: np.ndarray, chunks: tuple[int, ...], sels: tuple[DimSelection, ...]) -> np.ndarray:
    """Rebuild a selection chunk by chunk, the way Array reads."""
    full, _ = selection_shape(sels)
    out = np.full(full, -1, dtype=ref.dtype)
    grid = chunk_grid_shape(ref.shape, chunks)
    padded = np.full(tuple(g * c for g, c in zip(grid, chunks, strict=True)), -2, ref.dtype)
    padded[tuple(slice(0, s) for s in ref.shape)] = ref
    seen = set()
    for idx, csel, osel in iter_chunk_selections(sels, chunks):
        assert idx not in seen
        seen.add(idx)
        assert all(0 <= i < g for i, g in zip(idx, grid, strict=True))
        chunk = padded[tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, chunks, strict=True))]
        out[osel] = chunk[csel]
    return out


def test_normalize_shape_and_chunks() -> None:
    assert normalize_shape(5) == (5,)
    assert normalize_shape((2, np.int64(3))) == (2, 3)
    assert normalize_shape(()) == ()
    with pytest.raises(ValueError, match=">= 0"):
        normalize_shape((2, -1))
    with pytest.raises(TypeError, match="integer"):
        normalize_shape((2.5,))
    with pytest.raises(TypeError, match="integer"):
        normalize_shape((True,))
    with pytest.raises(TypeError):
        normalize_shape("ab")
    assert normalize_chunks(4, (10, 10)) == (4, 4)
    assert normalize_chunks((), ()) == ()
    with pytest.raises(ValueError, match=">= 1"):
        normalize_chunks((0, 2), (0, 4))
    with pytest.raises(ValueError, match=">= 1"):
        normalize_chunks((-1,), (4,))
    with pytest.raises(ValueError, match="dimension"):
        normalize_chunks((2,), (4, 4))


def test_grid_and_valid_shape() -> None:
    assert chunk_grid_shape((10, 7, 0), (3, 7, 2)) == (4, 1, 0)
    assert chunk_grid_shape((), ()) == ()
    assert chunk_valid_shape((3, 0), (10, 7), (3, 4)) == (1, 4)
    assert chunk_valid_shape((0, 1), (10, 7), (3, 4)) == (3, 3)
    assert list(iter_chunk_indices((2, 2))) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert list(iter_chunk_indices(())) == [()]
    assert list(iter_chunk_indices((0, 3))) == []


def test_normalize_chunk_index() -> None:
    assert normalize_chunk_index((1, 2), (2, 3)) == (1, 2)
    assert normalize_chunk_index(1, (2,)) == (1,)
    assert normalize_chunk_index((), ()) == ()
    with pytest.raises(IndexError, match="outside the chunk grid"):
        normalize_chunk_index((2, 0), (2, 3))
    with pytest.raises(IndexError, match="outside"):
        normalize_chunk_index((-1, 0), (2, 3))
    with pytest.raises(IndexError, match="dimension"):
        normalize_chunk_index((0,), (2, 3))
    with pytest.raises(TypeError):
        normalize_chunk_index((0.0, 1), (2, 3))


def test_start_stop_errors() -> None:
    shape = (10, 5)
    assert normalize_start_stop(None, None, shape) == (
        DimSelection(0, 1, 10),
        DimSelection(0, 1, 5),
    )
    with pytest.raises(ValueError, match="out of bounds"):
        normalize_start_stop((0, 0), (11, 5), shape)
    with pytest.raises(ValueError, match="out of bounds"):
        normalize_start_stop((-1, 0), None, shape)
    with pytest.raises(ValueError, match="greater than stop"):
        normalize_start_stop((5, 0), (4, 5), shape)
    with pytest.raises(ValueError, match="dimension"):
        normalize_start_stop((0,), None, shape)
    with pytest.raises(TypeError):
        normalize_start_stop((0.5, 0), None, shape)
    assert normalize_start_stop((), (), ()) == ()


def test_index_errors() -> None:
    shape = (4, 5)
    with pytest.raises(IndexError, match="too many"):
        normalize_index((0, 0, 0), shape)
    with pytest.raises(IndexError, match="out of bounds"):
        normalize_index(4, shape)
    with pytest.raises(IndexError, match="out of bounds"):
        normalize_index((0, -6), shape)
    with pytest.raises(IndexError, match="single ellipsis"):
        normalize_index((..., ...), shape)
    # (arrays, None and booleans are an Array's to take before it normalises; the message
    # names every index an Array accepts)
    for key in (np.array([1, 2]), None, True, 1.5):
        with pytest.raises(IndexError, match="unsupported index .* integer or boolean arrays"):
            normalize_index(key, shape)
    with pytest.raises(ValueError, match="zero"):
        normalize_index(slice(None, None, 0), shape)


def test_scalar_flag() -> None:
    assert normalize_index((1, 2), (4, 5))[1] is True
    assert normalize_index((1, ...), (4, 5))[1] is False
    assert normalize_index((), ())[1] is True
    assert normalize_index(..., ())[1] is False
    assert normalize_index(1, (4, 5))[1] is False


def test_covers_chunk() -> None:
    assert covers_chunk((slice(0, 4, 1), slice(0, 3, 1)), (4, 3))
    assert not covers_chunk((slice(1, 4, 1), slice(0, 3, 1)), (4, 3))
    assert not covers_chunk((slice(0, 3, 1),), (4,))
    assert not covers_chunk((slice(0, 4, 2),), (4,))
    assert covers_chunk((slice(0, 1, 5),), (1,))
    assert covers_chunk((), ())


def test_negative_step_example() -> None:
    ref = np.arange(20)
    sels, _ = normalize_index(slice(None, None, -3), ref.shape)
    np.testing.assert_array_equal(_gather(ref, (4,), sels), ref[::-3])


def test_rank0_yields_single_chunk() -> None:
    assert list(iter_chunk_selections((), ())) == [((), (), ())]


def test_zero_length_yields_nothing() -> None:
    sels = normalize_start_stop(None, None, (0, 5))
    assert list(iter_chunk_selections(sels, (2, 2))) == []


@st.composite
def _array_and_key(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...], tuple]:
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=ndim, max_size=ndim)))
    chunks = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    key = []
    for n in shape:
        if n and draw(st.booleans()):
            key.append(draw(st.integers(-n, n - 1)))
        else:
            key.append(
                slice(
                    draw(st.none() | st.integers(-12, 12)),
                    draw(st.none() | st.integers(-12, 12)),
                    draw(st.none() | st.integers(-5, 5).filter(bool)),
                )
            )
    if key and draw(st.booleans()):
        cut = draw(st.integers(0, len(key)))
        n_drop = draw(st.integers(0, len(key) - cut))
        key = key[:cut] + [...] + key[cut + n_drop :]
    return shape, chunks, tuple(key)


@given(_array_and_key())
def test_index_matches_numpy(case: tuple) -> None:
    shape, chunks, key = case
    ref = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    sels, scalar = normalize_index(key, shape)
    _, result = selection_shape(sels)
    expected = ref[key]
    got = _gather(ref, chunks, sels).reshape(result)
    assert got.shape == np.shape(expected)
    np.testing.assert_array_equal(got, expected)
    assert scalar == (not isinstance(expected, np.ndarray))


@given(st.data())
def test_start_stop_matches_numpy(data: st.DataObject) -> None:
    ndim = data.draw(st.integers(0, 4))
    shape = tuple(data.draw(st.lists(st.integers(0, 9), min_size=ndim, max_size=ndim)))
    chunks = tuple(data.draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    start = tuple(data.draw(st.integers(0, n)) for n in shape)
    stop = tuple(data.draw(st.integers(s, n)) for s, n in zip(start, shape, strict=True))
    ref = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    sels = normalize_start_stop(start, stop, shape)
    expected = ref[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))]
    np.testing.assert_array_equal(_gather(ref, chunks, sels), expected)
