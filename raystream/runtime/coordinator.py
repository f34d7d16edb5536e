"""Internal: the checkpoint coordinator, run inside the job master (SEMANTICS §5, DESIGN §7).

Checkpoint ``n`` starts at the sources (and at tasks whose inputs all ended: no barrier can
reach them any more). Each task acknowledges with a ref to its encoded snapshot in the Ray
object store; the coordinator fetches the bytes and writes them to the checkpoint store as they
arrive. When every task has acknowledged, the metadata record is written last; then the
checkpoint is complete and every task hears ``notify_checkpoint_complete(n)``.

A finished task is covered by the snapshot it took when it finished (its *final* snapshot).
A checkpoint fails when a task declines it or when it times out; more consecutive failures than
the configured tolerance fail the job over.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import shutil
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from raystream.checkpoint_config import CheckpointConfig, ExternalizedCheckpointRetention
from raystream.checkpointing.snapshot import OperatorSnapshot, StateMappingError, assign, decode
from raystream.errors import RaystreamError
from raystream.graph.plan import ExecutionPlan
from raystream.runtime.elements import CheckpointKind

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


@dataclass
class PendingCheckpoint:
    checkpoint_id: int
    kind: CheckpointKind
    timestamp_ms: int
    store: Any
    started: float
    waiting: set[TaskKey]
    triggered: set[TaskKey] = field(default_factory=set)
    final: set[TaskKey] = field(default_factory=set)  # covered by a final snapshot
    fetching: set[TaskKey] = field(default_factory=set)  # acknowledged, bytes on their way
    writes: dict[TaskKey, asyncio.Future] = field(default_factory=dict)
    #: blobs that are not a task's (split enumerator snapshots), by blob name
    extra_writes: dict[str, asyncio.Future] = field(default_factory=dict)
    size: int = 0
    done: asyncio.Future | None = None  # resolved with the stats (savepoints wait on it)
    notified: list = field(default_factory=list)  # refs of the completion notifications


@dataclass
class CompletedCheckpoint:
    checkpoint_id: int
    kind: str
    location: str
    size_bytes: int
    duration_ms: float
    completed_at: float


class CheckpointCoordinator:
    """Keeps pending checkpoints of the current attempt; the job master drives it."""

    def __init__(
        self,
        plan: ExecutionPlan,
        job_id: str,
        config: CheckpointConfig,
        store: Any,
        tasks: Callable[[], dict[TaskKey, Any]],
        on_failure: Callable[[BaseException], Awaitable[None]],
        on_complete: Callable[[int], None],
    ):
        self.plan = plan
        self.job_id = job_id
        self.config = config
        self.store = store
        self._tasks = tasks
        self._on_failure = on_failure
        self._on_complete = on_complete
        self.next_id = 1
        self.attempt = 0
        self.pending: dict[int, PendingCheckpoint] = {}
        self.finished: dict[TaskKey, bytes] = {}
        self.completed: list[CompletedCheckpoint] = []
        #: ids of the checkpoints this job wrote and completed (the only ones it may delete,
        #: count for retention, or recover from), ascending
        self.own: list[int] = []
        #: the first id this job allocates: every id from here on is the job's own
        self.first_id = 1
        #: the newest checkpoint whose completion the job's tasks were (about to be) told of
        self.last_committed = 0
        self._mark_written = 0
        self._mark_lock = threading.Lock()
        self.failed = 0
        self.consecutive_failures = 0
        self.last_completed_at = 0.0
        self.upstream = _upstream_tasks(plan)
        self._completing: set[asyncio.Future] = set()
        #: removals of dropped checkpoints still running in threads
        self._discarding: set[asyncio.Future] = set()
        #: blobs the job master adds to every checkpoint at its trigger (split enumerators'
        #: snapshots): ``checkpoint id -> {blob name: bytes}``, and their names by source uid
        self.coordinator_state: Callable[[int], dict[str, bytes]] = lambda cid: {}
        self.enumerator_blobs: dict[str, str] = {}

    # -- attempts --------------------------------------------------------------------------------

    def reset(self, attempt: int) -> None:
        """A new attempt starts: pending checkpoints die with the old tasks."""
        self.attempt = attempt
        for p in list(self.pending.values()):
            self._drop(p, CheckpointError(f"checkpoint {p.checkpoint_id} aborted by a restart"))
        self.finished.clear()

    # -- triggering ------------------------------------------------------------------------------

    def can_trigger(self, now: float) -> bool:
        checkpoints = [p for p in self.pending.values() if p.kind is CheckpointKind.CHECKPOINT]
        if len(checkpoints) >= self.config.max_concurrent:
            return False
        return now - self.last_completed_at >= self.config.min_pause_ms / 1000.0

    def trigger(
        self, kind: CheckpointKind = CheckpointKind.CHECKPOINT, store: Any = None
    ) -> PendingCheckpoint:
        tasks = self._tasks()
        cid = self.next_id
        self.next_id += 1
        p = PendingCheckpoint(
            checkpoint_id=cid,
            kind=kind,
            timestamp_ms=int(time.time() * 1000),
            store=store if store is not None else self.store,
            started=time.monotonic(),
            waiting=set(tasks),
            done=asyncio.get_running_loop().create_future(),
        )
        self.pending[cid] = p
        try:
            # split enumerators first: their snapshot precedes every source's barrier
            for name, data in self.coordinator_state(cid).items():
                p.size += len(data)
                p.extra_writes[name] = asyncio.ensure_future(
                    asyncio.to_thread(p.store.write_blob, cid, name, data)
                )
        except Exception as exc:
            self._fail(p, CheckpointError(f"checkpoint {cid}: {exc}"))
            return p
        for key in list(p.waiting):
            if key in self.finished:
                self._accept(p, key, self.finished[key], final=True)
        self._trigger_ready(p)
        self._maybe_complete(p)
        return p

    def _trigger_ready(self, p: PendingCheckpoint) -> None:
        """Starts ``p`` at every waiting task none of whose upstream tasks still runs."""
        tasks = self._tasks()
        for key in list(p.waiting):
            if key in p.triggered or any(u not in self.finished for u in self.upstream[key]):
                continue
            p.triggered.add(key)
            tasks[key].trigger_checkpoint.remote(p.checkpoint_id, p.timestamp_ms, p.kind.value)

    # -- task reports ----------------------------------------------------------------------------

    def task_finished(self, key: TaskKey, final_snapshot: bytes | None) -> None:
        if final_snapshot is None:
            return
        self.finished[key] = final_snapshot
        for p in list(self.pending.values()):
            if key in p.waiting and key not in p.fetching:
                self._accept(p, key, final_snapshot, final=True)
            self._trigger_ready(p)
            self._maybe_complete(p)

    async def acknowledge(self, key: TaskKey, attempt: int, cid: int, ref: Any, size: int) -> None:
        p = self.pending.get(cid)
        if attempt != self.attempt or p is None or key not in p.waiting or key in p.fetching:
            return  # of an aborted checkpoint or an earlier attempt
        p.fetching.add(key)  # a final snapshot arriving meanwhile must not count as well
        try:
            data = await ref
        except Exception as exc:
            self._fail(p, CheckpointError(f"checkpoint {cid}: snapshot of task {key} lost: {exc}"))
            return
        if self.pending.get(cid) is not p:
            return
        p.fetching.discard(key)
        self._accept(p, key, data, final=False)
        self._maybe_complete(p)

    def decline(self, key: TaskKey, attempt: int, cid: int, reason: str) -> None:
        p = self.pending.get(cid)
        if attempt == self.attempt and p is not None:
            self._fail(p, CheckpointError(f"checkpoint {cid} declined: {reason}"))

    def _accept(self, p: PendingCheckpoint, key: TaskKey, data: bytes, final: bool) -> None:
        p.waiting.discard(key)
        if final:
            p.final.add(key)
        p.size += len(data)
        p.writes[key] = asyncio.ensure_future(
            asyncio.to_thread(p.store.write_blob, p.checkpoint_id, blob_name(key), data)
        )

    def _maybe_complete(self, p: PendingCheckpoint) -> None:
        if not p.waiting and self.pending.get(p.checkpoint_id) is p:
            del self.pending[p.checkpoint_id]
            job = asyncio.ensure_future(self._complete(p))
            self._completing.add(job)
            job.add_done_callback(self._completing.discard)

    async def settle(self) -> None:
        """Waits for checkpoints that had every acknowledgement and are being written: such a
        checkpoint is consistent and completes even if a task failed meanwhile; then for the
        removals of dropped ones."""
        if self._completing:
            await asyncio.gather(*list(self._completing), return_exceptions=True)
        if self._discarding:
            await asyncio.gather(*list(self._discarding), return_exceptions=True)

    async def _complete(self, p: PendingCheckpoint) -> None:
        cid = p.checkpoint_id
        try:
            handles = {}
            for key, write in p.writes.items():
                handles[blob_name(key)] = await write
            for name, write in p.extra_writes.items():
                handles[name] = await write
            metadata = self._metadata(p, handles)
            await asyncio.to_thread(p.store.commit, cid, metadata)
            if p.kind is CheckpointKind.CHECKPOINT:
                # durably, before any sink hears of it: a recovery must never go back before
                # this checkpoint without noticing that its effects may be visible already
                await asyncio.to_thread(self._record_mark, cid)
        except Exception as exc:
            self.pending[cid] = p  # so _fail finds it
            self._fail(p, CheckpointError(f"checkpoint {cid} could not be written: {exc}"))
            return
        duration_ms = (time.monotonic() - p.started) * 1000.0
        stats = CompletedCheckpoint(
            cid, p.kind.value, p.store.location, p.size, duration_ms, time.time()
        )
        if p.kind is CheckpointKind.CHECKPOINT:
            self.completed.append(stats)
            bisect.insort(self.own, cid)  # overlapping completions may finish out of order
            self.last_committed = max(self.last_committed, cid)
            self.consecutive_failures = 0
            self.last_completed_at = time.monotonic()
            # a newer completion subsumes older pending checkpoints
            for older in [q for q in self.pending.values() if q.checkpoint_id < cid]:
                if older.kind is CheckpointKind.CHECKPOINT:
                    self._drop(older, CheckpointError(f"checkpoint {older.checkpoint_id} subsumed"))
            await asyncio.to_thread(self._discard_all, self._retain())
            self._on_complete(cid)
            tasks = self._tasks()
            p.notified = [
                handle.notify_checkpoint_complete.remote(cid, key in p.final)
                for key, handle in tasks.items()
            ]
        if p.done is not None and not p.done.done():
            p.done.set_result(stats)

    def _retain(self) -> list[int]:
        """The job's own checkpoints beyond the retained count, taken off ``own`` (on the event
        loop: completions may overlap) for the caller to delete. Only the job's own checkpoints
        count and go: one it was started from, or another job's in the same store, never."""
        excess = max(0, len(self.own) - self.config.retained)
        old = self.own[:excess]
        del self.own[:excess]
        return old

    def _discard_all(self, ids: list[int]) -> None:
        for old in ids:
            self.store.discard(old)

    def _record_mark(self, checkpoint_id: int) -> None:
        """Sets the committed mark (in a thread); it never moves back, even when overlapping
        completions get here out of order."""
        with self._mark_lock:
            if checkpoint_id > self._mark_written:
                self.store.record_committed(self.job_id, checkpoint_id)
                self._mark_written = checkpoint_id

    def record_committed(self, checkpoint_id: int) -> None:
        """A savepoint's effects are about to be committed (stop with savepoint): noted as for a
        completed checkpoint (runs in a thread)."""
        self._record_mark(checkpoint_id)
        self.last_committed = max(self.last_committed, checkpoint_id)

    def committed_upto(self) -> int:
        """The newest checkpoint whose effects sinks may have committed: what the job knows,
        or what the store recorded for it if that is newer."""
        mark = self.store.committed_marks().get(self.job_id, 0)
        if mark is None:
            raise RecoveryError(
                f"job {self.job_id}: its committed mark in {self.store.location} does not verify "
                "(damaged or tampered), so it is unknown which checkpoint's effects sinks "
                "committed; set allow_fallback_past_committed=True to recover anyway"
            )
        return max(self.last_committed, mark)

    def _metadata(self, p: PendingCheckpoint, handles: dict[str, Any]) -> dict[str, Any]:
        tasks = {}
        for chain in self.plan.chains:
            for i in range(chain.parallelism):
                tasks[blob_name((chain.id, i))] = {
                    "chain": chain.name,
                    "subtask": i,
                    "parallelism": chain.parallelism,
                    "uids": [n.uid for n in chain.nodes],
                }
        return {
            "checkpoint_id": p.checkpoint_id,
            "kind": p.kind.value,
            "timestamp_ms": p.timestamp_ms,
            "job_id": self.job_id,
            "job_name": self.plan.job_name,
            "max_parallelism": self.plan.max_parallelism,
            "tasks": tasks,
            "enumerators": dict(self.enumerator_blobs),
            "blobs": handles,
        }

    # -- failures ----------------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        timeout = self.config.timeout_ms / 1000.0
        for p in list(self.pending.values()):
            if now - p.started >= timeout:
                self._fail(
                    p, CheckpointError(f"checkpoint {p.checkpoint_id} expired after {timeout:g} s")
                )

    def _fail(self, p: PendingCheckpoint, exc: CheckpointError) -> None:
        if self.pending.get(p.checkpoint_id) is not p:
            return
        self._drop(p, exc)
        self.failed += 1
        log.warning("%s", exc)
        if p.kind is not CheckpointKind.CHECKPOINT:
            return  # a failed savepoint is reported to whoever asked for it
        self.consecutive_failures += 1
        if self.consecutive_failures > self.config.tolerable_failures:
            self.consecutive_failures = 0
            asyncio.ensure_future(
                self._on_failure(
                    CheckpointError(
                        f"{exc} (more than {self.config.tolerable_failures} consecutive "
                        "checkpoint failures tolerated)"
                    )
                )
            )

    def _drop(self, p: PendingCheckpoint, exc: CheckpointError) -> None:
        self.pending.pop(p.checkpoint_id, None)
        for handle in self._tasks().values():
            handle.abort_checkpoint.remote(p.checkpoint_id)
        for write in p.writes.values():
            write.cancel()
        store, cid = p.store, p.checkpoint_id
        removal = asyncio.ensure_future(asyncio.to_thread(_discard_quietly, store, cid))
        self._discarding.add(removal)
        removal.add_done_callback(self._discarding.discard)
        if p.done is not None and not p.done.done():
            p.done.set_exception(exc)
            p.done.exception()  # only savepoint callers await it: no "never retrieved" noise

    def abort_all(self, reason: str) -> None:
        for p in list(self.pending.values()):
            self._drop(p, CheckpointError(f"checkpoint {p.checkpoint_id}: {reason}"))

    def cleanup(self, canceled: bool, failed: bool, keep_all: bool = False) -> None:
        """The job ended (runs in a thread): its checkpoints stay or go by the retention
        setting (``keep_all``: they stay, e.g. when recovery found them corrupt: they are the
        evidence, and the older valid ones can still be restored on purpose)."""
        retention = self.config.retention
        keep = (
            keep_all
            or (
                retention is ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION
                and (canceled or failed)
            )
            or (retention is ExternalizedCheckpointRetention.DELETE_ON_CANCELLATION and failed)
        )
        if not keep:
            mine = [i for i in self.store.written() if i >= self.first_id]
            for cid in mine:
                _discard_quietly(self.store, cid)
            self.store.discard_incomplete(mine)
            self.store.discard_committed_mark(self.job_id)
            if self.config.storage is None:  # the job's own temporary directory
                self.store.close()
                shutil.rmtree(self.config.resolved_storage(self.job_id), ignore_errors=True)
        elif self.config.storage is None:  # kept on purpose: no sweep may take it
            from raystream.checkpointing.default_dirs import mark_retained

            mark_retained(self.config.resolved_storage(self.job_id))

    def stats(self) -> dict[str, Any]:
        last = self.completed[-1] if self.completed else None
        return {
            "completed": len(self.completed),
            "failed": self.failed,
            "in_progress": len(self.pending),
            "last_completed": None if last is None else dict(last.__dict__),
            "history": [dict(c.__dict__) for c in self.completed[-20:]],
            "location": self.store.location,
        }


