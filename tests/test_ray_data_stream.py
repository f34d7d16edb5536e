"""The streaming hand-off to Ray Data: the queue's rules without Ray (release by checkpoint,
attempts after a restore, end of stream), and a job whose output a Ray Data pipeline reads and
transforms while the job is still producing, exactly once with checkpoints."""

from __future__ import annotations

import pathlib

import pytest

from raystream import StreamExecutionEnvironment
from raystream.operators.raydata_stream import HandoffBuffer
from tests.test_map_batches import GatedSource

# -- the rules ------------------------------------------------------------------------------------


def drain(buf: HandoffBuffer) -> list:
    out = []
    while (block := buf.take()) is not None:
        out.append(block)
    return out


def test_blocks_are_held_until_a_checkpoint_at_or_past_their_epoch_completes():
    buf = HandoffBuffer(capacity_blocks=4)
    buf.put(0, 0, 1, "a1")  # before barrier 1
    buf.put(0, 0, 2, "a2")  # after barrier 1
    assert drain(buf) == []
    buf.commit(0, 0, 1)
    assert drain(buf) == ["a1"]
    buf.commit(0, 0, 3)  # a later checkpoint covers earlier epochs too
    assert drain(buf) == ["a2"]
    buf.put(0, 0, None, "now")  # no checkpointing: released at once
    assert drain(buf) == ["now"] and buf.has_room()


def test_a_restarted_attempt_releases_what_its_checkpoint_covers_and_drops_the_rest():
    buf = HandoffBuffer(capacity_blocks=4)
    buf.put(0, 0, 3, "before-3")
    buf.put(0, 0, 4, "after-3")
    # checkpoint 3 completed, its notice never arrived; the job restores from 3 (attempt 1)
    buf.put(1, 3, 4, "replayed-after-3")
    assert drain(buf) == ["before-3"] and buf.dropped == 1
    buf.put(0, 0, 4, "late call of attempt 0")
    buf.commit(0, 0, 9)
    assert drain(buf) == [] and buf.dropped == 2
    buf.commit(1, 3, 5)
    assert drain(buf) == ["replayed-after-3"]


def test_the_stream_ends_when_every_writer_of_the_current_attempt_is_done():
    buf = HandoffBuffer(capacity_blocks=1)
    buf.writer_done(0, 0, 0, 2)
    buf.put(0, 0, None, "x")
    assert not buf.finished() and not buf.has_room()
    buf.writer_done(0, 0, 1, 2)
    assert not buf.finished()  # "x" is unread
    assert drain(buf) == ["x"] and buf.finished()


# -- a job feeding a Ray Data pipeline ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(240)
def test_a_ray_data_pipeline_reads_the_job_s_output_while_the_job_runs(tmp_path):
    gate = pathlib.Path(tmp_path / "gate")
    first, rest = 2000, 4000
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.enable_checkpointing(100)
    env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "checkpoints"))
    handoff = (
        env.from_source(GatedSource(str(gate), first, rest), source_name="texts")
        .set_parallelism(1)
        .rebalance()
        .map(lambda r: {"id": r["id"], "length": len(r["text"])})
        .to_ray_data_stream(rows_per_block=256, capacity_blocks=4)
    )
    client = env.execute_async("ray-data-stream")
    pipeline = handoff.dataset(target_block_bytes=8 << 10).map_batches(
        lambda b: {"id": b["id"], "double": b["length"] * 2}, batch_format="numpy"
    )
    seen: list = []
    status_at_first_row = None
    for row in pipeline.iter_rows():
        if not seen:  # the source waits at the gate until now: the job is running
            status_at_first_row = client.get_job_status().name
            gate.touch()
        seen.append((int(row["id"]), int(row["double"])))
    client.wait(120)
    assert status_at_first_row == "RUNNING"
    assert sorted(seen) == [(i, 2 * (i % 7)) for i in range(first + rest)]  # each exactly once
    assert handoff.stats()["held"] == 0
    handoff.close()
