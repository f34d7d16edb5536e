"""Internal: event timestamps and watermarks of a columnar stream.

Used by :class:`~raystream.operators.watermarks.WatermarkEmitter` when a batch is a
:class:`ColumnBatch` (a columnar source with a ``WatermarkStrategy``, or
``assign_timestamps_and_watermarks`` on a columnar stream). Timestamps come from the strategy's
column (``with_timestamp_column``), converted to int64 milliseconds in one vectorized pass; the
generator sees the whole batch (``on_column_events``: the built-ins take its maximum). A
watermark a punctuated generator emits right after a record cuts the batch there, as on the row
path. Rows with a null or unusable timestamp go to the strategy's invalid-timestamps side output,
or fail the job naming the operator and the column.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raystream.core.time import MAX_TS, MIN_TS
from raystream.operators.columnar.schema import ColumnError, require_columns
from raystream.runtime.elements import ColumnBatch

if TYPE_CHECKING:
    from raystream.operators.watermarks import WatermarkEmitter

_PER_MS = {"us": 1000, "ns": 1_000_000}


def column_timestamps(
    batch: ColumnBatch, column: str, operator: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """The batch's timestamps in int64 ms from ``column``, and a boolean mask of the rows whose
    timestamp is null or not a usable instant (None: every row is fine)."""
    rb = batch.values
    require_columns(rb.schema, (column,), operator, "timestamp")
    array = rb.column(column)
    bad = _nulls(array)
    if bad is not None:
        array = pc.fill_null(array, pa.scalar(0).cast(array.type))
    t = array.type
    if pa.types.is_timestamp(t):
        raw = pc.cast(array, pa.int64()).to_numpy(zero_copy_only=False)
        unit = t.unit
        if unit == "s":
            ms = raw * 1000
        else:
            ms = np.floor_divide(raw, _PER_MS[unit]) if unit != "ms" else raw
        stamps = np.asarray(ms, dtype=np.int64)
    elif pa.types.is_integer(t):
        stamps = pc.cast(array, pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
    elif pa.types.is_floating(t):
        floats = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
        finite = np.isfinite(floats) & (floats > float(MIN_TS)) & (floats < float(MAX_TS))
        stamps = np.where(finite, floats, 0).astype(np.int64)
        if not finite.all():
            bad = ~finite if bad is None else bad | ~finite
    else:
        raise ColumnError(
            f"operator {operator!r}: timestamp column {column!r} has type {t}; expected int "
            "milliseconds, a float or an Arrow timestamp",
            operator,
        )
    if stamps.size:
        extreme = (stamps == MIN_TS) | (stamps == MAX_TS)  # reserved: start and end of time
        if extreme.any():
            bad = extreme if bad is None else bad | extreme
    return stamps, bad


def _nulls(array: Any) -> np.ndarray | None:
    if not array.null_count:
        return None
    return pc.is_null(array).to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def emit_columns(emitter: WatermarkEmitter, batch: ColumnBatch) -> None:
    """``WatermarkEmitter.emit`` for a columnar batch."""
    op = emitter.op
    column = emitter.timestamp_column
    if column is not None:
        stamps, bad = column_timestamps(batch, column, op.name)
        batch = ColumnBatch(batch.values, stamps)
        if bad is not None:
            batch = _invalid(emitter, batch, bad, column)
    elif emitter.extract is not None:
        raise ColumnError(
            f"operator {op.name!r}: a timestamp assigner function cannot read a columnar "
            "stream; use WatermarkStrategy...with_timestamp_column(name)",
            op.name,
        )
    output = op.output
    if batch.timestamps is None:
        output.emit(batch)
        emitter._forward()
        return
    out = emitter.out
    try:
        emitter.generator.on_column_events(batch.values, batch.timestamps, out)
    except Exception as exc:
        out.index = None
        out.cuts.clear()
        raise op.user_error(exc, None, "a batch of columns in the watermark generator") from exc
    cuts = out.cuts
    if not cuts:
        output.emit(batch)
        emitter._forward()
        return
    out.cuts = []
    start = 0
    for i, wm in cuts:
        if wm <= emitter.emitted:
            continue
        output.emit(batch.slice(start, i + 1))
        start = i + 1
        if emitter.idle:
            emitter.idle = False
            output.emit_watermark_status(False)
        emitter.emitted = wm
        output.emit_watermark(wm)
    if start < len(batch):
        output.emit(batch.slice(start, len(batch)))
    emitter._forward()


def _invalid(
    emitter: WatermarkEmitter, batch: ColumnBatch, bad: np.ndarray, column: str
) -> ColumnBatch:
    op = emitter.op
    rows = np.flatnonzero(bad)
    if emitter.invalid_tag is None:
        first = int(rows[0])
        value = batch.values.column(column)[first].as_py()
        ctx = op.ctx
        subtask = ctx.subtask_index if ctx is not None else None
        raise ColumnError(
            f"operator {op.name!r}, subtask {subtask}: timestamp column {column!r} holds "
            f"{len(rows)} invalid timestamp(s) (null, not finite, or out of range; the first "
            f"at row {first} of the batch: {value!r}) (hint: route such rows to a side output "
            "with WatermarkStrategy.with_invalid_timestamps_to(tag))",
            op.name,
            subtask,
        )
    op.side_output(emitter.invalid_tag).emit(ColumnBatch(batch.values.take(rows)))
    return batch.take(np.flatnonzero(~bad))
