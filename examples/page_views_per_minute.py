"""Real-time analytics: page views per user per minute of event time.

Events arrive out of order (up to 5 s late); a bounded-out-of-orderness watermark closes each
one-minute tumbling window once no earlier event can still come.

    python examples/page_views_per_minute.py
"""

from __future__ import annotations

import random

from raystream import StreamExecutionEnvironment, Time, TumblingEventTimeWindows, WatermarkStrategy
from raystream.operators import CollectionSource


def click_stream(n: int = 5000, users: int = 20, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "user": f"user-{rng.randrange(users)}",
            "page": f"/p/{rng.randrange(50)}",
            "ts": i * 100 - rng.randrange(5000),
        }
        for i in range(n)
    ]


class CountViews:
    def create_accumulator(self):
        return 0

    def add(self, event, acc):
        return acc + 1

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return a + b


def with_window(user, ctx, counts):
    yield (user, ctx.window().start, next(iter(counts)))


def views_per_minute(events: list[dict], parallelism: int = 2) -> list[tuple[str, int, int]]:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    watermarks = WatermarkStrategy.for_bounded_out_of_orderness(
        Time.seconds(5)
    ).with_timestamp_assigner(lambda e: e["ts"])
    counts = (
        env.from_source(CollectionSource(events), watermarks, "clicks")
        .key_by(lambda e: e["user"])
        .window(TumblingEventTimeWindows.of(Time.minutes(1)))
        .aggregate(CountViews(), window_function=with_window)
        .name("views per minute")
    )
    return sorted(counts.execute_and_collect("page views per minute"))


if __name__ == "__main__":
    for user, minute_start, views in views_per_minute(click_stream())[:15]:
        print(f"{user:8s} minute starting {minute_start:>8d} ms: {views} views")
