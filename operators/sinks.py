"""Sinks: where records leave the job.

A :class:`Sink` is a picklable description; each sink subtask gets its own :class:`SinkWriter`.
A writer may return a value from ``result()`` at the end; the driver reads the values of every
subtask from ``JobExecutionResult.get_sink_result(name)``. A writer that keeps what it wrote
(rather than handing it on at once) returns it from ``snapshot_state`` and gets it back through
``restore_state`` after a restore. Sinks that commit output when a checkpoint completes are
:class:`~raystream.operators.transactional.TwoPhaseCommitSink` s.
"""

from __future__ import annotations

import asyncio
import sys
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from raystream.api.functions import SinkFunction
from raystream.api.typed_values import print_formatter
from raystream.checkpointing.snapshot import OperatorSnapshot
from raystream.errors import SerializationError
from raystream.operators.base import OperatorContext, StreamOperator
from raystream.operators.stateless import UdfOperator
from raystream.runtime.channels import dumps_batch
from raystream.runtime.elements import Batch, ColumnBatch

_WRITER_STATE = "sink-writer-state"


@dataclass(frozen=True)
class SinkContext:
    """What a sink writer learns about its subtask."""

    operator_name: str
    subtask_index: int
    parallelism: int
    attempt: int = 0


class SinkWriter(ABC):
    @abstractmethod
    def write(self, batch: Batch) -> None:
        """Writes the records of one batch (``batch.values``; timestamps beside them or None).
        A sink whose ``accepts_columns`` is set also gets the :class:`ColumnBatch` es of a
        columnar stream (``batch.values`` a ``pyarrow.RecordBatch``)."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """End of input: make everything written durable/visible."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def result(self) -> Any:
        """A picklable value handed to the driver when the job finishes."""
        return None

    def snapshot_state(self, checkpoint_id: int) -> list | None:
        """What a checkpoint keeps of this writer, as a list of picklable entries (None: the
        writer keeps nothing). The entries are even-split operator list state: after a restore
        with another parallelism each subtask gets a contiguous share of all subtasks' entries."""
        return None

    def restore_state(self, entries: list) -> None:  # noqa: B027 - optional hook
        """After a restore, before the first write: this subtask's share of the entries that
        ``snapshot_state`` returned (possibly none, after a scale-out)."""


class Sink(ABC):
    #: the writer takes column batches as they are (a columnar stream may be written to it)
    accepts_columns: bool = False

    @abstractmethod
    def create_writer(self, context: SinkContext) -> SinkWriter: ...

    def describe(self) -> str:
        return type(self).__name__


class SinkOperator(StreamOperator):
    """Feeds a :class:`SinkWriter`; what the writer's ``snapshot_state`` returns is kept as
    even-split operator list state and handed back to ``restore_state`` after a restore."""

    def __init__(self, name: str, sink: Sink):
        super().__init__(name)
        self.sink = sink
        self.writer: SinkWriter | None = None
        self._writer_restored = False

    def sink_context(self) -> SinkContext:
        ctx = self.ctx
        assert ctx is not None
        return SinkContext(ctx.operator_name, ctx.subtask_index, ctx.parallelism, ctx.attempt)

    def initialize_state(self, restored: OperatorSnapshot | None) -> None:
        super().initialize_state(restored)
        self._writer_restored = restored is not None and _WRITER_STATE in restored.operator

    def open(self) -> None:
        self.writer = self.sink.create_writer(self.sink_context())
        if self._writer_restored:
            entries = self.operator_state.get_list_state(_WRITER_STATE).get()
            try:
                self.writer.restore_state(entries)
            except Exception as exc:
                raise self.user_error(exc, None, "restore of the writer's state") from exc

    def snapshot_state(self, checkpoint_id: int) -> OperatorSnapshot:
        if self.writer is not None:
            try:
                entries = self.writer.snapshot_state(checkpoint_id)
            except Exception as exc:
                raise self.user_error(exc, None, f"snapshot of checkpoint {checkpoint_id}") from exc
            if entries is not None:
                self.operator_state.get_list_state(_WRITER_STATE).update(entries)
        return super().snapshot_state(checkpoint_id)

    def process_batch(self, batch: Batch) -> None:
        try:
            self.writer.write(batch)  # type: ignore[union-attr]
        except Exception as exc:
            if type(batch) is ColumnBatch:
                first = batch.values.slice(0, 1).to_pylist()[0] if len(batch) else None
            else:
                first = batch.values[0] if batch.values else None
            raise self.user_error(exc, first, "a batch starting with record") from exc

    def process_watermark(self, timestamp: int) -> None:
        pass

    def finish(self) -> None:
        try:
            self.writer.flush()  # type: ignore[union-attr]
        except Exception as exc:
            raise self.user_error(exc, None, "end of input") from exc

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def result(self) -> Any:
        return self.writer.result() if self.writer is not None else None


