"""PyFlink's value types without Ray: Row (PyFlink 2.3 semantics), Types, Duration, the generic
function classes and their nested contexts, and the ``pyflink.* -> raystream.*`` module mirror."""

from __future__ import annotations

import datetime as dt
import importlib
import pickle

import cloudpickle
import pytest

from raystream import Duration, Row, RowKind, TypeInformation, Types, WatermarkStrategy
from raystream.api.typeinfo import RowConverter, row_converter
from raystream.core.keys import stable_hash
from raystream.core.time import to_millis

# -- Row -------------------------------------------------------------------------------------------


def test_row_positional_and_named_access():
    r = Row(1, "a")
    assert r[0] == 1 and r[1] == "a" and r[0:2] == [1, "a"] and len(r) == 2 and list(r) == [1, "a"]
    n = Row(name="Alice", age=11)  # fields in the order given (PyFlink 2.x)
    assert (n.name, n.age, n["name"], n[1]) == ("Alice", 11, "Alice", 11)
    assert n.as_dict() == {"name": "Alice", "age": 11}
    assert n.get_fields_by_names(["age", "name"]) == [11, "Alice"]
    assert "name" in n and "Alice" not in n  # named rows: membership of field names
    assert "a" in r  # positional rows: membership of values
    with pytest.raises(AttributeError):
        _ = n.missing
    with pytest.raises(KeyError):
        _ = n["missing"]
    with pytest.raises(ValueError):
        Row(1, name="x")
    with pytest.raises(TypeError):
        r.as_dict()


def test_row_is_mutable_by_index_and_name_but_not_by_attribute():
    n = Row(name="Alice", age=11)
    n[1] = 12
    n["name"] = "Bob"
    assert n == Row(name="Bob", age=12)
    with pytest.raises(AttributeError):
        n.age = 13  # PyFlink refuses attribute assignment too
    assert n.age == 12


def test_row_equality_hash_and_repr_follow_pyflink():
    assert Row(1, "a") == Row(1, "a") and Row(1, "a") != (1, "a")
    assert Row(a=1, b=2) == Row(b=2, a=1)  # field order does not matter for named rows
    assert hash(Row(a=1, b=2)) == hash(Row(b=2, a=1))
    assert Row(a=1) != Row(1) and Row(a=1) != Row(b=1)
    assert len({Row(1, "a"), Row(1, "a"), Row(2, "a")}) == 2
    deleted = Row(1)
    deleted.set_row_kind(RowKind.DELETE)
    assert deleted != Row(1) and deleted.get_row_kind() is RowKind.DELETE
    assert repr(Row(1, "a")) == "<Row(1, 'a')>"
    assert repr(Row(id=1, info="x")) == "Row(id=1, info='x')"
    person = Row("name", "age")
    assert person("Alice", 11) == Row(name="Alice", age=11)
    nested = Row(key=1, value=Row(name="a", age=2))
    assert nested.as_dict(True) == {"key": 1, "value": {"name": "a", "age": 2}}


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_row_pickles_with_names_kind_and_values(dumps):
    r = Row(name="a", age=1)
    r.set_row_kind(RowKind.UPDATE_AFTER)
    back = pickle.loads(dumps(r))
    assert back == r and back.name == "a" and back.get_row_kind() is RowKind.UPDATE_AFTER
    assert pickle.loads(dumps(Row(1, None))) == Row(1, None)


def test_rows_of_one_conversion_share_field_names_so_a_batch_pickles_them_once():
    conv = RowConverter(Types.ROW_NAMED(["word", "count"], [Types.STRING(), Types.INT()]))
    rows = conv([(f"w{i}", i) for i in range(1000)], "test")
    plain = pickle.dumps([(f"w{i}", i) for i in range(1000)])
    assert len(pickle.dumps(rows)) < 3 * len(plain)  # not 1000 copies of the field names
    assert pickle.loads(pickle.dumps(rows))[7].word == "w7"


def test_row_keys_have_a_stable_hash_equal_for_equal_rows():
    assert stable_hash(Row(a=1, b="x")) == stable_hash(Row(b="x", a=1))
    assert stable_hash(Row(1, "x")) == stable_hash(Row(1, "x"))
    assert stable_hash(Row(1, "x")) != stable_hash(Row(2, "x"))


# -- Types and the row conversion -------------------------------------------------------------------


