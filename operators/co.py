"""Internal: two-input operators — connect() with co-map, co-flat-map, co-process (keyed or
not), and broadcast state.

Input 1 arrives through ``process_batch``, input 2 through ``process_batch2``; the task gives the
operator the minimum of both inputs' watermarks. Keyed variants key each input with its own key
selector; state and timers are shared by the key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from raystream.api.functions import (
    BroadcastProcessFunction,
    CoFlatMapFunction,
    CoMapFunction,
    CoProcessFunction,
    KeyedBroadcastProcessFunction,
    KeyedCoProcessFunction,
    register_contexts,
)
from raystream.checkpointing.snapshot import OperatorSnapshot
from raystream.core.timers import EVENT_TIME, PROCESSING_TIME, TimerService
from raystream.errors import GraphError
from raystream.operators.process import ProcessContext, _collect, collect_routed, fire_timers
from raystream.operators.stateless import UdfOperator
from raystream.runtime.elements import Batch


class CoMapOperator(UdfOperator):
    def __init__(self, name: str, fn: Any):
        super().__init__(name, fn)
        if not isinstance(fn, CoMapFunction):
            raise TypeError("connect().map() needs a CoMapFunction with map1 and map2")
        self._fns = (fn.map1, fn.map2)

    def _run(self, which: int, batch: Batch) -> None:
        fn = self._fns[which]
        out: list = []
        v = None
        try:
            for v in batch.values:
                out.append(fn(v))
        except Exception as exc:
            raise self.user_error(exc, v) from exc
        self.output.emit(Batch(out, batch.timestamps))

    def process_batch(self, batch: Batch) -> None:
        self._run(0, batch)

    def process_batch2(self, batch: Batch) -> None:
        self._run(1, batch)


class CoFlatMapOperator(UdfOperator):
    def __init__(self, name: str, fn: Any):
        super().__init__(name, fn)
        if not isinstance(fn, CoFlatMapFunction):
            raise TypeError(
                "connect().flat_map() needs a CoFlatMapFunction with flat_map1 and flat_map2"
            )
        self._fns = (fn.flat_map1, fn.flat_map2)

    def _run(self, which: int, batch: Batch) -> None:
        fn = self._fns[which]
        out: list = []
        ts_out: list = []
        stamps: Sequence[int | None] = batch.timestamps or [None] * len(batch.values)
        v = None
        try:
            for v, t in zip(batch.values, stamps):
                _collect(fn(v), out, ts_out, t)
        except Exception as exc:
            raise self.user_error(exc, v) from exc
        self.output.emit(Batch(out, ts_out if batch.timestamps is not None else None))

    def process_batch(self, batch: Batch) -> None:
        self._run(0, batch)

    def process_batch2(self, batch: Batch) -> None:
        self._run(1, batch)


class _NoKey:
    """The current key while a broadcast element is processed: any keyed-state access hashes
    it, and that raises a clear error instead of reading or writing some other key's state."""

    def __hash__(self) -> int:
        raise GraphError(
            "keyed state and timers are not available in process_broadcast_element (broadcast "
            "elements have no key); use ctx.apply_to_keyed_state(descriptor, fn) to reach every key"
        )

    def __eq__(self, other: object) -> bool:
        return other is self

    def __repr__(self) -> str:
        return "<no key: broadcast side>"


NO_KEY_ON_BROADCAST_SIDE = _NoKey()


class _BroadcastState:
    """Broadcast state of one descriptor: a dict, the same on every subtask."""

    def __init__(self, data: dict, writable: bool, name: str):
        self._data = data
        self._writable = writable
        self._name = name

    def _check(self) -> None:
        if not self._writable:
            raise GraphError(
                f"broadcast state {self._name!r} is read-only on the non-broadcast side; "
                "update it in process_broadcast_element"
            )

    def get(self, key: Any) -> Any:
        return self._data.get(key)

    def contains(self, key: Any) -> bool:
        return key in self._data

    def items(self) -> Any:
        return iter(list(self._data.items()))

    def keys(self) -> Any:
        return iter(list(self._data))

    def values(self) -> Any:
        return iter(list(self._data.values()))

    def is_empty(self) -> bool:
        return not self._data

    def put(self, key: Any, value: Any) -> None:
        self._check()
        self._data[key] = value

    def put_all(self, entries: dict) -> None:
        self._check()
        self._data.update(entries)

    def remove(self, key: Any) -> None:
        self._check()
        self._data.pop(key, None)

    def clear(self) -> None:
        self._check()
        self._data.clear()


class _CoContext(ProcessContext):
    """ctx of co-process and broadcast functions (adds broadcast state access)."""

    __slots__ = ("_broadcast_side",)

    def __init__(self, op: Any):
        super().__init__(op)
        self._broadcast_side = False

    def get_broadcast_state(self, descriptor: Any) -> _BroadcastState:
        data = self._op.broadcast_states.get(descriptor.name)
        if data is None:
            if descriptor.name not in self._op.broadcast_names:
                raise GraphError(
                    f"broadcast state {descriptor.name!r} was not declared in broadcast(...) "
                    f"(declared: {sorted(self._op.broadcast_names)})"
                )
            data = self._op.broadcast_states[descriptor.name] = {}
        return _BroadcastState(data, self._broadcast_side, descriptor.name)

    def apply_to_keyed_state(self, state_descriptor: Any, function: Any) -> None:
        """Calls ``function(key, state)`` for every key of this subtask that has that state."""
        backend = self._op.ctx.keyed_backend
        if backend is None:
            raise GraphError("apply_to_keyed_state needs a keyed stream")
        previous = backend.current_key
        try:
            for key in backend.keys(state_descriptor):
                backend.set_current_key(key)
                function(key, backend.value_state(state_descriptor))
        finally:
            backend.set_current_key(previous)


