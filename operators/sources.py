"""Sources: split- and position-based, so every source is replayable.

A :class:`Source` is a picklable description. On the driver it cuts its input into splits
(``create_splits``); split ``i`` goes to source subtask ``i mod parallelism``. In the task, each
split is opened at an offset (``open_split``) and read in batches. The position of a source
subtask is (index of the current split, offset inside it): exactly what a checkpoint records and a
restore seeks to.
"""

from __future__ import annotations

import bisect
import enum
import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

from raystream.config import COLUMN_BATCH_FACTOR
from raystream.core.time import MAX_TS
from raystream.operators.base import StreamOperator
from raystream.runtime.elements import Batch, ColumnBatch


class Boundedness(enum.Enum):
    BOUNDED = "bounded"
    CONTINUOUS_UNBOUNDED = "continuous_unbounded"


class SplitReader(ABC):
    """Reads one split from an offset. ``offset`` is the position after the last record read."""

    offset: Any = 0

    @abstractmethod
    def read(self, max_records: int) -> Batch | ColumnBatch | list | Any:
        """Up to ``max_records`` records; ``[]`` if none are available now; ``None`` at the end.
        Readers of a columnar source (``Source.columnar``) return a ``pyarrow.RecordBatch`` or a
        :class:`ColumnBatch`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class Source(ABC):
    """A replayable source of records."""

    boundedness: Boundedness = Boundedness.BOUNDED
    #: parallelism the source runs with unless the user sets one (``None``: the job default)
    default_parallelism: int | None = None
    #: the source emits columns (Arrow record batches) instead of rows: the stream it starts is
    #: columnar (see ``DataStream.to_rows``)
    columnar: bool = False

    @abstractmethod
    def create_splits(self, parallelism: int) -> Sequence[Any]:
        """Cuts the input into splits; runs once on the driver when the job is submitted."""

    @abstractmethod
    def open_split(self, split: Any, offset: Any) -> SplitReader:
        """Opens ``split`` in the task, positioned at ``offset`` (``None`` = from the start)."""

    def describe(self) -> str:
        return type(self).__name__

    def record_count(self) -> int | None:
        """How many records the source will produce in all, if it knows in advance (a bounded
        source over a known collection); None otherwise. Only progress displays use it."""
        return None


class SourceStatus(enum.Enum):
    MORE = "more"
    NOTHING_NOW = "nothing_now"
    END = "end"


@dataclass(frozen=True)
class SourcePosition:
    split_index: int
    offset: Any


_SPLIT_STATE = "__source_splits__"


class SourceOperator(StreamOperator):
    """Head of a source chain: the task calls :meth:`emit_next` in its loop.

    Its checkpointed state is the progress of every split it owns: ``(split number, split,
    offset, done)`` as union list state, so a restore at another parallelism hands every split to
    subtask ``number mod parallelism`` with its offset. Reading a batch and advancing the offset
    happen in one step, so a checkpoint always sees a position between two batches.
    """

    def __init__(
        self, name: str, source: Source, splits: Sequence[Any], watermark_strategy: Any = None
    ):
        super().__init__(name)
        self.source = source
        self.watermark_strategy = watermark_strategy
        self.emitter: Any = None
        self.all_splits = list(enumerate(splits))
        self.my_splits: list[tuple[int, Any]] = []
        self.split_index = 0
        self.reader: SplitReader | None = None
        self._offsets: dict[int, Any] = {}  # restored offsets by split number
        self._finished: list[tuple] = []  # splits restored as done, kept for the next snapshot
        self._schema_guard: Any = None  # columnar sources: the schema of the first batch

    def initialize_state(self, restored: Any) -> None:
        super().initialize_state(restored)
        if restored is None or _SPLIT_STATE not in restored.operator:
            return
        entries = sorted(restored.operator[_SPLIT_STATE][1], key=lambda e: e[0])
        self.all_splits = [(n, split) for n, split, _, done in entries if not done]
        self._offsets = {n: offset for n, _, offset, done in entries if not done}
        self._finished = [e for e in entries if e[3]]

    def open(self) -> None:
        assert self.ctx is not None
        p, i = self.ctx.parallelism, self.ctx.subtask_index
        self.my_splits = [(n, s) for n, s in self.all_splits if n % p == i]
        if self.watermark_strategy is not None:
            from raystream.operators.watermarks import WatermarkEmitter

            self.emitter = WatermarkEmitter(self.watermark_strategy, self)
            if not self.emitter.batch:  # BATCH: only MAX at the end, no periodic emission
                self.periodic_interval_ms = self.ctx.config.auto_watermark_interval_ms or None

    def on_periodic(self, now_ms: int) -> None:
        if self.emitter is not None:
            self.emitter.on_periodic()

    def read_limit(self, row_limit: int) -> int:
        """Records the task asks for per step at most: ``row_limit`` for rows, more for columns
        (no per-row Python on their path; each step costs a vectorized pass)."""
        return row_limit * COLUMN_BATCH_FACTOR if self.source.columnar else row_limit

    def position(self) -> SourcePosition:
        if self.split_index >= len(self.my_splits):
            return SourcePosition(self.split_index, None)
        n = self.my_splits[self.split_index][0]
        offset = self.reader.offset if self.reader is not None else self._offsets.get(n)
        return SourcePosition(self.split_index, offset)

    def seek(self, position: SourcePosition) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.split_index = position.split_index
        if position.split_index < len(self.my_splits):
            self._offsets[self.my_splits[position.split_index][0]] = position.offset

    def snapshot_state(self, checkpoint_id: int) -> Any:
        entries = []
        for k, (n, split) in enumerate(self.my_splits):
            if k < self.split_index:
                entries.append((n, split, None, True))
            elif k == self.split_index and self.reader is not None:
                entries.append((n, split, self.reader.offset, False))
            else:
                entries.append((n, split, self._offsets.get(n), False))
        if self.ctx is not None and self.ctx.subtask_index == 0:
            # splits finished before a restore stay recorded, for the next rescale
            entries.extend(self._finished)
        self.operator_state.get_union_list_state(_SPLIT_STATE).update(entries)
        return super().snapshot_state(checkpoint_id)

    def emit_next(self, max_records: int) -> SourceStatus:
        while True:
            if self.reader is None:
                if self.split_index >= len(self.my_splits):
                    return SourceStatus.END
                n, split = self.my_splits[self.split_index]
                self.reader = self.source.open_split(split, self._offsets.pop(n, None))
            try:
                got = self.reader.read(max_records)
            except Exception as exc:
                raise self.user_error(exc, self.my_splits[self.split_index][1], "split") from exc
            if got is None:
                self.reader.close()
                self.reader = None
                self.split_index += 1
                continue
            batch: Batch | ColumnBatch
            if self.source.columnar:
                batch = self._columns(got)
            else:
                batch = got if isinstance(got, Batch) else Batch(got)  # type: ignore[arg-type]
            if not batch.values:
                return SourceStatus.NOTHING_NOW
            self.records_in += len(batch.values)
            if self.emitter is not None:
                self.emitter.emit(batch)
            else:
                self.output.emit(self.checked(batch))
            return SourceStatus.MORE

    def checked(self, batch: Batch | ColumnBatch) -> Batch | ColumnBatch:
        """A row batch whose reader gave timestamps, with them checked (a source without a
        watermark strategy; the strategy's emitter checks them otherwise)."""
        if isinstance(batch, ColumnBatch) or not batch.timestamps:
            return batch
        from raystream.operators.watermarks import checked_record_timestamps

        values, stamps = checked_record_timestamps(self, batch.values, batch.timestamps, None)
        return batch if stamps is batch.timestamps else Batch(values, stamps)

    def _columns(self, got: Any) -> ColumnBatch:
        """What a columnar source's reader returned, as a :class:`ColumnBatch` whose schema is
        the one the source started with (see ``SchemaGuard``)."""
        from raystream.operators.columnar.schema import as_column_batch

        if self._schema_guard is None:
            from raystream.operators.columnar.schema import SchemaGuard

            self._schema_guard = SchemaGuard(self.name)
        return self._schema_guard.check(as_column_batch(got, self.name))

    def finish(self) -> None:
        if self.emitter is not None and self.emitter.idle:
            self.output.emit_watermark_status(False)
        self.current_watermark = MAX_TS
        self.output.emit_watermark(MAX_TS)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


# --- built-in sources ---------------------------------------------------------------------------


class _ListReader(SplitReader):
    """Reads ``items[start:end]``; the offset is an index into ``items``."""

    def __init__(self, items: Sequence[Any], start: int, end: int, offset: int | None):
        self.items = items
        self.end = end
        self.offset = start if offset is None else offset

    def read(self, max_records: int) -> list | None:
        if self.offset >= self.end:
            return None
        stop = min(self.offset + max_records, self.end)
        chunk = list(self.items[self.offset : stop])
        self.offset = stop
        return chunk


#: items per object a shared collection is put into the object store in (pickling a list
#: gets slower per item as it grows: ~260 ns per 3-tuple in chunks of 16k, ~800 ns in one of 500k)
SHARE_CHUNK = 1 << 14


def _pickled(items: list) -> bytes:
    """The items as pickle bytes, by cloudpickle: classes and functions of the driver's
    ``__main__`` travel by value, as Ray itself would send them."""
    return cloudpickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)  # type: ignore[no-any-return]


