"""Internal: the operators between the two shapes of stream — ``to_rows()`` and ``to_columns()``.

``to_rows`` turns every row of a column batch into a dict (column name → value), timestamps kept.
``to_columns(schema)`` turns a batch of records into one Arrow record batch: dict-like records
(dicts, named ``Row`` s, namedtuples, dataclasses) by field name, or — with a schema — tuples,
lists and positional rows by position and scalars into a one-column schema. Without a schema the
first batch's inferred schema becomes the stream's; a later batch that does not fit it fails
naming the operator and the column. Both cost a Python conversion per record: they are the
border between the row world and the columnar one.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from raystream.core.row import Row
from raystream.errors import GraphError, record_repr
from raystream.operators.base import StreamOperator
from raystream.operators.columnar.schema import (
    ColumnError,
    SchemaGuard,
    as_dict,
    rows_of,
    timestamps_array,
    timestamps_list,
)
from raystream.runtime.elements import Batch, ColumnBatch

__all__ = ["ToColumnsOperator", "ToRowsOperator", "CastColumnsOperator", "ColumnTransformOperator"]


class ToRowsOperator(StreamOperator):
    """Column batches in, dict records out."""

    def process_batch(self, batch: Any) -> None:
        if type(batch) is not ColumnBatch:
            raise GraphError(f"operator {self.name!r} takes columns, got {type(batch).__name__}")
        self.output.emit(Batch(rows_of(batch), timestamps_list(batch)))


class ToColumnsOperator(StreamOperator):
    """Records in, column batches out (see the module docstring)."""

    def __init__(self, name: str, schema: pa.Schema | None = None):
        super().__init__(name)
        if schema is not None and not isinstance(schema, pa.Schema):
            raise GraphError(f"to_columns: schema must be a pyarrow.Schema, got {schema!r}")
        self.schema = schema
        self._inferred: pa.Schema | None = None

    def process_batch(self, batch: Any) -> None:
        if type(batch) is not Batch:
            raise GraphError(f"operator {self.name!r} takes rows, got {type(batch).__name__}")
        values = batch.values
        if not values:
            return
        rb = self._by_schema(values) if self.schema is not None else self._by_name(values)
        self.output.emit(ColumnBatch(rb, timestamps_array(batch.timestamps)))

    def _by_name(self, values: list) -> pa.RecordBatch:
        name = self.name
        rows = [as_dict(v, name) for v in values]
        schema = self._inferred
        try:
            rb = pa.RecordBatch.from_pylist(rows, schema=schema)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise self._misfit(rows, schema, exc) from exc
        if schema is None:
            self._inferred = rb.schema
        else:
            extra = sorted({k for r in rows for k in r} - set(schema.names))
            if extra:
                raise ColumnError(
                    f"operator {name!r}: record field(s) {extra} are not columns of the stream "
                    f"(schema inferred from the first batch: {schema.names}); pass "
                    "to_columns(schema=...) to fix the columns",
                    name,
                )
        return rb

    def _misfit(self, rows: list, schema: pa.Schema | None, exc: Exception) -> ColumnError:
        """The column a batch failed on (one pass per column, on the failure path only)."""
        names = schema.names if schema is not None else sorted({k for r in rows for k in r})
        for c in names:
            field_type = schema.field(c).type if schema is not None else None
            try:
                pa.array([r.get(c) for r in rows], type=field_type)
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as inner:
                where = f" (type {field_type})" if field_type is not None else ""
                return ColumnError(
                    f"operator {self.name!r}: column {c!r}{where} cannot hold the batch's "
                    f"values: {inner}",
                    self.name,
                )
        return ColumnError(f"operator {self.name!r}: cannot convert records: {exc}", self.name)

    def _by_schema(self, values: list) -> pa.RecordBatch:
        schema = self.schema
        assert schema is not None
        first = values[0]
        try:
            if isinstance(first, dict) or (isinstance(first, Row) and first._fields is not None):
                rows = [as_dict(v, self.name) for v in values]
                return pa.RecordBatch.from_pylist(rows, schema=schema)
            if len(schema) == 1 and not isinstance(first, (tuple, list, Row)):
                return pa.RecordBatch.from_arrays(
                    [pa.array(values, type=schema.field(0).type)], schema=schema
                )
            columns = list(zip(*values))
            if len(columns) != len(schema):
                raise ColumnError(
                    f"operator {self.name!r}: record {record_repr(first)} has {len(columns)} "
                    f"fields, the schema {len(schema)} ({schema.names})",
                    self.name,
                )
            arrays = [pa.array(col, type=f.type) for col, f in zip(columns, schema)]
            return pa.RecordBatch.from_arrays(arrays, schema=schema)
        except ColumnError:
            raise
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            rows = [
                as_dict(v, self.name)
                if isinstance(v, dict)
                else dict(zip(schema.names, v if isinstance(v, (tuple, list, Row)) else (v,)))
                for v in values
            ]
            raise self._misfit(rows, schema, exc) from exc


class CastColumnsOperator(StreamOperator):
    """``to_columns(schema)`` on a columnar stream: every batch cast to ``schema``."""

    def __init__(self, name: str, schema: pa.Schema):
        super().__init__(name)
        if not isinstance(schema, pa.Schema):
            raise GraphError(f"to_columns: schema must be a pyarrow.Schema, got {schema!r}")
        self.schema = schema
        self._guard = SchemaGuard(name)

    def process_batch(self, batch: Any) -> None:
        rb = batch.values
        self._guard.check(batch)
        missing = [c for c in self.schema.names if c not in rb.schema.names]
        if missing:
            raise ColumnError(
                f"operator {self.name!r}: column(s) {missing} of the target schema are not in "
                f"the batch (columns: {rb.schema.names})",
                self.name,
            )
        try:
            cast = pa.RecordBatch.from_arrays(
                [rb.column(f.name).cast(f.type) for f in self.schema], schema=self.schema
            )
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise ColumnError(
                f"operator {self.name!r}: cannot cast the batch: {exc}", self.name
            ) from exc
        self.output.emit(ColumnBatch(cast, batch.timestamps))


class ColumnTransformOperator(StreamOperator):
    """A vectorized ``fn(record_batch) -> record_batch`` over a columnar stream, rows kept in
    step with their timestamps: ``fn`` may project, compute columns or filter rows (returning
    a boolean mask column named :data:`KEEP` to drop rows). Internal: the public form of this is
    ``map_batches``."""

    def __init__(self, name: str, fn: Any):
        super().__init__(name)
        self.fn = fn

    def process_batch(self, batch: Any) -> None:
        try:
            out = self.fn(batch.values)
        except Exception as exc:
            raise self.user_error(exc, None, "a batch of columns") from exc
        stamps = batch.timestamps
        if KEEP in out.schema.names:
            i = out.schema.get_field_index(KEEP)
            mask = out.column(i)
            out = out.remove_column(i).filter(mask)
            if stamps is not None:
                stamps = stamps[mask.to_numpy(zero_copy_only=False)]
        elif out.num_rows != batch.values.num_rows:
            raise ColumnError(
                f"operator {self.name!r}: the function returned {out.num_rows} rows for "
                f"{batch.values.num_rows} (filter with a {KEEP!r} mask column)",
                self.name,
            )
        if out.num_rows:
            self.output.emit(ColumnBatch(out, stamps))


#: the column a :class:`ColumnTransformOperator` function returns to keep only some rows
KEEP = "__keep__"
