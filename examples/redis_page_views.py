"""Page views per minute per category, from a Redis stream to a Redis stream, exactly once.

Page view events (``category``, ``page``, ``ts`` in ms, up to 10 s out of order) are appended to
the input stream; the job reads it (bounded: what is there when it starts), counts the views of
each category in one-minute event-time windows, and appends one entry per (category, minute) to
the output stream, exactly once: the results of a checkpoint are appended when it completes, by
one atomic script on the server that skips what an earlier attempt already appended.

    redis-server --port 6379 &
    python examples/redis_page_views.py redis://localhost:6379/0

The demo replaces the two streams (``page_views`` and ``page_views_per_minute`` by default).
"""

from __future__ import annotations

import argparse
import random

import redis

from raystream import StreamExecutionEnvironment, Time, TumblingEventTimeWindows, WatermarkStrategy
from raystream.connectors.redis import RedisStreamSink, RedisStreamSource

CATEGORIES = ["books", "games", "music", "news", "sports"]


def page_views(n: int = 5000, seed: int = 1) -> list[dict]:
    """``n`` page views, 50 ms apart in event time, each up to 10 s late."""
    rng = random.Random(seed)
    return [
        {
            "category": rng.choice(CATEGORIES),
            "page": f"/p/{rng.randrange(100)}",
            "ts": max(0, i * 50 - rng.randrange(10_000)),
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


def as_result(category, ctx, counts):
    yield {"category": category, "minute": ctx.window().start, "views": next(iter(counts))}


def view_of(stream: str, entry_id: str, fields: dict) -> dict:
    return {
        "category": fields[b"category"].decode(),
        "page": fields[b"page"].decode(),
        "ts": int(fields[b"ts"]),
    }


def run(
    url: str,
    input_stream: str = "page_views",
    output_stream: str = "page_views_per_minute",
    events: list[dict] | None = None,
    parallelism: int = 2,
) -> list[tuple[str, int, int]]:
    """Writes ``events`` to the input stream, runs the job, returns the output stream's
    ``(category, minute start, views)``."""
    client = redis.Redis.from_url(url)
    client.delete(input_stream, output_stream)
    pipe = client.pipeline(transaction=False)
    for e in events if events is not None else page_views():
        pipe.xadd(input_stream, e)
    pipe.execute()

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    env.enable_checkpointing(500)  # output becomes visible as checkpoints complete
    watermarks = WatermarkStrategy.for_bounded_out_of_orderness(
        Time.seconds(10)
    ).with_timestamp_assigner(lambda e: e["ts"])
    source = RedisStreamSource(url, [input_stream], bounded=True, deserializer=view_of)
    (
        env.from_source(source, watermarks, "page views")
        .set_parallelism(1)  # one stream: one reader (see docs/redis.md, Limits)
        .uid("page-views")
        .key_by(lambda e: e["category"])
        .window(TumblingEventTimeWindows.of(Time.minutes(1)))
        .aggregate(CountViews(), window_function=as_result)
        .uid("views-per-minute")
        .sink_to(RedisStreamSink(url, output_stream))
        .uid("redis-out")
    )
    env.execute("redis page views per minute")
    return sorted(
        (f[b"category"].decode(), int(f[b"minute"]), int(f[b"views"]))
        for _, f in client.xrange(output_stream)
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("url", nargs="?", default="redis://localhost:6379/0")
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    for category, minute, views in run(args.url, events=page_views(args.events)):
        print(f"{category:7s} minute starting {minute:>8d} ms: {views} views")
