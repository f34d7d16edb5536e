"""CEP without Ray: the NFA against SEMANTICS §8 and against a brute-force reference
(tests/cep_reference.py), pattern validation, and the operator in the harness (event time,
lateness, timeouts, snapshot/restore and rescale on both backends)."""

from __future__ import annotations

import pickle
import random
from collections import Counter

import pytest

from raystream.cep import (
    AfterMatchSkipStrategy,
    IterativeCondition,
    MalformedPatternError,
    Pattern,
    SimpleCondition,
    WithinType,
)
from raystream.checkpointing.backends.memory import MemoryTable
from raystream.operators.cep.buffer import EID, PREV, STAGE, chain, flatten
from raystream.operators.cep.compiled import CompiledPattern
from raystream.operators.cep.nfa import NFA, KeyState
from raystream.operators.cep.states import NfaStates
from tests.cep_reference import MAX_TS, NotBelowLast, TypeIn, build, reference


def drive(
    pattern: Pattern,
    events: list,
    stamps: list[int] | None = None,
    round_trip_at: int = -1,
    screened: bool = False,
):
    """Feeds one key's events as the operator does (time advances before each event, to MAX at
    the end); returns outputs like the reference, and the key's state. ``round_trip_at``: the
    state is pickled and read back before that event. ``screened``: as the operator does for a
    droppable pattern, only the events ``NFA.screen`` keeps go in, with their results."""
    stamps = stamps if stamps is not None else list(range(len(events)))
    nfa = NFA(CompiledPattern(pattern))
    ks = KeyState()
    names = nfa.p.names
    out = []
    fed = []  # event id -> index in ``events``
    caches = []
    for i, (e, t) in enumerate(zip(events, stamps)):
        kept, _ts, results = nfa.screen([e], [t]) if screened else ([e], [t], [None])
        if kept:
            fed.append(i)
            caches.append(results[0])

    def fmt(m):
        return tuple((fed[node[EID]], names[node[STAGE]]) for node in m.events)

    def advance(t):
        released, timed_out = nfa.advance(ks, t)
        out.extend(("timeout", ts, fmt(m)) for m, ts in timed_out)
        out.extend(("match", t, fmt(m)) for m in released)

    for n, (i, cache) in enumerate(zip(fed, caches)):
        if n == round_trip_at:
            ks = pickle.loads(pickle.dumps(ks))
        advance(stamps[i])
        matches = nfa.process(ks, events[i], stamps[i], cache)
        out.extend(("match", stamps[i], fmt(m)) for m in matches)
    advance(MAX_TS)
    return out, ks


def names_of(events: list, outputs: list, kind: str = "match") -> list[str]:
    return [" ".join(events[i] for i, _ in o[2]) for o in outputs if o[0] == kind]


def st(prefix: str):
    return lambda e: e.startswith(prefix)


def ev(text: str) -> list[str]:
    return text.split()


# -- SEMANTICS §8.1 / §8.2 examples ----------------------------------------------------------------


def test_contiguity_examples():
    events = ev("a c b1 b2")
    for method, expected in [
        ("next", []),
        ("followed_by", ["a b1"]),
        ("followed_by_any", ["a b1", "a b2"]),
    ]:
        p = getattr(Pattern.begin("a").where(st("a")), method)("b").where(st("b"))
        assert sorted(names_of(events, drive(p, events)[0])) == expected, method


def loop_pattern():
    return Pattern.begin("c").where(st("C")).followed_by("a").where(st("A")).one_or_more()


