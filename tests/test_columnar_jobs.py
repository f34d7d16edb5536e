"""Columnar streams on a real local Ray: the row path (a user AggregateFunction), the row path
with ``raystream.agg`` and the columnar path give the same windows with out-of-order and late
data at parallelism 1 and 2; columnar window state survives killed tasks exactly once (LMDB); the
columnar sources (Parquet, pandas, Ray Dataset) and sinks (Parquet FileSink, Ray Dataset sink,
collect) carry batches end to end."""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raystream import (
    FileSink,
    FileSource,
    OutputTag,
    RestartStrategies,
    SlidingEventTimeWindows,
    StreamExecutionEnvironment,
    TumblingEventTimeWindows,
    WatermarkGenerator,
    WatermarkStrategy,
    agg,
)
from raystream.checkpointing import LmdbStateBackend
from raystream.operators import RayDatasetSink, Sink, SinkWriter, Source, SplitReader
from raystream.runtime.elements import ColumnBatch
from tests.chaos_jobs import Collector, kill_task, wait_until
from tests.test_columnar_windows import AGGS, NAMES, SevenAggregates, reference

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.timeout(300)]

SCHEMA = pa.schema([("k", pa.string()), ("t", pa.int64()), ("v", pa.int64()), ("wm", pa.int64())])


class MarkedWatermarks(WatermarkGenerator):
    """Punctuated: right after a record whose ``wm`` field is set, the watermark ``wm`` — the
    same instants on both paths, so what is late does not depend on timing."""

    def on_event(self, event: Any, event_timestamp: int, output: Any) -> None:
        if event["wm"] is not None:
            output.emit_watermark(event["wm"])

    def on_periodic_emit(self, output: Any) -> None:
        pass


class _Keep(SinkWriter):
    def __init__(self) -> None:
        self.records: list = []

    def write(self, batch: Any) -> None:
        if type(batch) is ColumnBatch:
            values = batch.values.to_pylist()
            stamps = batch.timestamps.tolist() if batch.timestamps is not None else None
        else:
            values, stamps = batch.values, batch.timestamps
        values = [v.as_dict() if hasattr(v, "as_dict") else v for v in values]
        self.records.extend(zip(values, stamps or [None] * len(values)))

    def result(self) -> list:
        return self.records


class KeepAll(Sink):
    """Keeps every record with its timestamp (rows, or the rows of column batches as dicts)."""

    accepts_columns = True

    def create_writer(self, context: Any) -> SinkWriter:
        return _Keep()


