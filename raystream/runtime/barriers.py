"""Internal: checkpoint barriers at a task's input gate (SEMANTICS §5.1, §5.2).

Exactly-once (aligned): when barrier ``n`` arrives on a channel, that channel is blocked — not
consumed, so its bounded queue back-pressures its producer — until barrier ``n`` has arrived on
every channel still open. Then the checkpoint is taken and all channels are unblocked.
At-least-once: barriers are only counted; nothing is blocked. Savepoints always align.

A channel that reached end of input counts as aligned. A barrier newer than the one being
aligned aborts the older checkpoint; a barrier older than it (of an aborted checkpoint) is
ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from raystream.runtime.elements import CheckpointBarrier, CheckpointKind


class Gate(Protocol):
    def __len__(self) -> int: ...

    def block(self, channel: int) -> None: ...

    def unblock(self, channel: int) -> None: ...

    def is_ended(self, channel: int) -> bool: ...


class BarrierHandler:
    """Tells the task when to take a checkpoint; ``aborted`` lists checkpoints given up."""

    def __init__(
        self, gate: Gate, exactly_once: bool, clock: Callable[[], float] = time.perf_counter
    ):
        self.gate = gate
        self.exactly_once = exactly_once
        self.current: CheckpointBarrier | None = None  # the checkpoint being aligned
        self.seen: set[int] = set()
        self.last_done = -1  # newest checkpoint taken or given up
        self.aborted: list[int] = []
        self.alignments = 0
        #: seconds from the first barrier of a checkpoint to the last (``clock`` time)
        self.clock = clock
        self._align_started = 0.0
        self.last_alignment_s = 0.0
        self.alignment_s_sum = 0.0

    def _open_channels(self) -> set[int]:
        return {c for c in range(len(self.gate)) if not self.gate.is_ended(c)}

    def on_barrier(self, channel: int, barrier: CheckpointBarrier) -> CheckpointBarrier | None:
        """A barrier was taken from ``channel``; returns it when the checkpoint is due now."""
        cid = barrier.checkpoint_id
        if cid <= self.last_done:
            return None  # of a checkpoint already taken or given up
        if self.current is not None and cid < self.current.checkpoint_id:
            return None
        if self.current is not None and cid > self.current.checkpoint_id:
            self._give_up()
        if self.current is None:
            self.current = barrier
            self.seen = set()
            self._align_started = self.clock()
        self.seen.add(channel)
        align = self.exactly_once or barrier.kind is CheckpointKind.SAVEPOINT
        if self._complete():
            return self._finish()
        if align:
            self.gate.block(channel)
        return None

    def on_end_of_input(self, channel: int) -> CheckpointBarrier | None:
        """``channel`` ended: it no longer holds back the checkpoint being aligned."""
        if self.current is not None and self._complete():
            return self._finish()
        return None

    def on_direct_trigger(self, barrier: CheckpointBarrier) -> bool:
        """The coordinator triggered this task itself (every input ended). Whether to take it."""
        cid = barrier.checkpoint_id
        if cid <= self.last_done or (
            self.current is not None and cid <= self.current.checkpoint_id
        ):
            return False
        if self.current is not None:
            self._give_up()
        self.last_done = cid
        return True

    def abort(self, checkpoint_id: int) -> bool:
        """The coordinator gave up ``checkpoint_id``; whether an alignment was released."""
        if self.current is not None and self.current.checkpoint_id <= checkpoint_id:
            self._give_up()
            return True
        self.last_done = max(self.last_done, checkpoint_id)
        return False

    def is_aligning(self) -> bool:
        return self.current is not None

    def _complete(self) -> bool:
        return self._open_channels() <= self.seen

    def _finish(self) -> CheckpointBarrier:
        barrier = self.current
        assert barrier is not None
        self._release()
        self.last_done = barrier.checkpoint_id
        self.alignments += 1
        took = max(0.0, self.clock() - self._align_started)
        self.last_alignment_s = took
        self.alignment_s_sum += took
        return barrier

    def metrics(self) -> dict[str, Any]:
        """Alignments done, and how long the last one and all of them took (in ms)."""
        return {
            "alignments": self.alignments,
            "alignment_ms_last": self.last_alignment_s * 1000.0,
            "alignment_ms_sum": self.alignment_s_sum * 1000.0,
        }

    def _give_up(self) -> None:
        assert self.current is not None
        self.aborted.append(self.current.checkpoint_id)
        self.last_done = max(self.last_done, self.current.checkpoint_id)
        self._release()

    def _release(self) -> None:
        for c in self.seen:
            self.gate.unblock(c)
        self.current = None
        self.seen = set()
