"""Internal: the CEP operator — runs the NFA per key in event time or processing time.

Records come from the keyed stream (or, for a non-keyed stream, one global key at parallelism 1)
and results go to the main output; timed-out partial matches and late events to side outputs.

Event time (SEMANTICS §8.5/§8.6). An event with ``ts <= watermark`` on arrival is late: it goes to
the late side output or is counted in ``num_late_records_dropped``. Any other event is buffered
in keyed state (``__cep_queue__``: ``(key, ts) -> [events in arrival order]``) with an event-time
timer at ``ts``. When the watermark passes timers, each key concerned is run as Flink does: for
every buffered timestamp up to the watermark in ascending order, the NFA time advances to it
(timeouts, pending ``not_followed_by`` matches), then its events enter the NFA (in arrival order,
or sorted by the comparator); finally the NFA time advances to the watermark. A new partial match
of a pattern with ``within`` registers a timer at ``start + within`` so it times out even if its
key sees no more events; at the end of input (watermark MAX) every pending partial match of such
a pattern times out.

Processing time: events enter the NFA on arrival with the task clock's time; ``within`` timers are
processing-time timers.

State: the key's NFA state (``__cep_nfa__``), the shared buffer (``__cep_events__``,
``__cep_nodes__``, see ``buffer.py``) and the queue are raw tables of the keyed backend, and the
timers are the operator's timer service, so checkpoints, restore and rescaling need nothing of
their own.
"""

from __future__ import annotations

import functools
from typing import Any

from raystream.core.keys import KeySelector
from raystream.core.time import MIN_TS
from raystream.core.timers import EVENT_TIME, PROCESSING_TIME, TimerService
from raystream.errors import GraphError, RaystreamError, TaskError, record_repr
from raystream.operators.cep.buffer import SharedBuffer
from raystream.operators.cep.functions import PatternProcessFunction, TimedOutPartialMatchHandler
from raystream.operators.cep.nfa import NFA, CompiledPattern, ConditionError, KeyState, Match
from raystream.operators.process import ProcessContext, collect_routed
from raystream.operators.stateless import UdfOperator
from raystream.runtime.elements import Batch

_QUEUE, _TIMEOUT = 0, 1


