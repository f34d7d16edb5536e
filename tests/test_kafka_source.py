"""KafkaSource against a real Kafka-protocol broker (Tansu) on a real local Ray.

Tansu quirks this module works around, each named where it matters:
- it reports a partition's high watermark as the base offset of the last record batch + 1, so
  records are produced one per batch (``batch.num.messages=1``) wherever the test relies on the
  end offset ("latest");
- it answers ListOffsets for a timestamp with offset 0 whatever the timestamp: the timestamp
  initializer's broker test is a strict xfail, its resolution logic is tested with a fake.
"""

from __future__ import annotations

import itertools
import random

import pytest

from raystream import (
    JobExecutionError,
    KeyedProcessFunction,
    RestartStrategies,
    StreamExecutionEnvironment,
    ValueStateDescriptor,
    WatermarkStrategy,
)
from raystream.api.error_policy import DeadLetter, ErrorPolicy
from raystream.api.functions import OutputTag
from raystream.common.serialization import ByteArraySchema, SimpleStringSchema
from raystream.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaRecord,
    KafkaRecordDeserializationSchema,
    KafkaSource,
    KafkaSourceError,
    KafkaTopicPartition,
)
from raystream.operators.kafka_source import java_string_hashcode, kafka_split_owner
from raystream.operators.windows import TumblingEventTimeWindows
from tests.brokers import free_port
from tests.chaos_jobs import Collector, kill_task, wait_until

pytestmark = [pytest.mark.timeout(240)]
ray_test = pytest.mark.usefixtures("ray_session")

_topics = itertools.count()
_jobs = itertools.count()


def new_topic(broker, partitions: int, prefix: str = "t") -> str:
    name = f"{prefix}-{next(_topics)}-{random.Random(len(prefix)).randrange(10**6)}"
    broker.create_topic(name, partitions)
    return name


def produce(broker, topic: str, per_partition: dict[int, list]) -> None:
    """One record per batch: Tansu's high watermark is then the true end offset."""
    for p, records in per_partition.items():
        broker.produce(topic, records, partition=p, **{"batch.num.messages": 1})


def source(broker, *topics: str, **kw) -> KafkaSource:  # noqa: ANN003
    b = KafkaSource.builder().set_bootstrap_servers(broker.bootstrap)
    if topics:
        b.set_topics(*topics)
    if "pattern" in kw:
        b.set_topic_pattern(kw.pop("pattern"))
    if "partitions" in kw:
        b.set_partitions(kw.pop("partitions"))
    if "group" in kw:
        b.set_group_id(kw.pop("group"))
    b.set_starting_offsets(kw.pop("start", KafkaOffsetsInitializer.earliest()))
    stop = kw.pop("stop", KafkaOffsetsInitializer.latest())
    if kw.pop("bounded", True):
        b.set_bounded(stop)
    elif stop is not None and kw.pop("with_stop", False):
        b.set_unbounded(stop)
    if "deserializer" in kw:
        b.set_deserializer(kw.pop("deserializer"))
    else:
        b.set_value_only_deserializer(kw.pop("value", SimpleStringSchema()))
    for k, v in kw.pop("props", {}).items():
        b.set_property(k, v)
    assert not kw, kw
    return b.build()


def run(src: KafkaSource, parallelism: int = 2, strategy=None, build=None) -> list:  # noqa: ANN001
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    stream = env.from_source(src, strategy, "kafka")
    if build is not None:
        stream = build(stream)
    return list(stream.execute_and_collect(f"kafka-job-{next(_jobs)}"))


# -- pure logic --------------------------------------------------------------------------------


def test_java_string_hashcode_matches_java():
    # values of "".hashCode() etc. in Java
    assert java_string_hashcode("") == 0
    assert java_string_hashcode("a") == 97
    assert java_string_hashcode("hello") == 99162322
    # the definition, over UTF-16 code units with 32-bit wrap-around (incl. a surrogate pair)
    for s in ["topic-with-a-long-name", "événements", "x\U0001f600y", "orders"]:
        h = 0
        units = s.encode("utf-16-be")
        for i in range(0, len(units), 2):
            h = (31 * h + int.from_bytes(units[i : i + 2], "big")) % 2**32
        assert java_string_hashcode(s) == (h - 2**32 if h >= 2**31 else h)


