"""Internal: the window operator's fast path (SEMANTICS §2, same results as the general path).

Tumbling and sliding event-time windows with the default trigger, no evictor and reduce or
aggregate take it: the same per-record work as the general path without trigger calls. Records
of open windows are pre-aggregated per batch and folded into state once per key and window; the
timers are the ones the default trigger and the cleanup would set, fired without the calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raystream.core.time import MAX_TS, MIN_TS
from raystream.core.timers import EVENT_TIME
from raystream.operators.windows.assigners import TimeWindow, TumblingEventTimeWindows
from raystream.operators.windows.contexts import _MISSING, REDUCE

if TYPE_CHECKING:
    from raystream.operators.windows.operator import WindowOperator


def process(op: WindowOperator, values: list, stamps: list) -> None:
    """Tumbling/sliding event-time windows, default trigger, reduce or aggregate.

    Records of windows still open are pre-aggregated per batch in local dicts (window →
    key → partial) and folded into state once per (key, window) — with the reduce function,
    or ``AggregateFunction.merge`` — which is what the state would hold after adding them one
    by one (reduce functions and merge are associative, as Flink requires for session
    merges). Windows already past the watermark but within the allowed lateness fire once
    per element, so their records take the per-record route.
    """
    reduce = op.kind == REDUCE
    if not reduce and not callable(getattr(op.function, "merge", None)):
        _per_record(op, values, stamps)
        return
    if type(op.assigner) is TumblingEventTimeWindows:
        _tumbling(op, values, stamps, reduce)
        return
    ks = op.key_selector
    wm = op.current_watermark
    lateness = op.lateness
    size, offset, tumbling, step = _geometry(op)
    fn, create = _functions(op, reduce)
    # declarative aggregates: each key's records are collected per window, then folded at once
    collect = op.declarative is not None
    local: dict[int, dict] = {}
    late: list = []
    late_but_allowed: list = []
    v = None
    try:
        for v, t in zip(values, stamps):
            if t == MIN_TS:
                raise ValueError("record has no event timestamp")
            k = ks(v)
            start = t - (t - offset) % step
            added = False
            while start > t - size:
                max_ts = start + size - 1
                if max_ts > wm:
                    added = True
                    per_key = local.get(start)
                    if per_key is None:
                        per_key = local[start] = {}
                    acc = per_key.get(k, _MISSING)
                    if collect:
                        if acc is _MISSING:
                            per_key[k] = [v]
                        else:
                            acc.append(v)
                    elif reduce:
                        per_key[k] = v if acc is _MISSING else fn(acc, v)
                    else:
                        per_key[k] = fn(v, create() if acc is _MISSING else acc)
                elif max_ts + lateness > wm:
                    added = True
                    late_but_allowed.append(v)
                    late_but_allowed.append(t)
                    break  # the per-record route assigns all of this record's windows
                if tumbling:
                    break
                start -= step
            if not added and t + lateness <= wm:
                late.append((v, t))
        if collect:
            accumulate = op.declarative.accumulate  # type: ignore[union-attr]
            local = {s: {k: accumulate(g) for k, g in per.items()} for s, per in local.items()}
        _fold(op, local, reduce)
    except Exception as exc:
        raise op.user_error(exc, v) from exc
    if late_but_allowed:
        _per_record(op, late_but_allowed[0::2], late_but_allowed[1::2], local)
    if late:
        op._late(late)


def _tumbling(op: WindowOperator, values: list, stamps: list, reduce: bool) -> None:
    """The pre-aggregating route for tumbling windows. One window per record, so records of
    a window arrive in runs: the first pass cuts the batch by window, checking a window
    against the watermark when the run changes, not per record; the second folds each
    window's records per key. Records of windows the watermark passed, and records without a
    timestamp, go to the per-record route after the batch."""
    wm = op.current_watermark
    assigner: Any = op.assigner
    size = assigner.size
    offset = assigner.offset
    by_window: dict[int, list] = {}
    rest_v: list = []
    rest_t: list = []
    current = None  # window start of the run
    append: Any = None
    for v, t in zip(values, stamps):
        start = t - (t - offset) % size
        if start != current:
            if t == MIN_TS or start + size - 1 <= wm:
                rest_v.append(v)
                rest_t.append(t)
                continue
            current = start
            run = by_window.get(start)
            if run is None:
                run = by_window[start] = []
            append = run.append
        append(v)
    ks = op.key_selector
    local: dict[int, dict] = {}
    v = None
    try:
        for start, run in by_window.items():
            per_key: dict = {}
            get = per_key.get
            if op.declarative is not None:
                # one generated loop over the window's records (no call per record)
                op.declarative.fold(run, ks, per_key)
            elif reduce:
                fn = op._reduce
                for v in run:
                    k = ks(v)
                    acc = get(k, _MISSING)
                    per_key[k] = v if acc is _MISSING else fn(acc, v)
            else:
                add = op.function.add
                create = op.function.create_accumulator
                for v in run:
                    k = ks(v)
                    acc = get(k, _MISSING)
                    per_key[k] = add(v, create() if acc is _MISSING else acc)
            local[start] = per_key
        _fold(op, local, reduce)
    except Exception as exc:
        raise op.user_error(exc, v) from exc
    if rest_v:
        _per_record(op, rest_v, rest_t, local)


def _fold(op: WindowOperator, local: dict[int, dict], reduce: bool) -> None:
    get = op.contents.get
    put = op.contents.put
    register = op.timers.register
    combine = op._reduce if reduce else op.function.merge
    assigner: Any = op.assigner  # tumbling or sliding: see WindowOperator._fast
    size = assigner.size
    lateness = op.lateness
    for start, per_key in local.items():
        w = TimeWindow(start, start + size)
        max_ts = start + size - 1
        cleanup = min(max_ts + lateness, MAX_TS)
        for k, partial in per_key.items():
            sk = (k, w)
            stored = get(sk, _MISSING)
            if stored is _MISSING:
                put(sk, partial)
                register(EVENT_TIME, max_ts, k, w)
                if lateness:
                    register(EVENT_TIME, cleanup, k, w)
            else:
                put(sk, combine(stored, partial))


def _per_record(op: WindowOperator, values: list, stamps: list, skip: dict | None = None) -> None:
    """The fast path one record at a time (aggregates without ``merge``, late firings).

    ``skip``: window starts already handled by the pre-aggregating route for this batch."""
    ks = op.key_selector
    get = op.contents.get
    put = op.contents.put
    register = op.timers.register
    wm = op.current_watermark
    lateness = op.lateness
    size, offset, tumbling, step = _geometry(op)
    reduce = op.kind == REDUCE
    fn, create = _functions(op, reduce)
    windows: dict[int, TimeWindow] = {}
    late: list = []
    v = None
    try:
        for v, t in zip(values, stamps):
            if t == MIN_TS:
                raise ValueError("record has no event timestamp")
            k = ks(v)
            start = t - (t - offset) % step
            added = False
            while start > t - size:
                end = start + size
                max_ts = end - 1
                if max_ts + lateness > wm and not (skip is not None and max_ts > wm):
                    added = True
                    w = windows.get(start)
                    if w is None:
                        w = windows[start] = TimeWindow(start, end)
                    sk = (k, w)
                    acc = get(sk, _MISSING)
                    if acc is _MISSING:
                        acc = v if reduce else fn(v, create())
                        if max_ts > wm:
                            register(EVENT_TIME, max_ts, k, w)
                        if lateness:
                            register(EVENT_TIME, min(max_ts + lateness, MAX_TS), k, w)
                    elif reduce:
                        acc = fn(acc, v)
                    else:
                        acc = fn(v, acc)
                    put(sk, acc)
                    if max_ts <= wm:  # late but within the allowed lateness: fire again now
                        op.backend.current_key = k
                        op._fire(k, w, acc)
                elif skip is not None and max_ts > wm:
                    added = True
                if tumbling:
                    break
                start -= step
            if not added and t + lateness <= wm:
                late.append((v, t))
    except Exception as exc:
        raise op.user_error(exc, v) from exc
    if late:
        op._late(late)


def _geometry(op: WindowOperator) -> tuple[int, int, bool, int]:
    """Size, offset, whether tumbling, and step between window starts."""
    assigner: Any = op.assigner  # tumbling or sliding: see WindowOperator._fast
    tumbling = type(assigner) is TumblingEventTimeWindows
    return assigner.size, assigner.offset, tumbling, assigner.size if tumbling else assigner.slide


def _functions(op: WindowOperator, reduce: bool) -> tuple[Any, Any]:
    """The function adding a record, and the accumulator factory (None for reduce)."""
    if reduce:
        return op._reduce, None
    return op.function.add, op.function.create_accumulator


def fire_timers(op: WindowOperator, upto: int) -> None:
    """Timers of the fast path: fire at ``max_timestamp``, drop state at cleanup time —
    exactly what the default trigger and the cleanup timer do, without the calls. Nothing
    here registers or deletes timers, so due timers are taken a timestamp at a time."""
    contents = op.contents
    get = contents.get
    lateness = op.lateness
    reduce = op.kind == REDUCE
    result: Any = None if reduce else op.function.get_result  # None if unused
    declarative = op.declarative
    out = op._out
    out_ts = op._out_ts
    for t, bucket in op.timers.take_due(EVENT_TIME, upto):
        for key, w in bucket:
            max_ts = w.end - 1
            if t == max_ts:
                acc = get((key, w), _MISSING)
                if acc is not _MISSING:
                    if declarative is not None:
                        out.append(declarative.window_result(key, w, acc))
                    else:
                        out.append(acc if reduce else result(acc))
                    out_ts.append(max_ts)
            if t == (max_ts + lateness if max_ts + lateness < MAX_TS else MAX_TS):
                contents.remove((key, w))
    op._flush()
