"""Internal: what the runtime drives — the operator base class and the outputs that connect them.

An operator receives whole :class:`~raystream.runtime.elements.Batch` es (never single records
through a call per record) and emits batches to its :class:`Output`. Inside a chain an output
calls the next operator directly; at the end of a chain it hands the batch to the task's writer,
which partitions it onto channels.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raystream.api.runtime_mode import is_batch
from raystream.checkpointing.operator_state import OperatorStateStore
from raystream.checkpointing.snapshot import OperatorSnapshot
from raystream.core.keys import KeyGroupAssigner
from raystream.core.time import MAX_TS, MIN_TS
from raystream.errors import RaystreamError, UserFunctionError, record_repr
from raystream.operators.bad_records import BadRecordHandler
from raystream.runtime.elements import Batch, ColumnBatch

if TYPE_CHECKING:
    from raystream.api.error_policy import ErrorPolicy
    from raystream.config import ExecutionConfig
    from raystream.core.time import Clock
    from raystream.state.backend import KeyedStateBackend

_log = logging.getLogger(__name__)


@dataclass
class OperatorContext:
    """What the task tells an operator about where it runs."""

    operator_name: str
    task_name: str
    subtask_index: int
    parallelism: int
    max_parallelism: int
    config: ExecutionConfig
    clock: Clock
    keyed_backend: KeyedStateBackend | None = None
    attempt: int = 0
    services: dict[str, Any] = field(default_factory=dict)
    #: wakes the task's data loop when it waits for input (None outside a task): an operator
    #: whose asynchronous work finished between two messages (an async I/O result) calls it so
    #: that the task soon runs ``async_work(flush=True)``
    wake: Callable[[], None] | None = None


class OperatorTime:
    """What state TTL reads time from: a clock and the operator's watermark (and the timestamp
    of the record it is processing)."""

    def __init__(self, op: StreamOperator, clock: Any):
        self._op = op
        self._clock = clock

    def processing_time_ms(self) -> int:
        return self._clock.now_ms()  # type: ignore[no-any-return]

    def element_timestamp(self) -> int | None:
        return self._op.element_timestamp()

    def current_watermark(self) -> int:
        return self._op.event_time_now()


class Output:
    """Where an operator's batches go."""

    def emit(self, batch: Batch | ColumnBatch) -> None:
        raise TypeError(f"{type(self).__name__} does not accept batches")

    def emit_watermark(self, timestamp: int) -> None:
        raise TypeError(f"{type(self).__name__} does not accept watermarks")

    def emit_watermark_status(self, idle: bool) -> None:
        pass


class DiscardingOutput(Output):
    """Output of an operator nobody consumes (like a Flink operator without downstream)."""

    def emit(self, batch: Batch | ColumnBatch) -> None:
        pass

    def emit_watermark(self, timestamp: int) -> None:
        pass


class ChainedOutput(Output):
    """Calls the next operator of the chain directly."""

    __slots__ = ("_op", "_process")

    def __init__(self, op: StreamOperator, input_index: int = 0):
        self._op = op
        # takes the shape the plan checked the edge for: rows or columns
        self._process: Any = op.process_batch if input_index == 0 else op.process_batch2

    def emit(self, batch: Batch | ColumnBatch) -> None:
        self._op.records_in += len(batch.values)
        self._process(batch)

    def emit_watermark(self, timestamp: int) -> None:
        self._op.process_watermark(timestamp)

    def emit_watermark_status(self, idle: bool) -> None:
        self._op.process_watermark_status(idle)


class FanOutput(Output):
    """Sends the same batches to several outputs (several consumers of one stream)."""

    def __init__(self, outputs: list[Output]):
        self._outputs = outputs

    def emit(self, batch: Batch | ColumnBatch) -> None:
        for out in self._outputs:
            out.emit(batch)

    def emit_watermark(self, timestamp: int) -> None:
        for out in self._outputs:
            out.emit_watermark(timestamp)

    def emit_watermark_status(self, idle: bool) -> None:
        for out in self._outputs:
            out.emit_watermark_status(idle)


class CountingOutput(Output):
    """Counts the records an operator emits on its main output and drops empty batches."""

    __slots__ = ("_op", "_inner")

    def __init__(self, op: StreamOperator, inner: Output):
        self._op = op
        self._inner = inner

    def emit(self, batch: Batch | ColumnBatch) -> None:
        n = len(batch.values)
        if n:
            self._op.records_out += n
            self._inner.emit(batch)

    def emit_watermark(self, timestamp: int) -> None:
        self._inner.emit_watermark(timestamp)

    def emit_watermark_status(self, idle: bool) -> None:
        self._inner.emit_watermark_status(idle)


