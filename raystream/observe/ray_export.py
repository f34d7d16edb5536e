"""Internal: a job's metrics exported through Ray's metrics (``ray.util.metrics``), so that the
per-node Prometheus endpoint of Ray's metrics agent and the Ray dashboard show them.

The job master runs :func:`export_loop`: every ``metrics_interval_ms`` it takes the same numbers
``JobClient.metrics()`` returns, turns them into samples (:mod:`raystream.observe.samples`) and
records them, and once more when the job ended (the final counts of a bounded job). Tasks do
nothing for it beyond the counters they keep anyway (per batch and per message), and no series
names an actor: every series is tagged with the job's id and name, the task (chain), the
operator and the subtask, so a restarted task continues its series and a task actor that serves
another job later starts new ones.

Ray prefixes every name with ``ray_`` and adds ``_total`` to counters in Prometheus:
``ray_raystream_operator_records_in_total{job_name="...",operator="Map",subtask="0",...}``.
Counters only grow: after a restart (new tasks count from zero) the exporter adds what the new
tasks count, so ``rate()`` stays right; the job's own ``metrics()`` shows the current attempt's
counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from ray.util import metrics as ray_metrics

from raystream.observe.samples import (
    CounterTracker,
    JobSample,
    parse,
    rates,
    watermark_lag_ms,
)

log = logging.getLogger(__name__)

JOB_TAGS = ("job_id", "job_name")
TASK_TAGS = (*JOB_TAGS, "task", "subtask")
OPERATOR_TAGS = (*TASK_TAGS, "operator")

#: (name, description, tags) of every series; counters end in ``_total`` in Prometheus
COUNTERS = {
    "raystream_operator_records_in": ("Records an operator took in.", OPERATOR_TAGS),
    "raystream_operator_records_out": ("Records an operator emitted.", OPERATOR_TAGS),
    "raystream_operator_late_records_dropped": (
        "Records dropped because they came after the watermark had passed their window.",
        OPERATOR_TAGS,
    ),
    "raystream_operator_records_skipped": (
        "Records the operator's error policy skipped.",
        OPERATOR_TAGS,
    ),
    "raystream_operator_records_dead_lettered": (
        "Records the operator's error policy sent to its dead-letter output.",
        OPERATOR_TAGS,
    ),
    "raystream_task_bytes_in": ("Bytes of channel messages a task took in.", TASK_TAGS),
    "raystream_task_bytes_out": ("Bytes of channel messages a task sent.", TASK_TAGS),
    "raystream_task_backpressured_seconds": (
        "Seconds a task's output waited for credit from its consumers (back-pressure).",
        TASK_TAGS,
    ),
}
GAUGES = {
    "raystream_operator_records_in_per_second": (
        "Records an operator took in per second, over the last export interval.",
        OPERATOR_TAGS,
    ),
    "raystream_operator_records_out_per_second": (
        "Records an operator emitted per second, over the last export interval.",
        OPERATOR_TAGS,
    ),
    "raystream_source_pending_records": (
        "Records a source has yet to read, where it knows (Kafka: end offset minus position).",
        OPERATOR_TAGS,
    ),
    "raystream_task_backpressure_ratio": (
        "Share of the last export interval a task's output was back-pressured (0..1).",
        TASK_TAGS,
    ),
    "raystream_task_input_watermark_ms": (
        "A task's current input watermark, in ms since the epoch.",
        TASK_TAGS,
    ),
    "raystream_task_watermark_lag_ms": (
        "Processing time minus a task's input watermark, in ms.",
        TASK_TAGS,
    ),
    "raystream_task_queued_messages": (
        "Channel messages waiting in a task's input gate.",
        TASK_TAGS,
    ),
    "raystream_task_checkpoint_alignment_ms": (
        "How long a task's last checkpoint alignment took (first barrier to last), in ms.",
        TASK_TAGS,
    ),
    "raystream_task_checkpoint_sync_ms_max": (
        "The longest synchronous checkpoint pause of a task, in ms.",
        TASK_TAGS,
    ),
    "raystream_job_last_checkpoint_duration_ms": (
        "Duration of the job's last completed checkpoint, in ms.",
        JOB_TAGS,
    ),
    "raystream_job_last_checkpoint_size_bytes": (
        "Size of the job's last completed checkpoint, in bytes.",
        JOB_TAGS,
    ),
    "raystream_job_running": ("1 while the job runs, 0 once it ended.", JOB_TAGS),
    # gauges, not counters: a job that never restarted shows 0 (Ray has no counter at 0)
    "raystream_job_restarts": ("Times the job was restarted after a failure.", JOB_TAGS),
    "raystream_job_checkpoints_completed": ("Checkpoints the job completed.", JOB_TAGS),
    "raystream_job_checkpoints_failed": ("Checkpoints of the job that failed.", JOB_TAGS),
}
#: operator counters by the key tasks report them under
_OPERATOR_COUNTER_OF = {
    "records_in": "raystream_operator_records_in",
    "records_out": "raystream_operator_records_out",
    "num_late_records_dropped": "raystream_operator_late_records_dropped",
    "records_skipped": "raystream_operator_records_skipped",
    "records_dead_lettered": "raystream_operator_records_dead_lettered",
}
_TASK_COUNTER_OF = {
    "bytes_in": "raystream_task_bytes_in",
    "bytes_sent": "raystream_task_bytes_out",
    "backpressured_s": "raystream_task_backpressured_seconds",
}


class Sink(Protocol):
    """Where values go: Ray's metrics in a job master, a recording fake in tests."""

    def inc(self, name: str, value: float, tags: dict[str, str]) -> None: ...

    def set(self, name: str, value: float, tags: dict[str, str]) -> None: ...