def test_types_are_type_information_values():
    assert Types.INT() == Types.INT() and Types.INT() != Types.LONG()
    for t in (
        Types.STRING(), Types.BYTE(), Types.BOOLEAN(), Types.SHORT(), Types.LONG(), Types.FLOAT(),
        Types.DOUBLE(), Types.CHAR(), Types.BIG_INT(), Types.BIG_DEC(), Types.VOID(),
        Types.INSTANT(), Types.SQL_DATE(), Types.SQL_TIME(), Types.SQL_TIMESTAMP(),
        Types.PICKLED_BYTE_ARRAY(), Types.TUPLE([Types.INT()]), Types.LIST(Types.INT()),
        Types.MAP(Types.STRING(), Types.INT()), Types.PRIMITIVE_ARRAY(Types.BYTE()),
        Types.BASIC_ARRAY(Types.INT()), Types.OBJECT_ARRAY(Types.STRING()),
    ):  # fmt: skip
        assert isinstance(t, TypeInformation)
        assert row_converter(t) is None  # metadata only
    row = Types.ROW([Types.INT(), Types.STRING()])
    assert row.get_field_names() == ["f0", "f1"]
    with pytest.raises(ValueError):
        Types.ROW_NAMED(["a"], [Types.INT(), Types.INT()])
    with pytest.raises(TypeError, match="raystream.common.Types"):
        row_converter(int)


def test_row_conversion_names_fields_and_reports_a_wrong_arity():
    conv = row_converter(Types.ROW_NAMED(["id", "info"], [Types.INT(), Types.STRING()]))
    assert conv is not None
    out = conv([(1, "a"), [2, "b"], Row(3, "c"), Row(x=4, y="d")], "op")
    assert [r.as_dict() for r in out] == [
        {"id": 1, "info": "a"}, {"id": 2, "info": "b"}, {"id": 3, "info": "c"},
        {"id": 4, "info": "d"},
    ]  # fmt: skip
    assert out[0].id == 1
    with pytest.raises(TypeError, match=r"operator 'Map'.*2 fields \['id', 'info'\].*\(1, 2, 3\)"):
        conv([(1, "a"), (1, 2, 3)], "operator 'Map'")
    unnamed = row_converter(Types.ROW([Types.INT()]))
    assert unnamed is not None and unnamed([(5,)], "op")[0].f0 == 5


# -- declared types: where they travel, how they print, what they convert -------------------------


def test_declared_types_travel_with_the_stream():
    from raystream import OutputTag, StreamExecutionEnvironment, TumblingEventTimeWindows
    from raystream.connectors import NumberSequenceSource

    pair = Types.TUPLE([Types.STRING(), Types.FLOAT()])
    env = StreamExecutionEnvironment()
    typed = env.from_collection([("a", 1.0)], type_info=pair)
    assert typed.get_type() == pair
    assert env.from_collection([1]).get_type() == Types.PICKLED_BYTE_ARRAY()
    numbers = env.from_source(NumberSequenceSource(1, 3), type_info=Types.LONG())
    assert numbers.get_type() == Types.LONG()
    keyed = typed.filter(lambda t: True).rebalance().key_by(lambda t: t[0])
    assert keyed.get_type() == pair  # filter, partitionings and key_by keep it
    assert keyed.reduce(lambda a, b: a).get_type() == pair
    assert keyed.sum(1).get_type() == pair
    assert keyed.map(str, output_type=Types.STRING()).get_type() == Types.STRING()
    assert keyed.map(str).get_type() == Types.PICKLED_BYTE_ARRAY()
    assert typed.union(env.from_collection([("b", 2.0)], type_info=pair)).get_type() == pair
    windows = keyed.window(TumblingEventTimeWindows.of(10))
    assert windows.reduce(lambda a, b: a).get_type() == pair
    assert windows.reduce(lambda a, b: a, lambda k, w, xs: xs).get_type() != pair
    tag = OutputTag("late", Types.LONG())
    assert typed.map(lambda t: t).get_side_output(tag).get_type() == Types.LONG()
    assert (
        typed.assign_timestamps_and_watermarks(
            WatermarkStrategy.for_monotonous_timestamps()
        ).get_type()
        == pair
    )


