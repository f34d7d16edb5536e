"""Internal: columns on the wire — a :class:`ColumnBatch` as one Arrow IPC stream.

A sender encodes each columnar message into an Arrow IPC stream held in a ``pyarrow.Buffer``
(schema, then one record batch; the event timestamps, if any, ride as a last int64 column under
a reserved name). Ray hands a ``pyarrow.Buffer`` argument to the consumer without copying it out
of the object store (above Ray's inline limit) and Arrow reads IPC without copying, so the
columns the consumer's operators see are views of the bytes the producer wrote.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from raystream.errors import SerializationError
from raystream.runtime.elements import ColumnBatch

#: the column that carries a message's event timestamps (no user column may have this name)
TIMESTAMP_COLUMN = "__raystream_timestamp__"

#: the type a columnar payload has when it reaches the consumer
PAYLOAD_TYPE = pa.Buffer


def encode(batch: ColumnBatch, channel_name: str) -> pa.Buffer:
    """The Arrow IPC stream of ``batch`` (timestamps as the reserved last column)."""
    rb = batch.values
    if batch.timestamps is not None:
        if TIMESTAMP_COLUMN in rb.schema.names:
            raise SerializationError(
                f"channel {channel_name!r}: a column is named {TIMESTAMP_COLUMN!r}, which "
                "raystream reserves for event timestamps; rename it"
            )
        rb = rb.append_column(TIMESTAMP_COLUMN, pa.array(batch.timestamps, type=pa.int64()))
    sink = pa.BufferOutputStream()
    try:
        with pa.ipc.new_stream(sink, rb.schema) as writer:
            writer.write_batch(rb)
    except pa.ArrowException as exc:
        raise SerializationError(
            f"channel {channel_name!r}: cannot write columns ({rb.schema}) as Arrow IPC: {exc}"
        ) from exc
    return sink.getvalue()


def decode(payload: Any) -> ColumnBatch:
    """The :class:`ColumnBatch` an :func:`encode` d payload holds (no copy of the columns)."""
    rb = pa.ipc.open_stream(payload).read_next_batch()
    names = rb.schema.names
    if names and names[-1] == TIMESTAMP_COLUMN:
        last = len(names) - 1
        stamps = rb.column(last).to_numpy()
        return ColumnBatch(rb.remove_column(last), stamps)
    return ColumnBatch(rb)


def concat(parts: list[ColumnBatch]) -> ColumnBatch:
    """One batch of the rows of ``parts`` in order (all of one schema)."""
    if len(parts) == 1:
        return parts[0]
    rb = concat_record_batches([p.values for p in parts])
    if all(p.timestamps is None for p in parts):
        return ColumnBatch(rb)
    stamps = np.concatenate([_stamps_or_min(p) for p in parts])
    return ColumnBatch(rb, stamps)


def _stamps_or_min(part: ColumnBatch) -> np.ndarray:
    if part.timestamps is not None:
        return part.timestamps  # type: ignore[no-any-return]
    from raystream.core.time import MIN_TS

    return np.full(len(part), MIN_TS, dtype=np.int64)


def concat_record_batches(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """One record batch of the rows of ``batches`` (one schema), with contiguous buffers."""
    if len(batches) == 1:
        return batches[0]
    concat = getattr(pa, "concat_batches", None)  # pyarrow >= 19
    if concat is not None:
        return concat(batches)  # type: ignore[no-any-return]
    out = pa.Table.from_batches(batches).combine_chunks().to_batches()
    if len(out) != 1:  # no rows, or a column too large for one array
        if not out:
            return batches[0].slice(0, 0)
        raise SerializationError(
            f"{len(batches)} record batches of {sum(b.num_rows for b in batches)} rows do not "
            "fit one record batch"
        )
    return out[0]
