"""CEP through the public API on a real local Ray (SEMANTICS §8): random patterns against the
brute-force reference at parallelism 1 and 3 on both state backends, a non-keyed stream, a
failing condition, and a task actor killed mid-match that still gives exactly the matches of a
failure-free run."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from raystream import OutputTag, RestartStrategies, StreamExecutionEnvironment, WatermarkStrategy
from raystream.cep import CEP, Pattern, PatternProcessFunction, TimedOutPartialMatchHandler
from raystream.checkpointing import HashMapStateBackend, LmdbStateBackend
from raystream.errors import JobExecutionError
from raystream.operators import CollectionSource
from tests.cep_reference import build, reference
from tests.chaos_jobs import Collector, PacedEvents, kill_task, wait_until
from tests.test_cep_operator import keyed_spec, simple_spec

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.timeout(120)]

TIMEOUTS = OutputTag("cep-timeouts")


class Report(PatternProcessFunction, TimedOutPartialMatchHandler):
    """``(pattern id, kind, key, ((seq, stage), ...), timestamp)``; events are
    ``(key, type, value, seq, ts)``."""

    def __init__(self, pid: int):
        self.pid = pid

    def process_match(self, match, ctx):
        yield (self.pid, "match", *_describe(match), ctx.timestamp())

    def process_timed_out_match(self, match, ctx):
        ctx.output(TIMEOUTS, (self.pid, "timeout", *_describe(match), ctx.timestamp()))


def _describe(match):
    key = next(iter(match.values()))[0][0]
    return key, tuple(sorted((e[3], name) for name, events in match.items() for e in events))


def event_ts(e):
    return e[4]


def event_key(e):
    return e[0]


def ordered_events(rng: random.Random, keys: int, per_key: int) -> list:
    """Timestamps never decrease in arrival order, so no event is late whatever the timing of
    periodic watermarks (lateness is tested with scripted watermarks in test_cep_operator)."""
    events = []
    ts = 0
    seq = 0
    for _ in range(keys * per_key):
        ts += rng.choice([0, 1, 1, 2])
        events.append((f"k{rng.randrange(keys)}", rng.choice("abc"), rng.randrange(4), seq, ts))
        seq += 1
    return events


def expected(specs: list[dict], events: list) -> Counter:
    out: Counter = Counter()
    for pid, spec in enumerate(specs):
        ends_nf = spec["stages"][-1]["kind"] == "not_followed_by"
        per_key: dict = {}
        for e in events:
            per_key.setdefault(e[0], []).append(e)
        for key, evs in per_key.items():
            for kind, ts, a in reference(spec, [(e[1], e[2]) for e in evs], [e[4] for e in evs]):
                flat = tuple(sorted((evs[i][3], name) for i, name in a))
                # a released not_followed_by match carries the watermark that released it
                out[(pid, kind, key, flat, None if kind == "match" and ends_nf else ts)] += 1
    return out


def normalize(specs: list[dict], rows: list) -> Counter:
    out: Counter = Counter()
    for pid, kind, key, flat, ts in rows:
        ends_nf = specs[pid]["stages"][-1]["kind"] == "not_followed_by"
        out[(pid, kind, key, flat, None if kind == "match" and ends_nf else ts)] += 1
    return out


@pytest.mark.parametrize(
    "parallelism, backend, patterns",
    [(1, HashMapStateBackend(), 2), (3, LmdbStateBackend(), 1)],
    ids=["p1-memory", "p3-lmdb"],
)
def test_random_patterns_match_the_reference(parallelism, backend, patterns):
    rng = random.Random(2024 + parallelism)
    # each pattern is an operator of its own and every subtask an actor: few per job (the CI
    # suite's time budget); the NFA-level differential test covers many more patterns
    specs = [keyed_spec(simple_spec(rng)) for _ in range(patterns)]
    events = ordered_events(rng, keys=6, per_key=8)
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    env.set_state_backend(backend)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(event_ts)
    keyed = env.from_source(CollectionSource(events), strategy, "events").key_by(event_key)
    outputs = []
    for pid, spec in enumerate(specs):
        matches = CEP.pattern(keyed, build(spec)).process(Report(pid))
        outputs += [matches, matches.get_side_output(TIMEOUTS)]
    rows = list(outputs[0].union(*outputs[1:]).execute_and_collect(f"cep-ref-{parallelism}"))
    want = expected(specs, events)
    assert sum(want.values()) > 10  # the patterns do match something
    assert normalize(specs, rows) == want


def test_non_keyed_stream_runs_at_parallelism_one():
    env = StreamExecutionEnvironment()
    env.set_parallelism(3)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda e: e[1])
    events = [("a", 1), ("x", 2), ("b", 3), ("a", 4), ("b", 5), ("b", 6)]
    pattern = (
        Pattern.begin("a")
        .where(lambda e: e[0] == "a")
        .followed_by("b")
        .where(lambda e: e[0] == "b")
    )
    stream = CEP.pattern(env.from_source(CollectionSource(events), strategy, "ev"), pattern)
    out = stream.select(lambda m: (m["a"][0][1], m["b"][0][1]))
    assert out.get_parallelism() == 1
    assert sorted(out.execute_and_collect("cep-global")) == [(1, 3), (4, 5)]


def failing(e):
    if e[1] == 13:
        raise ZeroDivisionError("unlucky")
    return e[0] == "b"


def test_a_failing_condition_fails_the_job_naming_pattern_stage_and_record():
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    env.set_restart_strategy(RestartStrategies.no_restart())
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda e: e[1])
    events = [("a", 1), ("x", 13), ("b", 20)]
    pattern = Pattern.begin("start").where(lambda e: e[0] == "a").followed_by("then").where(failing)
    keyed = env.from_source(CollectionSource(events), strategy, "ev").key_by(lambda e: "k")
    with pytest.raises(JobExecutionError) as info:
        list(CEP.pattern(keyed, pattern).select(lambda m: 1).execute_and_collect("cep-fails"))
    msg = str(info.value)
    assert "ZeroDivisionError" in msg and "unlucky" in msg
    assert "stage 'then'" in msg and "begin('start')" in msg and "('x', 13)" in msg


# -- exactly once under a task kill -----------------------------------------------------------------

N_CHAOS = 12_000


def chaos_event(e):
    """``(key, seq, ts)`` from PacedEvents -> ``(key, type, value, seq, ts)``."""
    key, seq, ts = e
    return (key, "abc"[(seq * 2654435761 >> 11) % 3], seq % 4, seq, ts)


def chaos_pattern() -> Pattern:
    return (
        Pattern.begin("a")
        .where(lambda e: e[1] == "a")
        .one_or_more()
        .followed_by("b")
        .where(lambda e: e[1] == "b")
        .followed_by_any("c")
        .where(lambda e: e[1] == "c")
        .within(700)
    )


def failure_free(events: list) -> Counter:
    """The same operator without failures: the harness over each key's events in order."""
    import functools

    from raystream.operators.cep.compiled import CompiledPattern
    from raystream.operators.cep.operator import CepOperator
    from raystream.testing import OperatorHarness

    factory = functools.partial(
        CepOperator,
        "cep",
        fn=Report(0),
        key_selector=event_key,
        compiled=CompiledPattern(chaos_pattern()),
    )
    h = OperatorHarness(factory(), keyed=True)
    h.process(events, [e[4] for e in events]).finish()
    return Counter([v for v, _ in h.output] + [v for v, _ in h.side_output(TIMEOUTS)])