def test_loop_inner_contiguity_examples():
    events = ev("C D A1 A2 A3 D A4 B")
    strict = loop_pattern().consecutive().followed_by("b").where(st("B"))
    assert sorted(names_of(events, drive(strict, events)[0])) == [
        "C A1 A2 A3 B",
        "C A1 A2 B",
        "C A1 B",
    ]
    relaxed = loop_pattern().followed_by("b").where(st("B"))
    assert sorted(names_of(events, drive(relaxed, events)[0])) == [
        "C A1 A2 A3 A4 B",
        "C A1 A2 A3 B",
        "C A1 A2 B",
        "C A1 B",
    ]
    # skip till any inside the loop; the loop's first event follows C with followed_by (skip
    # till next), so every combination starts with A1 (as Flink's documentation lists them)
    combos = loop_pattern().allow_combinations().followed_by("b").where(st("B"))
    got = names_of(events, drive(combos, events)[0])
    assert len(got) == 8 and all(g.startswith("C A1") and g.endswith("B") for g in got)
    assert len(set(got)) == 8


def test_until_example():
    p = Pattern.begin("a").where(st("a")).one_or_more().until(st("b"))
    events = ev("a1 c a2 b a3")
    assert sorted(names_of(events, drive(p, events)[0])) == ["a1", "a1 a2", "a2", "a3"]


@pytest.mark.parametrize(
    "strategy, expected",
    [
        (AfterMatchSkipStrategy.no_skip(), ["b1 b2 b3 c", "b2 b3 c", "b3 c"]),
        (AfterMatchSkipStrategy.skip_to_next(), ["b1 b2 b3 c", "b2 b3 c", "b3 c"]),
        (AfterMatchSkipStrategy.skip_past_last_event(), ["b1 b2 b3 c"]),
        (AfterMatchSkipStrategy.skip_to_first("b"), ["b1 b2 b3 c", "b2 b3 c", "b3 c"]),
        (AfterMatchSkipStrategy.skip_to_last("b"), ["b1 b2 b3 c", "b3 c"]),
    ],
    ids=lambda s: getattr(getattr(s, "kind", None), "value", ""),
)
def test_skip_strategy_table(strategy, expected):
    p = Pattern.begin("b", strategy).where(st("b")).one_or_more().next("c").where(st("c"))
    events = ev("b1 b2 b3 c")
    assert names_of(events, drive(p, events)[0]) == expected


def test_no_skip_versus_skip_to_next():
    events = ev("a b1 b2 b3")

    def p(s):
        return Pattern.begin("a", s).where(st("a")).followed_by("b").where(st("b")).one_or_more()

    assert names_of(events, drive(p(AfterMatchSkipStrategy.no_skip()), events)[0]) == [
        "a b1",
        "a b1 b2",
        "a b1 b2 b3",
    ]
    assert names_of(events, drive(p(AfterMatchSkipStrategy.skip_to_next()), events)[0]) == ["a b1"]


# -- SEMANTICS §8.6 (verified against Flink 2.3.0) ---------------------------------------------------


def test_within_is_strict_and_timeouts_carry_first_plus_w():
    p = Pattern.begin("a").where(st("a")).followed_by("b").where(st("b")).within(10)
    events = ev("a1 b1 a2 b2 a3")
    out = drive(p, events, [0, 9, 20, 30, 40])[0]
    # b2 is exactly W after a2: it cannot complete it
    assert out == [
        ("match", 9, ((0, "a"), (1, "b"))),
        ("timeout", 30, ((2, "a"),)),
        ("timeout", 50, ((4, "a"),)),  # at the end of input every pending one times out
    ]


def test_without_within_pending_partials_are_dropped_at_the_end():
    p = Pattern.begin("a").where(st("a")).followed_by("b").where(st("b"))
    assert drive(p, ev("a1 x"))[0] == []


def test_not_followed_by_last_emits_when_within_expires():
    p = Pattern.begin("a").where(st("a")).not_followed_by("n").where(st("n")).within(5)
    events = ev("a1 x a2 n a3")
    out = drive(p, events, [0, 1, 3, 6, 7])[0]
    # a1 is released by the time advance to 6 (before n is processed), a2 dies by n,
    # a3 is released at the end of input with timestamp MAX
    assert out == [("match", 6, ((0, "a"),)), ("match", MAX_TS, ((4, "a"),))]


