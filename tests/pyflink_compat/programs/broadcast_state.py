"""Broadcast state: a BroadcastProcessFunction and a KeyedBroadcastProcessFunction. The keyed
function reads the broadcast rules when an event-time timer fires, after both inputs ended, so
its output does not depend on how the two inputs interleave."""

from raystream.common import Types
from raystream.datastream import (
    BroadcastProcessFunction,
    KeyedBroadcastProcessFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from raystream.datastream.state import ListStateDescriptor, MapStateDescriptor

RULES = MapStateDescriptor("rules", Types.STRING(), Types.INT())
RULE_EVENTS = [("red", 2), ("blue", 10)]
ITEMS = [("red", 1), ("blue", 2), ("red", 3), ("green", 4), ("blue", 5), ("red", 6)]


class Announce(BroadcastProcessFunction):
    def process_element(self, value, ctx: BroadcastProcessFunction.ReadOnlyContext):
        ctx.get_broadcast_state(RULES)
        yield f"item {value[0]}:{value[1]}"

    def process_broadcast_element(self, value, ctx: BroadcastProcessFunction.Context):
        ctx.get_broadcast_state(RULES).put(value[0], value[1])
        yield f"rule {value[0]}*{value[1]}"


class ApplyRules(KeyedBroadcastProcessFunction):
    def open(self, runtime_context: RuntimeContext):
        self.buffered = runtime_context.get_list_state(ListStateDescriptor("buf", Types.INT()))

    def process_element(self, value, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext):
        self.buffered.add(value[1])
        ctx.timer_service().register_event_time_timer(1)

    def process_broadcast_element(self, value, ctx: KeyedBroadcastProcessFunction.Context):
        ctx.get_broadcast_state(RULES).put(value[0], value[1])

    def on_timer(self, timestamp, ctx: KeyedBroadcastProcessFunction.OnTimerContext):
        rules = ctx.get_broadcast_state(RULES)
        key = ctx.get_current_key()
        factor = rules.get(key) if rules.contains(key) else 1
        values = sorted(self.buffered.get())
        yield f"{key}: {[v * factor for v in values]} factor={factor}"


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    rules = env.from_collection(RULE_EVENTS).broadcast(RULES)
    items = env.from_collection(ITEMS)
    plain = items.connect(rules).process(Announce(), output_type=Types.STRING())
    keyed = (
        items.key_by(lambda i: i[0])
        .connect(rules)
        .process(ApplyRules(), output_type=Types.STRING())
    )
    with plain.union(keyed).execute_and_collect() as results:
        return [str(r) for r in results]


if __name__ == "__main__":
    for line in main():
        print(line)
