"""Event time end to end on a real Ray: watermark strategies, timers, windows, connect,
broadcast state, bad timestamps — at several parallelisms and with chaining on and off."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from raystream import (
    BroadcastProcessFunction,
    CoMapFunction,
    EventTimeSessionWindows,
    JobExecutionError,
    KeyedBroadcastProcessFunction,
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    MapStateDescriptor,
    OutputTag,
    SlidingEventTimeWindows,
    StreamExecutionEnvironment,
    TumblingEventTimeWindows,
    ValueStateDescriptor,
    WatermarkGenerator,
    WatermarkStrategy,
)
from raystream.core.time import MIN_TS
from raystream.operators import Boundedness, CollectionSource, Source, SplitReader

pytestmark = pytest.mark.usefixtures("ray_session")


def env_with(p: int, chaining: bool = True) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment()
    env.set_parallelism(p)
    if not chaining:
        env.disable_operator_chaining()
    return env


def events(seed: int, n: int = 400, keys: int = 5) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"k": f"u{rng.randrange(keys)}", "ts": i * 10 + rng.randint(0, 40), "v": rng.randint(1, 9)}
        for i in range(n)
    ]


def strategy(bound: int = 100) -> WatermarkStrategy:
    return WatermarkStrategy.for_bounded_out_of_orderness(bound).with_timestamp_assigner(
        lambda e: e["ts"]
    )


def window_sums(data: list[dict], size: int, slide: int | None = None) -> Counter:
    slide = slide or size
    sums: dict = {}
    for e in data:
        s = e["ts"] - e["ts"] % slide
        while s > e["ts"] - size:
            sums[(e["k"], s)] = sums.get((e["k"], s), 0) + e["v"]
            s -= slide
    return Counter({(k, s + size - 1, total): 1 for (k, s), total in sums.items()})


def to_window_result(key, ctx, elements):
    yield (key, ctx.window().max_timestamp(), sum(e["v"] for e in elements))


@pytest.mark.parametrize("p,chaining", [(1, True), (3, True), (3, False)])
def test_tumbling_and_sliding_windows_on_ray_match_the_reference(p, chaining):
    data = events(1)
    # bound larger than the disorder: nothing is late, so results are independent of timing
    env = env_with(p, chaining)
    stream = env.from_source(CollectionSource(data), strategy(), "events").key_by(lambda e: e["k"])
    tumbling = stream.window(TumblingEventTimeWindows.of(100)).process(to_window_result)
    sliding = stream.window(SlidingEventTimeWindows.of(100, 50)).reduce(
        lambda a, b: {"k": a["k"], "ts": a["ts"], "v": a["v"] + b["v"]},
        window_function=lambda key, ctx, els: [
            (key, ctx.window().max_timestamp(), next(iter(els))["v"], "s")
        ],
    )
    got = list(
        tumbling.map(lambda r: ("t",) + r)
        .union(sliding.map(lambda r: ("s",) + r[:3]))
        .execute_and_collect()
    )
    assert Counter(r[1:] for r in got if r[0] == "t") == window_sums(data, 100)
    assert Counter(r[1:] for r in got if r[0] == "s") == window_sums(data, 100, 50)


def test_session_windows_on_ray():
    data = [{"k": "a", "ts": t, "v": 1} for t in (1, 5, 9, 30, 31, 60)] + [
        {"k": "b", "ts": t, "v": 2} for t in (2, 50)
    ]
    env = env_with(2)
    out = (
        env.from_source(CollectionSource(data), strategy(1000))
        .key_by(lambda e: e["k"])
        .window(EventTimeSessionWindows.with_gap(10))
        .process(
            lambda key, ctx, els: [(key, ctx.window().start, ctx.window().end, len(list(els)))]
        )
    )
    assert sorted(out.execute_and_collect()) == [
        ("a", 1, 19, 3),
        ("a", 30, 41, 2),
        ("a", 60, 70, 1),
        ("b", 2, 12, 1),
        ("b", 50, 60, 1),
    ]


class Unmatched(KeyedProcessFunction):
    """Emits an order if no payment arrives within 100 ms of event time."""

    def open(self, ctx):
        self.order = ctx.get_state(ValueStateDescriptor("order"))

    def process_element(self, e, ctx):
        if e["type"] == "order":
            self.order.update(e)
            ctx.timer_service().register_event_time_timer(e["ts"] + 100)
        else:
            self.order.clear()

    def on_timer(self, ts, ctx):
        order = self.order.value()
        if order is not None:
            self.order.clear()
            yield (ctx.get_current_key(), ts, ctx.timestamp())


def test_event_time_timers_fire_once_the_watermark_passes():
    data = [
        {"id": 1, "type": "order", "ts": 0},
        {"id": 2, "type": "order", "ts": 10},
        {"id": 1, "type": "payment", "ts": 50},
        {"id": 3, "type": "order", "ts": 300},
    ]
    env = env_with(2)
    out = (
        env.from_source(CollectionSource(data), strategy(0))
        .key_by(lambda e: e["id"])
        .process(Unmatched())
    )
    assert sorted(out.execute_and_collect()) == [(2, 110, 110), (3, 400, 400)]


def test_processing_time_timers_follow_the_injected_clock(tmp_path):
    from raystream.testing import ManualClock

    clock = ManualClock(tmp_path / "clock", start_ms=1_000)

    class Ping(KeyedProcessFunction):
        def process_element(self, value, ctx):
            ctx.timer_service().register_processing_time_timer(
                ctx.timer_service().current_processing_time() + 500
            )
            yield ("seen", value)

        def on_timer(self, ts, ctx):
            yield ("timer", ctx.get_current_key(), ts)

    class OneThenWait(Source):
        boundedness = Boundedness.CONTINUOUS_UNBOUNDED

        def create_splits(self, parallelism):
            return ["x"]

        def open_split(self, split, offset):
            class R(SplitReader):
                def __init__(self):
                    self.offset = offset or 0

                def read(self, n):
                    if self.offset == 0:
                        self.offset = 1
                        return ["a"]
                    return []

            return R()

    env = env_with(1)
    env.get_config().clock = clock
    it = env.from_source(OneThenWait()).key_by(lambda v: v).process(Ping()).execute_and_collect()
    with it:
        assert next(it) == ("seen", "a")
        clock.advance(400)  # not yet due
        clock.advance(200)  # now past 1500
        assert next(it) == ("timer", "a", 1500)


class Enrich(KeyedCoProcessFunction):
    def open(self, ctx):
        self.profile = ctx.get_state(ValueStateDescriptor("profile"))

    def process_element1(self, event, ctx):
        profile = self.profile.value()
        yield (event["user"], event["action"], profile["tier"] if profile else None)

    def process_element2(self, profile, ctx):
        self.profile.update(profile)


def test_connect_key_by_and_keyed_co_process():
    env = env_with(3)
    profiles = env.from_collection([{"user": f"u{i}", "tier": i % 3} for i in range(20)])
    # events arrive after every profile: a second source gated by parallelism 1 ordering is not
    # guaranteed, so compare only events whose profile is known at the end
    acts = env.from_collection([{"user": f"u{i % 20}", "action": i} for i in range(60)])
    out = list(
        acts.connect(profiles)
        .key_by(lambda e: e["user"], lambda p: p["user"])
        .process(Enrich())
        .execute_and_collect()
    )
    assert len(out) == 60
    for user, _action, tier in out:
        assert tier in (None, int(user[1:]) % 3)


class Tag(CoMapFunction):
    def map1(self, v):
        return ("left", v)

    def map2(self, v):
        return ("right", v)


def test_connect_co_map():
    env = env_with(2)
    out = env.from_collection([1, 2]).connect(env.from_collection(["x"])).map(Tag())
    assert sorted(out.execute_and_collect()) == [("left", 1), ("left", 2), ("right", "x")]


RULES = MapStateDescriptor("rules")


class ApplyRules(BroadcastProcessFunction):
    def process_element(self, value, ctx):
        factor = ctx.get_broadcast_state(RULES).get("factor")
        yield (value, factor)

    def process_broadcast_element(self, rule, ctx):
        ctx.get_broadcast_state(RULES).put(rule[0], rule[1])


def test_broadcast_connect_runs_at_parallelism_three():
    # which records see the rule depends on arrival order across two sources; the semantics
    # (every subtask's copy, read-only data side) are pinned in tests/test_connect_unit.py
    env = env_with(3)
    rules = env.from_collection([("factor", 7)]).broadcast(RULES)
    data = env.from_sequence(1, 30)
    out = list(data.connect(rules).process(ApplyRules()).execute_and_collect())
    assert sorted(v for v, _ in out) == list(range(1, 31))
    assert {f for _, f in out} <= {None, 7}


class KeyedRules(KeyedBroadcastProcessFunction):
    def process_element(self, value, ctx):
        yield (ctx.get_current_key(), ctx.get_broadcast_state(RULES).get("x"))

    def process_broadcast_element(self, rule, ctx):
        ctx.get_broadcast_state(RULES).put("x", rule)


def test_keyed_broadcast_process_and_read_only_side():
    env = env_with(2)
    out = (
        env.from_collection(["a", "b"])
        .key_by(lambda v: v)
        .connect(env.from_collection([1]).broadcast(RULES))
        .process(KeyedRules())
    )
    got = sorted(out.execute_and_collect(), key=lambda t: t[0])
    assert [k for k, _ in got] == ["a", "b"]


def test_missing_timestamp_fails_with_operator_and_record():
    env = env_with(1)
    data = [{"ts": 1}, {"ts": None}, {"ts": 3}]
    env.from_source(
        CollectionSource(data), strategy().with_timestamp_assigner(lambda e: e["ts"]), "src"
    ).add_sink(lambda v: None)
    with pytest.raises(JobExecutionError) as info:
        env.execute()
    assert "'src'" in str(info.value) and "{'ts': None}" in str(info.value)


def test_invalid_timestamps_can_go_to_a_side_output():
    bad = OutputTag("bad")
    env = env_with(1)
    data = [{"ts": 1}, {"ts": "yesterday"}, {"ts": 3}, {"ts": float("nan")}]
    ws = (
        WatermarkStrategy.for_monotonous_timestamps()
        .with_timestamp_assigner(lambda e: e["ts"])
        .with_invalid_timestamps_to(bad)
    )
    stream = env.from_source(CollectionSource(data), ws)
    got = list(
        stream.map(lambda e: ("ok", e["ts"]))
        .union(stream.get_side_output(bad).map(lambda e: ("bad", str(e["ts"]))))
        .execute_and_collect()
    )
    assert sorted(got) == [("bad", "nan"), ("bad", "yesterday"), ("ok", 1), ("ok", 3)]


def test_assign_timestamps_and_watermarks_after_the_source():
    env = env_with(2)
    data = [(k, t) for t in range(0, 200, 7) for k in "ab"]
    out = (
        env.from_collection(data)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1])
        )
        .key_by(lambda r: r[0])
        .window(TumblingEventTimeWindows.of(50))
        .aggregate(CountAgg())
    )
    got = sorted(out.execute_and_collect())
    expected = sorted(Counter((k, t // 50) for k, t in data).values())
    assert sorted(got) == expected


class CountAgg:
    def create_accumulator(self):
        return 0

    def add(self, v, acc):
        return acc + 1

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return a + b


def test_window_all_runs_at_parallelism_one():
    env = env_with(3)
    data = [{"k": "x", "ts": t, "v": 1} for t in range(100)]
    out = (
        env.from_source(CollectionSource(data), strategy(0))
        .window_all(TumblingEventTimeWindows.of(25))
        .process(lambda ctx, els: [(ctx.window().start, len(list(els)))])
    )
    assert sorted(out.execute_and_collect()) == [(0, 25), (25, 25), (50, 25), (75, 25)]


# -- randomized differential windows on Ray, with deterministic (punctuated) watermarks ------------


class WatermarkEveryNRecords(WatermarkGenerator):
    """``max_ts − bound − 1`` right after every ``n``-th record (punctuated, from ``on_event``):
    watermarks sit at fixed positions in the stream, whatever batches the source reads (the
    task sizes its steps by time), so which records are late does not depend on timing."""

    def __init__(self, bound: int, n: int):
        self.bound = bound
        self.n = n
        self.seen = 0
        self.max_ts = None

    def on_event(self, event, event_timestamp, output):
        self.max_ts = event_timestamp if self.max_ts is None else max(self.max_ts, event_timestamp)
        self.seen += 1
        if self.seen % self.n == 0:
            output.emit_watermark(self.max_ts - self.bound - 1)

    def on_periodic_emit(self, output):
        pass


def scripted(records: list, every: int, bound: int) -> list:
    """The script the reference sees: the records, and after every ``every`` records the
    watermark (when it advances)."""
    script, max_ts, wm = [], None, MIN_TS
    for i, r in enumerate(records, 1):
        script.append(("rec", *r))
        max_ts = r[1] if max_ts is None else max(max_ts, r[1])
        if i % every == 0 and max_ts - bound - 1 > wm:
            wm = max_ts - bound - 1
            script.append(("wm", wm))
    return script


@pytest.mark.parametrize("p,chaining", [(1, True), (3, False)])
@pytest.mark.parametrize("kind", ["tumbling", "sliding", "session"])
def test_randomized_windows_with_late_events_on_ray(p, chaining, kind):
    from tests.test_windows import LATE, ref_reduce, reference, windows_of

    rng = random.Random(f"{p}-{chaining}-{kind}")  # str seeds are stable, hash() of str is not
    records, base = [], 0
    for _ in range(300):
        base += rng.randint(0, 3)
        records.append((f"k{rng.randrange(4)}", base + rng.randint(-25, 5), rng.randint(1, 9)))
    batch, bound, lateness = 16, 5, 4
    env = env_with(p, chaining)
    env.get_config().batch_size = batch
    ws = WatermarkStrategy.for_generator(
        lambda: WatermarkEveryNRecords(bound, batch)
    ).with_timestamp_assigner(lambda r: r[1])
    # one source subtask and one map subtask: each window subtask reads a single channel, so the
    # interleaving of records and watermarks it sees is fixed
    keyed = (
        env.from_source(CollectionSource(records), ws)
        .map(lambda r: r)
        .set_parallelism(1)
        .key_by(lambda r: r[0])
    )
    assigner = {
        "tumbling": TumblingEventTimeWindows.of(10),
        "sliding": SlidingEventTimeWindows.of(10, 4),
        "session": EventTimeSessionWindows.with_gap(6),
    }[kind]
    windowed = (
        keyed.window(assigner)
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
    script = scripted(records, batch, bound)
    if kind == "session":
        want = reference(script, None, lateness, ref_reduce, session_gap=6)
    else:
        size, slide = (10, 10) if kind == "tumbling" else (10, 4)
        want = reference(script, lambda ts: windows_of(ts, size, slide), lateness, ref_reduce)
    assert (results, late) == want
    assert sum(late.values()) > 0  # the data does produce late records


def test_windowed_field_aggregations():
    env = env_with(2)
    data = [("a", t, v) for t, v in [(1, 5), (2, 3), (12, 7)]] + [("b", 3, 1)]
    ws = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1])
    keyed = env.from_source(CollectionSource(data), ws).key_by(lambda r: r[0])
    window = TumblingEventTimeWindows.of(10)
    sums = keyed.window(window).sum(2).map(lambda r: ("sum", r))
    maxes = keyed.window(window).max_by(2).map(lambda r: ("max_by", r))
    got = sorted(sums.union(maxes).execute_and_collect())
    assert got == sorted(
        [
            ("sum", ("a", 1, 8)),
            ("sum", ("a", 12, 7)),
            ("sum", ("b", 3, 1)),
            ("max_by", ("a", 1, 5)),
            ("max_by", ("a", 12, 7)),
            ("max_by", ("b", 3, 1)),
        ]
    )


class _Busy(SplitReader):
    """One record every 5 ms, event time advancing 100 ms per record."""

    def __init__(self, offset):
        self.offset = offset or 0
        self.next_at = 0.0

    def read(self, max_records):
        import time as _time

        now = _time.monotonic()
        if now < self.next_at:
            return []
        self.next_at = now + 0.005
        self.offset += 1
        return [("busy", self.offset * 100)]


class _Quiet(SplitReader):
    """One record, then nothing ever again (an idle partition)."""

    def __init__(self, offset):
        self.offset = offset or 0

    def read(self, max_records):
        if self.offset == 0:
            self.offset = 1
            return [("quiet", 50)]
        return []


class OneBusyOneQuiet(Source):
    boundedness = Boundedness.CONTINUOUS_UNBOUNDED

    def create_splits(self, parallelism):
        return ["busy", "quiet"]

    def open_split(self, split, offset):
        return _Busy(offset) if split == "busy" else _Quiet(offset)


def test_an_idle_source_subtask_does_not_hold_back_windows():
    env = env_with(2)
    ws = (
        WatermarkStrategy.for_monotonous_timestamps()
        .with_timestamp_assigner(lambda r: r[1])
        .with_idleness(200)
    )
    counts = (
        env.from_source(OneBusyOneQuiet(), ws)
        .key_by(lambda r: r[0])
        .window(TumblingEventTimeWindows.of(1000))
        .process(lambda key, ctx, els: [(key, ctx.window().start, len(list(els)))])
        .set_parallelism(1)
    )
    # without idleness the quiet subtask would pin the watermark at 49 and nothing would fire
    got = counts.execute_and_collect(limit=3)
    busy = [start for key, start, _n in got if key == "busy"]
    assert len(got) == 3 and busy[0] == 0 and busy == sorted(busy)
    assert all(n == 10 for key, start, n in got if key == "busy" and start > 0)
