"""The job master's decisions without Ray: the checkpoint coordinator (trigger readiness, final
snapshots, subsumption, timeouts, tolerated failures, attempt fencing), the failover policy
(restart strategies, deterministic failures) and the collect buffer (exactly-once release,
order per sink subtask, BATCH hold, bounded size). Time comes from a clock the test sets."""

from __future__ import annotations

import ast
import pathlib
import random

import pytest

from raystream.checkpoint_config import (
    CheckpointConfig,
    ExponentialDelayRestart,
    FailureRateRestart,
    FixedDelayRestart,
    NoRestart,
)
from raystream.checkpointing.coordinator import (
    Abort,
    CheckpointCoordinator,
    Commit,
    Completed,
    DiscardRetained,
    FailJob,
    FetchSnapshot,
    JobLayout,
    TriggerTask,
    WriteBlob,
    blob_name,
)
from raystream.errors import TaskError, UserFunctionError
from raystream.runtime.collect_buffer import Admission, CollectBuffer
from raystream.runtime.elements import CheckpointKind
from raystream.runtime.failover import Fail, FailoverPolicy, Restart
from raystream.runtime.failures import FailureHistory

ROOT = pathlib.Path(__file__).resolve().parent.parent

CKPT = CheckpointKind.CHECKPOINT
SAVE = CheckpointKind.SAVEPOINT

# two sources feeding one sink: (chain 0, subtasks 0 and 1) -> (chain 1, subtask 0)
S0, S1, SINK = (0, 0), (0, 1), (1, 0)
TASKS = [S0, S1, SINK]


class FakeClock:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall_ms = 1_700_000_000_000

    def monotonic_s(self) -> float:
        return self.mono

    def now_ms(self) -> int:
        return self.wall_ms

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall_ms += int(seconds * 1000)


def layout() -> JobLayout:
    tasks = {
        blob_name(key): {"chain": f"c{key[0]}", "subtask": key[1], "parallelism": p, "uids": []}
        for key, p in ((S0, 2), (S1, 2), (SINK, 1))
    }
    upstream = {S0: frozenset(), S1: frozenset(), SINK: frozenset({S0, S1})}
    return JobLayout("job-1", "job", 128, tasks, upstream)


def coordinator(**config) -> tuple[CheckpointCoordinator, FakeClock]:
    clock = FakeClock()
    cfg = CheckpointConfig(interval_ms=1000, **config)
    return CheckpointCoordinator(layout(), cfg, clock), clock


def trigger(coord: CheckpointCoordinator, kind=CKPT, extra=None) -> tuple[int, list]:
    cid = coord.begin(kind, list(TASKS))
    return cid, coord.start(cid, extra or {})


def ack(coord: CheckpointCoordinator, key, cid, data=b"xx", attempt=None) -> list:
    """A task acknowledges and its snapshot is fetched: what the runner does."""
    attempt = coord.attempt if attempt is None else attempt
    fetch = coord.on_ack(key, attempt, cid)
    if fetch != [FetchSnapshot(cid, key)]:
        return fetch
    return coord.on_snapshot(key, cid, data)


def complete(coord: CheckpointCoordinator, cid: int) -> list:
    """Every task acknowledges ``cid`` and it is committed."""
    actions = []
    for key in TASKS:
        actions += ack(coord, key, cid)
    assert isinstance(actions[-1], Commit)
    return coord.on_committed(cid, "mem://")


