"""Two-phase-commit sinks: the protocol driven from checkpoint hooks (no Ray), the exactly-once
FileSink on a real directory, stateful sink writers, and end-to-end runs on a local Ray with and
without a killed task (SEMANTICS §6)."""

from __future__ import annotations

import doctest
import json
import os
import pathlib
import pickle
import re
import shutil
import stat
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
import ray

from raystream import RestartStrategies, StreamExecutionEnvironment
from raystream.api.functions import SinkFunction
from raystream.checkpointing.snapshot import FINAL_CHECKPOINT_ID, assign
from raystream.errors import UserFunctionError
from raystream.operators import file_sink, transactional
from raystream.operators.file_sink import FileSink
from raystream.operators.files import FileSource
from raystream.operators.raydata import RayDatasetSink
from raystream.operators.sinks import SinkContext, SinkFunctionOperator, SinkOperator
from raystream.operators.transactional import TwoPhaseCommitSink, TwoPhaseCommitSinkOperator
from raystream.runtime.elements import Batch
from raystream.testing import OperatorHarness
from tests.chaos_jobs import PacedEvents
from tests.test_checkpoint_storage import BUCKET, s3_endpoint, s3_filesystem  # noqa: F401

ray_test = pytest.mark.usefixtures("ray_session")


# --- a transactional system to commit into -------------------------------------------------------


@dataclass
class Txn:
    id: str
    records: list = field(default_factory=list)
    pre_committed: bool = False


class Ledger:
    """The external system: what is visible, and every call the sink made, in order."""

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.visible: dict[str, list] = {}
        self.fail: set[tuple[str, str]] = set()  # (method, txn id) that raise once
        self._next = 0

    def new_id(self) -> str:
        self._next += 1
        return f"t{self._next - 1}"

    def records(self) -> list:
        return [
            r for tid in sorted(self.visible, key=lambda t: int(t[1:])) for r in self.visible[tid]
        ]

    def calls(self, method: str) -> list[str]:
        return [entry[1] for entry in self.log if entry[0] == method]

    def check(self, method: str, txn: Txn) -> None:
        self.log.append((method, txn.id))
        if (method, txn.id) in self.fail:
            self.fail.discard((method, txn.id))
            raise RuntimeError(f"{method} refused")


class LedgerSink(TwoPhaseCommitSink):
    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def open(self, context: SinkContext) -> None:
        self.ledger.log.append(("open", context.subtask_index))

    def begin_transaction(self) -> Txn:
        txn = Txn(self.ledger.new_id())
        self.ledger.log.append(("begin", txn.id))
        return txn

    def write(self, txn: Txn, batch: Batch) -> None:
        self.ledger.log.append(("write", txn.id, list(batch.values)))
        txn.records.extend(batch.values)

    def pre_commit(self, txn: Txn) -> None:
        self.ledger.check("pre_commit", txn)
        txn.pre_committed = True

    def commit(self, txn: Txn) -> None:
        self.ledger.check("commit", txn)
        assert txn.pre_committed, f"{txn.id} committed without a pre-commit"
        self.ledger.visible[txn.id] = list(txn.records)  # idempotent

    def abort(self, txn: Txn) -> None:
        self.ledger.check("abort", txn)

    def recover_and_commit(self, txn: Txn) -> None:
        self.ledger.log.append(("recover_and_commit", txn.id))
        super().recover_and_commit(txn)

    def recover_and_abort(self, txn: Txn) -> None:
        self.ledger.log.append(("recover_and_abort", txn.id))
        super().recover_and_abort(txn)

    def close(self) -> None:
        self.ledger.log.append(("close",))


def harness(sink, restored=None, subtask=0, parallelism=1, checkpoints=True) -> OperatorHarness:
    return OperatorHarness(
        TwoPhaseCommitSinkOperator("sink", sink),
        subtask=subtask,
        parallelism=parallelism,
        restored=restored,
        checkpoint_interval_ms=100 if checkpoints else None,
    )


# --- the protocol --------------------------------------------------------------------------------


def test_protocol_order_and_nothing_visible_before_the_checkpoint_completes():
    ledger = Ledger()
    h = harness(LedgerSink(ledger))
    h.process([1, 2]).process([3])
    h.snapshot(1)
    h.process([4])
    assert ledger.visible == {}
    h.notify_checkpoint_complete(1)
    assert ledger.records() == [1, 2, 3]
    assert ledger.log == [
        ("open", 0),
        ("begin", "t0"),
        ("write", "t0", [1, 2]),
        ("write", "t0", [3]),
        ("pre_commit", "t0"),
        ("begin", "t1"),
        ("write", "t1", [4]),
        ("commit", "t0"),
    ]


