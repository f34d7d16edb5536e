"""Internal: the user-function interfaces of CEP (``PatternProcessFunction``, the timed-out
match handler) and the adapters behind ``select`` / ``flat_select``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from raystream.api.functions import Function


class PatternProcessFunction(Function, ABC):
    """Called once per match: ``process_match(match, ctx)`` with ``match`` a ``dict`` of stage
    name to its events (pattern order, events in timestamp order); yield or return the outputs.
    ``ctx.timestamp()`` is the match's record timestamp, ``ctx.output(tag, value)`` a side
    output."""

    @abstractmethod
    def process_match(self, match: dict[str, list], ctx: Any) -> Any: ...


class TimedOutPartialMatchHandler(ABC):
    """Mixin for a :class:`PatternProcessFunction`: ``process_timed_out_match(match, ctx)`` is
    called for each partial match that timed out (``within``); its results go to side outputs
    (``ctx.output(tag, value)`` or yielded ``(tag, value)`` pairs), as in Flink."""

    @abstractmethod
    def process_timed_out_match(self, match: dict[str, list], ctx: Any) -> Any: ...


class SelectFunction(PatternProcessFunction):
    """``select(fn)``: one output per match, ``fn(match)``."""

    def __init__(self, fn: Any):
        self.fn = fn

    def process_match(self, match: dict[str, list], ctx: Any) -> Any:
        return (self.fn(match),)


class FlatSelectFunction(PatternProcessFunction):
    """``flat_select(fn)``: ``fn(match)`` returns or yields any number of outputs."""

    def __init__(self, fn: Any):
        self.fn = fn

    def process_match(self, match: dict[str, list], ctx: Any) -> Any:
        return self.fn(match)
