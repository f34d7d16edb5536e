"""Split sources (FLIP-27 model): enumerator in the job master, readers in the tasks, per-split
watermarks — driven through the public API with a partitioned log on local disk
(``examples/partitioned_log_source.py``, the documented example connector), so no broker is
needed."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.partitioned_log_source import LogSource, LogSplit, LogWriter
from raystream import (
    Duration,
    OutputTag,
    RestartStrategies,
    StreamExecutionEnvironment,
    WatermarkStrategy,
)
from raystream.core.time import MIN_TS
from raystream.core.watermarks import SplitWatermarks
from raystream.errors import JobExecutionError
from raystream.operators.split_source import DiscoveringSplitEnumerator, SplitRecords
from raystream.operators.windows import TumblingEventTimeWindows
from tests.chaos_jobs import Collector, kill_task, wait_until

pytestmark = pytest.mark.timeout(300)

ray_test = pytest.mark.usefixtures("ray_session")


def records(partition: int, n: int, ts0: int = 0, step: int = 10) -> list[dict]:
    return [{"p": partition, "i": i, "ts": ts0 + i * step} for i in range(n)]


# -- the mechanism: per-split watermark combining ------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "wm", "idle", "active", "remove"]),
            st.integers(0, 3),
            st.integers(0, 1000),
        ),
        max_size=60,
    )
)
def test_split_watermarks_are_the_minimum_over_active_splits(ops):
    """Against a brute-force reference: the output follows min over non-idle splits (a split
    without a watermark counts as MIN_TS), never decreases, and is idle exactly when no split is
    active."""
    sw = SplitWatermarks()
    wm: dict[str, int] = {}
    idle: dict[str, bool] = {}
    emitted = MIN_TS
    out_idle = True
    for op, split, ts in ops:
        sid = f"s{split}"
        if op == "add":
            got = sw.add(sid)
            if sid not in wm:
                wm[sid], idle[sid] = MIN_TS, False
        elif op == "wm":
            got = sw.update(sid, ts)
            wm[sid] = max(wm.get(sid, MIN_TS), ts)
            idle[sid] = False
        elif op in ("idle", "active"):
            got = sw.set_idle(sid, op == "idle")
            if sid in idle:
                idle[sid] = op == "idle"
        else:
            got = sw.remove(sid)
            wm.pop(sid, None)
            idle.pop(sid, None)
        active = [w for s, w in wm.items() if not idle[s]]
        want_idle = not active
        new_wm, status = got
        if want_idle != out_idle:
            assert status is want_idle
            out_idle = want_idle
        else:
            assert status is None
        if active and min(active) > emitted:
            assert new_wm == min(active)
            emitted = new_wm
        else:
            assert new_wm is None


class _Ctx:
    def __init__(self, parallelism, held=()):
        self.parallelism = parallelism
        self.restored_split_ids = frozenset(held)
        self.assigned: list[dict] = []
        self.no_more: list[int] = []
        self.calls: list = []

    def assign_splits(self, assignment):
        self.assigned.append(assignment)

    def signal_no_more_splits(self, subtask):
        self.no_more.append(subtask)

    def call_async(self, fn, handler, interval_ms=None):
        self.calls.append((fn, handler, interval_ms))


class _ListEnumerator(DiscoveringSplitEnumerator):
    def __init__(self, source, ctx, restored, interval, existing):
        super().__init__(source, ctx, restored, interval)
        self.existing = existing

    def discover(self):
        return list(self.existing)

    def owner(self, split, parallelism):
        return split.partition % parallelism


def test_discovering_enumerator_reassigns_what_restored_readers_do_not_hold():
    source = LogSource("/nonexistent")
    restored = {"p-0": LogSplit(0, 5), "p-1": LogSplit(1, 7), "p-2": LogSplit(2, 0)}
    # p-1 is held by a restored reader; p-3 was assigned after the enumerator's snapshot
    ctx = _Ctx(2, held={"p-1", "p-3"})
    e = _ListEnumerator(source, ctx, restored, 100, [LogSplit(i, 0) for i in range(5)])
    e.start()
    assert ctx.assigned == [{0: [LogSplit(0, 5), LogSplit(2, 0)]}]  # from their start positions
    fn, handler, interval = ctx.calls[0]
    assert interval == 100
    assert handler(fn(), None) is True  # unbounded: keep discovering
    assert ctx.assigned[1] == {0: [LogSplit(4, 0)]}  # only the new one; p-3 is a reader's
    assert set(e.snapshot_state(1)) == {"p-0", "p-1", "p-2", "p-3", "p-4"}
    assert ctx.no_more == []
    with pytest.raises(OSError):
        handler(None, OSError("listing failed"))


def test_bounded_discovery_signals_no_more_splits_once():
    ctx = _Ctx(3)
    e = _ListEnumerator(LogSource("/x"), ctx, None, None, [LogSplit(0, 0)])
    e.start()
    fn, handler, interval = ctx.calls[0]
    assert interval is None
    assert handler(fn(), None) is False  # discovery is over: the periodic call stops
    assert handler(fn(), None) is False
    assert ctx.no_more == [0, 1, 2]


def test_stable_owner_is_the_same_in_every_process():
    """Placement must not depend on Python's salted hash(): two interpreters with different
    hash seeds place 50 splits identically, and the placement spreads them."""
    code = (
        "from raystream.operators.split_source import stable_owner;"
        "print([stable_owner(f'topic-{i}', 4) for i in range(50)])"
    )
    outs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outs.append(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
    assert outs[0] == outs[1]
    placement = eval(outs[0])  # noqa: S307 - our own subprocess printed a list of ints
    assert set(placement) == {0, 1, 2, 3}


# -- through the runtime --------------------------------------------------------------------------


@ray_test
def test_bounded_split_source_reads_every_partition_once(tmp_path):
    w = LogWriter(str(tmp_path))
    expected = []
    for p, n in enumerate([1000, 1, 0, 2500]):
        w.append(p, records(p, n))
        expected += [(p, i) for i in range(n)]
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(3)
    out = env.from_source(LogSource(str(tmp_path), bounded=True), source_name="log").map(
        lambda r: (r["p"], r["i"])
    )
    got = list(out.execute_and_collect("bounded-log"))
    assert sorted(got) == sorted(expected)


@ray_test
def test_partitions_added_while_running_are_read_and_the_job_ends(tmp_path):
    w = LogWriter(str(tmp_path))
    w.append(0, records(0, 300))
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    stream = env.from_source(LogSource(str(tmp_path), discovery_interval_ms=50), source_name="log")
    col = Collector(stream.map(lambda r: (r["p"], r["i"])).execute_and_collect("grow-log"))
    wait_until(lambda: len(col.values) >= 300, what="the first partition")
    w.append(1, records(1, 200))
    w.append(2, records(2, 100))
    w.append(0, [{"p": 0, "i": 300, "ts": 3000}])
    wait_until(lambda: len(col.values) >= 601, what="the new partitions")
    for p in range(3):
        w.close_partition(p)
    w.close_topic()
    got = col.join()
    expected = [(0, i) for i in range(301)] + [(1, i) for i in range(200)]
    expected += [(2, i) for i in range(100)]
    assert sorted(got) == sorted(expected)


@ray_test
def test_a_partition_behind_holds_the_watermark_so_nothing_is_late(tmp_path):
    """Partition 0 is far ahead of partition 1 in event time, both read by one subtask. With one
    watermark per subtask, partition 1's records would all be late; per split, none is."""
    w = LogWriter(str(tmp_path))
    w.append(0, records(0, 2000, ts0=100_000, step=5))
    w.append(1, records(1, 2000, ts0=0, step=5))
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    env.get_config().set_auto_watermark_interval(10)
    late = OutputTag("late")
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(0))
    windowed = (
        env.from_source(LogSource(str(tmp_path), bounded=True), strategy, "log")
        .key_by(lambda r: r["p"])
        .window(TumblingEventTimeWindows.of(Duration.of_seconds(1)))
        .side_output_late_data(late)
        .reduce(lambda a, b: {**a, "n": a.get("n", 1) + b.get("n", 1)})
    )
    late_records = windowed.get_side_output(late).map(lambda r: ("late", r["p"], r["i"]))
    results = windowed.map(lambda r: ("win", r["p"], r.get("n", 1))).union(late_records)
    got = list(results.execute_and_collect("per-split-wm"))
    assert [g for g in got if g[0] == "late"] == []
    per_p = {}
    for _, p, n in got:
        per_p[p] = per_p.get(p, 0) + n
    assert per_p == {0: 2000, 1: 2000}


