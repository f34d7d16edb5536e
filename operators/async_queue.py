"""Internal: the queues of async I/O — which completed requests may be emitted, and when.

Records enter a queue in input order, watermarks between them. A request completes whenever
its service answers; what may leave the queue depends on the mode:

- :class:`OrderedQueue`: strictly input order. A completed entry waits for every entry before
  it; a watermark leaves when it reaches the head.
- :class:`UnorderedQueue`: watermarks cut the queue into segments. Within the first segment
  entries leave as they complete; the watermark closing it leaves once all of them left, and
  only then may entries of the next segment leave. So no result overtakes a watermark, and
  none falls behind one that followed its record (Flink's rule for unordered async I/O).

Checkpoint barriers need no entry: the operator snapshots every record still in the queue and
re-issues them after a restore, so a result emitted after a barrier belongs to a record of the
snapshot, never to one that came after the barrier.

No asyncio and no Ray here: the operator (``async_wait.py``) drives these with its requests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any


class AsyncEntry:
    """One record's request: its input, then its results or its error."""

    __slots__ = (
        "value",
        "timestamp",
        "results",
        "error",
        "done",
        "timed_out",
        "task",
        "segment",
    )

    def __init__(self, value: Any, timestamp: int | None):
        self.value = value
        self.timestamp = timestamp
        self.results: list | None = None
        self.error: BaseException | None = None
        self.done = False
        self.timed_out = False
        self.task: Any = None  # the asyncio task running the request
        self.segment: _Segment | None = None

    def __repr__(self) -> str:
        state = "error" if self.error is not None else "done" if self.done else "pending"
        return f"AsyncEntry({self.value!r}, {state})"


#: what ``pop_ready`` hands out: completed entries, and watermarks as plain ints
Ready = list


class OrderedQueue:
    """Entries leave in input order."""

    def __init__(self) -> None:
        self._items: deque[AsyncEntry | int] = deque()
        self._records = 0

    def __len__(self) -> int:
        """Records in the queue (in flight, or completed and not yet emitted)."""
        return self._records

    def add_record(self, entry: AsyncEntry) -> None:
        self._items.append(entry)
        self._records += 1

    def add_watermark(self, timestamp: int) -> None:
        self._items.append(timestamp)

    def completed(self, entry: AsyncEntry) -> None:
        """``entry`` got its results or its error (``entry.done`` is set)."""

    def has_ready(self) -> bool:
        items = self._items
        if not items:
            return False
        head = items[0]
        return type(head) is int or head.done  # type: ignore[union-attr]

    def pop_ready(self) -> Ready:
        out: list = []
        items = self._items
        while items:
            head = items[0]
            if type(head) is not int:
                if not head.done:  # type: ignore[union-attr]
                    break
                self._records -= 1
            out.append(items.popleft())
        return out

    def entries(self) -> Iterator[AsyncEntry]:
        """Every record entry still in the queue, in input order."""
        return (e for e in self._items if type(e) is not int)  # type: ignore[misc]


class _Segment:
    """Entries between two watermarks; ``watermark`` closes it (None: the open last one)."""

    __slots__ = ("members", "ready", "watermark")

    def __init__(self) -> None:
        self.members: dict[AsyncEntry, None] = {}  # input order, for snapshots
        self.ready: deque[AsyncEntry] = deque()  # completed, in completion order
        self.watermark: int | None = None


class UnorderedQueue:
    """Entries leave as they complete, but never across a watermark."""

    def __init__(self) -> None:
        self._segments: deque[_Segment] = deque([_Segment()])
        self._records = 0

    def __len__(self) -> int:
        return self._records

    def add_record(self, entry: AsyncEntry) -> None:
        seg = self._segments[-1]
        seg.members[entry] = None
        entry.segment = seg
        self._records += 1

    def add_watermark(self, timestamp: int) -> None:
        self._segments[-1].watermark = timestamp
        self._segments.append(_Segment())

    def completed(self, entry: AsyncEntry) -> None:
        seg = entry.segment
        if seg is not None:
            seg.ready.append(entry)

    def has_ready(self) -> bool:
        first = self._segments[0]
        return bool(first.ready) or (not first.members and first.watermark is not None)

    def pop_ready(self) -> Ready:
        out: list = []
        segments = self._segments
        while True:
            first = segments[0]
            ready = first.ready
            while ready:
                entry = ready.popleft()
                del first.members[entry]
                entry.segment = None
                self._records -= 1
                out.append(entry)
            if first.members or first.watermark is None:
                return out
            out.append(first.watermark)
            segments.popleft()

    def entries(self) -> Iterator[AsyncEntry]:
        return (e for seg in self._segments for e in seg.members)
