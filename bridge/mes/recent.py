"""A bounded map that forgets what was used longest ago (the MES client's id caches)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


class RecentMap(Generic[_Key, _Value]):
    """At most `size` entries; a lookup or a store makes an entry the most recent."""

    def __init__(self, *, size: int) -> None:
        if size < 1:
            raise ValueError("a RecentMap needs size >= 1")
        self._size = size
        self._entries: OrderedDict[_Key, _Value] = OrderedDict()

    def get(self, key: _Key) -> _Value | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: _Key, value: _Value) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget(self, key: _Key) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