class CepOperator(UdfOperator):
    """Detects ``compiled`` per key and hands matches to ``fn`` (a PatternProcessFunction)."""

    def __init__(
        self,
        name: str,
        fn: PatternProcessFunction,
        key_selector: KeySelector,
        compiled: CompiledPattern,
        processing_time: bool = False,
        late_tag_id: str | None = None,
        comparator: Any = None,
    ):
        super().__init__(name, fn)
        if not isinstance(fn, PatternProcessFunction):
            raise GraphError(
                f"CEP operator {name!r}: process() expects a PatternProcessFunction, got {fn!r}"
            )
        self._process_match = fn.process_match
        self._on_timeout = (
            fn.process_timed_out_match if isinstance(fn, TimedOutPartialMatchHandler) else None
        )
        self.key_selector = key_selector
        self.compiled = compiled
        self.nfa = NFA(compiled)
        self.processing_time = processing_time
        self.late_tag_id = late_tag_id
        self._sort_key = functools.cmp_to_key(comparator) if comparator is not None else None
        self.timers = TimerService()
        self.late_dropped = 0
        self._ctx = ProcessContext(self)
        self._out: list = []
        self._out_ts: list = []

    def open(self) -> None:
        assert self.ctx is not None
        backend = self.ctx.keyed_backend
        if backend is None:
            raise GraphError(f"CEP operator {self.name!r} has no keyed state backend")
        self.backend = backend
        self.states = backend.table("__cep_nfa__")
        self.queue = backend.table("__cep_queue__", namespaced=True)
        self.buffer = SharedBuffer(
            backend.table("__cep_events__", namespaced=True),
            backend.table("__cep_nodes__", namespaced=True),
        )
        super().open()

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m["num_late_records_dropped"] = self.late_dropped
        return m

    def element_timestamp(self) -> int | None:
        return self._ctx._ts

    # -- records ----------------------------------------------------------------------------------

    def process_batch(self, batch: Batch) -> None:
        if self.processing_time:
            self._process_on_arrival(batch)
            return
        values = batch.values
        stamps = batch.timestamps
        if stamps is None:
            if values:
                raise self._no_timestamp(values[0])
            return
        ks = self.key_selector
        wm = self.current_watermark
        queue = self.queue
        register = self.timers.register
        late: list = []
        late_ts: list = []
        v: Any = None
        try:
            for v, t in zip(values, stamps):
                if t is None or t == MIN_TS:
                    raise self._no_timestamp(v)
                if t <= wm:
                    late.append(v)
                    late_ts.append(t)
                    continue
                key = ks(v)
                bucket = queue.get((key, t))
                if bucket is None:
                    queue.put((key, t), [v])
                    register(EVENT_TIME, t, key, _QUEUE)
                else:
                    bucket.append(v)
                    queue.put((key, t), bucket)
        except RaystreamError:
            raise
        except Exception as exc:
            raise self.user_error(exc, v, "record (key selector)") from exc
        if late:
            if self.late_tag_id is not None:
                self.side_output(self.late_tag_id).emit(Batch(late, late_ts))
            else:
                self.late_dropped += len(late)

    def _process_on_arrival(self, batch: Batch) -> None:
        assert self.ctx is not None
        now = self.ctx.clock.now_ms()
        ks = self.key_selector
        for v in batch.values:
            try:
                key = ks(v)
            except Exception as exc:
                raise self.user_error(exc, v, "record (key selector)") from exc
            state = self._load(key)
            self._advance(state, now)
            self._feed(state, key, v, now)
            self._save(key, state)
        self._flush()

    def _no_timestamp(self, value: Any) -> TaskError:
        subtask = self.ctx.subtask_index if self.ctx is not None else None
        return TaskError(
            f"CEP operator {self.name!r} (subtask {subtask}): record {record_repr(value)} has no "
            "event timestamp. CEP in event time needs timestamps; hint: assign them with a "
            "WatermarkStrategy ...with_timestamp_assigner(...), or call "
            "PatternStream.in_processing_time()",
            operator=self.name,
            subtask=subtask,
        )

    # -- time -------------------------------------------------------------------------------------

    def on_watermark(self, timestamp: int) -> None:
        if self.processing_time:
            return
        while self.timers.next_timestamp(EVENT_TIME) is not None and (
            self.timers.next_timestamp(EVENT_TIME) <= timestamp  # type: ignore[operator]
        ):
            due: dict[Any, list[int]] = {}
            for ts, bucket in self.timers.take_due(EVENT_TIME, timestamp):
                for key, ns in bucket:
                    stamps = due.setdefault(key, [])
                    if ns == _QUEUE:
                        stamps.append(ts)
            for key, stamps in due.items():
                self._run_key(key, stamps, timestamp)
        self._flush()

    def _run_key(self, key: Any, stamps: list[int], watermark: int) -> None:
        state = self._load(key)
        queue = self.queue
        for ts in stamps:  # ascending: timers fire in timestamp order
            events = queue.get((key, ts)) or []
            queue.remove((key, ts))
            if self._sort_key is not None:
                events = sorted(events, key=self._sort_key)
            self._advance(state, ts)
            for event in events:
                self._feed(state, key, event, ts)
        self._advance(state, watermark)
        self._save(key, state)

    def next_processing_timer(self) -> int | None:
        return self.timers.next_timestamp(PROCESSING_TIME)

    def on_processing_time(self, now_ms: int) -> None:
        keys = [
            key
            for _ts, bucket in self.timers.take_due(PROCESSING_TIME, now_ms)
            for key, _ns in bucket
        ]
        for key in dict.fromkeys(keys):
            state = self._load(key)
            self._advance(state, now_ms)
            self._save(key, state)
        self._flush()

    # -- the NFA ----------------------------------------------------------------------------------

    def _load(self, key: Any) -> KeyState:
        self.backend.set_current_key(key)
        self.buffer.key = key
        self._ctx._key = key
        state = self.states.get(key)
        return state if state is not None else KeyState()

    def _save(self, key: Any, state: KeyState) -> None:
        if state.partials:
            self.states.put(key, state)
        else:  # no partial match: the buffer is empty too, ids may start over
            self.states.remove(key)

    def _feed(self, state: KeyState, key: Any, event: Any, ts: int) -> None:
        try:
            matches, started = self.nfa.process(state, self.buffer, event, ts)
        except ConditionError as exc:
            raise self._condition_error(exc) from exc.cause
        if started:
            assert self.compiled.within_ms is not None
            domain = PROCESSING_TIME if self.processing_time else EVENT_TIME
            self.timers.register(domain, ts + self.compiled.within_ms, key, _TIMEOUT)
        if matches:
            self._emit(matches, ts)

    def _advance(self, state: KeyState, t: int) -> None:
        released, timed_out = self.nfa.advance(state, self.buffer, t)
        if released:
            self._emit(released, t)
        if timed_out and self._on_timeout is not None:
            ctx = self._ctx
            for m, ts in timed_out:
                match = self.nfa.as_dict(m)
                ctx._ts = None if self.processing_time else ts
                try:
                    result = self._on_timeout(match, ctx)
                    if result is not None:
                        for r in result:
                            if not (
                                r.__class__ is tuple and len(r) == 2 and hasattr(r[0], "tag_id")
                            ):
                                raise TypeError(
                                    "process_timed_out_match may only emit to side outputs "
                                    f"(ctx.output(tag, value) or yield tag, value), got {r!r}"
                                )
                            ctx.output(r[0], r[1])
                except Exception as exc:
                    raise self.user_error(exc, match, "timed-out partial match") from exc

    def _emit(self, matches: list[Match], ts: int) -> None:
        ctx = self._ctx
        stamp = None if self.processing_time else ts
        ctx._ts = stamp
        fn = self._process_match
        for m in matches:
            match = self.nfa.as_dict(m)
            try:
                collect_routed(fn(match, ctx), self._out, self._out_ts, stamp, ctx)
            except Exception as exc:
                raise self.user_error(exc, match, "match") from exc

    def _flush(self) -> None:
        self._ctx.flush_side_outputs()
        if self._out:
            out, stamps = self._out, self._out_ts
            self._out, self._out_ts = [], []
            self.output.emit(Batch(out, None if self.processing_time else stamps))

    def _condition_error(self, exc: ConditionError) -> Exception:
        return self.user_error(
            exc.cause,
            exc.event,
            f"{exc.kind} of stage {exc.stage!r} of pattern {self.compiled.description} on record",
        )

    def num_state_entries(self) -> int:
        """Entries in the keyed backend (NFA states, buffer, queue): what the benchmark reports."""
        return self.backend.num_entries()