def test_print_of_an_undeclared_stream_is_str_and_odd_values_do_not_break_a_typed_one():
    import doctest
    import io

    from raystream.operators import PrintSink, SinkContext, sinks
    from raystream.runtime.elements import Batch

    assert doctest.testmod(sinks).failed == 0

    def printed(type_info, values, parallelism=1):
        out = io.StringIO()
        sink = PrintSink("id", stream=out, type_info=type_info)
        sink.create_writer(SinkContext("print", 0, parallelism)).write(Batch(values))
        return out.getvalue().splitlines()

    assert printed(None, [("a", 1.5), Row(1), None]) == [
        "id> ('a', 1.5)",
        "id> <Row(1)>",
        "id> None",
    ]
    pair = Types.TUPLE([Types.STRING(), Types.LIST(Types.DOUBLE())])
    assert printed(pair, [(None, [1, None]), "not a tuple"], 2) == [
        "id:1> (null,[1.0, null])",
        "id:1> not a tuple",
    ]
    by_name = Types.MAP(Types.STRING(), Types.BOOLEAN())
    assert printed(by_name, [{"b": True, None: False}]) == ["id> {null=false, b=true}"]
    assert printed(Types.ROW([Types.INT()]), [(7,)]) == ["id> +I[7]"]
    assert str(RowKind.DELETE) == "-D"


def test_java_number_strings_are_the_shortest_that_read_back():
    import random
    import struct

    from raystream.api.typed_values import java_double_string, java_float_string

    def f32(x: float) -> float:
        return struct.unpack("f", struct.pack("f", x))[0]

    rng = random.Random(9)
    for _ in range(3000):
        x = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        if x != x or x in (float("inf"), float("-inf")):
            continue
        text = java_double_string(x)
        assert float(text) == x, (x, text)
        mantissa = text.split("E")[0].lstrip("-").replace(".", "").strip("0")
        assert len(mantissa) <= len(repr(abs(x)).split("e")[0].replace(".", "").strip("0"))
        y = f32(rng.uniform(-1, 1) * 10.0 ** rng.randint(-40, 38))
        text = java_float_string(y)
        assert f32(float(text)) == y, (y, text)
        digits = text.split("E")[0].lstrip("-").replace(".", "").strip("0")
        if len(digits) > 1:  # one digit fewer never reads back as the same float
            shorter = f"{y:.{len(digits) - 2}e}"
            assert f32(float(shorter)) != y, (y, text, shorter)
    assert [java_double_string(v) for v in (1e-3, 9.99e-4, 1e7, 9999999.9)] == [
        "0.001", "9.99E-4", "1.0E7", "9999999.9",
    ]  # fmt: skip


def test_crossing_conversion_narrows_float_widens_ints_and_keeps_containers():
    from raystream.api.typed_values import crossing_converter

    for t in (None, Types.INT(), Types.STRING(), Types.TUPLE([Types.LONG()]),
              Types.PICKLED_BYTE_ARRAY(), Types.MAP(Types.STRING(), Types.INT())):  # fmt: skip
        assert crossing_converter(t) is None  # nothing to do: no per-record work
    floats = crossing_converter(Types.FLOAT())
    assert floats is not None
    assert floats([0.1, 2, 1e300]) == [0.10000000149011612, 2.0, float("inf")]
    assert floats([0.1, None, "x"]) == [0.10000000149011612, None, "x"]
    doubles = crossing_converter(Types.DOUBLE())
    assert doubles is not None and doubles([1, 0.1, True]) == [1.0, 0.1, 1.0]
    row = Types.ROW_NAMED(["v", "xs"], [Types.FLOAT(), Types.LIST(Types.DOUBLE())])
    nested = crossing_converter(Types.TUPLE([Types.STRING(), row, Types.MAP(Types.STRING(), row)]))
    assert nested is not None
    got = nested([("a", Row(0.5, [1, None]), {"k": [0.1, []]}), ["b", None, {}], "odd"])
    assert got[0] == ("a", Row(v=0.5, xs=[1.0, None]), {"k": [0.10000000149011612, []]})
    assert got[1:] == [["b", None, {}], "odd"]
    assert pickle.loads(cloudpickle.dumps(nested))([("c", None, {})]) == [("c", None, {})]


# -- Duration ----------------------------------------------------------------------------------------


def test_duration_constructors_and_use_as_a_duration():
    assert Duration.of_millis(1500).to_milliseconds() == 1500
    assert Duration.of_seconds(2).to_milliseconds() == 2000
    assert Duration.of_minutes(1).to_milliseconds() == 60_000
    assert Duration.of_hours(1).to_milliseconds() == 3_600_000
    assert Duration.of_days(1).to_milliseconds() == 86_400_000
    assert Duration.of_nanos(3_000_000).to_milliseconds() == 3
    assert Duration.of_seconds(1) == dt.timedelta(seconds=1)
    assert to_millis(Duration.of_seconds(3)) == 3000
    from raystream import StateTtlConfig, TumblingEventTimeWindows, WatermarkStrategy

    assert TumblingEventTimeWindows.of(Duration.of_seconds(5)).size == 5000
    WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(2)).with_idleness(
        Duration.of_minutes(1)
    )
    StateTtlConfig.new_builder(Duration.of_seconds(1)).build()


