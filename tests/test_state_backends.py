"""Keyed state backends: one conformance suite run against every backend kind (no Ray).

Covers every state kind, namespaces and their merging, TTL (SEMANTICS §3.3, plus event-time TTL),
raw tables, per-key-group snapshot/restore (also across backend kinds), and a differential test
that drives the memory and the LMDB backend with the same random operations.
"""

from __future__ import annotations

import os
import pickle
import signal
import stat
import subprocess
import sys
from contextlib import contextmanager
from datetime import timedelta
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raystream.checkpointing import (
    HashMapStateBackend,
    LmdbKeyedStateBackend,
    LmdbStateBackend,
    MemoryKeyedStateBackend,
    default_dirs,
)
from raystream.core.keys import key_group_of, key_group_range
from raystream.core.time import MIN_TS
from raystream.errors import InvalidKeyError
from raystream.state.backend import decode_key_group
from raystream.state.descriptors import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    ValueStateDescriptor,
)
from raystream.state.ttl import StateTtlConfig

MAX_P = 16
KINDS = ["memory", "lmdb"]
SMALL_MAP = 1 << 30  # tests open many environments; 1 TiB each would exhaust address space


class FakeTime:
    """The time provider an operator would supply, advanced by hand."""

    def __init__(self) -> None:
        self.now = 0
        self.watermark = MIN_TS
        self.element_ts: int | None = None

    def processing_time_ms(self) -> int:
        return self.now

    def current_watermark(self) -> int:
        return self.watermark

    def element_timestamp(self) -> int | None:
        return self.element_ts


class TimeWindow(NamedTuple):
    start: int
    end: int


class GlobalWindow:
    """A singleton namespace that ``encode_key`` does not know (LMDB pickles it)."""

    _instance: GlobalWindow | None = None

    def __new__(cls) -> GlobalWindow:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __reduce__(self):
        return (GlobalWindow, ())


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


class CountNoMerge:
    def create_accumulator(self):
        return 0

    def add(self, value, acc):
        return acc + 1

    def get_result(self, acc):
        return acc


def new_backend(kind: str, key_groups=None, time=None, directory=None, **kw):
    if kind == "memory":
        return MemoryKeyedStateBackend(MAX_P, key_groups, time)
    return LmdbKeyedStateBackend(
        MAX_P, key_groups, time, directory=directory, map_size=kw.pop("map_size", SMALL_MAP), **kw
    )


@pytest.fixture(params=KINDS)
def make(request, tmp_path):
    """``make(key_groups=None, time=None)`` builds a backend of the parametrized kind."""
    created = []

    def make(key_groups=None, time=None, **kw):
        backend = new_backend(request.param, key_groups, time, tmp_path, **kw)
        created.append(backend)
        return backend

    make.kind = request.param
    yield make
    for backend in created:
        backend.dispose()


@pytest.fixture
def clock():
    return FakeTime()


@pytest.fixture
def backend(make, clock):
    return make(time=clock)


@contextmanager
def backends(kind, *key_groups_list, time=None):
    made = [new_backend(kind, kgs, time) for kgs in key_groups_list]
    try:
        yield made
    finally:
        for b in made:
            b.dispose()


def canonical(snapshot: dict[int, bytes]) -> dict:
    """A snapshot's content independent of entry order (backends order entries differently)."""
    out = {}
    for kg, blob in snapshot.items():
        got_kg, states = decode_key_group(blob)
        assert got_kg == kg
        out[kg] = {
            name: (kind, ns, ttl, sorted(entries, key=lambda e: repr(e[:2])))
            for name, (kind, ns, ttl, entries) in states.items()
        }
    return out


def ttl_config(ttl=10, *, read=False, expired=False, event=False, background=False, **cleanup):
    b = StateTtlConfig.new_builder(ttl)
    if read:
        b.set_update_type(StateTtlConfig.UpdateType.OnReadAndWrite)
    if expired:
        b.set_state_visibility(StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp)
    if event:
        b.use_event_time()
    if not background:
        b.disable_cleanup_in_background()
    if cleanup.get("full_snapshot"):
        b.cleanup_full_snapshot()
    if "incremental" in cleanup:
        b.cleanup_incrementally(*cleanup["incremental"])
    return b.build()


def with_ttl(desc, config):
    desc.enable_time_to_live(config)
    return desc


# -- state kinds ----------------------------------------------------------------------------------


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
    backend.set_current_key("b")
    count.clear()
    assert count.value() is None
    backend.set_current_key("a")
    count.update(None)  # update(None) clears
    assert count.value() is None
    assert backend.num_entries() == 0


def test_falsy_values_are_kept(backend):
    v = backend.value_state(ValueStateDescriptor("v"))
    values = [0, "", False, [], 0.0]
    for key, value in enumerate(values):
        backend.set_current_key(key)
        v.update(value)
    for key, value in enumerate(values):
        backend.set_current_key(key)
        assert v.value() == value and type(v.value()) is type(value)


def test_two_handles_on_one_name_share_state_and_kinds_do_not_mix(backend):
    a = backend.value_state(ValueStateDescriptor("shared"))
    b = backend.value_state(ValueStateDescriptor("shared"))
    backend.set_current_key(1)
    a.update("x")
    assert b.value() == "x"
    with pytest.raises(ValueError, match="already registered as value state"):
        backend.list_state(ListStateDescriptor("shared"))
    with pytest.raises(ValueError, match="already registered"):
        backend.table("shared")


