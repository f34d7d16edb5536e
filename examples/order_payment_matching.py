"""Order/payment matching with connect + keyed state + event-time timers.

Orders and payments are two streams keyed by order id. An order waits for its payment; if none
arrives within 15 minutes of event time the order is reported as unmatched.

    python examples/order_payment_matching.py
"""

from __future__ import annotations

from raystream import (
    KeyedCoProcessFunction,
    OutputTag,
    StreamExecutionEnvironment,
    Time,
    ValueStateDescriptor,
    WatermarkStrategy,
)
from raystream.operators import CollectionSource

TIMEOUT_MS = Time.minutes(15)
UNMATCHED = OutputTag("unmatched-orders")


class MatchPayments(KeyedCoProcessFunction):
    def open(self, runtime_context):
        self.order = runtime_context.get_state(ValueStateDescriptor("order"))
        self.payment = runtime_context.get_state(ValueStateDescriptor("payment"))

    # Whether a payment is in time is decided by event timestamps, never by arrival order, so
    # the result is the same however the two streams interleave.

    def _settle(self, order, payment, ctx):
        if payment["ts"] - order["ts"] <= TIMEOUT_MS:
            yield ("matched", order["id"], order["amount"], payment["amount"])
        else:
            ctx.output(UNMATCHED, ("unmatched", order["id"], order["amount"]))

    def process_element1(self, order, ctx):
        payment = self.payment.value()
        if payment is not None:
            self.payment.clear()
            yield from self._settle(order, payment, ctx)
        else:
            self.order.update(order)
            ctx.timer_service().register_event_time_timer(order["ts"] + TIMEOUT_MS)

    def process_element2(self, payment, ctx):
        order = self.order.value()
        if order is not None:
            self.order.clear()
            ctx.timer_service().delete_event_time_timer(order["ts"] + TIMEOUT_MS)
            yield from self._settle(order, payment, ctx)
        else:
            self.payment.update(payment)

    def on_timer(self, timestamp, ctx):
        order = self.order.value()
        if order is not None:  # no payment within the timeout (in event time)
            self.order.clear()
            ctx.output(UNMATCHED, ("unmatched", order["id"], order["amount"]))


def match(orders: list[dict], payments: list[dict], parallelism: int = 2) -> tuple[list, list]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    ws = WatermarkStrategy.for_bounded_out_of_orderness(Time.seconds(30)).with_timestamp_assigner(
        lambda e: e["ts"]
    )
    order_stream = env.from_source(CollectionSource(orders), ws, "orders")
    payment_stream = env.from_source(CollectionSource(payments), ws, "payments")
    matched = (
        order_stream.connect(payment_stream)
        .key_by(lambda o: o["id"], lambda p: p["order_id"])
        .process(MatchPayments())
    )
    out = list(
        matched.union(matched.get_side_output(UNMATCHED)).execute_and_collect("order matching")
    )
    return sorted(r for r in out if r[0] == "matched"), sorted(
        r for r in out if r[0] == "unmatched"
    )


def sample() -> tuple[list[dict], list[dict]]:
    minute = Time.minutes(1)
    orders = [{"id": i, "amount": 10 * i, "ts": i * minute} for i in range(1, 11)]
    # orders 3 and 7 are never paid; order 9 is paid too late (20 minutes after)
    payments = [
        {
            "order_id": i,
            "amount": 10 * i,
            "ts": i * minute + (20 * minute if i == 9 else 2 * minute),
        }
        for i in range(1, 11)
        if i not in (3, 7)
    ]
    return orders, payments


if __name__ == "__main__":
    matched, unmatched = match(*sample())
    print("matched:  ", [m[1] for m in matched])
    print("unmatched:", [u[1] for u in unmatched])
