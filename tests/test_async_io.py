"""Async I/O jobs on a local Ray: event time, capacity and error policies in one job, and a task
killed while its requests are in flight (exactly the failure-free results)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from raystream import (
    AsyncDataStream,
    DeadLetter,
    ErrorPolicy,
    OutputTag,
    RestartStrategies,
    StreamExecutionEnvironment,
    Time,
    TumblingEventTimeWindows,
    WatermarkStrategy,
)
from tests.chaos_jobs import Collector, PacedEvents, kill_task, wait_until

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.timeout(240)]

#: requests in flight in this process (one task actor = one subtask)
_IN_FLIGHT = [0]


def delay_s(seq: int) -> float:
    """A spread of latencies, so requests complete out of order."""
    return ((seq * 7919) % 7) / 1000.0


async def enrich(event: tuple) -> tuple:
    """``(key, seq, ts) -> (key, seq, seq * 3, requests in flight when it started)``; raises
    on every 97th record."""
    _IN_FLIGHT[0] += 1
    seen = _IN_FLIGHT[0]
    try:
        await asyncio.sleep(delay_s(event[1]))
        if event[1] % 97 == 13:
            raise LookupError(f"no profile for {event[1]}")
        return (event[0], event[1], event[1] * 3, seen)
    finally:
        _IN_FLIGHT[0] -= 1


def test_unordered_and_ordered_wait_keep_watermarks_capacity_and_dead_letters():
    n, capacity, window_ms = 2000, 8, 200
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    env.get_config().set_auto_watermark_interval(5)
    events = env.from_source(
        PacedEvents(n, rate=2500),
        WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda e: e[2]),
        "events",
    )
    dlq, late = OutputTag("dlq"), OutputTag("late")
    unordered = (
        AsyncDataStream.unordered_wait(events.rebalance(), enrich, 10_000, capacity=capacity)
        .set_parallelism(2)
        .set_error_policy(ErrorPolicy.dead_letter(dlq))
    )
    sums = (
        unordered.map(lambda r: (r[0], r[2], r[3]))
        .set_parallelism(2)
        .key_by(lambda r: r[0])
        .window(TumblingEventTimeWindows.of(Time.milliseconds(window_ms)))
        .side_output_late_data(late)
        .reduce(lambda a, b: (a[0], a[1] + b[1], max(a[2], b[2])))
        .set_parallelism(2)
    )
    ordered = AsyncDataStream.ordered_wait(events, enrich, 10_000, capacity=capacity)
    ordered = ordered.set_error_policy(ErrorPolicy.skip())
    out = (
        sums.map(lambda r: ("sum", r))
        .union(
            sums.get_side_output(late).map(lambda r: ("late", r)),
            unordered.get_side_output(dlq).map(lambda d: ("dlq", d)),
            ordered.map(lambda r: ("ordered", r[1])),
        )
        .execute_and_collect("async-event-time")
    )
    got: dict[str, list] = {}
    for kind, value in out:
        got.setdefault(kind, []).append(value)

    bad = {s for s in range(n) if s % 97 == 13}
    assert "late" not in got  # no result overtook the watermark that followed its record
    expected: Counter = Counter()
    for s in range(n):
        if s not in bad:
            expected[(s % 10, s * 10 // window_ms)] += s * 3
    # each key's window sums, as a multiset (the reduce drops the window's bounds)
    assert Counter((k, total) for k, total, _ in got["sum"]) == Counter(
        (k, total) for (k, _), total in expected.items()
    )
    assert max(seen for _, _, seen in got["sum"]) <= capacity  # per subtask, never more
    letters = got["dlq"]
    assert all(isinstance(d, DeadLetter) and d.operator.startswith("AsyncWait") for d in letters)
    assert sorted(d.record[1] for d in letters) == sorted(bad)
    assert {d.exception_type for d in letters} == {"LookupError"}
    assert got["ordered"] == [s for s in range(n) if s not in bad]  # input order at p=1


@pytest.mark.slow
def test_killed_task_with_requests_in_flight_gives_exactly_the_failure_free_results(tmp_path):
    n = 6000
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.enable_checkpointing(150)
    env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "checkpoints"))
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(3, 0))
    results = (
        AsyncDataStream.unordered_wait(
            env.from_source(PacedEvents(n, rate=1500), source_name="events").rebalance(),
            slow_enrich,
            10_000,
            capacity=50,
        )
        .name("enrich")
        .uid("enrich")
    )
    col = Collector(results.execute_and_collect("async-kill"))
    client = col.client

    def in_flight() -> int:
        return sum(
            op.get("in_flight", 0)
            for t in client.metrics()["tasks"]
            for name, op in t.get("operators", {}).items()
            if name.startswith("enrich")
        )

    wait_until(lambda: client.get_checkpoint_stats()["completed"] >= 2, what="two checkpoints")
    wait_until(lambda: in_flight() > 0, what="requests in flight")
    kill_task("async-kill", "enrich", attempt=0)
    values = col.join()
    stats = client.get_checkpoint_stats()
    assert stats["restarts"] == 1 and stats["restored_from"][0] >= 1
    assert sorted(values) == sorted((s % 10, s, s * 3) for s in range(n))


async def slow_enrich(event: tuple) -> tuple:
    await asyncio.sleep(0.02 + delay_s(event[1]))
    return (event[0], event[1], event[1] * 3)