@ray_test
def test_idle_partition_with_idleness_lets_event_time_advance(tmp_path):
    """One partition never gets a record: without idleness the window never fires while the job
    runs (the source's watermark stays at MIN_TS); with idleness it fires."""
    for idleness in (False, True):
        d = tmp_path / f"idle-{idleness}"
        w = LogWriter(str(d))
        w.append(0, records(0, 100, ts0=0, step=10) + [{"p": 0, "i": 100, "ts": 5000}])
        w.append(1, [])
        col = _window_counts(d, 1, idleness, f"idle-{idleness}")
        client = col.client
        if idleness:
            wait_until(lambda c=col: c.values == [100], what="the first window under idleness")
        else:
            wait_until(
                lambda c=client: _source_records(c) == 101, what="every record read by the source"
            )
            wms = [t["watermark"] for t in client.metrics()["tasks"] if "watermark" in t]
            assert max(wms) == MIN_TS and col.values == []
        w.close_partition(0)
        w.close_partition(1)
        w.close_topic()
        assert sorted(col.join()) == [1, 100]


def _window_counts(directory, parallelism: int, idleness: bool, name: str) -> Collector:
    """log -> 1 s event-time window counts per partition, collected while the job runs."""
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    env.get_config().set_auto_watermark_interval(20)
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(0))
    if idleness:
        strategy = strategy.with_idleness(Duration.of_millis(200))
    counts = (
        env.from_source(LogSource(str(directory), discovery_interval_ms=50), strategy, "log")
        .key_by(lambda r: r["p"])
        .window(TumblingEventTimeWindows.of(Duration.of_seconds(1)))
        .reduce(lambda a, b: {**a, "n": a.get("n", 1) + b.get("n", 1)})
        .map(lambda r: r.get("n", 1))
    )
    return Collector(counts.execute_and_collect(name))


