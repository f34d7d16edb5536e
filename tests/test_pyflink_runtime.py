"""PyFlink runtime behaviours (issue 9 §2): ``yield output_tag, value`` side outputs, keyed state
in map/flat_map/filter/reduce on a keyed stream, streams reused across ``execute()`` calls, and
two-argument timestamp assigners. Unit tests through ``OperatorHarness``, then jobs on Ray."""

from __future__ import annotations

import functools
import random
from collections import Counter

import pytest

from raystream import (
    Duration,
    FilterFunction,
    FlatMapFunction,
    GraphError,
    KeyedBroadcastProcessFunction,
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    MapFunction,
    MapStateDescriptor,
    OutputTag,
    ProcessAllWindowFunction,
    ProcessFunction,
    ProcessJoinFunction,
    ProcessWindowFunction,
    ReduceFunction,
    StreamExecutionEnvironment,
    TimestampAssigner,
    TumblingEventTimeWindows,
    ValueStateDescriptor,
    WatermarkStrategy,
)
from raystream.checkpointing import HashMapStateBackend, LmdbStateBackend
from raystream.core.time import MIN_TS
from raystream.operators.co import CoProcessOperator
from raystream.operators.keyed import ReduceOperator
from raystream.operators.keyed_functions import (
    KeyedFilterOperator,
    KeyedFlatMapOperator,
    KeyedMapOperator,
    needs_current_key,
)
from raystream.operators.process import KeyedProcessOperator, ProcessOperator
from raystream.operators.stateless import FlatMapOperator
from raystream.testing import OperatorHarness
from tests.chaos_jobs import Collector, PacedEvents, wait_until

ODD = OutputTag("odd")
BIG = OutputTag("big")
RULES = MapStateDescriptor("rules", None, None)


def make_env(parallelism: int = 2) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    return env


# -- 1. yield output_tag, value ----------------------------------------------------------------


class SplitByYield(ProcessFunction):
    """Even values to the main output, odd ones to ``ODD`` — PyFlink's way."""

    def process_element(self, value, ctx):
        if value % 2:
            yield ODD, f"odd:{value}"
        else:
            yield value


def test_yielded_tag_pair_goes_to_the_side_output_with_the_record_timestamp():
    h = OperatorHarness(ProcessOperator("p", SplitByYield()))
    h.process([1, 2, 3, 4], [10, 20, 30, 40])
    assert h.output == [(2, 20), (4, 40)]
    assert h.side_output(ODD) == [("odd:1", 10), ("odd:3", 30)]


def test_only_pairs_whose_first_item_is_an_output_tag_are_routed():
    def fn(value, ctx):
        return [("odd", value), (ODD, value, "three items"), [ODD, value], (ODD, value)]

    h = OperatorHarness(ProcessOperator("p", fn))
    h.process([7])
    assert h.values() == [("odd", 7), (ODD, 7, "three items"), [ODD, 7]]
    assert h.side_output(ODD) == [(7, None)]


def test_flat_map_is_not_a_process_function_and_does_not_route():
    h = OperatorHarness(FlatMapOperator("fm", lambda v: [(ODD, v)]))
    h.process([1])
    assert h.values() == [(ODD, 1)]
    assert h.side_output(ODD) == []


class TimerSide(KeyedProcessFunction):
    def process_element(self, value, ctx):
        ctx.timer_service().register_event_time_timer(ctx.timestamp() + 5)
        yield value

    def on_timer(self, timestamp, ctx):
        yield ODD, ("timer", ctx.get_current_key(), timestamp)
        yield ("fired", timestamp)


def test_keyed_process_function_yields_side_outputs_from_process_element_and_on_timer():
    op = KeyedProcessOperator("kp", TimerSide(), key_selector=lambda v: v % 3)
    h = OperatorHarness(op, keyed=True)
    h.process([1, 2], [100, 101])
    h.watermark(106)
    assert h.values() == [1, 2, ("fired", 105), ("fired", 106)]
    assert h.side_output(ODD) == [(("timer", 1, 105), 105), (("timer", 2, 106), 106)]


class CoSide(KeyedCoProcessFunction):
    def process_element1(self, value, ctx):
        yield ODD, ("left", value)

    def process_element2(self, value, ctx):
        yield BIG, ("right", value)
        yield value


