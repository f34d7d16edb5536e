"""State with a time-to-live configured through StateTtlConfig's builder. The TTL is long, so
nothing expires while the job runs: the state reads back as written."""

from raystream.common import Time, Types
from raystream.datastream import KeyedProcessFunction, RuntimeContext, StreamExecutionEnvironment
from raystream.datastream.state import ListStateDescriptor, StateTtlConfig, ValueStateDescriptor

EVENTS = [("k1", 1), ("k2", 10), ("k1", 2), ("k1", 3), ("k2", 20), ("k3", 7)]


class Remember(KeyedProcessFunction):
    def open(self, runtime_context: RuntimeContext):
        ttl = (
            StateTtlConfig.new_builder(Time.hours(1))
            .set_update_type(StateTtlConfig.UpdateType.OnReadAndWrite)
            .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
            .cleanup_full_snapshot()
            .build()
        )
        last = ValueStateDescriptor("last", Types.INT())
        last.enable_time_to_live(ttl)
        seen = ListStateDescriptor("seen", Types.INT())
        seen.enable_time_to_live(ttl)
        self.last = runtime_context.get_state(last)
        self.seen = runtime_context.get_list_state(seen)

    def process_element(self, value, ctx):
        previous = self.last.value()
        self.last.update(value[1])
        self.seen.add(value[1])
        yield f"{value[0]} previous={previous} seen={list(self.seen.get())}"


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    out = (
        env.from_collection(EVENTS)
        .key_by(lambda e: e[0])
        .process(Remember(), output_type=Types.STRING())
    )
    with out.execute_and_collect() as results:
        return [str(r) for r in results]


if __name__ == "__main__":
    for line in main():
        print(line)
