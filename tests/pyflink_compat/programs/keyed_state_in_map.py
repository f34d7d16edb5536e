"""Keyed state used inside KeyedStream.map, flat_map and filter functions (no process
function): a running sum per key, a first-seen filter and a flat_map that repeats a counter."""

from raystream.common import Types
from raystream.datastream import StreamExecutionEnvironment
from raystream.datastream.functions import (
    FilterFunction,
    FlatMapFunction,
    MapFunction,
    RuntimeContext,
)
from raystream.datastream.state import ValueStateDescriptor

EVENTS = [("a", 1), ("b", 5), ("a", 2), ("c", 1), ("b", 1), ("a", 3), ("c", 4)]


class RunningSum(MapFunction):
    def open(self, runtime_context: RuntimeContext):
        self.sum = runtime_context.get_state(ValueStateDescriptor("sum", Types.INT()))

    def map(self, value):
        total = (self.sum.value() or 0) + value[1]
        self.sum.update(total)
        return f"sum {value[0]} {total}"


class FirstSeen(FilterFunction):
    def open(self, runtime_context: RuntimeContext):
        self.seen = runtime_context.get_state(ValueStateDescriptor("seen", Types.BOOLEAN()))

    def filter(self, value):
        if self.seen.value():
            return False
        self.seen.update(True)
        return True


class Repeat(FlatMapFunction):
    def open(self, runtime_context: RuntimeContext):
        self.n = runtime_context.get_state(ValueStateDescriptor("n", Types.INT()))

    def flat_map(self, value):
        n = (self.n.value() or 0) + 1
        self.n.update(n)
        for i in range(n):
            yield f"repeat {value[0]} {n}.{i}"


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    keyed = env.from_collection(EVENTS).key_by(lambda e: e[0])
    sums = keyed.map(RunningSum(), output_type=Types.STRING())
    first = keyed.filter(FirstSeen()).map(
        lambda e: f"first {e[0]} {e[1]}", output_type=Types.STRING()
    )
    repeated = keyed.flat_map(Repeat(), output_type=Types.STRING())
    with sums.union(first, repeated).execute_and_collect() as results:
        return [str(r) for r in results]


if __name__ == "__main__":
    for line in main():
        print(line)
