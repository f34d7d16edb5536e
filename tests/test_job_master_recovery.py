"""A detached job outlives its job master: Ray restarts the job master's process after a
SIGKILL, and the restarted one resumes the job from its latest completed checkpoint (issue 12
§2). The exactly-once output of a run with job-master and task kills equals a brute-force
reference; without checkpointing, the job fails with a clear error and leaves no tasks behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal

import pytest
import ray

from raystream import (
    JobExecutionError,
    RestartStrategies,
    StreamExecutionEnvironment,
    WatermarkStrategy,
)
from raystream.checkpoint_config import CheckpointConfig
from raystream.checkpointing import default_dirs
from raystream.checkpointing.coordinator import CheckpointCoordinator, JobLayout
from raystream.checkpointing.storage import open_store
from raystream.core.time import SystemClock
from raystream.operators.files import FileSink
from raystream.runtime.checkpoint_runner import CheckpointRunner
from raystream.runtime.deploy import leftover_tasks
from tests.chaos_jobs import (
    PacedEvents,
    SequenceCheck,
    check_sequences,
    job_master_actor,
    task_actors,
    wait_until,
)
from tests.test_chaos import read_committed
from tests.test_default_dirs import dead_pid

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.timeout(300)]

N_EVENTS = 40_000


def kill_job_master_process(client) -> int:  # noqa: ANN001
    """SIGKILLs the process of a job's job master (as the OOM killer would); its pid."""
    handle = job_master_actor(client)
    pid = ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=60)
    os.kill(pid, signal.SIGKILL)
    return pid


def stats(client) -> dict:  # noqa: ANN001
    return client.get_checkpoint_stats()


def wait_for_checkpoint_in(client, attempt: int) -> None:  # noqa: ANN001
    before = stats(client)["completed"] if stats(client)["attempt"] == attempt else 0
    wait_until(
        lambda: stats(client)["attempt"] == attempt and stats(client)["completed"] > before,
        what=f"a completed checkpoint in attempt {attempt}",
    )


def paced_job(tmp_path, name: str, checkpointing: bool, hold: str | None = None):  # noqa: ANN001, ANN201
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.get_config().finished_job_retention_ms = 5_000  # the test's job masters go soon after
    if checkpointing:
        env.enable_checkpointing(200)
        env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "checkpoints"))
        env.set_restart_strategy(RestartStrategies.fixed_delay_restart(5, 0))
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda e: e[2])
    (
        env.from_source(PacedEvents(N_EVENTS, rate=2_500, hold=hold), strategy, "events")
        .key_by(lambda e: e[0])
        .process(SequenceCheck())
        .uid("sequence")
        .sink_to(FileSink.jsonl(str(tmp_path / "out")))
        .uid("files")
    )
    return env.execute_async(name, detached=True)


