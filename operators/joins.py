"""Internal: joins — the interval join operator and the window functions behind window joins.

**Interval join** (SEMANTICS §7.2). A two-input keyed operator: input 1 (left) arrives through
``process_batch``, input 2 (right) through ``process_batch2``; the task gives it the minimum of
both inputs' watermarks. Per key and side the operator keeps a buffer ``{timestamp: [values]}``
in keyed state. A record that is not late is matched against the other side's buffer, then added
to its own; an event-time timer removes its bucket once no future record of the other side can
match it. Outputs carry ``max(left timestamp, right timestamp)``.

**Window join and co-group** (SEMANTICS §7.1) need no operator of their own: both inputs are
tagged with their side and key (:class:`TagSide`), unioned, keyed by the key and cut into
windows by the ordinary :class:`~raystream.operators.windows.operator.WindowOperator`, whose
window function (:class:`CoGroupWindowFunction`) splits each window's contents by side again.
Assigners, triggers, evictors and allowed lateness therefore behave as for any window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from raystream.api.joins import ProcessJoinFunction
from raystream.core.keys import KeySelector
from raystream.core.time import MIN_TS, clamp_ts
from raystream.core.timers import EVENT_TIME, TimerService
from raystream.errors import GraphError, TaskError, record_repr
from raystream.operators.base import close_function, open_function
from raystream.operators.process import collect_routed
from raystream.operators.stateless import UdfOperator
from raystream.runtime.elements import Batch

LEFT, RIGHT = 0, 1
_SIDE_NAMES = ("left", "right")
_BUFFER_NAMES = ("__interval_join_left__", "__interval_join_right__")


class IntervalJoinContext(ProcessJoinFunction.Context):
    """The ``ctx`` of ``ProcessJoinFunction.process_element``; one object reused for every pair.

    Side outputs are buffered and emitted once per batch, stamped like the pair's output.
    """

    __slots__ = ("_op", "_left_ts", "_right_ts", "_key", "_side")

    def __init__(self, op: IntervalJoinOperator):
        self._op = op
        self._left_ts = MIN_TS
        self._right_ts = MIN_TS
        self._key: Any = None
        self._side: dict[str, tuple[list, list]] = {}

    def get_left_timestamp(self) -> int:
        return self._left_ts

    def get_right_timestamp(self) -> int:
        return self._right_ts

    def get_timestamp(self) -> int:
        """Timestamp of the output: the larger of the two."""
        return max(self._left_ts, self._right_ts)

    def get_current_key(self) -> Any:
        return self._key

    def output(self, output_tag: Any, value: Any) -> None:
        tag_id = getattr(output_tag, "tag_id", None)
        if not isinstance(tag_id, str):
            raise TypeError(f"ctx.output expects an OutputTag, got {output_tag!r}")
        buf = self._side.get(tag_id)
        if buf is None:
            buf = self._side[tag_id] = ([], [])
        buf[0].append(value)
        buf[1].append(self.get_timestamp())

    def flush_side_outputs(self) -> None:
        if self._side:
            side, self._side = self._side, {}
            for tag_id, (values, stamps) in side.items():
                self._op.side_output(tag_id).emit(Batch(values, stamps))


class IntervalJoinOperator(UdfOperator):
    """Joins left ``l`` and right ``r`` of the same key iff ``l.ts + lower ≤ r.ts ≤ l.ts + upper``.

    ``lower_ms`` / ``upper_ms`` are the bounds as given; an exclusive bound is moved one
    millisecond inwards, so the operator works with inclusive bounds only. A record is late iff
    the watermark is set and ``ts < watermark``: it is not joined, and goes to its side's late
    output if one is set, else it is counted in ``num_late_records_dropped``.

    Cleanup. A left record can only match a future right record ``r`` (``r.ts ≥ watermark``)
    while ``watermark ≤ l.ts + upper``; its bucket is removed when the watermark passes
    ``l.ts + max(upper, 0)``, i.e. by a timer at that time + 1. Symmetrically a right bucket goes
    when the watermark passes ``r.ts + max(−lower, 0)``. Every pair of records that are both on
    time is therefore joined, whichever arrives first.
    """

    def __init__(
        self,
        name: str,
        fn: Any,
        key_selectors: tuple[KeySelector, KeySelector],
        lower_ms: int,
        upper_ms: int,
        lower_inclusive: bool = True,
        upper_inclusive: bool = True,
        left_late_tag_id: str | None = None,
        right_late_tag_id: str | None = None,
    ):
        super().__init__(name, fn)
        from raystream.api.joins import ProcessJoinFunction

        if isinstance(fn, ProcessJoinFunction):
            self._fn: Callable[..., Any] = fn.process_element
        elif callable(fn) and not isinstance(fn, type):
            self._fn = fn
        else:
            raise TypeError(
                "interval_join(...).process() expects a ProcessJoinFunction or a "
                f"callable(left, right, ctx), got {fn!r}"
            )
        if lower_ms > upper_ms:
            raise GraphError(
                f"interval join {name!r}: lower bound {lower_ms} ms is above upper bound "
                f"{upper_ms} ms (expected lower <= upper)"
            )
        self.lower = lower_ms if lower_inclusive else lower_ms + 1
        self.upper = upper_ms if upper_inclusive else upper_ms - 1
        if self.lower > self.upper:
            raise GraphError(
                f"interval join {name!r}: the interval between {lower_ms} and {upper_ms} ms "
                f"({'[' if lower_inclusive else '('}{lower_ms}, {upper_ms}"
                f"{']' if upper_inclusive else ')'}) holds no timestamp, so nothing can ever "
                "match; hint: make a bound inclusive or widen the interval"
            )
        self.key_selectors = key_selectors
        self.late_tag_ids = (left_late_tag_id, right_late_tag_id)
        # how long a bucket must outlive its timestamp, per side
        self._keep_ms = (max(self.upper, 0), max(-self.lower, 0))
        self.timers = TimerService()
        self.late_dropped = [0, 0]
        self._jctx = IntervalJoinContext(self)

    def open(self) -> None:
        assert self.ctx is not None
        backend = self.ctx.keyed_backend
        if backend is None:
            raise GraphError(f"interval join {self.name!r} has no keyed state backend")
        self.backend = backend
        self.buffers = (backend.table(_BUFFER_NAMES[0]), backend.table(_BUFFER_NAMES[1]))
        super().open()

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m["num_late_records_dropped"] = sum(self.late_dropped)
        m["num_late_left_records_dropped"] = self.late_dropped[LEFT]
        m["num_late_right_records_dropped"] = self.late_dropped[RIGHT]
        return m

    # -- records ----------------------------------------------------------------------------------

    def process_batch(self, batch: Batch) -> None:
        self._run(LEFT, batch)

    def process_batch2(self, batch: Batch) -> None:
        self._run(RIGHT, batch)

    def _run(self, side: int, batch: Batch) -> None:
        values = batch.values
        stamps = batch.timestamps
        if stamps is None:
            if values:
                raise self._no_timestamp(side, values[0])
            return
        ks = self.key_selectors[side]
        wm = self.current_watermark
        own, other = self.buffers[side], self.buffers[1 - side]
        # the other side's timestamps that match a record at ts lie in [ts + lo, ts + hi]
        lo, hi = (self.lower, self.upper) if side == LEFT else (-self.upper, -self.lower)
        keep = self._keep_ms[side]
        register = self.timers.register
        fn = self._fn
        ctx = self._jctx
        out: list = []
        out_ts: list = []
        late: list = []
        late_ts: list = []
        v: Any = None
        pair: Any = None
        try:
            for v, t in zip(values, stamps):
                if t == MIN_TS:
                    raise self._no_timestamp(side, v)
                if wm != MIN_TS and t < wm:
                    late.append(v)
                    late_ts.append(t)
                    continue
                key = ks(v)
                self.backend.current_key = key
                ctx._key = key
                matches = other.get(key)
                if matches:
                    first, last = t + lo, t + hi
                    for other_ts, bucket in matches.items():
                        if first <= other_ts <= last:
                            if side == LEFT:
                                ctx._left_ts, ctx._right_ts = t, other_ts
                            else:
                                ctx._left_ts, ctx._right_ts = other_ts, t
                            out_t = t if t > other_ts else other_ts
                            for o in bucket:
                                pair = (v, o) if side == LEFT else (o, v)
                                collect_routed(fn(pair[0], pair[1], ctx), out, out_ts, out_t, ctx)
                            pair = None
                mine = own.get(key)
                if mine is None:
                    mine = {t: [v]}
                else:
                    bucket = mine.get(t)
                    if bucket is None:
                        mine[t] = [v]
                    else:
                        bucket.append(v)
                own.put(key, mine)  # put again: a backend that serializes sees the change
                register(EVENT_TIME, clamp_ts(t + keep + 1), key, (side, t))
        except (GraphError, TaskError):
            raise
        except Exception as exc:
            if pair is not None:
                raise self.user_error(exc, pair, "the join pair (left, right)") from exc
            raise self.user_error(exc, v, f"{_SIDE_NAMES[side]} record") from exc
        ctx.flush_side_outputs()
        if out:
            self.output.emit(Batch(out, out_ts))
        if late:
            self._late(side, late, late_ts)

    def _late(self, side: int, values: list, stamps: list) -> None:
        tag_id = self.late_tag_ids[side]
        if tag_id is not None:
            self.side_output(tag_id).emit(Batch(values, stamps))
        else:
            self.late_dropped[side] += len(values)

    def _no_timestamp(self, side: int, value: Any) -> TaskError:
        subtask = self.ctx.subtask_index if self.ctx is not None else None
        return TaskError(
            f"interval join {self.name!r} (subtask {subtask}): {_SIDE_NAMES[side]} record "
            f"{record_repr(value)} has no event timestamp. Interval joins work in event time "
            "only; hint: give both inputs timestamps with "
            "from_source(source, WatermarkStrategy...with_timestamp_assigner(...))",
            operator=self.name,
            subtask=subtask,
        )

    # -- cleanup ----------------------------------------------------------------------------------

    def on_watermark(self, timestamp: int) -> None:
        buffers = self.buffers
        for _t, key, (side, bucket_ts) in self.timers.due(EVENT_TIME, timestamp):
            table = buffers[side]
            buckets = table.get(key)
            if buckets is None or buckets.pop(bucket_ts, None) is None:
                continue
            if buckets:
                table.put(key, buckets)
            else:
                table.remove(key)


# -- window join / co-group --------------------------------------------------------------------------


class TagSide:
    """Map function of one input of a window join: ``value -> (side, key, value)``."""

    __slots__ = ("side", "key_selector")

    def __init__(self, side: int, key_selector: Any):
        self.side = side
        self.key_selector = key_selector

    def __call__(self, value: Any) -> tuple[int, Any, Any]:
        return (self.side, self.key_selector(value), value)

    def __reduce__(self):
        return (TagSide, (self.side, self.key_selector))


def tagged_key(tagged: tuple[int, Any, Any]) -> Any:
    """Key selector of the tagged union."""
    return tagged[1]


class CoGroupWindowFunction:
    """Window function (``apply(key, window, inputs)``) over tagged records: calls
    ``co_group(lefts, rights)`` once per firing with at least one element on either side."""

    def __init__(self, fn: Any):
        from raystream.api.joins import CoGroupFunction

        self.fn = fn
        if isinstance(fn, CoGroupFunction):
            self._co_group = fn.co_group
        elif callable(fn) and not isinstance(fn, type):
            self._co_group = fn
        else:
            raise TypeError(
                "co_group(...).apply() expects a CoGroupFunction or a callable(lefts, rights), "
                f"got {fn!r}"
            )

    def apply(self, key: Any, window: Any, inputs: Any) -> list:
        lefts: list = []
        rights: list = []
        for side, _key, value in inputs:
            (lefts if side == LEFT else rights).append(value)
        if not lefts and not rights:
            return []  # an evictor emptied the window
        return list(self._co_group(lefts, rights) or ())

    def open(self, runtime_context: Any) -> None:
        open_function(self.fn, runtime_context)

    def close(self) -> None:
        close_function(self.fn)


class JoinCoGroup:
    """Turns a join function into a co-group function: the inner join of both sides' lists.

    ``JoinFunction.join`` and plain callables return one output per pair; ``FlatJoinFunction.join``
    returns an iterable of outputs."""

    def __init__(self, fn: Any):
        from raystream.api.joins import FlatJoinFunction, JoinFunction

        self.fn = fn
        self.flat = isinstance(fn, FlatJoinFunction)
        if isinstance(fn, (JoinFunction, FlatJoinFunction)):
            self._join = fn.join
        elif callable(fn) and not isinstance(fn, type):
            self._join = fn
        else:
            raise TypeError(
                "join(...).apply() expects a JoinFunction, a FlatJoinFunction or a "
                f"callable(left, right), got {fn!r}"
            )

    def __call__(self, lefts: list, rights: list) -> list:
        join = self._join
        out: list = []
        if self.flat:
            for left in lefts:
                for right in rights:
                    result = join(left, right)
                    if result is not None:
                        out.extend(result)
        else:
            for left in lefts:
                for right in rights:
                    out.append(join(left, right))
        return out

    def open(self, runtime_context: Any) -> None:
        open_function(self.fn, runtime_context)

    def close(self) -> None:
        close_function(self.fn)