def test_co_process_function_routes_both_inputs():
    op = CoProcessOperator("co", CoSide(), key_selectors=(lambda v: v, lambda v: v))
    h = OperatorHarness(op, keyed=True)
    h.process([1]).process2([2])
    assert h.values() == [2]
    assert h.side_output(ODD) == [(("left", 1), None)]
    assert h.side_output(BIG) == [(("right", 2), None)]


class BroadcastSide(KeyedBroadcastProcessFunction):
    def process_element(self, value, ctx):
        factor = ctx.get_broadcast_state(RULES).get("factor")
        yield value * factor

    def process_broadcast_element(self, value, ctx):
        ctx.get_broadcast_state(RULES).put(value[0], value[1])
        yield ODD, ("rule", value)


def test_broadcast_process_function_routes_from_process_broadcast_element():
    op = CoProcessOperator(
        "b", BroadcastSide(), key_selectors=(lambda v: v, lambda v: v), broadcast_names=("rules",)
    )
    h = OperatorHarness(op, keyed=True)
    h.process2([("factor", 3)]).process([5])
    assert h.values() == [15]
    assert h.side_output(ODD) == [(("rule", ("factor", 3)), None)]


class WindowSide(ProcessWindowFunction):
    def process(self, key, context, elements):
        total = sum(v for _, v in elements)
        if total > 10:
            yield BIG, (key, context.window().start, total)
        else:
            yield (key, context.window().start, total)


class AllWindowSide(ProcessAllWindowFunction):
    def process(self, context, elements):
        values = list(elements)
        yield BIG, (context.window().start, max(values))
        yield (context.window().start, len(values))


class JoinSide(ProcessJoinFunction):
    def process_element(self, left, right, ctx):
        if left[1] + right[1] > 10:
            yield BIG, (left, right)
        else:
            yield (left, right)


@pytest.mark.usefixtures("ray_session")
class TestSideOutputsOnRay:
    def test_process_function_side_output_is_not_on_the_main_output(self):
        env = make_env(2)
        main = env.from_sequence(0, 99).process(SplitByYield())
        side = main.get_side_output(ODD)
        got = list(
            main.map(lambda v: ("main", v))
            .union(side.map(lambda s: ("side", s)))
            .execute_and_collect()
        )
        assert Counter(got) == Counter(
            [("main", v) for v in range(0, 100, 2)]
            + [("side", f"odd:{v}") for v in range(1, 100, 2)]
        )

    def test_process_window_function_side_output(self):
        rng = random.Random(7)
        events = [(rng.choice("abc"), rng.randint(0, 6), t * 100) for t in range(200)]
        env = make_env(2)
        strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
            lambda e: e[2]
        )
        main = (
            env.from_collection(events)
            .assign_timestamps_and_watermarks(strategy)
            .map(lambda e: (e[0], e[1]))
            .key_by(lambda e: e[0])
            .window(TumblingEventTimeWindows.of(Duration.of_seconds(1)))
            .process(WindowSide())
        )
        side = main.get_side_output(BIG)
        got = list(
            main.map(lambda r: ("main", r))
            .union(side.map(lambda r: ("big", r)))
            .execute_and_collect()
        )
        sums: Counter = Counter()
        for k, v, ts in events:
            sums[(k, ts - ts % 1000)] += v
        expected = [("big" if s > 10 else "main", (k, start, s)) for (k, start), s in sums.items()]
        assert Counter(got) == Counter(expected)
        assert any(tag == "big" for tag, _ in got) and any(tag == "main" for tag, _ in got)

    def test_process_all_window_function_side_output(self):
        env = make_env(2)
        strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
            lambda v: v * 10
        )
        main = (
            env.from_sequence(0, 249)
            .assign_timestamps_and_watermarks(strategy)
            .window_all(TumblingEventTimeWindows.of(Duration.of_millis(1000)))
            .process(AllWindowSide())
        )
        side = main.get_side_output(BIG)
        got = list(
            main.map(lambda r: ("main", r))
            .union(side.map(lambda r: ("big", r)))
            .execute_and_collect()
        )
        expected = [("main", (0, 100)), ("main", (1000, 100)), ("main", (2000, 50))]
        expected += [("big", (0, 99)), ("big", (1000, 199)), ("big", (2000, 249))]
        assert Counter(got) == Counter(expected)

    def test_process_join_function_side_output(self):
        left = [("k", i, i * 10) for i in range(10)]
        right = [("k", j, j * 10 + 5) for j in range(10)]
        env = make_env(1)
        stamped = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
            lambda e: e[2]
        )
        a = env.from_collection(left).assign_timestamps_and_watermarks(stamped)
        b = env.from_collection(right).assign_timestamps_and_watermarks(stamped)
        main = (
            a.key_by(lambda e: e[0])
            .interval_join(b.key_by(lambda e: e[0]))
            .between(Duration.of_millis(0), Duration.of_millis(10))
            .process(JoinSide())
        )
        side = main.get_side_output(BIG)
        got = list(
            main.map(lambda r: ("main", r))
            .union(side.map(lambda r: ("big", r)))
            .execute_and_collect()
        )
        expected = [
            ("big" if lv[1] + rv[1] > 10 else "main", (lv, rv))
            for lv in left
            for rv in right
            if lv[2] <= rv[2] <= lv[2] + 10
        ]
        assert Counter(got) == Counter(expected)
        assert len(expected) > 5


