"""Redis Streams source and sink against a real redis-server (the ``redis_server`` fixture).

Every test uses keys of its own (a random prefix), so tests share the module's server. Jobs end
by themselves (bounded sources) or are canceled once a waited-for condition holds; nothing
sleeps and hopes.
"""

from __future__ import annotations

import pickle
import random
import time
import uuid

import pytest
import ray

from raystream import (
    AggregateFunction,
    JobExecutionError,
    KeyedProcessFunction,
    MapFunction,
    ProcessFunction,
    RestartStrategies,
    StreamExecutionEnvironment,
    TumblingEventTimeWindows,
    ValueStateDescriptor,
    WatermarkStrategy,
)
from raystream.connectors.redis import (
    RedisConnectorError,
    RedisStreamSink,
    RedisStreamSource,
    StartPosition,
)
from raystream.operators.sinks import SinkContext
from raystream.runtime.elements import Batch
from tests.brokers import free_port
from tests.chaos_jobs import Collector, task_actors, wait_until

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.timeout(240)]


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def env_with(parallelism: int, checkpoint_ms: int | None = None) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    if checkpoint_ms is not None:
        env.enable_checkpointing(checkpoint_ms)
    env.set_restart_strategy(RestartStrategies.no_restart())
    return env


def xadd_all(client, stream: str, entries: list[tuple[str, dict]]) -> None:
    """Appends ``(entry id, fields)`` pairs in pipelined round trips."""
    for i in range(0, len(entries), 1000):
        pipe = client.pipeline(transaction=False)
        for entry_id, fields in entries[i : i + 1000]:
            pipe.xadd(stream, fields, id=entry_id)
        pipe.execute()


def xrange_all(client, stream: str) -> list[tuple[str, dict]]:
    return [
        (i.decode(), {k.decode(): v.decode() for k, v in f.items()})
        for i, f in client.xrange(stream)
    ]


def with_entry(stream, entry_id, fields):
    return (stream, entry_id, {k.decode(): v.decode() for k, v in fields.items()})


class WithTimestamp(ProcessFunction):
    def process_element(self, value, ctx):
        yield (*value, ctx.timestamp())


# --- source -------------------------------------------------------------------------------------


def test_bounded_read_of_several_streams_equals_what_was_added(redis_server):
    r = redis_server.client()
    p = prefix()
    rng = random.Random(3)
    expected = []
    for s in range(3):
        stream, ms = f"{p}:s{s}", 1000
        entries = []
        for i in range(400 + 150 * s):
            ms += rng.randrange(3)  # several entries per millisecond now and then
            entries.append((f"{ms}-{i}", {"n": str(i), "s": str(s)}))
            expected.append((stream, f"{ms}-{i}", {"n": str(i), "s": str(s)}, ms))
        xadd_all(r, stream, entries)
    env = env_with(2)
    source = RedisStreamSource(
        redis_server.url,
        [f"{p}:s0", f"{p}:s1", f"{p}:s2"],
        bounded=True,
        count=97,
        deserializer=with_entry,
    )
    got = list(
        env.from_source(source, source_name="redis").process(WithTimestamp()).execute_and_collect()
    )
    key = lambda v: (v[0], v[1])  # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)
    # per stream in entry id order, the order they were read in
    for s in range(3):
        ids = [v[1] for v in got if v[0] == f"{p}:s{s}"]
        assert ids == [e[1] for e in expected if e[0] == f"{p}:s{s}"]


def test_start_positions_bounded(redis_server):
    r = redis_server.client()
    stream = f"{prefix()}:pos"
    xadd_all(
        r, stream, [(f"{i}-{j}", {"i": str(i), "j": str(j)}) for i in range(1, 11) for j in (0, 1)]
    )

    starts = {
        "0": "0",
        "earliest": StartPosition.earliest(),
        "4-0": "4-0",  # after 4-0
        "after 4-0": StartPosition.after_id("4-0"),
        "from 4-0": StartPosition.from_id("4-0"),
        "from 4-1": StartPosition.from_id("4-1"),
        "from 7 ms": StartPosition.from_timestamp(7),
        "$": "$",  # latest, bounded: nothing comes after the last id
        "latest": StartPosition.latest(),
    }
    env = env_with(1)
    streams = [
        env.from_source(
            RedisStreamSource(redis_server.url, [stream], start=start, bounded=True),
            source_name=label,
        ).map(lambda v, label=label: (label, f"{v['i']}-{v['j']}"))
        for label, start in starts.items()
    ]
    rows = list(streams[0].union(*streams[1:]).execute_and_collect())
    read = {label: [i for lab, i in rows if lab == label] for label in starts}
    everything = [f"{i}-{j}" for i in range(1, 11) for j in (0, 1)]
    assert read == {
        "0": everything,
        "earliest": everything,
        "4-0": everything[7:],
        "after 4-0": everything[7:],
        "from 4-0": everything[6:],
        "from 4-1": everything[7:],
        "from 7 ms": everything[12:],
        "$": [],
        "latest": [],
    }


