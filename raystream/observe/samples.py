"""Internal: what a job's metrics say, as plain values (no Ray).

A job master's ``metrics()`` answer (live numbers of every task, or the final numbers of a
finished job) becomes a :class:`JobSample`: one :class:`TaskSample` per subtask, one
:class:`OperatorSample` per operator and subtask. Tasks count per batch and per message, never
per record; everything derived here — rates, back-pressure ratios, watermark lag, counter
increments for Prometheus — compares two samples and the time between them, so it costs nothing
on the record path. Times are passed in (``at_s`` monotonic, ``at_ms`` wall clock): tests
choose them.

Series are keyed by chain id, subtask and operator name, never by actor: a restarted task (or
a pooled actor serving another job) continues the same series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raystream.core.time import MAX_TS, MIN_TS

#: the counters of an operator that are exported and summed per operator
OPERATOR_COUNTERS = (
    "records_in",
    "records_out",
    "num_late_records_dropped",
    "records_skipped",
    "records_dead_lettered",
)
#: the counters of a task (its channels), per subtask
TASK_COUNTERS = ("bytes_in", "bytes_sent", "batches_sent", "records_sent", "backpressured_s")

TaskKey = tuple[int, int]  # (chain id, subtask)
OperatorKey = tuple[int, int, str]  # (chain id, subtask, operator name)


@dataclass(frozen=True)
class OperatorSample:
    chain_id: int
    subtask: int
    name: str
    counters: dict[str, float]
    #: records the source has yet to read, where it knows (Kafka: end offset − position)
    pending_records: int | None = None

    @property
    def key(self) -> OperatorKey:
        return (self.chain_id, self.subtask, self.name)


@dataclass(frozen=True)
class TaskSample:
    chain_id: int
    chain: str
    subtask: int
    state: str
    #: the task's current input watermark (None: none yet; ``MAX_TS`` once its input ended)
    watermark: int | None = None
    queued_in: int | None = None
    counters: dict[str, float] = field(default_factory=dict)
    checkpoints: dict[str, float] = field(default_factory=dict)
    #: False for a finished job's task: only its operators' counts are known
    live: bool = True

    @property
    def key(self) -> TaskKey:
        return (self.chain_id, self.subtask)


@dataclass(frozen=True)
class JobSample:
    job_id: str
    status: str
    restarts: int
    at_s: float
    at_ms: int
    tasks: list[TaskSample]
    operators: list[OperatorSample]
    #: tasks that did not answer (their error), not in ``tasks``
    unanswered: list[str] = field(default_factory=list)


def parse(metrics: dict[str, Any], at_s: float, at_ms: int) -> JobSample:
    """A ``JobMaster.metrics()`` answer as a :class:`JobSample` taken at ``at_s``/``at_ms``."""
    tasks: list[TaskSample] = []
    ops: list[OperatorSample] = []
    unanswered: list[str] = []
    for t in metrics.get("tasks", []):
        if "error" in t or "chain_id" not in t:
            unanswered.append(str(t.get("error", t.get("task", "?"))))
            continue
        cid, sub = int(t["chain_id"]), int(t["subtask"])
        wm = t.get("watermark")
        tasks.append(
            TaskSample(
                chain_id=cid,
                chain=str(t.get("chain", "")),
                subtask=sub,
                state=str(t.get("state", "")),
                watermark=None if wm is None or wm <= MIN_TS else int(wm),
                queued_in=t.get("queued_in"),
                counters={k: float(t[k]) for k in TASK_COUNTERS if k in t},
                checkpoints={
                    k: float(v)
                    for k, v in (t.get("checkpoints") or {}).items()
                    if isinstance(v, (int, float))
                },
                live="queued_in" in t,
            )
        )
        for name, m in (t.get("operators") or {}).items():
            pending = m.get("pending_records")
            ops.append(
                OperatorSample(
                    chain_id=cid,
                    subtask=sub,
                    name=name,
                    counters={k: float(m[k]) for k in OPERATOR_COUNTERS if k in m},
                    pending_records=None if pending is None else int(pending),
                )
            )
    return JobSample(
        job_id=str(metrics.get("job_id", "")),
        status=str(metrics.get("status", "")),
        restarts=int(metrics.get("restarts", 0)),
        at_s=at_s,
        at_ms=at_ms,
        tasks=tasks,
        operators=ops,
        unanswered=unanswered,
    )


def increase(before: float | None, now: float) -> float:
    """How much a counter grew: a counter below its previous value was reset (a restart deploys
    new tasks that count from 0), so all of it is new."""
    if before is None or now < before:
        return now
    return now - before


def per_second(before: float | None, now: float, seconds: float) -> float | None:
    """The rate of a counter over ``seconds`` (None when there is no interval to divide by)."""
    if seconds <= 0:
        return None
    return increase(before, now) / seconds


@dataclass(frozen=True)
class Rates:
    """Per second between two samples of one task or operator."""

    records_in: float | None = None
    records_out: float | None = None
    bytes_in: float | None = None
    bytes_out: float | None = None
    #: share of the interval the task's output waited for credit (0..1; Flink's
    #: backPressuredTimeMsPerSecond / 1000)
    backpressure: float | None = None


def rates(
    prev: JobSample | None, cur: JobSample
) -> tuple[dict[OperatorKey, Rates], dict[TaskKey, Rates]]:
    """Rates of every operator and task of ``cur`` since ``prev`` (the previous sample of the
    same job). Nothing when there is no previous sample or no time passed; a finished job's
    tasks have none (it stopped)."""
    if prev is None or cur.at_s <= prev.at_s:
        return {}, {}
    dt = cur.at_s - prev.at_s
    before_ops = {o.key: o for o in prev.operators}
    op_rates: dict[OperatorKey, Rates] = {}
    for o in cur.operators:
        b = before_ops.get(o.key)
        bc = b.counters if b is not None else {}
        op_rates[o.key] = Rates(
            records_in=per_second(bc.get("records_in"), o.counters.get("records_in", 0.0), dt),
            records_out=per_second(bc.get("records_out"), o.counters.get("records_out", 0.0), dt),
        )
    before_tasks = {t.key: t for t in prev.tasks if t.live}
    task_rates: dict[TaskKey, Rates] = {}
    for t in cur.tasks:
        bt = before_tasks.get(t.key)
        if not t.live or bt is None:
            continue
        bc, c = bt.counters, t.counters
        bp = per_second(bc.get("backpressured_s"), c.get("backpressured_s", 0.0), dt)
        task_rates[t.key] = Rates(
            bytes_in=per_second(bc.get("bytes_in"), c.get("bytes_in", 0.0), dt),
            bytes_out=per_second(bc.get("bytes_sent"), c.get("bytes_sent", 0.0), dt),
            backpressure=None if bp is None else min(1.0, bp),
        )
    return op_rates, task_rates


def watermark_lag_ms(watermark: int | None, now_ms: int) -> int | None:
    """How far event time trails processing time at this task (None: no watermark yet, or
    its input ended)."""
    if watermark is None or watermark >= MAX_TS:
        return None
    return now_ms - watermark


def job_watermark(sample: JobSample, sink_chains: set[int]) -> int | None:
    """Event time the whole job has reached: the lowest watermark of the tasks of the last
    chains (``sink_chains``: those no edge leaves); None while any of them has none. A
    finished job has reached the end (``MAX_TS``)."""
    if sample.status == "FINISHED":
        return MAX_TS
    marks = [t.watermark for t in sample.tasks if t.chain_id in sink_chains and t.live]
    if not marks or any(m is None for m in marks):
        return None
    return min(m for m in marks if m is not None)


def source_records_read(sample: JobSample, source_chains: set[int], heads: dict[int, str]) -> int:
    """Records the job's sources have read so far: the input count of the head operator (the
    source; ``heads``: chain id → its first operator) of every source chain's subtasks."""
    total = 0.0
    for o in sample.operators:
        if o.chain_id in source_chains and heads.get(o.chain_id) == o.name:
            total += o.counters.get("records_in", 0.0)
    return int(total)


class CounterTracker:
    """Turns counter readings into increments for a monotonic exporter (Prometheus counters):
    per series the last reading; a reading below it is a reset (a restart), so all of it is
    new. Series are whatever hashable keys the caller uses."""

    def __init__(self) -> None:
        self._last: dict[Any, float] = {}

    def add(self, key: Any, value: float) -> float:
        inc = increase(self._last.get(key), value)
        self._last[key] = value
        return inc

    def forget(self) -> None:
        """Every series starts over (the job restarted: its tasks are new, and one that
        already counted past its predecessor's last reading would otherwise lose that part)."""
        self._last.clear()
