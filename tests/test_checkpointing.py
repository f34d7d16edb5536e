"""Checkpoints and recovery on a real local Ray: kills, corrupt checkpoints, timeouts, restart
strategies, hung tasks, savepoints and rescaling (SEMANTICS §5, §9)."""

from __future__ import annotations

import os
import pathlib
import time

import pytest

from raystream import (
    CheckpointingMode,
    DataStream,
    JobExecutionError,
    KeyedBroadcastProcessFunction,
    MapFunction,
    MapStateDescriptor,
    RestartStrategies,
    StreamExecutionEnvironment,
)
from raystream.checkpointing import HashMapStateBackend, LmdbStateBackend
from raystream.checkpointing.storage import open_store
from tests.chaos_jobs import (
    Collector,
    PacedEvents,
    SequenceCheck,
    check_sequences,
    job_master_actor,
    kill_task,
    task_actors,
    wait_until,
    worker_released,
)

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.timeout(240)]


def sequence_job(
    tmp_path: pathlib.Path,
    n: int,
    rate: float,
    parallelism: int = 2,
    interval_ms: int = 150,
    backend=None,
    restart=None,
    mode: CheckpointingMode | None = None,
    storage: str | None = None,
    hold: str | None = None,
) -> tuple[StreamExecutionEnvironment, DataStream]:
    """events -> key_by -> per-key sequence check; the stream is returned without a sink (the
    sources stop halfway while the file ``hold`` exists)."""
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    env.enable_checkpointing(interval_ms, mode)
    env.get_checkpoint_config().set_checkpoint_storage(storage or str(tmp_path / "checkpoints"))
    env.set_restart_strategy(restart or RestartStrategies.fixed_delay_restart(5, 0))
    if backend is not None:
        env.set_state_backend(backend)
    stream = (
        env.from_source(PacedEvents(n, rate, hold=hold), source_name="events")
        .key_by(lambda e: e[0])
        .process(SequenceCheck())
        .uid("sequence-check")
        .name("seq")
    )
    return env, stream


def completed(client) -> int:
    return client.get_checkpoint_stats()["completed"]


def records_in(client, operator: str) -> int:
    return sum(
        t.get("operators", {}).get(operator, {}).get("records_in", 0)
        for t in client.metrics()["tasks"]
    )


@pytest.mark.parametrize(
    "backend", [HashMapStateBackend(), LmdbStateBackend()], ids=["memory", "lmdb"]
)
def test_killed_tasks_recover_with_exactly_once_state_and_output(tmp_path, backend):
    n = 24_000
    _, stream = sequence_job(tmp_path, n, rate=4000, backend=backend)
    col = Collector(stream.execute_and_collect("kill-exact"))
    client = col.client
    wait_until(lambda: completed(client) >= 2, what="two checkpoints")
    kill_task("kill-exact", "seq", attempt=0)
    wait_until(lambda: client.get_checkpoint_stats()["attempt"] == 1, what="a restart")
    wait_until(lambda: completed(client) >= 4, what="checkpoints after the restart")
    kill_task("kill-exact", "events", attempt=1)
    values = col.join()
    stats = client.get_checkpoint_stats()
    assert stats["restarts"] == 2
    assert all(cid >= 1 for cid in stats["restored_from"])  # both restores used a checkpoint
    check_sequences(values, n)


