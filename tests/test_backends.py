"""The backend contract (sharedzarr.testing.BackendTests) and the storage registry."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

import sharedzarr.storage as storage
from sharedzarr.errors import TableExistsError
from sharedzarr.storage import MemoryBackend, SharedMemoryBackend
from sharedzarr.storage.base import Backend
from sharedzarr.storage.memory import delete_store, list_stores
from sharedzarr.testing import BackendTests


class TestMemoryBackend(BackendTests):
    backend_cls = MemoryBackend


class TestSharedMemoryBackend(BackendTests):
    backend_cls = SharedMemoryBackend


# -- memory backend specifics ------------------------------------------------------------------


def test_memory_validates_options() -> None:
    with pytest.raises(ValueError, match="access"):
        MemoryBackend.create(None, access="everyone")
    with pytest.raises(TypeError, match="unknown option"):
        MemoryBackend.create(None, bogus=1)
    with pytest.raises(ValueError, match="invalid storage name"):
        MemoryBackend.create("has space")


def test_memory_store_registry_helpers() -> None:
    b = MemoryBackend.create("mem-helpers-test")
    assert "mem-helpers-test" in list_stores()
    assert delete_store("mem-helpers-test") is True
    assert delete_store("mem-helpers-test") is False
    assert not MemoryBackend.exists("mem-helpers-test")
    b.close()


def test_memory_taken_name_message() -> None:
    b = MemoryBackend.create("mem-taken-test")
    try:
        with pytest.raises(TableExistsError, match="overwrite=True"):
            MemoryBackend.create("mem-taken-test")
    finally:
        b.delete()


# -- registry ------------------------------------------------------------------------------


class _Dummy(MemoryBackend):
    """A test backend."""

    id: ClassVar[str] = "dummy-test"


class _Dummy2(MemoryBackend):
    """Another test backend under the same id."""

    id: ClassVar[str] = "dummy-test"


@pytest.fixture
def clean_registry() -> Any:
    yield
    for backend_id in ("dummy-test",):
        if backend_id in storage.list():
            storage.unregister(backend_id)


def test_builtins_registered() -> None:
    ids = storage.list()
    assert "memory" in ids
    assert storage.get("memory") is MemoryBackend
    assert "shm" in ids
    assert storage.get("shm") is storage.SharedMemoryBackend


def test_register_same_class_is_idempotent(clean_registry: None) -> None:
    storage.register(MemoryBackend)
    storage.register(MemoryBackend)
    storage.register(_Dummy)
    storage.register(_Dummy)
    assert storage.get("dummy-test") is _Dummy


def test_register_other_class_under_taken_id(clean_registry: None) -> None:
    storage.register(_Dummy)
    with pytest.raises(ValueError, match="force=True"):
        storage.register(_Dummy2)
    storage.register(_Dummy2, force=True)
    assert storage.get("dummy-test") is _Dummy2


def test_builtins_cannot_be_replaced_or_unregistered() -> None:
    class Fake(MemoryBackend):
        id: ClassVar[str] = "memory"

    with pytest.raises(ValueError, match="built in"):
        storage.register(Fake, force=True)
    with pytest.raises(ValueError, match="built in"):
        storage.unregister("memory")
    with pytest.raises(ValueError, match="built in"):
        storage.unregister("shm")
    assert storage.get("memory") is MemoryBackend


def test_unknown_id_lists_registered() -> None:
    with pytest.raises(ValueError, match="registered storages are .*memory"):
        storage.get("nope")
    with pytest.raises(ValueError, match="unknown storage"):
        storage.unregister("nope")


def test_register_rejects_non_backends() -> None:
    with pytest.raises(TypeError, match="subclass"):
        storage.register(dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="subclass"):
        storage.register(None)  # type: ignore[arg-type]

    class NoId(MemoryBackend):
        id: ClassVar[str] = ""

    with pytest.raises(TypeError, match="`id`"):
        storage.register(NoId)


def test_info(clean_registry: None) -> None:
    info = storage.info("memory")
    assert info["id"] == "memory"
    assert info["builtin"] is True
    assert info["class"] == "sharedzarr.storage.memory.MemoryBackend"
    storage.register(_Dummy)
    d = storage.info("dummy-test")
    assert d["builtin"] is False
    assert d["description"] == "A test backend."


def test_unregister(clean_registry: None) -> None:
    storage.register(_Dummy)
    storage.unregister("dummy-test")
    assert "dummy-test" not in storage.list()
    with pytest.raises(ValueError):
        storage.get("dummy-test")


def test_resolve_accepts_class() -> None:
    assert storage.resolve(MemoryBackend) is MemoryBackend
    assert storage.resolve("memory") is MemoryBackend
    with pytest.raises(TypeError):
        storage.resolve(int)  # type: ignore[arg-type]


def test_backend_is_abstract() -> None:
    with pytest.raises(TypeError):
        Backend()  # type: ignore[abstract]
