"""Internal: the keyed state backend protocol (the seam between operators and storage).

A backend belongs to one subtask and holds the state of the key groups that subtask owns. The
operator sets the current key before it calls user code; state handles read it. Snapshots are
taken per key group, so a restore can pick any subset of key groups (rescaling).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, Protocol

from raystream.state.api import AggregatingState, ListState, MapState, ReducingState, ValueState
from raystream.state.descriptors import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    ValueStateDescriptor,
)


class StateTable(Protocol):
    """A raw per-key table, for built-in operators on the hot path (no handle indirection)."""

    def get(self, key: Hashable, default: Any = None) -> Any: ...

    def put(self, key: Hashable, value: Any) -> None: ...

    def remove(self, key: Hashable) -> None: ...


class KeyedStateBackend(Protocol):
    current_key: Any

    def set_current_key(self, key: Any) -> None: ...

    def table(self, name: str) -> StateTable: ...

    def value_state(self, desc: ValueStateDescriptor) -> ValueState: ...

    def list_state(self, desc: ListStateDescriptor) -> ListState: ...

    def map_state(self, desc: MapStateDescriptor) -> MapState: ...

    def reducing_state(self, desc: ReducingStateDescriptor) -> ReducingState: ...

    def aggregating_state(self, desc: AggregatingStateDescriptor) -> AggregatingState: ...

    def snapshot(self) -> dict[int, bytes]:
        """Serialized state per key group that holds any."""
        ...

    def restore(self, key_group_snapshots: Iterable[bytes]) -> None: ...

    def dispose(self) -> None: ...
