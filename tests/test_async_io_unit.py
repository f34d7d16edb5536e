"""Async I/O without Ray: the queues against a brute-force reference, and the operator driven
directly on an asyncio loop with a fake service whose answers the test releases one by one
(ordering, capacity and back-pressure, retries, timeouts, error policies, snapshot/restore)."""

from __future__ import annotations

import asyncio
import functools
import random
from typing import Any

import pytest

from raystream import (
    AsyncDataStream,
    AsyncFunction,
    AsyncRetryStrategies,
    DeadLetter,
    ErrorPolicy,
    OutputTag,
    RetryPredicates,
    StreamExecutionEnvironment,
    UserFunctionError,
)
from raystream.errors import GraphError
from raystream.operators.async_queue import AsyncEntry, OrderedQueue, UnorderedQueue
from raystream.operators.async_wait import AsyncWaitOperator
from raystream.testing import OperatorHarness

# -- the queues: random inputs and completion orders against the rules ---------------------------


def scripted_inputs(rng: random.Random, n: int) -> list:
    """Records ("r", i) with watermarks (ints) between them at random places."""
    items: list = []
    wm = 0
    for i in range(n):
        if rng.random() < 0.25:
            wm += rng.randint(1, 5)
            items.append(wm)
        items.append(("r", i))
    return items


def run_queue(queue: Any, items: list, rng: random.Random) -> list:
    """Feeds ``items``; completes the records in a random order, popping after each."""
    entries = []
    for item in items:
        if type(item) is int:
            queue.add_watermark(item)
        else:
            e = AsyncEntry(item, None)
            queue.add_record(e)
            entries.append(e)
    out: list = list(queue.pop_ready())  # leading watermarks
    rng.shuffle(entries)
    for e in entries:
        e.done = True
        queue.completed(e)
        assert queue.has_ready() == bool(snapshot := queue.pop_ready()) or not snapshot
        out.extend(snapshot)
    assert len(queue) == 0 and list(queue.entries()) == []
    return [x if type(x) is int else x.value for x in out]


@pytest.mark.parametrize("seed", range(40))
def test_ordered_queue_emits_exactly_the_input_order(seed):
    rng = random.Random(seed)
    items = scripted_inputs(rng, rng.randint(0, 60))
    assert run_queue(OrderedQueue(), items, rng) == items


@pytest.mark.parametrize("seed", range(40))
def test_unordered_queue_never_moves_a_result_across_a_watermark(seed):
    rng = random.Random(seed)
    items = scripted_inputs(rng, rng.randint(0, 60))
    out = run_queue(UnorderedQueue(), items, rng)
    assert sorted(map(str, out)) == sorted(map(str, items))

    def epochs(seq: list) -> list:  # the records between consecutive watermarks, as sets
        cut: list = [set()]
        for x in seq:
            if type(x) is int:
                cut.append(set())
            else:
                cut[-1].add(x)
        return cut

    assert [x for x in out if type(x) is int] == [x for x in items if type(x) is int]
    assert epochs(out) == epochs(items)


def test_unordered_queue_emits_as_completed_within_a_segment():
    q = UnorderedQueue()
    a, b, c = AsyncEntry("a", None), AsyncEntry("b", None), AsyncEntry("c", None)
    q.add_record(a)
    q.add_record(b)
    q.add_watermark(10)
    q.add_record(c)
    c.done = True
    q.completed(c)
    assert q.pop_ready() == []  # c is behind the watermark
    b.done = True
    q.completed(b)
    assert q.pop_ready() == [b]  # b overtakes a
    assert [e.value for e in q.entries()] == ["a", "c"]  # the snapshot keeps input order
    a.done = True
    q.completed(a)
    assert q.pop_ready() == [a, 10, c]


# -- the operator on an asyncio loop --------------------------------------------------------------