def test_a_lost_notification_is_covered_by_the_next_one():
    ledger = Ledger()
    h = harness(LedgerSink(ledger))
    for cid, values in ((1, [1]), (2, [2]), (3, [3])):
        h.process(values).snapshot(cid)
    h.notify_checkpoint_complete(2)  # the notification of 1 never came
    assert ledger.calls("commit") == ["t0", "t1"]
    h.notify_checkpoint_aborted(4)
    h.process([4]).snapshot(5)
    h.notify_checkpoint_complete(5)
    assert ledger.calls("commit") == ["t0", "t1", "t2", "t3"]
    assert ledger.records() == [1, 2, 3, 4]


def test_restore_recommits_pending_transactions_and_aborts_the_open_one():
    ledger = Ledger()
    h = harness(LedgerSink(ledger))
    h.process([1, 2])
    first = h.snapshot(1)
    h.process([3])  # into t1, lost with the crash below
    h.notify_checkpoint_complete(1)
    h.snapshot(2)  # never completes

    del ledger.log[:]
    again = harness(LedgerSink(ledger), restored=first)
    assert ledger.log == [
        ("open", 0),
        ("recover_and_commit", "t0"),
        ("commit", "t0"),
        ("recover_and_abort", "t1"),
        ("abort", "t1"),
        ("begin", "t3"),
    ]
    assert ledger.records() == [1, 2]  # committed twice, visible once
    again.process([3]).snapshot(2)
    again.notify_checkpoint_complete(2)
    assert ledger.records() == [1, 2, 3]


def test_restore_commits_a_transaction_whose_notification_was_lost():
    ledger = Ledger()
    h = harness(LedgerSink(ledger))
    snap = h.process([1]).snapshot(1)
    harness(LedgerSink(ledger), restored=snap)
    assert ledger.records() == [1]


def test_scale_in_restores_the_entries_of_both_subtasks():
    ledger = Ledger()
    old = {}
    for i in range(2):  # each ends with two pending transactions and an open one
        h = harness(LedgerSink(ledger), subtask=i, parallelism=2)
        h.process([10 * i]).snapshot(1)
        old[i] = h.process([10 * i + 1]).snapshot(2)
    (merged,) = assign(old, 1, 128, "sink")
    del ledger.log[:]
    harness(LedgerSink(ledger), restored=merged)
    assert ledger.calls("recover_and_commit") == ["t0", "t1", "t3", "t4"]
    assert ledger.calls("recover_and_abort") == ["t2", "t5"]
    assert sorted(ledger.records()) == [0, 1, 10, 11]

    del ledger.log[:]  # scale-out: the entries go to two of three subtasks, once each
    for i, part in enumerate(assign(old, 3, 128, "sink")):
        harness(LedgerSink(ledger), restored=part, subtask=i, parallelism=3)
    assert sorted(ledger.calls("recover_and_commit")) == ["t0", "t1", "t3", "t4"]
    assert len(ledger.calls("begin")) == 3


def test_a_failed_commit_is_raised_after_the_others_are_committed_and_stays_pending():
    ledger = Ledger()
    ledger.fail.add(("commit", "t0"))
    h = harness(LedgerSink(ledger))
    h.process([1]).snapshot(1)
    h.process([2]).snapshot(2)
    with pytest.raises(UserFunctionError) as err:
        h.notify_checkpoint_complete(2)
    message = str(err.value)
    assert "operator 'sink', subtask 0" in message
    assert "commit (checkpoint 1)" in message and "commit refused" in message
    assert ledger.records() == [2]
    snap = h.snapshot(3)  # t0 is still pending: a restore from here commits it
    harness(LedgerSink(ledger), restored=snap)
    assert ledger.records() == [1, 2]


def test_a_failed_pre_commit_fails_the_snapshot_naming_the_checkpoint():
    ledger = Ledger()
    ledger.fail.add(("pre_commit", "t0"))
    h = harness(LedgerSink(ledger))
    h.process([1])
    with pytest.raises(UserFunctionError, match=r"subtask 0.*pre_commit \(checkpoint 7\)"):
        h.snapshot(7)
    h.close()  # the task fails and closes its operators: the transaction is aborted
    assert ledger.calls("abort") == ["t0"] and ledger.visible == {}