class RayMetricsSink:
    """``ray.util.metrics`` objects, created once per process and name."""

    _made: dict[str, Any] = {}

    def _metric(self, name: str) -> Any:
        metric = self._made.get(name)
        if metric is None:
            if name in COUNTERS:
                desc, tags = COUNTERS[name]
                metric = ray_metrics.Counter(name, description=desc, tag_keys=tags)
            else:
                desc, tags = GAUGES[name]
                metric = ray_metrics.Gauge(name, description=desc, tag_keys=tags)
            self._made[name] = metric
        return metric

    def inc(self, name: str, value: float, tags: dict[str, str]) -> None:
        self._metric(name).inc(value, tags=tags)

    def set(self, name: str, value: float, tags: dict[str, str]) -> None:
        self._metric(name).set(value, tags=tags)


class _GaugeMemory:
    """Passes gauge values on and remembers the last update's, so that they can be recorded
    again: Ray drops a gauge series that was not recorded for two of its report intervals."""

    def __init__(self, sink: Sink):
        self.sink = sink
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def set(self, name: str, value: float, tags: dict[str, str]) -> None:
        self.values[(name, tuple(sorted(tags.items())))] = value
        self.sink.set(name, value, tags)


class JobMetricsExporter:
    """Records one job's samples into a :class:`Sink`: counters by their increase since the
    previous sample, gauges as they are (rates over the interval between samples).

    Gauges describe the job as it is: once it ended, only the job's own (``running`` 0,
    restarts, checkpoints) are recorded; the tasks' and the rates age out of Ray's metrics."""

    def __init__(self, job_id: str, job_name: str, sink: Sink):
        self.job = {"job_id": job_id, "job_name": job_name}
        self.sink = sink
        self._counters = CounterTracker()
        self._prev: JobSample | None = None
        self._gauges = _GaugeMemory(sink)

    def refresh(self) -> None:
        """Records the gauges of the last update again (their values did not change)."""
        for (name, tags), value in self._gauges.values.items():
            self.sink.set(name, value, dict(tags))

    def _inc(self, name: str, key: Any, value: float, tags: dict[str, str]) -> None:
        inc = self._counters.add((name, key), value)
        if inc > 0:  # Ray counters refuse 0
            self.sink.inc(name, inc, tags)

    def update(
        self, sample: JobSample, checkpoints: dict[str, Any], chains: dict[int, str]
    ) -> None:
        """``checkpoints``: the job master's ``checkpoint_stats()``; ``chains``: chain id →
        name (the ``task`` tag)."""
        ended = sample.status in ("FINISHED", "FAILED", "CANCELED")
        op_rates, task_rates = ({}, {}) if ended else rates(self._prev, sample)
        if self._prev is not None and sample.restarts != self._prev.restarts:
            self._counters.forget()
        gauges = self._gauges
        gauges.values = {}
        for o in sample.operators:
            tags = dict(
                self.job,
                task=chains.get(o.chain_id, str(o.chain_id)),
                subtask=str(o.subtask),
                operator=o.name,
            )
            for key, name in _OPERATOR_COUNTER_OF.items():
                if key in o.counters:
                    self._inc(name, o.key, o.counters[key], tags)
            r = op_rates.get(o.key)
            if r is not None and r.records_in is not None:
                gauges.set("raystream_operator_records_in_per_second", r.records_in, tags)
                gauges.set("raystream_operator_records_out_per_second", r.records_out or 0.0, tags)
            if o.pending_records is not None:
                gauges.set("raystream_source_pending_records", o.pending_records, tags)
        for t in sample.tasks:
            tags = dict(self.job, task=chains.get(t.chain_id, t.chain), subtask=str(t.subtask))
            if not t.live:  # a finished job's task: its operators' final counts only
                continue
            for key, name in _TASK_COUNTER_OF.items():
                if key in t.counters:
                    self._inc(name, t.key, t.counters[key], tags)
            tr = task_rates.get(t.key)
            if tr is not None and tr.backpressure is not None:
                gauges.set("raystream_task_backpressure_ratio", tr.backpressure, tags)
            if t.queued_in is not None:
                gauges.set("raystream_task_queued_messages", t.queued_in, tags)
            lag = watermark_lag_ms(t.watermark, sample.at_ms)
            if lag is not None and t.watermark is not None:
                gauges.set("raystream_task_input_watermark_ms", t.watermark, tags)
                gauges.set("raystream_task_watermark_lag_ms", lag, tags)
            if "alignment_ms_last" in t.checkpoints:
                gauges.set(
                    "raystream_task_checkpoint_alignment_ms",
                    t.checkpoints["alignment_ms_last"],
                    tags,
                )
            if "sync_ms_max" in t.checkpoints:
                gauges.set(
                    "raystream_task_checkpoint_sync_ms_max", t.checkpoints["sync_ms_max"], tags
                )
        job = dict(self.job)
        gauges.set("raystream_job_restarts", sample.restarts, job)
        if "completed" in checkpoints:
            gauges.set("raystream_job_checkpoints_completed", checkpoints["completed"], job)
            gauges.set("raystream_job_checkpoints_failed", checkpoints["failed"], job)
            last = checkpoints.get("last_completed")
            if last:
                gauges.set("raystream_job_last_checkpoint_duration_ms", last["duration_ms"], job)
                gauges.set("raystream_job_last_checkpoint_size_bytes", last["size_bytes"], job)
        gauges.set("raystream_job_running", 0.0 if ended else 1.0, job)
        self._prev = sample


