"""Sliding and session event-time windows: a WindowFunction through apply, a reduce with a
ProcessWindowFunction, and a session window with a process function."""

from raystream.common import Time, Types, WatermarkStrategy
from raystream.common.watermark_strategy import TimestampAssigner
from raystream.datastream import StreamExecutionEnvironment
from raystream.datastream.functions import ProcessWindowFunction, WindowFunction
from raystream.datastream.window import (
    EventTimeSessionWindows,
    SlidingEventTimeWindows,
    TimeWindow,
)

# (user, clicks, event time ms), in event-time order
CLICKS = [
    ("u1", 1, 0),
    ("u2", 2, 2),
    ("u1", 3, 4),
    ("u1", 1, 7),
    ("u2", 5, 15),
    ("u1", 2, 16),
    ("u2", 1, 18),
    ("u1", 4, 30),
    ("u2", 2, 31),
    ("u1", 1, 33),
    ("u2", 3, 50),
]


class EventTime(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp) -> int:
        return value[2]


class CountClicks(WindowFunction[tuple, str, str, TimeWindow]):
    def apply(self, key: str, window: TimeWindow, inputs):
        inputs = list(inputs)
        return [f"slide {key} [{window.start},{window.end}) events={len(inputs)}"]


class Label(ProcessWindowFunction[tuple, str, str, TimeWindow]):
    def process(self, key: str, context: ProcessWindowFunction.Context, elements):
        for e in elements:
            yield f"slide-max {key} [{context.window().start},{context.window().end}) {e[1]}"


class Session(ProcessWindowFunction[tuple, str, str, TimeWindow]):
    def process(self, key: str, context: ProcessWindowFunction.Context, elements):
        elements = list(elements)
        w = context.window()
        yield f"session {key} [{w.start},{w.end}) clicks={sum(e[1] for e in elements)}"


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    keyed = (
        env.from_collection(CLICKS)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(EventTime())
        )
        .key_by(lambda c: c[0], key_type=Types.STRING())
    )
    sliding = SlidingEventTimeWindows.of(Time.milliseconds(20), Time.milliseconds(10))
    applied = keyed.window(sliding).apply(CountClicks(), output_type=Types.STRING())
    maxed = keyed.window(sliding).reduce(
        lambda a, b: a if a[1] >= b[1] else b,
        window_function=Label(),
        output_type=Types.STRING(),
    )
    sessions = keyed.window(EventTimeSessionWindows.with_gap(Time.milliseconds(10))).process(
        Session(), output_type=Types.STRING()
    )
    with applied.union(maxed, sessions).execute_and_collect() as results:
        return [str(r) for r in results]


if __name__ == "__main__":
    for line in main():
        print(line)
