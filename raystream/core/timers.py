"""Internal: timers of one keyed operator subtask — event time and processing time.

A timer is ``(timestamp, key, namespace)``; registering the same one twice keeps one. Timers fire
in ascending timestamp order (registration order among equal timestamps); a timer registered while
firing that is already due fires in the same round. Deletion is lazy: the heap keeps the entry,
the live set decides. Snapshots group timers by the key group of their key.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable, Iterator
from typing import Any

EVENT_TIME = 0
PROCESSING_TIME = 1


class _TimerQueue:
    __slots__ = ("heap", "live", "_seq")

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, Any, Any]] = []
        self.live: set[tuple[int, Any, Any]] = set()
        self._seq = itertools.count()

    def add(self, ts: int, key: Any, ns: Any) -> None:
        entry = (ts, key, ns)
        if entry not in self.live:
            self.live.add(entry)
            heapq.heappush(self.heap, (ts, next(self._seq), key, ns))

    def delete(self, ts: int, key: Any, ns: Any) -> None:
        self.live.discard((ts, key, ns))

    def pop_due(self, upto: int) -> tuple[int, Any, Any] | None:
        heap = self.heap
        while heap and heap[0][0] <= upto:
            ts, _, key, ns = heapq.heappop(heap)
            entry = (ts, key, ns)
            if entry in self.live:
                self.live.discard(entry)
                return entry
        return None

    def peek(self) -> int | None:
        heap = self.heap
        while heap:
            ts, _, key, ns = heap[0]
            if (ts, key, ns) in self.live:
                return ts
            heapq.heappop(heap)
        return None

    def __len__(self) -> int:
        return len(self.live)


class TimerService:
    """Both timer queues of a keyed operator subtask."""

    def __init__(self) -> None:
        self.queues = (_TimerQueue(), _TimerQueue())

    def register(self, domain: int, ts: int, key: Hashable, namespace: Any = None) -> None:
        self.queues[domain].add(ts, key, namespace)

    def delete(self, domain: int, ts: int, key: Hashable, namespace: Any = None) -> None:
        self.queues[domain].delete(ts, key, namespace)

    def due(self, domain: int, upto: int) -> Iterator[tuple[int, Any, Any]]:
        """Pops due timers one by one (so timers registered meanwhile are seen)."""
        q = self.queues[domain]
        while True:
            entry = q.pop_due(upto)
            if entry is None:
                return
            yield entry

    def next_timestamp(self, domain: int) -> int | None:
        return self.queues[domain].peek()

    def num_timers(self) -> int:
        return len(self.queues[0]) + len(self.queues[1])

    def snapshot(
        self, key_group: Callable[[Any], int]
    ) -> dict[int, list[tuple[int, int, Any, Any]]]:
        out: dict[int, list[tuple[int, int, Any, Any]]] = {}
        for domain, q in enumerate(self.queues):
            for ts, key, ns in q.live:
                out.setdefault(key_group(key), []).append((domain, ts, key, ns))
        return out

    def restore(self, entries: list[tuple[int, int, Any, Any]]) -> None:
        for domain, ts, key, ns in sorted(entries, key=lambda e: (e[0], e[1])):
            self.register(domain, ts, key, ns)
