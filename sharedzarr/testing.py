"""Contract tests for storage backends (in the style of zarr-python's ``StoreTests``).

Subclass :class:`BackendTests` in a pytest module and set ``backend_cls``; pytest collects
every ``test_*`` method and runs it against your backend::

    from sharedzarr.storage import MemoryBackend
    from sharedzarr.testing import BackendTests

    class TestMemoryBackend(BackendTests):
        backend_cls = MemoryBackend

Override :meth:`BackendTests.create_options` to pass backend-specific options, and
:meth:`BackendTests.unique_name` if your backend restricts names.  Every backend created through
the ``backend`` fixture or :meth:`BackendTests.make` is deleted after the test.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from .errors import AccessDeniedError, TableExistsError, TableNotFoundError
from .storage.base import Backend


def _bytes(value: bytes | memoryview | None) -> bytes:
    """``bytes(value)``, failing the test with a clear message when the value is absent."""
    assert value is not None, "expected a stored value, got None (absent)"
    return bytes(value)


__all__ = ["BackendTests"]

_seq = itertools.count()


class BackendTests:
    """The :class:`~sharedzarr.storage.base.Backend` protocol, as pytest tests.

    Attributes
    ----------
    backend_cls : type
        The backend class under test (set in the subclass).
    """

    backend_cls: ClassVar[type[Backend]]

    # -- hooks ------------------------------------------------------------------------------

    def create_options(self) -> dict[str, Any]:
        """Extra keyword options for ``backend_cls.create``; override as needed.

        Returns
        -------
        dict
        """
        return {}

    def unique_name(self) -> str:
        """Return a fresh storage name (letters, digits, ``_.-``; at most 64 characters).

        Returns
        -------
        str
        """
        return f"bt-{os.getpid()}-{next(_seq)}-{uuid.uuid4().hex[:8]}"

    # -- fixtures ---------------------------------------------------------------------------

    @pytest.fixture
    def made(self) -> Iterator[list[Backend]]:
        """Collects backends created by :meth:`make`; deletes them after the test."""
        backends: list[Backend] = []
        yield backends
        for b in backends:
            name = b.name
            try:
                if self.backend_cls.exists(name):
                    handle = self.backend_cls.open(name)
                    handle.delete()
            except (TableNotFoundError, ValueError):
                pass
            try:
                b.close()
            except Exception:  # noqa: BLE001 - cleanup is best effort
                pass

    def make(self, made: list[Backend], name: str | None = None, **kw: Any) -> Backend:
        """Create a backend that is deleted after the test.

        Parameters
        ----------
        made : list
            The ``made`` fixture.
        name : str, optional
            Default :meth:`unique_name`.
        **kw
            Passed to ``create``.

        Returns
        -------
        Backend
        """
        b = self.backend_cls.create(name or self.unique_name(), **{**self.create_options(), **kw})
        made.append(b)
        return b

    @pytest.fixture
    def backend(self, made: list[Backend]) -> Backend:
        """A fresh, empty read-write backend."""
        return self.make(made)

    # -- class attributes -------------------------------------------------------------------

    def test_is_backend_subclass(self) -> None:
        assert issubclass(self.backend_cls, Backend)
        assert isinstance(self.backend_cls.id, str) and self.backend_cls.id

    # -- create / open / exists -------------------------------------------------------------

    def test_create_is_empty(self, backend: Backend) -> None:
        assert isinstance(backend.name, str) and backend.name
        assert backend.readonly is False
        assert backend.list_chunks() == []
        assert backend.read_metadata() is None
        assert backend.read_chunk((0,)) is None

    def test_exists(self, backend: Backend) -> None:
        assert self.backend_cls.exists(backend.name)
        assert not self.backend_cls.exists(self.unique_name())

    def test_create_taken_name_raises(self, backend: Backend, made: list[Backend]) -> None:
        with pytest.raises(TableExistsError):
            self.make(made, backend.name)

    def test_create_overwrite_replaces(self, backend: Backend, made: list[Backend]) -> None:
        backend.write_chunk((0,), b"old")
        backend.write_metadata(b"{}")
        fresh = self.make(made, backend.name, overwrite=True)
        assert fresh.list_chunks() == []
        assert fresh.read_metadata() is None
        assert fresh.read_chunk((0,)) is None

    def test_create_without_name_picks_unique(self, made: list[Backend]) -> None:
        a = self.backend_cls.create(None, **self.create_options())
        made.append(a)
        b = self.backend_cls.create(None, **self.create_options())
        made.append(b)
        assert a.name != b.name
        assert self.backend_cls.exists(a.name)

    def test_create_rejects_unknown_table_type(self, made: list[Backend]) -> None:
        with pytest.raises(ValueError):
            self.make(made, table_type="not-a-table-type")

    def test_open_missing_raises_table_not_found(self) -> None:
        with pytest.raises(TableNotFoundError) as info:
            self.backend_cls.open(self.unique_name())
        assert isinstance(info.value, FileNotFoundError)

    def test_open_sees_same_data(self, backend: Backend) -> None:
        backend.write_chunk((1, 2), b"abc")
        backend.write_metadata(b'{"a": 1}')
        other = self.backend_cls.open(backend.name)
        try:
            assert _bytes(other.read_chunk((1, 2))) == b"abc"
            assert _bytes(other.read_metadata()) == b'{"a": 1}'
            other.write_chunk((0, 0), b"xyz")
            assert _bytes(backend.read_chunk((0, 0))) == b"xyz"
        finally:
            other.close()

    def test_open_bad_mode(self, backend: Backend) -> None:
        with pytest.raises(ValueError):
            self.backend_cls.open(backend.name, mode="w-")

    # -- chunks -----------------------------------------------------------------------------

    def test_write_read_chunk(self, backend: Backend) -> None:
        backend.write_chunk((0, 1), b"\x00\x01\x02")
        assert _bytes(backend.read_chunk((0, 1))) == b"\x00\x01\x02"
        assert backend.read_chunk((1, 0)) is None

    def test_rank0_chunk_index(self, backend: Backend) -> None:
        backend.write_chunk((), b"12345678")
        assert _bytes(backend.read_chunk(())) == b"12345678"
        assert backend.list_chunks() == [()]

    def test_overwrite_chunk(self, backend: Backend) -> None:
        backend.write_chunk((3,), b"first")
        backend.write_chunk((3,), b"second value")
        assert _bytes(backend.read_chunk((3,))) == b"second value"
        assert backend.list_chunks() == [(3,)]

    def test_write_accepts_bytes_likes_and_copies(self, backend: Backend) -> None:
        buf = bytearray(b"abcd")
        backend.write_chunk((0,), buf)
        buf[0] = ord("z")
        assert _bytes(backend.read_chunk((0,))) == b"abcd"
        backend.write_chunk((1,), memoryview(b"efgh"))
        assert _bytes(backend.read_chunk((1,))) == b"efgh"
        np = pytest.importorskip("numpy")
        arr = np.arange(4, dtype="<f8")
        backend.write_chunk((2,), memoryview(arr).cast("B"))
        arr[:] = 0
        assert _bytes(backend.read_chunk((2,))) == np.arange(4, dtype="<f8").tobytes()

    def test_empty_chunk_value(self, backend: Backend) -> None:
        backend.write_chunk((0,), b"")
        data = backend.read_chunk((0,))
        assert data is not None and bytes(data) == b""

    def test_large_chunk(self, backend: Backend) -> None:
        data = os.urandom(3 * 1024 * 1024 + 7)
        backend.write_chunk((0, 0, 0), data)
        assert _bytes(backend.read_chunk((0, 0, 0))) == data

    def test_read_chunk_no_copy_is_readonly_view(self, backend: Backend) -> None:
        backend.write_chunk((0,), b"immutable")
        view = backend.read_chunk((0,), copy=False)
        assert _bytes(view) == b"immutable"
        assert view is not None
        mv = memoryview(view)
        if isinstance(view, memoryview):
            assert mv.readonly

    def test_no_copy_view_survives_overwrite(self, backend: Backend) -> None:
        backend.write_chunk((0,), b"old bytes")
        view = backend.read_chunk((0,), copy=False)
        backend.write_chunk((0,), b"new bytes!")
        assert _bytes(view) == b"old bytes"  # records are immutable: the old value is intact
        assert _bytes(backend.read_chunk((0,))) == b"new bytes!"

    def test_delete_chunk(self, backend: Backend) -> None:
        backend.write_chunk((0,), b"x")
        backend.write_chunk((1,), b"y")
        backend.delete_chunk((0,))
        assert backend.read_chunk((0,)) is None
        assert backend.list_chunks() == [(1,)]
        backend.delete_chunk((0,))  # absent: no error
        backend.delete_chunk((99,))

    def test_list_chunks(self, backend: Backend) -> None:
        keys = [(i, j) for i in range(3) for j in range(4)]
        for k in keys:
            backend.write_chunk(k, bytes([k[0], k[1]]))
        listed = backend.list_chunks()
        assert sorted(listed) == keys
        assert all(isinstance(k, tuple) and all(isinstance(i, int) for i in k) for k in listed)

    def test_many_chunks(self, backend: Backend) -> None:
        n = 2000
        for i in range(n):
            backend.write_chunk((i,), i.to_bytes(4, "little"))
        assert len(backend.list_chunks()) == n
        assert _bytes(backend.read_chunk((1234,))) == (1234).to_bytes(4, "little")

    # -- metadata ---------------------------------------------------------------------------

    def test_metadata_roundtrip(self, backend: Backend) -> None:
        assert backend.read_metadata() is None
        backend.write_metadata(b'{"zarr_format": 3}')
        assert _bytes(backend.read_metadata()) == b'{"zarr_format": 3}'
        backend.write_metadata(b'{"zarr_format": 3, "x": 1}')
        assert _bytes(backend.read_metadata()) == b'{"zarr_format": 3, "x": 1}'

    def test_metadata_is_not_a_chunk(self, backend: Backend) -> None:
        backend.write_metadata(b"{}")
        assert backend.list_chunks() == []

    # -- counters and locks -----------------------------------------------------------------

    def test_write_count_increases(self, backend: Backend) -> None:
        c0 = backend.write_count()
        backend.write_chunk((0,), b"a")
        c1 = backend.write_count()
        assert c1 > c0
        backend.write_metadata(b"{}")
        c2 = backend.write_count()
        assert c2 > c1
        backend.delete_chunk((0,))
        assert backend.write_count() > c2
        c3 = backend.write_count()
        backend.read_chunk((0,))
        backend.list_chunks()
        assert backend.write_count() == c3

    def test_writer_is_reentrant(self, backend: Backend) -> None:
        with backend.writer(timeout=5):
            with backend.writer(timeout=5):
                backend.write_chunk((0,), b"in lock")
        assert _bytes(backend.read_chunk((0,))) == b"in lock"

    def test_writer_excludes_other_threads(self, backend: Backend) -> None:
        events: list[str] = []

        def other() -> None:
            handle = self.backend_cls.open(backend.name)
            try:
                with handle.writer(timeout=10):
                    events.append("other")
            finally:
                handle.close()

        with backend.writer(timeout=5):
            t = threading.Thread(target=other)
            t.start()
            time.sleep(0.2)
            events.append("first")
        t.join(10)
        assert not t.is_alive()
        assert events == ["first", "other"]

    def test_concurrent_read_modify_write(self, backend: Backend) -> None:
        backend.write_chunk((0,), (0).to_bytes(8, "little"))
        n_threads, n_incr = 4, 50

        def worker() -> None:
            handle = self.backend_cls.open(backend.name)
            try:
                for _ in range(n_incr):
                    with handle.writer(timeout=30):
                        v = int.from_bytes(_bytes(handle.read_chunk((0,))), "little")
                        handle.write_chunk((0,), (v + 1).to_bytes(8, "little"))
            finally:
                handle.close()

        threads = [threading.Thread(target=worker) for _ in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        value = int.from_bytes(_bytes(backend.read_chunk((0,))), "little")
        assert value == n_threads * n_incr

    # -- read-only handles ------------------------------------------------------------------

    def test_readonly_handle(self, backend: Backend) -> None:
        backend.write_chunk((0,), b"data")
        backend.write_metadata(b"{}")
        ro = self.backend_cls.open(backend.name, mode="r")
        try:
            assert ro.readonly is True
            assert _bytes(ro.read_chunk((0,))) == b"data"
            assert _bytes(ro.read_metadata()) == b"{}"
            assert ro.list_chunks() == [(0,)]
            with pytest.raises(AccessDeniedError):
                ro.write_chunk((1,), b"no")
            with pytest.raises(AccessDeniedError):
                ro.delete_chunk((0,))
            with pytest.raises(AccessDeniedError):
                ro.write_metadata(b"{}")
            assert isinstance(AccessDeniedError("x"), PermissionError)
        finally:
            ro.close()
        assert backend.list_chunks() == [(0,)]

    # -- close / delete ---------------------------------------------------------------------

    def test_close_is_idempotent_and_keeps_data(self, backend: Backend) -> None:
        backend.write_chunk((0,), b"kept")
        other = self.backend_cls.open(backend.name)
        other.close()
        other.close()
        assert _bytes(backend.read_chunk((0,))) == b"kept"
        assert self.backend_cls.exists(backend.name)

    def test_delete(self, made: list[Backend]) -> None:
        b = self.make(made)
        name = b.name
        b.write_chunk((0,), b"x")
        other = self.backend_cls.open(name)
        b.delete()
        assert not self.backend_cls.exists(name)
        with pytest.raises(TableNotFoundError):
            self.backend_cls.open(name)
        with pytest.raises((TableNotFoundError, ValueError)):
            other.read_chunk((0,))
        other.close()

    def test_context_manager_closes(self, backend: Backend) -> None:
        with self.backend_cls.open(backend.name) as other:
            other.write_chunk((5,), b"ctx")
        assert _bytes(backend.read_chunk((5,))) == b"ctx"
