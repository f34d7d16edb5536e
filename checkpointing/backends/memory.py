"""Internal: the in-memory keyed state backend (Python dicts), raystream's default.

Each state owns one dict from entry key — the key, or ``(key, namespace)`` — to its value (a list
for list state, a dict for map state). The key group of an entry is computed only when a snapshot
is taken, so the per-record path is a plain dict access. Semantics live in
:mod:`raystream.state.handles`; this module only stores.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

from raystream.state.backend import AbstractKeyedStateBackend, encode_key_group
from raystream.state.handles import StateMeta
from raystream.state.ttl import TtlTimeProvider

__all__ = ["MemoryKeyedStateBackend", "MemoryTable"]


class MemoryTable(dict):
    """Single values per entry key, with the raw-table method names (``put``, ``remove``)."""

    __slots__ = ("_rotation", "_pos")

    put = dict.__setitem__

    def __init__(self) -> None:
        super().__init__()
        self._rotation: list = []
        self._pos = 0

    def remove(self, key: Hashable) -> None:
        self.pop(key, None)

    def ttl_cleanup(self, n: int, limit: int) -> None:
        """Checks the next ``n`` entries of a rotation over a key list taken when the previous
        one ran out (a list, not a dict iterator: the dict changes between calls)."""
        rotation, pos = self._rotation, self._pos
        if pos >= len(rotation):
            rotation, pos = list(self), 0
        batch = rotation[pos : pos + n]
        self._rotation, self._pos = rotation, pos + len(batch)
        self._expire(batch, limit)

    def _expire(self, batch: list, limit: int) -> None:
        get = self.get
        for ek in batch:
            stored = get(ek)
            if stored is not None and stored[1] <= limit:
                del self[ek]


class MemoryListTable(MemoryTable):
    """List state: entry key -> Python list of elements."""

    __slots__ = ()

    def list_get(self, ek: Any) -> list:
        return list(self.get(ek, ()))

    def list_add(self, ek: Any, elements: list) -> None:
        current = self.get(ek)
        if current is None:
            self[ek] = list(elements)
        else:
            current.extend(elements)

    def list_set(self, ek: Any, elements: list) -> None:
        if elements:
            self[ek] = list(elements)
        else:
            self.pop(ek, None)

    def _expire(self, batch: list, limit: int) -> None:
        for ek in batch:
            stored = self.get(ek)
            if stored:
                live = [e for e in stored if e[1] > limit]
                if len(live) != len(stored):
                    self.list_set(ek, live)


class MemoryMapTable(MemoryTable):
    """Map state: entry key -> dict (never empty: an emptied map leaves no entry)."""

    __slots__ = ()

    def map_get(self, ek: Any, key: Any, default: Any = None) -> Any:
        entries = self.get(ek)
        return default if entries is None else entries.get(key, default)

    def map_put(self, ek: Any, key: Any, value: Any) -> None:
        entries = self.get(ek)
        if entries is None:
            self[ek] = {key: value}
        else:
            entries[key] = value

    def map_put_all(self, ek: Any, items: dict) -> None:
        entries = self.get(ek)
        if entries is None:
            self[ek] = dict(items)
        else:
            entries.update(items)

    def map_remove(self, ek: Any, key: Any) -> None:
        entries = self.get(ek)
        if entries is not None:
            entries.pop(key, None)
            if not entries:
                del self[ek]

    def map_items(self, ek: Any) -> list[tuple[Any, Any]]:
        entries = self.get(ek)
        return list(entries.items()) if entries else []

    def map_is_empty(self, ek: Any) -> bool:
        return not self.get(ek)

    def _expire(self, batch: list, limit: int) -> None:
        for ek in batch:
            stored = self.get(ek)
            if stored:
                for key in [k for k, e in stored.items() if e[1] <= limit]:
                    del stored[key]
                if not stored:
                    del self[ek]


_TABLE_CLASS = {"list": MemoryListTable, "map": MemoryMapTable}


class _MemorySnapshotView:
    """Serialized when taken: Python objects are mutable, so a later copy would not be consistent."""

    def __init__(self, blobs: dict[int, bytes]):
        self._blobs = blobs

    def iter_serialized(self) -> Iterator[tuple[int, bytes]]:
        return iter(self._blobs.items())

    def serialize(self) -> dict[int, bytes]:
        return dict(self._blobs)

    def close(self) -> None:
        self._blobs = {}


class MemoryKeyedStateBackend(AbstractKeyedStateBackend):
    """Keyed state of one subtask in Python dicts."""

    holds_objects = True

    def __init__(
        self,
        max_parallelism: int,
        key_groups: range | None = None,
        time_provider: TtlTimeProvider | None = None,
    ):
        super().__init__(max_parallelism, key_groups, time_provider)

    def _new_table(self, meta: StateMeta) -> MemoryTable:
        return _TABLE_CLASS.get(meta.kind, MemoryTable)()

    def snapshot_view(self) -> _MemorySnapshotView:
        limits = self._snapshot_expiry_limits()
        groups: dict[int, dict[str, tuple[StateMeta, list]]] = {}
        kg_of = self._key_group
        for meta in self._states.values():
            name, namespaced = meta.name, meta.namespaced
            for ek, stored in meta.table.items():
                key, ns = ek if namespaced else (ek, None)
                kg = kg_of(key)
                states = groups.get(kg)
                if states is None:
                    states = groups[kg] = {}
                entry = states.get(name)
                if entry is None:
                    entry = states[name] = (meta, [])
                entry[1].append((key, ns, stored))
        blobs = {}
        for kg in sorted(groups):
            blob = encode_key_group(kg, groups[kg], limits)
            if blob is not None:
                blobs[kg] = blob
        return _MemorySnapshotView(blobs)

    def _restore_entries(self, meta: StateMeta, entries: list[tuple[Any, Any, Any]]) -> None:
        table = meta.table
        copy = list if meta.kind == "list" else dict if meta.kind == "map" else None
        for key, ns, stored in entries:
            ek = (key, ns) if meta.namespaced else key
            table[ek] = stored if copy is None else copy(stored)

    def _entry_keys(self, meta: StateMeta) -> list:
        return list(meta.table)

    def num_entries(self) -> int:
        return sum(len(meta.table) for meta in self._states.values())

    def dispose(self) -> None:
        for meta in self._states.values():
            meta.table.clear()
        self._states.clear()
        self._per_record = []
