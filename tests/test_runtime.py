"""Runtime behaviour: back-pressure bounds, chaining, parallelism, resources, job client."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
import ray

from raystream import JobExecutionError, JobStatus, MapFunction, StreamExecutionEnvironment
from raystream.operators import Boundedness, Source, SplitReader
from tests.chaos_jobs import wait_until

pytestmark = pytest.mark.usefixtures("ray_session")


def op_metric(client, operator: str, key: str) -> int:
    total = 0
    for task in client.metrics()["tasks"]:
        m = task.get("operators", {}).get(operator)
        if m is not None:
            total += m[key]
    return total


class SlowSink:
    """About 1 ms per record: at least 100x slower than the source."""

    def __call__(self, value):
        time.sleep(0.001)


def test_backpressure_keeps_the_source_within_the_channel_bounds():
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    cfg = env.get_config()
    cfg.batch_size = 100
    cfg.channel_capacity = 2
    env.from_sequence(0, None).name("fast").add_sink(SlowSink()).name("slow").disable_chaining()
    client = env.execute_async("backpressure")
    try:
        wait_until(lambda: op_metric(client, "slow", "records_in") >= 1000, what="sink progress")
        # in flight at most: the channel's credit (capacity batches, each possibly still queued at
        # the consumer), the batch the sink is working on, and one batch the source is building
        bound = (cfg.channel_capacity + 2) * cfg.batch_size
        for _ in range(5):
            emitted = op_metric(
                client, "fast", "records_out"
            )  # read first: the gap can only shrink
            consumed = op_metric(client, "slow", "records_in")
            assert consumed >= 1000
            assert emitted - consumed <= bound, (emitted, consumed, bound)
            time.sleep(0.2)
        metrics = client.metrics()
        source_task = next(t for t in metrics["tasks"] if "fast" in t.get("operators", {}))
        assert source_task["backpressured_s"] > 0
    finally:
        client.cancel()
    assert client.get_job_status() is JobStatus.CANCELED


class _BigReader(SplitReader):
    def __init__(self, n: int, size: int, offset):
        self.n, self.size, self.offset = n, size, offset or 0

    def read(self, max_records):
        if self.offset >= self.n:
            return None
        self.offset += 1
        return [(self.offset - 1, bytes([self.offset % 251]) * self.size)]


class BigRecords(Source):
    """``n`` records ``(i, payload)`` of ``size`` bytes, read one at a time."""

    def __init__(self, n: int, size: int):
        self.n, self.size = n, size

    def create_splits(self, parallelism):
        return ["only"]

    def open_split(self, split, offset):
        return _BigReader(self.n, self.size, offset)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


class PeakMemory(MapFunction):
    """Passes records on, and samples its process's private memory (``RssAnon``) at every record
    and every 2 ms. When it closes, appends to ``path`` that memory when it opened and at its
    peak (KiB), and whether the records came in order.

    Private memory is what records held by the process cost. The pages of Ray's object store
    (where arguments over 100 KB travel) that a process has mapped count in its RSS too, but
    they are the object store's: shared, and bounded by its size."""

    def __init__(self, role: str, path: str):
        self.role, self.path = role, path

    def open(self, ctx):
        self.base_kb = self.peak_kb = _status_kb("RssAnon")
        self.records = 0
        self.in_order = True
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))

    def map(self, value):
        self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))
        self.in_order = self.in_order and value[0] == self.records
        self.records += 1
        return value

    def close(self):
        self._stop.set()
        self._sampler.join()
        entry = {"role": self.role, "base_kb": self.base_kb, "peak_kb": self.peak_kb}
        entry.update(records=self.records, in_order=self.in_order)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")


class Sleepy:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, value):
        time.sleep(self.seconds)


@pytest.mark.timeout(300)
def test_large_records_under_a_slow_sink_keep_peak_memory_bounded(tmp_path):
    """In-flight bytes are bounded by capacity x message_bytes whatever the record size (a
    record larger than a message travels alone): 2 MB and 20 MB records through a slow sink
    raise neither side's peak private memory by more than a few records, however many pass."""
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    env.get_config().reuse_workers = False  # new processes: their peak RSS is this job's
    report = str(tmp_path / "memory.jsonl")
    runs = {"2MB": (2 << 20, 150, 0.01), "20MB": (20 << 20, 30, 0.05)}  # 300 and 600 MB pass
    for name, (size, n, delay) in runs.items():
        (
            env.from_source(BigRecords(n, size), source_name=f"big-{name}")
            .map(PeakMemory(f"source-{name}", report))
            .map(PeakMemory(f"sink-{name}", report))
            .disable_chaining()
            .add_sink(Sleepy(delay))
        )
    env.execute("large records")
    with open(report) as f:
        got = {e["role"]: e for e in map(json.loads, f)}
    for name, (size, n, _) in runs.items():
        # the channel's capacity (4) in flight and a record being pickled or unpickled, and the
        # process's own noise
        bound_kb = 64 * 1024 + 8 * size // 1024
        for side in ("source", "sink"):
            entry = got[f"{side}-{name}"]
            assert (entry["records"], entry["in_order"]) == (n, True), entry
            assert entry["peak_kb"] - entry["base_kb"] <= bound_kb, (name, side, entry)


