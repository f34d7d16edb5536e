"""Internal: the jobs of a Ray cluster, found from any process — joining the cluster, listing
its job masters and resolving a job name or id to one of them.

A detached job's job master is a named Ray actor, ``raystream:jobmaster:<job name>:<id[:8]>`` in
the ``raystream`` namespace (so is any job's with ``reuse_workers`` off, in its driver's
namespace); other jobs' job masters run on workers of their driver's pool, a named actor
``raystream:pool:<driver job id>`` that lists them. Listing asks the GCS for the named actors of
all namespaces (no dashboard needed), each pool for its job masters, and each job master for its
``describe()``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import ray

from raystream.errors import RaystreamError

JOB_MASTER_PREFIX = "raystream:jobmaster:"

#: the longest a job master may take to describe itself before it is reported unreachable
DESCRIBE_TIMEOUT_S = 10.0

_TERMINAL = ("FINISHED", "FAILED", "CANCELED")


class ClusterUnreachableError(RaystreamError):
    """No Ray cluster answers at the address given (or none runs on this machine)."""


class JobNotFoundError(RaystreamError):
    """No job (or more than one) on the cluster has the name or id asked for."""


def job_master_name(job_name: str, job_id: str) -> str:
    return f"{JOB_MASTER_PREFIX}{job_name}:{job_id[:8]}"


def connect(address: str | None = None, probe_timeout_s: float = 5.0) -> None:
    """Joins the cluster at ``address`` (``None``: ``RAY_ADDRESS``, else the cluster running
    on this machine) unless this process is connected to Ray already. A ``host:port`` is
    probed first: ``ray.init`` retries a dead address for minutes."""
    if ray.is_initialized():
        return
    addr = address or os.environ.get("RAY_ADDRESS") or "auto"
    if addr == "local":  # would start a cluster of its own, which holds no job
        addr = "auto"
    connect_probe(addr, probe_timeout_s)
    try:
        ray.init(address=addr, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        where = "on this machine" if addr == "auto" else f"at {addr}"
        raise ClusterUnreachableError(
            f"no Ray cluster {where}: {exc}. Start one (ray start --head) or pass "
            "--address / RAY_ADDRESS"
        ) from exc
    except Exception as exc:
        if type(exc).__name__ == "AuthenticationError":
            raise ClusterUnreachableError(
                f"the Ray cluster at {addr} refused this process: {exc}"
            ) from exc
        raise


def connect_probe(address: str, timeout_s: float = 5.0) -> None:
    """Raises :class:`ClusterUnreachableError` unless something listens at ``address`` (a
    ``host:port``; ``auto``, ``local`` and ``ray://`` addresses are not probed)."""
    if address not in ("auto", "local") and not address.startswith("ray://"):
        _probe(address, timeout_s)


def _probe(addr: str, timeout_s: float) -> None:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterUnreachableError(
            f"not a Ray cluster address: {addr!r} (expected host:port, 'auto' or ray://...)"
        )
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterUnreachableError(
            f"no Ray cluster at {addr}: {exc.strerror or exc} (is it running? the head's "
            "address is host:port of its GCS, 6379 by default)"
        ) from exc


@dataclass
class FoundJob:
    """A job master the cluster knows of, with its ``describe()`` (None: it did not answer)."""

    actor_name: str
    namespace: str
    handle: Any
    info: dict[str, Any] | None

    @property
    def is_terminal(self) -> bool:
        return self.info is not None and self.info["status"] in _TERMINAL


def scan() -> list[FoundJob]:
    """Every job master of the connected cluster, oldest first."""
    from raystream.runtime.host import GuestRef
    from raystream.runtime.pool import POOL_NAME_PREFIX

    named = ray.util.list_named_actors(all_namespaces=True)
    found = []
    for entry in named:
        name, namespace = entry["name"], entry["namespace"]
        if not name.startswith((JOB_MASTER_PREFIX, POOL_NAME_PREFIX)):
            continue
        try:
            handle = ray.get_actor(name, namespace=namespace)
        except ValueError:  # gone since it was listed
            continue
        if name.startswith(JOB_MASTER_PREFIX):
            found.append(FoundJob(name, namespace, handle, None))
            continue
        try:  # a driver's pool: the job masters its workers run
            hosted = ray.get(handle.job_masters.remote(), timeout=DESCRIBE_TIMEOUT_S)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            continue
        for job_id, host in hosted.items():
            ref = GuestRef(host, job_id)
            found.append(FoundJob(f"{name}/{job_id[:8]}", namespace, ref, None))
    refs = [job.handle.describe.remote() for job in found]
    for job, ref in zip(found, refs):
        try:
            job.info = ray.get(ref, timeout=DESCRIBE_TIMEOUT_S)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            job.info = None
        except ray.exceptions.RayTaskError:  # a pooled job master let go since it was listed
            job.info = None
    found.sort(key=lambda j: (j.info or {}).get("start_time_ms", 0))
    return found


def resolve(name_or_id: str, jobs: list[FoundJob]) -> FoundJob:
    """The job ``name_or_id`` names: a job id (or a unique prefix of one, 6 characters at
    least), else a job name — the one running job of that name, or, if none runs, the newest
    that ended."""
    answering = [j for j in jobs if j.info is not None]
    by_id = [j for j in answering if j.info and j.info["job_id"] == name_or_id]
    if not by_id and len(name_or_id) >= 6:
        by_id = [j for j in answering if j.info and j.info["job_id"].startswith(name_or_id)]
    if len(by_id) == 1:
        return by_id[0]
    if len(by_id) > 1:
        raise JobNotFoundError(
            f"job id prefix {name_or_id!r} is ambiguous: {_ids(by_id)}; give more of the id"
        )
    named = [j for j in answering if j.info and j.info["job_name"] == name_or_id]
    running = [j for j in named if not j.is_terminal]
    if len(running) == 1:
        return running[0]
    if len(running) > 1:
        raise JobNotFoundError(
            f"{len(running)} running jobs are named {name_or_id!r}: {_ids(running)}; name one "
            "by its id"
        )
    if named:
        return named[-1]
    known = ", ".join(f"{j.info['job_name']!r} ({j.info['job_id']})" for j in answering if j.info)
    unreachable = [j.actor_name for j in jobs if j.info is None]
    msg = f"no job named {name_or_id!r} or with that id on the cluster"
    msg += f"; jobs there: {known}" if known else "; it has no raystream jobs"
    if unreachable:
        msg += f" (job masters not answering: {unreachable})"
    raise JobNotFoundError(msg)


def _ids(jobs: list[FoundJob]) -> str:
    return ", ".join(str(j.info["job_id"]) for j in jobs if j.info)
