"""Internal: the pool of worker hosts of one driver — warm Ray worker processes that the driver's
jobs borrow for their tasks and give back when they end or restart.

Creating a Ray actor starts a Python process and imports raystream in it (a second or more per
actor on a small machine); a job and every restart of it used to pay that for each subtask. The
pool keeps released hosts (:class:`~raystream.runtime.host.WorkerHost`) per set of actor options
and lends them to the next job master that asks for the same options, so the second job of a
session and a restart start on warm processes. It also keeps a spare host for every set of
options in use, so that the replacement of a task that died is warm too. Only hosts that
reserve no resources are kept (the default: tasks and job masters ask for 0 CPUs): an idle host
holding CPUs, GPUs, memory or custom resources would keep a later job's actors from being
scheduled, so such hosts are stopped when released, and get no spare.

The pool is a named actor of the driver (``raystream:pool:<driver job id>``), created by the
first job; it owns the hosts, so everything goes with the driver (and with ``ray.shutdown``).
Bounded: at most ``max_idle`` idle hosts; hosts idle longer than ``idle_timeout_s`` are stopped.
A job master that dies without giving its hosts back is noticed (the pool pings the owners of
leased hosts) and its hosts are released. Detached jobs do not use the pool: their actors must
outlive the driver.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from raystream.runtime.host import RELEASE_TIMEOUT_S, StaleGuestError, WorkerHost

log = logging.getLogger(__name__)

POOL_NAME_PREFIX = "raystream:pool:"

#: the longest a host may take to reset before it is stopped instead (its guest hangs)
RESET_TIMEOUT_S = RELEASE_TIMEOUT_S + 10.0

#: how often the pool checks that the job masters holding hosts are alive, and reaps idle hosts
WATCH_INTERVAL_S = 1.0


def reserves_resources(opts: dict[str, Any]) -> bool:
    """Whether an actor with these options holds resources while it lives (Ray gives an actor
    without ``num_cpus`` one CPU for scheduling)."""
    return bool(
        opts.get("num_cpus", 1)
        or opts.get("num_gpus")
        or opts.get("memory")
        or opts.get("resources")
    )


def options_key(opts: dict[str, Any]) -> str:
    """A stable key for a set of actor options (hosts are interchangeable only within one)."""
    return repr(sorted((k, _stable_repr(v)) for k, v in opts.items()))


def _stable_repr(value: Any) -> str:
    """``repr`` by value: an object without a repr of its own (a scheduling strategy, e.g.
    ``NodeAffinitySchedulingStrategy``) by its type and attributes, not its address, so that
    equal options of two jobs give the same key."""
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}({', '.join(_stable_repr(v) for v in value)})"
    if isinstance(value, dict):
        items = sorted((repr(k), _stable_repr(v)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    attrs = getattr(value, "__dict__", None)
    if attrs is not None and type(value).__repr__ is object.__repr__:
        return f"{type(value).__qualname__}{_stable_repr(attrs)}"
    return repr(value)


@dataclass
class _Host:
    id: int
    handle: Any
    key: str
    opts: dict[str, Any]
    idle_since: float = 0.0
    #: its process has started (it answered a call): a new spare may still be starting
    warm: bool = False
    #: it ran a guest before: its imports are done too
    served: bool = False


@dataclass
class _Lease:
    owner: Any  # the job master's handle
    hosts: dict[int, _Host] = field(default_factory=dict)


class WorkerPool:
    """Plain class; :func:`get_pool` makes it the driver's named actor."""

    def __init__(self, max_idle: int = 12, idle_timeout_s: float = 300.0, spares: int = 1):
        self.max_idle = max_idle
        self.idle_timeout_s = idle_timeout_s
        self.spares = spares
        self._ids = itertools.count(1)
        self._idle: dict[str, list[_Host]] = {}
        self._leases: dict[str, _Lease] = {}
        self._cls = ray.remote(WorkerHost)
        self._created = 0
        self._reused = 0
        self._watcher: asyncio.Task | None = None
        #: hosts that run a job master, by job id (a job listing finds them here)
        self._job_masters: dict[str, Any] = {}

    def _create(self, opts: dict[str, Any], key: str) -> _Host:
        self._created += 1
        handle = self._cls.options(**opts).remote()
        host = _Host(next(self._ids), handle, key, dict(opts), time.monotonic())
        asyncio.ensure_future(self._warm_up(host))
        return host

    async def _warm_up(self, host: _Host) -> None:
        try:
            await host.handle.status.remote()
        except Exception:  # noqa: S110 - a host that died is found when it is used
            return
        host.warm = True

    @staticmethod
    def _take(idle: list[_Host]) -> _Host:
        """An idle host to lend: the one given back last of those that ran a guest before,
        else a spare whose process has started, else the oldest spare (one created moments
        ago may still be starting its process, a second or more on a small machine)."""
        for i in range(len(idle) - 1, -1, -1):
            if idle[i].served:
                return idle.pop(i)
        for i, host in enumerate(idle):
            if host.warm:
                return idle.pop(i)
        return idle.pop(0)

    async def acquire(
        self, owner_id: str, owner: Any, wanted: list[dict[str, Any]]
    ) -> list[tuple[int, Any]]:
        """One host per entry of ``wanted`` (actor options), lent to ``owner_id``: idle ones
        first, new ones for the rest; then a spare is started for every set of options of which
        no idle host is left. ``owner``: the job master to watch (its hosts are released if it
        dies), or None."""
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch())
        lease = self._leases.setdefault(owner_id, _Lease(owner))
        out = []
        keys: dict[str, dict[str, Any]] = {}
        for opts in wanted:
            key = options_key(opts)
            keys[key] = opts
            idle = self._idle.get(key)
            if idle:
                host = self._take(idle)
                self._reused += 1
            else:
                host = self._create(opts, key)
            lease.hosts[host.id] = host
            out.append((host.id, host.handle))
        for key, opts in keys.items():
            if reserves_resources(opts):
                continue
            idle = self._idle.setdefault(key, [])
            while len(idle) < self.spares and self._idle_count() < self.max_idle:
                idle.append(self._create(opts, key))
        return out

    async def acquire_job_master(self, job_id: str, opts: dict[str, Any]) -> tuple[int, Any]:
        """A host for the job master of ``job_id``, held by the driver's ``JobClient`` (it gives
        it back when the client is let go)."""
        ((hid, handle),) = await self.acquire(_job_master_owner(job_id), None, [opts])
        self._job_masters[job_id] = handle
        return hid, handle

    async def release_job_master(self, job_id: str, host_id: int) -> None:
        self._job_masters.pop(job_id, None)
        await self.release(_job_master_owner(job_id), [(host_id, job_id)])

    async def job_masters(self) -> dict[str, Any]:
        return dict(self._job_masters)

    async def release(
        self, owner_id: str, hosts: list[tuple[int, str]], dead: list[int] | None = None
    ) -> None:
        """The owner gives hosts back (``(host id, guest id)``): each is reset and kept idle,
        or stopped if it is dead, cannot be reset, reserves resources (see the module) or the
        pool is full. ``dead``: hosts the owner knows are gone or hung (they are stopped without
        asking)."""
        lease = self._leases.get(owner_id)
        if lease is None:
            return
        doomed = set(dead or ())
        taken = [(lease.hosts.pop(hid), gid) for hid, gid in hosts if hid in lease.hosts]
        if not lease.hosts:
            self._leases.pop(owner_id, None)
        await self._reset([(h, gid) for h, gid in taken if h.id not in doomed])
        for h, _ in taken:
            if h.id in doomed:
                self._stop(h)

    async def _reset(self, taken: list[tuple[_Host, str | None]]) -> None:
        """Resets hosts (``None``: whatever guest the host runs) and keeps them idle."""
        calls = [
            h.handle.release.remote(gid) if gid is not None else h.handle.release_any.remote()
            for h, gid in taken
        ]
        results = await asyncio.gather(
            *(asyncio.wait_for(_awaited(c), RESET_TIMEOUT_S) for c in calls),
            return_exceptions=True,
        )
        now = time.monotonic()
        for (host, _), ok in zip(taken, results):
            if ok is True and self._idle_count() < self.max_idle and not reserves_resources(
                host.opts
            ):
                host.idle_since = now
                host.warm = host.served = True
                self._idle.setdefault(host.key, []).append(host)
            else:
                if ok is not True and not isinstance(ok, ray.exceptions.RayActorError):
                    log.warning("worker pool: a host could not be reset (%s); it is stopped", ok)
                self._stop(host)

    def _stop(self, host: _Host) -> None:
        try:
            ray.kill(host.handle, no_restart=True)
        except Exception:  # noqa: S110 - already gone
            pass

    def _idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())

    async def _watch(self) -> None:
        """Releases the hosts of job masters that died; stops hosts idle for too long."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                await self._release_orphans()
                self._reap()
            except Exception as exc:  # the watcher must not die
                log.warning("worker pool watcher: %s", exc)

    async def _release_orphans(self) -> None:
        owners = [(o, lease) for o, lease in self._leases.items() if lease.owner is not None]
        pings = [
            asyncio.wait_for(_awaited(lease.owner.get_status.remote()), RESET_TIMEOUT_S)
            for _, lease in owners
        ]
        results = await asyncio.gather(*pings, return_exceptions=True)
        for (owner_id, lease), result in zip(owners, results):
            # dead, or a pooled job master that was let go (its host runs another guest now)
            if isinstance(result, (ray.exceptions.RayActorError, StaleGuestError)):
                log.warning("worker pool: job master of %s is gone; releasing its hosts", owner_id)
                self._leases.pop(owner_id, None)
                await self._reset([(h, None) for h in lease.hosts.values()])

    def _reap(self) -> None:
        now = time.monotonic()
        for key, idle in self._idle.items():
            keep: list[_Host] = []
            for host in idle:
                if now - host.idle_since > self.idle_timeout_s and len(keep) >= self.spares:
                    self._stop(host)
                else:
                    keep.append(host)
            self._idle[key] = keep

    async def stats(self) -> dict[str, Any]:
        return {
            "idle": self._idle_count(),
            "leased": {owner: sorted(lease.hosts) for owner, lease in self._leases.items()},
            "created": self._created,
            "reused": self._reused,
        }


def _job_master_owner(job_id: str) -> str:
    return f"job master of {job_id}"


async def _awaited(ref: Any) -> Any:
    return await ref


def pool_name() -> str:
    return POOL_NAME_PREFIX + ray.get_runtime_context().get_job_id()


#: the driver's pool handle, by Ray job id: a non-detached actor lives while a handle to it does
_POOLS: dict[str, Any] = {}


def get_pool() -> Any:
    """The driver's pool actor, created on first use, on the driver's node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    job_id = ray.get_runtime_context().get_job_id()
    pool = _POOLS.get(job_id)
    if pool is not None:
        return pool
    _POOLS.clear()  # handles of an earlier Ray session
    pool = _POOLS[job_id] = (
        ray.remote(WorkerPool)
        .options(
            name=pool_name(),
            get_if_exists=True,
            num_cpus=0,
            max_concurrency=1000,
            scheduling_strategy=NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False
            ),
        )
        .remote()
    )
    return pool
