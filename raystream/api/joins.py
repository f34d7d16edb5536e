"""Joins of two streams: interval joins of keyed streams, window joins and window co-groups.

Interval join (SEMANTICS §7.2): each left record joins the right records of the same key whose
timestamps lie within ``[left.ts + lower, left.ts + upper]``::

    orders.key_by(lambda o: o["user"]).interval_join(clicks.key_by(lambda c: c["user"])) \\
        .between(timedelta(minutes=-5), timedelta(0)) \\
        .process(lambda order, click, ctx: [(order, click)])

Window join and co-group (SEMANTICS §7.1): records of both streams with equal keys that fall into
the same window::

    a.join(b).where(key_a).equal_to(key_b) \\
        .window(TumblingEventTimeWindows.of(1000)) \\
        .apply(lambda left, right: (left, right))

Both run in event time; window joins also in processing time when the assigner says so.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from raystream.api.functions import Function, KeySelector, OutputTag, resolve
from raystream.api.typeinfo import with_output_type
from raystream.api.windowing import checked_evictor, checked_lateness, checked_trigger
from raystream.core.time import Duration, to_millis
from raystream.errors import GraphError
from raystream.graph.transformations import Transformation
from raystream.operators.windows.assigners import WindowAssigner
from raystream.operators.windows.evictors import Evictor
from raystream.operators.windows.triggers import Trigger

if TYPE_CHECKING:
    from raystream.api.datastream import DataStream, KeyedStream

__all__ = [
    "CoGroupFunction",
    "CoGroupedStreams",
    "FlatJoinFunction",
    "IntervalJoin",
    "IntervalJoined",
    "JoinFunction",
    "JoinedStreams",
    "ProcessJoinFunction",
    "WindowedCoGroup",
    "WindowedJoin",
]


# -- user functions ----------------------------------------------------------------------------------


class ProcessJoinFunction(Function, ABC):
    """Called for every joined pair of an interval join; yields (or returns) its outputs."""

    class Context(ABC):
        @abstractmethod
        def get_left_timestamp(self) -> int: ...

        @abstractmethod
        def get_right_timestamp(self) -> int: ...

        @abstractmethod
        def get_timestamp(self) -> int:
            """The outputs' timestamp: ``max(left, right)``."""

        @abstractmethod
        def output(self, output_tag: OutputTag, value: Any) -> None: ...

    @abstractmethod
    def process_element(
        self, left: Any, right: Any, ctx: ProcessJoinFunction.Context
    ) -> Iterable[Any] | None: ...


class JoinFunction(Function, ABC):
    """Window join: one output per pair."""

    @abstractmethod
    def join(self, first: Any, second: Any) -> Any: ...


class FlatJoinFunction(Function, ABC):
    """Window join: any number of outputs per pair (yield them)."""

    @abstractmethod
    def join(self, first: Any, second: Any) -> Iterable[Any]: ...


class CoGroupFunction(Function, ABC):
    """Window co-group: all elements of both sides of one key and window (either may be empty)."""

    @abstractmethod
    def co_group(self, first: list[Any], second: list[Any]) -> Iterable[Any]: ...


# -- interval join -----------------------------------------------------------------------------------


class IntervalJoin:
    """``keyed_a.interval_join(keyed_b)``: set the interval with :meth:`between`."""

    def __init__(self, first: KeyedStream, second: KeyedStream):
        from raystream.api.datastream import KeyedStream

        for which, s in (("left", first), ("right", second)):
            if not isinstance(s, KeyedStream):
                raise GraphError(
                    f"interval_join needs two keyed streams, but the {which} one is a "
                    f"{type(s).__name__}; hint: a.key_by(k1).interval_join(b.key_by(k2))"
                )
        if first._env is not second._env:
            raise GraphError("interval_join() of streams from different environments")
        self._first = first
        self._second = second

    def between(self, lower_bound: Duration, upper_bound: Duration) -> IntervalJoined:
        """Right records with ``left.ts + lower_bound <= right.ts <= left.ts + upper_bound``
        join (bounds may be negative; ``lower_bound <= upper_bound``)."""
        lower = to_millis(lower_bound, "interval join lower bound")
        upper = to_millis(upper_bound, "interval join upper bound")
        if lower > upper:
            raise GraphError(
                f"interval join: lower bound {lower} ms is above upper bound {upper} ms "
                "(expected between(lower, upper) with lower <= upper)"
            )
        return IntervalJoined(self._first, self._second, lower, upper)


