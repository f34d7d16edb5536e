"""Joins against an independent brute-force reference (SEMANTICS §7), without Ray.

Scripts interleave left and right records ``(key, ts, id)`` with watermarks, out of order and
with late events. The references do not buffer or clean up anything: the interval join one pairs
every two on-time records by the definition, the window ones replay the window rules over plain
lists. The operators, driven through :class:`OperatorHarness` in batches of random sizes, must
produce exactly the same multiset of ``(output, timestamp)`` and the same late records.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter

import pytest

from raystream import OutputTag, StreamExecutionEnvironment
from raystream.api.joins import (
    CoGroupFunction,
    FlatJoinFunction,
    JoinFunction,
    ProcessJoinFunction,
)
from raystream.core.time import MAX_TS, MIN_TS
from raystream.errors import GraphError, TaskError, UserFunctionError
from raystream.operators.joins import (
    LEFT,
    RIGHT,
    CoGroupWindowFunction,
    IntervalJoinOperator,
    JoinCoGroup,
    TagSide,
    tagged_key,
)
from raystream.operators.windows.assigners import (
    EventTimeSessionWindows,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)
from raystream.operators.windows.evictors import CountEvictor
from raystream.operators.windows.operator import APPLY, WindowOperator
from raystream.operators.windows.triggers import CountTrigger, DeltaTrigger
from raystream.testing import OperatorHarness

LEFT_LATE = OutputTag("left-late")
RIGHT_LATE = OutputTag("right-late")
LATE = OutputTag("late")


def key_of(record: tuple) -> str:
    return record[0]


# -- scripts ------------------------------------------------------------------------------------------


def make_script(
    seed: int, n: int = 160, keys: int = 3, disorder: int = 12, start: int = -40
) -> list:
    """``("L" | "R", (key, ts, id))`` records and ``("wm", ts)`` steps; ids are unique."""
    rng = random.Random(seed)
    script: list = []
    wm = MIN_TS
    base = start
    for i in range(n):
        base += rng.randint(0, 3)
        side = rng.choice("LR")
        ts = base + rng.randint(-disorder, disorder)
        if wm != MIN_TS and rng.random() < 0.08:
            ts = wm - rng.randint(-3, 25)  # around the watermark: late, or late but allowed
        script.append((side, (f"k{rng.randrange(keys)}", ts, f"{side}{i}")))
        if rng.random() < 0.12:
            wm = max(wm, base - rng.randint(0, disorder))
            script.append(("wm", wm))
    return script


def drive(h: OperatorHarness, script: list, seed: int, feed, on_watermark=None) -> None:
    """Feeds the script in batches of random size (one side per batch), then finishes."""
    rng = random.Random(seed + 1000)
    pending: list = []
    side = None

    def flush():
        if pending:
            feed(h, side, [r for r in pending], [r[1] for r in pending])
            pending.clear()

    for step in script:
        if step[0] == "wm":
            flush()
            h.watermark(step[1])
            if on_watermark is not None:
                on_watermark(step[1])
            continue
        if step[0] != side or len(pending) >= rng.randint(1, 8):
            flush()
            side = step[0]
        pending.append(step[1])
    flush()
    h.finish()


def late_records(script: list, lateness: int = 0) -> dict[str, list]:
    """Records arriving with ``ts + lateness <= watermark`` (``< watermark`` for lateness -1)."""
    wm = MIN_TS
    out: dict[str, list] = {"L": [], "R": []}
    for step in script:
        if step[0] == "wm":
            wm = max(wm, step[1])
        elif wm != MIN_TS and step[1][1] < wm:
            out[step[0]].append(step[1])
    return out


# -- interval join ---------------------------------------------------------------------------------


def interval_reference(
    script: list, lower: int, upper: int, lower_excl: bool, upper_excl: bool
) -> tuple[Counter, Counter, Counter]:
    """Every pair of on-time records of one key with ``lower <=(<) r.ts - l.ts <=(<) upper``."""
    wm = MIN_TS
    on_time: dict[str, list] = {"L": [], "R": []}
    late: dict[str, Counter] = {"L": Counter(), "R": Counter()}
    for step in script:
        if step[0] == "wm":
            wm = max(wm, step[1])
            continue
        side, rec = step
        if wm != MIN_TS and rec[1] < wm:
            late[side][(rec, rec[1])] += 1
        else:
            on_time[side].append(rec)
    out: Counter = Counter()
    for left in on_time["L"]:
        for right in on_time["R"]:
            if left[0] != right[0]:
                continue
            d = right[1] - left[1]
            above = d > lower if lower_excl else d >= lower
            below = d < upper if upper_excl else d <= upper
            if above and below:
                out[((left[2], right[2]), max(left[1], right[1]))] += 1
    return out, late["L"], late["R"]


class PairIds(ProcessJoinFunction):
    """Emits the ids of each pair, after checking what the context says about it."""

    def process_element(self, left, right, ctx):
        assert isinstance(ctx, ProcessJoinFunction.Context)
        assert ctx.get_left_timestamp() == left[1]
        assert ctx.get_right_timestamp() == right[1]
        assert ctx.get_timestamp() == max(left[1], right[1])
        assert ctx.get_current_key() == left[0] == right[0]
        yield (left[2], right[2])


def interval_op(lower, upper, lower_excl=False, upper_excl=False, late_tags=False, fn=None):
    return IntervalJoinOperator(
        "IntervalJoin",
        fn=fn if fn is not None else PairIds(),
        key_selectors=(key_of, key_of),
        lower_ms=lower,
        upper_ms=upper,
        lower_inclusive=not lower_excl,
        upper_inclusive=not upper_excl,
        left_late_tag_id=LEFT_LATE.tag_id if late_tags else None,
        right_late_tag_id=RIGHT_LATE.tag_id if late_tags else None,
    )


def feed_interval(h, side, values, stamps):
    (h.process if side == "L" else h.process2)(values, stamps)


BOUNDS = [
    # lower, upper, lower exclusive, upper exclusive
    (-5, 5, False, False),
    (0, 10, True, False),
    (-10, -2, False, True),
    (3, 3, False, False),
    (-20, 0, True, True),
    (2, 14, False, False),
    (-7, 25, True, False),
]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bounds", BOUNDS, ids=lambda b: f"{b[0]}..{b[1]}{'x' * b[2]}{'x' * b[3]}")
def test_interval_join_matches_the_reference(seed, bounds):
    lower, upper, lower_excl, upper_excl = bounds
    script = make_script(seed)
    late_tags = seed % 2 == 0
    op = interval_op(lower, upper, lower_excl, upper_excl, late_tags)
    h = OperatorHarness(op, keyed=True)
    backend = op.ctx.keyed_backend

    # buffers shrink as the watermark moves: a record stays only while a future record of the
    # other side (ts >= watermark) could still match it
    keep = {"L": max(upper - upper_excl, 0), "R": max(-(lower + lower_excl), 0)}
    arrived: list = []
    wm_now = [MIN_TS]

    def check_state(wm):
        wm_now[0] = max(wm_now[0], wm)
        live = {
            (side, rec[0])
            for side, rec, arrival_wm in arrived
            if not (arrival_wm != MIN_TS and rec[1] < arrival_wm)
            and rec[1] + keep[side] >= wm_now[0]
        }
        assert backend.num_entries() == len(live)

    def feed(h, side, values, stamps):
        arrived.extend((side, v, wm_now[0]) for v in values)
        feed_interval(h, side, values, stamps)

    drive(h, script, seed, feed, on_watermark=check_state)

    want, want_left_late, want_right_late = interval_reference(
        script, lower, upper, lower_excl, upper_excl
    )
    assert Counter(h.output) == want
    assert sum(want.values()) > 0  # the scripts are not trivial
    if late_tags:
        assert Counter(h.side_output(LEFT_LATE)) == want_left_late
        assert Counter(h.side_output(RIGHT_LATE)) == want_right_late
        assert op.metrics()["num_late_records_dropped"] == 0
    else:
        m = op.metrics()
        assert m["num_late_left_records_dropped"] == sum(want_left_late.values())
        assert m["num_late_right_records_dropped"] == sum(want_right_late.values())
        assert (
            m["num_late_records_dropped"]
            == m["num_late_left_records_dropped"] + m["num_late_right_records_dropped"]
        )
    assert sum(want_left_late.values()) + sum(want_right_late.values()) > 0
    # the final watermark releases everything
    assert backend.num_entries() == 0
    assert op.timers.num_timers() == 0


@pytest.mark.parametrize("seed", range(2))
def test_interval_join_on_the_lmdb_backend(seed, tmp_path):
    from raystream.checkpointing import LmdbStateBackend

    script = make_script(seed + 50)
    op = interval_op(-6, 9, late_tags=True)
    h = OperatorHarness(op, keyed=True, state_backend=LmdbStateBackend(str(tmp_path)))
    drive(h, script, seed, feed_interval)
    want, want_left_late, want_right_late = interval_reference(script, -6, 9, False, False)
    assert Counter(h.output) == want
    assert Counter(h.side_output(LEFT_LATE)) == want_left_late
    assert Counter(h.side_output(RIGHT_LATE)) == want_right_late
    assert op.ctx.keyed_backend.num_entries() == 0


def test_interval_join_pair_whose_later_record_arrives_at_the_watermark():
    # left at 10 with upper 5 may still meet a right at 15 while the watermark is 15
    h = OperatorHarness(interval_op(0, 5), keyed=True)
    h.process([("k", 10, "l")], [10]).watermark(15).process2([("k", 15, "r")], [15])
    assert h.output == [(("l", "r"), 15)]
    h.watermark(16).process2([("k", 15, "r2")], [15])  # late now
    assert h.output == [(("l", "r"), 15)]
    assert h.operator.metrics()["num_late_right_records_dropped"] == 1


def test_interval_join_side_outputs_and_plain_callable():
    seen = OutputTag("seen")

    def fn(left, right, ctx):
        ctx.output(seen, (left[2], right[2]))
        return [left[2] + right[2]]

    h = OperatorHarness(interval_op(-1, 1, fn=fn), keyed=True)
    h.process([("a", 5, "x"), ("b", 5, "y")], [5, 5])
    h.process2([("a", 4, "p"), ("a", 7, "q"), ("b", 6, "r")], [4, 7, 6])
    assert sorted(h.output) == [("xp", 5), ("yr", 6)]
    assert sorted(h.side_output(seen)) == [(("x", "p"), 5), (("y", "r"), 6)]


def test_interval_join_without_timestamps_names_operator_and_record():
    h = OperatorHarness(interval_op(0, 1), keyed=True)
    with pytest.raises(TaskError, match=r"IntervalJoin.*right record \('k', 1, 'no-ts'\)"):
        h.process2([("k", 1, "no-ts")])
    with pytest.raises(TaskError, match=r"left record .*'min'"):
        h.process([("k", 1, "ok"), ("k", 1, "min")], [1, MIN_TS])


def test_interval_join_wraps_user_errors_with_the_pair():
    def boom(left, right, ctx):
        raise ValueError("bad pair")

    h = OperatorHarness(interval_op(0, 1, fn=boom), keyed=True)
    h.process([("k", 1, "l")], [1])
    with pytest.raises(UserFunctionError, match=r"join pair.*'l'.*'r'.*bad pair"):
        h.process2([("k", 1, "r")], [1])


# -- window join and co-group ----------------------------------------------------------------------


def starts_of(ts: int, size: int, slide: int, offset: int = 0) -> list[int]:
    """Starts of the windows [s, s + size) with s ≡ offset (mod slide) holding ts, by scanning."""
    return [s for s in range(ts - size + 1, ts + 1) if (s - offset) % slide == 0]


def window_reference(
    script: list, size: int, slide: int, offset: int, lateness: int
) -> tuple[list, Counter]:
    """Firings ``(lefts, rights, timestamp)`` of fixed windows, and the late records."""
    wm = MIN_TS
    windows: dict[tuple, list] = {}  # (key, start) -> [(side, record)]
    firings: list = []
    late: Counter = Counter()

    def fire(w):
        items = windows[w]
        firings.append(
            ([r for s, r in items if s == "L"], [r for s, r in items if s == "R"], w[1] + size - 1)
        )

    def advance(new):
        nonlocal wm
        if new <= wm:
            return
        for w in list(windows):
            if wm < w[1] + size - 1 <= new:
                fire(w)
        for w in [w for w in windows if w[1] + size - 1 + lateness <= new]:
            del windows[w]
        wm = new

    for step in script:
        if step[0] == "wm":
            advance(step[1])
            continue
        side, rec = step
        accepted = False
        for s in starts_of(rec[1], size, slide, offset):
            last = s + size - 1
            if last + lateness <= wm:
                continue
            accepted = True
            windows.setdefault((rec[0], s), []).append((side, rec))
            if last <= wm:
                fire((rec[0], s))
        if not accepted and rec[1] + lateness <= wm:
            late[(rec, rec[1])] += 1
    advance(MAX_TS)
    return firings, late


def session_reference(script: list, gap: int, lateness: int) -> tuple[list, Counter]:
    """Firings of session windows (touching sessions merge), and the late records."""
    wm = MIN_TS
    sessions: list = []  # [key, start, end, [(side, record)]]
    firings: list = []
    late: Counter = Counter()

    def fire(s):
        items = s[3]
        firings.append(
            ([r for d, r in items if d == "L"], [r for d, r in items if d == "R"], s[2] - 1)
        )

    for step in script + [("wm", MAX_TS)]:
        if step[0] == "wm":
            new = step[1]
            if new > wm:
                for s in sessions:
                    if wm < s[2] - 1 <= new:
                        fire(s)
                sessions = [s for s in sessions if s[2] - 1 + lateness > new]
                wm = new
            continue
        side, rec = step
        key, ts = rec[0], rec[1]
        merged = [key, ts, ts + gap, [(side, rec)]]
        absorbed = False
        changed = True
        while changed:
            changed = False
            for s in sessions:
                if s[0] == key and s[1] <= merged[2] and s[2] >= merged[1]:
                    merged = [key, min(s[1], merged[1]), max(s[2], merged[2]), s[3] + merged[3]]
                    sessions.remove(s)
                    absorbed = changed = True
                    break
        if not absorbed and merged[2] - 1 + lateness <= wm:
            if ts + lateness <= wm:
                late[(rec, ts)] += 1
            continue
        sessions.append(merged)
        if merged[2] - 1 <= wm:
            fire(merged)
    return firings, late


def join_ids(left, right):
    return (left[2], right[2])


def co_group_ids(lefts, rights):
    yield (tuple(sorted(r[2] for r in lefts)), tuple(sorted(r[2] for r in rights)))


def expected_join(firings: list) -> Counter:
    return Counter(
        (join_ids(left, right), ts)
        for lefts, rights, ts in firings
        for left in lefts
        for right in rights
    )


def expected_co_group(firings: list) -> Counter:
    return Counter(
        (out, ts) for lefts, rights, ts in firings for out in co_group_ids(lefts, rights)
    )


def window_join_op(assigner, fn, lateness=0, trigger=None, evictor=None, late_tag=LATE):
    """What ``a.join(b)...window(assigner).apply(fn)`` deploys after the tagged union."""
    return WindowOperator(
        "WindowJoin",
        key_selector=tagged_key,
        assigner=assigner,
        trigger=trigger,
        evictor=evictor,
        allowed_lateness_ms=lateness,
        late_tag_id=late_tag.tag_id if late_tag is not None else None,
        kind=APPLY,
        function=CoGroupWindowFunction(fn),
    )


TAGS = {"L": TagSide(LEFT, key_of), "R": TagSide(RIGHT, key_of)}


def run_window_join(op, script, seed) -> tuple[Counter, Counter]:
    def feed(h, side, values, stamps):
        h.process([TAGS[side](v) for v in values], stamps)

    h = OperatorHarness(op, keyed=True)
    drive(h, script, seed, feed)
    late = Counter((tagged[2], ts) for tagged, ts in h.side_output(LATE))
    assert op.ctx.keyed_backend.num_entries() == 0
    return Counter(h.output), late


WINDOWS = [
    # kind, size, slide, offset, lateness
    ("tumbling", 10, 10, 0, 0),
    ("tumbling", 7, 7, 3, 9),
    ("sliding", 12, 4, 0, 0),
    ("sliding", 10, 3, 1, 6),
]


def fixed_assigner(kind, size, slide, offset):
    if kind == "tumbling":
        return TumblingEventTimeWindows.of(size, offset)
    return SlidingEventTimeWindows.of(size, slide, offset)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: "-".join(map(str, w)))
@pytest.mark.parametrize("what", ["join", "co_group"])
def test_window_join_and_co_group_match_the_reference(seed, window, what):
    kind, size, slide, offset, lateness = window
    script = make_script(seed + 100, n=120)
    firings, want_late = window_reference(script, size, slide, offset, lateness)
    fn = JoinCoGroup(join_ids) if what == "join" else co_group_ids
    op = window_join_op(fixed_assigner(kind, size, slide, offset), fn, lateness)
    got, got_late = run_window_join(op, script, seed)
    want = expected_join(firings) if what == "join" else expected_co_group(firings)
    assert got == want
    assert got_late == want_late
    assert sum(want.values()) > 0 and sum(want_late.values()) > 0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("gap,lateness", [(4, 0), (6, 0), (5, 8)])
@pytest.mark.parametrize("what", ["join", "co_group"])
def test_session_window_join_and_co_group_match_the_reference(seed, gap, lateness, what):
    script = make_script(seed + 200, n=120, disorder=10)
    firings, want_late = session_reference(script, gap, lateness)
    fn = JoinCoGroup(join_ids) if what == "join" else co_group_ids
    op = window_join_op(EventTimeSessionWindows.with_gap(gap), fn, lateness)
    got, got_late = run_window_join(op, script, seed)
    want = expected_join(firings) if what == "join" else expected_co_group(firings)
    assert got == want
    assert got_late == want_late
    # sessions really merge across the two sides
    assert any(lefts and rights and len(lefts) + len(rights) > 2 for lefts, rights, _ in firings)


def test_window_join_is_inner_and_co_group_sees_one_sided_windows():
    records = [("L", ("a", 1, "l1")), ("L", ("b", 2, "l2")), ("R", ("a", 3, "r1"))]
    records += [("R", ("a", 12, "r2")), ("wm", 30)]
    join = window_join_op(TumblingEventTimeWindows.of(10), JoinCoGroup(join_ids))
    got, _ = run_window_join(join, records, 0)
    assert got == Counter({(("l1", "r1"), 9): 1})
    co_group = window_join_op(TumblingEventTimeWindows.of(10), co_group_ids)
    got, _ = run_window_join(co_group, records, 0)
    assert got == Counter(
        {((("l1",), ("r1",)), 9): 1, ((("l2",), ()), 9): 1, (((), ("r2",)), 19): 1}
    )


def test_window_join_function_kinds():
    class Pairs(JoinFunction):
        def join(self, first, second):
            return first[2] + second[2]

    class Both(FlatJoinFunction):
        def join(self, first, second):
            yield first[2]
            yield second[2]

    class Sizes(CoGroupFunction):
        def co_group(self, first, second):
            return [len(first) * 10 + len(second)]

    records = [("L", ("a", 1, "x")), ("L", ("a", 2, "y")), ("R", ("a", 3, "p"))]
    assigner = TumblingEventTimeWindows.of(10)
    got, _ = run_window_join(window_join_op(assigner, JoinCoGroup(Pairs())), records, 0)
    assert got == Counter({("xp", 9): 1, ("yp", 9): 1})
    got, _ = run_window_join(window_join_op(assigner, JoinCoGroup(Both())), records, 0)
    assert got == Counter({("x", 9): 1, ("y", 9): 1, ("p", 9): 2})
    got, _ = run_window_join(window_join_op(assigner, Sizes()), records, 0)
    assert got == Counter({(21, 9): 1})


def test_window_join_with_a_count_trigger_and_an_evictor():
    records = [("L", ("a", i, f"l{i}")) for i in range(3)] + [("R", ("a", 5, "r"))]
    op = window_join_op(
        TumblingEventTimeWindows.of(10),
        co_group_ids,
        trigger=CountTrigger.of(2),
        evictor=CountEvictor.of(2),
    )
    got, _ = run_window_join(op, records, 0)
    # fires at the 2nd and 4th element of the window; the evictor keeps the last two
    assert got == Counter({((("l0", "l1"), ()), 9): 1, ((("l2",), ("r",)), 9): 1})


def test_window_join_open_and_close_reach_the_user_function():
    calls = []

    class Tracked(JoinFunction):
        def open(self, runtime_context):
            calls.append("open")

        def close(self):
            calls.append("close")

        def join(self, first, second):
            return 1

    op = window_join_op(TumblingEventTimeWindows.of(10), JoinCoGroup(Tracked()))
    h = OperatorHarness(op, keyed=True)
    op.close()
    assert calls == ["open", "close"]
    assert h.output == []


# -- the API, without running anything -----------------------------------------------------------------


def streams():
    env = StreamExecutionEnvironment()
    a = env.from_collection([("k", 1)])
    b = env.from_collection([("k", 2)])
    return env, a, b


def test_interval_join_api_validation():
    _, a, b = streams()
    ka, kb = a.key_by(key_of), b.key_by(key_of)
    with pytest.raises(GraphError, match="lower bound 5 ms is above upper bound 2 ms"):
        ka.interval_join(kb).between(5, 2)
    with pytest.raises(GraphError, match="two keyed streams"):
        ka.interval_join(b)
    with pytest.raises(GraphError, match="holds no timestamp"):
        ka.interval_join(kb).between(3, 3).lower_bound_exclusive().process(PairIds())
    with pytest.raises(TypeError, match="ProcessJoinFunction"):
        ka.interval_join(kb).between(0, 1).process(42)
    with pytest.raises(TypeError, match="OutputTag"):
        ka.interval_join(kb).between(0, 1).side_output_left_late_data("late")
    joined = (
        ka.interval_join(kb)
        .between(dt.timedelta(seconds=-2), dt.timedelta(milliseconds=500))
        .upper_bound_exclusive()
        .side_output_left_late_data(LEFT_LATE)
        .side_output_right_late_data(RIGHT_LATE)
    )
    out = joined.process(PairIds())
    assert out.get_name() == "IntervalJoin"
    assert ka.interval_join(kb).between(0, 0).process(PairIds()).get_name() == "IntervalJoin-2"


def test_window_join_api_validation():
    _, a, b = streams()
    with pytest.raises(GraphError, match="where"):
        a.join(b).equal_to(key_of)
    with pytest.raises(GraphError, match="set both keys"):
        a.join(b).where(key_of).window(TumblingEventTimeWindows.of(10))
    with pytest.raises(TypeError, match="WindowAssigner"):
        a.co_group(b).where(key_of).equal_to(key_of).window(10)
    with pytest.raises(GraphError, match="allowed lateness"):
        a.join(b).where(key_of).equal_to(key_of).window(
            TumblingEventTimeWindows.of(10)
        ).allowed_lateness(-1)
    with pytest.raises(GraphError, match="merging"):
        a.join(b).where(key_of).equal_to(key_of).window(
            EventTimeSessionWindows.with_gap(5)
        ).trigger(DeltaTrigger.of(1.0, lambda old, new: 0.0))
    with pytest.raises(TypeError, match="JoinFunction"):
        a.join(b).where(key_of).equal_to(key_of).window(TumblingEventTimeWindows.of(10)).apply(3)
    with pytest.raises(TypeError, match="CoGroupFunction"):
        a.co_group(b).where(key_of).equal_to(key_of).window(TumblingEventTimeWindows.of(10)).apply(
            None
        )
    joined = (
        a.join(b)
        .where(key_of)
        .equal_to(key_of)
        .window(SlidingEventTimeWindows.of(10, 5))
        .allowed_lateness(dt.timedelta(seconds=1))
        .apply(join_ids)
    )
    assert joined.get_name() == "WindowJoin"
    grouped = (
        a.co_group(b)
        .where(key_of)
        .equal_to(key_of)
        .window(EventTimeSessionWindows.with_gap(3))
        .apply(co_group_ids)
    )
    assert grouped.get_name() == "WindowCoGroup"
