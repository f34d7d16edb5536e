"""Internal: the task — one subtask of one chain; the body of a task actor.

Record path inside a task: ``push`` (called by producers) → :class:`InputGate` → head operator
→ chained operators (direct calls) → :class:`EdgeOutput` → :class:`ChannelSender` → the next
task's ``push``. A source task has no gate: its loop asks the source operator for the next batch.

The data loop is one coroutine on the actor's event loop; ``push``, ``metrics`` and ``ping`` are
separate coroutines, so control calls are answered while the data path waits for credit.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from raystream.checkpointing.backends.memory import MemoryStateBackend
from raystream.config import ExecutionConfig
from raystream.core.keys import key_group_range
from raystream.core.time import MAX_TS, MIN_TS, SystemClock
from raystream.errors import ChannelError, RaystreamError, TaskError
from raystream.graph.plan import ChainSpec, EdgeSpec
from raystream.operators.base import (
    ChainedOutput,
    DiscardingOutput,
    FanOutput,
    OperatorContext,
    Output,
    StreamOperator,
)
from raystream.operators.sources import SourceOperator, SourceStatus
from raystream.runtime import serde
from raystream.runtime.channels import ChannelSender, EdgeOutput, Writer, loads
from raystream.runtime.elements import END_OF_INPUT, Batch, EndOfInput, Watermark
from raystream.runtime.gate import InputGate


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
        self.name = f"{spec.chain.name} ({spec.subtask + 1}/{spec.chain.parallelism})"
        self.clock = SystemClock()
        self.gate = InputGate(spec.input_channels)
        self.operators: list[StreamOperator] = []
        self.writer: Writer | None = None
        self.state = "CREATED"
        self.started_at = 0.0
        self._channel_wm = [MIN_TS] * len(spec.input_channels)
        self._last_wm = MIN_TS
        self._factories = [(n, n.factory) for n in spec.chain.nodes]

    # -- control plane ---------------------------------------------------------------------------

    async def setup(self, outputs: dict[int, Any], services: dict[str, Any]) -> None:
        """``outputs[k]`` is the actor handle behind ``spec.output_channels[k]``."""
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
            )
            senders_by_edge[oc.edge_id].append(sender)
            all_senders.append(sender)
        self.writer = Writer(all_senders, cfg.buffer_timeout_ms / 1000.0, mono)

        ops: dict[int, StreamOperator] = {}
        for node, factory in self._factories:
            ops[node.id] = factory(node.name)
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
                by_tag.setdefault(o.tag_id, []).append(target)
            main = _combine(by_tag.pop(None, []))
            sides = {tag: _combine(outs) for tag, outs in by_tag.items()}
            backend = None
            if node.keyed:
                backend = MemoryStateBackend(
                    spec.max_parallelism, key_group_range(spec.subtask, p, spec.max_parallelism)
                )
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
            )
            op.setup(ctx, main, sides)
        self.operators = [ops[n.id] for n, _ in self._factories]
        self._async_ops = [op for op in self.operators if op.has_async_work]
        self.state = "DEPLOYED"

    async def ping(self) -> str:
        return self.state

    async def metrics(self) -> dict[str, Any]:
        out = {
            "task": self.name,
            "state": self.state,
            "queued_in": self.gate.queued(),
            "watermark": self._last_wm,
            "operators": {op.name: op.metrics() for op in self.operators},
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
        self.state = "RUNNING"
        current = "open"
        try:
            for op in reversed(self.operators):
                current = op.name
                op.open()
            if isinstance(self.operators[0], SourceOperator):
                await self._run_source(self.operators[0])
            else:
                await self._run_inputs()
            await self._finish()
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
            for op in self.operators:
                try:
                    op.close()
                except Exception:  # noqa: S110 - closing after a failure must not mask it
                    pass
        self.state = "FINISHED"
        return TaskResult(
            chain_name=self.spec.chain.name,
            subtask=self.spec.subtask,
            operators={op.name: op.metrics() for op in self.operators},
            sink_results={
                op.name: op.result()
                for op in self.operators
                if callable(getattr(op, "result", None))
            },
            duration_s=time.monotonic() - self.started_at,
        )

    async def _after_batch(self) -> None:
        await self.writer.send_ready()  # type: ignore[union-attr]
        for op in self._async_ops:
            await op.async_work()

    async def _flush(self, only_expired: bool) -> None:
        await self.writer.flush(only_expired)  # type: ignore[union-attr]
        for op in self._async_ops:
            if op.has_pending():
                await op.async_work(flush=True)

    def _next_deadline(self) -> float | None:
        deadline = self.writer.next_deadline()  # type: ignore[union-attr]
        if any(op.has_pending() for op in self._async_ops):
            t = self.clock.monotonic_s() + self.writer.buffer_timeout_s  # type: ignore[union-attr]
            deadline = t if deadline is None else min(deadline, t)
        return deadline

    async def _run_source(self, source: SourceOperator) -> None:
        cfg = self.spec.config
        batch_size = cfg.batch_size
        idle_s = cfg.idle_poll_interval_ms / 1000.0
        timeout_s = cfg.buffer_timeout_ms / 1000.0
        mono = self.clock.monotonic_s
        next_flush = mono() + timeout_s
        while True:
            status = source.emit_next(batch_size)
            await self._after_batch()
            if status is SourceStatus.END:
                return
            now = mono()
            if status is SourceStatus.NOTHING_NOW:
                await self._flush(only_expired=False)
                await asyncio.sleep(idle_s)
            elif now >= next_flush:
                await self._flush(only_expired=True)
                next_flush = now + timeout_s
            await asyncio.sleep(0)  # let control calls in

    async def _run_inputs(self) -> None:
        gate = self.gate
        head = self.operators[0]
        process = (head.process_batch, head.process_batch2)
        inputs = [inp for inp, _ in self.spec.input_channels]
        mono = self.clock.monotonic_s
        timeout_s = self.spec.config.buffer_timeout_ms / 1000.0
        next_flush = mono() + timeout_s
        if len(gate) == 0:
            return
        taken = 0
        while True:
            got = gate.poll()
            if got is None:
                deadline = self._next_deadline()
                wait = None if deadline is None else max(0.0, deadline - mono())
                got = await gate.next(wait)
                if got is None:
                    await self._flush(only_expired=True)
                    continue
            channel, message = got
            kind = type(message)
            if kind is bytes:
                message = loads(message)
                kind = Batch
            if kind is Batch:
                head.records_in += len(message.values)
                process[inputs[channel]](message)
            elif kind is Watermark:
                self._on_watermark(channel, message.timestamp)
            elif kind is EndOfInput:
                gate.mark_ended(channel)
                if gate.all_ended():
                    return
            else:
                raise ChannelError(
                    f"task {self.name!r}: unsupported message {message!r} on channel "
                    f"{gate.channels[channel].name!r}"
                )
            await self._after_batch()
            taken += 1
            if taken & 15 == 0:
                now = mono()
                if now >= next_flush:
                    await self._flush(only_expired=True)
                    next_flush = now + timeout_s
                await asyncio.sleep(0)

    def _on_watermark(self, channel: int, timestamp: int) -> None:
        wms = self._channel_wm
        if timestamp <= wms[channel]:
            return
        wms[channel] = timestamp
        combined = min(wms)
        if combined > self._last_wm:
            self._last_wm = combined
            self.operators[0].process_watermark(combined)

    async def _finish(self) -> None:
        if self._last_wm < MAX_TS and not isinstance(self.operators[0], SourceOperator):
            # every input ended: whatever the channels said last, no more records will come
            self._last_wm = MAX_TS
            self.operators[0].process_watermark(MAX_TS)
        for op in self.operators:
            op.finish()
        await self.writer.send_ready()  # type: ignore[union-attr]
        for op in self._async_ops:
            await op.async_work(flush=True, final=True)
        self.writer.broadcast_control(END_OF_INPUT)  # type: ignore[union-attr]
        await self.writer.drain()  # type: ignore[union-attr]


def _combine(outputs: list[Output]) -> Output:
    if not outputs:
        return DiscardingOutput()
    if len(outputs) == 1:
        return outputs[0]
    return FanOutput(outputs)
