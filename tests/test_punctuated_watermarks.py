"""Watermarks emitted from ``on_event`` (punctuated) enter the stream right after their record.

The references process the records one by one and advance the watermark right after the record
that produced it, as Flink does; the runtime feeds the generator whole batches and must cut a
batch exactly where a watermark was emitted. Covered: late side output and allowed-lateness
re-firing of windows, event-time timers of a KeyedProcessFunction — through the operator chain
without Ray (the real ``ChainedOutput``), and end to end on Ray with the strategy on the source
and with ``assign_timestamps_and_watermarks``, chained and with chaining disabled.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest

from raystream import (
    KeyedProcessFunction,
    StreamExecutionEnvironment,
    TumblingEventTimeWindows,
    ValueStateDescriptor,
    WatermarkGenerator,
    WatermarkStrategy,
)
from raystream.config import ExecutionConfig
from raystream.core.time import MAX_TS, MIN_TS
from raystream.core.watermarks import BoundedOutOfOrdernessWatermarks, WatermarkOutput
from raystream.operators import CollectionSource
from raystream.operators.base import ChainedOutput, OperatorContext, Output
from raystream.operators.process import KeyedProcessOperator
from raystream.operators.watermarks import TimestampsAndWatermarksOperator
from raystream.operators.windows import SlidingEventTimeWindows
from raystream.operators.windows.operator import REDUCE
from raystream.runtime.elements import Batch
from raystream.testing import OperatorHarness, _MemoryClock
from tests.test_windows import LATE, ref_reduce, reference, window_op, windows_of

BOUND = 3
DELAY = 7


# -- the punctuated generator and its independent per-event model ------------------------------------


def punctuation(v: int, max_ts: int) -> int | None:
    """What the generator emits after a record with value ``v`` (None: nothing)."""
    if v % 3 == 0:
        return max_ts - BOUND - 1
    if v == 1:
        return max_ts - 40  # often below what was emitted before: must be ignored
    return None


class Punctuated(WatermarkGenerator):
    """Emits from ``on_event`` only (Flink's punctuated pattern)."""

    def __init__(self) -> None:
        self.max_ts: int | None = None

    def on_event(self, event, event_timestamp, output):
        self.max_ts = event_timestamp if self.max_ts is None else max(self.max_ts, event_timestamp)
        w = punctuation(event[2], self.max_ts)
        if w is not None:
            output.emit_watermark(w)

    def on_periodic_emit(self, output):
        pass


def punctuated_strategy(idleness: bool = False) -> WatermarkStrategy:
    ws = WatermarkStrategy.for_generator(Punctuated).with_timestamp_assigner(lambda r: r[1])
    return ws.with_idleness(60_000) if idleness else ws


def records_for(seed: int, n: int = 240, keys: int = 3, disorder: int = 25) -> list:
    rng = random.Random(seed)
    out, base = [], 0
    for _ in range(n):
        base += rng.randint(0, 3)
        out.append((f"k{rng.randrange(keys)}", base + rng.randint(-disorder, 4), rng.randint(1, 9)))
    return out


def per_event_script(records: list) -> list:
    """Flink's order: each record, then the watermark it produced (the reference drops values
    that do not advance)."""
    script, max_ts = [], None
    for k, ts, v in records:
        script.append(("rec", k, ts, v))
        max_ts = ts if max_ts is None else max(max_ts, ts)
        w = punctuation(v, max_ts)
        if w is not None:
            script.append(("wm", w))
    return script


def per_batch_script(records: list, batch: int) -> list:
    """The old, wrong order (the highest watermark after each batch): used only to show that
    the data tells the two apart."""
    script, max_ts = [], None
    for i in range(0, len(records), batch):
        best = None
        for k, ts, v in records[i : i + batch]:
            script.append(("rec", k, ts, v))
            max_ts = ts if max_ts is None else max(max_ts, ts)
            w = punctuation(v, max_ts)
            if w is not None and (best is None or w > best):
                best = w
        if best is not None:
            script.append(("wm", best))
    return script


def ref_timers(script: list) -> Counter:
    """KeyedProcessFunction below, by brute force: per record ("el", record, watermark seen);
    a timer at ts + DELAY per record (deduplicated per key and time) fires at the first
    watermark >= it with the key's record count at that moment; end of input fires the rest."""
    wm, counts, timers, out = MIN_TS, {}, [], Counter()

    def advance(new):
        nonlocal timers
        for t, k in [x for x in timers if x[0] <= new]:
            out[("timer", k, t, counts[k])] += 1
        timers = [x for x in timers if x[0] > new]

    for step in script:
        if step[0] == "wm":
            if step[1] > wm:
                advance(step[1])
                wm = step[1]
            continue
        _, k, ts, v = step
        out[("el", (k, ts, v), wm)] += 1
        counts[k] = counts.get(k, 0) + 1
        if (ts + DELAY, k) not in timers:
            timers.append((ts + DELAY, k))
    advance(MAX_TS)
    return out


class CountAndTimers(KeyedProcessFunction):
    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("n"))

    def process_element(self, r, ctx):
        self.count.update((self.count.value() or 0) + 1)
        ctx.timer_service().register_event_time_timer(r[1] + DELAY)
        yield ("el", r, ctx.timer_service().current_watermark())

    def on_timer(self, ts, ctx):
        yield ("timer", ctx.get_current_key(), ts, self.count.value())


