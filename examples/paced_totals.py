"""Paced running totals: a long-running job to operate from the command line.

A source emits the integers 0, 1, 2, ... at a fixed rate (unbounded, or ``--count`` of them);
each goes to key ``x % 5``, whose running total is written, exactly once, as JSON lines into
part files of OUT_DIR (a checkpoint every 500 ms commits them)::

    raystream run --detached examples/paced_totals.py /tmp/totals    # returns; the job runs
    raystream list
    raystream stop paced-totals --savepoint /tmp/sp                  # writes it, job ends
    raystream run --detached --from-savepoint /tmp/sp examples/paced_totals.py /tmp/totals

A record's total depends only on the integers before it, so the part files of any sequence of
stops and resumes hold exactly the lines of one uninterrupted run over the same integers.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from raystream import DetachedJobExecutionResult, StreamExecutionEnvironment
from raystream.operators import Boundedness, FileSink, Source, SplitReader

KEYS = 5


class PacedSequence(Source):
    """0, 1, 2, ... (``count`` of them, or without end), at most ``rate`` per second."""

    def __init__(self, rate: float, count: int | None = None):
        self.rate = rate
        self.count = count
        self.boundedness = (
            Boundedness.BOUNDED if count is not None else Boundedness.CONTINUOUS_UNBOUNDED
        )

    def create_splits(self, parallelism: int) -> list[int]:
        return [0]  # one ordered sequence: a single split

    def open_split(self, split: Any, offset: Any) -> SplitReader:
        return _PacedReader(self.rate, self.count, 0 if offset is None else offset)


class _PacedReader(SplitReader):
    def __init__(self, rate: float, count: int | None, offset: int):
        self.rate = rate
        self.count = count
        self.offset = offset
        self._started = time.monotonic()
        self._first = offset

    def read(self, max_records: int) -> list | None:
        if self.count is not None and self.offset >= self.count:
            return None
        due = self._first + int((time.monotonic() - self._started) * self.rate)
        stop = min(due, self.offset + max_records)
        if self.count is not None:
            stop = min(stop, self.count)
        chunk = list(range(self.offset, stop))
        self.offset = max(self.offset, stop)
        return chunk


def build(env: StreamExecutionEnvironment, out_dir: str, rate: float, count: int | None) -> None:
    env.enable_checkpointing(500)
    (
        env.from_source(PacedSequence(rate, count), source_name="paced sequence")
        .set_parallelism(1)
        .uid("paced-sequence")
        .map(lambda x: {"key": x % KEYS, "x": x, "total": x})
        .set_parallelism(1)  # chained to the source: one task fewer to start
        .key_by(lambda r: r["key"])
        .reduce(lambda a, b: {"key": b["key"], "x": b["x"], "total": a["total"] + b["x"]})
        .uid("running-total")
        .sink_to(FileSink.jsonl(out_dir))
        .uid("totals-sink")
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--rate", type=float, default=200.0, help="integers per second")
    parser.add_argument("--count", type=int, default=None, help="stop after this many")
    parser.add_argument("--name", default="paced-totals", help="job name")
    parser.add_argument(
        "--retention-ms",
        type=int,
        default=None,
        help="how long a detached job's final status is kept after it ended",
    )
    args = parser.parse_args(argv)
    env = StreamExecutionEnvironment.get_execution_environment()
    if args.retention_ms is not None:
        env.get_config().finished_job_retention_ms = args.retention_ms
    env.set_parallelism(2)
    build(env, args.out_dir, args.rate, args.count)
    result = env.execute(args.name)
    if isinstance(result, DetachedJobExecutionResult):
        print(f"job {result.get_job_id()} runs detached")
    else:
        print(f"job {result.get_job_id()} finished")


if __name__ == "__main__":
    main()
