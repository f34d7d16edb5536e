"""Two-phase-commit sinks: output that becomes visible once, when the checkpoint holding it
completes (SEMANTICS §6).

A :class:`TwoPhaseCommitSink` writes records into transactions. With checkpointing on,
:class:`TwoPhaseCommitSinkOperator` drives them from the task's checkpoint hooks:

- ``open``: for every restored state entry, ``recover_and_commit`` each pending transaction,
  then ``recover_and_abort`` the one that was open; then ``begin_transaction``.
- ``process_batch``: ``write(current, batch)``.
- ``snapshot_state(n)`` (the barrier): ``pre_commit(current)``, ``pending[n] = current``,
  ``current = begin_transaction()``; the open and the pending transactions go into even-split
  operator list state, one entry per subtask (after a scale-in a subtask restores several).
- ``notify_checkpoint_complete(n)``: ``commit`` every pending transaction of a checkpoint up to
  ``n``, oldest first (a lost notification is covered by the next one).
- ``close``: ``abort`` the open transaction.

A finished task takes its final snapshot (``FINAL_CHECKPOINT_ID``) after ``finish``; the last
transaction is committed when the checkpoint holding that snapshot completes, which is after the
task closed its operators, so the sink itself is closed only once nothing is pending.

Without checkpoints nothing would ever complete: the operator then runs the sink like any other,
through ``create_writer``, whose default writes one transaction and commits it at end of input.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raystream.checkpointing.snapshot import FINAL_CHECKPOINT_ID, OperatorSnapshot
from raystream.operators.sinks import Sink, SinkContext, SinkOperator, SinkWriter
from raystream.runtime.elements import Batch

__all__ = ["TransactionState", "TwoPhaseCommitSink", "TwoPhaseCommitSinkOperator"]

_STATE_NAME = "two-phase-commit-transactions"


class TwoPhaseCommitSink(Sink):
    """A sink whose output is committed in transactions, exactly once with checkpointing on.

    Each subtask runs its own copy of the sink (the job ships one to every subtask), so fields
    set in :meth:`open` belong to that subtask. A transaction is any picklable object but None,
    of the sink's choosing: the open and the pre-committed ones go into checkpoints.

    ``commit`` must be idempotent (a restore commits again what may already be committed) and
    must eventually succeed once ``pre_commit`` did: a failing commit fails the job, which
    retries it after the restart.

    Example:

    >>> class ListSink(TwoPhaseCommitSink):
    ...     committed: list = []
    ...     def begin_transaction(self): return []
    ...     def write(self, txn, batch): txn.extend(batch.values)
    ...     def pre_commit(self, txn): pass
    ...     def commit(self, txn): ListSink.committed.extend(txn)
    ...     def abort(self, txn): txn.clear()
    >>> writer = ListSink().create_writer(SinkContext("sink", 0, 1))
    >>> writer.write(Batch([1, 2]))
    >>> ListSink.committed
    []
    >>> writer.flush()  # end of input, without checkpoints
    >>> ListSink.committed
    [1, 2]
    """

    def open(self, context: SinkContext) -> None:  # noqa: B027 - optional hook
        """Called once per subtask, before any transaction is begun or recovered."""

    @abstractmethod
    def begin_transaction(self) -> Any:
        """A new, empty transaction."""

    @abstractmethod
    def write(self, transaction: Any, batch: Batch) -> None:
        """Adds the records of ``batch`` (``batch.values``) to ``transaction``."""

    @abstractmethod
    def pre_commit(self, transaction: Any) -> None:
        """Makes ``transaction`` durable but not visible; no record is added to it afterwards."""

    @abstractmethod
    def commit(self, transaction: Any) -> None:
        """Makes a pre-committed transaction visible (idempotent)."""

    @abstractmethod
    def abort(self, transaction: Any) -> None:
        """Discards ``transaction``."""

    def recover_and_commit(self, transaction: Any) -> None:
        """After a restore: commits a transaction of a completed checkpoint, which may already
        be committed."""
        self.commit(transaction)

    def recover_and_abort(self, transaction: Any) -> None:
        """After a restore: discards the transaction that was open at the checkpoint."""
        self.abort(transaction)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases what ``open`` acquired, once nothing is left to commit."""

    def result(self) -> Any:
        """A picklable value handed to the driver when the job finishes."""
        return None

    def create_writer(self, context: SinkContext) -> SinkWriter:
        """The writer used without checkpoints: one transaction, committed at end of input."""
        return _CommitAtEndWriter(self, context)


class _CommitAtEndWriter(SinkWriter):
    def __init__(self, sink: TwoPhaseCommitSink, context: SinkContext):
        self.sink = sink
        sink.open(context)
        self.transaction: Any = sink.begin_transaction()

    def write(self, batch: Batch) -> None:
        self.sink.write(self.transaction, batch)

    def flush(self) -> None:
        if self.transaction is None:
            return
        self.sink.pre_commit(self.transaction)
        self.sink.commit(self.transaction)
        self.transaction = None

    def close(self) -> None:
        transaction, self.transaction = self.transaction, None
        try:
            if transaction is not None:
                self.sink.abort(transaction)
        finally:
            self.sink.close()

    def result(self) -> Any:
        return self.sink.result()