# -- unit: the emitter cuts batches only where a watermark was emitted -----------------------------


class Recorder(Output):
    def __init__(self) -> None:
        self.seq: list = []
        self.batches = 0

    def emit(self, batch: Batch) -> None:
        self.batches += 1
        self.seq.extend(("rec", v) for v in batch.values)

    def emit_watermark(self, timestamp: int) -> None:
        self.seq.append(("wm", timestamp))

    def emit_watermark_status(self, idle: bool) -> None:
        self.seq.append(("idle", idle))


def assigner_into(strategy: WatermarkStrategy, harness: OperatorHarness | None, out=None):
    """A ``TimestampsAndWatermarksOperator`` whose output is ``out`` or the harness's operator
    (through the chain's own ``ChainedOutput``)."""
    op = TimestampsAndWatermarksOperator("assign", strategy)
    if harness is not None:
        ctx = dataclasses.replace(harness.operator.ctx, operator_name="assign", keyed_backend=None)
    else:
        config = ExecutionConfig()
        config.clock = _MemoryClock(0)
        ctx = OperatorContext("assign", "test", 0, 1, 128, config, config.clock)
    op.setup(ctx, out if out is not None else ChainedOutput(harness.operator), {})
    op.open()
    return op


def test_output_records_positions_and_ignores_lower_watermarks():
    out = WatermarkOutput()
    Punctuated().on_events(
        [("k", 10, 3), ("k", 20, 2), ("k", 30, 1), ("k", 31, 6)], [10, 20, 30, 31], out
    )
    # 10-3-1 after record 0; record 2 emits 30-40 < 6 (ignored); 31-4 after record 3
    assert out.cuts == [(0, 6), (3, 27)]
    assert out.watermark == 27 and out.index is None


def test_watermark_goes_right_after_its_record_and_only_there():
    rec = Recorder()
    op = assigner_into(punctuated_strategy(), None, rec)
    records = [("k", 10, 2), ("k", 12, 3), ("k", 5, 2), ("k", 30, 4), ("k", 31, 9), ("k", 1, 2)]
    op.process_batch(Batch(records))
    assert rec.seq == [
        ("rec", records[0]),
        ("rec", records[1]),
        ("wm", 8),
        ("rec", records[2]),
        ("rec", records[3]),
        ("rec", records[4]),
        ("wm", 27),
        ("rec", records[5]),
    ]
    assert rec.batches == 3
    op.process_batch(Batch([("k", 12, 3), ("k", 13, 2)]))  # 31-4 again: not above 27's successor
    assert rec.seq[-2:] == [("rec", ("k", 12, 3)), ("rec", ("k", 13, 2))]
    assert rec.batches == 4  # no watermark advanced: the batch stayed whole


