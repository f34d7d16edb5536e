"""Checkpoint overhead and recovery time.

    python bench/checkpoints.py                        # 3M events, p=2, memory and LMDB
    python bench/checkpoints.py --events 1000000 --backend memory

1. Overhead: the keyed tumbling-window workload of bench/windows.py (1000 keys, 3 s disorder,
   10 s windows, count and sum) with checkpoints off and with exactly-once checkpoints every
   second, per state backend. Reports throughput of both, the loss, checkpoints completed, their
   size and duration, and the longest synchronous pause a task took for one.
2. Recovery: a paced job (events -> key_by -> keyed counter -> sink) with checkpoints every
   second; one task actor is killed; reports the time from the kill to the first record the
   restarted job writes (fixed-delay restart with no delay).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import ray

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from windows import job_options, make_events, run_job  # noqa: E402 - the sibling benchmark

from raystream import (  # noqa: E402
    KeyedProcessFunction,
    RestartStrategies,
    StreamExecutionEnvironment,
    ValueStateDescriptor,
)
from raystream.checkpointing import LmdbStateBackend  # noqa: E402


class Counter(KeyedProcessFunction):
    def open(self, ctx):
        self.n = ctx.get_state(ValueStateDescriptor("n"))

    def process_element(self, value, ctx):
        n = (self.n.value() or 0) + 1
        self.n.update(n)
        yield (value[0], n)


class FirstWriteAfterRestart:
    """Sink function: the wall-clock time of the first record each restarted attempt writes."""

    def __init__(self, path: str):
        self.path = path

    def open(self, ctx):
        self.attempt = ctx.get_attempt_number()
        self.seen = False

    def invoke(self, value, context):
        if not self.seen and self.attempt > 0:
            self.seen = True
            with open(f"{self.path}.{self.attempt}", "a") as f:
                f.write(f"{time.time()}\n")


def recovery_time(backend: str, reuse_workers: bool = True) -> dict:
    from raystream import SinkFunction
    from tests.chaos_jobs import PacedEvents, wait_until

    class Sink(FirstWriteAfterRestart, SinkFunction):
        pass

    marks = tempfile.mktemp(prefix="rs-recovery-")
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.get_config().reuse_workers = reuse_workers
    if backend == "lmdb":
        env.set_state_backend(LmdbStateBackend())
    env.enable_checkpointing(1000)
    env.get_checkpoint_config().set_checkpoint_storage(tempfile.mkdtemp(prefix="rs-bench-"))
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(1, 0))
    (
        env.from_source(PacedEvents(400_000, rate=20_000), source_name="events")
        .key_by(lambda e: e[0])
        .process(Counter())
        .name("counter")
        .add_sink(Sink(marks))
    )
    job = f"recovery-{backend}"
    client = env.execute_async(job)
    wait_until(lambda: client.get_checkpoint_stats()["completed"] >= 2, what="checkpoints")
    victim = next(h for n, h in client.task_actors().items() if "counter" in n.lower())
    t_kill = time.time()
    ray.kill(victim)
    wait_until(lambda: os.path.exists(f"{marks}.1"), timeout_s=60, what="output after the restart")
    first = min(float(x) for x in open(f"{marks}.1").read().split())
    stats = client.get_checkpoint_stats()
    client.cancel()
    return {"recovery_s": first - t_kill, "restarts": stats["restarts"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=3_000_000)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--backend", choices=["memory", "lmdb"], nargs="+", default=["memory", "lmdb"])
    ap.add_argument("--interval-ms", type=int, default=1000)
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ray.init(
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([here, root])}},
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, Ray {ray.__version__}"
    )
    p = args.parallelism
    events = make_events(args.events, 1000, 3000)
    print(f"{args.events:,} events, 1000 keys, 10 s windows, parallelism {p}")
    options = job_options()
    for backend in args.backend:
        off = run_job(options, events, None, p, backend)
        on = run_job(options, events, None, p, backend, args.interval_ms)
        assert off["results"] == on["results"] and on["results"][1] == args.events, (off, on)
        c = on["checkpoints"]
        periodic = c["history"][:-1] or c["history"]  # the last one is the job-end checkpoint
        rate_off = args.events / off["total_s"]
        rate_on = args.events / on["total_s"]
        print(
            f"  {backend}: off {rate_off / 1e6:.2f} M ev/s ({off['total_s']:.1f} s), "
            f"exactly-once every {args.interval_ms} ms {rate_on / 1e6:.2f} M ev/s "
            f"({on['total_s']:.1f} s): loss {100 * (1 - rate_on / rate_off):.1f} %; "
            f"{c['completed']} checkpoints, up to {max(h['size_bytes'] for h in periodic) / 1e6:.2f}"
            f" MB, {sum(h['duration_ms'] for h in periodic) / len(periodic):.0f} ms on average; "
            "longest task pause "
            f"{c.get('sync_pause_ms_max', 0):.1f} ms"
        )
    for backend in args.backend:
        r = recovery_time(backend)
        print(
            f"  recovery ({backend}): kill -> first output of the new attempt {r['recovery_s']:.2f} s"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
