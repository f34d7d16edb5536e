"""Declarative aggregates on the row path without Ray: ``RowAggregate`` folds a run of records
as ``add`` would one by one, merges associatively, and reads fields by position, key or
attribute; ``KeyedStream.sum/min/max/min_by/max_by`` fold tuples and dicts inline with the
same results as the general reduce."""

from __future__ import annotations

import collections
import dataclasses
import functools
import random

import pytest

from raystream import Row, agg
from raystream.operators.keyed import FieldAggregateOperator, ReduceOperator, aggregation
from raystream.operators.row_aggregates import RowAggregate
from raystream.operators.windows.assigners import TimeWindow
from raystream.testing import OperatorHarness

AGGS = (
    agg.count(),
    agg.sum(1),
    agg.min(1),
    agg.max(1),
    agg.mean(1),
    agg.first(1),
    agg.last(1),
    agg.count(1).alias("n"),
)


def test_accumulate_and_merge_equal_adding_one_by_one():
    rng = random.Random(2)
    ra = RowAggregate(AGGS, None)
    for _ in range(200):
        values = [
            ("k", None if rng.random() < 0.3 else rng.randrange(-9, 9))
            for _ in range(rng.randrange(0, 12))
        ]
        one_by_one = ra.create_accumulator()
        for v in values:
            one_by_one = ra.add(v, one_by_one)
        assert ra.accumulate(values) == one_by_one
        cut = rng.randrange(0, len(values) + 1)
        merged = ra.merge(ra.accumulate(values[:cut]), ra.accumulate(values[cut:]))
        assert ra.get_result(merged) == ra.get_result(one_by_one)
        xs = [x for _, x in values if x is not None]
        expected = (
            (len(values), None, None, None, None, None, None, 0)
            if not xs
            else (len(values), sum(xs), min(xs), max(xs), sum(xs) / len(xs), xs[0], xs[-1], len(xs))
        )
        assert ra.get_result(one_by_one) == expected


@dataclasses.dataclass
class Reading:
    sensor: str
    value: float


def test_fields_by_position_key_and_attribute_and_the_result_row():
    Point = collections.namedtuple("Point", "k value")
    cases = [
        ([("a", 1), ("a", 3)], agg.sum(1), None),
        ([{"k": "a", "value": 1}, {"k": "a", "value": 3}], agg.sum("value"), None),
        ([Row(k="a", value=1), Row(k="a", value=3)], agg.sum("value"), None),
        ([Point("a", 1), Point("a", 3)], agg.sum("value"), None),
        ([Reading("a", 1.0), Reading("a", 3.0)], agg.sum("value"), ("sensor",)),
    ]
    for values, a, fields in cases:
        ra = RowAggregate((agg.count(), a), fields)
        row = ra.window_result("a", TimeWindow(0, 10), ra.accumulate(values))
        name = "sensor" if fields else "key"
        assert row.as_dict() == {
            name: "a",
            "window_start": 0,
            "window_end": 10,
            "count": 2,
            a.output_name: 4,
        }
    two = RowAggregate((agg.count(),), ("x", "y"))
    assert two.window_result((1, "b"), TimeWindow(5, 7), [3]).as_dict() == {
        "x": 1,
        "y": "b",
        "window_start": 5,
        "window_end": 7,
        "count": 3,
    }


Point = collections.namedtuple("Point", "k a b")


def _records(rng: random.Random, shapes: tuple[str, ...]) -> list[list]:
    batches = []
    for _ in range(6):
        batch = []
        for i in range(rng.randrange(1, 40)):
            k, a, b = f"k{rng.randrange(4)}", rng.randrange(-5, 5), i
            shape = rng.choice(shapes)
            batch.append(
                (k, a, b)
                if shape == "tuple"
                else {"k": k, "a": a, "b": b}
                if shape == "dict"
                else Point(k, a, b)
            )
        batches.append(batch)
    return batches


def _key(record):
    return record["k"] if isinstance(record, dict) else record[0]


def _run(factory, batches):
    h = OperatorHarness(factory(), keyed=True)
    for batch in batches:
        h.process(batch, list(range(len(batch))))
    return h.output


