"""Internal: what a deployment of a job restores, read from its stores (runs in a thread).

The first deployment restores the savepoint or retained checkpoint ``execute(savepoint_path=...)``
named, if any. A restart restores the latest checkpoint *of this job* whose metadata and blobs
verify — never going back before the newest checkpoint whose effects sinks committed unless
``allow_fallback_past_committed`` says so — else the savepoint the job started from, else
nothing. What each task gets comes from
:func:`~raystream.checkpointing.restore.restore_assignments`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from raystream.checkpointing.coordinator import CheckpointCoordinator, RecoveryError, TaskKey
from raystream.checkpointing.restore import restore_assignments
from raystream.errors import RaystreamError
from raystream.graph.plan import ExecutionPlan
from raystream.runtime.checkpoint_runner import CheckpointRunner
from raystream.runtime.enumerators import restore_enumerator_states

log = logging.getLogger(__name__)


@dataclass
class Restore:
    """Per task what it restores (None: every task starts empty), and the split enumerators'
    states by source uid."""

    assignments: dict[TaskKey, dict] | None
    enumerator_states: dict[str, Any] = field(default_factory=dict)


class Recovery:
    """Reads what the job's deployments restore; ``restored_from`` lists, per deployment, the
    checkpoint or savepoint id it restored (0: none)."""

    def __init__(self, plan: ExecutionPlan, job_id: str, request: dict[str, Any] | None):
        self.plan = plan
        self.job_id = job_id
        #: ``{"path": savepoint, "allow_non_restored_state": bool}`` or None
        self.request = request
        #: the HMAC key checkpoints and savepoints are verified with (set at start)
        self.state_key: bytes | None = None
        self.restored_from: list[int] = []

    def savepoint(self, coordinator: CheckpointCoordinator | None) -> Restore:
        """The savepoint or retained checkpoint ``execute(savepoint_path=...)`` named: a
        savepoint directory, a checkpoint store (files or LMDB, by path or URI; its newest valid
        checkpoint) or one checkpoint of a file store (``.../chk-<id>``). Reading it changes
        nothing there."""
        from raystream.checkpointing.storage import CorruptCheckpointError, open_restore_source

        req = self.request
        assert req is not None
        path = req["path"]
        store, wanted = open_restore_source(path, self.state_key)
        try:
            if wanted is not None:
                cid = wanted
                try:
                    metadata, blobs = store.load(wanted)
                except CorruptCheckpointError as exc:
                    raise RecoveryError(f"cannot restore from {path!r}: {exc}") from None
            else:
                found, skipped = store.newest_valid()
                committed, unverified = _committed_in(store)
                if found is None:
                    if not store.written():
                        raise RaystreamError(f"no complete savepoint or checkpoint at {path!r}")
                    raise RecoveryError(
                        f"cannot restore from {path!r}: no checkpoint there verifies "
                        f"({_describe_skipped(skipped, store.written())})"
                    )
                cid, metadata, blobs = found
                fallback_allowed = self.plan.config.checkpoint.allow_fallback_past_committed
                newer = sorted(s for s in skipped if s > cid)
                if unverified and newer and not fallback_allowed:
                    raise RecoveryError(
                        f"cannot restore from {path!r}: its newest valid checkpoint is {cid}; "
                        f"the newer {_describe_skipped({s: skipped[s] for s in newer}, [])}, and "
                        "a committed mark there does not verify (damaged or tampered), so it is "
                        f"unknown whether sinks committed the effects of {newer}. Restoring "
                        f"{cid} could repeat them; name a checkpoint explicitly (.../chk-<id>) or "
                        "set allow_fallback_past_committed=True to accept that"
                    )
                if unverified and not newer:
                    log.warning(
                        "%s holds a committed mark that does not verify; checkpoint %d is the "
                        "newest there, so no newer one can have been committed",
                        path,
                        cid,
                    )
                if committed is not None and cid < committed and not fallback_allowed:
                    raise RecoveryError(
                        f"cannot restore from {path!r}: its newest valid checkpoint is {cid}, "
                        f"but checkpoint {committed} was committed there (its effects are "
                        f"visible to consumers of transactional sinks) and is corrupt: "
                        f"{_describe_skipped(skipped, [])}. Restoring {cid} would repeat the "
                        f"effects of checkpoints {cid + 1}..{committed}; name a checkpoint "
                        "explicitly (.../chk-<id>) or set allow_fallback_past_committed=True "
                        "to accept the duplicates"
                    )
        finally:
            store.close()
        if coordinator is not None:
            coordinator.continue_after(metadata["checkpoint_id"])
        self.restored_from.append(metadata["checkpoint_id"])
        assignments = restore_assignments(
            self.plan, metadata, blobs, bool(req.get("allow_non_restored_state"))
        )
        return Restore(assignments, restore_enumerator_states(metadata, blobs))

    def latest(self, runner: CheckpointRunner | None) -> Restore:
        """The latest checkpoint of this job whose data verifies; the savepoint the job started
        from if the job completed none yet.

        A corrupt checkpoint is skipped only if that does not go back before the newest
        checkpoint whose effects sinks committed; and if the job completed checkpoints but none
        verifies, it does not start over. Either raises :class:`RecoveryError` unless
        ``allow_fallback_past_committed`` is set.
        """
        if runner is not None:
            from raystream.checkpointing.storage import CheckpointStoreError

            try:  # LMDB: checked in a child process before it is read
                runner.store = runner.store.reopened()
            except CheckpointStoreError as exc:
                raise RecoveryError(f"job {self.job_id} cannot recover: {exc}") from exc
        own = runner.coordinator.own if runner is not None else []
        if runner is not None and own:
            allow = self.plan.config.checkpoint.allow_fallback_past_committed
            found, skipped = runner.store.newest_valid(own)
            committed = 0 if allow else runner.committed_upto()
            where = runner.store.location
            if found is not None and found[0] >= committed:
                return self._checkpoint(*found)
            if not allow:
                corrupt = _describe_skipped(skipped, own)
                if found is None:
                    raise RecoveryError(
                        f"job {self.job_id}: none of its checkpoints {own} in {where} "
                        f"verifies ({corrupt}); starting over would repeat the effects of "
                        f"checkpoints up to {committed} that sinks committed. The job fails "
                        "instead; set allow_fallback_past_committed=True to restart from the "
                        "start (or the savepoint it was started from) anyway"
                    )
                raise RecoveryError(
                    f"job {self.job_id}: the newest checkpoint in {where} that verifies is "
                    f"{found[0]}, but checkpoint {committed} was committed (sinks made its "
                    f"effects visible) and is corrupt: {corrupt}. Falling back to {found[0]} "
                    f"would repeat the effects of checkpoints {found[0] + 1}..{committed} "
                    "(duplicates in exactly-once sinks); the job fails instead. Set "
                    "allow_fallback_past_committed=True to accept that"
                )
            if found is not None:
                log.warning("job %s falls back to checkpoint %d (allowed)", self.job_id, found[0])
                return self._checkpoint(*found)
        if self.request is not None:
            return self.savepoint(runner.coordinator if runner is not None else None)
        self.restored_from.append(0)
        return Restore(None)

    def _checkpoint(self, cid: int, metadata: dict, blobs: dict[str, bytes]) -> Restore:
        self.restored_from.append(cid)
        return Restore(
            restore_assignments(self.plan, metadata, blobs),
            restore_enumerator_states(metadata, blobs),
        )


def _committed_in(store: Any) -> tuple[int | None, bool]:
    """The newest committed checkpoint any job recorded in ``store`` (None: none recorded), and
    whether a mark there does not verify (something was committed, nobody knows what)."""
    marks = store.committed_marks()
    known = [v for v in marks.values() if v is not None]
    return max(known, default=None), len(known) != len(marks)


def _describe_skipped(skipped: dict[int, str], ids: list[int]) -> str:
    parts = [f"checkpoint {cid}: {why}" for cid, why in sorted(skipped.items(), reverse=True)]
    missing = [i for i in ids if i not in skipped]
    if not parts and missing:
        return f"checkpoints {missing} have no metadata"
    return "; ".join(parts) if parts else "nothing to restore"
