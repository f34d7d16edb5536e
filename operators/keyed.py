"""Internal: running aggregates on keyed streams — reduce, sum, min, max, min_by, max_by.

As in Flink, each incoming record updates the per-key aggregate and the new aggregate is emitted
at once (a running aggregate, not a windowed one). The aggregate lives in the keyed state backend
(one raw table, no state-handle indirection on the hot path).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from raystream.api.functions import ReduceFunction, resolve
from raystream.core.keys import KeySelector
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

    def open(self) -> None:
        assert self.ctx is not None
        if self.ctx.keyed_backend is None:
            raise GraphError(f"keyed operator {self.name!r} has no keyed state backend")
        self._table = self.ctx.keyed_backend.table(self.STATE_NAME)
        if needs_current_key(self.udf):  # keyed state in the reduce function (decided once)
            self._fn = _with_current_key(self._fn, self._key_selector, self.ctx.keyed_backend)
        super().open()

    def process_batch(self, batch: Batch) -> None:
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
