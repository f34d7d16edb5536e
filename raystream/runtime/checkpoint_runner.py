"""Internal: the job master's checkpoint runner — carries out what the checkpoint coordinator
(:mod:`raystream.checkpointing.coordinator`) decides.

The coordinator decides; this layer does the I/O on the job master's event loop: it calls the
tasks (trigger, abort, notify complete), fetches acknowledged snapshots from the Ray object
store, writes blobs and metadata records to the checkpoint store in threads, sets the job's
committed mark, deletes checkpoints beyond the retained count, and resolves the future a
savepoint (or the job's last checkpoint) waits on. Reports go to the coordinator as they
happen; each returns the actions to carry out next.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from raystream.checkpoint_config import ExternalizedCheckpointRetention
from raystream.checkpointing.coordinator import (
    Abort,
    Action,
    CheckpointCoordinator,
    Commit,
    Completed,
    DiscardRetained,
    FailJob,
    FetchSnapshot,
    JobLayout,
    RecoveryError,
    TaskKey,
    TriggerTask,
    WriteBlob,
)
from raystream.core.time import SystemClock
from raystream.graph.plan import ExecutionPlan
from raystream.runtime.elements import CheckpointKind

log = logging.getLogger(__name__)


@dataclass
class CheckpointHandle:
    """A triggered checkpoint: ``done`` resolves with its stats (or its error); ``notified``
    holds the refs of the completion notifications sent to the tasks."""

    checkpoint_id: int
    done: asyncio.Future
    notified: list = field(default_factory=list)


class CheckpointRunner:
    """One per job with checkpointing on; the job master drives it."""

    def __init__(
        self,
        coordinator: CheckpointCoordinator,
        store: Any,
        tasks: Callable[[], dict[TaskKey, Any]],
        on_failure: Callable[[BaseException], Awaitable[None]],
        on_complete: Callable[[int], None],
    ):
        self.coordinator = coordinator
        self.config = coordinator.config
        self.job_id = coordinator.layout.job_id
        self.store = store
        self._tasks = tasks
        self._on_failure = on_failure
        self._on_complete = on_complete
        #: blobs the job master adds to every checkpoint at its trigger (split enumerators'
        #: snapshots): ``checkpoint id -> {blob name: bytes}``
        self.coordinator_state: Callable[[int], dict[str, bytes]] = lambda cid: {}
        self._handles: dict[int, CheckpointHandle] = {}
        self._stores: dict[int, Any] = {}  # a savepoint's store is its own
        self._writes: dict[int, dict[str, asyncio.Future]] = {}
        self._completing: set[asyncio.Future] = set()
        #: removals of dropped checkpoints still running in threads
        self._discarding: set[asyncio.Future] = set()
        self._mark_written = 0
        self._mark_lock = threading.Lock()

    @classmethod
    async def open(
        cls,
        plan: ExecutionPlan,
        job_id: str,
        state_key: bytes | None,
        tasks: Callable[[], dict[TaskKey, Any]],
        on_failure: Callable[[BaseException], Awaitable[None]],
        on_complete: Callable[[int], None],
        actor: tuple[str, str] | None = None,
        recovering: bool = False,
    ) -> CheckpointRunner:
        """Opens the job's checkpoint store (its private default directory claimed first);
        :meth:`continue_above_store` next, or :meth:`adopt_store` for a job master that Ray
        restarted (``recovering``: the store must be there). ``actor``: the (name, namespace) of
        a job master that Ray restarts: its default directory is not swept while it exists."""
        config = plan.config.checkpoint
        location = await asyncio.to_thread(config.resolved_storage, job_id)
        if recovering:
            await asyncio.to_thread(_check_still_there, location, job_id, config.storage is None)
        if config.storage is None:
            await asyncio.to_thread(claim_default_dir, location, job_id, actor)
        store = await asyncio.to_thread(open_job_store, location, state_key)
        coordinator = CheckpointCoordinator(JobLayout.of(plan, job_id), config, SystemClock())
        return cls(coordinator, store, tasks, on_failure, on_complete)

    async def continue_above_store(self) -> None:
        """Ids continue above everything in the store: the job never writes over, nor
        deletes, a checkpoint it did not write."""
        written = await asyncio.to_thread(self.store.written)
        self.coordinator.allocate_from(max(written, default=0) + 1)

    async def adopt_store(self) -> None:
        """A restarted job master takes over what its previous process completed: the job's
        own checkpoints are the completed ones above every other job's (a store holds one
        running job at a time, and each continues above the ones before); ids continue above
        everything written, and the committed mark is the job's."""
        coord = self.coordinator
        own = await asyncio.to_thread(_own_checkpoints, self.store, self.job_id)
        written = await asyncio.to_thread(self.store.written)
        coord.allocate_from(max(written, default=0) + 1)
        coord.first_id = min(own, default=coord.first_id)  # what the end of the job may remove
        coord.own = own
        mark = (await asyncio.to_thread(self.store.committed_marks)).get(self.job_id)
        coord.last_committed = max(coord.last_committed, mark or 0)
        self._mark_written = mark or 0

    # -- driven by the job master ----------------------------------------------------------------

    def reset(self, attempt: int) -> None:
        """A new attempt starts: pending checkpoints die with the old tasks."""
        self._apply(self.coordinator.reset(attempt))

    def trigger(
        self, kind: CheckpointKind = CheckpointKind.CHECKPOINT, store: Any = None
    ) -> CheckpointHandle:
        coord = self.coordinator
        cid = coord.begin(kind, list(self._tasks()))
        handle = CheckpointHandle(cid, asyncio.get_running_loop().create_future())
        self._handles[cid] = handle
        self._stores[cid] = store if store is not None else self.store
        try:
            # split enumerators first: their snapshot precedes every source's barrier
            extra = self.coordinator_state(cid)
        except Exception as exc:
            self._apply(coord.fail(cid, f"checkpoint {cid}: {exc}"))
            return handle
        self._apply(coord.start(cid, extra))
        return handle

    async def run_periodic(self, running: Callable[[], bool], over: Callable[[], bool]) -> None:
        """Expires overdue checkpoints and triggers one every interval while the job runs."""
        coord = self.coordinator
        coord.arm_periodic()
        while not over():
            await asyncio.sleep(coord.seconds_to_next_periodic(at_most=0.05))
            self._apply(coord.expire())
            if running() and coord.periodic_due():
                self.trigger()

    def task_finished(self, key: TaskKey, final_snapshot: bytes | None) -> None:
        self._apply(self.coordinator.task_finished(key, final_snapshot))

    async def acknowledge(self, key: TaskKey, attempt: int, cid: int, ref: Any, size: int) -> None:
        coord = self.coordinator
        if not any(isinstance(a, FetchSnapshot) for a in coord.on_ack(key, attempt, cid)):
            return  # of an aborted checkpoint or an earlier attempt
        try:
            data = await ref
        except Exception as exc:
            self._apply(coord.on_snapshot_lost(key, cid, str(exc)))
            return
        self._apply(coord.on_snapshot(key, cid, data))

    def decline(self, key: TaskKey, attempt: int, cid: int, reason: str) -> None:
        self._apply(self.coordinator.on_decline(key, attempt, cid, reason))

    def abort_all(self, reason: str) -> None:
        self._apply(self.coordinator.abort_all(reason))

    async def settle(self) -> None:
        """Waits for checkpoints that had every acknowledgement and are being written: such a
        checkpoint is consistent and completes even if a task failed meanwhile; then for the
        removals of dropped ones (the store may be closed next)."""
        if self._completing:
            await asyncio.gather(*list(self._completing), return_exceptions=True)
        if self._discarding:
            await asyncio.gather(*list(self._discarding), return_exceptions=True)

    # -- carrying out ----------------------------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, TriggerTask):
                self._tasks()[action.task].trigger_checkpoint.remote(
                    action.checkpoint_id, action.timestamp_ms, action.kind.value
                )
            elif isinstance(action, WriteBlob):
                store = self._stores[action.checkpoint_id]
                self._writes.setdefault(action.checkpoint_id, {})[action.name] = (
                    asyncio.ensure_future(
                        asyncio.to_thread(
                            store.write_blob, action.checkpoint_id, action.name, action.data
                        )
                    )
                )
            elif isinstance(action, Commit):
                job = asyncio.ensure_future(self._commit(action))
                self._completing.add(job)
                job.add_done_callback(self._completing.discard)
            elif isinstance(action, Abort):
                self._abort(action)
            elif isinstance(action, FailJob):
                asyncio.ensure_future(self._on_failure(action.error))
            elif isinstance(action, Completed):
                self._completed(action)
            else:  # DiscardRetained comes only after a commit, which awaits it
                raise TypeError(f"cannot carry out {action!r} here")

    async def _commit(self, action: Commit) -> None:
        coord = self.coordinator
        cid = action.checkpoint_id
        store = self._stores[cid]
        writes = self._writes.get(cid, {})
        try:
            handles = {}
            for name in action.blobs:
                handles[name] = await writes[name]
            metadata = coord.metadata(cid, handles)
            await asyncio.to_thread(store.commit, cid, metadata)
            if action.kind is CheckpointKind.CHECKPOINT:
                # durably, before any sink hears of it: a recovery must never go back before
                # this checkpoint without noticing that its effects may be visible already
                await asyncio.to_thread(self._record_mark, cid)
        except Exception as exc:
            self._apply(
                coord.on_commit_failed(cid, f"checkpoint {cid} could not be written: {exc}")
            )
            return
        for done in coord.on_committed(cid, store.location):
            if isinstance(done, DiscardRetained):
                await asyncio.to_thread(self._discard_all, list(done.checkpoint_ids))
            else:
                self._apply([done])

    def _abort(self, action: Abort) -> None:
        cid = action.checkpoint_id
        for handle in self._tasks().values():
            handle.abort_checkpoint.remote(cid)
        for write in self._writes.pop(cid, {}).values():
            write.cancel()
        store = self._stores.pop(cid, self.store)
        removal = asyncio.ensure_future(asyncio.to_thread(_discard_quietly, store, cid))
        self._discarding.add(removal)
        removal.add_done_callback(self._discarding.discard)
        pending = self._handles.pop(cid, None)
        if pending is not None and not pending.done.done():
            pending.done.set_exception(action.error)
            pending.done.exception()  # only savepoint callers await it: no "never retrieved" noise

    def _completed(self, action: Completed) -> None:
        cid = action.stats.checkpoint_id
        self._writes.pop(cid, None)
        self._stores.pop(cid, None)
        pending = self._handles.pop(cid, None)
        if action.notify:
            self._on_complete(cid)
            notified = [
                handle.notify_checkpoint_complete.remote(cid, key in action.final_tasks)
                for key, handle in self._tasks().items()
            ]
            if pending is not None:
                pending.notified = notified
        if pending is not None and not pending.done.done():
            pending.done.set_result(action.stats)

    def _discard_all(self, ids: list[int]) -> None:
        # quietly: the new checkpoint is complete whatever happens to older ones, and its
        # completion must still be announced (else whoever waits for it, such as the end of
        # the job, waits forever); a leftover costs only disk space
        for old in ids:
            _discard_quietly(self.store, old)

    # -- the committed mark ----------------------------------------------------------------------

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
        self.coordinator.note_committed(checkpoint_id)

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
        return max(self.coordinator.last_committed, mark)

    # -- the end ---------------------------------------------------------------------------------

    def record_ended(self, status: str) -> None:
        """Notes in the store that the job ended (runs in a thread): see :meth:`forget_ended`."""
        self.store.record_ended(self.job_id, status)

    def forget_ended(self) -> None:
        """The job master of an ended detached job goes (runs in a thread): its end mark goes,
        and its default checkpoint directory, which :meth:`cleanup` left for the mark."""
        location = self.config.resolved_storage(self.job_id)
        store = open_job_store(location, self.store.key)
        try:
            store.discard_ended(self.job_id)
        finally:
            store.close()
        if self.config.storage is None and not _retained(location):
            shutil.rmtree(location, ignore_errors=True)

    def cleanup(
        self, canceled: bool, failed: bool, keep_all: bool = False, keep_dir: bool = False
    ) -> None:
        """The job ended (runs in a thread): its checkpoints stay or go by the retention
        setting (``keep_all``: they stay, e.g. when recovery found them corrupt: they are the
        evidence, and the older valid ones can still be restored on purpose). ``keep_dir``: a
        default directory emptied stays for the job's end mark (:meth:`forget_ended`)."""
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
            mine = [i for i in self.store.written() if i >= self.coordinator.first_id]
            for cid in mine:
                _discard_quietly(self.store, cid)
            self.store.discard_incomplete(mine)
            self.store.discard_committed_mark(self.job_id)
            if self.config.storage is None and not keep_dir:  # the job's own temporary directory
                self.store.close()
                shutil.rmtree(self.config.resolved_storage(self.job_id), ignore_errors=True)
        elif self.config.storage is None:  # kept on purpose: no sweep may take it
            from raystream.checkpointing.default_dirs import mark_retained

            mark_retained(self.config.resolved_storage(self.job_id))

    def stats(self) -> dict[str, Any]:
        return self.coordinator.stats(self.store.location)


