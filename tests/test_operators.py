"""Every DataStream operator through the public API on a real local Ray, against plain Python."""

from __future__ import annotations

from collections import Counter, namedtuple

import pytest

from raystream import (
    FilterFunction,
    FlatMapFunction,
    KeyedProcessFunction,
    MapFunction,
    OutputTag,
    ProcessFunction,
    ReduceFunction,
    StreamExecutionEnvironment,
    ValueStateDescriptor,
)

pytestmark = pytest.mark.usefixtures("ray_session")


def make_env(parallelism: int = 2, **config) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    for k, v in config.items():
        setattr(env.get_config(), k, v)
    return env


def test_map_filter_flat_map_with_plain_callables():
    env = make_env(2)
    out = (
        env.from_sequence(1, 1000)
        .map(lambda x: x * 3)
        .filter(lambda x: x % 2 == 0)
        .flat_map(lambda x: [x, -x])
        .execute_and_collect()
    )
    expected = [y for x in range(1, 1001) for y in (x * 3, -x * 3) if (x * 3) % 2 == 0]
    assert Counter(out) == Counter(expected)


class Triple(MapFunction):
    def open(self, runtime_context):
        self.factor = 3
        self.subtasks = runtime_context.get_number_of_parallel_subtasks()

    def map(self, value):
        return (value * self.factor, self.subtasks)


class Even(FilterFunction):
    def filter(self, value):
        return value[0] % 2 == 0


class Twice(FlatMapFunction):
    def flat_map(self, value):
        yield value
        yield value


def test_function_objects_get_open_and_runtime_context():
    env = make_env(3)
    out = list(
        env.from_sequence(0, 99)
        .map(Triple())
        .filter(Even())
        .flat_map(Twice())
        .execute_and_collect()
    )
    assert Counter(out) == Counter(
        [(x * 3, 3) for x in range(100) if x * 3 % 2 == 0 for _ in range(2)]
    )


def test_from_collection_keeps_order_at_parallelism_one():
    env = make_env(1)
    data = [f"r{i}" for i in range(5000)]
    assert list(env.from_collection(data).execute_and_collect()) == data


def test_keyed_running_reduce_emits_every_intermediate_aggregate():
    env = make_env(4)
    data = [(f"k{i % 7}", i) for i in range(2000)]
    out = env.from_collection(data).key_by(lambda r: r[0]).reduce(lambda a, b: (a[0], a[1] + b[1]))
    got = list(out.execute_and_collect())
    # reference: per key, the running sums in input order (from_collection is ordered and
    # channels are FIFO, so every key sees its records in order)
    expected, acc = [], {}
    for k, v in data:
        acc[k] = acc.get(k, 0) + v
        expected.append((k, acc[k]))
    assert Counter(got) == Counter(expected)


def test_collection_read_in_parallel_slices_folds_every_record_once():
    env = make_env(3)
    data = [(f"k{i % 5}", i + 1) for i in range(3000)]
    stream = env.from_collection(data).map(lambda r: r)  # no keyed edge at the source
    out = stream.key_by(lambda r: r[0]).reduce(lambda a, b: (a[0], a[1] + b[1]))
    assert "task 'Collection Source -> Map' x3" in env.get_execution_plan()
    got = list(out.execute_and_collect())
    # three source subtasks read contiguous thirds, interleaved at the reduce: per key, the
    # running sums grow by one record's value each (values are positive), so the first sum and
    # the steps between sorted sums are exactly the key's values
    for key in {k for k, _ in data}:
        sums = sorted(v for k, v in got if k == key)
        steps = [sums[0]] + [b - a for a, b in zip(sums, sums[1:])]
        assert Counter(steps) == Counter(v for k, v in data if k == key)


class SumReduce(ReduceFunction):
    def reduce(self, a, b):
        return a + b


def test_reduce_function_object_and_scalar_sum():
    env = make_env(2)
    got = list(
        env.from_collection(list(range(10)))
        .key_by(lambda x: x % 2)
        .reduce(SumReduce())
        .execute_and_collect()
    )
    assert sorted(got) == sorted([0, 1, 2, 4, 6, 9, 12, 16, 20, 25])


Trade = namedtuple("Trade", "sym price qty")


@pytest.mark.parametrize("kind", ["sum", "min", "max", "min_by", "max_by"])
def test_field_aggregations_match_flink_semantics(kind):
    data = [
        ("a", 5, "x"),
        ("b", 1, "y"),
        ("a", 3, "z"),
        ("a", 9, "w"),
        ("b", 1, "v"),
        ("b", 0, "u"),
    ]
    env = make_env(2)
    got = list(
        getattr(env.from_collection(data).key_by(lambda r: r[0]), kind)(1).execute_and_collect()
    )
    expected, acc = [], {}
    for r in data:
        k = r[0]
        if k not in acc:
            acc[k] = r
        else:
            a = acc[k]
            if kind == "sum":
                acc[k] = (a[0], a[1] + r[1], a[2])  # other fields stay those of the first record
            elif kind == "min":
                acc[k] = (a[0], min(a[1], r[1]), a[2])
            elif kind == "max":
                acc[k] = (a[0], max(a[1], r[1]), a[2])
            elif kind == "min_by":
                acc[k] = r if r[1] < a[1] else a  # ties keep the first
            else:
                acc[k] = r if r[1] > a[1] else a
        expected.append(acc[k])
    assert Counter(got) == Counter(expected)