def test_at_least_once_mode_loses_nothing(tmp_path):
    n = 16_000
    _, stream = sequence_job(tmp_path, n, rate=4000, mode=CheckpointingMode.AT_LEAST_ONCE)
    col = Collector(stream.execute_and_collect("kill-alo"))
    client = col.client
    wait_until(lambda: completed(client) >= 2, what="two checkpoints")
    kill_task("kill-alo", "seq", attempt=0)
    values = col.join()
    assert client.get_checkpoint_stats()["restarts"] == 1
    assert {v[2] for v in values} == set(range(n))  # duplicates are allowed, loss is not


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one_when_allowed(tmp_path):
    # without the opt-in the job fails instead (tests/test_store_faults.py)
    n = 16_000
    storage = (tmp_path / "fs-checkpoints").as_uri()
    env, stream = sequence_job(tmp_path, n, rate=3000, interval_ms=600_000, storage=storage)
    env.get_checkpoint_config().set_num_retained_checkpoints(2)
    env.get_checkpoint_config().set_allow_fallback_past_committed(True)
    col = Collector(stream.execute_and_collect("corrupt"))
    client = col.client
    first = client.trigger_checkpoint()
    second = client.trigger_checkpoint()
    assert second["checkpoint_id"] == first["checkpoint_id"] + 1
    blob = next((tmp_path / "fs-checkpoints" / f"chk-{second['checkpoint_id']}").glob("task-*"))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    kill_task("corrupt", "seq", attempt=0)
    values = col.join()
    stats = client.get_checkpoint_stats()
    assert stats["restored_from"][0] == first["checkpoint_id"]
    # nothing is lost; what checkpoint 2 had already released to the driver comes again,
    # because the job went back to before it (as in Flink: a fallback replays committed output)
    assert {v[2] for v in values} == set(range(n))
    assert len(values) > n


class SlowBatches(MapFunction):
    """Holds every record for a while: barriers queue behind records and checkpoints expire."""

    def map(self, value):
        time.sleep(0.02)
        return value


def slow_job(timeout_ms: int, tolerable: int, restart) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    env.get_config().set_batch_size(64)
    env.enable_checkpointing(50)
    env.get_checkpoint_config().set_checkpoint_timeout(timeout_ms)
    env.get_checkpoint_config().set_tolerable_checkpoint_failure_number(tolerable)
    env.set_restart_strategy(restart)
    env.from_collection(range(400)).rebalance().map(SlowBatches()).add_sink(lambda v: None)
    return env


def test_checkpoint_timeout_beyond_tolerance_fails_the_job():
    env = slow_job(timeout_ms=30, tolerable=0, restart=RestartStrategies.no_restart())
    with pytest.raises(JobExecutionError, match="expired"):
        env.execute("expiring")


def test_tolerated_checkpoint_failures_do_not_fail_the_job():
    env = slow_job(timeout_ms=30, tolerable=1_000_000, restart=RestartStrategies.no_restart())
    result = env.execute("tolerated")
    assert result.restarts == 0
    assert result.checkpoints["failed"] >= 1


class FailOn(MapFunction):
    def __init__(self, bad: int):
        self.bad = bad

    def map(self, value):
        if value == self.bad:
            raise ValueError(f"cannot take {value}")
        return value


def test_exhausted_restart_strategy_fails_with_the_root_cause(tmp_path):
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    env.enable_checkpointing(100)
    env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "c"))
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(2, 0))
    env.from_collection(range(100)).map(FailOn(42)).name("picky").add_sink(lambda v: None)
    client = env.execute_async("exhausted")
    with pytest.raises(JobExecutionError) as info:
        client.wait(120)
    text = str(info.value)
    assert "cannot take 42" in text and "picky" in text
    assert client.get_checkpoint_stats()["restarts"] == 2


class HangOnce(MapFunction):
    def open(self, ctx):
        self.attempt = ctx.get_attempt_number()

    def map(self, value):
        if value == 5 and self.attempt == 0:
            time.sleep(3600)  # stuck in user code: only the heartbeat notices
        return value


def test_hung_task_is_detected_and_restarted(tmp_path):
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    env.get_config().heartbeat_interval_ms = 200
    env.get_config().heartbeat_timeout_ms = 1500
    env.enable_checkpointing(100)
    env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "c"))
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(1, 0))
    out = env.from_collection(range(20)).map(HangOnce()).execute_and_collect("hung", limit=100)
    assert sorted(out) == list(range(20))


