"""Ray Data in and out: a ``ray.data.Dataset`` as a replayable source, and a sink whose records
come back to the driver as a ``ray.data.Dataset``.

Source: on the driver the dataset is materialised into Arrow blocks in the object store
(``to_arrow_refs``); each block is one split and the offset is the row index in it, so a source
subtask can seek anywhere. Rows arrive as dicts.

Sink: each subtask gathers its records into Arrow tables (dict records become columns, anything
else a single ``value`` column) and hands them to the driver with the job result, where
``JobExecutionResult.get_ray_dataset(name)`` turns them into a Dataset. What a subtask gathered
is in its checkpoints, so after a restore the result holds every record exactly once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pyarrow as pa

from raystream.operators.columnar.schema import table_batch
from raystream.operators.sinks import Sink, SinkContext, SinkWriter
from raystream.operators.sources import Source, SplitReader
from raystream.runtime.elements import Batch, ColumnBatch


@dataclasses.dataclass(frozen=True)
class BlockSplit:
    index: int
    ref: Any  # ObjectRef[pyarrow.Table]


class _BlockReader(SplitReader):
    def __init__(self, split: BlockSplit, offset: int | None, columnar: bool = False):
        import ray

        self.table: pa.Table = ray.get(split.ref)
        self.offset = offset or 0
        self.columnar = columnar

    def read(self, max_records: int) -> list | ColumnBatch | None:
        if self.offset >= self.table.num_rows:
            return None
        part = self.table.slice(self.offset, max_records)
        self.offset += part.num_rows
        if self.columnar:  # the block's columns as they are (one record batch per step)
            return ColumnBatch(table_batch(part))
        return part.to_pylist()  # type: ignore[no-any-return]


class RayDatasetSource(Source):
    """The rows of a bounded ``ray.data.Dataset`` as dict records, or (``columnar=True``) its
    blocks' columns as a columnar stream."""

    def __init__(self, dataset: Any, columnar: bool = False):
        if not hasattr(dataset, "to_arrow_refs"):
            raise TypeError(
                f"RayDatasetSource expects a ray.data.Dataset, got {type(dataset).__name__}"
            )
        self.dataset = dataset
        self.columnar = columnar
        self._refs: list | None = None

    def create_splits(self, parallelism: int) -> list[BlockSplit]:
        if self._refs is None:
            self._refs = list(self.dataset.to_arrow_refs())
        return [BlockSplit(i, ref) for i, ref in enumerate(self._refs)]

    def open_split(self, split: BlockSplit, offset: int | None) -> SplitReader:
        return _BlockReader(split, offset, self.columnar)

    def __getstate__(self) -> dict:
        # the splits carry the block refs; the dataset object itself stays on the driver
        return {"dataset": None, "_refs": self._refs, "columnar": self.columnar}


class _TableWriter(SinkWriter):
    def __init__(self, rows_per_table: int):
        self.rows_per_table = rows_per_table
        self.rows: list = []
        self.tables: list[pa.Table] = []

    def write(self, batch: Batch) -> None:
        if type(batch) is ColumnBatch:  # columns go in as they are, after the rows before them
            self._cut()
            self.tables.append(pa.Table.from_batches([batch.values]))
            return
        self.rows.extend(batch.values)
        if len(self.rows) >= self.rows_per_table:
            self._cut()

    def _cut(self) -> None:
        if not self.rows:
            return
        rows, self.rows = self.rows, []
        if all(isinstance(r, dict) for r in rows):
            table = pa.Table.from_pylist(rows)
        else:
            table = pa.table({"value": rows})
        self.tables.append(table)

    def flush(self) -> None:
        self._cut()

    def result(self) -> list[pa.Table]:
        return self.tables

    def snapshot_state(self, checkpoint_id: int) -> list:
        """Every table so far, then the rows not yet in a table (as one list entry)."""
        return [*self.tables, list(self.rows)] if self.rows else list(self.tables)

    def restore_state(self, entries: list) -> None:
        for entry in entries:
            if isinstance(entry, pa.Table):
                self.tables.append(entry)
            else:
                self.rows.extend(entry)
        if len(self.rows) >= self.rows_per_table:
            self._cut()


class RayDatasetSink(Sink):
    """Collects records into Arrow tables for ``JobExecutionResult.get_ray_dataset(name)``; the
    batches of a columnar stream are kept as they come."""

    accepts_columns = True

    def __init__(self, rows_per_table: int = 65536):
        self.rows_per_table = rows_per_table

    def create_writer(self, context: SinkContext) -> SinkWriter:
        return _TableWriter(self.rows_per_table)

    def describe(self) -> str:
        return "RayDatasetSink"


def dataset_from_sink_results(per_subtask: list[list[pa.Table]]) -> Any:
    import ray.data

    tables = [t for tables in per_subtask for t in (tables or []) if t.num_rows]
    if not tables:
        return ray.data.from_items([])
    return ray.data.from_arrow(tables)
