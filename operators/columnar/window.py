"""Internal: event-time windows with declarative aggregates over a keyed columnar stream.

Record path per batch, all vectorized: the window start(s) of every row (one for tumbling
windows, ``size / slide`` for sliding ones) → each (row, window) pair is on time (the window has
not fired), late but within the allowed lateness (the window fired, its cleanup has not come),
or refused → on-time pairs are grouped by key and window into accumulators
(:class:`ColumnAggregator`) appended to the window's state → late pairs fire their key's window
once per record (a late firing) → records refused by every window and late by the element rule
go to the late side output (as columns) or are counted.

The semantics are the row path's (SEMANTICS §2.4, §2.6, the default event-time trigger): a
window fires when the watermark reaches ``end − 1``, with one result row per key (key columns,
``window_start``, ``window_end``, one column per aggregate) stamped ``end − 1``; a late record
within the allowed lateness fires its key's window again with the full contents; state goes at
``end − 1 + allowed lateness``.

State: per window, accumulator tables of keys whose firing is pending (``open``) and of keys
that fired (``done``), kept in memory as Arrow tables and merged lazily. A checkpoint cuts them
by key group and writes each key group's share into the keyed state backend (one raw-table
entry per key group, under a key that hashes to that group), so checkpoints, restore and
rescaling work as for any keyed state, on both backends.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raystream.api.aggregates import Aggregate
from raystream.core.column_keys import ColumnKeyGroups, distinct_keys
from raystream.core.keys import key_group_of
from raystream.core.time import MAX_TS, MIN_TS
from raystream.errors import GraphError, InvalidKeyError
from raystream.operators.base import StreamOperator
from raystream.operators.columnar.aggregates import ColumnAggregator
from raystream.operators.columnar.schema import (
    ColumnError,
    SchemaGuard,
    require_columns,
    require_no_nulls,
)
from raystream.operators.windows.assigners import (
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)
from raystream.runtime.elements import ColumnBatch

__all__ = ["ColumnWindowOperator"]

STATE_NAME = "__column_windows__"
#: the window-start column of accumulator tables (an internal name no user column may take)
WINDOW_START = "__window_start"
#: in pre-aggregated input (local_aggregate.py): records whose newest window this row's is
NEWEST = "__newest"


@dataclass
class _Window:
    start: int
    #: accumulators of keys whose firing at ``end − 1`` is still to come
    open: list[pa.Table] = field(default_factory=list)
    #: accumulators of keys that fired (kept for late firings until the cleanup)
    done: list[pa.Table] = field(default_factory=list)


class ColumnWindowOperator(StreamOperator):
    """``key_by("k").window(assigner).aggregate(agg...)`` on a columnar stream."""

    def __init__(
        self,
        name: str,
        key_columns: tuple[str, ...],
        assigner: Any,
        allowed_lateness_ms: int,
        late_tag_id: str | None,
        aggregates: tuple[Aggregate, ...],
        merge_partials: bool = False,
    ):
        super().__init__(name)
        if type(assigner) is TumblingEventTimeWindows:
            self.size, self.slide = assigner.size, assigner.size
        elif type(assigner) is SlidingEventTimeWindows:
            self.size, self.slide = assigner.size, assigner.slide
        else:
            raise GraphError(
                f"window {name!r}: declarative aggregates on a columnar stream take tumbling or "
                f"sliding event-time windows, not {type(assigner).__name__} (hint: to_rows() "
                "and aggregate on the row path, which takes every window kind)"
            )
        self.offset = assigner.offset
        self.key_columns = tuple(key_columns)
        self.lateness = allowed_lateness_ms
        self.late_tag_id = late_tag_id
        self.aggregates = aggregates
        if merge_partials and (allowed_lateness_ms or late_tag_id is not None):
            raise GraphError(
                f"window {name!r}: pre-aggregated input needs zero allowed lateness and no late "
                "side output"
            )
        #: the input is accumulators of a LocalWindowAggregateOperator, not records
        self.merge_partials = merge_partials
        self.windows: dict[int, _Window] = {}
        self.late_dropped = 0
        self.agg = ColumnAggregator(aggregates, [*self.key_columns, WINDOW_START], name)
        self.schema_guard = SchemaGuard(name)
        self._checked_types = False
        self._key_groups: ColumnKeyGroups | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def _backend(self) -> Any:
        ctx = self.ctx
        if ctx is None or ctx.keyed_backend is None:
            raise GraphError(f"window operator {self.name!r} has no keyed state backend")
        return ctx.keyed_backend

    def open(self) -> None:
        backend = self._backend()
        self._table = backend.table(STATE_NAME)
        assert self.ctx is not None
        self._key_groups = ColumnKeyGroups(self.key_columns, self.ctx.max_parallelism)

    def initialize_state(self, restored: Any) -> None:
        super().initialize_state(restored)
        if restored is None:
            return
        backend = self._backend()
        table = backend.table(STATE_NAME)
        for rep in sorted(backend.keys(STATE_NAME)):
            for start, (open_part, done_part) in sorted(table.get(rep).items()):
                w = self.windows.get(start)
                if w is None:
                    w = self.windows[start] = _Window(start)
                if open_part is not None:
                    w.open.append(open_part)
                if done_part is not None:
                    w.done.append(done_part)

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m["num_late_records_dropped"] = self.late_dropped
        return m

    # -- records ----------------------------------------------------------------------------------

    def _where(self) -> str:
        ctx = self.ctx
        return f"operator {self.name!r}" + (f", subtask {ctx.subtask_index}" if ctx else "")

    def process_batch(self, batch: Any) -> None:
        if type(batch) is not ColumnBatch:
            raise GraphError(f"operator {self.name!r} takes columns, got {type(batch).__name__}")
        n = len(batch)
        if not n:
            return
        if self.merge_partials:
            self._add_partials(batch.values)
            return
        rb = batch.values
        stamps = self.checked_timestamps(batch, self._where())
        rows, starts = self.assign_pairs(stamps)
        wm = self.current_watermark
        max_ts: np.ndarray = starts + (self.size - 1)
        lateness = self.lateness
        cleanup = np.minimum(max_ts, MAX_TS - lateness) + lateness
        on_time = max_ts > wm
        allowed = ~on_time & (cleanup > wm)
        if on_time.all():
            self._add_on_time(rb, rows, starts)
            return
        if on_time.any():
            self._add_on_time(rb, rows[on_time], starts[on_time])
        if allowed.any():
            self._fire_late(rb, rows[allowed], starts[allowed])
        added: np.ndarray = np.zeros(n, dtype=bool)
        added[rows[on_time | allowed]] = True
        threshold = wm - lateness  # t + lateness <= wm
        if threshold >= MIN_TS:
            late = ~added & (stamps <= threshold)
            if late.any():
                self._late(batch, np.flatnonzero(late))

    def checked_timestamps(self, batch: ColumnBatch, where: str) -> np.ndarray:
        """The timestamps of a batch of records, once the batch passed the checks: timestamps
        present, the stream's schema, key and aggregated columns there, no null key."""
        rb = batch.values
        stamps = batch.timestamps
        if stamps is None:
            raise ColumnError(
                f"{where}: event-time windows need timestamps: give the source a "
                "WatermarkStrategy (e.g. ...with_timestamp_column('ts')) or call "
                "assign_timestamps_and_watermarks()",
                self.name,
            )
        self.schema_guard.check(batch)
        if not self._checked_types:
            require_columns(rb.schema, self.key_columns, self.name, "key")
            require_columns(rb.schema, self.agg.value_columns, self.name, "aggregated")
            self.agg.check_types(rb.schema)
            self._checked_types = True
        for c in self.key_columns:
            require_no_nulls(rb.column(c), c, self.name, "key")
        return stamps  # type: ignore[no-any-return]

    def assign_pairs(self, stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, starts)``: every (row, window start) pair, rows in arrival order."""
        last = stamps - np.mod(stamps - self.offset, self.slide)
        n = len(stamps)
        if self.slide == self.size:
            return np.arange(n, dtype=np.int64), last
        k = -(-self.size // self.slide)
        candidates = last[:, None] - np.arange(k, dtype=np.int64)[None, :] * self.slide
        inside = candidates > (stamps - self.size)[:, None]
        rows, _ = np.nonzero(inside)
        return rows.astype(np.int64), candidates[inside]

    def pair_table(self, rb: pa.RecordBatch, rows: np.ndarray, starts: np.ndarray) -> pa.Table:
        """Key, window start and aggregated columns of the pairs ``(rows, starts)``."""
        names = list(self.key_columns) + [
            c for c in self.agg.value_columns if c not in self.key_columns
        ]
        if len(rows) == rb.num_rows and np.array_equal(rows, np.arange(len(rows))):
            arrays = [rb.column(c) for c in names]
        else:
            idx = pa.array(rows, type=pa.int64())
            arrays = [rb.column(c).take(idx) for c in names]
        arrays.append(pa.array(starts, type=pa.int64()))
        return pa.Table.from_arrays(arrays, names=names + [WINDOW_START])

    def _add_on_time(self, rb: pa.RecordBatch, rows: np.ndarray, starts: np.ndarray) -> None:
        self._add_partial(self.agg.partial(self.pair_table(rb, rows, starts)))

    def _add_partials(self, rb: pa.RecordBatch) -> None:
        """Pre-aggregated input: accumulators of windows that are not late join their window;
        those of late windows count their records whose newest window it was as dropped (with
        zero allowed lateness a record is dropped when its newest window is late)."""
        starts = rb.column(WINDOW_START).to_numpy()
        late = starts + (self.size - 1) <= self.current_watermark
        newest = rb.column(rb.num_columns - 1)
        if late.any():
            self.late_dropped += int(newest.to_numpy()[late].sum())
            rb = rb.filter(pa.array(~late))
            if not rb.num_rows:
                return
        # a message may join the accumulators of several upstream batches (the channel seals
        # what it buffered into one): equal (key, window) rows fold together when the window
        # merges its parts (which, in this mode, are never taken as grouped)
        self._add_partial(pa.Table.from_batches([rb.remove_column(rb.num_columns - 1)]))

    def _add_partial(self, partial: pa.Table) -> None:
        """Accumulators of on-time (key, window) pairs into their windows."""
        for start, part in _by_window(partial):
            w = self.windows.get(start)
            if w is None:
                w = self.windows[start] = _Window(start)
            if w.done:
                # only after a restore (the watermark starts again below the window's end):
                # keys that fired already fold into their fired state and do not fire again at
                # end − 1; new keys fire then (as the row path's per-key timers do)
                fired_keys = self._merge(w.done).select(self.agg.group_columns)
                keys = self.agg.group_columns
                again = part.join(fired_keys, keys=keys, join_type="left semi")
                new = part.join(fired_keys, keys=keys, join_type="left anti")
                if again.num_rows:
                    w.done.append(again.select(part.schema.names))
                if new.num_rows:
                    w.open.append(new.select(part.schema.names))
            else:
                w.open.append(part)
            if len(w.open) > 32:  # keep the parts few: merging is cheap, many tiny tables not
                w.open = [self._merge(w.open)]

    def _merge(self, parts: list[pa.Table]) -> pa.Table:
        """One accumulator row per (key, window) of ``parts`` (a part of pre-aggregated input
        may hold a key twice: several upstream batches in one message)."""
        return self.agg.merge(parts, grouped=not self.merge_partials)

    def _late(self, batch: ColumnBatch, rows: np.ndarray) -> None:
        if self.late_tag_id is not None:
            self.side_output(self.late_tag_id).emit(batch.take(rows))
        else:
            self.late_dropped += len(rows)

    # -- late firings -----------------------------------------------------------------------------

    def _fire_late(self, rb: pa.RecordBatch, rows: np.ndarray, starts: np.ndarray) -> None:
        """Pairs of windows that fired but are within the allowed lateness: each fires its
        key's window at once with the contents up to and including it (SEMANTICS §2.6)."""
        agg = self.agg
        table = self.pair_table(rb, rows, starts)
        codes, _ = distinct_keys(table, agg.group_columns, self._where())
        order = np.argsort(codes, kind="stable")
        table = table.take(pa.array(order, type=pa.int64()))
        sorted_codes = codes[order]
        cuts: np.ndarray = np.flatnonzero(np.diff(sorted_codes)) + 1
        bounds = np.concatenate(([0], cuts, [len(sorted_codes)])).tolist()
        runs = list(zip(bounds[:-1], bounds[1:]))
        running = agg.running(table, runs)
        base = self._stored(running)
        combined = agg.combine_rows(base, running)
        self._emit_results(combined, running.column(WINDOW_START).to_numpy())
        for start, part in _by_window(agg.partial(table)):
            w = self.windows.get(start)
            if w is None:
                w = self.windows[start] = _Window(start)
            w.done.append(part)

    def _stored(self, running: pa.Table) -> pa.Table:
        """The fired state of each row's key and window (null accumulators where none)."""
        agg = self.agg
        keys = agg.group_columns
        stored = [
            self._merge(self.windows[s].done)
            for s in sorted(set(running.column(WINDOW_START).to_pylist()))
            if s in self.windows and self.windows[s].done
        ]
        left = running.select(keys).append_column(
            "__row", pa.array(np.arange(running.num_rows), type=pa.int64())
        )
        if not stored:
            nulls = [
                pa.nulls(running.num_rows, running.schema.field(a.name).type) for a in agg.accs
            ]
            return pa.Table.from_arrays(
                [running.column(k) for k in keys] + nulls, names=keys + [a.name for a in agg.accs]
            )
        state = pa.concat_tables(stored)
        joined = left.join(state, keys=keys, join_type="left outer").sort_by("__row")
        return joined.drop_columns(["__row"]).select(keys + [a.name for a in agg.accs])

    # -- firing -----------------------------------------------------------------------------------

    def on_watermark(self, timestamp: int) -> None:
        size = self.size
        for start in sorted(self.windows):
            w = self.windows[start]
            max_ts = start + size - 1
            if max_ts > timestamp:
                break
            if w.open:
                merged = self._merge(w.open)
                w.open = []
                self._emit_results(merged, None)
                w.done.append(merged)
            cleanup = min(max_ts + self.lateness, MAX_TS)
            if cleanup <= timestamp:
                del self.windows[start]
            elif len(w.done) > 1:
                w.done = [self._merge(w.done)]

    def _emit_results(self, acc: pa.Table, starts: np.ndarray | None) -> None:
        """One result row per accumulator row: keys, window start/end, aggregates."""
        n = acc.num_rows
        if not n:
            return
        if starts is None:
            starts = acc.column(WINDOW_START).to_numpy()
        ends: np.ndarray = starts + self.size
        arrays = [acc.column(c) for c in self.key_columns]
        names = list(self.key_columns)
        arrays += [pa.array(starts, type=pa.int64()), pa.array(ends, type=pa.int64())]
        names += ["window_start", "window_end"]
        for name, values in self.agg.results(acc):
            arrays.append(values)
            names.append(name)
        table = pa.Table.from_arrays(arrays, names=names)
        for rb in table.combine_chunks().to_batches():
            stop = rb.num_rows
            self.output.emit(ColumnBatch(rb, (ends[:stop] - 1).astype(np.int64)))
            ends = ends[stop:]

    # -- checkpoints ------------------------------------------------------------------------------

    def snapshot_state(self, checkpoint_id: int) -> Any:
        """Every window's accumulators, cut by key group into the keyed backend."""
        ctx = self.ctx
        assert ctx is not None and self._key_groups is not None
        entries: dict[int, dict[int, list]] = {}
        for start, w in self.windows.items():
            for which, attr in ((0, "open"), (1, "done")):
                parts = getattr(w, attr)
                if not parts:
                    continue
                merged = self._merge(parts)
                setattr(w, attr, [merged])
                if not merged.num_rows:
                    continue
                kgs = self._key_groups(merged, self._where())
                order = np.argsort(kgs, kind="stable")
                ordered = merged.take(pa.array(order, type=pa.int64()))
                sorted_kgs = kgs[order]
                cuts: np.ndarray = np.flatnonzero(np.diff(sorted_kgs)) + 1
                bounds = np.concatenate(([0], cuts, [len(sorted_kgs)])).tolist()
                for a, b in zip(bounds[:-1], bounds[1:]):
                    kg = int(sorted_kgs[a])
                    slot = entries.setdefault(kg, {}).setdefault(start, [None, None])
                    slot[which] = ordered.slice(a, b - a).combine_chunks()
        table = self._table
        reps = representative_keys(ctx.max_parallelism)
        backend = self._backend()
        for kg in backend.key_groups:
            found = entries.get(kg)
            if found:
                table.put(reps[kg], {s: tuple(v) for s, v in found.items()})
            else:
                table.remove(reps[kg])
        return super().snapshot_state(checkpoint_id)


def _by_window(table: pa.Table) -> list[tuple[int, pa.Table]]:
    """The rows of an accumulator table by window start."""
    starts = table.column(WINDOW_START)
    distinct = pc.unique(starts).to_pylist()
    if len(distinct) == 1:
        return [(distinct[0], table)]
    return [(s, table.filter(pc.equal(starts, s))) for s in sorted(distinct)]


@functools.lru_cache(maxsize=8)
def representative_keys(max_parallelism: int) -> tuple[int, ...]:
    """For every key group, the smallest non-negative int whose key group it is: the key the
    operator files a key group's window state under in the keyed backend, so that snapshots,
    restores and rescaling move it with its key group."""
    reps: list[int | None] = [None] * max_parallelism
    missing = max_parallelism
    i = 0
    while missing:
        kg = key_group_of(i, max_parallelism)
        if reps[kg] is None:
            reps[kg] = i
            missing -= 1
        i += 1
        if i > 1 << 26:  # pragma: no cover - the hash spreads ints over every group long before
            raise InvalidKeyError(f"no int key found for every one of {max_parallelism} key groups")
    return tuple(r for r in reps if r is not None)
