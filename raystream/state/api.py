"""The state handles a user function gets from ``get_runtime_context().get_*_state(...)``.

Every handle is scoped to the key of the record (or timer) being processed; backends implement
these interfaces over their own storage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any


class State(ABC):
    @abstractmethod
    def clear(self) -> None: ...


class ValueState(State):
    @abstractmethod
    def value(self) -> Any: ...

    @abstractmethod
    def update(self, value: Any) -> None: ...


class AppendingState(State):
    @abstractmethod
    def get(self) -> Any: ...

    @abstractmethod
    def add(self, value: Any) -> None: ...


class ListState(AppendingState):
    @abstractmethod
    def add_all(self, values: Iterable[Any]) -> None: ...

    @abstractmethod
    def update(self, values: Iterable[Any]) -> None: ...


class ReducingState(AppendingState):
    pass


class AggregatingState(AppendingState):
    pass


class MapState(State):
    @abstractmethod
    def get(self, key: Any) -> Any: ...

    @abstractmethod
    def put(self, key: Any, value: Any) -> None: ...

    @abstractmethod
    def put_all(self, entries: dict) -> None: ...

    @abstractmethod
    def remove(self, key: Any) -> None: ...

    @abstractmethod
    def contains(self, key: Any) -> bool: ...

    @abstractmethod
    def items(self) -> Iterator[tuple[Any, Any]]: ...

    @abstractmethod
    def keys(self) -> Iterator[Any]: ...

    @abstractmethod
    def values(self) -> Iterator[Any]: ...

    @abstractmethod
    def is_empty(self) -> bool: ...

    def __iter__(self) -> Iterator[Any]:
        return self.keys()
