"""Internal: declarative aggregates (``raystream.agg``) computed over Arrow columns.

Every aggregate is kept as accumulator columns that merge associatively:

===========  ==============================  ======================
aggregate    accumulators (per group)        merged with
===========  ==============================  ======================
count()      rows                            sum
count(c)     non-null values of c            sum
sum(c)       sum of non-null values          sum (nulls skipped)
min/max(c)   min/max of non-null values      min/max
mean(c)      sum and count of c              sum, sum
first(c)     first non-null value            first (arrival order)
last(c)      last non-null value             last (arrival order)
===========  ==============================  ======================

:meth:`ColumnAggregator.partial` groups the rows of one batch (Arrow's hash aggregation,
single-threaded so that first/last follow arrival order), :meth:`~ColumnAggregator.merge`
folds accumulator tables (concatenated in arrival order) the same way, and
:meth:`~ColumnAggregator.results` turns accumulators into the output columns. For late firings,
which emit one result per late record, :meth:`~ColumnAggregator.running` computes per-row
running accumulators within runs of one group and :meth:`~ColumnAggregator.combine_rows` adds
them to the stored state row by row. No Python runs per row (the running accumulators loop over
runs, not rows). No Ray here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raystream.api.aggregates import Aggregate
from raystream.operators.columnar.schema import ColumnError


@dataclass(frozen=True)
class _Acc:
    name: str  # column name in accumulator tables
    kind: str  # count_all | count | sum | min | max | first | last
    column: str | None


_MERGE = {"count_all": "sum", "count": "sum", "sum": "sum", "min": "min", "max": "max"}
_MERGE.update({"first": "first", "last": "last"})

_NUMERIC = ("sum", "mean")


class ColumnAggregator:
    """The accumulators of some declarative aggregates, grouped by ``group_columns``."""

    def __init__(self, aggregates: tuple[Aggregate, ...], group_columns: list[str], operator: str):
        self.aggregates = aggregates
        self.group_columns = list(group_columns)
        self.operator = operator
        accs: dict[tuple[str, str | None], _Acc] = {}

        def acc(kind: str, column: str | None) -> _Acc:
            found = accs.get((kind, column))
            if found is None:
                found = accs[(kind, column)] = _Acc(f"__acc{len(accs)}", kind, column)
            return found

        #: per aggregate, the accumulators its result is computed from
        self.sources: list[list[_Acc]] = []
        for a in aggregates:
            col = None if a.column is None else str(a.column)
            if a.kind == "count":
                self.sources.append([acc("count_all" if col is None else "count", col)])
            elif a.kind == "mean":
                self.sources.append([acc("sum", col), acc("count", col)])
            else:
                self.sources.append([acc(a.kind, col)])
        self.accs = list(accs.values())
        self.value_columns = sorted({a.column for a in self.accs if a.column is not None})
        self._numeric = sorted(
            {str(a.column) for a in aggregates if a.kind in _NUMERIC and a.column is not None}
        )

    # -- checks ------------------------------------------------------------------------------------

    def check_types(self, schema: pa.Schema) -> None:
        """sum/mean need numbers: fail naming the operator and the column otherwise."""
        for c in self._numeric:
            t = schema.field(c).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
                raise ColumnError(
                    f"operator {self.operator!r}: sum/mean of column {c!r} needs numbers, but "
                    f"the column has type {t}",
                    self.operator,
                )

    # -- grouping ----------------------------------------------------------------------------------

    def _group(self, table: pa.Table, specs: list[tuple[Any, str]], names: list[str]) -> pa.Table:
        """``table`` grouped by the group columns, with ``specs`` aggregated into ``names``."""
        out = table.group_by(self.group_columns, use_threads=False).aggregate(specs)
        produced = [_output_name(col, fn) for col, fn in specs]
        cols = [out.column(c) for c in self.group_columns]
        cols += [out.column(p) for p in produced]
        return pa.Table.from_arrays(cols, names=self.group_columns + names)

    def partial(self, table: pa.Table) -> pa.Table:
        """The accumulators of each group of raw rows (group columns + accumulator columns)."""
        specs: list[tuple[Any, str]] = []
        for a in self.accs:
            specs.append(([], "count_all") if a.kind == "count_all" else (a.column, a.kind))
        return self._group(table, specs, [a.name for a in self.accs])

    def partial_with_newest(self, table: pa.Table) -> pa.Table:
        """:meth:`partial` plus the sum of the column ``__newest`` (see local_aggregate.py),
        as the last column."""
        from raystream.operators.columnar.window import NEWEST

        specs: list[tuple[Any, str]] = []
        for a in self.accs:
            specs.append(([], "count_all") if a.kind == "count_all" else (a.column, a.kind))
        specs.append((NEWEST, "sum"))
        return self._group(table, specs, [a.name for a in self.accs] + [NEWEST])

    def merge(self, tables: list[pa.Table], grouped: bool = True) -> pa.Table:
        """One accumulator row per group of several accumulator tables (in arrival order).
        ``grouped``: each table holds a group at most once (one table is then returned as
        it is)."""
        if len(tables) == 1 and grouped:
            return tables[0]
        table = pa.concat_tables(tables)
        specs: list[tuple[Any, str]] = [(a.name, _MERGE[a.kind]) for a in self.accs]
        return self._group(table, specs, [a.name for a in self.accs])

    def empty(self, schema: pa.Schema) -> pa.Table:
        """An accumulator table without rows, for input rows of ``schema`` (group columns
        taken from the accumulators of an empty input)."""
        return self.partial(schema.empty_table())

    # -- results -----------------------------------------------------------------------------------

    def results(self, acc: pa.Table) -> list[tuple[str, Any]]:
        """``(output name, array)`` per aggregate."""
        out = []
        for a, sources in zip(self.aggregates, self.sources):
            if a.kind == "mean":
                total = pc.cast(acc.column(sources[0].name), pa.float64())
                count = acc.column(sources[1].name)
                nonzero = pc.greater(count, 0)
                value = pc.if_else(nonzero, pc.divide(total, pc.cast(count, pa.float64())), None)
            else:
                value = acc.column(sources[0].name)
            out.append((a.output_name, value))
        return out

    # -- late firings: running accumulators --------------------------------------------------------

    def running(self, table: pa.Table, runs: list[tuple[int, int]]) -> pa.Table:
        """Per row of ``table`` (raw rows, sorted so that each group is one run ``[start,
        end)`` in arrival order), the accumulators of its group's rows up to and including it
        (the group columns copied)."""
        n = table.num_rows
        cols = [table.column(c) for c in self.group_columns]
        arrays: list[Any] = []
        for a in self.accs:
            if a.kind == "count_all":
                arrays.append(pa.array(_run_positions(runs, n) + 1, type=pa.int64()))
                continue
            values = table.column(a.column).combine_chunks()  # type: ignore[arg-type]
            valid = ~_null_mask(values)
            if a.kind == "count":
                arrays.append(pa.array(_run_cumsum(valid.astype(np.int64), runs), type=pa.int64()))
            elif a.kind == "sum":
                arrays.append(_running_sum(values, valid, runs))
            elif a.kind in ("first", "last"):
                idx = _running_index(valid, runs, first=a.kind == "first")
                arrays.append(_take_or_null(values, idx))
            else:  # min, max
                idx = _running_extreme(values, valid, runs, smallest=a.kind == "min")
                arrays.append(_take_or_null(values, idx))
        return pa.Table.from_arrays(
            cols + arrays, names=self.group_columns + [a.name for a in self.accs]
        )

    def combine_rows(self, base: pa.Table, delta: pa.Table) -> pa.Table:
        """Row by row: the accumulators of ``base`` (stored state; rows whose accumulators are
        all null stand for a group without state) merged with those of ``delta`` (newer)."""
        cols = [delta.column(c) for c in self.group_columns]
        arrays = []
        for a in self.accs:
            old, new = base.column(a.name), delta.column(a.name)
            if a.kind in ("count_all", "count"):
                arrays.append(pc.add(pc.fill_null(old, 0), new))
            elif a.kind == "sum":
                both_null = pc.and_(pc.is_null(old), pc.is_null(new))
                total = pc.add(pc.fill_null(old, 0), pc.fill_null(new, 0))
                arrays.append(pc.if_else(both_null, pa.scalar(None, total.type), total))
            elif a.kind == "min":
                arrays.append(pc.min_element_wise(old, new))
            elif a.kind == "max":
                arrays.append(pc.max_element_wise(old, new))
            elif a.kind == "first":
                arrays.append(pc.coalesce(old, new))
            else:  # last
                arrays.append(pc.coalesce(new, old))
        return pa.Table.from_arrays(
            cols + arrays, names=self.group_columns + [a.name for a in self.accs]
        )


def _output_name(column: Any, function: str) -> str:
    """The column name Arrow's group_by gives an aggregation."""
    if not column:
        return function
    return f"{column}_{function}"