def test_not_next_last_emits_on_the_next_other_event_or_times_out():
    p = Pattern.begin("a").where(st("a")).not_next("n").where(st("n")).within(10)
    events = ev("a1 n a2 x a3")
    out = drive(p, events, [0, 1, 2, 3, 30])[0]
    assert out == [
        ("match", 3, ((2, "a"),)),
        ("timeout", 40, ((4, "a"),)),  # nothing arrived after a3 within W
    ]


def test_strict_next_discards_silently_and_followed_by_any_times_out_each():
    strict = Pattern.begin("a").where(st("a")).next("b").where(st("b")).within(100)
    assert drive(strict, ev("a1 x b1"))[0] == []
    anyp = Pattern.begin("a").where(st("a")).followed_by_any("b").where(st("b")).within(100)
    out = drive(anyp, ev("a1 b1 b2"))[0]
    assert Counter(o[0] for o in out) == {"match": 2, "timeout": 1}


def test_greedy_keeps_only_runs_that_end_at_the_last_loop_event():
    p = Pattern.begin("a").where(st("a")).times(2, 4).greedy().followed_by("b").where(st("b"))
    events = ev("a1 a2 a3 a4 a5 b")
    assert sorted(names_of(events, drive(p, events)[0])) == [
        "a2 a3 a4 a5 b",
        "a3 a4 a5 b",
        "a4 a5 b",
    ]


def test_relaxed_loops_grow_matches_quadratically():
    p = Pattern.begin("a").where(st("a")).one_or_more().followed_by("b").where(st("b"))
    for run in (3, 5, 7):
        events = [f"a{i}" for i in range(run)] + ["b"]
        assert len(names_of(events, drive(p, events)[0])) == run * (run + 1) // 2


def test_skip_strategies_drop_pruned_partials_without_timeouts():
    def p(s):
        return (
            Pattern.begin("a", s)
            .where(st("a"))
            .one_or_more()
            .followed_by("b")
            .where(st("b"))
            .within(100)
        )

    events = ev("a1 a2 b")
    no_skip = drive(p(AfterMatchSkipStrategy.no_skip()), events)[0]
    past = drive(p(AfterMatchSkipStrategy.skip_past_last_event()), events)[0]
    assert Counter(o[0] for o in no_skip)["timeout"] == 2  # {a1 a2}, {a2} loop on until W
    assert [o for o in past if o[0] == "timeout"] == []


def test_iterative_condition_reads_the_partial_match():
    class Rising(IterativeCondition):
        def filter(self, value, ctx):
            prior = ctx.get_events_for_pattern("x")
            return not prior or value > prior[-1]

    p = Pattern.begin("x").where(Rising()).times(3).consecutive()
    out = drive(p, [1, 2, 3, 2, 5, 6])[0]
    assert [tuple(i for i, _ in o[2]) for o in out] == [(0, 1, 2), (3, 4, 5)]


def test_simple_condition_class_and_or_and_subtype():
    class Big(SimpleCondition):
        def filter(self, value):
            return value >= 10

    p = Pattern.begin("x").subtype(int).where(Big()).or_(lambda v: v == 0)
    out = drive(p, [1, 10, 0, 5.0, 20.0, 11])[0]
    assert [o[2][0][0] for o in out] == [1, 2, 5]  # floats fail the subtype


def test_buffer_holds_only_what_live_partials_use():
    p = Pattern.begin("a").where(st("a")).followed_by("b").where(st("b")).within(5)
    events = [f"{'a' if i % 3 == 0 else 'b' if i % 3 == 1 else 'x'}{i}" for i in range(300)]
    nfa = NFA(CompiledPattern(p))
    ks = KeyState()
    for i, e in enumerate(events):
        nfa.advance(ks, i)
        nfa.process(ks, e, i)
        nodes, held, _heads = flatten([pm.node for pm in ks.partials])
        assert set(held) == {n[EID] for pm in ks.partials for n in chain(pm.node)}
        assert all(i - ts < 5 for _stage, _eid, ts, _prev in nodes)  # bounded by within
    nfa.advance(ks, MAX_TS)
    assert ks.partials == [] and ks.earliest is None
    assert flatten([]) == ([], {}, [])


