"""The CEP operator in the harness (no Ray): event-time buffering and order, watermarks,
lateness, timeouts to side outputs, processing time, bad input, and snapshot -> restore ->
rescale on both state backends, each checked against the brute-force reference."""

from __future__ import annotations

import functools
import random
from collections import Counter

import pytest

from raystream import OutputTag
from raystream.cep import PatternProcessFunction, TimedOutPartialMatchHandler
from raystream.checkpointing.backends.factory import HashMapStateBackend, LmdbStateBackend
from raystream.checkpointing.snapshot import assign
from raystream.errors import TaskError, UserFunctionError
from raystream.operators.cep.compiled import CompiledPattern
from raystream.operators.cep.operator import CepOperator
from raystream.state.backend import decode_key_group
from raystream.testing import OperatorHarness
from tests.cep_reference import TypeIn, build, reference
from tests.test_cep_unit import random_spec

TIMEOUTS = OutputTag("timeouts")
LATE = OutputTag("late")


class Collect(PatternProcessFunction, TimedOutPartialMatchHandler):
    """Emits each match as ``("match", key, ((seq, stage), ...))``; timeouts to a side output.
    Events are ``(key, type, value, seq)``."""

    def process_match(self, match, ctx):
        yield ("match", _key(match), _flat(match))

    def process_timed_out_match(self, match, ctx):
        ctx.output(TIMEOUTS, ("timeout", _key(match), _flat(match)))


def _key(match):
    return next(iter(match.values()))[0][0]


def _flat(match):
    return tuple(sorted((e[3], name) for name, events in match.items() for e in events))


def key_of(e):
    return e[0]


class Cond:
    """A reference condition applied to ``(type, value)`` of a keyed event."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, e):
        return self.inner((e[1], e[2]))

    def ref(self, e, prefix):
        return self.inner.ref(e, prefix)


def keyed_spec(spec: dict) -> dict:
    """The spec with conditions taking keyed events (iterative ones are left out)."""
    stages = [dict(s, cond=Cond(s["cond"])) for s in spec["stages"]]
    for s in stages:
        if s.get("until") is not None:
            s["until"] = Cond(s["until"])
    return dict(spec, stages=stages)


def simple_spec(rng: random.Random) -> dict:
    while True:
        spec = random_spec(rng)
        if all(isinstance(s["cond"], TypeIn) for s in spec["stages"]):
            return spec


def operator_for(spec: dict, **kw) -> functools.partial:
    return functools.partial(
        CepOperator,
        "cep",
        fn=Collect(),
        key_selector=key_of,
        compiled=CompiledPattern(build(keyed_spec(spec))),
        **kw,
    )


def keyed_events(rng: random.Random, keys: int, per_key: int):
    """Events with timestamps; arrival order shuffled within a bounded disorder of 3 ms."""
    events = []
    seq = 0
    for k in range(keys):
        ts = 0
        for _ in range(per_key):
            ts += rng.choice([0, 1, 1, 2])
            events.append((f"k{k}", rng.choice("abc"), rng.randrange(4), seq, ts))
            seq += 1
    events.sort(key=lambda e: e[4] + rng.random() * 3)
    return events


def expected_outputs(spec: dict, arrivals: list, late_seqs: set) -> Counter:
    """Per key, the reference over the on-time events in (ts, arrival) order."""
    per_key: dict = {}
    for e in arrivals:
        if e[3] not in late_seqs:
            per_key.setdefault(e[0], []).append(e)
    ends_not_followed = spec["stages"][-1]["kind"] == "not_followed_by"
    out: Counter = Counter()
    for key, evs in per_key.items():
        evs = sorted(evs, key=lambda e: e[4])  # stable: arrival order among equal timestamps
        ref = reference(spec, [(e[1], e[2]) for e in evs], [e[4] for e in evs])
        for kind, ts, assignment in ref:
            flat = tuple(sorted((evs[i][3], name) for i, name in assignment))
            # a released not_followed_by match carries the NFA time that released it, which
            # depends on when watermarks come; compare those without the timestamp
            stamp = None if kind == "match" and ends_not_followed else ts
            out[(kind, key, flat, stamp)] += 1
    return out


def got_outputs(h: OperatorHarness, spec: dict) -> Counter:
    ends_not_followed = spec["stages"][-1]["kind"] == "not_followed_by"
    out: Counter = Counter()
    for (kind, key, flat), ts in h.output:
        out[(kind, key, flat, None if ends_not_followed else ts)] += 1
    for (kind, key, flat), ts in h.side_output(TIMEOUTS):
        out[(kind, key, flat, ts)] += 1
    return out


def feed(h: OperatorHarness, events: list, rng: random.Random, lag: int = 2) -> set:
    """Feeds in small batches with watermarks lagging ``lag`` behind the largest timestamp seen;
    returns the seqs that were late (ts <= watermark on arrival)."""
    late = set()
    wm = -(2**63)
    top = -(2**63)
    i = 0
    while i < len(events):
        n = rng.randint(1, 4)
        batch = events[i : i + n]
        i += n
        for e in batch:
            if e[4] <= wm:
                late.add(e[3])
        h.process(batch, [e[4] for e in batch])
        top = max([top] + [e[4] for e in batch])
        if rng.random() < 0.6 and top - lag > wm:
            wm = top - lag
            h.watermark(wm)
    return late


def backend(kind: str, tmp_path):
    return HashMapStateBackend() if kind == "memory" else LmdbStateBackend(str(tmp_path))


def cache_size(kind: str) -> dict:
    """``lmdb-evicting``: LMDB with a state cache of one key, so states go through the store."""
    return {"cached_keys": 1} if kind == "lmdb-evicting" else {}


@pytest.mark.parametrize("kind", ["memory", "lmdb", "lmdb-evicting"])
@pytest.mark.parametrize("seed", range(6))
def test_event_time_operator_matches_reference(kind, seed, tmp_path):
    rng = random.Random(500 + seed)
    for round_ in range(5):
        spec = simple_spec(rng)
        events = keyed_events(rng, keys=3, per_key=rng.randint(5, 8))
        h = OperatorHarness(
            operator_for(spec, late_tag_id=LATE.tag_id, **cache_size(kind))(),
            keyed=True,
            state_backend=backend(kind, tmp_path / f"{round_}"),
        )
        late = feed(h, events, rng)
        h.finish()
        assert sorted(v[3] for v, _ in h.side_output(LATE)) == sorted(late)
        assert got_outputs(h, spec) == expected_outputs(spec, events, late), spec
        assert h.operator.num_state_entries() == 0 or spec.get("within") is None
        h.close()


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
def test_one_within_timer_per_key_with_partial_matches(kind, tmp_path):
    """Timers and state follow the keys that have partial matches, not the events: one timer
    per such key, at its oldest partial match's deadline; nothing left once they timed out."""
    spec = {
        "stages": [
            {"name": "a", "kind": "begin", "cond": TypeIn("a")},
            {"name": "b", "kind": "followed_by", "cond": TypeIn("b")},
        ],
        "within": 50,
    }
    h = OperatorHarness(
        operator_for(spec)(), keyed=True, state_backend=backend(kind, tmp_path / "s")
    )
    op = h.operator
    seq = starts = 0
    for ts in range(0, 200, 5):
        batch = []
        for k in range(4):
            batch.append((f"k{k}", "a" if (ts + k) % 3 else "x", 0, seq, ts))
            starts += batch[-1][1] == "a"
            seq += 1
        h.process(batch, [ts] * len(batch)).watermark(ts)
        with_partials = op.num_state_entries()  # one state entry per key with partial matches
        assert 1 <= with_partials <= 4 and op.timers.num_timers() == with_partials
    h.watermark(1000)
    assert op.num_state_entries() == 0 and op.timers.num_timers() == 0
    assert len(h.side_output(TIMEOUTS)) == starts  # every 'a' timed out (no 'b' came)


