"""Keyed tumbling event-time window benchmark: raystream vs a plain Python loop, same run.

    python bench/windows.py                                   # 1M events, p=1 and 2, memory
    python bench/windows.py --events 2000000 --backend lmdb   # the LMDB state backend
    python bench/windows.py --source arrow --columnar --events 10000000 --parallelism 2
    python bench/windows.py --source collection --agg declarative

Workload: events (key, ts, value) for 1000 keys, one event per millisecond of event time with up
to --disorder ms of disorder (out of order), watermarks bounded by the same disorder, 10 s
tumbling windows computing (count, sum of value) per key. Event ``i`` is a fixed function of
``i`` (:func:`event_columns`), generated before timing; the plain loop computes the same windows
from the list of tuples with nested dicts in one thread, and every run's results (number of
windows, total count, total sum) are checked equal to the loop's.

Sources (``--source``): ``chunks`` — the list cut into pickled chunks in the object store, each
source subtask reading every p-th event; ``collection`` — ``env.from_collection(events)``;
``sequence`` — ``env.from_sequence(0, n - 1).map(event_of)``; ``arrow`` — ``env.from_arrow`` of
an Arrow table of the same events. ``--columnar``: the job is columnar (``key_by("key")``,
``aggregate(agg.count(), agg.sum("value"))``; a row source is converted with ``to_columns``);
otherwise the row path, with an ``AggregateFunction`` (``--agg function``) or with
``raystream.agg`` (``--agg declarative``).
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import time

import numpy as np
import pyarrow as pa
import ray

from raystream import StreamExecutionEnvironment, TumblingEventTimeWindows, WatermarkStrategy, agg
from raystream.operators import Boundedness, Source, SplitReader
from raystream.operators.sinks import Sink, SinkWriter
from raystream.runtime.elements import ColumnBatch

WINDOW_MS = 10_000
KEY_MULTIPLIER = 2654435761  # spreads consecutive events over the keys
DISORDER_MULTIPLIER = 40503


def event_of(i: int, keys: int = 1000, disorder: int = 3000) -> tuple[str, int, int]:
    """Event ``i``: its key, a timestamp up to ``disorder`` ms before ``i``, and a value."""
    return (
        f"k{i * KEY_MULTIPLIER % keys}",
        max(0, i - (i * DISORDER_MULTIPLIER + 7) % disorder),
        i % 97,
    )


def event_columns(n: int, keys: int, disorder: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The columns of events ``0..n-1`` (equal to :func:`event_of`, computed vectorized)."""
    i = np.arange(n, dtype=np.int64)
    names = pa.array([f"k{j}" for j in range(keys)])
    key = names.take(pa.array(i * KEY_MULTIPLIER % keys))
    ts = np.maximum(0, i - (i * DISORDER_MULTIPLIER + 7) % disorder)
    return key, ts, i % 97


def make_events(n: int, keys: int, disorder: int) -> list[tuple[str, int, int]]:
    key, ts, value = event_columns(n, keys, disorder)
    return list(zip(key.to_pylist(), ts.tolist(), value.tolist()))


def make_table(n: int, keys: int, disorder: int) -> pa.Table:
    key, ts, value = event_columns(n, keys, disorder)
    return pa.table({"key": key, "ts": ts, "value": value})


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

    def __init__(self, shares: list, disorder: int | None = None):
        self.shares = shares  # per subtask: refs of pickled chunks, put before timing
        self.disorder = disorder  # for benchmarks that read it back (bench/cep.py)

    @staticmethod
    def put(
        events: list, parallelism: int, disorder: int | None = None, chunk: int = 8192
    ) -> EventSource:
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


def key_of_row(row):
    return row["key"]


class CountSum:
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + 1, acc[1] + value[2])

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


class CountSumOfRows(CountSum):
    def add(self, value, acc):
        return (acc[0] + 1, acc[1] + value["value"])


class _Writer(SinkWriter):
    """Records, the sum of their first fields, and when records came (bench/cep.py)."""

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