def test_owner_is_flinks_round_robin_from_a_topic_start():
    for topic in ["orders", "événements", "t"]:
        for p in (1, 3, 4):
            start = ((java_string_hashcode(topic) * 31) & 0x7FFFFFFF) % p
            owners = [kafka_split_owner(topic, i, p) for i in range(8)]
            assert owners == [(start + i) % p for i in range(8)]


class FakeLookup:
    def __init__(self, ends: dict, committed: dict, by_time: dict):
        self.ends, self.comm, self.by_time = ends, committed, by_time

    def earliest(self, parts):
        return {tp: 0 for tp in parts}

    def latest(self, parts):
        return {tp: self.ends[tp] for tp in parts}

    def committed(self, parts):
        return {tp: self.comm.get(tp) for tp in parts}

    def for_timestamp(self, parts, ts):
        return {tp: self.by_time.get((tp, ts)) for tp in parts}


def test_initializers_resolve_to_concrete_offsets():
    a, b = KafkaTopicPartition("t", 0), KafkaTopicPartition("t", 1)
    fake = FakeLookup({a: 10, b: 20}, {a: 4}, {(a, 100): 7})
    KOI, R = KafkaOffsetsInitializer, KafkaOffsetResetStrategy
    assert KOI.earliest().resolve([a, b], fake) == {a: 0, b: 0}
    assert KOI.latest().resolve([a, b], fake) == {a: 10, b: 20}
    # no record at or after the timestamp: the end
    assert KOI.timestamp(100).resolve([a, b], fake) == {a: 7, b: 20}
    assert KOI.committed_offsets(R.EARLIEST).resolve([a, b], fake) == {a: 4, b: 0}
    assert KOI.committed_offsets(R.LATEST).resolve([a, b], fake) == {a: 4, b: 20}
    with pytest.raises(KafkaSourceError, match="t-1"):
        KOI.committed_offsets().resolve([a, b], fake)
    assert KOI.offsets({b: 3}).resolve([a, b], fake) == {a: 0, b: 3}
    assert KOI.offsets({b: 3}, R.LATEST).resolve([a, b], fake) == {a: 10, b: 3}


def test_builder_rejects_incomplete_sources():
    from raystream.errors import GraphError

    with pytest.raises(GraphError, match="bootstrap"):
        KafkaSource.builder().set_topics("t").build()
    with pytest.raises(GraphError, match="no topics"):
        KafkaSource.builder().set_bootstrap_servers("x:1").build()
    with pytest.raises(GraphError, match="exactly one"):
        KafkaSource.builder().set_topics("t").set_topic_pattern("t.*")
    with pytest.raises(GraphError, match="deserializer"):
        KafkaSource.builder().set_bootstrap_servers("x:1").set_topics("t").build()


def test_pending_records_is_the_end_offset_minus_what_the_reader_read(kafka_broker):
    """The source lag metric (``pending_records``), read from the consumer's cache without a
    broker call; unbounded (no stop offset), so the end comes from the broker's fetches."""
    from raystream.operators.kafka_source import KafkaPartitionSplit
    from raystream.operators.split_source import ReaderContext

    topic = new_topic(kafka_broker, 2)
    produce(kafka_broker, topic, {0: [f"a{i}" for i in range(30)], 1: ["b0", "b1"]})
    src = source(kafka_broker, topic, bounded=False, stop=None)
    reader = src.create_reader(ReaderContext("kafka", 0, 1, lambda: 0))
    try:
        assert reader.pending_records() is None  # nothing held
        reader.add_splits([KafkaPartitionSplit(topic, 0, 0), KafkaPartitionSplit(topic, 1, 1)])
        read = 0

        def after_ten() -> bool:
            nonlocal read
            read += sum(len(r.values) for r in reader.poll(10 - read) if r.split_id.endswith("-0"))
            return read >= 10 and reader.pending_records() is not None

        wait_until(after_ten, 60, "ten records of partition 0 and its end offset")
        both = reader.pending_records()
        # partition 1 may or may not have been fetched (and read to its end) by now
        assert both in (30 - read, 30 - read + 1)
    finally:
        reader.close()


# -- bounded reads and starting offsets --------------------------------------------------------