def test_latest_reads_only_entries_added_after_discovery(redis_server):
    r = redis_server.client()
    stream = f"{prefix()}:latest"
    xadd_all(r, stream, [(f"{i}-0", {"old": str(i)}) for i in range(1, 11)])
    source = RedisStreamSource(redis_server.url, [stream], start="$")
    col = Collector(env_with(1).from_source(source).execute_and_collect("latest"))
    try:
        probes = 0

        def probe_seen() -> bool:
            nonlocal probes
            r.xadd(stream, {"probe": str(probes)})
            probes += 1
            time.sleep(0.02)  # paces the probes; the wait is on the condition
            return any("probe" in v for v in col.values)

        wait_until(probe_seen, what="a probe entry read")
        r.xadd(stream, {"probe": "final"})
        wait_until(lambda: any(v.get("probe") == "final" for v in col.values), what="final")
    finally:
        col.client.cancel()
    assert not any("old" in v for v in col.values)
    seen = [v["probe"] for v in col.values]
    first = int(seen[0])
    assert seen == [str(i) for i in range(first, probes)] + ["final"]


def test_pattern_discovery_picks_up_a_stream_created_while_running(redis_server):
    r = redis_server.client()
    p = prefix()
    xadd_all(r, f"{p}:a", [(f"{i}-0", {"s": "a", "i": str(i)}) for i in range(1, 6)])
    r.set(f"{p}:not-a-stream", "x")  # matches the pattern, is no stream: ignored
    source = RedisStreamSource(redis_server.url, pattern=f"{p}:*", discovery_interval_ms=100)
    col = Collector(env_with(2).from_source(source).execute_and_collect("discovery"))
    try:
        wait_until(lambda: len(col.values) >= 5, what="stream a read")
        xadd_all(r, f"{p}:b", [(f"{i}-0", {"s": "b", "i": str(i)}) for i in range(1, 8)])
        xadd_all(r, f"other{p}", [("1-0", {"s": "other", "i": "1"})])
        xadd_all(r, f"{p}:a", [("100-0", {"s": "a", "i": "100"})])
        wait_until(lambda: len(col.values) >= 13, what="stream b discovered and read")
    finally:
        col.client.cancel()
    got = sorted((v["s"], int(v["i"])) for v in col.values)
    assert got == sorted([("a", i) for i in [1, 2, 3, 4, 5, 100]] + [("b", i) for i in range(1, 8)])


class CountPerWindow(AggregateFunction):
    def create_accumulator(self):
        return 0

    def add(self, value, acc):
        return acc + 1

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return a + b


def with_window_start(key, ctx, counts):
    yield (key, ctx.window().start, next(iter(counts)))


