"""Internal: the job master's buffer of collected records — what ``execute_and_collect``'s
iterator takes, released exactly once.

Pure logic (no Ray, no event loop): the collect sink's subtasks push pickled batches to the job
master (``operators/sinks.py``), numbered per sink subtask and tagged with their *epoch*, the
checkpoint whose barrier came after them (0: none seen yet in this attempt, i.e. the attempt's
first checkpoint). The job master asks :meth:`CollectBuffer.admit` what to do with a push and
waits while the answer is :attr:`Admission.WAIT`:

- pushes of one sink subtask are taken in sequence order (an async actor may run them out of
  order), at most ``capacity`` batches wait for the driver (a full buffer holds the sink's push,
  which back-pressures the job), pushes of an earlier attempt or after the job ended are dropped;
- with checkpointing, a batch reaches the driver once the checkpoint of its epoch completed
  (:meth:`release`); the records of an attempt that failed and were not released are dropped
  (the restarted job sends them again);
- a BATCH job that may restart (a rerun from the start) holds everything until it finishes;
  otherwise, and without checkpointing, batches go to the driver at once.
"""

from __future__ import annotations

import enum
from collections import deque

#: batches that may wait for the driver before sink pushes are held
COLLECT_BUFFER_BATCHES = 16

SinkSubtask = tuple[str, int]  # (collect id, subtask)


class Admission(enum.Enum):
    #: next in its sink subtask's order, and there is room: take it now
    TAKE = "take"
    #: an earlier push of its sink subtask is missing, or the buffer is full: ask again later
    WAIT = "wait"
    #: of an earlier attempt, or the job ended: nobody takes it
    DROP = "drop"


class CollectBuffer:
    def __init__(
        self, checkpointing: bool, hold_until_end: bool, capacity: int = COLLECT_BUFFER_BATCHES
    ):
        self.checkpointing = checkpointing
        #: BATCH with possible restarts: nothing goes to the driver before the job finished
        self.hold_until_end = hold_until_end
        self.capacity = capacity
        self.attempt = 0
        self.ended = False
        #: batches the driver may take, in order
        self.ready: deque[bytes] = deque()
        self._next_seq: dict[SinkSubtask, int] = {}
        self._uncommitted: list[tuple[int, bytes]] = []  # (epoch, batch) awaiting a checkpoint
        self._released_upto = 0  # batches of epochs up to this one go straight to the driver
        self._first_epoch = 1

    def admit(self, sink: SinkSubtask, attempt: int, seq: int) -> Admission:
        if attempt != self.attempt or self.ended:
            return Admission.DROP
        if self._next_seq.get(sink, 0) != seq or len(self.ready) >= self.capacity:
            return Admission.WAIT
        return Admission.TAKE

    def accept(self, sink: SinkSubtask, seq: int, epoch: int, batch: bytes) -> None:
        """Takes a push :meth:`admit` answered ``TAKE`` to."""
        self._next_seq[sink] = seq + 1
        if epoch == 0:  # before the sink saw a barrier: the next checkpoint covers it
            epoch = self._first_epoch
        if (self.checkpointing and epoch > self._released_upto) or self.hold_until_end:
            self._uncommitted.append((epoch, batch))
        elif batch:
            self.ready.append(batch)

    def release(self, checkpoint_id: int | None) -> None:
        """Batches whose checkpoint completed (``None``: the job finished) go to the driver."""
        if checkpoint_id is not None:
            self._released_upto = max(self._released_upto, checkpoint_id)
        keep = []
        for epoch, batch in self._uncommitted:
            if checkpoint_id is None or epoch <= checkpoint_id:
                if batch:
                    self.ready.append(batch)
            else:
                keep.append((epoch, batch))
        self._uncommitted = keep

    def fence(self, attempt: int) -> None:
        """A new attempt: pushes of earlier ones are dropped from now on."""
        self.attempt = attempt

    def drop_uncommitted(self) -> None:
        """The failed attempt's batches that no checkpoint released are dropped; the next
        attempt's sinks number their pushes from 0."""
        self._uncommitted = []
        self._next_seq = {}

    def begin_attempt(self, first_epoch: int) -> None:
        """``first_epoch``: the attempt's first checkpoint, which covers batches pushed before
        a sink saw any barrier."""
        self._first_epoch = first_epoch

    def take(self) -> list[bytes]:
        out = list(self.ready)
        self.ready.clear()
        return out

    def end(self) -> None:
        """The job ended: nothing more is taken."""
        self.ended = True
