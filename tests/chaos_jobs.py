"""Jobs and sources shared by the checkpoint, recovery and chaos tests (importable on workers)."""

from __future__ import annotations

import os
import time
from typing import Any

from raystream import KeyedProcessFunction, ValueStateDescriptor
from raystream.operators.sources import Source, SplitReader


class _PacedReader(SplitReader):
    def __init__(
        self,
        start: int,
        end: int,
        offset: int | None,
        rate: float,
        chunk: int,
        hold: str | None = None,
    ):
        self.end = end
        self.offset = start if offset is None else offset
        self.rate = rate
        self.chunk = chunk
        self.t0 = time.monotonic()
        self.base = self.offset
        self.hold = hold
        self.half = (start + end) // 2

    def read(self, max_records: int) -> list | None:
        if self.offset >= self.end:
            return None
        limit = self.end
        if self.hold is not None and os.path.exists(self.hold):
            limit = self.half
            if self.offset >= limit:
                self.base, self.t0 = self.offset, time.monotonic()  # paced from here once let go
                return []
        allowed = self.base + int((time.monotonic() - self.t0) * self.rate)
        stop = min(limit, allowed, self.offset + min(max_records, self.chunk))
        if stop <= self.offset:
            return []
        out = [(i % KEYS, i, i * 10) for i in range(self.offset, stop)]
        self.offset = stop
        return out


KEYS = 10


class PacedEvents(Source):
    """Events ``(key, seq, timestamp_ms)`` for ``seq`` in ``[0, n)``, at about ``rate`` events
    per second per split: a bounded job that runs long enough to checkpoint and fail. While the
    file ``hold`` exists, every split stops halfway (the job cannot end before the test lets
    it)."""

    def __init__(
        self, n: int, rate: float, splits: int = 2, chunk: int = 200, hold: str | None = None
    ):
        self.n = n
        self.rate = rate
        self.splits = splits
        self.chunk = chunk
        self.hold = hold

    def create_splits(self, parallelism: int) -> list[tuple[int, int]]:
        bounds = [self.n * i // self.splits for i in range(self.splits + 1)]
        return [(bounds[i], bounds[i + 1]) for i in range(self.splits)]

    def open_split(self, split: tuple[int, int], offset: Any) -> SplitReader:
        return _PacedReader(split[0], split[1], offset, self.rate, self.chunk, self.hold)


class SequenceCheck(KeyedProcessFunction):
    """Per key: counts events and numbers its outputs 1, 2, 3, ... in Value state; emits
    ``(key, n, seq)``. A lost or replayed record shows as a gap or repeat in ``n``."""

    def open(self, ctx: Any) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count"))

    def process_element(self, value: Any, ctx: Any):
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        yield (value[0], n, value[1])


# -- driver-side helpers ---------------------------------------------------------------------------


def wait_until(predicate, timeout_s: float = 90.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Collector:
    """Drains an ``execute_and_collect`` iterator in a thread (a driver that stops reading
    would back-pressure the job)."""

    def __init__(self, iterator: Any):
        import threading

        self.iterator = iterator
        self.client = iterator.client
        self.values: list = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for v in self.iterator:
                self.values.append(v)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def join(self, timeout_s: float = 120.0) -> list:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise AssertionError("the job did not end in time")
        if self.error is not None:
            raise self.error
        return self.values


def task_actors(job_name: str) -> dict:
    """The actors running the current attempt's tasks of the running job(s) ``job_name``, by
    task name (``raystream:<job>:<id>:<operators>:<i>/<p>[#attempt]``), from the job master."""
    import ray

    from raystream.runtime import jobs

    out: dict = {}
    for job in jobs.scan():
        if job.info is None or job.info["job_name"] != job_name or job.is_terminal:
            continue
        try:
            out.update(ray.get(job.handle.task_actors.remote(), timeout=60))
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError):
            continue  # ended or gone since it was listed
    return out


def job_master_actor(client):  # noqa: ANN001, ANN201
    """The Ray actor that runs a job's job master (a pooled worker host, or its own actor)."""
    jm = client._jm  # noqa: SLF001 - tests kill it on purpose
    return getattr(jm, "handle", jm)


def worker_released(handle) -> bool:  # noqa: ANN001
    """Whether the actor that ran a task has let it go: reset (idle in the pool) or gone."""
    import ray

    try:
        return bool(ray.get(handle.status.remote(), timeout=30)["idle"])
    except ray.exceptions.RayActorError:
        return True


def task_actor_names(job_name: str, contains: str = "") -> list[str]:
    return sorted(n for n in task_actors(job_name) if contains in n)


def kill_task(job_name: str, contains: str, attempt: int) -> str:
    """Kills a live task actor of ``attempt`` whose name contains ``contains`` (waiting for the
    attempt's tasks to be deployed)."""
    import ray

    suffix = "" if attempt == 0 else f"#{attempt}"

    def victim() -> tuple[str, object] | None:
        for name, handle in sorted(task_actors(job_name).items()):
            if contains in name and (
                (attempt == 0 and "#" not in name) or (attempt > 0 and name.endswith(suffix))
            ):
                return name, handle
        return None

    found = wait_until(
        victim, what=f"a task actor of {job_name!r} with {contains!r} in attempt {attempt}"
    )
    ray.kill(found[1])
    return found[0]


def check_sequences(values: list, n_events: int) -> None:
    """Exactly once: every event once, and per key the counts 1, 2, 3, ... without gap."""
    seqs = sorted(v[2] for v in values)
    assert seqs == list(range(n_events)), (
        f"{len(values)} outputs for {n_events} events; "
        f"duplicates {len(seqs) - len(set(seqs))}, lost {n_events - len(set(seqs))}"
    )
    per_key: dict = {}
    for key, n, _ in values:
        per_key.setdefault(key, []).append(n)
    for key, ns in per_key.items():
        assert sorted(ns) == list(range(1, len(ns) + 1)), f"key {key}: counts not contiguous"