def test_late_events_are_counted_when_no_side_output():
    spec = {"stages": [{"name": "a", "kind": "begin", "cond": TypeIn("a")}]}
    h = OperatorHarness(operator_for(spec)(), keyed=True)
    h.process([("k", "a", 0, 0, 10)], [10]).watermark(10)
    h.process([("k", "a", 0, 1, 10), ("k", "a", 0, 2, 9), ("k", "a", 0, 3, 11)], [10, 9, 11])
    h.finish()
    assert [v[2] for v, _ in h.output] == [((0, "a"),), ((3, "a"),)]
    assert h.operator.metrics()["num_late_records_dropped"] == 2


def test_equal_timestamps_follow_arrival_or_the_comparator():
    spec = {
        "stages": [
            {"name": "a", "kind": "begin", "cond": TypeIn("a")},
            {"name": "b", "kind": "next", "cond": TypeIn("b")},
        ]
    }
    events = [("k", "b", 0, 0, 5), ("k", "a", 0, 1, 5)]
    h = OperatorHarness(operator_for(spec)(), keyed=True)
    h.process(events, [5, 5]).finish()
    assert h.output == []  # arrival order: b then a

    def a_first(x, y):
        return (x[1] > y[1]) - (x[1] < y[1])

    h = OperatorHarness(operator_for(spec, comparator=a_first)(), keyed=True)
    h.process(events, [5, 5]).finish()
    assert h.output == [(("match", "k", ((0, "b"), (1, "a"))), 5)]


def test_processing_time_uses_the_task_clock():
    spec = {
        "stages": [
            {"name": "a", "kind": "begin", "cond": TypeIn("a")},
            {"name": "b", "kind": "followed_by", "cond": TypeIn("b")},
        ],
        "within": 100,
    }
    h = OperatorHarness(operator_for(spec, processing_time=True)(), keyed=True, start_ms=1000)
    h.process([("k", "a", 0, 0, 0)])
    h.advance_processing_time(1050)
    h.process([("k", "b", 0, 1, 0), ("k", "a", 0, 2, 0)])
    h.advance_processing_time(1149)
    assert h.side_output(TIMEOUTS) == []
    h.advance_processing_time(1150)
    assert h.output == [(("match", "k", ((0, "a"), (1, "b"))), None)]
    assert h.side_output(TIMEOUTS) == [(("timeout", "k", ((2, "a"),)), None)]