def test_list_state(backend):
    items = backend.list_state(ListStateDescriptor("items"))
    backend.set_current_key("k")
    assert items.get() == []
    items.add(1)
    items.add_all([2, 3])
    items.add_all([])
    got = items.get()
    assert got == [1, 2, 3]
    got.append(99)  # get() returns a copy
    assert items.get() == [1, 2, 3]
    backend.set_current_key("other")
    items.update([7])
    backend.set_current_key("k")
    items.update([4, 5])
    assert items.get() == [4, 5]
    items.add(6)
    assert items.get() == [4, 5, 6]
    items.update([])  # an empty update clears
    assert items.get() == []
    with pytest.raises(ValueError, match="None"):
        items.add(None)
    with pytest.raises(ValueError, match="None"):
        items.add_all([2, None])
    with pytest.raises(ValueError, match="None"):
        items.update([None])
    backend.set_current_key("other")
    assert items.get() == [7]
    items.clear()
    assert items.get() == [] and backend.num_entries() == 0


def test_list_state_keeps_insertion_order_over_many_adds(backend):
    items = backend.list_state(ListStateDescriptor("items"))
    backend.set_current_key("k")
    for i in range(300):
        items.add(i)
    assert items.get() == list(range(300))
    assert backend.num_entries() == 1


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
    for key in m.keys():  # iterators are snapshots: mutating while iterating is safe
        m.remove(key)
    assert m.is_empty()
    assert backend.num_entries() == 0, "an emptied map leaves no entry behind"
    m.put("a", None)
    assert m.contains("a") and m.get("a") is None
    m.put((1, "t"), "tuple key")
    assert m.get((1, "t")) == "tuple key"
    backend.set_current_key("other")
    assert m.is_empty()
    m.put("b", 2)
    backend.set_current_key("k")
    m.clear()
    assert m.is_empty()
    backend.set_current_key("other")
    assert dict(m.items()) == {"b": 2}
    assert backend.num_entries() == 1


def test_reducing_state(backend):
    total = backend.reducing_state(ReducingStateDescriptor("sum", lambda a, b: a + b))
    seq = backend.reducing_state(ReducingStateDescriptor("seq", lambda a, b: f"{a}{b}"))
    backend.set_current_key("a")
    assert total.get() is None
    total.add(0)  # the first value is stored as is, even a falsy one
    assert total.get() == 0
    total.add(5)
    total.add(7)
    for ch in "abc":
        seq.add(ch)
    assert seq.get() == "abc"
    backend.set_current_key("b")
    total.add(100)
    backend.set_current_key("a")
    assert total.get() == 12
    total.clear()
    assert total.get() is None
    backend.set_current_key("b")
    assert total.get() == 100


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


def test_equal_keys_hit_the_same_entry(backend):
    v = backend.value_state(ValueStateDescriptor("v"))
    m = backend.map_state(MapStateDescriptor("m"))
    t = backend.table("raw")
    backend.set_current_key(1)
    v.update("one")
    m.put(1, "int")
    m.put(1.0, "float")
    m.put(True, "bool")
    t.put(1, "raw")
    for same in (1, 1.0, True):
        backend.set_current_key(same)
        assert v.value() == "one"
        assert dict(m.items()) == {1: "bool"} and m.get(same) == "bool"
        assert t.get(same) == "raw"
    w = backend.value_state(ValueStateDescriptor("w"), namespace=TimeWindow(0, 10))
    w.update("window")
    assert backend.value_state(ValueStateDescriptor("w"), namespace=(0, 10)).value() == "window"
    assert backend.num_entries() == 4


def test_raw_table_api(backend):
    t = backend.table("raw")
    t.put("k", 1)
    assert t.get("k") == 1 and t.get("missing", "d") == "d" and t.get("missing") is None
    t.put("k", 0)
    assert t.get("k", "d") == 0
    t.remove("k")
    t.remove("k")  # removing twice is fine
    assert t.get("k") is None
    assert backend.table("raw") is t
    with pytest.raises(ValueError, match="unknown state kind"):
        backend.table("other", "bogus")


def test_namespaced_raw_table_snapshots_by_the_key_part(make):
    full = make()
    t = full.table("win", namespaced=True)
    keys = [f"k{i}" for i in range(30)]
    for key in keys:
        t.put((key, TimeWindow(0, 10)), key + "a")
        t.put((key, TimeWindow(10, 20)), key + "b")
    assert t.get(("k1", TimeWindow(0, 10))) == "k1a" and t.get(("k1", (10, 20))) == "k1b"
    snap = full.snapshot()
    assert set(snap) == {key_group_of(k, MAX_P) for k in keys}
    owned = key_group_range(1, 2, MAX_P)
    part = make(owned)
    part.restore(blob for kg, blob in snap.items() if kg in owned)
    pt = part.table("win", namespaced=True)
    for key in keys:
        mine = key_group_of(key, MAX_P) in owned
        assert pt.get((key, TimeWindow(10, 20))) == (key + "b" if mine else None)


def test_keys_lists_the_keys_holding_a_state(backend):
    desc = ListStateDescriptor("l")
    raw = backend.table("raw")
    for i in range(40):
        backend.set_current_key(i)
        backend.list_state(desc).add_all([i, i])
        if i % 2:
            backend.list_state(desc, namespace=TimeWindow(0, 10)).add(i)
        raw.put(f"r{i}", i)
    assert sorted(backend.keys(desc)) == list(range(40))
    assert sorted(backend.keys("l", TimeWindow(0, 10))) == list(range(1, 40, 2))
    assert sorted(backend.keys("raw")) == sorted(f"r{i}" for i in range(40))
    assert backend.keys("unknown") == []
    for key in backend.keys(desc):  # a list: changing state while walking it is fine
        backend.set_current_key(key)
        backend.list_state(desc).clear()
    assert backend.keys(desc) == []


def test_dispose_drops_everything(make):
    backend = make()
    v = backend.value_state(ValueStateDescriptor("v"))
    backend.set_current_key(1)
    v.update(1)
    path = getattr(backend, "path", None)
    backend.dispose()
    backend.dispose()  # idempotent
    assert backend.num_entries() == 0 and backend.snapshot() == {}
    if path is not None:
        assert not os.path.exists(path)


# -- namespaces ------------------------------------------------------------------------------------


