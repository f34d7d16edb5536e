"""``from_collection``: a parallel, replayable source whose slices travel through the object
store, not inside the plan."""

from __future__ import annotations

import pickle
from collections import Counter

import pytest

from raystream import StreamExecutionEnvironment, WatermarkStrategy
from raystream.operators import sources
from raystream.operators.sources import CollectionSource

pytestmark = pytest.mark.usefixtures("ray_session")


def read_all(source: CollectionSource, split: tuple[int, int], offset: int | None = None) -> list:
    reader = source.open_split(split, offset)
    out: list = []
    while (got := reader.read(7)) is not None:
        out.extend(got)
    reader.close()
    return out


@pytest.mark.parametrize("chunk", [sources.SHARE_CHUNK, 700])
def test_shared_collection_pickles_without_its_items_and_reads_any_range(monkeypatch, chunk):
    monkeypatch.setattr(sources, "SHARE_CHUNK", chunk)  # 700: splits of many chunks
    items = [(i, f"v{i}") for i in range(10_000)]
    source = CollectionSource(items)
    splits = source.create_splits(3)
    assert splits == [(0, 3333), (3333, 6666), (6666, 10_000)]
    source.share(splits)
    shipped = pickle.loads(pickle.dumps(source))  # what a task gets: refs, not items
    assert len(pickle.dumps(source)) < 2_000
    assert shipped.items is None
    for split in splits:
        assert read_all(shipped, split) == items[split[0] : split[1]]
    # a split of a job restored at another parallelism spans chunks; offsets are item indexes
    for split in CollectionSource(items).create_splits(2) + [(100, 9_990), (3333, 3334)]:
        assert read_all(shipped, split) == items[split[0] : split[1]]
        assert read_all(shipped, split, split[0] + 5) == items[split[0] + 5 : split[1]]


def test_records_of_a_class_only_the_driver_knows_reach_the_tasks():
    class Reading:  # defined here: a task process cannot import it, it travels by value
        def __init__(self, sensor: str, value: int):
            self.sensor, self.value = sensor, value

    readings = [Reading(f"s{i % 3}", i) for i in range(3000)]
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    got = env.from_collection(readings).map(lambda r: (r.sensor, r.value)).execute_and_collect()
    assert sorted(got) == sorted((r.sensor, r.value) for r in readings)


def test_inline_collection_carries_its_items():
    source = CollectionSource(list(range(50)))
    source.keep_inline()
    shipped = pickle.loads(pickle.dumps(source))
    assert read_all(shipped, (10, 20)) == list(range(10, 20))


def test_parallel_collection_with_timestamps_assigned_in_the_source_chain():
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    items = [(i % 10, i * 100) for i in range(20_000)]
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[1])
    stream = env.from_collection(items).assign_timestamps_and_watermarks(strategy)
    stream = stream.map(lambda r: (r[0], r[1] * 2))
    plan = env.get_execution_plan()
    # source, timestamp assigner and map run in one chain of two subtasks: no rebalance
    assert "x2: Collection Source -> Timestamps/Watermarks -> Map" in plan, plan
    got = list(stream.execute_and_collect())
    assert Counter(got) == Counter((k, t * 2) for k, t in items)


def test_a_keyed_or_broadcast_consumer_gets_a_single_reader():
    env = StreamExecutionEnvironment()
    env.set_parallelism(3)
    env.from_collection([(1, 2)]).key_by(lambda r: r[0]).map(lambda r: r).print()
    env.from_collection([(1, 2)]).map(lambda r: r).set_parallelism(1).print()
    env.from_collection([(3, 4)]).set_parallelism(2).key_by(lambda r: r[0]).print()
    plan = env.get_execution_plan()
    assert "task 'Collection Source' x1" in plan, plan
    assert "x1: Collection Source-2 -> Map-2" in plan, plan
    assert "task 'Collection Source-3' x2" in plan, plan  # as the user set it
