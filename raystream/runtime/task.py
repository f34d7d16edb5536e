"""Internal: the task — one subtask of one chain; the body of a task actor.

Record path inside a task: ``push`` (called by producers) → :class:`InputGate` → head operator
→ chained operators (direct calls) → :class:`EdgeOutput` → :class:`ChannelSender` → the next
task's ``push``. A source task has no gate: its loop asks the source operator for the next batch.

The data loop is one coroutine on the actor's event loop; ``push``, ``metrics`` and ``ping`` are
separate coroutines, so control calls are answered while the data path waits for credit. Every
step of the loop is bounded by time as well as by records (:mod:`raystream.runtime.pacing`): a
source reads fewer records per step when its chain is slow, and a task cuts a received batch
into slices that each take about ``STEP_TARGET_S``, yielding to control calls in between.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import ray

from raystream.api.runtime_mode import is_batch
from raystream.checkpoint_config import CheckpointingMode
from raystream.checkpointing.backends.factory import HashMapStateBackend
from raystream.checkpointing.snapshot import (
    FINAL_CHECKPOINT_ID,
    OperatorSnapshot,
    assemble,
    freeze,
)
from raystream.config import COLUMN_BATCH_FACTOR, SOURCE_READ_RECORDS, ExecutionConfig
from raystream.core.keys import key_group_range
from raystream.core.time import SystemClock
from raystream.errors import ChannelError, RaystreamError, SerializationError, TaskError
from raystream.graph.plan import ChainSpec, EdgeSpec
from raystream.operators.base import (
    ChainedOutput,
    ConvertingOutput,
    DiscardingOutput,
    FanOutput,
    OperatorContext,
    OperatorTime,
    Output,
    StreamOperator,
)
from raystream.operators.sources import SourceOperator, SourceStatus
from raystream.operators.split_source import SplitSourceOperator
from raystream.runtime import serde
from raystream.runtime.barriers import BarrierHandler
from raystream.runtime.channels import (
    PAYLOAD_TYPES,
    ChannelSender,
    EdgeOutput,
    Writer,
    loads,
)
from raystream.runtime.elements import (
    END_OF_INPUT,
    Batch,
    CheckpointBarrier,
    CheckpointKind,
    ColumnBatch,
    EndOfInput,
    Watermark,
    WatermarkStatus,
)
from raystream.runtime.gate import InputGate
from raystream.runtime.input_watermarks import InputWatermarks
from raystream.runtime.pacing import STEP_TARGET_S, StepSizer

log = logging.getLogger(__name__)


@dataclass
class OutputChannel:
    """One channel this subtask writes to: the consumer and the channel's index there."""

    edge_id: int
    consumer_subtask: int
    channel_index: int


@dataclass
class TaskSpec:
    job_id: str
    job_name: str
    chain: ChainSpec
    subtask: int
    max_parallelism: int
    config: ExecutionConfig
    input_channels: list[tuple[int, str]]  # per channel: (logical input index, name)
    output_edges: list[EdgeSpec]
    output_channels: list[OutputChannel]
    attempt: int = 0


@dataclass
class TaskResult:
    chain_name: str
    subtask: int
    operators: dict[str, dict[str, Any]]
    sink_results: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    #: CPU seconds the task's process spent while it ran (Ray's threads in it included)
    cpu_s: float = 0.0
    #: encoded :class:`TaskSnapshot` of the finished task (with checkpointing on)
    final_snapshot: bytes | None = None
    #: snapshots taken and their synchronous pauses
    checkpoint_stats: dict[str, float] = field(default_factory=dict)