# -- 2. keyed state in map / flat_map / filter / reduce ----------------------------------------


class CountPerKey(MapFunction):
    def open(self, runtime_context):
        self.count = runtime_context.get_state(ValueStateDescriptor("count"))

    def map(self, value):
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        return (value[0], n, value[1])


class FirstTwoPerKey(FilterFunction):
    def open(self, runtime_context):
        self.seen = runtime_context.get_state(ValueStateDescriptor("seen"))

    def filter(self, value):
        n = (self.seen.value() or 0) + 1
        self.seen.update(n)
        return n <= 2


class RepeatByCount(FlatMapFunction):
    def open(self, runtime_context):
        self.count = runtime_context.get_state(ValueStateDescriptor("count"))

    def flat_map(self, value):
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        for _ in range(n):
            yield value


class SumWithCalls(ReduceFunction):
    """Sums values; also counts its own calls per key in keyed state."""

    def open(self, runtime_context):
        self.calls = runtime_context.get_state(ValueStateDescriptor("calls"))

    def reduce(self, a, b):
        calls = (self.calls.value() or 0) + 1
        self.calls.update(calls)
        return (a[0], a[1] + b[1], calls)


def test_needs_current_key_is_decided_by_open_or_initialize_state():
    class PlainMap(MapFunction):
        def map(self, value):
            return value

    class WithInit:
        def initialize_state(self, context):
            pass

        def __call__(self, value):
            return value

    assert needs_current_key(CountPerKey())
    assert needs_current_key(WithInit())
    assert not needs_current_key(PlainMap())
    assert not needs_current_key(lambda v: v)
    assert not needs_current_key(len)
    assert not needs_current_key(CountPerKey)


def brute_force_counts(values: list, key) -> list:
    counts: Counter = Counter()
    out = []
    for v in values:
        counts[key(v)] += 1
        out.append((v[0], counts[key(v)], v[1]))
    return out


@pytest.mark.parametrize(
    "backend", [HashMapStateBackend(), LmdbStateBackend()], ids=["memory", "lmdb"]
)
def test_keyed_map_state_follows_the_record_key_and_survives_a_snapshot(backend, tmp_path):
    rng = random.Random(3)
    values = [(rng.choice("abcde"), i) for i in range(300)]
    if isinstance(backend, LmdbStateBackend):
        backend = LmdbStateBackend(str(tmp_path / "lmdb"))
    factory = functools.partial(KeyedMapOperator, fn=CountPerKey(), key_selector=lambda v: v[0])
    h = OperatorHarness(factory("m"), keyed=True, state_backend=backend)
    h.process(values[:150])
    snap = h.snapshot(1)
    h.process(values[150:])
    assert h.values() == brute_force_counts(values, lambda v: v[0])
    restored = OperatorHarness(factory("m"), keyed=True, restored=snap)
    restored.process(values[150:])
    assert restored.values() == brute_force_counts(values, lambda v: v[0])[150:]


