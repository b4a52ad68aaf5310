"""Storage backends and their registry (ExZarr's ``ExZarr.Storage.Registry``).

``sharedzarr.create(..., storage="shm")`` looks the id up here.  Built in:

- ``"shm"``: :class:`SharedMemoryBackend`, named shared-memory tables (ExZarr's ETS backend);
- ``"memory"``: :class:`MemoryBackend`, an in-process dict (ExZarr's Memory backend).

Registering a class again is a no-op (``register(SharedMemoryBackend)`` is idempotent, as in the
seed example); registering a different class under a taken id raises unless ``force=True``;
built-ins cannot be unregistered.  See :class:`sharedzarr.storage.base.Backend` for the protocol
and :class:`sharedzarr.testing.BackendTests` for its contract tests.
"""

from __future__ import annotations

import builtins
import threading
from typing import Any

from .base import Backend
from .memory import MemoryBackend
from .shm import SharedMemoryBackend

__all__ = [
    "Backend",
    "MemoryBackend",
    "SharedMemoryBackend",
    "get",
    "info",
    "list",
    "register",
    "resolve",
    "unregister",
]

_BUILTIN_IDS = frozenset({"shm", "memory"})
_registry: dict[str, type[Backend]] = {}
_lock = threading.RLock()


def _check_class(backend_cls: Any) -> str:
    if not (isinstance(backend_cls, type) and issubclass(backend_cls, Backend)):
        raise TypeError(
            f"a storage backend must be a subclass of sharedzarr.storage.Backend, "
            f"got {backend_cls!r}"
        )
    backend_id = getattr(backend_cls, "id", None)
    if not isinstance(backend_id, str) or not backend_id:
        raise TypeError(
            f"{backend_cls.__qualname__} must set the class attribute `id` to a non-empty str "
            "(the name users pass as storage=...)"
        )
    return backend_id


def register(backend_cls: type[Backend], *, force: bool = False) -> None:
    """Register a backend class under its ``id``.

    Parameters
    ----------
    backend_cls : type
        A :class:`Backend` subclass with a class attribute ``id``.
    force : bool
        Replace a different class registered under the same id.  Built-in ids cannot be
        replaced even with ``force``.

    Raises
    ------
    TypeError
        If ``backend_cls`` is not a Backend subclass with an ``id``.
    ValueError
        If another class holds the id and ``force`` is false, or the id is a built-in's.
    """
    backend_id = _check_class(backend_cls)
    with _lock:
        current = _registry.get(backend_id)
        if current is None or current is backend_cls:
            _registry[backend_id] = backend_cls
            return
        if backend_id in _BUILTIN_IDS:
            raise ValueError(
                f"storage id {backend_id!r} is built in ({current.__qualname__}) and cannot be "
                f"replaced; give {backend_cls.__qualname__} another id"
            )
        if not force:
            raise ValueError(
                f"storage id {backend_id!r} is already registered to "
                f"{current.__module__}.{current.__qualname__}; pass force=True to replace it, "
                f"or give {backend_cls.__qualname__} another id"
            )
        _registry[backend_id] = backend_cls


def unregister(backend_id: str) -> None:
    """Remove a registered backend.

    Parameters
    ----------
    backend_id : str

    Raises
    ------
    ValueError
        For a built-in id or an id that is not registered.
    """
    if backend_id in _BUILTIN_IDS:
        raise ValueError(f"storage id {backend_id!r} is built in and cannot be unregistered")
    with _lock:
        if backend_id not in _registry:
            raise ValueError(_unknown_message(backend_id))
        del _registry[backend_id]


def _unknown_message(backend_id: Any) -> str:
    return (
        f"unknown storage {backend_id!r}; registered storages are {list()} "
        "(sharedzarr.storage.register(cls) adds one)"
    )


def get(backend_id: str) -> type[Backend]:
    """Return the backend class registered under ``backend_id``.

    Parameters
    ----------
    backend_id : str

    Returns
    -------
    type

    Raises
    ------
    ValueError
        If the id is not registered; the message lists the registered ids.
    """
    with _lock:
        cls = _registry.get(backend_id) if isinstance(backend_id, str) else None
    if cls is None:
        raise ValueError(_unknown_message(backend_id))
    return cls


def resolve(storage: str | type[Backend]) -> type[Backend]:
    """Return the backend class for ``storage=``: a registered id or a Backend subclass.

    Parameters
    ----------
    storage : str or type

    Returns
    -------
    type
    """
    if isinstance(storage, type):
        _check_class(storage)
        return storage
    return get(storage)


def list() -> builtins.list[str]:  # the registry API name, as in ExZarr
    """Return the registered storage ids, sorted.

    Returns
    -------
    list of str
    """
    with _lock:
        return sorted(_registry)


def info(backend_id: str) -> dict[str, Any]:
    """Describe a registered backend.

    Parameters
    ----------
    backend_id : str

    Returns
    -------
    dict
        ``id``, ``class`` (dotted path), ``builtin`` and ``description`` (the first line of the
        class docstring).
    """
    cls = get(backend_id)
    doc = (cls.__doc__ or "").strip().splitlines()
    return {
        "id": backend_id,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "builtin": backend_id in _BUILTIN_IDS,
        "description": doc[0] if doc else "",
    }


register(SharedMemoryBackend)
register(MemoryBackend)
