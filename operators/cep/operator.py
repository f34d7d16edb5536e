"""Internal: the CEP operator — runs the NFA per key in event time or processing time.

Records come from the keyed stream (or, for a non-keyed stream, one global key at parallelism 1)
and results go to the main output; timed-out partial matches and late events to side outputs.

Event time (SEMANTICS §8.5/§8.6). An event with ``ts <= watermark`` on arrival is late: it goes to
the late side output or is counted in ``num_late_records_dropped``. Of the others, a pattern that
allows it drops those that match none of its conditions (``NFA.screen``: they can change
nothing). The rest join the operator's event-time queue: ``(ts, key, event, condition results)``
entries of all keys, the batch appended as it came and sorted (stably, so equal timestamps keep
their arrival order) when a watermark arrives.
The watermark takes the entries up to it off the front, groups them by key, and runs each key
once, as Flink does: for every timestamp in ascending order the NFA time advances to it
(timeouts, pending ``not_followed_by`` matches), then its events enter the NFA (in arrival order,
or sorted by the comparator); finally the NFA time advances to the watermark. A key with partial
matches of a pattern with ``within`` keeps one timer, at its oldest partial match's ``start +
within``, so that partial match times out even if the key sees no more events; at the end of
input (watermark MAX) every pending partial match of such a pattern times out.

Processing time: events enter the NFA on arrival with the task clock's time; the ``within``
timer is a processing-time timer.

State: the key's NFA state, partial matches and shared buffer in one object (``__cep_nfa__``,
through :class:`~raystream.operators.cep.states.NfaStates`), and the timers of the operator's
timer service, so checkpoints, restore and rescaling are those of every keyed operator. The
event-time queue holds only events above the watermark (bounded by the stream's out-of-
orderness); it lives in the operator and is written to keyed state (``__cep_queue__``: key ->
``[(ts, event), ...]`` in arrival order) in each snapshot, from which a restore reads it back.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from itertools import repeat
from operator import itemgetter
from typing import Any

from raystream.api.functions import OutputTag
from raystream.checkpointing.snapshot import OperatorSnapshot
from raystream.core.keys import KeySelector
from raystream.core.time import MIN_TS
from raystream.core.timers import EVENT_TIME, PROCESSING_TIME, TimerService
from raystream.errors import GraphError, TaskError, record_repr
from raystream.operators.cep.compiled import CompiledPattern
from raystream.operators.cep.functions import (
    PatternProcessFunction,
    SelectFunction,
    TimedOutPartialMatchHandler,
)
from raystream.operators.cep.nfa import NFA, ConditionError, KeyState, Match
from raystream.operators.cep.states import DEFAULT_CACHED_KEYS, NfaStates
from raystream.operators.process import ProcessContext, collect_routed
from raystream.operators.stateless import UdfOperator
from raystream.runtime.elements import Batch

_TIMEOUT = 1  # namespace of the within timers
_ts_of = itemgetter(0)


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
        cached_keys: int = DEFAULT_CACHED_KEYS,
    ):
        super().__init__(name, fn)
        if not isinstance(fn, PatternProcessFunction):
            raise GraphError(
                f"CEP operator {name!r}: process() expects a PatternProcessFunction, got {fn!r}"
            )
        self._process_match = fn.process_match
        # select(fn) calls fn directly (the same outputs as SelectFunction.process_match)
        self._select = fn.fn if type(fn) is SelectFunction else None
        self._on_timeout = (
            fn.process_timed_out_match if isinstance(fn, TimedOutPartialMatchHandler) else None
        )
        self.key_selector = key_selector
        self.compiled = compiled
        self.nfa = NFA(compiled)
        self.processing_time = processing_time
        self.late_tag_id = late_tag_id
        self._sort_key = functools.cmp_to_key(comparator) if comparator is not None else None
        self.cached_keys = cached_keys
        self.timers = TimerService()
        self.late_dropped = 0
        self._ctx = ProcessContext(self)
        self._out: list = []
        self._out_ts: list = []
        # the event-time queue: sorted entries, and the ones that arrived since the last sort
        self._queue: list[tuple[int, Any, Any, Any]] = []
        self._arrived: list[tuple[int, Any, Any, Any]] = []
        self._spare = KeyState()

    def open(self) -> None:
        assert self.ctx is not None
        backend = self.ctx.keyed_backend
        if backend is None:
            raise GraphError(f"CEP operator {self.name!r} has no keyed state backend")
        self.backend = backend
        self.states = NfaStates(
            backend.table("__cep_nfa__"), backend.holds_objects, self.cached_keys
        )
        self.queue_table = backend.table("__cep_queue__")
        for key in backend.keys("__cep_queue__"):  # restored: back into the queue
            self._arrived.extend((ts, key, event, None) for ts, event in self.queue_table.get(key))
            self.queue_table.remove(key)
        super().open()

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m["num_late_records_dropped"] = self.late_dropped
        return m

    def element_timestamp(self) -> int | None:
        return self._ctx._ts

    # -- checkpoints ------------------------------------------------------------------------------

    def snapshot_state(self, checkpoint_id: int) -> OperatorSnapshot:
        self.states.flush()
        queued: dict[Any, list] = {}
        for ts, key, event, _cache in self._queue + self._arrived:
            entries = queued.get(key)
            if entries is None:
                queued[key] = [(ts, event)]
            else:
                entries.append((ts, event))
        table = self.queue_table
        for key, entries in queued.items():
            table.put(key, entries)
        snap = super().snapshot_state(checkpoint_id)
        # the snapshot holds them now (serialized, or an isolated view of the store)
        for key in queued:
            table.remove(key)
        return snap

    # -- records ----------------------------------------------------------------------------------

    def process_batch(self, batch: Batch) -> None:
        if self.processing_time:
            self._process_on_arrival(batch)
            return
        values = batch.values
        stamps = batch.timestamps
        if not values:
            return
        if stamps is None:
            raise self._no_timestamp(values[0])
        try:
            lowest = min(stamps)
        except TypeError:  # a None among them
            lowest = None
        if lowest is None or lowest <= self.current_watermark:
            values, stamps = self._on_time(values, stamps)
        caches: Any
        if self.nfa.p.droppable:
            values, stamps, caches = self.nfa.screen(values, stamps)
        else:
            caches = repeat(None)
        self._arrived.extend(zip(stamps, self._keys(values), values, caches))

    def _keys(self, values: list) -> list:
        ks = self.key_selector
        try:
            return list(map(ks, values))
        except Exception:
            pass
        v: Any = None
        try:  # again, one by one, to name the record
            for v in values:
                ks(v)
        except Exception as exc:
            raise self.user_error(exc, v, "record (key selector)") from exc
        raise AssertionError("the key selector failed on a batch but on none of its records")

    def _on_time(self, values: list, stamps: list) -> tuple[list, list]:
        """The records that are not late; late ones go to the side output or are counted."""
        wm = self.current_watermark
        on_time: list = []
        on_time_ts: list = []
        late: list = []
        late_ts: list = []
        for v, t in zip(values, stamps):
            if t is None or t == MIN_TS:
                raise self._no_timestamp(v)
            if t <= wm:
                late.append(v)
                late_ts.append(t)
            else:
                on_time.append(v)
                on_time_ts.append(t)
        if late:
            if self.late_tag_id is not None:
                self.side_output(self.late_tag_id).emit(Batch(late, late_ts))
            else:
                self.late_dropped += len(late)
        return on_time, on_time_ts

    def _process_on_arrival(self, batch: Batch) -> None:
        assert self.ctx is not None
        now = self.ctx.clock.now_ms()
        values = batch.values
        caches: Any
        if self.nfa.p.droppable:
            values, _stamps, caches = self.nfa.screen(values, [now] * len(values))
        else:
            caches = repeat(None)
        for key, v, cache in zip(self._keys(values), values, caches):
            self._run_key(key, [(now, key, v, cache)], now, PROCESSING_TIME)
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

    def _take_due(self, watermark: int) -> list[tuple[int, Any, Any, Any]]:
        """The queued entries with ``ts <= watermark``, in timestamp order (stable: equal
        timestamps in arrival order), taken off the queue."""
        queue = self._queue
        arrived = self._arrived
        if arrived:
            self._arrived = []
            if queue:
                queue += arrived  # two sorted runs after the sort below: merged in one pass
                queue.sort(key=_ts_of)
            else:
                arrived.sort(key=_ts_of)
                queue = self._queue = arrived
        if not queue or queue[0][0] > watermark:
            return []
        cut = bisect_right(queue, watermark, key=_ts_of)
        if cut == len(queue):
            self._queue = []
            return queue
        due = queue[:cut]
        del queue[:cut]
        return due

    def on_watermark(self, timestamp: int) -> None:
        if self.processing_time:
            return
        due = self._take_due(timestamp)
        timed = [
            key
            for _ts, bucket in self.timers.take_due(EVENT_TIME, timestamp)
            for key, _ns in bucket
        ]
        if due or timed:
            groups: dict[Any, list] = {}
            for entry in due:
                events = groups.get(entry[1])
                if events is None:
                    groups[entry[1]] = [entry]
                else:
                    events.append(entry)
            for key in timed:
                if key not in groups:
                    groups[key] = []
            for key, events in groups.items():
                self._run_key(key, events, timestamp, EVENT_TIME)
        self._flush()

    def next_processing_timer(self) -> int | None:
        return self.timers.next_timestamp(PROCESSING_TIME)

    def on_processing_time(self, now_ms: int) -> None:
        keys = [
            key
            for _ts, bucket in self.timers.take_due(PROCESSING_TIME, now_ms)
            for key, _ns in bucket
        ]
        for key in dict.fromkeys(keys):
            self._run_key(key, [], now_ms, PROCESSING_TIME)
        self._flush()

    # -- one key ----------------------------------------------------------------------------------

    def _run_key(self, key: Any, events: list, now: int, domain: int) -> None:
        """Runs ``events`` (queue entries, in order) through the key's NFA, then moves its
        time to ``now`` (the watermark or the processing time) and keeps its timer right."""
        states = self.states
        ks = states.get(key)
        had_state = ks is not None
        if ks is None:
            # most keys without partial matches start none: a spare state, stored if they do
            ks = self._spare
            ks.next_eid = 0
        elif ks.timer_ts is not None and ks.timer_ts <= now:
            # it fired: every timer up to ``now`` was taken (or, in processing time, is due)
            self.timers.delete(domain, ks.timer_ts, key, _TIMEOUT)
            ks.timer_ts = None
        self.backend.set_current_key(key)
        self._ctx._key = key
        nfa = self.nfa
        if self._sort_key is not None and len(events) > 1:
            sort_key = self._sort_key
            events.sort(key=lambda e: (e[0], sort_key(e[2])))
        within = self.compiled.within_ms
        last = None
        try:
            for ts, _key, event, cache in events:
                if ts != last:
                    last = ts
                    # (NFA time only matters for partial matches that can time out)
                    earliest = ks.earliest
                    if earliest is not None and within is not None and ts - earliest >= within:
                        self._advance(ks, ts)
                matches = nfa.process(ks, event, ts, cache)
                if matches:
                    self._emit(matches, ts)
        except ConditionError as exc:
            raise self._condition_error(exc) from exc.cause
        earliest = ks.earliest
        if earliest is not None and within is not None and now - earliest >= within:
            self._advance(ks, now)
        if ks.partials:
            if ks.timer_ts is None and within is not None:
                ks.timer_ts = ks.earliest + within  # type: ignore[operator]
                self.timers.register(domain, ks.timer_ts, key, _TIMEOUT)
            states.put(key, ks)
            if ks is self._spare:
                self._spare = KeyState()
        elif had_state:
            if ks.timer_ts is not None:
                self.timers.delete(domain, ks.timer_ts, key, _TIMEOUT)
            states.remove(key)

    def _advance(self, state: KeyState, t: int) -> None:
        released, timed_out = self.nfa.advance(state, t)
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

    def _emit(self, matches: list[Match] | Any, ts: int) -> None:
        ctx = self._ctx
        stamp = None if self.processing_time else ts
        ctx._ts = stamp
        as_dict = self.nfa.as_dict
        out, out_ts = self._out, self._out_ts
        select = self._select
        if select is not None:  # select(fn): one output per match, routed as process() would
            for m in matches:
                match = as_dict(m)
                try:
                    r = select(match)
                except Exception as exc:
                    raise self.user_error(exc, match, "match") from exc
                if r.__class__ is tuple and len(r) == 2 and isinstance(r[0], OutputTag):
                    ctx.output(r[0], r[1])
                else:
                    out.append(r)
                    out_ts.append(stamp)
            return
        fn = self._process_match
        for m in matches:
            match = as_dict(m)
            try:
                collect_routed(fn(match, ctx), out, out_ts, stamp, ctx)
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
        """Entries in the keyed backend (NFA states, and the queue while a snapshot is taken):
        what the benchmark reports."""
        self.states.flush()
        return self.backend.num_entries()