def test_built_in_periodic_generators_keep_whole_batches():
    rec = Recorder()
    ws = WatermarkStrategy.for_bounded_out_of_orderness(5).with_timestamp_assigner(lambda r: r[1])
    op = assigner_into(ws, None, rec)
    assert isinstance(op.emitter.generator, BoundedOutOfOrdernessWatermarks)
    op.process_batch(Batch([("k", t, 3) for t in range(100)]))
    assert rec.batches == 1 and not any(s[0] == "wm" for s in rec.seq)
    op.on_periodic(0)
    assert rec.seq[-1] == ("wm", 93)


def test_idleness_is_lifted_before_a_punctuated_watermark():
    rec = Recorder()
    op = assigner_into(punctuated_strategy(idleness=True), None, rec)
    clock = op.ctx.clock
    op.process_batch(Batch([("k", 10, 3)]))
    assert rec.seq == [("rec", ("k", 10, 3)), ("wm", 6)]
    for step in (0, 1, 70_000):  # no events for longer than the timeout: idle
        clock.now += step
        op.on_periodic(clock.now)
    assert rec.seq[-1] == ("idle", True)
    rec.seq.clear()
    op.process_batch(Batch([("k", 11, 2), ("k", 20, 6), ("k", 2, 2)]))
    assert rec.seq == [
        ("rec", ("k", 11, 2)),
        ("rec", ("k", 20, 6)),
        ("idle", False),
        ("wm", 16),
        ("rec", ("k", 2, 2)),
    ]


def test_an_error_in_on_event_names_the_record():
    class Boom(Punctuated):
        def on_event(self, event, event_timestamp, output):
            if event[2] == 7:
                raise ValueError("bad event")
            super().on_event(event, event_timestamp, output)

    ws = WatermarkStrategy.for_generator(Boom).with_timestamp_assigner(lambda r: r[1])
    op = assigner_into(ws, None, Recorder())
    with pytest.raises(Exception) as info:
        op.process_batch(Batch([("k", 1, 2), ("k", 2, 7)]))
    assert "('k', 2, 7)" in str(info.value) and "assign" in str(info.value)
    assert op.emitter.out.index is None and op.emitter.out.cuts == []


# -- differential, through the chain (no Ray) ----------------------------------------------------------


def feed(op, records: list, rng: random.Random) -> None:
    i = 0
    while i < len(records):
        n = rng.randint(1, 40)
        op.process_batch(Batch(records[i : i + n]))
        i += n
    op.process_watermark(MAX_TS)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("kind", ["tumbling", "sliding"])
def test_windows_late_output_and_lateness_firing_follow_per_event_watermarks(seed, kind):
    lateness = 6
    records = records_for(seed)
    if kind == "tumbling":
        assigner, size, slide = TumblingEventTimeWindows.of(10), 10, 10
    else:
        assigner, size, slide = SlidingEventTimeWindows.of(12, 5), 12, 5
    h = OperatorHarness(window_op(assigner, REDUCE, lateness), keyed=True)
    feed(assigner_into(punctuated_strategy(seed % 2 == 1), h), records, random.Random(seed))
    h.finish()
    got = Counter(h.output), Counter(h.side_output(LATE))
    want = reference(
        per_event_script(records), lambda ts: windows_of(ts, size, slide), lateness, ref_reduce
    )
    assert got == want
    assert sum(want[1].values()) > 0  # some records are late


def test_the_per_event_order_is_what_the_data_distinguishes():
    """Guards the differential tests above: on this data the per-batch order gives other late
    records and firings, so a runtime that emitted after the batch would fail them."""
    differ = 0
    for seed in range(8):
        records = records_for(seed)
        assign = lambda ts: windows_of(ts, 10, 10)  # noqa: E731
        a = reference(per_event_script(records), assign, 6, ref_reduce)
        b = reference(per_batch_script(records, 40), assign, 6, ref_reduce)
        differ += a != b
        differ += ref_timers(per_event_script(records)) != ref_timers(per_batch_script(records, 40))
    assert differ >= 12


@pytest.mark.parametrize("seed", range(8))
def test_event_time_timers_follow_per_event_watermarks(seed):
    records = records_for(seed + 50)
    op = KeyedProcessOperator("process", CountAndTimers(), lambda r: r[0])
    h = OperatorHarness(op, keyed=True)
    feed(assigner_into(punctuated_strategy(), h), records, random.Random(seed))
    h.finish()
    assert Counter(h.values()) == ref_timers(per_event_script(records))


