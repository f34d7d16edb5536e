"""Internal: what the job page of ``raystream ui`` shows, as one JSON-able dict (no Ray).

Built from what any client can read — the job master's ``describe()`` (with the plan's graph),
``metrics()`` and ``checkpoint_stats()`` — and the previous sample for rates. Per task (chain),
summed or combined over its subtasks: records in (its head operator) and out (its last
operator) with rates, back-pressure (the highest share of any subtask, as Flink's UI shows
a vertex by its most back-pressured subtask), the lowest watermark and its lag, queued input;
per subtask the same; per operator its counts; and the checkpoint history.
"""

from __future__ import annotations

from typing import Any

from raystream.core.time import MAX_TS
from raystream.observe.graph import layout
from raystream.observe.samples import JobSample, Rates, rates, watermark_lag_ms


def _event_time(ts: int | None) -> int | str | None:
    """A watermark for JSON: ``"end"`` once the input ended (``MAX_TS`` is no JSON number a
    browser can hold exactly)."""
    return "end" if ts is not None and ts >= MAX_TS else ts


def _sum(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def job_view(
    desc: dict[str, Any],
    sample: JobSample,
    prev: JobSample | None,
    checkpoints: dict[str, Any],
) -> dict[str, Any]:
    graph = layout(desc["graph"])
    op_rates, task_rates = rates(prev, sample)
    ops_by_task: dict[tuple[int, int], dict[str, Any]] = {}
    for o in sample.operators:
        ops_by_task.setdefault((o.chain_id, o.subtask), {})[o.name] = o
    tasks_by_key = {t.key: t for t in sample.tasks}
    chains = []
    operators = []
    for node in graph["nodes"]:
        cid, names = node["id"], node["operators"]
        head, last = names[0], names[-1]
        subtasks: list[dict[str, Any]] = []
        for i in range(node["parallelism"]):
            t = tasks_by_key.get((cid, i))
            ops = ops_by_task.get((cid, i), {})
            h, z = ops.get(head), ops.get(last)
            hr: Rates = op_rates.get((cid, i, head), Rates())
            zr: Rates = op_rates.get((cid, i, last), Rates())
            tr: Rates = task_rates.get((cid, i), Rates())
            wm = None if t is None else t.watermark
            subtasks.append(
                {
                    "subtask": i,
                    "state": "UNKNOWN" if t is None else t.state,
                    "records_in": None if h is None else int(h.counters.get("records_in", 0)),
                    "records_out": None if z is None else int(z.counters.get("records_out", 0)),
                    "records_in_per_s": hr.records_in,
                    "records_out_per_s": zr.records_out,
                    "backpressure": tr.backpressure,
                    "watermark": _event_time(wm),
                    "watermark_lag_ms": watermark_lag_ms(wm, sample.at_ms),
                    "queued_in": None if t is None else t.queued_in,
                    "bytes_in": None if t is None else t.counters.get("bytes_in"),
                    "bytes_out": None if t is None else t.counters.get("bytes_sent"),
                }
            )
        marks = [
            None if t is None else t.watermark
            for t in (tasks_by_key.get((cid, i)) for i in range(node["parallelism"]))
        ]
        low = (
            None
            if not marks or any(m is None for m in marks)
            else min(m for m in marks if m is not None)
        )
        bps = [s["backpressure"] for s in subtasks if s["backpressure"] is not None]
        states: dict[str, int] = {}
        for s in subtasks:
            states[s["state"]] = states.get(s["state"], 0) + 1
        chains.append(
            {
                "id": cid,
                "name": node["name"],
                "parallelism": node["parallelism"],
                "operators": names,
                "source": node["source"],
                "states": states,
                "records_in": _sum([s["records_in"] for s in subtasks]),
                "records_out": _sum([s["records_out"] for s in subtasks]),
                "records_in_per_s": _sum([s["records_in_per_s"] for s in subtasks]),
                "records_out_per_s": _sum([s["records_out_per_s"] for s in subtasks]),
                "backpressure": max(bps) if bps else None,
                "watermark": _event_time(low),
                "watermark_lag_ms": watermark_lag_ms(low, sample.at_ms),
                "queued_in": _sum([s["queued_in"] for s in subtasks]),
                "subtasks": subtasks,
            }
        )
        for name in names:
            per = [ops_by_task.get((cid, i), {}).get(name) for i in range(node["parallelism"])]
            found = [o for o in per if o is not None]
            counters: dict[str, float] = {}
            for o in found:
                for k, v in o.counters.items():
                    counters[k] = counters.get(k, 0.0) + v
            operators.append(
                {
                    "chain_id": cid,
                    "name": name,
                    "records_in": int(counters["records_in"]) if "records_in" in counters else None,
                    "records_out": int(counters["records_out"])
                    if "records_out" in counters
                    else None,
                    "records_in_per_s": _sum(
                        [op_rates.get((cid, i, name), Rates()).records_in for i in range(len(per))]
                    ),
                    "records_out_per_s": _sum(
                        [op_rates.get((cid, i, name), Rates()).records_out for i in range(len(per))]
                    ),
                    "late_records_dropped": int(counters.get("num_late_records_dropped", 0)),
                    "pending_records": _sum(
                        [
                            None if o.pending_records is None else float(o.pending_records)
                            for o in found
                        ]
                    ),
                }
            )
    history = list(checkpoints.get("history") or [])
    return {
        "job": {
            "id": desc["job_id"],
            "name": desc["job_name"],
            "status": sample.status or desc["status"],
            "detached": desc.get("detached", False),
            "start_time_ms": desc.get("start_time_ms"),
            "end_time_ms": desc.get("end_time_ms"),
            "restarts": sample.restarts,
            "checkpointing": desc.get("checkpointing", False),
        },
        "sampled_at_ms": sample.at_ms,
        "graph": graph,
        "chains": chains,
        "operators": operators,
        "unanswered": list(sample.unanswered),
        "checkpoints": {
            "completed": checkpoints.get("completed"),
            "failed": checkpoints.get("failed"),
            "in_progress": checkpoints.get("in_progress"),
            "last": checkpoints.get("last_completed"),
            "history": sorted(history, key=lambda c: -c["checkpoint_id"]),  # newest first
        },
    }