def _events(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    t = 0
    for i in range(n):
        t += rng.randrange(0, 3)
        ts = max(0, t - rng.randrange(150))
        mark = t - 30 if i % 37 == 36 else None
        v = None if rng.random() < 0.1 else rng.randrange(-100, 100)
        out.append({"k": f"k{rng.randrange(13)}", "t": ts, "v": v, "wm": mark})
    return out


def _script(events: list[dict]) -> list:
    """The reference's view: a batch per record, then the marked watermark."""
    script: list = []
    for e in events:
        script.append(("batch", [(e["k"], e["t"], e["v"])]))
        if e["wm"] is not None:
            script.append(("wm", e["wm"]))
    return script


def _windows(records: list) -> list:
    out = []
    for value, ts in records:
        if "aggs" in value:
            aggs = tuple(value["aggs"])
        else:
            aggs = tuple(value[n] for n in NAMES)
        out.append((value["k"], value["window_start"], value["window_end"], aggs, ts))
    return sorted(out, key=repr)


def _with_window(key, ctx, results):
    w = ctx.window()
    return [{"k": key, "window_start": w.start, "window_end": w.end, "aggs": r} for r in results]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_row_and_columnar_windows_agree_with_late_data(parallelism):
    events = _events(seed=4, n=3000)
    size, slide, lateness = 100, 50, 40
    expected, expected_late = reference(_script(events), size, slide, lateness)

    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    strategy = WatermarkStrategy.for_generator(MarkedWatermarks)
    assigner = SlidingEventTimeWindows.of(size, slide)
    aggs = AGGS
    late = [OutputTag(f"late-{i}") for i in range(3)]

    rows = (
        env.from_collection(events)
        .set_parallelism(1)
        .assign_timestamps_and_watermarks(strategy.with_timestamp_column("t"))
        .set_parallelism(1)  # one producer per window subtask: lateness does not race
    )
    user = (
        rows.key_by(lambda e: e["k"])
        .window(assigner)
        .allowed_lateness(lateness)
        .side_output_late_data(late[0])
        .aggregate(SevenAggregates(), _with_window)
    )
    declarative = (
        rows.key_by("k")
        .window(assigner)
        .allowed_lateness(lateness)
        .side_output_late_data(late[1])
        .aggregate(*aggs)
    )
    table = pa.Table.from_pylist(events, schema=SCHEMA)
    columns = (
        env.from_arrow(table, strategy.with_timestamp_column("t"), chunk_rows=500)
        .set_parallelism(1)
        .key_by("k")
        .window(assigner)
        .allowed_lateness(lateness)
        .side_output_late_data(late[2])
        .aggregate(*aggs)
    )
    assert columns.is_columnar and not declarative.is_columnar
    for name, stream in [("user", user), ("declarative", declarative), ("columns", columns)]:
        stream.sink_to(KeepAll()).name(name)
    for i, stream in enumerate([user, declarative, columns]):
        stream.get_side_output(late[i]).sink_to(KeepAll()).name(f"late-{i}")
    result = env.execute("columnar-vs-rows")

    def records(name: str) -> list:
        return [r for part in result.get_sink_result(name) for r in part]

    for name in ("user", "declarative", "columns"):
        assert _windows(records(name)) == expected, name
    expected_late_events = sorted((e["k"], e["t"], e["v"]) for e, _ in expected_late)
    for i in range(3):
        got = sorted((r["k"], r["t"], r["v"]) for r, _ in records(f"late-{i}"))
        assert got == expected_late_events, i
    assert len(expected_late_events) > 20  # dropped: late beyond the allowed lateness
    fired = [(r[0], r[1]) for r in expected]
    assert len(fired) - len(set(fired)) > 20  # late firings: a window's result again


# --- exactly once with killed tasks -------------------------------------------------------------


class _PacedColumns(SplitReader):
    def __init__(self, split: int, splits: int, n: int, offset: int | None, rate: float):
        self.split, self.splits, self.n = split, splits, n
        self.offset = offset or 0  # events of this split read
        self.rate = rate
        self.t0 = time.monotonic()
        self.base = self.offset

    def read(self, max_records: int) -> ColumnBatch | None:
        mine = len(range(self.split, self.n, self.splits))
        if self.offset >= mine:
            return None
        allowed = self.base + int((time.monotonic() - self.t0) * self.rate)
        stop = min(mine, allowed, self.offset + min(max_records, 300))
        if stop <= self.offset:
            return ColumnBatch(pa.RecordBatch.from_pylist([], schema=PACED_SCHEMA))
        seq = np.arange(self.offset, stop, dtype=np.int64) * self.splits + self.split
        self.offset = stop
        rb = pa.RecordBatch.from_arrays(
            [pa.array(seq % 7), pa.array(seq * 10), pa.array(seq % 11)], schema=PACED_SCHEMA
        )
        return ColumnBatch(rb)


PACED_SCHEMA = pa.schema([("k", pa.int64()), ("t", pa.int64()), ("v", pa.int64())])


class PacedColumns(Source):
    """Event ``seq`` in ``[0, n)`` has key ``seq % 7``, time ``10·seq`` ms and value
    ``seq % 11``; two splits, each at about ``rate`` events per second."""

    columnar = True

    def __init__(self, n: int, rate: float):
        self.n, self.rate = n, rate

    def create_splits(self, parallelism: int) -> list[int]:
        return [0, 1]

    def open_split(self, split: int, offset: Any) -> SplitReader:
        return _PacedColumns(split, 2, self.n, offset, self.rate)


@pytest.mark.slow
def test_columnar_windows_survive_killed_tasks_exactly_once(tmp_path):
    n, window = 60_000, 1000
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.enable_checkpointing(150)
    env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "checkpoints"))
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(5, 0))
    env.set_state_backend(LmdbStateBackend())
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(20_000).with_timestamp_column("t")
    stream = (
        env.from_source(PacedColumns(n, rate=1500), strategy, "paced")
        .key_by("k")
        .window(TumblingEventTimeWindows.of(window))
        .aggregate(agg.count(), agg.sum("v"))
        .uid("windows")
    )
    col = Collector(stream.execute_and_collect("columnar-kill"))
    client = col.client
    stats = client.get_checkpoint_stats
    wait_until(lambda: stats()["completed"] >= 3, what="three checkpoints")
    kill_task("columnar-kill", "Window", attempt=0)
    wait_until(lambda: stats()["attempt"] == 1, what="a restart")
    wait_until(lambda: stats()["completed"] >= 6, what="checkpoints after the restart")
    kill_task("columnar-kill", "paced", attempt=1)
    got = col.join(timeout_s=240)
    assert stats()["restarts"] == 2 and all(c >= 1 for c in stats()["restored_from"])
    expected: dict = {}
    for seq in range(n):
        c = expected.setdefault((seq % 7, seq * 10 - seq * 10 % window), [0, 0])
        c[0] += 1
        c[1] += seq % 11
    results = {(r["k"], r["window_start"]): [r["count"], r["sum_v"]] for r in got}
    assert len(got) == len(results)  # every window exactly once
    assert results == expected