# -- generic function classes and nested contexts -------------------------------------------------


def test_window_functions_are_generic_as_in_pyflink():
    from raystream import (
        AllWindowFunction,
        CountWindow,
        ProcessAllWindowFunction,
        ProcessWindowFunction,
        TimeWindow,
        WindowFunction,
    )

    class P(ProcessWindowFunction[tuple, tuple, str, TimeWindow]):
        # evaluated annotation, as in PyFlink's examples
        def process(self, key: str, context: ProcessWindowFunction.Context[TimeWindow], elements):
            return [key]

    class A(WindowFunction[tuple, tuple, str, CountWindow]):
        def apply(self, key, window, inputs):
            return []

    class PA(ProcessAllWindowFunction[int, int, TimeWindow]):
        def process(self, context, elements):
            return []

    class AA(AllWindowFunction[int, int, TimeWindow]):
        def apply(self, window, inputs):
            return []

    assert isinstance(P(), ProcessWindowFunction) and isinstance(A(), WindowFunction)
    assert isinstance(PA(), ProcessAllWindowFunction) and isinstance(AA(), AllWindowFunction)
    assert CountWindow(3).id == 3


def test_runtime_contexts_are_instances_of_the_nested_context_types():
    from raystream import (
        BroadcastProcessFunction,
        CoProcessFunction,
        KeyedBroadcastProcessFunction,
        KeyedCoProcessFunction,
        KeyedProcessFunction,
        ProcessAllWindowFunction,
        ProcessFunction,
        ProcessWindowFunction,
    )
    from raystream.operators.co import _CoContext
    from raystream.operators.process import ProcessContext
    from raystream.operators.windows.contexts import _WindowContext

    for ctx_type in (
        ProcessFunction.Context,
        KeyedProcessFunction.Context,
        KeyedProcessFunction.OnTimerContext,
    ):
        assert issubclass(ProcessContext, ctx_type), ctx_type
    for ctx_type in (
        CoProcessFunction.Context,
        KeyedCoProcessFunction.Context,
        KeyedCoProcessFunction.OnTimerContext,
        BroadcastProcessFunction.Context,
        BroadcastProcessFunction.ReadOnlyContext,
        KeyedBroadcastProcessFunction.Context,
        KeyedBroadcastProcessFunction.ReadOnlyContext,
        KeyedBroadcastProcessFunction.OnTimerContext,
    ):
        assert issubclass(_CoContext, ctx_type), ctx_type
    assert issubclass(_WindowContext, ProcessWindowFunction.Context)
    assert issubclass(_WindowContext, ProcessAllWindowFunction.Context)
    assert not issubclass(_WindowContext, KeyedProcessFunction.Context)


# -- module mirror ------------------------------------------------------------------------------------

