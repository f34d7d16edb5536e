"""Internal: running aggregates on keyed streams — reduce, sum, min, max, min_by, max_by.

As in Flink, each incoming record updates the per-key aggregate and the new aggregate is emitted
at once (a running aggregate, not a windowed one). The aggregate lives in the keyed state backend
(one raw table, no state-handle indirection on the hot path).

In ``RuntimeExecutionMode.BATCH`` the aggregates are not "rolling" (Flink's batch semantics): a
record only updates its key's aggregate, and at the end of input (the ``MAX`` watermark, before it
goes downstream) every key's final value is emitted once, with timestamp ``MAX_TS`` if the input
carried timestamps (as Flink) and none otherwise. Order of the final values in a subtask: by key
group, then as the backend keeps its keys (memory: first-seen order; LMDB: canonical key order).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from raystream.api.functions import ReduceFunction, resolve
from raystream.api.runtime_mode import is_batch
from raystream.core.keys import KeyGroupAssigner, KeySelector
from raystream.core.time import MAX_TS
from raystream.errors import GraphError
from raystream.operators.bad_records import without
from raystream.operators.keyed_functions import needs_current_key
from raystream.operators.stateless import UdfOperator
from raystream.runtime.elements import Batch

_MISSING = object()


class ReduceOperator(UdfOperator):
    """Keyed running reduce: emits ``f(previous_aggregate, record)`` for every record."""

    supports_error_policy = True

    STATE_NAME = "__reduce__"

    def __init__(self, name: str, fn: Any, key_selector: KeySelector):
        super().__init__(name, fn)
        self._fn = resolve(fn, ReduceFunction, "reduce", "reduce")
        self._key_selector = key_selector
        self._table: Any = None
        #: BATCH: emit only the final value per key, at the end of input
        self._final_only = False
        self._timestamped = False  # BATCH: the input carried timestamps

    def open(self) -> None:
        assert self.ctx is not None
        if self.ctx.keyed_backend is None:
            raise GraphError(f"keyed operator {self.name!r} has no keyed state backend")
        self._table = self.ctx.keyed_backend.table(self.STATE_NAME)
        self._final_only = is_batch(self.ctx.config)
        if needs_current_key(self.udf):  # keyed state in the reduce function (decided once)
            self._fn = _with_current_key(self._fn, self._key_selector, self.ctx.keyed_backend)
        super().open()

    def process_batch(self, batch: Batch) -> None:
        if self._final_only:
            self._accumulate(batch)
            return
        fn = self._fn
        ks = self._key_selector
        get = self._table.get
        put = self._table.put
        out: list = []
        append = out.append
        stamps = batch.timestamps
        it = iter(batch.values)
        bad: list[int] = []
        v = None
        while True:
            try:
                for v in it:
                    k = ks(v)
                    acc = get(k, _MISSING)
                    acc = v if acc is _MISSING else fn(acc, v)
                    put(k, acc)
                    append(acc)
                break
            except Exception as exc:
                i = len(out) + len(bad)  # one output per record before this one
                self.bad_record(exc, v, stamps[i] if stamps is not None else None)
                bad.append(i)
        if bad and stamps is not None:
            stamps = without(stamps, bad)
        self.output.emit(Batch(out, stamps))

    def _accumulate(self, batch: Batch) -> None:
        """BATCH: fold each record into its key's aggregate; nothing is emitted yet."""
        fn = self._fn
        ks = self._key_selector
        get = self._table.get
        put = self._table.put
        if batch.timestamps is not None:
            self._timestamped = True
        v = None
        try:
            for v in batch.values:
                k = ks(v)
                acc = get(k, _MISSING)
                put(k, v if acc is _MISSING else fn(acc, v))
        except Exception as exc:
            raise self.user_error(exc, v) from exc

    def on_watermark(self, timestamp: int) -> None:
        if self._final_only and timestamp == MAX_TS:
            self._emit_final()

    def _emit_final(self) -> None:
        """BATCH, end of input: every key's final value once, by key group (a stable sort keeps
        the backend's order of keys within a group)."""
        assert self.ctx is not None and self.ctx.keyed_backend is not None
        keys = self.ctx.keyed_backend.keys(self.STATE_NAME)
        if not keys:
            return
        keys.sort(key=KeyGroupAssigner(self.ctx.max_parallelism))
        get = self._table.get
        step = max(1, self.ctx.config.batch_size)  # in batches of the usual size
        for start in range(0, len(keys), step):
            values = [get(k) for k in keys[start : start + step]]
            stamps = [MAX_TS] * len(values) if self._timestamped else None
            self.output.emit(Batch(values, stamps))