def test_namespaces_scope_state_within_a_key(backend):
    desc = ListStateDescriptor("buffer")
    w1, w2 = TimeWindow(0, 10), TimeWindow(10, 20)
    in_w1 = backend.list_state(desc, namespace=w1)
    in_w2 = backend.list_state(desc, namespace=w2)
    void = backend.list_state(desc)
    glob = backend.list_state(desc, namespace=GlobalWindow())
    backend.set_current_key("k")
    in_w1.add("a")
    in_w2.add("b")
    void.add("c")
    glob.add("g")
    assert (in_w1.get(), in_w2.get(), void.get(), glob.get()) == (["a"], ["b"], ["c"], ["g"])
    backend.set_current_key("other")
    assert in_w1.get() == [] and glob.get() == []
    backend.set_current_key("k")
    in_w1.set_namespace(w2)
    assert in_w1.namespace == w2 and in_w1.get() == ["b"]
    in_w1.clear()
    assert in_w2.get() == [] and void.get() == ["c"] and glob.get() == ["g"]
    in_w1.set_namespace(w1)
    assert in_w1.get() == ["a"]
    assert backend.num_entries() == 3


def test_namespaces_survive_snapshot_and_restore(make):
    src = make()
    desc = ReducingStateDescriptor("sum", lambda a, b: a + b)
    handle = src.reducing_state(desc, namespace=TimeWindow(0, 10))
    for i in range(20):
        src.set_current_key(i)
        for ns in (TimeWindow(0, 10), TimeWindow(5, 15), GlobalWindow(), None, "s", 3):
            handle.set_namespace(ns)
            handle.add(i)
    dst = make()
    dst.restore(src.snapshot().values())
    assert dst.num_entries() == 20 * 6
    _, states = decode_key_group(next(iter(dst.snapshot().values())))
    namespaces = {ns for _, ns, _ in states["sum"][3]}
    assert TimeWindow(0, 10) in namespaces and GlobalWindow() in namespaces
    assert any(type(ns) is TimeWindow for ns in namespaces)
    again = dst.reducing_state(desc, namespace=GlobalWindow())
    dst.set_current_key(7)
    assert again.get() == 7


def test_merge_namespaces(backend):
    w1, w2, w3, merged = (TimeWindow(i, i + 5) for i in (0, 3, 6, 0))
    merged = TimeWindow(0, 11)
    items = ListStateDescriptor("items")
    total = ReducingStateDescriptor("total", lambda a, b: a + b)
    avg = AggregatingStateDescriptor("avg", Average())
    backend.set_current_key("k")
    for ns, values in ((w1, [1, 2]), (w2, [3]), (w3, [4, 5])):
        backend.list_state(items, ns).add_all(values)
        for v in values:
            backend.reducing_state(total, ns).add(v)
            backend.aggregating_state(avg, ns).add(v)
    backend.set_current_key("untouched")
    backend.list_state(items, w1).add(99)
    backend.set_current_key("k")
    for desc in (items, total, avg):
        backend.merge_namespaces(desc, merged, [w1, w2, w3])
    assert sorted(backend.list_state(items, merged).get()) == [1, 2, 3, 4, 5]
    assert backend.reducing_state(total, merged).get() == 15
    assert backend.aggregating_state(avg, merged).get() == 3.0
    for ns in (w1, w2, w3):
        assert backend.list_state(items, ns).get() == []
        assert backend.reducing_state(total, ns).get() is None
    # merging into a namespace that holds state keeps it; a source equal to the target is skipped
    backend.reducing_state(total, w1).add(100)
    backend.merge_namespaces(total, merged, [w1, merged, w2])
    assert backend.reducing_state(total, merged).get() == 115
    backend.merge_namespaces(items, merged, [])
    backend.set_current_key("untouched")
    assert backend.list_state(items, w1).get() == [99]
    assert backend.num_entries() == 4


def test_merge_namespaces_order_is_target_then_sources(backend):
    concat = ReducingStateDescriptor("concat", lambda a, b: a + b)
    backend.set_current_key("k")
    for ns, s in (("t", "T"), ("a", "A"), ("b", "B")):
        backend.reducing_state(concat, ns).add(s)
    backend.merge_namespaces(concat, "t", ["a", "b"])
    assert backend.reducing_state(concat, "t").get() == "TAB"


def test_merge_namespaces_rejects_what_cannot_merge(backend):
    backend.set_current_key("k")
    with pytest.raises(TypeError, match="value state"):
        backend.merge_namespaces(ValueStateDescriptor("v"), 1, [2])
    with pytest.raises(TypeError, match="map state"):
        backend.merge_namespaces(MapStateDescriptor("m"), 1, [2])
    with pytest.raises(TypeError, match="no merge"):
        backend.merge_namespaces(AggregatingStateDescriptor("c", CountNoMerge()), 1, [2])
    with pytest.raises(TypeError, match="namespaced"):
        backend.merge_namespaces(backend.table("plain"), 1, [2], merge_fn=max)
    win = backend.table("win", namespaced=True)
    with pytest.raises(TypeError, match="merge_fn"):
        backend.merge_namespaces(win, 1, [2])
    win.put(("k", 1), 5)
    win.put(("k", 2), 7)
    win.put(("k", 3), 6)
    backend.merge_namespaces(win, 1, [2, 3], merge_fn=max)
    assert (win.get(("k", 1)), win.get(("k", 2)), win.get(("k", 3))) == (7, None, None)


# -- TTL -------------------------------------------------------------------------------------------