class _WindowWriter(SinkWriter):
    """Number of window results, total count and total sum, and when results came."""

    def __init__(self):
        self.results, self.count, self.total, self.first, self.last = 0, 0, 0, None, None

    def write(self, batch):
        now = time.time()
        self.first = self.first or now
        self.last = now
        if type(batch) is ColumnBatch:
            self.results += len(batch)
            self.count += pa.compute.sum(batch.values.column("count")).as_py()
            self.total += pa.compute.sum(batch.values.column("sum_value")).as_py()
            return
        for v in batch.values:
            self.results += 1
            if isinstance(v, tuple):
                self.count += v[0]
                self.total += v[1]
            else:  # a Row of declarative aggregates
                self.count += v["count"]
                self.total += v["sum_value"]

    def result(self):
        return (self.results, self.count, self.total, self.first, self.last)


class WindowResultSink(Sink):
    accepts_columns = True

    def create_writer(self, context):
        return _WindowWriter()


def plain_loop(events: list, disorder: int) -> tuple[tuple[int, int, int], float, float]:
    """The same windows in one thread: nested dicts, fired when the watermark passes.
    Returns the results, the wall-clock seconds and the CPU seconds it took."""
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    windows: dict[int, dict[str, list]] = {}
    max_ts = None
    results = counted = total = 0
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
                total += acc[1]
    for start in sorted(windows):
        for acc in windows.pop(start).values():
            results += 1
            counted += acc[0]
            total += acc[1]
    return (results, counted, total), time.perf_counter() - t0, time.process_time() - cpu0


def build(env, args, events, table, parallelism):
    """The job's stream of window results for the chosen source and path."""
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(args.disorder)
    by_field = strategy.with_timestamp_assigner(ts_of)
    if args.source == "arrow":
        stream = env.from_arrow(table, strategy.with_timestamp_column("ts"))
    elif args.source == "chunks":
        stream = env.from_source(EventSource.put(events, parallelism), by_field, "events")
    else:
        if args.source == "collection":
            src = env.from_collection(events)
        else:
            n, keys, disorder = len(events), args.keys, args.disorder
            src = env.from_sequence(0, n - 1).map(lambda i: event_of(i, keys, disorder))
        stream = src.assign_timestamps_and_watermarks(by_field).set_parallelism(
            src.get_parallelism()
        )
    windows = TumblingEventTimeWindows.of(WINDOW_MS)
    if args.columnar:
        if not stream.is_columnar:
            schema = pa.schema([("key", pa.string()), ("ts", pa.int64()), ("value", pa.int64())])
            stream = stream.to_columns(schema)
        return stream.key_by("key").window(windows).aggregate(agg.count(), agg.sum("value"))
    if stream.is_columnar:
        return stream.to_rows().key_by(key_of_row).window(windows).aggregate(CountSumOfRows())
    keyed = stream.key_by(key_of)
    if args.agg == "declarative":
        return keyed.window(windows).aggregate(agg.count(), agg.sum(2).alias("sum_value"))
    return keyed.window(windows).aggregate(CountSum())


def run_job(args, events, table, parallelism, backend, checkpoint_ms=None) -> dict:
    """Runs the windows job (``checkpoint_ms``: with exactly-once checkpoints that often).
    ``args``: ``source``, ``columnar``, ``agg``, ``keys`` and ``disorder`` as on the command
    line (:func:`job_options` gives the defaults)."""
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    if backend == "lmdb":
        from raystream.checkpointing import LmdbStateBackend

        env.set_state_backend(LmdbStateBackend())
    if checkpoint_ms:
        import tempfile

        env.enable_checkpointing(checkpoint_ms)
        env.get_checkpoint_config().set_checkpoint_storage(tempfile.mkdtemp(prefix="rs-bench-"))
    build(env, args, events, table, parallelism).sink_to(WindowResultSink()).name("sink")
    t0 = time.perf_counter()
    result = env.execute(f"windows-p{parallelism}-{backend}-{checkpoint_ms or 0}")
    total_s = time.perf_counter() - t0
    parts = [r for r in result.get_sink_result("sink") if r[0]]
    late = sum(
        m.get("num_late_records_dropped", 0)
        for name, m in result.operator_metrics.items()
        if name.startswith("Window")
    )
    return {
        "results": (sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)),
        "total_s": total_s,
        "run_s": result.task_run_s,
        "cpu_s": result.task_cpu_s,
        "late_dropped": late,
        "checkpoints": result.checkpoints,
    }


