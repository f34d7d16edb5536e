"""Internal: what an operator does with a record its user code raised on (its error policy).

An operator with a policy other than ``fail`` runs its batch loop exactly as without one; only
when user code raises does :meth:`StreamOperator.bad_record` come here, with the record, and the
loop resumes with the next record (operators iterate over a resumable iterator, so nothing
before the failing record is processed twice). The handler counts, logs (the first bad record of
a subtask, then at most one line per ``LOG_INTERVAL_S`` with the count since) and, for
``dead_letter``, emits a :class:`~raystream.api.error_policy.DeadLetter` to the side output.

The counts are kept in operator list state, so after a restore from a checkpoint they continue
from the checkpoint's counts and agree with those of a run without failures.
"""

from __future__ import annotations

import logging
import operator as _operator
import time
import traceback
from typing import TYPE_CHECKING, Any

from raystream.api.error_policy import DEAD_LETTER, DeadLetter, ErrorPolicy
from raystream.errors import record_repr
from raystream.runtime.elements import Batch

if TYPE_CHECKING:
    from raystream.checkpointing.operator_state import OperatorStateStore
    from raystream.operators.base import StreamOperator

log = logging.getLogger("raystream.error_policy")

#: after the first warning of a subtask, at most one warning line per this many seconds
LOG_INTERVAL_S = 10.0
#: operator list state holding ``(records_skipped, records_dead_lettered)`` per subtask
COUNTS_STATE = "__raystream_error_policy_counts__"


class BadRecordHandler:
    """The error policy of one operator subtask: counts, logging, dead letters."""

    def __init__(self, op: StreamOperator, policy: ErrorPolicy):
        self.op = op
        self.policy = policy
        tag = policy.output_tag
        self.dead_letter_tag = (
            tag.tag_id if tag is not None and policy.kind == DEAD_LETTER else None
        )
        self.skipped = 0
        self.dead_lettered = 0
        self._logged_at: float | None = None
        self._unlogged = 0

    def restore(self, store: OperatorStateStore) -> None:
        """Continues the counts of the subtasks whose operator state this one took over."""
        for skipped, dead in store.get_list_state(COUNTS_STATE).get():
            self.skipped += skipped
            self.dead_lettered += dead

    def handle(self, exc: BaseException, record: Any, timestamp: int | None) -> None:
        op = self.op
        subtask = op.ctx.subtask_index if op.ctx is not None else 0
        if self.dead_letter_tag is not None:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            letter = DeadLetter(
                record, op.name, subtask, type(exc).__name__, str(exc), tb, timestamp
            )
            side = op.side_output(self.dead_letter_tag)
            side.emit(Batch([letter], None if timestamp is None else [timestamp]))
            self.dead_lettered += 1
        else:
            self.skipped += 1
        # in operator state, so a checkpoint holds the counts of the records before it
        op.operator_state.get_list_state(COUNTS_STATE).update([(self.skipped, self.dead_lettered)])
        self._log(exc, record, subtask)

    def _log(self, exc: BaseException, record: Any, subtask: int) -> None:
        now = time.monotonic()
        what = "dead-lettered" if self.dead_letter_tag is not None else "skipped"
        if self._logged_at is None:
            self._logged_at = now
            log.warning(
                "operator %r, subtask %d: %s record %s after %s: %s (error policy %r; later "
                "ones are logged at most every %.0f s, counts are in the operator's metrics)",
                self.op.name,
                subtask,
                what,
                record_repr(record),
                type(exc).__name__,
                exc,
                self.policy,
                LOG_INTERVAL_S,
            )
            return
        self._unlogged += 1
        if now - self._logged_at >= LOG_INTERVAL_S:
            log.warning(
                "operator %r, subtask %d: %s %d more records (%d skipped, %d dead-lettered in "
                "all); latest: %s after %s: %s",
                self.op.name,
                subtask,
                what,
                self._unlogged,
                self.skipped,
                self.dead_lettered,
                record_repr(record),
                type(exc).__name__,
                exc,
            )
            self._logged_at = now
            self._unlogged = 0

    def metrics(self) -> dict[str, int]:
        return {"records_skipped": self.skipped, "records_dead_lettered": self.dead_lettered}


def failed_index(it: Any, size: int) -> int:
    """Position of the record a loop over ``it`` (an iterator over a list or tuple of ``size``
    records) was processing when its body raised: what the iterator has handed out, less one.
    Costs nothing per record (read only after an exception)."""
    return size - _operator.length_hint(it) - 1


def without(items: list, positions: list[int]) -> list:
    """``items`` less the given positions (the timestamps of records that were dropped)."""
    drop = set(positions)
    return [x for i, x in enumerate(items) if i not in drop]