def test_without_checkpointing_the_transaction_commits_at_finish():
    ledger = Ledger()
    h = harness(LedgerSink(ledger), checkpoints=False)
    h.process([1, 2])
    assert ledger.visible == {}
    h.finish().close()
    assert ledger.records() == [1, 2]
    assert [e[0] for e in ledger.log] == ["open", "begin", "write", "pre_commit", "commit", "close"]


def test_the_final_snapshot_commits_with_the_final_checkpoint_and_the_sink_closes_after():
    ledger = Ledger()
    h = harness(LedgerSink(ledger))
    h.process([1]).snapshot(1)
    h.process([2]).finish()
    h.snapshot(FINAL_CHECKPOINT_ID)
    h.close()  # the task closes its operators before the final checkpoint completes
    assert ("close",) not in ledger.log and ledger.calls("abort") == []
    assert ledger.calls("begin") == ["t0", "t1"]  # none after the final snapshot
    h.notify_checkpoint_complete(FINAL_CHECKPOINT_ID)
    assert ledger.records() == [1, 2]
    assert ledger.log[-1] == ("close",)


def test_close_aborts_the_open_transaction():
    ledger = Ledger()
    h = harness(LedgerSink(ledger))
    h.process([1]).snapshot(1)
    h.notify_checkpoint_complete(1)
    h.process([2]).close()
    assert ledger.calls("abort") == ["t1"]
    assert ledger.log[-1] == ("close",)
    assert ledger.records() == [1]


def test_module_examples():
    for module in (transactional, file_sink):
        failed, tried = doctest.testmod(module)
        assert tried and not failed, module.__name__


# --- FileSink ------------------------------------------------------------------------------------


def names(directory) -> list[str]:
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def visible(directory) -> list[str]:
    return [n for n in names(directory) if not n.startswith(".")]


def read_jsonl(path) -> list:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_back(directory, fmt: str = "jsonl") -> list:
    source = getattr(FileSource, fmt)(str(directory))
    out = []
    for split in source.create_splits(1):
        reader = source.open_split(split, None)
        while (got := reader.read(1000)) is not None:
            out.extend(got)
        reader.close()
    return out


def test_file_sink_part_goes_from_in_progress_to_pending_to_committed(tmp_path):
    out = tmp_path / "out"
    h = harness(FileSink.jsonl(str(out)))
    h.process([{"a": 1}, {"a": 2}])
    (hidden,) = names(out)
    assert re.fullmatch(r"\.part-0-[0-9a-f]{12}-0\.jsonl\.inprogress", hidden)
    first = h.snapshot(1)  # pending: closed and complete, still hidden
    assert names(out) == [hidden] and read_jsonl(out / hidden) == [{"a": 1}, {"a": 2}]
    h.process([{"a": 3}])
    h.notify_checkpoint_complete(1)
    final = hidden[1 : -len(".inprogress")]
    assert visible(out) == [final]
    assert read_back(out) == [{"a": 1}, {"a": 2}]
    assert h.operator.result() == [f"{out}/{final}"]

    h.snapshot(2)  # never completes: the subtask fails with a part in progress after it
    h.process([{"a": 4}])
    assert len(names(out)) == 3
    other = out / f".part-1-{'0' * 12}-7.jsonl.inprogress"  # another subtask's: not touched
    other.write_text("{}\n")

    # a restore from checkpoint 1: the commit again is a no-op, the parts begun since go away
    before = (out / final).stat()
    again = harness(FileSink.jsonl(str(out)), restored=first)
    assert names(out) == [other.name, final]
    assert (out / final).stat().st_mtime_ns == before.st_mtime_ns
    assert again.operator.result() == [f"{out}/{final}"]


