"""Internal: the in-memory keyed state backend (Python dicts).

Each state name owns one dict from key to value; the key group of an entry is computed only when
a snapshot is taken, so the per-record path is a plain dict access.
"""

from __future__ import annotations

import pickle
from collections.abc import Hashable, Iterable, Iterator
from typing import Any

from raystream.core.keys import KeyGroupAssigner
from raystream.state.api import AggregatingState, ListState, MapState, ReducingState, ValueState
from raystream.state.descriptors import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    ValueStateDescriptor,
)

_MISSING = object()


class MemoryTable(dict):
    """A dict with the :class:`~raystream.state.backend.StateTable` method names."""

    put = dict.__setitem__

    def remove(self, key: Hashable) -> None:
        self.pop(key, None)


class MemoryStateBackend:
    """Keyed state of one subtask in Python dicts."""

    def __init__(self, max_parallelism: int, key_groups: range | None = None):
        self.max_parallelism = max_parallelism
        self.key_groups = key_groups if key_groups is not None else range(max_parallelism)
        self.current_key: Any = None
        self._tables: dict[str, MemoryTable] = {}
        self._kind: dict[str, str] = {}
        self._key_group = KeyGroupAssigner(max_parallelism)

    def set_current_key(self, key: Any) -> None:
        self.current_key = key

    def table(self, name: str, kind: str = "table") -> MemoryTable:
        known = self._kind.get(name)
        if known is None:
            self._kind[name] = kind
            self._tables[name] = MemoryTable()
        elif known != kind:
            raise ValueError(f"state {name!r} is already registered as {known} state, not {kind}")
        return self._tables[name]

    def value_state(self, desc: ValueStateDescriptor) -> ValueState:
        return _Value(self, self.table(desc.name, "value"))

    def list_state(self, desc: ListStateDescriptor) -> ListState:
        return _List(self, self.table(desc.name, "list"))

    def map_state(self, desc: MapStateDescriptor) -> MapState:
        return _Map(self, self.table(desc.name, "map"))

    def reducing_state(self, desc: ReducingStateDescriptor) -> ReducingState:
        return _Reducing(self, self.table(desc.name, "reducing"), desc.reduce_function)

    def aggregating_state(self, desc: AggregatingStateDescriptor) -> AggregatingState:
        return _Aggregating(self, self.table(desc.name, "aggregating"), desc.agg_function)

    def snapshot(self) -> dict[int, bytes]:
        groups: dict[int, dict[str, list]] = {}
        kg_of = self._key_group
        for name, table in self._tables.items():
            for key, value in table.items():
                groups.setdefault(kg_of(key), {}).setdefault(name, []).append((key, value))
        return {
            kg: pickle.dumps((kg, self._kind, entries), protocol=pickle.HIGHEST_PROTOCOL)
            for kg, entries in groups.items()
        }

    def restore(self, key_group_snapshots: Iterable[bytes]) -> None:
        for blob in key_group_snapshots:
            kg, kinds, entries = pickle.loads(blob)
            if kg not in self.key_groups:
                raise ValueError(f"key group {kg} is not owned by this backend ({self.key_groups})")
            for name, items in entries.items():
                self.table(name, kinds[name]).update(items)

    def num_entries(self) -> int:
        return sum(len(t) for t in self._tables.values())

    def dispose(self) -> None:
        self._tables.clear()


class _Handle:
    __slots__ = ("_backend", "_table")

    def __init__(self, backend: MemoryStateBackend, table: MemoryTable):
        self._backend = backend
        self._table = table

    def clear(self) -> None:
        self._table.pop(self._backend.current_key, None)


class _Value(_Handle, ValueState):
    __slots__ = ()

    def value(self) -> Any:
        return self._table.get(self._backend.current_key)

    def update(self, value: Any) -> None:
        if value is None:
            self.clear()
        else:
            self._table[self._backend.current_key] = value


class _List(_Handle, ListState):
    __slots__ = ()

    def get(self) -> list:
        return list(self._table.get(self._backend.current_key, ()))

    def add(self, value: Any) -> None:
        if value is None:
            raise ValueError("cannot add None to list state")
        self._table.setdefault(self._backend.current_key, []).append(value)

    def add_all(self, values: Iterable[Any]) -> None:
        values = list(values)
        if any(v is None for v in values):
            raise ValueError("cannot add None to list state")
        if values:
            self._table.setdefault(self._backend.current_key, []).extend(values)

    def update(self, values: Iterable[Any]) -> None:
        values = list(values)
        if any(v is None for v in values):
            raise ValueError("cannot add None to list state")
        if values:
            self._table[self._backend.current_key] = values
        else:
            self.clear()


class _Map(_Handle, MapState):
    __slots__ = ()

    def _entries(self) -> dict:
        return self._table.get(self._backend.current_key) or {}

    def get(self, key: Any) -> Any:
        return self._entries().get(key)

    def put(self, key: Any, value: Any) -> None:
        self._table.setdefault(self._backend.current_key, {})[key] = value

    def put_all(self, entries: dict) -> None:
        if entries:
            self._table.setdefault(self._backend.current_key, {}).update(entries)

    def remove(self, key: Any) -> None:
        entries = self._table.get(self._backend.current_key)
        if entries is not None:
            entries.pop(key, None)
            if not entries:
                self.clear()

    def contains(self, key: Any) -> bool:
        return key in self._entries()

    def items(self) -> Iterator[tuple[Any, Any]]:
        return iter(list(self._entries().items()))

    def keys(self) -> Iterator[Any]:
        return iter(list(self._entries()))

    def values(self) -> Iterator[Any]:
        return iter(list(self._entries().values()))

    def is_empty(self) -> bool:
        return not self._entries()


class _Reducing(_Handle, ReducingState):
    __slots__ = ("_fn",)

    def __init__(self, backend: MemoryStateBackend, table: MemoryTable, fn: Any):
        super().__init__(backend, table)
        self._fn = fn

    def get(self) -> Any:
        return self._table.get(self._backend.current_key)

    def add(self, value: Any) -> None:
        key = self._backend.current_key
        old = self._table.get(key, _MISSING)
        self._table[key] = value if old is _MISSING else self._fn(old, value)


class _Aggregating(_Handle, AggregatingState):
    __slots__ = ("_agg",)

    def __init__(self, backend: MemoryStateBackend, table: MemoryTable, agg: Any):
        super().__init__(backend, table)
        self._agg = agg

    def get(self) -> Any:
        acc = self._table.get(self._backend.current_key, _MISSING)
        return None if acc is _MISSING else self._agg.get_result(acc)

    def add(self, value: Any) -> None:
        key = self._backend.current_key
        acc = self._table.get(key, _MISSING)
        if acc is _MISSING:
            acc = self._agg.create_accumulator()
        self._table[key] = self._agg.add(value, acc)