def _null_mask(values: Any) -> np.ndarray:
    if not values.null_count:
        return np.zeros(len(values), dtype=bool)
    return pc.is_null(values).to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def _run_positions(runs: list[tuple[int, int]], n: int) -> np.ndarray:
    """Position of each row inside its run (0, 1, 2, ... restarting at every run)."""
    pos: np.ndarray = np.empty(n, dtype=np.int64)
    for start, end in runs:
        pos[start:end] = np.arange(end - start)
    return pos


def _run_cumsum(x: np.ndarray, runs: list[tuple[int, int]]) -> np.ndarray:
    out = np.empty_like(x)
    for start, end in runs:
        out[start:end] = np.cumsum(x[start:end])
    return out


def _running_sum(values: Any, valid: np.ndarray, runs: list[tuple[int, int]]) -> Any:
    t = values.type
    filled = pc.fill_null(values, pa.scalar(0, t)).to_numpy(zero_copy_only=False)
    acc_type = pa.int64() if pa.types.is_integer(t) else pa.float64()
    sums = _run_cumsum(np.where(valid, filled, 0).astype(acc_type.to_pandas_dtype()), runs)
    seen = _run_cumsum(valid.astype(np.int64), runs) > 0
    return pa.array(sums, type=acc_type, mask=~seen)


