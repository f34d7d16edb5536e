"""Sources for unbounded, partitioned inputs: a split enumerator with the job master, split
readers in the tasks (Flink's FLIP-27 model).

A :class:`SplitSource` has two halves:

- a :class:`SplitEnumerator`, one per source, living in the job master. It discovers splits
  (Kafka partitions, stream keys, files) while the job runs and assigns each to one source
  subtask through its :class:`SplitEnumeratorContext`. Its state is part of every checkpoint:
  :meth:`SplitEnumerator.snapshot_state` runs right before the checkpoint's barriers are
  injected at the sources.
- a :class:`SourceReader` per source subtask. It gets splits (``add_splits``), reads them
  (``poll`` returns records grouped by split, as rows or as a ``pyarrow.RecordBatch``), and
  snapshots every split it holds with its progress (``snapshot_state``).

Recovery. A restart restores the readers' splits from the checkpoint (at any parallelism: the
runtime deals the recorded splits out over the new subtasks) and the enumerator from its own
snapshot of the same checkpoint. Splits can be in flight between the two snapshots (assigned
before the enumerator's snapshot, received by the reader after its barrier), so the enumerator is
told which splits the restored readers hold (``context.restored_split_ids``) and must assign the
others it knows again. :class:`DiscoveringSplitEnumerator` does exactly that; most connectors
only implement its ``discover``.

Watermarks are generated per split: each split has its own generator (and idleness) from the
source's ``WatermarkStrategy``; the subtask emits the minimum over its splits that are not idle
(a finished split leaves the minimum), so one slow or quiet partition neither corrupts nor stalls
event time. A subtask that holds no split holds event time back, as in Flink (so records of a split
still on its way are never late because a sibling subtask advanced), until ``with_idleness``
times it out or no more splits come.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from raystream.api.runtime_mode import is_batch
from raystream.core.time import MAX_TS
from raystream.core.watermarks import SplitWatermarks
from raystream.operators.base import Output, StreamOperator
from raystream.operators.sources import (
    Boundedness,
    Source,
    SourceOperator,
    SourceStatus,
    SplitReader,
)
from raystream.operators.watermarks import WatermarkEmitter
from raystream.runtime.elements import Batch, ColumnBatch

__all__ = [
    "DiscoveringSplitEnumerator",
    "ReaderContext",
    "SourceReader",
    "SplitEnumerator",
    "SplitEnumeratorContext",
    "SplitRecords",
    "SplitSource",
    "SplitSourceOperator",
    "stable_owner",
]


@dataclass
class SplitRecords:
    """Records of one split read in one ``poll``.

    ``values`` is a list of records or a ``pyarrow.RecordBatch`` (one record per row, as a dict,
    unless the source is columnar — ``SplitSource.columnar`` — when the batch goes downstream as
    it is); ``timestamps`` (one per record, in milliseconds) become the records' timestamps, e.g.
    Kafka's record timestamps. ``finished``: the split has no more records after these (a
    bounded split reached its end)."""

    split_id: str
    values: Any
    timestamps: list[int] | None = None
    finished: bool = False

    def rows(self) -> list:
        values = self.values
        if isinstance(values, list):
            return values
        to_pylist = getattr(values, "to_pylist", None)
        if to_pylist is not None:
            return list(to_pylist())
        return list(values)


@dataclass
class ReaderContext:
    """What a reader knows of where it runs."""

    operator_name: str
    subtask_index: int
    parallelism: int
    #: processing time in ms, from the job's clock (a manual clock in tests)
    now_ms: Callable[[], int]
    attempt: int = 0


class SourceReader(ABC):
    """Reads the splits assigned to one source subtask. All methods run on the task's thread,
    between steps: never two at once. ``poll`` must not block for long (return ``[]`` when nothing
    is there; the task waits a little and asks again)."""

    @abstractmethod
    def add_splits(self, splits: Sequence[Any]) -> None:
        """New splits to read, each positioned where reading starts (a restored split at its
        recorded progress)."""

    @abstractmethod
    def poll(self, max_records: int) -> list[SplitRecords]:
        """Up to ``max_records`` records in all, grouped by split; ``[]`` when none is there now.
        A split reported ``finished`` is dropped from the reader's snapshots."""

    @abstractmethod
    def snapshot_state(self, checkpoint_id: int) -> list[Any]:
        """Every split the reader holds and has not finished, with its progress (the position
        after the last record returned by ``poll``)."""

    def notify_no_more_splits(self) -> None:  # noqa: B027 - optional hook
        """The enumerator will assign nothing more to this subtask (bounded sources)."""

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:  # noqa: B027 - optional
        """A checkpoint holding this reader's snapshot completed (e.g. commit offsets to Kafka for
        monitoring)."""

    def pending_records(self) -> int | None:
        """Records the splits it holds have beyond what it read (a source's lag, as Flink's
        ``pendingRecords``), if the reader knows without blocking; None otherwise. Asked when
        metrics are read, never per record."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class SplitEnumeratorContext(ABC):
    """The enumerator's view of the job, given by the runtime (in the job master)."""

    #: number of source subtasks
    parallelism: int
    #: ids of the splits the readers hold after a restore (empty on a fresh start)
    restored_split_ids: frozenset[str]

    @abstractmethod
    def assign_splits(self, assignment: dict[int, list[Any]]) -> None:
        """Hands splits to source subtasks: ``{subtask: [split, ...]}``."""

    @abstractmethod
    def signal_no_more_splits(self, subtask: int) -> None:
        """Tells a subtask that nothing more is coming (it ends once its splits are read)."""

    @abstractmethod
    def call_async(
        self,
        callable_: Callable[[], Any],
        handler: Callable[[Any, BaseException | None], bool | None],
        interval_ms: int | None = None,
    ) -> None:
        """Runs ``callable_`` in a worker thread (it may block on I/O), then ``handler(result,
        error)`` in the enumerator's thread; again every ``interval_ms`` if given, until the
        handler returns ``False``. A handler that raises fails the job. Runs of one
        ``call_async`` never overlap, but ``callable_`` runs in another thread while the
        enumerator's other methods may run: it may read state that only its handler writes
        (e.g. the set of known splits), and should write none."""


