"""print() of streams with declared types (Java's toString, rows formatted per field) and
without, and where a FLOAT/DOUBLE field is converted (32 bits) on its way: at the collection
source, across key_by/rebalance/unchained edges, not between chained functions."""

import datetime
import decimal

from raystream.common import Row, Time, Types, WatermarkStrategy
from raystream.common.time import Instant
from raystream.common.types import RowKind
from raystream.common.watermark_strategy import TimestampAssigner
from raystream.datastream import OutputTag, StreamExecutionEnvironment
from raystream.datastream.functions import ProcessFunction
from raystream.datastream.window import TumblingEventTimeWindows

SIDE = OutputTag("side", Types.TUPLE([Types.STRING(), Types.FLOAT()]))

VALUES = [
    ("tuple", ("hi", 1, 30, 7), Types.TUPLE([Types.STRING(), Types.INT(), Types.LONG(), Types.INT()])),
    ("tuple1", ("x",), Types.TUPLE([Types.STRING()])),
    ("list", [1, 2, 3], Types.LIST(Types.INT())),
    ("list_empty", [], Types.LIST(Types.INT())),
    ("list_str", ["a", "b c"], Types.LIST(Types.STRING())),
    ("list_float", [0.1, 2], Types.LIST(Types.FLOAT())),
    ("map", {"apple": 1, "banana": 2, "cherry": 3, "date": 4, "elderberry": 5, "fig": 6, "x": 7,
             "Aa": 8, "BB": 9}, Types.MAP(Types.STRING(), Types.INT())),
    ("map_int", {100: "a", 3: "b", 17: "c", -1: "d", 16: "e", 33: "f"},
     Types.MAP(Types.INT(), Types.STRING())),
    ("map_long", {100: "a", 3: "b", 17: "c", -1: "d", 16: "e", 33: "f", 2**40: "g"},
     Types.MAP(Types.LONG(), Types.STRING())),
    ("map_grown", {f"k{i}": i for i in range(20)}, Types.MAP(Types.STRING(), Types.INT())),
    ("map_unicode", {"é": 1, "日本": 2, "a": 3}, Types.MAP(Types.STRING(), Types.INT())),
    ("map_empty", {}, Types.MAP(Types.STRING(), Types.INT())),
    ("tuple_arrays", ([1, 2], ["x", "y"], [True]),
     Types.TUPLE([Types.PRIMITIVE_ARRAY(Types.INT()), Types.BASIC_ARRAY(Types.STRING()),
                  Types.PRIMITIVE_ARRAY(Types.BOOLEAN())])),
    ("tuple_row", ("k", Row(name="ann", age=3)),
     Types.TUPLE([Types.STRING(), Types.ROW_NAMED(["name", "age"], [Types.STRING(), Types.INT()])])),
    ("tuple_row_null", ("k", Row(None, 2.5)),
     Types.TUPLE([Types.STRING(), Types.ROW([Types.STRING(), Types.DOUBLE()])])),
    ("list_rows", [Row(1, "a"), Row(2, "b")], Types.LIST(Types.ROW([Types.INT(), Types.STRING()]))),
    ("list_tuples", [("a", 1)], Types.LIST(Types.TUPLE([Types.STRING(), Types.INT()]))),
    ("tuple_tuple", ("a", ("b", 1.5)),
     Types.TUPLE([Types.STRING(), Types.TUPLE([Types.STRING(), Types.FLOAT()])])),
    ("map_list", {"a": [1.5]}, Types.MAP(Types.STRING(), Types.LIST(Types.DOUBLE()))),
    ("tuple_misc", (True, 1, decimal.Decimal("2.50"), datetime.date(2024, 5, 6),
                    datetime.datetime(2024, 5, 6, 7, 8, 9, 123789), 7),
     Types.TUPLE([Types.BOOLEAN(), Types.DOUBLE(), Types.BIG_DEC(), Types.SQL_DATE(),
                  Types.SQL_TIMESTAMP(), Types.BYTE()])),
    ("row", Row(0.1, "s", [0.1], None),
     Types.ROW([Types.FLOAT(), Types.STRING(), Types.LIST(Types.FLOAT()), Types.INT()])),
    ("string", "with space", Types.STRING()),
    ("long", 2**40, Types.LONG()),
    ("bool", False, Types.BOOLEAN()),
    ("short", 300, Types.SHORT()),
    ("bigdec", decimal.Decimal("1E+3"), Types.BIG_DEC()),
    ("date", datetime.date(2024, 1, 2), Types.SQL_DATE()),
    ("time", datetime.time(12, 34, 56), Types.SQL_TIME()),
    ("timestamp", datetime.datetime(2024, 1, 2, 3, 4, 5), Types.SQL_TIMESTAMP()),
    ("timestamp_ms", datetime.datetime(2024, 1, 2, 3, 4, 5, 120000), Types.SQL_TIMESTAMP()),
    ("instant", Instant(1700000000, 5000000), Types.INSTANT()),
    ("instant_nanos", Instant(1700000000, 123456789), Types.INSTANT()),
    ("int_as_float", 3, Types.FLOAT()),
    ("int_as_double", 2, Types.DOUBLE()),
    ("nan", float("nan"), Types.DOUBLE()),
    ("minus_inf", float("-inf"), Types.FLOAT()),
    ("pickled", ("a", 1), Types.PICKLED_BYTE_ARRAY()),
]  # fmt: skip