def pipeline(env: StreamExecutionEnvironment, words: list[str]):
    return (
        env.from_collection(words)
        .key_by(lambda w: w[0])
        .map(lambda w: (w[0], len(w)))
        .filter(lambda t: t[1] > 1)
        .key_by(lambda t: t[0])
        .sum(1)
        .map(lambda t: f"{t[0]}={t[1]}")
    )


WORDS = [f"{chr(97 + i % 11)}{'x' * (i % 5)}" for i in range(3000)]


def test_chaining_on_and_off_and_any_parallelism_give_the_same_results():
    results = []
    for p, chaining in ((1, True), (4, True), (3, False)):
        env = StreamExecutionEnvironment()
        env.set_parallelism(p)
        if not chaining:
            env.disable_operator_chaining()
        results.append(Counter(pipeline(env, WORDS).execute_and_collect()))
    assert all(r == results[0] for r in results[1:])
    assert sum(results[0].values()) == sum(1 for w in WORDS if len(w) > 1)


def test_execution_plan_shows_chains():
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.from_sequence(0, 9).map(str).name("a").filter(bool).name("b").rebalance().map(len).name(
        "c"
    ).print()
    plan = env.get_execution_plan()
    assert "Sequence Source -> a -> b" in plan
    assert "c -> Print" in plan
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.from_sequence(0, 9).map(str).name("a").filter(bool).name("b").start_new_chain().print()
    plan = env.get_execution_plan()
    assert "Sequence Source -> a" in plan and "b -> Print" in plan


class AssignedResources:
    def __call__(self, value):
        res = ray.get_runtime_context().get_assigned_resources()
        return (value, tuple(sorted(res.items())))


def test_resource_hints_become_ray_actor_options():
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    src = env.from_sequence(0, 9)
    plain = src.map(AssignedResources()).name("plain")
    heavy = (
        src.map(AssignedResources())
        .name("heavy")
        .set_resources(num_cpus=0.5, resources={"special": 1})
    )
    got = list(
        plain.map(lambda t: ("plain",) + t)
        .union(heavy.map(lambda t: ("heavy",) + t))
        .execute_and_collect()
    )
    plain_res = {r for kind, _, r in got if kind == "plain"}
    heavy_res = {r for kind, _, r in got if kind == "heavy"}
    assert plain_res == {()}  # task actors reserve no CPU by default
    assert heavy_res == {(("CPU", 0.5), ("special", 1.0))}


def test_a_job_wider_than_the_machine_runs():
    env = StreamExecutionEnvironment()
    env.set_parallelism(6)  # 6 source + 6 map actors, more than the machine has cores
    got = list(env.from_sequence(1, 5000).rebalance().map(lambda x: x * 2).execute_and_collect())
    assert sorted(got) == [2 * x for x in range(1, 5001)]


def test_job_client_status_metrics_and_cancel():
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.from_sequence(0, None).name("numbers").map(lambda x: x).name("identity").add_sink(
        lambda v: None
    )
    client = env.execute_async("endless")
    assert client.get_job_status() is JobStatus.RUNNING
    wait_until(lambda: op_metric(client, "identity", "records_out") > 10_000, what="progress")
    metrics = client.metrics()
    assert metrics["status"] == "RUNNING"
    assert len(metrics["tasks"]) == 2  # source, map and sink chained into one task per subtask
    assert client.cancel() is JobStatus.CANCELED
    assert client.get_job_status() is JobStatus.CANCELED
    with pytest.raises(JobExecutionError, match="canceled"):
        client.wait(timeout=30)


def test_wait_times_out_on_a_running_job():
    env = StreamExecutionEnvironment()
    env.from_sequence(0, None).add_sink(lambda v: None)
    client = env.execute_async()
    try:
        with pytest.raises(TimeoutError):
            client.wait(timeout=0.5)
    finally:
        client.cancel()


def test_bounded_job_finishes_and_actors_are_released():
    env = StreamExecutionEnvironment()
    env.set_parallelism(3)
    env.from_sequence(1, 30000).map(lambda x: x % 97).key_by(lambda x: x).sum().add_sink(
        lambda v: None
    ).name("sink")
    result = env.execute("bounded")
    assert result.records_in("sink") == 30000


class _TrickleReader(SplitReader):
    """One record every 20 ms, forever."""

    def __init__(self, offset):
        self.offset = offset or 0
        self.next_at = 0.0

    def read(self, max_records):
        now = time.monotonic()
        if now < self.next_at:
            return []
        self.next_at = now + 0.02
        self.offset += 1
        return [self.offset]


class TrickleSource(Source):
    boundedness = Boundedness.CONTINUOUS_UNBOUNDED

    def create_splits(self, parallelism):
        return ["only"]

    def open_split(self, split, offset):
        return _TrickleReader(offset)


def test_buffer_timeout_delivers_a_trickle_without_waiting_for_full_batches():
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    env.get_config().batch_size = 10_000  # never filled by a trickle
    env.get_config().buffer_timeout_ms = 5
    stream = env.from_source(TrickleSource()).rebalance().map(lambda x: x * 10).disable_chaining()
    got = stream.execute_and_collect(limit=5)
    assert got == [10, 20, 30, 40, 50]