def _retained(location: str) -> bool:
    from raystream.checkpointing import default_dirs

    return bool((default_dirs.read_owner(location) or {}).get("retained"))


def open_job_store(location: str, key: bytes | None) -> Any:
    """The job's checkpoint store, its local directory created (private) now, so that its
    disappearance later fails checkpoints instead of going unnoticed."""
    from raystream.checkpointing.storage import FsCheckpointStore, open_store

    store = open_store(location, key)
    if isinstance(store, FsCheckpointStore):
        store.ensure_root()
    return store


def claim_default_dir(location: str, job_id: str, actor: tuple[str, str] | None = None) -> None:
    """The job's own temporary checkpoint directory: first the leftovers of JobMasters that died
    without removing theirs go, then this one is created (or taken over, by a restarted job
    master) with this process as its owner."""
    from raystream.checkpointing import default_dirs

    removed = default_dirs.sweep_stale(os.path.dirname(location), keep=location)
    if removed:
        log.info("removed %d checkpoint directories of jobs that are gone", len(removed))
    default_dirs.claim(location, job_id, actor)


def _check_still_there(location: str, job_id: str, default: bool) -> None:
    """A restarted job master resumes only from the store its job wrote: its default
    directory (on the node's disk: gone if the job master came back on another node), or a
    configured local directory that must still exist. A missing store is an error, never a
    fresh start (sinks may have committed what the job would then repeat)."""
    from raystream.checkpointing import default_dirs

    if default:
        owner = default_dirs.read_owner(location)
        if owner is None or owner.get("job_id") != job_id:
            raise RecoveryError(
                f"job {job_id}: its job master was restarted, but the job's checkpoints are "
                f"not at {location} on this node ({socket.gethostname()}): the default "
                "checkpoint directory is on the disk of the node the job master ran on, and "
                "that node is gone or the directory was removed. The job cannot resume without "
                "repeating or losing what its sinks committed; give jobs that must survive the "
                "loss of a node a shared checkpoint storage (set_checkpoint_storage)"
            )
        return
    path = _local_path(location)
    if path is not None and not os.path.isdir(path):
        raise RecoveryError(
            f"job {job_id}: its job master was restarted, but its checkpoint store {location} "
            "is gone (the directory does not exist on this node); the job cannot resume "
            "without repeating or losing what its sinks committed"
        )


def _local_path(location: str) -> str | None:
    """The local directory of a store location (a path, ``file://`` or ``lmdb://``)."""
    for scheme in ("lmdb://", "file://"):
        if location.startswith(scheme):
            return location[len(scheme) :]
    return None if "://" in location else location


def _own_checkpoints(store: Any, job_id: str) -> list[int]:
    """The completed checkpoints of job ``job_id`` in ``store``: those above the newest one
    whose verified metadata names another job (one whose metadata does not verify counts as the
    job's: recovery then refuses to go back past it unnoticed)."""
    from raystream.checkpointing.storage import CorruptCheckpointError

    completed = store.completed()
    others = 0
    for cid in reversed(completed):
        try:
            owner = store.read_metadata(cid).get("job_id")
        except CorruptCheckpointError:
            continue
        if owner != job_id:
            others = cid
            break
    return [cid for cid in completed if cid > others]


def _discard_quietly(store: Any, cid: int) -> None:
    try:
        store.discard(cid)
    except Exception as exc:  # a leftover is harmless: it has no metadata
        log.warning("could not remove checkpoint %s: %s", cid, exc)
