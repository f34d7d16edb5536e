"""Internal: event timestamps and watermark generation inside a task.

Used by source operators that got a ``WatermarkStrategy`` and by
``assign_timestamps_and_watermarks``. Timestamps are extracted per record (the assigner is user
code); the generator sees whole batches; periodic emission runs every
``auto_watermark_interval`` of processing time. A watermark a generator emits from ``on_event``
goes out right after the record that produced it: :meth:`WatermarkEmitter.emit` cuts the batch
at the positions the output recorded (only there; a batch without such a watermark goes out
whole). A record whose timestamp is missing or not a
number fails the job with an error naming the operator and the record, or goes to the side output
the strategy names (``with_invalid_timestamps_to(tag)``).

In ``RuntimeExecutionMode.BATCH`` the strategy's generator is not used (Flink ignores watermark
generators in batch): timestamps are still extracted, no watermark or idleness goes out during the
run, and the only watermark is ``MAX`` at the end of input.
"""

from __future__ import annotations

from typing import Any

from raystream.api.runtime_mode import is_batch
from raystream.core.time import MAX_TS, MIN_TS
from raystream.core.watermarks import (
    NoWatermarksGenerator,
    WatermarkOutput,
    WatermarkStrategy,
    valid_timestamp,
)
from raystream.errors import UserFunctionError, record_repr
from raystream.operators.base import StreamOperator
from raystream.runtime.elements import Batch, ColumnBatch


