"""Internal: the job master's side of ``execute_and_collect`` — where the collect sinks' pushes
and the driver's fetches wait, around the decisions of a
:class:`~raystream.runtime.collect_buffer.CollectBuffer`.

A push the buffer cannot take yet (an earlier push of its sink subtask is missing, or the buffer
is full) waits until the buffer changed; so does a fetch that finds nothing to take, at most
``max_wait_s``. Every change wakes both.
"""

from __future__ import annotations

import asyncio

from raystream.runtime.collect_buffer import Admission, CollectBuffer


class CollectedRecords:
    def __init__(self, buffer: CollectBuffer):
        self.buffer = buffer
        self._changed = asyncio.Condition()
        #: pushes being taken or waiting (a stop with savepoint lets them finish)
        self.pushes_active = 0

    async def push(
        self, sink: tuple[str, int], attempt: int, seq: int, epoch: int, batch: bytes
    ) -> None:
        """Pushes of one sink subtask may run out of order on the job master's event loop: the
        buffer takes them in sequence order, holds them while it is full, and drops those of an
        earlier attempt (the restarted job sends those records again)."""
        self.pushes_active += 1
        try:
            async with self._changed:
                while (admission := self.buffer.admit(sink, attempt, seq)) is Admission.WAIT:
                    await self._changed.wait()
                if admission is Admission.DROP:
                    return
                self.buffer.accept(sink, seq, epoch, batch)
                self._changed.notify_all()
        finally:
            self.pushes_active -= 1

    async def fetch(self, max_wait_s: float) -> tuple[list[bytes], bool]:
        """What the driver may take (waiting at most ``max_wait_s`` for something), and whether
        the job ended (after which nothing more comes)."""
        buffer = self.buffer
        async with self._changed:
            if not buffer.ready and not buffer.ended:
                try:
                    await asyncio.wait_for(self._changed.wait(), max_wait_s)
                except asyncio.TimeoutError:
                    pass
            out = buffer.take()
            self._changed.notify_all()
            return out, buffer.ended and not buffer.ready

    def release(self, checkpoint_id: int | None) -> None:
        """Records whose checkpoint completed (``None``: the job finished) go to the driver."""
        self.buffer.release(checkpoint_id)
        asyncio.ensure_future(self._notify())

    def fence(self, attempt: int) -> None:
        self.buffer.fence(attempt)

    def drop_uncommitted(self) -> None:
        self.buffer.drop_uncommitted()
        asyncio.ensure_future(self._notify())

    async def end(self) -> None:
        """The job ended: waiting pushes are dropped, waiting fetches return."""
        self.buffer.end()
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
