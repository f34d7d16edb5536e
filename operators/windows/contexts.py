"""Internal: what the window operator's triggers, evictors and window functions see — the state
of one (key, window) and the contexts around it — and names the operator modules share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raystream.api.functions import (
    ProcessAllWindowFunction,
    ProcessWindowFunction,
    register_contexts,
)
from raystream.core.timers import EVENT_TIME, PROCESSING_TIME
from raystream.errors import GraphError
from raystream.runtime.elements import Batch
from raystream.state.descriptors import ReducingStateDescriptor

if TYPE_CHECKING:
    from raystream.operators.windows.operator import WindowOperator

#: a missing state entry (``None`` may be a stored value)
_MISSING = object()

#: the kinds of window function: incremental (reduce, aggregate) or over all elements
REDUCE, AGGREGATE, PROCESS, APPLY = "reduce", "aggregate", "process", "apply"


class _NsState:
    """Trigger / window state of one (key, window): a raw table entry with a handle's methods."""

    __slots__ = ("_table", "_k", "_reduce")

    def __init__(self, table: Any, k: Any, reduce: Any = None):
        self._table = table
        self._k = k
        self._reduce = reduce

    def value(self) -> Any:
        return self._table.get(self._k)

    get = value

    def update(self, value: Any) -> None:
        if value is None:
            self._table.remove(self._k)
        else:
            self._table.put(self._k, value)

    def add(self, value: Any) -> None:
        old = self._table.get(self._k, _MISSING)
        self._table.put(
            self._k, value if old is _MISSING or self._reduce is None else self._reduce(old, value)
        )

    def clear(self) -> None:
        self._table.remove(self._k)


class _TriggerContext:
    """What triggers and evictors see: timers and state of the current (key, window)."""

    def __init__(self, op: WindowOperator):
        self.op = op
        self.key: Any = None
        self.window: Any = None
        self.merged_windows: list[Any] = []

    def get_current_watermark(self) -> int:
        return self.op.current_watermark

    def get_current_processing_time(self) -> int:
        return self.op.ctx.clock.now_ms()  # type: ignore[union-attr, no-any-return]

    def register_event_time_timer(self, t: int) -> None:
        self.op.timers.register(EVENT_TIME, t, self.key, self.window)

    def register_processing_time_timer(self, t: int) -> None:
        self.op.timers.register(PROCESSING_TIME, t, self.key, self.window)

    def delete_event_time_timer(self, t: int) -> None:
        self.op.timers.delete(EVENT_TIME, t, self.key, self.window)

    def delete_processing_time_timer(self, t: int) -> None:
        self.op.timers.delete(PROCESSING_TIME, t, self.key, self.window)

    def _table(self, desc: Any) -> Any:
        return self.op.backend.table(f"__trigger__{desc.name}", "table", namespaced=True)

    def get_partitioned_state(self, desc: Any) -> _NsState:
        reduce = desc.reduce_function if isinstance(desc, ReducingStateDescriptor) else None
        return _NsState(self._table(desc), (self.key, self.window), reduce)

    def merge_partitioned_state(self, desc: Any) -> None:
        table = self._table(desc)
        target = _NsState(table, (self.key, self.window), getattr(desc, "reduce_function", None))
        for w in self.merged_windows:
            k = (self.key, w)
            value = table.get(k, _MISSING)
            if value is not _MISSING:
                table.remove(k)
                target.add(value)


class _WindowContext:
    """The ``context`` of a ProcessWindowFunction."""

    def __init__(self, op: WindowOperator):
        self.op = op
        self.key: Any = None
        self._window: Any = None

    def window(self) -> Any:
        return self._window

    def current_processing_time(self) -> int:
        return self.op.ctx.clock.now_ms()  # type: ignore[union-attr, no-any-return]

    def current_watermark(self) -> int:
        return self.op.current_watermark

    def window_state(self) -> _StateStore:
        if self.op.merging:
            raise GraphError(
                f"window {self.op.name!r}: per-window state is not available with merging "
                "(session) windows, whose windows merge; use global_state()"
            )
        return _StateStore(self.op, self._window)

    def global_state(self) -> _StateStore:
        return _StateStore(self.op, None)

    def output(self, output_tag: Any, value: Any) -> None:
        self.op.side_output(output_tag.tag_id).emit(Batch([value], [self._window.max_timestamp()]))


register_contexts(_WindowContext, ProcessWindowFunction.Context, ProcessAllWindowFunction.Context)


class _StateStore:
    """Keyed state of the current key, scoped to one window (or to none: global state)."""

    def __init__(self, op: WindowOperator, namespace: Any):
        self._backend = op.backend
        self._ns = namespace

    def _ns_kw(self) -> dict:
        return {} if self._ns is None else {"namespace": self._ns}

    def get_state(self, desc: Any) -> Any:
        return self._backend.value_state(desc, **self._ns_kw())

    def get_list_state(self, desc: Any) -> Any:
        return self._backend.list_state(desc, **self._ns_kw())

    def get_map_state(self, desc: Any) -> Any:
        return self._backend.map_state(desc, **self._ns_kw())

    def get_reducing_state(self, desc: Any) -> Any:
        return self._backend.reducing_state(desc, **self._ns_kw())

    def get_aggregating_state(self, desc: Any) -> Any:
        return self._backend.aggregating_state(desc, **self._ns_kw())