@ray_test
def test_bounded_read_of_a_multi_partition_topic_equals_what_was_produced(kafka_broker):
    topic = new_topic(kafka_broker, 4)
    data = {p: [f"{p}:{i}" for i in range(50 + 10 * p)] for p in range(4)}
    produce(kafka_broker, topic, data)
    got = run(source(kafka_broker, topic), parallelism=3)
    assert sorted(got) == sorted(v for vs in data.values() for v in vs)
    # per partition in offset order (the records of one partition stay in order)
    for p, vs in data.items():
        assert [v for v in got if v.startswith(f"{p}:")] == vs


@ray_test
@pytest.mark.parametrize("case", ["explicit", "committed-earliest", "committed-latest", "latest"])
def test_starting_offsets(kafka_broker, case):
    topic = new_topic(kafka_broker, 2)
    data = {p: [f"{p}:{i}" for i in range(20)] for p in range(2)}
    produce(kafka_broker, topic, data)
    tp0, tp1 = KafkaTopicPartition(topic, 0), KafkaTopicPartition(topic, 1)
    group = f"g-{topic}"
    R = KafkaOffsetResetStrategy
    if case == "explicit":
        start = KafkaOffsetsInitializer.offsets({tp0: 5, tp1: 17})
        expected = data[0][5:] + data[1][17:]
    elif case == "latest":
        start = KafkaOffsetsInitializer.latest()
        expected = []
    else:
        commit_offsets(kafka_broker, group, {tp0: 12})  # partition 1 has no committed offset
        reset = R.EARLIEST if case == "committed-earliest" else R.LATEST
        start = KafkaOffsetsInitializer.committed_offsets(reset)
        expected = data[0][12:] + (data[1] if reset == R.EARLIEST else [])
    got = run(source(kafka_broker, topic, group=group, start=start))
    assert sorted(got) == sorted(expected)


def commit_offsets(broker, group: str, offsets: dict) -> None:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        c.commit(
            offsets=[TopicPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()],
            asynchronous=False,
        )
    finally:
        c.close()


def committed(broker, group: str, parts: list) -> dict:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(tp.topic, tp.partition) for tp in parts], timeout=10)
        return {KafkaTopicPartition(t.topic, t.partition): t.offset for t in got}
    finally:
        c.close()


@ray_test
def test_committed_offsets_without_a_reset_strategy_fail_naming_the_partition(kafka_broker):
    topic = new_topic(kafka_broker, 1)
    produce(kafka_broker, topic, {0: ["a"]})
    src = source(
        kafka_broker, topic, group=f"g-{topic}", start=KafkaOffsetsInitializer.committed_offsets()
    )
    with pytest.raises(JobExecutionError, match=f"{topic}-0.*NONE"):
        run(src)


@ray_test
@pytest.mark.xfail(
    strict=True,
    reason="Tansu answers ListOffsets for a timestamp with offset 0 whatever the timestamp",
)
def test_timestamp_starting_offsets(kafka_broker):
    topic = new_topic(kafka_broker, 1)
    produce(kafka_broker, topic, {0: [(None, f"v{i}".encode(), 1000 + i) for i in range(20)]})
    got = run(source(kafka_broker, topic, start=KafkaOffsetsInitializer.timestamp(1010)))
    assert sorted(got) == sorted(f"v{i}" for i in range(10, 20))


@ray_test
def test_topic_pattern_reads_every_matching_topic(kafka_broker):
    tag = f"pat{next(_topics)}"
    a, b, other = f"{tag}-a", f"{tag}-b", f"x{tag}-c"
    for name, n in ((a, 2), (b, 1), (other, 1)):
        kafka_broker.create_topic(name, n)
        produce(kafka_broker, name, {p: [f"{name}/{p}/{i}" for i in range(5)] for p in range(n)})
    src = (
        KafkaSource.builder()
        .set_bootstrap_servers(kafka_broker.bootstrap)
        .set_topic_pattern(f"{tag}-.*")
        .set_bounded(KafkaOffsetsInitializer.latest())
        .set_value_only_deserializer(SimpleStringSchema())
        .build()
    )
    got = run(src)
    expected = [f"{n}/{p}/{i}" for n, k in ((a, 2), (b, 1)) for p in range(k) for i in range(5)]
    assert sorted(got) == sorted(expected)


