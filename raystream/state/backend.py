"""Internal: the keyed state backend seam — protocol, shared base class, snapshot format.

A backend belongs to one operator subtask and holds the state of the key groups that subtask owns.
The operator sets the current key (``set_current_key``) before it calls user code; handles read it.
State is scoped to ``(key, namespace)``; a window is a namespace, ``None`` the void namespace.

Two ways in:

- **Handles** (``value_state(desc, namespace)`` …) for user functions: semantics and TTL live in
  :mod:`raystream.state.handles`, shared by every backend.
- **Raw tables** (``table(name, namespaced=...)``) for built-in operators on the hot path:
  ``get(k, default)`` / ``put(k, v)`` / ``remove(k)`` with ``k`` a key, or a ``(key, namespace)``
  tuple in a namespaced table.

A backend subclass only stores: it provides the tables (single values, lists, maps), a snapshot
view and restore of entries. Snapshots are taken per key group in a backend-neutral format, so a
restore can take any subset of key groups (rescaling) from any backend kind::

    blob = pickle((key_group, FORMAT_VERSION, {state name: (kind, namespaced, ttl, entries)}))
    entries = [(key, namespace, stored), ...]

``stored`` is the value; for list state a list of elements, for map state a dict; with TTL every
value / element / map value is ``(value, stamp)``. ``namespace`` is None in tables that are not
namespaced.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, Protocol

from raystream.core.keys import KeyGroupAssigner
from raystream.errors import SerializationError, record_repr
from raystream.state.api import AggregatingState, ListState, MapState, ReducingState, ValueState
from raystream.state.descriptors import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    ValueStateDescriptor,
)
from raystream.state.handles import (
    MISSING,
    AggregatingStateHandle,
    ListStateHandle,
    MapStateHandle,
    ReducingStateHandle,
    StateMeta,
    ValueStateHandle,
)
from raystream.state.ttl import StateTtlConfig, SystemTtlTimeProvider, TtlPolicy, TtlTimeProvider

FORMAT_VERSION = 1


class StateSerializationError(SerializationError):
    """A keyed-state value cannot be serialized; the message names the state and the key (the
    operator and subtask are added where the task wraps it)."""


def state_serialization_error(
    state: str, key: Any, namespace: Any, value: Any, exc: BaseException
) -> StateSerializationError:
    """The one message both backends raise: LMDB when the value is written, memory when a
    snapshot serializes it."""
    ns = f" in namespace {record_repr(namespace)}" if namespace is not None else ""
    return StateSerializationError(
        f"the value of keyed state {state!r} for key {record_repr(key)}{ns} cannot be "
        f"serialized ({type(exc).__name__}: {exc}): {record_repr(value)}; keyed state must be "
        "picklable (no lambdas defined in a function, locks, open files, generators)"
    )


#: kinds whose entries hold one value (a raw table is one of them)
SINGLE_KINDS = frozenset({"table", "value", "reducing", "aggregating"})
KINDS = SINGLE_KINDS | {"list", "map"}

_DESCRIPTOR_KINDS: list[tuple[type, str]] = [
    (ValueStateDescriptor, "value"),
    (ListStateDescriptor, "list"),
    (MapStateDescriptor, "map"),
    (ReducingStateDescriptor, "reducing"),
    (AggregatingStateDescriptor, "aggregating"),
]


class StateTable(Protocol):
    """A raw table, for built-in operators on the hot path (no handle indirection)."""

    def get(self, key: Hashable, default: Any = None) -> Any: ...

    def put(self, key: Hashable, value: Any) -> None: ...

    def remove(self, key: Hashable) -> None: ...


class SnapshotView(Protocol):
    """A consistent picture of a backend's state, serialized possibly after the backend moved on."""

    def iter_serialized(self) -> Iterator[tuple[int, bytes]]:
        """``(key_group, blob)`` for every key group holding state."""
        ...

    def serialize(self) -> dict[int, bytes]: ...

    def close(self) -> None: ...