def test_ttl_config_builder():
    c = (
        StateTtlConfig.new_builder(timedelta(seconds=2))
        .set_update_type(StateTtlConfig.UpdateType.OnReadAndWrite)
        .set_state_visibility(StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp)
        .use_event_time()
        .cleanup_full_snapshot()
        .cleanup_incrementally(7, run_per_record=True)
        .build()
    )
    assert c.ttl_ms == 2000 and c.get_update_type() is StateTtlConfig.UpdateType.OnReadAndWrite
    assert c.time_characteristic is StateTtlConfig.TtlTimeCharacteristic.EventTime
    assert c.cleanup_full_snapshot and c.incremental_cleanup.cleanup_size == 7
    default = StateTtlConfig.new_builder(5).build()
    assert default.update_type is StateTtlConfig.UpdateType.OnCreateAndWrite
    assert default.state_visibility is StateTtlConfig.StateVisibility.NeverReturnExpired
    assert default.time_characteristic is StateTtlConfig.TtlTimeCharacteristic.ProcessingTime
    assert default.effective_incremental_cleanup().cleanup_size == 5
    off = StateTtlConfig.new_builder(5).disable_cleanup_in_background().build()
    assert off.effective_incremental_cleanup() is None
    assert pickle.loads(pickle.dumps(c)) == c
    for bad in (0, -1, "1s"):
        with pytest.raises((ValueError, TypeError)):
            StateTtlConfig.new_builder(bad)
    with pytest.raises(ValueError, match="positive"):
        StateTtlConfig.new_builder(5).cleanup_incrementally(0)
    with pytest.raises(TypeError, match="StateTtlConfig"):
        ValueStateDescriptor("v").enable_time_to_live(10)
    d = ValueStateDescriptor("v")
    d.enable_time_to_live(c)
    assert d.ttl_config is c and d == ValueStateDescriptor("v") and hash(d)


def test_value_expires_after_ttl_and_reading_removes_it(backend, clock):
    v = backend.value_state(with_ttl(ValueStateDescriptor("v"), ttl_config(10)))
    backend.set_current_key("k")
    clock.now = 100
    v.update(1)
    clock.now = 109
    assert v.value() == 1
    assert backend.num_entries() == 1
    clock.now = 110  # stamp + ttl <= now: expired
    assert backend.num_entries() == 1, "expired but not yet cleaned up"
    assert v.value() is None
    assert backend.num_entries() == 0, "the read removed it"
    v.update(2)
    clock.now = 115
    assert v.value() == 2


def test_on_create_and_write_versus_on_read_and_write(make, clock):
    for read, alive_at_112 in ((False, False), (True, True)):
        backend = make(time=clock)
        v = backend.value_state(with_ttl(ValueStateDescriptor("v"), ttl_config(10, read=read)))
        backend.set_current_key("k")
        clock.now = 100
        v.update("x")
        clock.now = 105
        assert v.value() == "x"  # refreshes the stamp to 105 only with OnReadAndWrite
        clock.now = 112
        assert (v.value() == "x") is alive_at_112
        if read:
            clock.now = 121
            assert v.value() == "x"
            clock.now = 122 + 10
            assert v.value() is None


def test_return_expired_if_not_cleaned_up_returns_it_once(backend, clock):
    never = backend.value_state(with_ttl(ValueStateDescriptor("never"), ttl_config(10)))
    once = backend.value_state(with_ttl(ValueStateDescriptor("once"), ttl_config(10, expired=True)))
    backend.set_current_key("k")
    never.update(1)
    once.update(2)
    clock.now = 50
    assert never.value() is None
    assert once.value() == 2, "expired, still stored: returned"
    assert once.value() is None, "and removed by that read"
    assert backend.num_entries() == 0


def test_list_state_expires_per_element(backend, clock):
    items = backend.list_state(with_ttl(ListStateDescriptor("items"), ttl_config(10)))
    backend.set_current_key("k")
    items.add("a")
    clock.now = 5
    items.add_all(["b", "c"])
    clock.now = 10
    assert items.get() == ["b", "c"]
    items.add("d")
    clock.now = 15
    assert items.get() == ["d"]
    clock.now = 20
    assert items.get() == [] and backend.num_entries() == 0
    items.update(["e", "f"])
    clock.now = 29
    assert items.get() == ["e", "f"]


def test_list_state_return_expired_and_refresh_on_read(backend, clock):
    cfg = ttl_config(10, read=True, expired=True)
    items = backend.list_state(with_ttl(ListStateDescriptor("items"), cfg))
    backend.set_current_key("k")
    items.add("a")
    clock.now = 8
    items.add("b")
    clock.now = 12
    assert items.get() == ["a", "b"], "a expired but is returned once; b refreshed to 12"
    assert items.get() == ["b"]
    clock.now = 21
    assert items.get() == ["b"]
    clock.now = 40
    assert items.get() == ["b"] and items.get() == []


def test_map_state_expires_per_entry(backend, clock):
    m = backend.map_state(with_ttl(MapStateDescriptor("m"), ttl_config(10)))
    backend.set_current_key("k")
    m.put("x", 1)
    clock.now = 5
    m.put_all({"y": 2, "z": 3})
    clock.now = 10
    assert not m.contains("x") and m.get("x") is None
    assert dict(m.items()) == {"y": 2, "z": 3}
    assert sorted(m.keys()) == ["y", "z"] and sorted(m.values()) == [2, 3]
    m.put("y", 20)  # a write refreshes the entry
    clock.now = 15
    assert dict(m.items()) == {"y": 20} and not m.is_empty()
    clock.now = 30
    assert m.is_empty() and backend.num_entries() == 0


def test_map_state_return_expired_and_refresh_on_read(backend, clock):
    m = backend.map_state(
        with_ttl(MapStateDescriptor("m"), ttl_config(10, read=True, expired=True))
    )
    backend.set_current_key("k")
    m.put("x", 1)
    m.put("y", 2)
    clock.now = 5
    assert m.get("y") == 2  # refreshed to 5
    clock.now = 12
    assert m.contains("x"), "expired, returned once"
    assert not m.contains("x")
    assert dict(m.items()) == {"y": 2}  # refreshed to 12
    clock.now = 30
    assert not m.is_empty(), "expired entries still stored count once"
    assert m.is_empty()


