"""Joins through the public API on a real local Ray, at parallelism 1 and 3 (SEMANTICS §7).

Timestamps are in order on each input, so no record is late whatever the timing of the periodic
watermarks; the end of input moves the watermark to the end of time and everything fires. The
expected results come from the brute-force references of ``test_joins``. Lateness is tested
there, with scripted watermarks.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from raystream import StreamExecutionEnvironment
from raystream.core.watermarks import WatermarkStrategy
from raystream.operators import CollectionSource
from raystream.operators.windows.assigners import EventTimeSessionWindows, SlidingEventTimeWindows
from tests.test_joins import (
    co_group_ids,
    expected_co_group,
    expected_join,
    interval_reference,
    join_ids,
    key_of,
    session_reference,
    window_reference,
)

pytestmark = pytest.mark.usefixtures("ray_session")

PARALLELISM = [1, 3]


def in_order_records(seed: int, side: str, n: int = 60, keys: int = 4) -> list[tuple]:
    rng = random.Random(seed)
    ts = 0
    out = []
    for i in range(n):
        ts += rng.randint(0, 4)
        out.append((f"k{rng.randrange(keys)}", ts, f"{side}{i}"))
    return out


def ts_of(record: tuple) -> int:
    return record[1]


def sources(parallelism: int, seed: int):
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(2).with_timestamp_assigner(ts_of)
    lefts = in_order_records(seed, "L")
    rights = in_order_records(seed + 1, "R")
    a = env.from_source(CollectionSource(lefts), strategy, source_name="left")
    b = env.from_source(CollectionSource(rights), strategy, source_name="right")
    script = [("L", r) for r in lefts] + [("R", r) for r in rights]
    return a, b, script


def pair_ids(left, right, ctx):
    yield (left[2], right[2])


def tag(name: str):
    return lambda value, ctx: [(name, value, ctx.timestamp())]


@pytest.mark.parametrize("parallelism", PARALLELISM)
def test_all_joins_on_ray(parallelism):
    """One job per parallelism (jobs are the slow part): the three joins share both sources and
    their results meet in one collect sink, each tagged with its join."""
    a, b, script = sources(parallelism, seed=parallelism)
    interval = (
        a.key_by(key_of)
        .interval_join(b.key_by(key_of))
        .between(-6, 4)
        .upper_bound_exclusive()
        .process(pair_ids)
    )
    window_join = (
        a.join(b)
        .where(key_of)
        .equal_to(key_of)
        .window(SlidingEventTimeWindows.of(20, 5))
        .apply(join_ids)
    )
    co_group = (
        a.co_group(b)
        .where(key_of)
        .equal_to(key_of)
        .window(EventTimeSessionWindows.with_gap(6))
        .apply(co_group_ids)
    )
    results = (
        interval.process(tag("interval"))
        .union(window_join.process(tag("join")), co_group.process(tag("co_group")))
        .execute_and_collect()
    )
    got: dict[str, Counter] = {"interval": Counter(), "join": Counter(), "co_group": Counter()}
    for name, value, ts in results:
        got[name][(value, ts)] += 1

    want_interval, _, _ = interval_reference(script, -6, 4, False, True)
    assert sum(want_interval.values()) > 20
    assert got["interval"] == want_interval

    firings, _ = window_reference(script, 20, 5, 0, 0)
    want_join = expected_join(firings)
    assert sum(want_join.values()) > 20
    assert got["join"] == want_join

    firings, _ = session_reference(script, 6, 0)
    assert any(lefts and rights for lefts, rights, _ in firings)
    assert any(not lefts or not rights for lefts, rights, _ in firings)
    assert got["co_group"] == expected_co_group(firings)
