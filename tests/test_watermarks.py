"""Watermark generation, idleness and per-channel combining (SEMANTICS §1), without Ray."""

from __future__ import annotations

import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from raystream import OutputTag, WatermarkStrategy
from raystream.core.time import MAX_TS, MIN_TS
from raystream.core.watermarks import (
    BoundedOutOfOrdernessWatermarks,
    IdlenessWatermarks,
    WatermarkOutput,
    WatermarkValve,
    valid_timestamp,
)
from raystream.operators.watermarks import TimestampsAndWatermarksOperator
from raystream.operators.windows import (
    ContinuousEventTimeTrigger,
    ProcessingTimeSessionWindows,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
)
from raystream.operators.windows.operator import PROCESS, WindowOperator
from raystream.testing import OperatorHarness


def test_bounded_out_of_orderness_emits_max_minus_bound_minus_one():
    gen = BoundedOutOfOrdernessWatermarks(10)
    out = WatermarkOutput()
    gen.on_periodic_emit(out)
    assert out.watermark is None  # nothing before the first event
    gen.on_events([None] * 3, [5, 40, 17], out)
    gen.on_periodic_emit(out)
    assert out.watermark == 29
    gen.on_events([None], [20], out)
    gen.on_periodic_emit(out)
    assert out.watermark == 29  # never goes back


def test_idleness_is_declared_after_the_timeout_and_lifted_by_an_event():
    now = [0]
    gen = IdlenessWatermarks(BoundedOutOfOrdernessWatermarks(0), 100, lambda: now[0])
    out = WatermarkOutput()
    gen.on_events([None], [7], out)
    gen.on_periodic_emit(out)  # events since the last check: active
    assert not out.idle and out.watermark == 6
    now[0] = 50
    gen.on_periodic_emit(out)  # starts the idle timer
    now[0] = 140
    gen.on_periodic_emit(out)
    assert not out.idle  # 90 ms without events: not yet
    now[0] = 151
    gen.on_periodic_emit(out)
    assert out.idle
    gen.on_events([None], [9], out)
    assert not out.idle


def test_valve_takes_the_minimum_of_active_channels_and_never_goes_back():
    v = WatermarkValve(3)
    assert v.on_watermark(0, 10) is None
    assert v.on_watermark(1, 5) is None
    assert v.on_watermark(2, 7) == 5
    assert v.on_watermark(1, 4) is None  # per-channel monotonic
    assert v.on_watermark(1, 20) == 7
    assert v.on_idle(2) == 10  # the idle channel leaves the minimum
    v.on_active(2)  # behind (7 < 10): stays out until it catches up
    assert v.on_watermark(0, 30) == 20
    assert v.on_watermark(2, 25) is None
    assert v.on_watermark(2, 40) is None and v.last_out == 20
    assert v.on_watermark(1, 50) == 30


def test_valve_flushes_the_maximum_when_the_last_active_channel_goes_idle():
    v = WatermarkValve(2)
    v.on_watermark(0, 10)
    v.on_watermark(1, 3)
    assert v.last_out == 3
    assert v.on_idle(0) is None  # channel 1 (at 3) is still active
    assert v.on_idle(1) == 10 and v.output_idle


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3), st.sampled_from(["wm", "idle", "active"]), st.integers(-50, 50)
        ),
        max_size=60,
    )
)
def test_valve_output_never_decreases(steps):
    v = WatermarkValve(4)
    last = MIN_TS
    for ch, what, ts in steps:
        out = (
            v.on_watermark(ch, ts)
            if what == "wm"
            else v.on_idle(ch)
            if what == "idle"
            else v.on_active(ch)
        )
        if out is not None:
            assert out > last
            last = out
        assert v.last_out == last


def test_valid_timestamps():
    assert valid_timestamp(5) == 5
    assert valid_timestamp(5.9) == 5
    for bad in (None, "5", True, float("nan"), float("inf"), MAX_TS + 1, MIN_TS, [1]):
        assert valid_timestamp(bad) is None