def test_aggregations_by_name_on_dicts_and_namedtuples():
    env = make_env(2)
    dicts = [{"k": i % 3, "v": i} for i in range(30)]
    got = list(env.from_collection(dicts).key_by(lambda d: d["k"]).sum("v").execute_and_collect())
    finals = {}
    for d in got:
        finals[d["k"]] = max(finals.get(d["k"], -1), d["v"])
    assert finals == {k: sum(i for i in range(30) if i % 3 == k) for k in range(3)}

    env = make_env(2)
    trades = [Trade("x", p, 1) for p in (5, 2, 8, 1)]
    got = list(
        env.from_collection(trades).key_by(lambda t: t.sym).max_by("price").execute_and_collect()
    )
    assert got[-1] == Trade("x", 8, 1) or Trade("x", 8, 1) in got
    assert sorted(t.price for t in got) == [5, 5, 8, 8]


class CountPerKey(KeyedProcessFunction):
    def open(self, runtime_context):
        self.count = runtime_context.get_state(ValueStateDescriptor("count"))

    def process_element(self, value, ctx):
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        yield (ctx.get_current_key(), n)


def test_keyed_process_function_with_value_state():
    env = make_env(3)
    words = ["a", "b", "a", "c", "b", "a"] * 50
    got = list(
        env.from_collection(words).key_by(lambda w: w).process(CountPerKey()).execute_and_collect()
    )
    expected = Counter()
    ref = []
    for w in words:
        expected[w] += 1
        ref.append((w, expected[w]))
    assert Counter(got) == Counter(ref)


LATE = OutputTag("odd")


class SplitOdd(ProcessFunction):
    def process_element(self, value, ctx):
        if value % 2:
            ctx.output(LATE, f"odd:{value}")
        else:
            yield value


def test_side_outputs_from_process_function():
    env = make_env(2)
    main = env.from_sequence(0, 99).process(SplitOdd())
    odd = main.get_side_output(LATE).map(lambda s: s.upper())
    collected = main.map(lambda v: ("main", v)).union(odd.map(lambda s: ("side", s)))
    got = list(collected.execute_and_collect())
    assert Counter(got) == Counter(
        [("main", v) for v in range(0, 100, 2)] + [("side", f"ODD:{v}") for v in range(1, 100, 2)]
    )


def test_process_with_plain_callable_and_keyed_plain_callable():
    env = make_env(2)
    got = list(env.from_sequence(1, 10).process(lambda v, ctx: [v, v * 10]).execute_and_collect())
    assert sorted(got) == sorted([v for x in range(1, 11) for v in (x, x * 10)])
    env = make_env(2)
    got = list(
        env.from_sequence(1, 10)
        .key_by(lambda v: v % 2)
        .process(lambda v, ctx: [(ctx.get_current_key(), v)])
        .execute_and_collect()
    )
    assert sorted(got) == sorted((v % 2, v) for v in range(1, 11))


def test_union_of_three_streams():
    env = make_env(2)
    a = env.from_collection([1, 2, 3])
    b = env.from_sequence(10, 12)
    c = env.from_collection(["x"])
    got = list(a.union(b, c).map(str).execute_and_collect())
    assert sorted(got) == sorted(["1", "2", "3", "10", "11", "12", "x"])


def test_stream_consumed_by_two_operators_sees_every_record_twice():
    env = make_env(2)
    src = env.from_sequence(1, 100)
    doubled = src.map(lambda x: 2 * x)
    negated = src.map(lambda x: -x)
    got = list(doubled.union(negated).execute_and_collect())
    assert Counter(got) == Counter([2 * x for x in range(1, 101)] + [-x for x in range(1, 101)])


def test_execute_returns_job_result_with_operator_counts():
    env = make_env(2)
    env.from_sequence(1, 1000).filter(lambda x: x % 10 == 0).name("tens").add_sink(
        lambda v: None
    ).name("devnull")
    result = env.execute("counting")
    assert result.get_job_id()
    assert result.get_net_runtime() > 0
    assert result.records_in("tens") == 1000
    assert result.records_out("tens") == 100
    assert result.records_in("devnull") == 100


def test_execute_and_collect_with_limit_stops_an_unbounded_job():
    env = make_env(2)
    got = env.from_sequence(0, None).map(lambda x: x + 1).execute_and_collect(limit=25)
    assert len(got) == 25
    assert all(isinstance(v, int) and v >= 1 for v in got)


def test_print_sink_prefixes_like_flink():
    import io

    from raystream.operators import PrintSink, SinkContext
    from raystream.runtime.elements import Batch

    out = io.StringIO()
    PrintSink(stream=out).create_writer(SinkContext("print", 1, 4)).write(Batch([1, "x"]))
    PrintSink("ids", stream=out).create_writer(SinkContext("print", 0, 1)).write(Batch([2]))
    PrintSink(stream=out).create_writer(SinkContext("print", 0, 1)).write(Batch([3]))
    assert out.getvalue() == "2> 1\n2> x\nids> 2\n3\n"
