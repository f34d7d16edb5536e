"""Internal: map, flat_map and filter — record-by-record functions applied a batch at a time.

Each loop keeps the current record in its loop variable, so when user code raises the error can
name the record without any per-record bookkeeping.
"""

from __future__ import annotations

from typing import Any

from raystream.api.context import RuntimeContext
from raystream.api.functions import FilterFunction, FlatMapFunction, MapFunction, resolve
from raystream.checkpointing.operator_state import OperatorStateStore
from raystream.checkpointing.snapshot import OperatorSnapshot
from raystream.operators.bad_records import failed_index, without
from raystream.operators.base import StreamOperator, close_function, open_function
from raystream.runtime.elements import Batch


class FunctionSnapshotContext:
    """What ``CheckpointedFunction.snapshot_state`` gets."""

    def __init__(self, checkpoint_id: int, store: OperatorStateStore):
        self.checkpoint_id = checkpoint_id
        self._store = store

    def get_checkpoint_id(self) -> int:
        return self.checkpoint_id

    def get_operator_state_store(self) -> OperatorStateStore:
        return self._store


class FunctionInitializationContext:
    """What ``CheckpointedFunction.initialize_state`` gets."""

    def __init__(self, store: OperatorStateStore, ctx: Any):
        self._store = store
        self._ctx = ctx

    def is_restored(self) -> bool:
        return self._store.is_restored

    def get_operator_state_store(self) -> OperatorStateStore:
        return self._store

    def get_keyed_state_store(self) -> RuntimeContext:
        return RuntimeContext(self._ctx)


class UdfOperator(StreamOperator):
    """An operator around one user function with ``open``/``close`` hooks."""

    def __init__(self, name: str, udf: Any):
        super().__init__(name)
        self.udf = udf

    def open(self) -> None:
        assert self.ctx is not None
        initialize = getattr(self.udf, "initialize_state", None)
        if callable(initialize) and not isinstance(self.udf, type):
            initialize(FunctionInitializationContext(self.operator_state, self.ctx))
        open_function(self.udf, RuntimeContext(self.ctx))

    def snapshot_state(self, checkpoint_id: int) -> OperatorSnapshot:
        snapshot = getattr(self.udf, "snapshot_state", None)
        if callable(snapshot) and not isinstance(self.udf, type):
            try:
                snapshot(FunctionSnapshotContext(checkpoint_id, self.operator_state))
            except Exception as exc:
                raise self.user_error(exc, None, f"snapshot of checkpoint {checkpoint_id}") from exc
        return super().snapshot_state(checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        notify = getattr(self.udf, "notify_checkpoint_complete", None)
        if callable(notify) and not isinstance(self.udf, type):
            notify(checkpoint_id)

    def close(self) -> None:
        close_function(self.udf)


class MapOperator(UdfOperator):
    supports_error_policy = True

    def __init__(self, name: str, fn: Any):
        super().__init__(name, fn)
        self._fn = resolve(fn, MapFunction, "map", "map")

    def process_batch(self, batch: Batch) -> None:
        fn = self._fn
        out: list = []
        append = out.append
        values = batch.values
        stamps = batch.timestamps
        it = iter(values)
        bad: list[int] = []
        v = None
        while True:
            try:
                for v in it:
                    append(fn(v))
                break
            except Exception as exc:
                i = len(out) + len(bad)  # one output per record before this one
                self.bad_record(exc, v, stamps[i] if stamps is not None else None)
                bad.append(i)
        if bad and stamps is not None:
            stamps = without(stamps, bad)
        self.output.emit(Batch(out, stamps))


class FilterOperator(UdfOperator):
    supports_error_policy = True

    def __init__(self, name: str, fn: Any):
        super().__init__(name, fn)
        self._fn = resolve(fn, FilterFunction, "filter", "filter")

    def process_batch(self, batch: Batch) -> None:
        fn = self._fn
        out: list = []
        append = out.append
        values = _sequence(batch.values)
        stamps = batch.timestamps
        it = iter(values)
        v = None
        if stamps is None:
            while True:
                try:
                    for v in it:
                        if fn(v):
                            append(v)
                    break
                except Exception as exc:
                    self.bad_record(exc, v)
            self.output.emit(Batch(out))
            return
        ts_out: list = []
        append_ts = ts_out.append
        pairs = zip(it, stamps)
        while True:
            try:
                for v, t in pairs:
                    if fn(v):
                        append(v)
                        append_ts(t)
                break
            except Exception as exc:
                self.bad_record(exc, v, stamps[failed_index(it, len(values))])
        self.output.emit(Batch(out, ts_out))


class FlatMapOperator(UdfOperator):
    supports_error_policy = True

    def __init__(self, name: str, fn: Any):
        super().__init__(name, fn)
        self._fn = resolve(fn, FlatMapFunction, "flat_map", "flat_map")

    def process_batch(self, batch: Batch) -> None:
        fn = self._fn
        out: list = []
        extend = out.extend
        values = _sequence(batch.values)
        stamps = batch.timestamps
        it = iter(values)
        v = None
        if stamps is None and self.bad_records is None:
            # no policy: a failure fails the task, so no record boundary needs tracking
            try:
                for v in it:
                    result = fn(v)
                    if result is not None:
                        extend(result)
            except Exception as exc:
                raise self.user_error(exc, v) from exc
            self.output.emit(Batch(out))
            return
        if stamps is None:
            before = 0
            while True:
                try:
                    for v in it:
                        before = len(out)
                        result = fn(v)
                        if result is not None:
                            extend(result)
                    break
                except Exception as exc:
                    self.bad_record(exc, v)
                    # a generator that raised part-way: its outputs so far go with the record
                    del out[before:]
            self.output.emit(Batch(out))
            return
        ts_out: list = []
        pairs = zip(it, stamps)
        while True:
            try:
                for v, t in pairs:
                    result = fn(v)
                    if result is not None:
                        before = len(out)
                        extend(result)
                        ts_out.extend([t] * (len(out) - before))
                break
            except Exception as exc:
                self.bad_record(exc, v, stamps[failed_index(it, len(values))])
                del out[len(ts_out) :]
        self.output.emit(Batch(out, ts_out))


def _sequence(values: Any) -> list | tuple:
    """The batch's values as a list or tuple, whose iterators tell how far they got."""
    return values if type(values) is list or type(values) is tuple else list(values)
