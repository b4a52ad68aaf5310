"""Functions that spawned worker processes run for the dtype and chunk-key tests."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

import sharedzarr as sz


def read_all(name: str) -> np.ndarray:
    """Open an array by name and return all of it."""
    with sz.open(name, mode="r") as a:
        return a[...]


def write(name: str, key: Any, value: Any) -> None:
    """Open an array by name and write ``value`` at ``key``."""
    with sz.open(name) as a:
        a[key] = value


def zarr_read_all(name: str) -> np.ndarray:
    """Read a whole root array with zarr-python through SharedMemoryStore."""
    import zarr

    from sharedzarr.zarr_store import SharedMemoryStore

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.open_array(store=SharedMemoryStore(name, read_only=True))[...]


def dtype_of(name: str) -> str:
    """The dtype of an array opened by name, as numpy spells it."""
    with sz.open(name, mode="r") as a:
        return str(a.dtype)