FLOATS = [0.1, 163.3, 100.0, 1e10, 1e-05, 12345678.0, 0.001, 1234567.0, 3.4e38, -0.0, 1 / 3]
DOUBLES = FLOATS[:8] + [1e300, 1e7, 9999999.0, 0.0009, 1 / 3]


class Split(ProcessFunction):
    def process_element(self, value, ctx):
        yield value
        yield SIDE, ("s", 0.1)


class SecondField(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp):
        return value[1]


def build(env):
    f, s = Types.FLOAT(), Types.STRING()
    one = env.from_collection([1])
    for name, value, type_info in VALUES:
        one.map(lambda _, v=value: v, output_type=type_info).print(name)
    one.flat_map(lambda _: FLOATS, output_type=f).print("float")
    one.flat_map(lambda _: DOUBLES, output_type=Types.DOUBLE()).print("double")

    def kinded(x):
        r = Row("u", x)
        r.set_row_kind(RowKind.UPDATE_AFTER)
        return r

    one.map(kinded, output_type=Types.ROW([s, Types.INT()])).print("row_kind")
    one.map(lambda _: ("u", 0.1, True, None)).print("untyped")

    # FLOAT/DOUBLE conversion: where a value leaves the chain, not between chained functions
    env.from_collection([0.1], type_info=f).map(repr, output_type=s).print("at_source")
    one.map(lambda _: 0.1, output_type=f).map(repr, output_type=s).print("chained")
    one.map(lambda _: 0.1, output_type=f).rebalance().map(repr, output_type=s).print("rebalanced")
    one.map(lambda _: 0.1, output_type=f).map(repr, output_type=s).disable_chaining().print(
        "not_chained"
    )
    one.map(lambda _: 0.1, output_type=f).key_by(lambda _: 1).map(repr, output_type=s).print(
        "keyed"
    )
    nested = Types.TUPLE(
        [Types.LIST(f), Types.MAP(s, f), Types.TUPLE([s, Types.DOUBLE()]), Types.ROW([f, s])]
    )
    one.map(
        lambda _: ([0.1, 2], {"k": 0.1}, ("a", 1), Row(0.1, "s")), output_type=nested
    ).rebalance().map(repr).print("fields")
    one.map(lambda _: Row(0.1, "s"), output_type=Types.ROW([f, s])).print("row_chained")
    one.map(lambda _: Row(0.1, "s"), output_type=Types.ROW([f, s])).rebalance().print(
        "row_rebalanced"
    )
    env.from_collection([Row(0.1, "s")], type_info=Types.ROW([f, s])).print("row_at_source")

    # the declared type carries through reduce, filter, union, windows and side outputs
    def sums():
        return (
            one.flat_map(lambda _: [("a", 0.1), ("a", 0.2)], output_type=Types.TUPLE([s, f]))
            .key_by(lambda t: t[0])
            .reduce(lambda a, b: (a[0], a[1] + b[1]))
        )

    sums().print("reduce")
    sums().map(lambda t: repr(t[1]), output_type=s).print("reduce_chained")
    one.map(lambda _: ("a", 0.1), output_type=Types.TUPLE([s, f])).filter(lambda t: True).print(
        "filter"
    )
    tagged = Types.TUPLE([s, Types.INT()])
    one.map(lambda _: ("u", 1), output_type=tagged).union(
        one.map(lambda _: ("v", 2), output_type=tagged)
    ).print("union")
    split = one.process(Split(), output_type=Types.INT())
    split.get_side_output(SIDE).print("side")
    split.get_side_output(SIDE).map(repr).print("side_field")
    (
        one.flat_map(
            lambda _: [("k", 1, 0.5), ("k", 2, 0.25)],
            output_type=Types.TUPLE([s, Types.LONG(), Types.DOUBLE()]),
        )
        .assign_timestamps_and_watermarks(
            WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(SecondField())
        )
        .key_by(lambda t: t[0])
        .window(TumblingEventTimeWindows.of(Time.milliseconds(10)))
        .reduce(lambda a, b: (a[0], b[1], a[2] + b[2]))
        .print("window_reduce")
    )


def main() -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    build(env)
    env.execute("print_typed")


if __name__ == "__main__":
    main()