# -- end to end on Ray -------------------------------------------------------------------------------


def job(p: int, chaining: bool, on_source: bool, records: list):
    env = StreamExecutionEnvironment()
    env.set_parallelism(p)
    env.get_config().batch_size = 32
    if not chaining:
        env.disable_operator_chaining()
    # one source subtask and one map subtask: each keyed subtask reads one channel, so the
    # interleaving of records and watermarks it sees is fixed
    if on_source:
        stream = env.from_source(CollectionSource(records), punctuated_strategy(True))
    else:
        stream = env.from_collection(records).set_parallelism(1)
        stream = stream.assign_timestamps_and_watermarks(punctuated_strategy()).set_parallelism(1)
    return env, stream.set_parallelism(1).map(lambda r: r).set_parallelism(1).key_by(lambda r: r[0])


pytest_ray = pytest.mark.usefixtures("ray_session")


@pytest_ray
@pytest.mark.parametrize(
    "p,chaining,on_source", [(1, True, True), (2, False, True), (2, True, False), (1, False, False)]
)
def test_windows_on_ray_follow_per_event_watermarks(p, chaining, on_source):
    lateness = 6
    records = records_for(100 + p)
    _, keyed = job(p, chaining, on_source, records)
    windowed = (
        keyed.window(TumblingEventTimeWindows.of(10))
        .allowed_lateness(lateness)
        .side_output_late_data(LATE)
        .reduce(
            lambda a, b: (a[0], max(a[1], b[1]), a[2] + b[2]),
            window_function=lambda key, ctx, agg: [(next(iter(agg)), ctx.window().max_timestamp())],
        )
    )
    out = windowed.map(lambda r: ("result", r)).union(
        windowed.get_side_output(LATE).map(lambda r: ("late", r))
    )
    got = list(out.execute_and_collect())
    results = Counter(r for tag, r in got if tag == "result")
    late = Counter((r, r[1]) for tag, r in got if tag == "late")
    want = reference(
        per_event_script(records), lambda ts: windows_of(ts, 10, 10), lateness, ref_reduce
    )
    assert (results, late) == want
    assert sum(late.values()) > 0


@pytest_ray
@pytest.mark.parametrize("p,chaining,on_source", [(2, True, True), (1, False, False)])
def test_keyed_process_timers_on_ray_follow_per_event_watermarks(p, chaining, on_source):
    records = records_for(200 + p)
    _, keyed = job(p, chaining, on_source, records)
    got = Counter(keyed.process(CountAndTimers()).execute_and_collect())
    assert got == ref_timers(per_event_script(records))


# -- the network: small batches cut by watermarks travel as one push -------------------------------


def test_batches_cut_by_watermarks_share_one_push_up_to_a_message():
    from raystream.runtime.elements import CheckpointBarrier, Watermark, WatermarkStatus
    from tests.test_channels_unit import FakeConsumer, make_sender, run

    async def body():
        consumer = FakeConsumer(auto_answer=True)
        s = make_sender(consumer, capacity=100, batch_size=3)
        for i in range(4):
            s.add([i], [i])
            s.add_control(Watermark(i))
        s.add_control(WatermarkStatus(idle=True))
        s.add_control(CheckpointBarrier(1, 0))
        s.add([9], [9])
        s.add_control(Watermark(9))
        await s.send_queued()
        got = []
        for m in consumer.messages:
            parts = m if isinstance(m, list) else [m]
            got.append([(p.values if isinstance(p, Batch) else p) for p in parts])
        assert got == [
            [[0], Watermark(0), [1], Watermark(1), [2]],  # three records: a full message
            [Watermark(2)],
            [[3]],  # a bundle ends with a batch
            [Watermark(3)],
            [WatermarkStatus(idle=True)],
            [CheckpointBarrier(1, 0)],
            [[9]],
            [Watermark(9)],
        ]
        assert s.records_sent == 5 and s.batches_sent == 5

    run(body)