def test_per_stream_watermarks_keep_a_lagging_stream_on_time(redis_server):
    """Stream b's event time lags a's by 5 s; one watermark generator for both would make b's
    records late (dropped by the windows); one per stream drops nothing."""
    r = redis_server.client()
    p = prefix()
    n = 3000
    xadd_all(r, f"{p}:a", [(f"{5001 + i * 5}-0", {"s": "a"}) for i in range(n)])
    xadd_all(r, f"{p}:b", [(f"{1 + i * 5}-0", {"s": "b"}) for i in range(n)])
    source = RedisStreamSource(redis_server.url, [f"{p}:a", f"{p}:b"], bounded=True, count=200)
    strategy = WatermarkStrategy.for_monotonous_timestamps()
    env = env_with(1)
    env.get_config().set_auto_watermark_interval(1)
    got = (
        env.from_source(source, strategy, "redis")
        .key_by(lambda v: v["s"])
        .window(TumblingEventTimeWindows.of(1000))
        .aggregate(CountPerWindow(), window_function=with_window_start)
        .execute_and_collect()
    )
    ref: dict = {}
    for i in range(n):
        for s, ts in (("a", 5001 + i * 5), ("b", 1 + i * 5)):
            ref[(s, ts // 1000 * 1000)] = ref.get((s, ts // 1000 * 1000), 0) + 1
    assert sorted(got) == sorted((s, w, c) for (s, w), c in ref.items())


def test_an_idle_stream_does_not_stall_event_time_with_idleness(redis_server):
    """One quiet stream (one entry at 1 ms) and one the test keeps appending to: windows of the
    busy stream close only once the quiet stream's watermark (stuck near 0) leaves the minimum.
    (As in Flink, a source subtask whose splits are all idle is idle itself: it emits no
    watermark, so the busy stream is kept busy.)"""
    r = redis_server.client()
    p = prefix()
    xadd_all(r, f"{p}:quiet", [("1-0", {"s": "quiet"})])
    source = RedisStreamSource(redis_server.url, [f"{p}:busy", f"{p}:quiet"])  # unbounded
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_idleness(1000)
    stream = (
        env_with(1)
        .from_source(source, strategy, "redis")
        .key_by(lambda v: v["s"])
        .window(TumblingEventTimeWindows.of(1000))
        .aggregate(CountPerWindow(), window_function=with_window_start)
    )
    col = Collector(stream.execute_and_collect("idleness"))
    written = 0

    def window_8000_fired() -> bool:
        nonlocal written
        if any(v[1] == 8000 for v in col.values):
            return True
        xadd_all(r, f"{p}:busy", [(f"{(written + i) * 10}-0", {"s": "busy"}) for i in range(1, 21)])
        written += 20
        return False

    try:
        wait_until(window_8000_fired, what="window [8000, 9000) of the busy stream")
    finally:
        col.client.cancel()
    busy = sorted(v for v in col.values if v[0] == "busy")
    expected = [("busy", 0, 99)] + [("busy", w, 100) for w in range(1000, 9000, 1000)]
    assert busy[: len(expected)] == expected
    assert ("quiet", 0, 1) in col.values


# --- sink ---------------------------------------------------------------------------------------


def test_sink_commit_is_atomic_per_chunk_and_idempotent(redis_server):
    """A commit that fails half way (a target key of the wrong type) appended its earlier chunks
    and nothing of the failing one; committing again appends only the rest, and once more,
    nothing."""
    r = redis_server.client()
    p = prefix()
    good, bad = f"{p}:out", f"{p}:bad"
    r.set(bad, "a string")
    records = [{"i": i, "to": good if i != 23 else bad} for i in range(50)]
    sink = RedisStreamSink(
        redis_server.url, lambda rec: rec["to"], marker_key=f"{p}:marker", chunk_size=10
    )
    sink.open(SinkContext("sink", 0, 1))
    txn = sink.begin_transaction()
    sink.write(txn, Batch(records[:30]))
    sink.write(txn, Batch(records[30:]))
    sink.pre_commit(txn)
    assert txn.chunks == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50)]
    saved = pickle.dumps(txn)  # what the checkpoint holds
    with pytest.raises(RedisConnectorError, match=rf"chunk 2 .*{bad}.*not a stream"):
        sink.commit(txn)
    assert [int(f["i"]) for _, f in xrange_all(r, good)] == list(range(20))
    r.delete(bad)
    sink.commit(txn)
    assert [int(f["i"]) for _, f in xrange_all(r, good)] == [i for i in range(50) if i != 23]
    assert [int(f["i"]) for _, f in xrange_all(r, bad)] == [23]
    # the checkpointed copy, restored by another subtask (as after a crash and a rescale),
    # keeps its writer id and appends nothing
    restored = RedisStreamSink(
        redis_server.url, lambda rec: rec["to"], marker_key=f"{p}:marker", chunk_size=10
    )
    restored.open(SinkContext("sink", 1, 2))
    assert restored.begin_transaction().writer_id != txn.writer_id
    restored.recover_and_commit(pickle.loads(saved))
    assert r.xlen(good) == 49 and r.xlen(bad) == 1
    sink.close()
    restored.close()


