"""Where records go: every partitioning, checked through the subtask that received each record."""

from __future__ import annotations

from collections import Counter

import pytest

from raystream import MapFunction, StreamExecutionEnvironment
from raystream.core.keys import key_group_of, subtask_of

pytestmark = pytest.mark.usefixtures("ray_session")


class TagSubtask(MapFunction):
    """Pairs each record with the index of the subtask that saw it."""

    def open(self, runtime_context):
        self.index = runtime_context.get_index_of_this_subtask()

    def map(self, value):
        return (self.index, value)


def tag_consumer(stream, parallelism):
    return stream.map(TagSubtask()).set_parallelism(parallelism).name("consumer")


def env_with(p: int = 2) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment()
    env.set_parallelism(p)
    return env


def test_rebalance_is_exact_round_robin():
    env = env_with()
    # one producer subtask (a collection read through a rebalance edge is otherwise read in
    # parallel slices, each round-robined on its own: docs/ARCHITECTURE.md)
    src = env.from_collection(list(range(300))).set_parallelism(1)
    got = list(tag_consumer(src.rebalance(), 3).execute_and_collect())
    per_consumer = Counter(sub for sub, _ in got)
    assert per_consumer == {0: 100, 1: 100, 2: 100}
    assert sorted(v for _, v in got) == list(range(300))
    # round robin record by record: consecutive records go to consecutive consumers
    sub_of = {v: sub for sub, v in got}
    assert all(sub_of[v + 1] == (sub_of[v] + 1) % 3 for v in range(299))


def test_broadcast_sends_every_record_to_every_consumer():
    env = env_with()
    got = list(
        tag_consumer(env.from_collection(list(range(50))).broadcast(), 3).execute_and_collect()
    )
    assert Counter(got) == Counter((s, v) for s in range(3) for v in range(50))


def test_forward_with_chaining_disabled_keeps_the_subtask():
    env = env_with(3)
    src = env.from_sequence(0, 299).map(TagSubtask()).name("producer")
    got = list(tag_consumer(src.forward(), 3).disable_chaining().execute_and_collect())
    assert all(consumer == producer for consumer, (producer, _) in got)
    assert len(got) == 300


def test_rescale_connects_local_groups():
    env = env_with(2)
    src = env.from_sequence(0, 399).map(TagSubtask()).name("producer")  # 2 producers
    got = list(tag_consumer(src.rescale(), 4).execute_and_collect())
    links = {(producer, consumer) for consumer, (producer, _) in got}
    assert links == {(0, 0), (0, 1), (1, 2), (1, 3)}
    assert len(got) == 400


def test_global_sends_everything_to_subtask_zero():
    env = env_with(3)
    got = list(tag_consumer(env.from_sequence(0, 99).global_(), 3).execute_and_collect())
    assert {s for s, _ in got} == {0}
    assert len(got) == 100


def test_shuffle_delivers_every_record_once_and_spreads_them():
    env = env_with(2)
    got = list(tag_consumer(env.from_sequence(0, 2999).shuffle(), 3).execute_and_collect())
    assert sorted(v for _, v in got) == list(range(3000))
    counts = Counter(s for s, _ in got)
    assert set(counts) == {0, 1, 2} and min(counts.values()) > 700


def test_partition_custom_uses_the_user_choice():
    env = env_with(2)
    src = env.from_sequence(0, 299).partition_custom(lambda key, n: key % n, lambda v: v // 10)
    got = list(tag_consumer(src, 3).execute_and_collect())
    assert all(s == (v // 10) % 3 for s, v in got)
    assert len(got) == 300


def test_key_by_places_keys_by_key_group():
    env = env_with(2)
    keys = [f"user-{i}" for i in range(200)] + list(range(100)) + [(1, "a"), None, 2.5]
    src = env.from_collection(keys).key_by(lambda k: k)
    got = list(src.process(_key_and_subtask()).set_parallelism(4).execute_and_collect())
    assert len(got) == len(keys)
    for key, sub in got:
        assert sub == subtask_of(key_group_of(key, 128), 4, 128), key


class _key_and_subtask:
    def __init__(self):
        self.index = None

    def open(self, runtime_context):
        self.index = runtime_context.get_index_of_this_subtask()

    def __call__(self, value, ctx):
        yield (value, self.index)
