"""Routers driven directly with fake senders: where every record and its timestamp goes (no Ray)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.core.keys import key_group_of, subtask_of
from raystream.errors import InvalidKeyError, RaystreamError, UserFunctionError
from raystream.graph.partitioners import (
    BroadcastPartitioner,
    CustomPartitioner,
    ForwardPartitioner,
    GlobalPartitioner,
    KeyGroupPartitioner,
    Partitioner,
    RebalancePartitioner,
    RescalePartitioner,
    ShufflePartitioner,
    rescale_targets,
)
from raystream.runtime.elements import Batch

FAST = settings(max_examples=100, deadline=None)
EDGE = "map -> sink"


class FakeSender:
    """Records every ``add`` call (copies, so later mutation by the caller cannot hide bugs)."""

    def __init__(self):
        self.calls: list[tuple[list, list | None]] = []

    def add(self, values, timestamps):
        assert timestamps is None or len(timestamps) == len(values)
        self.calls.append((list(values), None if timestamps is None else list(timestamps)))

    @property
    def values(self) -> list:
        return [v for vs, _ in self.calls for v in vs]

    @property
    def pairs(self) -> list:
        """(value, timestamp) per record; timestamp None when the call carried none."""
        out = []
        for vs, ts in self.calls:
            out.extend(zip(vs, ts if ts is not None else [None] * len(vs)))
        return out


def senders(n: int) -> list[FakeSender]:
    return [FakeSender() for _ in range(n)]


def make_batches(sizes: list[int], with_ts: bool, offset: int = 0) -> list[Batch]:
    """Batches of consecutive ints; record j has timestamp 1000 + j (so alignment is checkable)."""
    out, j = [], offset
    for size in sizes:
        vals = list(range(j, j + size))
        out.append(Batch(vals, [1000 + v for v in vals] if with_ts else None))
        j += size
    return out


def assert_aligned(sender: FakeSender, with_ts: bool) -> None:
    for v, t in sender.pairs:
        assert t == (1000 + v if with_ts else None)


batch_sizes = st.lists(st.integers(0, 20), max_size=8)


# -- rebalance / rescale ---------------------------------------------------------------------------


@FAST
@given(batch_sizes, st.integers(1, 6), st.integers(0, 10), st.booleans())
def test_rebalance_is_per_record_round_robin_across_batches(sizes, n, producer, with_ts):
    router = RebalancePartitioner().router(producer, n, 128, EDGE)
    outs = senders(n)
    for batch in make_batches(sizes, with_ts):
        router.route(batch, outs)
    total = sum(sizes)
    start = producer % n
    for k, s in enumerate(outs):
        # the j-th record overall goes to (start + j) mod n, in order
        assert s.values == [j for j in range(total) if (start + j) % n == k]
        assert_aligned(s, with_ts)


@FAST
@given(batch_sizes, st.integers(1, 6), st.integers(0, 10), st.booleans())
def test_rescale_round_robin_starts_at_first_target(sizes, n, producer, with_ts):
    router = RescalePartitioner().router(producer, n, 128, EDGE)
    outs = senders(n)
    for batch in make_batches(sizes, with_ts):
        router.route(batch, outs)
    for k, s in enumerate(outs):
        assert s.values == [j for j in range(sum(sizes)) if j % n == k]
        assert_aligned(s, with_ts)


def test_rebalance_reference_small():
    router = RebalancePartitioner().router(1, 3, 128, EDGE)
    outs = senders(3)
    router.route(Batch(["a", "b"]), outs)
    router.route(Batch(["c", "d", "e", "f"]), outs)
    assert [s.values for s in outs] == [["c", "f"], ["a", "d"], ["b", "e"]]


@pytest.mark.parametrize("p_up", range(1, 13))
@pytest.mark.parametrize("p_down", range(1, 13))
def test_rescale_targets_cover_every_consumer(p_up, p_down):
    per_producer = [rescale_targets(i, p_up, p_down) for i in range(p_up)]
    assert RescalePartitioner().targets(0, p_up, p_down) == per_producer[0]
    for targets in per_producer:
        assert targets, "every producer needs at least one consumer"
        assert targets == list(range(targets[0], targets[-1] + 1)), "targets must be contiguous"
        assert all(0 <= t < p_down for t in targets)
    reached = [t for targets in per_producer for t in targets]
    assert set(reached) == set(range(p_down))
    if p_down >= p_up:
        # consumers are split between producers: each is reached exactly once, sizes even
        assert sorted(reached) == list(range(p_down))
        sizes = {len(t) for t in per_producer}
        assert max(sizes) - min(sizes) <= 1
    else:
        # each producer feeds exactly one consumer; consumers share producers evenly
        assert all(len(t) == 1 for t in per_producer)
        fan_in = [reached.count(c) for c in range(p_down)]
        assert max(fan_in) - min(fan_in) <= 1


# -- forward / global / broadcast ------------------------------------------------------------------


@pytest.mark.parametrize("producer", [0, 3])
def test_forward_targets_its_own_index(producer):
    part = ForwardPartitioner()
    assert part.is_forward
    assert part.targets(producer, 4, 4) == [producer]


def test_global_targets_consumer_zero():
    assert GlobalPartitioner().targets(3, 4, 5) == [0]
    assert not GlobalPartitioner().is_forward


@pytest.mark.parametrize("part", [ForwardPartitioner(), GlobalPartitioner()])
@FAST
@given(sizes=batch_sizes, with_ts=st.booleans())
def test_single_target_partitioners_pass_everything_through(part, sizes, with_ts):
    router = part.router(0, 1, 128, EDGE)
    outs = senders(1)
    for batch in make_batches(sizes, with_ts):
        router.route(batch, outs)
    assert outs[0].values == list(range(sum(sizes)))
    assert_aligned(outs[0], with_ts)


@FAST
@given(batch_sizes, st.integers(1, 5), st.booleans())
def test_broadcast_gives_every_sender_everything(sizes, n, with_ts):
    router = BroadcastPartitioner().router(0, n, 128, EDGE)
    outs = senders(n)
    for batch in make_batches(sizes, with_ts):
        router.route(batch, outs)
    for s in outs:
        assert s.values == list(range(sum(sizes)))
        assert_aligned(s, with_ts)


def test_all_to_all_targets_by_default():
    for part in (RebalancePartitioner(), BroadcastPartitioner(), ShufflePartitioner()):
        assert part.targets(1, 3, 4) == [0, 1, 2, 3]


def test_base_partitioner_has_no_router():
    with pytest.raises(TypeError, match="no router"):
        Partitioner().router(0, 1, 128, EDGE)
    assert repr(RebalancePartitioner()) == "REBALANCE"


# -- key groups --------------------------------------------------------------------------------------

keys = st.one_of(
    st.text(max_size=4), st.integers(-50, 50), st.tuples(st.integers(0, 3), st.text(max_size=2))
)


def key_batches(keys_: list, with_ts: bool, chunk: int) -> list[Batch]:
    """Records ``(j, key)``; record j has timestamp 1000 + j."""
    recs = [(j, k) for j, k in enumerate(keys_)]
    return [
        Batch(recs[i : i + chunk], [1000 + j for j, _ in recs[i : i + chunk]] if with_ts else None)
        for i in range(0, len(recs), chunk)
    ]


@FAST
@given(
    st.lists(keys, max_size=40),
    st.integers(1, 6),
    st.sampled_from([6, 7, 16, 128, 1000]),
    st.booleans(),
    st.integers(1, 10),
)
def test_key_group_partitioner_sends_each_key_to_its_owner(keys_, n, max_p, with_ts, chunk):
    router = KeyGroupPartitioner(lambda r: r[1]).router(0, n, max_p, EDGE)
    outs = senders(n)
    for batch in key_batches(keys_, with_ts, chunk):
        router.route(batch, outs)
    for k, s in enumerate(outs):
        assert all(vs for vs, _ in s.calls), "no empty adds"
        indices = [j for j, _ in s.values]
        assert indices == sorted(indices), "order within a channel is kept"
        for (j, key), t in s.pairs:
            assert subtask_of(key_group_of(key, max_p), n, max_p) == k
            assert t == (1000 + j if with_ts else None)
    assert sorted(j for s in outs for j, _ in s.values) == list(range(len(keys_)))


def test_key_group_partitioner_equal_keys_meet():
    router = KeyGroupPartitioner(lambda r: r).router(2, 4, 128, EDGE)
    outs = senders(4)
    router.route(Batch([1, 1.0, True, "x", (1, "x"), (1.0, "x")]), outs)
    where = {}
    for k, s in enumerate(outs):
        for v in s.values:
            where.setdefault(v, set()).add(k)
    assert all(len(targets) == 1 for targets in where.values())


@pytest.mark.parametrize("with_ts", [False, True])
def test_key_selector_error_names_edge_and_record(with_ts):
    def selector(record):
        if record == "bad":
            raise KeyError("missing field")
        return record

    router = KeyGroupPartitioner(selector).router(0, 2, 128, EDGE)
    vals = ["ok", "bad", "ok2"]
    with pytest.raises(UserFunctionError) as info:
        router.route(Batch(vals, [1, 2, 3] if with_ts else None), senders(2))
    err = info.value
    assert EDGE in str(err) and "'bad'" in str(err) and "key selector" in str(err)
    assert "KeyError" in str(err) and "missing field" in str(err)
    assert err.operator == EDGE
    assert err.record == "'bad'"
    assert err.cause_type == "KeyError"
    assert isinstance(err.__cause__, KeyError)


@pytest.mark.parametrize("bad_key", [[1, 2], {"a": 1}, object()])
def test_invalid_key_raises_invalid_key_error_naming_edge(bad_key):
    router = KeyGroupPartitioner(lambda r: r["k"]).router(0, 3, 128, EDGE)
    with pytest.raises(InvalidKeyError) as info:
        router.route(Batch([{"k": "fine"}, {"k": bad_key}]), senders(3))
    assert EDGE in str(info.value)


# -- shuffle / custom ------------------------------------------------------------------------------


@FAST
@given(batch_sizes, st.integers(1, 5), st.integers(0, 5), st.booleans())
def test_shuffle_delivers_everything_once_aligned_and_repeatably(sizes, n, producer, with_ts):
    runs = []
    for _ in range(2):
        router = ShufflePartitioner().router(producer, n, 128, EDGE)
        outs = senders(n)
        for batch in make_batches(sizes, with_ts):
            router.route(batch, outs)
        for s in outs:
            assert_aligned(s, with_ts)
            assert s.values == sorted(s.values)
        assert sorted(v for s in outs for v in s.values) == list(range(sum(sizes)))
        runs.append([s.values for s in outs])
    assert runs[0] == runs[1], "seeded per producer: the same input routes the same way"


@FAST
@given(st.lists(st.integers(0, 1000), max_size=30), st.integers(1, 6), st.booleans())
def test_custom_partitioner_routes_by_user_choice(vals, n, with_ts):
    seen_n = set()

    def part(key, num_partitions):
        seen_n.add(num_partitions)
        return key % num_partitions

    router = CustomPartitioner(part, lambda r: r).router(0, n, 128, EDGE)
    outs = senders(n)
    router.route(Batch(vals, [1000 + v for v in vals] if with_ts else None), outs)
    for k, s in enumerate(outs):
        assert s.values == [v for v in vals if v % n == k]
        assert_aligned(s, with_ts)
    assert seen_n <= {n}


@pytest.mark.parametrize("choice", [3, -1, "0", None, 1.0])
def test_custom_partitioner_out_of_range_names_edge(choice):
    router = CustomPartitioner(lambda k, n: choice, lambda r: r).router(0, 3, 128, EDGE)
    with pytest.raises(RaystreamError) as info:
        router.route(Batch(["rec"]), senders(3))
    msg = str(info.value)
    assert EDGE in msg and "custom partitioner" in msg and repr(choice) in msg
    assert "0..2" in msg


def test_custom_partitioner_error_in_user_function_is_wrapped():
    def part(key, n):
        raise RuntimeError("boom")

    router = CustomPartitioner(part, lambda r: r).router(0, 2, 128, EDGE)
    with pytest.raises(UserFunctionError, match="boom") as info:
        router.route(Batch([7], [1]), senders(2))
    assert info.value.operator == EDGE and info.value.record == "7"