def _chunk_start(chunk: tuple[int, int, Any]) -> int:
    return chunk[0]


class _ChunkReader(SplitReader):
    """Reads ``[start, end)`` of a collection kept in the object store as slices ("chunks");
    a split restored from a job of another parallelism may span several of them."""

    def __init__(
        self, chunks: list[tuple[int, int, Any]], start: int, end: int, offset: int | None
    ):
        self.chunks = chunks
        self.end = end
        self.offset = start if offset is None else offset
        self._chunk: tuple[int, int, list] | None = None

    def read(self, max_records: int) -> list | None:
        if self.offset >= self.end:
            return None
        chunk = self._chunk
        if chunk is None or not chunk[0] <= self.offset < chunk[1]:
            chunk = self._chunk = self._fetch(self.offset)
        start, stop_of_chunk, values = chunk
        stop = min(self.offset + max_records, self.end, stop_of_chunk)
        out = values[self.offset - start : stop - start]
        self.offset = stop
        return out

    def _fetch(self, index: int) -> tuple[int, int, list]:
        import ray

        i = bisect.bisect_right(self.chunks, index, key=_chunk_start) - 1
        if i >= 0:
            start, stop, ref = self.chunks[i]
            if index < stop:
                return start, stop, pickle.loads(ray.get(ref))
        raise IndexError(f"collection index {index} is in no chunk")  # splits cover the items

    def close(self) -> None:
        self._chunk = None


