"""A slow operator must not starve the control plane: steps of the task loop bounded by time."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raystream import StreamExecutionEnvironment
from raystream.runtime.pacing import StepSizer
from tests.chaos_jobs import Collector, wait_until

# -- the step sizer, as a pure class --------------------------------------------------------------


def test_a_fast_chain_reaches_the_maximum_step_by_doubling():
    sizer = StepSizer(8192, target_s=0.05, initial=16)
    sizes = [sizer.size]
    while sizer.size < 8192:
        sizer.observe(sizer.size, sizer.size * 1e-6)  # 1 us per record
        sizes.append(sizer.size)
    assert sizes == [16 * 2**i for i in range(10)]
    sizer.observe(8192, 8192 * 1e-6)
    assert sizer.size == 8192  # never above the maximum


def test_a_slow_chain_gets_steps_of_about_the_target():
    sizer = StepSizer(8192, target_s=0.05, initial=16)
    for _ in range(20):
        sizer.observe(sizer.size, sizer.size * 0.002)  # 2 ms per record
    assert sizer.size == 25  # 0.05 s / 2 ms


def test_a_chain_that_slows_down_shrinks_at_once_and_recovers_by_doubling():
    sizer = StepSizer(8192, target_s=0.05, initial=8192)
    sizer.observe(8192, 8192 * 0.01)  # 10 ms per record
    assert sizer.size == 5
    sizer.observe(5, 5 * 1e-6)
    assert sizer.size == 10


def test_slower_than_the_target_per_record_still_takes_one_record():
    sizer = StepSizer(100, target_s=0.05, initial=4)
    sizer.observe(4, 4.0)
    assert sizer.size == 1


def test_steps_without_records_or_without_measurable_time():
    sizer = StepSizer(100, initial=10)
    assert sizer.observe(0, 5.0) == 10  # nothing read: nothing learned
    assert sizer.observe(10, 0.0) == 20  # below clock resolution: as fast as can be


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one record"):
        StepSizer(0)
    with pytest.raises(ValueError, match="target"):
        StepSizer(10, target_s=0)
    assert StepSizer(8, initial=100).size == 8


@given(
    costs=st.lists(st.floats(min_value=1e-7, max_value=0.1), min_size=1, max_size=40),
    max_records=st.integers(min_value=1, max_value=20000),
)
def test_a_step_overshoots_the_target_at_most_twice_when_the_cost_is_steady(costs, max_records):
    """After one step at a cost, the next step at that cost takes at most about 2x the target
    (one record at least), and the size stays within [1, max_records]."""
    target = 0.05
    sizer = StepSizer(max_records, target_s=target)
    for cost in costs:
        sizer.observe(sizer.size, sizer.size * cost)
        assert 1 <= sizer.size <= max_records
        # at a steady cost the next step fits the target, or is a single record
        assert sizer.size * cost <= target * (1 + 1e-9) or sizer.size == 1


# -- on Ray: control calls while a slow chained function runs -------------------------------------

N = 4000


def slow_square(x):
    time.sleep(0.002)  # at least 2 ms per record: 8192 records would take over 16 s
    return x * x


def op_metrics(client, operator: str) -> list[dict]:
    return [
        t["operators"][operator]
        for t in client.metrics()["tasks"]
        if operator in t.get("operators", {})
    ]


def records_in(client, operator: str) -> int:
    return sum(m["records_in"] for m in op_metrics(client, operator))


@pytest.mark.usefixtures("ray_session")
def test_source_chained_to_a_slow_function_answers_checkpoints_savepoints_and_metrics(tmp_path):
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    env.enable_checkpointing(3_600_000)  # only the checkpoints this test triggers
    env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "checkpoints"))
    stream = env.from_sequence(0, N - 1).name("numbers").map(slow_square).name("slow")
    col = Collector(stream.execute_and_collect("slow chain"))
    client = col.client
    try:
        wait_until(lambda: records_in(client, "slow") >= 50, what="the slow map to start")
        metrics = client.metrics()
        source_task = next(t for t in metrics["tasks"] if "slow" in t.get("operators", {}))
        assert "error" not in source_task
        # a step of records that take >= 2 ms each is at most twice the 50 ms target
        assert 1 <= source_task["step_records"] <= 50

        # with 8192-record steps the whole input (N < 8192) is one step, so a checkpoint could
        # only be taken after every record was read and mapped
        done = client.trigger_checkpoint()
        assert done["checkpoint_id"] >= 1
        after_checkpoint = records_in(client, "slow")
        assert after_checkpoint < N // 2, after_checkpoint

        client.trigger_savepoint(str(tmp_path / "savepoint"))
        after_savepoint = records_in(client, "slow")
        assert after_savepoint < N * 3 // 4, after_savepoint
        values = col.join()
    finally:
        if not client.get_job_status().is_globally_terminal_state():
            client.cancel()
    assert values == [x * x for x in range(N)]
    assert any((tmp_path / "savepoint").iterdir())


@pytest.mark.usefixtures("ray_session")
def test_a_task_working_through_a_large_batch_answers_metrics_between_slices():
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    n = 2000
    stream = env.from_sequence(0, n - 1).name("numbers").map(slow_square).name("slow")
    col = Collector(stream.disable_chaining().execute_and_collect("slow downstream"))
    client = col.client

    def seen_mid_batch() -> bool:
        # records_in counts a received batch when it starts, records_out each slice it emitted:
        # between two whole batches they are equal
        m = op_metrics(client, "slow")
        return bool(m) and 0 < m[0]["records_out"] < m[0]["records_in"]

    try:
        wait_until(seen_mid_batch, timeout_s=60, what="a metrics answer in the middle of a batch")
        values = col.join()
    finally:
        if not client.get_job_status().is_globally_terminal_state():
            client.cancel()
    assert values == [x * x for x in range(n)]
