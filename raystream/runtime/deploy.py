"""Internal: from an execution plan to task specs and Ray actor options.

Wiring: for every edge and every consumer subtask, the channels are the producer subtasks the
edge's partitioner connects to it, numbered in the consumer's gate in (edge, producer) order.
"""

from __future__ import annotations

import re
from typing import Any

from raystream.graph.plan import ChainSpec, ExecutionPlan
from raystream.runtime.task import OutputChannel, TaskSpec


def task_specs(
    plan: ExecutionPlan, job_id: str, attempt: int = 0
) -> dict[tuple[int, int], TaskSpec]:
    inputs: dict[tuple[int, int], list[tuple[int, str]]] = {}
    channel_of: dict[tuple[int, int, int], int] = {}  # (edge, producer, consumer) -> index
    for chain in plan.chains:
        for j in range(chain.parallelism):
            chans: list[tuple[int, str]] = []
            for eid in chain.input_edges:
                edge = plan.edge(eid)
                for i in edge.sources_of(j):
                    channel_of[(eid, i, j)] = len(chans)
                    chans.append((edge.input_index, f"{edge.name} ({i} -> {j})"))
            inputs[(chain.id, j)] = chans

    specs: dict[tuple[int, int], TaskSpec] = {}
    for chain in plan.chains:
        out_edges = [e for e in plan.edges if e.src_chain == chain.id]
        for i in range(chain.parallelism):
            outs = [
                OutputChannel(e.id, j, channel_of[(e.id, i, j)])
                for e in out_edges
                for j in e.targets(i)
            ]
            specs[(chain.id, i)] = TaskSpec(
                job_id=job_id,
                job_name=plan.job_name,
                chain=chain,
                subtask=i,
                max_parallelism=plan.max_parallelism,
                config=plan.config,
                input_channels=inputs[(chain.id, i)],
                output_edges=out_edges,
                output_channels=outs,
                attempt=attempt,
            )
    return specs


def actor_name(job_name: str, job_id: str, chain: ChainSpec, subtask: int, attempt: int = 0) -> str:
    """A name a person can find in the Ray dashboard: job, operator(s), subtask (and the
    attempt, after a restart)."""
    ops = re.sub(r"\s+", " ", chain.name)[:80]
    name = f"{task_name_prefix(job_name, job_id)}{ops}:{subtask + 1}/{chain.parallelism}"
    return name if attempt == 0 else f"{name}#{attempt}"


def task_name_prefix(job_name: str, job_id: str) -> str:
    """What the names of a job's task actors start with."""
    return f"raystream:{job_name}:{job_id[:8]}:"


_ATTEMPT = re.compile(r":\d+/\d+(?:#(\d+))?$")


def leftover_tasks(job_name: str, job_id: str) -> list[tuple[str, int]]:
    """The named task actors of a detached job still on the cluster, with their attempts:
    what a job master that Ray restarted finds of the attempt its previous process ran."""
    import ray

    prefix = task_name_prefix(job_name, job_id)
    out = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"]
        match = _ATTEMPT.search(name)
        if entry["namespace"] == DETACHED_NAMESPACE and name.startswith(prefix) and match:
            out.append((name, int(match.group(1) or 0)))
    return out


def kill_named(names: list[str]) -> None:
    """Kills the named actors of the detached namespace that still exist."""
    import ray

    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=DETACHED_NAMESPACE), no_restart=True)
        except ValueError:  # gone meanwhile
            continue


#: the Ray namespace of detached jobs: their actors are found there from any process
DETACHED_NAMESPACE = "raystream"


def actor_options(
    plan: ExecutionPlan, chain: ChainSpec, num_channels_in: int, detached: bool = False
) -> dict[str, Any]:
    cfg = plan.config
    res = dict(chain.resources)
    opts: dict[str, Any] = {
        "num_cpus": res.pop("num_cpus", cfg.task_num_cpus),
        # every queued push is one pending call; leave room for the control calls
        "max_concurrency": max(1000, num_channels_in * (cfg.channel_capacity + 2) + 100),
    }
    for k in ("num_gpus", "memory"):
        if k in res:
            opts[k] = res.pop(k)
    if res.get("resources"):
        opts["resources"] = res.pop("resources")
    if cfg.spread_tasks:
        opts["scheduling_strategy"] = "SPREAD"
    if detached:  # Ray kills the non-detached actors of a driver when it exits
        opts["lifetime"] = "detached"
        opts["namespace"] = DETACHED_NAMESPACE
    return opts
