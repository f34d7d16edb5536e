"""Internal: worker hosts — the Ray actors that run a job's tasks, kept and reused across jobs and
restarts by :mod:`raystream.runtime.pool`.

A host runs one *guest* at a time: a :class:`~raystream.runtime.task.Task` or a job's
:class:`~raystream.runtime.jobmaster.JobMaster`. Every call names the guest it is meant for
(``guest_id``): a task's is a random lease that only its job master and the job's other tasks
know, so a call left over from an earlier job or attempt — or from anyone else — is refused
before its payload is unpickled; a job master's is its job id. Releasing a host stops its guest (calls in progress are
cancelled, pending pushes fail, snapshots being written finish, operators are closed and state
backends disposed) and leaves a clean process for the next one.

Callers hold a :class:`GuestRef` (host handle + guest id) and use it like an actor handle:
``ref.setup.remote(...)``, ``ref.push.remote(...)``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

import ray

from raystream.errors import RaystreamError

log = logging.getLogger(__name__)

#: how long a release waits for the guest's calls to stop and its snapshots to be written
RELEASE_TIMEOUT_S = 30.0

#: a release collects the guest's garbage and then freezes what survived (``gc.freeze``): the
#: host's imports and Ray's state, which a full collection would otherwise walk again at every
#: release (100-170 ms per host on the 2-core box, most of a small job's end); every this many
#: releases the frozen objects are collected too, so garbage among them does not pile up
FULL_COLLECT_EVERY = 20


class StaleGuestError(RaystreamError):
    """A call reached a worker host for a guest it does not run (any more)."""


def new_guest_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class GuestRef:
    """A guest on a worker host, called like an actor handle (``ref.method.remote(...)``)."""

    handle: Any
    guest_id: str

    def __getattr__(self, name: str) -> _GuestMethod:
        if name.startswith("__"):  # pickling and copying probe dunders on bare instances
            raise AttributeError(name)
        return _GuestMethod(self.handle, self.guest_id, name)


@dataclass(frozen=True)
class _GuestMethod:
    handle: Any
    guest_id: str
    name: str

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        if self.name == "push":
            return self.handle.push.remote(self.guest_id, *args)
        return self.handle.call.remote(self.guest_id, self.name, *args, **kwargs)


class WorkerHost:
    """Plain class; the pool (or a job master, for jobs outside the pool) makes it an actor."""

    def __init__(self) -> None:
        self.guest: Any = None
        self.guest_id: str | None = None
        self._calls: set[asyncio.Task] = set()
        #: guests run so far, and when the host last became idle
        self.guests_hosted = 0
        self._releases = 0
        self.idle_since = time.monotonic()

    def _current(self, guest_id: str) -> Any:
        if guest_id != self.guest_id or self.guest is None:
            raise StaleGuestError(
                "this worker does not run the task the call was meant for (it ended, was "
                "restarted, or the call did not come from its job)"
            )
        return self.guest

    async def host_task(self, guest_id: str, spec_bytes: bytes, refs: list) -> None:
        """Creates the task this host runs until :meth:`release`."""
        from raystream.runtime.task import Task

        self._admit(Task(spec_bytes, refs), guest_id)

    async def host_job_master(self, job_id: str, *args: Any) -> None:
        """Creates a job's job master (guest id: the job id) on this host."""
        from raystream.runtime.jobmaster import JobMaster

        guest = JobMaster(job_id, *args)
        guest.self_ref = GuestRef(ray.get_runtime_context().current_actor, job_id)
        self._admit(guest, job_id)

    def _admit(self, guest: Any, guest_id: str) -> None:
        if self.guest is not None:
            raise StaleGuestError("this worker already runs a guest")
        self.guest = guest
        self.guest_id = guest_id
        self.guests_hosted += 1

    async def describe(self) -> dict[str, Any] | None:
        """The hosted job master's ``describe()`` (``None`` when it hosts none): lets a job
        listing find pooled job masters."""
        describe = getattr(self.guest, "describe", None)
        return await describe() if describe is not None else None

    # one call per data message: with task events on, the GCS keeps a record of each (up to
    # Ray's task_events_max_num_task_in_gcs, 100k by default), and its memory grew by about
    # 1 MB/s on a small paced job at parallelism 2. The control calls below (checkpoint
    # triggers, acknowledgements and notifications, pings, metrics) made it grow by 2.4 MB/min
    # on a p=2 job with 1 s checkpoints: no task events for them either (the Ray dashboard's
    # task list does not show them)
    @ray.method(enable_task_events=False)
    async def push(self, guest_id: str, channel: int, seq: int, message: Any) -> None:
        guest = self._current(guest_id)
        await self._tracked(guest.push(channel, seq, message))

    @ray.method(enable_task_events=False)
    async def call(self, guest_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        guest = self._current(guest_id)
        if method.startswith("_"):
            raise AttributeError(f"{type(guest).__name__}.{method} is not callable remotely")
        result = getattr(guest, method)(*args, **kwargs)
        if asyncio.iscoroutine(result):
            return await self._tracked(result)
        return result

    async def _tracked(self, coro: Any) -> Any:
        task = asyncio.ensure_future(coro)
        self._calls.add(task)
        try:
            return await task
        finally:
            self._calls.discard(task)

    async def release(self, guest_id: str) -> bool:
        """Stops the guest ``guest_id`` and makes the host idle. True if the host is clean and
        idle now; False if it runs another guest."""
        if guest_id != self.guest_id:
            return self.guest is None
        guest, self.guest, self.guest_id = self.guest, None, None  # new calls are refused now
        calls = list(self._calls)
        for call in calls:
            call.cancel()
        if calls:
            await asyncio.wait(calls, timeout=RELEASE_TIMEOUT_S)
        try:
            await asyncio.wait_for(guest.dispose(), RELEASE_TIMEOUT_S)
        except Exception as exc:  # the pool replaces a host that cannot be cleaned
            log.warning("worker host: disposing a %s failed: %s", type(guest).__name__, exc)
            raise
        del guest, calls
        self._collect()
        self.idle_since = time.monotonic()
        return True

    def _collect(self) -> None:
        self._releases += 1
        if self._releases % FULL_COLLECT_EVERY == 0:
            gc.unfreeze()
        gc.collect()
        gc.freeze()

    async def release_any(self) -> bool:
        """Releases whatever guest runs here (its job master died without releasing it)."""
        return await self.release(self.guest_id) if self.guest_id is not None else True

    async def status(self) -> dict[str, Any]:
        """Whether the host is idle, and what it ran (for the pool and for tests)."""
        return {
            "idle": self.guest is None,
            "guests_hosted": self.guests_hosted,
            "node": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
        }