def test_shared_buffer_stores_a_shared_prefix_once():
    p = (
        Pattern.begin("a")
        .where(st("a"))
        .followed_by_any("b")
        .where(st("b"))
        .followed_by_any("c")
        .where(st("c"))
    )
    nfa = NFA(CompiledPattern(p))
    ks = KeyState()
    for i, e in enumerate(ev("a b1 b2 b3")):
        nfa.process(ks, e, i)
    # one 'a' event shared by the three partial matches a-b1, a-b2, a-b3
    assert len(ks.partials) == 4
    nodes, held, _heads = flatten([pm.node for pm in ks.partials])
    assert len(nodes) == 4 and sorted(held.values()) == ["a", "b1", "b2", "b3"]
    # the serialized state keeps the sharing: one 'a' node behind three partial matches
    restored = pickle.loads(pickle.dumps(ks))
    assert len({id(pm.node[PREV]) for pm in restored.partials if pm.stage == 1}) == 1


@pytest.mark.parametrize("seed", range(8))
def test_key_state_round_trip_continues_like_the_original(seed):
    """A key's state pickled (a snapshot, or a write to a non-memory backend) and read back
    between any two events gives the same outputs as the uninterrupted run."""
    rng = random.Random(300 + seed)
    for _ in range(15):
        spec = random_spec(rng)
        events, stamps = random_events(rng, rng.randint(4, 9))
        whole = drive(build(spec), events, stamps)[0]
        cut = drive(build(spec), events, stamps, round_trip_at=rng.randint(1, len(events) - 1))
        assert Counter(cut[0]) == Counter(whole), describe(spec)


def test_a_long_match_serializes_without_deep_recursion():
    p = Pattern.begin("s").where(st("s")).followed_by("a").where(st("a")).times(5000)
    nfa = NFA(CompiledPattern(p))
    ks = KeyState()
    events = ["s"] + [f"a{i}" for i in range(5000)]
    for i, e in enumerate(events[:4001]):
        nfa.process(ks, e, i)
    (pm,) = ks.partials  # one partial match, a chain of 4001 nodes (nested 4001 deep)
    data = pickle.dumps(ks)
    assert len(data) < 4001 * 100  # each event and node stored once
    restored = pickle.loads(data)
    matches = []
    for i, e in enumerate(events[4001:], 4001):
        matches += nfa.process(restored, e, i)
    (m,) = matches
    assert [n[2] for n in m.events] == events


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build_it, fragment",
    [
        (lambda: Pattern.begin("a").followed_by("a"), "'a': the name is already used"),
        (lambda: Pattern.begin("a:b"), "may not contain ':'"),
        (lambda: Pattern.begin("a").optional().not_next("n"), "cannot follow the optional"),
        (lambda: Pattern.begin("a").not_next("n").times(2), "not applicable to a NOT stage"),
        (lambda: Pattern.begin("a").greedy(), "'a': greedy() applies to looping stages"),
        (lambda: Pattern.begin("a").until(lambda e: True), "'a': until() applies to looping"),
        (lambda: Pattern.begin("a").times(2).one_or_more(), "quantifier is already applied"),
        (lambda: Pattern.begin("a").consecutive(), "'a': consecutive() applies to looping"),
        (lambda: Pattern.begin("a").times(3, 2), "times(3, 2)"),
        (lambda: Pattern.begin("a").within(0), "within() needs a duration > 0"),
        (lambda: Pattern.begin(Pattern.begin("x")), "group patterns"),
        (lambda: Pattern.begin("a").where(3), "'a': where() expects a callable"),
        (
            lambda: Pattern.begin("a").within(5, WithinType.PREVIOUS_AND_CURRENT),
            "PREVIOUS_AND_CURRENT",
        ),
    ],
)
def test_malformed_patterns_fail_when_built(build_it, fragment):
    with pytest.raises(MalformedPatternError, match=None) as info:
        build_it()
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "pattern, fragment",
    [
        (Pattern.begin("a").not_followed_by("n"), "'n': a pattern may end with not_followed_by"),
        (Pattern.begin("a").one_or_more().greedy(), "'a': greedy() on the last stage"),
        (
            Pattern.begin("a", AfterMatchSkipStrategy.skip_to_last("zz")).next("b"),
            "skip_to_last('zz')",
        ),
        (Pattern.begin("a").optional(), "every stage is optional"),
    ],
)
def test_malformed_whole_patterns_fail_at_compile(pattern, fragment):
    with pytest.raises(MalformedPatternError) as info:
        CompiledPattern(pattern)
    assert fragment in str(info.value)


