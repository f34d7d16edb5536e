"""CEP benchmark: raystream's CEP operator vs a hand-written single-thread detector, same run.

    python bench/cep.py                                  # 1M events, 10 000 users, p=1 and 2,
                                                         # memory and LMDB
    python bench/cep.py --events 200000 --backend lmdb --parallelism 2

Workloads (both on the same pre-generated events ``(user, ts, kind)``, one event per ~3 ms of
event time, up to --disorder ms out of order, watermarks bounded by the same disorder):

- ``logins``: the seed's pattern, 3 failed logins (kind 0) within 5 minutes, per user;
- ``abc``: ``a followed_by b followed_by c within 10 s`` (kinds 1, 2, 3), per user.

The hand-written detectors read the events in timestamp order (they sort first; the sort is
timed) and keep the few timestamps each pattern needs per user; both sides must produce the same
alerts (count and a checksum of the first timestamps, checked). The detector runs in a Ray
worker, as the job's tasks do: Ray starts its workers at a lower CPU priority (nice 15), so on a
machine loaded by other work a detector in the driver would get far more CPU than the job
(--loop-in-driver runs it there anyway). "Steady" is the time from the first alert to the last
at the sinks (the job without its start-up, as in bench/throughput.py); "tasks' CPU" the CPU
time of the node's worker processes per event beyond that of a p-event job (start-up), which
other load on the machine does not inflate the way it does wall time.

Operator alone: the CEP operator in the harness (no Ray, the task's GC settings) over all events
in chunks of 8192, a watermark after each: CPU time per event, next to the detector's CPU time
per event in the same process; and the state after all events, before the end of input
(keyed-state entries and snapshot bytes).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import random
import sys
import threading
import time
from collections import deque

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ray  # noqa: E402

from bench.windows import EventSource, ResultSink  # noqa: E402
from raystream import StreamExecutionEnvironment, WatermarkStrategy  # noqa: E402
from raystream.cep import CEP, Pattern  # noqa: E402

LOGIN_W = 5 * 60_000
ABC_W = 10_000


def make_events(n: int, users: int, disorder: int, workload: str, seed: int = 1) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = i * 3
        kind = (
            (0 if rng.random() < 0.3 else 9) if workload == "logins" else rng.choice((1, 2, 3, 9))
        )
        out.append((f"u{rng.randrange(users)}", max(0, ts - rng.randrange(disorder)), kind))
    return out


def ts_of(e):
    return e[1]


def key_of(e):
    return e[0]


def is_kind(k, e):
    return e[2] == k


def pattern(workload: str) -> Pattern:
    if workload == "logins":
        return Pattern.begin("fail").where(functools.partial(is_kind, 0)).times(3).within(LOGIN_W)
    return (
        Pattern.begin("a")
        .where(functools.partial(is_kind, 1))
        .followed_by("b")
        .where(functools.partial(is_kind, 2))
        .followed_by("c")
        .where(functools.partial(is_kind, 3))
        .within(ABC_W)
    )


def first_ts(match):
    first = next(iter(match.values()))[0]
    return (first[1], first[0])


def hand_written(events: list, workload: str) -> tuple[int, int, float]:
    """(alerts, checksum of first timestamps, seconds)."""
    t0 = time.perf_counter()
    ordered = sorted(events, key=ts_of)  # stable: arrival order among equal timestamps
    count = checksum = 0
    if workload == "logins":
        fails: dict[str, deque] = {}
        for user, ts, kind in ordered:
            if kind != 0:
                continue
            q = fails.get(user)
            if q is None:
                q = fails[user] = deque(maxlen=2)
            if len(q) == 2 and ts - q[0] < LOGIN_W:
                count += 1
                checksum += q[0]
            q.append(ts)
    else:
        waiting_b: dict[str, list] = {}  # a timestamps waiting for a b
        waiting_c: dict[str, list] = {}  # a timestamps (with a b) waiting for a c
        for user, ts, kind in ordered:
            if kind == 1:
                waiting_b.setdefault(user, []).append(ts)
            elif kind == 2:
                moved = [a for a in waiting_b.pop(user, ()) if ts - a < ABC_W]
                if moved:
                    waiting_c.setdefault(user, []).extend(moved)
            elif kind == 3:
                for a in waiting_c.pop(user, ()):
                    if ts - a < ABC_W:
                        count += 1
                        checksum += a
    return count, checksum, time.perf_counter() - t0


class WorkerCpu:
    """CPU seconds of this Ray node's worker processes (the job's tasks) while the block runs,
    from /proc (Linux), sampled every 0.1 s: robust to other load on the machine, where wall
    time is not. A worker's last 0.1 s before it exits may be missed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._stop = threading.Event()
        try:
            node = ray._private.worker._global_node
            self._raylet = node.all_processes["raylet"][0].process.pid
        except Exception:
            self._raylet = None

    def _sample(self) -> dict[int, float]:
        out = {}
        tick = os.sysconf("SC_CLK_TCK")
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self._raylet:  # ppid
                out[int(pid)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        return out

    def _run(self) -> None:
        first = self._sample()
        last = dict(first)
        while not self._stop.wait(0.1):
            last.update(self._sample())
        last.update(self._sample())
        self.seconds = sum(cpu - first.get(pid, 0.0) for pid, cpu in last.items())

    def __enter__(self) -> WorkerCpu:
        self._thread = threading.Thread(target=self._run, daemon=True)
        if self._raylet is not None and os.path.isdir("/proc"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def run_job(source: EventSource, workload: str, parallelism: int, backend: str) -> dict:
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    if backend == "lmdb":
        from raystream.checkpointing import LmdbStateBackend

        env.set_state_backend(LmdbStateBackend())
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(
        source.disorder
    ).with_timestamp_assigner(ts_of)
    keyed = env.from_source(source, strategy, "events").key_by(key_of)
    CEP.pattern(keyed, pattern(workload)).select(first_ts).sink_to(ResultSink()).name("sink")
    with WorkerCpu() as cpu:
        t0 = time.perf_counter()
        result = env.execute(f"cep-{workload}-p{parallelism}-{backend}")
        total_s = time.perf_counter() - t0
    parts = [r for r in result.get_sink_result("sink") if r[0]]
    return {
        "alerts": sum(p[0] for p in parts),
        "checksum": sum(p[1] for p in parts),
        "total_s": total_s,
        # from the first alert to the last at the sinks: the job without its start-up
        "steady_s": max(p[3] for p in parts) - min(p[2] for p in parts) if parts else 0.0,
        "cpu_s": cpu.seconds,
    }


def operator_alone(
    events: list, workload: str, backend: str, disorder: int
) -> tuple[float, float, int, int]:
    """CPU seconds of the CEP operator over ``events`` in the harness, of the hand-written
    detector in this process, and keyed-state entries and snapshot bytes after all events, with
    the watermark at the last timestamp minus the disorder."""
    import gc
    import tempfile

    from raystream.checkpointing import HashMapStateBackend, LmdbStateBackend
    from raystream.config import ExecutionConfig
    from raystream.operators.cep.compiled import CompiledPattern
    from raystream.operators.cep.functions import SelectFunction
    from raystream.operators.cep.operator import CepOperator
    from raystream.testing import OperatorHarness

    op = CepOperator("cep", SelectFunction(first_ts), key_of, CompiledPattern(pattern(workload)))
    sb = LmdbStateBackend(tempfile.mkdtemp()) if backend == "lmdb" else HashMapStateBackend()
    h = OperatorHarness(op, keyed=True, state_backend=sb)
    chunks = [events[i : i + 8192] for i in range(0, len(events), 8192)]
    stamps = [[e[1] for e in chunk] for chunk in chunks]
    threshold = gc.get_threshold()
    gc.set_threshold(*(ExecutionConfig.gc_threshold or threshold))  # as in a task
    gc.collect()
    gc.freeze()  # the benchmark's own data is no garbage to scan
    try:
        t0 = time.process_time()
        top = 0
        for chunk, ts in zip(chunks, stamps):
            h.process(chunk, ts)
            top = max(top, max(ts))
            h.watermark(top - disorder - 1)
        op_s = time.process_time() - t0
        t0 = time.process_time()
        hand_written(events, workload)
        loop_s = time.process_time() - t0
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    entries = op.num_state_entries()
    snap = h.snapshot(1)
    size = sum(len(b) for b in snap.keyed.values())
    h.close()
    return op_s, loop_s, entries, size


@ray.remote
def _hand_written_in_worker(events: list, workload: str) -> tuple[int, int, float]:
    return hand_written(events, workload)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--disorder", type=int, default=2000)
    ap.add_argument("--parallelism", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--backend", choices=["memory", "lmdb"], nargs="+", default=["memory", "lmdb"])
    ap.add_argument("--workload", choices=["logins", "abc", "both"], default="both")
    ap.add_argument("--loop-in-driver", action="store_true")
    ap.add_argument("--skip-operator-alone", action="store_true")
    args = ap.parse_args()

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(
        f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Ray {ray.__version__}, load {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    startup_cpu: dict[tuple[str, int], float] = {}
    for workload in ["logins", "abc"] if args.workload == "both" else [args.workload]:
        events = make_events(args.events, args.users, args.disorder, workload)
        if args.loop_in_driver:
            count, checksum, loop_s = hand_written(events, workload)
        else:
            ref = ray.put(events)
            count, checksum, loop_s = ray.get(_hand_written_in_worker.remote(ref, workload))
            del ref
        print(
            f"{workload}: {args.events} events, {args.users} users; hand-written {count} alerts "
            f"in {loop_s:.2f} s ({args.events / loop_s:,.0f} ev/s)"
        )
        for backend in args.backend:
            if not args.skip_operator_alone:
                op_s, alone_loop_s, entries, size = operator_alone(
                    events, workload, backend, args.disorder
                )
                print(
                    f"  {backend} operator alone: {op_s / args.events * 1e6:.2f} us/event CPU "
                    f"(the detector {alone_loop_s / args.events * 1e6:.2f} us/event in the same "
                    f"process: {op_s / alone_loop_s:.1f}x); state before end of input: "
                    f"{entries} entries, {size:,} snapshot bytes"
                )
            for p in args.parallelism:
                if (backend, p) not in startup_cpu:  # the tasks' CPU of a p-event job
                    tiny = EventSource.put(events[:p], p, args.disorder)
                    # twice: the first starts the worker pool's processes (their imports are
                    # CPU the measured job, on warm processes, does not spend)
                    run_job(tiny, workload, p, backend)
                    startup_cpu[backend, p] = run_job(tiny, workload, p, backend)["cpu_s"]
                job = run_job(EventSource.put(events, p, args.disorder), workload, p, backend)
                same = job["alerts"] == count and job["checksum"] == checksum
                steady_s = job["steady_s"]
                steady = (  # alerts in one batch (a small run): no steady part to time
                    f"{steady_s:.2f} s, ratio {loop_s / steady_s:.3f}x"
                    if steady_s > 0.05
                    else "n/a"
                )
                cpu_us = (job["cpu_s"] - startup_cpu[backend, p]) / args.events * 1e6
                print(
                    f"  {backend} p={p}: raystream {job['alerts']} alerts in "
                    f"{job['total_s']:.2f} s ({args.events / job['total_s']:,.0f} ev/s), ratio "
                    f"{loop_s / job['total_s']:.3f}x; steady (first to last alert) "
                    f"{steady}; tasks' CPU "
                    f"{cpu_us:.2f} us/event (beyond a {p}-event job's); same alerts: {same}; "
                    f"load {os.getloadavg()[0]:.1f}"
                )
                if not same:
                    raise SystemExit("raystream and the hand-written detector disagree")
    ray.shutdown()


if __name__ == "__main__":
    main()