class WholeRecord(KafkaRecordDeserializationSchema):
    def deserialize(self, record: KafkaRecord):
        return (
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            record.timestamp,
            tuple(record.headers),
        )


@ray_test
def test_record_deserializer_sees_key_headers_partition_offset_timestamp(kafka_broker):
    from confluent_kafka import Producer

    topic = new_topic(kafka_broker, 2)
    p = Producer({"bootstrap.servers": kafka_broker.bootstrap, "batch.num.messages": 1})
    sent = []
    for i in range(12):
        headers = [("h", f"x{i}".encode())] if i % 2 else []
        p.produce(
            topic, value=f"v{i}".encode(), key=f"k{i}".encode(), partition=i % 2,
            timestamp=5000 + i, headers=headers,
        )  # fmt: skip
        sent.append((topic, i % 2, f"k{i}".encode(), f"v{i}".encode(), 5000 + i, tuple(headers)))
    assert p.flush(30) == 0
    got = run(source(kafka_broker, topic, deserializer=WholeRecord()))
    stored = {(r[0], r[1], r[3], r[4], r[5], r[6]) for r in got}
    assert stored == set(sent) and len(got) == len(sent)
    # offsets as the broker numbers them
    broker_view = kafka_broker.consume_all(topic, idle_s=0.5)
    assert sorted((r[1], r[2], r[4]) for r in got) == sorted(
        (part, off, value) for part, off, _, value, _ in broker_view
    )


# -- event time -----------------------------------------------------------------------------------

WINDOW_MS = 1000
LATE = OutputTag("late")


def _count_window(key, ctx, values):  # noqa: ANN001
    yield (key, ctx.window().start, sum(1 for _ in values))


def windowed_counts(stream):  # noqa: ANN001
    """(key, window start, count) per 1 s window, late records to LATE."""
    counts = (
        stream.map(lambda v: v.split(":")[0])
        .key_by(lambda k: k)
        .window(TumblingEventTimeWindows.of(WINDOW_MS))
        .side_output_late_data(LATE)
        .process(_count_window)
    )
    return counts.map(lambda r: ("window", r)).union(
        counts.get_side_output(LATE).map(lambda v: ("late", v))
    )


def reference_counts(records: list[tuple[str, int]]) -> list:
    out: dict = {}
    for key, ts in records:
        w = (key, ts // WINDOW_MS * WINDOW_MS)
        out[w] = out.get(w, 0) + 1
    return sorted(("window", (k, w, c)) for (k, w), c in out.items())


@ray_test
def test_kafka_timestamps_are_the_record_timestamps(kafka_broker):
    """No timestamp assigner: windows follow the Kafka record timestamps."""
    topic = new_topic(kafka_broker, 3)
    rng = random.Random(7)
    data: dict[int, list] = {p: [] for p in range(3)}
    expected = []
    for p in range(3):
        ts = 10_000
        for i in range(80):
            ts += rng.randrange(0, 120)  # in order per partition: nothing is late
            key = f"k{rng.randrange(4)}"
            data[p].append((None, f"{key}:{p}:{i}".encode(), ts))
            expected.append((key, ts))
    produce(kafka_broker, topic, data)
    strategy = WatermarkStrategy.for_monotonous_timestamps()
    got = run(source(kafka_broker, topic), strategy=strategy, build=windowed_counts)
    assert sorted(got) == reference_counts(expected)


@ray_test
def test_a_partition_far_behind_holds_the_watermark(kafka_broker):
    """One source subtask reads both partitions; partition 1 is far ahead in event time. With
    one watermark per partition nothing is late; a per-subtask maximum would make partition 0's
    records late as soon as partition 1's were read."""
    topic = new_topic(kafka_broker, 2)
    # (a Kafka timestamp of 0 means "now" to the producer: event time starts later)
    ahead = [(None, f"b:{i}".encode(), 9_000_000 + i * 10) for i in range(200)]
    behind = [(None, f"a:{i}".encode(), 1_000_000 + i * 10) for i in range(200)]
    produce(kafka_broker, topic, {1: ahead})
    produce(kafka_broker, topic, {0: behind})
    strategy = WatermarkStrategy.for_monotonous_timestamps()
    got = run(source(kafka_broker, topic), parallelism=1, strategy=strategy, build=windowed_counts)
    assert [g for g in got if g[0] == "late"] == []
    expected = [("b", 9_000_000 + i * 10) for i in range(200)]
    expected += [("a", 1_000_000 + i * 10) for i in range(200)]
    assert sorted(got) == reference_counts(expected)


def unbounded_env(tmp_path, parallelism: int = 1, interval_ms: int = 200):  # noqa: ANN001
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    env.enable_checkpointing(interval_ms)
    env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "checkpoints"))
    return env


