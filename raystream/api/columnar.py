"""The columnar side of the API: ``to_rows`` / ``to_columns``, ``key_by("col", ...)``, and
windows with declarative aggregates over a keyed columnar stream.

A columnar stream carries Arrow record batches. Operators that call a user function per record
refuse it when the graph is built (``DataStream._rows_only``); these are the ones that take it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from raystream.api.aggregates import checked
from raystream.api.datastream import DataStream
from raystream.api.functions import OutputTag
from raystream.core.time import Duration
from raystream.errors import GraphError
from raystream.graph.column_partitioners import ColumnKeyGroupPartitioner
from raystream.graph.partitioners import KeyGroupPartitioner
from raystream.graph.transformations import COLUMNS, Transformation
from raystream.operators.columnar.convert import (
    CastColumnsOperator,
    ColumnTransformOperator,
    ToColumnsOperator,
    ToRowsOperator,
)
from raystream.operators.columnar.window import ColumnWindowOperator
from raystream.operators.windows.assigners import WindowAssigner

if TYPE_CHECKING:
    pass

WINDOW_COLUMNS = ["window_start", "window_end"]


def to_rows(stream: DataStream) -> DataStream:
    if not stream.is_columnar:
        raise GraphError("to_rows() converts a columnar stream; this stream carries rows already")
    t = stream._add("ToRows", ToRowsOperator)
    t.accepts = COLUMNS
    return DataStream(stream._env, t)


def to_columns(stream: DataStream, schema: Any) -> DataStream:
    if stream.is_columnar:
        if schema is None:
            raise GraphError(
                "to_columns() converts a row stream; this stream carries columns already (pass "
                "a schema to cast its batches to it)"
            )
        t = stream._add("CastColumns", functools.partial(CastColumnsOperator, schema=schema))
        t.accepts = COLUMNS
    else:
        factory = functools.partial(ToColumnsOperator, schema=schema)
        factory("to_columns")  # validate the schema now
        t = stream._add("ToColumns", factory)
    t.shape = COLUMNS
    return DataStream(stream._env, t)


def transform_columns(stream: DataStream, fn: Any, name: str = "Columns") -> DataStream:
    """Internal (benchmarks, tests): a vectorized ``fn(record_batch) -> record_batch`` on a
    columnar stream (see ``ColumnTransformOperator``); ``map_batches`` is the public form."""
    if not stream.is_columnar:
        raise GraphError("transform_columns takes a columnar stream")
    t = stream._add(name, functools.partial(ColumnTransformOperator, fn=fn))
    t.shape = t.accepts = COLUMNS
    return DataStream(stream._env, t)


def key_by_columns(stream: DataStream, columns: tuple[Any, ...]) -> Any:
    """``key_by("a", ...)``: a :class:`ColumnarKeyedStream` on a columnar stream, a keyed row
    stream whose key is the field (tuple of fields) on a row stream."""
    from raystream.api.datastream import KeyedStream

    for c in columns:
        if not isinstance(c, str) or not c:
            raise GraphError(
                f"key_by: expected column names (str), got {c!r}; key_by(selector) takes a "
                "function instead"
            )
    if len(set(columns)) != len(columns):
        raise GraphError(f"key_by: column names repeat in {list(columns)}")
    columnar = stream.is_columnar
    selector = FieldKey(tuple(columns))
    part = Transformation(
        name="KeyBy",
        kind="partition",
        inputs=[(stream._t, 0)],
        partitioner=(
            ColumnKeyGroupPartitioner(columns) if columnar else KeyGroupPartitioner(selector)
        ),
        shape=stream._t.shape,
    )
    if columnar:
        return ColumnarKeyedStream(stream._env, part, tuple(columns))
    keyed = KeyedStream(stream._env, part, selector)
    keyed._key_fields = tuple(columns)
    return keyed


class FieldKey:
    """The key selector of ``key_by("a", ...)`` on a row stream: the field's value, or the tuple
    of the fields' values (dict keys, ``Row`` fields or attributes) — the key the columnar path
    takes from the same columns."""

    def __init__(self, fields: tuple[str, ...]):
        self.fields = fields

    def __call__(self, record: Any) -> Any:
        fields = self.fields
        if len(fields) == 1:
            return _field(record, fields[0])
        return tuple(_field(record, f) for f in fields)

    def get_key(self, value: Any) -> Any:
        return self(value)


def _field(record: Any, name: str) -> Any:
    try:
        return record[name]
    except (TypeError, KeyError, IndexError):
        try:
            return getattr(record, name)
        except AttributeError:
            raise KeyError(f"record has no field or attribute {name!r} (a key field)") from None


class ColumnarKeyedStream(DataStream):
    """A columnar stream partitioned by key columns: windows with declarative aggregates.

    Per-record keyed operations (``reduce``, ``process``, ``sum``...) need rows: call
    ``to_rows()`` first and key the row stream (``key_by("k")`` works on rows too)."""

    def __init__(self, env: Any, transformation: Transformation, key_columns: tuple[str, ...]):
        super().__init__(env, transformation)
        self.key_columns = key_columns

    def window(self, window_assigner: Any) -> ColumnarWindowedStream:
        """Tumbling or sliding event-time windows per key (finish with ``aggregate(agg...)``)."""
        return ColumnarWindowedStream(self, window_assigner)

    def _physical(self, what: str) -> Transformation:
        raise GraphError(f"{what} applies to an operator; key_by() only partitions the stream")

    def _keyed_add(self, name: str, factory: Any) -> Transformation:
        t = self._add(name, factory, keyed=True)
        t.shape = t.accepts = COLUMNS
        return t

    def _per_record(self, what: str) -> GraphError:
        return GraphError(
            f"{what} on a keyed columnar stream calls a function per record: call to_rows() "
            "before key_by(...), or use window(...).aggregate(agg...)"
        )

    def reduce(self, func: Any, output_type: Any = None) -> DataStream:
        raise self._per_record("reduce()")

    def sum(self, field: int | str | None = None) -> DataStream:
        raise self._per_record("sum()")

    def min(self, field: int | str | None = None) -> DataStream:
        raise self._per_record("min()")

    def max(self, field: int | str | None = None) -> DataStream:
        raise self._per_record("max()")

    def min_by(self, field: int | str | None = None) -> DataStream:
        raise self._per_record("min_by()")

    def max_by(self, field: int | str | None = None) -> DataStream:
        raise self._per_record("max_by()")

    def count_window(self, size: int, slide: int | None = None) -> Any:
        raise self._per_record("count_window()")


class ColumnarWindowedStream:
    """A keyed columnar stream cut into windows; finish it with ``aggregate(agg...)``."""

    def __init__(self, keyed: Any, assigner: WindowAssigner):
        if not isinstance(assigner, WindowAssigner):
            raise TypeError(f"window() expects a WindowAssigner, got {assigner!r}")
        self._keyed = keyed
        self._assigner = assigner
        self._lateness = 0
        self._late_tag: str | None = None

    def allowed_lateness(self, time: Duration) -> ColumnarWindowedStream:
        from raystream.api.windowing import checked_lateness

        self._lateness = checked_lateness(time)
        return self

    def side_output_late_data(self, output_tag: OutputTag) -> ColumnarWindowedStream:
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"side_output_late_data expects an OutputTag, got {output_tag!r}")
        self._late_tag = output_tag.tag_id
        return self

    def trigger(self, trigger: Any) -> ColumnarWindowedStream:
        raise GraphError(
            "a columnar window fires with the event-time trigger only; for other triggers call "
            "to_rows() before key_by(...)"
        )

    def evictor(self, evictor: Any) -> ColumnarWindowedStream:
        raise GraphError("a columnar window takes no evictor; call to_rows() before key_by(...)")

    def aggregate(self, *aggregates: Any) -> DataStream:
        """One result row per key and window: the key columns, ``window_start``,
        ``window_end`` and one column per aggregate, as column batches stamped ``end − 1``."""
        keys = list(self._keyed.key_columns)
        aggs = checked(aggregates, keys + WINDOW_COLUMNS, "aggregate()")
        for a in aggs:
            if isinstance(a.column, int):
                raise GraphError(
                    f"{a!r}: a columnar stream's aggregates take column names, not positions"
                )
        keyed = self._keyed
        local = self._local_aggregate(aggs)
        factory = functools.partial(
            ColumnWindowOperator,
            key_columns=keyed.key_columns,
            assigner=self._assigner,
            allowed_lateness_ms=self._lateness,
            late_tag_id=self._late_tag,
            aggregates=aggs,
            merge_partials=local is not None,
        )
        factory("Window(Aggregate)")  # validate now (e.g. session windows)
        if local is not None:
            keyed = key_by_columns(local, keyed.key_columns)
        t = keyed._keyed_add("Window(Aggregate)", factory)
        if self._late_tag is not None:
            t.side_shapes[self._late_tag] = COLUMNS
        return DataStream(self._keyed._env, t)

    def _local_aggregate(self, aggs: tuple[Any, ...]) -> DataStream | None:
        """Two-phase aggregation: with zero allowed lateness and no late side output, the
        producer folds each batch into per-(key, window) accumulators before the shuffle
        (``operators/columnar/local_aggregate.py``), chained to it. Not behind a union or a
        partitioning (it would run as a task of its own)."""
        upstream = self._keyed._t.inputs[0][0]
        if self._lateness or self._late_tag is not None or not upstream.is_physical:
            return None
        from raystream.operators.columnar.local_aggregate import LocalWindowAggregateOperator

        stream = DataStream(self._keyed._env, upstream)
        factory = functools.partial(
            LocalWindowAggregateOperator,
            key_columns=self._keyed.key_columns,
            assigner=self._assigner,
            aggregates=aggs,
        )
        factory("Window(Aggregate)(local)")  # validate now
        t = stream._add("Window(Aggregate)(local)", factory)
        t.shape = t.accepts = COLUMNS
        t.inherit_parallelism = True  # the producer's: chained to it
        return DataStream(self._keyed._env, t)

    def __getattr__(self, name: str) -> Any:
        if name in ("reduce", "process", "apply", "sum", "min", "max", "min_by", "max_by"):
            raise GraphError(
                f"{name}() on a columnar window calls a function per record: use "
                "aggregate(agg.count(), agg.sum('v'), ...), or call to_rows() before key_by(...)"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
