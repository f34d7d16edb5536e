"""Two-input operators driven directly: keyed co-process timers, broadcast state rules."""

from __future__ import annotations

import pytest

from raystream import (
    BroadcastProcessFunction,
    GraphError,
    KeyedBroadcastProcessFunction,
    KeyedCoProcessFunction,
    MapStateDescriptor,
    ValueStateDescriptor,
)
from raystream.operators.co import CoProcessOperator
from raystream.testing import OperatorHarness

RULES = MapStateDescriptor("rules")
COUNT = ValueStateDescriptor("count")


class CountAndReset(KeyedBroadcastProcessFunction):
    def open(self, ctx):
        self.count = ctx.get_state(COUNT)

    def process_element(self, value, ctx):
        self.count.update((self.count.value() or 0) + 1)
        limit = ctx.get_broadcast_state(RULES).get("limit")
        yield (ctx.get_current_key(), self.count.value(), limit)

    def process_broadcast_element(self, rule, ctx):
        ctx.get_broadcast_state(RULES).put("limit", rule)
        # a new rule resets every key's counter on this subtask
        ctx.apply_to_keyed_state(COUNT, lambda key, state: state.clear())


def test_keyed_broadcast_apply_to_keyed_state_reaches_every_key():
    op = CoProcessOperator(
        "b",
        CountAndReset(),
        key_selectors=(lambda v: v, lambda v: None),
        broadcast_names=("rules",),
    )
    h = OperatorHarness(op, keyed=True)
    h.process(["a", "b", "a"])
    h.process2([5])
    h.process(["a", "b"])
    assert h.values() == [("a", 1, None), ("b", 1, None), ("a", 2, None), ("a", 1, 5), ("b", 1, 5)]


class Writer(BroadcastProcessFunction):
    def process_element(self, value, ctx):
        ctx.get_broadcast_state(RULES).put("x", value)  # not allowed on this side
        return []

    def process_broadcast_element(self, value, ctx):
        return []


def test_broadcast_state_is_read_only_on_the_data_side():
    op = CoProcessOperator("w", Writer(), broadcast_names=("rules",))
    h = OperatorHarness(op)
    with pytest.raises(GraphError, match="read-only"):
        h.process([1])


class Timeout(KeyedCoProcessFunction):
    def process_element1(self, v, ctx):
        ctx.timer_service().register_event_time_timer(ctx.timestamp() + 10)
        return []

    def process_element2(self, v, ctx):
        ctx.timer_service().delete_event_time_timer(v[1] + 10)
        return []

    def on_timer(self, ts, ctx):
        yield (ctx.get_current_key(), ts)


def test_keyed_co_process_timers_and_deletion():
    op = CoProcessOperator("t", Timeout(), key_selectors=(lambda v: v[0], lambda v: v[0]))
    h = OperatorHarness(op, keyed=True)
    h.process([("a", 1), ("b", 2)], [1, 2])
    h.process2([("a", 1)], [5])
    h.watermark(100)
    assert h.output == [(("b", 12), 12)]


class TouchesKeyedStateOnBroadcastSide(KeyedBroadcastProcessFunction):
    def open(self, ctx):
        self.count = ctx.get_state(COUNT)

    def process_element(self, value, ctx):
        return []

    def process_broadcast_element(self, rule, ctx):
        self.count.update(1)  # not allowed: broadcast elements have no key
        return []


def test_keyed_state_on_the_broadcast_side_is_refused():
    op = CoProcessOperator(
        "b",
        TouchesKeyedStateOnBroadcastSide(),
        key_selectors=(lambda v: v, lambda v: None),
        broadcast_names=("rules",),
    )
    h = OperatorHarness(op, keyed=True)
    h.process(["a"])
    with pytest.raises(GraphError, match="process_broadcast_element"):
        h.process2([1])


class SharedProfile(KeyedCoProcessFunction):
    def open(self, ctx):
        self.profile = ctx.get_state(ValueStateDescriptor("profile"))

    def process_element1(self, event, ctx):
        yield (event, self.profile.value())

    def process_element2(self, profile, ctx):
        self.profile.update(profile[1])


def test_keyed_co_process_shares_state_between_inputs_by_key():
    op = CoProcessOperator("e", SharedProfile(), key_selectors=(lambda e: e[0], lambda p: p[0]))
    h = OperatorHarness(op, keyed=True)
    h.process([("a", 1)])
    h.process2([("a", "gold"), ("b", "silver")])
    h.process([("a", 2), ("b", 3), ("c", 4)])
    assert h.values() == [
        (("a", 1), None),
        (("a", 2), "gold"),
        (("b", 3), "silver"),
        (("c", 4), None),
    ]