@pytest.mark.parametrize("backend", [LmdbStateBackend()], ids=["lmdb"])
def test_killed_cep_task_gives_exactly_the_failure_free_matches(tmp_path, backend):
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    env.set_state_backend(backend)
    env.enable_checkpointing(150)
    env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "checkpoints"))
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(3, 0))
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda e: e[2])
    events = (
        env.from_source(PacedEvents(N_CHAOS, rate=3000, chunk=200), strategy, "events")
        .map(chaos_event)
        .key_by(event_key)
    )
    matches = CEP.pattern(events, chaos_pattern()).process(Report(0)).name("cep")
    col = Collector(
        matches.union(matches.get_side_output(TIMEOUTS)).execute_and_collect("cep-kill")
    )
    client = col.client
    wait_until(lambda: client.get_checkpoint_stats()["completed"] >= 2, what="two checkpoints")
    kill_task("cep-kill", "cep", attempt=0)
    rows = col.join()
    stats = client.get_checkpoint_stats()
    assert stats["restarts"] == 1 and all(cid >= 1 for cid in stats["restored_from"])
    source = [chaos_event((i % 10, i, i * 10)) for i in range(N_CHAOS)]
    source.sort(key=lambda e: (e[0], e[4]))
    want = failure_free(source)
    assert sum(1 for r in want if r[1] == "match") > 100
    got = Counter(rows)
    assert got == want, f"lost {sum((want - got).values())}, extra {sum((got - want).values())}"