@ray_test
@pytest.mark.parametrize("idleness", [True, False], ids=["with-idleness", "without"])
def test_an_idle_partition_stalls_event_time_unless_with_idleness(kafka_broker, tmp_path, idleness):
    topic = new_topic(kafka_broker, 2)  # partition 1 stays empty
    n = 30
    base = 1_000_000  # a Kafka timestamp of 0 means "now" to the producer
    produce(kafka_broker, topic, {0: [(None, f"k:{i}".encode(), base + i * 100) for i in range(n)]})
    strategy = WatermarkStrategy.for_monotonous_timestamps()
    if idleness:
        strategy = strategy.with_idleness(300)
    env = unbounded_env(tmp_path)
    src = source(kafka_broker, topic, bounded=False)
    stream = windowed_counts(env.from_source(src, strategy, "kafka"))
    col = Collector(stream.execute_and_collect("idle"))
    client = col.client
    try:
        if idleness:
            # windows [0, 1000) and [1000, 2000) close; the last one waits for more data
            wait_until(lambda: len(col.values) >= 2, what="windows closed by the active partition")
            want = [("window", ("k", base, 10)), ("window", ("k", base + 1000, 10))]
            assert sorted(col.values)[:2] == want
        else:
            wait_until(lambda: records_in(client, "kafka") >= n, what="every record read")
            done = client.get_checkpoint_stats()["completed"]
            # three more checkpoints: each releases whatever the job collected before it
            wait_until(lambda: client.get_checkpoint_stats()["completed"] >= done + 3)
            assert col.values == []
    finally:
        client.cancel()
    with pytest.raises(JobExecutionError):
        col.join()


def records_in(client, operator: str) -> int:
    return sum(
        t.get("operators", {}).get(operator, {}).get("records_in", 0)
        for t in client.metrics()["tasks"]
    )


def collect_until(col: Collector, n: int, what: str) -> None:
    """Waits for ``n`` collected records, then for two more completed checkpoints (a duplicate
    would be released by them), then cancels the job."""
    client = col.client
    wait_until(lambda: len(col.values) >= n, what=what)
    done = client.get_checkpoint_stats()["completed"]
    wait_until(lambda: client.get_checkpoint_stats()["completed"] >= done + 2, what="checkpoints")
    client.cancel()
    with pytest.raises(JobExecutionError):
        col.join()


# -- unbounded reads: latest, commits, discovery ------------------------------------------------


@ray_test
def test_latest_start_and_offsets_committed_on_checkpoints(kafka_broker, tmp_path):
    topic = new_topic(kafka_broker, 2)
    group = f"g-{topic}"
    produce(kafka_broker, topic, {p: [f"old{p}:{i}" for i in range(5)] for p in range(2)})
    env = unbounded_env(tmp_path, parallelism=2)
    src = source(
        kafka_broker, topic, group=group, start=KafkaOffsetsInitializer.latest(), bounded=False
    )
    col = Collector(env.from_source(src, None, "kafka").execute_and_collect("latest"))
    parts = [KafkaTopicPartition(topic, p) for p in range(2)]
    # the readers hold both partitions at the end and checkpoints commit that position
    wait_until(lambda: set(committed(kafka_broker, group, parts).values()) == {5}, what="commits")
    new = {p: [f"new{p}:{i}" for i in range(7)] for p in range(2)}
    produce(kafka_broker, topic, new)
    collect_until(col, 14, "the new records")
    assert sorted(col.values) == sorted(v for vs in new.values() for v in vs)
    wait_until(lambda: set(committed(kafka_broker, group, parts).values()) == {12}, what="commits")


