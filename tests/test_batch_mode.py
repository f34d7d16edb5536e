"""``RuntimeExecutionMode.BATCH``: Flink's batch semantics for bounded DataStream jobs.

Every check compares the job against a brute-force reference written here: keyed running
aggregates emit one final value per key at the end of input; no watermark flows before the end,
so event-time windows hold all their records (also the ones STREAMING with a small
out-of-orderness reports late) and every timer fires at the end; processing-time timers fire at
the end too and timers registered while they fire are ignored; AUTOMATIC picks BATCH for bounded
sources and STREAMING otherwise; an unbounded source in BATCH fails when the job is built;
checkpointing is switched off with a notice; a failed BATCH job reruns from the start without the
driver seeing a record twice.
"""

from __future__ import annotations

import functools
import logging
import os
import random
from collections import Counter

import pytest

from raystream import (
    KeyedProcessFunction,
    OutputTag,
    RestartStrategies,
    RuntimeExecutionMode,
    StreamExecutionEnvironment,
    TumblingEventTimeWindows,
    ValueStateDescriptor,
    WatermarkGenerator,
    WatermarkStrategy,
)
from raystream.checkpointing.backends.factory import HashMapStateBackend, LmdbStateBackend
from raystream.config import ExecutionConfig
from raystream.core.keys import key_group_of
from raystream.core.time import MAX_TS, MIN_TS
from raystream.errors import GraphError
from raystream.graph.plan import build_plan
from raystream.operators import CollectionSource
from raystream.operators.keyed import ReduceOperator, aggregation
from raystream.operators.process import KeyedProcessOperator
from raystream.testing import OperatorHarness

BATCH = RuntimeExecutionMode.BATCH
STREAMING = RuntimeExecutionMode.STREAMING
AUTOMATIC = RuntimeExecutionMode.AUTOMATIC
LATE = OutputTag("late")
BOUND = 2  # out-of-orderness of the STREAMING generator: small, so some records are late
DELAY = 5


def keyed_records(seed: int, n: int = 400, keys: int = 7) -> list[tuple]:
    """``(key, ts, value)`` with keys of mixed types and timestamps up to 30 ms out of order."""
    rng = random.Random(seed)
    names = [f"k{i}" for i in range(keys - 2)] + [7, (1, "t")]
    out, base = [], 0
    for _ in range(n):
        base += rng.randint(0, 3)
        out.append((rng.choice(names), max(0, base + rng.randint(-30, 3)), rng.randint(-5, 9)))
    return out


# -- the mode is decided when the job is built ---------------------------------------------------


class _Endless:
    """Marker for a test that only builds a plan: never read."""


def test_streaming_is_the_default_and_names_are_accepted():
    assert StreamExecutionEnvironment().get_runtime_mode() is STREAMING
    assert ExecutionConfig(runtime_mode="batch").get_runtime_mode() is BATCH
    env = StreamExecutionEnvironment().set_runtime_mode("AUTOMATIC")
    assert env.get_runtime_mode() is AUTOMATIC
    with pytest.raises(GraphError, match="runtime mode must be"):
        env.set_runtime_mode("sometimes")


def test_batch_with_an_unbounded_source_fails_at_execute_naming_it():
    env = StreamExecutionEnvironment().set_runtime_mode(BATCH)
    env.from_collection([1, 2]).name("fine").print()
    env.from_sequence(1, None).name("endless numbers").print()
    with pytest.raises(GraphError) as err:
        env.execute("unbounded in batch")  # fails before anything is scheduled
    msg = str(err.value)
    assert "'endless numbers' (NumberSequenceSource)" in msg and "'fine'" not in msg
    assert "BATCH" in msg and "STREAMING" in msg


