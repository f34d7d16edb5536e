"""Internal: ProcessFunction and KeyedProcessFunction operators, with timers.

``process_element(value, ctx)`` yields or returns its outputs (PyFlink style); side outputs go
through ``ctx.output(tag, value)`` or, as in PyFlink, by yielding a pair ``(output_tag, value)``
(see :func:`collect_routed`). Outputs keep the timestamp of the record that produced them;
outputs of an event-time timer carry the timer's timestamp. Keyed operators own a
:class:`~raystream.core.timers.TimerService`: event-time timers fire when the watermark passes
them (before the watermark is forwarded), processing-time timers when the task's clock does.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from raystream.api.functions import (
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    register_contexts,
)
from raystream.core.keys import KeySelector
from raystream.core.timers import EVENT_TIME, PROCESSING_TIME, TimerService
from raystream.errors import GraphError
from raystream.operators.stateless import UdfOperator
from raystream.runtime.elements import Batch


class TimeDomain(enum.Enum):
    EVENT_TIME = EVENT_TIME
    PROCESSING_TIME = PROCESSING_TIME


def _resolve_process(fn: Any, interface: type[Any]) -> Any:
    if isinstance(fn, interface):
        return fn.process_element
    if callable(fn):
        return fn
    raise TypeError(f"process expects a {interface.__name__} or a callable(value, ctx)")


class UserTimerService:
    """``ctx.timer_service()``: timers of the current key (keyed streams only)."""

    __slots__ = ("_op",)

    def __init__(self, op: Any):
        self._op = op

    def current_processing_time(self) -> int:
        return self._op.ctx.clock.now_ms()  # type: ignore[no-any-return]

    def current_watermark(self) -> int:
        return self._op.current_watermark  # type: ignore[no-any-return]

    def _timers(self, what: str) -> TimerService:
        timers = getattr(self._op, "timers", None)
        if timers is None:
            raise GraphError(
                f"{what}: timers are only available on keyed streams (operator {self._op.name!r}); "
                "call key_by() first"
            )
        return timers  # type: ignore[no-any-return]

    def _key(self) -> Any:
        key = self._op.ctx.keyed_backend.current_key
        hash(key)  # the broadcast side has no key: this raises a clear error there
        return key

    def register_event_time_timer(self, timestamp: int) -> None:
        self._timers("register_event_time_timer").register(EVENT_TIME, int(timestamp), self._key())

    def register_processing_time_timer(self, timestamp: int) -> None:
        self._timers("register_processing_time_timer").register(
            PROCESSING_TIME, int(timestamp), self._key()
        )

    def delete_event_time_timer(self, timestamp: int) -> None:
        self._timers("delete_event_time_timer").delete(EVENT_TIME, int(timestamp), self._key())

    def delete_processing_time_timer(self, timestamp: int) -> None:
        self._timers("delete_processing_time_timer").delete(
            PROCESSING_TIME, int(timestamp), self._key()
        )


class ProcessContext(KeyedProcessFunction.Context):
    """The ``ctx`` of ``process_element`` and ``on_timer``; one object reused for every call."""

    __slots__ = ("_ts", "_key", "_side", "_op", "_timer_service", "_domain")

    def __init__(self, op: Any):
        self._op = op
        self._ts: int | None = None
        self._key: Any = None
        self._side: dict[str, tuple[list, list]] = {}
        self._timer_service = UserTimerService(op)
        self._domain: TimeDomain | None = None

    def timestamp(self) -> int | None:
        return self._ts

    def get_current_key(self) -> Any:
        return self._key

    def timer_service(self) -> UserTimerService:
        return self._timer_service

    def time_domain(self) -> TimeDomain | None:
        """In ``on_timer``: which kind of timer fired."""
        return self._domain

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
                fixed = [t if t is not None else -(2**63) for t in stamps] if has_ts else None
                self._op.side_output(tag_id).emit(Batch(values, fixed))
        self._side = {}


register_contexts(ProcessContext, KeyedProcessFunction.OnTimerContext)


def _collect(result: Any, out: list, ts_out: list, ts: Any) -> None:
    if result is not None:
        n = len(out)
        out.extend(result)
        if len(out) > n:
            ts_out.extend([ts] * (len(out) - n))


def collect_routed(result: Any, out: list, ts_out: list, ts: Any, ctx: Any) -> None:
    """Like :func:`_collect` for process-style functions: a yielded ``(OutputTag, value)`` pair
    goes to that side output through ``ctx.output`` (PyFlink's ``yield tag, value``), everything
    else to the main output. One tuple check per yielded value; map/flat_map do not route."""
    if result is None:
        return
    for r in result:
        # a plain tuple, as ``yield tag, value`` makes (type identity: cheaper than isinstance)
        if r.__class__ is tuple and len(r) == 2 and isinstance(r[0], OutputTag):
            ctx.output(r[0], r[1])
        else:
            out.append(r)
            ts_out.append(ts)


def route_side_outputs(results: list, ctx: Any) -> list:
    """The main-output part of ``results``; ``(OutputTag, value)`` pairs in it go to
    ``ctx.output`` (window functions: evaluated per firing, not per record)."""
    main = [r for r in results if not _is_side_pair(r)]
    if len(main) != len(results):
        for r in results:
            if _is_side_pair(r):
                ctx.output(r[0], r[1])
    return main


def _is_side_pair(r: Any) -> bool:
    return r.__class__ is tuple and len(r) == 2 and isinstance(r[0], OutputTag)


def _event_time_now(op: Any) -> int:
    ts = op._pctx._ts
    return ts if ts is not None and ts > op.current_watermark else op.current_watermark


def fire_timers(
    op: Any, timers: TimerService, on_timer: Any, ctx: ProcessContext, domain: int, upto: int
) -> None:
    """Fires the due timers of a keyed operator through ``on_timer(ts, ctx)`` and emits what it
    yields: with the timer's timestamp for event time, without one for processing time."""
    if on_timer is None:
        # nothing to call; due timers are still consumed so they do not pile up
        for _ in timers.due(domain, upto):
            pass
        return
    ctx._domain = TimeDomain(domain)
    backend = op.ctx.keyed_backend
    out: list = []
    ts_out: list = []
    ts = None
    try:
        for ts, key, _ns in timers.due(domain, upto):
            backend.set_current_key(key)
            ctx._key = key
            ctx._ts = ts if domain == EVENT_TIME else None
            collect_routed(on_timer(ts, ctx), out, ts_out, ctx._ts, ctx)
    except Exception as exc:
        raise op.user_error(exc, f"timer at {ts} for key {ctx._key!r}", "a timer") from exc
    ctx.flush_side_outputs()
    if out:
        op.output.emit(Batch(out, ts_out) if domain == EVENT_TIME else Batch(out))


class ProcessOperator(UdfOperator):
    """Runs a :class:`ProcessFunction` on a non-keyed stream."""

    supports_error_policy = True

    def __init__(self, name: str, fn: Any):
        super().__init__(name, fn)
        self._fn = _resolve_process(fn, ProcessFunction)
        self._pctx = ProcessContext(self)

    def process_batch(self, batch: Batch) -> None:
        fn = self._fn
        ctx = self._pctx
        out: list = []
        ts_out: list = []
        values = batch.values
        stamps: Sequence[int | None] = batch.timestamps or [None] * len(values)
        pairs = zip(values, stamps)
        v = None
        if self.bad_records is None:
            try:
                for v, t in pairs:
                    ctx._ts = t
                    collect_routed(fn(v, ctx), out, ts_out, t, ctx)
            except Exception as exc:
                raise self.user_error(exc, v) from exc
        else:  # an error policy: track where each record's outputs start
            mark = 0
            while True:
                try:
                    for v, t in pairs:
                        ctx._ts = t
                        mark = len(out)
                        collect_routed(fn(v, ctx), out, ts_out, t, ctx)
                    break
                except Exception as exc:
                    self.bad_record(exc, v, ctx._ts)
                    del out[mark:]  # what the failing record yielded goes with it
                    del ts_out[mark:]
        ctx.flush_side_outputs()
        self.output.emit(Batch(out, ts_out if batch.timestamps is not None else None))


class KeyedProcessOperator(UdfOperator):
    """Runs a :class:`KeyedProcessFunction`; keyed state and timers are scoped to each key."""

    supports_error_policy = True

    def __init__(self, name: str, fn: Any, key_selector: KeySelector):
        super().__init__(name, fn)
        self._fn = _resolve_process(fn, KeyedProcessFunction)
        self._on_timer = (
            getattr(fn, "on_timer", None) if isinstance(fn, KeyedProcessFunction) else None
        )
        self._key_selector = key_selector
        self._pctx = ProcessContext(self)
        self.timers = TimerService()

    def open(self) -> None:
        assert self.ctx is not None
        if self.ctx.keyed_backend is None:
            raise GraphError(f"keyed operator {self.name!r} has no keyed state backend")
        super().open()

    event_time_now = _event_time_now

    def element_timestamp(self) -> int | None:
        return self._pctx._ts

    def process_batch(self, batch: Batch) -> None:
        fn = self._fn
        ks = self._key_selector
        ctx = self._pctx
        ctx._domain = None
        assert self.ctx is not None and self.ctx.keyed_backend is not None  # see open()
        backend = self.ctx.keyed_backend
        out: list = []
        ts_out: list = []
        values = batch.values
        stamps: Sequence[int | None] = batch.timestamps or [None] * len(values)
        pairs = zip(values, stamps)
        v = t = None
        if self.bad_records is None:
            try:
                for v, t in pairs:
                    key = ks(v)
                    backend.set_current_key(key)
                    ctx._key = key
                    ctx._ts = t
                    collect_routed(fn(v, ctx), out, ts_out, t, ctx)
            except Exception as exc:
                raise self.user_error(exc, v) from exc
        else:  # an error policy: track where each record's outputs start
            mark = 0
            while True:
                try:
                    for v, t in pairs:
                        mark = len(out)
                        key = ks(v)
                        backend.set_current_key(key)
                        ctx._key = key
                        ctx._ts = t
                        collect_routed(fn(v, ctx), out, ts_out, t, ctx)
                    break
                except Exception as exc:
                    self.bad_record(exc, v, t)
                    del out[mark:]  # what the failing record yielded goes with it
                    del ts_out[mark:]
        ctx.flush_side_outputs()
        self.output.emit(Batch(out, ts_out if batch.timestamps is not None else None))

    def _fire(self, domain: int, upto: int) -> None:
        fire_timers(self, self.timers, self._on_timer, self._pctx, domain, upto)

    def on_watermark(self, timestamp: int) -> None:
        self._fire(EVENT_TIME, timestamp)

    def next_processing_timer(self) -> int | None:
        return self.timers.next_timestamp(PROCESSING_TIME)

    def on_processing_time(self, now_ms: int) -> None:
        self._fire(PROCESSING_TIME, now_ms)