def test_file_sink_commit_is_idempotent_and_never_overwrites_another_file(tmp_path):
    out = tmp_path / "out"
    sink = FileSink.jsonl(str(out))
    sink.open(SinkContext("s", 2, 4))

    def pending(values):
        txn = sink.begin_transaction()
        sink.write(txn, Batch(values))
        sink.pre_commit(txn)
        return txn

    txn = pending([1, 2])
    sink.commit(txn)
    sink.commit(txn)
    sink.recover_and_commit(pickle.loads(pickle.dumps(txn)))
    assert read_jsonl(out / txn.name) == [1, 2]

    clash = pending([3])
    (out / clash.name).write_text("[99, 99, 99]\n")
    with pytest.raises(FileExistsError, match="not overwritten"):
        sink.commit(clash)
    assert read_jsonl(out / clash.name) == [[99, 99, 99]]

    interrupted = pending([4])  # an object-store move that copied, then stopped
    shutil.copy(out / interrupted.in_progress_name, out / interrupted.name)
    sink.commit(interrupted)
    assert not (out / interrupted.in_progress_name).exists()
    assert read_jsonl(out / interrupted.name) == [4]

    lost = pending([5])
    (out / lost.in_progress_name).unlink()
    with pytest.raises(FileNotFoundError, match="neither it nor its pending file"):
        sink.commit(lost)

    empty = sink.begin_transaction()
    sink.pre_commit(empty)
    sink.commit(empty)  # no record, no file

    aborted = sink.begin_transaction()
    sink.write(aborted, Batch([6]))
    sink.abort(aborted)
    assert not (out / aborted.in_progress_name).exists()
    assert all(n.startswith("part-2-") for n in visible(out))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_file_sink_formats_commit_every_record_once(tmp_path, fmt):
    out = tmp_path / fmt
    sink = FileSink.parquet(str(out), row_group_size=2) if fmt == "parquet" else None
    h = harness(sink or getattr(FileSink, fmt)(str(out)))
    rows = [{"id": i, "name": f"n{i}", "score": i / 2} for i in range(9)]
    h.process(rows[:3]).snapshot(1)
    h.process(rows[3:7]).snapshot(2)
    h.notify_checkpoint_complete(1)
    assert sorted(r["id"] for r in read_back(out, fmt)) == [0, 1, 2]
    h.process(rows[7:]).finish()
    h.snapshot(FINAL_CHECKPOINT_ID)
    h.close()
    h.notify_checkpoint_complete(FINAL_CHECKPOINT_ID)
    assert sorted(read_back(out, fmt), key=lambda r: r["id"]) == rows
    assert len(visible(out)) == 3 and names(out) == visible(out)
    assert [p.rsplit("/", 1)[-1] for p in h.operator.result()] == visible(out)


def test_file_sink_commits_on_an_object_store(s3_endpoint):  # noqa: F811
    fs = s3_filesystem(s3_endpoint)
    out = f"{BUCKET}/two-phase/out"

    def listing():
        found = fs.get_file_info(pafs.FileSelector(out, allow_not_found=True))
        return sorted(i.base_name for i in found)

    h = harness(FileSink.jsonl(out, filesystem=fs))
    h.process([{"a": 1}])
    first = h.snapshot(1)
    h.process([{"a": 2}])  # an object in progress appears when its stream closes
    (pending,) = listing()
    assert re.fullmatch(r"\.part-0-[0-9a-f]{12}-0\.jsonl\.inprogress", pending)
    h.notify_checkpoint_complete(1)  # copy, then delete
    final = pending[1 : -len(".inprogress")]
    assert listing() == [final]
    h.close()
    harness(FileSink.jsonl(out, filesystem=fs), restored=first)  # commits again: a no-op
    assert listing() == [final]
    with fs.open_input_stream(f"{out}/{final}") as f:
        assert f.read() == b'{"a": 1}\n'


def test_file_sink_without_checkpointing_keeps_its_part_file_names(tmp_path):
    out = tmp_path / "out"
    h = harness(FileSink.jsonl(str(out)), checkpoints=False)
    h.process([{"a": 1}]).finish().close()
    assert names(out) == ["part-0-0.jsonl"]
    assert h.operator.result() == [f"{out}/part-0-0.jsonl"]


def modes(directory) -> dict[str, int]:
    return {n: stat.S_IMODE(os.stat(os.path.join(directory, n)).st_mode) for n in names(directory)}


def test_file_sink_output_is_private_unless_asked_otherwise(tmp_path):
    out = tmp_path / "new" / "out"  # a missing parent is made too
    h = harness(FileSink.jsonl(str(out)))
    h.process([{"a": 1}])
    (hidden,) = names(out)
    assert modes(out) == {hidden: 0o600}  # private before the first record is in it
    h.snapshot(1)
    h.notify_checkpoint_complete(1)
    assert modes(out) == {hidden[1 : -len(".inprogress")]: 0o600}
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(out.parent).st_mode) == 0o700
    # without checkpoints too, also a file of an earlier run it replaces
    (tmp_path / "plain").mkdir()
    os.chmod(tmp_path / "plain", 0o755)
    (tmp_path / "plain" / "part-0-0.csv").write_text("old")
    os.chmod(tmp_path / "plain" / "part-0-0.csv", 0o644)
    harness(FileSink.csv(str(tmp_path / "plain")), checkpoints=False).process(
        [{"a": 1}]
    ).finish().close()
    assert modes(tmp_path / "plain") == {"part-0-0.csv": 0o600}
    assert stat.S_IMODE(os.stat(tmp_path / "plain").st_mode) == 0o755  # an existing one stays

    shared = tmp_path / "shared"  # private=False: the umask decides
    umask = os.umask(0o022)
    try:
        harness(FileSink.jsonl(str(shared), private=False), checkpoints=False).process(
            [{"a": 1}]
        ).finish().close()
    finally:
        os.umask(umask)
    assert modes(shared) == {"part-0-0.jsonl": 0o644}
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o755


