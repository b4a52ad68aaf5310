"""Packaging: one version, py.typed, a license, and optional dependencies that name their extra.

A missing optional dependency is simulated by ``sys.modules[name] = None`` in a fresh
subprocess, which makes ``import name`` raise ImportError as if it were not installed.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap

import pytest

import sharedzarr as sz

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _run(code: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_one_version():
    assert importlib.metadata.version("sharedzarr") == sz.__version__
    project = _pyproject()["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    dynamic = _pyproject()["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "sharedzarr.__version__"}


def test_license_classifiers_and_typed_marker():
    project = _pyproject()["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    assert text.startswith("MIT License") and "the sharedzarr developers" in text
    assert "Typing :: Typed" in project["classifiers"]
    assert "Operating System :: POSIX :: Linux" in project["classifiers"]
    assert os.path.exists(os.path.join(os.path.dirname(sz.__file__), "py.typed"))
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["sharedzarr"]


def test_extras():
    extras = _pyproject()["project"]["optional-dependencies"]
    for name in ("zarr", "codecs", "s3", "dask", "xarray", "cli", "docs", "all"):
        assert name in extras, name
    assert extras["all"] == ["sharedzarr[zarr,codecs,s3,dask,xarray,cli]"]


def test_core_works_without_zarr_and_export_names_the_extra(tmp_path):
    r = _run(
        """
        import sys, uuid
        sys.modules["zarr"] = None
        import sharedzarr as sz
        a = sz.create((4,), chunks=(2,), table_name=f"pk-{uuid.uuid4().hex[:8]}")
        a[:] = 1
        try:
            sz.export(a, "out.zarr")
        except ImportError as e:
            assert "pip install 'sharedzarr[zarr]'" in str(e), e
            print("OK")
        finally:
            a.delete()
        """,
        tmp_path,
    )
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


@pytest.mark.parametrize("hidden", ["fsspec", "s3fs"])
def test_s3_url_without_fsspec_or_s3fs_names_the_extra(hidden, tmp_path):
    pytest.importorskip("zarr")
    r = _run(
        f"""
        import sys, uuid
        sys.modules[{hidden!r}] = None
        import sharedzarr as sz
        a = sz.create((4,), chunks=(2,), table_name=f"pk-{{uuid.uuid4().hex[:8]}}")
        try:
            sz.export(a, "s3://bucket/a.zarr")
        except ImportError as e:
            assert {hidden!r} in str(e) and "pip install 'sharedzarr[s3]'" in str(e), e
            print("OK")
        finally:
            a.delete()
        """,
        tmp_path,
    )
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


def test_zarr_store_without_zarr_names_the_extra(tmp_path):
    r = _run(
        """
        import sys
        sys.modules["zarr"] = None
        try:
            import sharedzarr.zarr_store
        except ImportError as e:
            assert "pip install 'sharedzarr[zarr]'" in str(e), e
            print("OK")
        """,
        tmp_path,
    )
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


def test_cli_without_optional_dependencies(tmp_path):
    r = _run(
        """
        import sys
        for m in ("zarr", "tqdm", "fsspec", "numcodecs"):
            sys.modules[m] = None
        from sharedzarr import cli
        assert cli.main(["ls", "--json", "pk-no-such-*"]) == 0
        """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_import_works_on_another_machine_and_shm_says_why_not(tmp_path):
    r = _run(
        """
        import os, uuid
        real = os.uname()
        os.uname = lambda: os.uname_result(real[:4] + ("aarch64",))
        import sharedzarr as sz
        m = sz.create((4,), chunks=(2,), storage="memory")  # no shared memory: works
        m[:] = 1
        try:
            sz.create((4,), chunks=(2,), table_name=f"pk-{uuid.uuid4().hex[:8]}")
        except (RuntimeError, OSError) as e:
            assert "aarch64" in str(e) and "x86-64" in str(e), e
            print("OK")
        """,
        tmp_path,
    )
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