# the PyFlink path, the raystream paths that mirror it, and names PyFlink programs import from it
MIRROR: list[tuple[str, list[str], list[str]]] = [
    ("pyflink.common", ["raystream.common"], [
        "Types", "Row", "RowKind", "WatermarkStrategy", "Duration", "Instant", "Time", "Encoder",
        "ExecutionConfig", "JobClient", "JobExecutionResult", "JobStatus", "RestartStrategies",
        "TypeInformation",
    ]),
    ("pyflink.common.typeinfo", ["raystream.common.typeinfo"], ["Types", "TypeInformation", "RowTypeInfo"]),
    ("pyflink.common.types", ["raystream.common.types"], ["Row", "RowKind"]),
    ("pyflink.common.time", ["raystream.common.time"], ["Duration", "Instant", "Time"]),
    ("pyflink.common.watermark_strategy", ["raystream.common.watermark_strategy"],
     ["TimestampAssigner", "WatermarkStrategy"]),
    ("pyflink.common.serialization", ["raystream.common.serialization"], ["Encoder"]),
    ("pyflink.datastream", ["raystream", "raystream.datastream"], [
        "StreamExecutionEnvironment", "DataStream", "KeyedStream", "WindowedStream",
        "ConnectedStreams", "BroadcastStream", "BroadcastConnectedStream", "DataStreamSink",
        "MapFunction", "CoMapFunction", "FlatMapFunction", "CoFlatMapFunction", "ReduceFunction",
        "FilterFunction", "ProcessFunction", "KeyedProcessFunction", "CoProcessFunction",
        "KeyedCoProcessFunction", "WindowFunction", "ProcessWindowFunction", "AggregateFunction",
        "BroadcastProcessFunction", "KeyedBroadcastProcessFunction", "RuntimeContext",
        "CheckpointingMode", "CheckpointConfig", "ExternalizedCheckpointRetention",
        "HashMapStateBackend", "RuntimeExecutionMode", "TimeWindow", "CountWindow",
        "GlobalWindow", "WindowAssigner", "TriggerResult", "Trigger", "TimeDomain", "KeySelector",
        "Partitioner", "SinkFunction", "OutputTag",
    ]),
    ("pyflink.datastream.functions", ["raystream.functions", "raystream.datastream.functions"], [
        "KeyedProcessFunction", "RuntimeContext", "ProcessWindowFunction", "AllWindowFunction",
        "ProcessAllWindowFunction", "BaseBroadcastProcessFunction", "MapFunction",
    ]),
    ("pyflink.datastream.window", ["raystream.window", "raystream.datastream.window"], [
        "TumblingEventTimeWindows", "SlidingEventTimeWindows", "EventTimeSessionWindows",
        "TumblingProcessingTimeWindows", "SlidingProcessingTimeWindows",
        "ProcessingTimeSessionWindows", "GlobalWindows", "SessionWindowTimeGapExtractor",
        "TimeWindow", "CountWindow", "GlobalWindow", "Trigger", "TriggerResult", "CountTrigger",
        "EventTimeTrigger", "PurgingTrigger",
    ]),
    ("pyflink.datastream.state", ["raystream.state", "raystream.datastream.state"], [
        "ValueStateDescriptor", "ListStateDescriptor", "MapStateDescriptor",
        "ReducingStateDescriptor", "AggregatingStateDescriptor", "StateTtlConfig", "ValueState",
        "ListState", "MapState", "ReducingState", "AggregatingState",
    ]),
    ("pyflink.datastream.state_backend", ["raystream.state_backend", "raystream.datastream.state_backend"],
     ["HashMapStateBackend"]),
    ("pyflink.datastream.output_tag", ["raystream.output_tag", "raystream.datastream.output_tag"], ["OutputTag"]),
    ("pyflink.datastream.execution_mode",
     ["raystream.execution_mode", "raystream.datastream.execution_mode"], ["RuntimeExecutionMode"]),
    ("pyflink.datastream.connectors", ["raystream.connectors", "raystream.datastream.connectors"],
     ["Source", "Sink", "FileSource", "FileSink", "NumberSequenceSource"]),
    ("pyflink.datastream.connectors.file_system",
     ["raystream.connectors.file_system", "raystream.datastream.connectors.file_system"],
     ["FileSource", "FileSourceBuilder", "StreamFormat", "FileSink", "OutputFileConfig", "RollingPolicy"]),
    ("pyflink.datastream.connectors.number_seq",
     ["raystream.connectors.number_seq", "raystream.datastream.connectors.number_seq"],
     ["NumberSequenceSource"]),
]  # fmt: skip


@pytest.mark.parametrize("pyflink_path, mirrors, names", MIRROR, ids=[m[0] for m in MIRROR])
def test_every_pyflink_path_imports_the_same_objects(pyflink_path, mirrors, names):
    modules = [importlib.import_module(m) for m in mirrors]
    for name in names:
        objs = [getattr(m, name, None) for m in modules]
        assert all(o is not None for o in objs), f"{pyflink_path}.{name} missing in {mirrors}"
        assert all(o is objs[0] for o in objs), f"{name} differs between {mirrors}"
        # the same object as the top level or the defining module: one class, one isinstance
        top = importlib.import_module("raystream")
        if hasattr(top, name):
            assert objs[0] is getattr(top, name), name
    for m in modules:
        for name in getattr(m, "__all__", []):
            assert hasattr(m, name), f"{m.__name__}.__all__ lists {name} but it is not there"


def test_runtime_execution_mode_is_a_bare_enum():
    from raystream import RuntimeExecutionMode

    assert [m.name for m in RuntimeExecutionMode] == ["STREAMING", "BATCH", "AUTOMATIC"]
