"""CEP benchmark: raystream's CEP operator vs a hand-written single-thread detector, same run.

    python bench/cep.py                                  # 1M events, 10 000 users, p=2, memory
    python bench/cep.py --events 200000 --backend lmdb   # smaller, the LMDB state backend

Workloads (both on the same pre-generated events ``(user, ts, kind)``, one event per ~3 ms of
event time, up to --disorder ms out of order, watermarks bounded by the same disorder):

- ``logins``: the seed's pattern, 3 failed logins (kind 0) within 5 minutes, per user;
- ``abc``: ``a followed_by b followed_by c within 10 s`` (kinds 1, 2, 3), per user.

The hand-written detectors read the events in timestamp order (they sort first; the sort is
timed) and keep the few timestamps each pattern needs per user; both sides must produce the same
alerts (count and a checksum of the first timestamps, checked). State size: the CEP operator's
keyed-state entries and snapshot bytes in the harness after all events, before the end of input.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import random
import sys
import time
from collections import deque

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
    t0 = time.perf_counter()
    result = env.execute(f"cep-{workload}-p{parallelism}-{backend}")
    total_s = time.perf_counter() - t0
    parts = [r for r in result.get_sink_result("sink") if r[0]]
    return {
        "alerts": sum(p[0] for p in parts),
        "checksum": sum(p[1] for p in parts),
        "total_s": total_s,
    }


def state_size(events: list, workload: str, backend: str, disorder: int) -> tuple[int, int]:
    """Keyed-state entries and snapshot bytes of the CEP operator after all events (in the
    harness, one subtask), with the watermark at the last timestamp minus the disorder."""
    import tempfile

    from raystream.checkpointing import HashMapStateBackend, LmdbStateBackend
    from raystream.operators.cep.functions import SelectFunction
    from raystream.operators.cep.nfa import CompiledPattern
    from raystream.operators.cep.operator import CepOperator
    from raystream.testing import OperatorHarness

    op = CepOperator("cep", SelectFunction(first_ts), key_of, CompiledPattern(pattern(workload)))
    sb = LmdbStateBackend(tempfile.mkdtemp()) if backend == "lmdb" else HashMapStateBackend()
    h = OperatorHarness(op, keyed=True, state_backend=sb)
    top = 0
    for i in range(0, len(events), 8192):
        chunk = events[i : i + 8192]
        h.process(chunk, [e[1] for e in chunk])
        top = max(top, max(e[1] for e in chunk))
        h.watermark(top - disorder - 1)
    entries = op.num_state_entries()
    snap = h.snapshot(1)
    size = sum(len(b) for b in snap.keyed.values())
    h.close()
    return entries, size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--disorder", type=int, default=2000)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--backend", choices=["memory", "lmdb"], default="memory")
    ap.add_argument("--workload", choices=["logins", "abc", "both"], default="both")
    args = ap.parse_args()
    import ray

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"{platform.node()}: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    for workload in ["logins", "abc"] if args.workload == "both" else [args.workload]:
        events = make_events(args.events, args.users, args.disorder, workload)
        count, checksum, loop_s = hand_written(events, workload)
        source = EventSource.put(events, args.parallelism, args.disorder)
        job = run_job(source, workload, args.parallelism, args.backend)
        same = job["alerts"] == count and job["checksum"] == checksum
        entries, size = state_size(events, workload, args.backend, args.disorder)
        print(
            f"{workload}: {args.events} events, {args.users} users, backend {args.backend}, "
            f"p={args.parallelism}: hand-written {count} alerts in {loop_s:.2f} s "
            f"({args.events / loop_s:,.0f} ev/s); raystream {job['alerts']} alerts in "
            f"{job['total_s']:.2f} s ({args.events / job['total_s']:,.0f} ev/s, job start "
            f"included); ratio {loop_s / job['total_s']:.3f}x; same alerts: {same}; state "
            f"before end of input: {entries} entries, {size:,} snapshot bytes"
        )
        if not same:
            raise SystemExit("raystream and the hand-written detector disagree")


if __name__ == "__main__":
    main()
