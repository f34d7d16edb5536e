"""Job control belongs to the job's owner: a second client of the cluster cannot take the
collected records, cancel or savepoint without the control token, and nothing but the job's own
tasks can push into a task or report to the job master."""

from __future__ import annotations

import os
import pickle
import stat

import pytest
import ray

from raystream import JobClient, StreamExecutionEnvironment
from raystream.runtime.host import StaleGuestError
from raystream.runtime.job_tokens import (
    ENV_TOKEN,
    JobControlError,
    load_token,
    new_token,
    save_token,
    token_path,
)
from tests.chaos_jobs import Collector, PacedEvents, wait_until

pytestmark = pytest.mark.usefixtures("ray_session")


class _Planted:
    """Unpickling this writes a file: proof that a payload was (or was not) unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.path, "w"))


def test_a_second_client_cannot_take_records_or_control_the_job(tmp_path, monkeypatch):
    monkeypatch.delenv("RAYSTREAM_JOB_TOKEN", raising=False)
    n = 6000
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    stream = env.from_source(PacedEvents(n, 1500), source_name="events").map(lambda e: e[1])
    col = Collector(stream.execute_and_collect("owned"))
    owner = col.client
    wait_until(lambda: len(col.values) > 100, what="the first records")

    other = JobClient.attach(owner.job_id)  # any client of the cluster finds the job...
    assert other.control_token is None  # ...but a job not submitted detached keeps no token
    assert other.get_job_status() == owner.get_job_status()  # status is open to everyone
    with pytest.raises(JobControlError, match="control token"):
        other._collect_fetch(0.1)  # noqa: SLF001 - what a second driver would call
    with pytest.raises(JobControlError):
        other.cancel()
    with pytest.raises(JobControlError):
        other.trigger_savepoint(str(tmp_path / "sp"))
    with pytest.raises(JobControlError):
        other.stop_with_savepoint(str(tmp_path / "sp"))
    with pytest.raises(JobControlError):
        other.trigger_checkpoint()
    assert not (tmp_path / "sp").exists()
    forged = JobClient(owner.job_id, owner.job_name, other._jm, token="0" * 32)  # noqa: SLF001
    with pytest.raises(JobControlError):
        forged.cancel()

    # a task takes pushes only from its job's tasks: a forged one is refused unread
    name, task = sorted(owner.task_actors().items())[-1]
    planted = str(tmp_path / "unpickled")
    payload = pickle.dumps(_Planted(planted))
    with pytest.raises(StaleGuestError):
        ray.get(task.push.remote("f" * 32, 0, 0, payload))
    with pytest.raises(StaleGuestError):
        ray.get(task.call.remote("f" * 32, "notify_checkpoint_complete", 1, True))
    # the job master takes records and acknowledgements only from its tasks
    jm = owner._jm  # noqa: SLF001
    with pytest.raises(JobControlError):
        ray.get(jm.collect_push.remote("not-the-secret", "c", 0, 0, 0, 0, payload))
    for report in ("acknowledge_checkpoint", "decline_checkpoint"):
        args = (
            [(0, 0), 0, 1, [None], 0] if report == "acknowledge_checkpoint" else [(0, 0), 0, 1, ""]
        )
        with pytest.raises(JobControlError):
            ray.get(getattr(jm, report).remote("not-the-secret", *args))
    assert not os.path.exists(planted)

    assert sorted(col.join()) == list(range(n))  # the owner got every record, once


def test_a_detached_jobs_token_is_kept_private_and_the_environment_wins(monkeypatch):
    monkeypatch.delenv(ENV_TOKEN, raising=False)
    job_id = f"test-{new_token()}"
    save_token(job_id, "t" * 32)  # what a detached submission keeps for this user's CLI
    path = token_path(job_id)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        assert load_token(job_id) == "t" * 32
        monkeypatch.setenv(ENV_TOKEN, "e" * 32)  # --token / RAYSTREAM_JOB_TOKEN
        assert load_token(job_id) == load_token("another-job") == "e" * 32
        monkeypatch.delenv(ENV_TOKEN)
        assert load_token("another-job") is None
    finally:
        os.unlink(path)