class IntervalJoined:
    """An interval join with its bounds; finish it with :meth:`process`."""

    def __init__(self, first: KeyedStream, second: KeyedStream, lower_ms: int, upper_ms: int):
        self._first = first
        self._second = second
        self._lower = lower_ms
        self._upper = upper_ms
        self._lower_inclusive = True
        self._upper_inclusive = True
        self._late_tags: list[str | None] = [None, None]

    def lower_bound_exclusive(self) -> IntervalJoined:
        self._lower_inclusive = False
        return self

    def upper_bound_exclusive(self) -> IntervalJoined:
        self._upper_inclusive = False
        return self

    def _late_tag(self, side: int, output_tag: OutputTag, what: str) -> IntervalJoined:
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"{what} expects an OutputTag, got {output_tag!r}")
        self._late_tags[side] = output_tag.tag_id
        return self

    def side_output_left_late_data(self, output_tag: OutputTag) -> IntervalJoined:
        """Late left records go to this side output instead of being dropped."""
        return self._late_tag(0, output_tag, "side_output_left_late_data")

    def side_output_right_late_data(self, output_tag: OutputTag) -> IntervalJoined:
        """Late right records go to this side output instead of being dropped."""
        return self._late_tag(1, output_tag, "side_output_right_late_data")

    def process(
        self, process_join_function: ProcessJoinFunction | Any, output_type: Any = None
    ) -> DataStream:
        """Calls ``process_element(left, right, ctx)`` (or the callable) for every pair."""
        from raystream.api.datastream import DataStream
        from raystream.operators.joins import IntervalJoinOperator

        env = self._first._env
        factory = functools.partial(
            IntervalJoinOperator,
            fn=process_join_function,
            key_selectors=(self._first.get_key_selector(), self._second.get_key_selector()),
            lower_ms=self._lower,
            upper_ms=self._upper,
            lower_inclusive=self._lower_inclusive,
            upper_inclusive=self._upper_inclusive,
            left_late_tag_id=self._late_tags[0],
            right_late_tag_id=self._late_tags[1],
        )
        # validate now (the function; an interval that holds no timestamp), before naming it
        factory("IntervalJoin")
        name = env._unique_name("IntervalJoin")
        t = Transformation(
            name=name,
            kind="operator",
            inputs=[(self._first._t, 0), (self._second._t, 1)],
            operator_factory=factory,
            keyed=True,
        )
        env._add(t)
        return with_output_type(DataStream(env, t), output_type)


# -- window join and co-group --------------------------------------------------------------------------


class _TwoStreams:
    """``where(key_a).equal_to(key_b).window(assigner)`` shared by join and co-group."""

    _what = "join"

    def __init__(
        self, first: DataStream, second: DataStream, key1: Any = None, key2: Any = None
    ) -> None:
        from raystream.api.datastream import DataStream

        if not isinstance(second, DataStream):
            raise TypeError(f"{self._what}() expects a DataStream, got {second!r}")
        if first._env is not second._env:
            raise GraphError(f"{self._what}() of streams from different environments")
        self._first = first
        self._second = second
        self._key1 = key1
        self._key2 = key2

    def where(self, key_selector: KeySelector | Any, key_type: Any = None) -> Any:
        """The key of the first stream's records."""
        ks = resolve(key_selector, KeySelector, "get_key", f"{self._what}().where")
        return type(self)(self._first, self._second, ks, None)

    def equal_to(self, key_selector: KeySelector | Any, key_type: Any = None) -> Any:
        """The key of the second stream's records; joined keys are compared with ``==``."""
        if self._key1 is None:
            raise GraphError(f"{self._what}(): call where(key) before equal_to(key)")
        ks = resolve(key_selector, KeySelector, "get_key", f"{self._what}().equal_to")
        return type(self)(self._first, self._second, self._key1, ks)

    def _windowed(self, assigner: WindowAssigner) -> tuple[Any, Any]:
        if self._key1 is None or self._key2 is None:
            raise GraphError(
                f"{self._what}(): set both keys before window(): "
                f"{self._what}(other).where(key_a).equal_to(key_b).window(assigner)"
            )
        if not isinstance(assigner, WindowAssigner):
            raise TypeError(f"window() expects a WindowAssigner, got {assigner!r}")
        return self._key1, self._key2


