"""WindowedStream / AllWindowedStream: ``key_by(...).window(assigner)`` and ``window_all``."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from raystream.api.aggregates import checked, is_declarative
from raystream.api.functions import OutputTag, ReduceFunction, resolve
from raystream.api.typeinfo import with_output_type
from raystream.core.time import Duration, to_millis
from raystream.errors import GraphError
from raystream.graph.transformations import declared_type
from raystream.operators.windows.assigners import GlobalWindows, WindowAssigner
from raystream.operators.windows.evictors import CountEvictor, Evictor
from raystream.operators.windows.operator import AGGREGATE, APPLY, PROCESS, REDUCE, WindowOperator
from raystream.operators.windows.triggers import CountTrigger, PurgingTrigger, Trigger

if TYPE_CHECKING:
    from raystream.api.datastream import DataStream, KeyedStream


def checked_trigger(assigner: WindowAssigner, trigger: Any) -> Trigger:
    if not isinstance(trigger, Trigger):
        raise TypeError(f"trigger() expects a Trigger, got {trigger!r}")
    if assigner.is_merging() and not trigger.can_merge():
        raise GraphError(f"{type(trigger).__name__} cannot be used with merging (session) windows")
    return trigger


def checked_evictor(evictor: Any) -> Evictor:
    if not isinstance(evictor, Evictor):
        raise TypeError(f"evictor() expects an Evictor, got {evictor!r}")
    return evictor


def checked_lateness(time: Duration) -> int:
    ms = to_millis(time, "allowed lateness")
    if ms < 0:
        raise GraphError(f"allowed lateness must be >= 0, got {ms} ms")
    return ms


class WindowedStream:
    """A keyed stream cut into windows; finish it with reduce/aggregate/process/apply."""

    def __init__(
        self, keyed: KeyedStream, assigner: WindowAssigner, parallelism: int | None = None
    ):
        if not isinstance(assigner, WindowAssigner):
            raise TypeError(f"window() expects a WindowAssigner, got {assigner!r}")
        self._keyed = keyed
        self._assigner = assigner
        self._trigger: Trigger | None = None
        self._evictor: Evictor | None = None
        self._lateness = 0
        self._late_tag: str | None = None
        self._parallelism = parallelism

    def trigger(self, trigger: Trigger) -> WindowedStream:
        self._trigger = checked_trigger(self._assigner, trigger)
        return self

    def evictor(self, evictor: Evictor) -> WindowedStream:
        self._evictor = checked_evictor(evictor)
        return self

    def allowed_lateness(self, time: Duration) -> WindowedStream:
        self._lateness = checked_lateness(time)
        return self

    def side_output_late_data(self, output_tag: OutputTag) -> WindowedStream:
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"side_output_late_data expects an OutputTag, got {output_tag!r}")
        self._late_tag = output_tag.tag_id
        return self

    def _build(
        self, name: str, kind: str, function: Any, window_function: Any = None
    ) -> DataStream:
        from raystream.api.datastream import DataStream

        factory = functools.partial(
            WindowOperator,
            key_selector=self._keyed.get_key_selector(),
            assigner=self._assigner,
            trigger=self._trigger,
            evictor=self._evictor,
            allowed_lateness_ms=self._lateness,
            late_tag_id=self._late_tag,
            kind=kind,
            function=function,
            window_function=window_function,
        )
        # validate now (e.g. session windows with an AggregateFunction lacking merge)
        factory(name)
        stream = DataStream(self._keyed._env, self._keyed._add(name, factory, keyed=True))
        if self._parallelism is not None:
            stream.set_parallelism(self._parallelism)
        return stream

    def reduce(
        self, reduce_function: Any, window_function: Any = None, output_type: Any = None
    ) -> DataStream:
        resolve(reduce_function, ReduceFunction, "reduce", "window reduce")
        stream = self._build("Window(Reduce)", REDUCE, reduce_function, window_function)
        if output_type is None and window_function is None:  # the input's type, as PyFlink
            output_type = declared_type(self._keyed._t)
        return with_output_type(stream, output_type)

    def _field_aggregate(self, kind: str, field: int | str | None) -> DataStream:
        from raystream.operators.keyed import aggregation

        label = kind.capitalize().replace("_b", "B")
        stream = self._build(f"Window({label})", REDUCE, aggregation(kind, field))
        return with_output_type(stream, declared_type(self._keyed._t))

    def sum(self, field: int | str | None = None) -> DataStream:
        """Per window: the first record with ``field`` replaced by the sum (as Flink)."""
        return self._field_aggregate("sum", field)

    def min(self, field: int | str | None = None) -> DataStream:
        return self._field_aggregate("min", field)

    def max(self, field: int | str | None = None) -> DataStream:
        return self._field_aggregate("max", field)

    def min_by(self, field: int | str | None = None) -> DataStream:
        return self._field_aggregate("min_by", field)

    def max_by(self, field: int | str | None = None) -> DataStream:
        return self._field_aggregate("max_by", field)

    def aggregate(
        self,
        aggregate_function: Any,
        window_function: Any = None,
        accumulator_type: Any = None,
        output_type: Any = None,
        *more_aggregates: Any,
    ) -> DataStream:
        """An ``AggregateFunction`` (optionally with a window function), or declarative
        aggregates: ``aggregate(agg.count(), agg.sum("v"), ...)`` — one ``Row`` per key and
        window with the key (``key``, or the fields of ``key_by("a", ...)``),
        ``window_start``, ``window_end`` and one field per aggregate, computed without a call
        per record (see ``raystream.agg``). ``accumulator_type`` is metadata (accumulators
        are Python objects)."""
        given = (aggregate_function, window_function, accumulator_type, output_type)
        if is_declarative(given):
            return self._declarative(tuple(a for a in (*given, *more_aggregates) if a is not None))
        for method in ("create_accumulator", "add", "get_result"):
            if not callable(getattr(aggregate_function, method, None)):
                raise TypeError(f"aggregate() needs an AggregateFunction with {method}()")
        stream = self._build("Window(Aggregate)", AGGREGATE, aggregate_function, window_function)
        return with_output_type(stream, output_type)

    def _declarative(self, aggregates: tuple[Any, ...]) -> DataStream:
        from raystream.operators.row_aggregates import RowAggregate

        fields = getattr(self._keyed, "_key_fields", None)
        names = list(fields) if fields else ["key"]
        aggs = checked(aggregates, [*names, "window_start", "window_end"], "aggregate()")
        return self._build("Window(Aggregate)", AGGREGATE, RowAggregate(aggs, fields))

    def process(self, process_window_function: Any, output_type: Any = None) -> DataStream:
        if not (
            callable(getattr(process_window_function, "process", None))
            or callable(process_window_function)
        ):
            raise TypeError(
                "process() needs a ProcessWindowFunction or a callable(key, context, elements)"
            )
        stream = self._build("Window(Process)", PROCESS, process_window_function)
        return with_output_type(stream, output_type)

    def apply(self, window_function: Any, output_type: Any = None) -> DataStream:
        if not (callable(getattr(window_function, "apply", None)) or callable(window_function)):
            raise TypeError("apply() needs a WindowFunction or a callable(key, window, inputs)")
        return with_output_type(self._build("Window(Apply)", APPLY, window_function), output_type)


class AllWindowedStream(WindowedStream):
    """``window_all``: every record in one key, at parallelism 1 (as Flink).

    Functions get ``None`` as key: ``process(None, context, elements)``."""

    def process(self, process_window_function: Any, output_type: Any = None) -> DataStream:
        fn = process_window_function
        if isinstance(fn, type) or not (callable(getattr(fn, "process", None)) or callable(fn)):
            raise TypeError(
                "process() needs a ProcessAllWindowFunction or a callable(context, elements)"
            )
        return super().process(_AllProcess(fn), output_type)

    def apply(self, window_function: Any, output_type: Any = None) -> DataStream:
        return super().apply(_AllApply(window_function), output_type)


def _no_key(value: Any) -> None:
    return None


class _AllProcess:
    """Adapts ``process(context, elements)`` of an all-window function to the keyed form."""

    def __init__(self, fn: Any):
        self.fn = fn

    def process(self, key: Any, context: Any, elements: Any) -> Any:
        process = getattr(self.fn, "process", self.fn)
        return process(context, elements)

    def clear(self, context: Any) -> None:
        clear = getattr(self.fn, "clear", None)
        if callable(clear):
            clear(context)

    def open(self, ctx: Any) -> None:
        opener = getattr(self.fn, "open", None)
        if callable(opener):
            opener(ctx)

    def close(self) -> None:
        closer = getattr(self.fn, "close", None)
        if callable(closer):
            closer()


class _AllApply(_AllProcess):
    def apply(self, key: Any, window: Any, inputs: Any) -> Any:
        apply = getattr(self.fn, "apply", self.fn)
        return apply(window, inputs)


def count_window(keyed: KeyedStream, size: int, slide: int | None = None) -> WindowedStream:
    if size <= 0 or (slide is not None and slide <= 0):
        raise GraphError(f"count windows need size > 0 and slide > 0, got {size}, {slide}")
    ws = WindowedStream(keyed, GlobalWindows.create())
    if slide is None:
        ws._trigger = PurgingTrigger.of(CountTrigger.of(size))
    else:
        ws._evictor = CountEvictor.of(size)
        ws._trigger = CountTrigger.of(slide)
    return ws
