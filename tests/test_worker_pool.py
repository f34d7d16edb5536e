"""The driver's pool of warm worker hosts: later jobs run on the processes earlier jobs used."""

from __future__ import annotations

import gc

import pytest
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raystream import StreamExecutionEnvironment
from raystream.runtime.pool import options_key
from tests.chaos_jobs import PacedEvents, job_master_actor, wait_until, worker_released


def test_equal_options_give_equal_keys_whatever_the_objects_in_them():
    node, other = "ab" * 28, "cd" * 28

    def opts(node_id: str, soft: bool = False) -> dict:
        strategy = NodeAffinitySchedulingStrategy(node_id, soft=soft)
        return {"num_cpus": 0, "max_concurrency": 1000, "scheduling_strategy": strategy}

    # two strategy objects for the same node: one key (the repr of such an object is its address)
    assert options_key(opts(node)) == options_key(opts(node))
    assert options_key(opts(node)) != options_key(opts(other))
    assert options_key(opts(node)) != options_key(opts(node, soft=True))
    assert options_key({"num_cpus": 1}) != options_key({"num_cpus": 0})
    assert options_key({"a": 1, "b": 2}) == options_key({"b": 2, "a": 1})


@pytest.mark.usefixtures("ray_session")
def test_later_jobs_run_their_job_master_and_tasks_on_warm_hosts(tmp_path):
    def run() -> tuple[int, list[int], list]:
        hold = tmp_path / "hold"
        hold.write_text("")  # the job runs on until the test looked at its hosts
        env = StreamExecutionEnvironment()
        env.set_parallelism(2)
        it = (
            env.from_source(PacedEvents(100, rate=1e6, hold=str(hold)), source_name="events")
            .key_by(lambda e: e[1] % 3)
            .map(lambda e: e[1] + 1)
            .execute_and_collect("warm")
        )
        got = [next(it)]
        hosts = [job_master_actor(it.client), *it.client.task_actors().values()]
        guests = [ray.get(h.status.remote())["guests_hosted"] for h in hosts]
        hold.unlink()
        got.extend(it)
        assert sorted(got) == list(range(1, 101))
        del it
        gc.collect()  # the client goes: its job master's host goes back to the pool too
        wait_until(lambda: all(worker_released(h) for h in hosts), 60, "hosts back in the pool")
        return guests[0], guests[1:], hosts

    _, first_tasks, _ = run()
    assert first_tasks  # (earlier tests of this session may have warmed the pool already)
    later = [run() for _ in range(2)]
    # the job master's options name the driver's node; equal options must find the idle host.
    # Which warm hosts a job gets is the pool's choice (earlier tests may have left up to
    # max_idle of them, and a full pool stops what comes back): only "warm" is asserted
    for jm, tasks, _ in later:
        assert jm > 1, later
        assert tasks and all(g > 1 for g in tasks), later


class _Plus1:
    def __call__(self, x: int) -> int:
        return x + 1


@pytest.mark.usefixtures("ray_session")
def test_hosts_that_reserve_resources_are_not_kept_idle():
    """The session has 4 "special" resources: a job whose subtasks take all 4, then one whose two
    subtasks take 2 each. An idle host still holding the first job's 4 would leave the second
    job's actors unschedulable (until the pool's idle timeout); the pool stops such hosts."""

    def run(parallelism: int) -> list[int]:
        env = StreamExecutionEnvironment()
        stream = env.from_collection(list(range(50))).map(_Plus1())
        stream.set_parallelism(parallelism).set_resources(resources={"special": 4 / parallelism})
        return sorted(stream.execute_and_collect(f"reserving-p{parallelism}"))

    assert run(1) == list(range(1, 51))
    assert run(2) == list(range(1, 51))
    assert run(1) == list(range(1, 51))
