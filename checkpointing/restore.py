"""Internal: what every task of a plan restores from a checkpoint or savepoint — operators matched
by uid, their state cut up for the plan's parallelism (key groups of each subtask's range, its
share of operator state, broadcast state). Plain Python, no Ray."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raystream.checkpointing.coordinator import TaskKey
from raystream.checkpointing.snapshot import OperatorSnapshot, StateMappingError, assign, decode

if TYPE_CHECKING:
    from raystream.graph.plan import ExecutionPlan


def restore_assignments(
    plan: ExecutionPlan,
    metadata: dict[str, Any],
    blobs: dict[str, bytes],
    allow_non_restored_state: bool = False,
) -> dict[TaskKey, dict[str, OperatorSnapshot | None]]:
    """What every task of ``plan`` restores from a checkpoint or savepoint, matched by uid and
    cut up for the plan's parallelism."""
    cid = metadata.get("checkpoint_id")
    if metadata.get("max_parallelism") != plan.max_parallelism:
        raise StateMappingError(
            f"snapshot {cid} was taken with max parallelism {metadata.get('max_parallelism')}, "
            f"the job has {plan.max_parallelism}; key groups cannot be remapped"
        )
    old: dict[str, dict[int, OperatorSnapshot]] = {}
    for name, info in metadata["tasks"].items():
        if name not in blobs:
            raise StateMappingError(f"snapshot {cid} lacks the state of task {name}")
        task = decode(blobs[name], f"snapshot {cid}, task {name}")
        for uid, snap in task.operators.items():
            old.setdefault(uid, {})[info["subtask"]] = snap
    wanted = {n.uid for c in plan.chains for n in c.nodes}
    unmatched = sorted(
        uid
        for uid, parts in old.items()
        if uid not in wanted and any(not s.is_empty() for s in parts.values())
    )
    if unmatched and not allow_non_restored_state:
        raise StateMappingError(
            f"snapshot {cid} holds state of operators the job does not have (uids "
            f"{unmatched}); give operators the uid they had, or pass "
            "allow_non_restored_state=True to drop that state"
        )
    out: dict[TaskKey, dict[str, OperatorSnapshot | None]] = {}
    for chain in plan.chains:
        for node in chain.nodes:
            parts = old.get(node.uid)
            if not parts:
                continue
            per_subtask = assign(parts, chain.parallelism, plan.max_parallelism, node.uid)
            for i, part in enumerate(per_subtask):
                out.setdefault((chain.id, i), {})[node.uid] = part
    return out
