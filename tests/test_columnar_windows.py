"""Windows with declarative aggregates, without Ray: the columnar operator, the row path with
``raystream.agg`` and the row path with a user ``AggregateFunction`` against one brute-force
reference, on scripted streams with out-of-order and late records (SEMANTICS §2.4, §2.6).
Checkpoints: snapshot, restore and rescaling on both state backends."""

from __future__ import annotations

import functools
import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream import StreamExecutionEnvironment, WatermarkStrategy, agg
from raystream.checkpointing import LmdbStateBackend
from raystream.checkpointing.snapshot import assign
from raystream.core.time import MAX_TS
from raystream.operators.columnar.schema import ColumnError
from raystream.operators.columnar.window import ColumnWindowOperator
from raystream.operators.row_aggregates import RowAggregate
from raystream.operators.windows.assigners import (
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)
from raystream.operators.windows.operator import AGGREGATE, WindowOperator
from raystream.runtime import columns
from raystream.testing import OperatorHarness

AGGS = (
    agg.count(),
    agg.sum("v"),
    agg.min("v"),
    agg.max("v"),
    agg.mean("v"),
    agg.first("v"),
    agg.last("v"),
    agg.count("v").alias("n_v"),
)
NAMES = ["count", "sum_v", "min_v", "max_v", "mean_v", "first_v", "last_v", "n_v"]


# --- the brute-force reference ------------------------------------------------------------------


def _windows(t: int, size: int, slide: int) -> list[int]:
    last = t - t % slide
    return [s for s in range(last, t - size, -slide)]


def _aggregate(values: list) -> tuple:
    xs = [x for x in values if x is not None]
    if not xs:
        return (len(values), None, None, None, None, None, None, 0)
    return (len(values), sum(xs), min(xs), max(xs), sum(xs) / len(xs), xs[0], xs[-1], len(xs))


def reference(script: list, size: int, slide: int, lateness: int) -> tuple[list, list]:
    """Results ``(key, start, end, aggregates, timestamp)`` and late records ``(record,
    timestamp)`` of the script, record by record, timer by timer."""
    contents: dict[tuple, list] = {}
    pending: set[tuple] = set()
    out: list = []
    late: list = []
    wm = -(2**63)
    for step in [*script, ("wm", MAX_TS)]:  # a bounded input ends with the MAX watermark
        if step[0] == "wm":
            wm = max(wm, step[1])
            for k, s in sorted(pending, key=lambda p: p[1]):
                if s + size - 1 <= wm:
                    pending.discard((k, s))
                    out.append((k, s, s + size, _aggregate(contents[(k, s)]), s + size - 1))
            for k, s in list(contents):
                if min(s + size - 1 + lateness, MAX_TS) <= wm:
                    del contents[(k, s)]
                    pending.discard((k, s))
            continue
        for k, t, v in step[1]:
            added = False
            for s in _windows(t, size, slide):
                max_ts = s + size - 1
                if max_ts + lateness <= wm:
                    continue
                added = True
                contents.setdefault((k, s), []).append(v)
                if max_ts <= wm:
                    out.append((k, s, s + size, _aggregate(contents[(k, s)]), max_ts))
                else:
                    pending.add((k, s))
            if not added and t + lateness <= wm:
                late.append(({"k": k, "t": t, "v": v}, t))
    return sorted(out, key=repr), sorted(late, key=repr)


# --- the three implementations ------------------------------------------------------------------


class SevenAggregates:
    """What a user writes for the same results: an AggregateFunction with merge."""

    def create_accumulator(self):
        return [0, 0, 0, None, None, None, None]

    def add(self, value, acc):
        acc = list(acc)
        acc[0] += 1
        x = value["v"]
        if x is not None:
            acc[1] += x
            acc[2] += 1
            acc[3] = x if acc[3] is None else min(acc[3], x)
            acc[4] = x if acc[4] is None else max(acc[4], x)
            acc[5] = x if acc[5] is None else acc[5]
            acc[6] = x
        return acc

    def merge(self, a, b):
        return [
            a[0] + b[0],
            a[1] + b[1],
            a[2] + b[2],
            b[3] if a[3] is None else a[3] if b[3] is None else min(a[3], b[3]),
            b[4] if a[4] is None else a[4] if b[4] is None else max(a[4], b[4]),
            a[5] if a[5] is not None else b[5],
            b[6] if b[6] is not None else a[6],
        ]

    def get_result(self, acc):
        n = acc[2]
        if not n:
            return (acc[0], None, None, None, None, None, None, 0)
        return (acc[0], acc[1], acc[3], acc[4], acc[1] / n, acc[5], acc[6], n)