# --- stateful writers and sink functions ---------------------------------------------------------


def test_ray_dataset_sink_writer_state_survives_a_restore_and_a_rescale():
    def table_rows(op):
        return [r for t in op.result() for r in t.to_pylist()]

    old = {}
    for i in range(2):
        h = OperatorHarness(SinkOperator("rd", RayDatasetSink(rows_per_table=3)), subtask=i)
        h.process([{"v": 10 * i + k} for k in range(4)])  # one table and one row left over
        old[i] = h.snapshot(1)
        h.process([{"v": -1}])  # after the checkpoint: gone with the crash
    (merged,) = assign(old, 1, 128, "rd")
    h = OperatorHarness(SinkOperator("rd", RayDatasetSink(rows_per_table=3)), restored=merged)
    h.process([{"v": 100}]).finish()
    assert sorted(r["v"] for r in table_rows(h.operator)) == [0, 1, 2, 3, 10, 11, 12, 13, 100]
    assert all(isinstance(t, pa.Table) for t in h.operator.result())


class CountingSink(SinkFunction):
    """A CheckpointedFunction sink: counts its records in operator list state."""

    def __init__(self) -> None:
        self.count = 0

    def initialize_state(self, context) -> None:
        self.state = context.get_operator_state_store().get_list_state("count")
        self.count = sum(self.state.get())

    def snapshot_state(self, context) -> None:
        self.state.update([self.count])

    def invoke(self, value, context) -> None:
        self.count += 1


def test_sink_function_state_goes_through_checkpoints():
    h = OperatorHarness(SinkFunctionOperator("count", CountingSink()))
    snap = h.process([1, 2, 3]).snapshot(1)
    fn = CountingSink()
    OperatorHarness(SinkFunctionOperator("count", fn), restored=snap).process([4])
    assert fn.count == 4


# --- end to end on Ray ---------------------------------------------------------------------------

N = 4000


def expected_events(n: int) -> list:
    return [[i % 10, i, i * 10] for i in range(n)]


def paced_job(out: pathlib.Path, n: int, rate: float) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.enable_checkpointing(100)
    env.from_source(PacedEvents(n, rate), source_name="events").rebalance().sink_to(
        FileSink.jsonl(str(out))
    ).name("files-sink")
    return env


def committed(out: pathlib.Path) -> list:
    return sorted(read_back(out), key=lambda r: r[1])


@ray_test
@pytest.mark.timeout(60)
def test_file_sink_is_exactly_once_with_checkpoints(tmp_path):
    out = tmp_path / "out"
    result = paced_job(out, N, rate=2500).execute_async("2pc files").wait(50)
    assert result.checkpoints["completed"] >= 1
    assert committed(out) == expected_events(N)
    assert names(out) == visible(out), "no part is left in progress"
    assert len(visible(out)) > 2, "parts were committed while the job ran, not only at its end"
    paths = [p for per_subtask in result.get_sink_result("files-sink") for p in per_subtask]
    assert sorted(p.rsplit("/", 1)[-1] for p in paths) == visible(out)


@ray_test
@pytest.mark.timeout(90)
def test_file_sink_is_exactly_once_when_a_task_is_killed(tmp_path):
    out = tmp_path / "out"
    env = paced_job(out, 2 * N, rate=1500)
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(3, 0))
    client = env.execute_async("2pc files killed")
    deadline = time.monotonic() + 30
    while not (client.get_checkpoint_stats()["completed"] >= 1 and visible(out)):
        assert time.monotonic() < deadline, "no checkpoint completed with a committed part"
        time.sleep(0.05)
    (victim,) = [
        h for n, h in client.task_actors().items() if "files-sink" in n and n.endswith(":2/2")
    ]
    ray.kill(victim)
    result = client.wait(70)
    assert result.restarts >= 1
    assert committed(out) == expected_events(2 * N)
    assert all(re.fullmatch(r"part-\d-[0-9a-f]{12}-\d+\.jsonl", n) for n in visible(out))
    assert names(out) == visible(out), "no part is left in progress"
