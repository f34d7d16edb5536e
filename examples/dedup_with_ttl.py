"""Deduplication with state TTL in event time: drop an event whose id was seen in the last hour.

The "seen" flag expires one hour of *event time* after it was written (a raystream addition:
Flink's TTL runs on processing time only), so replaying the same data gives the same result and
state does not grow forever.

    python examples/dedup_with_ttl.py
"""

from __future__ import annotations

from raystream import (
    KeyedProcessFunction,
    StateTtlConfig,
    StreamExecutionEnvironment,
    Time,
    ValueStateDescriptor,
    WatermarkStrategy,
)
from raystream.operators import CollectionSource

HOUR = Time.hours(1)


class Dedup(KeyedProcessFunction):
    def open(self, runtime_context):
        seen = ValueStateDescriptor("seen")
        seen.enable_time_to_live(StateTtlConfig.new_builder(HOUR).use_event_time().build())
        self.seen = runtime_context.get_state(seen)

    def process_element(self, event, ctx):
        if self.seen.value() is None:
            self.seen.update(True)
            yield event


def dedup(events: list[dict], parallelism: int = 2) -> list[dict]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    ws = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda e: e["ts"])
    unique = (
        env.from_source(CollectionSource(events), ws, "events")
        .key_by(lambda e: e["id"])
        .process(Dedup())
    )
    return sorted(unique.execute_and_collect("dedup"), key=lambda e: (e["ts"], e["id"]))


def sample() -> list[dict]:
    minute = Time.minutes(1)
    return [
        {"id": "a", "ts": 0},
        {"id": "b", "ts": 1 * minute},
        {"id": "a", "ts": 10 * minute},  # duplicate within the hour: dropped
        {"id": "a", "ts": 30 * minute},  # dropped
        {"id": "b", "ts": 90 * minute},  # more than an hour after the first b: kept
        {"id": "a", "ts": 200 * minute},  # kept
    ]


if __name__ == "__main__":
    for e in dedup(sample()):
        print(e)