def test_reducing_and_aggregating_state_drop_an_expired_aggregate(backend, clock):
    total = backend.reducing_state(
        with_ttl(ReducingStateDescriptor("sum", lambda a, b: a + b), ttl_config(10, expired=True))
    )
    avg = backend.aggregating_state(
        with_ttl(AggregatingStateDescriptor("avg", Average()), ttl_config(10))
    )
    backend.set_current_key("k")
    for v in (1, 2):
        total.add(v)
        avg.add(v)
    clock.now = 5
    total.add(3)
    avg.add(3)  # refreshed to 5
    clock.now = 14
    assert total.get() == 6 and avg.get() == 2.0
    clock.now = 15
    total.add(10)
    avg.add(10)
    assert total.get() == 10 and avg.get() == 10.0, "a write starts over after expiry"


def test_event_time_ttl_stamps_with_record_time_and_expires_by_watermark(backend, clock):
    v = backend.value_state(with_ttl(ValueStateDescriptor("v"), ttl_config(10, event=True)))
    backend.set_current_key("k")
    clock.now = 10**9  # processing time plays no part
    clock.element_ts = 100
    v.update("a")
    clock.element_ts = 50  # a late record does not move the stamp back
    v.update("b")
    clock.watermark = 109
    assert v.value() == "b"
    clock.watermark = 110
    assert v.value() is None
    clock.element_ts = None  # no record timestamp: stamped with the watermark
    clock.watermark = 200
    v.update("c")
    clock.watermark = 209
    assert v.value() == "c"
    clock.watermark = 210
    assert v.value() is None


def test_event_time_ttl_per_list_element(backend, clock):
    items = backend.list_state(with_ttl(ListStateDescriptor("l"), ttl_config(10, event=True)))
    backend.set_current_key("k")
    for ts in (5, 1, 9):
        clock.element_ts = ts
        items.add(ts)
    clock.watermark = 11
    assert items.get() == [5, 9]


def test_full_snapshot_cleanup_leaves_expired_values_out_of_snapshots(make, clock):
    for full_snapshot in (False, True):
        backend = make(time=clock)
        clock.now = 0
        cfg = ttl_config(10, full_snapshot=full_snapshot)
        v = backend.value_state(with_ttl(ValueStateDescriptor("v"), cfg))
        items = backend.list_state(with_ttl(ListStateDescriptor("l"), cfg))
        for key, at in (("old", 0), ("new", 8)):
            clock.now = at
            backend.set_current_key(key)
            v.update(at)
            items.add(at)
        backend.set_current_key("new")
        clock.now = 9
        items.add(9)
        clock.now = 12
        snap = backend.snapshot()
        assert backend.num_entries() == 4, "the working state keeps expired values"
        restored = make(time=clock)
        restored.restore(snap.values())
        assert restored.num_entries() == (2 if full_snapshot else 4)
        rv = restored.value_state(with_ttl(ValueStateDescriptor("v"), cfg))
        rl = restored.list_state(with_ttl(ListStateDescriptor("l"), cfg))
        restored.set_current_key("old")
        assert rv.value() is None, "stamps survive the restore"
        restored.set_current_key("new")
        assert rv.value() == 8 and rl.get() == [8, 9]
        clock.now = 18
        assert rv.value() is None and rl.get() == [9]


def test_incremental_cleanup_removes_expired_entries_of_other_keys(make, clock):
    for per_record in (False, True):
        backend = make(time=clock)
        clock.now = 0
        cfg = ttl_config(10, incremental=(2, per_record))
        v = backend.value_state(with_ttl(ValueStateDescriptor("v"), cfg))
        items = backend.list_state(with_ttl(ListStateDescriptor("l"), cfg))
        for i in range(10):
            backend.set_current_key(i)
            v.update(i)
            items.add(i)
        clock.now = 100
        backend.set_current_key("reader")
        assert backend.num_entries() >= 20 - (4 if per_record else 0)
        for _ in range(2):
            backend.set_current_key("reader")
        if per_record:
            assert 20 - 3 * 4 <= backend.num_entries() < 20
        else:
            assert backend.num_entries() == 20, "nothing accessed the states yet"
        before = backend.num_entries()
        v.value()
        assert before - 2 <= backend.num_entries() <= before, "one access checks 2 entries"
        for _ in range(40):
            v.value()
            items.get()
        assert backend.num_entries() == 0


def test_default_background_cleanup_is_incremental(backend, clock):
    v = backend.value_state(with_ttl(ValueStateDescriptor("v"), ttl_config(10, background=True)))
    for i in range(20):
        backend.set_current_key(i)
        v.update(i)
    clock.now = 50
    backend.set_current_key("reader")
    for _ in range(30):
        v.value()
    assert backend.num_entries() == 0


def test_incremental_cleanup_checks_list_elements_and_map_entries(make, clock):
    backend = make(time=clock)
    cfg = ttl_config(10, incremental=(50, False))
    items = backend.list_state(with_ttl(ListStateDescriptor("l"), cfg))
    m = backend.map_state(with_ttl(MapStateDescriptor("m"), cfg))
    backend.set_current_key("k")
    items.add("old")
    m.put("old", 1)
    clock.now = 8
    items.add("new")
    m.put("new", 2)
    clock.now = 12
    backend.set_current_key("reader")
    items.get()
    m.get("x")
    _, states = decode_key_group(backend.snapshot()[key_group_of("k", MAX_P)])
    assert [v for v, _ in states["l"][3][0][2]] == ["new"]
    assert list(states["m"][3][0][2]) == ["new"]