class RecordNotifications(MapFunction):
    def __init__(self, directory: str):
        self.directory = directory

    def open(self, ctx):
        self.path = os.path.join(self.directory, f"{ctx.get_index_of_this_subtask()}.txt")

    def map(self, value):
        return value

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        with open(self.path, "a") as f:
            f.write(f"{checkpoint_id}\n")


def test_every_task_hears_of_completed_checkpoints(tmp_path):
    env, _ = sequence_job(tmp_path, 6000, rate=4000)
    notes = tmp_path / "notes"
    notes.mkdir()
    env.from_source(PacedEvents(6000, 4000), source_name="more").rebalance().map(
        RecordNotifications(str(notes))
    ).add_sink(lambda v: None)
    result = env.execute("notified")
    assert result.checkpoints["completed"] >= 2
    for i in range(2):
        ids = [int(x) for x in (notes / f"{i}.txt").read_text().split()]
        assert ids and ids == sorted(ids)


# -- savepoints and rescaling -------------------------------------------------------------------


def savepoint_then_restore(
    tmp_path, p_before: int, p_after: int, uid_after: str = "sequence-check"
):
    n = 12_000
    hold = tmp_path / "hold"  # the job cannot end before it is stopped
    hold.touch()
    _, stream = sequence_job(
        tmp_path, n, rate=3000, parallelism=p_before, interval_ms=600_000, hold=str(hold)
    )
    col = Collector(stream.execute_and_collect(f"sp-{p_before}"))
    client = col.client
    wait_until(lambda: records_in(client, "seq") >= 2000, what="part of the input")
    path = str(tmp_path / "savepoint")
    client.stop_with_savepoint(path)
    before = col.join()
    assert len(before) < n

    env2 = StreamExecutionEnvironment()
    env2.set_parallelism(p_after)
    env2.enable_checkpointing(600_000)
    env2.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "c2"))
    stream = (
        env2.from_source(PacedEvents(n, rate=50_000), source_name="events")
        .key_by(lambda e: e[0])
        .process(SequenceCheck())
        .uid(uid_after)
    )
    env2.set_savepoint_restore(path)
    return n, before, stream


@pytest.mark.parametrize("p_after", [1, 2, 4])
def test_savepoint_restores_at_another_parallelism(tmp_path, p_after):
    n, before, stream = savepoint_then_restore(tmp_path, 2, p_after)
    after = list(stream.execute_and_collect(f"restored-{p_after}"))
    check_sequences(before + after, n)


def test_savepoint_with_unknown_uid_is_refused_unless_allowed(tmp_path):
    n, before, stream = savepoint_then_restore(tmp_path, 2, 2, uid_after="renamed")
    with pytest.raises(JobExecutionError, match="sequence-check"):
        list(stream.execute_and_collect("refused"))


def test_restore_needs_the_same_max_parallelism(tmp_path):
    n, before, stream = savepoint_then_restore(tmp_path, 1, 1)
    stream._env.set_max_parallelism(64)
    with pytest.raises(JobExecutionError, match="max parallelism"):
        list(stream.execute_and_collect("other-max-p"))


def test_checkpoint_store_holds_the_retained_checkpoints(tmp_path):
    env, _ = sequence_job(tmp_path, 6000, rate=4000)
    env.get_checkpoint_config().set_num_retained_checkpoints(2)
    env.from_collection([1]).add_sink(lambda v: None)
    result = env.execute("retained")
    assert result.checkpoints["completed"] >= 3
    store = open_store(str(tmp_path / "checkpoints"))
    try:
        # the job deleted its checkpoints at the end (no externalized retention)
        assert store.completed() == []
    finally:
        store.close()


@pytest.mark.parametrize("p", [1, 3])
def test_results_with_checkpointing_equal_those_without(tmp_path, p):
    _, stream = sequence_job(tmp_path, 5000, rate=1e9, parallelism=p, interval_ms=20)
    check_sequences(list(stream.execute_and_collect("no-failure")), 5000)


