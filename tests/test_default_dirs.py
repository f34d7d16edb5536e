"""Default checkpoint directories: removed when the job ends, swept when their JobMaster died."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest
import ray

from raystream import StreamExecutionEnvironment
from raystream.checkpointing import default_dirs
from tests.chaos_jobs import Collector, job_master_actor, wait_until


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid names no process now
    return proc.pid


def owned_dir(root, name: str, **owner) -> str:
    path = root / name
    path.mkdir()
    (path / default_dirs.OWNER_FILE).write_text(json.dumps(owner))
    (path / "data.mdb").write_bytes(b"x")
    return str(path)


def test_claim_records_this_process_and_is_not_stale(tmp_path):
    path = str(tmp_path / "job-a")
    default_dirs.claim(path, "job-a")
    owner = default_dirs.read_owner(path)
    assert owner is not None
    assert owner["pid"] == os.getpid() and owner["job_id"] == "job-a"
    assert not default_dirs.is_stale(path)
    assert default_dirs.sweep_stale(str(tmp_path)) == []
    assert os.path.isdir(path)


def test_sweep_removes_only_directories_of_dead_owners_on_this_host(tmp_path):
    host = socket.gethostname()
    gone = dead_pid()
    stale = owned_dir(tmp_path, "stale", host=host, pid=gone, start=None, retained=False)
    live = owned_dir(tmp_path, "live", host=host, pid=os.getpid(), start=None, retained=False)
    kept = owned_dir(tmp_path, "retained", host=host, pid=gone, start=None, retained=True)
    other = owned_dir(tmp_path, "other-host", host=host + "-x", pid=gone, start=None)
    (tmp_path / "no-owner").mkdir()
    (tmp_path / "a-file").write_text("not a directory")
    assert default_dirs.sweep_stale(str(tmp_path)) == [stale]
    assert not os.path.exists(stale)
    for path in (live, kept, other, str(tmp_path / "no-owner"), str(tmp_path / "a-file")):
        assert os.path.exists(path), path


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc start times")
def test_a_reused_pid_does_not_keep_a_directory(tmp_path):
    """The owner's pid now names another process (other start time): the owner is gone."""
    path = owned_dir(
        tmp_path, "reused", host=socket.gethostname(), pid=os.getpid(), start="1", retained=False
    )
    assert default_dirs.is_stale(path)


def test_mark_retained_protects_a_directory(tmp_path):
    path = owned_dir(
        tmp_path, "job", host=socket.gethostname(), pid=dead_pid(), start=None, retained=False
    )
    default_dirs.mark_retained(path)
    assert default_dirs.sweep_stale(str(tmp_path)) == []


def test_a_missing_root_sweeps_nothing(tmp_path):
    assert default_dirs.sweep_stale(str(tmp_path / "absent")) == []


# -- on Ray -------------------------------------------------------------------------------------


def slow_identity(x):
    time.sleep(0.002)
    return x


def default_dir_job(n: int) -> Collector:
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    env.enable_checkpointing(100)  # no storage set: the job's own temporary directory
    stream = env.from_sequence(0, n - 1).map(slow_identity)
    return Collector(stream.execute_and_collect("default-dir"))


def store_dir(client) -> str:
    location = client.get_checkpoint_stats()["location"]
    assert location.startswith("file://"), location  # the default disk store: plain files
    path = location[len("file://") :]
    # per user and per job, private: <tmp>/raystream-<uid>/checkpoints/<job id>, all 0700
    assert os.path.dirname(os.path.dirname(path)).endswith(f"raystream-{os.getuid()}")
    for d in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    return path


@pytest.mark.usefixtures("ray_session")
def test_the_default_directory_goes_when_the_job_ends_or_after_its_job_master_died():
    # a job master killed with its job leaves its directory behind...
    col = default_dir_job(100_000)
    wait_until(lambda: col.client.get_checkpoint_stats()["completed"] >= 1, what="a checkpoint")
    orphan = store_dir(col.client)
    owner = default_dirs.read_owner(orphan)
    assert owner is not None and os.path.isdir(orphan)
    ray.kill(job_master_actor(col.client), no_restart=True)
    wait_until(lambda: default_dirs.is_stale(orphan), what="the killed job master to exit")
    with pytest.raises(Exception):  # noqa: B017 - whatever the dead master makes the iterator raise
        col.join()
    assert os.path.isdir(orphan)

    # ...which the next job with the default location sweeps; its own goes when it ends
    col = default_dir_job(500)
    wait_until(lambda: col.client.get_checkpoint_stats()["completed"] >= 1, what="a checkpoint")
    own = store_dir(col.client)
    assert own != orphan and os.path.isdir(own)
    assert not os.path.exists(orphan)
    assert col.join() == list(range(500))
    assert not os.path.exists(own)