# -- randomized differential test against the brute-force reference --------------------------------

TYPES = "abc"


def random_cond(rng: random.Random, earlier: list[str]):
    types = "".join(sorted(rng.sample(TYPES, rng.choice([1, 1, 2]))))
    if earlier and rng.random() < 0.2:
        return NotBelowLast(types, rng.choice(earlier))
    return TypeIn(types)


def random_spec(rng: random.Random) -> dict:
    """A random well-formed pattern spec (the rules of ``pattern.validate`` respected)."""
    n_pos = rng.choice([1, 2, 2, 3, 3])
    stages: list[dict] = []
    positives: list[str] = []
    within = rng.choice([None, None, 3, 5, 8])
    for k in range(n_pos):
        name = f"s{k}"
        if k == 0:
            kind = "begin"
        else:
            prev = stages[-1]
            negative_ok = not prev.get("optional") and prev["kind"] not in (
                "not_next",
                "not_followed_by",
            )
            if negative_ok and rng.random() < 0.25:
                stages.append(
                    {
                        "name": f"n{k}",
                        "kind": rng.choice(["not_next", "not_followed_by"]),
                        "cond": TypeIn(rng.choice(TYPES)),
                    }
                )
            kind = rng.choice(["next", "followed_by", "followed_by_any"])
        st_: dict = {"name": name, "kind": kind, "cond": random_cond(rng, positives)}
        r = rng.random()
        if r < 0.2:
            st_["quant"] = ("one_or_more",)
        elif r < 0.3:
            st_["quant"] = ("times", rng.choice([2, 3]))
        elif r < 0.4:
            st_["quant"] = ("times", 1, rng.choice([2, 3]))
        elif r < 0.45:
            st_["quant"] = ("times_or_more", 2)
        looping = "quant" in st_
        after_negative = stages and stages[-1]["kind"] in ("not_next", "not_followed_by")
        if rng.random() < 0.2 and not after_negative:
            st_["optional"] = True
        if looping and rng.random() < 0.4:
            st_["inner"] = rng.choice(["consecutive", "combinations"])
        if looping and st_["quant"][0] in ("one_or_more", "times_or_more") and rng.random() < 0.3:
            st_["until"] = TypeIn(rng.choice(TYPES))
        if looping and k < n_pos - 1 and rng.random() < 0.3:
            st_["greedy"] = True
        stages.append(st_)
        positives.append(name)
    if all(s.get("optional") for s in stages):
        stages[0].pop("optional")
    if rng.random() < 0.25:
        kind = rng.choice(["not_next", "not_followed_by"]) if within else "not_next"
        if not stages[-1].get("optional"):
            stages.append({"name": "nz", "kind": kind, "cond": TypeIn(rng.choice(TYPES))})
    skip = rng.choice(
        [
            ("no_skip",),
            ("no_skip",),
            ("skip_to_next",),
            ("skip_past_last_event",),
            ("skip_to_first", rng.choice(positives)),
            ("skip_to_last", rng.choice(positives)),
        ]
    )
    return {"stages": stages, "within": within, "skip": skip}


def random_events(rng: random.Random, n: int) -> tuple[list, list[int]]:
    ts = 0
    events, stamps = [], []
    for _ in range(n):
        ts += rng.choice([0, 1, 1, 2])
        events.append((rng.choice(TYPES), rng.randrange(4)))
        stamps.append(ts)
    return events, stamps


