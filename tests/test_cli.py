"""The ``raystream`` command line against a real ``ray start --head`` cluster on loopback.

Every command runs as its own process, as a person would type it; the job is
``examples/paced_totals.py`` (an unbounded paced sequence, running totals per key, written
exactly once by a file sink). The reference output of a failure-free run comes from the same
example on the test session's own local Ray.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import random
import re
import subprocess
import sys
import time

import pytest

from tests.ray_cluster import ROOT, RayCluster, free_ports, start_head

EXAMPLE = "examples/paced_totals.py"
CLI_TIMEOUT_S = 120
#: the console script ``pip install`` puts next to the interpreter (pyproject [project.scripts])
RAYSTREAM = os.path.join(os.path.dirname(sys.executable), "raystream")


@pytest.fixture(scope="module")
def cluster():
    c = start_head(dashboard=True)  # the dashboard: what `ray job submit` talks to
    yield c
    c.stop()


def raystream(
    cluster: RayCluster | None,
    *args: str,
    timeout: float = CLI_TIMEOUT_S,
    env_extra: dict[str, str] | None = None,
):
    """Runs ``raystream ARGS`` (the installed console script) in a process of its own."""
    assert os.path.exists(RAYSTREAM), f"no console script {RAYSTREAM}: pip install -e ."
    env = cluster.env() if cluster is not None else _no_cluster_env()
    env.update(env_extra or {})
    return subprocess.run(
        [RAYSTREAM, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def _no_cluster_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout


def committed_lines(out_dir: pathlib.Path) -> list[dict]:
    """The records of the visible (committed) part files."""
    lines = []
    for part in sorted(out_dir.glob("part-*")):
        lines.extend(json.loads(line) for line in part.read_text().splitlines() if line)
    return lines


def wait_for(condition, timeout_s: float, what: str):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def named_actors(cluster: RayCluster) -> list[str]:
    """The names of the cluster's named actors, of every namespace."""
    code = (
        "import json, ray; ray.init(log_to_driver=False); "
        "print(json.dumps([a['name'] for a in ray.util.list_named_actors(all_namespaces=True)]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=cluster.env(),
        timeout=CLI_TIMEOUT_S,
    )
    return json.loads(ok(proc).strip().splitlines()[-1])


def submitted_id(stdout: str) -> str:
    line = next(x for x in stdout.splitlines() if x.startswith("Job has been submitted"))
    return line.split("JobID ")[1].split()[0]


def test_detached_job_savepoint_stop_resume_cancel_is_exactly_once(cluster, tmp_path, ray_session):
    out = tmp_path / "out"
    sp, stop_sp = tmp_path / "sp", tmp_path / "stop-sp"

    # the driver submits the job detached and exits
    first_id = submitted_id(ok(raystream(cluster, "run", "--detached", EXAMPLE, str(out))))
    wait_for(lambda: list(out.glob("part-*")), 60, "a first committed part file")

    listed = json.loads(ok(raystream(cluster, "list", "--json")))
    assert [(j["job_id"], j["job_name"], j["status"], j["detached"]) for j in listed] == [
        (first_id, "paced-totals", "RUNNING", True)
    ]
    info = ok(raystream(cluster, "info", "paced-totals"))
    assert f"Job {first_id} ('paced-totals'): RUNNING" in info
    assert "task 'Reduce -> FileSink' x2" in info
    assert "Reduce -> FileSink (2/2): RUNNING" in info
    assert "last: checkpoint " in info

    # a savepoint the job master cannot write fails with a message; the job goes on
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = raystream(cluster, "savepoint", first_id, str(blocker / "sp"))
    assert bad.returncode == 1
    assert bad.stderr.startswith("raystream savepoint: error: ")
    assert "Traceback" not in bad.stderr

    assert f"Savepoint completed. Path: {sp}" in ok(
        raystream(cluster, "savepoint", first_id[:8], str(sp))
    )
    assert any(sp.iterdir())
    stopped = ok(raystream(cluster, "stop", "paced-totals", "--savepoint", str(stop_sp)))
    assert f"Stopped job {first_id}" in stopped
    after_stop = committed_lines(out)
    assert sorted(r["x"] for r in after_stop) == list(range(len(after_stop)))  # a prefix, once

    assert json.loads(ok(raystream(cluster, "list", "--json"))) == []
    kept = json.loads(ok(raystream(cluster, "list", "--all", "--json")))
    assert [(j["job_id"], j["status"]) for j in kept] == [(first_id, "FINISHED")]

    # resumed from the stop's savepoint, by a new detached driver; its final status is kept
    # for 2 s after it ends
    resumed = ok(
        raystream(
            cluster,
            "run",
            "--detached",
            "--from-savepoint",
            str(stop_sp),
            EXAMPLE,
            str(out),
            "--retention-ms",
            "2000",
        )
    )
    second_id = submitted_id(resumed)
    wait_for(lambda: len(committed_lines(out)) > len(after_stop) + 50, 60, "resumed output")
    # by name: the running job of that name, not the one that finished
    cps = json.loads(ok(raystream(cluster, "checkpoints", "paced-totals", "--json")))
    assert cps["completed"] >= 1 and len(cps["restored_from"]) == 1
    info2 = json.loads(ok(raystream(cluster, "info", second_id, "--json")))
    assert info2["job"]["restored_from_savepoint"] == str(stop_sp)
    assert info2["job"]["status"] == "RUNNING"
    assert "Cancelled job " + second_id in ok(raystream(cluster, "cancel", second_id))

    # nothing of the canceled job stays: its tasks go at once, its job master after 2 s; the
    # stopped job keeps only its job master (its retention is the default)
    def gone() -> bool:
        names = named_actors(cluster)
        return not any(second_id[:8] in n for n in names) and names

    names = wait_for(gone, 60, "the canceled job's actors to go")
    assert [n for n in names if first_id[:8] in n] == [
        f"raystream:jobmaster:paced-totals:{first_id[:8]}"
    ]
    again = raystream(cluster, "cancel", second_id)
    assert again.returncode == 1 and "JobNotFoundError" in again.stderr

    # exactly once: the committed output of the three runs is that of one failure-free run
    final = committed_lines(out)
    count = len(final)
    assert sorted(r["x"] for r in final) == list(range(count))
    reference = _failure_free_run(tmp_path / "reference", count)
    assert sorted(final, key=lambda r: r["x"]) == sorted(reference, key=lambda r: r["x"])


