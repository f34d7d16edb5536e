"""Tumbling event-time windows: reduce, aggregate (with a window function) and process, with
output types given as Types."""

from raystream.common import Time, Types, WatermarkStrategy
from raystream.common.watermark_strategy import TimestampAssigner
from raystream.datastream import StreamExecutionEnvironment
from raystream.datastream.functions import AggregateFunction, ProcessWindowFunction
from raystream.datastream.window import TimeWindow, TumblingEventTimeWindows

# (sensor, reading, event time ms), in event-time order
READINGS = [
    ("s1", 4, 0),
    ("s2", 7, 3),
    ("s1", 1, 8),
    ("s1", 9, 10),
    ("s2", 2, 12),
    ("s2", 5, 19),
    ("s1", 6, 21),
    ("s3", 8, 22),
    ("s2", 3, 25),
    ("s1", 2, 31),
    ("s3", 1, 39),
    ("s2", 9, 40),
]


class EventTime(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp) -> int:
        return value[2]


class Average(AggregateFunction):
    def create_accumulator(self):
        return 0, 0

    def add(self, value, accumulator):
        return accumulator[0] + value[1], accumulator[1] + 1

    def get_result(self, accumulator):
        return accumulator[0] / accumulator[1]

    def merge(self, a, b):
        return a[0] + b[0], a[1] + b[1]


class WithWindow(ProcessWindowFunction[float, str, str, TimeWindow]):
    def process(self, key: str, context: ProcessWindowFunction.Context, averages):
        for avg in averages:
            yield f"avg {key} [{context.window().start},{context.window().end}) = {avg:.2f}"


class MinMax(ProcessWindowFunction[tuple, tuple, str, TimeWindow]):
    def process(self, key: str, context: ProcessWindowFunction.Context, elements):
        values = [e[1] for e in elements]
        return [(key, context.window().start, min(values), max(values), len(values))]


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    keyed = (
        env.from_collection(
            READINGS, type_info=Types.TUPLE([Types.STRING(), Types.INT(), Types.LONG()])
        )
        .assign_timestamps_and_watermarks(
            WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(EventTime())
        )
        .key_by(lambda r: r[0], key_type=Types.STRING())
    )
    windows = TumblingEventTimeWindows.of(Time.milliseconds(10))
    sums = keyed.window(windows).reduce(
        lambda a, b: (a[0], a[1] + b[1], max(a[2], b[2])),
        output_type=Types.TUPLE([Types.STRING(), Types.INT(), Types.LONG()]),
    )
    avgs = keyed.window(windows).aggregate(
        Average(),
        window_function=WithWindow(),
        accumulator_type=Types.TUPLE([Types.INT(), Types.INT()]),
        output_type=Types.STRING(),
    )
    minmax = keyed.window(windows).process(
        MinMax(),
        output_type=Types.TUPLE(
            [Types.STRING(), Types.LONG(), Types.INT(), Types.INT(), Types.INT()]
        ),
    )
    out = (
        sums.map(lambda t: f"sum {t}", output_type=Types.STRING())
        .union(avgs)
        .union(minmax.map(lambda t: f"minmax {t}", output_type=Types.STRING()))
    )
    with out.execute_and_collect() as results:
        return [str(r) for r in results]


if __name__ == "__main__":
    for line in main():
        print(line)
