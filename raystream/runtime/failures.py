"""Internal: the failure history of a job and the decision that a failure is deterministic.

Pure logic (no Ray): the job master turns every failure into a :class:`FailureEntry` (operator,
subtask, record, exception type and message of the root cause, not Ray's ``ray::Task.run()``
wrapper) and asks :meth:`FailureHistory.is_deterministic` before it consults the restart
strategy. The same user error on the same record on ``repeats`` consecutive attempts means a
restart from the same checkpoint would replay the same record into the same bug: the job fails
with that error instead of restarting until the strategy runs out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from raystream.errors import TaskError, UserFunctionError

#: the same error on the same record on this many consecutive attempts fails the job
DEFAULT_DETERMINISTIC_REPEATS = 3


@dataclass(frozen=True)
class FailureEntry:
    """One failure of a job, as ``JobClient.get_failure_history()`` reports it."""

    #: the attempt that failed (0 = the first deployment)
    attempt: int
    #: wall-clock time of the failure (ms since the epoch)
    timestamp_ms: int
    #: exception type of the root cause (the user's, e.g. ``ZeroDivisionError``)
    exception: str
    #: the first line of the root cause's message
    message: str
    operator: str | None = None
    subtask: int | None = None
    #: truncated repr of the record being processed, if the failure happened on one
    record: str | None = None
    #: "user": raised by user code or by state it wrote (a snapshot of unserializable state
    #: too); "system": lost actors, hung tasks, checkpoint failures
    kind: str = "system"

    def signature(self) -> tuple | None:
        """What must match for two failures to be "the same error on the same record"; None
        for system failures (actor deaths, hung tasks, checkpoint failures), which are never
        taken for deterministic ones."""
        if self.record is None and self.kind != "user":
            return None
        return (self.operator, self.subtask, self.exception, self.message, self.record)

    def summary(self) -> str:
        where = ""
        if self.operator is not None:
            where = f" in operator {self.operator!r}, subtask {self.subtask}"
        rec = f" on record {self.record}" if self.record is not None else ""
        return f"{self.exception}{where}{rec}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_failure(exc: BaseException, attempt: int, now_ms: int) -> FailureEntry:
    """The structured entry of a failure; ``exc`` is the root cause already unwrapped from
    Ray's task error."""
    if isinstance(exc, UserFunctionError):
        message = getattr(exc, "cause_message", None)
        if message is None:
            # "<Type> in operator 'x', subtask 0 while processing record <r>: <message>"
            message = _user_message(str(exc).split("\n", 1)[0], exc.record)
        return FailureEntry(
            attempt,
            now_ms,
            exc.cause_type or type(exc).__name__,
            message,
            exc.operator,
            exc.subtask,
            exc.record,
            "user",
        )
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    if isinstance(exc, TaskError):
        return FailureEntry(attempt, now_ms, type(exc).__name__, first, exc.operator, exc.subtask)
    return FailureEntry(attempt, now_ms, type(exc).__name__, first)


def _user_message(first_line: str, record: str | None) -> str:
    marker = f" {record}: " if record is not None else None
    if marker is not None and marker in first_line:
        return first_line.split(marker, 1)[1]
    return first_line


class FailureHistory:
    """Every failure of the job in order, and whether the latest ones repeat."""

    def __init__(self, repeats: int = DEFAULT_DETERMINISTIC_REPEATS):
        #: 0 turns detection off
        self.repeats = repeats
        self.entries: list[FailureEntry] = []

    def add(self, entry: FailureEntry) -> None:
        self.entries.append(entry)

    def consecutive_repeats(self) -> int:
        """How many of the latest failures, one per attempt, are the same error on the same
        record (0 if the latest one is not tied to a record)."""
        if not self.entries:
            return 0
        sig = self.entries[-1].signature()
        if sig is None:
            return 0
        n = 0
        attempt = self.entries[-1].attempt + 1
        for e in reversed(self.entries):
            if e.signature() != sig or e.attempt != attempt - 1:
                break
            n += 1
            attempt = e.attempt
        return n

    def is_deterministic(self) -> bool:
        return self.repeats > 0 and self.consecutive_repeats() >= self.repeats

    def as_dicts(self) -> list[dict[str, Any]]:
        return [e.as_dict() for e in self.entries]
