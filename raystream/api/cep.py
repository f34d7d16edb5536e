"""Internal: ``CEP.pattern(stream, pattern)`` and :class:`PatternStream` — the CEP entry of the
DataStream API. The operator is :mod:`raystream.operators.cep.operator`."""

from __future__ import annotations

import functools
from typing import Any

from raystream.api.datastream import DataStream, KeyedStream
from raystream.api.functions import OutputTag
from raystream.api.typeinfo import apply_output_type
from raystream.errors import GraphError
from raystream.operators.cep.compiled import CompiledPattern
from raystream.operators.cep.functions import (
    FlatSelectFunction,
    PatternProcessFunction,
    SelectFunction,
)
from raystream.operators.cep.operator import CepOperator
from raystream.operators.cep.pattern import MalformedPatternError, Pattern


class CEP:
    """Entry point: ``CEP.pattern(stream, pattern, comparator=None)``."""

    @staticmethod
    def pattern(stream: DataStream, pattern: Pattern, comparator: Any = None) -> PatternStream:
        """Detects ``pattern`` in ``stream``: per key on a keyed stream, over the whole stream
        at parallelism 1 otherwise. ``comparator(a, b) -> int`` orders events of equal
        timestamp (default: arrival order)."""
        if not isinstance(stream, DataStream):
            raise GraphError(f"CEP.pattern expects a DataStream, got {stream!r}")
        if comparator is not None and not callable(comparator):
            raise GraphError(
                f"CEP.pattern: comparator must be callable(a, b) -> int, got {comparator!r}"
            )
        return PatternStream(stream, CompiledPattern(pattern), comparator)


class PatternStream:
    """The stream of matches of a pattern; ``process`` / ``select`` / ``flat_select`` make it a
    DataStream."""

    def __init__(self, stream: DataStream, compiled: CompiledPattern, comparator: Any):
        self._stream = stream
        self._compiled = compiled
        self._comparator = comparator
        self._processing_time = False
        self._late_tag: str | None = None

    def in_event_time(self) -> PatternStream:
        self._processing_time = False
        return self

    def in_processing_time(self) -> PatternStream:
        self._processing_time = True
        return self

    def side_output_late_data(self, output_tag: OutputTag) -> PatternStream:
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"side_output_late_data expects an OutputTag, got {output_tag!r}")
        self._late_tag = output_tag.tag_id
        return self

    def process(self, fn: PatternProcessFunction, output_type: Any = None) -> DataStream:
        if not isinstance(fn, PatternProcessFunction):
            raise GraphError(
                f"PatternStream.process expects a PatternProcessFunction, got {fn!r}; "
                "use select(fn) or flat_select(fn) for a plain callable"
            )
        if self._processing_time and self._comparator is not None:
            raise MalformedPatternError(
                "a comparator in processing time is not implemented by raystream yet "
                "(events are processed on arrival)"
            )
        stream = self._stream
        if isinstance(stream, KeyedStream):
            keyed, parallelism = stream, None
        else:  # as Flink: a non-keyed stream is matched as a whole, at parallelism 1
            keyed, parallelism = stream._global_keyed(), 1
        factory = functools.partial(
            CepOperator,
            fn=fn,
            key_selector=keyed._key_selector,
            compiled=self._compiled,
            processing_time=self._processing_time,
            late_tag_id=self._late_tag,
            comparator=self._comparator,
        )
        t = keyed._add("CEP", factory, keyed=True)
        apply_output_type(t, output_type)
        out = DataStream(keyed._env, t)
        if parallelism is not None:
            out.set_parallelism(parallelism)
        return out

    def select(self, fn: Any, output_type: Any = None) -> DataStream:
        """One output per match: ``fn(match)``."""
        _check_callable(fn, "select")
        return self.process(SelectFunction(fn), output_type)

    def flat_select(self, fn: Any, output_type: Any = None) -> DataStream:
        """Any number of outputs per match: ``fn(match)`` returns or yields them."""
        _check_callable(fn, "flat_select")
        return self.process(FlatSelectFunction(fn), output_type)


def _check_callable(fn: Any, what: str) -> None:
    if isinstance(fn, type) or not callable(fn):
        raise GraphError(f"PatternStream.{what} expects a callable(match), got {fn!r}")