def job_options(**changes) -> argparse.Namespace:
    """The job options of the command line's defaults, with ``changes``."""
    options = {"source": "chunks", "columnar": False, "agg": "function"}
    options.update({"keys": 1000, "disorder": 3000})
    options.update(changes)
    return argparse.Namespace(**options)


def describe(args) -> str:
    if args.columnar:
        path = "columnar (agg.count, agg.sum)"
    elif args.source == "arrow":
        path = "rows after to_rows() (AggregateFunction)"
    else:
        path = "rows, " + ("raystream.agg" if args.agg == "declarative" else "AggregateFunction")
    return f"source {args.source}, {path}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--disorder", type=int, default=3000, help="max out-of-orderness, ms")
    ap.add_argument("--parallelism", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--backend", choices=["memory", "lmdb"], nargs="+", default=["memory"])
    ap.add_argument(
        "--source", choices=["chunks", "collection", "sequence", "arrow"], default="chunks"
    )
    ap.add_argument("--columnar", action="store_true", help="columnar windows (raystream.agg)")
    ap.add_argument("--agg", choices=["function", "declarative"], default="function")
    args = ap.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Ray {ray.__version__}, pyarrow {pa.__version__}, load {os.getloadavg()[0]:.1f}"
    )
    events = make_events(args.events, args.keys, args.disorder)
    table = make_table(args.events, args.keys, args.disorder) if args.source == "arrow" else None
    expected, loop_s, loop_cpu_s = plain_loop(events, args.disorder)
    loop_rate = args.events / loop_s
    loop_cpu_ns = loop_cpu_s * 1e9 / args.events
    print(
        f"{args.events:,} events, {args.keys} keys, disorder {args.disorder} ms, 10 s tumbling "
        f"(count, sum); {describe(args)}"
    )
    print(
        f"plain loop: {loop_rate / 1e6:.2f} M events/s, {loop_cpu_ns:.0f} ns CPU per event "
        f"({expected[0]:,} window results)"
    )
    for backend in args.backend:
        for p in args.parallelism:
            one = make_events(1, args.keys, args.disorder)
            one_table = make_table(1, args.keys, args.disorder)
            # twice: the first 1-event job starts the worker pool's processes, which the
            # measured job then finds warm; the second is the start-up the measured job pays
            run_job(args, one, one_table, p, backend)
            startup_s = run_job(args, one, one_table, p, backend)["total_s"]
            r = run_job(args, events, table, p, backend)
            assert r["results"] == expected, (r, expected)
            whole = args.events / r["total_s"]
            net = args.events / max(1e-9, r["total_s"] - startup_s)
            tasks = args.events / r["run_s"]
            cpu_ns = r["cpu_s"] * 1e9 / args.events
            print(
                f"  {backend} p={p}: whole job {whole / 1e6:.2f} M/s ({whole / loop_rate:.2f}x loop, "
                f"{r['total_s']:.1f} s); without the {startup_s:.1f} s start-up of a 1-event job "
                f"{net / 1e6:.2f} M/s ({net / loop_rate:.2f}x loop); tasks running "
                f"{tasks / 1e6:.2f} M/s ({tasks / loop_rate:.2f}x loop, {r['run_s']:.2f} s); CPU "
                f"{cpu_ns:.0f} ns per event in the task processes ({loop_cpu_ns / cpu_ns:.2f}x the "
                f"loop's per CPU, {min(p, os.cpu_count() or 1) * loop_cpu_ns / cpu_ns:.2f}x on "
                f"{min(p, os.cpu_count() or 1)} idle cores); results equal the loop's; load "
                f"{os.getloadavg()[0]:.1f}"
            )
    ray.shutdown()


if __name__ == "__main__":
    main()