def describe(spec: dict) -> str:
    parts = []
    for s in spec["stages"]:
        c = s["cond"]
        cond = c.types + (f"<={c.stage}" if isinstance(c, NotBelowLast) else "")
        extra = {k: v for k, v in s.items() if k not in ("name", "kind", "cond")}
        if "until" in extra:
            extra["until"] = extra["until"].types
        parts.append(f"{s['kind']}({s['name']}:{cond}){extra or ''}")
    return " ".join(parts) + f" within={spec['within']} skip={spec['skip']}"


@pytest.mark.parametrize("seed", range(40))
def test_nfa_matches_brute_force_reference(seed):
    rng = random.Random(1000 + seed)
    for _ in range(25):
        spec = random_spec(rng)
        events, stamps = random_events(rng, rng.randint(4, 9))
        expected = reference(spec, events, stamps)
        got = drive(build(spec), events, stamps)[0]
        if CompiledPattern(build(spec)).droppable:
            # the operator screens the events of such patterns on arrival: same outputs
            assert Counter(drive(build(spec), events, stamps, screened=True)[0]) == Counter(got)
        assert Counter(got) == Counter(expected), (
            f"{describe(spec)}\nevents {list(zip(events, stamps))}\n"
            f"missing {list((Counter(expected) - Counter(got)).elements())}\n"
            f"unexpected {list((Counter(got) - Counter(expected)).elements())}"
        )


def test_public_cep_api_is_deliberate():
    import raystream.cep

    assert sorted(raystream.cep.__all__) == sorted(
        [
            "CEP",
            "PatternStream",
            "Pattern",
            "PatternProcessFunction",
            "TimedOutPartialMatchHandler",
            "SimpleCondition",
            "IterativeCondition",
            "AfterMatchSkipStrategy",
            "WithinType",
            "MalformedPatternError",
            "SkipToMissingStageError",
        ]
    )
    assert all(hasattr(raystream.cep, n) for n in raystream.cep.__all__)


def test_skip_to_missing_stage_raises_when_configured():
    from raystream.cep import SkipToMissingStageError

    strategy = AfterMatchSkipStrategy.skip_to_first("b").throw_exception_on_miss()
    p = Pattern.begin("a", strategy).where(st("a")).followed_by("b").where(st("b")).optional()
    p = p.followed_by("c").where(st("c"))
    assert names_of(ev("a b c"), drive(p, ev("a b c"))[0]) == ["a b c"]
    with pytest.raises(SkipToMissingStageError, match="skip_to_first"):
        drive(p, ev("a x c"))
    lenient = Pattern.begin("a", AfterMatchSkipStrategy.skip_to_first("b")).where(st("a"))
    lenient = lenient.followed_by("b").where(st("b")).optional().followed_by("c").where(st("c"))
    assert names_of(ev("a x c"), drive(lenient, ev("a x c"))[0]) == ["a c"]


# -- the per-key state cache in front of a serializing backend -----------------------------------


class PicklingTable:
    """A raw table that stores pickles, as a non-memory backend does; counts writes."""

    def __init__(self) -> None:
        self.data: dict = {}
        self.writes = 0

    def get(self, key, default=None):
        raw = self.data.get(key)
        return default if raw is None else pickle.loads(raw)

    def put(self, key, value) -> None:
        self.writes += 1
        self.data[key] = pickle.dumps(value)

    def remove(self, key) -> None:
        self.writes += 1
        self.data.pop(key, None)


def _state(next_eid: int) -> KeyState:
    ks = KeyState()
    ks.next_eid = next_eid
    return ks


def test_state_cache_writes_back_on_eviction_and_flush():
    table = PicklingTable()
    states = NfaStates(table, holds_objects=False, capacity=2)
    states.put("a", _state(1))
    states.put("b", _state(2))
    assert table.writes == 0  # changed states stay in the cache
    assert states.get("a").next_eid == 1  # "a" is now the most recently used
    states.put("c", _state(3))  # evicts "b", the least recently used: written back
    assert table.writes == 1 and table.get("b").next_eid == 2 and "a" not in table.data
    assert states.get("b").next_eid == 2  # read back from the table (evicts "a")
    assert table.get("a").next_eid == 1
    states.remove("c")
    assert states.get("c") is None  # known absent without asking the table
    states.flush()
    assert sorted(table.data) == ["a", "b"]  # "c" never reached the table, "b" was clean
    writes = table.writes
    states.flush()
    assert table.writes == writes  # nothing changed since


