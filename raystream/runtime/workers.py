"""Internal: where a job master gets the worker hosts for its tasks — the driver's
:mod:`~raystream.runtime.pool` (warm processes, reused across jobs and restarts), or new actors
of its own (detached jobs, whose actors must outlive the driver, or with the pool turned off).
"""

from __future__ import annotations

import itertools
from typing import Any, Protocol

import ray

from raystream.runtime.host import WorkerHost


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