class CollectionSource(Source):
    """The elements of a Python collection, in order within each split.

    A parallel source: the items are cut into one contiguous slice per source subtask. In a job
    that is not detached, the environment puts every slice into the Ray object store once
    (:meth:`share`) and the plan carries only the references, so a large collection is neither
    pickled into the plan nor copied into every task spec. A detached job keeps the items in
    its plan (objects owned by the driver would die with it).

    It reads in parallel only where that changes no order a single reader (Flink's non-parallel
    ``fromCollection``) guarantees: unless its parallelism is set, it reads with one subtask when
    a consumer takes it through a keyed, broadcast, global or custom edge or runs at parallelism
    1 (see ``graph/plan.py``), so e.g. ``from_collection(xs).key_by(k)`` sees every key's records
    in collection order, as in Flink.
    """

    #: the plan builder picks one reader where consumers could observe the collection's order
    ordered_by_default = True

    def __init__(self, items: Sequence[Any]):
        self.items: list | None = list(items)
        self.size = len(self.items)
        #: (start, end, ObjectRef of items[start:end]) once shared
        self._chunks: list[tuple[int, int, Any]] | None = None
        #: whether the items travel in the plan (detached jobs, plans built without Ray)
        self._inline = False

    def create_splits(self, parallelism: int) -> list[tuple[int, int]]:
        """Index ranges into the items: small enough to record in every checkpoint."""
        n = self.size
        bounds = [n * i // parallelism for i in range(parallelism + 1)]
        return [(bounds[i], bounds[i + 1]) for i in range(parallelism)]

    def share(self, splits: Sequence[tuple[int, int]]) -> None:
        """Puts each split's slice into the object store (the driver owns the objects), in
        pickled chunks of at most :data:`SHARE_CHUNK` items.

        The chunks are put as pickled bytes, not as lists: Ray packs a list with msgpack and
        pickles each of its items on its own (a tuple is a separate pickle call, and a separate
        unpickle in the reader): 8.4 s for 1 M 3-tuples on the driver. Chunks keep a reader's
        fetches short and its memory bounded."""
        import ray

        assert self.items is not None
        self._chunks = [
            (c, min(c + SHARE_CHUNK, e), ray.put(_pickled(self.items[c : min(c + SHARE_CHUNK, e)])))
            for s, e in splits
            for c in range(s, e, SHARE_CHUNK)
        ]
        self._inline = False

    def keep_inline(self) -> None:
        self._chunks = None
        self._inline = True

    def open_split(self, split: tuple[int, int], offset: int | None) -> SplitReader:
        if self._chunks is not None:
            return _ChunkReader(self._chunks, split[0], split[1], offset)
        if self.items is None:
            raise RuntimeError("collection source shipped before its items were placed")
        return _ListReader(self.items, split[0], split[1], offset)

    def record_count(self) -> int:
        return self.size

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if not self._inline:  # shared, or not placed yet (the plan's pickling check)
            state["items"] = None
        return state


class _RangeReader(SplitReader):
    def __init__(self, start: int, end: int | None, offset: int | None):
        self.next_value = start if offset is None else offset
        self.end = end

    @property
    def offset(self) -> int:  # type: ignore[override]
        return self.next_value

    def read(self, max_records: int) -> list | None:
        stop = self.next_value + max_records
        if self.end is not None:
            if self.next_value > self.end:
                return None
            stop = min(stop, self.end + 1)
        chunk = list(range(self.next_value, stop))
        self.next_value = stop
        return chunk


class NumberSequenceSource(Source):
    """The integers ``start..end`` inclusive (as Flink's ``from_sequence``); unbounded if
    ``end`` is ``None``. Split into contiguous ranges, one per subtask."""

    def __init__(self, start: int, end: int | None):
        if end is not None and end < start:
            raise ValueError(f"from_sequence needs start <= end, got {start}..{end}")
        self.start = start
        self.end = end
        self.boundedness = (
            Boundedness.BOUNDED if end is not None else Boundedness.CONTINUOUS_UNBOUNDED
        )

    def create_splits(self, parallelism: int) -> list[tuple[int, int | None]]:
        if self.end is None:
            # unbounded: subtask i counts start+i, start+i+p, ... would interleave; give each
            # split its own disjoint infinite band instead
            band = 1 << 48
            return [
                (self.start + i * band, self.start + (i + 1) * band - 1) for i in range(parallelism)
            ]
        n = self.end - self.start + 1
        bounds = [self.start + n * i // parallelism for i in range(parallelism + 1)]
        return [
            (bounds[i], bounds[i + 1] - 1) for i in range(parallelism) if bounds[i + 1] > bounds[i]
        ]

    def open_split(self, split: tuple[int, int | None], offset: int | None) -> SplitReader:
        return _RangeReader(split[0], split[1], offset)

    def record_count(self) -> int | None:
        return None if self.end is None else self.end - self.start + 1
