"""Internal: the job master — one actor per job that deploys, watches, checkpoints and restarts
its tasks.

It creates one task actor per subtask, hands each its consumers' handles (``setup``), starts the
data loops (``run``) and waits for them: all finished ⇒ FINISHED; ``cancel`` ⇒ CANCELED. A
failure (a task raised, its actor died, it stopped answering pings, too many checkpoints failed)
goes to the restart strategy: either the job fails with that root cause, or every task actor is
killed and the whole job is deployed again from the latest completed checkpoint (SEMANTICS
§5.9). New actors mean new channels: nothing in flight before the failure survives it.

With checkpointing on, the :class:`~raystream.runtime.coordinator.CheckpointCoordinator` runs
here. The job master also buffers the records of collect sinks for the driver's
``execute_and_collect`` iterator (bounded: a full buffer holds the sink's push, which
back-pressures the job); with checkpointing on, records reach that buffer only when the
checkpoint after them completed. A BATCH job has no checkpoints: if its restart strategy allows a
restart (which reruns it from the start), its collected records are held until it finishes, so
the driver never sees a record twice; without restarts they go to the driver at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import Any

import ray

from raystream.api.runtime_mode import is_batch
from raystream.checkpoint_config import NoRestart, default_restart_strategy
from raystream.errors import JobExecutionError, RaystreamError, TaskError
from raystream.graph.plan import ExecutionPlan
from raystream.observe.graph import plan_graph
from raystream.observe.ray_export import start_metrics_export
from raystream.operators.split_source import SplitSource
from raystream.runtime import serde
from raystream.runtime.coordinator import (
    CheckpointCoordinator,
    CheckpointError,
    RecoveryError,
    TaskKey,
    restore_assignments,
)
from raystream.runtime.deploy import actor_name, actor_options, task_specs
from raystream.runtime.elements import CheckpointKind
from raystream.runtime.enumerators import (
    EnumeratorHost,
    enumerator_blob_name,
    restore_enumerator_states,
)
from raystream.runtime.failures import FailureHistory, describe_failure
from raystream.runtime.host import GuestRef, new_guest_id
from raystream.runtime.job_tokens import JobControlError, SignedRef, matches, new_token
from raystream.runtime.task import TaskResult
from raystream.runtime.workers import OwnWorkers, PooledWorkers, Workers

log = logging.getLogger(__name__)

COLLECT_BUFFER_BATCHES = 16


class JobStatusName:
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    TERMINAL = (FINISHED, FAILED, CANCELED)


class TaskHungError(RaystreamError):
    """A task did not answer the job master's ping in time."""

    task_key: TaskKey | None = None


def _hung_tasks(exc: BaseException) -> list[TaskKey]:
    key = getattr(exc, "task_key", None) if isinstance(exc, TaskHungError) else None
    return [key] if key is not None else []