class SplitEnumerator(ABC):
    """Discovers and assigns splits; runs in the job master. Its methods run one at a time."""

    @abstractmethod
    def start(self) -> None:
        """Called once the tasks are deployed: begin discovery, assign what is known."""

    @abstractmethod
    def snapshot_state(self, checkpoint_id: int) -> Any:
        """A picklable snapshot, taken right before the checkpoint's barriers are injected."""

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:  # noqa: B027 - optional
        pass

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class SplitSource(Source):
    """A source whose splits are found while the job runs (see the module docstring).

    Subclasses implement :meth:`create_enumerator`, :meth:`create_reader` and :meth:`split_id`.
    ``boundedness`` says whether the source ends (``BOUNDED``: its enumerator signals that no
    more splits come, and each reader ends when its splits are read)."""

    boundedness: Boundedness = Boundedness.CONTINUOUS_UNBOUNDED

    @abstractmethod
    def create_enumerator(
        self, context: SplitEnumeratorContext, restored_state: Any | None
    ) -> SplitEnumerator:
        """The enumerator; ``restored_state`` is what its ``snapshot_state`` returned in the
        checkpoint the job restores from, or None."""

    @abstractmethod
    def create_reader(self, context: ReaderContext) -> SourceReader:
        """The reader of one source subtask (runs in the task)."""

    @abstractmethod
    def split_id(self, split: Any) -> str:
        """A stable id of the split, the same whatever its progress."""

    # the static-split contract of ``Source`` does not apply
    def create_splits(self, parallelism: int) -> Sequence[Any]:
        return []

    def open_split(self, split: Any, offset: Any) -> SplitReader:
        raise TypeError(f"{type(self).__name__} is read through create_reader, not open_split")


