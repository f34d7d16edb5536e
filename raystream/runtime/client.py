"""The handle on a running job — the driver's, or any process's that attached to it: status,
metrics, cancel, savepoints, results; and the list of a cluster's jobs."""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ray

from raystream.errors import JobExecutionError
from raystream.runtime import jobs
from raystream.runtime.channels import loads
from raystream.runtime.job_status import JobStatusName, as_job_error
from raystream.runtime.job_tokens import load_token


class JobStatus(enum.Enum):
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    def is_globally_terminal_state(self) -> bool:
        return self in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED)


@dataclass
class JobExecutionResult:
    """What a finished job reports: id, wall-clock runtime, per-operator counts, sink results."""

    job_id: str
    job_name: str
    net_runtime_ms: int
    #: per operator: counts (records in/out, late records dropped, ...) and times in seconds
    operator_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    sink_results: dict[str, list[Any]] = field(default_factory=dict)
    #: how often the job was restarted after a failure
    restarts: int = 0
    #: checkpoint statistics (None with checkpointing off)
    checkpoints: dict[str, Any] | None = None
    #: the failures the job recovered from, oldest first (see ``JobClient.get_failure_history``)
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: the longest time a task of the last attempt ran (from its ``run`` to its end): the job's
    #: processing time without deploying its actors
    task_run_s: float = 0.0
    #: CPU seconds the task processes of the last attempt spent while they ran, summed (not
    #: counting Ray's own processes): what the job cost, whatever else ran on the machine
    task_cpu_s: float = 0.0

    def get_job_id(self) -> str:
        return self.job_id

    def get_net_runtime(self) -> int:
        return self.net_runtime_ms

    def records_out(self, operator: str) -> int:
        return int(self.operator_metrics[operator]["records_out"])

    def records_in(self, operator: str) -> int:
        return int(self.operator_metrics[operator]["records_in"])

    def get_sink_result(self, name: str) -> list[Any]:
        """The ``result()`` of every subtask of the sink named ``name``, by subtask index."""
        if name not in self.sink_results:
            raise KeyError(f"no sink named {name!r}; sinks: {sorted(self.sink_results)}")
        return self.sink_results[name]

    def get_ray_dataset(self, name: str) -> Any:
        """The records a ``RayDatasetSink`` named ``name`` received, as a ``ray.data.Dataset``."""
        from raystream.operators.raydata import dataset_from_sink_results

        return dataset_from_sink_results(self.get_sink_result(name))


class DetachedJobExecutionResult(JobExecutionResult):
    """What ``execute()`` returns for a detached job (``raystream run --detached``): the job
    id and name; the job runs on, so its results are not known here (as Flink's
    ``DetachedJobExecutionResult``). ``JobClient.attach(job_id)`` reaches the job later."""

    def __init__(self, job_id: str, job_name: str):
        super().__init__(job_id=job_id, job_name=job_name, net_runtime_ms=0)

    def _unavailable(self, what: str) -> JobExecutionError:
        return JobExecutionError(
            f"job {self.job_id} ({self.job_name!r}) was submitted detached: its {what} is not "
            "available to the program that submitted it; use JobClient.attach(job_id) or "
            f"`raystream info {self.job_id}`",
            self.job_id,
        )

    def get_net_runtime(self) -> int:
        raise self._unavailable("runtime")

    def records_out(self, operator: str) -> int:
        raise self._unavailable("metrics")

    def records_in(self, operator: str) -> int:
        raise self._unavailable("metrics")

    def get_sink_result(self, name: str) -> list[Any]:
        raise self._unavailable("sink results")

    def get_ray_dataset(self, name: str) -> Any:
        raise self._unavailable("sink results")


@dataclass(frozen=True)
class JobStatusMessage:
    """One job of a cluster, as ``list_jobs`` reports it (Flink's ``JobStatusMessage``)."""

    job_id: str
    job_name: str
    job_state: JobStatus
    #: when the job started, in ms since the epoch
    start_time: int
    detached: bool

    def get_job_id(self) -> str:
        return self.job_id

    def get_job_name(self) -> str:
        return self.job_name

    def get_job_state(self) -> JobStatus:
        return self.job_state

    def get_start_time(self) -> int:
        return self.start_time


def list_jobs(
    address: str | None = None, include_terminated: bool = False
) -> list[JobStatusMessage]:
    """The jobs of the Ray cluster at ``address`` (``None``: the one this process is connected
    to, else ``RAY_ADDRESS``, else the cluster running on this machine), oldest first.

    Running, restarting and starting jobs; with ``include_terminated`` also the detached jobs
    that ended less than their ``finished_job_retention_ms`` ago (their job masters still
    answer with the final status)."""
    jobs.connect(address)
    out = []
    for job in jobs.scan():
        if job.info is None or (job.is_terminal and not include_terminated):
            continue
        out.append(
            JobStatusMessage(
                job.info["job_id"],
                job.info["job_name"],
                JobStatus(job.info["status"]),
                job.info["start_time_ms"],
                job.info["detached"],
            )
        )
    return out


