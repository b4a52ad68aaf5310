"""zarr-python and sharedzarr on the same shared memory, and the way out to a directory.

1. An array made by ``sz.create`` opens with ``zarr.open_array`` through
   ``SharedMemoryStore``: same values, dtype, fill value and attributes.
2. zarr-python writes a compressed array into a new table; ``sz.open`` reads it.
3. A zarr group holding several arrays lives in one table.
4. ``sz.export`` writes a standard Zarr v3 directory, ``sz.load`` copies it back.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import zarr

import sharedzarr as sz
from sharedzarr.zarr_store import SharedMemoryStore

NAMES = ("demo_interop_a", "demo_interop_b", "demo_interop_group", "demo_interop_back")


def main() -> None:
    """Run the four steps, then delete every table this example made."""
    try:
        # 1. sharedzarr -> zarr-python
        a = sz.create(
            (1000, 500),
            (250, 100),
            "float32",
            table_name=NAMES[0],
            overwrite=True,
            fill_value=-1,
            attributes={"units": "degC"},
        )
        a[:600] = np.arange(600 * 500, dtype="float32").reshape(600, 500)
        z = zarr.open_array(store=SharedMemoryStore(NAMES[0]), mode="r")
        assert np.array_equal(z[:], a[:]) and z.fill_value == -1
        print(
            f"1. sz.create -> zarr.open_array: {z.shape} {z.dtype}, fill {z.fill_value}, "
            f"attrs {dict(z.attrs)}, values equal"
        )

        # 2. zarr-python -> sharedzarr (zstd-compressed chunks in shared memory)
        store = SharedMemoryStore.create(NAMES[1], overwrite=True)
        zb = zarr.create_array(
            store,
            shape=(300, 300),
            chunks=(100, 100),
            dtype="int64",
            compressors=zarr.codecs.ZstdCodec(level=3),
        )
        zb[:] = np.arange(90_000).reshape(300, 300)
        b = sz.open(NAMES[1])
        assert np.array_equal(b[:], zb[:])
        print(
            f"2. zarr.create_array -> sz.open: {b.shape} {b.dtype}, codecs "
            f"{[c['name'] for c in b.compressor]}, values equal"
        )

        # 3. a group with several arrays in one table
        g = zarr.open_group(store=SharedMemoryStore.create(NAMES[2], overwrite=True), mode="w")
        g.create_array("temps", shape=(24,), chunks=(6,), dtype="float64")[:] = np.linspace(
            0, 1, 24
        )
        g.create_group("meta").create_array("ids", shape=(5,), chunks=(5,), dtype="int32")[:] = 7
        g2 = zarr.open_group(store=SharedMemoryStore(NAMES[2]), mode="r")
        members = sorted(name for name, _ in g2.members(max_depth=None))
        print(f"3. one table holds the group members {members}")

        # 4. the way out, and back in
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "a.zarr")
            exported = sz.export(NAMES[0], path, compressor="zstd")
            nfiles = sum(len(files) for _, _, files in os.walk(path))
            back = sz.load(path, NAMES[3], overwrite=True)
            assert np.array_equal(back[:], a[:]) and np.array_equal(exported[:], a[:])
            print(
                f"4. sz.export -> {nfiles} files in a Zarr v3 directory "
                f"(zstd); sz.load -> table {back.name!r}, values equal"
            )
    finally:
        for name in NAMES:
            if sz.storage.shm.table_exists(name):
                sz.storage.shm.delete_table(name)
    print("done: tables deleted, /dev/shm clean")


if __name__ == "__main__":
    main()