def test_sink_orders_commits_of_one_writer(redis_server):
    r = redis_server.client()
    p = prefix()
    sink = RedisStreamSink(redis_server.url, f"{p}:out")
    sink.open(SinkContext("sink", 0, 1))
    first, second = sink.begin_transaction(), sink.begin_transaction()
    sink.write(first, Batch([{"n": 1}]))
    sink.write(second, Batch([{"n": 2}]))
    sink.pre_commit(first)
    sink.pre_commit(second)
    with pytest.raises(RedisConnectorError, match="predecessor"):
        sink.commit(second)  # its marker would hide the first one
    sink.commit(first)
    sink.commit(second)
    sink.commit(second)
    assert [f["n"] for _, f in xrange_all(r, f"{p}:out")] == ["1", "2"]
    sink.close()


def test_at_least_once_and_without_checkpoints_append_everything(redis_server):
    r = redis_server.client()
    p = prefix()
    for mode, checkpoints in (("at-least-once", 100), ("exactly-once", None)):
        out = f"{p}:{mode}"
        env = env_with(2, checkpoints)
        env.from_collection(list(range(500))).map(lambda i: {"i": i, "sq": i * i}).sink_to(
            RedisStreamSink(redis_server.url, out, guarantee=mode, maxlen=10_000)
        )
        env.execute(mode)
        got = sorted((int(f["i"]), int(f["sq"])) for _, f in xrange_all(r, out))
        assert got == [(i, i * i) for i in range(500)], mode


# --- exactly once end to end, under task kills ------------------------------------------------

N_EVENTS = 40_000
KEYS = 7
WINDOW_MS = 1000


def event_fields(stream, entry_id, fields):
    return (int(fields[b"k"]), int(fields[b"i"]))


class Pace(MapFunction):
    """Lets about ``rate`` records per second through per subtask, so the job runs long enough
    to checkpoint and be killed several times."""

    def __init__(self, rate: float):
        self.rate = rate

    def open(self, ctx):
        self.t0 = time.monotonic()
        self.n = 0

    def map(self, value):
        self.n += 1
        if self.n % 200 == 0:
            ahead = self.n / self.rate - (time.monotonic() - self.t0)
            if ahead > 0:
                time.sleep(ahead)
        return value


class CountAndSum(AggregateFunction):
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + 1, acc[1] + value[1])

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


def with_window(key, ctx, results):
    count, total = next(iter(results))
    yield (key, ctx.window().start, count, total)


class NumberWindows(KeyedProcessFunction):
    def open(self, ctx):
        self.n = ctx.get_state(ValueStateDescriptor("n"))

    def process_element(self, value, ctx):
        n = (self.n.value() or 0) + 1
        self.n.update(n)
        yield {"key": value[0], "start": value[1], "count": value[2], "sum": value[3], "n": n}


def write_events(r, p: str) -> list[str]:
    """Events i = 0..N-1 with key i % KEYS at event time 1 + 2 i ms, spread over two streams."""
    streams = [f"{p}:in0", f"{p}:in1"]
    for s, stream in enumerate(streams):
        xadd_all(
            r,
            stream,
            [(f"{1 + i * 2}-0", {"k": str(i % KEYS), "i": str(i)}) for i in range(s, N_EVENTS, 2)],
        )
    return streams


