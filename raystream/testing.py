"""Helpers for testing jobs: a processing-time clock the test controls.

``ManualClock(path)`` keeps the current processing time (int ms) in a small file, so every task
actor on this machine reads the same value and the test moves time forward with ``advance``::

    clock = ManualClock(tmp_path / "clock", start_ms=0)
    env.get_config().clock = clock
    ...
    clock.advance(60_000)
"""

from __future__ import annotations

import os
import pathlib
import pickle
import struct
import time
from typing import Any

__all__ = ["ManualClock", "OperatorHarness"]


class ManualClock:
    """Processing time set by the test; monotonic time (batch timeouts) stays real."""

    def __init__(self, path: str | os.PathLike, start_ms: int = 0):
        self.path = str(path)
        pathlib.Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.set(start_ms)

    def set(self, now_ms: int) -> None:
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(struct.pack(">q", now_ms))
        os.replace(tmp, self.path)  # atomic: readers never see half a value

    def advance(self, ms: int) -> int:
        now = self.now_ms() + ms
        self.set(now)
        return now

    def now_ms(self) -> int:
        with open(self.path, "rb") as f:
            return struct.unpack(">q", f.read(8))[0]  # type: ignore[no-any-return]

    def monotonic_s(self) -> float:
        return time.monotonic()

    def __reduce__(self):
        return (_reopen, (self.path,))


def _reopen(path: str) -> ManualClock:
    clock = ManualClock.__new__(ManualClock)
    clock.path = path
    return clock


class _Collect:
    """An operator output that records everything it receives."""

    def __init__(self) -> None:
        self.records: list[tuple[Any, int | None]] = []
        self.watermarks: list[int] = []
        self.statuses: list[bool] = []
        #: the column batches received, as they came (columnar operators)
        self.column_batches: list[Any] = []

    def emit(self, batch: Any) -> None:
        from raystream.runtime.elements import ColumnBatch

        if type(batch) is ColumnBatch:  # columns: kept as they came, and as dict records
            self.column_batches.append(batch)
            values = batch.values.to_pylist()
            stamps = batch.timestamps
            self.records.extend(
                zip(values, [None] * len(values) if stamps is None else stamps.tolist())
            )
            return
        stamps = batch.timestamps or [None] * len(batch.values)
        self.records.extend(zip(batch.values, stamps))

    def emit_watermark(self, timestamp: int) -> None:
        self.watermarks.append(timestamp)

    def emit_watermark_status(self, idle: bool) -> None:
        self.statuses.append(idle)


