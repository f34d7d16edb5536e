"""Internal: a job's states, what an ended job reports, and the error a failed or canceled job
ends with.

``JobStatusName`` is what the job master reports (``JobClient.get_job_status``); the root cause
of a failure is the error of user code rather than the follow-up errors it caused elsewhere,
without Ray's ``RayTaskError`` wrapper.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import ray

from raystream.checkpointing.coordinator import TaskKey
from raystream.errors import JobExecutionError, RaystreamError, TaskError

if TYPE_CHECKING:
    from raystream.runtime.task import TaskResult


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


class JobMasterLostError(RaystreamError):
    """A detached job's job master process died (Ray restarted it; the failure history shows
    it, and a job without checkpointing fails with it)."""


def hung_tasks(exc: BaseException) -> list[TaskKey]:
    key = getattr(exc, "task_key", None) if isinstance(exc, TaskHungError) else None
    return [key] if key is not None else []


def unwrap(exc: BaseException) -> BaseException:
    """The exception a task raised, without Ray's ``RayTaskError`` wrapper."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return exc


def root_cause(errors: list[BaseException]) -> BaseException:
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
    cause = unwrap(error) if error is not None else None
    msg = f"job {job_id} failed: {cause}"
    if fail_reason:
        msg = f"job {job_id} failed: {fail_reason}\nroot cause: {cause}"
    elif failures and len(failures) > 1:
        msg += f"\n(after {len(failures) - 1} restarts; see JobClient.get_failure_history())"
    err = JobExecutionError(msg, job_id, cause)
    err.failure_history = list(failures or [])
    err.__cause__ = cause
    return err


def checkpoint_summary(stats: dict[str, Any], results: Iterable[TaskResult]) -> dict[str, Any]:
    """The coordinator's checkpoint stats with the tasks' synchronous pauses."""
    out = dict(stats)
    per_task = [r.checkpoint_stats for r in results if r.checkpoint_stats]
    taken = sum(t["taken"] for t in per_task)
    out["sync_pause_ms_max"] = max((t["sync_ms_max"] for t in per_task), default=0.0)
    out["sync_pause_ms_avg"] = sum(t["sync_ms_sum"] for t in per_task) / taken if taken else 0.0
    return out


def finished_task_metrics(results: dict[TaskKey, TaskResult]) -> list[dict[str, Any]]:
    """What ``metrics()`` reports per task once the job ended: the tasks' final counts."""
    return [
        {
            "task": f"{r.chain_name} ({r.subtask + 1})",
            "chain_id": key[0],
            "chain": r.chain_name,
            "subtask": r.subtask,
            "state": "FINISHED",
            "operators": r.operators,
        }
        for key, r in results.items()
    ]
