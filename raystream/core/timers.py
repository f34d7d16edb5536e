"""Internal: timers of one keyed operator subtask — event time and processing time.

A timer is ``(timestamp, key, namespace)``; registering the same one twice keeps one. Timers fire
in ascending timestamp order (registration order among equal timestamps); a timer registered while
firing that is already due fires in the same round. Snapshots group timers by the key group of
their key.

Timers are kept in buckets, one insertion-ordered dict per timestamp, with a heap of the distinct
timestamps. Windows and per-key timeouts put many timers on the same timestamp (every key's window
ends at the same instant), so registering and firing cost a dict operation each and the heap sees
one entry per timestamp, not one per timer. Deletion is exact.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterator
from typing import Any

EVENT_TIME = 0
PROCESSING_TIME = 1

_MISSING = object()


class _TimerQueue:
    __slots__ = ("heap", "buckets", "count", "firing_ts", "firing")

    def __init__(self) -> None:
        self.heap: list[int] = []  # timestamps with a bucket (stale entries are skipped)
        self.buckets: dict[int, dict[tuple[Any, Any], None]] = {}
        self.count = 0
        # the bucket being fired: taken out of ``buckets``, its timers still count as registered
        self.firing_ts: int | None = None
        self.firing: dict[tuple[Any, Any], None] = {}

    def add(self, ts: int, key: Any, ns: Any) -> None:
        entry = (key, ns)
        bucket = self.buckets.get(ts)
        if bucket is None:
            if ts == self.firing_ts and entry in self.firing:
                return
            self.buckets[ts] = {entry: None}
            heapq.heappush(self.heap, ts)
        elif entry in bucket:
            return
        else:
            bucket[entry] = None
        self.count += 1

    def delete(self, ts: int, key: Any, ns: Any) -> None:
        entry = (key, ns)
        bucket = self.buckets.get(ts)
        if bucket is not None and bucket.pop(entry, _MISSING) is not _MISSING:
            self.count -= 1
            if not bucket:
                del self.buckets[ts]  # its heap entry goes stale
        elif ts == self.firing_ts and self.firing.pop(entry, _MISSING) is not _MISSING:
            self.count -= 1

    def peek(self) -> int | None:
        heap = self.heap
        buckets = self.buckets
        while heap:
            ts = heap[0]
            if ts in buckets:
                return ts
            heapq.heappop(heap)
        return None

    def due(self, upto: int) -> Iterator[tuple[int, Any, Any]]:
        """Pops due timers one by one, bucket by bucket. A timer registered meanwhile for the
        current timestamp lands in a new bucket, which the loop reaches after the current one; one
        for an earlier timestamp interrupts the current bucket and fires first."""
        heap = self.heap
        while (due := self._pop_bucket(upto)) is not None:
            ts, firing = due
            self.firing_ts, self.firing = ts, firing
            try:
                for entry in list(firing):
                    if firing.pop(entry, _MISSING) is _MISSING:
                        continue  # deleted by an earlier timer of this bucket
                    self.count -= 1
                    yield ts, entry[0], entry[1]
                    if heap and heap[0] < ts:
                        break  # an earlier timer was registered (or a stale heap entry)
            finally:
                # the rest stays registered (interrupted, or the consumer stopped early)
                if firing:
                    rest = self.buckets.get(ts)
                    if rest is None:
                        self.buckets[ts] = firing
                        heapq.heappush(self.heap, ts)
                    else:  # registered meanwhile: after the remaining ones
                        firing.update(rest)
                        self.buckets[ts] = firing
                self.firing_ts, self.firing = None, {}

    def take_due(self, upto: int) -> Iterator[tuple[int, dict[tuple[Any, Any], None]]]:
        """Removes and yields whole buckets of due timers, ``(timestamp, {(key, namespace):
        None})``, in timestamp order: for a caller that registers and deletes no timers while
        it fires them."""
        while (due := self._pop_bucket(upto)) is not None:
            self.count -= len(due[1])
            yield due

    def _pop_bucket(self, upto: int) -> tuple[int, dict[tuple[Any, Any], None]] | None:
        """Takes out the bucket of the earliest timestamp if it is due."""
        ts = self.peek()
        if ts is None or ts > upto:
            return None
        heapq.heappop(self.heap)
        return ts, self.buckets.pop(ts)

    def entries(self) -> Iterator[tuple[int, Any, Any]]:
        for ts, bucket in self.buckets.items():
            for key, ns in bucket:
                yield ts, key, ns
        if self.firing_ts is not None:
            for key, ns in self.firing:
                yield self.firing_ts, key, ns

    def __len__(self) -> int:
        return self.count


class TimerService:
    """Both timer queues of a keyed operator subtask."""

    def __init__(self) -> None:
        self.queues = (_TimerQueue(), _TimerQueue())
        self.ignored = 0  # registrations dropped after quiesce()

    def quiesce(self) -> None:
        """From now on registrations are dropped (BATCH, end of input: a timer callback that
        registers the next timer must not loop forever, as in Flink). Deletion and firing go on.
        The instance attribute shadows :meth:`register`, so the normal path pays nothing."""
        self.register = self._ignore  # type: ignore[method-assign]

    def _ignore(self, domain: int, ts: int, key: Hashable, namespace: Any = None) -> None:
        self.ignored += 1

    def register(self, domain: int, ts: int, key: Hashable, namespace: Any = None) -> None:
        self.queues[domain].add(ts, key, namespace)

    def delete(self, domain: int, ts: int, key: Hashable, namespace: Any = None) -> None:
        self.queues[domain].delete(ts, key, namespace)

    def due(self, domain: int, upto: int) -> Iterator[tuple[int, Any, Any]]:
        """Pops due timers one by one (so timers registered meanwhile are seen)."""
        return self.queues[domain].due(upto)

    def take_due(self, domain: int, upto: int) -> Iterator[tuple[int, dict]]:
        """Whole buckets of due timers, for callers that register and delete none meanwhile."""
        return self.queues[domain].take_due(upto)

    def next_timestamp(self, domain: int) -> int | None:
        return self.queues[domain].peek()

    def num_timers(self) -> int:
        return len(self.queues[0]) + len(self.queues[1])

    def snapshot(
        self, key_group: Callable[[Any], int]
    ) -> dict[int, list[tuple[int, int, Any, Any]]]:
        out: dict[int, list[tuple[int, int, Any, Any]]] = {}
        for domain, q in enumerate(self.queues):
            for ts, key, ns in q.entries():
                out.setdefault(key_group(key), []).append((domain, ts, key, ns))
        return out

    def restore(self, entries: list[tuple[int, int, Any, Any]]) -> None:
        for domain, ts, key, ns in sorted(entries, key=lambda e: (e[0], e[1])):
            self.register(domain, ts, key, ns)