@dataclass
class JobMasterLease:
    """The pooled worker host a job's job master runs on, held by the client that started the
    job (as a job master actor lives while a handle to it does)."""

    pool: Any
    host_id: int

    def release(self, job_id: str) -> None:
        try:
            if ray.is_initialized():
                self.pool.release_job_master.remote(job_id, self.host_id)
        except Exception:  # noqa: S110 - Ray is shutting down: the pool goes with it
            pass


class JobClient:
    """Returned by ``execute_async`` (or ``JobClient.attach``); all calls go to the job's
    JobMaster actor.

    ``timeout_s``: how long a call waits for the job master's answer (None: as long as it
    takes); a call that times out raises ``TimeoutError`` and leaves the job as it is.
    """

    def __init__(
        self,
        job_id: str,
        job_name: str,
        job_master: Any,
        timeout_s: float | None = None,
        *,
        lease: JobMasterLease | None = None,
        token: str | None = None,
    ):
        self.job_id = job_id
        self.job_name = job_name
        self._jm = job_master
        self._result: JobExecutionResult | None = None
        self.timeout_s = timeout_s
        #: the pooled worker running the job master, given back when this client goes away
        self._lease = lease
        #: the job's control token (runtime/job_tokens.py): needed to take collected records,
        #: checkpoint, savepoint, stop or cancel
        self.control_token = token

    def __del__(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release(self.job_id)

    @classmethod
    def attach(
        cls,
        name_or_id: str,
        address: str | None = None,
        timeout_s: float | None = None,
        token: str | None = None,
    ) -> JobClient:
        """A client of a job running on the cluster at ``address`` (as in :func:`list_jobs`),
        from any process: by job id (or a unique prefix, 6 characters at least) or by name (the
        running job of that name; if none runs, the newest that ended). Raises
        ``JobNotFoundError`` if there is no such job, ``ClusterUnreachableError`` if there is no
        such cluster.

        ``token``: the job's control token, needed to cancel, stop, savepoint or collect (None:
        ``RAYSTREAM_JOB_TOKEN``, else the one this user's submission of a detached job kept on
        this machine); status, metrics and waiting need none."""
        jobs.connect(address)
        found = jobs.resolve(str(name_or_id), jobs.scan())
        assert found.info is not None
        job_id = found.info["job_id"]
        token = token or load_token(job_id)
        return cls(job_id, found.info["job_name"], found.handle, timeout_s, token=token)

    def get_job_id(self) -> str:
        return self.job_id

    def _call(self, ref: Any, blocks_s: float = 0.0) -> Any:
        """Waits for a call to the job master (one that itself waits up to ``blocks_s``). Ray
        restarts a detached job's job master and retries the call on it; a job master that is
        gone for good ends the job."""
        timeout = None if self.timeout_s is None else self.timeout_s + blocks_s
        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError as exc:
            raise TimeoutError(
                f"job {self.job_id}: its job master did not answer within {timeout} s"
            ) from exc
        except ray.exceptions.RayActorError as exc:
            err = JobExecutionError(
                f"job {self.job_id}: its job master died ({type(exc).__name__}); the job and its "
                "tasks are gone (only a detached job's job master is restarted, up to "
                "job_master_max_restarts times; resume from a retained checkpoint or a "
                "savepoint)",
                self.job_id,
                exc,
            )
            raise err from exc

    def task_actors(self) -> dict[str, Any]:
        """The Ray actor running each task of the current attempt, by the task's name
        (``raystream:<job>:<id>:<operators>:<i>/<p>``, ``#<attempt>`` after a restart). Pooled
        actors (the default) run later jobs' tasks once this job lets them go."""
        return self._call(self._jm.task_actors.remote())  # type: ignore[no-any-return]

    def get_job_status(self) -> JobStatus:
        return JobStatus(self._call(self._jm.get_status.remote()))

    def describe(self) -> dict[str, Any]:
        """Id, name, status, start and end time, whether the job is detached, its execution
        plan and its tasks with their parallelism."""
        return self._call(self._jm.describe.remote())  # type: ignore[no-any-return]

    def cancel(self) -> JobStatus:
        return JobStatus(self._call(self._jm.cancel.remote(self.control_token)))

    def metrics(self) -> dict[str, Any]:
        """Live per-task metrics: records in/out per operator, queued input, watermark, ..."""
        return self._call(self._jm.metrics.remote())  # type: ignore[no-any-return]

    def get_checkpoint_stats(self) -> dict[str, Any]:
        """Restarts, failure causes, and checkpoint counts with the last completed checkpoint's
        id, size, duration and location."""
        return self._call(self._jm.checkpoint_stats.remote())  # type: ignore[no-any-return]

    def get_failure_history(self) -> list[dict[str, Any]]:
        """Every failure of the job so far, oldest first: ``attempt``, ``timestamp_ms``,
        ``exception`` (type of the root cause), ``message`` (its first line), ``operator``,
        ``subtask`` and ``record`` (truncated repr; None when the failure is not tied to a
        record, e.g. a lost actor)."""
        return list(self.get_checkpoint_stats()["failures"])

    def get_restarts(self) -> int:
        return int(self.get_checkpoint_stats()["restarts"])

    def trigger_checkpoint(self) -> dict[str, Any]:
        """Takes a checkpoint now; returns its id, size and duration once it completed."""
        return self._call(self._jm.trigger_checkpoint.remote(self.control_token))  # type: ignore[no-any-return]

    def trigger_savepoint(self, path: str) -> str:
        """Writes a savepoint to ``path`` (a local directory or a ``pyarrow.fs`` URI) and
        returns it; the job keeps running."""
        self._call(self._jm.trigger_savepoint.remote(self.control_token, str(path)))
        return str(path)

    def stop_with_savepoint(self, path: str) -> str:
        """Writes a savepoint to ``path``, commits its side effects, and stops the job."""
        self._call(self._jm.stop_with_savepoint.remote(self.control_token, str(path)))
        return str(path)

    def wait(self, timeout: float | None = None) -> JobExecutionResult:
        """Blocks until the job ends; raises ``JobExecutionError`` if it failed or was canceled,
        ``TimeoutError`` if it still runs after ``timeout`` seconds."""
        if self._result is not None:
            return self._result
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 5.0 if deadline is None else max(0.0, min(5.0, deadline - time.monotonic()))
            raw = self._call(self._jm.wait.remote(step), step)
            if raw is not None:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.job_id} still running after {timeout} s")
        if raw["status"] != JobStatusName.FINISHED:
            raise as_job_error(
                self.job_id,
                raw["status"],
                raw["error"],
                raw.get("fail_reason"),
                raw.get("failures"),
            )
        self._result = _to_result(self.job_id, self.job_name, raw)
        return self._result

    def get_job_execution_result(self) -> JobExecutionResult:
        return self.wait()

    def _collect_fetch(self, max_wait_s: float) -> tuple[list, bool]:
        payloads, finished = self._call(
            self._jm.collect_fetch.remote(self.control_token, max_wait_s), max_wait_s
        )
        from raystream.operators.sinks import expand_collected

        values: list = []
        for payload in payloads:
            values.extend(expand_collected(loads(payload).values))  # type: ignore[union-attr]
        return values, finished