@pytest.mark.parametrize(
    "mode,bounded,want",
    [
        (STREAMING, True, STREAMING),
        (STREAMING, False, STREAMING),
        (BATCH, True, BATCH),
        (AUTOMATIC, True, BATCH),
        (AUTOMATIC, False, STREAMING),
    ],
)
def test_the_plan_holds_the_resolved_mode(mode, bounded, want):
    env = StreamExecutionEnvironment().set_runtime_mode(mode)
    env.from_collection([1, 2]).print()
    env.from_sequence(1, 10 if bounded else None).print()
    plan = build_plan("p", env._transformations, env.get_config())
    assert plan.config.runtime_mode is want
    assert env.get_runtime_mode() is mode  # the environment keeps what the user set
    assert ("BATCH" in plan.describe()) == (want is BATCH)


def test_checkpointing_is_switched_off_in_batch_with_a_notice(caplog):
    env = StreamExecutionEnvironment().set_runtime_mode(BATCH).enable_checkpointing(100)
    env.from_collection([1, 2]).print()
    with caplog.at_level(logging.WARNING, logger="raystream.api.runtime_mode"):
        plan = build_plan("ckpt", env._transformations, env.get_config())
    assert plan.config.checkpoint.interval_ms is None
    assert env.is_checkpointing_enabled()  # the user's config is untouched
    notices = [
        r.getMessage() for r in caplog.records if "checkpointing is not used" in r.getMessage()
    ]
    assert len(notices) == 1 and "'ckpt'" in notices[0]
    # STREAMING keeps it
    env2 = StreamExecutionEnvironment().enable_checkpointing(100)
    env2.from_collection([1]).print()
    assert (
        build_plan("s", env2._transformations, env2.get_config()).config.checkpoint.interval_ms
        == 100
    )


# -- keyed running aggregates: one final value per key (no Ray) ------------------------------------


def ref_final(records: list, fn) -> dict:
    """Brute force: fold each key's records in arrival order."""
    acc: dict = {}
    for r in records:
        acc[r[0]] = r if r[0] not in acc else fn(acc[r[0]], r)
    return acc


def ref_order(records: list, max_p: int) -> list:
    """The documented emission order: key group, then the order keys were first seen."""
    first: dict = {}
    for r in records:
        first.setdefault(r[0], len(first))
    return sorted(first, key=lambda k: (key_group_of(k, max_p), first[k]))


