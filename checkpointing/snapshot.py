"""What one operator subtask puts in a checkpoint, and how snapshots are handed out on restore.

An :class:`OperatorSnapshot` has four parts, each in a form that can be cut up again when the job
is restored with another parallelism (SEMANTICS §3.2, §5.7):

- ``keyed``: keyed state, one backend-neutral blob per key group;
- ``timers``: timers, a list of ``(domain, timestamp, key, namespace)`` per key group;
- ``operator``: operator list state, ``name -> (mode, values)`` (even-split or union);
- ``broadcast``: broadcast state, ``name -> dict``; every subtask holds the same copy.

A source keeps the progress of its splits as union list state, so every new subtask sees all of
them and picks its own.

:func:`assign` computes what each new subtask of one operator restores from the snapshots of
the old subtasks: the key groups of its range, its share of operator state, one copy of
broadcast state.
"""

from __future__ import annotations

import hashlib
import pickle
import time
from dataclasses import dataclass, field
from typing import Any

from raystream.checkpointing.operator_state import redistribute
from raystream.core.keys import key_group_range
from raystream.errors import RaystreamError

#: checkpoint id of the snapshot a task takes when it finishes. The coordinator files it under
#: every checkpoint taken afterwards; when such a checkpoint completes, operators are notified
#: with this id, so whatever the final snapshot prepared (a last transaction) is committed too.
FINAL_CHECKPOINT_ID = 1 << 62

__all__ = [
    "FINAL_CHECKPOINT_ID",
    "OperatorSnapshot",
    "TaskSnapshot",
    "assign",
    "encode",
    "decode",
    "StateMappingError",
]


class StateMappingError(RaystreamError):
    """A checkpoint or savepoint holds state the job cannot take (unknown uid, other max
    parallelism)."""


@dataclass
class OperatorSnapshot:
    keyed: Any = field(default_factory=dict)  # dict[int, bytes], or a SnapshotView until written
    timers: dict[int, list] = field(default_factory=dict)
    operator: dict[str, tuple[str, list]] = field(default_factory=dict)
    broadcast: dict[str, dict] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.keyed or self.timers or self.operator or self.broadcast)


@dataclass
class TaskSnapshot:
    """The snapshot of one task (one subtask of a chain): an :class:`OperatorSnapshot` per
    operator uid, plus bookkeeping the coordinator reports."""

    checkpoint_id: int
    operators: dict[str, OperatorSnapshot]
    sync_ms: float = 0.0
    async_ms: float = 0.0


def freeze(snap: OperatorSnapshot) -> tuple[Any, bytes]:
    """Splits a fresh operator snapshot into its keyed-state view and the other parts pickled
    now: they are Python objects the next record may change."""
    rest = OperatorSnapshot({}, snap.timers, snap.operator, snap.broadcast)
    return snap.keyed, pickle.dumps(rest, protocol=pickle.HIGHEST_PROTOCOL)


def assemble(checkpoint_id: int, frozen: list[tuple[str, Any, bytes]], sync_ms: float) -> bytes:
    """The encoded task snapshot from ``(uid, keyed view, frozen rest)`` per operator; a view is
    serialized here (the task runs this in a thread) and closed."""
    t0 = time.perf_counter()
    operators = {}
    for uid, keyed, rest_bytes in frozen:
        rest: OperatorSnapshot = pickle.loads(rest_bytes)
        if isinstance(keyed, dict):
            rest.keyed = keyed
        else:
            try:
                rest.keyed = keyed.serialize()
            finally:
                keyed.close()
        operators[uid] = rest
    async_ms = (time.perf_counter() - t0) * 1000.0
    return encode(TaskSnapshot(checkpoint_id, operators, sync_ms, async_ms))


def encode(snapshot: TaskSnapshot) -> bytes:
    """Bytes of a task snapshot, ending in a 32-byte digest of what precedes it."""
    body = pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
    return body + hashlib.blake2b(body, digest_size=32).digest()


def decode(data: bytes, what: str = "snapshot") -> TaskSnapshot:
    from raystream.checkpointing.storage import CorruptCheckpointError

    body, digest = data[:-32], data[-32:]
    if len(data) < 33 or hashlib.blake2b(body, digest_size=32).digest() != digest:
        raise CorruptCheckpointError(f"{what}: checksum mismatch ({len(data)} bytes)")
    return pickle.loads(body)  # type: ignore[no-any-return]


def assign(
    old: dict[int, OperatorSnapshot],
    new_parallelism: int,
    max_parallelism: int,
    uid: str,
) -> list[OperatorSnapshot | None]:
    """What each of ``new_parallelism`` subtasks restores, from the snapshots of the old
    subtasks (by old subtask index). ``None`` for a subtask that gets nothing."""
    p = new_parallelism
    out = [OperatorSnapshot() for _ in range(p)]
    keyed: dict[int, bytes] = {}
    timers: dict[int, list] = {}
    for i in sorted(old):
        snap = old[i]
        for kg, blob in snap.keyed.items():
            if kg >= max_parallelism:
                raise StateMappingError(
                    f"operator {uid!r}: snapshot has key group {kg}, but max parallelism is "
                    f"{max_parallelism} (it cannot change between a snapshot and its restore)"
                )
            keyed[kg] = blob
        for kg, entries in snap.timers.items():
            timers.setdefault(kg, []).extend(entries)
    for j in range(p):
        kgs = key_group_range(j, p, max_parallelism)
        out[j].keyed = {kg: keyed[kg] for kg in kgs if kg in keyed}
        out[j].timers = {kg: timers[kg] for kg in kgs if kg in timers}
    if any(s.operator for s in old.values()):
        n_old = max(old) + 1
        parts = redistribute([old[i].operator if i in old else {} for i in range(n_old)], p)
        for j in range(p):
            out[j].operator = parts[j]
    broadcast_from = [old[i].broadcast for i in sorted(old) if old[i].broadcast]
    if broadcast_from:
        for j in range(p):
            # every old subtask held the same copy; subtask j takes copy j where it exists
            out[j].broadcast = broadcast_from[j % len(broadcast_from)]
    return [None if s.is_empty() else s for s in out]