# --- print ----------------------------------------------------------------------------------------


class _PrintWriter(SinkWriter):
    def __init__(self, prefix: str, stream: TextIO | None, formatter: Callable[[Any], str] | None):
        self.prefix = prefix
        self.stream = stream
        self.formatter = formatter

    def write(self, batch: Batch) -> None:
        stream = self.stream or sys.stdout
        prefix, fmt = self.prefix, self.formatter
        values = batch.values.to_pylist() if type(batch) is ColumnBatch else batch.values
        if fmt is None:
            stream.write("".join(f"{prefix}{v}\n" for v in values))
        else:
            stream.write("".join(f"{prefix}{fmt(v)}\n" for v in values))

    def flush(self) -> None:
        (self.stream or sys.stdout).flush()


class PrintSink(Sink):
    """Prints every record on its own line, prefixed ``"<subtask+1>> "`` when parallel (as Flink).
    Rows of a columnar stream print as dicts.

    A record prints as PyFlink prints it: Python's ``str`` without ``type_info``, with a declared
    type (``DataStream.print()`` passes the stream's) the Java ``toString`` of that type:
    ``(a,1)`` for ``Types.TUPLE``, ``+I[a,1]`` for ``Types.ROW``, ``true``, ``1.0E10``, ...
    The output appears in the driver's console through Ray's log forwarding.

    >>> import io
    >>> from raystream.common import Types
    >>> out = io.StringIO()
    >>> sink = PrintSink(type_info=Types.TUPLE([Types.STRING(), Types.FLOAT()]), stream=out)
    >>> sink.create_writer(SinkContext("print", 0, 1)).write(Batch([("hi", 0.1)]))
    >>> print(out.getvalue(), end="")
    (hi,0.1)
    """

    accepts_columns = True

    def __init__(
        self,
        sink_identifier: str | None = None,
        stream: TextIO | None = None,
        type_info: Any = None,
    ):
        self.sink_identifier = sink_identifier
        self.stream = stream
        self.formatter = print_formatter(type_info)

    def create_writer(self, context: SinkContext) -> SinkWriter:
        parts = []
        if self.sink_identifier:
            parts.append(self.sink_identifier)
        if context.parallelism > 1:
            parts.append(str(context.subtask_index + 1))
        prefix = (":".join(parts) + "> ") if parts else ""
        return _PrintWriter(prefix, self.stream, self.formatter)


# --- SinkFunction (record at a time) ------------------------------------------------------------


class SinkFunctionOperator(UdfOperator):
    """Calls ``SinkFunction.invoke(value, context)`` (or a plain callable) for every record; a
    function that is a ``CheckpointedFunction`` keeps operator state through checkpoints."""

    def __init__(self, name: str, fn: Any):
        super().__init__(name, fn)
        self._invoke: Callable[..., Any] = fn.invoke if isinstance(fn, SinkFunction) else fn
        if not callable(self._invoke):
            raise TypeError(f"add_sink expects a SinkFunction or a callable, got {fn!r}")

    def process_batch(self, batch: Batch) -> None:
        invoke = self._invoke
        v = None
        try:
            if isinstance(self.udf, SinkFunction):
                for v in batch.values:
                    invoke(v, None)
            else:
                for v in batch.values:
                    invoke(v)
        except Exception as exc:
            raise self.user_error(exc, v) from exc

    def process_watermark(self, timestamp: int) -> None:
        pass


# --- collect (execute_and_collect) --------------------------------------------------------------


