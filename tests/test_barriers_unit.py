"""Barrier alignment at an input gate, driven by scripted channel orders (SEMANTICS §5.1–5.2)."""

from __future__ import annotations

import asyncio
import random

import pytest

from raystream.runtime.barriers import BarrierHandler
from raystream.runtime.elements import CheckpointBarrier, CheckpointKind, EndOfInput
from raystream.runtime.gate import InputGate


def barrier(n: int, kind: CheckpointKind = CheckpointKind.CHECKPOINT) -> CheckpointBarrier:
    return CheckpointBarrier(n, 0, kind)


def run_gate(
    script: list[list], exactly_once: bool = True, rng: random.Random | None = None
) -> tuple[list, list, BarrierHandler]:
    """Feeds each channel's messages into a real InputGate and consumes it the way a task does
    (all at once, or with ``rng`` interleaving arrivals and polls at random).

    Returns the consumed sequence (channel, message), per checkpoint taken the set of records
    consumed before it, and the handler."""

    async def main():
        gate = InputGate([(0, f"ch{i}") for i in range(len(script))])
        handler = BarrierHandler(gate, exactly_once)
        sent = [0] * len(script)

        def arrive(ch: int) -> None:
            gate.put(ch, sent[ch], script[ch][sent[ch]], None)
            sent[ch] += 1

        if rng is None:
            for ch, messages in enumerate(script):
                for _ in messages:
                    arrive(ch)
        consumed, taken, seen = [], [], []
        while True:
            left = [ch for ch in range(len(script)) if sent[ch] < len(script[ch])]
            if left and rng.random() < 0.6:  # type: ignore[union-attr]
                arrive(rng.choice(left))  # type: ignore[union-attr]
                continue
            got = gate.poll()
            if got is None:
                if left:
                    arrive(left[0])
                    continue
                break
            ch, m = got
            consumed.append((ch, m))
            if isinstance(m, CheckpointBarrier):
                due = handler.on_barrier(ch, m)
                if due is not None:
                    taken.append((due.checkpoint_id, set(seen)))
            elif isinstance(m, EndOfInput):
                gate.mark_ended(ch)
                due = handler.on_end_of_input(ch)
                if due is not None:
                    taken.append((due.checkpoint_id, set(seen)))
            else:
                seen.append(m)
        return consumed, taken, handler

    return asyncio.run(main())


def test_aligned_snapshot_holds_exactly_the_records_before_the_barriers():
    # channel 0 is fast: its post-barrier records must wait until channel 1 delivered barrier 1
    script = [
        ["a1", barrier(1), "a2", "a3"],
        ["b1", "b2", "b3", barrier(1), "b4"],
    ]
    consumed, taken, handler = run_gate(script)
    assert taken == [(1, {"a1", "b1", "b2", "b3"})]
    order = [m for _, m in consumed]
    # a2 is not consumed before the checkpoint was taken (channel 0 was blocked)
    assert order.index("a2") > order.index("b3")
    assert sorted(m for m in order if isinstance(m, str)) == [
        "a1",
        "a2",
        "a3",
        "b1",
        "b2",
        "b3",
        "b4",
    ]
    assert handler.alignments == 1


def test_at_least_once_counts_without_blocking():
    script = [
        ["a1", barrier(1), "a2", "a3"],
        ["b1", "b2", "b3", barrier(1), "b4"],
    ]
    _, taken, _ = run_gate(script, exactly_once=False)
    ((cid, before),) = taken
    assert cid == 1
    # records after the barrier on the fast channel may be in the snapshot: duplicates later
    assert {"a1", "b1", "b2", "b3"} <= before
    assert "a2" in before


def test_savepoints_align_even_in_at_least_once_mode():
    sp = barrier(1, CheckpointKind.SAVEPOINT)
    script = [["a1", sp, "a2"], ["b1", "b2", sp]]
    _, taken, _ = run_gate(script, exactly_once=False)
    assert taken == [(1, {"a1", "b1", "b2"})]


def test_an_ended_channel_counts_as_aligned():
    script = [["a1", barrier(1), "a2"], ["b1", EndOfInput()]]
    _, taken, _ = run_gate(script)
    assert taken == [(1, {"a1", "b1"})]