class ConvertingOutput(Output):
    """Applies a declared type's conversion to each batch (tuples to ``Row`` at the operator's
    output; ``FLOAT`` to 32 bits where records leave the chain)."""

    __slots__ = ("_op", "_inner", "_convert")

    def __init__(self, op: StreamOperator, inner: Output, convert: Any):
        self._op = op
        self._inner = inner
        self._convert = convert

    def emit(self, batch: Batch | ColumnBatch) -> None:
        ctx = self._op.ctx
        where = f"operator {self._op.name!r}" + (f", subtask {ctx.subtask_index}" if ctx else "")
        assert type(batch) is Batch  # output types convert rows; a columnar operator has none
        self._inner.emit(Batch(self._convert(batch.values, where), batch.timestamps))

    def emit_watermark(self, timestamp: int) -> None:
        self._inner.emit_watermark(timestamp)

    def emit_watermark_status(self, idle: bool) -> None:
        self._inner.emit_watermark_status(idle)


class StreamOperator:
    """Base of every operator. Subclasses override ``process_batch`` (and more as needed)."""

    #: set by operators that must await I/O after each batch (``async_work`` is then awaited)
    has_async_work = False
    #: milliseconds between ``on_periodic`` calls (watermark generators), or None
    periodic_interval_ms: int | None = None
    #: ``convert(values, where) -> values`` the output type asks for (``Types.ROW``), or None
    output_converter: Any = None
    #: operators whose per-record loops hand user errors to :meth:`bad_record` (error policies)
    supports_error_policy = False

    def __init__(self, name: str):
        self.name = name
        self.records_in = 0
        self.records_out = 0
        self.current_watermark = MIN_TS
        self.output: Output = DiscardingOutput()
        self.side_outputs: dict[str, Output] = {}
        self.ctx: OperatorContext | None = None
        self.operator_state = OperatorStateStore()
        #: the operator's own error policy (set by the task from the plan); None: the job's
        self.error_policy: ErrorPolicy | None = None
        #: the policy in force when it is not ``fail`` (see :meth:`bad_record`)
        self.bad_records: BadRecordHandler | None = None

    def setup(self, ctx: OperatorContext, output: Output, side_outputs: dict[str, Output]) -> None:
        self.ctx = ctx
        self.output = CountingOutput(self, output)
        if self.output_converter is not None:
            self.output = ConvertingOutput(self, self.output, self.output_converter)
        self.side_outputs = side_outputs
        policy = self.error_policy or ctx.config.error_policy
        if self.supports_error_policy and policy is not None and not policy.is_fail:
            self.bad_records = BadRecordHandler(self, policy)

    def open(self) -> None:
        """Called once before the first batch."""

    def process_batch(self, batch: Batch) -> None:
        raise TypeError(f"operator {self.name!r} has no first input")

    def process_batch2(self, batch: Batch) -> None:
        raise TypeError(f"operator {self.name!r} has no second input")

    def process_watermark(self, timestamp: int) -> None:
        """Advances event time: fire everything due (``on_watermark``), then forward."""
        if timestamp <= self.current_watermark:
            return
        self.current_watermark = timestamp
        if timestamp == MAX_TS and self.ctx is not None and is_batch(self.ctx.config):
            self._end_of_batch_input()
        else:
            self.on_watermark(timestamp)
        self.output.emit_watermark(timestamp)

    def _end_of_batch_input(self) -> None:
        """BATCH, the MAX watermark at the end of input (as Flink): timers registered from now on
        are ignored, every event-time timer fires, then every processing-time timer (processing
        time "jumps to the end of time"), all before the watermark goes downstream."""
        timers = getattr(self, "timers", None)
        if timers is not None:
            timers.quiesce()
        self.on_watermark(MAX_TS)
        if self.next_processing_timer() is not None:
            self.on_processing_time(MAX_TS)
        if timers is not None and timers.ignored:
            _log.warning(
                "operator %r: %d timer(s) registered while timers fired at the end of input were "
                "ignored (BATCH mode, as in Flink)",
                self.name,
                timers.ignored,
            )

    def on_watermark(self, timestamp: int) -> None:
        """Fires event-time timers up to ``timestamp`` (keyed operators override)."""

    def process_watermark_status(self, idle: bool) -> None:
        self.output.emit_watermark_status(idle)

    def element_timestamp(self) -> int | None:
        """Timestamp of the record (or timer) being processed, where the operator tracks it."""
        return None

    def event_time_now(self) -> int:
        """The event time state TTL compares against: the watermark (operators that know the
        timestamp of the record being processed take the later of the two)."""
        return self.current_watermark

    def next_processing_timer(self) -> int | None:
        """Processing time (ms) of the earliest processing-time timer, if any."""
        return None

    def on_processing_time(self, now_ms: int) -> None:
        """Fires processing-time timers up to ``now_ms``."""

    def on_periodic(self, now_ms: int) -> None:
        """Called every ``periodic_interval_ms`` of processing time."""

    def finish(self) -> None:
        """End of all input: flush what is buffered (called head to tail through the chain)."""

    def close(self) -> None:
        """Release resources; called after ``finish`` and when a task is torn down."""

    async def async_work(self, flush: bool = False, final: bool = False) -> None:
        """Awaited by the task after each batch when ``has_async_work`` is set. ``flush``: send
        what is buffered now (buffer timeout); ``final``: after ``finish``, also wait until it
        has all been delivered."""

    def has_pending(self) -> bool:
        """Whether ``async_work(flush=True)`` would send something."""
        return False

    def input_blocked(self) -> bool:
        """True while the operator holds input it cannot start on yet (async I/O at its
        capacity): the task then takes no more input and keeps awaiting ``async_work``."""
        return False

    # -- checkpoints (SEMANTICS §5): called by the task between batches -------------------------

    def initialize_state(self, restored: OperatorSnapshot | None) -> None:
        """Before ``open``: takes over what a checkpoint or savepoint holds for this subtask
        (keyed state, timers, operator list state). Operators with more override and call
        ``super()``."""
        if restored is None:
            return
        self.operator_state = OperatorStateStore(restored.operator)
        if self.bad_records is not None:
            self.bad_records.restore(self.operator_state)
        if restored.keyed:
            backend = self.ctx.keyed_backend if self.ctx is not None else None
            if backend is None:
                raise RaystreamError(f"operator {self.name!r} got keyed state but is not keyed")
            backend.restore(restored.keyed.values())
        if restored.timers:
            timers = getattr(self, "timers", None)
            if timers is None:
                raise RaystreamError(f"operator {self.name!r} got timers but has no timers")
            timers.restore([e for entries in restored.timers.values() for e in entries])

    def prepare_snapshot_pre_barrier(self, checkpoint_id: int) -> None:
        """The barrier is about to go downstream: emit what must precede it (buffered output)."""

    def snapshot_state(self, checkpoint_id: int) -> OperatorSnapshot:
        """The synchronous part of a snapshot: no record is processed while it runs. Keyed state
        comes as a consistent view that the task serializes afterwards (asynchronously)."""
        snap = OperatorSnapshot(operator=self.operator_state.snapshot())
        ctx = self.ctx
        if ctx is not None and ctx.keyed_backend is not None:
            snap.keyed = ctx.keyed_backend.snapshot_view()
        timers = getattr(self, "timers", None)
        if timers is not None and timers.num_timers():
            assert ctx is not None
            snap.timers = timers.snapshot(KeyGroupAssigner(ctx.max_parallelism))
        return snap

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` is complete (best effort: a later id covers earlier ones)."""

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` will not complete."""

    def side_output(self, tag_id: str) -> Output:
        out = self.side_outputs.get(tag_id)
        if out is None:
            out = self.side_outputs[tag_id] = DiscardingOutput()
        return out

    def metrics(self) -> dict[str, Any]:
        m = {"records_in": self.records_in, "records_out": self.records_out}
        if self.bad_records is not None:
            m.update(self.bad_records.metrics())
        return m

    def bad_record(self, exc: Exception, record: Any, timestamp: int | None = None) -> None:
        """User code raised ``exc`` on ``record``; call it in the ``except`` block. Under the
        ``fail`` policy (the default) and for raystream's own errors it raises the wrapped
        :class:`UserFunctionError`; otherwise the error policy takes the record (skip or
        dead-letter) and the caller goes on with the next record, discarding what the failing
        record emitted on the main output."""
        handler = self.bad_records
        if handler is None or isinstance(exc, RaystreamError):
            raise self.user_error(exc, record) from exc
        handler.handle(exc, record, timestamp)

    def user_error(
        self, exc: BaseException, record: Any, what: str = "record"
    ) -> UserFunctionError:
        """Wraps an exception raised by user code on ``record``; raise it ``from exc``."""
        ctx = self.ctx
        subtask = ctx.subtask_index if ctx else None
        where = f"operator {self.name!r}, subtask {subtask}" if ctx else f"operator {self.name!r}"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        # ``what`` other than a record (a snapshot, a timer, end of input) with no record: no
        # "None" in the message
        rec: str | None = None if record is None and what != "record" else record_repr(record)
        shown = f" {rec}" if rec is not None else ""
        return UserFunctionError(
            f"{type(exc).__name__} in {where} while processing {what}{shown}: {exc}\n"
            f"--- original traceback ---\n{tb}",
            operator=self.name,
            subtask=subtask,
            record=rec,
            cause_type=type(exc).__name__,
            cause_message=str(exc).split("\n", 1)[0],
        )


def open_function(fn: Any, runtime_context: Any) -> None:
    """Calls ``fn.open(runtime_context)`` if the user function has that hook."""
    opener = getattr(fn, "open", None)
    if callable(opener) and not isinstance(fn, type):
        opener(runtime_context)


def close_function(fn: Any) -> None:
    closer = getattr(fn, "close", None)
    if callable(closer) and not isinstance(fn, type):
        closer()
