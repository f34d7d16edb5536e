"""The checkpoint runner carries out the coordinator's decisions: against a recording store and
recording tasks on a plain event loop (no Ray), with a clock the test sets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raystream.checkpoint_config import CheckpointConfig
from raystream.checkpointing.coordinator import (
    CheckpointCoordinator,
    CheckpointError,
    JobLayout,
    blob_name,
)
from raystream.runtime.checkpoint_runner import CheckpointRunner
from raystream.runtime.elements import CheckpointKind

S0, S1, SINK = (0, 0), (0, 1), (1, 0)
TASKS = [S0, S1, SINK]


class FakeClock:
    def __init__(self) -> None:
        self.mono = 10.0

    def monotonic_s(self) -> float:
        return self.mono

    def now_ms(self) -> int:
        return 1_000


class RecordingStore:
    location = "mem://store"

    def __init__(self, fail_writes: bool = False, fail_discards: bool = False) -> None:
        self.fail_writes = fail_writes
        self.fail_discards = fail_discards
        self.blobs: dict[tuple[int, str], bytes] = {}
        self.committed: dict[int, dict] = {}
        self.marks: dict[str, int] = {}
        self.discarded: list[int] = []
        self.log: list[tuple] = []

    def write_blob(self, cid: int, name: str, data: bytes) -> dict:
        if self.fail_writes:
            raise OSError("no space left on device")
        self.blobs[(cid, name)] = data
        return {"size": len(data)}

    def commit(self, cid: int, metadata: dict) -> None:
        self.committed[cid] = metadata
        self.log.append(("commit", cid))

    def record_committed(self, job_id: str, cid: int) -> None:
        self.marks[job_id] = cid
        self.log.append(("mark", cid))

    def committed_marks(self) -> dict[str, int | None]:
        return dict(self.marks)

    def discard(self, cid: int) -> None:
        if self.fail_discards:
            raise OSError("read-only file system")
        self.discarded.append(cid)


class RecordingTask:
    """Stands for a task's handle: ``handle.method.remote(*args)`` is recorded."""

    def __init__(self, key: tuple[int, int], calls: list) -> None:
        self.key = key
        self.calls = calls

    def __getattr__(self, method: str) -> Any:
        task = self

        class _Method:
            @staticmethod
            def remote(*args: Any) -> Any:
                task.calls.append((method, task.key, *args))
                return _ready(None)

        return _Method()


def layout() -> JobLayout:
    tasks = {blob_name(k): {"chain": "c", "subtask": k[1], "parallelism": 1} for k in TASKS}
    upstream = {S0: frozenset(), S1: frozenset(), SINK: frozenset({S0, S1})}
    return JobLayout("job-1", "job", 128, tasks, upstream)


class Harness:
    def __init__(self, store: RecordingStore, **config: Any) -> None:
        self.calls: list = []
        self.completed: list[int] = []
        self.failures: list[BaseException] = []
        self.tasks = {k: RecordingTask(k, self.calls) for k in TASKS}
        cfg = CheckpointConfig(interval_ms=1000, **config)
        self.store = store
        self.runner = CheckpointRunner(
            CheckpointCoordinator(layout(), cfg, FakeClock()),
            store,
            lambda: self.tasks,
            self._on_failure,
            self._on_complete,
        )

    async def _on_failure(self, exc: BaseException) -> None:
        self.failures.append(exc)

    def _on_complete(self, cid: int) -> None:
        self.completed.append(cid)
        self.calls.append(("on_complete", cid))

    async def ack_all(self, cid: int, attempt: int = 0) -> None:
        for key in TASKS:
            await self.runner.acknowledge(key, attempt, cid, _ready(b"state"), 5)

    def called(self, method: str) -> list:
        return [c for c in self.calls if c[0] == method]