class WatermarkEmitter:
    def __init__(self, strategy: WatermarkStrategy, op: StreamOperator):
        assert op.ctx is not None
        self.op = op
        self.extract = strategy.create_extractor()
        self.by_value = strategy.value_extractor()
        #: BATCH: no watermarks during the run (the generator is not even created)
        self.batch = is_batch(op.ctx.config)
        self.generator = (
            NoWatermarksGenerator()
            if self.batch
            else strategy.create_generator(op.ctx.clock.now_ms)
        )
        self.invalid_tag = getattr(strategy, "invalid_timestamps_tag", None)
        #: ``with_timestamp_column``: read vectorized from columnar batches
        self.timestamp_column: str | None = getattr(strategy, "timestamp_column", None)
        self.out = WatermarkOutput()
        self.emitted = MIN_TS
        self.idle = False

    def stamp(self, batch: Batch) -> Batch:
        """Extracts timestamps and feeds the generator; returns the batch to emit."""
        values = batch.values
        stamps = batch.timestamps
        if self.by_value is not None:
            values, stamps = self._stamp_by_value(values)
        elif self.extract is not None:
            extract = self.extract
            record_ts = stamps or [MIN_TS] * len(values)
            new_ts: list[int] = []
            bad: list[int] = []
            failed: list[int] = []
            append = new_ts.append
            rows = enumerate(zip(values, record_ts))
            v = rt = None
            i = 0
            while True:
                try:
                    for i, (v, rt) in rows:
                        t: int | None = extract(v, rt)
                        if type(t) is not int or not MIN_TS < t < MAX_TS:
                            t = valid_timestamp(t)
                            if t is None:
                                bad.append(i)
                                t = MIN_TS
                        append(t)
                    break
                except Exception as exc:
                    self.op.bad_record(exc, v, None if rt == MIN_TS else rt)
                    failed.append(i)
                    append(MIN_TS)  # a place holder, dropped below
            if failed:
                values, new_ts, bad = _drop(values, new_ts, bad, failed)
            if bad:
                values, new_ts = self._invalid(values, new_ts, bad, extract)
            stamps = new_ts
        elif stamps is None:
            return batch
        else:  # the reader's timestamps are the records' event timestamps
            values, stamps = checked_record_timestamps(self.op, values, stamps, self.invalid_tag)
        out = self.out
        try:
            self.generator.on_events(values, stamps, out)
        except Exception as exc:
            at, out.index = out.index, None
            out.cuts.clear()
            if at is not None and at < len(values):
                raise self.op.user_error(exc, values[at]) from exc
            raise self.op.user_error(
                exc, values[0] if values else None, "a batch starting with record"
            ) from exc
        return Batch(values, stamps)

    def emit(self, batch: Batch | ColumnBatch) -> None:
        """Stamps ``batch``, feeds the generator and emits the records with the watermarks the
        generator produced: one emitted from ``on_event`` right after its record (the batch is
        cut there), the rest (and idleness) after the batch."""
        if isinstance(batch, ColumnBatch):
            from raystream.operators.columnar.timestamps import emit_columns

            emit_columns(self, batch)
            return
        stamped = self.stamp(batch)
        output = self.op.output
        cuts = self.out.cuts
        if not cuts:
            output.emit(stamped)
            self._forward()
            return
        self.out.cuts = []
        values, stamps = stamped.values, stamped.timestamps
        assert stamps is not None  # the generator only runs on stamped records
        start = 0
        for i, wm in cuts:
            if wm <= self.emitted:  # not above what went out already (monotonic)
                continue
            output.emit(Batch(values[start : i + 1], stamps[start : i + 1]))
            start = i + 1
            if self.idle:  # emitting a watermark makes the output active again (as in Flink)
                self.idle = False
                output.emit_watermark_status(False)
            self.emitted = wm
            output.emit_watermark(wm)
        if start < len(values):
            output.emit(Batch(values[start:], stamps[start:]))
        self._forward()

    def _stamp_by_value(self, values: list) -> tuple[list, list]:
        """Plain ``callable(value)`` assigners: one call per record, checked in bulk."""
        fn = self.by_value
        assert fn is not None  # stamp() comes here only with a value extractor
        stamps: list = []
        append = stamps.append
        it = iter(values)
        failed: list[int] = []
        v = None
        while True:
            try:
                for v in it:
                    append(fn(v))
                break
            except Exception as exc:
                self.op.bad_record(exc, v)
                failed.append(len(stamps))
                append(MIN_TS + 1)  # a place holder, dropped here
        if failed:
            values, stamps, _ = _drop(values, stamps, [], failed)
        if stamps and (
            set(map(type, stamps)) == {int} and min(stamps) > MIN_TS and max(stamps) < MAX_TS
        ):
            return values, stamps
        fixed: list[int] = []
        bad: list[int] = []
        for i, t in enumerate(stamps):
            ok = valid_timestamp(t)
            if ok is None:
                bad.append(i)
                ok = MIN_TS
            fixed.append(ok)
        if bad:
            return self._invalid(values, fixed, bad, lambda value, _rt: fn(value))
        return values, fixed

    def _invalid(
        self, values: list, stamps: list, bad: list[int], extract: Any
    ) -> tuple[list, list]:
        if self.invalid_tag is None:
            v = values[bad[0]]
            raise UserFunctionError(
                f"operator {self.op.name!r}, subtask {self.op.ctx.subtask_index}: the timestamp "  # type: ignore[union-attr]
                f"assigner returned {extract(v, MIN_TS)!r} for record {record_repr(v)}; expected int "
                "milliseconds since the epoch (hint: route such records to a side output with "
                "WatermarkStrategy.with_invalid_timestamps_to(tag))",
                operator=self.op.name,
                subtask=self.op.ctx.subtask_index,  # type: ignore[union-attr]
                record=record_repr(v),
                cause_type="InvalidTimestamp",
            )
        bad_set = set(bad)
        self.op.side_output(self.invalid_tag).emit(Batch([values[i] for i in bad]))
        keep = [i for i in range(len(values)) if i not in bad_set]
        return [values[i] for i in keep], [stamps[i] for i in keep]

    def on_periodic(self) -> None:
        self.generator.on_periodic_emit(self.out)
        self._forward()

    def _forward(self) -> None:
        out = self.out
        if out.idle != self.idle:
            self.idle = out.idle
            self.op.output.emit_watermark_status(out.idle)
        wm = out.watermark
        if wm is not None and wm > self.emitted and not out.idle:
            self.emitted = wm
            self.op.output.emit_watermark(wm)


