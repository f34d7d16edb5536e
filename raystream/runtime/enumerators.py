"""Split enumerators in the job master: the runtime half of :class:`SplitEnumeratorContext`.

One :class:`EnumeratorHost` per :class:`SplitSource` and attempt. Enumerator methods run on the
job master's event loop, one at a time; ``call_async`` work runs in a worker thread and its
handler back on the loop. Assignments become ``add_splits`` calls on the source tasks, each sent after the previous
call to that task finished (an async actor may run calls out of order, and "no more splits"
must never overtake an assignment); a task takes them between two steps, so they never split a
read. The enumerator's snapshot is taken
synchronously in ``CheckpointCoordinator.trigger``, before any source sees the checkpoint's
trigger, and stored as a blob of the checkpoint (``enumerator-<n>``, listed under
``metadata["enumerators"]`` by operator uid).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from raystream.checkpointing.snapshot import OperatorSnapshot, TaskSnapshot, decode, encode
from raystream.errors import UserFunctionError
from raystream.operators.split_source import SplitEnumerator, SplitEnumeratorContext, SplitSource

log = logging.getLogger(__name__)

_STATE_KEY = "__enumerator_state__"


class EnumeratorHost(SplitEnumeratorContext):
    def __init__(
        self,
        uid: str,
        name: str,
        source: SplitSource,
        tasks: list[Any],
        restored_state: Any | None,
        restored_split_ids: frozenset[str],
        on_error: Callable[[BaseException], Awaitable[None]],
    ):
        self.uid = uid
        self.name = name
        self.source = source
        self.tasks = tasks
        self.parallelism = len(tasks)
        self.restored_split_ids = restored_split_ids
        self.restored_state = restored_state
        self.on_error = on_error
        self.enumerator: SplitEnumerator | None = None
        self.assigned: dict[int, int] = {}  # subtask -> number of splits handed out
        self._loops: list[asyncio.Task] = []
        self._last_call: dict[int, asyncio.Future] = {}  # latest call to each source task
        self._closed = False

    # -- lifecycle (job master) --------------------------------------------------------------------

    def start(self) -> None:
        try:
            self.enumerator = self.source.create_enumerator(self, self.restored_state)
            self.enumerator.start()
        except Exception as exc:
            raise self._error(exc, "starting the split enumerator") from exc

    def snapshot(self, checkpoint_id: int) -> bytes:
        assert self.enumerator is not None
        try:
            state = self.enumerator.snapshot_state(checkpoint_id)
        except Exception as exc:
            raise self._error(exc, f"snapshot of checkpoint {checkpoint_id}") from exc
        op = OperatorSnapshot(operator={_STATE_KEY: ("enumerator", [state])})
        return encode(TaskSnapshot(checkpoint_id, {self.uid: op}))

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        if self.enumerator is None or self._closed:
            return
        try:
            self.enumerator.notify_checkpoint_complete(checkpoint_id)
        except Exception as exc:
            log.warning("%s: checkpoint %d completion: %s", self.name, checkpoint_id, exc)

    def close(self) -> None:
        self._closed = True
        for loop in self._loops:
            loop.cancel()
        if self.enumerator is not None:
            try:
                self.enumerator.close()
            except Exception as exc:
                log.warning("%s: closing the split enumerator: %s", self.name, exc)

    # -- SplitEnumeratorContext ----------------------------------------------------------------

    def assign_splits(self, assignment: dict[int, list[Any]]) -> None:
        if self._closed:
            return
        for subtask, splits in assignment.items():
            if not 0 <= subtask < self.parallelism:
                raise ValueError(
                    f"{self.name}: split enumerator assigned to subtask {subtask}, the source "
                    f"has {self.parallelism}"
                )
            if splits:
                self.assigned[subtask] = self.assigned.get(subtask, 0) + len(splits)
                self._send(subtask, "add_splits", list(splits))

    def signal_no_more_splits(self, subtask: int) -> None:
        if not self._closed:
            self._send(subtask, "no_more_splits")

    def _send(self, subtask: int, method: str, *args: Any) -> None:
        """Calls ``method`` on a source task after every earlier call to that task finished:
        calls of an async actor may run out of order, and "no more splits" must not overtake the
        last assignment."""
        previous = self._last_call.get(subtask)
        task = self.tasks[subtask]

        async def call() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            if not self._closed:
                await getattr(task, method).remote(*args)

        future = asyncio.ensure_future(call())
        # a task that died fails its call; the failover that follows handles it
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._last_call[subtask] = future

    def call_async(
        self,
        callable_: Callable[[], Any],
        handler: Callable[[Any, BaseException | None], bool | None],
        interval_ms: int | None = None,
    ) -> None:
        self._loops.append(asyncio.ensure_future(self._run_async(callable_, handler, interval_ms)))

    async def _run_async(
        self,
        callable_: Callable[[], Any],
        handler: Callable[[Any, BaseException | None], bool | None],
        interval_ms: int | None,
    ) -> None:
        while not self._closed:
            result: Any = None
            error: BaseException | None = None
            try:
                result = await asyncio.to_thread(callable_)
            except Exception as exc:
                error = exc
            if self._closed:
                return
            try:
                again = handler(result, error)
            except Exception as exc:
                await self.on_error(self._error(exc, "split discovery"))
                return
            if interval_ms is None or again is False:
                return
            await asyncio.sleep(interval_ms / 1000.0)

    def _error(self, exc: BaseException, what: str) -> UserFunctionError:
        return UserFunctionError(
            f"{type(exc).__name__} in the split enumerator of source {self.name!r} while "
            f"{what}: {exc}",
            operator=self.name,
            subtask=None,
            record=None,
            cause_type=type(exc).__name__,
            cause_message=str(exc).split("\n", 1)[0],
        )


class SplitEnumerators:
    """The split enumerators of a job's current attempt, one per split source, by source uid."""

    def __init__(self, plan: Any):
        self.plan = plan
        self.hosts: dict[str, EnumeratorHost] = {}
        #: the name of each enumerator's blob in a checkpoint, by source uid
        self.blob_names: dict[str, str] = {}

    async def start(
        self,
        tasks: dict[tuple[int, int], Any],
        states: dict[str, Any],
        on_error: Callable[[BaseException], Awaitable[None]],
    ) -> None:
        """One split enumerator per split source, with its restored state, told which splits
        the restored readers hold."""
        self.close()
        blobs: dict[str, str] = {}
        for chain in self.plan.chains:
            source = getattr(chain.head.factory, "source", None)
            if not isinstance(source, SplitSource):
                continue
            handles = [tasks[(chain.id, i)] for i in range(chain.parallelism)]
            held = await asyncio.gather(*(h.restored_split_ids.remote() for h in handles))
            host = EnumeratorHost(
                chain.head.uid,
                chain.head.name,
                source,
                handles,
                states.get(chain.head.uid),
                frozenset(sid for ids in held for sid in ids),
                on_error,
            )
            self.hosts[chain.head.uid] = host
            blobs[chain.head.uid] = enumerator_blob_name(len(blobs))
            host.start()
        self.blob_names = blobs

    def snapshot(self, checkpoint_id: int) -> dict[str, bytes]:
        """Every enumerator's snapshot, by blob name (taken before any source is triggered)."""
        names = self.blob_names
        return {names[uid]: host.snapshot(checkpoint_id) for uid, host in self.hosts.items()}

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        for host in self.hosts.values():
            host.notify_checkpoint_complete(checkpoint_id)

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()
        self.hosts = {}


def enumerator_blob_name(index: int) -> str:
    return f"enumerator-{index}"


def restore_enumerator_states(metadata: dict[str, Any], blobs: dict[str, bytes]) -> dict[str, Any]:
    """``{source uid: enumerator state}`` of a checkpoint or savepoint (empty for one taken before
    split sources existed, or without any)."""
    cid = metadata.get("checkpoint_id")
    out: dict[str, Any] = {}
    for uid, name in (metadata.get("enumerators") or {}).items():
        if name not in blobs:
            from raystream.checkpointing.snapshot import StateMappingError

            raise StateMappingError(f"snapshot {cid} lacks the split enumerator state of {uid!r}")
        snap = decode(blobs[name], f"snapshot {cid}, split enumerator {uid}")
        op = snap.operators.get(uid)
        if op is not None and _STATE_KEY in op.operator:
            out[uid] = op.operator[_STATE_KEY][1][0]
    return out