def test_a_detached_job_survives_job_master_and_task_kills_exactly_once(tmp_path):
    job = "jm-recovery"
    hold = tmp_path / "hold"
    hold.write_text("")  # the job cannot end before the test killed its job master twice
    client = paced_job(tmp_path, job, checkpointing=True, hold=str(hold))
    first_pid = ray.get(
        job_master_actor(client).__ray_call__.remote(lambda self: os.getpid()), timeout=60
    )

    # a task dies first: an ordinary restart (attempt 1)
    wait_for_checkpoint_in(client, 0)
    ray.kill(task_actors(job)[sorted(task_actors(job))[0]])
    wait_for_checkpoint_in(client, 1)

    # then the job master's process: Ray restarts it, and the restarted one kills the tasks
    # of attempt 1 and deploys attempt 2 from the latest checkpoint
    kill_job_master_process(client)
    wait_until(lambda: stats(client)["attempt"] >= 2, what="the restarted job master's attempt")
    desc = client.describe()
    assert desc["job_master_recovered"] is True
    assert desc["status"] in ("RUNNING", "RESTARTING"), desc["status"]
    wait_for_checkpoint_in(client, stats(client)["attempt"])
    names = sorted(task_actors(job))
    assert names and all(n.endswith(f"#{stats(client)['attempt']}") for n in names), names
    assert not [n for n, a in leftover_tasks(job, client.job_id) if a < 2]  # old ones killed

    # and once more, in the middle of the restarted job master's run
    second_pid = kill_job_master_process(client)
    assert second_pid != first_pid
    hold.unlink()

    result = client.wait(240)
    rows = read_committed(tmp_path / "out")
    check_sequences([tuple(r) for r in rows], N_EVENTS)
    assert result.restarts >= 1  # this process's count: the last job master's own restart
    failures = client.get_checkpoint_stats()["failures"]
    assert any("job master" in f["message"] and "died" in f["message"] for f in failures), failures

    # killed during the ended job's retention time, the job master comes back knowing the job
    # ended (its store says so) and does not run it again
    kill_job_master_process(client)
    wait_until(lambda: client.get_job_status().name == "FINISHED", what="the ended status")
    assert client.describe()["job_master_recovered"] is True
    assert not leftover_tasks(job, client.job_id)
    assert len(read_committed(tmp_path / "out")) == N_EVENTS


def test_without_checkpointing_a_lost_job_master_fails_the_job_and_its_tasks(tmp_path):
    job = "jm-lost"
    hold = tmp_path / "hold"
    hold.write_text("")  # the job cannot end before the test lets it
    client = paced_job(tmp_path, job, checkpointing=False, hold=str(hold))
    wait_until(lambda: len(task_actors(job)) == 4, what="the job's tasks")
    kill_job_master_process(client)
    with pytest.raises(JobExecutionError) as err:
        client.wait(120)
    message = str(err.value)
    assert "job master" in message and "takes no checkpoints" in message, message
    assert client.get_job_status().name == "FAILED"
    wait_until(
        lambda: not leftover_tasks(job, client.job_id), what="the lost attempt's tasks to go"
    )


def test_a_restarted_job_master_whose_store_is_gone_fails_the_job_clearly(tmp_path):
    job = "jm-no-store"
    hold = tmp_path / "hold"
    hold.write_text("")
    client = paced_job(tmp_path, job, checkpointing=True, hold=str(hold))
    wait_for_checkpoint_in(client, 0)
    kill_job_master_process(client)
    shutil.rmtree(tmp_path / "checkpoints")  # before Ray brought the job master back
    with pytest.raises(JobExecutionError) as err:
        client.wait(120)
    message = str(err.value)
    assert "its checkpoint store" in message and "is gone" in message, message
    assert "cannot resume without repeating or losing" in message
    wait_until(lambda: not leftover_tasks(job, client.job_id), what="the old tasks to go")


def test_the_tasks_of_a_job_master_gone_for_good_end_themselves(tmp_path):
    """Killed without restart (or out of restarts), a detached job's job master kills nothing:
    its tasks look it up every heartbeat interval and end once it is gone."""
    job = "jm-gone"
    hold = tmp_path / "hold"
    hold.write_text("")
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.get_config().heartbeat_interval_ms = 300
    (
        env.from_source(PacedEvents(N_EVENTS, rate=2_500, hold=str(hold)), source_name="events")
        .key_by(lambda e: e[0])
        .process(SequenceCheck())
        .sink_to(FileSink.jsonl(str(tmp_path / "out")))
    )
    client = env.execute_async(job, detached=True)
    wait_until(lambda: len(leftover_tasks(job, client.job_id)) == 4, what="the job's tasks")
    ray.kill(job_master_actor(client), no_restart=True)
    wait_until(lambda: not leftover_tasks(job, client.job_id), 60, "the orphaned tasks to end")


# -- the mechanisms a restarted job master relies on ---------------------------------------------


