"""Internal: the window operator (SEMANTICS §2).

Per record: key → windows (assigner; session windows merge) → skip windows that are already late
→ add the record to the window's contents (pre-aggregated for reduce/aggregate without evictor,
else buffered) → ask the trigger → fire and/or purge. Timers (trigger timers and the cleanup timer
at ``max_timestamp + allowed_lateness``) live in the operator's timer service with the window as
namespace; they fire before the watermark is forwarded. Results carry the timestamp
``window.max_timestamp()``. Elements refused by every window and late by the element rule go to
the late side output if one is set, else they are counted in ``num_late_records_dropped``.

Tumbling and sliding event-time windows with the default trigger, no evictor and an incremental
function take a fast path that does the same per-record work without trigger calls
(:mod:`fast_path`); the contexts triggers and window functions see are in :mod:`contexts`.
"""

from __future__ import annotations

import functools
from typing import Any

from raystream.core.keys import KeySelector
from raystream.core.time import MAX_TS, MIN_TS
from raystream.core.timers import EVENT_TIME, PROCESSING_TIME, TimerService
from raystream.errors import GraphError, UserFunctionError
from raystream.operators.base import close_function, open_function
from raystream.operators.process import route_side_outputs
from raystream.operators.row_aggregates import RowAggregate
from raystream.operators.stateless import UdfOperator
from raystream.operators.windows import fast_path
from raystream.operators.windows.assigners import (
    SlidingEventTimeWindows,
    TimeWindow,
    TumblingEventTimeWindows,
    WindowAssigner,
    merge_windows,
)
from raystream.operators.windows.contexts import (
    _MISSING,
    AGGREGATE,
    APPLY,
    PROCESS,
    REDUCE,
    _TriggerContext,
    _WindowContext,
)
from raystream.operators.windows.triggers import EventTimeTrigger, Trigger
from raystream.runtime.elements import Batch

__all__ = ["AGGREGATE", "APPLY", "PROCESS", "REDUCE", "WindowOperator"]


