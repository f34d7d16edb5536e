"""Keyed state of every kind in one KeyedProcessFunction: value, list, map, reducing and
aggregating state, read back after each update."""

from raystream.common import Types
from raystream.datastream import KeyedProcessFunction, RuntimeContext, StreamExecutionEnvironment
from raystream.datastream.functions import AggregateFunction
from raystream.datastream.state import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    ValueStateDescriptor,
)

ORDERS = [
    ("alice", "apple", 3),
    ("bob", "pear", 1),
    ("alice", "plum", 2),
    ("carol", "apple", 5),
    ("bob", "apple", 4),
    ("alice", "apple", 1),
    ("carol", "fig", 2),
    ("bob", "pear", 2),
]


class MeanAggregate(AggregateFunction):
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, accumulator):
        return accumulator[0] + value, accumulator[1] + 1

    def get_result(self, accumulator):
        return round(accumulator[0] / accumulator[1], 3)

    def merge(self, acc_a, acc_b):
        return acc_a[0] + acc_b[0], acc_a[1] + acc_b[1]


class Basket(KeyedProcessFunction):
    def open(self, runtime_context: RuntimeContext):
        self.orders = runtime_context.get_state(ValueStateDescriptor("orders", Types.INT()))
        self.items = runtime_context.get_list_state(ListStateDescriptor("items", Types.STRING()))
        self.per_item = runtime_context.get_map_state(
            MapStateDescriptor("per_item", Types.STRING(), Types.INT())
        )
        self.total = runtime_context.get_reducing_state(
            ReducingStateDescriptor("total", lambda a, b: a + b, Types.INT())
        )
        self.mean = runtime_context.get_aggregating_state(
            AggregatingStateDescriptor("mean", MeanAggregate(), Types.PICKLED_BYTE_ARRAY())
        )

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        _, item, qty = value
        n = (self.orders.value() or 0) + 1
        self.orders.update(n)
        self.items.add(item)
        self.per_item.put(item, (self.per_item.get(item) or 0) + qty)
        self.total.add(qty)
        self.mean.add(qty)
        items = ",".join(self.items.get())
        per_item = ",".join(f"{k}={v}" for k, v in sorted(self.per_item.items()))
        yield (
            f"{ctx.get_current_key()} n={n} items=[{items}] per_item={{{per_item}}} "
            f"total={self.total.get()} mean={self.mean.get()} has_fig={self.per_item.contains('fig')}"
        )


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    out = (
        env.from_collection(ORDERS)
        .key_by(lambda o: o[0], key_type=Types.STRING())
        .process(Basket(), output_type=Types.STRING())
    )
    with out.execute_and_collect() as results:
        return [str(r) for r in results]


if __name__ == "__main__":
    for line in main():
        print(line)