KINDS = {
    "sum": lambda a, b: (a[0], a[1], a[2] + b[2]),
    "min": lambda a, b: (a[0], a[1], min(a[2], b[2])),
    "max": lambda a, b: (a[0], a[1], max(a[2], b[2])),
    "min_by": lambda a, b: b if b[2] < a[2] else a,
    "max_by": lambda a, b: b if b[2] > a[2] else a,
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("seed", [1, 2])
def test_running_aggregates_emit_only_final_values_in_batch(kind, seed):
    records = keyed_records(seed)
    op = ReduceOperator("agg", fn=aggregation(kind, 2), key_selector=lambda r: r[0])
    h = OperatorHarness(op, keyed=True, runtime_mode=BATCH)
    for i in range(0, len(records), 37):
        chunk = records[i : i + 37]
        h.process(chunk, [r[1] for r in chunk])
    h.watermark(1_000)  # an ordinary watermark does not emit anything
    assert h.output == []
    h.finish()
    want = ref_final(records, KINDS[kind])
    assert [v for v, _ in h.output] == [want[k] for k in ref_order(records, 128)]
    assert {t for _, t in h.output} == {MAX_TS}  # Flink's timestamp of batch results
    assert h.watermarks == [1_000, MAX_TS]


def test_streaming_reduce_still_emits_every_running_value():
    records = keyed_records(3, n=60)
    op = ReduceOperator("agg", fn=aggregation("sum", 2), key_selector=lambda r: r[0])
    h = OperatorHarness(op, keyed=True)
    h.process(records).finish()
    acc: dict = {}
    want = []
    for r in records:
        acc[r[0]] = r if r[0] not in acc else KINDS["sum"](acc[r[0]], r)
        want.append(acc[r[0]])
    assert h.values() == want


@pytest.mark.parametrize(
    "backend", [HashMapStateBackend(), LmdbStateBackend()], ids=["memory", "lmdb"]
)
def test_batch_reduce_on_both_backends_and_subtasks(backend, tmp_path):
    records = keyed_records(4, n=300, keys=12)
    p = 2
    for subtask in range(p):
        op = ReduceOperator(
            "agg", fn=lambda a, b: (a[0], 0, a[2] * 3 + b[2]), key_selector=lambda r: r[0]
        )
        h = OperatorHarness(
            op,
            keyed=True,
            max_parallelism=16,
            subtask=subtask,
            parallelism=p,
            state_backend=backend,
            runtime_mode=BATCH,
        )
        mine = [r for r in records if key_group_of(r[0], 16) * p // 16 == subtask]
        h.process(mine)  # no timestamps: none on the results either
        h.finish()
        want = ref_final(mine, lambda a, b: (a[0], 0, a[2] * 3 + b[2]))
        got = h.values()
        assert sorted(map(repr, got)) == sorted(map(repr, want.values()))
        groups = [key_group_of(v[0], 16) for v in got]
        assert groups == sorted(groups)  # by key group on every backend
        if isinstance(backend, HashMapStateBackend):
            assert [v[0] for v in got] == ref_order(mine, 16)
        assert {t for _, t in h.output} == {None}
        h.close()


# -- timers: all at the end of input, processing time too; no loop at the end (no Ray) ------------


class TimersEverywhere(KeyedProcessFunction):
    """An event-time timer at ts + DELAY and a processing-time timer at the record's value (in
    the past: due at once in STREAMING); every timer registers another one (ignored at the end
    of a BATCH job, as in Flink, or it would never end)."""

    def __init__(self, rearm: bool = True):
        self.rearm = rearm  # STREAMING would loop forever at the end with it (as Flink does)

    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("n"))

    def process_element(self, r, ctx):
        self.count.update((self.count.value() or 0) + 1)
        ts = ctx.timer_service()
        ts.register_event_time_timer(r[1] + DELAY)
        ts.register_processing_time_timer(abs(r[2]))
        yield ("el", r, ts.current_watermark())

    def on_timer(self, t, ctx):
        ts = ctx.timer_service()
        if self.rearm:
            ts.register_event_time_timer(t + 1)
            ts.register_processing_time_timer(ts.current_processing_time() + 1)
        yield (
            "timer",
            ctx.time_domain().name,
            ctx.get_current_key(),
            t,
            self.count.value(),
            ts.current_watermark(),
        )


def ref_timers_batch(records: list) -> list:
    """Every element sees watermark MIN; then every event-time timer (deduplicated per key and
    time) fires with the key's final count and watermark MAX, then every processing-time one."""
    counts = Counter(r[0] for r in records)
    out = [("el", r, MIN_TS) for r in records]
    event = {(r[1] + DELAY, r[0]) for r in records}
    proc = {(abs(r[2]), r[0]) for r in records}
    out += [("timer", "EVENT_TIME", k, t, counts[k], MAX_TS) for t, k in event]
    out += [("timer", "PROCESSING_TIME", k, t, counts[k], MAX_TS) for t, k in proc]
    return out


def _domain_order(got: list) -> list:
    return [g[1] for g in got if g[0] == "timer"]


def test_every_timer_fires_at_the_end_of_a_batch_and_registrations_then_are_ignored():
    records = keyed_records(5, n=200)
    op = KeyedProcessOperator("kp", fn=TimersEverywhere(), key_selector=lambda r: r[0])
    h = OperatorHarness(op, keyed=True, runtime_mode=BATCH, start_ms=10_000)
    for i in range(0, len(records), 50):
        chunk = records[i : i + 50]
        h.process(chunk, [r[1] for r in chunk])  # BATCH sends no watermark before the end
    h.finish()
    got = h.values()
    want = ref_timers_batch(records)
    assert Counter(map(repr, got)) == Counter(map(repr, want))
    n_el = len(records)
    assert all(g[0] == "el" for g in got[:n_el])  # no timer before the end of input
    order = _domain_order(got)
    assert order == sorted(order, key=lambda d: d != "EVENT_TIME")  # event time first
    assert op.timers.ignored == 2 * (len(want) - n_el)  # each firing tried to register two


def test_streaming_timers_are_unchanged():
    records = keyed_records(6, n=40)
    op = KeyedProcessOperator("kp", fn=TimersEverywhere(rearm=False), key_selector=lambda r: r[0])
    h = OperatorHarness(op, keyed=True, start_ms=10_000)
    h.process(records[:20], [r[1] for r in records[:20]])
    h.advance_processing_time(10_000)  # due processing-time timers fire now in STREAMING
    assert any(g[0] == "timer" for g in h.values())


# -- on Ray: the same bounded jobs in BATCH against the references -----------------------------------

pytest_ray = pytest.mark.usefixtures("ray_session")


class PerEvent(WatermarkGenerator):
    """STREAMING: a watermark right after every event, ``BOUND`` behind the highest timestamp,
    so records more out of order than that are late (deterministically). BATCH ignores it."""

    def __init__(self):
        self.max_ts = MIN_TS

    def on_event(self, event, event_timestamp, output):
        self.max_ts = max(self.max_ts, event_timestamp)
        output.emit_watermark(self.max_ts - BOUND - 1)

    def on_periodic_emit(self, output):
        pass


def strategy() -> WatermarkStrategy:
    return WatermarkStrategy.for_generator(PerEvent).with_timestamp_assigner(lambda r: r[1])


def window_job(mode, records, p, on_source):
    env = StreamExecutionEnvironment().set_parallelism(p).set_runtime_mode(mode)
    if on_source:
        src = env.from_source(CollectionSource(records), strategy())
    else:
        src = env.from_collection(records).assign_timestamps_and_watermarks(strategy())
    windowed = (
        src.key_by(lambda r: r[0])
        .window(TumblingEventTimeWindows.of(10))
        .allowed_lateness(3)
        .side_output_late_data(LATE)
        .reduce(
            lambda a, b: (a[0], max(a[1], b[1]), a[2] + b[2]),
            window_function=lambda key, ctx, agg: [(next(iter(agg)), ctx.window().start)],
        )
    )
    out = windowed.map(lambda r: ("result", r)).union(
        windowed.get_side_output(LATE).map(lambda r: ("late", r))
    )
    return list(out.execute_and_collect())


def ref_windows(records: list) -> Counter:
    """Every record in its 10 ms window; one result per key and window: (key, max ts, sum)."""
    groups: dict = {}
    for k, ts, v in records:
        groups.setdefault((k, ts - ts % 10), []).append((ts, v))
    return Counter(
        ((k, max(t for t, _ in el), sum(v for _, v in el)), start)
        for (k, start), el in groups.items()
    )


@pytest_ray
@pytest.mark.parametrize("p,on_source", [(1, True), (2, False)])
def test_event_time_windows_fire_with_every_record_in_batch(p, on_source):
    records = keyed_records(10 + p, n=300)
    got = window_job(BATCH, records, p, on_source)
    assert [r for tag, r in got if tag == "late"] == []
    results = Counter((r[0], r[1]) for tag, r in got if tag == "result")
    assert results == ref_windows(records)
    # the same job in STREAMING reports late records: the data does tell the modes apart
    streamed = window_job(STREAMING, records, p, on_source)
    assert sum(1 for tag, _ in streamed if tag == "late") > 0


@pytest_ray
def test_keyed_process_timers_fire_at_the_end_in_batch():
    records = keyed_records(20, n=250)
    env = StreamExecutionEnvironment().set_parallelism(1).set_runtime_mode(BATCH)
    src = env.from_collection(records).assign_timestamps_and_watermarks(strategy())
    got = list(src.key_by(lambda r: r[0]).process(TimersEverywhere()).execute_and_collect())
    want = ref_timers_batch(records)
    assert Counter(map(repr, got)) == Counter(map(repr, want))
    # one subtask, one chain: the collected order is the processing order
    assert all(g[0] == "el" for g in got[: len(records)])


@pytest_ray
def test_processing_time_timers_wait_for_the_end_of_input_in_batch():
    """Timers due at once: STREAMING fires them between source steps, BATCH only at the end."""
    records = [("k", i, i) for i in range(3000)]

    def run(mode):
        env = StreamExecutionEnvironment().set_parallelism(1).set_runtime_mode(mode)
        return list(
            env.from_collection(records)
            .key_by(lambda r: r[0])
            .process(TimersEverywhere(rearm=False))
            .execute_and_collect()
        )

    got = run(BATCH)
    firsts = [i for i, g in enumerate(got) if g[0] == "timer"]
    assert firsts and min(firsts) == len(records)
    assert {g[5] for g in got if g[0] == "timer"} == {MAX_TS}
    streamed = run(STREAMING)
    last_el = max(i for i, g in enumerate(streamed) if g[0] == "el")
    assert any(g[0] == "timer" for g in streamed[:last_el])


def word_count(env, lines):
    return (
        env.from_collection(lines)
        .flat_map(lambda line: line.split())
        .map(lambda w: (w, 1))
        .key_by(lambda t: t[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
    )


LINES = ["to be or not to be", "that is the question", "to be is to do", "be quick"] * 25


@pytest_ray
@pytest.mark.parametrize(
    "backend", [HashMapStateBackend(), LmdbStateBackend()], ids=["memory", "lmdb"]
)
def test_word_count_prints_one_line_per_word_in_batch(backend):
    env = StreamExecutionEnvironment().set_parallelism(2).set_runtime_mode(BATCH)
    env.set_state_backend(backend)
    got = list(word_count(env, LINES).execute_and_collect())
    want = Counter(w for line in LINES for w in line.split())
    assert sorted(got) == sorted(want.items())


@pytest_ray
def test_automatic_is_batch_for_bounded_and_streaming_for_unbounded_sources():
    env = StreamExecutionEnvironment().set_parallelism(2).set_runtime_mode(AUTOMATIC)
    got = list(word_count(env, LINES).execute_and_collect())
    assert sorted(got) == sorted(Counter(w for line in LINES for w in line.split()).items())

    env = StreamExecutionEnvironment().set_parallelism(1).set_runtime_mode(AUTOMATIC)
    running = (
        env.from_sequence(1, None)
        .key_by(lambda v: v % 3)
        .reduce(lambda a, b: a + b)
        .execute_and_collect(limit=30)
    )
    # running sums per key (1, 1+4, 1+4+7, ...): STREAMING emits every one
    want = {0: [], 1: [], 2: []}
    acc = {0: 0, 1: 0, 2: 0}
    for v in range(1, 31):
        acc[v % 3] += v
        want[v % 3].append(acc[v % 3])
    got_by_key = {k: [s for s in running if s in want[k]] for k in want}
    assert len(running) == 30 and sorted(running) == sorted(s for w in want.values() for s in w)
    assert all(len(v) == 10 for v in got_by_key.values())


def _fail_once(marker: str, at: int, v: int) -> int:
    if v == at and not os.path.exists(marker):
        with open(marker, "w"):
            pass
        raise RuntimeError(f"injected failure at {v}")
    return v


@pytest_ray
def test_a_failed_batch_job_reruns_from_the_start_and_collects_each_record_once(tmp_path, caplog):
    """Checkpointing asked for but not used in BATCH: the restart reruns the job from the start;
    the records collected before the failure are not handed to the driver twice."""
    n = 100_000
    env = StreamExecutionEnvironment().set_parallelism(1).set_runtime_mode(BATCH)
    env.enable_checkpointing(50)
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(2, 0))
    marker = str(tmp_path / "failed-once")
    mapped = env.from_sequence(1, n).map(functools.partial(_fail_once, marker, 90_000))
    # chained into the collect sink: records reach the job master before the failure
    with caplog.at_level(logging.WARNING, logger="raystream.api.runtime_mode"):
        got = list(mapped.map(lambda v: ("v", v)).execute_and_collect())
    assert os.path.exists(marker)  # it did fail once
    assert len(got) == n and sorted(v for _, v in got) == list(range(1, n + 1))
    assert any("checkpointing is not used" in r.getMessage() for r in caplog.records)
