"""Throughput benchmark: raystream vs a plain single-thread Python loop, in the same run.

    python bench/throughput.py                       # defaults: 4M stateless, 2M keyed events
    python bench/throughput.py --events 1000000 --parallelism 1 2 --batch-size 1024 --capacity 4

Workloads (the same user functions run in the job and in the loop):
  stateless  source -> map(x*2) -> filter(x % 3 == 0) -> sink(count)
  keyed      source -> map((x % 1000, x)) -> key_by(key) -> reduce(sum of field 1) -> sink(count)

For each workload and parallelism it prints events/s over the whole job (submit to result,
actor start-up included) and over the steady phase (first to last record at the sinks), and the
ratio of the steady rate to the plain loop.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import ray

from raystream import StreamExecutionEnvironment
from raystream.config import DEFAULT_BATCH_SIZE
from raystream.operators.sinks import Sink, SinkWriter


def double(x):
    return x * 2


def divisible_by_3(x):
    return x % 3 == 0


def to_pair(x):
    return (x % 1000, x)


def key_of(pair):
    return pair[0]


def add_values(a, b):
    return (a[0], a[1] + b[1])


class _CountingWriter(SinkWriter):
    def __init__(self):
        self.count = 0
        self.first = None
        self.last = None

    def write(self, batch):
        now = time.time()
        if self.first is None:
            self.first = now
        self.count += len(batch.values)
        self.last = now

    def result(self):
        return (self.count, self.first, self.last)


class CountingSink(Sink):
    """Counts records and remembers when the first and the last batch arrived."""

    def create_writer(self, context):
        return _CountingWriter()


def plain_stateless(n: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    count = 0
    for x in range(n):
        y = double(x)
        if divisible_by_3(y):
            count += 1
    return count, time.perf_counter() - t0


def plain_keyed(n: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    acc: dict = {}
    count = 0
    get = acc.get
    for x in range(n):
        r = to_pair(x)
        k = key_of(r)
        a = get(k)
        a = r if a is None else add_values(a, r)
        acc[k] = a
        count += 1
    return count, time.perf_counter() - t0


def run_job(workload: str, n: int, parallelism: int, batch_size: int, capacity: int) -> dict:
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    cfg = env.get_config()
    cfg.batch_size = batch_size
    cfg.channel_capacity = capacity
    src = env.from_sequence(0, n - 1)
    if workload == "stateless":
        out = src.map(double).filter(divisible_by_3)
    else:
        out = src.map(to_pair).key_by(key_of).reduce(add_values)
    out.sink_to(CountingSink()).name("sink")
    t0 = time.perf_counter()
    result = env.execute(f"bench-{workload}-p{parallelism}")
    total_s = time.perf_counter() - t0
    parts = [r for r in result.get_sink_result("sink") if r[0]]
    count = sum(c for c, _, _ in parts)
    steady_s = max(last for _, _, last in parts) - min(first for _, first, _ in parts)
    return {"count": count, "total_s": total_s, "steady_s": steady_s}


def main() -> None:
    ap = argparse.ArgumentParser(description="raystream throughput vs a plain Python loop")
    ap.add_argument("--events", type=int, default=None, help="events per run (default 4M / 2M)")
    ap.add_argument("--parallelism", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--workloads", nargs="+", default=["stateless", "keyed"])
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--capacity", type=int, default=4)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    ray.init(include_dashboard=False, log_to_driver=False)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Ray {ray.__version__}; batch_size={args.batch_size} capacity={args.capacity}"
    )
    rows = []
    for workload in args.workloads:
        n = args.events or (4_000_000 if workload == "stateless" else 2_000_000)
        expected, loop_s = (plain_stateless if workload == "stateless" else plain_keyed)(n)
        loop_rate = n / loop_s
        print(f"\n{workload}: {n:,} events; plain loop {loop_rate / 1e6:.2f} M events/s")
        for p in args.parallelism:
            r = run_job(workload, n, p, args.batch_size, args.capacity)
            assert r["count"] == expected, (workload, p, r["count"], expected)
            steady = n / r["steady_s"]
            total = n / r["total_s"]
            row = {
                "workload": workload,
                "events": n,
                "parallelism": p,
                "steady_events_per_s": steady,
                "total_events_per_s": total,
                "loop_events_per_s": loop_rate,
                "ratio_steady_vs_loop": steady / loop_rate,
                "ratio_total_vs_loop": total / loop_rate,
            }
            rows.append(row)
            print(
                f"  p={p}: steady {steady / 1e6:.2f} M/s ({steady / loop_rate:.2f}x loop), "
                f"whole job {total / 1e6:.2f} M/s ({total / loop_rate:.2f}x loop, {r['total_s']:.1f} s)"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    ray.shutdown()


if __name__ == "__main__":
    main()