def checked_record_timestamps(
    op: StreamOperator, values: list, stamps: list, invalid_tag: str | None
) -> tuple[list, list]:
    """Timestamps a source reader gave its records (e.g. Kafka's), as the records' event
    timestamps: int milliseconds strictly between ``MIN_TS`` and ``MAX_TS`` (the start and the
    end of time; a record at ``MAX_TS`` would end event time and be dropped as late). A float is
    truncated as the assigner's result is. Anything else fails the job naming the operator, the
    subtask and the record, or goes to ``invalid_tag``'s side output."""
    if not stamps:
        return values, stamps
    try:
        fine = MIN_TS < min(stamps) and max(stamps) < MAX_TS
    except TypeError:  # None among them
        fine = False
    if fine and set(map(type, stamps)) == {int}:
        return values, stamps
    fixed = [_as_timestamp(t) for t in stamps]
    bad = [i for i, t in enumerate(fixed) if t is None]
    if not bad:
        return values, fixed
    if invalid_tag is None:
        v = values[bad[0]]
        ctx = op.ctx
        assert ctx is not None
        raise UserFunctionError(
            f"operator {op.name!r}, subtask {ctx.subtask_index}: the source gave the record "
            f"timestamp {stamps[bad[0]]!r} for record {record_repr(v)}; expected int "
            f"milliseconds since the epoch, above {MIN_TS} and below {MAX_TS} (hint: route such "
            "records to a side output with WatermarkStrategy.with_invalid_timestamps_to(tag), or "
            "take the timestamp from the record with a timestamp assigner)",
            operator=op.name,
            subtask=ctx.subtask_index,
            record=record_repr(v),
            cause_type="InvalidTimestamp",
        )
    bad_set = set(bad)
    op.side_output(invalid_tag).emit(Batch([values[i] for i in bad]))
    keep = [i for i in range(len(values)) if i not in bad_set]
    return [values[i] for i in keep], [fixed[i] for i in keep]


def _as_timestamp(t: Any) -> int | None:
    """``valid_timestamp``, also for integer types that are not ``int`` (e.g. numpy's)."""
    v = valid_timestamp(t)
    if v is None and not isinstance(t, (bool, float)) and hasattr(t, "__index__"):
        v = valid_timestamp(t.__index__())
    return v


def _drop(
    values: list, stamps: list, bad: list[int], failed: list[int]
) -> tuple[list, list, list[int]]:
    """Values and timestamps without the positions ``failed`` (records the error policy took),
    and the positions ``bad`` renumbered to match."""
    gone = set(failed)
    keep = [i for i in range(len(values)) if i not in gone]
    new_pos = {old: new for new, old in enumerate(keep)}
    return [values[i] for i in keep], [stamps[i] for i in keep], [new_pos[i] for i in bad]


class TimestampsAndWatermarksOperator(StreamOperator):
    """``assign_timestamps_and_watermarks``: replaces upstream timestamps and watermarks."""

    supports_error_policy = True

    def __init__(self, name: str, strategy: WatermarkStrategy):
        super().__init__(name)
        self.strategy = strategy
        self.emitter: WatermarkEmitter | None = None

    def open(self) -> None:
        assert self.ctx is not None
        self.emitter = WatermarkEmitter(self.strategy, self)
        if not self.emitter.batch:
            self.periodic_interval_ms = self.ctx.config.auto_watermark_interval_ms or None

    def process_batch(self, batch: Batch) -> None:
        emitter = self.emitter
        assert emitter is not None
        emitter.emit(batch)

    def on_periodic(self, now_ms: int) -> None:
        self.emitter.on_periodic()  # type: ignore[union-attr]

    def process_watermark(self, timestamp: int) -> None:
        if timestamp == MAX_TS:  # only end of input passes: this operator makes its own
            self.emitter.emitted = MAX_TS  # type: ignore[union-attr]
            self.current_watermark = MAX_TS
            self.output.emit_watermark(MAX_TS)

    def process_watermark_status(self, idle: bool) -> None:
        pass