def test_assign_timestamps_operator_replaces_upstream_watermarks_but_keeps_the_final_one():
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda r: r["t"]
    )
    op = TimestampsAndWatermarksOperator("ts", strategy)
    h = OperatorHarness(op)
    h.process([{"t": 3}, {"t": 9}])
    assert h.output == [({"t": 3}, 3), ({"t": 9}, 9)]
    h.watermark(100)  # an upstream watermark: ignored
    assert h.watermarks == []
    op.on_periodic(0)
    assert h.watermarks == [8]
    h.watermark(MAX_TS)
    assert h.watermarks == [8, MAX_TS]


def test_invalid_timestamps_side_output_in_the_operator():
    bad = OutputTag("bad")
    strategy = (
        WatermarkStrategy.for_monotonous_timestamps()
        .with_timestamp_assigner(lambda r: r)
        .with_invalid_timestamps_to(bad)
    )
    h = OperatorHarness(TimestampsAndWatermarksOperator("ts", strategy))
    h.process([1, None, "x", 4, MAX_TS, MAX_TS - 1, MIN_TS, MIN_TS + 1])
    assert h.values() == [1, 4, MAX_TS - 1, MIN_TS + 1]
    # the end and the start of time are no instants a record can have (a record at MAX_TS
    # would be behind the final watermark and never fire a window)
    assert [v for v, _ in h.side_output(bad)] == [None, "x", MAX_TS, MIN_TS]


def collect(key, ctx, elements):
    yield (key, ctx.window().start, sorted(e[1] for e in elements))


def test_processing_time_windows_use_the_clock_not_the_timestamps():
    op = WindowOperator(
        "p",
        lambda r: r[0],
        TumblingProcessingTimeWindows.of(100),
        None,
        None,
        0,
        None,
        PROCESS,
        collect,
    )
    h = OperatorHarness(op, keyed=True, start_ms=1_000)
    h.process([("a", 1), ("a", 2)], [5, 999_999])  # timestamps do not matter
    h.advance_processing_time(1_050)
    h.process([("a", 3)])
    assert h.output == []
    h.advance_processing_time(1_099)
    assert h.values() == [("a", 1000, [1, 2, 3])]
    h.advance_processing_time(1_150)
    h.process([("a", 4)])
    h.advance_processing_time(1_199)
    assert h.values()[-1] == ("a", 1100, [4])


def test_processing_time_sessions_merge_on_the_clock():
    op = WindowOperator(
        "s",
        lambda r: r[0],
        ProcessingTimeSessionWindows.with_gap(50),
        None,
        None,
        0,
        None,
        PROCESS,
        collect,
    )
    h = OperatorHarness(op, keyed=True, start_ms=0)
    h.process([("a", 1)])
    h.advance_processing_time(40)
    h.process([("a", 2)])  # within the gap: same session [0, 90)
    h.advance_processing_time(88)
    assert h.output == []
    h.advance_processing_time(89)
    assert h.values() == [("a", 0, [1, 2])]


def test_continuous_event_time_trigger_fires_early_and_at_the_end():
    op = WindowOperator(
        "c",
        lambda r: r[0],
        TumblingEventTimeWindows.of(100),
        ContinuousEventTimeTrigger.of(30),
        None,
        0,
        None,
        PROCESS,
        functools.partial(collect),
    )
    h = OperatorHarness(op, keyed=True)
    h.process([("a", 1), ("a", 2)], [5, 10])
    h.watermark(29)
    assert h.values() == []
    h.watermark(30)  # early firings every 30 ms, aligned to multiples of 30
    assert h.values() == [("a", 0, [1, 2])]
    h.process([("a", 3)], [40])
    h.watermark(65)
    assert h.values()[-1] == ("a", 0, [1, 2, 3])
    h.watermark(99)  # 90, then the end of the window
    assert h.values() == [("a", 0, [1, 2])] + [("a", 0, [1, 2, 3])] * 3
