"""Windows against an independent brute-force reference (SEMANTICS §2).

Scripts interleave records (key, timestamp, value) with watermarks, out of order and with late
events. The reference recomputes, at every step, which windows exist and what they hold by
scanning everything it has kept, with no timers and no incremental state; the operator must
produce exactly the same multiset of (result, timestamp) and the same late records.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from raystream import OutputTag
from raystream.core.time import MIN_TS
from raystream.operators.windows import (
    CountEvictor,
    CountTrigger,
    EventTimeSessionWindows,
    GlobalWindows,
    PurgingTrigger,
    SlidingEventTimeWindows,
    TimeEvictor,
    TumblingEventTimeWindows,
)
from raystream.operators.windows.operator import AGGREGATE, PROCESS, REDUCE, WindowOperator
from raystream.testing import OperatorHarness

LATE = OutputTag("late")


# -- scripts --------------------------------------------------------------------------------------


def make_script(
    seed: int, n: int = 120, keys: int = 3, disorder: int = 15, span: int = 200
) -> list:
    rng = random.Random(seed)
    script = []
    wm = MIN_TS
    base = 0
    for _ in range(n):
        base += rng.randint(0, 4)
        ts = base + rng.randint(-disorder, disorder)
        script.append(("rec", f"k{rng.randrange(keys)}", ts, rng.randint(1, 9)))
        if rng.random() < 0.15:
            wm = max(wm, base - rng.randint(0, disorder))
            script.append(("wm", wm))
    return script


def run_operator(
    script: list, op: WindowOperator, batch: int = 7, state_backend=None
) -> tuple[Counter, Counter]:
    h = OperatorHarness(op, keyed=True, state_backend=state_backend)
    pending: list = []

    def flush():
        if pending:
            h.process([(k, ts, v) for k, ts, v in pending], [ts for _, ts, _ in pending])
            pending.clear()

    for step in script:
        if step[0] == "rec":
            pending.append(step[1:])
            if len(pending) >= batch:
                flush()
        else:
            flush()
            h.watermark(step[1])
    flush()
    h.finish()
    return Counter(h.output), Counter(h.side_output(LATE))


# -- the reference --------------------------------------------------------------------------------


def windows_of(ts: int, size: int, slide: int, offset: int = 0) -> list[tuple[int, int]]:
    """Every [s, s+size) with s ≡ offset (mod slide) that contains ts — by scanning."""
    out = []
    s = ts - size - slide
    s -= (s - offset) % slide
    while s <= ts:
        if s <= ts < s + size:
            out.append((s, s + size))
        s += slide
    return out


def reference(
    script: list, assign, lateness: int, result, session_gap: int | None = None
) -> tuple[Counter, Counter]:
    """``result(key, window, [(value, ts), ...])`` -> list of outputs for one firing."""
    wm = MIN_TS
    kept: dict[tuple, list] = {}  # (key, start, end) -> elements
    out: Counter = Counter()
    late: Counter = Counter()

    def fire(k, s, e):
        for r in result(k, (s, e), kept[(k, s, e)]):
            out[(r, e - 1)] += 1

    for step in script:
        if step[0] == "wm":
            new = step[1]
            if new <= wm:
                continue
            for k, s, e in sorted(kept, key=lambda w: w[2]):
                if wm < e - 1 <= new:
                    fire(k, s, e)
            for w in [w for w in kept if w[2] - 1 + lateness <= new]:
                del kept[w]
            wm = new
            continue
        _, k, ts, v = step
        if session_gap is not None:
            new = (ts, ts + session_gap)
            touching = [w for w in kept if w[0] == k and w[1] <= new[1] and w[2] >= new[0]]
            if not touching and new[1] - 1 + lateness <= wm:
                if ts + lateness <= wm:
                    late[((k, ts, v), ts)] += 1
                continue
            s = min([new[0]] + [w[1] for w in touching])
            e = max([new[1]] + [w[2] for w in touching])
            elements = [x for w in touching for x in kept.pop(w)] + [(v, ts)]
            kept[(k, s, e)] = elements
            if e - 1 <= wm:
                fire(k, s, e)
            continue
        added = False
        for s, e in assign(ts):
            if e - 1 + lateness <= wm:
                continue
            added = True
            kept.setdefault((k, s, e), []).append((v, ts))
            if e - 1 <= wm:
                fire(k, s, e)
        if not added and ts + lateness <= wm:
            late[((k, ts, v), ts)] += 1
    for k, s, e in sorted(kept, key=lambda w: w[2]):
        if e - 1 > wm:
            fire(k, s, e)
    return out, late


# -- window functions used on both sides -------------------------------------------------------------


def key_of(r):
    return r[0]


def add_reduce(a, b):
    return (a[0], max(a[1], b[1]), a[2] + b[2])


class SumCount:
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + value[2], acc[1] + 1)

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


def sorted_values(key, context, elements):
    yield (key, context.window().start, context.window().end, tuple(sorted(e[2] for e in elements)))


def ref_reduce(key, window, elements):
    return [(key, max(ts for _, ts in elements), sum(v for v, _ in elements))] if elements else []


def ref_aggregate(key, window, elements):
    return [(sum(v for v, _ in elements), len(elements))]


def ref_process(key, window, elements):
    return [(key, window[0], window[1], tuple(sorted(v for v, _ in elements)))]


FUNCTIONS = {
    REDUCE: (add_reduce, ref_reduce),
    AGGREGATE: (SumCount(), ref_aggregate),
    PROCESS: (sorted_values, ref_process),
}


def window_op(assigner, kind, lateness=0, trigger=None, evictor=None, window_function=None):
    fn = FUNCTIONS[kind][0]
    return WindowOperator(
        "window",
        key_of,
        assigner,
        trigger,
        evictor,
        lateness,
        LATE.tag_id,
        kind,
        fn,
        window_function,
    )


# -- differential tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", [REDUCE, AGGREGATE, PROCESS])
@pytest.mark.parametrize("lateness", [0, 12])
def test_tumbling_matches_reference(seed, kind, lateness):
    script = make_script(seed)
    got = run_operator(script, window_op(TumblingEventTimeWindows.of(10), kind, lateness))
    want = reference(script, lambda ts: windows_of(ts, 10, 10), lateness, FUNCTIONS[kind][1])
    assert got == want


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", [REDUCE, AGGREGATE, PROCESS])
@pytest.mark.parametrize("size,slide,lateness", [(10, 5, 0), (12, 5, 7), (6, 4, 0)])
def test_sliding_matches_reference(seed, kind, size, slide, lateness):
    script = make_script(seed + 100)
    got = run_operator(script, window_op(SlidingEventTimeWindows.of(size, slide), kind, lateness))
    want = reference(script, lambda ts: windows_of(ts, size, slide), lateness, FUNCTIONS[kind][1])
    assert got == want


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("kind", [REDUCE, AGGREGATE, PROCESS])
@pytest.mark.parametrize("gap,lateness", [(5, 0), (8, 10)])
def test_session_matches_reference(seed, kind, gap, lateness):
    script = make_script(seed + 200, disorder=10)
    got = run_operator(script, window_op(EventTimeSessionWindows.with_gap(gap), kind, lateness))
    want = reference(script, None, lateness, FUNCTIONS[kind][1], session_gap=gap)
    assert got == want


@pytest.mark.parametrize("seed", range(4))
def test_offset_windows_and_negative_timestamps(seed):
    rng = random.Random(seed)
    script = [("rec", "k", rng.randint(-100, 100), rng.randint(1, 5)) for _ in range(60)]
    got = run_operator(script, window_op(TumblingEventTimeWindows.of(10, 3), REDUCE))
    want = reference(script, lambda ts: windows_of(ts, 10, 10, 3), 0, ref_reduce)
    assert got == want


def test_session_with_dynamic_gap():
    script = [("rec", "a", 0, 1), ("rec", "a", 3, 2), ("rec", "a", 20, 3), ("rec", "b", 1, 4)]
    op = WindowOperator(
        "s",
        key_of,
        EventTimeSessionWindows.with_dynamic_gap(lambda r: 5 if r[0] == "a" else 100),
        None,
        None,
        0,
        None,
        PROCESS,
        sorted_values,
    )
    h = OperatorHarness(op, keyed=True)
    h.process([s[1:] for s in script], [s[2] for s in script]).finish()
    assert sorted(h.output) == sorted(
        [(("a", 0, 8, (1, 2)), 7), (("a", 20, 25, (3,)), 24), (("b", 1, 101, (4,)), 100)]
    )


def test_count_windows_tumbling_and_sliding_never_flush_incomplete():
    op = WindowOperator(
        "c",
        key_of,
        GlobalWindows.create(),
        PurgingTrigger.of(CountTrigger.of(3)),
        None,
        0,
        None,
        PROCESS,
        lambda k, c, els: [tuple(e[2] for e in els)],
    )
    h = OperatorHarness(op, keyed=True)
    recs = [("a", 0, i) for i in range(8)]
    h.process(recs, [0] * 8).finish()
    assert h.values() == [(0, 1, 2), (3, 4, 5)]  # (6, 7) never fills its window

    op = WindowOperator(
        "c",
        key_of,
        GlobalWindows.create(),
        CountTrigger.of(2),
        CountEvictor.of(3),
        0,
        None,
        PROCESS,
        lambda k, c, els: [tuple(e[2] for e in els)],
    )
    h = OperatorHarness(op, keyed=True)
    h.process(recs, [0] * 8).finish()
    assert h.values() == [(0, 1), (1, 2, 3), (3, 4, 5), (5, 6, 7)]


def test_time_evictor_keeps_recent_elements():
    op = WindowOperator(
        "e",
        key_of,
        TumblingEventTimeWindows.of(100),
        None,
        TimeEvictor.of(10),
        0,
        None,
        REDUCE,
        add_reduce,
    )
    h = OperatorHarness(op, keyed=True)
    h.process([("a", 1, 1), ("a", 50, 2), ("a", 45, 4), ("a", 39, 8)], [1, 50, 45, 39]).finish()
    assert h.values() == [("a", 50, 6)]  # 40 <= ts: 50 and 45 remain


def test_incremental_plus_process_window_function_gets_one_element():
    seen = []

    def pwf(key, ctx, elements):
        elements = list(elements)
        seen.append(len(elements))
        yield (key, ctx.window().end, elements[0])

    op = window_op(TumblingEventTimeWindows.of(10), AGGREGATE, window_function=pwf)
    h = OperatorHarness(op, keyed=True)
    h.process([("a", 1, 5), ("a", 2, 6), ("a", 15, 1)], [1, 2, 15]).finish()
    assert sorted(h.values()) == [("a", 10, (11, 2)), ("a", 20, (1, 1))]
    assert seen == [1, 1]


def test_results_carry_end_minus_one_and_watermark_follows_firing():
    op = window_op(TumblingEventTimeWindows.of(10), REDUCE)
    h = OperatorHarness(op, keyed=True)
    h.process([("a", 3, 1)], [3]).watermark(9)
    assert h.output == [(("a", 3, 1), 9)]
    assert h.watermarks == [9]


def test_late_records_dropped_are_counted_without_side_output():
    op = WindowOperator(
        "w", key_of, TumblingEventTimeWindows.of(10), None, None, 0, None, REDUCE, add_reduce
    )
    h = OperatorHarness(op, keyed=True)
    h.process([("a", 15, 1)], [15]).watermark(20).process(
        [("a", 5, 1), ("a", 25, 1)], [5, 25]
    ).finish()
    assert op.metrics()["num_late_records_dropped"] == 1
    assert sorted(h.values()) == [("a", 15, 1), ("a", 25, 1)]


def test_event_time_window_rejects_records_without_timestamps():
    from raystream.errors import UserFunctionError

    op = window_op(TumblingEventTimeWindows.of(10), REDUCE)
    h = OperatorHarness(op, keyed=True)
    with pytest.raises(UserFunctionError, match="timestamps"):
        h.process([("a", 1, 1)])


def test_window_assignment_unit_examples():
    from raystream.operators.windows.assigners import window_start

    assert window_start(-1, 0, 10) == -10
    assert window_start(-15, 0, 10) == -20
    assert window_start(13, 2, 10) == 12
    assert window_start(-3, 2, 10) == -8
    sl = SlidingEventTimeWindows.of(10, 4)
    assert sorted(w.start for w in sl.assign_windows(None, 13, 0)) == [4, 8, 12]
    assert sorted(w.start for w in sl.assign_windows(None, 11, 0)) == [4, 8]


@pytest.mark.parametrize("ts", [-1000, -11, -10, -1, 0, 1, 9, 10, 99, 12345])
def test_a_timestamp_lies_in_exactly_one_tumbling_window(ts):
    windows = TumblingEventTimeWindows.of(10, 3).assign_windows(None, ts, 0)
    assert len(windows) == 1 and windows[0].start <= ts < windows[0].end
    assert windows_of(ts, 10, 10, 3) == [tuple(windows[0])]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", [REDUCE, AGGREGATE, PROCESS])
def test_lmdb_backend_gives_the_same_windows(seed, kind, tmp_path):
    from raystream.checkpointing import LmdbStateBackend

    backend = LmdbStateBackend(str(tmp_path))
    script = make_script(seed + 300)
    got = run_operator(
        script, window_op(SlidingEventTimeWindows.of(12, 5), kind, 7), state_backend=backend
    )
    assert got == reference(script, lambda ts: windows_of(ts, 12, 5), 7, FUNCTIONS[kind][1])
    script = make_script(seed + 400, disorder=10)
    got = run_operator(
        script, window_op(EventTimeSessionWindows.with_gap(6), kind, 5), state_backend=backend
    )
    assert got == reference(script, None, 5, FUNCTIONS[kind][1], session_gap=6)


def test_errors_in_window_functions_name_the_record_once():
    from raystream.errors import UserFunctionError

    def bad_reduce(a, b):
        if b[2] == 13:
            raise ZeroDivisionError("boom")
        return a

    op = WindowOperator(
        "w", key_of, TumblingEventTimeWindows.of(10), None, None, 0, None, REDUCE, bad_reduce
    )
    h = OperatorHarness(op, keyed=True)
    with pytest.raises(UserFunctionError) as info:
        h.process([("a", 1, 1), ("a", 2, 13)], [1, 2]).finish()
    assert info.value.cause_type == "ZeroDivisionError"
    assert "13" in info.value.record
    assert str(info.value).count("original traceback") == 1


def test_per_window_state_is_refused_for_merging_windows():
    from raystream import ValueStateDescriptor
    from raystream.errors import GraphError, UserFunctionError

    def uses_window_state(key, ctx, elements):
        ctx.window_state().get_state(ValueStateDescriptor("x")).update(1)
        return []

    op = WindowOperator(
        "s",
        key_of,
        EventTimeSessionWindows.with_gap(5),
        None,
        None,
        0,
        None,
        PROCESS,
        uses_window_state,
    )
    h = OperatorHarness(op, keyed=True)
    h.process([("a", 1, 1)], [1])
    with pytest.raises((GraphError, UserFunctionError), match="merging"):
        h.finish()
