"""An xarray Dataset in shared memory: to_zarr, open_zarr from anywhere, and out to disk.

``ds.to_zarr(SharedMemoryStore...)`` puts a Dataset (variables, coordinates,
attributes) in one table; any process opens it with ``xr.open_zarr`` and the
table name.  The same code writes it to a directory (or an object store) when
it has to leave the machine.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import xarray as xr

import sharedzarr as sz
from sharedzarr.zarr_store import SharedMemoryStore

NAME = "demo_xarray"


def main() -> None:
    """Write, reopen, compute, export, clean up."""
    rng = np.random.default_rng(1)
    ds = xr.Dataset(
        {
            "temperature": (
                ("time", "station"),
                15 + 5 * rng.standard_normal((365, 8)),
                {"units": "degC"},
            )
        },
        coords={"time": np.arange(365), "station": np.arange(100, 108)},
        attrs={"source": "sharedzarr example"},
    )
    store = SharedMemoryStore.create(NAME, overwrite=True)
    try:
        ds.chunk({"time": 73}).to_zarr(store, zarr_format=3, consolidated=False)
        keys = len(store.table)
        print(
            f"to_zarr: {list(ds.data_vars)} + coords {list(ds.coords)} -> table "
            f"{NAME!r} ({keys} objects)"
        )

        back = xr.open_zarr(SharedMemoryStore(NAME), consolidated=False)  # by name, anywhere
        xr.testing.assert_identical(back.load(), ds)
        warmest = back["temperature"].mean("time").idxmax("station").item()
        print(f"open_zarr: identical Dataset, attrs {back.attrs}; warmest station {warmest}")

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "ds.zarr")
            back.to_zarr(path, zarr_format=3, consolidated=False)  # or "s3://bucket/ds.zarr"
            xr.testing.assert_identical(xr.open_zarr(path, consolidated=False).load(), ds)
            print(
                f"to_zarr(directory): the same Dataset on disk, "
                f"{sum(len(f) for _, _, f in os.walk(path))} files"
            )
    finally:
        store.delete_table()
    assert not sz.storage.shm.table_exists(NAME)
    print("done: table deleted, /dev/shm clean")


if __name__ == "__main__":
    main()
