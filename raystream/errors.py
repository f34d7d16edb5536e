"""The exception tree of raystream, drawn once.

    RaystreamError
    ├── GraphError                 wrong API use, found while the job graph is built
    ├── SerializationError         a function or record that cannot be pickled
    │   └── StateSerializationError  a keyed-state value that cannot be pickled (state/backend.py)
    ├── InvalidKeyError            a key that cannot be placed on a key group
    │   └── KeyColumnError         a key column missing from a batch or holding nulls
    │                              (core/column_keys.py)
    ├── TaskError                  something failed inside a running task
    │   ├── UserFunctionError      a user function raised on a record
    │   └── ColumnError            a batch of a columnar stream an operator cannot take: schema
    │                              changed, column missing, nulls in a key or timestamp column
    │                              (operators/columnar/schema.py)
    ├── ChannelError               a gap, duplicate or reordering on a channel
    ├── JobExecutionError          the job ended FAILED or was canceled while awaited
    ├── ClusterUnreachableError    no Ray cluster at the address given (runtime/jobs.py)
    └── JobNotFoundError           no job (or several) of that name or id (runtime/jobs.py)

Every message says what happened, where (operator / subtask), and what was expected. User
exceptions are wrapped once, at the task boundary, with the original traceback in the message
(tracebacks do not survive pickling across actors).
"""

from __future__ import annotations

import reprlib

__all__ = [
    "RaystreamError",
    "GraphError",
    "SerializationError",
    "InvalidKeyError",
    "TaskError",
    "UserFunctionError",
    "ChannelError",
    "JobExecutionError",
    "record_repr",
]

_repr = reprlib.Repr()
_repr.maxstring = 200
_repr.maxother = 200
_repr.maxlist = 10
_repr.maxdict = 10
_repr.maxtuple = 10


def record_repr(record: object) -> str:
    """A truncated repr of a record, safe to put into an error message."""
    try:
        return _repr.repr(record)
    except Exception as exc:  # a user __repr__ may raise
        return f"<unprintable {type(record).__name__}: {exc!r}>"


class RaystreamError(Exception):
    """Root of every error raised by raystream."""

    def __reduce__(self):  # keep subclasses picklable whatever their __init__ takes
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls, args, state):
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class GraphError(RaystreamError):
    """The job graph is invalid (found before anything is scheduled)."""


class SerializationError(RaystreamError):
    """A user function, key or record cannot be serialized."""


class InvalidKeyError(RaystreamError):
    """A key cannot be placed on a key group (unsupported type, not hashable)."""


class TaskError(RaystreamError):
    """Something failed inside a running task."""

    def __init__(self, message: str, operator: str | None = None, subtask: int | None = None):
        super().__init__(message)
        self.operator = operator
        self.subtask = subtask


class UserFunctionError(TaskError):
    """A user function raised while processing a record (or a timer, or end of input)."""

    def __init__(
        self,
        message: str,
        operator: str | None = None,
        subtask: int | None = None,
        record: str | None = None,
        cause_type: str | None = None,
        cause_message: str | None = None,
    ):
        super().__init__(message, operator, subtask)
        self.record = record
        self.cause_type = cause_type
        #: first line of the user's exception message
        self.cause_message = cause_message


class ChannelError(RaystreamError):
    """A channel delivered a gap, a duplicate or an unknown message."""


class JobExecutionError(RaystreamError):
    """The job failed or was canceled; ``root_cause`` holds the task failure that ended it and
    ``failure_history`` every failure of the job (dicts with ``attempt``, ``timestamp_ms``,
    ``exception``, ``message``, ``operator``, ``subtask``, ``record``)."""

    def __init__(
        self, message: str, job_id: str | None = None, root_cause: BaseException | None = None
    ):
        super().__init__(message)
        self.job_id = job_id
        self.root_cause = root_cause
        self.failure_history: list[dict] = []