def test_keyed_filter_flat_map_and_reduce_use_state_of_the_record_key():
    values = ["a", "b", "a", "a", "b", "c", "a"]
    h = OperatorHarness(KeyedFilterOperator("f", FirstTwoPerKey(), lambda v: v), keyed=True)
    h.process(values)
    assert h.values() == ["a", "b", "a", "b", "c"]
    h = OperatorHarness(KeyedFlatMapOperator("fm", RepeatByCount(), lambda v: v), keyed=True)
    h.process(values)
    seen: Counter = Counter()
    expected = []
    for v in values:
        seen[v] += 1
        expected.extend([v] * seen[v])
    assert h.values() == expected
    pairs = [(v, 1) for v in values]
    h = OperatorHarness(ReduceOperator("r", SumWithCalls(), lambda v: v[0]), keyed=True)
    h.process(pairs)
    # the first record of a key is the aggregate as is (no reduce call, as in Flink)
    assert h.values() == [
        ("a", 1),
        ("b", 1),
        ("a", 2, 1),
        ("a", 3, 2),
        ("b", 2, 1),
        ("c", 1),
        ("a", 4, 3),
    ]


@pytest.mark.usefixtures("ray_session")
class TestKeyedStateOnRay:
    def test_keyed_map_filter_flat_map_against_brute_force(self):
        rng = random.Random(11)
        values = [(rng.choice("abcdefgh"), i) for i in range(2000)]
        env = make_env(2)
        keyed = env.from_collection(values).key_by(lambda v: v[0])
        counted = keyed.map(CountPerKey())
        firsts = keyed.filter(FirstTwoPerKey()).map(lambda v: ("first", v))
        plain = keyed.map(lambda v: ("plain", v))  # no open(): the stateless operator
        got = list(counted.union(firsts, plain).execute_and_collect())
        got_counts = [r for r in got if r[0] not in ("first", "plain")]
        # per key the counts are 1..n in input order (one source subtask: order kept per key)
        assert sorted(got_counts) == sorted(brute_force_counts(values, lambda v: v[0]))
        per_key: dict = {}
        for v in values:
            per_key.setdefault(v[0], []).append(v)
        expected_firsts = [("first", v) for vs in per_key.values() for v in vs[:2]]
        assert Counter(r for r in got if r[0] == "first") == Counter(expected_firsts)
        assert Counter(r for r in got if r[0] == "plain") == Counter(("plain", v) for v in values)

    def test_keyed_reduce_with_state_against_brute_force(self):
        rng = random.Random(5)
        values = [(rng.choice("xyz"), rng.randint(1, 9)) for _ in range(500)]
        env = make_env(2)
        got = list(
            env.from_collection(values)
            .key_by(lambda v: v[0])
            .reduce(SumWithCalls())
            .execute_and_collect()
        )
        expected = []
        acc: dict = {}
        calls: Counter = Counter()
        for k, v in values:
            if k not in acc:
                acc[k] = (k, v)
            else:
                calls[k] += 1
                acc[k] = (k, acc[k][1] + v, calls[k])
            expected.append(acc[k])
        assert Counter(got) == Counter(expected)

    def test_keyed_map_state_survives_a_savepoint_restore(self, tmp_path):
        n = 8000

        def job(rate: float):
            env = make_env(2)
            env.enable_checkpointing(600_000)
            env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / f"c{rate}"))
            return (
                env.from_source(PacedEvents(n, rate), source_name="events")
                .key_by(lambda e: e[0])
                .map(CountPerKey())
                .uid("count")
                .name("count")
            )

        col = Collector(job(3000).execute_and_collect("before"))

        def seen() -> int:
            return sum(
                t.get("operators", {}).get("count", {}).get("records_in", 0)
                for t in col.client.metrics()["tasks"]
            )

        wait_until(lambda: seen() >= 1500, what="part of the input")
        path = str(tmp_path / "sp")
        col.client.stop_with_savepoint(path)
        before = col.join()
        assert 0 < len(before) < n
        after = list(job(50_000).execute_and_collect("after", savepoint_path=path))
        got = before + after
        assert sorted(v[2] for v in got) == list(range(n))
        per_key: dict = {}
        for key, count, _ in got:
            per_key.setdefault(key, []).append(count)
        for key, counts in per_key.items():
            assert sorted(counts) == list(range(1, len(counts) + 1)), key


# -- 4. two-argument timestamp assigners -------------------------------------------------------


