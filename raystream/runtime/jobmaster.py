"""Internal: the job master — one actor per job that deploys, watches, checkpoints and restarts
its tasks: a thin shell that carries out what its decision objects decide.

It creates one task per subtask on worker hosts, hands each its consumers' handles (``setup``),
starts the data loops (``run``) and waits for them: all finished ⇒ FINISHED; ``cancel`` ⇒
CANCELED. A failure (a task raised, its actor died, it stopped answering pings, too many
checkpoints failed) goes to the :class:`~raystream.runtime.failover.FailoverPolicy`: either the
job fails with that root cause, or every task is stopped and the whole job is deployed again
from the latest completed checkpoint (SEMANTICS §5.9, :mod:`raystream.runtime.recovery`). New
tasks mean new leases and channels: nothing in flight before the failure survives it.

With checkpointing on, the :class:`~raystream.checkpointing.coordinator.CheckpointCoordinator`
decides and the :class:`~raystream.runtime.checkpoint_runner.CheckpointRunner` carries its
decisions out here. The records of collect sinks for the driver's ``execute_and_collect``
iterator wait in a :class:`~raystream.runtime.collect_buffer.CollectBuffer`, which decides which
push is taken, held or dropped and when records reach the driver.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from raystream.api.runtime_mode import is_batch
from raystream.checkpointing.coordinator import (
    CheckpointError,
    RecoveryError,
    TaskKey,
)
from raystream.graph.plan import ExecutionPlan
from raystream.observe.graph import plan_graph
from raystream.observe.ray_export import start_metrics_export
from raystream.runtime import serde
from raystream.runtime.checkpoint_runner import CheckpointRunner
from raystream.runtime.collect_buffer import CollectBuffer
from raystream.runtime.collected import CollectedRecords
from raystream.runtime.deploy import (
    DETACHED_NAMESPACE,
    actor_name,
    actor_options,
    kill_named,
    leftover_tasks,
    task_specs,
)
from raystream.runtime.elements import CheckpointKind
from raystream.runtime.enumerators import SplitEnumerators
from raystream.runtime.failover import Fail, FailoverPolicy
from raystream.runtime.host import GuestRef
from raystream.runtime.job_status import (
    JobMasterLostError,
    JobStatusName,
    TaskHungError,
    checkpoint_summary,
    finished_task_metrics,
    hung_tasks,
    root_cause,
    unwrap,
)
from raystream.runtime.job_tokens import JobControlError, SignedRef, matches, new_token
from raystream.runtime.placement import JobPlacement
from raystream.runtime.recovery import Recovery, Restore
from raystream.runtime.task import TaskResult
from raystream.runtime.workers import OwnWorkers, PooledWorkers, TaskHosts

log = logging.getLogger(__name__)


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
        #: the display name of each task of the current attempt
        self.task_names: dict[TaskKey, str] = {}
        #: the driver's pool of warm worker hosts, or new actors of this job's own
        self._pool = pool
        self.hosts = TaskHosts(OwnWorkers(), job_id)
        #: the job's placement group (``placement_strategy``), reserved before the first
        #: deployment and kept across restarts
        self.placement: JobPlacement | None = None
        self._metrics_export: asyncio.Task | None = None
        self.results: dict[TaskKey, TaskResult] = {}
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.ended_at = 0.0
        self.attempt = 0
        cfg = self.plan.config
        self.checkpointing = cfg.checkpoint.is_checkpointing_enabled()
        self.failover = FailoverPolicy.for_job(
            cfg.restart_strategy, self.checkpointing, cfg.deterministic_failure_repeats
        )
        #: why the job failed without using up its restart strategy (deterministic failure)
        self.fail_reason: str | None = None
        self.recovery = Recovery(self.plan, job_id, restore)
        self._done = asyncio.Event()
        #: BATCH with restarts: collected records wait for the end of the job (a restart reruns
        #: it from the start and drops them)
        self.collected = CollectedRecords(
            CollectBuffer(self.checkpointing, is_batch(cfg) and self.failover.may_restart)
        )
        self._loops: list[asyncio.Task] = []
        self._failing = False
        self.checkpoints: CheckpointRunner | None = None
        #: split enumerators of the current attempt, by source uid
        self.enumerators = SplitEnumerators(self.plan)
        #: enumerator states of the checkpoint or savepoint the next deployment restores
        self._enumerator_states: dict[str, Any] = {}
        #: Ray restarted this (detached) job master after its process or node died: it carries
        #: the job on (:meth:`recover`) instead of starting it
        self.recovered = detached and ray.get_runtime_context().was_current_actor_reconstructed
        self._recovery: asyncio.Future | None = None
        if self.recovered:  # runs once __init__ returned; nobody else calls a restarted actor
            self._me().recover.remote()

    @property
    def restarts(self) -> int:
        return self.failover.restarts

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.recovered:  # the driver's start call, retried by Ray after a restart
            await self.recover()
            return
        self.started_at = time.time()
        if self._pool is not None:
            self.hosts = TaskHosts(PooledWorkers(self._pool, self.job_id, self._me()), self.job_id)
        # Ray metrics (Prometheus): reads only what clients read; records the final counts
        # once the job ended, then stops
        self._metrics_export = start_metrics_export(self, self.plan.config)
        restore = None
        try:
            if self.checkpointing or self.restore_request is not None:
                await self._resolve_state_key()
            if self.checkpointing:
                self.checkpoints = await self._open_checkpoints(recovering=False)
                await self.checkpoints.continue_above_store()
            if self.restore_request is not None:
                coordinator = self.checkpoints.coordinator if self.checkpoints else None
                restore = self._restoring(
                    await asyncio.to_thread(self.recovery.savepoint, coordinator)
                )
            await self._reserve()
            await self._deploy(restore)
        except Exception as exc:
            await self._fail_outright(exc)
            return
        if self.status in JobStatusName.TERMINAL:  # canceled while the tasks were set up
            return
        self._start_loops()

    def _start_loops(self) -> None:
        if self.status in JobStatusName.TERMINAL:
            return
        self._loops.append(asyncio.create_task(self._heartbeat_loop()))
        if self.checkpoints is not None:
            self._loops.append(
                asyncio.create_task(
                    self.checkpoints.run_periodic(
                        lambda: self.status == JobStatusName.RUNNING,
                        lambda: self.status in JobStatusName.TERMINAL,
                    )
                )
            )

    async def _reserve(self) -> None:
        """Reserves the job's slots in a placement group if it asks for one; its tasks then run
        on new actors in those slots (a pooled host cannot move into the group)."""
        if self.plan.config.placement_strategy is None:
            return
        self.placement = await JobPlacement.reserve(self.plan, self.job_id)
        self.hosts = TaskHosts(OwnWorkers(), self.job_id)

    async def _resolve_state_key(self) -> None:
        from raystream.checkpointing.state_key import resolve_state_key

        configured = self.plan.config.checkpoint.state_key
        self.recovery.state_key = await asyncio.to_thread(resolve_state_key, configured)

    async def _open_checkpoints(self, recovering: bool) -> CheckpointRunner:
        runner = await CheckpointRunner.open(
            self.plan,
            self.job_id,
            self.recovery.state_key,
            lambda: self.tasks,
            self._failover,
            self._on_checkpoint_complete,
            actor=(self.self_name, DETACHED_NAMESPACE) if self.detached else None,
            recovering=recovering,
        )
        runner.coordinator_state = self.enumerators.snapshot
        return runner

    async def recover(self) -> None:
        """Carries on a detached job whose job master process died (Ray restarted the actor
        with the same arguments: the plan, the restore request, the control token): the
        previous process's tasks are killed, and the job is deployed again from its latest
        completed checkpoint, as after a task failure. Without checkpointing nothing can be
        resumed: the job fails with the cause. Idempotent (Ray may deliver the call twice)."""
        if self._recovery is None:
            self._recovery = asyncio.ensure_future(self._recover())
        await asyncio.shield(self._recovery)

    async def _recover(self) -> None:
        self.started_at = time.time()
        self.status = JobStatusName.RESTARTING
        self._metrics_export = start_metrics_export(self, self.plan.config)
        lost = JobMasterLostError(
            f"the job master of job {self.job_id} ({self.plan.job_name!r}) died and Ray "
            "restarted it"
        )
        try:
            leftovers = await asyncio.to_thread(leftover_tasks, self.plan.job_name, self.job_id)
            # the new attempt's actor names differ from every leftover's
            self.attempt = max((a for _, a in leftovers), default=0) + 1
            await asyncio.to_thread(kill_named, [name for name, _ in leftovers])
            log.warning(
                "job %s: job master restarted; %d tasks of attempt %s killed, redeploying as "
                "attempt %d",
                self.job_id,
                len(leftovers),
                sorted({a for _, a in leftovers}),
                self.attempt,
            )
            if not self.checkpointing:
                found = (
                    f"killed its {len(leftovers)} tasks"
                    if leftovers
                    else "found none of its tasks (the job may have ended before; its final "
                    "status was lost with the process)"
                )
                raise JobMasterLostError(
                    f"{lost} and {found}; the job takes no checkpoints, so it cannot resume "
                    "(enable checkpointing for jobs that must survive the loss of their job "
                    "master)"
                )
            self.failover.restarted_elsewhere(lost, self.attempt - 1, int(time.time() * 1000))
            await self._resolve_state_key()
            self.checkpoints = await self._open_checkpoints(recovering=True)
            ended = await asyncio.to_thread(self.checkpoints.store.ended_status, self.job_id)
            if ended is not None:  # died in the job's retention time: the job is not run again
                await self._ended_before(ended)
                return
            await self.checkpoints.adopt_store()
            self.collected.fence(self.attempt)
            restore = self._restoring(
                await asyncio.to_thread(self.recovery.latest, self.checkpoints)
            )
            await self._reserve()
            await self._deploy(restore)
        except Exception as exc:
            await self._fail_outright(exc)
            return
        self._start_loops()

    async def _ended_before(self, status: str) -> None:
        """The job had ended ``status`` before this job master's process died: it answers with
        that status (the result's details died with the process) until its retention ends."""
        self.status = status
        self.ended_at = time.time()
        if status == JobStatusName.FAILED:
            self.error = JobMasterLostError(
                f"job {self.job_id} had failed before its job master died; the cause was lost "
                "with the job master's process"
            )
        await asyncio.to_thread(self.checkpoints.store.close)  # type: ignore[union-attr]
        self._done.set()
        await self.collected.end()
        self._exit_scheduled = True
        asyncio.ensure_future(self._exit_after(self.plan.config.finished_job_retention_ms))

    def _restoring(self, restore: Restore) -> dict[TaskKey, dict] | None:
        self._enumerator_states = restore.enumerator_states
        return restore.assignments

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
            if self.placement is not None:
                opts["scheduling_strategy"] = self.placement.scheduling(i)
            wanted[(cid, i)] = (
                opts,
                actor_name(plan.job_name, self.job_id, chain, i, self.attempt),
            )
        self.task_names = {key: name for key, (_, name) in wanted.items()}
        tasks = await self.hosts.host(specs, wanted)
        self.tasks = tasks
        self.results = {}
        if self.checkpoints is not None:
            self.checkpoints.reset(self.attempt)
            self.collected.buffer.begin_attempt(self.checkpoints.coordinator.next_id)
        services: dict[str, Any] = {"job_master": SignedRef(me, self._task_secret)}
        if self.detached:  # its tasks end themselves if this job master is gone for good
            services["job_master_name"] = (self.self_name, DETACHED_NAMESPACE)
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
                await self._failover(root_cause(failed))  # type: ignore[arg-type]
                return
            for f in done:
                key = runs[f]
                result: TaskResult = f.result()
                self.results[key] = result
                if self.checkpoints is not None:
                    self.checkpoints.task_finished(key, result.final_snapshot)
        await self._finish(attempt)

    async def _finish(self, attempt: int) -> None:
        """Every task finished. With checkpointing, a last checkpoint (made of the tasks' final
        snapshots) completes first, so two-phase-commit sinks commit their last transactions."""
        if self.checkpoints is not None:
            try:
                pending = self.checkpoints.trigger()
                await pending.done
                await asyncio.gather(*pending.notified)
            except Exception as exc:
                if attempt == self.attempt:
                    await self._failover(exc)
                return
        if attempt != self.attempt or self.status in JobStatusName.TERMINAL:
            return
        self.collected.release(None)
        self.status = JobStatusName.FINISHED
        await self._end()

    async def _failover(self, exc: BaseException) -> None:
        """Carries out the failover policy's decision: fail the job, or redeploy it from the
        latest completed checkpoint."""
        if self.status in JobStatusName.TERMINAL or self._failing:
            return
        self._failing = True
        try:
            while True:
                exc = unwrap(exc)
                now_ms = int(time.time() * 1000)
                decision = self.failover.on_failure(exc, self.attempt, now_ms)
                if isinstance(decision, Fail):
                    if decision.reason is not None:
                        self.fail_reason = decision.reason
                        log.error("job %s fails: %s", self.job_id, self.fail_reason)
                    await self._fail(exc)
                    return
                log.warning(
                    "job %s restarts (%d) after: %s",
                    self.job_id,
                    self.restarts,
                    decision.entry.summary(),
                )
                self.status = JobStatusName.RESTARTING
                self.attempt += 1
                # first: tasks of the old attempt may still acknowledge or push while they are
                # being stopped; neither counts any more
                self.collected.fence(self.attempt)
                if self.checkpoints is not None:
                    self.checkpoints.reset(self.attempt)
                await self._release_tasks(hung_tasks(exc))
                if self.checkpoints is not None:
                    await self.checkpoints.settle()  # may release collected records
                self.collected.drop_uncommitted()
                await asyncio.sleep(decision.delay_ms / 1000.0)
                if self.status in JobStatusName.TERMINAL:
                    return
                try:
                    restore = self._restoring(
                        await asyncio.to_thread(self.recovery.latest, self.checkpoints)
                    )
                    await self._deploy(restore)
                    return
                except RecoveryError as fatal:  # a restart cannot change what is on disk
                    self.failover.record(fatal, self.attempt, now_ms)
                    await self._fail(fatal)
                    return
                except Exception as again:
                    if self.status in JobStatusName.TERMINAL:  # canceled meanwhile
                        return
                    exc = again
        finally:
            self._failing = False

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

    async def _release_tasks(self, dead: list[TaskKey] | None = None) -> None:
        """Stops the current attempt's tasks: their hosts go back to the pool (reset) or are
        stopped; ``dead``: tasks known to be gone or hung."""
        self.enumerators.close()
        self.tasks = {}
        await self.hosts.release(dead)

    async def task_actors(self) -> dict[str, Any]:
        """The Ray actor running each task of the current attempt, by the task's display name
        (operations and tests; a pooled actor runs other jobs' tasks later)."""
        return {self.task_names[key]: ref.handle for key, ref in self.tasks.items()}

    async def _start_enumerators(self, tasks: dict[TaskKey, Any]) -> None:
        states, self._enumerator_states = self._enumerator_states, {}
        attempt = self.attempt

        async def on_error(exc: BaseException) -> None:
            # the failover runs in a task of its own: it closes the enumerators, which cancels
            # the enumerator loop this is called from
            if attempt == self.attempt:
                self._loops.append(asyncio.ensure_future(self._failover(exc)))

        await self.enumerators.start(tasks, states, on_error)
        if self.checkpoints is not None:
            self.checkpoints.coordinator.enumerator_blobs = self.enumerators.blob_names

    def _on_checkpoint_complete(self, checkpoint_id: int) -> None:
        self.collected.release(checkpoint_id)
        self.enumerators.notify_checkpoint_complete(checkpoint_id)

    async def _fail_outright(self, exc: BaseException) -> None:
        """The job could not start (or resume): it fails whatever the restart strategy says."""
        cause = unwrap(exc)
        self.failover.record(cause, self.attempt, int(time.time() * 1000))
        await self._fail(cause)

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
        if self.checkpoints is not None:  # before the tasks stop: they may still acknowledge
            self.checkpoints.abort_all("the job ended")
            if self.detached:  # a job master restarted from now on must not run the job again
                try:
                    await asyncio.to_thread(self.checkpoints.record_ended, self.status)
                except Exception as exc:
                    log.warning("job %s: could not record its end: %s", self.job_id, exc)
        await self._release_tasks()
        if self.placement is not None:
            self.placement.remove()
        if self.checkpoints is not None:
            # a checkpoint with every acknowledgement may still be writing: let it finish before
            # its directory goes (it would fail half-written and log a spurious error)
            await self.checkpoints.settle()
            try:
                await asyncio.to_thread(
                    self.checkpoints.cleanup,
                    self.status == JobStatusName.CANCELED,
                    self.status == JobStatusName.FAILED,
                    isinstance(self.error, RecoveryError),
                    self.detached,
                )
            except Exception as exc:  # the job's outcome stands; leftovers are only disk space
                log.warning("job %s: removing its checkpoints failed: %s", self.job_id, exc)
            # nothing reads the store after the end; an LMDB store left open would stay mapped
            # in this (pooled) process, and a later job here would use it without the check in
            # a child process
            await asyncio.to_thread(self.checkpoints.store.close)
        self._done.set()
        await self.collected.end()
        if self.detached and not self._exit_scheduled:
            self._exit_scheduled = True
            asyncio.ensure_future(self._exit_after(self.plan.config.finished_job_retention_ms))

    async def _exit_after(self, retention_ms: int) -> None:
        """A detached job master answers ``list``/``attach`` with the job's final status and
        result for a while after the job ended, then goes (its tasks are gone already)."""
        await asyncio.sleep(retention_ms / 1000.0)
        log.info("job %s: removing its job master %s", self.job_id, self.self_name)
        if self.checkpoints is not None:
            try:
                await asyncio.to_thread(self.checkpoints.forget_ended)
            except Exception as exc:  # a leftover mark costs only disk space
                log.warning("job %s: could not remove its end mark: %s", self.job_id, exc)
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    # -- background loops ------------------------------------------------------------------------

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

    @ray.method(enable_task_events=False)  # frequent: see runtime/host.py
    async def acknowledge_checkpoint(
        self, secret: str, key: TaskKey, attempt: int, cid: int, refs: list, size: int
    ) -> None:
        self._check_task(secret)
        if self.checkpoints is not None:
            await self.checkpoints.acknowledge(tuple(key), attempt, cid, refs[0], size)  # type: ignore[arg-type]

    @ray.method(enable_task_events=False)  # frequent: see runtime/host.py
    async def decline_checkpoint(
        self, secret: str, key: TaskKey, attempt: int, cid: int, reason: str
    ) -> None:
        self._check_task(secret)
        if self.checkpoints is not None:
            self.checkpoints.decline(tuple(key), attempt, cid, reason)  # type: ignore[arg-type]

    @ray.method(enable_task_events=False)  # frequent: see runtime/host.py
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
        self._check_task(secret)
        await self.collected.push((collect_id, subtask), attempt, seq, epoch, values)

    # -- driver-facing -------------------------------------------------------------------------

    @ray.method(enable_task_events=False)  # frequent: see runtime/host.py
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
            "job_master_recovered": self.recovered,
            "placement": None
            if self.placement is None
            else {"strategy": self.placement.strategy, "bundles": self.placement.bundles},
        }

    @ray.method(enable_task_events=False)  # frequent: see runtime/host.py
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
            "failures": self.failover.history.as_dicts(),
            "runtime_s": (self.ended_at or time.time()) - self.started_at,
            "tasks": list(self.results.values()),
            "restarts": self.restarts,
            "checkpoints": None
            if self.checkpoints is None
            else checkpoint_summary(self.checkpoints.stats(), self.results.values()),
        }

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
            "failures": self.failover.history.as_dicts(),
            "restored_from": list(self.recovery.restored_from),
        }
        if self.checkpoints is not None:
            out.update(self.checkpoints.stats())
        elif self.checkpointing:  # a restarted job master, before it opened the store
            out.update(
                completed=0, failed=0, in_progress=0, last_completed=None, history=[], location=None
            )
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

        store = await asyncio.to_thread(open_savepoint_store, path, self.recovery.state_key)
        return await self._take(CheckpointKind.SAVEPOINT, store)

    async def stop_with_savepoint(self, token: str | None, path: str) -> dict[str, Any]:
        """A savepoint, then its side effects committed (as a completed checkpoint), then the
        job is stopped."""
        self._check_control(token, "stop with a savepoint")
        stats = await self._savepoint(path)
        if self.checkpoints is not None:  # its effects are committed next: never go back before
            await asyncio.to_thread(self.checkpoints.record_committed, stats["checkpoint_id"])
        notified = [
            h.notify_checkpoint_complete.remote(stats["checkpoint_id"], False)
            for h in self.tasks.values()
        ]
        await asyncio.gather(*notified, return_exceptions=True)
        self.collected.release(stats["checkpoint_id"])
        deadline = time.monotonic() + 30.0
        while (
            self.collected.pushes_active and time.monotonic() < deadline
        ):  # records the driver still
            await asyncio.sleep(0.01)  # has to take before the job ends
        if self.status not in JobStatusName.TERMINAL:
            self.status = JobStatusName.FINISHED  # as Flink: a stopped job ends FINISHED
            await self._end()
        return stats

    async def _take(self, kind: CheckpointKind, store: Any) -> dict[str, Any]:
        if self.checkpoints is None and is_batch(self.plan.config):
            raise CheckpointError(
                "this job runs in BATCH mode, which takes no checkpoints or savepoints (as in "
                "Flink); run it in STREAMING mode to take them"
            )
        if self.checkpoints is None:
            raise CheckpointError(
                "checkpointing is off for this job: enable it (env.enable_checkpointing) to take "
                "checkpoints or savepoints"
            )
        if self.status != JobStatusName.RUNNING:
            raise CheckpointError(f"job {self.job_id} is {self.status}: no snapshot can be taken")
        pending = self.checkpoints.trigger(kind, store)
        stats = await pending.done
        return dict(stats.__dict__)

    async def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "job_id": self.job_id,
            "restarts": self.restarts,
            "tasks": [],
        }
        if self.status in JobStatusName.TERMINAL:
            out["tasks"] = finished_task_metrics(self.results)
            return out
        refs = [h.metrics.remote() for h in self.tasks.values()]
        for ref in refs:
            try:
                out["tasks"].append(await asyncio.wait_for(_await(ref), 10))
            except Exception as exc:
                out["tasks"].append({"error": repr(exc)})
        return out

    @ray.method(enable_task_events=False)  # frequent: see runtime/host.py
    async def collect_fetch(self, token: str | None, max_wait_s: float) -> tuple[list[bytes], bool]:
        """Buffered records (pickled batches) and whether the job ended (after which nothing
        more comes). Only the job's own client takes them (they are gone once taken)."""
        self._check_control(token, "hand out its collected records")
        return await self.collected.fetch(max_wait_s)


async def _await(ref: Any) -> Any:
    return await ref