class JoinedStreams(_TwoStreams):
    """``a.join(b)``: inner join of the records of equal keys in the same window."""

    _what = "join"

    def window(self, assigner: WindowAssigner) -> WindowedJoin:
        key1, key2 = self._windowed(assigner)
        return WindowedJoin(self._first, self._second, key1, key2, assigner)


class CoGroupedStreams(_TwoStreams):
    """``a.co_group(b)``: both sides' records of each key and window, in two lists."""

    _what = "co_group"

    def window(self, assigner: WindowAssigner) -> WindowedCoGroup:
        key1, key2 = self._windowed(assigner)
        return WindowedCoGroup(self._first, self._second, key1, key2, assigner)


class _WindowedTwoStreams:
    """Trigger, evictor and allowed lateness, then ``apply``: a tagged union through a window."""

    _name = "WindowJoin"

    def __init__(
        self, first: DataStream, second: DataStream, key1: Any, key2: Any, assigner: WindowAssigner
    ):
        self._first = first
        self._second = second
        self._key1 = key1
        self._key2 = key2
        self._assigner = assigner
        self._trigger: Trigger | None = None
        self._evictor: Evictor | None = None
        self._lateness_ms = 0

    def trigger(self, trigger: Trigger) -> Any:
        """Replaces the assigner's default trigger."""
        self._trigger = checked_trigger(self._assigner, trigger)
        return self

    def evictor(self, evictor: Evictor) -> Any:
        """Evicts from the window's contents; elements are ``(side, key, value)`` tuples."""
        self._evictor = checked_evictor(evictor)
        return self

    def allowed_lateness(self, time: Duration) -> Any:
        self._lateness_ms = checked_lateness(time)
        return self

    def _build(self, window_function: Any) -> DataStream:
        from raystream.api.windowing import WindowedStream
        from raystream.operators.joins import LEFT, RIGHT, TagSide, tagged_key
        from raystream.operators.windows.operator import APPLY

        env = self._first._env
        left = self._first.map(TagSide(LEFT, self._key1))
        left.name(env._unique_name(f"{self._name}(TagLeft)"))
        right = self._second.map(TagSide(RIGHT, self._key2))
        right.name(env._unique_name(f"{self._name}(TagRight)"))
        for tagged in (left, right):
            # as in Flink, a tagger runs at its input's parallelism, so it chains to it
            tagged._t.inherit_parallelism = True
        ws = WindowedStream(left.union(right).key_by(tagged_key), self._assigner)
        if self._trigger is not None:
            ws.trigger(self._trigger)
        if self._evictor is not None:
            ws.evictor(self._evictor)
        ws.allowed_lateness(self._lateness_ms)
        return ws._build(self._name, APPLY, window_function)


class WindowedJoin(_WindowedTwoStreams):
    """A window join with its window; finish it with :meth:`apply`."""

    _name = "WindowJoin"

    def apply(
        self, join_function: JoinFunction | FlatJoinFunction | Any, output_type: Any = None
    ) -> DataStream:
        """``join(left, right)`` for every pair of equal keys in one window: one output from a
        :class:`JoinFunction` or a callable, any number from a :class:`FlatJoinFunction`.
        Results carry the window's ``end - 1``."""
        from raystream.operators.joins import CoGroupWindowFunction, JoinCoGroup

        stream = self._build(CoGroupWindowFunction(JoinCoGroup(join_function)))
        return with_output_type(stream, output_type)


class WindowedCoGroup(_WindowedTwoStreams):
    """A window co-group with its window; finish it with :meth:`apply`."""

    _name = "WindowCoGroup"

    def apply(
        self, co_group_function: CoGroupFunction | Any, output_type: Any = None
    ) -> DataStream:
        """``co_group(lefts, rights)`` for every key and window with at least one element on
        either side; it yields (or returns) outputs. Results carry the window's ``end - 1``."""
        from raystream.operators.joins import CoGroupWindowFunction

        return with_output_type(self._build(CoGroupWindowFunction(co_group_function)), output_type)
