"""Top-K items per category per window: count sales per (category, item) in 10 s windows, then
keep the K best items of each category in the same window.

The second window stage works because window results carry the timestamp ``end − 1``: they land
in the matching window downstream.

    python examples/top_k_per_category.py
"""

from __future__ import annotations

import heapq
import random

from raystream import StreamExecutionEnvironment, Time, TumblingEventTimeWindows, WatermarkStrategy
from raystream.operators import CollectionSource

K = 3


def sales(n: int = 3000, seed: int = 2) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "category": f"c{rng.randrange(4)}",
            "item": f"i{rng.randrange(12)}",
            "ts": i * 10 + rng.randrange(200),
        }
        for i in range(n)
    ]


def count_item(key, ctx, elements):
    category, item = key
    yield (category, item, sum(1 for _ in elements))


def top_k(category, ctx, counted):
    best = heapq.nlargest(K, counted, key=lambda t: (t[2], t[1]))
    yield (category, ctx.window().start, [(item, n) for _, item, n in best])


def top_items(events: list[dict], parallelism: int = 2) -> list:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    ws = WatermarkStrategy.for_bounded_out_of_orderness(Time.seconds(1)).with_timestamp_assigner(
        lambda e: e["ts"]
    )
    window = TumblingEventTimeWindows.of(Time.seconds(10))
    per_item = (
        env.from_source(CollectionSource(events), ws, "sales")
        .key_by(lambda e: (e["category"], e["item"]))
        .window(window)
        .process(count_item)
        .name("count per item")
    )
    best = per_item.key_by(lambda t: t[0]).window(window).process(top_k).name("top k")
    return sorted(best.execute_and_collect("top-k per category"))


if __name__ == "__main__":
    for category, start, items in top_items(sales()):
        print(f"{category} [{start}, +10s): {items}")