def _failure_free_run(out: pathlib.Path, count: int) -> list[dict]:
    from examples.paced_totals import build
    from raystream import StreamExecutionEnvironment

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    build(env, str(out), rate=1e9, count=count)
    env.execute("failure-free paced totals")
    return committed_lines(out)


def test_bad_input_fails_with_a_message_and_an_exit_code(cluster, tmp_path):
    unknown = raystream(cluster, "info", "no-such-job")
    assert unknown.returncode == 1
    assert "error: JobNotFoundError: no job named 'no-such-job'" in unknown.stderr

    (dead_port,) = free_ports(1)
    dead = raystream(None, "list", "--address", f"127.0.0.1:{dead_port}")
    assert dead.returncode == 1
    assert f"ClusterUnreachableError: no Ray cluster at 127.0.0.1:{dead_port}" in dead.stderr
    run_dead = raystream(
        None, "run", "--detached", "--address", f"127.0.0.1:{dead_port}", EXAMPLE, str(tmp_path)
    )
    assert run_dead.returncode == 1 and "no Ray cluster at" in run_dead.stderr

    drain = raystream(cluster, "stop", "any-job", "--savepoint", str(tmp_path), "--drain")
    assert drain.returncode == 1 and "--drain is not supported yet" in drain.stderr
    missing = raystream(cluster, "run", str(tmp_path / "missing.py"))
    assert missing.returncode == 1 and "no such script" in missing.stderr
    usage = raystream(cluster, "stop", "any-job")  # --savepoint is required
    assert usage.returncode == 2 and "--savepoint" in usage.stderr


def test_ray_job_submit_runs_an_example_on_the_cluster(cluster, tmp_path):
    """The way a user runs a job on a cluster: ``ray job submit`` (Ray's CLI, through the
    dashboard's job API on 127.0.0.1 with the cluster's auth token) of an unchanged example."""
    rng = random.Random(12)
    words = [rng.choice(["kafka", "ray", "flink", "state", "window", "barrier"]) for _ in range(300)]
    text = tmp_path / "words.txt"
    text.write_text("\n".join(" ".join(words[i : i + 7]) for i in range(0, len(words), 7)))
    env = cluster.env()
    env.pop("RAY_ADDRESS")  # the job API's address is given instead
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "job",
            "submit",
            "--address",
            f"http://127.0.0.1:{cluster.dashboard_port}",
            "--working-dir",
            str(ROOT / "examples"),
            "--",
            "python",
            "wordcount.py",
            "--input",
            str(text),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    out = ok(proc)
    assert "succeeded" in out
    printed = [
        (int(m.group(1)), m.group(2))
        for m in (re.match(r"^\s+(\d+)\s+(\S+)$", line) for line in out.splitlines())
        if m
    ]
    counts = collections.Counter(words)
    assert printed == sorted(((n, w) for w, n in counts.items()), key=lambda t: (-t[0], t[1]))


def test_elsewhere_a_detached_job_is_controlled_only_with_its_token(cluster, tmp_path):
    """Another user (or machine) has none of the tokens the submitting user's CLI keeps (a
    temporary directory of its own stands for that): it may look at the job, but cancel and
    savepoint are refused until it passes the job's token (--token)."""
    from raystream.runtime.job_tokens import token_path

    job_id = submitted_id(ok(raystream(cluster, "run", "--detached", EXAMPLE, str(tmp_path / "o"))))
    other_home = tmp_path / "other-user"
    other_home.mkdir(mode=0o700)
    elsewhere = {"TMPDIR": str(other_home), "RAYSTREAM_JOB_TOKEN": ""}
    assert "RUNNING" in ok(raystream(cluster, "info", job_id, env_extra=elsewhere))
    for args in (("cancel", job_id), ("savepoint", job_id, str(tmp_path / "sp"))):
        refused = raystream(cluster, *args, env_extra=elsewhere)
        assert refused.returncode == 1, refused.stdout
        assert "JobControlError" in refused.stderr and "control token" in refused.stderr
        assert "Traceback" not in refused.stderr
    wrong = raystream(cluster, "cancel", job_id, "--token", "0" * 32, env_extra=elsewhere)
    assert wrong.returncode == 1 and "JobControlError" in wrong.stderr
    with open(token_path(job_id)) as f:  # what the submitting user hands over
        token = f.read().strip()
    done = raystream(cluster, "cancel", job_id, "--token", token, env_extra=elsewhere)
    assert f"Cancelled job {job_id}" in ok(done)
    listed = json.loads(ok(raystream(cluster, "list", "--all", "--json")))
    assert [j["status"] for j in listed if j["job_id"] == job_id] == ["CANCELED"]