def window_reference() -> list[tuple]:
    windows: dict = {}
    for i in range(N_EVENTS):
        w = windows.setdefault((i % KEYS, (1 + i * 2) // WINDOW_MS * WINDOW_MS), [0, 0])
        w[0] += 1
        w[1] += i
    return sorted((k, ws, c, s) for (k, ws), (c, s) in windows.items())


def test_exactly_once_window_job_redis_to_redis_under_task_kills(redis_server, tmp_path):
    """Two input streams → one source subtask (per-stream watermarks) → windows and numbering
    at parallelism 2 → exactly-once sink in chunks of 3 entries; checkpoints every 300 ms, three
    task actors killed, each after a checkpoint of its attempt. The output stream must equal the
    brute-force reference: no window lost or appended twice.

    One source subtask: with several, the split-source runtime lets event time run ahead of a
    subtask that has not received its streams yet (it is idle meanwhile), which makes its first
    records late (see docs/redis.md, Limits)."""
    r = redis_server.client()
    p = prefix()
    streams = write_events(r, p)
    out = f"{p}:out"
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.enable_checkpointing(300)
    env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "checkpoints"))
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(6, 0))
    source = RedisStreamSource(
        redis_server.url, streams, bounded=True, deserializer=event_fields, count=200
    )
    (
        env.from_source(source, WatermarkStrategy.for_monotonous_timestamps(), "redis-in")
        .set_parallelism(1)
        .uid("redis-in")
        .map(Pace(8000))
        .set_parallelism(1)
        .key_by(lambda e: e[0])
        .window(TumblingEventTimeWindows.of(WINDOW_MS))
        .aggregate(CountAndSum(), window_function=with_window)
        .uid("windows")
        .key_by(lambda w: w[0])
        .process(NumberWindows())
        .uid("numbering")
        .sink_to(RedisStreamSink(redis_server.url, out, chunk_size=3))
        .uid("redis-out")
    )
    job = f"redis-chaos-{p}"
    client = env.execute_async(job)
    rng = random.Random(5)
    kills = 0
    for attempt in range(3):
        done = client.get_checkpoint_stats()["completed"]
        wait_until(
            lambda a=attempt, d=done: (
                (
                    client.get_checkpoint_stats()["completed"] > d
                    and client.get_checkpoint_stats()["attempt"] == a
                )
                or client.get_job_status().is_globally_terminal_state()
            ),
            timeout_s=180,
            what=f"a checkpoint in attempt {attempt}",
        )
        if client.get_job_status().is_globally_terminal_state():
            break
        suffix = "" if attempt == 0 else f"#{attempt}"
        actors = task_actors(job)
        names = [n for n in sorted(actors) if n.endswith(suffix) and ("#" in n) == bool(suffix)]
        rng.shuffle(names)
        if not names:
            continue
        ray.kill(actors[names[0]])
        kills += 1
        wait_until(
            lambda a=attempt: (
                client.get_checkpoint_stats()["attempt"] > a
                or client.get_job_status().is_globally_terminal_state()
            ),
            timeout_s=180,
            what="the restart",
        )
    result = client.wait(180)
    assert kills == 3 and result.restarts >= 3, (kills, result.restarts)
    rows = [f for _, f in xrange_all(r, out)]
    got = sorted((int(f["key"]), int(f["start"]), int(f["count"]), int(f["sum"])) for f in rows)
    assert got == window_reference()  # nothing lost, nothing twice
    for key in range(KEYS):
        ns = sorted(int(f["n"]) for f in rows if int(f["key"]) == key)
        assert ns == list(range(1, len(ns) + 1)), f"key {key}: numbering not contiguous"


class RunningCount(KeyedProcessFunction):
    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count"))

    def process_element(self, value, ctx):
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        yield {"key": value[0], "i": value[1], "n": n}


def rescale_job(url, streams, out, parallelism, checkpoints, name, savepoint=None):
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    env.enable_checkpointing(200)
    env.get_checkpoint_config().set_checkpoint_storage(str(checkpoints))
    env.set_restart_strategy(RestartStrategies.no_restart())
    source = RedisStreamSource(url, streams, deserializer=event_fields, count=100)  # unbounded
    (
        env.from_source(source, source_name="redis-in")
        .uid("redis-in")
        .key_by(lambda e: e[0])
        .process(RunningCount())
        .uid("count")
        .sink_to(RedisStreamSink(url, out, chunk_size=50))
        .uid("redis-out")
    )
    return env.execute_async(name, savepoint_path=savepoint)


def test_restore_at_another_parallelism_from_a_savepoint(redis_server, tmp_path):
    """2 subtasks → savepoint → 3 subtasks. The savepoint's transactions were committed when it
    completed; the restored job commits them again under their old writer ids, which appends
    nothing."""
    r = redis_server.client()
    p = prefix()
    streams = [f"{p}:in0", f"{p}:in1", f"{p}:in2"]
    out = f"{p}:out"

    def add(lo: int, hi: int) -> None:
        for s, stream in enumerate(streams):
            entries = [(f"{i + 1}-0", {"k": str(i % 5), "i": str(i)}) for i in range(lo, hi)]
            xadd_all(r, stream, [e for e in entries if int(e[1]["i"]) % 3 == s])

    add(0, 3000)
    first = rescale_job(redis_server.url, streams, out, 2, tmp_path / "a", f"rescale-a-{p}")
    wait_until(lambda: r.xlen(out) > 0, what="first output committed")
    savepoint = first.stop_with_savepoint(str(tmp_path / "savepoint"))
    first.wait(60)
    before = r.xlen(out)
    add(3000, 5000)
    second = rescale_job(
        redis_server.url, streams, out, 3, tmp_path / "b", f"rescale-b-{p}", savepoint
    )
    wait_until(lambda: r.xlen(out) >= 5000, what="every event counted")
    second.stop_with_savepoint(str(tmp_path / "savepoint-2"))
    second.wait(60)
    rows = [f for _, f in xrange_all(r, out)]
    assert 0 < before <= len(rows)
    assert sorted(int(f["i"]) for f in rows) == list(range(5000))  # once each, across the rescale
    for key in range(5):
        ns = sorted(int(f["n"]) for f in rows if int(f["key"]) == key)
        assert ns == list(range(1, 1001)), f"key {key}: counts not contiguous"


