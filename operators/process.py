"""Internal: ProcessFunction and KeyedProcessFunction operators.

``process_element(value, ctx)`` yields or returns its outputs (PyFlink style); side outputs go
through ``ctx.output(tag, value)``. Outputs keep the timestamp of the record that produced them.
"""

from __future__ import annotations

from typing import Any

from raystream.api.functions import KeyedProcessFunction, OutputTag, ProcessFunction
from raystream.core.keys import KeySelector
from raystream.errors import GraphError
from raystream.operators.stateless import UdfOperator
from raystream.runtime.elements import Batch


def _resolve_process(fn: Any, interface: type) -> Any:
    if isinstance(fn, interface):
        return fn.process_element
    if callable(fn):
        return fn
    raise TypeError(f"process expects a {interface.__name__} or a callable(value, ctx)")


class _ProcessContext(KeyedProcessFunction.Context):
    """The ``ctx`` passed to ``process_element``; one object reused for every record."""

    __slots__ = ("_ts", "_key", "_side", "_op")

    def __init__(self, op: UdfOperator):
        self._op = op
        self._ts: int | None = None
        self._key: Any = None
        self._side: dict[str, tuple[list, list]] = {}

    def timestamp(self) -> int | None:
        return self._ts

    def get_current_key(self) -> Any:
        return self._key

    def output(self, output_tag: OutputTag, value: Any) -> None:
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"ctx.output expects an OutputTag, got {output_tag!r}")
        buf = self._side.get(output_tag.tag_id)
        if buf is None:
            buf = self._side[output_tag.tag_id] = ([], [])
        buf[0].append(value)
        buf[1].append(self._ts)

    def flush_side_outputs(self) -> None:
        if not self._side:
            return
        for tag_id, (values, stamps) in self._side.items():
            if values:
                has_ts = any(t is not None for t in stamps)
                self._op.side_output(tag_id).emit(Batch(values, stamps if has_ts else None))
        self._side = {}


class ProcessOperator(UdfOperator):
    """Runs a :class:`ProcessFunction` on a non-keyed stream."""

    def __init__(self, name: str, fn: Any):
        super().__init__(name, fn)
        self._fn = _resolve_process(fn, ProcessFunction)
        self._pctx = _ProcessContext(self)

    def process_batch(self, batch: Batch) -> None:
        fn = self._fn
        ctx = self._pctx
        out: list = []
        ts_out: list = []
        values = batch.values
        stamps = batch.timestamps or [None] * len(values)
        v = None
        try:
            for v, t in zip(values, stamps):
                ctx._ts = t
                result = fn(v, ctx)
                if result is not None:
                    n = len(out)
                    out.extend(result)
                    if len(out) > n:
                        ts_out.extend([t] * (len(out) - n))
        except Exception as exc:
            raise self.user_error(exc, v) from exc
        ctx.flush_side_outputs()
        self.output.emit(Batch(out, ts_out if batch.timestamps is not None else None))


class KeyedProcessOperator(UdfOperator):
    """Runs a :class:`KeyedProcessFunction`; keyed state is scoped to each record's key."""

    def __init__(self, name: str, fn: Any, key_selector: KeySelector):
        super().__init__(name, fn)
        self._fn = _resolve_process(fn, KeyedProcessFunction)
        self._key_selector = key_selector
        self._pctx = _ProcessContext(self)

    def open(self) -> None:
        assert self.ctx is not None
        if self.ctx.keyed_backend is None:
            raise GraphError(f"keyed operator {self.name!r} has no keyed state backend")
        super().open()

    def process_batch(self, batch: Batch) -> None:
        fn = self._fn
        ks = self._key_selector
        ctx = self._pctx
        backend = self.ctx.keyed_backend  # type: ignore[union-attr]
        out: list = []
        ts_out: list = []
        values = batch.values
        stamps = batch.timestamps or [None] * len(values)
        v = None
        try:
            for v, t in zip(values, stamps):
                key = ks(v)
                backend.current_key = key
                ctx._key = key
                ctx._ts = t
                result = fn(v, ctx)
                if result is not None:
                    n = len(out)
                    out.extend(result)
                    if len(out) > n:
                        ts_out.extend([t] * (len(out) - n))
        except Exception as exc:
            raise self.user_error(exc, v) from exc
        ctx.flush_side_outputs()
        self.output.emit(Batch(out, ts_out if batch.timestamps is not None else None))
