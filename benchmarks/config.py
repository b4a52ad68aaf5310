"""Benchmark sizes and the two datasets.

Three sizes:

``full``
    Dataset A is float64 4096x4096 (128 MiB) in 256x256 chunks (512 KiB), dataset B is float64
    1024x1024 (8 MiB) in 32x32 chunks (8 KiB), dataset W is float64 512x512 (2 MiB) in 128x128
    chunks (128 KiB: the fixed cost of a write call); 1000 random windows; a 1,000,000-entry
    table; the data loader reads a 65536x192 float64 array (100 MB, 1.5 KiB rows) in chunks of
    256 rows (384 KiB); 5 timed repetitions after one warm-up.
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
        Short name used in workload labels (``"a"``, ``"b"``, ``"w"`` or ``"l"``).
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
    w : Dataset
        The small array of the write workloads (h, i): its whole-array rewrite shows the fixed
        cost of a write call; it is also the third chunk size of the two-writer workload (i).
    loader : Dataset
        The 2-d array of the data-loader workload (l): rows of a dataset, chunks of whole rows.
    batch_rows : int
        Rows per random batch in workload (l).
    loader_batches, loader_rows : int
        Batches, and single rows, per reader process per repetition in workload (l).
    writer_seconds : float
        How long each writer writes per repetition in workload (i).
    handoffs : int
        Writer-lock hand-offs per repetition in workload (j).
    append_frames : int
        Frames appended per repetition in workload (k).
    frame : tuple of int
        Shape of one appended float64 frame in workload (k).
    rewrites : int
        Full rewrites before the memory measurement ``e.mem_*_rewrites``.
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
    w: Dataset = field(default_factory=lambda: _FULL_W)
    loader: Dataset = field(default_factory=lambda: _FULL_L)
    batch_rows: int = 64
    loader_batches: int = 400
    loader_rows: int = 4000
    writer_seconds: float = 0.3
    handoffs: int = 400
    append_frames: int = 200
    frame: tuple[int, int, int] = (1, 160, 120)
    rewrites: int = 100
    seed: int = 20240601
    notes: list[str] = field(default_factory=list)

    @property
    def window(self) -> int:
        """Side of the square random windows (one chunk of dataset A)."""
        return self.a.chunks[0]


_FULL_A = Dataset("a", (4096, 4096), (256, 256))
_FULL_B = Dataset("b", (1024, 1024), (32, 32))
_FULL_W = Dataset("w", (512, 512), (128, 128))
_FULL_L = Dataset("l", (65536, 192), (256, 192))

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
        loader_batches=200,
        loader_rows=2000,
        writer_seconds=0.2,
        handoffs=250,
        append_frames=100,
        rewrites=100,
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
        w=Dataset("w", (64, 64), (16, 16)),
        loader=Dataset("l", (2048, 32), (64, 32)),
        batch_rows=16,
        loader_batches=10,
        loader_rows=50,
        writer_seconds=0.01,
        handoffs=10,
        append_frames=5,
        frame=(1, 8, 8),
        rewrites=3,
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
