"""A KeyedProcessFunction with event-time timers: a key is reported once no event came for it
within 10 ms of event time (its count and last timestamp), the classic count-with-timeout."""

from raystream.common import Duration, Types, WatermarkStrategy
from raystream.common.watermark_strategy import TimestampAssigner
from raystream.datastream import KeyedProcessFunction, RuntimeContext, StreamExecutionEnvironment
from raystream.datastream.state import ValueStateDescriptor

# (key, event time ms), in event-time order
EVENTS = [
    ("a", 1),
    ("b", 2),
    ("a", 5),
    ("c", 9),
    ("a", 14),
    ("b", 20),
    ("c", 21),
    ("a", 30),
    ("c", 33),
    ("b", 34),
    ("a", 38),
    ("c", 60),
]


class EventTime(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp) -> int:
        return value[1]


class CountWithTimeout(KeyedProcessFunction):
    def open(self, runtime_context: RuntimeContext):
        self.state = runtime_context.get_state(
            ValueStateDescriptor("count", Types.TUPLE([Types.INT(), Types.LONG()]))
        )

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        current = self.state.value()
        count = 1 if current is None else current[0] + 1
        self.state.update((count, ctx.timestamp()))
        ctx.timer_service().register_event_time_timer(ctx.timestamp() + 10)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        count, last = self.state.value()
        if timestamp == last + 10:
            yield f"{ctx.get_current_key()} count={count} last={last} fired_at={timestamp}"


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(0)
    ).with_timestamp_assigner(EventTime())
    out = (
        env.from_collection(EVENTS)
        .assign_timestamps_and_watermarks(strategy)
        .key_by(lambda e: e[0])
        .process(CountWithTimeout(), output_type=Types.STRING())
    )
    with out.execute_and_collect() as results:
        return [str(r) for r in results]


if __name__ == "__main__":
    for line in main():
        print(line)
