"""A TimestampAssigner subclass with PyFlink's two-argument ``extract_timestamp``, feeding a
tumbling event-time window (the class form of timestamp_assigner_lambda)."""

from raystream.common import Time, Types, WatermarkStrategy
from raystream.common.watermark_strategy import TimestampAssigner
from raystream.datastream import StreamExecutionEnvironment
from raystream.datastream.window import TumblingEventTimeWindows

EVENTS = [("x", 1, 2), ("y", 2, 4), ("x", 3, 11), ("x", 4, 13), ("y", 5, 25), ("x", 6, 27)]


class Third(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp) -> int:
        return value[2]


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(Third())
    out = (
        env.from_collection(EVENTS)
        .assign_timestamps_and_watermarks(strategy)
        .key_by(lambda e: e[0])
        .window(TumblingEventTimeWindows.of(Time.milliseconds(10)))
        .reduce(lambda a, b: (a[0], a[1] + b[1], max(a[2], b[2])))
        .map(lambda t: f"{t[0]} sum={t[1]} last={t[2]}", output_type=Types.STRING())
    )
    with out.execute_and_collect() as results:
        return [str(r) for r in results]


if __name__ == "__main__":
    for line in main():
        print(line)