class FromField(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp):
        return value[1] + (0 if record_timestamp == MIN_TS else record_timestamp)


def _extractor(assigner):
    return WatermarkStrategy.no_watermarks().with_timestamp_assigner(assigner).create_extractor()


def test_assigner_shapes_are_decided_at_construction():
    seen = []

    def two(value, record_ts):
        seen.append(record_ts)
        return value * 10

    assert _extractor(lambda v: v + 1)(1, 99) == 2
    assert _extractor(two)(3, 77) == 30 and seen == [77]
    assert _extractor(lambda v, ts: ts)(0, 5) == 5
    assert _extractor(lambda v, *rest: len(rest))(0, 5) == 1
    assert _extractor(lambda v, scale=2: v * scale)(4, 1000) == 8  # optional 2nd: one argument
    assert _extractor(FromField())(("x", 4), 10) == 14
    with pytest.raises(TypeError, match="takes 3 arguments"):
        WatermarkStrategy.no_watermarks().with_timestamp_assigner(lambda a, b, c: 0)
    with pytest.raises(TypeError, match="TimestampAssigner"):
        WatermarkStrategy.no_watermarks().with_timestamp_assigner(42)


@pytest.mark.usefixtures("ray_session")
class TestTimestampAssignersOnRay:
    @pytest.mark.parametrize("form", ["one", "two", "subclass"])
    def test_forms_give_the_same_windows(self, form):
        rng = random.Random(9)
        events = [(rng.choice("pq"), t * 250 + rng.randint(0, 100)) for t in range(80)]
        assigner = {
            "one": lambda e: e[1],
            "two": lambda e, record_ts: e[1] if record_ts == MIN_TS else -1,
            "subclass": FromField(),
        }[form]
        env = make_env(2)
        strategy = WatermarkStrategy.for_bounded_out_of_orderness(
            Duration.of_millis(0)
        ).with_timestamp_assigner(assigner)
        got = list(
            env.from_collection(events)
            .assign_timestamps_and_watermarks(strategy)
            .map(lambda e: (e[0], 1))
            .key_by(lambda e: e[0])
            .window(TumblingEventTimeWindows.of(Duration.of_seconds(2)))
            .reduce(lambda a, b: (a[0], a[1] + b[1]))
            .execute_and_collect()
        )
        per_window: Counter = Counter((k, ts // 2000) for k, ts in events)
        assert Counter(got) == Counter((k, n) for (k, _), n in per_window.items())

    def test_record_timestamp_is_the_previous_assignment(self):
        env = make_env(1)
        first = WatermarkStrategy.no_watermarks().with_timestamp_assigner(lambda e: e * 100)
        second = WatermarkStrategy.no_watermarks().with_timestamp_assigner(
            lambda e, record_ts: record_ts + 1
        )

        class Stamp(ProcessFunction):
            def process_element(self, value, ctx):
                yield (value, ctx.timestamp())

        got = list(
            env.from_collection([1, 2, 3])
            .assign_timestamps_and_watermarks(first)
            .assign_timestamps_and_watermarks(second)
            .process(Stamp())
            .execute_and_collect()
        )
        assert sorted(got) == [(1, 101), (2, 201), (3, 301)]


# -- 3. streams reused across execute() ---------------------------------------------------------


@pytest.mark.usefixtures("ray_session")
class TestReuseAcrossExecute:
    def test_a_stream_defined_before_execute_runs_again_in_the_next_job(self):
        env = make_env(2)
        doubled = env.from_collection(list(range(20))).map(lambda v: v * 2)
        first = list(doubled.execute_and_collect("first"))
        second = list(doubled.map(lambda v: v + 1).execute_and_collect("second"))
        assert sorted(first) == [v * 2 for v in range(20)]
        assert sorted(second) == [v * 2 + 1 for v in range(20)]

    def test_second_execute_with_nothing_new_says_the_first_consumed_the_graph(self):
        env = make_env(1)
        env.from_collection([1, 2]).add_sink(lambda v: None)
        env.execute("once")
        with pytest.raises(GraphError, match="execute"):
            env.execute("twice")


def test_execute_of_a_fresh_environment_still_says_add_a_source():
    with pytest.raises(GraphError, match="no operators"):
        StreamExecutionEnvironment().execute("empty")