def test_ttl_cannot_be_switched_on_or_off_for_existing_state(make, clock):
    with_ = make(time=clock)
    v = with_.value_state(with_ttl(ValueStateDescriptor("v"), ttl_config(10)))
    with_.set_current_key("k")
    v.update(1)
    without = make(time=clock)
    without.value_state(ValueStateDescriptor("v"))
    with pytest.raises(ValueError, match="TTL"):
        without.restore(with_.snapshot().values())
    fresh = make(time=clock)
    fresh.restore(with_.snapshot().values())
    with pytest.raises(ValueError, match="TTL"):
        fresh.value_state(ValueStateDescriptor("v"))
    longer = fresh.value_state(with_ttl(ValueStateDescriptor("v"), ttl_config(100)))
    fresh.set_current_key("k")
    clock.now = 50
    assert longer.value() == 1, "the TTL itself may change across a restore"


def test_merge_namespaces_with_ttl_ignores_expired_values(backend, clock):
    total = with_ttl(ReducingStateDescriptor("sum", lambda a, b: a + b), ttl_config(10))
    items = with_ttl(ListStateDescriptor("l"), ttl_config(10))
    backend.set_current_key("k")
    backend.reducing_state(total, "a").add(1)
    backend.list_state(items, "a").add(1)
    clock.now = 8
    backend.reducing_state(total, "b").add(2)
    backend.list_state(items, "b").add(2)
    clock.now = 12
    backend.merge_namespaces(total, "t", ["a", "b"])
    backend.merge_namespaces(items, "t", ["a", "b"])
    assert backend.reducing_state(total, "t").get() == 2
    assert backend.list_state(items, "t").get() == [2]
    clock.now = 21
    assert backend.reducing_state(total, "t").get() == 2, "the merge counts as a write"
    assert backend.list_state(items, "t").get() == [], "elements keep their own stamps"


# -- snapshots -------------------------------------------------------------------------------------


def _fill(backend, data: dict[str, int]) -> None:
    value = backend.value_state(ValueStateDescriptor("value"))
    items = backend.list_state(ListStateDescriptor("items"))
    m = backend.map_state(MapStateDescriptor("map"))
    total = backend.reducing_state(ReducingStateDescriptor("sum", lambda a, b: a + b))
    avg = backend.aggregating_state(AggregatingStateDescriptor("avg", Average()), TimeWindow(0, 5))
    raw = backend.table("raw")
    for key, n in data.items():
        backend.set_current_key(key)
        value.update(n)
        items.add_all([n, n + 1])
        m.put("n", n)
        m.put(n, "n")
        total.add(n)
        total.add(1)
        avg.add(n)
        avg.add(n + 2)
        raw.put(key, -n)


def _read(backend, key: str) -> tuple | None:
    """Every state of ``key`` as a tuple, or None when the key has no state at all."""
    value = backend.value_state(ValueStateDescriptor("value"))
    items = backend.list_state(ListStateDescriptor("items"))
    m = backend.map_state(MapStateDescriptor("map"))
    total = backend.reducing_state(ReducingStateDescriptor("sum", lambda a, b: a + b))
    avg = backend.aggregating_state(AggregatingStateDescriptor("avg", Average()), TimeWindow(0, 5))
    raw = backend.table("raw")
    backend.set_current_key(key)
    got = (value.value(), items.get(), dict(m.items()), total.get(), avg.get(), raw.get(key))
    return None if got == (None, [], {}, None, None, None) else got


def _expected(n: int) -> tuple:
    return (n, [n, n + 1], {"n": n, n: "n"}, n + 1, n + 1.0, -n)


def test_snapshot_is_bytes_per_key_group_holding_state(backend):
    data = {f"key{i}": i for i in range(40)}
    _fill(backend, data)
    snap = backend.snapshot()
    assert set(snap) == {key_group_of(k, MAX_P) for k in data}
    assert all(type(kg) is int and type(blob) is bytes for kg, blob in snap.items())
    for kg, blob in snap.items():
        assert pickle.loads(blob)[0] == kg


def test_a_snapshot_view_is_consistent_while_the_backend_moves_on(backend):
    items = backend.list_state(ListStateDescriptor("items"))
    m = backend.map_state(MapStateDescriptor("m"))
    backend.set_current_key("k")
    items.add(1)
    m.put("a", 1)
    view = backend.snapshot_view()
    items.add(2)
    m.put("b", 2)
    backend.set_current_key("other")
    items.add(3)
    snap = view.serialize()
    view.close()
    assert set(snap) == {key_group_of("k", MAX_P)}
    _, states = decode_key_group(snap[key_group_of("k", MAX_P)])
    assert states["items"][3] == [("k", None, [1])] and states["m"][3] == [("k", None, {"a": 1})]
    assert backend.snapshot() != snap


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(st.text(max_size=6), st.integers(-1000, 1000), max_size=25),
    st.integers(1, 5),
    st.data(),
)
@pytest.mark.parametrize("kind", KINDS)
def test_restoring_a_subset_of_key_groups_gives_exactly_those_keys(kind, data, p, draw):
    subtask = draw.draw(st.integers(0, p - 1))
    owned = key_group_range(subtask, p, MAX_P)
    with backends(kind, None, owned) as (full, part):
        _fill(full, data)
        snap = full.snapshot()
        part.restore(blob for kg, blob in snap.items() if kg in owned)
        mine = {k: n for k, n in data.items() if key_group_of(k, MAX_P) in owned}
        for key, n in data.items():
            assert _read(part, key) == (_expected(n) if key in mine else None)
        assert part.num_entries() == 6 * len(mine)
        again = part.snapshot()
        assert again.keys() == {kg for kg in snap if kg in owned}
        assert canonical(again) == canonical({kg: snap[kg] for kg in again})


@settings(max_examples=15, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers(), max_size=20), st.integers(1, 4))
@pytest.mark.parametrize("kind", KINDS)
def test_all_shares_together_restore_everything(kind, data, p):
    owned = [key_group_range(i, p, MAX_P) for i in range(p)]
    with backends(kind, None, *owned) as (full, *parts):
        _fill(full, data)
        snap = full.snapshot()
        for part, kgs in zip(parts, owned):
            part.restore(blob for kg, blob in snap.items() if kg in kgs)
        assert sum(part.num_entries() for part in parts) == full.num_entries()
        for key, n in data.items():
            found = [_read(part, key) for part in parts]
            assert [f for f in found if f is not None] == [_expected(n)]


