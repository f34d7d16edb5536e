"""Windows as the Flink docs' Python tabs show them beyond the basics: allowed lateness and late
data to a side output, per-window and global state in a ProcessWindowFunction (with clear), the
docs' "Window: ... count: ..." function, non-keyed windows (window_all) and count windows.

The watermarks are periodic (PyFlink: every 200 ms; raystream: after each batch), and the whole
collection arrives before the first one, so no record is late here and every window fires once,
at the end of input; what lateness does is checked against references in
tests/test_punctuated_watermarks.py.
"""

from raystream.common import Time, Types, WatermarkStrategy
from raystream.common.watermark_strategy import TimestampAssigner
from raystream.datastream import OutputTag, StreamExecutionEnvironment
from raystream.datastream.functions import ProcessWindowFunction
from raystream.datastream.state import ValueStateDescriptor
from raystream.datastream.window import TimeWindow, TumblingEventTimeWindows

LATE = OutputTag("late-data", Types.TUPLE([Types.STRING(), Types.INT(), Types.LONG()]))

# (key, value, event time ms), out of order
EVENTS = [
    ("a", 1, 1),
    ("a", 2, 4),
    ("b", 3, 6),
    ("a", 4, 12),
    ("a", 5, 8),
    ("b", 6, 20),
    ("a", 7, 3),
    ("b", 8, 25),
]


class ThirdField(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp) -> int:
        return value[2]


class CountWithFirings(ProcessWindowFunction[tuple, str, str, TimeWindow]):
    def process(self, key: str, context: ProcessWindowFunction.Context, elements):
        firings = context.window_state().get_state(ValueStateDescriptor("firings", Types.INT()))
        fired = (firings.value() or 0) + 1
        firings.update(fired)
        total = context.global_state().get_state(ValueStateDescriptor("total", Types.INT()))
        total.update((total.value() or 0) + 1)
        count = len([e for e in elements])
        yield f"{key} Window: {context.window()} count: {count} firing: {fired} of {total.value()}"

    def clear(self, context: ProcessWindowFunction.Context):
        context.window_state().get_state(ValueStateDescriptor("firings", Types.INT())).clear()


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)  # one watermark sequence: which records are late is defined
    events = env.from_collection(
        EVENTS, type_info=Types.TUPLE([Types.STRING(), Types.INT(), Types.LONG()])
    ).assign_timestamps_and_watermarks(
        WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(ThirdField())
    )
    windows = TumblingEventTimeWindows.of(Time.milliseconds(10))
    counted = (
        events.key_by(lambda e: e[0], key_type=Types.STRING())
        .window(windows)
        .allowed_lateness(5)  # PyFlink 2.3 takes milliseconds here (a Time fails)
        .side_output_late_data(LATE)
        .process(CountWithFirings(), output_type=Types.STRING())
    )
    late = counted.get_side_output(LATE).map(lambda e: f"late {e}", output_type=Types.STRING())
    totals = (
        events.window_all(windows)
        .reduce(lambda x, y: ("all", x[1] + y[1], max(x[2], y[2])))
        .map(lambda t: f"all sum={t[1]} last={t[2]}", output_type=Types.STRING())
    )
    pairs = (
        events.key_by(lambda e: e[0], key_type=Types.STRING())
        .count_window(2)
        .reduce(lambda x, y: (x[0], x[1] + y[1], y[2]))
        .map(lambda t: f"pair {t[0]} sum={t[1]}", output_type=Types.STRING())
    )
    with counted.union(late, totals, pairs).execute_and_collect() as results:
        return [str(r) for r in results]


if __name__ == "__main__":
    for line in main():
        print(line)
