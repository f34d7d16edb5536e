"""Start-up, recovery and the collection source: what the warm worker pool and the parallel
``from_collection`` change, each next to the alternative in the same run.

    python bench/startup.py                      # all three parts
    python bench/startup.py --parts startup recovery --rounds 5

- startup: a small p=2 job (collection -> key_by -> map -> collect, 2 tasks per stage) from
  submit to its last record, run ``rounds`` times with pooled workers (the first run starts the
  pool; later runs borrow warm actors) and with ``reuse_workers=False`` (new actors every job).
- recovery: a paced keyed job with 1 s checkpoints; one task actor is killed; time from the kill
  to the first record the restarted job writes (``bench/checkpoints.py``), pooled and not.
- collection: ``source -> map -> filter -> sink`` at p=2 over 3-tuples, from ``from_collection``
  and from ``from_sequence`` producing the same tuples; steady rate (first to last record at the
  sinks) and the ratio of the two.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import ray

from raystream import StreamExecutionEnvironment
from raystream.operators.sinks import Sink, SinkWriter


def tiny_job(reuse: bool) -> float:
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.get_config().reuse_workers = reuse
    t0 = time.perf_counter()
    stream = env.from_collection(list(range(1000))).key_by(lambda x: x % 7).map(lambda x: x + 1)
    got = list(stream.execute_and_collect("startup"))
    assert sorted(got) == list(range(1, 1001))
    return time.perf_counter() - t0


def startup(rounds: int) -> None:
    for reuse in (True, False):
        times = [tiny_job(reuse) for _ in range(rounds)]
        label = "pooled workers" if reuse else "new actors per job"
        later = statistics.median(times[1:]) if len(times) > 1 else float("nan")
        print(
            f"  startup, {label}: first job {times[0]:.2f} s, later jobs median {later:.2f} s "
            f"(all: {', '.join(f'{t:.2f}' for t in times)})",
            flush=True,
        )


def recovery(rounds: int) -> None:
    from bench.checkpoints import recovery_time

    for reuse in (True, False):
        got = [recovery_time("memory", reuse)["recovery_s"] for _ in range(rounds)]
        label = "pooled workers" if reuse else "new actors"
        print(
            f"  recovery, {label}: kill -> first output {statistics.median(got):.2f} s median "
            f"(all: {', '.join(f'{t:.2f}' for t in got)})",
            flush=True,
        )


class _Timing(SinkWriter):
    def __init__(self) -> None:
        self.n = 0
        self.first = 0.0
        self.last = 0.0

    def write(self, batch) -> None:  # noqa: ANN001
        now = time.time()
        if not self.n:
            self.first = now
        self.n += len(batch.values)
        self.last = now

    def result(self) -> tuple[int, float, float]:
        return self.n, self.first, self.last


class TimingSink(Sink):
    def create_writer(self, context):  # noqa: ANN001, ANN201
        return _Timing()


def triple(i: int) -> tuple:
    return (i % 1000, i, float(i))


def keep(t: tuple) -> bool:
    return t[1] % 3 == 0


def bump(t: tuple) -> tuple:
    return (t[0], t[1] * 2, t[2])


def steady(source: str, n: int, data: list | None) -> tuple[float, float]:
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    if source == "collection":
        stream = env.from_collection(data)
    else:
        stream = env.from_sequence(0, n - 1).map(triple)
    t0 = time.time()
    stream.map(bump).filter(keep).sink_to(TimingSink()).name("timing")
    out = env.execute(f"{source}-steady")
    total = time.time() - t0
    parts = out.get_sink_result("timing")
    count = sum(p[0] for p in parts)
    assert count == len(range(0, n, 3)), count
    first = min(p[1] for p in parts if p[0])
    last = max(p[2] for p in parts if p[0])
    return n / (last - first), n / total


def collection(n: int) -> None:
    data = [triple(i) for i in range(n)]
    for source in ("sequence", "collection", "sequence", "collection"):
        rate, whole = steady(source, n, data if source == "collection" else None)
        print(
            f"  {source:>10}: steady {rate / 1e6:.2f} M ev/s, whole job {whole / 1e6:.2f} M ev/s",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["startup", "recovery", "collection"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--events", type=int, default=2_000_000)
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    ray.init(
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": root}},
    )
    print(f"{platform.node()} {os.cpu_count()} cores, load {os.getloadavg()}", flush=True)
    if "startup" in args.parts:
        startup(args.rounds)
    if "recovery" in args.parts:
        recovery(max(1, args.rounds // 2))
    if "collection" in args.parts:
        collection(args.events)
    print(f"load after {os.getloadavg()}")


if __name__ == "__main__":
    main()
