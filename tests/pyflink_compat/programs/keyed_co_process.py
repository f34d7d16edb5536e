"""A KeyedCoProcessFunction matches orders with payments by order id. Both sides are kept in
keyed state and matched when an event-time timer fires: the inputs carry no watermarks before
they end, so every timer fires after both inputs have been read, whatever their interleaving."""

from raystream.common import Types
from raystream.datastream import KeyedCoProcessFunction, RuntimeContext, StreamExecutionEnvironment
from raystream.datastream.state import ListStateDescriptor, ValueStateDescriptor

ORDERS = [("o1", "book"), ("o2", "lamp"), ("o3", "desk"), ("o4", "pen")]
PAYMENTS = [("o2", 30), ("o1", 12), ("o2", 5), ("o4", 1), ("o5", 99)]


class Match(KeyedCoProcessFunction):
    def open(self, runtime_context: RuntimeContext):
        self.order = runtime_context.get_state(ValueStateDescriptor("order", Types.STRING()))
        self.paid = runtime_context.get_list_state(ListStateDescriptor("paid", Types.INT()))

    def process_element1(self, value, ctx: KeyedCoProcessFunction.Context):
        self.order.update(value[1])
        ctx.timer_service().register_event_time_timer(1)

    def process_element2(self, value, ctx: KeyedCoProcessFunction.Context):
        self.paid.add(value[1])
        ctx.timer_service().register_event_time_timer(1)

    def on_timer(self, timestamp, ctx: KeyedCoProcessFunction.OnTimerContext):
        paid = list(self.paid.get())
        order = self.order.value()
        if order is None:
            yield f"{ctx.get_current_key()}: payment without order {sum(paid)}"
        elif not paid:
            yield f"{ctx.get_current_key()}: {order} unpaid"
        else:
            yield f"{ctx.get_current_key()}: {order} paid {sum(paid)} in {len(paid)}"


def main() -> list[str]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    orders = env.from_collection(ORDERS)
    payments = env.from_collection(PAYMENTS)
    matched = (
        orders.connect(payments)
        .key_by(lambda o: o[0], lambda p: p[0])
        .process(Match(), output_type=Types.STRING())
    )
    with matched.execute_and_collect() as results:
        return [str(r) for r in results]


if __name__ == "__main__":
    for line in main():
        print(line)