@pytest.mark.parametrize("kind", ["files", "lmdb"])
def test_a_restarted_job_master_adopts_exactly_its_jobs_checkpoints(kind, tmp_path):
    """Ours are the completed checkpoints above the newest one another job wrote (a store
    holds one running job at a time); one whose metadata does not verify counts as ours."""
    where = str(tmp_path / "store") if kind == "files" else f"lmdb://{tmp_path / 'store'}"
    key = b"k" * 32

    def commit(store, cid: int, job: str) -> None:  # noqa: ANN001
        blob = store.write_blob(cid, "task-0", b"state of %d" % cid)
        store.commit(cid, {"job_id": job, "blobs": {"task-0": blob}})

    with open_store(where, key) as store:
        for cid, job in [(1, "old"), (2, "old"), (3, "ours"), (4, "ours"), (6, "ours")]:
            commit(store, cid, job)
        store.write_blob(7, "task-0", b"in flight when the process died")
        store.record_committed("old", 2)
        store.record_committed("ours", 4)
    with open_store(where, b"x" * 32) as other_key:  # metadata 5 will not verify under `key`
        commit(other_key, 5, "ours")

    async def adopt() -> CheckpointRunner:
        layout = JobLayout("ours", "job", 128, {}, {})
        coordinator = CheckpointCoordinator(layout, CheckpointConfig(), SystemClock())
        runner = CheckpointRunner(
            coordinator, open_store(where, key), dict, lambda exc: asyncio.sleep(0), print
        )
        await runner.adopt_store()
        return runner

    runner = asyncio.run(adopt())
    coord = runner.coordinator
    try:
        assert coord.own == [3, 4, 5, 6]
        assert coord.first_id == 3  # the end of the job removes 3.. and never the old job's
        assert coord.next_id == 8  # above everything written, the blob of 7 too
        assert coord.last_committed == 4
    finally:
        runner.store.close()


@pytest.mark.parametrize("kind", ["files", "lmdb"])
def test_end_marks_are_signed_and_kept_apart_from_committed_marks(kind, tmp_path):
    where = str(tmp_path / "store") if kind == "files" else f"lmdb://{tmp_path / 'store'}"
    with open_store(where, b"k" * 32) as store:
        assert store.ended_status("job") is None
        store.record_committed("job", 3)
        store.record_ended("job", "FINISHED")
        assert store.ended_status("job") == "FINISHED"
        assert store.ended_status("other") is None
        assert store.committed_marks() == {"job": 3}  # an end mark is no committed mark
    with open_store(where, b"x" * 32) as other:  # another key: not believed
        assert other.ended_status("job") is None
    with open_store(where, b"k" * 32) as store:
        store.discard_ended("job")
        assert store.ended_status("job") is None
        assert store.committed_marks() == {"job": 3}


def test_a_restartable_job_masters_directory_is_swept_only_once_its_actor_is_gone(tmp_path):
    @ray.remote(num_cpus=0)
    class Stand:
        def ping(self) -> bool:
            return True

    actor = Stand.options(name="jm-stand-in", namespace="raystream-test").remote()
    ray.get(actor.ping.remote())
    path = str(tmp_path / "job-r")
    default_dirs.claim(path, "job-r", ("jm-stand-in", "raystream-test"))
    owner = default_dirs.read_owner(path)
    owner["pid"] = dead_pid()  # its process died; Ray may restart the actor
    (tmp_path / "job-r" / default_dirs.OWNER_FILE).write_text(json.dumps(owner))
    assert default_dirs.sweep_stale(str(tmp_path)) == []
    ray.kill(actor)
    wait_until(
        lambda: default_dirs.sweep_stale(str(tmp_path)) == [path], what="the sweep, actor gone"
    )

    # a restarted job master takes its directory over as it was left (retained stays so)
    default_dirs.claim(path, "job-s")
    default_dirs.mark_retained(path)
    default_dirs.claim(path, "job-s", ("jm", "raystream"))
    assert default_dirs.read_owner(path)["retained"] is True
    assert default_dirs.sweep_stale(str(tmp_path), keep=path) == []
