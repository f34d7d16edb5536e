"""A running job's output as a Ray Data pipeline that reads while the job produces.

``stream.to_ray_data_stream()`` adds a sink and returns a :class:`RayDataStream`; its
``dataset()`` is a ``ray.data.Dataset`` whose read tasks take blocks from a hand-off actor as the
sink subtasks put them there, so ``ds.map_batches(...).iter_batches()`` (or a write) runs
alongside the job and ends when the job's input ended.

Record path: sink subtask → Arrow tables of ``rows_per_block`` rows (dict records become
columns, anything else the column ``item``; a partial block leaves at the buffer timeout) →
``HandoffQueue.put`` (an actor call, at most two in flight per subtask) → the queue's ready
blocks → a Ray Data read task's ``get``.

Exactly-once with checkpointing, as a two-phase-commit sink: a block is tagged with its
*epoch* (the last checkpoint barrier the subtask saw, plus one) and held in the queue until a
checkpoint at or past its epoch completes (``notify_checkpoint_complete`` → ``commit``). Before
a subtask acknowledges a checkpoint it waits until its blocks up to that barrier reached the
queue. When a restarted attempt shows up, held blocks of earlier attempts are released if their
epoch is within the checkpoint the job restored from (its completion notice may have been lost)
and dropped otherwise (the restored job produces them again); late calls of an earlier attempt
are dropped. So the Dataset sees every record once, at the checkpoint interval's latency.
Without checkpointing blocks are released at once (and a job rerun by an explicit restart
strategy would repeat them). Back-pressure: ``put`` of a released block waits while
``capacity_blocks`` released blocks are unread, which suspends the sink and then the job.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from typing import Any

from raystream.checkpointing.snapshot import FINAL_CHECKPOINT_ID, OperatorSnapshot
from raystream.operators.base import StreamOperator
from raystream.runtime.elements import Batch

#: operator list state: the id of the checkpoint a snapshot belongs to
_CHECKPOINT_STATE = "__raystream_ray_data_stream_checkpoint__"


class HandoffBuffer:
    """The queue's rules (no Ray): held and released blocks, attempts, the end of the stream."""

    def __init__(self, capacity_blocks: int):
        self.capacity = capacity_blocks
        self.ready: deque[Any] = deque()  # released blocks, in release order
        self.held: list[tuple[int, Any]] = []  # (epoch, block) of the current attempt
        self.attempt = 0
        self.parallelism: int | None = None
        self.done: set[int] = set()  # subtasks of the current attempt that finished
        self.dropped = 0

    def _enter(self, attempt: int, restored_from: int) -> bool:
        """Whether a message of ``attempt`` counts; a newer attempt first settles the held
        blocks of the old one by the checkpoint it restored from."""
        if attempt < self.attempt:
            return False
        if attempt > self.attempt:
            keep = [block for epoch, block in self.held if epoch <= restored_from]
            self.dropped += len(self.held) - len(keep)
            self.ready.extend(keep)
            self.held = []
            self.attempt = attempt
            self.done = set()
            self.parallelism = None
        return True

    def has_room(self) -> bool:
        return len(self.ready) < self.capacity

    def put(self, attempt: int, restored_from: int, epoch: int | None, block: Any) -> None:
        """``epoch`` None: released at once (no checkpointing)."""
        if not self._enter(attempt, restored_from):
            self.dropped += 1
            return
        if epoch is None:
            self.ready.append(block)
        else:
            self.held.append((epoch, block))

    def commit(self, attempt: int, restored_from: int, checkpoint_id: int) -> None:
        if not self._enter(attempt, restored_from):
            return
        still = []
        for epoch, block in self.held:
            if epoch <= checkpoint_id:
                self.ready.append(block)
            else:
                still.append((epoch, block))
        self.held = still

    def writer_done(self, attempt: int, restored_from: int, subtask: int, parallelism: int) -> None:
        if self._enter(attempt, restored_from):
            self.done.add(subtask)
            self.parallelism = parallelism

    def take(self) -> Any:
        return self.ready.popleft() if self.ready else None

    def finished(self) -> bool:
        return (
            self.parallelism is not None
            and len(self.done) >= self.parallelism
            and not self.held
            and not self.ready
        )


