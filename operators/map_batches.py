"""Internal: ``map_batches`` — a function (a model) over batches of records, Ray Data's way.

Record path: records collect in a buffer; a batch is cut when the buffer holds ``batch_size``
records, when the oldest buffered record has waited ``max_wait_ms`` of processing time (a
processing-time deadline the task's timer loop serves, so a trickle of records is not held
back), before a watermark goes on (records before a watermark leave before it) and at the end
of input. The batch goes through :func:`~raystream.operators.batch_format.rows_to_batch`, the
function, and :func:`~raystream.operators.batch_format.batch_to_rows`, then downstream: all
its results at once, or none.

A callable class is constructed once per subtask, in ``open`` (the model loads once per
actor), with ``fn_constructor_args``/``fn_constructor_kwargs``; a plain function is called as
it is. Outputs keep their record's timestamp when the function returns one row per input row,
and take the batch's largest timestamp otherwise.

Errors: when the function raises on a batch, nothing of that batch is emitted. The batch is
split in halves and each half tried again, down to the records that fail on their own; then
the failing record fails the task (naming the operator and that record), or goes to the error
policy (skip or dead letter) while the rest of the batch is emitted from the halves that
passed. If every part passes alone, the original error fails the task naming the batch. So a
bad record costs about ``2 log2(batch_size)`` extra calls, only on the failure path.

Checkpoints: the buffer is operator list state (records and timestamps), so a restore runs
them in its first batch; nothing is flushed for a barrier.
"""

from __future__ import annotations

import time
from typing import Any

from raystream.api.context import RuntimeContext
from raystream.checkpointing.snapshot import OperatorSnapshot
from raystream.errors import RaystreamError, record_repr
from raystream.operators.base import StreamOperator, close_function, open_function
from raystream.operators.batch_format import batch_to_rows, rows_to_batch
from raystream.runtime.elements import Batch

#: operator list state with the ``(value, timestamp)`` of every buffered record
BUFFER_STATE = "__raystream_map_batches_buffer__"