class JobMaster:
    def __init__(
        self,
        job_id: str,
        plan_bytes: bytes,
        refs: list,
        self_name: str,
        restore: dict[str, Any] | None = None,
        detached: bool = False,
        pool: Any = None,
        control_token: str | None = None,
    ):
        self.job_id = job_id
        #: what control calls must carry (see runtime/job_tokens.py); None: a token of its own
        #: that no client holds, so nothing outside may control the job
        self._control_token = control_token or new_token()
        #: what the job's own tasks sign their calls with
        self._task_secret = new_token()
        #: how tasks and the pool call this job master: its actor handle, or a GuestRef when
        #: it runs on a pooled worker host (set by the host)
        self.self_ref: Any = None
        self.plan: ExecutionPlan = serde.loads(plan_bytes, refs)
        self.self_name = self_name
        #: a detached job's actors outlive the driver; its job master removes itself
        #: ``finished_job_retention_ms`` after the job ended
        self.detached = detached
        self._exit_scheduled = False
        self.restore_request = restore  # {"path": savepoint, "allow_non_restored_state": bool}
        self.status = JobStatusName.CREATED
        self.tasks: dict[TaskKey, GuestRef] = {}
        #: per task of the current attempt: (worker host id, guest id), and its display name
        self._hosts: dict[TaskKey, tuple[int, str]] = {}
        self.task_names: dict[TaskKey, str] = {}
        #: the driver's pool of warm worker hosts, or new actors of this job's own
        self._pool = pool
        self.workers: Workers = OwnWorkers()
        self._metrics_export: asyncio.Task | None = None
        self.results: dict[TaskKey, TaskResult] = {}
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.ended_at = 0.0
        self.attempt = 0
        self.restarts = 0
        self.failures = FailureHistory(self.plan.config.deterministic_failure_repeats)
        #: why the job failed without using up its restart strategy (deterministic failure)
        self.fail_reason: str | None = None
        self.restored_from: list[int] = []
        self._done = asyncio.Event()
        #: pickled batches of collected records, handed to the driver as they are
        self._collect: deque[bytes] = deque()
        self._collect_next: dict[tuple[str, int], int] = {}
        self._uncommitted: list[tuple[int, bytes]] = []  # (epoch, records) awaiting a checkpoint
        self._released_upto = 0  # records of epochs up to this one go straight to the driver
        self._pushes_active = 0
        self._first_checkpoint_of_attempt = 1
        self._collect_changed = asyncio.Condition()
        self._loops: list[asyncio.Task] = []
        self._failing = False
        cfg = self.plan.config
        self.checkpointing = cfg.checkpoint.is_checkpointing_enabled()
        self.restart_strategy = cfg.restart_strategy or default_restart_strategy(self.checkpointing)
        #: BATCH with restarts: collected records wait for the end of the job (a restart reruns
        #: it from the start and drops them)
        self._hold_collect = is_batch(cfg) and not isinstance(self.restart_strategy, NoRestart)
        self.coordinator: CheckpointCoordinator | None = None
        #: split enumerators of the current attempt, by source uid
        self.enumerators: dict[str, EnumeratorHost] = {}
        #: enumerator states of the checkpoint or savepoint the next deployment restores
        self._enumerator_states: dict[str, Any] = {}
        #: the HMAC key checkpoints and savepoints are signed and verified with (set at start)
        self._state_key: bytes | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.started_at = time.time()
        if self._pool is not None:
            self.workers = PooledWorkers(self._pool, self.job_id, self._me())
        # Ray metrics (Prometheus): reads only what clients read; records the final counts
        # once the job ended, then stops
        self._metrics_export = start_metrics_export(self, self.plan.config)
        restore = None
        try:
            if self.checkpointing or self.restore_request is not None:
                from raystream.checkpointing.state_key import resolve_state_key

                configured = self.plan.config.checkpoint.state_key
                self._state_key = await asyncio.to_thread(resolve_state_key, configured)
            if self.checkpointing:
                location = await asyncio.to_thread(
                    self.plan.config.checkpoint.resolved_storage, self.job_id
                )
                if self.plan.config.checkpoint.storage is None:
                    await asyncio.to_thread(_claim_default_dir, location, self.job_id)
                store = await asyncio.to_thread(_open_job_store, location, self._state_key)
                self.coordinator = CheckpointCoordinator(
                    self.plan,
                    self.job_id,
                    self.plan.config.checkpoint,
                    store,
                    lambda: self.tasks,
                    self._failover,
                    self._on_checkpoint_complete,
                )
                self.coordinator.coordinator_state = self._snapshot_enumerators
                # ids continue above everything in the store: this job never writes over, nor
                # deletes, a checkpoint it did not write
                written = await asyncio.to_thread(store.written)
                self.coordinator.next_id = self.coordinator.first_id = max(written, default=0) + 1
            if self.restore_request is not None:
                restore = await asyncio.to_thread(self._load_savepoint)
            await self._deploy(restore)
        except Exception as exc:
            cause = _unwrap(exc)
            self.failures.add(describe_failure(cause, self.attempt, int(time.time() * 1000)))
            await self._fail(cause)
            return
        if self.status in JobStatusName.TERMINAL:  # canceled while the tasks were set up
            return
        self._loops.append(asyncio.create_task(self._heartbeat_loop()))
        if self.coordinator is not None:
            self._loops.append(asyncio.create_task(self._checkpoint_loop()))

    def _load_savepoint(self) -> dict:
        """The savepoint or retained checkpoint ``execute(savepoint_path=...)`` named: a
        savepoint directory, a checkpoint store (files or LMDB, by path or URI; its newest valid
        checkpoint) or one checkpoint of a file store (``.../chk-<id>``). Reading it changes
        nothing there."""
        from raystream.checkpointing.storage import CorruptCheckpointError, open_restore_source

        req = self.restore_request
        assert req is not None
        path = req["path"]
        store, wanted = open_restore_source(path, self._state_key)
        try:
            if wanted is not None:
                cid = wanted
                try:
                    metadata, blobs = store.load(wanted)
                except CorruptCheckpointError as exc:
                    raise RecoveryError(f"cannot restore from {path!r}: {exc}") from None
            else:
                found, skipped = store.newest_valid()
                committed = _committed_in(store)
                if found is None:
                    if not store.written():
                        raise RaystreamError(f"no complete savepoint or checkpoint at {path!r}")
                    raise RecoveryError(
                        f"cannot restore from {path!r}: no checkpoint there verifies "
                        f"({_describe_skipped(skipped, store.written())})"
                    )
                cid, metadata, blobs = found
                if (
                    committed is not None
                    and cid < committed
                    and not self.plan.config.checkpoint.allow_fallback_past_committed
                ):
                    raise RecoveryError(
                        f"cannot restore from {path!r}: its newest valid checkpoint is {cid}, "
                        f"but checkpoint {committed} was committed there (its effects are "
                        f"visible to consumers of transactional sinks) and is corrupt: "
                        f"{_describe_skipped(skipped, [])}. Restoring {cid} would repeat the "
                        f"effects of checkpoints {cid + 1}..{committed}; name a checkpoint "
                        "explicitly (.../chk-<id>) or set allow_fallback_past_committed=True "
                        "to accept the duplicates"
                    )
        finally:
            store.close()
        if self.coordinator is not None:
            self.coordinator.next_id = max(self.coordinator.next_id, metadata["checkpoint_id"] + 1)
        self.restored_from.append(metadata["checkpoint_id"])
        assignments = restore_assignments(
            self.plan, metadata, blobs, bool(req.get("allow_non_restored_state"))
        )
        self._enumerator_states = restore_enumerator_states(metadata, blobs)
        return assignments

    async def _deploy(self, restore: dict[TaskKey, dict] | None) -> None:
        """Runs one task per subtask of the current attempt on worker hosts (warm ones from the
        driver's pool, or new actors), wires and starts them."""
        plan = self.plan
        me = self._me()
        specs = task_specs(plan, self.job_id, self.attempt)
        wanted: dict[TaskKey, tuple[dict[str, Any], str]] = {}
        for (cid, i), spec in specs.items():
            chain = plan.chain(cid)
            opts = actor_options(plan, chain, len(spec.input_channels), self.detached)
            wanted[(cid, i)] = (
                opts,
                actor_name(plan.job_name, self.job_id, chain, i, self.attempt),
            )
        self.task_names = {key: name for key, (_, name) in wanted.items()}
        tasks = await self._host_tasks(specs, wanted)
        self.tasks = tasks
        self.results = {}
        if self.coordinator is not None:
            self.coordinator.reset(self.attempt)
            self._first_checkpoint_of_attempt = self.coordinator.next_id
        services = {"job_master": SignedRef(me, self._task_secret)}
        setups = []
        for key, spec in specs.items():
            handles = {
                k: tasks[(plan.edge(oc.edge_id).dst_chain, oc.consumer_subtask)]
                for k, oc in enumerate(spec.output_channels)
            }
            payload = None
            if restore is not None and restore.get(key):
                payload = [ray.put(restore[key])]
            setups.append(tasks[key].setup.remote(handles, services, payload))
        await asyncio.gather(*setups)
        if self.status in JobStatusName.TERMINAL:
            return
        await self._start_enumerators(tasks)
        self.status = JobStatusName.RUNNING
        runs: dict[asyncio.Future, TaskKey] = {
            asyncio.ensure_future(_await(tasks[key].run.remote())): key for key in tasks
        }
        self._loops.append(asyncio.create_task(self._watch(self.attempt, runs)))

    async def _watch(self, attempt: int, runs: dict[asyncio.Future, TaskKey]) -> None:
        pending = set(runs)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if attempt != self.attempt or self.status in JobStatusName.TERMINAL:
                return
            failed = [f.exception() for f in done if f.exception() is not None]
            if failed:
                for f in pending:
                    f.cancel()
                await self._failover(_root_cause(failed))  # type: ignore[arg-type]
                return
            for f in done:
                key = runs[f]
                result: TaskResult = f.result()
                self.results[key] = result
                if self.coordinator is not None:
                    self.coordinator.task_finished(key, result.final_snapshot)
        await self._finish(attempt)

    async def _finish(self, attempt: int) -> None:
        """Every task finished. With checkpointing, a last checkpoint (made of the tasks' final
        snapshots) completes first, so two-phase-commit sinks commit their last transactions."""
        if self.coordinator is not None:
            try:
                pending = self.coordinator.trigger()
                await pending.done  # type: ignore[misc]
                await asyncio.gather(*pending.notified)
            except Exception as exc:
                if attempt == self.attempt:
                    await self._failover(exc)
                return
        if attempt != self.attempt or self.status in JobStatusName.TERMINAL:
            return
        self._release_collected(None)
        self.status = JobStatusName.FINISHED
        await self._end()

    async def _failover(self, exc: BaseException) -> None:
        """Applies the restart strategy: fail the job, or redeploy it from the latest completed
        checkpoint."""
        if self.status in JobStatusName.TERMINAL or self._failing:
            return
        self._failing = True
        try:
            while True:
                exc = _unwrap(exc)
                now_ms = int(time.time() * 1000)
                entry = describe_failure(exc, self.attempt, now_ms)
                self.failures.add(entry)
                if self.failures.is_deterministic():
                    n = self.failures.consecutive_repeats()
                    self.fail_reason = (
                        f"the same failure on the same record on {n} consecutive attempts "
                        f"({entry.summary()}): deterministic, not restarted again"
                    )
                    log.error("job %s fails: %s", self.job_id, self.fail_reason)
                    await self._fail(exc)
                    return
                delay = self.restart_strategy.next_delay_ms(now_ms)
                if delay is None:
                    await self._fail(exc)
                    return
                self.restarts += 1
                log.warning(
                    "job %s restarts (%d) after: %s", self.job_id, self.restarts, entry.summary()
                )
                self.status = JobStatusName.RESTARTING
                self.attempt += 1
                if self.coordinator is not None:
                    # first: tasks of the old attempt may still acknowledge while they are
                    # being stopped, and their records no longer reach the collect buffer
                    self.coordinator.reset(self.attempt)
                await self._release_tasks(_hung_tasks(exc))
                if self.coordinator is not None:
                    await self.coordinator.settle()  # may release collected records
                self._drop_uncommitted()
                await asyncio.sleep(delay / 1000.0)
                if self.status in JobStatusName.TERMINAL:
                    return
                try:
                    restore = await asyncio.to_thread(self._latest_restore)
                    await self._deploy(restore)
                    return
                except RecoveryError as fatal:  # a restart cannot change what is on disk
                    self.failures.add(describe_failure(fatal, self.attempt, now_ms))
                    await self._fail(fatal)
                    return
                except Exception as again:
                    if self.status in JobStatusName.TERMINAL:  # canceled meanwhile
                        return
                    exc = again
        finally:
            self._failing = False

    def _latest_restore(self) -> dict[TaskKey, dict] | None:
        """The latest checkpoint of this job whose data verifies, as per-task restore payloads;
        the savepoint the job started from if the job completed none yet.

        A corrupt checkpoint is skipped only if that does not go back before the newest
        checkpoint whose effects sinks committed; and if the job completed checkpoints but none
        verifies, it does not start over. Either raises :class:`RecoveryError` unless
        ``allow_fallback_past_committed`` is set.
        """
        coord = self.coordinator
        if coord is not None:
            from raystream.checkpointing.storage import CheckpointStoreError

            try:  # LMDB: checked in a child process before it is read
                coord.store = coord.store.reopened()
            except CheckpointStoreError as exc:
                raise RecoveryError(f"job {self.job_id} cannot recover: {exc}") from exc
        if coord is not None and coord.own:
            allow = self.plan.config.checkpoint.allow_fallback_past_committed
            found, skipped = coord.store.newest_valid(coord.own)
            committed = 0 if allow else coord.committed_upto()
            where = coord.store.location
            if found is not None and found[0] >= committed:
                cid, metadata, blobs = found
                self.restored_from.append(cid)
                assignments = restore_assignments(self.plan, metadata, blobs)
                self._enumerator_states = restore_enumerator_states(metadata, blobs)
                return assignments
            if not allow:
                corrupt = _describe_skipped(skipped, coord.own)
                if found is None:
                    raise RecoveryError(
                        f"job {self.job_id}: none of its checkpoints {coord.own} in {where} "
                        f"verifies ({corrupt}); starting over would repeat the effects of "
                        f"checkpoints up to {committed} that sinks committed. The job fails "
                        "instead; set allow_fallback_past_committed=True to restart from the "
                        "start (or the savepoint it was started from) anyway"
                    )
                raise RecoveryError(
                    f"job {self.job_id}: the newest checkpoint in {where} that verifies is "
                    f"{found[0]}, but checkpoint {committed} was committed (sinks made its "
                    f"effects visible) and is corrupt: {corrupt}. Falling back to {found[0]} "
                    f"would repeat the effects of checkpoints {found[0] + 1}..{committed} "
                    "(duplicates in exactly-once sinks); the job fails instead. Set "
                    "allow_fallback_past_committed=True to accept that"
                )
            if found is not None:
                cid, metadata, blobs = found
                log.warning("job %s falls back to checkpoint %d (allowed)", self.job_id, cid)
                self.restored_from.append(cid)
                assignments = restore_assignments(self.plan, metadata, blobs)
                self._enumerator_states = restore_enumerator_states(metadata, blobs)
                return assignments
        if self.restore_request is not None:
            return self._load_savepoint()
        self.restored_from.append(0)
        self._enumerator_states = {}
        return None

    def _me(self) -> Any:
        return self.self_ref or ray.get_runtime_context().current_actor

    async def dispose(self) -> None:
        """Its worker host is given back (the driver let go of the job): a job still running is
        canceled, which stops and releases its tasks."""
        if self.status not in JobStatusName.TERMINAL:
            await self._cancel()
        await self._done.wait()
        for loop in [*self._loops, self._metrics_export]:
            if loop is not None:
                loop.cancel()

    async def _host_tasks(
        self, specs: dict[TaskKey, Any], wanted: dict[TaskKey, tuple[dict[str, Any], str]]
    ) -> dict[TaskKey, GuestRef]:
        """Creates every task on a host. A pooled host that died while idle is replaced (twice
        at most); any other error fails the deployment."""
        payloads = {key: serde.dumps(spec) for key, spec in specs.items()}
        todo = list(specs)
        tasks: dict[TaskKey, GuestRef] = {}
        for round_ in range(3):
            got = await self.workers.acquire([wanted[key] for key in todo])
            calls = {}
            for key, (hid, handle) in zip(todo, got):
                gid = new_guest_id()
                self._hosts[key] = (hid, gid)
                spec_bytes, spec_refs = payloads[key]
                calls[key] = handle.host_task.remote(gid, spec_bytes, spec_refs)
                tasks[key] = GuestRef(handle, gid)
            results = await asyncio.gather(
                *(_await(c) for c in calls.values()), return_exceptions=True
            )
            lost = [
                k for k, r in zip(calls, results) if isinstance(r, ray.exceptions.RayActorError)
            ]
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, ray.exceptions.RayActorError):
                    raise r
            if not lost or round_ == 2:
                if lost:
                    raise results[list(calls).index(lost[0])]  # type: ignore[misc]
                return tasks
            gone = [self._hosts.pop(k) for k in lost]
            await self.workers.release(gone, [hid for hid, _ in gone])
            todo = lost
        return tasks

    async def _release_tasks(self, dead: list[TaskKey] | None = None) -> None:
        """Stops the current attempt's tasks: their hosts go back to the pool (reset) or are
        stopped; ``dead``: tasks known to be gone or hung."""
        self._close_enumerators()
        hosts, self._hosts = self._hosts, {}
        self.tasks = {}
        doomed = [hosts[k][0] for k in dead or () if k in hosts]
        try:
            await self.workers.release(list(hosts.values()), doomed)
        except Exception as exc:  # the pool is gone (its driver exits): so are the hosts
            log.warning("job %s: releasing its workers failed: %s", self.job_id, exc)

    async def task_actors(self) -> dict[str, Any]:
        """The Ray actor running each task of the current attempt, by the task's display name
        (operations and tests; a pooled actor runs other jobs' tasks later)."""
        return {self.task_names[key]: ref.handle for key, ref in self.tasks.items()}

    async def _start_enumerators(self, tasks: dict[TaskKey, Any]) -> None:
        """One split enumerator per split source, told which splits the restored readers hold."""
        self._close_enumerators()
        states, self._enumerator_states = self._enumerator_states, {}
        attempt = self.attempt
        blobs: dict[str, str] = {}
        for chain in self.plan.chains:
            source = getattr(chain.head.factory, "source", None)
            if not isinstance(source, SplitSource):
                continue
            handles = [tasks[(chain.id, i)] for i in range(chain.parallelism)]
            held = await asyncio.gather(*(h.restored_split_ids.remote() for h in handles))

            async def on_error(exc: BaseException, attempt: int = attempt) -> None:
                if attempt == self.attempt:
                    await self._failover(exc)

            host = EnumeratorHost(
                chain.head.uid,
                chain.head.name,
                source,
                handles,
                states.get(chain.head.uid),
                frozenset(sid for ids in held for sid in ids),
                on_error,
            )
            self.enumerators[chain.head.uid] = host
            blobs[chain.head.uid] = enumerator_blob_name(len(blobs))
            host.start()
        if self.coordinator is not None:
            self.coordinator.enumerator_blobs = blobs

    def _snapshot_enumerators(self, checkpoint_id: int) -> dict[str, bytes]:
        assert self.coordinator is not None
        names = self.coordinator.enumerator_blobs
        return {names[uid]: host.snapshot(checkpoint_id) for uid, host in self.enumerators.items()}

    def _on_checkpoint_complete(self, checkpoint_id: int) -> None:
        self._release_collected(checkpoint_id)
        for host in self.enumerators.values():
            host.notify_checkpoint_complete(checkpoint_id)

    def _close_enumerators(self) -> None:
        for host in self.enumerators.values():
            host.close()
        self.enumerators = {}

    async def _fail(self, exc: BaseException) -> None:
        if self.status in JobStatusName.TERMINAL:
            return
        self.error = exc
        self.status = JobStatusName.FAILED
        await self._end()

    async def _end(self) -> None:
        self.ended_at = time.time()
        for loop in self._loops:
            if loop is not asyncio.current_task():
                loop.cancel()
        if self.coordinator is not None:  # before the tasks stop: they may still acknowledge
            self.coordinator.abort_all("the job ended")
        await self._release_tasks()
        if self.coordinator is not None:
            # a checkpoint with every acknowledgement may still be writing: let it finish before
            # its directory goes (it would fail half-written and log a spurious error)
            await self.coordinator.settle()
            try:
                await asyncio.to_thread(
                    self.coordinator.cleanup,
                    self.status == JobStatusName.CANCELED,
                    self.status == JobStatusName.FAILED,
                    isinstance(self.error, RecoveryError),
                )
            except Exception as exc:  # the job's outcome stands; leftovers are only disk space
                log.warning("job %s: removing its checkpoints failed: %s", self.job_id, exc)
            # nothing reads the store after the end; an LMDB store left open would stay mapped
            # in this (pooled) process, and a later job here would use it without the check in
            # a child process
            await asyncio.to_thread(self.coordinator.store.close)
        self._done.set()
        async with self._collect_changed:
            self._collect_changed.notify_all()
        if self.detached and not self._exit_scheduled:
            self._exit_scheduled = True
            asyncio.ensure_future(self._exit_after(self.plan.config.finished_job_retention_ms))

    async def _exit_after(self, retention_ms: int) -> None:
        """A detached job master answers ``list``/``attach`` with the job's final status and
        result for a while after the job ended, then goes (its tasks are gone already)."""
        await asyncio.sleep(retention_ms / 1000.0)
        log.info("job %s: removing its job master %s", self.job_id, self.self_name)
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    # -- background loops ------------------------------------------------------------------------

    async def _checkpoint_loop(self) -> None:
        coord = self.coordinator
        assert coord is not None
        interval = self.plan.config.checkpoint.interval_ms / 1000.0  # type: ignore[operator]
        next_at = time.monotonic() + interval
        while self.status not in JobStatusName.TERMINAL:
            await asyncio.sleep(max(0.0, min(next_at - time.monotonic(), 0.05)))
            now = time.monotonic()
            coord.expire(now)
            if self.status != JobStatusName.RUNNING or now < next_at:
                continue
            if coord.can_trigger(now):
                coord.trigger()
                next_at = now + interval

    async def _heartbeat_loop(self) -> None:
        cfg = self.plan.config
        interval = cfg.heartbeat_interval_ms / 1000.0
        timeout = cfg.heartbeat_timeout_ms / 1000.0
        while self.status not in JobStatusName.TERMINAL:
            await asyncio.sleep(interval)
            if self.status != JobStatusName.RUNNING:
                continue
            attempt, tasks = self.attempt, dict(self.tasks)
            pings = {key: _await(h.ping.remote()) for key, h in tasks.items()}
            for key, ping in pings.items():
                try:
                    await asyncio.wait_for(ping, timeout)
                except asyncio.TimeoutError:
                    if attempt == self.attempt and self.status == JobStatusName.RUNNING:
                        hung = TaskHungError(
                            f"task {key} of job {self.job_id} did not answer a ping for "
                            f"{timeout:g} s (heartbeat timeout)"
                        )
                        hung.task_key = key
                        await self._failover(hung)
                    break
                except Exception:  # noqa: S112 - a dead task fails its run call; _watch sees it
                    continue

    # -- calls from tasks ------------------------------------------------------------------------

    def _check_task(self, secret: str) -> None:
        if not matches(self._task_secret, secret):
            raise JobControlError(f"job {self.job_id}: a call that did not come from its tasks")

    def _check_control(self, token: str | None, what: str) -> None:
        if not matches(self._control_token, token):
            raise JobControlError(
                f"job {self.job_id} ({self.plan.job_name!r}) refuses to {what}: the call does not "
                "carry the job's control token. The client that submitted the job holds it "
                "(JobClient.control_token); for a detached job, JobClient.attach and the CLI "
                "find it on the submitting machine; elsewhere pass it (--token, "
                "RAYSTREAM_JOB_TOKEN)"
            )

    async def acknowledge_checkpoint(
        self, secret: str, key: TaskKey, attempt: int, cid: int, refs: list, size: int
    ) -> None:
        self._check_task(secret)
        if self.coordinator is not None:
            await self.coordinator.acknowledge(tuple(key), attempt, cid, refs[0], size)  # type: ignore[arg-type]

    async def decline_checkpoint(
        self, secret: str, key: TaskKey, attempt: int, cid: int, reason: str
    ) -> None:
        self._check_task(secret)
        if self.coordinator is not None:
            self.coordinator.decline(tuple(key), attempt, cid, reason)  # type: ignore[arg-type]

    async def collect_push(
        self,
        secret: str,
        collect_id: str,
        subtask: int,
        attempt: int,
        seq: int,
        epoch: int,
        values: bytes,
    ) -> None:
        """Pushes of one sink subtask may run out of order on this async actor: the sequence
        number puts them back in order. Pushes of an earlier attempt are dropped: the restarted
        job sends those records again."""
        self._check_task(secret)
        self._pushes_active += 1
        try:
            async with self._collect_changed:
                key = (collect_id, subtask)
                while (
                    attempt == self.attempt
                    and (
                        self._collect_next.get(key, 0) != seq
                        or len(self._collect) >= COLLECT_BUFFER_BATCHES
                    )
                    and not self._done.is_set()
                ):
                    await self._collect_changed.wait()
                if attempt != self.attempt or self._done.is_set():
                    return
                self._collect_next[key] = seq + 1
                if epoch == 0:  # before the sink saw a barrier: the next checkpoint covers it
                    epoch = self._first_checkpoint_of_attempt
                if (self.checkpointing and epoch > self._released_upto) or self._hold_collect:
                    self._uncommitted.append((epoch, values))
                elif values:
                    self._collect.append(values)
                self._collect_changed.notify_all()
        finally:
            self._pushes_active -= 1

    def _release_collected(self, checkpoint_id: int | None) -> None:
        """Records whose checkpoint completed (``None``: the job finished) go to the driver."""
        if checkpoint_id is not None:
            self._released_upto = max(self._released_upto, checkpoint_id)
        keep = []
        for epoch, values in self._uncommitted:
            if checkpoint_id is None or epoch <= checkpoint_id:
                if values:
                    self._collect.append(values)
            else:
                keep.append((epoch, values))
        self._uncommitted = keep
        asyncio.ensure_future(self._notify_collect())

    async def _notify_collect(self) -> None:
        async with self._collect_changed:
            self._collect_changed.notify_all()

    def _drop_uncommitted(self) -> None:
        self._uncommitted = []
        self._collect_next = {}
        asyncio.ensure_future(self._notify_collect())

    # -- driver-facing -------------------------------------------------------------------------

    async def get_status(self) -> str:
        return self.status

    async def describe(self) -> dict[str, Any]:
        """What a person operating the job from the outside sees first: identity, status,
        times, the plan and how the job was started."""
        return {
            "job_id": self.job_id,
            "job_name": self.plan.job_name,
            "status": self.status,
            "detached": self.detached,
            "start_time_ms": int(self.started_at * 1000),
            "end_time_ms": int(self.ended_at * 1000) if self.ended_at else None,
            "retention_ms": self.plan.config.finished_job_retention_ms if self.detached else None,
            "plan": self.plan.describe(),
            "graph": plan_graph(self.plan),
            "tasks": [
                {"id": c.id, "name": c.name, "parallelism": c.parallelism} for c in self.plan.chains
            ],
            "checkpointing": self.checkpointing,
            "restored_from_savepoint": None
            if self.restore_request is None
            else self.restore_request["path"],
        }

    async def wait(self, timeout_s: float | None) -> dict[str, Any] | None:
        """The job's result once it ended (None if still running after ``timeout_s``)."""
        try:
            await asyncio.wait_for(self._done.wait(), timeout_s)
        except asyncio.TimeoutError:
            return None
        return self._result()

    def _result(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "error": self.error,
            "fail_reason": self.fail_reason,
            "failures": self.failures.as_dicts(),
            "runtime_s": (self.ended_at or time.time()) - self.started_at,
            "tasks": list(self.results.values()),
            "restarts": self.restarts,
            "checkpoints": self._checkpoint_summary(),
        }

    def _checkpoint_summary(self) -> dict[str, Any] | None:
        if self.coordinator is None:
            return None
        out = self.coordinator.stats()
        per_task = [r.checkpoint_stats for r in self.results.values() if r.checkpoint_stats]
        taken = sum(t["taken"] for t in per_task)
        out["sync_pause_ms_max"] = max((t["sync_ms_max"] for t in per_task), default=0.0)
        out["sync_pause_ms_avg"] = sum(t["sync_ms_sum"] for t in per_task) / taken if taken else 0.0
        return out

    async def cancel(self, token: str | None = None) -> str:
        self._check_control(token, "cancel")
        return await self._cancel()

    async def _cancel(self) -> str:
        if self.status not in JobStatusName.TERMINAL:
            self.status = JobStatusName.CANCELED
            await self._end()
        return self.status

    async def checkpoint_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "restarts": self.restarts,
            "attempt": self.attempt,
            "failures": self.failures.as_dicts(),
            "restored_from": list(self.restored_from),
        }
        if self.coordinator is not None:
            out.update(self.coordinator.stats())
        return out

    async def trigger_checkpoint(self, token: str | None = None) -> dict[str, Any]:
        """Takes a checkpoint now and waits for it (tests and operations)."""
        self._check_control(token, "take a checkpoint")
        return await self._take(CheckpointKind.CHECKPOINT, None)

    async def trigger_savepoint(self, token: str | None, path: str) -> dict[str, Any]:
        self._check_control(token, "take a savepoint")
        return await self._savepoint(path)

    async def _savepoint(self, path: str) -> dict[str, Any]:
        from raystream.checkpointing.storage import open_savepoint_store

        store = await asyncio.to_thread(open_savepoint_store, path, self._state_key)
        return await self._take(CheckpointKind.SAVEPOINT, store)

    async def stop_with_savepoint(self, token: str | None, path: str) -> dict[str, Any]:
        """A savepoint, then its side effects committed (as a completed checkpoint), then the
        job is stopped."""
        self._check_control(token, "stop with a savepoint")
        stats = await self._savepoint(path)
        if self.coordinator is not None:  # its effects are committed next: never go back before
            await asyncio.to_thread(self.coordinator.record_committed, stats["checkpoint_id"])
        notified = [
            h.notify_checkpoint_complete.remote(stats["checkpoint_id"], False)
            for h in self.tasks.values()
        ]
        await asyncio.gather(*notified, return_exceptions=True)
        self._release_collected(stats["checkpoint_id"])
        deadline = time.monotonic() + 30.0
        while self._pushes_active and time.monotonic() < deadline:  # records the driver still
            await asyncio.sleep(0.01)  # has to take before the job ends
        if self.status not in JobStatusName.TERMINAL:
            self.status = JobStatusName.FINISHED  # as Flink: a stopped job ends FINISHED
            await self._end()
        return stats

    async def _take(self, kind: CheckpointKind, store: Any) -> dict[str, Any]:
        if self.coordinator is None and is_batch(self.plan.config):
            raise CheckpointError(
                "this job runs in BATCH mode, which takes no checkpoints or savepoints (as in "
                "Flink); run it in STREAMING mode to take them"
            )
        if self.coordinator is None:
            raise CheckpointError(
                "checkpointing is off for this job: enable it (env.enable_checkpointing) to take "
                "checkpoints or savepoints"
            )
        if self.status != JobStatusName.RUNNING:
            raise CheckpointError(f"job {self.job_id} is {self.status}: no snapshot can be taken")
        pending = self.coordinator.trigger(kind, store)
        stats = await pending.done  # type: ignore[misc]
        return dict(stats.__dict__)

    async def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "job_id": self.job_id,
            "restarts": self.restarts,
            "tasks": [],
        }
        if self.status in JobStatusName.TERMINAL:
            out["tasks"] = [
                {
                    "task": f"{r.chain_name} ({r.subtask + 1})",
                    "chain_id": key[0],
                    "chain": r.chain_name,
                    "subtask": r.subtask,
                    "state": "FINISHED",
                    "operators": r.operators,
                }
                for key, r in self.results.items()
            ]
            return out
        refs = [h.metrics.remote() for h in self.tasks.values()]
        for ref in refs:
            try:
                out["tasks"].append(await asyncio.wait_for(_await(ref), 10))
            except Exception as exc:
                out["tasks"].append({"error": repr(exc)})
        return out

    async def collect_fetch(self, token: str | None, max_wait_s: float) -> tuple[list[bytes], bool]:
        """Buffered records (pickled batches) and whether the job ended (after which nothing
        more comes). Only the job's own client takes them (they are gone once taken)."""
        self._check_control(token, "hand out its collected records")
        async with self._collect_changed:
            if not self._collect and not self._done.is_set():
                try:
                    await asyncio.wait_for(self._collect_changed.wait(), max_wait_s)
                except asyncio.TimeoutError:
                    pass
            out: list[bytes] = []
            while self._collect:
                out.append(self._collect.popleft())
            self._collect_changed.notify_all()
            return out, self._done.is_set() and not self._collect