def test_restoring_a_key_group_not_owned_raises(make):
    full = make()
    _fill(full, {f"k{i}": i for i in range(50)})
    snap = full.snapshot()
    owned = key_group_range(0, 2, MAX_P)
    foreign = next(kg for kg in snap if kg not in owned)
    part = make(owned)
    with pytest.raises(ValueError, match=f"key group {foreign} is not owned"):
        part.restore([snap[foreign]])


@pytest.mark.parametrize("src_kind,dst_kind", [("memory", "lmdb"), ("lmdb", "memory")])
def test_snapshots_restore_across_backend_kinds(src_kind, dst_kind):
    clock = FakeTime()
    data = {f"key{i}": i for i in range(30)}
    ttl = ttl_config(10)
    with (
        backends(src_kind, None, time=clock) as (src,),
        backends(dst_kind, None, time=clock) as (dst,),
    ):
        _fill(src, data)
        expiring = src.list_state(with_ttl(ListStateDescriptor("expiring"), ttl))
        src.set_current_key("key1")
        expiring.add_all(["x", "y"])
        snap = src.snapshot()
        dst.restore(snap.values())
        assert canonical(dst.snapshot()) == canonical(snap)
        for key, n in data.items():
            assert _read(dst, key) == _expected(n)
        dst.set_current_key("key1")
        assert dst.list_state(with_ttl(ListStateDescriptor("expiring"), ttl)).get() == ["x", "y"]


# -- LMDB specifics ---------------------------------------------------------------------------------


def test_lmdb_long_keys_namespaces_and_map_keys(tmp_path):
    with backends("lmdb", None) as (backend,):
        long_key = ("x" * 500, tuple(range(100)))
        m = backend.map_state(MapStateDescriptor("m"), namespace="n" * 300)
        backend.set_current_key(long_key)
        m.put("k" * 400, 1)
        m.put("short", 2)
        assert m.get("k" * 400) == 1 and dict(m.items()) == {"k" * 400: 1, "short": 2}
        restored = MemoryKeyedStateBackend(MAX_P)
        restored.restore(backend.snapshot().values())
        restored.set_current_key(long_key)
        assert dict(restored.map_state(MapStateDescriptor("m"), "n" * 300).items()) == {
            "k" * 400: 1,
            "short": 2,
        }


def test_lmdb_map_keys_must_be_encodable():
    with backends("lmdb", None) as (backend,):
        m = backend.map_state(MapStateDescriptor("m"))
        backend.set_current_key("k")
        with pytest.raises(InvalidKeyError, match="map state 'm'"):
            m.put(object(), 1)


def test_lmdb_commits_do_not_change_what_is_read(tmp_path):
    b = LmdbKeyedStateBackend(MAX_P, directory=tmp_path, map_size=SMALL_MAP, commit_every=3)
    try:
        items = b.list_state(ListStateDescriptor("items"))
        t = b.table("raw")
        for i in range(50):
            b.set_current_key(i % 7)
            items.add(i)
            t.put(i, i * i)
        assert [t.get(i) for i in range(50)] == [i * i for i in range(50)]
        b.set_current_key(3)
        assert items.get() == list(range(3, 50, 7))
        assert b.num_entries() == 7 + 50
    finally:
        b.dispose()


def test_lmdb_default_map_size_and_directory(tmp_path):
    b = LmdbStateBackend(directory=str(tmp_path / "state")).create(
        MAX_P, range(4, 8), "window op/1", 1, FakeTime()
    )
    try:
        assert b.path.startswith(str(tmp_path / "state")) and "window_op_1-1" in b.path
        assert b.map_size == 1 << 40
        b.table("raw").put("k", "v" * 10_000)
        assert b.table("raw").get("k") == "v" * 10_000
    finally:
        b.dispose()
    assert not os.path.exists(b.path)

    # by default in the user's private directory: environments 0700, their files 0600
    b = LmdbStateBackend(map_size=SMALL_MAP).create(MAX_P, range(4), "op", 0, FakeTime())
    try:
        assert os.path.dirname(b.path) == default_dirs.state_root()
        assert stat.S_IMODE(os.stat(b.path).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(os.path.join(b.path, "data.mdb")).st_mode) == 0o600
    finally:
        b.dispose()


