"""A job's resources reserved in one placement group, a bundle per slot (issue 12 §4)."""

from __future__ import annotations

import pytest
import ray

from raystream import GraphError, MapFunction, StreamExecutionEnvironment
from raystream.runtime.placement import slot_bundles
from tests.test_processes import SCRIPTS, script_json


class WhereAmI(MapFunction):
    def open(self, runtime_context):
        self.group = ray.get_runtime_context().get_placement_group_id()

    def map(self, value):
        return (value, self.group)


def test_a_slot_reserves_one_subtask_of_every_chain():
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.set_placement("SPREAD", slot_num_cpus=0.25)
    (
        env.from_sequence(1, 10)
        .set_parallelism(1)
        .map(str)
        .set_parallelism(3)
        .set_resources(num_cpus=0.5, resources={"special": 0.1})
        .map(len)  # parallelism 2, asks for nothing
        .set_resources(num_gpus=1)
        .print()
    )
    plan = env._build("slots", False)  # noqa: SLF001 - the plan the job master gets
    # slot i: subtask i of every chain with parallelism > i (source 1, str 3, len+print 2)
    assert slot_bundles(plan) == [
        {"CPU": 0.5, "special": 0.1, "GPU": 1.0},
        {"CPU": 0.5, "special": 0.1, "GPU": 1.0},
        {"CPU": 0.5, "special": 0.1},
    ]
    plain = StreamExecutionEnvironment()
    plain.set_parallelism(3)
    plain.set_placement("PACK")
    plain.from_sequence(1, 10).map(str).print()
    assert slot_bundles(plain._build("plain", False)) == [{"CPU": 1.0}] * 3  # noqa: SLF001


def test_placement_settings_are_checked():
    env = StreamExecutionEnvironment()
    with pytest.raises(GraphError, match="placement strategy must be one of"):
        env.set_placement("EVERYWHERE")
    with pytest.raises(GraphError, match="slot_num_cpus must be > 0"):
        env.set_placement("PACK", slot_num_cpus=0)


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(180)
def test_tasks_run_in_the_jobs_placement_group_which_goes_with_the_job():
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.set_placement("PACK", slot_num_cpus=1)
    out = list(env.from_sequence(1, 2000).rebalance().map(WhereAmI()).execute_and_collect())
    assert sorted(v for v, _ in out) == list(range(1, 2001))
    groups = {g for _, g in out}
    assert len(groups) == 1 and None not in groups, groups
    (group,) = groups
    table = ray.util.placement_group_table()
    assert table[group]["strategy"] == "PACK"
    assert [b for b in table[group]["bundles"].values()] == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert table[group]["state"] == "REMOVED"  # the job ended: its reservation went with it


@pytest.mark.timeout(300)
def test_a_job_larger_than_the_head_node_runs_on_workers_and_shows_as_demand():
    out = script_json(SCRIPTS / "placement_cluster.py")
    assert out["count"] == 4000 and out["values"]
    assert len(out["groups"]) == 1  # every task of the job in its one group
    # the head has 1 CPU: of the 4 one-CPU slots, at least 3 are on the two workers
    assert set(out["workers"]) <= set(out["nodes"]) <= {out["head"], *out["workers"]}
    # slots no node can hold: pending placement-group demand the autoscaler sees...
    assert out["demand"] == [[{"CPU": 3.0}, "PACK"]], out["demand"]
    # ...until the job gives up with what it asked for and what the cluster has
    (failure,) = out["failure"]
    assert "could not reserve its 2 slots (PACK: {CPU: 3}, {CPU: 3}) within 20 s" in failure
    assert "the cluster has {CPU: 5} in all" in failure
    assert out["groups_left"] == []