def _source_records(client) -> int:
    return sum(
        t.get("operators", {}).get("log", {}).get("records_in", 0)
        for t in client.metrics()["tasks"]
    )


@ray_test
def test_killed_source_tasks_recover_split_positions_exactly_once(tmp_path):
    w = LogWriter(str(tmp_path))
    parts, per = 4, 3000
    rng = random.Random(7)

    def write_third(k: int) -> None:
        lo, hi = k * per // 3, (k + 1) * per // 3
        for p in rng.sample(range(parts), parts):
            w.append(p, [{"p": p, "i": i, "ts": i} for i in range(lo, hi)])

    write_third(0)
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    env.enable_checkpointing(200)
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(5, 100))
    stream = env.from_source(
        LogSource(str(tmp_path), discovery_interval_ms=50), source_name="log"
    ).map(lambda r: (r["p"], r["i"]))
    col = Collector(stream.execute_and_collect("kill-log"))
    client = col.client
    wait_until(lambda: client.get_checkpoint_stats()["completed"] >= 2, what="checkpoints")
    kill_task("kill-log", "log", attempt=0)
    write_third(1)
    wait_until(lambda: client.get_checkpoint_stats()["attempt"] == 1, what="a restart")
    wait_until(lambda: client.get_checkpoint_stats()["completed"] >= 4, what="more checkpoints")
    kill_task("kill-log", "log", attempt=1)
    write_third(2)
    wait_until(lambda: client.get_checkpoint_stats()["attempt"] == 2, what="a second restart")
    for p in range(parts):
        w.close_partition(p)
    w.close_topic()
    got = col.join()
    assert client.get_checkpoint_stats()["restarts"] == 2
    expected = [(p, i) for p in range(parts) for i in range(per)]
    assert len(got) == len(expected) and sorted(got) == expected


@ray_test
def test_savepoint_restore_at_another_parallelism_keeps_split_positions(tmp_path):
    d = tmp_path / "log"
    w = LogWriter(str(d))
    for p in range(5):
        w.append(p, [{"p": p, "i": i, "ts": i} for i in range(400)])

    def job(parallelism):
        env = StreamExecutionEnvironment.get_execution_environment()
        env.set_parallelism(parallelism)
        env.enable_checkpointing(100)
        return (
            env.from_source(LogSource(str(d), discovery_interval_ms=50), source_name="log")
            .uid("log-source")
            .map(lambda r: (r["p"], r["i"]))
        )

    first = Collector(job(2).execute_and_collect("sp-log-1"))
    wait_until(lambda: len(first.values) >= 2000, what="everything written so far")
    savepoint = first.client.stop_with_savepoint(str(tmp_path / "sp"))
    before = first.join()
    for p in range(5):
        w.append(p, [{"p": p, "i": i, "ts": i} for i in range(400, 700)])
    w.append(5, [{"p": 5, "i": i, "ts": i} for i in range(50)])
    second = Collector(job(3).execute_and_collect("sp-log-2", savepoint_path=savepoint))
    wait_until(lambda: len(second.values) >= 1550, what="the rest")
    for p in range(6):
        w.close_partition(p)
    w.close_topic()
    after = second.join()
    expected = [(p, i) for p in range(5) for i in range(700)] + [(5, i) for i in range(50)]
    assert sorted(before + after) == sorted(expected)