class Task:
    """Plain class; :mod:`raystream.runtime.deploy` makes it a Ray actor."""

    def __init__(self, spec_bytes: bytes, refs: list):
        try:
            spec: TaskSpec = serde.loads(spec_bytes, refs)
        except Exception as exc:
            raise TaskError(
                "a task cannot load its operators (is every module the job uses importable on "
                f"the workers?): {type(exc).__name__}: {exc}"
            ) from exc
        self.spec = spec
        if spec.config.gc_threshold is not None:
            gc.set_threshold(*spec.config.gc_threshold)
        self.name = f"{spec.chain.name} ({spec.subtask + 1}/{spec.chain.parallelism})"
        self.clock = spec.config.clock or SystemClock()
        self.gate = InputGate(spec.input_channels)
        self.operators: list[StreamOperator] = []
        self.writer: Writer | None = None
        self.state = "CREATED"
        self.started_at = 0.0
        self.watermarks = InputWatermarks(spec.input_channels)
        self._factories = [(n, n.factory) for n in spec.chain.nodes]
        self._backends: list[Any] = []
        #: operators set up and not closed yet
        self._open_operators: list[StreamOperator] = []
        ckpt = spec.config.checkpoint
        self.checkpointing = ckpt.is_checkpointing_enabled()
        self.barriers = BarrierHandler(self.gate, ckpt.mode is CheckpointingMode.EXACTLY_ONCE)
        self._triggers: deque[CheckpointBarrier] = deque()  # for a source: taken between batches
        self._input_done = False  # every input ended: the coordinator triggers this task itself
        self._output_ended = False  # END_OF_INPUT went out: barriers have nowhere to go
        self._async_error: BaseException | None = None
        self._notified = 0  # newest checkpoint operators heard was complete
        self._snapshots_in_flight: set[asyncio.Task] = set()
        self.step_sizer: StepSizer | None = None  # records per step of the data loop
        #: a detached job's task watches for its job master being gone for good
        self._orphan_watch: asyncio.Future | None = None
        self.checkpoint_stats: dict[str, float] = {
            "taken": 0,
            "sync_ms_max": 0.0,
            "sync_ms_sum": 0.0,
        }

    # -- control plane ---------------------------------------------------------------------------

    async def setup(
        self, outputs: dict[int, Any], services: dict[str, Any], restore: list | None = None
    ) -> None:
        """``outputs[k]`` is the actor handle behind ``spec.output_channels[k]``; ``restore``
        holds a ref to ``{uid: OperatorSnapshot}`` when the job resumes from a snapshot."""
        spec = self.spec
        cfg = spec.config
        mono = self.clock.monotonic_s
        senders_by_edge: dict[int, list[ChannelSender]] = {e.id: [] for e in spec.output_edges}
        all_senders = []
        for k, oc in enumerate(spec.output_channels):
            edge = next(e for e in spec.output_edges if e.id == oc.edge_id)
            sender = ChannelSender(
                outputs[k].push.remote,
                oc.channel_index,
                cfg.channel_capacity,
                cfg.batch_size,
                mono,
                f"{edge.name} ({spec.subtask} -> {oc.consumer_subtask})",
                cfg.message_bytes,
            )
            senders_by_edge[oc.edge_id].append(sender)
            all_senders.append(sender)
        self.writer = Writer(all_senders, cfg.buffer_timeout_ms / 1000.0, mono)

        ops: dict[int, StreamOperator] = {}
        for node, factory in self._factories:
            ops[node.id] = factory(node.name)
            ops[node.id].error_policy = node.error_policy
        edges = {e.id: e for e in spec.output_edges}
        p = spec.chain.parallelism
        for node, _ in reversed(self._factories):
            op = ops[node.id]
            by_tag: dict[str | None, list[Output]] = {}
            for o in node.outputs:
                if o.node_id is not None:
                    target: Output = ChainedOutput(ops[o.node_id], o.input_index)
                else:
                    edge = edges[o.edge_id]  # type: ignore[index]
                    router = edge.partitioner.router(
                        spec.subtask, len(senders_by_edge[edge.id]), spec.max_parallelism, edge.name
                    )
                    target = EdgeOutput(router, senders_by_edge[edge.id])
                if o.convert is not None:  # a declared FLOAT/DOUBLE type leaving the chain
                    target = ConvertingOutput(op, target, o.convert)
                by_tag.setdefault(o.tag_id, []).append(target)
            main = _combine(by_tag.pop(None, []))
            sides = {tag: _combine(outs) for tag, outs in by_tag.items() if tag is not None}
            backend = None
            if node.keyed:
                factory = cfg.state_backend or HashMapStateBackend()
                backend = factory.create(
                    spec.max_parallelism,
                    key_group_range(spec.subtask, p, spec.max_parallelism),
                    node.name,
                    spec.subtask,
                    OperatorTime(op, self.clock),
                )
                self._backends.append(backend)
            ctx = OperatorContext(
                operator_name=node.name,
                task_name=spec.chain.name,
                subtask_index=spec.subtask,
                parallelism=p,
                max_parallelism=spec.max_parallelism,
                config=cfg,
                clock=self.clock,
                keyed_backend=backend,
                attempt=spec.attempt,
                services=services,
                wake=self.gate.wake,
            )
            op.setup(ctx, main, sides)
        self.operators = [ops[n.id] for n, _ in self._factories]
        self._open_operators = list(self.operators)
        self.watermarks.head = self.operators[0]
        self._uids = [n.uid for n, _ in self._factories]
        self._async_ops = [op for op in self.operators if op.has_async_work]
        # BATCH: processing time does not advance during the run; the timers fire at the end of
        # input (StreamOperator.process_watermark)
        self._timer_ops = [] if is_batch(cfg) else list(self.operators)
        self._job_master = services.get("job_master")
        orphan_check = services.get("job_master_name")
        if orphan_check is not None:  # a detached job's task: nothing else stops it
            name, namespace = orphan_check
            self._orphan_watch = asyncio.ensure_future(
                _exit_when_job_master_is_gone(name, namespace, cfg.heartbeat_interval_ms / 1000.0)
            )
        if restore:
            restored: dict[str, OperatorSnapshot] = await restore[0]
            for uid, op in zip(self._uids, self.operators):
                op.initialize_state(restored.get(uid))
        self.state = "DEPLOYED"

    async def ping(self) -> str:
        if self._async_error is not None:
            return "FAILED"
        return self.state

    async def metrics(self) -> dict[str, Any]:
        out = {
            "task": self.name,
            # what metrics are tagged with (raystream.observe): never the actor
            "chain_id": self.spec.chain.id,
            "chain": self.spec.chain.name,
            "subtask": self.spec.subtask,
            "node": ray.get_runtime_context().get_node_id(),
            "state": self.state,
            "queued_in": self.gate.queued(),
            "bytes_in": self.gate.bytes_taken,
            "watermark": self.watermarks.last,
            "operators": {op.name: op.metrics() for op in self.operators},
            "checkpoints": dict(self.checkpoint_stats, **self.barriers.metrics()),
            "step_records": None if self.step_sizer is None else self.step_sizer.size,
        }
        if self.writer is not None:
            out.update(self.writer.metrics())
        return out

    async def push(self, channel: int, seq: int, message: Any) -> None:
        credit = asyncio.get_running_loop().create_future()
        self.gate.put(channel, seq, message, credit)
        await credit

    # -- data plane ------------------------------------------------------------------------------

    async def run(self) -> TaskResult:
        self.started_at = time.monotonic()
        cpu_at_start = time.process_time()
        self.state = "RUNNING"
        current = "open"
        failed = True
        try:
            for op in reversed(self.operators):
                current = f"opening {op.name!r}"
                op.open()
            current = "running"
            if isinstance(self.operators[0], SourceOperator):
                await self._run_source(self.operators[0])
            else:
                await self._run_inputs()
            await self._finish()
            final = await self._final_snapshot() if self.checkpointing else None
            failed = False
        except RaystreamError as exc:
            self.state = "FAILED"
            if isinstance(exc, TaskError) and exc.subtask is None:
                exc.subtask = self.spec.subtask
            self.gate.fail_pending(exc)
            raise
        except Exception as exc:
            self.state = "FAILED"
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            err = TaskError(
                f"task {self.name!r} failed ({current}): {type(exc).__name__}: {exc}\n{tb}",
                self.spec.chain.name,
                self.spec.subtask,
            )
            self.gate.fail_pending(err)
            raise err from exc
        finally:
            close_error = self._close(failed)
            await self._dispose_backends()
        if close_error is not None:
            self.state = "FAILED"
            raise close_error
        self.state = "FINISHED"
        return TaskResult(
            chain_name=self.spec.chain.name,
            subtask=self.spec.subtask,
            operators={op.name: op.metrics() for op in self.operators},
            sink_results={
                op.name: op.result()  # type: ignore[attr-defined]  # only those with result(), see below
                for op in self.operators
                if callable(getattr(op, "result", None))
            },
            duration_s=time.monotonic() - self.started_at,
            cpu_s=time.process_time() - cpu_at_start,
            final_snapshot=final,
            checkpoint_stats=dict(self.checkpoint_stats),
        )

    def _close(self, failed: bool) -> TaskError | None:
        """Closes the operators. After a failure their errors must not mask it; after success
        the first one fails the task (a close may commit or flush output)."""
        first: TaskError | None = None
        operators, self._open_operators = self._open_operators, []
        for op in operators:
            try:
                op.close()
            except Exception as exc:
                if not failed and first is None:
                    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                    first = TaskError(
                        f"task {self.name!r}: closing operator {op.name!r} failed: "
                        f"{type(exc).__name__}: {exc}\n{tb}",
                        op.name,
                        self.spec.subtask,
                    )
        return first

    async def _dispose_backends(self) -> None:
        """Disposes the keyed state backends once no snapshot reads them any more."""
        if self._snapshots_in_flight:
            await asyncio.wait(set(self._snapshots_in_flight))
        backends, self._backends = self._backends, []
        for backend in backends:
            try:
                backend.dispose()
            except Exception:  # noqa: S110 - state of a finished task: nothing to lose
                pass

    async def dispose(self) -> None:
        """Everything the task holds is let go (its worker host is reused): a run that was
        cancelled or never started closes its operators, snapshots in flight finish, state
        backends are disposed."""
        if self._orphan_watch is not None:
            self._orphan_watch.cancel()
        self.state = "RELEASED"
        self.gate.fail_pending(TaskError(f"task {self.name!r} was released", self.spec.chain.name))
        self._close(failed=True)
        await self._dispose_backends()

    async def _after_batch(self) -> None:
        await self.writer.send_ready()  # type: ignore[union-attr]
        for op in self._async_ops:
            await op.async_work()
        # async I/O at capacity holds input it has not started: take no more input until it
        # has room (back-pressure upstream); its results meanwhile go out as usual
        while any(op.input_blocked() for op in self._async_ops):
            for op in self._async_ops:
                await op.async_work()  # the blocked one waits here for a request to finish
            await self.writer.send_ready()  # type: ignore[union-attr]
            await self._flush(only_expired=True)

    async def _flush(self, only_expired: bool) -> None:
        await self.writer.flush(only_expired)  # type: ignore[union-attr]
        for op in self._async_ops:
            if op.has_pending():
                await op.async_work(flush=True)

    # -- time: buffer timeouts, periodic work (watermark generators), processing-time timers ----

    def _init_time(self) -> None:
        mono = self.clock.monotonic_s()
        self._periodic = [
            (op, op.periodic_interval_ms / 1000.0)
            for op in self.operators
            if op.periodic_interval_ms
        ]
        self._periodic_due = [mono + iv for _, iv in self._periodic]

    def _wait_budget(self) -> float | None:
        """Seconds the task may sleep waiting for input before it has something to do."""
        now = self.clock.monotonic_s()
        deadline = self.writer.next_deadline()  # type: ignore[union-attr]
        if any(op.has_pending() for op in self._async_ops):
            t = now + self.writer.buffer_timeout_s  # type: ignore[union-attr]
            deadline = t if deadline is None else min(deadline, t)
        for due in self._periodic_due:
            deadline = due if deadline is None else min(deadline, due)
        wait = None if deadline is None else max(0.0, deadline - now)
        timers = [
            t for t in (op.next_processing_timer() for op in self._timer_ops) if t is not None
        ]
        if timers:
            # processing time may be a manual clock: poll it rather than trusting monotonic time
            until = max(0.0, (min(timers) - self.clock.now_ms()) / 1000.0)
            poll = self.spec.config.idle_poll_interval_ms / 1000.0
            if not isinstance(self.clock, SystemClock):
                until = min(until, poll)
            wait = until if wait is None else min(wait, until)
        return wait

    async def _tick(self) -> None:
        """Runs whatever is due: periodic operator work, processing-time timers, flushes."""
        mono = self.clock.monotonic_s()
        if self._periodic:
            now_ms = None
            for i, (op, interval) in enumerate(self._periodic):
                if mono >= self._periodic_due[i]:
                    now_ms = self.clock.now_ms() if now_ms is None else now_ms
                    op.on_periodic(now_ms)
                    self._periodic_due[i] = mono + interval
        now_ms = None
        for op in self._timer_ops:
            t = op.next_processing_timer()
            if t is not None:
                now_ms = self.clock.now_ms() if now_ms is None else now_ms
                if t <= now_ms:
                    op.on_processing_time(now_ms)
        # the same deadlines _wait_budget waits for: every buffer whose oldest record is due
        await self._flush(only_expired=True)

    async def _run_source(self, source: SourceOperator) -> None:
        cfg = self.spec.config
        sizer = StepSizer(source.read_limit(min(cfg.batch_size, SOURCE_READ_RECORDS)))
        self.step_sizer = sizer
        idle_s = cfg.idle_poll_interval_ms / 1000.0
        self._init_time()
        triggers = self._triggers
        perf = time.perf_counter
        while True:
            read = source.records_in
            t0 = perf()
            status = source.emit_next(sizer.size)
            sizer.observe(source.records_in - read, perf() - t0)
            if triggers:  # position and emitted records agree here: no await since emit_next
                self._checkpoint(triggers.popleft())
            await self._after_batch()
            if self._async_error is not None:
                raise self._async_error
            if status is SourceStatus.END:
                return
            await self._tick()
            if status is SourceStatus.NOTHING_NOW:
                await self._flush(only_expired=False)
                await asyncio.sleep(idle_s)
            else:
                await asyncio.sleep(0)  # let control calls in

    async def _run_inputs(self) -> None:
        gate = self.gate
        head = self.operators[0]
        process = (head.process_batch, head.process_batch2)
        inputs = [inp for inp, _ in self.spec.input_channels]
        # columnar messages hold up to COLUMN_BATCH_FACTOR × batch_size rows (channels.py);
        # row batches never exceed batch_size, so the larger bound changes nothing for them
        sizer = StepSizer(max(self.spec.config.batch_size, 1) * COLUMN_BATCH_FACTOR)
        self.step_sizer = sizer
        perf = time.perf_counter
        self._init_time()
        if len(gate) == 0:
            return
        taken = 0
        last_yield = perf()
        while True:
            got = gate.poll()
            if got is None:
                await self._tick()
                got = await gate.next(self._wait_budget())
                if got is None:
                    continue
            channel, message = got
            kind = type(message)
            if kind in PAYLOAD_TYPES:  # pickled rows, or Arrow IPC columns
                message = loads(message)
                kind = type(message)
            if kind is list:  # a bundle: small batches and the watermarks between them
                for part in message:
                    part_kind = type(part)
                    if part_kind is Batch:
                        head.records_in += len(part.values)
                        process[inputs[channel]](part)
                    elif part_kind is Watermark:
                        self.watermarks.on_watermark(channel, part.timestamp)
                    else:
                        self.watermarks.on_status(channel, part.idle)
            elif kind is Batch or kind is ColumnBatch:
                n = len(message.values)
                head.records_in += n
                if n <= sizer.size:
                    t0 = perf()
                    process[inputs[channel]](message)
                    sizer.observe(n, perf() - t0)
                else:
                    await self._process_in_slices(process[inputs[channel]], message, sizer)
                    last_yield = perf()
            elif kind is Watermark:
                self.watermarks.on_watermark(channel, message.timestamp)
            elif kind is WatermarkStatus:
                self.watermarks.on_status(channel, message.idle)
            elif kind is CheckpointBarrier:
                due = self.barriers.on_barrier(channel, message)
                if due is not None:
                    self._checkpoint(due)
            elif kind is EndOfInput:
                gate.mark_ended(channel)
                due = self.barriers.on_end_of_input(channel)
                if due is not None:
                    self._checkpoint(due)
                if gate.all_ended():
                    self._input_done = True
                    return
            else:
                raise ChannelError(
                    f"task {self.name!r}: unsupported message {message!r} on channel "
                    f"{gate.channels[channel].name!r}"
                )
            await self._after_batch()
            if self._async_error is not None:
                raise self._async_error
            if self._wait_budget() == 0.0:  # a flush, periodic work or a timer is due
                await self._tick()
            taken += 1
            if taken & 15 == 0 or perf() - last_yield >= STEP_TARGET_S:
                await asyncio.sleep(0)  # let control calls in
                last_yield = perf()

    async def _process_in_slices(
        self, process: Any, batch: Batch | ColumnBatch, sizer: StepSizer
    ) -> None:
        """Pushes ``batch`` through the chain in slices of about ``STEP_TARGET_S`` each and
        yields to control calls between them. Barriers and watermarks are messages of their own,
        so none can fall inside a batch; a slice boundary is like one between two batches."""
        perf = time.perf_counter
        n = len(batch.values)
        start = 0
        while start < n:
            stop = min(n, start + sizer.size)
            part = batch.slice(start, stop)
            t0 = perf()
            process(part)
            sizer.observe(stop - start, perf() - t0)
            start = stop
            if start < n:
                await self._after_batch()
                if self._async_error is not None:
                    raise self._async_error
                if self._wait_budget() == 0.0:  # a buffer timeout, periodic work or a timer
                    await self._tick()
                await asyncio.sleep(0)  # let control calls in

    async def _finish(self) -> None:
        if not isinstance(self.operators[0], SourceOperator):
            self.watermarks.end_of_input()
        for op in self.operators:
            op.finish()
            if op.has_async_work:  # e.g. async I/O: its last results precede the next finish()
                await op.async_work(flush=True, final=True)
        await self.writer.send_ready()  # type: ignore[union-attr]
        self._input_done = True
        self.writer.broadcast_control(END_OF_INPUT)  # type: ignore[union-attr]
        self._output_ended = True
        await self.writer.drain()  # type: ignore[union-attr]

    # -- checkpoints (SEMANTICS §5): barriers, snapshots, notifications ---------------------------

    async def trigger_checkpoint(self, checkpoint_id: int, timestamp_ms: int, kind: str) -> None:
        """The coordinator starts a checkpoint here: at a source, or at a task whose inputs all
        ended (no barrier can reach it any more)."""
        barrier = CheckpointBarrier(checkpoint_id, timestamp_ms, CheckpointKind(kind))
        source = bool(self.operators) and isinstance(self.operators[0], SourceOperator)
        if source and self.state in ("DEPLOYED", "RUNNING"):
            # DEPLOYED: the job master sent ``run`` first, but an async actor may start calls
            # out of order; dropped, the barrier would never leave this source while its
            # siblings' barriers hold the downstream inputs aligned until the checkpoint expires
            self._triggers.append(barrier)
        elif self.state != "RUNNING":
            return  # done: a finished task is covered by its final snapshot
        elif self._input_done and self.barriers.on_direct_trigger(barrier):
            self._checkpoint(barrier)

    # -- split sources: the enumerator's calls (taken between two steps of the source loop) ---

    async def add_splits(self, splits: list) -> None:
        head = self.operators[0] if self.operators else None
        if not isinstance(head, SplitSourceOperator):
            raise TaskError(f"task {self.name!r} is no split source", self.spec.chain.name)
        if self.state not in ("DEPLOYED", "RUNNING"):
            if self.state == "FINISHED":  # the enumerator promised no more splits: a bug
                exc = TaskError(
                    f"task {self.name!r} got splits after it finished: {splits!r}",
                    self.spec.chain.name,
                    self.spec.subtask,
                )
                raise exc
            return  # failed or being replaced: the restart reassigns from the checkpoint
        try:
            head.add_splits(splits)
        except RaystreamError as exc:
            self._async_error = self._async_error or exc

    async def no_more_splits(self) -> None:
        head = self.operators[0] if self.operators else None
        if isinstance(head, SplitSourceOperator):
            head.no_more_splits()

    async def restored_split_ids(self) -> list[str]:
        head = self.operators[0] if self.operators else None
        return head.restored_split_ids() if isinstance(head, SplitSourceOperator) else []

    async def notify_checkpoint_complete(self, checkpoint_id: int, final_included: bool) -> None:
        """Checkpoint ``checkpoint_id`` is complete; ``final_included``: it holds this task's final
        snapshot (so whatever that snapshot prepared may be committed too). Notifications may
        arrive late or out of order: one older than what operators already heard is dropped."""
        cid = FINAL_CHECKPOINT_ID if final_included else checkpoint_id
        if cid <= self._notified:
            return
        self._notified = cid
        first: BaseException | None = None
        for op in self.operators:  # every operator hears of it, even after one failed
            try:
                op.notify_checkpoint_complete(cid)
            except RaystreamError as exc:
                first = first or exc
            except Exception as exc:
                err = op.user_error(exc, None, f"completion of checkpoint {checkpoint_id}")
                err.__cause__ = exc
                first = first or err
        if first is not None:
            if self.state == "RUNNING":
                self._async_error = first
            raise first

    async def abort_checkpoint(self, checkpoint_id: int) -> None:
        self.barriers.abort(checkpoint_id)
        for op in self.operators:
            op.notify_checkpoint_aborted(checkpoint_id)

    def _checkpoint(self, barrier: CheckpointBarrier) -> None:
        """The synchronous part: no record is processed until it returns. The barrier goes out
        behind every record emitted before it; keyed state is serialized afterwards."""
        t0 = time.perf_counter()
        cid = barrier.checkpoint_id
        for op in self.operators:
            op.prepare_snapshot_pre_barrier(cid)
        if not self._output_ended:
            self.writer.broadcast_control(barrier)  # type: ignore[union-attr]
        frozen = self._snapshot_operators(cid)
        sync_ms = (time.perf_counter() - t0) * 1000.0
        st = self.checkpoint_stats
        st["taken"] += 1
        st["sync_ms_sum"] += sync_ms
        st["sync_ms_max"] = max(st["sync_ms_max"], sync_ms)
        job = asyncio.create_task(self._write_snapshot(cid, frozen, sync_ms))
        self._snapshots_in_flight.add(job)
        job.add_done_callback(self._snapshots_in_flight.discard)

    def _snapshot_operators(self, cid: int) -> list[tuple[str, Any, bytes]]:
        """Per operator: uid, keyed-state view, and the other parts pickled now (they are
        Python objects the next record may change)."""
        out = []
        for uid, op in zip(self._uids, self.operators):
            try:
                snap = op.snapshot_state(cid)
            except SerializationError as exc:  # keyed state of this operator: name it
                raise op.user_error(exc, None, f"snapshot of checkpoint {cid}") from exc
            except RaystreamError:
                raise
            except Exception as exc:
                raise op.user_error(exc, None, f"snapshot of checkpoint {cid}") from exc
            out.append((uid, *freeze(snap)))
        return out

    async def _write_snapshot(self, cid: int, frozen: list, sync_ms: float) -> None:
        """The asynchronous part: serialize (LMDB views in a thread), put the bytes in the Ray
        object store, acknowledge to the coordinator."""
        import ray

        try:
            # an LMDB view reads in a read transaction while the task goes on writing
            data = await asyncio.to_thread(assemble, cid, frozen, sync_ms)
            for op in self._async_ops:  # output cut at the barrier goes out before the ack
                flush = getattr(op, "flush_sealed", None)
                if flush is not None:
                    await flush()
            ref = ray.put(data)
            self._job_master.acknowledge_checkpoint.remote(  # type: ignore[union-attr]
                (self.spec.chain.id, self.spec.subtask), self.spec.attempt, cid, [ref], len(data)
            )
        except Exception as exc:  # the checkpoint fails, the task does not
            self._job_master.decline_checkpoint.remote(  # type: ignore[union-attr]
                (self.spec.chain.id, self.spec.subtask),
                self.spec.attempt,
                cid,
                f"task {self.name!r}: {type(exc).__name__}: {exc}",
            )

    async def _final_snapshot(self) -> bytes:
        """The state the task finished with: it stands for this task in every later checkpoint."""
        frozen = self._snapshot_operators(FINAL_CHECKPOINT_ID)
        return assemble(FINAL_CHECKPOINT_ID, frozen, 0.0)


def _combine(outputs: list[Output]) -> Output:
    if not outputs:
        return DiscardingOutput()
    if len(outputs) == 1:
        return outputs[0]
    return FanOutput(outputs)


async def _exit_when_job_master_is_gone(name: str, namespace: str, interval_s: float) -> None:
    """The tasks of a detached job outlive their driver, and a job master that Ray restarts
    kills the old ones; one that is gone for good (restarts used up, or killed without restart)
    kills nothing. So each task looks its job master up by name every heartbeat interval, and
    ends its own actor once the name is gone (while Ray restarts it, the name stays)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(ray.get_actor, name, namespace)
        except ValueError:
            break
        except Exception:  # noqa: S112 - the GCS did not answer: ask again later
            continue
    log.error("the job master %s is gone: this task of its job ends", name)
    ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