def stable_owner(split_id: str, parallelism: int) -> int:
    """A subtask for a split, the same on every run (crc32, never Python's salted hash)."""
    return zlib.crc32(split_id.encode("utf-8")) % parallelism


class DiscoveringSplitEnumerator(SplitEnumerator):
    """An enumerator that periodically lists the splits that exist and assigns the new ones.

    Subclasses implement :meth:`discover` (runs in a worker thread; returns every split that
    exists now, new ones positioned where reading must start — resolve "latest" or a timestamp
    to a concrete position here, so a replay reads the same records). ``owner`` picks the
    subtask (override it to spread e.g. a topic's partitions evenly).

    The snapshot is the set of known splits with their start positions. After a restore, every
    known split the readers do not hold is assigned again from its start position; splits the
    readers hold are theirs. ``discovery_interval_ms=None``: discover once (a bounded source then
    signals every subtask that no more splits come).
    """

    def __init__(
        self,
        source: SplitSource,
        context: SplitEnumeratorContext,
        restored_state: Any | None,
        discovery_interval_ms: int | None,
    ):
        self.source = source
        self.context = context
        self.discovery_interval_ms = discovery_interval_ms
        self.known: dict[str, Any] = dict(restored_state or {})
        self._finished = False

    @abstractmethod
    def discover(self) -> Sequence[Any]:
        """Every split that exists now (runs in a worker thread)."""

    def owner(self, split: Any, parallelism: int) -> int:
        return stable_owner(self.source.split_id(split), parallelism)

    def discovery_finished(self) -> bool:
        """True once no split will ever appear again (checked after each discovery; then every
        subtask hears that no more splits come). Default: after the first discovery of a source
        without periodic discovery."""
        return self.discovery_interval_ms is None

    def start(self) -> None:
        held = self.context.restored_split_ids
        again = [s for sid, s in self.known.items() if sid not in held]
        for sid in held:  # held by a reader but discovered after our snapshot: known now
            self.known.setdefault(sid, None)
        self._assign(again)
        self.context.call_async(self.discover, self._on_discovered, self.discovery_interval_ms)

    def _on_discovered(self, splits: Any, error: BaseException | None) -> bool:
        if self._finished:
            return False
        if error is not None:
            raise error
        new = []
        for split in splits:
            sid = self.source.split_id(split)
            if sid not in self.known:
                self.known[sid] = split
                new.append(split)
        self._assign(new)
        if self.discovery_finished():
            self._finished = True
            for i in range(self.context.parallelism):
                self.context.signal_no_more_splits(i)
        return not self._finished

    def _assign(self, splits: Sequence[Any]) -> None:
        p = self.context.parallelism
        assignment: dict[int, list[Any]] = {}
        for split in splits:
            if split is not None:
                assignment.setdefault(self.owner(split, p), []).append(split)
        if assignment:
            self.context.assign_splits(assignment)

    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        return dict(self.known)


# --- the operator that runs a reader in a source task ------------------------------------------

_READER_STATE = "__source_reader_splits__"
#: the watermark placeholder of a subtask that holds no split (no split id looks like it)
_NO_SPLIT = "\x00no split"


class _SplitOutput(Output):
    """Where one split's watermark emitter writes: records go straight out, watermarks and
    idleness into the subtask's :class:`SplitWatermarks`."""

    def __init__(self, op: SplitSourceOperator, split_id: str):
        self.op = op
        self.split_id = split_id

    def emit(self, batch: Batch | ColumnBatch) -> None:
        self.op.output.emit(batch)

    def emit_watermark(self, timestamp: int) -> None:
        self.op._apply(*self.op.split_watermarks.update(self.split_id, timestamp))

    def emit_watermark_status(self, idle: bool) -> None:
        self.op._apply(*self.op.split_watermarks.set_idle(self.split_id, idle))


class _SplitView:
    """The operator as one split's emitter sees it: the same, but with that split's output."""

    def __init__(self, op: SplitSourceOperator, split_id: str):
        self._op = op
        self.output = _SplitOutput(op, split_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._op, name)