@ray_test
@pytest.mark.parametrize(
    "grow",
    [
        pytest.param(
            "partitions",
            marks=pytest.mark.xfail(
                strict=True,
                reason="Tansu does not implement CreatePartitions (KIP-195): _UNSUPPORTED_FEATURE",
            ),
        ),
        "topic",
    ],
)
def test_partitions_found_while_the_job_runs_are_read_from_their_start(
    kafka_broker, tmp_path, grow
):
    """New partitions (of a subscribed topic, or of a new topic matching the pattern) start at
    their earliest offset, whatever the starting offsets initializer said (as Flink)."""
    tag = f"grow{next(_topics)}"
    first = f"{tag}-a"
    kafka_broker.create_topic(first, 1)
    produce(kafka_broker, first, {0: [f"{first}/0:{i}" for i in range(10)]})
    env = unbounded_env(tmp_path, parallelism=2)
    src = source(
        kafka_broker,
        pattern=f"{tag}-.*",
        start=KafkaOffsetsInitializer.earliest(),
        bounded=False,
        props={"partition.discovery.interval.ms": 200},
    )
    col = Collector(env.from_source(src, None, "kafka").execute_and_collect(f"grow-{tag}"))
    wait_until(lambda: len(col.values) >= 10, what="the first partition")
    if grow == "partitions":
        kafka_broker.add_partitions(first, 3)
        later = {(first, p): [f"{first}/{p}:{i}" for i in range(10)] for p in (1, 2)}
    else:
        second = f"{tag}-b"
        kafka_broker.create_topic(second, 2)
        later = {(second, p): [f"{second}/{p}:{i}" for i in range(10)] for p in (0, 1)}
    for (topic, p), records in later.items():
        produce(kafka_broker, topic, {p: records})
    collect_until(col, 30, "the new partitions")
    expected = [f"{first}/0:{i}" for i in range(10)] + [v for vs in later.values() for v in vs]
    assert sorted(col.values) == sorted(expected)


# -- exactly once under failures, rescaling ---------------------------------------------------

N_KEYS = 10


class SequenceCheck(KeyedProcessFunction):
    """Per key: numbers the records 1, 2, 3, ... in keyed state; emits (key, n, seq)."""

    def open(self, ctx):  # noqa: ANN001
        self.count = ctx.get_state(ValueStateDescriptor("count"))

    def process_element(self, value, ctx):  # noqa: ANN001
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        yield (value[0], n, value[1])


def sequence_job(env, src: KafkaSource):  # noqa: ANN001
    return (
        env.from_source(src, None, "kafka")
        .map(lambda v: (int(v) % N_KEYS, int(v)))
        .key_by(lambda e: e[0])
        .process(SequenceCheck())
        .uid("sequence")
        .name("seq")
    )


def check_exactly_once(values: list, n: int) -> None:
    seqs = sorted(v[2] for v in values)
    assert seqs == list(range(n)), (
        f"{len(values)} outputs for {n} records; duplicates {len(seqs) - len(set(seqs))}, "
        f"lost {n - len(set(seqs))}"
    )
    per_key: dict = {}
    for key, count, _ in values:
        per_key.setdefault(key, []).append(count)
    for key, counts in per_key.items():
        assert sorted(counts) == list(range(1, len(counts) + 1)), f"key {key}: gap or repeat"


@ray_test
def test_exactly_once_positions_when_source_tasks_are_killed(kafka_broker, tmp_path):
    topic = new_topic(kafka_broker, 3)
    n = 3000
    thirds = [range(0, 1000), range(1000, 2000), range(2000, n)]

    def produce_part(r: range) -> None:
        kafka_broker.produce(topic, [str(i) for i in r])

    produce_part(thirds[0])
    env = unbounded_env(tmp_path, parallelism=2, interval_ms=150)
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(5, 0))
    stream = sequence_job(env, source(kafka_broker, topic, bounded=False))
    col = Collector(stream.execute_and_collect("kafka-kill"))
    client = col.client
    wait_until(lambda: client.get_checkpoint_stats()["completed"] >= 2, what="two checkpoints")
    kill_task("kafka-kill", "kafka", attempt=0)
    produce_part(thirds[1])
    wait_until(lambda: client.get_checkpoint_stats()["attempt"] == 1, what="a restart")
    done = client.get_checkpoint_stats()["completed"]
    wait_until(lambda: client.get_checkpoint_stats()["completed"] >= done + 2, what="checkpoints")
    kill_task("kafka-kill", "kafka", attempt=1)
    produce_part(thirds[2])
    collect_until(col, n, "every record")
    stats = client.get_checkpoint_stats()
    assert stats["restarts"] == 2 and all(cid >= 1 for cid in stats["restored_from"])
    check_exactly_once(col.values, n)