class HandoffQueue:
    """Actor shell over :class:`HandoffBuffer` (made an async Ray actor by
    :class:`RayDataStream`)."""

    def __init__(self, capacity_blocks: int):
        self.buffer = HandoffBuffer(capacity_blocks)
        self._changed = asyncio.Condition()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def put(self, attempt: int, restored_from: int, epoch: int | None, block: Any) -> None:
        if epoch is None:
            async with self._changed:
                await self._changed.wait_for(self.buffer.has_room)
        self.buffer.put(attempt, restored_from, epoch, block)
        await self._notify()

    async def commit(self, attempt: int, restored_from: int, checkpoint_id: int) -> None:
        self.buffer.commit(attempt, restored_from, checkpoint_id)
        await self._notify()

    async def writer_done(
        self, attempt: int, restored_from: int, subtask: int, parallelism: int
    ) -> None:
        self.buffer.writer_done(attempt, restored_from, subtask, parallelism)
        await self._notify()

    async def get(self) -> Any:
        """The next released block, or None once the stream ended."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self.buffer.ready) or self.buffer.finished())
            block = self.buffer.take()
            self._changed.notify_all()  # room for a waiting put
            return block

    async def stats(self) -> dict:
        b = self.buffer
        return {
            "ready": len(b.ready),
            "held": len(b.held),
            "attempt": b.attempt,
            "dropped": b.dropped,
        }


def rows_to_table(rows: list) -> Any:
    import pyarrow as pa

    if rows and all(type(r) is dict for r in rows):
        return pa.Table.from_pylist(rows)
    return pa.table({"item": rows})


class RayDataStreamSinkOperator(StreamOperator):
    """The sink side (see the module docstring)."""

    has_async_work = True
    max_in_flight = 2

    def __init__(self, name: str, queue: Any, rows_per_block: int):
        super().__init__(name)
        self.queue = queue
        self.rows_per_block = rows_per_block
        self._rows: list = []
        self._sealed: deque[tuple[int | None, Any]] = deque()  # (epoch, table)
        self._in_flight: deque = deque()
        self._restored_from = 0
        self._epoch: int | None = None
        self._transactional = False
        self.blocks_sent = 0

    def initialize_state(self, restored: OperatorSnapshot | None) -> None:
        super().initialize_state(restored)
        if restored is not None:
            ids = self.operator_state.get_list_state(_CHECKPOINT_STATE).get()
            self._restored_from = max(ids, default=0)

    def open(self) -> None:
        assert self.ctx is not None
        self._transactional = self.ctx.config.checkpoint.is_checkpointing_enabled()
        self._epoch = self._restored_from + 1 if self._transactional else None

    def process_batch(self, batch: Batch) -> None:
        self._rows.extend(batch.values)
        while len(self._rows) >= self.rows_per_block:
            self._seal(self.rows_per_block)

    def process_watermark(self, timestamp: int) -> None:
        pass

    def _seal(self, n: int) -> None:
        rows, self._rows = self._rows[:n], self._rows[n:]
        if rows:
            self._sealed.append((self._epoch, rows_to_table(rows)))

    def prepare_snapshot_pre_barrier(self, checkpoint_id: int) -> None:
        self._seal(len(self._rows))
        if self._transactional:
            self._epoch = checkpoint_id + 1

    def snapshot_state(self, checkpoint_id: int) -> OperatorSnapshot:
        if checkpoint_id != FINAL_CHECKPOINT_ID:
            self.operator_state.get_list_state(_CHECKPOINT_STATE).update([checkpoint_id])
        return super().snapshot_state(checkpoint_id)

    def finish(self) -> None:
        self._seal(len(self._rows))

    async def _send(self) -> None:
        assert self.ctx is not None
        attempt = self.ctx.attempt
        while self._sealed:
            while len(self._in_flight) >= self.max_in_flight:
                await self._in_flight.popleft()
            epoch, table = self._sealed.popleft()
            self._in_flight.append(
                self.queue.put.remote(attempt, self._restored_from, epoch, table)
            )
            self.blocks_sent += 1

    async def _drain(self) -> None:
        while self._in_flight:
            await self._in_flight.popleft()

    async def async_work(self, flush: bool = False, final: bool = False) -> None:
        if flush or final:
            self._seal(len(self._rows))
        await self._send()
        if final:
            await self._drain()
            if not self._transactional:
                await self._writer_done()

    async def flush_sealed(self) -> None:
        """Before the task acknowledges a checkpoint: every block up to its barrier is in the
        queue, so the checkpoint's completion can release them all."""
        await self._send()
        await self._drain()

    def has_pending(self) -> bool:
        return bool(self._rows or self._sealed)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        if not self._transactional:
            return
        assert self.ctx is not None
        self.queue.commit.remote(self.ctx.attempt, self._restored_from, checkpoint_id)
        if checkpoint_id == FINAL_CHECKPOINT_ID:
            self.queue.writer_done.remote(
                self.ctx.attempt, self._restored_from, self.ctx.subtask_index, self.ctx.parallelism
            )

    async def _writer_done(self) -> None:
        assert self.ctx is not None
        await self.queue.writer_done.remote(
            self.ctx.attempt, self._restored_from, self.ctx.subtask_index, self.ctx.parallelism
        )

    def metrics(self) -> dict[str, Any]:
        return {**super().metrics(), "blocks_sent": self.blocks_sent}


