"""Jobs and sources shared by the checkpoint, recovery and chaos tests (importable on workers)."""

from __future__ import annotations

import time
from typing import Any

from raystream import KeyedProcessFunction, ValueStateDescriptor
from raystream.operators.sources import Source, SplitReader


class _PacedReader(SplitReader):
    def __init__(self, start: int, end: int, offset: int | None, rate: float, chunk: int):
        self.end = end
        self.offset = start if offset is None else offset
        self.rate = rate
        self.chunk = chunk
        self.t0 = time.monotonic()
        self.base = self.offset

    def read(self, max_records: int) -> list | None:
        if self.offset >= self.end:
            return None
        allowed = self.base + int((time.monotonic() - self.t0) * self.rate)
        stop = min(self.end, allowed, self.offset + min(max_records, self.chunk))
        if stop <= self.offset:
            return []
        out = [(i % KEYS, i, i * 10) for i in range(self.offset, stop)]
        self.offset = stop
        return out


KEYS = 10


class PacedEvents(Source):
    """Events ``(key, seq, timestamp_ms)`` for ``seq`` in ``[0, n)``, at about ``rate`` events
    per second per split: a bounded job that runs long enough to checkpoint and fail."""

    def __init__(self, n: int, rate: float, splits: int = 2, chunk: int = 200):
        self.n = n
        self.rate = rate
        self.splits = splits
        self.chunk = chunk

    def create_splits(self, parallelism: int) -> list[tuple[int, int]]:
        bounds = [self.n * i // self.splits for i in range(self.splits + 1)]
        return [(bounds[i], bounds[i + 1]) for i in range(self.splits)]

    def open_split(self, split: tuple[int, int], offset: Any) -> SplitReader:
        return _PacedReader(split[0], split[1], offset, self.rate, self.chunk)


class SequenceCheck(KeyedProcessFunction):
    """Per key: counts events and numbers its outputs 1, 2, 3, ... in Value state; emits
    ``(key, n, seq)``. A lost or replayed record shows as a gap or repeat in ``n``."""

    def open(self, ctx: Any) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count"))

    def process_element(self, value: Any, ctx: Any):
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        yield (value[0], n, value[1])
