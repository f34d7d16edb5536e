"""Error policies (fail, skip, dead-letter) for records user code raises on.

Differential throughout: bad records sit at seeded random positions, the output must equal a
brute-force reference over the good records only, and the dead letters must be exactly the bad
records, with the operator's name, the exception type and the record's timestamp. The first part
drives operators directly (``OperatorHarness``, no Ray); the second runs jobs on a local Ray at
parallelism 2, chained and unchained, with metrics, the fail default and a task kill.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from typing import Any

import pytest

from raystream import (
    DeadLetter,
    ErrorPolicy,
    JobExecutionError,
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RestartStrategies,
    StreamExecutionEnvironment,
    UserFunctionError,
    ValueStateDescriptor,
    WatermarkStrategy,
)
from raystream.core.time import MAX_TS
from raystream.core.watermarks import TimestampAssigner
from raystream.errors import GraphError
from raystream.graph.partitioners import KeyGroupPartitioner
from raystream.operators.keyed import ReduceOperator
from raystream.operators.process import KeyedProcessOperator, ProcessOperator
from raystream.operators.stateless import FilterOperator, FlatMapOperator, MapOperator
from raystream.operators.watermarks import TimestampsAndWatermarksOperator
from raystream.operators.windows import TumblingEventTimeWindows
from raystream.operators.windows.operator import AGGREGATE, REDUCE, WindowOperator
from raystream.runtime.elements import Batch
from raystream.testing import OperatorHarness

DLQ = OutputTag("dead-letters")
POLICIES = {
    "skip": ErrorPolicy.skip(),
    "dead_letter": ErrorPolicy.dead_letter(DLQ),
}

# -- records: (id, key, bad); user functions raise on bad ones -----------------------------------


def make_records(seed: int, n: int = 300, bad_share: float = 0.1) -> list[tuple[int, int, bool]]:
    rng = random.Random(seed)
    bad = set(rng.sample(range(n), int(n * bad_share)))
    bad |= {0} if seed % 2 else {n - 1}  # a bad record at a batch edge too
    return [(i, rng.randrange(7), i in bad) for i in range(n)]


def stamps_of(records: list) -> list[int]:
    return [1000 + 3 * r[0] for r in records]


def batches(seed: int, records: list, stamps: list | None) -> Iterator[tuple[list, list | None]]:
    """Cuts the records into batches of random sizes (1 to 40)."""
    rng = random.Random(seed + 1)
    i = 0
    while i < len(records):
        j = min(len(records), i + rng.randint(1, 40))
        yield records[i:j], (stamps[i:j] if stamps is not None else None)
        i = j


def check(r: tuple) -> tuple:
    if r[2]:
        raise ValueError(f"bad record {r[0]}")
    return r


def parse(r: tuple) -> int:
    return check(r)[0] * 10


def keep_even(r: tuple) -> bool:
    return check(r)[0] % 2 == 0


def explode(r: tuple) -> Iterator[int]:
    """A generator: for a bad record it yields twice before it raises; both must vanish."""
    yield r[0]
    yield -r[0]
    check(r)
    yield r[0] + 1000


def explode_list(r: tuple) -> list[int]:
    return [check(r)[0], -r[0]]


def key_of(r: tuple) -> int:
    return r[1]


def raising_key(r: tuple) -> int:
    return check(r)[1]


def add_ids(a: tuple, b: tuple) -> tuple:
    check(b)
    return (a[0] + b[0], a[1], False)


def run(op: Any, records: list, stamps: list | None, seed: int, keyed: bool = False) -> Any:
    h = OperatorHarness(op, keyed=keyed)
    for values, ts in batches(seed, records, stamps):
        h.process(values, ts)
    return h


def expected_dead(records: list, stamps: list | None, operator: str) -> list[tuple]:
    return [
        (r, operator, "ValueError", f"bad record {r[0]}", None if stamps is None else stamps[i])
        for i, r in enumerate(records)
        if r[2]
    ]


def dead_of(h: OperatorHarness) -> list[tuple]:
    out = []
    for letter, ts in h.side_output(DLQ):
        assert isinstance(letter, DeadLetter)
        assert letter.timestamp == ts
        assert "ValueError" in letter.traceback and letter.subtask == 0
        out.append((letter.record, letter.operator, letter.exception_type, letter.message, ts))
    return out


def with_policy(op: Any, policy: ErrorPolicy) -> Any:
    op.error_policy = policy
    return op


def check_policy_outcome(h: OperatorHarness, policy: str, records, stamps, name: str) -> None:
    n_bad = sum(r[2] for r in records)
    metrics = h.operator.metrics()
    if policy == "dead_letter":
        assert dead_of(h) == expected_dead(records, stamps, name)
        assert metrics["records_dead_lettered"] == n_bad and metrics["records_skipped"] == 0
    else:
        assert h.side_output(DLQ) == []
        assert metrics["records_skipped"] == n_bad and metrics["records_dead_lettered"] == 0


# -- one operator kind at a time (no Ray) ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("timestamps", [True, False], ids=["ts", "no-ts"])
def test_map(seed, policy, timestamps):
    records = make_records(seed)
    stamps = stamps_of(records) if timestamps else None
    h = run(with_policy(MapOperator("parse", parse), POLICIES[policy]), records, stamps, seed)
    good = [(i, r) for i, r in enumerate(records) if not r[2]]
    assert h.output == [(r[0] * 10, stamps[i] if stamps else None) for i, r in good]
    check_policy_outcome(h, policy, records, stamps, "parse")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("timestamps", [True, False], ids=["ts", "no-ts"])
def test_filter(seed, policy, timestamps):
    records = make_records(seed)
    stamps = stamps_of(records) if timestamps else None
    h = run(with_policy(FilterOperator("even", keep_even), POLICIES[policy]), records, stamps, seed)
    want = [
        (r, stamps[i] if stamps else None)
        for i, r in enumerate(records)
        if not r[2] and r[0] % 2 == 0
    ]
    assert h.output == want
    check_policy_outcome(h, policy, records, stamps, "even")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("timestamps", [True, False], ids=["ts", "no-ts"])
@pytest.mark.parametrize("fn", [explode, explode_list], ids=["generator", "list"])
def test_flat_map_drops_what_a_failing_record_yielded(seed, policy, timestamps, fn):
    records = make_records(seed)
    stamps = stamps_of(records) if timestamps else None
    h = run(with_policy(FlatMapOperator("explode", fn), POLICIES[policy]), records, stamps, seed)
    want = []
    for i, r in enumerate(records):
        if not r[2]:
            ts = stamps[i] if stamps else None
            outs = list(fn(r))
            want.extend((o, ts) for o in outs)
    assert h.output == want
    check_policy_outcome(h, policy, records, stamps, "explode")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("raising", ["reduce", "key selector"])
def test_keyed_reduce(seed, policy, raising):
    records = make_records(seed)
    stamps = stamps_of(records)
    ks = key_of if raising == "reduce" else raising_key
    op = with_policy(ReduceOperator("sum", add_ids, ks), POLICIES[policy])
    h = run(op, records, stamps, seed, keyed=True)
    acc: dict[int, tuple] = {}
    want = []
    for i, r in enumerate(records):
        if r[2] and (raising == "key selector" or r[1] in acc):
            continue  # the reduce function sees a record only from the key's second on
        acc[r[1]] = r if r[1] not in acc else (acc[r[1]][0] + r[0], r[1], False)
        want.append((acc[r[1]], stamps[i]))
    assert h.output == want
    bad_taken = [
        r
        for i, r in enumerate(records)
        if r[2] and (raising == "key selector" or any(o[1] == r[1] for o in records[:i]))
    ]
    n_bad = len(bad_taken)
    m = h.operator.metrics()
    assert m["records_skipped"] + m["records_dead_lettered"] == n_bad
    if policy == "dead_letter":
        assert [d[0] for d in dead_of(h)] == bad_taken


class Tagging(ProcessFunction):
    """Side output for odd ids, main output for the rest; a bad record yields first, then
    raises (its main output must vanish)."""

    def process_element(self, value, ctx):
        yield ("seen", value[0], ctx.timestamp())
        check(value)
        yield ("ok", value[0], ctx.timestamp())


class CountPerKey(KeyedProcessFunction):
    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count"))

    def process_element(self, value, ctx):
        check(value)
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        yield (ctx.get_current_key(), n, value[0])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_process_function(seed, policy):
    records = make_records(seed)
    stamps = stamps_of(records)
    op = with_policy(ProcessOperator("tagging", Tagging()), POLICIES[policy])
    h = run(op, records, stamps, seed)
    want = []
    for i, r in enumerate(records):
        if not r[2]:
            want += [(("seen", r[0], stamps[i]), stamps[i]), (("ok", r[0], stamps[i]), stamps[i])]
    assert h.output == want
    check_policy_outcome(h, policy, records, stamps, "tagging")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("ks", [key_of, raising_key], ids=["function", "key selector"])
def test_keyed_process_function(seed, policy, ks):
    records = make_records(seed)
    stamps = stamps_of(records)
    op = with_policy(KeyedProcessOperator("count", CountPerKey(), ks), POLICIES[policy])
    h = run(op, records, stamps, seed, keyed=True)
    counts: dict[int, int] = {}
    want = []
    for i, r in enumerate(records):
        if not r[2]:
            counts[r[1]] = counts.get(r[1], 0) + 1
            want.append(((r[1], counts[r[1]], r[0]), stamps[i]))
    assert h.output == want
    check_policy_outcome(h, policy, records, stamps, "count")


def stamp_of(r: tuple) -> int:
    return 1000 + 3 * check(r)[0]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("assigner", ["callable", "TimestampAssigner"])
def test_timestamp_assigner(seed, policy, assigner):
    records = make_records(seed)
    # every tenth good record has no timestamp: the strategy's own route for those still works
    invalid = OutputTag("invalid")
    none_for = {r[0] for r in records if not r[2] and r[0] % 10 == 5}

    def fn(r):
        return None if r[0] in none_for else stamp_of(r)

    strategy = WatermarkStrategy.for_monotonous_timestamps().with_invalid_timestamps_to(invalid)
    if assigner == "callable":
        strategy = strategy.with_timestamp_assigner(fn)
    else:

        class Assigner(TimestampAssigner):
            def extract_timestamp(self, value, record_timestamp):
                return fn(value)

        strategy = strategy.with_timestamp_assigner(Assigner())
    op = with_policy(TimestampsAndWatermarksOperator("stamps", strategy), POLICIES[policy])
    h = run(op, records, None, seed)
    assert h.output == [(r, 1000 + 3 * r[0]) for r in records if not r[2] and r[0] not in none_for]
    assert [v for v, _ in h.side_output(invalid)] == [r for r in records if r[0] in none_for]
    check_policy_outcome(h, policy, records, None, "stamps")


def sum_ids(a: tuple, b: tuple) -> tuple:
    check(b)
    return (a[0] + b[0], a[1], False)


class SumIds:
    def create_accumulator(self):
        return 0

    def add(self, value, acc):
        return acc + check(value)[0]

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return a + b


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("kind", [AGGREGATE, REDUCE])
def test_tumbling_window(seed, policy, kind):
    """Aggregate: ``add`` raises on bad records; reduce: the key selector does (it runs for
    every record, the reduce function only from a window's second record on)."""
    records = make_records(seed)
    stamps = stamps_of(records)
    fn, ks = (SumIds(), key_of) if kind == AGGREGATE else (sum_ids, raising_key)
    op = WindowOperator("win", ks, TumblingEventTimeWindows.of(50), None, None, 0, None, kind, fn)
    h = run(with_policy(op, POLICIES[policy]), records, stamps, seed, keyed=True)
    h.watermark(MAX_TS)
    sums: dict[tuple[int, int], int] = {}
    for r, t in zip(records, stamps):
        if not r[2]:
            sums[(r[1], t - t % 50)] = sums.get((r[1], t - t % 50), 0) + r[0]
    if kind == AGGREGATE:
        want = sorted((total, start + 49) for (_k, start), total in sums.items())
        assert sorted(h.output) == want
    else:
        want = sorted(((total, k, False), start + 49) for (k, start), total in sums.items())
        assert sorted(h.output) == want
    check_policy_outcome(h, policy, records, stamps, "win")


# -- the fail default, counts in checkpoints, validation ------------------------------------------


@pytest.mark.parametrize("policy", [None, ErrorPolicy.fail()], ids=["default", "fail"])
def test_fail_policy_fails_with_the_record_named(policy):
    op = MapOperator("parse", parse)
    if policy is not None:
        op.error_policy = policy
    h = OperatorHarness(op)
    with pytest.raises(UserFunctionError) as info:
        h.process([(1, 0, False), (2, 0, True), (3, 0, False)])
    assert "ValueError in operator 'parse', subtask 0" in str(info.value)
    assert info.value.record == "(2, 0, True)"
    assert "records_skipped" not in op.metrics()


def test_raystream_errors_are_never_taken_by_a_policy():
    def raise_graph_error(r):
        raise GraphError("not a bad record")

    h = OperatorHarness(with_policy(MapOperator("m", raise_graph_error), ErrorPolicy.skip()))
    with pytest.raises(UserFunctionError, match="not a bad record"):
        h.process([(1, 0, False)])


def test_counts_continue_from_a_checkpoint():
    records = make_records(3)
    op = with_policy(MapOperator("parse", parse), ErrorPolicy.skip())
    h = OperatorHarness(op)
    h.process(records[:150])
    snap = h.snapshot(1)
    first = sum(r[2] for r in records[:150])
    assert op.metrics()["records_skipped"] == first
    again = with_policy(MapOperator("parse", parse), ErrorPolicy.skip())
    h2 = OperatorHarness(again, restored=snap)
    h2.process(records[150:])
    assert again.metrics()["records_skipped"] == sum(r[2] for r in records)


def test_the_first_bad_record_of_a_subtask_is_logged(caplog):
    op = with_policy(MapOperator("parse", parse), ErrorPolicy.skip())
    h = OperatorHarness(op)
    with caplog.at_level("WARNING", logger="raystream.error_policy"):
        h.process([(1, 0, False), (2, 0, True), (3, 0, True)])
    first = caplog.records[0].getMessage()
    assert "operator 'parse', subtask 0: skipped record (2, 0, True)" in first
    assert "ValueError: bad record 2" in first and "ErrorPolicy.skip()" in first


def test_policy_validation():
    with pytest.raises(TypeError):
        ErrorPolicy.dead_letter("dlq")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ErrorPolicy("skip", DLQ)
    env = StreamExecutionEnvironment()
    stream = env.from_collection([1, 2])
    with pytest.raises(TypeError):
        stream.map(abs).set_error_policy("skip")  # type: ignore[arg-type]
    with pytest.raises(GraphError, match="applies to an operator"):
        stream.union(stream.map(abs)).set_error_policy(ErrorPolicy.skip())
    with pytest.raises(GraphError, match="does not take an error policy"):
        stream.set_error_policy(ErrorPolicy.skip())  # a source
    with pytest.raises(TypeError):
        env.set_error_policy(None)  # type: ignore[arg-type]
    env.set_error_policy(ErrorPolicy.skip())
    assert env.get_config().error_policy == ErrorPolicy.skip()


def test_key_routing_hands_records_whose_key_selector_raises_to_the_first_consumer():
    class Sink:
        def __init__(self):
            self.values: list = []
            self.stamps: list = []

        def add(self, values, timestamps):
            self.values += values
            self.stamps += timestamps

    records = make_records(5, n=200)
    stamps = stamps_of(records)
    strict = KeyGroupPartitioner(raising_key).router(0, 3, 128, "e")
    with pytest.raises(UserFunctionError, match="key selector of 'e'"):
        strict.route(Batch(records, stamps), [Sink(), Sink(), Sink()])
    tolerant = KeyGroupPartitioner(raising_key).passing_bad_keys().router(0, 3, 128, "e")
    plain = KeyGroupPartitioner(key_of).router(0, 3, 128, "e")
    got, want = [Sink(), Sink(), Sink()], [Sink(), Sink(), Sink()]
    tolerant.route(Batch(records, stamps), got)
    good = [(r, t) for r, t in zip(records, stamps) if not r[2]]
    plain.route(Batch([r for r, _ in good], [t for _, t in good]), want)
    assert [r for r in got[0].values if r[2]] == [r for r in records if r[2]]
    for k in range(3):
        pairs = [(r, t) for r, t in zip(got[k].values, got[k].stamps) if not r[2]]
        assert pairs == list(zip(want[k].values, want[k].stamps))


# -- jobs on Ray -------------------------------------------------------------------------------------


def summarize(item: Any) -> tuple:
    """Main output and dead letters of one job, as one collectable stream."""
    if isinstance(item, DeadLetter):
        return ("dead", item.operator, item.exception_type, item.record, item.subtask)
    return ("out", item)


def tag(what: str, item: Any) -> tuple:
    return (what, summarize(item))


def job_with_policies(
    env: StreamExecutionEnvironment, records: list, chained: bool, policy: ErrorPolicy | None
):
    """parse (map) -> key_by(raising key) -> running sum; dead letters of both operators and
    the main output, tagged, in one stream."""
    parsed = env.from_collection(records).map(check).name("parse")
    if not chained:
        parsed = parsed.disable_chaining()
    if policy is not None:
        parsed = parsed.set_error_policy(policy)
    pairs = parsed.map(lambda r: (r[0], r[1], r[0] % 11 == 3)).name("mark")
    sums = pairs.key_by(raising_key).reduce(add_ids).name("sum")
    if policy is not None:
        sums = sums.set_error_policy(policy)
    out = sums.map(functools.partial(tag, "sum"))
    if policy is not None and policy.output_tag is not None:
        out = out.union(
            parsed.get_side_output(DLQ).map(functools.partial(tag, "parse")),
            sums.get_side_output(DLQ).map(functools.partial(tag, "sum")),
        )
    return out


def reference_job(records: list) -> tuple[list, list, list]:
    """Brute force: what survives parse, what the key selector then rejects, the final sums."""
    parsed = [r for r in records if not r[2]]
    marked = [(r[0], r[1], r[0] % 11 == 3) for r in parsed]
    rejected = [m for m in marked if m[2]]
    sums: dict[int, int] = {}
    for m in marked:
        if not m[2]:
            sums[m[1]] = sums.get(m[1], 0) + m[0]
    return [r for r in records if r[2]], rejected, sorted(sums.items())


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(240)
@pytest.mark.parametrize("chained", [True, False], ids=["chained", "unchained"])
def test_dead_letters_on_ray_at_parallelism_2(chained):
    records = make_records(11, n=2000)
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.get_config().set_batch_size(64)
    stream = job_with_policies(env, records, chained, ErrorPolicy.dead_letter(DLQ))
    it = stream.execute_and_collect("dead-letters")
    got = list(it)
    bad_parsed, rejected, sums = reference_job(records)
    dead_parse = sorted(g[1][3] for g in got if g[0] == "parse")
    dead_sum = sorted(g[1][3] for g in got if g[0] == "sum" and g[1][0] == "dead")
    assert dead_parse == sorted(bad_parsed)
    assert dead_sum == sorted(rejected)
    for g in got:
        if g[1][0] == "dead":
            assert g[1][1] == ("parse" if g[0] == "parse" else "sum")
            assert g[1][2] == "ValueError" and g[1][4] in (0, 1)
    final: dict[int, int] = {}
    for g in got:
        if g[0] == "sum" and g[1][0] == "out":
            final[g[1][1][1]] = max(final.get(g[1][1][1], 0), g[1][1][0])
    assert sorted(final.items()) == sums
    metrics = it.client.metrics()["tasks"]

    def total(op: str, counter: str) -> int:
        return sum(t["operators"].get(op, {}).get(counter, 0) for t in metrics)

    assert total("parse", "records_dead_lettered") == len(bad_parsed)
    assert total("sum", "records_dead_lettered") == len(rejected)
    assert total("parse", "records_skipped") == total("sum", "records_skipped") == 0


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(240)
def test_skip_as_the_job_default_counts_in_the_job_result():
    records = make_records(12, n=1000)
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.set_error_policy(ErrorPolicy.skip())
    job_with_policies(env, records, True, None).add_sink(print_nothing)
    result = env.execute("skip-default")
    bad_parsed, rejected, _ = reference_job(records)
    assert result.operator_metrics["parse"]["records_skipped"] == len(bad_parsed)
    assert result.operator_metrics["sum"]["records_skipped"] == len(rejected)


def print_nothing(value: Any) -> None:
    pass


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(240)
def test_without_a_policy_the_job_fails_with_the_record_named():
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.set_restart_strategy(RestartStrategies.no_restart())
    env.from_collection([(1, 0, False), (7, 1, True), (9, 2, False)]).map(check).name(
        "parse"
    ).add_sink(print_nothing)
    with pytest.raises(JobExecutionError) as info:
        env.execute("fail-default")
    text = str(info.value)
    assert "operator 'parse'" in text and "(7, 1, True)" in text and "bad record 7" in text


def reject_some(event: tuple) -> tuple:
    if event[1] % 53 == 7:
        raise ValueError(f"bad event {event[1]}")
    return event


def letter_or_output(item: Any) -> tuple:
    if isinstance(item, DeadLetter):
        return ("dead", item.record[1], item.operator, item.exception_type, item.timestamp)
    return ("out",) + tuple(item)


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(240)
def test_dead_letters_and_counts_are_exactly_once_across_a_task_kill(tmp_path):
    from tests.chaos_jobs import Collector, PacedEvents, SequenceCheck, kill_task, wait_until

    n = 12_000
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.enable_checkpointing(150)
    env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "checkpoints"))
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(5, 0))
    events = env.from_source(PacedEvents(n, rate=1000), source_name="events")
    checked = events.map(reject_some).name("reject").set_error_policy(ErrorPolicy.dead_letter(DLQ))
    counted = checked.key_by(lambda e: e[0]).process(SequenceCheck()).name("seq")
    out = counted.union(checked.get_side_output(DLQ)).map(letter_or_output)
    col = Collector(out.execute_and_collect("dead-letter-kill"))
    client = col.client
    wait_until(lambda: client.get_checkpoint_stats()["completed"] >= 2, what="two checkpoints")
    kill_task("dead-letter-kill", "reject", attempt=0)  # the chain holding the counts
    values = col.join()
    assert client.get_checkpoint_stats()["restarts"] == 1
    bad = [s for s in range(n) if s % 53 == 7]
    dead = sorted(v for v in values if v[0] == "dead")
    assert [d[1] for d in dead] == bad  # each bad event once, none lost, none repeated
    # the source attaches no timestamps here, so neither do the dead letters
    assert all(d[2:] == ("reject", "ValueError", None) for d in dead), dead[:3]
    outs = [v[1:] for v in values if v[0] == "out"]
    assert sorted(o[2] for o in outs) == [s for s in range(n) if s % 53 != 7]
    per_key: dict = {}
    for key, count, _ in outs:
        per_key.setdefault(key, []).append(count)
    assert all(sorted(c) == list(range(1, len(c) + 1)) for c in per_key.values())
    counts = [
        t["operators"]["reject"]["records_dead_lettered"]
        for t in client.metrics()["tasks"]
        if "reject" in t.get("operators", {})
    ]
    assert sum(counts) == len(bad)


class CountingMap:
    """A map with keyed state (allowed on a keyed stream): numbers each key's good records."""

    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count"))

    def map(self, value):
        check(value)
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        return (value[1], n, value[0])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("ks", [key_of, raising_key], ids=["function", "key selector"])
def test_keyed_map_with_state(seed, policy, ks):
    from raystream import MapFunction
    from raystream.operators.keyed_functions import KeyedMapOperator

    class Fn(CountingMap, MapFunction):
        pass

    records = make_records(seed)
    stamps = stamps_of(records)
    op = with_policy(KeyedMapOperator("count", Fn(), ks), POLICIES[policy])
    h = run(op, records, stamps, seed, keyed=True)
    counts: dict[int, int] = {}
    want = []
    for r, t in zip(records, stamps):
        if not r[2]:
            counts[r[1]] = counts.get(r[1], 0) + 1
            want.append(((r[1], counts[r[1]], r[0]), t))
    assert h.output == want
    check_policy_outcome(h, policy, records, stamps, "count")
