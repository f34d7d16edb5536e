"""Error policies: what an operator does with a record its user code raises on.

``stream.map(parse).set_error_policy(ErrorPolicy.skip())`` keeps the job running past records
``parse`` cannot handle; ``ErrorPolicy.dead_letter(tag)`` also sends each such record, wrapped in
a :class:`DeadLetter`, to the operator's side output ``tag``; ``ErrorPolicy.fail()`` (the default)
fails the task with the record named, as without a policy. ``env.set_error_policy(...)`` sets the
default of every operator that supports policies. Skipped and dead-lettered records are counted
in the operator's metrics (``records_skipped``, ``records_dead_lettered``) and logged: never
silently dropped.

A policy covers exceptions raised by user code while processing one record (the function of
map/flat_map/filter/process, key selectors, timestamp assigners, keyed reduce and aggregations,
the key selector, window assigner and incremental reduce/aggregate of a window). Errors in
``open``/``close``, snapshots, timers, window functions at firing time and raystream's own errors
(``RaystreamError``) always fail the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raystream.api.functions import OutputTag

FAIL = "fail"
SKIP = "skip"
DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class ErrorPolicy:
    """What an operator does with a record its user code raises on (build one with
    :meth:`fail`, :meth:`skip` or :meth:`dead_letter`)."""

    kind: str = FAIL
    #: side output of dead letters (``dead_letter`` only)
    output_tag: OutputTag | None = None

    def __post_init__(self) -> None:
        if self.kind not in (FAIL, SKIP, DEAD_LETTER):
            raise ValueError(f"unknown error policy {self.kind!r}; use fail, skip or dead_letter")
        if (self.kind == DEAD_LETTER) != (self.output_tag is not None):
            raise ValueError("an OutputTag goes with ErrorPolicy.dead_letter(tag), and only there")

    @staticmethod
    def fail() -> ErrorPolicy:
        """The default: the task fails with the operator, subtask, record and traceback named
        (and the job restarts or ends as its restart strategy says)."""
        return ErrorPolicy(FAIL)

    @staticmethod
    def skip() -> ErrorPolicy:
        """Drop the record, count it (``records_skipped``) and log a warning."""
        return ErrorPolicy(SKIP)

    @staticmethod
    def dead_letter(output_tag: OutputTag) -> ErrorPolicy:
        """Send a :class:`DeadLetter` for the record to the side output ``output_tag`` (read it
        with ``get_side_output(output_tag)`` on the operator's stream), with the record's
        timestamp, and count it (``records_dead_lettered``)."""
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"dead_letter expects an OutputTag, got {output_tag!r}")
        return ErrorPolicy(DEAD_LETTER, output_tag)

    @property
    def is_fail(self) -> bool:
        return self.kind == FAIL

    def __repr__(self) -> str:
        if self.kind == DEAD_LETTER:
            return f"ErrorPolicy.dead_letter({self.output_tag!r})"
        return f"ErrorPolicy.{self.kind}()"


@dataclass(frozen=True)
class DeadLetter:
    """A record an operator's user code raised on, as its dead-letter side output carries it."""

    #: the record itself (not a copy: as the operator received it)
    record: Any
    #: the operator's name
    operator: str
    subtask: int
    #: the exception's type name, e.g. ``"ValueError"``
    exception_type: str
    #: ``str()`` of the exception
    message: str
    #: the formatted traceback of the exception
    traceback: str
    #: the record's event timestamp (None when the stream has none)
    timestamp: int | None = None
