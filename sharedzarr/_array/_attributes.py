"""``Array.attrs``: the user attributes, a mapping written through to ``zarr.json``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, Protocol

from .._metadata import ArrayMetadata

__all__ = ["Attributes"]


class _Owner(Protocol):
    """What the mapping needs of its array (``Array`` provides it)."""

    def _synced(self) -> ArrayMetadata: ...

    def _update_attributes(self, change: Callable[[dict[str, Any]], None]) -> None: ...

    def refresh(self) -> bool: ...


class Attributes(MutableMapping[str, Any]):
    """The array's user attributes; every change is written to ``zarr.json`` at once.

    Parameters
    ----------
    array : Array
        The array whose attributes these are.

    Notes
    -----
    Values are JSON values.  Reading returns a copy: mutate a nested value and assign it back
    (``a.attrs["x"] = x``) to persist it.  ``update`` writes once for all keys.
    """

    def __init__(self, array: _Owner) -> None:
        self._array = array

    def __getitem__(self, key: str) -> Any:
        value = self._array._synced().attributes[key]
        return json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value

    def __setitem__(self, key: str, value: Any) -> None:
        self._array._update_attributes(lambda a: a.__setitem__(key, value))

    def __delitem__(self, key: str) -> None:
        if key not in self._array._synced().attributes:
            raise KeyError(key)
        self._array._update_attributes(lambda a: a.pop(key, None))

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._array._synced().attributes))

    def __len__(self) -> int:
        return len(self._array._synced().attributes)

    def __contains__(self, key: object) -> bool:
        return key in self._array._synced().attributes

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Set several attributes with one metadata write.

        Parameters
        ----------
        other : mapping or iterable of pairs, optional
        **kwargs
        """
        items = dict(other, **kwargs)
        self._array._update_attributes(lambda a: a.update(items))

    def put(self, attributes: Mapping[str, Any]) -> None:
        """Replace all attributes with ``attributes`` (one metadata write).

        Parameters
        ----------
        attributes : mapping
        """
        items = dict(attributes)

        def change(a: dict[str, Any]) -> None:
            a.clear()
            a.update(items)

        self._array._update_attributes(change)

    def asdict(self) -> dict[str, Any]:
        """Return a deep copy of the attributes as a plain dict.

        Returns
        -------
        dict
        """
        copy: dict[str, Any] = json.loads(json.dumps(self._array._synced().attributes))
        return copy

    def refresh(self) -> None:
        """Re-read ``zarr.json`` to see attributes another handle wrote."""
        self._array.refresh()

    def __repr__(self) -> str:
        return f"Attributes({self._array._synced().attributes!r})"