def test_a_newer_barrier_aborts_the_older_alignment():
    # barrier 1 never arrives on channel 1 (that checkpoint was given up upstream)
    script = [["a1", barrier(1), "a2", barrier(2), "a3"], ["b1", barrier(2), "b2"]]
    _, taken, handler = run_gate(script)
    assert [cid for cid, _ in taken] == [2]
    assert handler.aborted == [1]
    assert taken[0][1] == {"a1", "a2", "b1"}


def test_stale_barrier_is_ignored():
    gate_channels = [(0, "x"), (0, "y")]

    async def main():
        gate = InputGate(gate_channels)
        h = BarrierHandler(gate, True)
        assert h.on_barrier(0, barrier(3)) is None
        assert h.on_barrier(1, barrier(3)) is not None
        assert h.on_barrier(0, barrier(2)) is None  # older than the one taken
        assert h.on_barrier(0, barrier(3)) is None  # taken already
        assert not h.is_aligning()

    asyncio.run(main())


def test_abort_releases_blocked_channels():
    async def main():
        gate = InputGate([(0, "x"), (0, "y")])
        h = BarrierHandler(gate, True)
        gate.put(0, 0, barrier(5), None)
        gate.put(0, 1, "after", None)
        ch, m = gate.poll()
        assert h.on_barrier(ch, m) is None
        assert gate.poll() is None  # blocked
        assert h.abort(5)
        assert gate.poll() == (0, "after")
        # the late barrier of the aborted checkpoint starts nothing
        assert h.on_barrier(1, barrier(5)) is None and not h.is_aligning()

    asyncio.run(main())


def test_direct_trigger_after_inputs_ended():
    async def main():
        gate = InputGate([(0, "x")])
        h = BarrierHandler(gate, True)
        assert h.on_direct_trigger(barrier(4))
        assert not h.on_direct_trigger(barrier(4))
        assert not h.on_direct_trigger(barrier(3))

    asyncio.run(main())


@pytest.mark.parametrize("seed", range(30))
def test_random_interleavings_snapshot_a_consistent_cut(seed):
    """Whatever order the gate hands out messages in, checkpoint n holds exactly the records
    each channel sent before its barrier n."""
    rng = random.Random(seed)
    n_channels = rng.randint(1, 4)
    n_checkpoints = rng.randint(1, 4)
    script, expected = [], {c: set() for c in range(1, n_checkpoints + 1)}
    for ch in range(n_channels):
        msgs, sent = [], []
        for cid in range(1, n_checkpoints + 1):
            for _ in range(rng.randint(0, 5)):
                rec = f"c{ch}r{len(sent)}"
                sent.append(rec)
                msgs.append(rec)
            msgs.append(barrier(cid))
            expected[cid] |= set(sent)
        for _ in range(rng.randint(0, 3)):
            msgs.append(f"c{ch}r{len(sent)}")
            sent.append(msgs[-1])
        script.append(msgs)
    _, taken, _ = run_gate(script, rng=rng)
    assert [cid for cid, _ in taken] == list(range(1, n_checkpoints + 1))
    for cid, before in taken:
        assert before == expected[cid]


def test_alignment_time_runs_from_the_first_barrier_to_the_last():
    async def main() -> tuple[BarrierHandler, InputGate]:
        now = [10.0]
        gate = InputGate([(0, "a"), (0, "b")])
        handler = BarrierHandler(gate, True, clock=lambda: now[0])
        gate.put(0, 0, b"12345", None)
        gate.put(0, 1, barrier(1), None)
        gate.put(1, 0, "a record, not bytes", None)
        assert handler.on_barrier(0, barrier(1)) is None
        now[0] = 10.25  # channel b's barrier comes a quarter of a second later
        assert handler.on_barrier(1, barrier(1)) == barrier(1)
        while gate.poll() is not None:
            pass
        return handler, gate

    handler, gate = asyncio.run(main())
    assert handler.metrics() == {
        "alignments": 1,
        "alignment_ms_last": 250.0,
        "alignment_ms_sum": 250.0,
    }
    assert gate.bytes_taken == 5  # pickled messages count their bytes, once, when taken