# --- sources and sinks of columns ---------------------------------------------------------------


def test_columnar_sources_and_sinks_carry_batches_end_to_end(tmp_path):
    import pandas as pd
    import ray.data

    rng = random.Random(9)
    rows = [
        {"k": f"k{rng.randrange(20)}", "t": i * 3, "v": float(rng.randrange(100))}
        for i in range(4000)
    ]
    half = len(rows) // 2
    pq.write_table(pa.Table.from_pylist(rows[:half]), tmp_path / "a.parquet", row_group_size=700)
    frame = pd.DataFrame(rows[half:])
    dataset = ray.data.from_items([{"x": i, "y": str(i)} for i in range(1500)])

    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(10_000).with_timestamp_column("t")
    files = env.from_source(
        FileSource.parquet(tmp_path / "a.parquet", columnar=True), strategy, "parquet"
    )
    pandas = env.from_pandas(frame, strategy, chunk_rows=300)
    windows = (
        files.union(pandas)
        .key_by("k")
        .window(TumblingEventTimeWindows.of(500))
        .aggregate(agg.count(), agg.sum("v"), agg.max("v"))
    )
    windows.sink_to(FileSink.parquet(tmp_path / "out")).name("parquet-out")
    windows.sink_to(RayDatasetSink()).name("dataset-out")
    collected = (
        env.from_ray_dataset(dataset, columnar=True)
        .to_rows()
        .map(lambda r: {"x": r["x"] * 2, "y": r["y"]})
        .to_columns(pa.schema([("x", pa.int64()), ("y", pa.string())]))
        .execute_and_collect("columnar-io")
    )
    with collected:
        got = list(collected)
    result = collected.client.wait()

    assert sorted(r["x"] for r in got) == [2 * i for i in range(1500)]
    assert all(r["y"] == str(r["x"] // 2) for r in got)
    expected: dict = {}
    for r in rows:
        c = expected.setdefault((r["k"], r["t"] - r["t"] % 500), [0, 0.0, None])
        c[0] += 1
        c[1] += r["v"]
        c[2] = r["v"] if c[2] is None else max(c[2], r["v"])
    written = pq.read_table(str(tmp_path / "out")).to_pylist()
    from_dataset = result.get_ray_dataset("dataset-out").take_all()
    for out in (written, from_dataset):
        got_windows = {
            (r["k"], r["window_start"]): [r["count"], r["sum_v"], r["max_v"]] for r in out
        }
        assert got_windows == expected
        assert len(out) == len(expected)
    assert set(written[0]) == {"k", "window_start", "window_end", "count", "sum_v", "max_v"}


def test_arrow_source_splits_and_positions():
    """``from_arrow``'s source: chunks dealt out round robin over the splits; a reader opened
    at any position (rows of its split read) goes on from there."""
    from raystream.operators import ArrowSource

    table = pa.table({"i": np.arange(1000), "s": [str(i) for i in range(1000)]})
    source = ArrowSource([table.slice(0, 600), table.slice(600)], chunk_rows=128)
    splits = source.create_splits(3)
    owned = [sorted(c for s in splits for c in s.chunks if s.index == i) for i in range(3)]
    assert owned[0][:3] == [0, 3, 6] and sum(len(o) for o in owned) == len(source.rows)
    for split in splits:
        everything: list = []
        reader = source.open_split(split, None)
        while (part := reader.read(100)) is not None:
            everything.extend(part.values.column("i").to_pylist())
        assert reader.offset == len(everything) == sum(split.rows)
        for offset in (0, 1, 127, 128, 300, sum(split.rows)):
            resumed: list = []
            reader = source.open_split(split, offset)
            while (part := reader.read(77)) is not None:
                resumed.extend(part.values.column("i").to_pylist())
            assert resumed == everything[offset:]
    with pytest.raises(Exception, match="another schema"):
        ArrowSource([table, table.select(["i"])])
