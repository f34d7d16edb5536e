"""Internal: where a job master gets the worker hosts for its tasks — the driver's
:mod:`~raystream.runtime.pool` (warm processes, reused across jobs and restarts), or new actors
of its own (detached jobs, whose actors must outlive the driver, or with the pool turned off) —
and :class:`TaskHosts`, the hosts that run the current attempt's tasks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, Protocol

import ray

from raystream.runtime import serde
from raystream.runtime.host import GuestRef, WorkerHost, new_guest_id

log = logging.getLogger(__name__)

TaskKey = tuple[int, int]  # (chain id, subtask)


class Workers(Protocol):
    async def acquire(self, wanted: list[tuple[dict[str, Any], str]]) -> list[tuple[int, Any]]:
        """One host per ``(actor options, display name)``: ``(host id, actor handle)``."""

    async def release(self, hosts: list[tuple[int, str]], dead: list[int]) -> None:
        """Gives hosts back (``(host id, guest id)``); ``dead``: ids of hosts to stop."""


class PooledWorkers:
    """Hosts borrowed from the driver's pool."""

    def __init__(self, pool: Any, owner_id: str, owner: Any):
        self.pool = pool
        self.owner_id = owner_id
        self.owner = owner

    async def acquire(self, wanted: list[tuple[dict[str, Any], str]]) -> list[tuple[int, Any]]:
        got: list[tuple[int, Any]] = await self.pool.acquire.remote(
            self.owner_id, self.owner, [opts for opts, _ in wanted]
        )
        return got

    async def release(self, hosts: list[tuple[int, str]], dead: list[int]) -> None:
        if hosts:
            await self.pool.release.remote(self.owner_id, hosts, dead)


class OwnWorkers:
    """New actors per deployment, named after the job, the chain and the subtask (a detached
    job's are found by those names from any process); stopped when released."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._handles: dict[int, Any] = {}
        self._cls = ray.remote(WorkerHost)

    async def acquire(self, wanted: list[tuple[dict[str, Any], str]]) -> list[tuple[int, Any]]:
        out = []
        for opts, name in wanted:
            hid = next(self._ids)
            self._handles[hid] = self._cls.options(name=name, **opts).remote()
            out.append((hid, self._handles[hid]))
        return out

    async def release(self, hosts: list[tuple[int, str]], dead: list[int]) -> None:
        for hid, _ in hosts:
            handle = self._handles.pop(hid, None)
            if handle is None:
                continue
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # noqa: S110 - already gone
                pass


class TaskHosts:
    """The worker hosts running the tasks of a job's current attempt: per task ``(host id,
    guest id)``."""

    def __init__(self, workers: Workers, job_id: str):
        self.workers = workers
        self.job_id = job_id
        self._hosts: dict[TaskKey, tuple[int, str]] = {}

    async def host(
        self, specs: dict[TaskKey, Any], wanted: dict[TaskKey, tuple[dict[str, Any], str]]
    ) -> dict[TaskKey, GuestRef]:
        """Creates every task on a host, under a new lease. A pooled host that died while idle
        is replaced (twice at most); any other error fails the deployment."""
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

    async def release(self, dead: list[TaskKey] | None = None) -> None:
        """Stops every task: their hosts go back to the pool (reset) or are stopped;
        ``dead``: tasks known to be gone or hung."""
        hosts, self._hosts = self._hosts, {}
        doomed = [hosts[k][0] for k in dead or () if k in hosts]
        try:
            await self.workers.release(list(hosts.values()), doomed)
        except Exception as exc:  # the pool is gone (its driver exits): so are the hosts
            log.warning("job %s: releasing its workers failed: %s", self.job_id, exc)


async def _await(ref: Any) -> Any:
    return await ref