def test_losing_the_job_master_ends_the_job_with_a_clear_error(tmp_path):
    import ray

    env, stream = sequence_job(tmp_path, 200_000, rate=2000)
    stream.add_sink(lambda v: None)
    client = env.execute_async("lost-master")
    wait_until(lambda: completed(client) >= 1, what="a checkpoint")
    workers = list(task_actors("lost-master").values())
    assert workers
    ray.kill(job_master_actor(client))
    with pytest.raises(JobExecutionError, match="job master died"):
        client.wait(60)
    # the tasks stop with their job master: their (pooled) actors are reset, or gone
    wait_until(lambda: all(worker_released(w) for w in workers), what="the tasks to stop")


RULES = MapStateDescriptor("rules")


class ScaleByRule(KeyedBroadcastProcessFunction):
    def process_element(self, value, ctx):
        yield (value[0], value[1], ctx.get_broadcast_state(RULES).get("factor"))

    def process_broadcast_element(self, rule, ctx):
        ctx.get_broadcast_state(RULES).put(rule[0], rule[1])


def rules_job(
    parallelism: int, factor: int, rate: float, tmp_path, hold: str | None = None
) -> DataStream:
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    env.enable_checkpointing(600_000)
    env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / f"c{parallelism}"))
    rules = env.from_collection([("factor", factor)]).broadcast(RULES)
    return (
        env.from_source(PacedEvents(12_000, rate, hold=hold), source_name="events")
        .key_by(lambda e: e[0])
        .connect(rules)
        .process(ScaleByRule())
        .uid("scale")
        .name("scale")
    )


def test_broadcast_state_and_source_progress_survive_a_rescale(tmp_path):
    hold = tmp_path / "hold"  # the job cannot end before it is stopped
    hold.touch()
    col = Collector(rules_job(2, 7, 3000, tmp_path, str(hold)).execute_and_collect("rules-before"))
    wait_until(lambda: records_in(col.client, "scale") >= 2000, what="part of the input")
    path = str(tmp_path / "sp")
    col.client.stop_with_savepoint(path)
    before = col.join()
    assert any(f == 7 for _, _, f in before)
    # the restored job names another factor: its rule source is done (restored progress), and
    # every subtask — also the one that did not exist before — holds the restored rule
    stream = rules_job(3, 99, 50_000, tmp_path)
    after = list(stream.execute_and_collect("rules-after", savepoint_path=path))
    assert after and {f for _, _, f in after} == {7}
    assert sorted(v[1] for v in before + after) == list(range(12_000))


def test_burst_of_kills_during_recovery(tmp_path):
    """A task of the new attempt dies as soon as it exists (during the restore), and a whole
    attempt dies at once: the job still ends with exactly-once output."""
    import ray

    n = 16_000
    _, stream = sequence_job(tmp_path, n, rate=3000)
    col = Collector(stream.execute_and_collect("burst"))
    client = col.client
    wait_until(lambda: completed(client) >= 2, what="two checkpoints")
    kill_task("burst", "seq", attempt=0)
    handle = wait_until(
        lambda: next(
            (h for x, h in task_actors("burst").items() if "events" in x and x.endswith("#1")),
            None,
        ),
        what="an actor of the next attempt",
    )
    ray.kill(handle)  # while the job is being redeployed (or already replaced: then the kill
    # above counts as the burst)
    wait_until(lambda: completed(client) >= 4, what="checkpoints after the restarts")
    attempt = client.get_checkpoint_stats()["attempt"]
    suffix = f"#{attempt}" if attempt else ""
    handles = [  # every task of the current attempt, as close together as we can
        h
        for a, h in task_actors("burst").items()
        if a.endswith(suffix) and ("#" in a) == bool(suffix)
    ]
    for handle in handles:
        ray.kill(handle)
    values = col.join()
    assert client.get_checkpoint_stats()["restarts"] >= 2
    check_sequences(values, n)