def of(actions: list, kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


# -- the checkpoint coordinator: triggering ------------------------------------------------------


def test_periodic_trigger_waits_for_the_interval_and_then_counts_from_the_trigger():
    coord, clock = coordinator()
    assert not coord.periodic_due()  # not armed
    coord.arm_periodic()
    clock.advance(0.999)
    assert not coord.periodic_due()
    assert coord.seconds_to_next_periodic(at_most=0.05) == pytest.approx(0.001)
    clock.advance(0.001)
    assert coord.periodic_due()
    assert not coord.periodic_due()  # the next one is due one interval later
    clock.advance(1.0)
    assert coord.periodic_due()


def test_max_concurrent_holds_the_periodic_trigger_until_a_checkpoint_completes():
    coord, clock = coordinator()
    coord.arm_periodic()
    clock.advance(1.0)
    assert coord.periodic_due()
    cid, _ = trigger(coord)
    clock.advance(5.0)
    assert not coord.periodic_due()  # one pending, max_concurrent is 1
    complete(coord, cid)
    assert coord.periodic_due()


def test_savepoints_count_neither_for_max_concurrent_nor_for_min_pause():
    coord, clock = coordinator(min_pause_ms=500)
    trigger(coord, SAVE)
    assert coord.can_trigger()
    sid, _ = trigger(coord, SAVE)
    for key in TASKS:
        ack(coord, key, sid)
    coord.on_committed(sid, "mem://")
    assert coord.can_trigger()  # a savepoint's completion starts no pause


def test_min_pause_counts_from_the_last_completion():
    coord, clock = coordinator(min_pause_ms=500)
    cid, _ = trigger(coord)
    clock.advance(3.0)
    complete(coord, cid)
    assert not coord.can_trigger()
    clock.advance(0.499)
    assert not coord.can_trigger()
    clock.advance(0.001)
    assert coord.can_trigger()


def test_a_checkpoint_starts_at_sources_and_at_tasks_whose_upstream_finished():
    coord, clock = coordinator()
    cid, actions = trigger(coord)
    assert set(actions) == {
        TriggerTask(cid, S0, clock.wall_ms, CKPT),
        TriggerTask(cid, S1, clock.wall_ms, CKPT),
    }
    assert coord.task_finished(S0, b"final-0") == [WriteBlob(cid, blob_name(S0), b"final-0")]
    # the sink still has a running upstream task; once both finished it is triggered
    actions = coord.task_finished(S1, b"final-1")
    assert actions == [
        WriteBlob(cid, blob_name(S1), b"final-1"),
        TriggerTask(cid, SINK, clock.wall_ms, CKPT),
    ]


def test_ids_continue_above_the_store_and_after_a_restored_checkpoint():
    coord, _ = coordinator()
    coord.allocate_from(8)
    coord.continue_after(5)
    assert trigger(coord)[0] == 8 and coord.first_id == 8
    coord.continue_after(20)
    assert trigger(coord)[0] == 21


# -- completion, final snapshots, subsumption, retention -------------------------------------


def test_every_acknowledgement_is_written_and_the_metadata_is_committed_last():
    coord, clock = coordinator()
    coord.enumerator_blobs = {"src": "enumerator-0"}
    cid, actions = trigger(coord, extra={"enumerator-0": b"enum"})
    assert actions[0] == WriteBlob(cid, "enumerator-0", b"enum")
    assert coord.on_ack(S1, 0, cid) == [FetchSnapshot(cid, S1)]
    assert coord.on_ack(S1, 0, cid) == []  # counted once
    assert coord.on_snapshot(S1, cid, b"s1") == [WriteBlob(cid, blob_name(S1), b"s1")]
    ack(coord, S0, cid, b"s0")
    clock.advance(0.25)
    last = ack(coord, SINK, cid, b"sink")
    assert last == [
        WriteBlob(cid, blob_name(SINK), b"sink"),
        Commit(cid, CKPT, (blob_name(S1), blob_name(S0), blob_name(SINK), "enumerator-0")),
    ]
    assert coord.pending == {}  # being written: no longer pending
    meta = coord.metadata(cid, {"task-0-0": "h0"})
    assert meta["checkpoint_id"] == cid and meta["enumerators"] == {"src": "enumerator-0"}
    assert meta["tasks"] == layout().tasks and meta["blobs"] == {"task-0-0": "h0"}
    done = coord.on_committed(cid, "mem://x")
    assert done[0] == DiscardRetained(())
    stats = done[1].stats
    assert done[1] == Completed(stats, True, frozenset())
    assert (stats.checkpoint_id, stats.size_bytes, stats.location) == (cid, 12, "mem://x")
    assert stats.duration_ms == pytest.approx(250.0)
    assert coord.own == [cid] and coord.last_committed == cid


def test_final_snapshots_stand_for_finished_tasks_in_later_checkpoints():
    coord, _ = coordinator()
    coord.task_finished(S0, b"final-0")
    coord.task_finished(SINK, None)  # no final snapshot: still waited for
    cid, actions = trigger(coord)
    assert actions == [
        WriteBlob(cid, blob_name(S0), b"final-0"),
        TriggerTask(cid, S1, actions[1].timestamp_ms, CKPT),
    ]
    ack(coord, S1, cid)
    last = ack(coord, SINK, cid)
    assert isinstance(last[-1], Commit)
    completed = of(coord.on_committed(cid, "mem://"), Completed)[0]
    assert completed.final_tasks == frozenset({S0})


def test_a_final_snapshot_arriving_while_an_acknowledgement_is_fetched_is_not_counted_twice():
    coord, _ = coordinator()
    cid, _ = trigger(coord)
    assert coord.on_ack(S0, 0, cid) == [FetchSnapshot(cid, S0)]
    assert coord.task_finished(S0, b"final") == []
    assert coord.on_snapshot(S0, cid, b"acked") == [WriteBlob(cid, blob_name(S0), b"acked")]
    assert S0 not in coord.pending[cid].final


def test_when_every_task_finished_the_last_checkpoint_is_made_of_final_snapshots():
    coord, _ = coordinator()
    for key in TASKS:
        coord.task_finished(key, b"f")
    cid, actions = trigger(coord)
    assert of(actions, TriggerTask) == []
    assert {a.name for a in of(actions, WriteBlob)} == {blob_name(k) for k in TASKS}
    assert actions[-1] == Commit(cid, CKPT, tuple(a.name for a in of(actions, WriteBlob)))


def test_a_completed_checkpoint_subsumes_older_pending_checkpoints_but_not_savepoints():
    coord, _ = coordinator(max_concurrent=3)
    older, _ = trigger(coord)
    save, _ = trigger(coord, SAVE)
    newer, _ = trigger(coord)
    actions = complete(coord, newer)
    assert [(type(a), getattr(a, "checkpoint_id", None)) for a in actions] == [
        (Abort, older),
        (DiscardRetained, None),
        (Completed, None),
    ]
    assert "subsumed" in str(actions[0].error)
    assert list(coord.pending) == [save]
    assert coord.failed == 0 and coord.consecutive_failures == 0  # subsumed is not failed


def test_only_the_jobs_own_checkpoints_beyond_the_retained_count_are_discarded():
    coord, _ = coordinator(retained=2)
    coord.allocate_from(10)  # 1..9 are another job's (or the savepoint it started from)
    discarded = []
    for _ in range(4):
        cid, _ = trigger(coord)
        discarded += of(complete(coord, cid), DiscardRetained)
    assert [d.checkpoint_ids for d in discarded] == [(), (), (10,), (11,)]
    assert coord.own == [12, 13]


def test_overlapping_completions_out_of_order_keep_own_sorted_and_commit_the_newest():
    coord, _ = coordinator(max_concurrent=2, retained=5)
    first, _ = trigger(coord)
    second, _ = trigger(coord)
    for key in TASKS:
        ack(coord, key, first)
        ack(coord, key, second)
    coord.on_committed(second, "mem://")
    coord.on_committed(first, "mem://")
    assert coord.own == [first, second] and coord.last_committed == second


# -- failures ----------------------------------------------------------------------------------


def test_a_checkpoint_times_out_and_beyond_the_tolerance_the_job_fails_over():
    coord, clock = coordinator(timeout_ms=2000, tolerable_failures=1)
    first, _ = trigger(coord)
    clock.advance(1.999)
    assert coord.expire() == []
    clock.advance(0.001)
    actions = coord.expire()
    assert [type(a) for a in actions] == [Abort]  # the first failure is tolerated
    assert "expired after 2 s" in str(actions[0].error)
    second, _ = trigger(coord)
    clock.advance(2.0)
    actions = coord.expire()
    assert [type(a) for a in actions] == [Abort, FailJob]
    assert "more than 1 consecutive checkpoint failures tolerated" in str(actions[1].error)
    assert coord.failed == 2 and coord.consecutive_failures == 0


def test_a_completion_resets_the_consecutive_failures():
    coord, _ = coordinator(tolerable_failures=1)
    for _ in range(3):
        cid, _ = trigger(coord)
        assert of(coord.on_decline(S0, 0, cid, "no"), FailJob) == []
        cid, _ = trigger(coord)
        complete(coord, cid)
    cid, _ = trigger(coord)
    coord.on_decline(S0, 0, cid, "no")
    cid, _ = trigger(coord)
    assert len(of(coord.on_decline(S0, 0, cid, "no"), FailJob)) == 1


def test_a_failed_savepoint_does_not_count_against_the_tolerance():
    coord, _ = coordinator(tolerable_failures=0)
    sid, _ = trigger(coord, SAVE)
    actions = coord.on_decline(SINK, 0, sid, "disk full")
    assert [type(a) for a in actions] == [Abort]
    assert str(actions[0].error) == f"checkpoint {sid} declined: disk full"
    assert coord.failed == 1 and coord.consecutive_failures == 0


def test_a_lost_snapshot_or_a_failed_write_fails_the_checkpoint():
    coord, _ = coordinator(tolerable_failures=5)
    cid, _ = trigger(coord)
    coord.on_ack(S0, 0, cid)
    actions = coord.on_snapshot_lost(S0, cid, "owner died")
    assert "snapshot of task (0, 0) lost: owner died" in str(actions[0].error)
    assert coord.on_snapshot(S0, cid, b"late") == []  # dropped meanwhile
    cid, _ = trigger(coord)
    for key in TASKS:
        ack(coord, key, cid)
    assert cid in coord.committing
    actions = coord.on_commit_failed(cid, f"checkpoint {cid} could not be written: no space")
    assert [(type(a), a.checkpoint_id) for a in actions] == [(Abort, cid)]
    assert str(actions[0].error) == f"checkpoint {cid} could not be written: no space"
    assert coord.committing == {} and coord.pending == {}
    assert coord.failed == 2 and coord.consecutive_failures == 2 and coord.own == []


def test_a_new_attempt_aborts_pending_checkpoints_and_ignores_the_old_attempts_reports():
    coord, _ = coordinator(tolerable_failures=0)
    coord.task_finished(S0, b"final")
    cid, _ = trigger(coord)
    ack(coord, S1, cid)
    actions = coord.reset(1)
    assert [type(a) for a in actions] == [Abort]
    assert "aborted by a restart" in str(actions[0].error)
    assert coord.finished == {}  # final snapshots of the old attempt's tasks no longer count
    assert coord.failed == 0
    new, _ = trigger(coord)
    assert coord.on_ack(SINK, 0, new) == []  # an old task finishing its snapshot late
    assert coord.on_decline(SINK, 0, new, "stopped") == []
    assert list(coord.pending) == [new]
    assert coord.on_ack(SINK, 1, new) == [FetchSnapshot(new, SINK)]


def test_a_checkpoint_being_written_survives_a_new_attempt():
    coord, _ = coordinator()
    cid, _ = trigger(coord)
    for key in TASKS:
        ack(coord, key, cid)
    assert coord.reset(1) == []
    assert of(coord.on_committed(cid, "mem://"), Completed)[0].stats.checkpoint_id == cid


def test_abort_all_drops_every_pending_checkpoint_without_counting_failures():
    coord, _ = coordinator(max_concurrent=2)
    trigger(coord)
    trigger(coord, SAVE)
    actions = coord.abort_all("the job ended")
    assert [str(a.error) for a in actions] == [
        "checkpoint 1: the job ended",
        "checkpoint 2: the job ended",
    ]
    assert coord.pending == {} and coord.failed == 0


def test_stats_report_completed_failed_and_in_progress():
    coord, clock = coordinator(tolerable_failures=9)
    cid, _ = trigger(coord)
    coord.on_decline(S0, 0, cid, "no")
    cid, _ = trigger(coord)
    complete(coord, cid)
    trigger(coord)
    stats = coord.stats("mem://here")
    assert (stats["completed"], stats["failed"], stats["in_progress"]) == (1, 1, 1)
    assert stats["last_completed"]["checkpoint_id"] == cid
    assert stats["location"] == "mem://here"


# -- the failover policy -----------------------------------------------------------------------


def user_error(record: str = "42", message: str = "division by zero") -> UserFunctionError:
    return UserFunctionError(
        f"ZeroDivisionError in operator 'div', subtask 0 while processing record {record}: "
        f"{message}",
        "div",
        0,
        record,
        "ZeroDivisionError",
        message,
    )


def policy(strategy, repeats: int = 3) -> FailoverPolicy:
    return FailoverPolicy(strategy, FailureHistory(repeats))


def test_fixed_delay_restarts_its_number_of_times_then_fails():
    p = policy(FixedDelayRestart(attempts=2, delay_ms=50))
    decisions = [p.on_failure(TaskError(f"lost {i}"), i, i) for i in range(3)]
    assert [type(d) for d in decisions] == [Restart, Restart, Fail]
    assert [d.delay_ms for d in decisions[:2]] == [50, 50]  # type: ignore[union-attr]
    assert decisions[2].reason is None and decisions[2].entry.message == "lost 2"
    assert p.restarts == 2 and len(p.history.entries) == 3


def test_failure_rate_fails_on_more_failures_than_allowed_within_the_interval():
    p = policy(FailureRateRestart(max_failures=2, interval_ms=1000, delay_ms=10))
    assert isinstance(p.on_failure(TaskError("a"), 0, 0), Restart)
    assert isinstance(p.on_failure(TaskError("b"), 1, 500), Restart)
    assert isinstance(p.on_failure(TaskError("c"), 2, 1000), Restart)  # the one at 0 left
    assert isinstance(p.on_failure(TaskError("d"), 3, 1200), Fail)


def test_exponential_delay_grows_up_to_its_maximum_and_starts_over_after_a_quiet_time():
    strategy = ExponentialDelayRestart(
        initial_ms=100, max_ms=400, multiplier=2.0, reset_after_ms=10_000, jitter=0.0
    )
    p = policy(strategy)
    delays = [p.on_failure(TaskError("x"), i, i * 1000).delay_ms for i in range(4)]  # type: ignore[union-attr]
    assert delays == [100, 200, 400, 400]
    assert p.on_failure(TaskError("x"), 4, 3000 + 10_000).delay_ms == 100  # type: ignore[union-attr]


def test_without_a_strategy_the_default_is_bounded_with_checkpointing_and_none_without():
    with_checkpoints = FailoverPolicy.for_job(None, checkpointing=True, deterministic_repeats=0)
    assert isinstance(with_checkpoints.strategy, ExponentialDelayRestart)
    assert with_checkpoints.strategy.attempts == 10 and with_checkpoints.may_restart
    without = FailoverPolicy.for_job(None, checkpointing=False, deterministic_repeats=3)
    assert isinstance(without.strategy, NoRestart) and not without.may_restart
    assert isinstance(without.on_failure(TaskError("x"), 0, 0), Fail)
    chosen = FixedDelayRestart(1, 5)
    assert FailoverPolicy.for_job(
        chosen, checkpointing=False, deterministic_repeats=3
    ).strategy is (chosen)


def test_the_same_user_error_on_the_same_record_fails_the_job_before_the_strategy_runs_out():
    p = policy(FixedDelayRestart(attempts=100, delay_ms=0), repeats=3)
    assert isinstance(p.on_failure(user_error(), 0, 0), Restart)
    assert isinstance(p.on_failure(user_error(), 1, 1), Restart)
    decision = p.on_failure(user_error(), 2, 2)
    assert isinstance(decision, Fail)
    assert decision.reason is not None
    assert decision.reason.startswith("the same failure on the same record on 3 consecutive")
    assert "ZeroDivisionError in operator 'div', subtask 0 on record 42" in decision.reason
    assert p.restarts == 2 and p.strategy.used == 2  # type: ignore[attr-defined]


def test_a_different_record_or_a_system_failure_breaks_the_deterministic_streak():
    p = policy(FixedDelayRestart(attempts=100, delay_ms=0), repeats=2)
    failures = [user_error("1"), user_error("2"), TaskError("actor died"), user_error("2")]
    decisions = [p.on_failure(exc, i, i) for i, exc in enumerate(failures)]
    assert all(isinstance(d, Restart) for d in decisions)


def test_recorded_failures_are_in_the_history_without_consulting_the_strategy():
    strategy = FixedDelayRestart(attempts=1, delay_ms=0)
    p = policy(strategy)
    entry = p.record(TaskError("no checkpoint verifies"), 3, 77)
    assert (entry.attempt, entry.timestamp_ms) == (3, 77)
    assert p.history.entries == [entry] and strategy.used == 0 and p.restarts == 0


# -- the collect buffer ------------------------------------------------------------------------

SINK_A, SINK_B = ("collect", 0), ("collect", 1)


def push(buf: CollectBuffer, sink, seq, epoch, data, attempt=0) -> Admission:
    verdict = buf.admit(sink, attempt, seq)
    if verdict is Admission.TAKE:
        buf.accept(sink, seq, epoch, data)
    return verdict


def test_pushes_of_a_sink_subtask_are_taken_in_sequence_order_only():
    buf = CollectBuffer(checkpointing=False, hold_until_end=False)
    assert push(buf, SINK_A, 1, 0, b"a1") is Admission.WAIT
    assert push(buf, SINK_B, 0, 0, b"b0") is Admission.TAKE  # sink subtasks are independent
    assert push(buf, SINK_A, 0, 0, b"a0") is Admission.TAKE
    assert push(buf, SINK_A, 1, 0, b"a1") is Admission.TAKE
    assert push(buf, SINK_A, 1, 0, b"again") is Admission.WAIT  # a duplicate is never taken
    assert buf.take() == [b"b0", b"a0", b"a1"]


def test_a_full_buffer_holds_pushes_until_the_driver_takes():
    buf = CollectBuffer(checkpointing=False, hold_until_end=False, capacity=2)
    assert push(buf, SINK_A, 0, 0, b"0") is Admission.TAKE
    assert push(buf, SINK_A, 1, 0, b"1") is Admission.TAKE
    assert push(buf, SINK_A, 2, 0, b"2") is Admission.WAIT
    assert buf.take() == [b"0", b"1"]
    assert push(buf, SINK_A, 2, 0, b"2") is Admission.TAKE


def test_with_checkpointing_records_wait_for_the_checkpoint_of_their_epoch():
    buf = CollectBuffer(checkpointing=True, hold_until_end=False)
    buf.begin_attempt(first_epoch=4)
    push(buf, SINK_A, 0, 0, b"before any barrier")  # epoch 0: the attempt's first checkpoint
    push(buf, SINK_A, 1, 5, b"epoch 5")
    push(buf, SINK_B, 0, 4, b"epoch 4")
    assert buf.take() == []
    buf.release(4)
    assert buf.take() == [b"before any barrier", b"epoch 4"]
    push(buf, SINK_B, 1, 4, b"late epoch 4")  # its checkpoint completed already: straight on
    assert buf.take() == [b"late epoch 4"]
    buf.release(None)  # the job finished
    assert buf.take() == [b"epoch 5"]


def test_a_restart_drops_unreleased_records_and_the_old_attempts_pushes():
    buf = CollectBuffer(checkpointing=True, hold_until_end=False)
    push(buf, SINK_A, 0, 1, b"released")
    push(buf, SINK_A, 1, 2, b"settled")
    push(buf, SINK_A, 2, 3, b"lost")
    buf.release(1)
    buf.fence(1)
    assert buf.admit(SINK_A, 0, 3) is Admission.DROP  # a task being stopped still pushes
    buf.release(2)  # a checkpoint that had every acknowledgement completes meanwhile
    buf.drop_uncommitted()
    buf.begin_attempt(first_epoch=4)
    assert push(buf, SINK_A, 0, 0, b"again", attempt=1) is Admission.TAKE  # numbered from 0
    buf.release(4)
    assert buf.take() == [b"released", b"settled", b"again"]


def test_a_batch_job_that_may_rerun_holds_everything_until_it_finishes():
    buf = CollectBuffer(checkpointing=False, hold_until_end=True)
    push(buf, SINK_A, 0, 0, b"first run")
    buf.fence(1)
    buf.drop_uncommitted()
    push(buf, SINK_A, 0, 0, b"rerun", attempt=1)
    push(buf, SINK_A, 1, 0, b"", attempt=1)  # empty batches never reach the driver
    assert buf.take() == []
    buf.release(None)
    assert buf.take() == [b"rerun"]


def test_after_the_job_ended_pushes_are_dropped():
    buf = CollectBuffer(checkpointing=False, hold_until_end=False)
    assert push(buf, SINK_A, 1, 0, b"x") is Admission.WAIT
    buf.end()
    assert buf.admit(SINK_A, 0, 1) is Admission.DROP
    assert buf.admit(SINK_A, 0, 0) is Admission.DROP


def _history(rng: random.Random, checkpointing: bool, hold: bool) -> list[tuple]:
    """A random run: per attempt, two sink subtasks' pushes (epochs never decrease within a
    subtask) arriving in any order, completions, takes, and restarts whose last pushes may
    arrive after the restart."""
    events: list[tuple] = []
    next_cid = 1
    attempts = rng.randint(1, 3)
    late: list[tuple] = []  # pushes of an earlier attempt still on their way
    for attempt in range(attempts):
        first_epoch = next_cid
        events.append(("begin", first_epoch))
        arrivals: list[tuple] = []
        for sink in (SINK_A, SINK_B):
            epoch = 0
            for seq in range(rng.randint(0, 6)):
                if rng.random() < 0.3:
                    epoch = max(epoch, first_epoch) + rng.randint(0, 1)
                data = b"" if rng.random() < 0.1 else f"{attempt}/{sink[1]}/{seq}".encode()
                arrivals.append(("push", attempt, sink, seq, epoch, data))
        rng.shuffle(arrivals)
        others: list[tuple] = [("take",) for _ in range(rng.randint(0, 3))]
        if checkpointing:
            for _ in range(rng.randint(0, 3)):
                next_cid += rng.randint(1, 2)
                others.append(("release", next_cid))
        stream = arrivals + late + others
        rng.shuffle(stream)
        # keep the completions in increasing order, as the coordinator's commits mostly are
        cids = iter(sorted(e[1] for e in stream if e[0] == "release"))
        stream = [("release", next(cids)) if e[0] == "release" else e for e in stream]
        if attempt < attempts - 1:
            cut = rng.randint(0, len(stream))
            events += stream[:cut]
            late = [e for e in stream[cut:] if e[0] == "push"]
            events.append(("fence", attempt + 1))
            if checkpointing and rng.random() < 0.5:
                next_cid += 1
                events.append(("release", next_cid))  # settled while the tasks stopped
            events.append(("drop",))
            next_cid += 1
        else:
            events += stream
    events.append(("release", None))  # finished
    events.append(("end",))
    return events


def _run_buffer(events: list[tuple], checkpointing: bool, hold: bool) -> list[bytes]:
    """Drives a real buffer as the job master does: a push that must wait is asked again
    whenever the buffer changed."""
    buf = CollectBuffer(checkpointing, hold, capacity=10_000)
    waiting: list[tuple] = []
    out: list[bytes] = []

    def settle_waiters() -> None:
        progress = True
        while progress:
            progress = False
            for p in list(waiting):
                verdict = buf.admit(p[2], p[1], p[3])
                if verdict is not Admission.WAIT:
                    waiting.remove(p)
                    progress = True
                    if verdict is Admission.TAKE:
                        buf.accept(p[2], p[3], p[4], p[5])

    for e in events:
        if e[0] == "push":
            waiting.append(e)
        elif e[0] == "release":
            buf.release(e[1])
        elif e[0] == "take":
            out += buf.take()
        elif e[0] == "fence":
            buf.fence(e[1])
        elif e[0] == "drop":
            buf.drop_uncommitted()
        elif e[0] == "begin":
            buf.begin_attempt(e[1])
        elif e[0] == "end":
            buf.end()
        settle_waiters()
    return out + buf.take()


def _reference(events: list[tuple], checkpointing: bool, hold: bool) -> list[bytes]:
    """The release rule stated directly: a push is taken once every earlier push of its sink
    subtask in its attempt arrived, if that happens before its attempt was fenced; it reaches
    the driver when taken if its epoch's checkpoint completed already (or nothing waits for
    checkpoints), else at the first completion covering its epoch (or the end of the job)
    unless a restart dropped it first; in taking order within one moment."""
    fenced_at: dict[int, int] = {}
    attempt_of_begin: list[int] = []
    arrived: dict[tuple, int] = {}
    for i, e in enumerate(events):
        if e[0] == "fence":
            fenced_at[e[1] - 1] = i
        elif e[0] == "begin":
            attempt_of_begin.append(i)
        elif e[0] == "push":
            arrived[(e[1], e[2], e[3])] = i
    first_epoch = {a: events[i][1] for a, i in enumerate(attempt_of_begin)}
    end = len(events) - 1
    delivered: list[tuple[int, int, int, bytes]] = []
    for e in events:
        if e[0] != "push":
            continue
        attempt, sink, seq, epoch, data = e[1:]
        before = [arrived.get((attempt, sink, s)) for s in range(seq + 1)]
        if any(b is None for b in before):
            continue
        taken = max(before)  # type: ignore[type-var]
        if taken >= fenced_at.get(attempt, end):
            continue
        epoch = epoch or first_epoch[attempt]
        released_upto = max(
            [ev[1] for ev in events[:taken] if ev[0] == "release" and ev[1] is not None],
            default=0,
        )
        if not hold and (not checkpointing or epoch <= released_upto):
            at = taken
        else:
            at = None
            for j in range(taken + 1, len(events)):
                ev = events[j]
                if ev[0] == "drop":
                    break
                covers = ev[0] == "release" and (ev[1] is None or (not hold and ev[1] >= epoch))
                if covers:
                    at = j
                    break
            if at is None:
                continue
        if data:
            delivered.append((at, taken, seq, data))
    return [d[-1] for d in sorted(delivered)]


@pytest.mark.parametrize(
    "checkpointing,hold", [(True, False), (False, False), (False, True)], ids=str
)
def test_the_release_rule_matches_a_reference_over_random_histories(checkpointing, hold):
    rng = random.Random(20240512)
    seen = 0
    for _ in range(400):
        events = _history(rng, checkpointing, hold)
        expected = _reference(events, checkpointing, hold)
        assert _run_buffer(events, checkpointing, hold) == expected, events
        seen += len(expected)
    assert seen > 500  # the histories deliver something worth comparing


# -- no Ray in the decisions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        "checkpointing/coordinator.py",
        "checkpointing/restore.py",
        "raystream/runtime/failover.py",
        "raystream/runtime/failures.py",
        "raystream/runtime/collect_buffer.py",
    ],
)
def test_decision_modules_import_neither_ray_nor_an_event_loop_nor_the_clock(module):
    tree = ast.parse((ROOT / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"ray", "asyncio", "time", "threading"}, imported
