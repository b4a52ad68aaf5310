"""The platform guard: import works anywhere; creating or attaching a table needs x86-64."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from sharedzarr._platform import UnsupportedPlatformError, check_platform
from sharedzarr._table import Table, table_segments
from sharedzarr.errors import SharedZarrError


@pytest.fixture
def arm(monkeypatch):
    real = os.uname()
    monkeypatch.setattr(os, "uname", lambda: os.uname_result((*real[:4], "aarch64")))


def test_error_is_typed():
    assert issubclass(UnsupportedPlatformError, SharedZarrError)
    assert issubclass(UnsupportedPlatformError, RuntimeError)


def test_this_machine_passes():
    check_platform()


def test_create_refuses_another_cpu(arm):
    name = f"x-{uuid.uuid4().hex[:8]}"
    with pytest.raises(UnsupportedPlatformError, match="aarch64/little-endian"):
        Table.create(name)
    assert table_segments(name) == []


def test_create_refuses_big_endian(monkeypatch):
    monkeypatch.setattr(sys, "byteorder", "big")
    with pytest.raises(UnsupportedPlatformError, match="x86-64 \\(TSO\\)"):
        Table.create(f"x-{uuid.uuid4().hex[:8]}")


def test_attach_refuses_another_cpu(monkeypatch):
    t = Table.create(f"x-{uuid.uuid4().hex[:8]}")
    try:
        real = os.uname()
        monkeypatch.setattr(os, "uname", lambda: os.uname_result((*real[:4], "ppc64le")))
        with pytest.raises(UnsupportedPlatformError, match="ppc64le"):
            Table.attach(t.name)
        monkeypatch.undo()
        Table.attach(t.name).close()
    finally:
        t.delete_table()


def test_import_works_on_another_cpu():
    code = (
        "import os, platform, sys, uuid\n"  # uuid caches platform.uname() first
        "real = os.uname()\n"
        "os.uname = lambda: os.uname_result((*real[:4], 'aarch64'))\n"
        "import sharedzarr, sharedzarr._table\n"
        "from sharedzarr._platform import UnsupportedPlatformError\n"
        "try:\n"
        "    sharedzarr._table.Table.create('x-never-made')\n"
        "except UnsupportedPlatformError as e:\n"
        "    print('refused:', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "refused:" in out.stdout and "aarch64" in out.stdout, out.stdout + out.stderr