async def _await(ref: Any) -> Any:
    return await ref


def _unwrap(exc: BaseException) -> BaseException:
    """The exception a task raised, without Ray's ``RayTaskError`` wrapper."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return exc


def _root_cause(errors: list[BaseException]) -> BaseException:
    """Prefers the error of user code over the follow-up errors it caused elsewhere."""

    def rank(e: BaseException) -> int:
        if isinstance(e, TaskError):
            return 0
        if isinstance(e, RaystreamError):
            return 1
        if isinstance(e, ray.exceptions.RayActorError):
            return 3
        return 2

    return sorted(errors, key=rank)[0]


def as_job_error(
    job_id: str,
    status: str,
    error: BaseException | None,
    fail_reason: str | None = None,
    failures: list[dict[str, Any]] | None = None,
) -> JobExecutionError:
    if status == JobStatusName.CANCELED:
        return JobExecutionError(f"job {job_id} was canceled", job_id)
    cause = _unwrap(error) if error is not None else None
    msg = f"job {job_id} failed: {cause}"
    if fail_reason:
        msg = f"job {job_id} failed: {fail_reason}\nroot cause: {cause}"
    elif failures and len(failures) > 1:
        msg += f"\n(after {len(failures) - 1} restarts; see JobClient.get_failure_history())"
    err = JobExecutionError(msg, job_id, cause)
    err.failure_history = list(failures or [])
    err.__cause__ = cause
    return err


def _open_job_store(location: str, key: bytes | None) -> Any:
    """The job's checkpoint store, its local directory created (private) now, so that its
    disappearance later fails checkpoints instead of going unnoticed."""
    from raystream.checkpointing.storage import FsCheckpointStore, open_store

    store = open_store(location, key)
    if isinstance(store, FsCheckpointStore):
        store.ensure_root()
    return store


def _committed_in(store: Any) -> int | None:
    """The newest committed checkpoint any job recorded in ``store`` (None: none recorded)."""
    marks = store.committed_marks()
    known = [v for v in marks.values() if v is not None]
    if len(known) != len(marks):
        log.warning("%s holds a committed mark that does not verify; it is ignored", store)
    return max(known, default=None)


def _describe_skipped(skipped: dict[int, str], ids: list[int]) -> str:
    parts = [f"checkpoint {cid}: {why}" for cid, why in sorted(skipped.items(), reverse=True)]
    missing = [i for i in ids if i not in skipped]
    if not parts and missing:
        return f"checkpoints {missing} have no metadata"
    return "; ".join(parts) if parts else "nothing to restore"


def _claim_default_dir(location: str, job_id: str) -> None:
    """The job's own temporary checkpoint directory: first the leftovers of JobMasters that died
    without removing theirs go, then this one is created with this process as its owner."""
    from raystream.checkpointing import default_dirs

    removed = default_dirs.sweep_stale(os.path.dirname(location))
    if removed:
        log.info("removed %d checkpoint directories of jobs that are gone", len(removed))
    default_dirs.claim(location, job_id)