class WindowOperator(UdfOperator):
    def __init__(
        self,
        name: str,
        key_selector: KeySelector,
        assigner: WindowAssigner,
        trigger: Trigger | None,
        evictor: Any,
        allowed_lateness_ms: int,
        late_tag_id: str | None,
        kind: str,
        function: Any,
        window_function: Any = None,
    ):
        super().__init__(name, window_function if window_function is not None else function)
        self.key_selector = key_selector
        self.assigner = assigner
        self.trigger = trigger if trigger is not None else assigner.get_default_trigger()
        self.evictor = evictor
        self.lateness = allowed_lateness_ms if assigner.is_event_time() else 0
        self.late_tag_id = late_tag_id
        self.kind = kind
        self.function = function
        self.window_function = window_function
        self.event_time = assigner.is_event_time()
        self.merging = assigner.is_merging()
        if self.merging and not self.trigger.can_merge():
            raise GraphError(
                f"window {name!r}: trigger {type(self.trigger).__name__} cannot merge session windows"
            )
        if (
            self.merging
            and kind == AGGREGATE
            and evictor is None
            and not callable(getattr(function, "merge", None))
        ):
            raise GraphError(
                f"window {name!r}: session windows need an AggregateFunction with merge()"
            )
        self.buffered = evictor is not None or kind in (PROCESS, APPLY)
        #: declarative aggregates (``raystream.agg``): results carry the key and the window,
        #: and the fast path folds whole runs of a key's records
        self.declarative = function if isinstance(function, RowAggregate) else None
        self.timers = TimerService()
        self.late_dropped = 0
        self._out: list = []
        self._out_ts: list = []
        self._fast = (
            type(assigner) in (TumblingEventTimeWindows, SlidingEventTimeWindows)
            and type(self.trigger) is EventTimeTrigger
            and not self.buffered
        )

    supports_error_policy = True

    def setup(self, ctx: Any, output: Any, side_outputs: dict) -> None:
        super().setup(ctx, output, side_outputs)
        if self.bad_records is not None:
            # the pre-aggregating fast path folds a batch after its loop: under an error
            # policy every record goes the per-record route, so a bad one can be taken alone
            self._fast = False

    # -- lifecycle --------------------------------------------------------------------------------

    def open(self) -> None:
        ctx = self.ctx
        assert ctx is not None
        if ctx.keyed_backend is None:
            raise GraphError(f"window operator {self.name!r} has no keyed state backend")
        self.backend = ctx.keyed_backend
        self.contents = self.backend.table("__window_contents__", "table", namespaced=True)
        # buffered windows append to list state (O(1) per element on both backends)
        self.buffer = (
            self.backend.table("__window_buffer__", "list", namespaced=True)
            if self.buffered
            else None
        )
        self.merging_sets = (
            self.backend.table("__merging_windows__", "table") if self.merging else None
        )
        self.tctx = _TriggerContext(self)
        self.wctx = _WindowContext(self)
        if self.kind == REDUCE:
            self._reduce = getattr(self.function, "reduce", self.function)
        if self.window_function is not None:
            open_function(self.function, None)
        super().open()

    def close(self) -> None:
        if self.window_function is not None:
            close_function(self.function)
        super().close()

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m["num_late_records_dropped"] = self.late_dropped
        return m

    # -- time helpers -------------------------------------------------------------------------------

    def cleanup_time(self, w: Any) -> int:
        t = w.max_timestamp()
        if self.event_time:
            t += self.lateness
            return MAX_TS if t >= MAX_TS else t
        return t

    def _window_late(self, w: Any) -> bool:
        return self.event_time and self.cleanup_time(w) <= self.current_watermark

    # -- records ----------------------------------------------------------------------------------

    def process_batch(self, batch: Batch) -> None:
        values = batch.values
        stamps = batch.timestamps
        if stamps is None:
            if self.event_time:
                v = values[0] if values else None
                raise self.user_error(
                    ValueError(
                        "event-time windows need timestamps: use from_source(..., watermark_strategy) "
                        "or assign_timestamps_and_watermarks()"
                    ),
                    v,
                )
            stamps = [MIN_TS] * len(values)
        v = None
        if self._fast:
            try:
                fast_path.process(self, values, stamps)
            except (GraphError, UserFunctionError):
                raise
            except Exception as exc:
                raise self.user_error(exc, v) from exc
            self._flush()
            return
        now = self.ctx.clock.now_ms()  # type: ignore[union-attr]
        pairs = zip(values, stamps)
        t = MIN_TS
        while True:
            try:
                for v, t in pairs:
                    if self.event_time and t == MIN_TS:
                        raise ValueError("record has no event timestamp")
                    self._element(v, t, now)
                break
            except (GraphError, UserFunctionError):
                raise
            except Exception as exc:
                # under an error policy: what the record added to earlier windows stays
                self.bad_record(exc, v, None if t == MIN_TS else t)
        self._flush()

    def _element(self, v: Any, t: int, now: int) -> None:
        key = self.key_selector(v)
        self.backend.current_key = key
        tctx = self.tctx
        tctx.key = key
        windows = self.assigner.assign_windows(v, t, now)
        added = False
        if self.merging:
            mset = self._merging_set(key)
            for w in windows:
                actual = self._add_merging(key, mset, w)
                if self._window_late(actual):
                    mset.pop(actual, None)
                    self._store_merging_set(key, mset)
                    continue
                self._store_merging_set(key, mset)
                added = True
                self._add_to(key, mset[actual], v, t)
                self._after_add(key, actual, mset[actual], v, t)
        else:
            for w in windows:
                if self._window_late(w):
                    continue
                added = True
                self._add_to(key, w, v, t)
                self._after_add(key, w, w, v, t)
        if not added and self.event_time and t + self.lateness <= self.current_watermark:
            self._late([(v, t)])

    def _add_to(self, key: Any, state_window: Any, v: Any, t: int) -> None:
        sk = (key, state_window)
        contents = self.contents
        if self.buffered:
            self.buffer.list_add(sk, [(v, t)])  # type: ignore[union-attr]
        elif self.kind == REDUCE:
            acc = contents.get(sk, _MISSING)
            contents.put(sk, v if acc is _MISSING else self._reduce(acc, v))
        else:
            acc = contents.get(sk, _MISSING)
            if acc is _MISSING:
                acc = self.function.create_accumulator()
            contents.put(sk, self.function.add(v, acc))

    def _after_add(self, key: Any, window: Any, state_window: Any, v: Any, t: int) -> None:
        tctx = self.tctx
        tctx.window = window
        result = self.trigger.on_element(v, t, window, tctx)
        if result.is_fire:
            contents = self._get_contents((key, state_window))
            if contents is not _MISSING:
                self._fire(key, window, contents)
        if result.is_purge:
            self._remove_contents((key, state_window))
        self._register_cleanup(key, window)

    def _get_contents(self, sk: tuple) -> Any:
        if self.buffered:
            elements = self.buffer.list_get(sk)  # type: ignore[union-attr]
            return elements if elements else _MISSING
        return self.contents.get(sk, _MISSING)

    def _put_contents(self, sk: tuple, value: Any) -> None:
        if self.buffered:
            self.buffer.remove(sk)  # type: ignore[union-attr]
            if value:
                self.buffer.list_add(sk, value)  # type: ignore[union-attr]
        else:
            self.contents.put(sk, value)

    def _remove_contents(self, sk: tuple) -> None:
        (self.buffer if self.buffered else self.contents).remove(sk)  # type: ignore[union-attr]

    def _register_cleanup(self, key: Any, window: Any) -> None:
        t = self.cleanup_time(window)
        if t == MAX_TS:
            return  # windows that never end are never cleaned up
        self.timers.register(EVENT_TIME if self.event_time else PROCESSING_TIME, t, key, window)

    def _late(self, items: list) -> None:
        if self.late_tag_id is not None:
            self.side_output(self.late_tag_id).emit(
                Batch([v for v, _ in items], [t for _, t in items])
            )
        else:
            self.late_dropped += len(items)

    # -- session windows --------------------------------------------------------------------------

    def _merging_set(self, key: Any) -> dict:
        mset = self.merging_sets.get(key)  # type: ignore[union-attr]
        return dict(mset) if mset else {}

    def _store_merging_set(self, key: Any, mset: dict) -> None:
        if mset:
            self.merging_sets.put(key, mset)  # type: ignore[union-attr]
        else:
            self.merging_sets.remove(key)  # type: ignore[union-attr]

    def _add_merging(self, key: Any, mset: dict, new: TimeWindow) -> TimeWindow:
        """Adds ``new`` to the key's session windows and merges; returns the window it is in."""
        windows = list(mset) + ([new] if new not in mset else [])
        result = new
        for cover, members in merge_windows(windows):
            if new in members:
                result = cover
            if len(members) == 1:
                if members[0] == new and new not in mset:
                    mset[new] = new
                continue
            old = [m for m in members if m in mset]
            if not old:
                mset[cover] = cover
                continue
            state_window = mset[old[0]]
            merged_state = [mset[m] for m in old[1:]]
            for m in old:
                del mset[m]
            mset[cover] = state_window
            self._merge_windows(
                key, cover, [m for m in old if m != cover], state_window, merged_state
            )
        return result

    def _merge_windows(
        self, key: Any, merged: Any, merged_windows: list, state_window: Any, merged_state: list
    ) -> None:
        target = self._get_contents((key, state_window))
        for sw in merged_state:
            part = self._get_contents((key, sw))
            if part is _MISSING:
                continue
            self._remove_contents((key, sw))
            if target is _MISSING:
                target = part
            elif self.buffered:
                target = target + part
            elif self.kind == REDUCE:
                target = self._reduce(target, part)
            else:
                target = self.function.merge(target, part)
        if target is not _MISSING:
            self._put_contents((key, state_window), target)
        tctx = self.tctx
        tctx.key = key
        tctx.window = merged
        tctx.merged_windows = merged_windows
        self.trigger.on_merge(merged, tctx)
        tctx.merged_windows = []
        for m in merged_windows:
            tctx.window = m
            self.trigger.clear(m, tctx)
            t = self.cleanup_time(m)
            self.timers.delete(EVENT_TIME if self.event_time else PROCESSING_TIME, t, key, m)
        tctx.window = merged

    # -- timers -----------------------------------------------------------------------------------

    def on_watermark(self, timestamp: int) -> None:
        self._on_timers(EVENT_TIME, timestamp)

    def next_processing_timer(self) -> int | None:
        return self.timers.next_timestamp(PROCESSING_TIME)

    def on_processing_time(self, now_ms: int) -> None:
        self._on_timers(PROCESSING_TIME, now_ms)

    def _on_timers(self, domain: int, upto: int) -> None:
        key = None
        try:
            if self._fast and domain == EVENT_TIME and self.window_function is None:
                fast_path.fire_timers(self, upto)
                return
            for t, key, w in self.timers.due(domain, upto):
                self._on_timer(domain, t, key, w)
        except GraphError:
            raise
        except Exception as exc:
            raise self.user_error(exc, f"window {key!r}", "the timers of key") from exc
        self._flush()

    def _on_timer(self, domain: int, t: int, key: Any, w: Any) -> None:
        self.backend.current_key = key
        tctx = self.tctx
        tctx.key = key
        tctx.window = w
        if self.merging:
            mset = self._merging_set(key)
            state_window = mset.get(w)
            if state_window is None:
                return  # the window was merged away since this timer was set
        else:
            mset = None
            state_window = w
        if domain == EVENT_TIME:
            result = self.trigger.on_event_time(t, w, tctx)
        else:
            result = self.trigger.on_processing_time(t, w, tctx)
        if result.is_fire:
            contents = self._get_contents((key, state_window))
            if contents is not _MISSING:
                self._fire(key, w, contents)
        if result.is_purge:
            self._remove_contents((key, state_window))
        cleanup_domain = EVENT_TIME if self.event_time else PROCESSING_TIME
        if domain == cleanup_domain and t == self.cleanup_time(w):
            self._clear_all(key, w, state_window, mset)

    def _clear_all(self, key: Any, w: Any, state_window: Any, mset: dict | None) -> None:
        self._remove_contents((key, state_window))
        self.tctx.window = w
        self.trigger.clear(w, self.tctx)
        clear = (
            getattr(self.window_function, "clear", None)
            if self.kind in (REDUCE, AGGREGATE)
            else getattr(self.function, "clear", None)
        )
        if callable(clear):
            self.wctx.key = key
            self.wctx._window = w
            clear(self.wctx)
        if mset is not None:
            mset.pop(w, None)
            self._store_merging_set(key, mset)

    # -- evaluation -------------------------------------------------------------------------------

    def _fire(self, key: Any, w: Any, contents: Any) -> None:
        if self.buffered:
            elements = contents
            if self.evictor is not None:
                elements = self.evictor.evict_before(elements, w, self.tctx)
            values = [v for v, _ in elements]
            results = self._evaluate_buffered(key, w, values)
            if self.evictor is not None:
                kept = self.evictor.evict_after(elements, w, self.tctx)
                state_window = w if not self.merging else self._merging_set(key).get(w, w)
                if len(kept) != len(contents):
                    self._put_contents((key, state_window), kept)
        elif self.declarative is not None:
            results = [self.declarative.window_result(key, w, contents)]
        else:
            value = contents if self.kind == REDUCE else self.function.get_result(contents)
            results = self._with_window_function(key, w, [value])
        if results:
            self._out.extend(results)
            self._out_ts.extend([w.max_timestamp()] * len(results))

    def _evaluate_buffered(self, key: Any, w: Any, values: list) -> list:
        if self.kind == PROCESS:
            return self._call_process(self.function, key, w, values)
        if self.kind == APPLY:
            apply = getattr(self.function, "apply", self.function)
            return list(apply(key, w, values) or ())
        if not values:
            return []
        if self.kind == REDUCE:
            value = functools.reduce(self._reduce, values)
        elif self.declarative is not None:
            return [self.declarative.window_result(key, w, self.declarative.accumulate(values))]
        else:
            acc = self.function.create_accumulator()
            for v in values:
                acc = self.function.add(v, acc)
            value = self.function.get_result(acc)
        return self._with_window_function(key, w, [value])

    def _with_window_function(self, key: Any, w: Any, values: list) -> list:
        wf = self.window_function
        if wf is None:
            return values
        apply = getattr(wf, "apply", None)
        if callable(apply) and not callable(getattr(wf, "process", None)):
            return list(apply(key, w, values) or ())
        # a ProcessWindowFunction, or a plain callable(key, context, elements)
        return self._call_process(wf, key, w, values)

    def _call_process(self, pwf: Any, key: Any, w: Any, values: list) -> list:
        self.wctx.key = key
        self.wctx._window = w
        process = getattr(pwf, "process", pwf)
        return route_side_outputs(list(process(key, self.wctx, values) or ()), self.wctx)

    def _flush(self) -> None:
        if self._out:
            out, ts = self._out, self._out_ts
            self._out, self._out_ts = [], []
            self.output.emit(Batch(out, ts))