# --- errors -------------------------------------------------------------------------------------


def test_unreachable_server_fails_with_a_clear_error():
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = env_with(1)
    env.from_source(RedisStreamSource(url, ["s"], bounded=True, timeout_s=2)).print()
    with pytest.raises(JobExecutionError) as info:
        env.execute("unreachable")
    msg = str(info.value)
    assert "RedisStreamSource" in msg and url in msg and "reachable" in msg


def test_wrong_password_fails_with_a_clear_error(redis_server):
    r = redis_server.client()
    user = f"u{uuid.uuid4().hex[:6]}"
    r.execute_command("ACL", "SETUSER", user, "on", ">right", "~*", "+@all")
    try:
        url = f"redis://{user}:wrong@127.0.0.1:{redis_server.port}/0"
        env = env_with(1)
        env.from_source(RedisStreamSource(url, ["s"], bounded=True)).print()
        with pytest.raises(JobExecutionError) as info:
            env.execute("wrong-password")
        msg = str(info.value)
        assert "RedisStreamSource" in msg and "authentication" in msg and "wrong" not in msg
        env = env_with(1)
        env.from_collection([{"a": 1}]).sink_to(RedisStreamSink(url, "out"))
        with pytest.raises(JobExecutionError, match="RedisStreamSink.*authentication"):
            env.execute("wrong-password-sink")
    finally:
        r.execute_command("ACL", "DELUSER", user)


def fails_on_seven(stream, entry_id, fields):
    if fields[b"i"] == b"7":
        raise ValueError("seven is not allowed")
    return fields


def test_a_failing_deserializer_names_stream_entry_and_fields(redis_server):
    r = redis_server.client()
    stream = f"{prefix()}:bad"
    xadd_all(r, stream, [(f"{i}-0", {"i": str(i)}) for i in range(1, 20)])
    env = env_with(1)
    env.from_source(
        RedisStreamSource(redis_server.url, [stream], bounded=True, deserializer=fails_on_seven)
    ).print()
    with pytest.raises(JobExecutionError) as info:
        env.execute("bad-entry")
    msg = str(info.value)
    assert "RedisStreamSource" in msg and stream in msg and "entry 7-0" in msg
    assert "seven is not allowed" in msg and "b'7'" in msg


def test_a_key_of_the_wrong_type_and_a_bad_record_are_clear_errors(redis_server):
    r = redis_server.client()
    key = f"{prefix()}:str"
    r.set(key, "x")
    env = env_with(1)
    env.from_source(RedisStreamSource(redis_server.url, [key], bounded=True)).print()
    with pytest.raises(JobExecutionError, match=rf"RedisStreamSource.*{key}"):
        env.execute("wrong-type")
    env = env_with(1)
    env.from_collection([{"ok": 1}, {"bad": object()}]).sink_to(
        RedisStreamSink(redis_server.url, f"{key}:out")
    )
    with pytest.raises(JobExecutionError, match=r"RedisStreamSink: cannot turn record .*bad"):
        env.execute("bad-record")


# --- the example --------------------------------------------------------------------------------


def test_page_views_example_counts_per_minute_per_category(redis_server):
    from examples import redis_page_views

    p = prefix()
    events = redis_page_views.page_views(2000, seed=4)
    got = redis_page_views.run(redis_server.url, f"{p}:views", f"{p}:counts", events=events)
    ref: dict = {}
    for e in events:
        k = (e["category"], e["ts"] // 60_000 * 60_000)
        ref[k] = ref.get(k, 0) + 1
    assert sorted(got) == sorted((c, m, n) for (c, m), n in ref.items())


def test_docstring_examples_run():
    import doctest

    from raystream.operators import redis_streams

    failed, tried = doctest.testmod(redis_streams)
    assert tried > 0 and failed == 0
