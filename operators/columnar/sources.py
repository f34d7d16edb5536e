"""Columnar sources: an Arrow table, record batches or a pandas DataFrame as a stream of column
batches (``env.from_arrow`` / ``env.from_pandas``).

The data goes into the Ray object store once, on the driver, cut into chunks of at most
``chunk_rows`` rows; the plan and the task specs hold only the chunks' object refs. Split ``i`` of
``p`` is chunks ``i, i + p, i + 2p, ...``, so all source subtasks move through the data (and,
for data in event-time order, through event time) together, as the partitions of a topic would.
A reader takes its chunks from the object store without copying and emits slices of them; its
position is the number of rows of its split already read, recorded in checkpoints as for any
source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from raystream.errors import GraphError
from raystream.operators.sources import Boundedness, Source, SplitReader
from raystream.runtime.columns import TIMESTAMP_COLUMN
from raystream.runtime.elements import ColumnBatch

__all__ = ["ArrowSource"]

DEFAULT_CHUNK_ROWS = 1 << 16


@dataclass(frozen=True)
class ArrowSplit:
    """Chunks of an :class:`ArrowSource` read by one subtask, with their row counts."""

    index: int
    chunks: tuple[int, ...]
    rows: tuple[int, ...]


def as_record_batches(data: Any, what: str) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """The record batches of a ``pyarrow.Table``, a record batch or a list of them (one
    schema), for ``what`` in error messages."""
    if isinstance(data, pa.Table):
        return data.schema, data.to_batches()
    if isinstance(data, pa.RecordBatch):
        return data.schema, [data]
    if isinstance(data, (list, tuple)) and data:
        batches: list[pa.RecordBatch] = []
        schema = None
        for i, b in enumerate(data):
            if isinstance(b, pa.Table):
                parts = b.to_batches()
                b_schema = b.schema
            elif isinstance(b, pa.RecordBatch):
                parts, b_schema = [b], b.schema
            else:
                raise GraphError(
                    f"{what}: item {i} is a {type(b).__name__}; expected pyarrow record "
                    "batches or tables"
                )
            if schema is None:
                schema = b_schema
            elif not b_schema.equals(schema):
                from raystream.operators.columnar.schema import schema_difference

                raise GraphError(
                    f"{what}: item {i} has another schema than item 0: "
                    f"{schema_difference(schema, b_schema)}"
                )
            batches.extend(parts)
        assert schema is not None
        return schema, batches
    raise GraphError(
        f"{what} expects a pyarrow.Table, a pyarrow.RecordBatch or a non-empty list of them, "
        f"got {type(data).__name__}"
    )


def _chunks(batches: list[pa.RecordBatch], chunk_rows: int) -> list[pa.RecordBatch]:
    """The rows of ``batches`` re-cut into chunks of at most ``chunk_rows`` rows."""
    out: list[pa.RecordBatch] = []
    for b in batches:
        for start in range(0, b.num_rows, chunk_rows):
            out.append(b.slice(start, chunk_rows))
    return out


class ArrowSource(Source):
    """Bounded columnar source over Arrow data, put into the object store when it is created
    (on the driver; Ray must be running). See the module docstring."""

    boundedness = Boundedness.BOUNDED
    columnar = True

    def __init__(self, data: Any, chunk_rows: int = DEFAULT_CHUNK_ROWS, what: str = "from_arrow"):
        import ray

        if not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise GraphError(f"{what}: chunk_rows must be a positive int, got {chunk_rows!r}")
        schema, batches = as_record_batches(data, what)
        if TIMESTAMP_COLUMN in schema.names:
            raise GraphError(f"{what}: the column name {TIMESTAMP_COLUMN!r} is reserved")
        self.schema = schema
        chunks = _chunks(batches, chunk_rows)
        self.rows = [c.num_rows for c in chunks]
        # one object per chunk, owned by the driver; the plan carries only the refs
        self.refs = [ray.put(pa.Table.from_batches([c])) for c in chunks]

    def describe(self) -> str:
        return f"ArrowSource({sum(self.rows)} rows, {len(self.rows)} chunks)"

    def create_splits(self, parallelism: int) -> list[ArrowSplit]:
        splits = []
        for i in range(parallelism):
            chunks = tuple(range(i, len(self.refs), parallelism))
            splits.append(ArrowSplit(i, chunks, tuple(self.rows[c] for c in chunks)))
        return splits

    def open_split(self, split: ArrowSplit, offset: int | None) -> SplitReader:
        return _ChunkReader([self.refs[c] for c in split.chunks], list(split.rows), offset or 0)


class _ChunkReader(SplitReader):
    """Reads a split's chunks in order; ``offset`` is the number of rows of the split read."""

    def __init__(self, refs: list, rows: list[int], offset: int):
        self.refs = refs
        self.rows = rows
        self.offset = offset
        self._chunk = 0
        self._in_chunk = offset  # rows of the current chunk already read
        while self._chunk < len(rows) and self._in_chunk >= rows[self._chunk]:
            self._in_chunk -= rows[self._chunk]
            self._chunk += 1
        self._table: pa.RecordBatch | None = None

    def read(self, max_records: int) -> ColumnBatch | None:
        import ray

        if self._chunk >= len(self.rows):
            return None
        if self._table is None:
            table = ray.get(self.refs[self._chunk])
            batches = table.to_batches()
            self._table = (
                batches[0] if len(batches) == 1 else table.combine_chunks().to_batches()[0]
            )
        n = min(max_records, self.rows[self._chunk] - self._in_chunk)
        assert self._table is not None
        part = self._table.slice(self._in_chunk, n)
        self._in_chunk += n
        self.offset += n
        if self._in_chunk >= self.rows[self._chunk]:
            self._chunk += 1
            self._in_chunk = 0
            self._table = None
        return ColumnBatch(part)
