"""Internal: what columnar operators check about the batches they get, and the conversions
between rows and columns.

Every check names the operator and the column: a batch whose schema differs from the stream's
first batch (:class:`SchemaGuard`), a column an operator needs and the batch lacks
(:func:`require_columns`), nulls in a column that may hold none (:func:`require_no_nulls`). They
run once per batch, never per row.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa

from raystream.core.row import Row
from raystream.errors import TaskError, record_repr
from raystream.runtime.columns import concat_record_batches
from raystream.runtime.elements import ColumnBatch

__all__ = ["ColumnError", "SchemaGuard", "require_columns", "require_no_nulls"]


class ColumnError(TaskError):
    """A batch of a columnar stream that an operator cannot take: its schema changed
    mid-stream, it lacks a column the operator needs, or a key or timestamp column holds
    nulls. The message names the operator and the column."""


def as_column_batch(got: Any, operator: str) -> ColumnBatch:
    """What a columnar reader returned as a :class:`ColumnBatch`."""
    if type(got) is ColumnBatch:
        return got
    if isinstance(got, pa.RecordBatch):
        return ColumnBatch(got)
    if isinstance(got, pa.Table):
        return ColumnBatch(table_batch(got))
    raise ColumnError(
        f"operator {operator!r}: a columnar source's reader returned {type(got).__name__}, "
        "expected a pyarrow.RecordBatch (or a ColumnBatch)",
        operator,
    )


def table_batch(table: pa.Table) -> pa.RecordBatch:
    """The rows of ``table`` as one record batch."""
    batches = table.to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=table.schema)
    return concat_record_batches(batches)


def describe_schema(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def schema_difference(expected: pa.Schema, got: pa.Schema) -> str:
    """What differs, column by column (for error messages)."""
    parts = []
    exp = {f.name: f.type for f in expected}
    now = {f.name: f.type for f in got}
    for name in exp:
        if name not in now:
            parts.append(f"column {name!r} is missing")
        elif now[name] != exp[name]:
            parts.append(f"column {name!r} changed type from {exp[name]} to {now[name]}")
    for name in now:
        if name not in exp:
            parts.append(f"column {name!r} is new")
    if not parts and expected.names != got.names:
        parts.append(f"the columns changed order: {expected.names} -> {got.names}")
    if not parts:
        parts.append("the field metadata or nullability changed")
    return "; ".join(parts)


class SchemaGuard:
    """Remembers the schema of a stream's first batch and refuses a batch with another one."""

    __slots__ = ("operator", "schema")

    def __init__(self, operator: str, schema: pa.Schema | None = None):
        self.operator = operator
        self.schema = schema

    def check(self, batch: ColumnBatch) -> ColumnBatch:
        schema = batch.values.schema
        if self.schema is None:
            self.schema = schema
        elif schema is not self.schema and not schema.equals(self.schema):
            raise ColumnError(
                f"operator {self.operator!r}: the schema of the stream changed mid-stream: "
                f"{schema_difference(self.schema, schema)} (first batch: "
                f"{describe_schema(self.schema)}; this batch: {describe_schema(schema)})",
                self.operator,
            )
        return batch


def require_columns(
    schema: pa.Schema, columns: list[str] | tuple[str, ...], operator: str, role: str
) -> None:
    """Fails naming the first column of ``columns`` that ``schema`` lacks."""
    names = schema.names
    for c in columns:
        if c not in names:
            raise ColumnError(
                f"operator {operator!r}: {role} column {c!r} is not in the batch (columns: "
                f"{', '.join(names)})",
                operator,
            )


def require_no_nulls(array: Any, column: str, operator: str, role: str) -> None:
    """Fails if the Arrow ``array`` holds a null (checked through its null count)."""
    if array.null_count:
        raise ColumnError(
            f"operator {operator!r}: {role} column {column!r} holds {array.null_count} null "
            f"value(s); a {role} must not be null (hint: drop or fill them first, e.g. with a "
            "filter after to_rows())",
            operator,
        )


# --- rows <-> columns ---------------------------------------------------------------------------


def rows_of(batch: ColumnBatch) -> list[dict]:
    """The records of a column batch as dicts (column name -> value)."""
    return batch.values.to_pylist()  # type: ignore[no-any-return]


def timestamps_list(batch: ColumnBatch) -> list[int] | None:
    stamps = batch.timestamps
    return None if stamps is None else stamps.tolist()


def as_dict(record: Any, operator: str) -> dict:
    """A row record as a dict of its fields (for ``to_columns``)."""
    if isinstance(record, dict):
        return record
    if isinstance(record, Row):
        return record.as_dict()
    if isinstance(record, tuple) and hasattr(record, "_asdict"):
        return record._asdict()  # type: ignore[no-any-return]
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return dataclasses.asdict(record)
    raise ColumnError(
        f"operator {operator!r}: to_columns() without a schema takes dicts, named Rows, "
        f"namedtuples or dataclasses; got {type(record).__name__}: {record_repr(record)} "
        "(hint: pass schema=pyarrow.schema([...]) to take tuples or scalars by position)",
        operator,
    )


def timestamps_array(stamps: list | None) -> np.ndarray | None:
    return None if stamps is None else np.asarray(stamps, dtype=np.int64)
