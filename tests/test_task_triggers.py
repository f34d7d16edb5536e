"""A source task takes a checkpoint whose trigger reached it before its ``run`` call started.

The job master sends ``run`` and then, once the job is RUNNING, the periodic triggers; Ray starts
the calls of an async actor in no guaranteed order. A source that dropped a trigger seen before
``run`` left that checkpoint pending until it expired (10 minutes by default), while the barriers
of its sibling sources held every downstream input of theirs aligned: after a restart the job
stalled with records queued. The task is driven here in-process, as its actor would be.
"""

from __future__ import annotations

import asyncio

import pytest

from raystream import CheckpointingMode, StreamExecutionEnvironment
from raystream.runtime import serde
from raystream.runtime.deploy import task_specs
from raystream.runtime.task import Task

pytestmark = pytest.mark.usefixtures("ray_session")


class _Method:
    def __init__(self, calls: list, name: str):
        self.calls = calls
        self.name = name

    def remote(self, *args) -> None:  # noqa: ANN002
        self.calls.append((self.name, *args))


class _JobMaster:
    """Records what a task tells its job master."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str) -> _Method:
        return _Method(self.calls, name)


def _source_task() -> Task:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    env.enable_checkpointing(60_000, CheckpointingMode.EXACTLY_ONCE)
    env.from_collection(list(range(100))).map(lambda x: x + 1).print()
    plan = env._build("trigger-before-run")  # noqa: SLF001 - the plan execute() deploys
    (spec,) = task_specs(plan, "job-1").values()
    return Task(*serde.dumps(spec))


def test_a_trigger_that_arrives_before_run_is_taken_once_the_source_runs():
    async def scenario() -> list[tuple]:
        task = _source_task()
        jm = _JobMaster()
        await task.setup({}, {"job_master": jm}, None)
        assert task.state == "DEPLOYED"
        await task.trigger_checkpoint(7, 1_000, "checkpoint")  # overtook ``run``
        await task.run()
        await asyncio.gather(*list(task._snapshots_in_flight))
        return jm.calls

    calls = asyncio.run(scenario())
    acked = [c[3] for c in calls if c[0] == "acknowledge_checkpoint"]
    declined = [c for c in calls if c[0] == "decline_checkpoint"]
    assert acked == [7], calls
    assert declined == []


def test_a_trigger_after_the_source_finished_is_not_taken():
    async def scenario() -> list[tuple]:
        task = _source_task()
        jm = _JobMaster()
        await task.setup({}, {"job_master": jm}, None)
        await task.run()
        assert task.state == "FINISHED"
        await task.trigger_checkpoint(8, 2_000, "checkpoint")  # its final snapshot covers it
        await asyncio.gather(*list(task._snapshots_in_flight))
        return jm.calls

    calls = asyncio.run(scenario())
    assert [c for c in calls if c[0] == "acknowledge_checkpoint"] == []