class SplitSourceOperator(SourceOperator):
    """Head of a :class:`SplitSource` chain: runs the subtask's reader.

    Checkpointed state: union list state of ``(split id, split with progress)`` for every split
    the reader holds, and ``(split id, None)`` for every split it finished (so a restore never
    hands a finished split out again). On restore the entries are sorted by split id and dealt
    out round robin over the new parallelism.
    """

    def __init__(self, name: str, source: SplitSource, watermark_strategy: Any = None):
        super().__init__(name, source, [], watermark_strategy)
        self.split_source = source
        self.reader: SourceReader | None = None  # type: ignore[assignment]
        self.restored: list[Any] = []
        self.pending: list[Any] = []
        self.held: set[str] = set()
        self.finished_ids: set[str] = set()
        self.no_more = False
        self.split_watermarks = SplitWatermarks()
        self.emitters: dict[str, Any] = {}
        self.strategy = watermark_strategy

    # -- state -----------------------------------------------------------------------------------

    def initialize_state(self, restored: Any) -> None:
        StreamOperator.initialize_state(self, restored)
        if restored is None or _READER_STATE not in restored.operator:
            return
        assert self.ctx is not None
        entries = sorted(restored.operator[_READER_STATE][1], key=lambda e: e[0])
        p, i = self.ctx.parallelism, self.ctx.subtask_index
        for sid, split in entries[i::p]:
            if split is None:
                self.finished_ids.add(sid)
            else:
                self.restored.append(split)

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        pending = None
        if self.reader is not None:
            try:
                pending = self.reader.pending_records()
            except Exception:  # noqa: S110 - a gauge is not worth failing the task over
                pending = None
        if pending is not None:
            m["pending_records"] = pending
        return m

    def restored_split_ids(self) -> list[str]:
        ids = [self.split_source.split_id(s) for s in self.restored]
        return ids + sorted(self.finished_ids)

    def snapshot_state(self, checkpoint_id: int) -> Any:
        if self.reader is not None:
            splits = list(self.reader.snapshot_state(checkpoint_id))
        else:
            splits = self.restored + self.pending
        sid = self.split_source.split_id
        entries: list[tuple[str, Any]] = [(sid(s), s) for s in splits]
        entries.extend((f, None) for f in sorted(self.finished_ids))
        self.operator_state.get_union_list_state(_READER_STATE).update(entries)
        return StreamOperator.snapshot_state(self, checkpoint_id)

    # -- lifecycle ---------------------------------------------------------------------------------

    def open(self) -> None:
        assert self.ctx is not None
        ctx = self.ctx
        if self.strategy is not None and not is_batch(ctx.config):
            self.periodic_interval_ms = ctx.config.auto_watermark_interval_ms or None
        try:
            self.reader = self.split_source.create_reader(
                ReaderContext(
                    self.name, ctx.subtask_index, ctx.parallelism, ctx.clock.now_ms, ctx.attempt
                )
            )
        except Exception as exc:
            raise self.user_error(exc, None, "creating the reader") from exc
        if self.strategy is not None:
            self._hold_without_splits()
        splits, self.restored = self.restored, []
        splits.extend(self.pending)
        self.pending = []
        if splits:
            self.add_splits(splits)
        if self.no_more:
            self.reader.notify_no_more_splits()

    def add_splits(self, splits: list[Any]) -> None:
        """Splits the enumerator assigned (the task hands them over between steps)."""
        if self.reader is None:
            self.pending.extend(splits)
            return
        sid = self.split_source.split_id
        fresh = [s for s in splits if sid(s) not in self.finished_ids]
        for split in fresh:
            split_id = sid(split)
            self.held.add(split_id)
            if self.strategy is not None and split_id not in self.emitters:
                view: Any = _SplitView(self, split_id)
                self.emitters[split_id] = WatermarkEmitter(self.strategy, view)
                self._apply(*self.split_watermarks.add(split_id))
        if fresh and _NO_SPLIT in self.emitters:
            # only now that the new splits hold event time: removed first, the placeholder left
            # no split behind, the subtask went idle for a moment, and downstream operators let
            # a sibling's watermark pass the records of the splits just assigned
            del self.emitters[_NO_SPLIT]
            self._apply(*self.split_watermarks.remove(_NO_SPLIT))
        if fresh:
            try:
                self.reader.add_splits(fresh)
            except Exception as exc:
                raise self.user_error(exc, [sid(s) for s in fresh], "adding splits") from exc

    def no_more_splits(self) -> None:
        self.no_more = True
        if self.reader is not None:
            self.reader.notify_no_more_splits()

    def _hold_without_splits(self) -> None:
        """A subtask without a split holds event time back (as Flink: it is not idle by
        itself; with ``with_idleness`` it goes idle after the timeout, through the placeholder's
        own generator), so records of splits still on their way are never made late by a sibling
        subtask's watermark. Not once no more splits come: then the subtask ends."""
        if self.strategy is None or self.no_more or _NO_SPLIT in self.emitters:
            return
        view: Any = _SplitView(self, _NO_SPLIT)
        self.emitters[_NO_SPLIT] = WatermarkEmitter(self.strategy, view)
        self._apply(*self.split_watermarks.add(_NO_SPLIT))

    def _apply(self, watermark: int | None, status: bool | None) -> None:
        if status is True:
            self.output.emit_watermark_status(True)
        elif status is False:
            self.output.emit_watermark_status(False)
        if watermark is not None:
            self.current_watermark = watermark
            self.output.emit_watermark(watermark)

    # -- reading -----------------------------------------------------------------------------------

    def emit_next(self, max_records: int) -> SourceStatus:
        reader = self.reader
        assert reader is not None
        try:
            got = reader.poll(max_records)
        except Exception as exc:
            raise self.user_error(exc, None, f"reading splits {sorted(self.held)}") from exc
        emitted = 0
        columnar = self.split_source.columnar
        for part in got:
            batch: Batch | ColumnBatch = (
                self._columns(part) if columnar else Batch(part.rows(), part.timestamps)
            )
            if len(batch.values):
                emitted += len(batch.values)
                self.records_in += len(batch.values)
                emitter = self.emitters.get(part.split_id)
                if emitter is not None:
                    emitter.emit(batch)
                else:
                    self.output.emit(self.checked(batch))
            if part.finished:
                self.held.discard(part.split_id)
                self.finished_ids.add(part.split_id)
                if not self.held:  # before the finished split leaves the minimum
                    self._hold_without_splits()
                if self.emitters.pop(part.split_id, None) is not None:
                    self._apply(*self.split_watermarks.remove(part.split_id))
        if emitted:
            return SourceStatus.MORE
        if self.no_more and not self.held:
            return SourceStatus.END
        return SourceStatus.NOTHING_NOW

    def _columns(self, part: SplitRecords) -> Any:
        """A columnar source's records of one split as a :class:`ColumnBatch` with the schema
        the stream started with."""
        import numpy as np

        batch = SourceOperator._columns(self, part.values)
        if part.timestamps is not None:
            batch.timestamps = np.asarray(part.timestamps, dtype=np.int64)
        return batch

    def on_periodic(self, now_ms: int) -> None:
        for emitter in list(self.emitters.values()):
            emitter.on_periodic()

    def finish(self) -> None:
        self.emitters.pop(_NO_SPLIT, None)
        if self.split_watermarks.output_idle and self.strategy is not None:
            self.output.emit_watermark_status(False)
        self.current_watermark = MAX_TS
        self.output.emit_watermark(MAX_TS)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        super().notify_checkpoint_complete(checkpoint_id)
        if self.reader is not None:
            try:
                self.reader.notify_checkpoint_complete(checkpoint_id)
            except Exception as exc:
                raise self.user_error(
                    exc, None, f"completion of checkpoint {checkpoint_id}"
                ) from exc

    def close(self) -> None:
        if self.reader is not None:
            reader, self.reader = self.reader, None
            reader.close()
