"""map_batches without Ray: batch formats both ways, cutting by size / deadline / watermark /
end of input (with the harness's processing-time clock), one construction per subtask, failing
batches (never half-emitted; the failing record named or dead-lettered), snapshot/restore."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from raystream import ErrorPolicy, OutputTag, StreamExecutionEnvironment, UserFunctionError
from raystream.errors import GraphError
from raystream.operators.batch_format import (
    BatchOutputError,
    batch_to_rows,
    rows_to_batch,
)
from raystream.operators.map_batches import MapBatchesOperator
from raystream.testing import OperatorHarness

ROWS = [{"id": i, "text": f"t{i}", "score": i / 2} for i in range(5)]

# -- converters ----------------------------------------------------------------------------------


def test_dict_rows_become_columns_in_every_format_and_come_back():
    np_batch = rows_to_batch(ROWS, "numpy")
    assert list(np_batch) == ["id", "text", "score"]
    assert np_batch["id"].tolist() == [0, 1, 2, 3, 4] and np_batch["text"].dtype == object
    df = rows_to_batch(ROWS, "pandas")
    assert isinstance(df, pd.DataFrame) and df["score"].tolist() == [0, 0.5, 1, 1.5, 2]
    table = rows_to_batch(ROWS, "pyarrow")
    assert isinstance(table, pa.Table) and table.column("text").to_pylist()[4] == "t4"
    assert rows_to_batch(ROWS, "rows") == ROWS
    for batch in (np_batch, df, table, ROWS):
        assert batch_to_rows(batch) == ROWS  # identity function: the same records


def test_other_records_become_the_item_column():
    batch = rows_to_batch(["a", "bb", "ccc"], "numpy")
    assert list(batch) == ["item"] and batch["item"].tolist() == ["a", "bb", "ccc"]
    ragged = rows_to_batch([[1, 2], [3]], "numpy")
    assert ragged["item"].dtype == object and ragged["item"][1] == [3]
    vectors = rows_to_batch([[1.0, 2.0], [3.0, 4.0]], "numpy")["item"]
    assert vectors.shape == (2, 2) and vectors.dtype.kind == "f"
    mixed = rows_to_batch(["a", 1, None, ""], "numpy")["item"]  # never coerced to strings
    assert mixed.dtype == object and mixed.tolist() == ["a", 1, None, ""]


def test_outputs_become_rows_one_array_per_row_of_a_matrix():
    out = batch_to_rows({"id": np.arange(3), "vec": np.ones((3, 4), dtype=np.float32)})
    assert [r["id"] for r in out] == [0, 1, 2] and type(out[0]["id"]) is int
    assert out[2]["vec"].shape == (4,)
    assert batch_to_rows(pa.record_batch({"x": [1, 2]})) == [{"x": 1}, {"x": 2}]
    assert batch_to_rows(("a", "b")) == ["a", "b"]
    with pytest.raises(BatchOutputError, match="different lengths"):
        batch_to_rows({"a": [1, 2], "b": [1]})
    with pytest.raises(BatchOutputError, match="scalar"):
        batch_to_rows({"a": np.float32(1.0)})
    with pytest.raises(BatchOutputError, match="returned int"):
        batch_to_rows(7)


# -- cutting batches -----------------------------------------------------------------------------


class Recorder:
    """A "model": doubles ``x``; records the size of every batch it gets."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, batch: dict) -> dict:
        self.sizes.append(len(batch["x"]))
        return {"x": batch["x"], "y": batch["x"] * 2}


def op_for(fn: Any, batch_size: int = 4, max_wait_ms: int | None = None, **kw: Any):
    fmt = kw.pop("batch_format", "numpy")
    return MapBatchesOperator(
        "Model", fn=fn, batch_size=batch_size, batch_format=fmt, max_wait_ms=max_wait_ms, **kw
    )


@pytest.mark.parametrize("seed", range(5))
def test_batches_are_cut_by_size_and_results_equal_the_reference(seed):
    rng = random.Random(seed)
    model = Recorder()
    h = OperatorHarness(op_for(model, batch_size=4))
    records = [{"x": i} for i in range(rng.randint(1, 60))]
    i = 0
    while i < len(records):
        j = min(len(records), i + rng.randint(1, 9))
        h.process(records[i:j], [10 * k for k in range(i, j)])
        i = j
    assert all(s == 4 for s in model.sizes)  # only full batches before the end
    h.finish()
    assert h.output == [({"x": k, "y": 2 * k}, 10 * k) for k in range(len(records))]
    assert sum(model.sizes) == len(records) and all(s <= 4 for s in model.sizes)


def test_a_trickle_waits_at_most_max_wait_ms_of_processing_time():
    model = Recorder()
    h = OperatorHarness(op_for(model, batch_size=100, max_wait_ms=50), start_ms=1000)
    h.process([{"x": 1}])
    assert h.operator.next_processing_timer() == 1050
    h.advance_processing_time(1030).process([{"x": 2}])  # the deadline stays the oldest's
    h.advance_processing_time(1049)
    assert h.output == []
    h.advance_processing_time(1050)
    assert h.values() == [{"x": 1, "y": 2}, {"x": 2, "y": 4}] and model.sizes == [2]
    assert h.operator.next_processing_timer() is None


def test_a_watermark_sends_the_records_before_it_first():
    model = Recorder()
    h = OperatorHarness(op_for(model, batch_size=100))
    h.process([{"x": 1}, {"x": 2}], [5, 6])
    assert h.output == [] and h.watermarks == []
    h.watermark(7)
    assert h.output == [({"x": 1, "y": 2}, 5), ({"x": 2, "y": 4}, 6)] and h.watermarks == [7]


