"""Keyed tumbling event-time window benchmark: raystream vs a plain Python loop, same run.

    python bench/windows.py                                  # 1M events, p=1 and 2, memory
    python bench/windows.py --events 2000000 --backend lmdb  # the LMDB state backend

Workload: events (key, ts, value) for 1000 keys, one event per millisecond of event time with up
to --disorder ms of random disorder (out of order), watermarks bounded by the same disorder,
10 s tumbling windows computing (count, sum) per key. Events are generated once, before
timing; the plain loop computes the same windows (and the same results, checked) from that list
with nested dicts in one thread; the job's source subtasks read their shares of the same list
from the object store chunk by chunk (put there before timing).
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import random
import time

import ray

from raystream import StreamExecutionEnvironment, TumblingEventTimeWindows, WatermarkStrategy
from raystream.operators import Boundedness, Source, SplitReader
from raystream.operators.sinks import Sink, SinkWriter

WINDOW_MS = 10_000


def make_events(
    start: int, stop: int, keys: int, disorder: int, seed: int
) -> list[tuple[str, int, int]]:
    """One event per ms of event time, each up to ``disorder`` ms late (out of order)."""
    rng = random.Random(seed * 1_000_003 + start)
    return [
        (f"k{rng.randrange(keys)}", max(0, i - rng.randrange(disorder)), i % 97)
        for i in range(start, stop)
    ]


class _ChunkReader(SplitReader):
    """Reads one share chunk by chunk, as a file or a topic partition would be read."""

    def __init__(self, split, offset):
        self.chunks = split  # object refs of pickled lists of events
        self.offset = offset or 0  # chunks already read

    def read(self, max_records):
        if self.offset >= len(self.chunks):
            return None
        events = pickle.loads(ray.get(self.chunks[self.offset]))
        self.offset += 1
        return events


class EventSource(Source):
    """Pre-generated events from the object store; subtask i reads every p-th event from i, so
    all subtasks advance through event time together (as partitions of a real topic would)."""

    boundedness = Boundedness.BOUNDED

    def __init__(self, shares: list, disorder: int):
        self.shares = shares  # per subtask: refs of pickled chunks, put before timing
        self.disorder = disorder

    @staticmethod
    def put(events: list, parallelism: int, disorder: int, chunk: int = 8192) -> EventSource:
        shares = []
        for i in range(parallelism):
            share = events[i::parallelism]
            shares.append(
                [
                    ray.put(pickle.dumps(share[j : j + chunk], protocol=5))
                    for j in range(0, len(share), chunk)
                ]
            )
        return EventSource(shares, disorder)

    def create_splits(self, parallelism):
        if len(self.shares) != parallelism:
            raise ValueError(
                f"source prepared for parallelism {len(self.shares)}, not {parallelism}"
            )
        # splits are share numbers: small enough to record in every checkpoint
        return list(range(len(self.shares)))

    def open_split(self, split, offset):
        return _ChunkReader(self.shares[split], offset)


def ts_of(event):
    return event[1]


def key_of(event):
    return event[0]


class CountSum:
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + 1, acc[1] + value[2])

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


class _Writer(SinkWriter):
    def __init__(self):
        self.count, self.total, self.first, self.last = 0, 0, None, None

    def write(self, batch):
        now = time.time()
        self.first = self.first or now
        self.last = now
        self.count += len(batch.values)
        self.total += sum(v[0] for v in batch.values)

    def result(self):
        return (self.count, self.total, self.first, self.last)


class ResultSink(Sink):
    def create_writer(self, context):
        return _Writer()


def plain_loop(events: list, disorder: int) -> tuple[int, int, float]:
    """The same windows in one thread: nested dicts, fired when the watermark passes."""
    t0 = time.perf_counter()
    windows: dict[int, dict[str, list]] = {}
    max_ts = None
    results = 0
    counted = 0
    for chunk_start in range(0, len(events), 8192):
        for key, ts, value in events[chunk_start : chunk_start + 8192]:
            start = ts - ts % WINDOW_MS
            per_key = windows.get(start)
            if per_key is None:
                per_key = windows[start] = {}
            acc = per_key.get(key)
            if acc is None:
                per_key[key] = [1, value]
            else:
                acc[0] += 1
                acc[1] += value
            if max_ts is None or ts > max_ts:
                max_ts = ts
        wm = max_ts - disorder - 1
        for start in sorted(s for s in windows if s + WINDOW_MS - 1 <= wm):
            for acc in windows.pop(start).values():
                results += 1
                counted += acc[0]
    for start in sorted(windows):
        for acc in windows.pop(start).values():
            results += 1
            counted += acc[0]
    return results, counted, time.perf_counter() - t0


def run_job(
    source: EventSource, parallelism: int, backend: str, checkpoint_ms: int | None = None
) -> dict:
    """Runs the windows job (``checkpoint_ms``: with exactly-once checkpoints that often)."""
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    if backend == "lmdb":
        from raystream.checkpointing import LmdbStateBackend

        env.set_state_backend(LmdbStateBackend())
    if checkpoint_ms:
        import tempfile

        env.enable_checkpointing(checkpoint_ms)
        env.get_checkpoint_config().set_checkpoint_storage(tempfile.mkdtemp(prefix="rs-bench-"))
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(
        source.disorder
    ).with_timestamp_assigner(ts_of)
    (
        env.from_source(source, strategy, "events")
        .key_by(key_of)
        .window(TumblingEventTimeWindows.of(WINDOW_MS))
        .aggregate(CountSum())
        .sink_to(ResultSink())
        .name("sink")
    )
    t0 = time.perf_counter()
    result = env.execute(f"windows-p{parallelism}-{backend}-{checkpoint_ms or 0}")
    total_s = time.perf_counter() - t0
    parts = [r for r in result.get_sink_result("sink") if r[0]]
    return {
        "results": sum(p[0] for p in parts),
        "counted": sum(p[1] for p in parts),
        "total_s": total_s,
        "late_dropped": result.operator_metrics.get("Window(Aggregate)", {}).get(
            "num_late_records_dropped", 0
        ),
        "checkpoints": result.checkpoints,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--disorder", type=int, default=3000, help="max out-of-orderness, ms")
    ap.add_argument("--parallelism", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--backend", choices=["memory", "lmdb"], nargs="+", default=["memory"])
    args = ap.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, Ray {ray.__version__}"
    )
    events = make_events(0, args.events, args.keys, args.disorder, seed=7)
    results, counted, loop_s = plain_loop(events, args.disorder)
    loop_rate = args.events / loop_s
    print(
        f"{args.events:,} events, {args.keys} keys, disorder {args.disorder} ms, 10 s tumbling (count, sum)"
    )
    print(f"plain loop: {loop_rate / 1e6:.2f} M events/s ({results:,} window results)")
    for backend in args.backend:
        for p in args.parallelism:
            startup_s = run_job(EventSource.put(events[:p], p, args.disorder), p, backend)[
                "total_s"
            ]
            r = run_job(EventSource.put(events, p, args.disorder), p, backend)
            assert r["counted"] == args.events and r["results"] == results, (r, results)
            whole = args.events / r["total_s"]
            net = args.events / max(1e-9, r["total_s"] - startup_s)
            print(
                f"  {backend} p={p}: whole job {whole / 1e6:.2f} M/s ({whole / loop_rate:.2f}x loop, "
                f"{r['total_s']:.1f} s); without the {startup_s:.1f} s start-up of a 1-event job "
                f"{net / 1e6:.2f} M/s ({net / loop_rate:.2f}x loop)"
            )
    ray.shutdown()


if __name__ == "__main__":
    main()