class MapBatchesOperator(StreamOperator):
    supports_error_policy = True

    def __init__(
        self,
        name: str,
        fn: Any,
        batch_size: int,
        batch_format: str,
        max_wait_ms: int | None,
        fn_args: tuple = (),
        fn_kwargs: dict | None = None,
        fn_constructor_args: tuple = (),
        fn_constructor_kwargs: dict | None = None,
    ):
        super().__init__(name)
        self.fn = fn
        self.batch_size = batch_size
        self.batch_format = batch_format
        self.max_wait_ms = max_wait_ms
        self.fn_args = tuple(fn_args)
        self.fn_kwargs = dict(fn_kwargs or {})
        self.ctor_args = tuple(fn_constructor_args)
        self.ctor_kwargs = dict(fn_constructor_kwargs or {})
        self._call: Any = None
        self._instance: Any = None
        # the converters a columnar input would swap for its own (see batch_format.py)
        self._to_batch = rows_to_batch
        self._to_rows = batch_to_rows
        self._values: list = []
        self._stamps: list | None = None  # parallel to _values when records carry timestamps
        self._first_ms: int | None = None  # processing time the oldest buffered record came
        self.batches = 0
        self.call_s = 0.0  # seconds spent in the function
        self.splits = 0  # calls made to isolate failing records

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        assert self.ctx is not None
        if isinstance(self.fn, type):
            try:
                self._instance = self.fn(*self.ctor_args, **self.ctor_kwargs)
            except Exception as exc:
                raise self.user_error(
                    exc, None, f"construction of {self.fn.__name__} (map_batches)"
                ) from exc
            open_function(self._instance, RuntimeContext(self.ctx))
            self._call = self._instance
        else:
            open_function(self.fn, RuntimeContext(self.ctx))
            self._call = self.fn
        if self._values and self._first_ms is None:  # restored records wait from now on
            self._first_ms = self.ctx.clock.now_ms()

    def close(self) -> None:
        close_function(self._instance if self._instance is not None else self.fn)

    # -- input: buffer, cut by size, deadline, watermark, end of input ------------------------

    def process_batch(self, batch: Batch) -> None:
        values = batch.values
        if not values:
            return
        if not self._values and self.max_wait_ms is not None:
            assert self.ctx is not None
            self._first_ms = self.ctx.clock.now_ms()
        self._append(values, batch.timestamps)
        size = self.batch_size
        while len(self._values) >= size:
            self._run_buffered(size)

    def _append(self, values: list, stamps: list | None) -> None:
        buffered = self._values
        if stamps is None:
            if self._stamps is not None:
                self._stamps.extend([None] * len(values))
        else:
            if self._stamps is None:
                self._stamps = [None] * len(buffered)
            self._stamps.extend(stamps)
        buffered.extend(values)

    def process_watermark(self, timestamp: int) -> None:
        if timestamp > self.current_watermark:
            self.flush()
        super().process_watermark(timestamp)

    def next_processing_timer(self) -> int | None:
        if self._first_ms is None or not self._values or self.max_wait_ms is None:
            return None
        return self._first_ms + self.max_wait_ms

    def on_processing_time(self, now_ms: int) -> None:
        due = self.next_processing_timer()
        if due is not None and now_ms >= due:
            self.flush()

    def finish(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Runs every buffered record now (in batches of at most ``batch_size``)."""
        while self._values:
            self._run_buffered(min(self.batch_size, len(self._values)))

    def _run_buffered(self, n: int) -> None:
        values = self._values[:n]
        stamps = self._stamps[:n] if self._stamps is not None else None
        del self._values[:n]
        if self._stamps is not None:
            del self._stamps[:n]
            if not self._values:
                self._stamps = None
        if self._values:
            assert self.ctx is not None
            self._first_ms = self.ctx.clock.now_ms() if self.max_wait_ms is not None else None
        else:
            self._first_ms = None
        self._run(values, stamps)

    # -- one batch: convert, call, convert back, emit all or nothing --------------------------

    def _apply(self, values: list) -> list:
        batch = self._to_batch(values, self.batch_format)
        t0 = time.perf_counter()
        try:
            out = self._call(batch, *self.fn_args, **self.fn_kwargs)
        finally:
            self.call_s += time.perf_counter() - t0
        return self._to_rows(out)

    def _run(self, values: list, stamps: list | None) -> None:
        self.batches += 1
        try:
            rows = self._apply(values)
        except RaystreamError:
            raise
        except Exception as exc:
            self._isolate(values, stamps, exc)
            return
        self._emit(rows, stamps)

    def _emit(self, rows: list, stamps: list | None) -> None:
        if not rows:
            return
        if stamps is None or all(t is None for t in stamps):
            self.output.emit(Batch(rows))
        elif len(rows) == len(stamps):
            self.output.emit(Batch(rows, [self._stamp(t) for t in stamps]))
        else:
            latest = max(t for t in stamps if t is not None)
            self.output.emit(Batch(rows, [latest] * len(rows)))

    @staticmethod
    def _stamp(t: int | None) -> int:
        return -(2**63) if t is None else t

    def _isolate(self, values: list, stamps: list | None, error: Exception) -> None:
        """The batch raised ``error``: find the records that fail alone (see the module
        docstring). Emits what passes, hands the failing records to the policy or raises."""
        failing: list[tuple[int, Exception]] = []
        passed: list[tuple[int, int, list]] = []  # (start, end, rows) of parts that passed

        def attempt(lo: int, hi: int, exc: Exception) -> None:
            if hi - lo == 1:
                failing.append((lo, exc))
                if self.bad_records is None:  # fail policy: the first failing record is enough
                    raise _Found()
                return
            mid = (lo + hi) // 2
            for a, b in ((lo, mid), (mid, hi)):
                self.splits += 1
                try:
                    rows = self._apply(values[a:b])
                except RaystreamError:
                    raise
                except Exception as inner:
                    attempt(a, b, inner)
                else:
                    passed.append((a, b, rows))

        try:
            attempt(0, len(values), error)
        except _Found:
            pass
        if not failing:
            first, last = record_repr(values[0]), record_repr(values[-1])
            raise self.user_error(
                error,
                None,
                f"a batch of {len(values)} records ({first} ... {last}), which passed when "
                "split into smaller batches",
            ) from error
        if self.bad_records is None:
            index, exc = failing[0]
            raise self.user_error(
                exc, values[index], f"a batch of {len(values)} records; the failing record"
            ) from exc
        for index, exc in failing:
            self.bad_record(exc, values[index], stamps[index] if stamps is not None else None)
        for start, end, rows in sorted(passed, key=lambda p: p[0]):
            self._emit(rows, stamps[start:end] if stamps is not None else None)

    # -- checkpoints ----------------------------------------------------------------------------

    def snapshot_state(self, checkpoint_id: int) -> OperatorSnapshot:
        stamps = self._stamps or [None] * len(self._values)
        self.operator_state.get_list_state(BUFFER_STATE).update(list(zip(self._values, stamps)))
        return super().snapshot_state(checkpoint_id)

    def initialize_state(self, restored: OperatorSnapshot | None) -> None:
        super().initialize_state(restored)
        if restored is None:
            return
        entries = self.operator_state.get_list_state(BUFFER_STATE).get()
        if entries:
            stamps = [t for _, t in entries]
            self._append(
                [v for v, _ in entries], None if all(t is None for t in stamps) else stamps
            )

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m.update(
            batches=self.batches,
            buffered=len(self._values),
            call_s=round(self.call_s, 6),
            isolation_calls=self.splits,
        )
        return m


class _Found(Exception):
    """The first failing record was isolated (fail policy: stop looking)."""