def test_lmdb_environments_of_a_killed_process_go_with_the_next_backend(tmp_path):
    directory = str(tmp_path / "state")
    killed = (
        "import os, signal\n"
        "from raystream.checkpointing import LmdbStateBackend\n"
        f"b = LmdbStateBackend(directory={directory!r}, map_size={SMALL_MAP})"
        ".create(128, range(8), 'killed', 0, None)\n"
        "b.table('raw').put('k', 'v')\n"
        "b.commit()\n"
        "print(b.path, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    child = subprocess.run([sys.executable, "-c", killed], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    orphan = child.stdout.strip()
    assert os.path.exists(os.path.join(orphan, "data.mdb"))  # a task killed, not disposed
    other = tmp_path / "state" / "not-raystream"  # anything else there is left alone
    other.mkdir()
    live = LmdbStateBackend(directory=directory).create(MAX_P, range(8), "live", 0, FakeTime())
    try:
        assert not os.path.exists(orphan)
        later = LmdbStateBackend(directory=directory).create(MAX_P, range(8), "b", 1, FakeTime())
        later.dispose()
        assert os.path.isdir(live.path) and other.is_dir()  # its process is alive
    finally:
        live.dispose()


def test_backend_choices_are_picklable_configs():
    for choice in (HashMapStateBackend(), LmdbStateBackend(map_size=SMALL_MAP)):
        again = pickle.loads(pickle.dumps(choice))
        assert again == choice
        backend = again.create(MAX_P, range(0, 8), "op", 0, FakeTime())
        try:
            assert backend.key_groups == range(0, 8) and backend.max_parallelism == MAX_P
        finally:
            backend.dispose()
    assert isinstance(
        HashMapStateBackend().create(MAX_P, range(16), "op", 0, None), MemoryKeyedStateBackend
    )
    with pytest.raises(ValueError):
        LmdbStateBackend(map_size=0)


# -- differential: the same operations on both backends ---------------------------------------------

_KEYS = st.sampled_from([0, 1.0, "a", (1, "x")])
_NAMESPACES = st.sampled_from([None, TimeWindow(0, 10), "s"])
_SMALL = st.integers(-3, 3)
_OPS = st.one_of(
    st.tuples(st.just("key"), _KEYS),
    st.tuples(st.just("ns"), _NAMESPACES),
    st.tuples(st.just("advance"), st.integers(0, 8)),
    st.tuples(st.just("value_update"), st.one_of(st.none(), _SMALL)),
    st.tuples(st.just("value_get")),
    st.tuples(st.just("list_add"), _SMALL),
    st.tuples(st.just("list_update"), st.lists(_SMALL, max_size=3)),
    st.tuples(st.just("list_get")),
    st.tuples(st.just("map_put"), st.sampled_from(["x", "y", 1]), _SMALL),
    st.tuples(st.just("map_remove"), st.sampled_from(["x", "y", 1])),
    st.tuples(st.just("map_get"), st.sampled_from(["x", "y", 1])),
    st.tuples(st.just("map_items")),
    st.tuples(st.just("map_is_empty")),
    st.tuples(st.just("reduce_add"), _SMALL),
    st.tuples(st.just("reduce_get")),
    st.tuples(st.just("clear"), st.sampled_from(["value", "list", "map", "reduce"])),
    st.tuples(st.just("merge"), _NAMESPACES, st.lists(_NAMESPACES, max_size=3)),
    st.tuples(st.just("snapshot_restore")),
)


class _Driver:
    def __init__(self, kind: str, clock: FakeTime, ttl: StateTtlConfig | None):
        self.kind, self.clock, self.ttl = kind, clock, ttl
        self.ns = None
        self.key = None
        self.backend = new_backend(kind, None, clock)
        self._handles()

    def _desc(self, desc):
        return with_ttl(desc, self.ttl) if self.ttl is not None else desc

    def _handles(self):
        b = self.backend
        self.value = b.value_state(self._desc(ValueStateDescriptor("value")), self.ns)
        self.list = b.list_state(self._desc(ListStateDescriptor("list")), self.ns)
        self.map = b.map_state(self._desc(MapStateDescriptor("map")), self.ns)
        self.reduce_desc = self._desc(ReducingStateDescriptor("reduce", lambda a, b: a + b))
        self.reduce = b.reducing_state(self.reduce_desc, self.ns)

    def apply(self, op):
        name, *args = op
        if name == "key":
            self.key = args[0]
            self.backend.set_current_key(args[0])
        elif name == "ns":
            self.ns = args[0]
            for h in (self.value, self.list, self.map, self.reduce):
                h.set_namespace(args[0])
        elif name == "advance":
            return None  # the clock is shared; the test advances it once
        elif name == "value_update":
            self.value.update(args[0])
        elif name == "value_get":
            return self.value.value()
        elif name == "list_add":
            self.list.add(args[0])
        elif name == "list_update":
            self.list.update(args[0])
        elif name == "list_get":
            return self.list.get()
        elif name == "map_put":
            self.map.put(*args)
        elif name == "map_remove":
            self.map.remove(args[0])
        elif name == "map_get":
            return (self.map.get(args[0]), self.map.contains(args[0]))
        elif name == "map_items":
            return sorted(self.map.items(), key=repr)
        elif name == "map_is_empty":
            return self.map.is_empty()
        elif name == "reduce_add":
            self.reduce.add(args[0])
        elif name == "reduce_get":
            return self.reduce.get()
        elif name == "clear":
            {"value": self.value, "list": self.list, "map": self.map, "reduce": self.reduce}[
                args[0]
            ].clear()
        elif name == "merge":
            self.backend.merge_namespaces(self.reduce_desc, *args)
            self.backend.merge_namespaces(self._desc(ListStateDescriptor("list")), *args)
        elif name == "snapshot_restore":
            snap = self.backend.snapshot()
            fresh = new_backend(self.kind, None, self.clock)
            fresh.restore(snap.values())
            self.backend.dispose()
            self.backend = fresh
            self._handles()
            self.backend.set_current_key(self.key)
            return canonical(snap)
        return None


_TTLS = st.one_of(
    st.none(),
    st.builds(
        lambda read, expired, full, event: ttl_config(
            5, read=read, expired=expired, full_snapshot=full, event=event
        ),
        st.booleans(),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
)


@settings(max_examples=80, deadline=None)
@given(_TTLS, st.lists(_OPS, min_size=30, max_size=120))
def test_memory_and_lmdb_backends_behave_identically(ttl, ops):
    clock = FakeTime()
    drivers = [_Driver(kind, clock, ttl) for kind in KINDS]
    try:
        for op in ops:
            if op[0] == "advance":
                clock.now += op[1]
                clock.watermark = clock.now - 4  # event time: records up to 4 ms out of order
                clock.element_ts = clock.now - op[1] % 3
                continue
            results = [d.apply(op) for d in drivers]
            assert results[0] == results[1], op
        counts = [d.backend.num_entries() for d in drivers]
        assert counts[0] == counts[1]
        snaps = [canonical(d.backend.snapshot()) for d in drivers]
        assert snaps[0] == snaps[1]
    finally:
        for d in drivers:
            d.backend.dispose()