class KeyedStateBackend(Protocol):
    """What operators use; implemented by ``MemoryKeyedStateBackend`` and ``LmdbKeyedStateBackend``."""

    max_parallelism: int
    key_groups: range
    current_key: Any
    #: True when tables keep the Python objects put into them (no copy, no serialization until
    #: a snapshot): a value changed in place is then already stored
    holds_objects: bool

    def set_current_key(self, key: Any) -> None: ...

    def table(self, name: str, kind: str = "table", namespaced: bool = False) -> StateTable: ...

    def value_state(self, desc: ValueStateDescriptor, namespace: Any = None) -> ValueState: ...

    def list_state(self, desc: ListStateDescriptor, namespace: Any = None) -> ListState: ...

    def map_state(self, desc: MapStateDescriptor, namespace: Any = None) -> MapState: ...

    def reducing_state(
        self, desc: ReducingStateDescriptor, namespace: Any = None
    ) -> ReducingState: ...

    def aggregating_state(
        self, desc: AggregatingStateDescriptor, namespace: Any = None
    ) -> AggregatingState: ...

    def merge_namespaces(
        self,
        state: StateDescriptor | StateTable,
        target: Any,
        sources: Iterable[Any],
        merge_fn: Callable[[Any, Any], Any] | None = None,
    ) -> None: ...

    def keys(self, state: str | StateDescriptor, namespace: Any = None) -> list: ...

    def snapshot(self) -> dict[int, bytes]:
        """Serialized state per key group that holds any."""
        ...

    def snapshot_view(self) -> SnapshotView: ...

    def restore(self, key_group_snapshots: Iterable[bytes]) -> None: ...

    def num_entries(self) -> int: ...

    def dispose(self) -> None: ...


# -- snapshot format -------------------------------------------------------------------------------


