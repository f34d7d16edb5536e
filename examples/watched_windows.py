"""A paced event-time job to watch: its metrics in Ray's Prometheus endpoint, its page in
``raystream ui``, its progress line on a terminal.

Sensor readings arrive at a fixed rate (``--count`` of them, ``--rate`` per second) with event
times that advance as fast, from the moment the job is built; windows count the readings per
sensor and second of event time. From the 200th reading on, every 50th arrives 5 s late and is
dropped by its window (a late record). A punctuated watermark after every 100th reading makes
exactly those late (at 25 readings per second or more)::

    raystream run --detached examples/watched_windows.py --count 200000 --rate 2000
    raystream ui watched-windows        # prints a URL to open
    python examples/watched_windows.py  # attached: a progress line on the terminal
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from raystream import (
    DetachedJobExecutionResult,
    StreamExecutionEnvironment,
    Time,
    TumblingEventTimeWindows,
    WatermarkGenerator,
    WatermarkOutput,
    WatermarkStrategy,
)
from raystream.operators import Source, SplitReader

JOB_NAME = "watched-windows"
SENSORS = 8
LATE_FROM, LATE_EVERY, LATE_BY_MS = 200, 50, 5_000
WATERMARK_EVERY = 100


def is_late(i: int) -> bool:
    return i >= LATE_FROM and i % LATE_EVERY == LATE_EVERY // 2


def late_readings(count: int) -> int:
    """How many of ``count`` readings the windows drop as late."""
    return sum(1 for i in range(count) if is_late(i))


def reading(i: int, base_ms: int, rate: float) -> dict[str, int]:
    ts = base_ms + int(i * 1000 / rate) - (LATE_BY_MS if is_late(i) else 0)
    return {"sensor": i % SENSORS, "seq": i, "ts": ts}


class PacedReadings(Source):
    """Readings ``0..count-1`` at most ``rate`` per second, in one split; reading 0 has event
    time ``base_ms``."""

    def __init__(self, count: int, rate: float, base_ms: int):
        self.count = count
        self.rate = rate
        self.base_ms = base_ms

    def create_splits(self, parallelism: int) -> list[int]:
        return [0]

    def open_split(self, split: Any, offset: Any) -> SplitReader:
        return _PacedReader(self, 0 if offset is None else offset)

    def record_count(self) -> int:
        return self.count


class _PacedReader(SplitReader):
    def __init__(self, source: PacedReadings, offset: int):
        self.source = source
        self.offset = offset
        self._first = offset
        self._started = time.monotonic()

    def read(self, max_records: int) -> list | None:
        s = self.source
        if self.offset >= s.count:
            return None
        due = self._first + int((time.monotonic() - self._started) * s.rate)
        stop = min(due, self.offset + max_records, s.count)
        chunk = [reading(i, s.base_ms, s.rate) for i in range(self.offset, stop)]
        self.offset = max(self.offset, stop)
        return chunk


class EveryHundredth(WatermarkGenerator):
    """Punctuated: after every 100th reading, the watermark is that reading's event time."""

    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
        if event["seq"] % WATERMARK_EVERY == WATERMARK_EVERY - 1:
            output.emit_watermark(event_timestamp)

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        pass


class CountReadings:
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, acc: int) -> int:
        return acc + 1

    def get_result(self, acc: int) -> int:
        return acc

    def merge(self, a: int, b: int) -> int:
        return a + b


def discard(value: Any) -> None:
    pass


def build(env: StreamExecutionEnvironment, count: int, rate: float) -> None:
    env.enable_checkpointing(500)
    watermarks = WatermarkStrategy.for_generator(EveryHundredth).with_timestamp_assigner(
        lambda r: r["ts"]
    )
    (
        env.from_source(
            PacedReadings(count, rate, int(time.time() * 1000)), watermarks, "paced readings"
        )
        .set_parallelism(1)
        .key_by(lambda r: r["sensor"])
        .window(TumblingEventTimeWindows.of(Time.seconds(1)))
        .aggregate(CountReadings())
        .name("readings per second")
        .set_parallelism(2)
        .add_sink(discard)
        .name("discard")
        .set_parallelism(2)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=2_000.0, help="readings per second")
    parser.add_argument(
        "--retention-ms", type=int, default=None, help="detached: keep the ended job"
    )
    parser.add_argument("--metrics-interval-ms", type=int, default=None)
    args = parser.parse_args(argv)
    env = StreamExecutionEnvironment.get_execution_environment()
    if args.retention_ms is not None:
        env.get_config().finished_job_retention_ms = args.retention_ms
    if args.metrics_interval_ms is not None:
        env.get_config().metrics_interval_ms = args.metrics_interval_ms
    build(env, args.count, args.rate)
    result = env.execute(JOB_NAME)
    if not isinstance(result, DetachedJobExecutionResult):
        print(
            f"{args.count} readings, {late_readings(args.count)} late; windows emitted "
            f"{result.records_out('readings per second')} counts"
        )


if __name__ == "__main__":
    main()