def _ready(value: Any) -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def test_a_checkpoint_is_written_committed_marked_and_only_then_announced():
    async def main() -> None:
        h = Harness(RecordingStore())
        pending = h.runner.trigger()
        triggered = {c[1] for c in h.called("trigger_checkpoint")}
        assert triggered == {S0, S1}  # the sink waits for its upstream tasks
        await h.ack_all(pending.checkpoint_id)
        stats = await pending.done
        cid = pending.checkpoint_id
        assert stats.checkpoint_id == cid and stats.size_bytes == 15
        assert h.store.log == [("commit", cid), ("mark", cid)]
        meta = h.store.committed[cid]
        assert set(meta["blobs"]) == {blob_name(k) for k in TASKS}
        assert meta["blobs"][blob_name(S0)] == {"size": 5}
        # the job master hears of the completion before the tasks do
        announced = [c for c in h.calls if c[0] in ("on_complete", "notify_checkpoint_complete")]
        assert announced[0] == ("on_complete", cid)
        assert sorted(c[1:] for c in announced[1:]) == [(k, cid, False) for k in TASKS]
        assert len(pending.notified) == len(TASKS)
        assert h.runner.stats()["completed"] == 1

    asyncio.run(main())


def test_final_snapshots_are_written_and_their_tasks_told_so():
    async def main() -> None:
        h = Harness(RecordingStore())
        h.runner.task_finished(S0, b"final")
        h.runner.task_finished(S1, b"final")
        pending = h.runner.trigger()
        assert {c[1] for c in h.called("trigger_checkpoint")} == {SINK}
        await h.runner.acknowledge(SINK, 0, pending.checkpoint_id, _ready(b"sink"), 4)
        await pending.done
        await asyncio.gather(*pending.notified)
        assert h.store.blobs[(pending.checkpoint_id, blob_name(S0))] == b"final"
        finals = {c[1]: c[3] for c in h.called("notify_checkpoint_complete")}
        assert finals == {S0: True, S1: True, SINK: False}

    asyncio.run(main())


def test_a_checkpoint_that_cannot_be_written_is_aborted_and_fails_the_job_over():
    async def main() -> None:
        h = Harness(RecordingStore(fail_writes=True), tolerable_failures=0)
        pending = h.runner.trigger()
        await h.ack_all(pending.checkpoint_id)
        with pytest.raises(CheckpointError, match="could not be written: no space left"):
            await pending.done
        await asyncio.sleep(0)  # the failover runs as its own task
        assert [c[1:] for c in h.called("abort_checkpoint")] == [
            (k, pending.checkpoint_id) for k in TASKS
        ]
        assert len(h.failures) == 1 and "consecutive checkpoint failures" in str(h.failures[0])
        assert h.called("notify_checkpoint_complete") == [] and h.store.marks == {}

    asyncio.run(main())


def test_acknowledgements_of_an_earlier_attempt_do_not_count():
    async def main() -> None:
        h = Harness(RecordingStore())
        old = h.runner.trigger()
        h.runner.reset(1)
        with pytest.raises(CheckpointError, match="aborted by a restart"):
            await old.done
        new = h.runner.trigger()
        await h.ack_all(new.checkpoint_id, attempt=0)  # tasks being stopped, late
        assert not new.done.done()
        await h.ack_all(new.checkpoint_id, attempt=1)
        assert (await new.done).checkpoint_id == new.checkpoint_id

    asyncio.run(main())


def test_a_savepoint_goes_to_its_own_store_and_is_announced_to_no_task():
    async def main() -> None:
        h = Harness(RecordingStore())
        savepoints = RecordingStore()
        pending = h.runner.trigger(CheckpointKind.SAVEPOINT, savepoints)
        await h.ack_all(pending.checkpoint_id)
        stats = await pending.done
        assert stats.location == savepoints.location
        assert list(savepoints.committed) == [pending.checkpoint_id] and h.store.committed == {}
        assert savepoints.marks == {} and h.completed == []
        assert h.called("notify_checkpoint_complete") == []

    asyncio.run(main())


def test_a_checkpoint_completes_even_when_an_old_one_cannot_be_deleted(caplog):
    async def main() -> None:
        h = Harness(RecordingStore(fail_discards=True), retained=1)
        first = h.runner.trigger()
        await h.ack_all(first.checkpoint_id)
        await first.done
        second = h.runner.trigger()
        await h.ack_all(second.checkpoint_id)
        await h.runner.settle()  # the commit is over, however it went
        assert second.done.done() and second.done.result().checkpoint_id == second.checkpoint_id
        assert h.completed == [first.checkpoint_id, second.checkpoint_id]
        notified = {c[2] for c in h.called("notify_checkpoint_complete")}
        assert notified == {first.checkpoint_id, second.checkpoint_id}

    asyncio.run(main())
    assert "could not remove checkpoint 1: read-only file system" in caplog.text
