"""Benchmark sizes and the two datasets.

Three sizes:

``full``
    The sizes of the issue: dataset A is float64 4096x4096 (128 MiB) in 256x256 chunks (512 KiB),
    dataset B is float64 1024x1024 (8 MiB) in 32x32 chunks (8 KiB); 1000 random windows; a
    1,000,000-entry table; 5 timed repetitions after one warm-up.
``quick``
    The same arrays with fewer repetitions, windows and table entries, for iterating on the code.
    Its numbers are indicative only (3 repetitions).
``tiny``
    Small arrays for the smoke test: a few seconds, numbers meaningless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["SIZES", "BenchConfig", "Dataset", "get_config"]


@dataclass(frozen=True)
class Dataset:
    """A 2-d float64 array and its chunking.

    Parameters
    ----------
    key : str
        Short name used in workload labels (``"a"`` or ``"b"``).
    shape : tuple of int
        Array shape.
    chunks : tuple of int
        Chunk shape; must divide the shape (all datasets here have no edge chunks).
    dtype : str
        numpy dtype name.
    """

    key: str
    shape: tuple[int, int]
    chunks: tuple[int, int]
    dtype: str = "float64"

    def __post_init__(self) -> None:
        for n, c in zip(self.shape, self.chunks, strict=True):
            if c <= 0 or n % c:
                raise ValueError(f"chunks {self.chunks} must divide shape {self.shape}")

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return 8 if self.dtype == "float64" else int(self.dtype[-1])

    @property
    def nbytes(self) -> int:
        """Bytes of data in the whole array."""
        return math.prod(self.shape) * self.itemsize

    @property
    def chunk_nbytes(self) -> int:
        """Bytes of data in one chunk."""
        return math.prod(self.chunks) * self.itemsize

    @property
    def grid(self) -> tuple[int, int]:
        """Number of chunks along each axis."""
        return (self.shape[0] // self.chunks[0], self.shape[1] // self.chunks[1])

    @property
    def nchunks(self) -> int:
        """Total number of chunks."""
        return self.grid[0] * self.grid[1]

    def chunk_slices(self, idx: tuple[int, int]) -> tuple[slice, slice]:
        """Return the slices of the array covered by chunk ``idx``.

        Parameters
        ----------
        idx : tuple of int
            Chunk grid index.

        Returns
        -------
        tuple of slice
        """
        (i, j), (ci, cj) = idx, self.chunks
        return (slice(i * ci, (i + 1) * ci), slice(j * cj, (j + 1) * cj))

    def chunk_label(self) -> str:
        """Human-readable chunk size, e.g. ``"512 KiB"``."""
        kib = self.chunk_nbytes / 1024
        return f"{kib:g} KiB" if kib < 1024 else f"{kib / 1024:g} MiB"


@dataclass(frozen=True)
class BenchConfig:
    """Everything that depends on the chosen size.

    Parameters
    ----------
    name : str
        ``"full"``, ``"quick"`` or ``"tiny"``.
    a, b : Dataset
        Dataset A (large chunks, workloads a, c, d, e) and B (small chunks, workloads b, e).
    reps : int
        Timed repetitions per measurement (after ``warmup`` untimed ones).
    warmup : int
        Untimed repetitions before the timed ones.
    n_windows, n_windows_slow : int
        Random windows per repetition for fast peers and for slow peers (zarr, Manager).
    chunk_ops, chunk_ops_slow : int
        Per-chunk reads or writes per repetition on dataset B.
    table_entries : int
        Entries in the table of workload (f).
    lookups, lookups_slow : int
        Lookups per repetition in workload (f).
    concurrent_reads : int
        Whole-array reads per reader per repetition in workload (c).
    """

    name: str
    a: Dataset
    b: Dataset
    reps: int
    warmup: int
    n_windows: int
    n_windows_slow: int
    chunk_ops: int
    chunk_ops_slow: int
    table_entries: int
    lookups: int
    lookups_slow: int
    concurrent_reads: int
    seed: int = 20240601
    notes: list[str] = field(default_factory=list)

    @property
    def window(self) -> int:
        """Side of the square random windows (one chunk of dataset A)."""
        return self.a.chunks[0]


_FULL_A = Dataset("a", (4096, 4096), (256, 256))
_FULL_B = Dataset("b", (1024, 1024), (32, 32))

SIZES: dict[str, BenchConfig] = {
    "full": BenchConfig(
        name="full",
        a=_FULL_A,
        b=_FULL_B,
        reps=5,
        warmup=1,
        n_windows=1000,
        n_windows_slow=200,
        chunk_ops=1024,
        chunk_ops_slow=256,
        table_entries=1_000_000,
        lookups=20_000,
        lookups_slow=2_000,
        concurrent_reads=3,
    ),
    "quick": BenchConfig(
        name="quick",
        a=_FULL_A,
        b=_FULL_B,
        reps=3,
        warmup=1,
        n_windows=300,
        n_windows_slow=50,
        chunk_ops=1024,
        chunk_ops_slow=128,
        table_entries=100_000,
        lookups=5_000,
        lookups_slow=500,
        concurrent_reads=2,
        notes=["quick run: 3 repetitions and a 100,000-entry table; indicative only"],
    ),
    "tiny": BenchConfig(
        name="tiny",
        a=Dataset("a", (256, 256), (32, 32)),
        b=Dataset("b", (64, 64), (8, 8)),
        reps=2,
        warmup=1,
        n_windows=20,
        n_windows_slow=5,
        chunk_ops=64,
        chunk_ops_slow=16,
        table_entries=2_000,
        lookups=200,
        lookups_slow=50,
        concurrent_reads=1,
        notes=["tiny smoke run: the numbers are meaningless"],
    ),
}


def get_config(size: str) -> BenchConfig:
    """Return the configuration for ``size``.

    Parameters
    ----------
    size : str
        One of ``"full"``, ``"quick"``, ``"tiny"``.

    Returns
    -------
    BenchConfig

    Raises
    ------
    ValueError
        If ``size`` is unknown.
    """
    try:
        return SIZES[size]
    except KeyError:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}") from None
