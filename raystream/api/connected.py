"""ConnectedStreams (``a.connect(b)``) and broadcast streams (``b.broadcast(descriptor)``)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from raystream.api.functions import (
    BroadcastProcessFunction,
    CoFlatMapFunction,
    CoMapFunction,
    CoProcessFunction,
    KeyedBroadcastProcessFunction,
    KeyedCoProcessFunction,
)
from raystream.api.typeinfo import with_output_type
from raystream.errors import GraphError
from raystream.graph.partitioners import BroadcastPartitioner
from raystream.graph.transformations import Transformation
from raystream.operators.co import CoFlatMapOperator, CoMapOperator, CoProcessOperator

if TYPE_CHECKING:
    from raystream.api.datastream import DataStream


class ConnectedStreams:
    """Two streams processed by one operator that sees both (types may differ)."""

    def __init__(self, first: DataStream, second: DataStream):
        if first._env is not second._env:
            raise GraphError("connect() of streams from different environments")
        self._env = first._env
        self.first = first
        self.second = second

    def _key_selectors(self) -> tuple[Any, Any] | None:
        from raystream.api.datastream import KeyedStream

        a, b = isinstance(self.first, KeyedStream), isinstance(self.second, KeyedStream)
        if a != b:
            raise GraphError("connect(): key both streams (connect(...).key_by(k1, k2)) or neither")
        if a:
            return (self.first.get_key_selector(), self.second.get_key_selector())  # type: ignore[attr-defined]
        return None

    def key_by(self, key_selector1: Any, key_selector2: Any) -> ConnectedStreams:
        return ConnectedStreams(self.first.key_by(key_selector1), self.second.key_by(key_selector2))

    def _add(self, name: str, factory: Any, keyed: bool) -> DataStream:
        from raystream.api.datastream import DataStream

        t = Transformation(
            name=self._env._unique_name(name),
            kind="operator",
            inputs=[(self.first._t, 0), (self.second._t, 1)],
            operator_factory=factory,
            keyed=keyed,
        )
        self._env._add(t)
        return DataStream(self._env, t)

    def map(self, func: CoMapFunction, output_type: Any = None) -> DataStream:
        CoMapOperator("validate", func)
        stream = self._add("CoMap", functools.partial(CoMapOperator, fn=func), False)
        return with_output_type(stream, output_type)

    def flat_map(self, func: CoFlatMapFunction, output_type: Any = None) -> DataStream:
        CoFlatMapOperator("validate", func)
        stream = self._add("CoFlatMap", functools.partial(CoFlatMapOperator, fn=func), False)
        return with_output_type(stream, output_type)

    def process(
        self, func: CoProcessFunction | KeyedCoProcessFunction, output_type: Any = None
    ) -> DataStream:
        ks = self._key_selectors()
        if isinstance(func, KeyedCoProcessFunction) and ks is None:
            raise GraphError(
                "a KeyedCoProcessFunction needs keyed inputs: connect(...).key_by(k1, k2)"
            )
        if not isinstance(func, CoProcessFunction):
            raise TypeError(f"connect().process() needs a CoProcessFunction, got {func!r}")
        factory = functools.partial(CoProcessOperator, fn=func, key_selectors=ks)
        return with_output_type(self._add("CoProcess", factory, ks is not None), output_type)


class BroadcastStream:
    """A stream sent to every subtask of the operator it is connected to, with broadcast state."""

    def __init__(self, stream: DataStream, descriptors: tuple[Any, ...]):
        self.stream = stream
        self.descriptors = descriptors


class BroadcastConnectedStream:
    def __init__(self, first: DataStream, broadcast: BroadcastStream):
        self.first = first
        self.broadcast = broadcast

    def process(
        self,
        func: BroadcastProcessFunction | KeyedBroadcastProcessFunction,
        output_type: Any = None,
    ) -> DataStream:
        from raystream.api.datastream import DataStream, KeyedStream

        keyed = isinstance(self.first, KeyedStream)
        if keyed and not isinstance(func, KeyedBroadcastProcessFunction):
            raise GraphError(
                "a keyed stream connected to a broadcast stream needs a KeyedBroadcastProcessFunction"
            )
        if not keyed and isinstance(func, KeyedBroadcastProcessFunction):
            raise GraphError("a KeyedBroadcastProcessFunction needs a keyed stream: key_by() first")
        if not isinstance(func, BroadcastProcessFunction):
            raise TypeError(f"process() needs a BroadcastProcessFunction, got {func!r}")
        ks = (self.first.get_key_selector(), _no_key) if keyed else None  # type: ignore[attr-defined]
        names = tuple(d.name for d in self.broadcast.descriptors)
        factory = functools.partial(
            CoProcessOperator, fn=func, key_selectors=ks, broadcast_names=names
        )
        env = self.first._env
        part = Transformation(
            name="Broadcast",
            kind="partition",
            inputs=[(self.broadcast.stream._t, 0)],
            partitioner=BroadcastPartitioner(),
        )
        t = Transformation(
            name=env._unique_name("BroadcastProcess"),
            kind="operator",
            inputs=[(self.first._t, 0), (part, 1)],
            operator_factory=factory,
            keyed=keyed,
        )
        env._add(t)
        return with_output_type(DataStream(env, t), output_type)


def _no_key(value: Any) -> None:
    """Broadcast elements carry no key; keyed state is not reachable from that side."""
    return None
