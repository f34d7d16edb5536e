"""Internal: local pre-aggregation of columnar windows before the shuffle (two-phase
aggregation).

When a columnar window has no allowed lateness and no late side output, nothing about a late
record is needed downstream but how many records were dropped; so the producer may fold each
batch into per-(key, window) accumulators before ``key_by`` sends them on, and the window
operator merges accumulators instead of grouping raw rows (``merge_partials``). The shuffle then
carries one row per key and window of a batch instead of one per record.

Nothing changes in what is computed: lateness is still decided by the window operator with its
own watermark, per (key, window) accumulator — with zero allowed lateness a window takes all of
its records or none — and the dropped-record count stays exact because each accumulator row
also counts the records whose *newest* window it is (a record is refused by all its windows
exactly when its newest window is late). The operator holds no state: a batch in, its
accumulators out, so checkpoints and restores are unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from raystream.api.aggregates import Aggregate
from raystream.operators.base import StreamOperator
from raystream.operators.columnar.schema import table_batch
from raystream.operators.columnar.window import NEWEST, WINDOW_START, ColumnWindowOperator
from raystream.runtime.elements import ColumnBatch

__all__ = ["LocalWindowAggregateOperator"]


class LocalWindowAggregateOperator(StreamOperator):
    """Folds each column batch into accumulators per key and window (see the module
    docstring); emits them stamped with their window's ``end − 1``."""

    def __init__(
        self,
        name: str,
        key_columns: tuple[str, ...],
        assigner: Any,
        aggregates: tuple[Aggregate, ...],
    ):
        super().__init__(name)
        # the window operator's geometry and accumulators: the two halves must agree
        self.window = ColumnWindowOperator(name, key_columns, assigner, 0, None, aggregates)

    def process_batch(self, batch: Any) -> None:
        n = len(batch)
        if not n:
            return
        window = self.window
        rb = batch.values
        stamps = window.checked_timestamps(batch, f"operator {self.name!r}")
        rows, starts = window.assign_pairs(stamps)
        table = window.pair_table(rb, rows, starts)
        newest: np.ndarray = np.ones(len(rows), dtype=np.int64)
        if window.slide != window.size:  # a record's newest window is its first pair
            newest[1:] = rows[1:] != rows[:-1]
        table = table.append_column(NEWEST, pa.array(newest))
        partial = window.agg.partial_with_newest(table)
        ends = partial.column(WINDOW_START).to_numpy() + window.size
        self.output.emit(ColumnBatch(table_batch(partial), (ends - 1).astype(np.int64)))
