"""The channel mechanics without Ray: InputGate ordering/credit, ChannelSender batching/credit,
Writer buffer timeouts. Coroutines run under ``asyncio.run`` inside ordinary sync tests."""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.core.time import MIN_TS
from raystream.errors import ChannelError, SerializationError
from raystream.graph.partitioners import RebalancePartitioner
from raystream.runtime.channels import ChannelSender, EdgeOutput, Writer, loads
from raystream.runtime.elements import (
    END_OF_INPUT,
    Batch,
    CheckpointBarrier,
    Watermark,
    WatermarkStatus,
)
from raystream.runtime.gate import InputGate

FAST = settings(max_examples=100, deadline=None)


def run(coro_fn):
    """Runs ``coro_fn()`` on a fresh event loop (gates and futures are created inside it)."""
    return asyncio.run(coro_fn())


async def settle(rounds: int = 5) -> None:
    """Lets every ready task run until it blocks again."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def make_gate(n: int) -> InputGate:
    return InputGate([(0, f"ch{i}") for i in range(n)])


def drain_gate(gate: InputGate) -> list[tuple[int, object]]:
    out = []
    while (got := gate.poll()) is not None:
        out.append(got)
    return out


# -- InputGate -------------------------------------------------------------------------------------


@st.composite
def out_of_order_pushes(draw):
    """(number of channels, per-channel counts, a shuffled order of every (channel, seq) push,
    and for each push whether to poll once right after it)."""
    counts = draw(st.lists(st.integers(0, 8), min_size=1, max_size=3))
    pushes = [(c, s) for c, n in enumerate(counts) for s in range(n)]
    order = draw(st.permutations(pushes))
    polls = draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    return counts, order, polls


@FAST
@given(out_of_order_pushes())
def test_gate_delivers_each_channel_in_sequence_order(case):
    counts, order, polls = case

    async def body():
        gate = make_gate(len(counts))
        loop = asyncio.get_running_loop()
        credits = {}
        taken = []
        for (c, s), poll_now in zip(order, polls):
            credits[c, s] = loop.create_future()
            gate.put(c, s, ("msg", c, s), credits[c, s])
            if poll_now and (got := gate.poll()) is not None:
                taken.append(got)
            # a credit is answered exactly when its message has been taken
            done = {k for k, f in credits.items() if f.done()}
            assert done == {(c2, s2) for c2, (_, _, s2) in taken}
        taken.extend(drain_gate(gate))
        for c, n in enumerate(counts):
            assert [m for c2, m in taken if c2 == c] == [("msg", c, s) for s in range(n)]
        assert all(f.done() for f in credits.values())
        assert gate.messages_taken == sum(counts)
        assert gate.queued() == 0

    run(body)


def test_gate_duplicate_and_stale_sequence_numbers_raise():
    gate = make_gate(2)
    gate.put(0, 0, "a", None)
    with pytest.raises(ChannelError, match="already delivered"):
        gate.put(0, 0, "a again", None)
    gate.put(0, 3, "d", None)
    with pytest.raises(ChannelError, match="delivered twice"):
        gate.put(0, 3, "d again", None)
    with pytest.raises(ChannelError, match="'ch0'"):
        gate.put(0, 0, "stale", None)
    with pytest.raises(ChannelError, match="unknown channel 5"):
        gate.put(5, 0, "x", None)
    gate.put(1, 0, "other channel unaffected", None)
    assert drain_gate(gate) == [(0, "a"), (1, "other channel unaffected")]


def test_gate_credit_resolves_only_when_the_message_is_taken():
    async def body():
        gate = make_gate(1)
        loop = asyncio.get_running_loop()
        f0, f1, f2 = (loop.create_future() for _ in range(3))
        gate.put(0, 1, "b", f1)
        gate.put(0, 2, "c", f2)
        await settle()
        assert not any(f.done() for f in (f0, f1, f2)), "reordered arrival is not a take"
        gate.put(0, 0, "a", f0)
        assert not any(f.done() for f in (f0, f1, f2)), "queued is not taken"
        assert gate.poll() == (0, "a")
        assert f0.done() and not f1.done() and not f2.done()
        assert await gate.next(None) == (0, "b")
        assert f1.done() and not f2.done()
        assert await gate.next(0) == (0, "c")
        assert f2.done() and f2.result() is None

    run(body)


def test_gate_blocked_channel_is_not_consumed_and_unblock_resumes_in_order():
    async def body():
        gate = make_gate(2)
        loop = asyncio.get_running_loop()
        credits = [loop.create_future() for _ in range(3)]
        for s in range(3):
            gate.put(0, s, f"a{s}", credits[s])
            gate.put(1, s, f"b{s}", None)
        gate.block(0)
        gate.block(0)  # idempotent
        assert drain_gate(gate) == [(1, "b0"), (1, "b1"), (1, "b2")]
        assert await gate.next(0.01) is None
        assert not any(f.done() for f in credits), "a blocked channel grants no credit"
        gate.put(0, 3, "a3", None)  # arrives while blocked: queued, not available
        assert gate.poll() is None
        assert gate.queued() == 4
        gate.unblock(0)
        gate.unblock(0)  # idempotent
        assert drain_gate(gate) == [(0, "a0"), (0, "a1"), (0, "a2"), (0, "a3")]
        assert all(f.done() for f in credits)

    run(body)


def test_gate_blocking_an_empty_channel_then_unblocking():
    gate = make_gate(2)
    gate.block(1)
    gate.put(1, 0, "x", None)
    gate.put(0, 0, "y", None)
    assert drain_gate(gate) == [(0, "y")]
    gate.unblock(1)
    assert drain_gate(gate) == [(1, "x")]
    gate.put(1, 1, "z", None)
    assert drain_gate(gate) == [(1, "z")]


def test_gate_unblock_wakes_a_waiting_next():
    async def body():
        gate = make_gate(1)
        gate.block(0)
        gate.put(0, 0, "m", None)
        waiter = asyncio.create_task(gate.next(None))
        await settle()
        assert not waiter.done()
        gate.unblock(0)
        assert await asyncio.wait_for(waiter, 1) == (0, "m")

    run(body)


def test_gate_round_robin_between_busy_channels():
    gate = make_gate(3)
    for s in range(4):
        gate.put(0, s, ("a", s), None)
        gate.put(1, s, ("b", s), None)
    gate.put(2, 0, ("c", 0), None)
    order = [c for c, _ in drain_gate(gate)]
    assert order == [0, 1, 2, 0, 1, 0, 1, 0, 1]


@FAST
@given(st.integers(1, 10), st.integers(1, 10))
def test_gate_two_busy_channels_alternate_while_both_have_data(n0, n1):
    gate = make_gate(2)
    for s in range(n0):
        gate.put(0, s, s, None)
    for s in range(n1):
        gate.put(1, s, s, None)
    order = [c for c, _ in drain_gate(gate)]
    both = 2 * min(n0, n1)
    assert order[:both] == [0, 1] * min(n0, n1)
    assert len(order) == n0 + n1


def test_gate_next_times_out_with_nothing_queued():
    async def body():
        gate = make_gate(2)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await gate.next(0.05) is None
        assert loop.time() - t0 >= 0.04
        assert await gate.next(0) is None
        assert await gate.next(-1) is None

    run(body)


def test_gate_next_wakes_on_put():
    async def body():
        gate = make_gate(2)
        waiter = asyncio.create_task(gate.next(5))
        await settle()
        assert not waiter.done()
        gate.put(1, 0, "late", None)
        assert await asyncio.wait_for(waiter, 1) == (1, "late")

    run(body)


def test_gate_fail_pending_answers_waiting_pushes_with_the_error():
    async def body():
        gate = make_gate(2)
        loop = asyncio.get_running_loop()
        queued, reordered, taken = (loop.create_future() for _ in range(3))
        gate.put(0, 0, "taken", taken)
        gate.put(0, 1, "queued", queued)
        gate.put(1, 2, "reordered", reordered)
        assert gate.poll() == (0, "taken")
        err = RuntimeError("task going down")
        gate.fail_pending(err)
        for f in (queued, reordered):
            with pytest.raises(RuntimeError, match="task going down"):
                await f
        assert taken.result() is None
        assert gate.queued() == 0 and gate.poll() is None

    run(body)


def test_gate_end_of_input_bookkeeping():
    gate = make_gate(2)
    assert len(gate) == 2 and not gate.all_ended()
    gate.mark_ended(0)
    assert not gate.all_ended()
    gate.mark_ended(1)
    assert gate.all_ended()
    assert [ch.input_index for ch in InputGate([(0, "x"), (1, "y")]).channels] == [0, 1]


# -- ChannelSender -----------------------------------------------------------------------------------


class FakeClock:
    """A list-backed monotonic clock the test advances by hand."""

    def __init__(self, start: float = 0.0):
        self.now = [start]

    def __call__(self) -> float:
        return self.now[0]

    def advance(self, dt: float) -> None:
        self.now[0] += dt


class FakeConsumer:
    """Stands in for ``consumer.push.remote``: records pushes, hands out futures the test
    resolves. Fails the test if a push arrives while ``capacity`` pushes are unanswered."""

    def __init__(self, capacity: int | None = None, auto_answer: bool = False):
        self.capacity = capacity
        self.auto_answer = auto_answer
        self.pushes: list[tuple[int, int, object]] = []
        self.futures: list[asyncio.Future] = []

    def unanswered(self) -> int:
        return sum(not f.done() for f in self.futures)

    def push(self, channel_index: int, seq: int, message: object) -> asyncio.Future:
        if self.capacity is not None:
            assert self.unanswered() < self.capacity, "push beyond the channel's credit"
        fut = asyncio.get_running_loop().create_future()
        if self.auto_answer:
            fut.set_result(None)
        self.pushes.append((channel_index, seq, message))
        self.futures.append(fut)
        return fut

    @property
    def messages(self) -> list:
        """Pushed messages with batches decoded (a batch travels as pickled bytes)."""
        return [loads(m) if isinstance(m, bytes) else m for _, _, m in self.pushes]


def make_sender(consumer=None, capacity=4, batch_size=3, clock=None, channel_index=7):
    consumer = consumer or FakeConsumer(auto_answer=True)
    return ChannelSender(
        consumer.push, channel_index, capacity, batch_size, clock or FakeClock(), "op -> sink[1]"
    )


def batch_contents(messages) -> list[tuple[list, list | None]]:
    return [(m.values, m.timestamps) for m in messages if type(m) is Batch]


def test_seal_full_cuts_whole_batches_and_keeps_the_remainder():
    s = make_sender(batch_size=3)
    s.add(list(range(8)), [10 * v for v in range(8)])
    s.seal_full()
    assert batch_contents(s.queue) == [([0, 1, 2], [0, 10, 20]), ([3, 4, 5], [30, 40, 50])]
    assert s.values == [6, 7] and s.timestamps == [60, 70] and s.has_buffered()
    s.seal_full()  # a partial batch is not sealed
    assert len(s.queue) == 2
    s.seal()
    assert batch_contents(s.queue)[-1] == ([6, 7], [60, 70])
    assert not s.has_buffered() and s.timestamps is None
    s.seal()  # nothing buffered: no empty batch
    assert len(s.queue) == 3


@FAST
@given(
    st.lists(st.tuples(st.integers(0, 7), st.booleans()), max_size=10),
    st.integers(1, 5),
    st.booleans(),
)
def test_sealed_batches_reassemble_the_input(adds, batch_size, full_first):
    s = make_sender(batch_size=batch_size)
    values, stamps, j = [], [], 0
    for size, with_ts in adds:
        vals = list(range(j, j + size))
        s.add(vals, [100 + v for v in vals] if with_ts else None)
        values += vals
        stamps += [100 + v if with_ts else MIN_TS for v in vals]
        j += size
    if full_first:
        s.seal_full()
    s.seal()
    batches = batch_contents(s.queue)
    assert [v for vs, _ in batches for v in vs] == values
    assert all(0 < len(vs) <= batch_size for vs, _ in batches)
    assert all(len(vs) == batch_size for vs, _ in batches[:-1]) or full_first
    # a batch without a timestamp list means "no timestamp" (MIN_TS) for every record
    got_stamps = [t for vs, ts in batches for t in (ts if ts is not None else [MIN_TS] * len(vs))]
    assert got_stamps == stamps
    assert all(ts is None or len(ts) == len(vs) for vs, ts in batches)
    if not any(with_ts for _, with_ts in adds):
        assert all(ts is None for _, ts in batches)


def test_timestamps_mixing_pads_with_min_ts():
    s = make_sender(batch_size=100)
    s.add([1, 2], None)
    assert s.timestamps is None
    s.add([3], [30])
    assert s.timestamps == [MIN_TS, MIN_TS, 30]
    s.add([4, 5], None)
    assert s.timestamps == [MIN_TS, MIN_TS, 30, MIN_TS, MIN_TS]
    s.seal()
    (batch,) = s.queue
    assert batch.values == [1, 2, 3, 4, 5]
    assert batch.timestamps == [MIN_TS, MIN_TS, 30, MIN_TS, MIN_TS]


def test_sequence_numbers_count_from_zero_and_metrics():
    async def body():
        consumer = FakeConsumer(auto_answer=True)
        s = make_sender(consumer, capacity=100, batch_size=2, channel_index=7)
        s.add(list(range(5)), None)
        s.add_control(Watermark(9))
        await s.send_queued()
        assert [(c, q) for c, q, _ in consumer.pushes] == [(7, 0), (7, 1), (7, 2), (7, 3)]
        assert consumer.messages[-1] == Watermark(9)
        assert s.records_sent == 5 and s.batches_sent == 3 and s.seq == 4
        s.add_control(END_OF_INPUT)
        await s.drain()
        assert consumer.pushes[-1] == (7, 4, END_OF_INPUT)
        assert not s.in_flight

    run(body)


def test_send_queued_blocks_at_capacity_until_the_oldest_push_is_answered():
    async def body():
        consumer = FakeConsumer(capacity=2)
        s = make_sender(consumer, capacity=2, batch_size=1)
        s.add(list(range(5)), None)
        s.seal()
        task = asyncio.create_task(s.send_queued())
        await settle()
        assert len(consumer.pushes) == 2
        assert not task.done(), "out of credit: the sender must wait"
        consumer.futures[1].set_result(None)  # answering a newer push does not help
        await settle()
        assert len(consumer.pushes) == 2 and not task.done()
        consumer.futures[0].set_result(None)  # the oldest: two more fit (1 was answered too)
        await settle()
        assert len(consumer.pushes) == 4 and not task.done()
        consumer.futures[2].set_result(None)
        await settle()
        assert len(consumer.pushes) == 5
        assert task.done()  # everything pushed; the last two are still in flight
        assert len(s.in_flight) == 2
        drain = asyncio.create_task(s.drain())
        await settle()
        assert not drain.done()
        for f in consumer.futures:
            if not f.done():
                f.set_result(None)
        await asyncio.wait_for(drain, 1)
        assert [q for _, q, _ in consumer.pushes] == [0, 1, 2, 3, 4]

    run(body)


@FAST
@given(st.integers(1, 4), st.integers(0, 12), st.data())
def test_never_more_than_capacity_pushes_unanswered(capacity, n, data):
    async def body():
        consumer = FakeConsumer(capacity=capacity)  # asserts on every push
        s = make_sender(consumer, capacity=capacity, batch_size=1)
        s.add(list(range(n)), None)
        s.seal()
        task = asyncio.create_task(s.send_queued())
        await settle()
        while not task.done():
            pending = [f for f in consumer.futures if not f.done()]
            assert 1 <= len(pending) <= capacity
            # blocked only when out of credit: a full window starts at the oldest unanswered push
            oldest = next(i for i, f in enumerate(consumer.futures) if not f.done())
            assert len(consumer.pushes) - oldest == capacity
            pick = data.draw(st.integers(0, len(pending) - 1))
            pending[pick].set_result(None)
            await settle()
        task.result()
        assert [m.values for m in consumer.messages] == [[v] for v in range(n)]
        assert [q for _, q, _ in consumer.pushes] == list(range(n))

    run(body)


def test_failed_push_answer_propagates():
    async def body():
        consumer = FakeConsumer()
        s = make_sender(consumer, capacity=1, batch_size=1)
        s.add([1, 2], None)
        s.seal()
        task = asyncio.create_task(s.send_queued())
        await settle()
        consumer.futures[0].set_exception(RuntimeError("consumer died"))
        with pytest.raises(RuntimeError, match="consumer died"):
            await task

    run(body)


def test_add_control_flushes_buffered_data_first():
    async def body():
        consumer = FakeConsumer(auto_answer=True)
        s = make_sender(consumer, batch_size=10)
        s.add([1, 2], [5, 6])
        barrier = CheckpointBarrier(3, 1234)
        s.add_control(barrier)
        s.add([3], None)
        s.add_control(WatermarkStatus(idle=True))
        await s.send_queued()
        msgs = consumer.messages
        assert [type(m) for m in msgs] == [Batch, CheckpointBarrier, Batch, WatermarkStatus]
        assert (msgs[0].values, msgs[0].timestamps) == ([1, 2], [5, 6])
        assert msgs[1] is barrier
        assert (msgs[2].values, msgs[2].timestamps) == ([3], None)

    run(body)


def test_consecutive_unsent_watermarks_collapse_into_the_newest():
    async def body():
        consumer = FakeConsumer(auto_answer=True)
        s = make_sender(consumer, batch_size=10)
        s.add_control(Watermark(1))
        s.add_control(Watermark(2))
        s.add_control(Watermark(3))
        assert list(s.queue) == [Watermark(3)]
        s.add([1], None)
        s.add_control(Watermark(4))  # data in between: both watermarks stay
        s.add_control(CheckpointBarrier(1, 0))
        s.add_control(Watermark(5))  # a barrier in between: both stay
        await s.send_queued()
        s.add_control(Watermark(6))  # the previous one was already sent: no collapsing
        await s.send_queued()
        msgs = consumer.messages
        assert msgs[0] == Watermark(3)
        assert type(msgs[1]) is Batch
        assert msgs[2:] == [Watermark(4), CheckpointBarrier(1, 0), Watermark(5), Watermark(6)]
        assert [q for _, q, _ in consumer.pushes] == list(range(6))

    run(body)


def test_unserializable_record_raises_serialization_error_naming_the_channel():
    async def body():
        consumer = FakeConsumer(auto_answer=True)
        s = make_sender(consumer, batch_size=10)
        s.add(["fine", threading.Lock()], None)
        s.seal()
        with pytest.raises(SerializationError, match="op -> sink") as info:
            await s.send_queued()
        assert "lock" in str(info.value)
        assert consumer.pushes == [], "nothing reaches the consumer"

    run(body)


def test_batches_travel_as_bytes_and_are_counted():
    async def body():
        consumer = FakeConsumer(auto_answer=True)
        s = make_sender(consumer, batch_size=10)
        s.add([1, 2], [3, 4])
        s.add_control(Watermark(4))
        await s.send_queued()
        payload, wm = (m for _, _, m in consumer.pushes)
        assert isinstance(payload, bytes) and wm == Watermark(4)
        batch = loads(payload)
        assert (batch.values, batch.timestamps) == ([1, 2], [3, 4])
        assert s.bytes_sent == len(payload)

    run(body)


# -- Writer / EdgeOutput -------------------------------------------------------------------------


def test_writer_deadlines_and_expired_flush_with_a_fake_clock():
    async def body():
        clock = FakeClock(100.0)
        consumers = [FakeConsumer(auto_answer=True) for _ in range(2)]
        senders = [make_sender(c, capacity=8, batch_size=50, clock=clock) for c in consumers]
        writer = Writer(senders, buffer_timeout_s=1.0, monotonic=clock)
        assert writer.next_deadline() is None

        senders[0].add([1], None)
        clock.advance(0.25)
        senders[1].add([2], None)
        senders[0].add([3], None)  # does not restart sender 0's clock
        assert writer.next_deadline() == pytest.approx(101.0)

        clock.advance(0.5)  # t = 100.75: nothing expired yet
        await writer.flush(only_expired=True)
        assert consumers[0].pushes == [] and consumers[1].pushes == []

        clock.advance(0.25)  # t = 101.0: sender 0 expired (exactly at the deadline)
        await writer.flush(only_expired=True)
        assert [m.values for m in consumers[0].messages] == [[1, 3]]
        assert consumers[1].pushes == []
        assert writer.next_deadline() == pytest.approx(101.25)

        clock.advance(0.25)
        await writer.flush(only_expired=True)
        assert [m.values for m in consumers[1].messages] == [[2]]
        assert writer.next_deadline() is None

        senders[0].add([4], None)
        senders[1].add([5], None)
        await writer.flush()  # not only expired: everything goes
        assert [m.values for m in consumers[0].messages] == [[1, 3], [4]]
        assert [m.values for m in consumers[1].messages] == [[2], [5]]
        assert writer.metrics()["records_sent"] == 5
        assert writer.metrics()["batches_sent"] == 4

    run(body)


def test_expired_buffer_keeps_filling_while_the_consumer_has_the_previous_message():
    async def body():
        clock = FakeClock(0.0)
        consumer = FakeConsumer()  # answers only when the test says so
        s = make_sender(consumer, capacity=4, batch_size=100, clock=clock)
        writer = Writer([s], buffer_timeout_s=1.0, monotonic=clock)
        s.add([1], None)
        clock.advance(1.0)
        await writer.flush(only_expired=True)  # the consumer is idle: the timeout applies
        assert [m.values for m in consumer.messages] == [[1]]

        s.add([2], None)
        clock.advance(1.0)
        await writer.flush(only_expired=True)  # message 1 not taken yet: keep filling
        assert len(consumer.pushes) == 1 and s.values == [2]
        assert writer.next_deadline() == pytest.approx(3.0), "checked again one timeout later"
        s.add([3], None)
        clock.advance(1.0)
        await writer.flush(only_expired=True)
        assert len(consumer.pushes) == 1

        consumer.futures[0].set_result(None)  # the consumer took message 1
        clock.advance(1.0)
        await writer.flush(only_expired=True)
        assert [m.values for m in consumer.messages] == [[1], [2, 3]]

        s.add([4], None)  # a full flush (control message, end of input) never waits
        await writer.flush()
        assert [m.values for m in consumer.messages][-1] == [4]

    run(body)


def test_large_records_make_smaller_messages():
    async def body():
        consumer = FakeConsumer(auto_answer=True)
        s = ChannelSender(consumer.push, 0, 8, 10_000, FakeClock(), "big", message_bytes=50_000)
        assert s.limit() == 10_000  # nothing sent yet: records per message as configured
        s.add([f"{i:04d}" * 250 for i in range(10)], None)  # distinct 1 kB strings
        s.seal()
        await s.send_queued()
        assert 45 <= s.limit() <= 50, "about 50 kB of 1 kB records"
        s.add([f"{i:04d}" * 250 for i in range(200)], None)
        s.seal()
        await s.send_queued()
        sizes = [len(m.values) for m in consumer.messages[1:]]
        assert sum(sizes) == 200 and max(sizes) == s.limit()

    run(body)


def test_writer_send_ready_sends_only_full_batches_and_controls():
    async def body():
        clock = FakeClock()
        consumer = FakeConsumer(auto_answer=True)
        s = make_sender(consumer, capacity=8, batch_size=2, clock=clock)
        writer = Writer([s], buffer_timeout_s=5.0, monotonic=clock)
        s.add([1, 2, 3], None)
        await writer.send_ready()
        assert [m.values for m in consumer.messages] == [[1, 2]]
        assert s.values == [3]
        writer.broadcast_control(Watermark(10))  # flushes the partial batch before it
        await writer.send_ready()
        assert consumer.messages[1].values == [3]
        assert consumer.messages[2] == Watermark(10)
        s.add([4], None)
        await writer.drain()
        assert consumer.messages[3].values == [4]
        assert writer.metrics()["in_flight"] == 0  # drain awaited every answer

    run(body)


def test_edge_output_routes_and_broadcasts_watermarks():
    senders = [make_sender(batch_size=10) for _ in range(3)]
    out = EdgeOutput(RebalancePartitioner().router(0, 3, 128, "e"), senders)
    out.emit(Batch(list(range(7)), list(range(7))))
    out.emit_watermark(42)
    for k, s in enumerate(senders):
        batches = [m for m in s.queue if type(m) is Batch]
        assert batches[0].values == list(range(k, 7, 3))
        assert batches[0].timestamps == list(range(k, 7, 3))
        assert s.queue[-1] == Watermark(42)


@pytest.mark.parametrize("record_bytes", [2 << 20, 20 << 20])
def test_in_flight_bytes_are_bounded_whatever_the_record_size(record_bytes):
    """2 MB and 20 MB records with 1 MiB messages: no push carries more than one record (the
    first message is cut again after pickling), so in flight there are at most ``capacity``
    records; order and content are kept."""

    async def body():
        capacity = 4
        consumer = FakeConsumer(capacity=capacity)
        s = ChannelSender(consumer.push, 0, capacity, 16384, FakeClock(), "big", 1 << 20)
        records = [bytes([i]) * record_bytes for i in range(10)]
        s.add(records, list(range(10)))
        s.seal()
        sent = asyncio.ensure_future(s.send_queued())
        peak = 0
        while not sent.done() or consumer.unanswered():
            await asyncio.sleep(0)
            in_flight = sum(
                len(m) for (_, _, m), f in zip(consumer.pushes, consumer.futures) if not f.done()
            )
            peak = max(peak, in_flight)
            for f in consumer.futures:
                if not f.done():
                    f.set_result(None)
                    break
        await sent
        batches = [m for m in consumer.messages if type(m) is Batch]
        assert [len(b.values) for b in batches] == [1] * 10
        assert [v for b in batches for v in b.values] == records
        assert [t for b in batches for t in b.timestamps] == list(range(10))
        assert peak <= capacity * (record_bytes + 1024)
        assert s.resplit == 1 and s.limit() == 1

    run(body)


def test_a_message_cut_again_keeps_bundled_watermarks_in_order():
    async def body():
        consumer = FakeConsumer(auto_answer=True)
        s = ChannelSender(consumer.push, 0, 8, 10_000, FakeClock(), "big", message_bytes=4096)
        s.add([b"x" * 3000 for _ in range(4)], [1, 2, 3, 4])
        s.add_control(Watermark(2))
        s.add([b"y" * 3000 for _ in range(2)], [5, 6])
        s.seal()
        await s.send_queued()
        flat = []
        for m in consumer.messages:
            flat.extend(m if isinstance(m, list) else [m])
        order = [
            ("b", tuple(x.timestamps)) if type(x) is Batch else ("w", x.timestamp) for x in flat
        ]
        assert order[0][0] == "b" and ("w", 2) in order
        stamps = [t for kind, ts in order if kind == "b" for t in ts]
        assert stamps == [1, 2, 3, 4, 5, 6]
        assert order.index(("w", 2)) > max(
            i for i, (k, ts) in enumerate(order) if k == "b" and 4 in ts
        )

    run(body)


def test_channel_payloads_carry_copies_and_survive_self_references():
    from raystream.runtime.channels import dumps_batch

    shared = ["tag"]
    batch = loads(dumps_batch(Batch([shared, shared, ("k", 2)], [5, 6, 7]), "c"))
    assert batch.values[0] == batch.values[1] == ["tag"]
    assert batch.values[0] is not batch.values[1]  # two records, two objects (as in Flink)
    assert batch.values[2] == ("k", 2) and batch.timestamps == [5, 6, 7]
    looped: list = [1]
    looped.append(looped)  # pickle's fast mode refuses it: the message goes with the memo
    batch = loads(dumps_batch(Batch([looped, shared]), "c"))
    assert batch.values[0][1] is batch.values[0] and batch.values[1] == ["tag"]
