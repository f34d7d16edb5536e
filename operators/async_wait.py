"""Internal: the async I/O operator (Flink's AsyncWaitOperator) on the task's event loop.

Record path: ``process_batch`` (called by the task's data loop) starts one asyncio task per
record while fewer than ``capacity`` records are in the queue (``async_queue.py``) and keeps
the rest of the batch, in order, as a backlog. Requests run on the task actor's event loop
between the data loop's awaits — no thread per request. When one completes it marks its queue
entry and wakes the task; results leave only from the data loop (``async_work``, called by the
task after every message and when woken), in the order the queue allows, with the timestamp of
their record.

Back-pressure: while a backlog remains, :meth:`input_blocked` is true and the task takes no
more input; it keeps calling ``async_work``, which waits for a request to finish, emits what
may leave, and starts backlog records as room appears. The task's channels then fill and
suspend the producers upstream.

Exactly-once: a snapshot holds every record of the queue and the backlog (operator list
state); a restore puts them back as the backlog, in front of any new input, and issues them
again. Retries and the timeout (measured on the event loop's clock; 0 means none) cover one
record's whole request, as in Flink. A request that fails after its retries fails the task
with the operator, the record and the cause, at once (also ahead of records before it), or
goes to the operator's error policy, in the position the queue gives it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from typing import Any

from raystream.api.async_functions import (
    AsyncFunction,
    AsyncRetryStrategy,
    NoRetryStrategy,
    overrides_timeout,
)
from raystream.checkpointing.snapshot import OperatorSnapshot
from raystream.core.time import MIN_TS
from raystream.operators.async_queue import AsyncEntry, OrderedQueue, UnorderedQueue
from raystream.operators.stateless import UdfOperator
from raystream.runtime.elements import Batch

#: operator list state with the ``(value, timestamp)`` of every record not yet emitted
IN_FLIGHT_STATE = "__raystream_async_in_flight__"


class AsyncWaitOperator(UdfOperator):
    has_async_work = True
    supports_error_policy = True

    def __init__(
        self,
        name: str,
        fn: Any,
        timeout_ms: int,
        capacity: int,
        ordered: bool,
        retry_strategy: AsyncRetryStrategy | None = None,
    ):
        super().__init__(name, fn)
        self.timeout_ms = timeout_ms
        self.capacity = capacity
        self.ordered = ordered
        self.retry = retry_strategy or NoRetryStrategy()
        if isinstance(fn, AsyncFunction):
            self._invoke = fn.async_invoke
            self._returns_list = True
        else:
            self._invoke = fn
            self._returns_list = False
        self._timeout_hook = fn.timeout if overrides_timeout(fn) else None
        self._queue: OrderedQueue | UnorderedQueue = OrderedQueue() if ordered else UnorderedQueue()
        #: records (``(value, timestamp)`` tuples) and watermarks (ints) not yet in the queue
        self._backlog: deque[tuple[Any, int | None] | int] = deque()
        self._fatal: AsyncEntry | None = None  # failed under the ``fail`` policy
        # timeouts: every request has the same timeout, so deadlines grow in admission order;
        # one loop timer serves them all (a timer per request cost ~5 us of CPU per record)
        self._deadlines: deque[tuple[float, AsyncEntry]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future | None = None
        self._wait_s: float | None = None
        self.retries = 0
        self.timeouts = 0

    def setup(self, ctx: Any, output: Any, side_outputs: dict) -> None:
        super().setup(ctx, output, side_outputs)
        timeout = ctx.config.buffer_timeout_ms
        # while blocked, wake up at least once per buffer timeout so output buffered earlier
        # still leaves on time; with no timeout, every completion wakes the task anyway
        self._wait_s = timeout / 1000.0 if timeout > 0 else None

    # -- input ------------------------------------------------------------------------------------

    def process_batch(self, batch: Batch) -> None:
        backlog = self._backlog
        stamps = batch.timestamps
        if stamps is None:
            backlog.extend([(v, None) for v in batch.values])
        else:
            backlog.extend(zip(batch.values, stamps))
        self._admit()
        self._emit_ready()

    def process_watermark(self, timestamp: int) -> None:
        if timestamp <= self.current_watermark:
            return
        self.current_watermark = timestamp
        if self._backlog:
            self._backlog.append(timestamp)
        else:
            self._queue.add_watermark(timestamp)
            self._emit_ready()

    def _admit(self) -> None:
        """Moves backlog items into the queue while it has room, starting their requests."""
        backlog = self._backlog
        queue = self._queue
        if not backlog or len(queue) >= self.capacity:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_ms / 1000.0 if self.timeout_ms > 0 else None
        while backlog and len(queue) < self.capacity:
            item = backlog.popleft()
            if type(item) is int:
                queue.add_watermark(item)
                continue
            value, ts = item  # type: ignore[misc]
            entry = AsyncEntry(value, ts)
            queue.add_record(entry)
            entry.task = loop.create_task(self._request(entry))
            if deadline is not None:
                self._deadlines.append((deadline, entry))
        if self._timer is None and self._deadlines:
            self._timer = loop.call_at(self._deadlines[0][0], self._expire)

    def input_blocked(self) -> bool:
        return bool(self._backlog)

    # -- one record's request ---------------------------------------------------------------------

    async def _request(self, entry: AsyncEntry) -> None:
        try:
            results = await self._attempts(entry)
        except asyncio.CancelledError:
            if entry.timed_out:
                return  # abandoned: _on_timeout completed the entry
            raise  # the operator is closing
        except Exception as exc:
            self._complete(entry, None, exc)
        else:
            self._complete(entry, results, None)

    def _complete(
        self, entry: AsyncEntry, results: list | None, error: BaseException | None
    ) -> None:
        if entry.done:
            return
        entry.results = results
        entry.error = error
        entry.done = True
        if error is not None and self.bad_records is None and self._fatal is None:
            self._fatal = entry
        self._queue.completed(entry)
        self._progress()

    async def _attempts(self, entry: AsyncEntry) -> list:
        strategy = self.retry
        attempt = 1
        while True:
            try:
                results = await self._call(entry.value)
            except Exception as exc:
                if not (strategy.retry_on_exception(exc) and strategy.can_retry(attempt)):
                    raise
            else:
                if not (strategy.retry_on_result(results) and strategy.can_retry(attempt)):
                    return results
            self.retries += 1
            await asyncio.sleep(strategy.backoff_ms(attempt) / 1000.0)
            attempt += 1

    async def _call(self, value: Any) -> list:
        pending = self._invoke(value)
        if not inspect.isawaitable(pending):
            raise TypeError(
                f"the async function returned {type(pending).__name__}, not an awaitable: declare "
                "it 'async def' (or return an awaitable such as a Ray Serve response)"
            )
        result = await pending
        if not self._returns_list:
            return [result]
        if type(result) is list:
            return result
        if isinstance(result, (list, tuple)):
            return list(result)
        raise TypeError(
            f"async_invoke returned {type(result).__name__}; it must return a list of results "
            "([] to emit nothing)"
        )

    def _expire(self) -> None:
        """The timer of the oldest deadline fired: time out every request due by now, then
        wait for the next deadline of a request still running."""
        self._timer = None
        deadlines = self._deadlines
        loop = asyncio.get_running_loop()
        now = loop.time()
        while deadlines and (deadlines[0][1].done or deadlines[0][0] <= now):
            _, entry = deadlines.popleft()
            if not entry.done:
                self._on_timeout(entry)
        if deadlines:
            self._timer = loop.call_at(deadlines[0][0], self._expire)

    def _on_timeout(self, entry: AsyncEntry) -> None:
        """The timeout of ``entry`` expired: abandon its request and complete it with the
        ``timeout`` hook's results or error. Completing here rather than in the request's
        coroutine also covers a request cancelled before it ever ran."""
        entry.timed_out = True
        entry.task.cancel()
        self.timeouts += 1
        try:
            results = self._timeout_results(entry)
        except Exception as exc:
            self._complete(entry, None, exc)
        else:
            self._complete(entry, results, None)

    def _timeout_results(self, entry: AsyncEntry) -> list:
        hook = self._timeout_hook
        if hook is None:
            raise TimeoutError(
                f"no result within the timeout of {self.timeout_ms} ms"
                + (f" ({self.retry!r})" if not isinstance(self.retry, NoRetryStrategy) else "")
            )
        results = hook(entry.value)
        if isinstance(results, (list, tuple)):
            return list(results)
        raise TypeError(
            f"timeout() returned {type(results).__name__}; it must return a list of results "
            "([] to emit nothing) or raise"
        )

    def _progress(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        ctx = self.ctx
        if ctx is not None and ctx.wake is not None:
            ctx.wake()

    # -- output: only from the data loop ----------------------------------------------------------

    def _emit_ready(self) -> None:
        if self._fatal is not None:
            entry = self._fatal
            self.bad_record(entry.error, entry.value, entry.timestamp)  # type: ignore[arg-type]
        items = self._queue.pop_ready()
        if not items:
            return
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done:
            deadlines.popleft()
        values: list = []
        stamps: list = []
        timed = False
        for item in items:
            if type(item) is int:
                self._emit(values, stamps, timed)
                values, stamps, timed = [], [], False
                self.output.emit_watermark(item)
                continue
            if item.error is not None:
                self.bad_record(item.error, item.value, item.timestamp)
                continue
            results = item.results
            item.results = item.value = None  # an entry may wait in _deadlines a while longer
            if results:
                values.extend(results)
                ts = item.timestamp
                if ts is not None:
                    timed = True
                stamps.extend([ts] * len(results))
        self._emit(values, stamps, timed)

    def _emit(self, values: list, stamps: list, timed: bool) -> None:
        if not values:
            return
        if not timed:
            self.output.emit(Batch(values))
        else:
            self.output.emit(Batch(values, [MIN_TS if t is None else t for t in stamps]))

    async def async_work(self, flush: bool = False, final: bool = False) -> None:
        self._emit_ready()
        self._admit()
        if final:
            while len(self._queue) or self._backlog:
                await self._wait_for_progress(None)
                self._emit_ready()
                self._admit()
            return
        if self._backlog:  # at capacity: wait for room (the task takes no input meanwhile)
            await self._wait_for_progress(self._wait_s)
            self._emit_ready()
            self._admit()

    async def _wait_for_progress(self, timeout_s: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        handle = None
        if timeout_s is not None:
            handle = loop.call_later(timeout_s, _resolve, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    def has_pending(self) -> bool:
        return (
            self._fatal is not None
            or self._queue.has_ready()
            or (bool(self._backlog) and len(self._queue) < self.capacity)
        )

    # -- checkpoints ------------------------------------------------------------------------------

    def prepare_snapshot_pre_barrier(self, checkpoint_id: int) -> None:
        self._emit_ready()  # fewer records to issue again after a restore

    def snapshot_state(self, checkpoint_id: int) -> OperatorSnapshot:
        inputs = [(e.value, e.timestamp) for e in self._queue.entries()]
        inputs.extend(item for item in self._backlog if type(item) is tuple)
        self.operator_state.get_list_state(IN_FLIGHT_STATE).update(inputs)
        return super().snapshot_state(checkpoint_id)

    def initialize_state(self, restored: OperatorSnapshot | None) -> None:
        super().initialize_state(restored)
        if restored is not None:
            self._backlog.extend(
                (value, ts)
                for value, ts in self.operator_state.get_list_state(IN_FLIGHT_STATE).get()
            )

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for entry in self._queue.entries():
            if entry.task is not None and not entry.task.done():
                entry.task.cancel()
        super().close()

    def metrics(self) -> dict[str, Any]:
        m = super().metrics()
        m.update(
            in_flight=sum(1 for e in self._queue.entries() if not e.done),
            queued=len(self._queue),
            backlog=sum(1 for item in self._backlog if type(item) is tuple),
            retries=self.retries,
            timeouts=self.timeouts,
        )
        return m


def _resolve(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
