"""Internal: a job's resources reserved the Ray way — one placement group per job, one bundle
per slot (``ExecutionConfig.placement_strategy``).

A slot holds one subtask of every chain (Flink's slot sharing): slot ``i`` runs subtask ``i`` of
each chain with parallelism above ``i``, so a job has as many slots as its largest parallelism.
A slot's bundle is the sum of what its subtasks ask for (``task_num_cpus``, ``set_resources``);
a slot whose subtasks ask for no CPU reserves ``slot_num_cpus`` all the same, so that the job
shows up as demand that Ray's autoscaler adds nodes for, and its tasks land where the
reservation is (actors asking for 0 CPUs otherwise pile onto whichever node Ray picks). The job
master creates the group before its first deployment, waits for it (``placement_timeout_ms``,
then the job fails with what it asked for and what the cluster has), schedules each task actor
into its slot's bundle, keeps the group across restarts and removes it when the job ends.

Off by default: a laptop runs any parallelism on 2 cores, each task asking for nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.util.placement_group import (
    get_placement_group,
    placement_group,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from raystream.errors import RaystreamError
from raystream.graph.plan import ExecutionPlan

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementError(RaystreamError):
    """The cluster could not give the job the resources it reserves (in time)."""


def slot_bundles(plan: ExecutionPlan) -> list[dict[str, float]]:
    """The bundle of each slot: what its subtasks ask for, at least ``slot_num_cpus`` CPUs
    when they ask for none."""
    cfg = plan.config
    slots = max(chain.parallelism for chain in plan.chains)
    bundles: list[dict[str, float]] = [{} for _ in range(slots)]
    for chain in plan.chains:
        res = chain.resources
        ask = {
            "CPU": float(res.get("num_cpus", cfg.task_num_cpus)),
            "GPU": float(res.get("num_gpus", 0)),
            "memory": float(res.get("memory", 0)),
            **{k: float(v) for k, v in res.get("resources", {}).items()},
        }
        for i in range(chain.parallelism):
            for k, v in ask.items():
                if v:
                    bundles[i][k] = bundles[i].get(k, 0.0) + v
    for bundle in bundles:
        if not bundle.get("CPU"):
            bundle["CPU"] = float(cfg.slot_num_cpus)
    return bundles


def group_name(job_name: str, job_id: str) -> str:
    return f"raystream:{job_name}:{job_id[:8]}:slots"


class JobPlacement:
    """The placement group of one job."""

    def __init__(self, group: Any, bundles: list[dict[str, float]], strategy: str):
        self.group = group
        self.bundles = bundles
        self.strategy = strategy

    @classmethod
    async def reserve(cls, plan: ExecutionPlan, job_id: str) -> JobPlacement:
        """Creates the job's group (replacing one a previous job master process of the job
        left) and waits until Ray placed every bundle."""
        cfg = plan.config
        assert cfg.placement_strategy is not None
        bundles = slot_bundles(plan)
        name = group_name(plan.job_name, job_id)
        try:
            old = get_placement_group(name)
        except ValueError:  # none: the usual case
            old = None
        if old is not None:
            remove_placement_group(old)
        group = placement_group(bundles, strategy=cfg.placement_strategy, name=name)
        placement = cls(group, bundles, cfg.placement_strategy)
        timeout_s = cfg.placement_timeout_ms / 1000.0
        try:
            await asyncio.wait_for(_await(group.ready()), timeout_s)
        except asyncio.TimeoutError:
            placement.remove()
            raise PlacementError(
                f"job {plan.job_name!r} could not reserve its {len(bundles)} slots "
                f"({cfg.placement_strategy}: {_describe(bundles)}) within {timeout_s:g} s; the "
                f"cluster has {_describe([ray.cluster_resources()])} in all, "
                f"{_describe([ray.available_resources()])} free. Add nodes (an autoscaling "
                "cluster adds them for this demand), lower the parallelism or the resources "
                "asked for (set_resources, task_num_cpus, slot_num_cpus), or raise "
                "placement_timeout_ms"
            ) from None
        return placement

    def scheduling(self, subtask: int) -> PlacementGroupSchedulingStrategy:
        """Where subtask ``subtask`` of any chain runs: its slot's bundle."""
        return PlacementGroupSchedulingStrategy(
            self.group,
            placement_group_bundle_index=subtask,
            placement_group_capture_child_tasks=False,
        )

    def remove(self) -> None:
        try:
            remove_placement_group(self.group)
        except Exception:  # noqa: S110 - gone already (the cluster is shutting down)
            pass


def _describe(bundles: list[dict[str, float]]) -> str:
    parts = []
    for bundle in bundles:  # node markers and memory sizes would only hide what matters here
        shown = {k: v for k, v in sorted(bundle.items()) if ":" not in k and "memory" not in k}
        parts.append("{" + ", ".join(f"{k}: {v:g}" for k, v in shown.items()) + "}")
    if len(parts) > 4:
        return f"{', '.join(parts[:3])}, ... ({len(parts)} bundles)"
    return ", ".join(parts)


async def _await(ref: Any) -> Any:
    return await ref