def _with_window(key, ctx, results):
    w = ctx.window()
    return [{"k": key, "window_start": w.start, "window_end": w.end, "aggs": r} for r in results]


def _assigner(size: int, slide: int):
    if size == slide:
        return TumblingEventTimeWindows(size)
    return SlidingEventTimeWindows(size, slide)


def _key(record):
    return record["k"]


def columnar_operator(size, slide, lateness):
    return ColumnWindowOperator("w", ("k",), _assigner(size, slide), lateness, "late", AGGS)


def declarative_row_operator(size, slide, lateness):
    return WindowOperator(
        "w",
        _key,
        _assigner(size, slide),
        None,
        None,
        lateness,
        "late",
        AGGREGATE,
        RowAggregate(AGGS, ("k",)),
    )


def user_row_operator(size, slide, lateness):
    return WindowOperator(
        "w",
        _key,
        _assigner(size, slide),
        None,
        None,
        lateness,
        "late",
        AGGREGATE,
        SevenAggregates(),
        _with_window,
    )


def _rows(step) -> list[dict]:
    return [{"k": k, "t": t, "v": v} for k, t, v in step[1]]


def run(make, script, columnar: bool, backend=None, keyed_parts=None):
    """Drives one operator through the script; returns (results, late) like ``reference``."""
    h = OperatorHarness(make(), keyed=True, state_backend=backend)
    _feed(h, script, columnar)
    h.finish()
    return _normalized(h)


def _feed(h, script, columnar):
    for step in script:
        if step[0] == "wm":
            h.watermark(step[1])
        elif columnar:
            rows = _rows(step)
            h.process_columns(
                pa.RecordBatch.from_pylist(rows, schema=SCHEMA), [r["t"] for r in rows]
            )
        else:
            rows = _rows(step)
            h.process(rows, [r["t"] for r in rows])


SCHEMA = pa.schema([("k", pa.string()), ("t", pa.int64()), ("v", pa.int64())])


def _normalized(h) -> tuple[list, list]:
    out = []
    for value, ts in h.output:
        if "aggs" in value:
            aggs = tuple(value["aggs"])
        else:
            value = value.as_dict() if hasattr(value, "as_dict") else value
            aggs = tuple(value[n] for n in NAMES)
        out.append((value["k"], value["window_start"], value["window_end"], aggs, ts))
    late = [(dict(r), ts) for r, ts in h.side_output("late")]
    return sorted(out, key=repr), sorted(late, key=repr)