@ray_test
@pytest.mark.parametrize("p_after", [1, 3])
def test_savepoint_restores_positions_at_another_parallelism(kafka_broker, tmp_path, p_after):
    topic = new_topic(kafka_broker, 4)
    half = 1200
    kafka_broker.produce(topic, [str(i) for i in range(half)])
    env = unbounded_env(tmp_path, parallelism=2, interval_ms=600_000)
    col = Collector(
        sequence_job(env, source(kafka_broker, topic, bounded=False)).execute_and_collect("sp-1")
    )
    wait_until(lambda: records_in(col.client, "seq") >= half, what="the first half")
    path = str(tmp_path / "savepoint")
    col.client.stop_with_savepoint(path)
    before = col.join()
    kafka_broker.produce(topic, [str(i) for i in range(half, 2 * half)])

    env2 = StreamExecutionEnvironment()
    env2.set_parallelism(p_after)
    env2.enable_checkpointing(200)
    env2.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "c2"))
    stream = sequence_job(env2, source(kafka_broker, topic, bounded=False))
    col2 = Collector(stream.execute_and_collect("sp-2", savepoint_path=path))
    collect_until(col2, half, "the second half")
    check_exactly_once(before + col2.values, 2 * half)
    assert sorted(v[2] for v in col2.values) == list(range(half, 2 * half))


# -- errors ---------------------------------------------------------------------------------------


@ray_test
def test_unreachable_brokers_fail_the_job_naming_them(kafka_broker):
    address = f"127.0.0.1:{free_port()}"
    src = (
        KafkaSource.builder()
        .set_bootstrap_servers(address)
        .set_topics("anything")
        .set_property("request.timeout.ms", "1500")
        .set_bounded(KafkaOffsetsInitializer.latest())
        .set_value_only_deserializer(SimpleStringSchema())
        .build()
    )
    with pytest.raises(
        JobExecutionError, match=f"Kafka brokers at '{address}'.*request.timeout.ms"
    ):
        run(src)


@ray_test
def test_a_missing_topic_fails_the_job_naming_it(kafka_broker):
    with pytest.raises(JobExecutionError, match="'no-such-topic' do not exist"):
        run(source(kafka_broker, "no-such-topic"))


@ray_test
def test_a_deserializer_error_names_topic_partition_offset_and_record(kafka_broker):
    from raystream.common.serialization import JsonRowDeserializationSchema

    topic = new_topic(kafka_broker, 1)
    produce(kafka_broker, topic, {0: [b'{"a": 1}', b'{"a": 2}', b"not json at all", b'{"a": 4}']})
    src = source(kafka_broker, topic, value=JsonRowDeserializationSchema.builder().build())
    with pytest.raises(JobExecutionError) as info:
        run(src)
    msg = str(info.value)
    assert f"topic '{topic}' partition 0 offset 2" in msg and "not json at all" in msg


def parse(raw: bytes) -> int:
    return int(raw.decode())


@ray_test
def test_bad_records_go_to_a_dead_letter_side_output(kafka_broker):
    topic = new_topic(kafka_broker, 2)
    values = {0: [b"1", b"2", b"x3", b"4"], 1: [b"5", b"oops", b"7"]}
    produce(kafka_broker, topic, values)
    dlq = OutputTag("dlq")

    def build(stream):  # noqa: ANN001
        parsed = stream.map(parse).set_error_policy(ErrorPolicy.dead_letter(dlq))
        return parsed.map(lambda v: ("ok", v)).union(
            parsed.get_side_output(dlq).map(lambda d: ("bad", d))
        )

    got = run(source(kafka_broker, topic, value=ByteArraySchema()), build=build)
    assert sorted(v for tag, v in got if tag == "ok") == [1, 2, 4, 5, 7]
    bad = [d for tag, d in got if tag == "bad"]
    assert all(isinstance(d, DeadLetter) and d.exception_type == "ValueError" for d in bad)
    assert sorted(d.record for d in bad) == [b"oops", b"x3"]
