"""Internal: the wire protocol — every message a channel carries between two task actors.

A channel is FIFO and every message carries a per-channel sequence number (passed beside it in
``TaskActor.push``). Data travels in :class:`Batch` es (rows: Python objects) or
:class:`ColumnBatch` es (columns: an Arrow record batch, sent as Arrow IPC, see
:mod:`raystream.runtime.columns`); a stream carries one or the other, decided when the job is
built. Control messages keep their order relative to data: :class:`Watermark`,
:class:`WatermarkStatus`, :class:`CheckpointBarrier`, :class:`EndOfInput`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


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

    def slice(self, start: int, stop: int) -> Batch:
        stamps = self.timestamps
        return Batch(self.values[start:stop], None if stamps is None else stamps[start:stop])

    def __reduce__(self):
        return (Batch, (self.values, self.timestamps))

    def __repr__(self) -> str:
        return f"Batch(n={len(self.values)}, timestamps={'yes' if self.timestamps else 'no'})"


class ColumnBatch:
    """A run of records as columns, one message of a columnar stream.

    ``values`` is a ``pyarrow.RecordBatch`` (one record per row). ``timestamps`` is ``None`` (no
    record carries an event timestamp) or an int64 numpy array parallel to the rows. The
    attribute names are those of :class:`Batch`, so code that only counts records
    (``len(batch.values)``) serves both shapes.
    """

    __slots__ = ("values", "timestamps")

    def __init__(self, values: Any, timestamps: Any = None):
        self.values = values
        self.timestamps = timestamps

    def __len__(self) -> int:
        return self.values.num_rows  # type: ignore[no-any-return]

    def slice(self, start: int, stop: int) -> ColumnBatch:
        stamps = self.timestamps
        return ColumnBatch(
            self.values.slice(start, stop - start), None if stamps is None else stamps[start:stop]
        )

    def take(self, indices: Any) -> ColumnBatch:
        """The rows at ``indices`` (a numpy integer array), in that order."""
        stamps = self.timestamps
        return ColumnBatch(self.values.take(indices), None if stamps is None else stamps[indices])

    def __reduce__(self):
        return (ColumnBatch, (self.values, self.timestamps))

    def __repr__(self) -> str:
        stamps = "no" if self.timestamps is None else "yes"
        return (
            f"ColumnBatch(n={len(self)}, columns={self.values.schema.names}, timestamps={stamps})"
        )


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