def test_state_cache_reads_the_table_once_per_key_while_cached():
    table = PicklingTable()
    table.put("k", _state(7))
    states = NfaStates(table, holds_objects=False, capacity=4)
    first = states.get("k")
    first.next_eid = 8  # changed in place, as the operator does, then handed back
    states.put("k", first)
    assert states.get("k") is first and table.get("k").next_eid == 7
    states.flush()
    assert table.get("k").next_eid == 8


def test_state_cache_is_the_table_itself_for_a_backend_holding_objects():
    table = MemoryTable()
    states = NfaStates(table, holds_objects=True)
    ks = _state(1)
    states.put("k", ks)
    assert table["k"] is ks and states.get("k") is ks
    states.remove("k")
    assert dict(table) == {}


def test_state_cache_needs_room_for_one_key():
    with pytest.raises(ValueError, match="capacity >= 1"):
        NfaStates(MemoryTable(), holds_objects=False, capacity=0)


@pytest.mark.parametrize("screened", [False, True], ids=["fed", "screened"])
def test_a_condition_is_called_only_where_a_partial_match_needs_it(screened):
    """As in Flink, a stage's condition fails the job only on events some partial match offers
    it: here no partial match waits for "c" when "x" comes (the one that did timed out). The
    pre-checks that call it anyway (the per-key one, the operator's screen on arrival) leave a
    raising condition to the NFA."""

    def c_cond(e):
        if e == "x":
            raise ValueError("'c' is never offered 'x'")
        return e.startswith("c")

    p = (
        Pattern.begin("a")
        .where(st("a"))
        .followed_by("b")
        .where(st("b"))
        .followed_by("c")
        .where(c_cond)
        .within(5)
    )
    out = drive(p, ev("a1 b a2 y x"), [0, 1, 3, 4, 6], screened=screened)[0]
    assert out == [("timeout", 5, ((0, "a"), (1, "b"))), ("timeout", 8, ((2, "a"),))]
    if screened:  # "y" matches no condition: dropped; "x" is kept, its "c" result left open
        kept, _ts, results = NFA(CompiledPattern(p)).screen(ev("y x"), [4, 6])
        assert kept == ["x"] and results[0].count(None) == 1


@pytest.mark.parametrize("hi", [2, 3, 100_000])
def test_a_large_bound_compiles_to_a_few_rows(hi):
    spec = {
        "stages": [
            {
                "name": "a",
                "kind": "begin",
                "cond": TypeIn("a"),
                "quant": ("times", 1, hi),
                "inner": "consecutive",
            },
            {"name": "b", "kind": "next", "cond": TypeIn("b")},
        ]
    }
    compiled = CompiledPattern(build(spec))
    assert len(compiled.target_table[0]) == 2  # counts 0 and 1; above: one row, and the cap
    events, stamps = [("a", 0)] * 5 + [("b", 0)], list(range(6))
    got = drive(build(spec), events, stamps)[0]
    assert Counter(got) == Counter(reference(spec, events, stamps))
    assert len(got) == min(hi, 5)  # the runs of up to ``hi`` a's right before b


def test_screen_with_one_condition_keeps_what_it_cannot_decide():
    def cond(e):
        if e == "boom":
            raise ValueError("boom")
        return e.startswith("a")

    nfa = NFA(CompiledPattern(Pattern.begin("a").where(cond).times(2).within(10)))
    assert nfa.screen(ev("a1 x a2"), [1, 2, 3]) == (["a1", "a2"], [1, 3], [[True], [True]])
    assert nfa.screen(ev("a1 boom x"), [1, 2, 3]) == (["a1", "boom"], [1, 2], [[True], [None]])