class FakeService:
    """Answers only when the test says so: ``release(value, result)`` / ``fail(value, exc)``."""

    def __init__(self) -> None:
        self.calls: list = []
        self.waiting: dict[Any, list[asyncio.Future]] = {}
        self.concurrent = 0
        self.max_concurrent = 0

    async def __call__(self, value: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self.calls.append(value)
        self.waiting.setdefault(value, []).append(fut)
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            return await fut
        finally:
            self.concurrent -= 1

    def release(self, value: Any, result: Any = None, error: BaseException | None = None) -> None:
        fut = self.waiting[value].pop(0)
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def async_op(fn: Any, capacity: int = 3, ordered: bool = True, timeout_ms: int = 0, **kw: Any):
    return AsyncWaitOperator(
        "Enrich", fn=fn, timeout_ms=timeout_ms, capacity=capacity, ordered=ordered, **kw
    )


def run(coro_fn: Any) -> Any:
    return asyncio.run(coro_fn())


def test_ordered_results_follow_input_order_whatever_the_completion_order():
    async def scenario():
        svc = FakeService()
        h = OperatorHarness(async_op(svc, capacity=10, ordered=True))
        h.process([1, 2, 3, 4], [100, 200, 300, 400])
        await settle()
        assert svc.calls == [1, 2, 3, 4]
        for v in (4, 2, 3):
            svc.release(v, v * 10)
        await settle()
        await h.operator.async_work()
        assert h.output == []  # 1 is still out
        svc.release(1, 10)
        await settle()
        await h.operator.async_work()
        assert h.output == [(10, 100), (20, 200), (30, 300), (40, 400)]

    run(scenario)


def test_unordered_results_leave_early_but_wait_for_the_watermark_before_them():
    async def scenario():
        svc = FakeService()
        h = OperatorHarness(async_op(svc, capacity=10, ordered=False))
        h.process([1, 2], [100, 200]).watermark(250).process([3], [300])
        await settle()
        svc.release(3, "c")  # behind the watermark: must wait
        svc.release(2, "b")
        await settle()
        await h.operator.async_work()
        assert h.values() == ["b"] and h.watermarks == []
        svc.release(1, "a")
        await settle()
        await h.operator.async_work()
        assert h.values() == ["b", "a", "c"]
        assert h.watermarks == [250]
        assert h.output[2] == ("c", 300)

    run(scenario)


def test_capacity_bounds_requests_in_flight_and_blocks_input():
    async def scenario():
        svc = FakeService()
        h = OperatorHarness(async_op(svc, capacity=3, ordered=False))
        op = h.operator
        h.process(list(range(10)))
        await settle()
        assert svc.calls == [0, 1, 2] and op.input_blocked()
        assert op.metrics()["backlog"] == 7 and op.metrics()["in_flight"] == 3
        released = 0
        while svc.waiting and any(svc.waiting.values()):
            value = next(v for v, futs in svc.waiting.items() if futs)
            svc.release(value, value)
            released += 1
            await settle()
            await op.async_work()  # emits, admits from the backlog
            await settle()
            assert svc.concurrent <= 3
        assert released == 10 and not op.input_blocked()
        assert sorted(h.values()) == list(range(10))
        assert svc.max_concurrent == 3

    run(scenario)


def test_async_work_waits_for_room_while_blocked():
    """What the task does while the operator is at capacity: await ``async_work`` until the
    backlog is gone; it returns once a request finished and made room."""

    async def scenario():
        svc = FakeService()
        h = OperatorHarness(async_op(svc, capacity=1))
        h.process(["a", "b"])
        await settle()
        work = asyncio.ensure_future(h.operator.async_work())
        await settle()
        assert not work.done()  # nothing finished: still waiting (no timeout in the harness)
        svc.release("a", "A")
        await asyncio.wait_for(work, 5)
        assert h.values() == ["A"] and svc.calls == ["a", "b"]
        assert not h.operator.input_blocked()

    run(scenario)


def test_end_of_input_drains_everything_in_flight_before_the_final_watermark():
    async def scenario():
        svc = FakeService()
        h = OperatorHarness(async_op(svc, capacity=2, ordered=False))
        h.process([1, 2, 3], [10, 20, 30])
        h.finish()  # MAX watermark waits in the queue behind the records
        assert h.watermarks == []

        async def answer():
            for v in (2, 1, 3):
                while not svc.waiting.get(v):
                    await asyncio.sleep(0)
                svc.release(v, -v)

        helper = asyncio.ensure_future(answer())
        await asyncio.wait_for(h.operator.async_work(flush=True, final=True), 5)
        await helper
        assert sorted(h.values()) == [-3, -2, -1]
        assert len(h.watermarks) == 1  # MAX, after every record

    run(scenario)


class Lookup(AsyncFunction):
    """Returns several results per record, none for odd ones."""

    def __init__(self) -> None:
        self.opened = False

    def open(self, runtime_context: Any) -> None:
        self.opened = True

    async def async_invoke(self, value: int) -> list:
        await asyncio.sleep(0)
        return [] if value % 2 else [(value, "x"), (value, "y")]


def test_async_function_returns_lists_of_results_with_the_records_timestamp():
    async def scenario():
        fn = Lookup()
        h = OperatorHarness(async_op(fn, ordered=True))
        assert fn.opened
        h.process([1, 2, 4], [5, 6, 7])
        await h.operator.async_work(flush=True, final=True)
        assert h.output == [((2, "x"), 6), ((2, "y"), 6), ((4, "x"), 7), ((4, "y"), 7)]

    run(scenario)


# -- retries and timeouts -------------------------------------------------------------------------


class Flaky:
    """Fails the first ``failures`` calls of each record, then answers ``value * 2``."""

    def __init__(self, failures: int, empty_first: bool = False) -> None:
        self.failures = failures
        self.empty_first = empty_first
        self.calls: dict[int, int] = {}

    async def __call__(self, value: int) -> Any:
        n = self.calls[value] = self.calls.get(value, 0) + 1
        await asyncio.sleep(0)
        if n <= self.failures:
            raise ConnectionError(f"service unavailable (call {n})")
        return value * 2


class FlakyLookup(AsyncFunction):
    def __init__(self, empties: int) -> None:
        self.empties = empties
        self.calls = 0

    async def async_invoke(self, value: int) -> list:
        self.calls += 1
        return [] if self.calls <= self.empties else [value]


def test_retry_strategies_count_attempts_as_flink_does():
    fixed = AsyncRetryStrategies.FixedDelayRetryStrategyBuilder(3, 100).build()
    assert [fixed.can_retry(a) for a in (1, 2, 3, 4)] == [True, True, True, False]
    assert fixed.backoff_ms(1) == fixed.backoff_ms(3) == 100
    expo = AsyncRetryStrategies.ExponentialBackoffDelayRetryStrategyBuilder(5, 10, 50, 2.0).build()
    assert [expo.backoff_ms(a) for a in (1, 2, 3, 4, 5)] == [10, 20, 40, 50, 50]
    assert not AsyncRetryStrategies.NO_RETRY_STRATEGY.can_retry(1)
    # without predicates nothing is retried
    assert not fixed.retry_on_exception(ValueError()) and not fixed.retry_on_result([])
    typed = RetryPredicates.create_exception_type_predicate(ConnectionError)
    assert typed(ConnectionResetError()) and not typed(ValueError())
    with pytest.raises(ValueError):
        AsyncRetryStrategies.FixedDelayRetryStrategyBuilder(0, 100).build()


def test_exceptions_are_retried_until_the_strategy_gives_up():
    strategy = (
        AsyncRetryStrategies.FixedDelayRetryStrategyBuilder(2, 1)
        .if_exception(RetryPredicates.HAS_EXCEPTION_PREDICATE)
        .build()
    )

    async def succeeds():
        fn = Flaky(failures=2)
        h = OperatorHarness(async_op(fn, retry_strategy=strategy))
        h.process([1, 2, 3])
        await h.operator.async_work(flush=True, final=True)
        assert h.values() == [2, 4, 6]
        assert fn.calls == {1: 3, 2: 3, 3: 3} and h.operator.retries == 6

    run(succeeds)

    async def gives_up():
        fn = Flaky(failures=3)  # one more than the strategy allows
        h = OperatorHarness(async_op(fn, retry_strategy=strategy))
        h.process([7], [70])
        await h.operator.async_work(flush=True, final=True)

    with pytest.raises(UserFunctionError) as info:
        run(gives_up)
    err = info.value
    assert err.operator == "Enrich" and err.record == "7"
    assert err.cause_type == "ConnectionError" and "call 3" in err.cause_message


def test_empty_results_are_retried_with_the_result_predicate():
    strategy = (
        AsyncRetryStrategies.ExponentialBackoffDelayRetryStrategyBuilder(3, 1, 4, 2.0)
        .if_result(RetryPredicates.EMPTY_RESULT_PREDICATE)
        .build()
    )

    async def scenario():
        fn = FlakyLookup(empties=2)
        h = OperatorHarness(async_op(fn, retry_strategy=strategy))
        h.process([5])
        await h.operator.async_work(flush=True, final=True)
        assert h.values() == [5] and fn.calls == 3

        late = FlakyLookup(empties=10)  # still empty after the last retry: emits nothing
        h2 = OperatorHarness(async_op(late, retry_strategy=strategy))
        h2.process([6])
        await h2.operator.async_work(flush=True, final=True)
        assert h2.values() == [] and late.calls == 4

    run(scenario)


async def never(value: Any) -> Any:
    await asyncio.Event().wait()


class WithFallback(AsyncFunction):
    async def async_invoke(self, value: Any) -> list:
        if value == "slow":
            await asyncio.Event().wait()
        return [value.upper()]

    def timeout(self, value: Any) -> list:
        return [f"fallback:{value}"]


def test_a_timeout_fails_with_operator_and_record_or_uses_the_timeout_hook():
    async def fails():
        h = OperatorHarness(async_op(never, timeout_ms=20))
        h.process([{"id": 42}])
        await h.operator.async_work(flush=True, final=True)

    with pytest.raises(UserFunctionError) as info:
        run(fails)
    assert info.value.cause_type == "TimeoutError" and "42" in info.value.record
    assert "timeout of 20 ms" in str(info.value) and "Enrich" in str(info.value)

    async def hook():
        h = OperatorHarness(async_op(WithFallback(), timeout_ms=20, ordered=True))
        h.process(["a", "slow", "b"])
        await h.operator.async_work(flush=True, final=True)
        assert h.values() == ["A", "fallback:slow", "B"]
        assert h.operator.timeouts == 1

    run(hook)


def test_failed_and_timed_out_records_go_to_the_dead_letter_side_output():
    dlq = OutputTag("dlq")

    async def scenario():
        async def fn(value: int) -> int:
            if value == 3:
                raise ValueError("no such user 3")
            if value == 5:
                await asyncio.Event().wait()
            return value

        op = async_op(fn, capacity=4, ordered=True, timeout_ms=20)
        op.error_policy = ErrorPolicy.dead_letter(dlq)
        h = OperatorHarness(op)
        h.process(list(range(8)), [t * 10 for t in range(8)])
        await h.operator.async_work(flush=True, final=True)
        assert h.values() == [0, 1, 2, 4, 6, 7]
        letters = h.side_output(dlq)
        assert [(d.record, d.exception_type, t) for d, t in letters] == [
            (3, "ValueError", 30),
            (5, "TimeoutError", 50),
        ]
        assert all(isinstance(d, DeadLetter) and d.operator == "Enrich" for d, _ in letters)
        assert op.metrics()["records_dead_lettered"] == 2

    run(scenario)


def test_a_failure_fails_at_once_even_behind_a_slow_record():
    async def scenario():
        svc = FakeService()
        h = OperatorHarness(async_op(svc, capacity=5, ordered=True))
        h.process(["slow", "bad"])
        await settle()
        svc.release("bad", error=RuntimeError("boom"))
        await settle()
        assert h.operator.has_pending()  # the task is woken to raise it
        await h.operator.async_work()

    with pytest.raises(UserFunctionError, match="boom"):
        run(scenario)


def test_a_function_that_returns_no_awaitable_or_no_list_is_named():
    async def scenario(fn: Any) -> None:
        h = OperatorHarness(async_op(fn))
        h.process([1])
        await h.operator.async_work(flush=True, final=True)

    with pytest.raises(UserFunctionError, match="not an awaitable"):
        asyncio.run(scenario(lambda v: v + 1))

    class Bad(AsyncFunction):
        async def async_invoke(self, value: Any) -> Any:
            return value

    with pytest.raises(UserFunctionError, match="must return a list"):
        asyncio.run(scenario(Bad()))


# -- checkpoints: in-flight records are in the snapshot and issued again -----------------------


def test_snapshot_holds_in_flight_and_backlog_records_which_a_restore_issues_again():
    async def first_run():
        svc = FakeService()
        h = OperatorHarness(async_op(svc, capacity=3, ordered=False), checkpoint_interval_ms=100)
        h.process(list(range(6)), [100 + i for i in range(6)])
        await settle()
        svc.release(1, "r1")
        await settle()
        snap = h.snapshot(1)  # 1 is emitted before the barrier; 0, 2 in flight; 3..5 waiting
        return h.output, snap

    before, snap = run(first_run)
    assert before == [("r1", 101)]

    async def after_restore():
        async def fn(v: int) -> str:
            await asyncio.sleep(0)
            return f"r{v}"

        h = OperatorHarness(async_op(fn, capacity=3, ordered=False), restored=snap)
        h.process([6], [106])  # new input comes after the restored records
        await h.operator.async_work(flush=True, final=True)
        return h.output

    after = run(after_restore)
    assert sorted(before + after) == [(f"r{i}", 100 + i) for i in range(7)]


def test_api_validates_the_function_capacity_and_timeout():
    env = StreamExecutionEnvironment()
    stream = env.from_collection([1, 2, 3])

    class NotAsync(AsyncFunction):
        def async_invoke(self, value: Any) -> list:  # type: ignore[override]
            return [value]

    with pytest.raises(TypeError, match="async def"):
        AsyncDataStream.unordered_wait(stream, NotAsync(), 1000)
    with pytest.raises(GraphError, match="capacity"):
        AsyncDataStream.ordered_wait(stream, never, 1000, capacity=0)
    with pytest.raises(GraphError, match="timeout"):
        AsyncDataStream.ordered_wait(stream, never, -1)
    with pytest.raises(TypeError, match="AsyncRetryStrategies"):
        AsyncDataStream.unordered_wait(stream, never, 1000, retry_strategy="twice")  # type: ignore[arg-type]
    out = AsyncDataStream.unordered_wait_with_retry(
        stream, never, 1000, AsyncRetryStrategies.NO_RETRY_STRATEGY, capacity=7
    )
    out.set_error_policy(ErrorPolicy.skip())  # async I/O takes error policies
    factory = out._t.operator_factory
    assert isinstance(factory, functools.partial) and factory.keywords["capacity"] == 7