register_contexts(
    _CoContext,
    CoProcessFunction.Context,
    KeyedCoProcessFunction.OnTimerContext,
    BroadcastProcessFunction.Context,
    BroadcastProcessFunction.ReadOnlyContext,
    KeyedBroadcastProcessFunction.Context,
    KeyedBroadcastProcessFunction.OnTimerContext,
)


class CoProcessOperator(UdfOperator):
    """Co-process and broadcast-process functions, keyed or not (``keyed`` = key selectors set).

    ``fns`` are the callables for input 1 and input 2; keyed variants also get timers.
    """

    def __init__(
        self,
        name: str,
        fn: Any,
        key_selectors: tuple[Any, Any] | None = None,
        broadcast_names: tuple[str, ...] = (),
    ):
        super().__init__(name, fn)
        self._fns: tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]
        if isinstance(fn, (CoProcessFunction, KeyedCoProcessFunction)):
            self._fns = (fn.process_element1, fn.process_element2)
        elif isinstance(fn, (BroadcastProcessFunction, KeyedBroadcastProcessFunction)):
            self._fns = (fn.process_element, fn.process_broadcast_element)
        else:
            raise TypeError(
                f"connect().process() needs a (Keyed)CoProcessFunction or a (Keyed)BroadcastProcessFunction, got {fn!r}"
            )
        self._on_timer = getattr(fn, "on_timer", None)
        self.key_selectors = key_selectors
        self.broadcast_names = set(broadcast_names)
        self.broadcast_states: dict[str, dict] = {}
        self._pctx = _CoContext(self)
        self.timers = TimerService() if key_selectors is not None else None

    def initialize_state(self, restored: OperatorSnapshot | None) -> None:
        super().initialize_state(restored)
        if restored is not None and restored.broadcast:
            self.broadcast_states = {name: dict(d) for name, d in restored.broadcast.items()}

    def snapshot_state(self, checkpoint_id: int) -> OperatorSnapshot:
        snap = super().snapshot_state(checkpoint_id)
        # a shallow copy: the task pickles the non-keyed parts before the next record is processed
        snap.broadcast = {name: dict(d) for name, d in self.broadcast_states.items() if d}
        return snap

    def element_timestamp(self) -> int | None:
        return self._pctx._ts

    def event_time_now(self) -> int:
        ts = self._pctx._ts
        return ts if ts is not None and ts > self.current_watermark else self.current_watermark

    def open(self) -> None:
        if self.key_selectors is not None and self.ctx.keyed_backend is None:  # type: ignore[union-attr]
            raise GraphError(f"keyed operator {self.name!r} has no keyed state backend")
        super().open()

    def _run(self, which: int, batch: Batch) -> None:
        fn = self._fns[which]
        ctx = self._pctx
        ctx._domain = None
        ctx._broadcast_side = bool(self.broadcast_names) and which == 1
        ks = None
        if self.key_selectors is not None:
            ks = self.key_selectors[which]
            assert self.ctx is not None and self.ctx.keyed_backend is not None  # see open()
            backend = self.ctx.keyed_backend
            if ctx._broadcast_side:
                # broadcast elements have no key: keyed state and timers are out of reach there
                ks = None
                backend.set_current_key(NO_KEY_ON_BROADCAST_SIDE)
                ctx._key = None
        out: list = []
        ts_out: list = []
        stamps: Sequence[int | None] = batch.timestamps or [None] * len(batch.values)
        v = None
        try:
            for v, t in zip(batch.values, stamps):
                if ks is not None:
                    key = ks(v)
                    backend.set_current_key(key)
                    ctx._key = key
                ctx._ts = t
                collect_routed(fn(v, ctx), out, ts_out, t, ctx)
        except GraphError:
            raise
        except Exception as exc:
            raise self.user_error(exc, v) from exc
        ctx.flush_side_outputs()
        self.output.emit(Batch(out, ts_out if batch.timestamps is not None else None))

    def process_batch(self, batch: Batch) -> None:
        self._run(0, batch)

    def process_batch2(self, batch: Batch) -> None:
        self._run(1, batch)

    def _fire(self, domain: int, upto: int) -> None:
        if self.timers is None:
            return
        self._pctx._broadcast_side = False
        fire_timers(self, self.timers, self._on_timer, self._pctx, domain, upto)

    def on_watermark(self, timestamp: int) -> None:
        self._fire(EVENT_TIME, timestamp)

    def next_processing_timer(self) -> int | None:
        return self.timers.next_timestamp(PROCESSING_TIME) if self.timers is not None else None

    def on_processing_time(self, now_ms: int) -> None:
        self._fire(PROCESSING_TIME, now_ms)