class _BrokenReaderSource(LogSource):
    def create_reader(self, context):
        reader = super().create_reader(context)

        original = reader.poll

        def poll(max_records):
            if reader.splits:
                raise ValueError("disk on fire")
            return original(max_records)

        reader.poll = poll
        return reader


@ray_test
def test_a_failing_reader_names_the_operator_and_its_splits(tmp_path):
    w = LogWriter(str(tmp_path))
    w.append(0, records(0, 10))
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    stream = env.from_source(_BrokenReaderSource(str(tmp_path), bounded=True), source_name="bad")
    with pytest.raises(JobExecutionError) as info:
        list(stream.execute_and_collect("broken-reader"))
    msg = str(info.value.root_cause)
    assert "disk on fire" in msg and "'bad'" in msg and "p-0" in msg


@ray_test
def test_the_documented_example_connector_runs(capsys):
    from examples import partitioned_log_source

    partitioned_log_source.main()
    lines = capsys.readouterr().out.strip().splitlines()
    expected = [
        f"partition {p} second {p * 10_000 + s * 1000}: 100 records"
        for p in range(3)
        for s in range(5)
    ]
    assert lines == expected


def test_a_reader_may_return_an_arrow_record_batch():
    import pyarrow as pa

    batch = pa.RecordBatch.from_pydict({"k": ["a", "b"], "v": [1, 2]})
    part = SplitRecords("s", batch, [10, 20])
    assert part.rows() == [{"k": "a", "v": 1}, {"k": "b", "v": 2}]
    assert SplitRecords("s", [1, 2]).rows() == [1, 2]


@ray_test
def test_a_subtask_without_a_split_holds_event_time_unless_idleness_times_it_out(tmp_path):
    """One partition, two source subtasks: the subtask that gets no split is not idle by itself
    (as in Flink: records of a split on its way must not be made late by its sibling), so the
    window waits; with idleness it fires while the job runs."""
    for idleness in (False, True):
        d = tmp_path / f"one-{idleness}"
        w = LogWriter(str(d))
        w.append(0, records(0, 100, ts0=0, step=10) + [{"p": 0, "i": 100, "ts": 5000}])
        col = _window_counts(d, 2, idleness, f"one-split-{idleness}")
        client = col.client
        if idleness:
            wait_until(lambda c=col: c.values == [100], what="the window under idleness")
        else:
            wait_until(lambda c=client: _source_records(c) == 101, what="every record read")
            window_wms = [
                t["watermark"]
                for t in client.metrics()["tasks"]
                if "watermark" in t and "log" not in t.get("task", "")
            ]
            assert window_wms and max(window_wms) == MIN_TS and col.values == []
        w.close_partition(0)
        w.close_topic()
        assert sorted(col.join()) == [1, 100]


def test_splits_reaching_a_subtask_that_had_none_never_let_it_go_idle_unit(tmp_path):
    """The placeholder that holds event time for a subtask without splits leaves only once the
    new splits hold it: an idle moment in between would let downstream operators take a
    sibling's watermark past the records of the splits just assigned."""
    from raystream import WatermarkStrategy
    from raystream.operators.split_source import SplitSourceOperator
    from raystream.testing import OperatorHarness

    w = LogWriter(str(tmp_path))
    w.append(0, records(0, 3))
    op = SplitSourceOperator(
        "log", LogSource(str(tmp_path)), WatermarkStrategy.for_monotonous_timestamps()
    )
    h = OperatorHarness(op, subtask=1, parallelism=2)
    assert h._main.statuses == [False]  # held by the placeholder, not idle
    op.add_splits([LogSplit(partition=0)])
    assert h._main.statuses == [False]
    assert op.split_watermarks.wm and min(op.split_watermarks.wm.values()) == MIN_TS
