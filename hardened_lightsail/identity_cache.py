"""Results computed from values too big to hash every time they are asked about (a blocklist of
100,000 networks), found again by the identity of those values instead."""
from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

Value = TypeVar("Value")


class IdentityCache(Generic[Value]):
    """The newest `size` results. A key may hold id()s: each entry keeps the objects those ids
    are of (`holds`), so no id in a key can be reused by another object while it is cached."""

    def __init__(self, size: int):
        self._size = size
        self._entries: dict[Hashable, tuple[Any, Value]] = {}

    def get(self, key: Hashable, holds: Any, make: Callable[[], Value]) -> Value:
        found = self._entries.get(key)
        if found is not None:
            return found[1]
        value = make()
        if len(self._entries) >= self._size:
            del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[key] = (holds, value)
        return value
