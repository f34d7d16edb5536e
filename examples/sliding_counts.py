"""Sliding counts: events per sensor over the last 5 minutes, updated every minute.

python examples/sliding_counts.py
"""

from __future__ import annotations

import random

from raystream import SlidingEventTimeWindows, StreamExecutionEnvironment, Time, WatermarkStrategy
from raystream.operators import CollectionSource


def readings(n: int = 2000, sensors: int = 4, seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"sensor": f"s{rng.randrange(sensors)}", "ts": i * 900 + rng.randrange(3000)}
        for i in range(n)
    ]


def sliding_counts(events: list[dict], parallelism: int = 2) -> list[tuple[str, int, int]]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    ws = WatermarkStrategy.for_bounded_out_of_orderness(Time.seconds(5)).with_timestamp_assigner(
        lambda e: e["ts"]
    )
    counts = (
        env.from_source(CollectionSource(events), ws, "readings")
        .map(lambda e: (e["sensor"], 1))
        .key_by(lambda t: t[0])
        .window(SlidingEventTimeWindows.of(Time.minutes(5), Time.minutes(1)))
        .reduce(
            lambda a, b: (a[0], a[1] + b[1]),
            window_function=lambda sensor, ctx, totals: [
                (sensor, ctx.window().end, next(iter(totals))[1])
            ],
        )
    )
    return sorted(counts.execute_and_collect("sliding counts"))


if __name__ == "__main__":
    for sensor, window_end, count in sliding_counts(readings())[:12]:
        print(f"{sensor}: {count} readings in the 5 minutes before {window_end} ms")