class FieldAggregateOperator(ReduceOperator):
    """``KeyedStream.sum/min/max/min_by/max_by(field)``: the reduce of :func:`aggregation`,
    with the common record shapes (tuples by position, dicts by key) folded inline — no
    function call per record besides the key selector. Other records (lists, ``Row`` s,
    namedtuples, objects), BATCH mode and error policies take the general reduce; results are
    the same (a test runs both)."""

    def __init__(self, name: str, kind: str, field: int | str | None, key_selector: KeySelector):
        super().__init__(name, aggregation(kind, field), key_selector)
        self.kind = kind
        self.field = field

    def process_batch(self, batch: Batch) -> None:
        values = batch.values
        field = self.field
        if self._final_only or self.bad_records is not None or not values or field is None:
            super().process_batch(batch)
            return
        shape = tuple if type(field) is int else dict
        if type(values[0]) is not shape or (shape is tuple and field < 0):  # type: ignore[operator]
            super().process_batch(batch)
            return
        ks = self._key_selector
        get = self._table.get
        put = self._table.put
        kind = self.kind
        general = self._fn
        out: list = []
        append = out.append
        v = None
        try:
            for v in values:
                k = ks(v)
                acc = get(k, _MISSING)
                if acc is _MISSING:
                    acc = v
                elif type(v) is not shape or type(acc) is not shape:
                    acc = general(acc, v)
                else:
                    x = v[field]  # type: ignore[index]
                    cur = acc[field]  # type: ignore[index]
                    if kind == "sum":
                        acc = _replaced(acc, field, cur + x)
                    elif kind == "min":
                        if x < cur:
                            acc = _replaced(acc, field, x)
                    elif kind == "max":
                        if x > cur:
                            acc = _replaced(acc, field, x)
                    elif kind == "min_by":
                        if x < cur:
                            acc = v
                    elif x > cur:  # max_by
                        acc = v
                put(k, acc)
                append(acc)
        except Exception as exc:
            raise self.user_error(exc, v) from exc
        self.output.emit(Batch(out, batch.timestamps))


def _replaced(record: Any, field: Any, value: Any) -> Any:
    """A copy of a tuple or dict record with ``field`` set to ``value``."""
    if type(record) is tuple:
        return record[:field] + (value,) + record[field + 1 :]
    new = dict(record)
    new[field] = value
    return new


def _with_current_key(fn: Any, ks: KeySelector, backend: Any) -> Callable[[Any, Any], Any]:
    set_key = backend.set_current_key

    def call(acc: Any, value: Any) -> Any:
        set_key(ks(value))
        return fn(acc, value)

    return call


# --- field access for sum/min/max(field) -------------------------------------------------------


def field_getter(field: int | str | None) -> Callable[[Any], Any]:
    if field is None:
        return lambda v: v
    if isinstance(field, int):
        return lambda v: v[field]
    if isinstance(field, str):

        def get(v: Any) -> Any:
            if isinstance(v, dict):
                return v[field]
            return getattr(v, field)

        return get
    raise TypeError(f"field must be a position (int), a name (str) or None, got {field!r}")


def field_setter(field: int | str | None) -> Callable[[Any, Any], Any]:
    """Returns ``set(record, value) -> new record`` that leaves the input record untouched."""
    if field is None:
        return lambda record, value: value
    if isinstance(field, int):

        def set_pos(record: Any, value: Any) -> Any:
            if isinstance(record, list):
                new = list(record)
                new[field] = value
                return new
            if hasattr(record, "_replace"):  # namedtuple
                return record._replace(**{record._fields[field]: value})
            items = list(record)
            items[field] = value
            return type(record)(items) if type(record) is not tuple else tuple(items)

        return set_pos

    def set_name(record: Any, value: Any) -> Any:
        if isinstance(record, dict):
            new = dict(record)
            new[field] = value
            return new
        if hasattr(record, "_replace"):
            return record._replace(**{field: value})
        new = copy.copy(record)
        setattr(new, field, value)
        return new

    return set_name


def aggregation(kind: str, field: int | str | None) -> Callable[[Any, Any], Any]:
    """The reduce function behind ``sum/min/max/min_by/max_by(field)``."""
    get = field_getter(field)
    put = field_setter(field)
    if kind == "sum":
        return lambda acc, v: put(acc, get(acc) + get(v))
    if kind == "min":
        return lambda acc, v: put(acc, get(v)) if get(v) < get(acc) else acc
    if kind == "max":
        return lambda acc, v: put(acc, get(v)) if get(v) > get(acc) else acc
    if kind == "min_by":
        return lambda acc, v: v if get(v) < get(acc) else acc
    if kind == "max_by":
        return lambda acc, v: v if get(v) > get(acc) else acc
    raise ValueError(f"unknown aggregation {kind!r}")