@pytest.mark.parametrize("kind", ["sum", "min", "max", "min_by", "max_by"])
@pytest.mark.parametrize(
    "field, shapes",
    [
        (1, ("tuple",)),
        (1, ("tuple", "namedtuple")),
        (-2, ("tuple",)),
        ("a", ("dict",)),
        ("a", ("dict", "namedtuple")),
    ],
)
def test_inline_running_aggregates_equal_the_general_reduce(kind, field, shapes):
    batches = _records(random.Random(f"{kind}{field}{shapes}"), shapes)
    inline = _run(
        functools.partial(FieldAggregateOperator, "agg", kind=kind, field=field, key_selector=_key),
        batches,
    )
    general = _run(
        functools.partial(ReduceOperator, "agg", fn=aggregation(kind, field), key_selector=_key),
        batches,
    )
    assert inline == general and len(inline) == sum(len(b) for b in batches)


def test_session_and_count_windows_take_declarative_aggregates():
    from raystream.operators.windows.assigners import EventTimeSessionWindows, GlobalWindows
    from raystream.operators.windows.operator import AGGREGATE, WindowOperator
    from raystream.operators.windows.triggers import CountTrigger, PurgingTrigger
    from tests.test_columnar_windows import AGGS as COLUMN_AGGS
    from tests.test_columnar_windows import NAMES, SevenAggregates

    rng = random.Random(8)
    records = [{"k": f"k{rng.randrange(3)}", "v": rng.choice([None, 1, 2, 5])} for _ in range(300)]
    stamps = sorted(rng.randrange(0, 3000) for _ in records)

    def windows(function, window_function, assigner, trigger):
        op = WindowOperator(
            "w",
            lambda r: r["k"],
            assigner,
            trigger,
            None,
            0,
            None,
            AGGREGATE,
            function,
            window_function,
        )
        h = OperatorHarness(op, keyed=True)
        for start in range(0, len(records), 50):
            h.process(records[start : start + 50], stamps[start : start + 50])
            h.watermark(stamps[min(start + 49, len(stamps) - 1)] - 30)
        h.finish()
        out = []
        for value, ts in h.output:
            value = value.as_dict() if hasattr(value, "as_dict") else value
            aggs = tuple(value["aggs"]) if "aggs" in value else tuple(value[n] for n in NAMES)
            out.append((value["k"], value["window_start"], value["window_end"], aggs, ts))
        return sorted(out, key=repr)

    for assigner, trigger in [
        (EventTimeSessionWindows.with_gap(40), None),
        (GlobalWindows.create(), PurgingTrigger.of(CountTrigger.of(7))),
    ]:
        declarative = windows(RowAggregate(COLUMN_AGGS, ("k",)), None, assigner, trigger)
        user = windows(SevenAggregates(), _with_window_or_none, assigner, trigger)
        assert declarative == user and len(declarative) > 10


def _with_window_or_none(key, ctx, results):
    w = ctx.window()
    start, end = getattr(w, "start", None), getattr(w, "end", None)
    return [{"k": key, "window_start": start, "window_end": end, "aggs": r} for r in results]


def test_the_generated_fold_and_merge_equal_the_plain_ones():
    """``fold`` (one generated loop per batch) and the generated ``merge`` against ``add`` and
    the plain merge, with nulls, for every kind; records whose fields only attributes reach
    take the general route."""
    rng = random.Random(4)
    ra = RowAggregate(AGGS, None)
    for _ in range(100):
        values = [
            (f"k{rng.randrange(3)}", rng.choice([None, -2, 0, 5, 7]))
            for _ in range(rng.randrange(0, 20))
        ]
        folded: dict = {}
        ra.fold(values[: len(values) // 2], lambda v: v[0], folded)
        ra.fold(values[len(values) // 2 :], lambda v: v[0], folded)
        one_by_one: dict = {}
        for v in values:
            one_by_one[v[0]] = ra.add(v, one_by_one.get(v[0]) or ra.create_accumulator())
        assert folded == one_by_one
        a, b = ra.accumulate(values[:3]), ra.accumulate(values[3:])
        assert ra.merge(a, b) == ra._merge_slowly(a, b)
    objects = [Reading("a", 1.0), Reading("a", 2.5)]
    per_key: dict = {}
    RowAggregate((agg.sum("value"),), None).fold(objects, lambda r: r.sensor, per_key)
    assert per_key == {"a": [3.5]}