def is_a(e):
    return e[1] == "a"


def test_condition_error_names_pattern_stage_and_record():
    def boom(e):
        if e[2] == 3:
            raise ValueError("bad value")
        return e[1] == "b"

    spec = {
        "stages": [
            {"name": "first", "kind": "begin", "cond": is_a},
            {"name": "second", "kind": "followed_by", "cond": boom},
        ]
    }
    op = functools.partial(
        CepOperator,
        "cep",
        fn=Collect(),
        key_selector=key_of,
        compiled=CompiledPattern(build(spec)),
    )
    h = OperatorHarness(op(), keyed=True)
    h.process([("k", "a", 0, 0, 1), ("k", "x", 3, 1, 2)], [1, 2])
    with pytest.raises(UserFunctionError) as info:
        h.watermark(5)
    msg = str(info.value)
    assert "stage 'second'" in msg and "begin('first')" in msg and "('k', 'x', 3, 1, 2)" in msg
    assert "ValueError" in msg and "bad value" in msg


def test_records_without_timestamps_fail_clearly():
    spec = {"stages": [{"name": "a", "kind": "begin", "cond": TypeIn("a")}]}
    h = OperatorHarness(operator_for(spec)(), keyed=True)
    with pytest.raises(TaskError, match="has no event timestamp"):
        h.process([("k", "a", 0, 0, 0)])


@pytest.mark.parametrize("kind", ["memory", "lmdb", "lmdb-evicting"])
def test_snapshot_restore_and_rescale_give_the_uninterrupted_result(kind, tmp_path):
    """Snapshot after the first half, restore into 3 subtasks, snapshot those at once and
    restore again (state that went through two checkpoints), then the rest: the results add up
    to those of the uninterrupted run."""
    rng = random.Random(77)
    for round_ in range(4):
        spec = simple_spec(rng)
        spec["within"] = spec.get("within") or 6
        events = keyed_events(rng, keys=6, per_key=8)
        cut = len(events) // 2
        factory = operator_for(spec, late_tag_id=LATE.tag_id, **cache_size(kind))
        # uninterrupted
        whole = OperatorHarness(
            factory(), keyed=True, state_backend=backend(kind, tmp_path / f"w{round_}")
        )
        feed_rng = random.Random(round_)
        feed(whole, events[:cut], feed_rng)
        whole.watermark(events[cut - 1][4] - 3)
        # the rest in one go, so each run sees the same watermarks (and the same late events)
        rest = events[cut:]
        whole.process(rest, [e[4] for e in rest])
        whole.finish()
        # snapshot after the first half, restore into 3 subtasks
        first = OperatorHarness(
            factory(), keyed=True, state_backend=backend(kind, tmp_path / f"a{round_}")
        )
        feed_rng = random.Random(round_)
        feed(first, events[:cut], feed_rng)
        first.watermark(events[cut - 1][4] - 3)
        snap = first.snapshot(1)
        resume_wm = first.operator.current_watermark
        # partial matches with their timers, and queued events above the watermark
        assert snap.timers and {"__cep_nfa__", "__cep_queue__"} <= state_names(snap)
        first.close()
        parts = assign({0: snap}, 3, 128, "cep")
        subtasks = []
        for i in range(3):
            restored = OperatorHarness(
                factory(),
                keyed=True,
                state_backend=backend(kind, tmp_path / f"r{round_}{i}"),
                subtask=i,
                parallelism=3,
                restored=parts[i],
            )
            again = restored.snapshot(2)
            restored.close()
            subtasks.append(
                OperatorHarness(
                    factory(),
                    keyed=True,
                    state_backend=backend(kind, tmp_path / f"s{round_}{i}"),
                    subtask=i,
                    parallelism=3,
                    restored=again,
                )
            )
        from raystream.core.keys import KeyGroupAssigner, key_group_range

        kg = KeyGroupAssigner(128)
        ranges = [key_group_range(i, 3, 128) for i in range(3)]
        for i, h in enumerate(subtasks):
            mine = [e for e in rest if kg(e[0]) in ranges[i]]
            # watermarks are not part of a checkpoint: the sources' replay brings them back
            h.watermark(resume_wm)
            h.process(mine, [e[4] for e in mine])
            h.finish()

        def results(hs):
            c: Counter = Counter()
            for h in hs:
                c.update(got_outputs(h, {"stages": [{"kind": "x"}]}))
            return c

        before = results([first])
        after = results(subtasks)
        assert before + after == results([whole]), spec
        assert sum(1 for h in subtasks if h.output or h.side_output(TIMEOUTS)) >= 2


def state_names(snap) -> set:
    return {name for blob in snap.keyed.values() for name in decode_key_group(blob)[1]}
