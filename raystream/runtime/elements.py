"""Internal: the wire protocol — every message a channel carries between two task actors.

A channel is FIFO and every message carries a per-channel sequence number (passed beside it in
``TaskActor.push``). Data travels in :class:`Batch` es; control messages keep their order relative
to data: :class:`Watermark`, :class:`WatermarkStatus`, :class:`CheckpointBarrier`,
:class:`EndOfInput`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Batch:
    """A run of records in one channel message.

    ``values`` are the user records. ``timestamps`` is either ``None`` (no record carries an event
    timestamp) or a list of int milliseconds parallel to ``values``.
    """

    __slots__ = ("values", "timestamps")

    def __init__(self, values: list, timestamps: list[int] | None = None):
        self.values = values
        self.timestamps = timestamps

    def __len__(self) -> int:
        return len(self.values)

    def __reduce__(self):
        return (Batch, (self.values, self.timestamps))

    def __repr__(self) -> str:
        return f"Batch(n={len(self.values)}, timestamps={'yes' if self.timestamps else 'no'})"


@dataclass(frozen=True, slots=True)
class Watermark:
    """No record with timestamp <= ``timestamp`` will follow on this channel."""

    timestamp: int


@dataclass(frozen=True, slots=True)
class WatermarkStatus:
    """The channel became idle (left out of the watermark minimum) or active again."""

    idle: bool


class CheckpointKind(Enum):
    CHECKPOINT = "checkpoint"
    SAVEPOINT = "savepoint"


@dataclass(frozen=True, slots=True)
class CheckpointBarrier:
    """Separates the records before checkpoint ``checkpoint_id`` from those after it."""

    checkpoint_id: int
    timestamp_ms: int
    kind: CheckpointKind = CheckpointKind.CHECKPOINT


@dataclass(frozen=True, slots=True)
class EndOfInput:
    """The producer subtask will send nothing more on this channel."""


END_OF_INPUT = EndOfInput()
