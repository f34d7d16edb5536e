"""PyFlink-style programs on a real local Ray: output types that make rows, PyFlink's file
connector builders, and the runtime contexts user code checks with ``isinstance``."""

from __future__ import annotations

import logging
import os
from collections import Counter

import pytest

from raystream.common import Duration, Encoder, Row, Types, WatermarkStrategy
from raystream.common.watermark_strategy import TimestampAssigner
from raystream.connectors.file_system import (
    FileSink,
    FileSource,
    OutputFileConfig,
    RollingPolicy,
    StreamFormat,
)
from raystream.datastream import (
    KeyedProcessFunction,
    ProcessWindowFunction,
    StreamExecutionEnvironment,
)
from raystream.window import TimeWindow, TumblingEventTimeWindows

pytestmark = pytest.mark.usefixtures("ray_session")


class _Ts(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp) -> int:
        return value[1]


class _CountPerWindow(ProcessWindowFunction[tuple, tuple, str, TimeWindow]):
    def process(self, key: str, context: ProcessWindowFunction.Context[TimeWindow], elements):
        assert isinstance(context, ProcessWindowFunction.Context)
        w = context.window()
        return [(key, w.start, w.end, len(list(elements)))]


def _events() -> list[tuple[str, int]]:
    # (key, timestamp) in timestamp order, so no event is late under monotonous watermarks
    return sorted(((("a", "b", "c")[i % 3], (i * 7) % 23) for i in range(60)), key=lambda e: e[1])


def test_window_process_with_row_named_output_yields_rows_with_attribute_access():
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    out = (
        env.from_collection(_events())
        .assign_timestamps_and_watermarks(
            WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(_Ts())
        )
        .key_by(lambda e: e[0], key_type=Types.STRING())
        .window(TumblingEventTimeWindows.of(Duration.of_millis(5)))
        .process(
            _CountPerWindow(),
            Types.ROW_NAMED(
                ["key", "start", "end", "n"],
                [Types.STRING(), Types.LONG(), Types.LONG(), Types.INT()],
            ),
        )
        .map(lambda r: (type(r).__name__, r.key, r.start, r.end, r["n"]))
        .execute_and_collect(limit=1000)
    )
    expected: Counter = Counter()
    for key, ts in _events():
        start = ts - ts % 5
        expected[("Row", key, start, start + 5)] += 1
    assert Counter({(t, k, s, e): n for t, k, s, e, n in out}) == expected
    assert len(out) == len(expected)


def test_from_collection_with_row_type_info_yields_rows():
    env = StreamExecutionEnvironment.get_execution_environment()
    data = [(1, "hi"), (2, "hello"), (3, "hey")]
    named = env.from_collection(
        data, type_info=Types.ROW_NAMED(["id", "info"], [Types.INT(), Types.STRING()])
    ).map(lambda r: (r.id, r.info, isinstance(r, Row)))
    assert sorted(named.execute_and_collect(limit=10)) == [
        (1, "hi", True), (2, "hello", True), (3, "hey", True)
    ]  # fmt: skip
    env2 = StreamExecutionEnvironment.get_execution_environment()
    rows = env2.from_collection(data, type_info=Types.ROW([Types.INT(), Types.STRING()]))
    got = rows.execute_and_collect(limit=10)
    assert sorted(got, key=lambda r: r[0]) == [Row(f0=1, f1="hi"), Row(f0=2, f1="hello"),
                                               Row(f0=3, f1="hey")]  # fmt: skip


def test_map_with_row_output_type_converts_and_a_wrong_arity_names_the_operator():
    env = StreamExecutionEnvironment.get_execution_environment()
    got = (
        env.from_collection(range(5))
        .map(lambda x: (x, x * x), output_type=Types.ROW_NAMED(["x", "sq"], [Types.INT()] * 2))
        .execute_and_collect(limit=10)
    )
    assert sorted((r.x, r.sq) for r in got) == [(i, i * i) for i in range(5)]
    env = StreamExecutionEnvironment.get_execution_environment()
    bad = env.from_collection([1]).map(lambda x: (x, x, x), output_type=Types.ROW([Types.INT()]))
    with pytest.raises(Exception, match=r"operator 'Map', subtask 0.*row of 1 fields"):
        bad.execute_and_collect(limit=10)


class _Timers(KeyedProcessFunction):
    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        assert isinstance(ctx, KeyedProcessFunction.Context)
        ctx.timer_service().register_event_time_timer(value[1] + 1)
        return None

    def on_timer(self, timestamp, ctx: KeyedProcessFunction.OnTimerContext):
        yield (
            ctx.get_current_key(),
            timestamp,
            isinstance(ctx, KeyedProcessFunction.OnTimerContext),
        )


def test_keyed_process_contexts_are_the_nested_types():
    env = StreamExecutionEnvironment.get_execution_environment()
    got = (
        env.from_collection([("a", 1), ("b", 5)])
        .assign_timestamps_and_watermarks(
            WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(_Ts())
        )
        .key_by(lambda e: e[0])
        .process(_Timers(), Types.TUPLE([Types.STRING(), Types.LONG(), Types.BOOLEAN()]))
        .execute_and_collect(limit=10)
    )
    assert sorted(got) == [("a", 2, True), ("b", 6, True)]


def test_file_sink_row_format_and_file_source_stream_format_round_trip(tmp_path, caplog):
    lines = [f"line {i} ü" for i in range(200)]
    env = StreamExecutionEnvironment.get_execution_environment()
    with caplog.at_level(logging.WARNING):
        env.add_jars("file:///nowhere/flink-connector.jar")
    assert "add_jars" in caplog.text
    env.set_parallelism(2)
    out_dir = tmp_path / "out"
    sink = (
        FileSink.for_row_format(str(out_dir), Encoder.simple_string_encoder())
        .with_output_file_config(
            OutputFileConfig.builder().with_part_prefix("prefix").with_part_suffix(".ext").build()
        )
        .with_rolling_policy(RollingPolicy.default_rolling_policy())
        .build()
    )
    env.from_collection(lines).sink_to(sink)
    env.execute("write")
    files = sorted(os.listdir(out_dir))
    assert files and all(f.startswith("prefix-") and f.endswith(".ext") for f in files), files
    source = (
        FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(out_dir))
        .process_static_file_set()
        .build()
    )
    env2 = StreamExecutionEnvironment.get_execution_environment()
    ds = env2.from_source(source, WatermarkStrategy.no_watermarks(), "file-source")
    assert sorted(ds.execute_and_collect(limit=1000)) == sorted(lines)


def test_file_connector_builders_reject_what_they_cannot_do(tmp_path):
    from raystream.errors import GraphError

    (tmp_path / "f.txt").write_text("x\n")
    with pytest.raises(GraphError, match="one path"):
        FileSource.for_record_stream_format(StreamFormat.text_line_format(), "a", "b")
    with pytest.raises(GraphError, match="bounded"):
        FileSource.for_record_stream_format(
            StreamFormat.text_line_format(), str(tmp_path)
        ).monitor_continuously(Duration.of_seconds(1))
    with pytest.raises(GraphError, match="Encoder"):
        FileSink.for_row_format(str(tmp_path / "o"), "not an encoder")
    with pytest.raises(GraphError, match="hidden"):
        OutputFileConfig.builder().with_part_prefix(".x").build()
