"""Internal: the job master — one actor per job that deploys, watches and stops its tasks.

It creates one task actor per subtask, hands each its consumers' handles (``setup``), starts the
data loops (``run``) and waits for them: all finished ⇒ FINISHED; the first failure ⇒ FAILED
with that root cause (the other tasks are then stopped); ``cancel`` ⇒ CANCELED. It also buffers
the records of collect sinks for the driver's ``execute_and_collect`` iterator (bounded: a full
buffer holds the sink's push, which back-pressures the job).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import ray

from raystream.errors import JobExecutionError, RaystreamError, TaskError
from raystream.graph.plan import ExecutionPlan
from raystream.runtime import serde
from raystream.runtime.deploy import actor_name, actor_options, task_specs
from raystream.runtime.task import Task, TaskResult

COLLECT_BUFFER_BATCHES = 16


class JobStatusName:
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    TERMINAL = (FINISHED, FAILED, CANCELED)


class JobMaster:
    def __init__(self, job_id: str, plan_bytes: bytes, refs: list, self_name: str):
        self.job_id = job_id
        self.plan: ExecutionPlan = serde.loads(plan_bytes, refs)
        self.self_name = self_name
        self.status = JobStatusName.CREATED
        self.tasks: dict[tuple[int, int], Any] = {}
        self.results: list[TaskResult] = []
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.ended_at = 0.0
        self._done = asyncio.Event()
        self._collect: deque[list] = deque()
        self._collect_next: dict[tuple[str, int], int] = {}
        self._collect_changed = asyncio.Condition()
        self._watcher: asyncio.Task | None = None

    async def start(self) -> None:
        plan = self.plan
        me = ray.get_runtime_context().current_actor
        specs = task_specs(plan, self.job_id)
        actor_cls = ray.remote(Task)
        for (cid, i), spec in specs.items():
            chain = plan.chain(cid)
            opts = actor_options(plan, chain, len(spec.input_channels))
            opts["name"] = actor_name(plan.job_name, self.job_id, chain, i)
            spec_bytes, spec_refs = serde.dumps(spec)
            self.tasks[(cid, i)] = actor_cls.options(**opts).remote(spec_bytes, spec_refs)
        services = {"job_master": me}
        setups = []
        for key, spec in specs.items():
            handles = {
                k: self.tasks[(self._chain_of_edge(oc.edge_id), oc.consumer_subtask)]
                for k, oc in enumerate(spec.output_channels)
            }
            setups.append(self.tasks[key].setup.remote(handles, services))
        self.started_at = time.time()
        try:
            await asyncio.gather(*setups)
        except Exception as exc:
            await self._fail(exc)
            return
        if self.status in JobStatusName.TERMINAL:  # canceled while the tasks were set up
            return
        self.status = JobStatusName.RUNNING
        runs = {
            asyncio.ensure_future(self._await_ref(self.tasks[key].run.remote())): key
            for key in self.tasks
        }
        self._watcher = asyncio.create_task(self._watch(runs))

    @staticmethod
    async def _await_ref(ref: Any) -> Any:
        return await ref

    def _chain_of_edge(self, edge_id: int) -> int:
        return self.plan.edge(edge_id).dst_chain

    async def _watch(self, runs: dict[asyncio.Future, tuple[int, int]]) -> None:
        pending = set(runs)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                await self._fail(_root_cause([f.exception() for f in failed]))
                for f in pending:
                    f.cancel()
                return
            self.results.extend(f.result() for f in done)
        self.status = JobStatusName.FINISHED
        await self._end()

    async def _fail(self, exc: BaseException) -> None:
        if self.status in JobStatusName.TERMINAL:
            return
        self.error = exc
        self.status = JobStatusName.FAILED
        await self._end()

    async def _end(self) -> None:
        self.ended_at = time.time()
        for handle in self.tasks.values():
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # noqa: S110 - already gone
                pass
        self._done.set()
        async with self._collect_changed:
            self._collect_changed.notify_all()

    # -- driver-facing -------------------------------------------------------------------------

    async def get_status(self) -> str:
        return self.status

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
            "runtime_s": (self.ended_at or time.time()) - self.started_at,
            "tasks": self.results,
        }

    async def cancel(self) -> str:
        if self.status not in JobStatusName.TERMINAL:
            self.status = JobStatusName.CANCELED
            if self._watcher is not None:
                self._watcher.cancel()
            await self._end()
        return self.status

    async def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "job_id": self.job_id, "tasks": []}
        if self.status in JobStatusName.TERMINAL:
            out["tasks"] = [
                {
                    "task": f"{r.chain_name} ({r.subtask + 1})",
                    "state": "FINISHED",
                    "operators": r.operators,
                }
                for r in self.results
            ]
            return out
        refs = [h.metrics.remote() for h in self.tasks.values()]
        for ref in refs:
            try:
                out["tasks"].append(await asyncio.wait_for(self._await_ref(ref), 10))
            except Exception as exc:
                out["tasks"].append({"error": repr(exc)})
        return out

    async def collect_push(self, collect_id: str, subtask: int, seq: int, values: list) -> None:
        """Pushes of one sink subtask may run out of order on this async actor: the sequence
        number puts them back in order."""
        async with self._collect_changed:
            key = (collect_id, subtask)
            while (
                self._collect_next.get(key, 0) != seq
                or len(self._collect) >= COLLECT_BUFFER_BATCHES
            ) and not self._done.is_set():
                await self._collect_changed.wait()
            self._collect_next[key] = seq + 1
            self._collect.append(values)
            self._collect_changed.notify_all()

    async def collect_fetch(self, max_wait_s: float) -> tuple[list, bool]:
        """Buffered records and whether the job ended (after which nothing more comes)."""
        async with self._collect_changed:
            if not self._collect and not self._done.is_set():
                try:
                    await asyncio.wait_for(self._collect_changed.wait(), max_wait_s)
                except asyncio.TimeoutError:
                    pass
            out: list = []
            while self._collect:
                out.extend(self._collect.popleft())
            self._collect_changed.notify_all()
            return out, self._done.is_set() and not self._collect

    async def shutdown(self) -> None:
        await self.cancel()


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


def as_job_error(job_id: str, status: str, error: BaseException | None) -> JobExecutionError:
    if status == JobStatusName.CANCELED:
        return JobExecutionError(f"job {job_id} was canceled", job_id)
    cause = error
    if isinstance(error, ray.exceptions.RayTaskError):
        cause = error.cause if getattr(error, "cause", None) is not None else error
    msg = f"job {job_id} failed: {cause}"
    err = JobExecutionError(msg, job_id, cause)
    err.__cause__ = cause
    return err
