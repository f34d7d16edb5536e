"""Internal: the state handles user functions get, written once over any backend's tables.

A handle is bound to one state (its :class:`StateMeta`) and one namespace; it reads the current key
from the backend at every call, so one handle serves every key. Entries are keyed by
``(key, namespace)`` (namespace ``None`` for state outside windows). Backends only store; the
semantics — including TTL (SEMANTICS §3.3) — live here, so both backends behave identically.

With TTL a stored value is ``(value, stamp)``, per element for list state and per entry for map
state. Reading an expired value removes it; whether the read still returns it depends on the
visibility. ``OnReadAndWrite`` refreshes the stamp of what a read returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from raystream.state.api import AggregatingState, ListState, MapState, ReducingState, ValueState
from raystream.state.ttl import TtlPolicy

MISSING: Any = object()


class StateMeta:
    """Internal: what a backend knows about one registered state."""

    __slots__ = ("name", "kind", "namespaced", "ttl_enabled", "ttl", "table", "state_id")

    def __init__(self, name: str, kind: str, namespaced: bool, ttl_enabled: bool, state_id: int):
        self.name = name
        self.kind = kind
        self.namespaced = namespaced
        self.ttl_enabled = ttl_enabled
        #: the policy of the latest descriptor; None until one registers (or without TTL)
        self.ttl: TtlPolicy | None = None
        self.table: Any = None
        self.state_id = state_id

    def accessed(self) -> None:
        """Incremental TTL cleanup: check a few more entries of this state."""
        ttl = self.ttl
        if ttl is not None and ttl.cleanup_size:
            self.table.ttl_cleanup(ttl.cleanup_size, ttl.expiry_limit())


def write_stamp(table: Any, ek: Any, ttl: TtlPolicy) -> int:
    """The stamp of a value written to ``ek`` now (event time never moves a live stamp back)."""
    if not ttl.event_time:
        return ttl.stamp()
    old = table.get(ek, MISSING)
    if old is MISSING or old[1] <= ttl.expiry_limit():
        return ttl.stamp()
    return ttl.stamp(old[1])


def read_single(meta: StateMeta, ek: Any) -> Any:
    """The live value at ``ek`` (or MISSING), applying TTL visibility and lazy cleanup."""
    table = meta.table
    ttl = meta.ttl
    if ttl is None:
        return table.get(ek, MISSING)
    meta.accessed()
    stored = table.get(ek, MISSING)
    if stored is MISSING:
        return MISSING
    value, stamp = stored
    if stamp <= ttl.expiry_limit():
        table.remove(ek)
        return value if ttl.return_expired else MISSING
    if ttl.update_on_read:
        table.put(ek, (value, ttl.stamp(stamp)))
    return value


class _Handle:
    __slots__ = ("_backend", "_meta", "_table", "_ns")

    def __init__(self, backend: Any, meta: StateMeta, namespace: Any = None):
        self._backend = backend
        self._meta = meta
        self._table = meta.table
        self._ns = namespace

    @property
    def namespace(self) -> Any:
        return self._ns

    def set_namespace(self, namespace: Any) -> None:
        """Points the handle at another namespace (window operators reuse one handle)."""
        self._ns = namespace

    def clear(self) -> None:
        if self._meta.ttl is not None:
            self._meta.accessed()
        self._table.remove((self._backend.current_key, self._ns))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._meta.name!r} namespace={self._ns!r}>"


class ValueStateHandle(_Handle, ValueState):
    __slots__ = ()

    def value(self) -> Any:
        ek = (self._backend.current_key, self._ns)
        if self._meta.ttl is None:
            return self._table.get(ek)
        value = read_single(self._meta, ek)
        return None if value is MISSING else value

    def update(self, value: Any) -> None:
        if value is None:
            self.clear()
            return
        ek = (self._backend.current_key, self._ns)
        ttl = self._meta.ttl
        if ttl is None:
            self._table.put(ek, value)
            return
        self._meta.accessed()
        self._table.put(ek, (value, write_stamp(self._table, ek, ttl)))


class ReducingStateHandle(_Handle, ReducingState):
    __slots__ = ("_fn",)

    def __init__(self, backend: Any, meta: StateMeta, namespace: Any, fn: Any):
        super().__init__(backend, meta, namespace)
        self._fn = fn

    def get(self) -> Any:
        value = read_single(self._meta, (self._backend.current_key, self._ns))
        return None if value is MISSING else value

    def add(self, value: Any) -> None:
        ek = (self._backend.current_key, self._ns)
        table = self._table
        ttl = self._meta.ttl
        if ttl is None:
            old = table.get(ek, MISSING)
            table.put(ek, value if old is MISSING else self._fn(old, value))
            return
        self._meta.accessed()
        old = table.get(ek, MISSING)
        # an expired aggregate is gone for a write, whatever the visibility (as in Flink)
        if old is not MISSING and old[1] > ttl.expiry_limit():
            table.put(ek, (self._fn(old[0], value), ttl.stamp(old[1])))
        else:
            table.put(ek, (value, ttl.stamp()))


class AggregatingStateHandle(_Handle, AggregatingState):
    __slots__ = ("_agg",)

    def __init__(self, backend: Any, meta: StateMeta, namespace: Any, agg: Any):
        super().__init__(backend, meta, namespace)
        self._agg = agg

    def get(self) -> Any:
        acc = read_single(self._meta, (self._backend.current_key, self._ns))
        return None if acc is MISSING else self._agg.get_result(acc)

    def add(self, value: Any) -> None:
        ek = (self._backend.current_key, self._ns)
        table = self._table
        agg = self._agg
        ttl = self._meta.ttl
        if ttl is None:
            old = table.get(ek, MISSING)
            acc = agg.create_accumulator() if old is MISSING else old
            table.put(ek, agg.add(value, acc))
            return
        self._meta.accessed()
        old = table.get(ek, MISSING)
        if old is not MISSING and old[1] > ttl.expiry_limit():
            table.put(ek, (agg.add(value, old[0]), ttl.stamp(old[1])))
        else:
            table.put(ek, (agg.add(value, agg.create_accumulator()), ttl.stamp()))


def _no_nones(values: Iterable[Any]) -> list:
    values = list(values)
    for v in values:
        if v is None:
            raise ValueError("cannot add None to list state")
    return values


class ListStateHandle(_Handle, ListState):
    __slots__ = ()

    def get(self) -> list:
        ek = (self._backend.current_key, self._ns)
        table = self._table
        ttl = self._meta.ttl
        if ttl is None:
            return table.list_get(ek)
        self._meta.accessed()
        stored = table.list_get(ek)
        if not stored:
            return []
        limit = ttl.expiry_limit()
        live = [e for e in stored if e[1] > limit]
        if ttl.update_on_read and live:
            live = [(v, ttl.stamp(s)) for v, s in live]
            table.list_set(ek, live)
        elif len(live) != len(stored):
            table.list_set(ek, live)
        return [v for v, _ in (stored if ttl.return_expired else live)]

    def add(self, value: Any) -> None:
        if value is None:
            raise ValueError("cannot add None to list state")
        self._append([value])

    def add_all(self, values: Iterable[Any]) -> None:
        values = _no_nones(values)
        if values:
            self._append(values)

    def _append(self, values: list) -> None:
        ek = (self._backend.current_key, self._ns)
        ttl = self._meta.ttl
        if ttl is None:
            self._table.list_add(ek, values)
            return
        self._meta.accessed()
        stamp = ttl.stamp()
        self._table.list_add(ek, [(v, stamp) for v in values])

    def update(self, values: Iterable[Any]) -> None:
        values = _no_nones(values)
        ek = (self._backend.current_key, self._ns)
        ttl = self._meta.ttl
        if ttl is not None:
            self._meta.accessed()
            stamp = ttl.stamp()
            values = [(v, stamp) for v in values]
        self._table.list_set(ek, values)


class MapStateHandle(_Handle, MapState):
    """Map state; iteration order is unspecified (insertion order in memory, key bytes in LMDB)."""

    __slots__ = ()

    def _ek(self) -> tuple:
        return (self._backend.current_key, self._ns)

    def _read(self, ek: Any, key: Any) -> Any:
        """The live value of one entry (or MISSING), with TTL applied."""
        table = self._table
        ttl = self._meta.ttl
        if ttl is None:
            return table.map_get(ek, key, MISSING)
        self._meta.accessed()
        stored = table.map_get(ek, key, MISSING)
        if stored is MISSING:
            return MISSING
        value, stamp = stored
        if stamp <= ttl.expiry_limit():
            table.map_remove(ek, key)
            return value if ttl.return_expired else MISSING
        if ttl.update_on_read:
            table.map_put(ek, key, (value, ttl.stamp(stamp)))
        return value

    def get(self, key: Any) -> Any:
        value = self._read(self._ek(), key)
        return None if value is MISSING else value

    def contains(self, key: Any) -> bool:
        return self._read(self._ek(), key) is not MISSING

    def put(self, key: Any, value: Any) -> None:
        ek = self._ek()
        ttl = self._meta.ttl
        if ttl is None:
            self._table.map_put(ek, key, value)
            return
        self._meta.accessed()
        self._table.map_put(ek, key, (value, self._stamp(ek, key, ttl)))

    def put_all(self, entries: dict) -> None:
        if not entries:
            return
        ek = self._ek()
        ttl = self._meta.ttl
        if ttl is None:
            self._table.map_put_all(ek, dict(entries))
            return
        self._meta.accessed()
        self._table.map_put_all(
            ek, {k: (v, self._stamp(ek, k, ttl)) for k, v in dict(entries).items()}
        )

    def _stamp(self, ek: Any, key: Any, ttl: TtlPolicy) -> int:
        if not ttl.event_time:
            return ttl.stamp()
        old = self._table.map_get(ek, key, MISSING)
        if old is MISSING or old[1] <= ttl.expiry_limit():
            return ttl.stamp()
        return ttl.stamp(old[1])

    def remove(self, key: Any) -> None:
        if self._meta.ttl is not None:
            self._meta.accessed()
        self._table.map_remove(self._ek(), key)

    def _entries(self) -> list[tuple[Any, Any]]:
        """Every entry a read returns, with TTL cleanup (and refresh) applied."""
        ek = self._ek()
        table = self._table
        ttl = self._meta.ttl
        if ttl is None:
            return table.map_items(ek)
        self._meta.accessed()
        stored = table.map_items(ek)
        if not stored:
            return []
        limit = ttl.expiry_limit()
        out = []
        for key, (value, stamp) in stored:
            if stamp <= limit:
                table.map_remove(ek, key)
                if ttl.return_expired:
                    out.append((key, value))
            else:
                if ttl.update_on_read:
                    table.map_put(ek, key, (value, ttl.stamp(stamp)))
                out.append((key, value))
        return out

    def items(self) -> Iterator[tuple[Any, Any]]:
        return iter(self._entries())

    def keys(self) -> Iterator[Any]:
        return iter([k for k, _ in self._entries()])

    def values(self) -> Iterator[Any]:
        return iter([v for _, v in self._entries()])

    def is_empty(self) -> bool:
        ek = self._ek()
        ttl = self._meta.ttl
        if ttl is None:
            return self._table.map_is_empty(ek)
        self._meta.accessed()
        stored = self._table.map_items(ek)
        limit = ttl.expiry_limit()
        expired = [key for key, (_, stamp) in stored if stamp <= limit]
        for key in expired:
            self._table.map_remove(ek, key)
        return not stored if ttl.return_expired else len(expired) == len(stored)