class CollectSinkOperator(StreamOperator):
    """Ships records to the job master, from which the driver's iterator pulls them.

    At most ``max_in_flight`` pushes are outstanding; the job master holds a bounded queue and
    answers a push only when it has room, so a slow driver back-pressures the job. Each push
    carries an epoch, the id of the first checkpoint whose barrier follows its records: with
    checkpointing on, the job master hands records to the driver only once that checkpoint
    completed, so after a restore nothing reaches the driver twice.
    """

    has_async_work = True
    max_in_flight = 2

    def __init__(self, name: str, collect_id: str):
        super().__init__(name)
        self.collect_id = collect_id
        self._buffer: list = []
        self._sealed: deque[tuple[int, list]] = deque()  # (epoch, records) cut at a barrier
        self._epoch = 0
        self._in_flight: deque = deque()
        self._seq = 0
        self._job_master: Any = None
        self._sending: Any = None

    def setup(self, ctx: OperatorContext, output: Any, side_outputs: dict) -> None:
        super().setup(ctx, output, side_outputs)
        self._sending = asyncio.Lock()
        self._job_master = ctx.services.get("job_master")
        if self._job_master is None:
            raise RuntimeError(f"collect sink {self.name!r} runs without a job master")

    def process_batch(self, batch: Batch) -> None:
        if type(batch) is ColumnBatch:
            # columns travel to the driver as they are, and become dicts there
            self._buffer.append(_Columns(batch.values))
            return
        self._buffer.extend(batch.values)

    def process_watermark(self, timestamp: int) -> None:
        pass

    def prepare_snapshot_pre_barrier(self, checkpoint_id: int) -> None:
        if self._buffer:
            self._sealed.append((checkpoint_id, self._buffer))
            self._buffer = []
        self._epoch = checkpoint_id + 1

    async def async_work(self, flush: bool = False, final: bool = False) -> None:
        ctx = self.ctx
        assert ctx is not None
        limit = ctx.config.batch_size
        async with self._sending:  # the snapshot's flush_sealed may run meanwhile
            await self._send_sealed(limit)
            while self._buffer and (flush or final or len(self._buffer) >= limit):
                chunk, self._buffer = self._buffer[:limit], self._buffer[limit:]
                await self._push(self._epoch, chunk)
        if final:
            while self._in_flight:
                await self._in_flight.popleft()

    async def flush_sealed(self) -> None:
        """Sends everything cut at barriers: the task calls this before it acknowledges a
        checkpoint, so the job master has those records when the checkpoint completes."""
        assert self.ctx is not None
        async with self._sending:
            await self._send_sealed(self.ctx.config.batch_size)

    async def _send_sealed(self, limit: int) -> None:
        while self._sealed:
            epoch, values = self._sealed.popleft()
            for start in range(0, len(values), limit):
                await self._push(epoch, values[start : start + limit])

    async def _push(self, epoch: int, chunk: list) -> None:
        ctx = self.ctx
        assert ctx is not None
        while len(self._in_flight) >= self.max_in_flight:
            await self._in_flight.popleft()
        # pickled here, not by Ray: a record that cannot be pickled is named in the error, and
        # the job master passes the bytes to the driver without unpickling user objects
        try:
            payload = dumps_batch(Batch(chunk), f"{self.name} -> driver")
        except SerializationError as exc:
            raise SerializationError(
                f"operator {self.name!r}, subtask {ctx.subtask_index}: {exc} (execute_and_collect "
                "hands records to the driver pickled; map them to plain values first)"
            ) from exc
        self._in_flight.append(
            self._job_master.collect_push.remote(
                self.collect_id, ctx.subtask_index, ctx.attempt, self._seq, epoch, payload
            )
        )
        self._seq += 1

    def has_pending(self) -> bool:
        return bool(self._buffer or self._sealed)


class _Columns:
    """A record batch in the collect sink's buffer, in place of its rows: one item of a pushed
    chunk that the driver's iterator expands into one dict per row."""

    __slots__ = ("batch",)

    def __init__(self, batch: Any):
        self.batch = batch

    def __reduce__(self):
        return (_Columns, (self.batch,))


def expand_collected(values: list) -> list:
    """What the driver yields for a pushed chunk: its records, a record batch's rows as dicts."""
    if not any(type(v) is _Columns for v in values):
        return values
    out: list = []
    for v in values:
        if type(v) is _Columns:
            out.extend(v.batch.to_pylist())
        else:
            out.append(v)
    return out