def encode_key_group(
    key_group: int,
    states: dict[str, tuple[StateMeta, list[tuple[Any, Any, Any]]]],
    expiry_limits: dict[str, int],
) -> bytes | None:
    """One key group's blob; entries of states in ``expiry_limits`` that expired are left out.
    None when nothing is left."""
    out = {}
    for name, (meta, entries) in states.items():
        limit = expiry_limits.get(name)
        if limit is not None:
            entries = _drop_expired(meta.kind, entries, limit)
        if entries:
            out[name] = (meta.kind, meta.namespaced, meta.ttl_enabled, entries)
    if not out:
        return None
    try:
        return pickle.dumps((key_group, FORMAT_VERSION, out), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise _find_unpicklable(out, exc) from exc


def _find_unpicklable(out: dict[str, tuple], exc: BaseException) -> BaseException:
    """The failure path of a snapshot: pickles entry by entry to name the state and the key."""
    for name, (_kind, _namespaced, _ttl, entries) in out.items():
        for key, ns, stored in entries:
            try:
                pickle.dumps(stored, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as entry_exc:
                return state_serialization_error(name, key, ns, stored, entry_exc)
    return exc


def decode_key_group(blob: bytes) -> tuple[int, dict[str, tuple[str, bool, bool, list]]]:
    key_group, version, states = pickle.loads(blob)
    if version != FORMAT_VERSION:
        raise ValueError(
            f"key group {key_group}: snapshot format {version} is not supported "
            f"(this version reads format {FORMAT_VERSION})"
        )
    return key_group, states


def _drop_expired(kind: str, entries: list, limit: int) -> list:
    kept: list = []
    for key, ns, stored in entries:
        if kind == "list":
            stored = [e for e in stored if e[1] > limit]
            if stored:
                kept.append((key, ns, stored))
        elif kind == "map":
            stored = {k: e for k, e in stored.items() if e[1] > limit}
            if stored:
                kept.append((key, ns, stored))
        elif stored[1] > limit:
            kept.append((key, ns, stored))
    return kept


# -- the shared base class -------------------------------------------------------------------------


class AbstractKeyedStateBackend(ABC):
    """Registration, handles, namespace merging, TTL wiring and restore, common to all backends.

    Subclasses implement ``_new_table(meta)``, ``_restore_entries(meta, entries)``,
    ``_entry_keys(meta)``, ``snapshot_view()``, ``num_entries()`` and ``dispose()``.
    """

    holds_objects = False

    def __init__(
        self,
        max_parallelism: int,
        key_groups: range | None = None,
        time_provider: TtlTimeProvider | None = None,
    ):
        self.max_parallelism = max_parallelism
        self.key_groups = key_groups if key_groups is not None else range(max_parallelism)
        if self.key_groups.step != 1 or not (
            0 <= self.key_groups.start and self.key_groups.stop <= max_parallelism
        ):
            raise ValueError(
                f"key groups {self.key_groups} are not a contiguous range within "
                f"[0, {max_parallelism})"
            )
        self.current_key: Any = None
        self.time_provider: TtlTimeProvider = time_provider or SystemTtlTimeProvider()
        self._key_group = KeyGroupAssigner(max_parallelism)
        self._states: dict[str, StateMeta] = {}
        self._per_record: list[StateMeta] = []

    # -- keys ------------------------------------------------------------------------------------

    def set_current_key(self, key: Any) -> None:
        """Selects the key that handles act on (also runs per-record TTL cleanup)."""
        self.current_key = key
        if self._per_record:
            for meta in self._per_record:
                meta.accessed()

    # -- registration ----------------------------------------------------------------------------

    def table(self, name: str, kind: str = "table", namespaced: bool = False) -> Any:
        """The raw table of state ``name``, created on first use."""
        if kind not in KINDS:
            raise ValueError(f"unknown state kind {kind!r}; expected one of {sorted(KINDS)}")
        return self._register(name, kind, namespaced, False).table

    def _register(
        self,
        name: str,
        kind: str,
        namespaced: bool,
        ttl_enabled: bool,
        ttl_config: StateTtlConfig | None = None,
    ) -> StateMeta:
        meta = self._states.get(name)
        if meta is None:
            if len(self._states) >= 0xFFFF:
                raise ValueError(f"too many states in one operator (state {name!r})")
            meta = StateMeta(name, kind, namespaced, ttl_enabled, len(self._states))
            meta.table = self._new_table(meta)
            self._states[name] = meta
        else:
            if meta.kind != kind:
                raise ValueError(
                    f"state {name!r} is already registered as {meta.kind} state, not {kind}"
                )
            if meta.namespaced != namespaced:
                raise ValueError(
                    f"state {name!r} is already registered as a "
                    f"{'namespaced' if meta.namespaced else 'plain'} table"
                )
            if meta.ttl_enabled != ttl_enabled:
                had = "with" if meta.ttl_enabled else "without"
                now = "with" if ttl_enabled else "without"
                raise ValueError(
                    f"state {name!r} exists {had} TTL but is requested {now} TTL: TTL cannot be "
                    "enabled or disabled for existing state, also not across a restore (hint: "
                    "use a new state name)"
                )
        if ttl_config is not None and (meta.ttl is None or meta.ttl.config != ttl_config):
            # the latest descriptor's settings win: the TTL may change across a restore
            meta.ttl = TtlPolicy(ttl_config, self.time_provider)
            self._per_record = [
                m for m in self._states.values() if m.ttl is not None and m.ttl.cleanup_per_record
            ]
        return meta

    def _descriptor_meta(self, desc: StateDescriptor, kind: str) -> StateMeta:
        cfg = desc.ttl_config
        return self._register(desc.name, kind, True, cfg is not None, cfg)

    def value_state(self, desc: ValueStateDescriptor, namespace: Any = None) -> ValueState:
        return ValueStateHandle(self, self._descriptor_meta(desc, "value"), namespace)

    def list_state(self, desc: ListStateDescriptor, namespace: Any = None) -> ListState:
        return ListStateHandle(self, self._descriptor_meta(desc, "list"), namespace)

    def map_state(self, desc: MapStateDescriptor, namespace: Any = None) -> MapState:
        return MapStateHandle(self, self._descriptor_meta(desc, "map"), namespace)

    def reducing_state(self, desc: ReducingStateDescriptor, namespace: Any = None) -> ReducingState:
        meta = self._descriptor_meta(desc, "reducing")
        return ReducingStateHandle(self, meta, namespace, desc.reduce_function)

    def aggregating_state(
        self, desc: AggregatingStateDescriptor, namespace: Any = None
    ) -> AggregatingState:
        meta = self._descriptor_meta(desc, "aggregating")
        return AggregatingStateHandle(self, meta, namespace, desc.agg_function)

    def state_names(self) -> list[str]:
        return list(self._states)

    def keys(self, state: str | StateDescriptor, namespace: Any = None) -> list:
        """Every key holding state ``state`` in ``namespace`` (a list: safe to change state while
        walking it, e.g. for ``apply_to_keyed_state``). Expired TTL values may still count."""
        meta = self._states.get(state if isinstance(state, str) else state.name)
        if meta is None:
            return []
        if not meta.namespaced:
            return list(self._entry_keys(meta))
        return [key for key, ns in self._entry_keys(meta) if ns == namespace]

    # -- merging namespaces (merging windows) ----------------------------------------------------

    def merge_namespaces(
        self,
        state: StateDescriptor | Any,
        target: Any,
        sources: Iterable[Any],
        merge_fn: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        """Merges the current key's state in ``sources`` into ``target`` and clears the sources.

        List state concatenates (elements keep their TTL stamps); reducing state reduces,
        aggregating state merges accumulators with ``AggregateFunction.merge``; a raw namespaced
        table merges with ``merge_fn(a, b)``. Expired values take no part. With TTL the merged
        value counts as written now.
        """
        meta, fn = self._merge_target(state, merge_fn)
        key = self.current_key
        table = meta.table
        sources = [ns for ns in sources if ns != target]
        if not sources:
            return
        if meta.kind == "list":
            moved: list = []
            for ns in sources:
                moved.extend(table.list_get((key, ns)))
                table.remove((key, ns))
            if moved:
                table.list_add((key, target), moved)
            return
        assert fn is not None  # _merge_target gives every kind but list a merge function
        ttl = meta.ttl
        limit = ttl.expiry_limit() if ttl is not None else 0
        newest: int | None = None

        def take(ns: Any) -> Any:
            nonlocal newest
            stored = table.get((key, ns), MISSING)
            if stored is MISSING or ttl is None:
                return stored
            value, stamp = stored
            if stamp <= limit:
                return MISSING
            newest = stamp if newest is None or stamp > newest else newest
            return value

        folded: Any = MISSING
        for ns in sources:
            value = take(ns)
            table.remove((key, ns))
            if value is not MISSING:
                folded = value if folded is MISSING else fn(folded, value)
        if folded is MISSING:
            return  # nothing live to merge: the target stays as it is
        # the target's own value goes first, then the sources in order (as Flink)
        current = take(target)
        merged = folded if current is MISSING else fn(current, folded)
        table.put((key, target), merged if ttl is None else (merged, ttl.stamp(newest)))

    def _merge_target(
        self, state: Any, merge_fn: Callable[[Any, Any], Any] | None
    ) -> tuple[StateMeta, Callable[[Any, Any], Any] | None]:
        if isinstance(state, StateDescriptor):
            kind = next((k for cls, k in _DESCRIPTOR_KINDS if isinstance(state, cls)), None)
            if kind not in ("list", "reducing", "aggregating"):
                raise TypeError(
                    f"merge_namespaces: state {state.name!r} is {kind} state; only list, "
                    "reducing and aggregating state (and raw namespaced tables) can be merged"
                )
            meta = self._descriptor_meta(state, kind)
            if kind == "reducing":
                return meta, state.reduce_function  # type: ignore[attr-defined]
            if kind == "aggregating":
                agg = state.agg_function  # type: ignore[attr-defined]
                merge = getattr(agg, "merge", None)
                if not callable(merge):
                    raise TypeError(
                        f"merge_namespaces: the AggregateFunction of state {state.name!r} "
                        f"({type(agg).__name__}) has no merge(acc_a, acc_b); merging windows "
                        "(session windows) need one"
                    )
                return meta, merge
            return meta, None
        table_meta = next((m for m in self._states.values() if m.table is state), None)
        if table_meta is None:
            raise TypeError(
                f"merge_namespaces needs a state descriptor or a table of this backend, got "
                f"{type(state).__name__}"
            )
        if not table_meta.namespaced or table_meta.kind != "table":
            raise TypeError(
                f"merge_namespaces: table {table_meta.name!r} is not a raw namespaced table "
                "(create it with table(name, namespaced=True))"
            )
        if merge_fn is None:
            raise TypeError(f"merge_namespaces: table {table_meta.name!r} needs merge_fn(a, b)")
        return table_meta, merge_fn

    # -- snapshots -------------------------------------------------------------------------------

    def snapshot(self) -> dict[int, bytes]:
        """Serialized state per key group that holds any (synchronously)."""
        view = self.snapshot_view()
        try:
            return view.serialize()
        finally:
            view.close()

    @abstractmethod
    def snapshot_view(self) -> SnapshotView: ...

    def _snapshot_expiry_limits(self) -> dict[str, int]:
        """Per state with full-snapshot TTL cleanup: stamps at or below the limit stay out."""
        return {
            m.name: m.ttl.expiry_limit()
            for m in self._states.values()
            if m.ttl is not None and m.ttl.cleanup_full_snapshot
        }

    def restore(self, key_group_snapshots: Iterable[bytes]) -> None:
        """Adds the state of the given key-group blobs (any backend kind wrote them)."""
        for blob in key_group_snapshots:
            kg, states = decode_key_group(blob)
            if kg not in self.key_groups:
                raise ValueError(f"key group {kg} is not owned by this backend ({self.key_groups})")
            for name, (kind, namespaced, ttl_enabled, entries) in states.items():
                meta = self._register(name, kind, namespaced, ttl_enabled)
                self._restore_entries(meta, entries)

    # -- storage, per backend kind ---------------------------------------------------------------

    @abstractmethod
    def _new_table(self, meta: StateMeta) -> Any: ...

    @abstractmethod
    def _restore_entries(self, meta: StateMeta, entries: list[tuple[Any, Any, Any]]) -> None: ...

    @abstractmethod
    def _entry_keys(self, meta: StateMeta) -> Iterable[Any]:
        """The entry keys — keys, or ``(key, namespace)`` tuples — of one state."""

    @abstractmethod
    def num_entries(self) -> int:
        """Entries over all states: one per (state, key, namespace) holding a value."""

    @abstractmethod
    def dispose(self) -> None: ...