def _discard_quietly(store: Any, cid: int) -> None:
    try:
        store.discard(cid)
    except Exception as exc:  # a leftover is harmless: it has no metadata
        log.warning("could not remove checkpoint %s: %s", cid, exc)


def _upstream_tasks(plan: ExecutionPlan) -> dict[TaskKey, set[TaskKey]]:
    up: dict[TaskKey, set[TaskKey]] = {}
    for chain in plan.chains:
        for j in range(chain.parallelism):
            producers: set[TaskKey] = set()
            for eid in chain.input_edges:
                edge = plan.edge(eid)
                producers.update((edge.src_chain, i) for i in edge.sources_of(j))
            up[(chain.id, j)] = producers
    return up


# -- restore -------------------------------------------------------------------------------------


def restore_assignments(
    plan: ExecutionPlan,
    metadata: dict[str, Any],
    blobs: dict[str, bytes],
    allow_non_restored_state: bool = False,
) -> dict[TaskKey, dict[str, OperatorSnapshot | None]]:
    """What every task of ``plan`` restores from a checkpoint or savepoint, matched by uid and
    cut up for the plan's parallelism."""
    cid = metadata.get("checkpoint_id")
    if metadata.get("max_parallelism") != plan.max_parallelism:
        raise StateMappingError(
            f"snapshot {cid} was taken with max parallelism {metadata.get('max_parallelism')}, "
            f"the job has {plan.max_parallelism}; key groups cannot be remapped"
        )
    old: dict[str, dict[int, OperatorSnapshot]] = {}
    for name, info in metadata["tasks"].items():
        if name not in blobs:
            raise StateMappingError(f"snapshot {cid} lacks the state of task {name}")
        task = decode(blobs[name], f"snapshot {cid}, task {name}")
        for uid, snap in task.operators.items():
            old.setdefault(uid, {})[info["subtask"]] = snap
    wanted = {n.uid for c in plan.chains for n in c.nodes}
    unmatched = sorted(
        uid
        for uid, parts in old.items()
        if uid not in wanted and any(not s.is_empty() for s in parts.values())
    )
    if unmatched and not allow_non_restored_state:
        raise StateMappingError(
            f"snapshot {cid} holds state of operators the job does not have (uids "
            f"{unmatched}); give operators the uid they had, or pass "
            "allow_non_restored_state=True to drop that state"
        )
    out: dict[TaskKey, dict[str, OperatorSnapshot | None]] = {}
    for chain in plan.chains:
        for node in chain.nodes:
            parts = old.get(node.uid)
            if not parts:
                continue
            per_subtask = assign(parts, chain.parallelism, plan.max_parallelism, node.uid)
            for i, part in enumerate(per_subtask):
                out.setdefault((chain.id, i), {})[node.uid] = part
    return out
