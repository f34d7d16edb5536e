"""map_batches in a job on a local Ray: a trickle is not held back (the first records come out
while the source still waits for the test), the callable class is built once per subtask, and
the results equal the reference."""

from __future__ import annotations

import os
import pathlib
import threading
from typing import Any

import pytest

from raystream import StreamExecutionEnvironment
from raystream.operators.sources import Source, SplitReader

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.timeout(240)]


class _GatedReader(SplitReader):
    def __init__(self, gate: str, first: int, rest: int, offset: Any):
        self.gate = gate
        self.first, self.total = first, first + rest
        self.offset = offset or 0

    def read(self, max_records: int) -> list | None:
        if self.offset >= self.total:
            return None
        if self.offset >= self.first and not os.path.exists(self.gate):
            return []  # nothing now: the job keeps running
        stop = min(self.total, self.offset + max_records)
        if self.offset < self.first:
            stop = min(stop, self.first)
        out = [{"id": i, "text": "x" * (i % 7)} for i in range(self.offset, stop)]
        self.offset = stop
        return out


class GatedSource(Source):
    """``first`` records at once, the other ``rest`` only once the file ``gate`` exists."""

    def __init__(self, gate: str, first: int, rest: int):
        self.gate, self.first, self.rest = gate, first, rest

    def create_splits(self, parallelism: int) -> list:
        return [0]

    def open_split(self, split: Any, offset: Any) -> SplitReader:
        return _GatedReader(self.gate, self.first, self.rest, offset)


class TextLengths:
    """Stands in for a model: loads once, then maps batches of texts to lengths."""

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.instance = f"{os.getpid()}:{id(self)}"

    def __call__(self, batch: Any) -> dict:
        return {
            "id": batch["id"].to_numpy(),
            "length": batch["text"].str.len().to_numpy() * self.scale,
            "instance": [self.instance] * len(batch),
            "batch_rows": [len(batch)] * len(batch),
        }


def test_map_batches_job_cuts_trickles_by_time_and_builds_the_model_once_per_subtask(tmp_path):
    gate = pathlib.Path(tmp_path / "gate")
    first, rest, batch_size = 3, 500, 32
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    results = (
        env.from_source(GatedSource(str(gate), first, rest), source_name="texts")
        .set_parallelism(1)
        .rebalance()
        .map_batches(
            TextLengths,
            batch_size=batch_size,
            batch_format="pandas",
            max_wait_ms=30,
            fn_constructor_args=(10,),
        )
    )
    rows: list = []
    early = threading.Event()
    with results.execute_and_collect("map-batches") as it:
        for row in it:
            rows.append(row)
            if len(rows) == first:
                early.set()  # every record before the gate came out while the source waits
                gate.touch()
    assert early.is_set()
    assert sorted(r["id"] for r in rows[:first]) == list(range(first))
    assert sorted((r["id"], r["length"]) for r in rows) == [
        (i, 10 * (i % 7)) for i in range(first + rest)
    ]
    per_process: dict[str, set] = {}
    for r in rows:
        pid, _ = r["instance"].split(":")
        per_process.setdefault(pid, set()).add(r["instance"])
    assert len(per_process) == 2 and all(len(v) == 1 for v in per_process.values())
    assert max(r["batch_rows"] for r in rows) == batch_size  # full batches under load
    assert all(r["batch_rows"] < batch_size for r in rows[:first])  # cut by the deadline
