"""The job master's cost of writing one checkpoint to each checkpoint store kind.

    python bench/store_writes.py                  # 40 checkpoints of 4 blobs x 280 KB
    python bench/store_writes.py --blobs 8 --blob-kb 1000

Each checkpoint goes through the store protocol as the coordinator drives it: every blob
written, the metadata committed (and read back), the job's committed mark set, the previous
checkpoint discarded (one retained). No Ray: this isolates what fsync, the HMACs and the
read-back cost, from the noise of a whole job. Reports the median and 90th percentile per
checkpoint, and the share of one core that is at one checkpoint per second, both in wall time
(waiting for fsync included) and in CPU time of the writing thread (hashing, HMACs, copies:
what competes with the tasks for a core; unlike wall time, barely moved by other load on the
machine).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raystream.checkpointing.storage import open_store  # noqa: E402


def run(
    location: str, checkpoints: int, blobs: int, blob_bytes: int
) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds per checkpoint."""
    rng = random.Random(7)
    payloads = [rng.randbytes(blob_bytes) for _ in range(blobs)]
    times, cpu = [], []
    with open_store(location) as store:
        mark = getattr(store, "record_committed", None)
        for cid in range(1, checkpoints + 1):
            t0, c0 = time.perf_counter(), time.thread_time()
            handles = {
                f"task-{i}": store.write_blob(cid, f"task-{i}", data)
                for i, data in enumerate(payloads)
            }
            store.commit(cid, {"checkpoint_id": cid, "blobs": handles})
            if mark is not None:
                mark("bench", cid)
            if cid > 1:
                store.discard(cid - 1)
            times.append((time.perf_counter() - t0) * 1000.0)
            cpu.append((time.thread_time() - c0) * 1000.0)
    return times, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=40)
    ap.add_argument("--blobs", type=int, default=4)
    ap.add_argument("--blob-kb", type=int, default=280)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="rs-store-bench-")
    size = args.blobs * args.blob_kb / 1000
    print(f"{args.checkpoints} checkpoints of {args.blobs} blobs, {size:.2f} MB each")
    for kind, location in [("files", f"{root}/files"), ("lmdb", f"lmdb://{root}/lmdb")]:
        wall, cpu = run(location, args.checkpoints, args.blobs, args.blob_kb * 1000)
        for what, ms, share in (("wall", sorted(wall), "a second"), ("cpu", sorted(cpu), "a core")):
            median, p90 = ms[len(ms) // 2], ms[int(len(ms) * 0.9)]
            print(
                f"  {kind} {what}: median {median:.1f} ms, p90 {p90:.1f} ms per checkpoint "
                f"({median / 10:.1f} % of {share} at 1 checkpoint/s)"
            )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