class Counting:
    constructed: list = []

    def __init__(self, factor: int, *, offset: int = 0) -> None:
        Counting.constructed.append((factor, offset))
        self.factor, self.offset = factor, offset

    def __call__(self, batch: list, extra: int = 0) -> list:
        return [v * self.factor + self.offset + extra for v in batch]


def test_a_callable_class_is_constructed_once_with_its_arguments():
    Counting.constructed.clear()
    h = OperatorHarness(
        op_for(
            Counting,
            batch_size=2,
            batch_format="rows",
            fn_constructor_args=(10,),
            fn_constructor_kwargs={"offset": 1},
            fn_kwargs={"extra": 100},
        )
    )
    h.process([1, 2, 3]).finish()
    assert Counting.constructed == [(10, 1)]
    assert h.values() == [111, 121, 131]


def test_outputs_of_another_length_take_the_batch_s_latest_timestamp():
    def keep_even(batch: list) -> list:
        return [v for v in batch if v % 2 == 0]

    h = OperatorHarness(op_for(keep_even, batch_size=3, batch_format="rows"))
    h.process([1, 2, 4], [10, 30, 20]).finish()
    assert h.output == [(2, 30), (4, 30)]


# -- failing batches -----------------------------------------------------------------------------


class Picky:
    """Raises on any batch holding a record with ``bad`` set; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch: dict) -> dict:
        self.calls += 1
        for i, bad in zip(batch["id"], batch["bad"]):
            if bad:
                raise ValueError(f"cannot embed record {i}")
        return {"id": batch["id"], "out": batch["id"] + 1000}


def records(n: int, bad: set[int]) -> list[dict]:
    return [{"id": i, "bad": i in bad} for i in range(n)]


def test_a_failing_batch_is_never_half_emitted_and_the_error_names_the_record():
    model = Picky()
    h = OperatorHarness(op_for(model, batch_size=8))
    h.process(records(8, set()))  # a good first batch
    with pytest.raises(UserFunctionError) as info:
        h.process([{**r, "id": r["id"] + 8} for r in records(8, {5})])
    assert [v["id"] for v in h.values()] == list(range(8))  # nothing of the failing batch
    err = info.value
    assert err.operator == "Model" and "'id': 13" in err.record
    assert err.cause_type == "ValueError" and "batch of 8 records" in str(err)


@pytest.mark.parametrize("seed", range(4))
def test_with_a_dead_letter_policy_bad_records_are_isolated_and_the_rest_emitted(seed):
    rng = random.Random(seed)
    n = rng.randint(10, 40)
    bad = set(rng.sample(range(n), rng.randint(1, 3)))
    dlq = OutputTag("dlq")
    op = op_for(Picky(), batch_size=8)
    op.error_policy = ErrorPolicy.dead_letter(dlq)
    h = OperatorHarness(op)
    recs = records(n, bad)
    h.process(recs, [1000 + i for i in range(n)]).finish()
    assert h.output == [({"id": i, "out": i + 1000}, 1000 + i) for i in range(n) if i not in bad]
    letters = h.side_output(dlq)
    assert sorted((d.record["id"], t) for d, t in letters) == sorted((i, 1000 + i) for i in bad)
    assert {d.exception_type for d, _ in letters} == {"ValueError"}
    assert op.metrics()["records_dead_lettered"] == len(bad)


def test_a_batch_that_fails_only_whole_is_named_as_a_batch():
    def too_big(batch: list) -> list:
        if len(batch) > 2:
            raise MemoryError("batch too large for the device")
        return batch

    h = OperatorHarness(op_for(too_big, batch_size=4, batch_format="rows"))
    with pytest.raises(UserFunctionError, match="passed when split") as info:
        h.process(["a", "b", "c", "d"])
    assert info.value.cause_type == "MemoryError" and h.output == []


def test_a_bad_return_value_names_the_operator():
    h = OperatorHarness(op_for(lambda batch: None, batch_size=1))
    with pytest.raises(UserFunctionError, match="returned NoneType") as info:
        h.process([{"x": 1}])
    assert info.value.operator == "Model"


# -- checkpoints ----------------------------------------------------------------------------------


def test_buffered_records_are_in_the_snapshot_and_run_after_a_restore():
    h = OperatorHarness(op_for(Recorder(), batch_size=4), checkpoint_interval_ms=100)
    h.process([{"x": i} for i in range(6)], list(range(6)))
    snap = h.snapshot(1)
    before = list(h.output)
    assert len(before) == 4  # one full batch; two records buffered, not flushed
    model = Recorder()
    h2 = OperatorHarness(op_for(model, batch_size=4), restored=snap)
    h2.process([{"x": 6}], [6]).finish()
    assert before + h2.output == [({"x": i, "y": 2 * i}, i) for i in range(7)]
    assert model.sizes == [3]


def test_api_validates_arguments():
    env = StreamExecutionEnvironment()
    s = env.from_collection([1])
    with pytest.raises(TypeError, match="no __call__"):
        s.map_batches(object)
    with pytest.raises(GraphError, match="callable class"):
        s.map_batches(lambda b: b, fn_constructor_args=(1,))
    with pytest.raises(GraphError, match="batch_size"):
        s.map_batches(lambda b: b, batch_size=0)
    with pytest.raises(ValueError, match="batch_format"):
        s.map_batches(lambda b: b, batch_format="torch")
    out = s.map_batches(Counting, fn_constructor_args=(2,), num_gpus=0.5, concurrency=3)
    assert out.get_parallelism() == 3 and out._t.resources == {"num_gpus": 0.5}
