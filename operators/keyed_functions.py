"""Internal: map, flat_map and filter on a keyed stream whose function uses keyed state.

PyFlink lets a ``MapFunction`` (``FlatMapFunction``, ``FilterFunction``, ``ReduceFunction``) on a
``KeyedStream`` call ``runtime_context.get_state(...)`` in ``open`` and use that state per record,
scoped to the record's key. These operators run with a keyed state backend and select the
current key before each call. Whether a function needs that is decided once, when the stream is
built (:func:`needs_current_key`): plain callables and functions without ``open`` or
``initialize_state`` keep the stateless operators of :mod:`raystream.operators.stateless`, with
no per-record key selection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from raystream.api.functions import Function
from raystream.core.keys import KeySelector
from raystream.errors import GraphError
from raystream.operators.stateless import FilterOperator, FlatMapOperator, MapOperator


def needs_current_key(fn: Any) -> bool:
    """Whether ``fn`` may reach keyed state: it overrides ``open(runtime_context)`` (the base
    class's no-op does not count) or has ``initialize_state`` (``CheckpointedFunction``)."""
    if isinstance(fn, type):
        return False
    opener = getattr(type(fn), "open", None)
    if callable(opener) and opener is not Function.open:
        return True
    return callable(getattr(fn, "initialize_state", None))


def _keyed_call(fn: Callable[[Any], Any], ks: KeySelector, backend: Any) -> Callable[[Any], Any]:
    set_key = backend.set_current_key

    def call(value: Any) -> Any:
        set_key(ks(value))
        return fn(value)

    return call


class _CurrentKeyMixin:
    """Wraps the resolved user function once, at ``open``, so that each call first makes the
    record's key the current key of the keyed state backend."""

    name: str
    ctx: Any
    _fn: Callable[[Any], Any]
    _key_selector: KeySelector

    def open(self) -> None:
        if self.ctx is None or self.ctx.keyed_backend is None:
            raise GraphError(f"keyed operator {self.name!r} has no keyed state backend")
        self._fn = _keyed_call(self._fn, self._key_selector, self.ctx.keyed_backend)
        super().open()  # type: ignore[misc]


class KeyedMapOperator(_CurrentKeyMixin, MapOperator):
    def __init__(self, name: str, fn: Any, key_selector: KeySelector):
        super().__init__(name, fn)
        self._key_selector = key_selector


class KeyedFlatMapOperator(_CurrentKeyMixin, FlatMapOperator):
    def __init__(self, name: str, fn: Any, key_selector: KeySelector):
        super().__init__(name, fn)
        self._key_selector = key_selector


class KeyedFilterOperator(_CurrentKeyMixin, FilterOperator):
    def __init__(self, name: str, fn: Any, key_selector: KeySelector):
        super().__init__(name, fn)
        self._key_selector = key_selector
