"""Whether a long-running job makes Ray's GCS grow: a paced keyed job at parallelism 2 with
checkpoints every second, ``gcs_server``'s resident memory sampled every 10 s.

    python bench/gcs_memory.py                  # 180 s, attached
    python bench/gcs_memory.py --seconds 120 --detached

Prints the samples and the growth in MB per minute after the first sample.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import ray

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raystream import StreamExecutionEnvironment, WatermarkStrategy  # noqa: E402
from tests.chaos_jobs import PacedEvents, SequenceCheck  # noqa: E402


def gcs_pid(session_dir: str) -> int:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                cmd = f.read().replace("\0", " ")
        except OSError:
            continue
        if "gcs_server" in cmd and session_dir in cmd:
            return int(pid)
    raise RuntimeError("no gcs_server of this Ray session")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--detached", action="store_true")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": root}},
    )
    pid = gcs_pid(ray._private.worker._global_node.get_session_dir_path())  # noqa: SLF001
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.enable_checkpointing(1000)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda e: e[2]
    )
    (
        env.from_source(PacedEvents(10**9, rate=2000), strategy, "events")
        .key_by(lambda e: e[0])
        .process(SequenceCheck())
        .filter(lambda v: False)
        .print()
    )
    client = env.execute_async("gcs memory", detached=args.detached)
    t0 = time.time()
    samples: list[tuple[float, float]] = []
    while time.time() - t0 < args.seconds:
        time.sleep(10)
        samples.append((time.time() - t0, rss_mb(pid)))
        done = client.get_checkpoint_stats()["completed"]
        print(f"  {samples[-1][0]:5.0f} s: gcs_server {samples[-1][1]:.1f} MB, {done} checkpoints")
    client.cancel()
    (t_a, a), (t_b, b) = samples[0], samples[-1]
    print(f"growth after the first sample: {(b - a) / ((t_b - t_a) / 60):.2f} MB/min")
    ray.shutdown()


if __name__ == "__main__":
    main()
