"""Tests that need Ray sessions of their own: run in subprocesses (separate clusters)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from raystream.core.keys import key_group_of, subtask_of

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "tests" / "scripts"


def run_script(
    path: pathlib.Path, *args: str, env_extra: dict | None = None, timeout: float = 240
) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("RAY_ADDRESS", None)
    env.update(env_extra or {})
    proc = subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, (
        f"{path.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return proc.stdout


def script_json(path: pathlib.Path, *args: str, **kw) -> Any:  # noqa: ANN003
    """The JSON document a script printed: Ray may print its own lines to the driver's stdout
    too (e.g. the raylet's "worker processes have been started" warning), before or after it."""
    out = run_script(path, *args, **kw)
    decoder = json.JSONDecoder()
    for line in reversed(out.splitlines()):
        start = min((i for i in (line.find("{"), line.find("[")) if i >= 0), default=-1)
        if start < 0:
            continue
        try:
            return decoder.raw_decode(line, start)[0]
        except json.JSONDecodeError:
            continue
    raise AssertionError(f"{path.name} printed no JSON document:\n{out[-3000:]}")


def test_key_placement_is_stable_across_ray_sessions_and_hash_seeds():
    first = script_json(SCRIPTS / "key_placement.py", env_extra={"PYTHONHASHSEED": "1"})
    second = script_json(SCRIPTS / "key_placement.py", env_extra={"PYTHONHASHSEED": "2"})
    assert first == second
    assert len(first) == 106
    for key_repr, subtask in first.items():
        key = eval(key_repr)  # reprs of str/bytes/tuple/None/int/float/bool literals
        assert subtask == subtask_of(key_group_of(key, 128), 3, 128)


@pytest.mark.slow
def test_multi_node_cluster_gives_the_same_results():
    out = script_json(SCRIPTS / "multinode.py")
    assert out["cluster_nodes"] == 2
    assert len(out["source_nodes"]) == 1 and len(out["nodes"]) == 1
    assert out["source_nodes"] != out["nodes"], "the keyed stage should run on the other node"
    expected = {}
    for x in range(1, 20001):
        expected[str(x % 13)] = expected.get(str(x % 13), 0) + x
    assert out["finals"] == expected
    assert out["count"] == 20000


@pytest.mark.slow
def test_inference_subtasks_run_on_the_gpu_node_and_parsing_on_the_cpu_node():
    """map_batches(num_gpus=0.5) at parallelism 2: both subtasks share the worker node's one
    GPU (declared to Ray, no device needed); parsing stays on the node with CPU resources."""
    out = script_json(SCRIPTS / "gpu_placement.py")
    assert out["cluster_nodes"] == 2 and out["count"] == 400
    assert out["lengths"] == sorted(len("word " * (i % 9)) for i in range(400))
    assert out["model_nodes"] == [out["gpu_node"]]
    assert len(out["parse_nodes"]) == 1 and out["parse_nodes"] != out["model_nodes"]
    assert out["gpus"] == ["0"] and out["visible"] == ["0"]  # a half of GPU 0 each


def test_readme_example_runs_on_an_embedded_ray():
    out = run_script(ROOT / "examples" / "wordcount.py")
    assert "48 distinct words" in out
    assert "    13  to" in out


@pytest.mark.slow
def test_job_recovers_from_the_loss_of_a_node():
    out = script_json(SCRIPTS / "node_loss.py")
    assert out["tasks_on_removed_node"] >= 1
    assert out["restarts"] >= 1 and out["restored_from"][0] >= 1
    assert out["count"] == 30_000  # and the script checked every event once, counts contiguous
    assert out["alive_nodes"] == 2  # head and the remaining worker