def _to_result(job_id: str, job_name: str, raw: dict[str, Any]) -> JobExecutionResult:
    ops: dict[str, dict[str, float]] = {}
    sinks: dict[str, dict[int, Any]] = {}
    for tr in raw["tasks"]:
        for name, m in tr.operators.items():
            agg = ops.setdefault(name, {})
            for k, v in m.items():
                if isinstance(v, (int, float)):
                    agg[k] = agg.get(k, 0) + v  # counts stay ints; times are summed over subtasks
        for name, value in tr.sink_results.items():
            sinks.setdefault(name, {})[tr.subtask] = value
    return JobExecutionResult(
        job_id=job_id,
        job_name=job_name,
        net_runtime_ms=int(raw["runtime_s"] * 1000),
        operator_metrics=ops,
        sink_results={n: [v[i] for i in sorted(v)] for n, v in sinks.items()},
        restarts=raw.get("restarts", 0),
        checkpoints=raw.get("checkpoints"),
        failures=list(raw.get("failures") or []),
        task_run_s=max((tr.duration_s for tr in raw["tasks"]), default=0.0),
        task_cpu_s=sum(tr.cpu_s for tr in raw["tasks"]),
    )


class CollectResultIterator(Iterator[Any]):
    """Iterates the records of ``execute_and_collect``; closing it cancels an unfinished job."""

    def __init__(self, client: JobClient, poll_s: float = 1.0, progress: Any = None):
        self.client = client
        self._buffer: list = []
        self._pos = 0
        self._finished = False
        self._poll_s = poll_s
        #: the progress line drawn while the records come (``raystream.observe.progress``)
        self._progress = progress

    def _stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __iter__(self) -> CollectResultIterator:
        return self

    def __next__(self) -> Any:
        while self._pos >= len(self._buffer):
            if self._finished:
                self._stop_progress()
                self.client.wait()  # raises if the job failed
                raise StopIteration
            self._buffer, self._finished = self.client._collect_fetch(self._poll_s)
            self._pos = 0
        value = self._buffer[self._pos]
        self._pos += 1
        return value

    def close(self) -> None:
        self._stop_progress()
        if not self._finished:
            try:
                self.client.cancel()
            except Exception:  # noqa: S110 - the job may be gone already
                pass
            self._finished = True
            self._buffer, self._pos = [], 0

    def __enter__(self) -> CollectResultIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "JobClient",
    "JobExecutionResult",
    "DetachedJobExecutionResult",
    "JobStatusMessage",
    "list_jobs",
    "JobStatus",
    "CollectResultIterator",
    "JobExecutionError",
]
