"""Internal: time-bounded steps of the task loop.

A step of a task — a source reading and emitting records through its chain, or a task pushing
part of a received batch through its chain — runs without giving the actor's event loop a
chance to answer control calls (checkpoint triggers, metrics, savepoints, cancel, pings). With a
fixed step of thousands of records a slow user function holds the task for seconds. A
:class:`StepSizer` picks the records of the next step from the measured cost per record of the
previous ones, so that a step takes about ``target_s``:

- one clock reading per step, never per record: in a fast chain the step stays at the maximum
  and the cost is one ``perf_counter`` pair per batch;
- it starts small (``initial`` records) because nothing is known about the chain yet, and grows
  at most by doubling per step, so a step overshoots the target at most about twice;
- it shrinks at once when a step was too slow.
"""

from __future__ import annotations

#: a step of the task loop should take about this long (seconds)
STEP_TARGET_S = 0.05
#: records of the first step, before the cost per record was measured
STEP_INITIAL_RECORDS = 16


class StepSizer:
    """Records per step, from the measured duration of earlier steps."""

    __slots__ = ("max_records", "target_s", "size")

    def __init__(
        self,
        max_records: int,
        target_s: float = STEP_TARGET_S,
        initial: int = STEP_INITIAL_RECORDS,
    ):
        if max_records < 1:
            raise ValueError(f"a step needs at least one record, got max_records={max_records}")
        if target_s <= 0:
            raise ValueError(f"the step target must be > 0 s, got {target_s}")
        self.max_records = max_records
        self.target_s = target_s
        self.size = max(1, min(initial, max_records))

    def observe(self, records: int, elapsed_s: float) -> int:
        """A step of ``records`` records took ``elapsed_s`` seconds: returns the next size."""
        if records <= 0:
            return self.size
        grown = min(self.max_records, 2 * self.size)
        if elapsed_s <= 0.0:
            self.size = grown
            return grown
        fit = int(self.target_s * records / elapsed_s)  # records that take about target_s
        self.size = max(1, min(grown, fit))
        return self.size