def _read_blocks(queue: Any) -> Any:
    import ray

    while True:
        block = ray.get(queue.get.remote())
        if block is None:
            return
        yield block


class RayDataStream:
    """The output of a running job as a Ray Data ``Dataset`` (from
    ``DataStream.to_ray_data_stream``); see the module docstring."""

    def __init__(self, capacity_blocks: int = 16, rows_per_block: int = 1024, readers: int = 1):
        import ray

        if capacity_blocks < 1 or rows_per_block < 1 or readers < 1:
            raise ValueError(
                "capacity_blocks, rows_per_block and readers must be >= 1, got "
                f"{capacity_blocks}, {rows_per_block}, {readers}"
            )
        self.rows_per_block = rows_per_block
        self.readers = readers
        self.queue = (
            ray.remote(HandoffQueue)
            .options(num_cpus=0, max_concurrency=1000)
            .remote(capacity_blocks)
        )

    def operator_factory(self) -> Any:
        return functools.partial(
            RayDataStreamSinkOperator, queue=self.queue, rows_per_block=self.rows_per_block
        )

    def dataset(self, target_block_bytes: int = 1 << 20) -> Any:
        """A lazy ``ray.data.Dataset`` of the job's records (dict rows); iterate, transform or
        write it while the job runs. Read it once: blocks are handed over, not kept.

        Ray Data's read operator gathers what a read task yields into blocks of its context's
        ``target_max_block_size`` (128 MiB by default) before passing them on; this dataset's
        context uses ``target_block_bytes``, so blocks flow on every ~1 MiB of records (and
        the rest at the end of the stream). Lower it for a slow trickle of small records."""
        import ray.data
        from ray.data.block import BlockMetadata
        from ray.data.datasource import Datasource, ReadTask

        queue, readers = self.queue, self.readers

        class _Handoff(Datasource):
            def estimate_inmemory_data_size(self) -> int | None:
                return None

            def get_read_tasks(self, parallelism: int, **kwargs: Any) -> list:
                meta = BlockMetadata(
                    num_rows=None, size_bytes=None, input_files=None, exec_stats=None
                )
                return [
                    ReadTask(functools.partial(_read_blocks, queue), meta) for _ in range(readers)
                ]

            def get_name(self) -> str:
                return "RaystreamHandoff"

        ds = ray.data.read_datasource(
            _Handoff(), override_num_blocks=readers, ray_remote_args={"num_cpus": 0}
        )
        ds.context.target_max_block_size = target_block_bytes  # this dataset's copy only
        return ds

    def stats(self) -> dict:
        """Blocks ready and held in the hand-off, the attempt it serves, blocks dropped."""
        import ray

        return ray.get(self.queue.stats.remote())  # type: ignore[no-any-return]

    def close(self) -> None:
        """Removes the hand-off actor (once the dataset was read; it also ends with the
        driver that created it)."""
        import ray

        ray.kill(self.queue)
