"""MemoryKeyedStateBackend: keyed state semantics and per-key-group snapshot/restore (no Ray)."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.checkpointing.backends.memory import MemoryKeyedStateBackend
from raystream.core.keys import key_group_of, key_group_range
from raystream.state.descriptors import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    ValueStateDescriptor,
)

MAX_P = 16


class Average:
    """An AggregateFunction: mean of ints, accumulator (sum, count)."""

    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + value, acc[1] + 1)

    def get_result(self, acc):
        return acc[0] / acc[1]

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


@pytest.fixture
def backend() -> MemoryKeyedStateBackend:
    return MemoryKeyedStateBackend(MAX_P)


# -- state semantics -----------------------------------------------------------------------------


def test_value_state_is_scoped_to_the_current_key(backend):
    count = backend.value_state(ValueStateDescriptor("count"))
    backend.set_current_key("a")
    assert count.value() is None
    count.update(1)
    backend.set_current_key("b")
    assert count.value() is None
    count.update(10)
    backend.set_current_key("a")
    assert count.value() == 1
    count.update(2)
    backend.set_current_key("b")
    assert count.value() == 10
    count.clear()
    assert count.value() is None
    backend.set_current_key("a")
    assert count.value() == 2
    count.update(None)  # update(None) clears
    assert count.value() is None
    assert backend.num_entries() == 0


def test_falsy_values_are_kept(backend):
    v = backend.value_state(ValueStateDescriptor("v"))
    for key, value in enumerate([0, "", False, [], 0.0]):
        backend.set_current_key(key)
        v.update(value)
    for key, value in enumerate([0, "", False, [], 0.0]):
        backend.set_current_key(key)
        assert v.value() == value and type(v.value()) is type(value)


def test_two_handles_on_one_name_share_state(backend):
    a = backend.value_state(ValueStateDescriptor("shared"))
    b = backend.value_state(ValueStateDescriptor("shared"))
    backend.set_current_key(1)
    a.update("x")
    assert b.value() == "x"


def test_one_name_cannot_be_two_kinds_of_state(backend):
    backend.value_state(ValueStateDescriptor("s"))
    with pytest.raises(ValueError, match="already registered as value state"):
        backend.list_state(ListStateDescriptor("s"))


def test_list_state(backend):
    items = backend.list_state(ListStateDescriptor("items"))
    backend.set_current_key("k")
    assert items.get() == []
    items.add(1)
    items.add_all([2, 3])
    items.add_all([])
    assert items.get() == [1, 2, 3]
    got = items.get()
    got.append(99)  # get() returns a copy
    assert items.get() == [1, 2, 3]
    backend.set_current_key("other")
    assert items.get() == []
    items.update([7])
    backend.set_current_key("k")
    items.update([4, 5])
    assert items.get() == [4, 5]
    items.update([])  # an empty update clears
    assert items.get() == []
    backend.set_current_key("other")
    assert items.get() == [7]
    items.clear()
    assert items.get() == [] and backend.num_entries() == 0


def test_list_state_rejects_none(backend):
    items = backend.list_state(ListStateDescriptor("items"))
    backend.set_current_key("k")
    items.add(1)
    with pytest.raises(ValueError, match="None"):
        items.add(None)
    with pytest.raises(ValueError, match="None"):
        items.add_all([2, None])
    with pytest.raises(ValueError, match="None"):
        items.update([None])
    assert items.get() == [1], "a rejected call changes nothing"


def test_map_state(backend):
    m = backend.map_state(MapStateDescriptor("m"))
    backend.set_current_key("k")
    assert m.is_empty() and m.get("x") is None and not m.contains("x")
    assert list(m.items()) == [] and list(m.keys()) == [] and list(m.values()) == []
    m.put("x", 1)
    m.put_all({"y": 2, "z": 3})
    m.put_all({})
    m.put("x", 10)
    assert not m.is_empty()
    assert m.get("x") == 10 and m.contains("y") and not m.contains("w")
    assert dict(m.items()) == {"x": 10, "y": 2, "z": 3}
    assert sorted(m.keys()) == ["x", "y", "z"] and sorted(m) == ["x", "y", "z"]
    assert sorted(m.values()) == [2, 3, 10]
    m.remove("y")
    m.remove("not there")
    assert dict(m.items()) == {"x": 10, "z": 3}
    # iterators are snapshots: mutating while iterating is safe
    for key in m.keys():
        m.remove(key)
    assert m.is_empty()
    assert backend.num_entries() == 0, "an emptied map leaves no entry behind"
    m.put("a", None)
    assert m.contains("a") and m.get("a") is None
    backend.set_current_key("other")
    assert m.is_empty()
    m.put("b", 2)
    backend.set_current_key("k")
    m.clear()
    assert m.is_empty()
    backend.set_current_key("other")
    assert dict(m.items()) == {"b": 2}


def test_reducing_state(backend):
    total = backend.reducing_state(ReducingStateDescriptor("sum", lambda a, b: a + b))
    backend.set_current_key("a")
    assert total.get() is None
    total.add(0)  # the first value is stored as is, even a falsy one
    assert total.get() == 0
    total.add(5)
    total.add(7)
    backend.set_current_key("b")
    total.add(100)
    backend.set_current_key("a")
    assert total.get() == 12
    total.clear()
    assert total.get() is None
    backend.set_current_key("b")
    assert total.get() == 100


def test_reducing_state_applies_the_function_in_order(backend):
    seq = backend.reducing_state(ReducingStateDescriptor("seq", lambda a, b: f"{a}{b}"))
    backend.set_current_key(1)
    for ch in "abc":
        seq.add(ch)
    assert seq.get() == "abc"


def test_aggregating_state(backend):
    avg = backend.aggregating_state(AggregatingStateDescriptor("avg", Average()))
    backend.set_current_key("a")
    assert avg.get() is None
    avg.add(1)
    avg.add(2)
    backend.set_current_key("b")
    avg.add(10)
    backend.set_current_key("a")
    assert avg.get() == 1.5
    avg.clear()
    assert avg.get() is None
    avg.add(4)
    assert avg.get() == 4.0
    backend.set_current_key("b")
    assert avg.get() == 10.0


def test_aggregating_descriptor_requires_an_aggregate_function():
    with pytest.raises(TypeError, match="create_accumulator"):
        AggregatingStateDescriptor("avg", lambda a, b: a)


def test_raw_table_api(backend):
    t = backend.table("raw")
    t.put("k", 1)
    assert t.get("k") == 1 and t.get("missing", "d") == "d"
    t.remove("k")
    t.remove("k")  # removing twice is fine
    assert t.get("k") is None
    assert backend.table("raw") is t


def test_dispose_drops_everything(backend):
    v = backend.value_state(ValueStateDescriptor("v"))
    backend.set_current_key(1)
    v.update(1)
    backend.dispose()
    assert backend.num_entries() == 0 and backend.snapshot() == {}


# -- snapshots -------------------------------------------------------------------------------------


def _fill(backend: MemoryKeyedStateBackend, data: dict[str, int]) -> None:
    value = backend.value_state(ValueStateDescriptor("value"))
    items = backend.list_state(ListStateDescriptor("items"))
    m = backend.map_state(MapStateDescriptor("map"))
    total = backend.reducing_state(ReducingStateDescriptor("sum", lambda a, b: a + b))
    avg = backend.aggregating_state(AggregatingStateDescriptor("avg", Average()))
    for key, n in data.items():
        backend.set_current_key(key)
        value.update(n)
        items.add_all([n, n + 1])
        m.put("n", n)
        total.add(n)
        total.add(1)
        avg.add(n)
        avg.add(n + 2)


def _read(backend: MemoryKeyedStateBackend, key: str) -> tuple | None:
    """Every state of ``key`` as a tuple, or None when the key has no state at all."""
    value = backend.value_state(ValueStateDescriptor("value"))
    items = backend.list_state(ListStateDescriptor("items"))
    m = backend.map_state(MapStateDescriptor("map"))
    total = backend.reducing_state(ReducingStateDescriptor("sum", lambda a, b: a + b))
    avg = backend.aggregating_state(AggregatingStateDescriptor("avg", Average()))
    backend.set_current_key(key)
    got = (value.value(), items.get(), dict(m.items()), total.get(), avg.get())
    return None if got == (None, [], {}, None, None) else got


def _expected(n: int) -> tuple:
    return (n, [n, n + 1], {"n": n}, n + 1, n + 1.0)


def test_snapshot_is_bytes_per_key_group_holding_state(backend):
    data = {f"key{i}": i for i in range(40)}
    _fill(backend, data)
    snap = backend.snapshot()
    assert set(snap) == {key_group_of(k, MAX_P) for k in data}
    assert all(type(kg) is int and type(blob) is bytes for kg, blob in snap.items())
    for kg, blob in snap.items():
        assert pickle.loads(blob)[0] == kg
    assert MemoryKeyedStateBackend(MAX_P).snapshot() == {}


def test_snapshot_is_a_copy_not_a_view(backend):
    items = backend.list_state(ListStateDescriptor("items"))
    backend.set_current_key("k")
    items.add(1)
    snap = backend.snapshot()
    items.add(2)
    restored = MemoryKeyedStateBackend(MAX_P)
    restored.restore(snap.values())
    assert _read_list(restored, "k") == [1]


def _read_list(backend, key):
    backend.set_current_key(key)
    return backend.list_state(ListStateDescriptor("items")).get()


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(st.text(max_size=6), st.integers(-1000, 1000), max_size=30),
    st.integers(1, 5),
    st.data(),
)
def test_restoring_a_subset_of_key_groups_gives_exactly_those_keys(data, p, draw):
    full = MemoryKeyedStateBackend(MAX_P)
    _fill(full, data)
    snap = full.snapshot()
    subtask = draw.draw(st.integers(0, p - 1))
    owned = key_group_range(subtask, p, MAX_P)

    part = MemoryKeyedStateBackend(MAX_P, owned)
    part.restore(blob for kg, blob in snap.items() if kg in owned)

    mine = {k: n for k, n in data.items() if key_group_of(k, MAX_P) in owned}
    for key, n in data.items():
        assert _read(part, key) == (_expected(n) if key in mine else None)
    assert part.num_entries() == 5 * len(mine)
    # a snapshot of the restored share holds the same content as the original key groups
    again = part.snapshot()
    assert again.keys() == {kg for kg in snap if kg in owned}
    for kg, blob in again.items():
        assert pickle.loads(blob) == pickle.loads(snap[kg])


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers(), max_size=20), st.integers(1, 4))
def test_all_shares_together_restore_everything(data, p):
    full = MemoryKeyedStateBackend(MAX_P)
    _fill(full, data)
    snap = full.snapshot()
    parts = []
    for i in range(p):
        owned = key_group_range(i, p, MAX_P)
        part = MemoryKeyedStateBackend(MAX_P, owned)
        part.restore(blob for kg, blob in snap.items() if kg in owned)
        parts.append(part)
    assert sum(part.num_entries() for part in parts) == full.num_entries()
    for key, n in data.items():
        owners = [i for i, part in enumerate(parts) if _read(part, key) is not None]
        assert len(owners) == 1
        assert _read(parts[owners[0]], key) == _expected(n)


def test_restoring_a_key_group_not_owned_raises():
    full = MemoryKeyedStateBackend(MAX_P)
    _fill(full, {f"k{i}": i for i in range(50)})
    snap = full.snapshot()
    owned = key_group_range(0, 2, MAX_P)
    foreign = next(kg for kg in snap if kg not in owned)
    part = MemoryKeyedStateBackend(MAX_P, owned)
    with pytest.raises(ValueError, match=f"key group {foreign} is not owned"):
        part.restore([snap[foreign]])
