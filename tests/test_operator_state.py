"""Operator list state and its redistribution on rescaling (SEMANTICS §3.2)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.checkpointing.operator_state import (
    EVEN_SPLIT,
    UNION,
    OperatorStateStore,
    redistribute,
)


def test_even_split_and_union_semantics():
    old = [
        {"offsets": (EVEN_SPLIT, [1, 2, 3]), "meta": (UNION, ["a"])},
        {"offsets": (EVEN_SPLIT, [4, 5]), "meta": (UNION, ["b"])},
    ]
    new = redistribute(old, 3)
    assert [s["offsets"][1] for s in new] == [[1, 2], [3, 4], [5]]
    assert all(s["meta"] == (UNION, ["a", "b"]) for s in new)


def test_unchanged_parallelism_returns_each_subtask_its_own_list():
    old = [{"s": (EVEN_SPLIT, [1, 2, 3])}, {"s": (EVEN_SPLIT, [])}]
    assert redistribute(old, 2) == old


def test_extras_rotate_between_named_states():
    old = [{"a": (EVEN_SPLIT, [1, 2, 3, 4]), "b": (EVEN_SPLIT, [5, 6, 7, 8])}]
    new = redistribute(old, 3)
    assert [len(s["a"][1]) for s in new] == [2, 1, 1]
    assert [len(s["b"][1]) for s in new] == [1, 2, 1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(), max_size=12), min_size=1, max_size=5), st.integers(1, 7))
def test_even_split_keeps_every_entry_once_and_balances(parts, p):
    old = [{"s": (EVEN_SPLIT, part)} for part in parts]
    new = redistribute(old, p)
    got = [v for s in new for v in s["s"][1]]
    assert got == [v for part in parts for v in part] or len(parts) == p
    assert sorted(got) == sorted(v for part in parts for v in part)
    sizes = [len(s["s"][1]) for s in new]
    if len(parts) != p:
        assert max(sizes) - min(sizes) <= 1


def test_store_handles_and_restore():
    store = OperatorStateStore()
    assert not store.is_restored
    offsets = store.get_list_state("offsets")
    offsets.add_all([1, 2])
    store.get_union_list_state("meta").add("x")
    snap = store.snapshot()
    restored = OperatorStateStore(snap)
    assert restored.is_restored
    assert restored.get_list_state("offsets").get() == [1, 2]
    assert restored.get_union_list_state("meta").get() == ["x"]
    try:
        restored.get_union_list_state("offsets")
    except ValueError as exc:
        assert "even_split" in str(exc)
    else:
        raise AssertionError("mode mismatch not detected")


def test_checkpointed_function_gets_its_operator_state_before_open():
    from raystream import CheckpointedFunction, MapFunction
    from raystream.operators.stateless import MapOperator
    from raystream.testing import OperatorHarness

    class Buffering(MapFunction, CheckpointedFunction):
        def initialize_state(self, context):
            self.restored = context.is_restored()
            self.seen = context.get_operator_state_store().get_list_state("seen")

        def snapshot_state(self, context):
            pass

        def map(self, value):
            self.seen.add(value)
            return len(self.seen.get())

    op = MapOperator("m", Buffering())
    h = OperatorHarness(op)
    h.process([10, 20, 30])
    assert h.values() == [1, 2, 3]
    assert op.udf.restored is False
    assert op.operator_state.snapshot() == {"seen": ("even_split", [10, 20, 30])}