@dataclass
class TransactionState:
    """One subtask's entry in operator list state: the open transaction (None after the final
    snapshot) and the pre-committed ones with their checkpoint ids, oldest first."""

    current: Any
    pending: list[tuple[int, Any]]


class TwoPhaseCommitSinkOperator(SinkOperator):
    """Drives a :class:`TwoPhaseCommitSink` from the checkpoint hooks (see the module docstring);
    without checkpointing it is a plain :class:`SinkOperator` over ``sink.create_writer``."""

    def __init__(self, name: str, sink: TwoPhaseCommitSink):
        super().__init__(name, sink)
        self.sink: TwoPhaseCommitSink = sink
        self.transactional = False
        self._current: Any = None
        self._pending: dict[int, Any] = {}  # checkpoint id -> pre-committed transaction, in order
        self._sink_open = False
        self._closed = False

    def open(self) -> None:
        ctx = self.ctx
        assert ctx is not None
        self.transactional = ctx.config.checkpoint.is_checkpointing_enabled()
        if not self.transactional:
            super().open()
            return
        self._call(self.sink.open, "open of the sink with context", self.sink_context())
        self._sink_open = True
        state = self.operator_state.get_list_state(_STATE_NAME)
        for entry in state.get():
            for cid, transaction in entry.pending:
                what = f"recover_and_commit ({_checkpoint(cid)}) of transaction"
                self._call(self.sink.recover_and_commit, what, transaction)
            if entry.current is not None:
                what = "recover_and_abort of transaction"
                self._call(self.sink.recover_and_abort, what, entry.current)
        state.clear()
        self._current = self._call(self.sink.begin_transaction, "begin_transaction")

    def process_batch(self, batch: Batch) -> None:
        if not self.transactional:
            super().process_batch(batch)
            return
        try:
            self.sink.write(self._current, batch)
        except Exception as exc:
            first = batch.values[0] if batch.values else None
            raise self.user_error(exc, first, "a batch starting with record") from exc

    def finish(self) -> None:
        if not self.transactional:
            super().finish()
        # with checkpoints the final snapshot pre-commits the last transaction

    def snapshot_state(self, checkpoint_id: int) -> OperatorSnapshot:
        if self.transactional:
            transaction = self._current
            if transaction is not None:
                what = f"pre_commit ({_checkpoint(checkpoint_id)}) of transaction"
                self._call(self.sink.pre_commit, what, transaction)  # failing: close aborts it
                self._pending[checkpoint_id] = transaction
                self._current = None
            if checkpoint_id != FINAL_CHECKPOINT_ID:  # no record follows the final snapshot
                self._current = self._call(self.sink.begin_transaction, "begin_transaction")
            entry = TransactionState(self._current, list(self._pending.items()))
            self.operator_state.get_list_state(_STATE_NAME).update([entry])
        return super().snapshot_state(checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Commits every transaction pending for a checkpoint up to ``checkpoint_id``. One that
        fails to commit stays pending (the next notification and snapshot still have it); the
        first error is raised once the others are committed."""
        if not self.transactional:
            super().notify_checkpoint_complete(checkpoint_id)
            return
        first: tuple[Exception, Exception] | None = None
        for cid in [c for c in self._pending if c <= checkpoint_id]:
            transaction = self._pending[cid]
            try:
                self.sink.commit(transaction)
            except Exception as exc:
                if first is None:
                    what = f"commit ({_checkpoint(cid)}) of transaction"
                    first = (self.user_error(exc, transaction, what), exc)
                continue
            del self._pending[cid]
        self._close_sink_when_done()
        if first is not None:
            raise first[0] from first[1]

    def close(self) -> None:
        """Aborts the open transaction; the sink closes now, or once the pending transactions
        are committed. After a failure the task ignores errors raised here."""
        if not self.transactional:
            super().close()
            return
        self._closed = True
        transaction, self._current = self._current, None
        error: BaseException | None = None
        if transaction is not None:
            try:
                self._call(self.sink.abort, "abort at close of transaction", transaction)
            except Exception as exc:
                error = exc
        try:
            self._close_sink_when_done()
        except Exception:
            if error is None:
                raise
        if error is not None:
            raise error

    def result(self) -> Any:
        if not self.transactional:
            return super().result()
        return self.sink.result()

    def _close_sink_when_done(self) -> None:
        if self._closed and self._sink_open and not self._pending:
            self._sink_open = False
            self._call(self.sink.close, "close of the sink")

    def _call(self, method: Callable[..., Any], what: str, *args: Any) -> Any:
        """Calls a method of the user's sink; an error names the operator, the subtask, the
        method and its argument (the transaction)."""
        try:
            return method(*args)
        except Exception as exc:
            raise self.user_error(exc, args[0] if args else None, what) from exc


def _checkpoint(checkpoint_id: int) -> str:
    if checkpoint_id == FINAL_CHECKPOINT_ID:
        return "final checkpoint"
    return f"checkpoint {checkpoint_id}"
