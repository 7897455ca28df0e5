"""Connections of one kind by alias (MQTT test connections, Kafka connections, CoAP observations).

Like ``robot.utils.ConnectionCache`` without what IoTix does not want of it: aliases are exact (``Default`` is
not ``default``), a number is an alias and not an index, and one connection can be closed and its alias
reused while the others stay.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from iotix._robot.context import KeywordError

T = TypeVar("T")


class Aliases(Generic[T]):
    """Open connections by alias, in the order they were opened.

    ``missing`` is the message for an alias that is not open; ``{alias}`` and ``{known}`` (the open aliases,
    quoted, or ``none``) are filled in.
    """

    def __init__(self, missing: str) -> None:
        self._missing = missing
        self._items: dict[str, T] = {}

    def __contains__(self, alias: object) -> bool:
        return alias in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def known(self) -> str:
        return ", ".join(f"'{a}'" for a in self._items) or "none"

    def add(self, alias: str, item: T) -> None:
        self._items[alias] = item

    def find(self, alias: str) -> T | None:
        return self._items.get(alias)

    def get(self, alias: str) -> T:
        """The connection ``alias``; fails with the ``missing`` message, which lists the open ones."""
        item = self._items.get(alias)
        if item is None:
            raise KeywordError(self._missing.format(alias=alias, known=self.known()))
        return item

    def pop(self, alias: str) -> T | None:
        """Forget ``alias`` and return its connection (None when it was not open)."""
        return self._items.pop(alias, None)

    def values(self) -> list[T]:
        return list(self._items.values())