def random_script(rng: random.Random, n_batches: int, keys: int, disorder: int, nulls: bool):
    script: list = []
    t = 0
    for _ in range(n_batches):
        batch = []
        for _ in range(rng.randrange(1, 12)):
            t += rng.randrange(0, 4)
            ts = max(0, t - rng.randrange(disorder))
            v = None if nulls and rng.random() < 0.2 else rng.randrange(-50, 50)
            batch.append((f"k{rng.randrange(keys)}", ts, v))
        script.append(("batch", batch))
        if rng.random() < 0.6:
            script.append(("wm", max(0, t - rng.randrange(disorder // 2 + 1)) - 1))
    return script


IMPLEMENTATIONS = [
    pytest.param(columnar_operator, True, id="columnar"),
    pytest.param(declarative_row_operator, False, id="rows-agg"),
    pytest.param(user_row_operator, False, id="rows-AggregateFunction"),
]


@pytest.mark.parametrize("make, columnar", IMPLEMENTATIONS)
@pytest.mark.parametrize("size, slide, lateness", [(10, 10, 0), (10, 10, 7), (12, 4, 5), (9, 2, 0)])
def test_windows_equal_the_reference_with_late_data(make, columnar, size, slide, lateness):
    rng = random.Random(size * 1000 + slide * 10 + lateness)
    for _ in range(6):
        script = random_script(rng, 25, keys=5, disorder=25, nulls=True)
        expected = reference(script, size, slide, lateness)
        got = run(functools.partial(make, size, slide, lateness), script, columnar)
        assert got == expected
        assert expected[1] or lateness  # the scripts do have late records


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    shape=st.sampled_from([(10, 10), (10, 5), (7, 3), (5, 5)]),
    lateness=st.sampled_from([0, 3, 20]),
)
def test_columnar_and_row_paths_agree(seed, shape, lateness):
    size, slide = shape
    script = random_script(random.Random(seed), 12, keys=4, disorder=30, nulls=True)
    expected = reference(script, size, slide, lateness)
    for make, columnar in [(columnar_operator, True), (declarative_row_operator, False)]:
        assert run(functools.partial(make, size, slide, lateness), script, columnar) == expected


def test_result_columns_types_and_timestamps():
    h = OperatorHarness(columnar_operator(10, 10, 0), keyed=True)
    h.process_columns({"k": ["a", "b", "a"], "t": [1, 2, 3], "v": [1, 2, None]}, [1, 2, 3])
    h.watermark(9)
    (batch,) = h.column_batches()
    assert batch.values.schema.names == ["k", "window_start", "window_end", *NAMES]
    types = dict(zip(batch.values.schema.names, batch.values.schema.types))
    assert types["count"] == pa.int64() and types["mean_v"] == pa.float64()
    assert types["window_start"] == pa.int64() and types["min_v"] == pa.int64()
    assert batch.timestamps.tolist() == [9, 9]
    assert sorted(h.values(), key=lambda r: r["k"])[0] == {
        "k": "a",
        "window_start": 0,
        "window_end": 10,
        "count": 2,
        "sum_v": 1,
        "min_v": 1,
        "max_v": 1,
        "mean_v": 1.0,
        "first_v": 1,
        "last_v": 1,
        "n_v": 1,
    }


def test_multi_column_keys_and_string_aggregates():
    op = ColumnWindowOperator(
        "w",
        ("a", "b"),
        TumblingEventTimeWindows(10),
        0,
        None,
        (agg.min("s"), agg.max("s"), agg.first("s"), agg.last("s").alias("z")),
    )
    h = OperatorHarness(op, keyed=True)
    h.process_columns(
        {"a": [1, 1, 2, 1], "b": ["x", "x", "x", "y"], "s": ["q", "b", "c", None]}, [1, 2, 3, 4]
    )
    h.finish()
    got = sorted(h.values(), key=lambda r: (r["a"], r["b"]))
    assert [(r["a"], r["b"], r["min_s"], r["max_s"], r["first_s"], r["z"]) for r in got] == [
        (1, "x", "b", "q", "q", "b"),
        (1, "y", None, None, None, None),
        (2, "x", "c", "c", "c", "c"),
    ]


# --- checkpoints: snapshot, restore, rescale ----------------------------------------------------


BACKENDS = [pytest.param(None, id="memory"), pytest.param("lmdb", id="lmdb")]


def _backend(kind, tmp_path, name):
    return LmdbStateBackend(str(tmp_path / name)) if kind == "lmdb" else None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lateness", [0, 15])
def test_snapshot_restore_and_rescale_equal_an_uninterrupted_run(backend, lateness, tmp_path):
    rng = random.Random(11 + lateness)
    script = random_script(rng, 40, keys=20, disorder=20, nulls=False)
    cut = 20
    make = functools.partial(columnar_operator, 10, 5, lateness)
    expected = reference(script, 10, 5, lateness)

    first = OperatorHarness(make(), keyed=True, state_backend=_backend(backend, tmp_path, "a"))
    _feed(first, script[:cut], True)
    before = _normalized(first)
    snap = first.snapshot(1)
    assert snap.keyed  # the windows' state is in the keyed backend, by key group

    # the same parallelism
    again = OperatorHarness(
        make(), keyed=True, state_backend=_backend(backend, tmp_path, "b"), restored=snap
    )
    again.watermark(_last_watermark(script[:cut]))  # watermarks are not part of a checkpoint
    _feed(again, script[cut:], True)
    again.finish()
    after = _normalized(again)
    assert sorted(before[0] + after[0], key=repr) == expected[0]
    assert sorted(before[1] + after[1], key=repr) == expected[1]

    # parallelism 1 -> 2: each new subtask takes the key groups of its range
    parts = assign({0: snap}, 2, 128, "w")
    results: list = []
    late: list = []
    for i in range(2):
        h = OperatorHarness(
            make(),
            keyed=True,
            subtask=i,
            parallelism=2,
            state_backend=_backend(backend, tmp_path, f"c{i}"),
            restored=parts[i],
        )
        h.watermark(_last_watermark(script[:cut]))
        _feed(h, _owned(script[cut:], i), True)
        h.finish()
        r, lt = _normalized(h)
        results += r
        late += lt
    assert sorted(before[0] + results, key=repr) == expected[0]
    assert sorted(before[1] + late, key=repr) == expected[1]


def _last_watermark(script):
    marks = [s[1] for s in script if s[0] == "wm"]
    return max(marks) if marks else -(2**63)


def _owned(script, subtask):
    """The script's records whose key subtask ``subtask`` of 2 owns (the rest go elsewhere)."""
    from raystream.core.keys import key_group_of, subtask_of

    out = []
    for step in script:
        if step[0] == "wm":
            out.append(step)
        else:
            mine = [r for r in step[1] if subtask_of(key_group_of(r[0], 128), 2, 128) == subtask]
            if mine:
                out.append(("batch", mine))
    return out


def test_restore_into_a_window_that_fired_fires_only_new_keys():
    """After a restore the watermark starts again below a fired window's end: keys that fired
    before fold in without firing again at the end; a key new to the window fires then (as
    the row path's per-key timers do)."""
    make = functools.partial(columnar_operator, 10, 10, 50)
    row_make = functools.partial(declarative_row_operator, 10, 10, 50)
    outputs = []
    for mk, columnar in [(make, True), (row_make, False)]:
        h = OperatorHarness(mk(), keyed=True)
        _feed(h, [("batch", [("a", 1, 1)]), ("wm", 20)], columnar)
        snap = h.snapshot(1)
        h2 = OperatorHarness(mk(), keyed=True, restored=snap)
        _feed(h2, [("batch", [("a", 2, 5), ("b", 3, 7)]), ("wm", 15)], columnar)
        outputs.append(_normalized(h2))
    assert outputs[0] == outputs[1]
    assert [(r[0], r[3][0]) for r in outputs[0][0]] == [("b", 1)]


# --- bad input ----------------------------------------------------------------------------------


def test_bad_batches_fail_naming_operator_and_column():
    h = OperatorHarness(columnar_operator(10, 10, 0), keyed=True)
    with pytest.raises(ColumnError, match=r"operator 'w'.*key column 'k'.*null"):
        h.process_columns({"k": ["a", None], "t": [1, 2], "v": [1, 2]}, [1, 2])
    h = OperatorHarness(columnar_operator(10, 10, 0), keyed=True)
    with pytest.raises(ColumnError, match=r"operator 'w'.*key column 'k' is not in the batch"):
        h.process_columns({"key": ["a"], "t": [1], "v": [1]}, [1])
    h = OperatorHarness(columnar_operator(10, 10, 0), keyed=True)
    with pytest.raises(ColumnError, match=r"aggregated column 'v' is not in the batch"):
        h.process_columns({"k": ["a"], "t": [1]}, [1])
    h = OperatorHarness(columnar_operator(10, 10, 0), keyed=True)
    h.process_columns({"k": ["a"], "t": [1], "v": [1]}, [1])
    with pytest.raises(ColumnError, match=r"schema of the stream changed.*column 'v' changed type"):
        h.process_columns({"k": ["a"], "t": [1], "v": [1.5]}, [1])
    h = OperatorHarness(columnar_operator(10, 10, 0), keyed=True)
    with pytest.raises(ColumnError, match=r"sum/mean of column 'v' needs numbers"):
        h.process_columns({"k": ["a"], "t": [1], "v": ["x"]}, [1])
    h = OperatorHarness(columnar_operator(10, 10, 0), keyed=True)
    with pytest.raises(ColumnError, match="need timestamps"):
        h.process_columns({"k": ["a"], "t": [1], "v": [1]})


def _python_calls(op_factory, n_rows: int) -> int:
    """Python-level calls (and calls of builtins) while a columnar operator takes one batch of
    ``n_rows`` rows of 50 keys over 200 ms (windows of 10 sliding by 5) and fires them."""
    import sys

    op = op_factory()
    h = OperatorHarness(op, keyed=True)
    emitted: list = []
    op.output.emit = emitted.append  # type: ignore[method-assign]  # keep the harness out of it
    rng = np.random.default_rng(3)
    keys = pa.array([f"k{i}" for i in range(50)]).take(pa.array(rng.integers(0, 50, n_rows)))
    ts = np.sort(rng.integers(0, 200, n_rows))
    rb = pa.RecordBatch.from_arrays(
        [keys, pa.array(ts), pa.array(rng.integers(0, 9, n_rows))], names=["k", "t", "v"]
    )
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        count += 1

    sys.setprofile(profile)
    try:
        h.process_columns(rb, ts)
        h.watermark(MAX_TS)
    finally:
        sys.setprofile(None)
    assert sum(len(b) for b in emitted) > 1000  # ~50 keys × 41 windows fired
    return count


def test_no_python_per_row_on_the_columnar_path():
    """The columnar operator's work in Python does not grow with the rows of a batch: 40×
    the rows make (almost) no more Python calls — nothing runs per row."""
    make = functools.partial(columnar_operator, 10, 5, 0)
    small = _python_calls(make, 2_000)
    large = _python_calls(make, 80_000)
    assert large <= small * 1.05 + 50, (small, large)


# --- two-phase aggregation: accumulators folded before the shuffle ------------------------------


@pytest.mark.parametrize("size, slide", [(10, 10), (12, 4), (9, 2)])
def test_pre_aggregated_windows_equal_the_reference_and_count_dropped_records(size, slide):
    from raystream.operators.columnar.local_aggregate import LocalWindowAggregateOperator

    rng = random.Random(size + slide)
    for _ in range(5):
        script = random_script(rng, 30, keys=6, disorder=30, nulls=True)
        expected, late = reference(script, size, slide, 0)
        local = OperatorHarness(
            LocalWindowAggregateOperator("local", ("k",), _assigner(size, slide), AGGS)
        )
        merge = ColumnWindowOperator(
            "w", ("k",), _assigner(size, slide), 0, None, AGGS, merge_partials=True
        )
        h = OperatorHarness(merge, keyed=True)
        pending: list = []  # accumulators of several batches travel as one message
        for step in script:
            if step[0] == "wm":
                if pending:
                    merge.process_batch(columns.concat(pending))
                    pending = []
                h.watermark(step[1])
                continue
            rows = _rows(step)
            before = len(local.column_batches())
            local.process_columns(
                pa.RecordBatch.from_pylist(rows, schema=SCHEMA), [r["t"] for r in rows]
            )
            for batch in local.column_batches()[before:]:
                # at most one row per key and window of the batch
                assert len(batch) <= len(rows) * -(-size // slide)
                pending.append(batch)
        if pending:
            merge.process_batch(columns.concat(pending))
        h.finish()
        assert _normalized(h)[0] == expected
        assert merge.metrics()["num_late_records_dropped"] == len(late)
        assert late  # the scripts do drop records


def test_the_api_pre_aggregates_only_without_lateness_and_late_output():
    env = StreamExecutionEnvironment()
    cols = env.from_arrow(
        pa.table({"k": ["a"], "ts": [1], "v": [1]}),
        WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts"),
    )
    plain = cols.key_by("k").window(TumblingEventTimeWindows(10)).aggregate(agg.count())
    late = (
        cols.key_by("k")
        .window(TumblingEventTimeWindows(10))
        .allowed_lateness(5)
        .aggregate(agg.count())
    )
    names = [t.name for t in env._transformations]
    assert names.count("Window(Aggregate)(local)") == 1
    assert plain._t.inputs[0][0].inputs[0][0].name == "Window(Aggregate)(local)"
    assert late._t.inputs[0][0].inputs[0][0] is cols._t
