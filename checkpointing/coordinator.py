"""Internal: the checkpoint coordinator's decisions (SEMANTICS §5, DESIGN §7) — plain Python: no
Ray, no event loop, time from an injected clock.

Checkpoint ``n`` starts at the sources (and at tasks whose inputs all ended: no barrier can
reach them any more). Each task acknowledges with a ref to its encoded snapshot; once its bytes
are fetched they are written to the checkpoint store. When every task is accounted for (an
acknowledgement, or the *final* snapshot of a task that finished), the metadata record is
written last; then the checkpoint is complete and every task hears of it. A checkpoint fails
when a task declines it, when its snapshot is lost, when it cannot be written or when it times
out; more consecutive failures than tolerated fail the job over. A newer completed checkpoint
subsumes older pending ones. Each attempt of the job fences the previous one: acknowledgements
and declines of an earlier attempt no longer count.

The job master's checkpoint runner (``runtime/checkpoint_runner.py``) reports what happened and
carries out what each report returns: a list of actions (:class:`TriggerTask`,
:class:`WriteBlob`, :class:`FetchSnapshot`, :class:`Commit`, :class:`Abort`,
:class:`DiscardRetained`, :class:`Completed`, :class:`FailJob`), in order.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from raystream.checkpoint_config import CheckpointConfig
from raystream.core.time import Clock
from raystream.errors import RaystreamError
from raystream.runtime.elements import CheckpointKind

if TYPE_CHECKING:
    from raystream.graph.plan import ExecutionPlan

log = logging.getLogger(__name__)

TaskKey = tuple[int, int]  # (chain id, subtask)


class CheckpointError(RaystreamError):
    """A checkpoint or savepoint failed (declined by a task, timed out, not writable)."""


class RecoveryError(CheckpointError):
    """No checkpoint can be restored without repeating effects already committed (the ones
    newer than what verifies are corrupt), or none of the checkpoints written verifies. The job
    fails instead of restarting (``CheckpointConfig.allow_fallback_past_committed`` opts in)."""


def blob_name(key: TaskKey) -> str:
    return f"task-{key[0]}-{key[1]}"


# -- what the runner is told to do ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TriggerTask:
    """Start checkpoint ``checkpoint_id`` at ``task``."""

    checkpoint_id: int
    task: TaskKey
    timestamp_ms: int
    kind: CheckpointKind


@dataclass(frozen=True, slots=True)
class WriteBlob:
    """Write ``data`` as blob ``name`` of the checkpoint (in the background)."""

    checkpoint_id: int
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class FetchSnapshot:
    """Fetch the snapshot ``task`` acknowledged; report it with
    :meth:`CheckpointCoordinator.on_snapshot` or :meth:`CheckpointCoordinator.on_snapshot_lost`."""

    checkpoint_id: int
    task: TaskKey


@dataclass(frozen=True, slots=True)
class Commit:
    """Every blob is on its way: wait for the writes (in this order), write the metadata record
    last (and, for a checkpoint, the job's committed mark); report it with
    :meth:`CheckpointCoordinator.on_committed` or :meth:`CheckpointCoordinator.on_commit_failed`."""

    checkpoint_id: int
    kind: CheckpointKind
    blobs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Abort:
    """The checkpoint is dropped: tasks abort it, its writes stop, what it wrote goes, and
    whoever waits for it gets ``error``."""

    checkpoint_id: int
    error: CheckpointError


@dataclass(frozen=True, slots=True)
class DiscardRetained:
    """Delete these completed checkpoints of the job (beyond the retained count)."""

    checkpoint_ids: tuple[int, ...]


@dataclass
class CompletedCheckpoint:
    checkpoint_id: int
    kind: str
    location: str
    size_bytes: int
    duration_ms: float
    completed_at: float


@dataclass(frozen=True, slots=True)
class Completed:
    """The checkpoint is complete. ``notify``: a checkpoint (not a savepoint) whose completion
    the job's tasks hear of; ``final_tasks``: tasks it holds the final snapshot of."""

    stats: CompletedCheckpoint
    notify: bool
    final_tasks: frozenset[TaskKey]


@dataclass(frozen=True, slots=True)
class FailJob:
    """More consecutive checkpoint failures than tolerated: the job fails over."""

    error: CheckpointError


Action = Union[
    TriggerTask, WriteBlob, FetchSnapshot, Commit, Abort, DiscardRetained, Completed, FailJob
]


@dataclass
class PendingCheckpoint:
    checkpoint_id: int
    kind: CheckpointKind
    timestamp_ms: int
    started: float  # monotonic seconds
    waiting: set[TaskKey]
    triggered: set[TaskKey] = field(default_factory=set)
    final: set[TaskKey] = field(default_factory=set)  # covered by a final snapshot
    fetching: set[TaskKey] = field(default_factory=set)  # acknowledged, bytes on their way
    task_blobs: list[str] = field(default_factory=list)  # in the order they were accepted
    #: blobs that are not a task's (split enumerator snapshots)
    extra_blobs: list[str] = field(default_factory=list)
    size: int = 0


@dataclass(frozen=True)
class JobLayout:
    """What the coordinator knows of the job's plan: its identity, every task's place in the
    metadata record, and each task's upstream tasks."""

    job_id: str
    job_name: str
    max_parallelism: int
    tasks: dict[str, dict[str, Any]]
    upstream: dict[TaskKey, frozenset[TaskKey]]

    @classmethod
    def of(cls, plan: ExecutionPlan, job_id: str) -> JobLayout:
        tasks: dict[str, dict[str, Any]] = {}
        upstream: dict[TaskKey, frozenset[TaskKey]] = {}
        for chain in plan.chains:
            for i in range(chain.parallelism):
                tasks[blob_name((chain.id, i))] = {
                    "chain": chain.name,
                    "subtask": i,
                    "parallelism": chain.parallelism,
                    "uids": [n.uid for n in chain.nodes],
                }
                producers: set[TaskKey] = set()
                for eid in chain.input_edges:
                    edge = plan.edge(eid)
                    producers.update((edge.src_chain, j) for j in edge.sources_of(i))
                upstream[(chain.id, i)] = frozenset(producers)
        return cls(job_id, plan.job_name, plan.max_parallelism, tasks, upstream)


class CheckpointCoordinator:
    """Pending checkpoints of the current attempt, and what the job completed so far."""

    def __init__(self, layout: JobLayout, config: CheckpointConfig, clock: Clock):
        self.layout = layout
        self.config = config
        self.clock = clock
        self.next_id = 1
        #: the first id this job allocates: every id from here on is the job's own
        self.first_id = 1
        self.attempt = 0
        self.pending: dict[int, PendingCheckpoint] = {}
        #: checkpoints with every blob accounted for, being written (no longer pending: they
        #: complete even if the attempt ends meanwhile)
        self.committing: dict[int, PendingCheckpoint] = {}
        self.finished: dict[TaskKey, bytes] = {}
        self.completed: list[CompletedCheckpoint] = []
        #: ids of the checkpoints this job wrote and completed (the only ones it may delete,
        #: count for retention, or recover from), ascending
        self.own: list[int] = []
        #: the newest checkpoint whose completion the job's tasks were (about to be) told of
        self.last_committed = 0
        self.failed = 0
        self.consecutive_failures = 0
        self.last_completed_at = 0.0  # monotonic seconds
        #: when the next periodic checkpoint is due (monotonic seconds; None: not armed)
        self.next_periodic_at: float | None = None
        #: names of the split enumerators' blobs, by source uid (listed in the metadata)
        self.enumerator_blobs: dict[str, str] = {}

    def allocate_from(self, first_id: int) -> None:
        """Ids continue from ``first_id`` (above everything in the store: the job never writes
        over, nor deletes, a checkpoint it did not write)."""
        self.next_id = self.first_id = first_id

    def continue_after(self, checkpoint_id: int) -> None:
        """The job restores ``checkpoint_id``: its own ids come after it."""
        self.next_id = max(self.next_id, checkpoint_id + 1)

    # -- attempts --------------------------------------------------------------------------------

    def reset(self, attempt: int) -> list[Action]:
        """A new attempt starts: pending checkpoints die with the old tasks, and what they
        still send no longer counts."""
        self.attempt = attempt
        out: list[Action] = []
        for p in list(self.pending.values()):
            out += self._drop(p, f"checkpoint {p.checkpoint_id} aborted by a restart")
        self.finished.clear()
        return out

    # -- triggering ------------------------------------------------------------------------------

    def can_trigger(self) -> bool:
        """At most ``max_concurrent`` checkpoints pending, and ``min_pause`` since the last one
        completed (savepoints count for neither)."""
        checkpoints = [p for p in self.pending.values() if p.kind is CheckpointKind.CHECKPOINT]
        if len(checkpoints) >= self.config.max_concurrent:
            return False
        now = self.clock.monotonic_s()
        return now - self.last_completed_at >= self.config.min_pause_ms / 1000.0

    def arm_periodic(self) -> None:
        """The first periodic checkpoint is due one interval from now."""
        self.next_periodic_at = self.clock.monotonic_s() + self._interval_s()

    def periodic_due(self) -> bool:
        """Whether the periodic checkpoint is due and may start now; if so, the next one is
        due one interval later."""
        now = self.clock.monotonic_s()
        if self.next_periodic_at is None or now < self.next_periodic_at:
            return False
        if not self.can_trigger():
            return False
        self.next_periodic_at = now + self._interval_s()
        return True

    def seconds_to_next_periodic(self, at_most: float) -> float:
        if self.next_periodic_at is None:
            return at_most
        return max(0.0, min(self.next_periodic_at - self.clock.monotonic_s(), at_most))

    def _interval_s(self) -> float:
        return (self.config.interval_ms or 0) / 1000.0

    def begin(self, kind: CheckpointKind, tasks: list[TaskKey]) -> int:
        """Allocates the next checkpoint, waiting for ``tasks``; :meth:`start` it next (after
        taking the coordinator's own snapshots) or :meth:`fail` it."""
        cid = self.next_id
        self.next_id += 1
        self.pending[cid] = PendingCheckpoint(
            checkpoint_id=cid,
            kind=kind,
            timestamp_ms=self.clock.now_ms(),
            started=self.clock.monotonic_s(),
            waiting=set(tasks),
        )
        return cid

    def start(self, checkpoint_id: int, extra_blobs: dict[str, bytes]) -> list[Action]:
        """Writes ``extra_blobs`` (taken before any task hears of the checkpoint), counts the
        final snapshots of finished tasks, and starts the checkpoint at every task none of
        whose upstream tasks still runs."""
        p = self.pending.get(checkpoint_id)
        if p is None:
            return []
        out: list[Action] = []
        for name, data in extra_blobs.items():
            p.size += len(data)
            p.extra_blobs.append(name)
            out.append(WriteBlob(checkpoint_id, name, data))
        for key in list(p.waiting):
            if key in self.finished:
                out += self._accept(p, key, self.finished[key], final=True)
        out += self._trigger_ready(p)
        out += self._maybe_complete(p)
        return out

    def _trigger_ready(self, p: PendingCheckpoint) -> list[Action]:
        out: list[Action] = []
        for key in list(p.waiting):
            upstream = self.layout.upstream[key]
            if key in p.triggered or any(u not in self.finished for u in upstream):
                continue
            p.triggered.add(key)
            out.append(TriggerTask(p.checkpoint_id, key, p.timestamp_ms, p.kind))
        return out

    # -- task reports ----------------------------------------------------------------------------

    def task_finished(self, key: TaskKey, final_snapshot: bytes | None) -> list[Action]:
        """``key`` finished with ``final_snapshot``: it stands for the task in every pending and
        later checkpoint, and tasks downstream of it may now be triggered."""
        if final_snapshot is None:
            return []
        self.finished[key] = final_snapshot
        out: list[Action] = []
        for p in list(self.pending.values()):
            if key in p.waiting and key not in p.fetching:
                out += self._accept(p, key, final_snapshot, final=True)
            out += self._trigger_ready(p)
            out += self._maybe_complete(p)
        return out

    def on_ack(self, key: TaskKey, attempt: int, checkpoint_id: int) -> list[Action]:
        """A task acknowledged: its snapshot is fetched, unless the acknowledgement is of an
        earlier attempt, of a checkpoint no longer pending, or one already counted."""
        p = self.pending.get(checkpoint_id)
        if attempt != self.attempt or p is None or key not in p.waiting or key in p.fetching:
            return []
        p.fetching.add(key)  # a final snapshot arriving meanwhile must not count as well
        return [FetchSnapshot(checkpoint_id, key)]

    def on_snapshot(self, key: TaskKey, checkpoint_id: int, data: bytes) -> list[Action]:
        p = self.pending.get(checkpoint_id)
        if p is None or key not in p.fetching:
            return []  # dropped meanwhile
        p.fetching.discard(key)
        out = self._accept(p, key, data, final=False)
        return out + self._maybe_complete(p)

    def on_snapshot_lost(self, key: TaskKey, checkpoint_id: int, reason: str) -> list[Action]:
        return self.fail(
            checkpoint_id, f"checkpoint {checkpoint_id}: snapshot of task {key} lost: {reason}"
        )

    def on_decline(
        self, key: TaskKey, attempt: int, checkpoint_id: int, reason: str
    ) -> list[Action]:
        if attempt != self.attempt:
            return []
        return self.fail(checkpoint_id, f"checkpoint {checkpoint_id} declined: {reason}")

    def _accept(self, p: PendingCheckpoint, key: TaskKey, data: bytes, final: bool) -> list[Action]:
        p.waiting.discard(key)
        if final:
            p.final.add(key)
        p.size += len(data)
        name = blob_name(key)
        p.task_blobs.append(name)
        return [WriteBlob(p.checkpoint_id, name, data)]

    def _maybe_complete(self, p: PendingCheckpoint) -> list[Action]:
        if p.waiting or self.pending.get(p.checkpoint_id) is not p:
            return []
        del self.pending[p.checkpoint_id]
        self.committing[p.checkpoint_id] = p
        return [Commit(p.checkpoint_id, p.kind, (*p.task_blobs, *p.extra_blobs))]

    # -- completion ------------------------------------------------------------------------------

    def metadata(self, checkpoint_id: int, handles: dict[str, Any]) -> dict[str, Any]:
        """The metadata record of a checkpoint being committed; ``handles``: what the store
        returned for each blob."""
        p = self.committing[checkpoint_id]
        return {
            "checkpoint_id": p.checkpoint_id,
            "kind": p.kind.value,
            "timestamp_ms": p.timestamp_ms,
            "job_id": self.layout.job_id,
            "job_name": self.layout.job_name,
            "max_parallelism": self.layout.max_parallelism,
            "tasks": {name: dict(info) for name, info in self.layout.tasks.items()},
            "enumerators": dict(self.enumerator_blobs),
            "blobs": handles,
        }

    def on_committed(self, checkpoint_id: int, location: str) -> list[Action]:
        """The metadata record (and the committed mark) are durable: the checkpoint is
        complete. A checkpoint subsumes older pending ones and pushes the oldest retained ones
        out."""
        p = self.committing.pop(checkpoint_id)
        duration_ms = (self.clock.monotonic_s() - p.started) * 1000.0
        stats = CompletedCheckpoint(
            checkpoint_id,
            p.kind.value,
            location,
            p.size,
            duration_ms,
            self.clock.now_ms() / 1000.0,
        )
        if p.kind is not CheckpointKind.CHECKPOINT:
            return [Completed(stats, False, frozenset(p.final))]
        self.completed.append(stats)
        bisect.insort(self.own, checkpoint_id)  # overlapping completions may finish out of order
        self.last_committed = max(self.last_committed, checkpoint_id)
        self.consecutive_failures = 0
        self.last_completed_at = self.clock.monotonic_s()
        out: list[Action] = []
        for older in [q for q in self.pending.values() if q.checkpoint_id < checkpoint_id]:
            if older.kind is CheckpointKind.CHECKPOINT:
                out += self._drop(older, f"checkpoint {older.checkpoint_id} subsumed")
        out.append(DiscardRetained(tuple(self._retain())))
        out.append(Completed(stats, True, frozenset(p.final)))
        return out

    def on_commit_failed(self, checkpoint_id: int, reason: str) -> list[Action]:
        p = self.committing.pop(checkpoint_id, None)
        if p is None:
            return []
        self.pending[checkpoint_id] = p  # failed like a pending checkpoint
        return self.fail(checkpoint_id, reason)

    def _retain(self) -> list[int]:
        """The job's own checkpoints beyond the retained count, taken off ``own``. Only the
        job's own checkpoints count and go: one it was started from, or another job's in the
        same store, never."""
        excess = max(0, len(self.own) - self.config.retained)
        old = self.own[:excess]
        del self.own[:excess]
        return old

    def note_committed(self, checkpoint_id: int) -> None:
        """A savepoint's effects are about to be committed (stop with savepoint): a recovery
        must not go back before it."""
        self.last_committed = max(self.last_committed, checkpoint_id)

    # -- failures --------------------------------------------------------------------------------

    def expire(self) -> list[Action]:
        """Fails the pending checkpoints older than the timeout."""
        timeout = self.config.timeout_ms / 1000.0
        now = self.clock.monotonic_s()
        out: list[Action] = []
        for p in list(self.pending.values()):
            if now - p.started >= timeout:
                out += self.fail(
                    p.checkpoint_id, f"checkpoint {p.checkpoint_id} expired after {timeout:g} s"
                )
        return out

    def fail(self, checkpoint_id: int, reason: str) -> list[Action]:
        """Fails a pending checkpoint. A failed checkpoint (not savepoint) counts against the
        tolerated consecutive failures; one more than tolerated fails the job over."""
        p = self.pending.get(checkpoint_id)
        if p is None:
            return []
        out = self._drop(p, reason)
        self.failed += 1
        log.warning("%s", reason)
        if p.kind is not CheckpointKind.CHECKPOINT:
            return out  # a failed savepoint is reported to whoever asked for it
        self.consecutive_failures += 1
        if self.consecutive_failures > self.config.tolerable_failures:
            self.consecutive_failures = 0
            out.append(
                FailJob(
                    CheckpointError(
                        f"{reason} (more than {self.config.tolerable_failures} consecutive "
                        "checkpoint failures tolerated)"
                    )
                )
            )
        return out

    def _drop(self, p: PendingCheckpoint, reason: str) -> list[Action]:
        self.pending.pop(p.checkpoint_id, None)
        return [Abort(p.checkpoint_id, CheckpointError(reason))]

    def abort_all(self, reason: str) -> list[Action]:
        out: list[Action] = []
        for p in list(self.pending.values()):
            out += self._drop(p, f"checkpoint {p.checkpoint_id}: {reason}")
        return out

    def stats(self, location: str) -> dict[str, Any]:
        last = self.completed[-1] if self.completed else None
        return {
            "completed": len(self.completed),
            "failed": self.failed,
            "in_progress": len(self.pending),
            "last_completed": None if last is None else dict(last.__dict__),
            "history": [dict(c.__dict__) for c in self.completed[-20:]],
            "location": location,
        }