async def export_loop(job_master: Any, interval_s: float, sink: Sink | None = None) -> None:
    """Runs in the job master's event loop: samples the job every ``interval_s`` until it
    ended and its final numbers were recorded. A detached job's job master stays for the
    job's retention time: until shortly before it goes, the job's gauges are recorded again
    every interval (Ray forgets gauges that are not). Reads only what clients read
    (``describe``, ``metrics``, ``checkpoint_stats``, ``wait``)."""
    try:
        desc = await job_master.describe()
        chains = {t["id"]: t["name"] for t in desc["tasks"]}
        exporter = JobMetricsExporter(desc["job_id"], desc["job_name"], sink or RayMetricsSink())
        while True:
            metrics = await job_master.metrics()
            checkpoints = await job_master.checkpoint_stats()
            sample = parse(metrics, time.monotonic(), int(time.time() * 1000))
            exporter.update(sample, checkpoints, chains)
            if sample.status in ("FINISHED", "FAILED", "CANCELED"):
                break
            # the job master's own wait: returns at once when the job ends, so the final
            # numbers are recorded before a driver that canceled or collected it goes
            await job_master.wait(interval_s)
        # a job master that is not detached ends with its driver, any time now; stopping
        # before it goes leaves no task pending in a dying event loop
        retention_s = (desc.get("retention_ms") or 0) / 1000.0
        until = time.monotonic() + retention_s - 2 * interval_s
        while time.monotonic() + interval_s < until:
            await asyncio.sleep(interval_s)
            exporter.refresh()
    except asyncio.CancelledError:
        raise
    except Exception:  # metrics must never take a job down
        log.warning("metrics export of a job stopped", exc_info=True)


def start_metrics_export(job_master: Any, config: Any) -> asyncio.Task | None:
    """Starts :func:`export_loop` on the running event loop (None if the job's
    ``metrics_interval_ms`` is 0). Keep the task: the loop only holds weak references."""
    interval_ms = getattr(config, "metrics_interval_ms", 0) or 0
    if interval_ms <= 0:
        return None
    return asyncio.get_running_loop().create_task(export_loop(job_master, interval_ms / 1000.0))