class OperatorHarness:
    """Drives one operator directly — no Ray, no channels — for fast, exact tests.

    ``factory`` is what the DataStream API would ship to the task (e.g. a ``functools.partial``
    of an operator class). Records go in with :meth:`process` / :meth:`process2`, time moves with
    :meth:`watermark` and :meth:`advance_processing_time`; :attr:`output`, :attr:`side_outputs`
    and :attr:`watermarks` show what came out.

    ``runtime_mode=RuntimeExecutionMode.BATCH`` runs the operator with batch semantics (final
    values of running aggregates at :meth:`finish`, every timer firing there).

    Checkpoints: ``checkpoint_interval_ms`` makes the operator see checkpointing as on;
    :meth:`snapshot` takes what a task would put in a checkpoint, and a harness built with
    ``restored=`` that snapshot starts the operator from it, as a restore does (use
    ``raystream.checkpointing.snapshot.assign`` to cut snapshots for another parallelism).
    """

    def __init__(
        self,
        operator: Any,
        keyed: bool = False,
        max_parallelism: int = 128,
        state_backend: Any = None,
        start_ms: int = 0,
        subtask: int = 0,
        parallelism: int = 1,
        restored: Any = None,
        checkpoint_interval_ms: int | None = None,
        runtime_mode: Any = None,
    ):
        from raystream.config import ExecutionConfig
        from raystream.core.keys import key_group_range
        from raystream.operators.base import OperatorContext, OperatorTime

        self.clock = _MemoryClock(start_ms)
        self.operator = operator
        self._main = _Collect()
        self._sides: dict[str, _Collect] = {}
        backend = None
        if keyed:
            groups = key_group_range(subtask, parallelism, max_parallelism)
            from raystream.checkpointing.backends.factory import HashMapStateBackend

            factory = state_backend or HashMapStateBackend()
            backend = factory.create(
                max_parallelism, groups, "harness", subtask, OperatorTime(operator, self.clock)
            )
        config = ExecutionConfig()
        config.clock = self.clock
        if checkpoint_interval_ms is not None:
            config.checkpoint.set_checkpoint_interval(checkpoint_interval_ms)
        if runtime_mode is not None:  # as a built plan has it: STREAMING or BATCH
            config.set_runtime_mode(runtime_mode)
        ctx = OperatorContext(
            operator_name=getattr(operator, "name", "operator"),
            task_name="harness",
            subtask_index=subtask,
            parallelism=parallelism,
            max_parallelism=max_parallelism,
            config=config,
            clock=self.clock,
            keyed_backend=backend,
        )
        operator.setup(ctx, self._main, _SideDict(self._sides))
        if restored is not None:
            operator.initialize_state(restored)
        operator.open()

    @property
    def output(self) -> list[tuple[Any, int | None]]:
        return self._main.records

    def values(self) -> list[Any]:
        return [v for v, _ in self._main.records]

    @property
    def watermarks(self) -> list[int]:
        return self._main.watermarks

    def side_output(self, tag: Any) -> list[tuple[Any, int | None]]:
        tag_id = getattr(tag, "tag_id", tag)
        return self._sides[tag_id].records if tag_id in self._sides else []

    def process(self, values: list, timestamps: list[int] | None = None) -> OperatorHarness:
        from raystream.runtime.elements import Batch

        self.operator.records_in += len(values)
        self.operator.process_batch(
            Batch(list(values), list(timestamps) if timestamps is not None else None)
        )
        return self

    def process_columns(self, columns: Any, timestamps: Any = None) -> OperatorHarness:
        """A batch of a columnar stream: a ``pyarrow.RecordBatch`` (or a ``pyarrow.Table`` or a
        dict of columns) and optionally its event timestamps (a sequence of int ms). Output
        records of columnar operators read as dicts (column name → value)."""
        import numpy as np
        import pyarrow as pa

        from raystream.runtime.elements import ColumnBatch

        if isinstance(columns, dict):
            columns = pa.RecordBatch.from_pydict(columns)
        elif isinstance(columns, pa.Table):
            columns = columns.combine_chunks().to_batches()[0]
        stamps = None if timestamps is None else np.asarray(timestamps, dtype=np.int64)
        self.operator.records_in += columns.num_rows
        self.operator.process_batch(ColumnBatch(columns, stamps))
        return self

    def column_batches(self, tag: Any = None) -> list[Any]:
        """The column batches the operator emitted on its main output (or side output ``tag``)."""
        if tag is None:
            return self._main.column_batches
        tag_id = getattr(tag, "tag_id", tag)
        return self._sides[tag_id].column_batches if tag_id in self._sides else []

    def process2(self, values: list, timestamps: list[int] | None = None) -> OperatorHarness:
        from raystream.runtime.elements import Batch

        self.operator.records_in += len(values)
        self.operator.process_batch2(
            Batch(list(values), list(timestamps) if timestamps is not None else None)
        )
        return self

    def watermark(self, timestamp: int) -> OperatorHarness:
        self.operator.process_watermark(timestamp)
        return self

    def advance_processing_time(self, to_ms: int) -> OperatorHarness:
        self.clock.now = to_ms
        due = self.operator.next_processing_timer()
        if due is not None and due <= to_ms:
            self.operator.on_processing_time(to_ms)
        return self

    def finish(self) -> OperatorHarness:
        from raystream.core.time import MAX_TS

        self.operator.process_watermark(MAX_TS)
        self.operator.finish()
        return self

    def snapshot(self, checkpoint_id: int) -> Any:
        """The operator's part of checkpoint ``checkpoint_id`` as the task takes it (flush before
        the barrier, then the snapshot), serialized and read back, so later changes to the
        operator do not show in it. ``FINAL_CHECKPOINT_ID`` takes the snapshot of a task that
        finished (call :meth:`finish` first)."""
        from raystream.checkpointing.snapshot import OperatorSnapshot

        self.operator.prepare_snapshot_pre_barrier(checkpoint_id)
        snap = self.operator.snapshot_state(checkpoint_id)
        keyed = view = snap.keyed
        if not isinstance(view, dict):  # a backend's consistent view
            try:
                keyed = view.serialize()
            finally:
                view.close()
        copy = OperatorSnapshot(keyed, snap.timers, snap.operator, snap.broadcast)
        return pickle.loads(pickle.dumps(copy, protocol=pickle.HIGHEST_PROTOCOL))

    def notify_checkpoint_complete(self, checkpoint_id: int) -> OperatorHarness:
        self.operator.notify_checkpoint_complete(checkpoint_id)
        return self

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> OperatorHarness:
        self.operator.notify_checkpoint_aborted(checkpoint_id)
        return self

    def close(self) -> OperatorHarness:
        self.operator.close()
        return self


class _SideDict(dict):
    """Side outputs created on first use, so the harness sees every tag the operator emits to."""

    def __init__(self, store: dict):
        super().__init__()
        self._store = store

    def get(self, key: Any, default: Any = None) -> Any:
        if key not in self._store:
            self._store[key] = _Collect()
        return self._store[key]


class _MemoryClock:
    def __init__(self, now: int):
        self.now = now

    def now_ms(self) -> int:
        return self.now

    def monotonic_s(self) -> float:
        return time.monotonic()