def _running_index(valid: np.ndarray, runs: list[tuple[int, int]], first: bool) -> np.ndarray:
    """Per row, the index of the first (or last) valid row of its run up to it; -1 if none."""
    n = len(valid)
    idx: np.ndarray = np.arange(n, dtype=np.int64)
    out: np.ndarray = np.empty(n, dtype=np.int64)
    for start, end in runs:
        if first:
            marked = np.where(valid[start:end], idx[start:end], n)
            got = np.minimum.accumulate(marked)
            out[start:end] = np.where(got == n, -1, got)
        else:
            marked = np.where(valid[start:end], idx[start:end], -1)
            out[start:end] = np.maximum.accumulate(marked)
    return out


def _running_extreme(
    values: Any, valid: np.ndarray, runs: list[tuple[int, int]], smallest: bool
) -> np.ndarray:
    """Per row, the index of the smallest (largest) valid value of its run up to it; -1 if
    none. Values of any sortable type are compared through their dense rank."""
    n = len(values)
    order = "ascending" if smallest else "descending"
    ranks = pc.rank(values, sort_keys=order, tiebreaker="dense")  # nulls last (masked below)
    rank = ranks.to_numpy(zero_copy_only=False).astype(np.int64)
    rank = np.where(valid, rank, np.iinfo(np.int64).max)
    index_of_rank: np.ndarray = np.full(
        int(rank[valid].max()) + 1 if valid.any() else 1, -1, dtype=np.int64
    )
    rows = np.flatnonzero(valid)
    index_of_rank[rank[rows][::-1]] = rows[::-1]  # the first row with each rank
    out: np.ndarray = np.full(n, -1, dtype=np.int64)
    for start, end in runs:
        best = np.minimum.accumulate(rank[start:end])
        has = best != np.iinfo(np.int64).max
        out[start:end][has] = index_of_rank[best[has]]
    return out


def _take_or_null(values: Any, idx: np.ndarray) -> Any:
    """``values[idx]`` with null where ``idx`` is -1."""
    missing = idx < 0
    taken = values.take(pa.array(np.where(missing, 0, idx), type=pa.int64()))
    if not missing.any():
        return taken
    return pc.if_else(pa.array(~missing), taken, pa.scalar(None, values.type))
