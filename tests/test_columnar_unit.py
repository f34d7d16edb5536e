"""Columnar streams without Ray: key groups against the row path, Arrow IPC on the wire,
channel senders and routers, shape checks when the plan is built, timestamps from a column,
conversions between rows and columns, and the columnar file readers."""

from __future__ import annotations

import datetime as dt
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream import (
    GraphError,
    OutputTag,
    StreamExecutionEnvironment,
    TumblingEventTimeWindows,
    WatermarkStrategy,
    agg,
)
from raystream.core.column_keys import ColumnKeyGroups, KeyColumnError
from raystream.core.keys import key_group_of
from raystream.core.time import MIN_TS
from raystream.core.watermarks import WatermarkGenerator
from raystream.errors import SerializationError
from raystream.graph.column_partitioners import ColumnKeyGroupPartitioner, for_columns
from raystream.graph.partitioners import (
    KeyGroupPartitioner,
    RebalancePartitioner,
    ShufflePartitioner,
)
from raystream.graph.plan import build_plan
from raystream.graph.transformations import with_upstream
from raystream.operators.columnar.convert import ToColumnsOperator, ToRowsOperator
from raystream.operators.columnar.schema import ColumnError
from raystream.operators.files import FileSource
from raystream.operators.sources import Source, SplitReader
from raystream.operators.watermarks import TimestampsAndWatermarksOperator
from raystream.runtime import columns
from raystream.runtime.channels import ChannelSender, loads
from raystream.runtime.elements import Batch, ColumnBatch
from raystream.testing import OperatorHarness

# --- key groups: the columnar path places a key where the row path does ------------------------


class _Rows:
    def __init__(self):
        self.got: list = []

    def add(self, values, timestamps):
        self.got.extend(values)

    def add_columns(self, part):
        self.got.extend(part.values.to_pylist())


@pytest.mark.parametrize("max_parallelism", [128, 1000, 32768])
def test_key_groups_equal_the_row_paths_for_ints_strings_tuples_and_more(max_parallelism):
    rng = random.Random(max_parallelism)
    n = 3000
    data = {
        "i": [rng.randrange(-(10**12), 10**12) for _ in range(n)],
        "small": [rng.randrange(50) for _ in range(n)],
        "s": [
            rng.choice(["", "a", "ä", "key-7", "日本", "k" * 40]) + str(rng.randrange(9))
            for _ in range(n)
        ],
        "f": [rng.choice([0.5, 1.0, -2.0, 3.25, 1e300]) for _ in range(n)],
        "b": [rng.random() < 0.5 for _ in range(n)],
        "d": [dt.date(2020, 1, 1) + dt.timedelta(days=rng.randrange(900)) for _ in range(n)],
        "by": [bytes([rng.randrange(256)]) for _ in range(n)],
    }
    rb = pa.RecordBatch.from_pydict(data)
    rows = rb.to_pylist()
    for cols in (
        ["i"],
        ["small"],
        ["s"],
        ["f"],
        ["b"],
        ["d"],
        ["by"],
        ["s", "i"],
        ["small", "s", "b"],
    ):
        got = ColumnKeyGroups(cols, max_parallelism)(rb, "test")
        keys = [r[cols[0]] if len(cols) == 1 else tuple(r[c] for c in cols) for r in rows]
        assert got.tolist() == [key_group_of(k, max_parallelism) for k in keys], cols
    # a dictionary-encoded column and a chunked one give the same groups as plain values
    enc = pa.RecordBatch.from_arrays([pa.array(data["s"]).dictionary_encode()], names=["s"])
    assert ColumnKeyGroups(["s"], 128)(enc, "t").tolist() == [
        key_group_of(s, 128) for s in data["s"]
    ]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    keys=st.lists(
        st.tuples(st.integers(-(2**63), 2**63 - 1), st.text(max_size=6)), min_size=1, max_size=60
    )
)
def test_key_groups_of_two_columns_equal_those_of_row_tuples(keys):
    rb = pa.RecordBatch.from_arrays(
        [pa.array([a for a, _ in keys], pa.int64()), pa.array([b for _, b in keys])],
        names=["a", "b"],
    )
    assert ColumnKeyGroups(["a", "b"], 128)(rb, "t").tolist() == [
        key_group_of(k, 128) for k in keys
    ]


def test_key_by_router_sends_each_row_where_the_row_router_sends_its_record():
    rng = random.Random(5)
    rows = [{"k": f"k{rng.randrange(300)}", "n": rng.randrange(40), "v": i} for i in range(4000)]
    rb = pa.RecordBatch.from_pylist(rows)
    for p in (1, 2, 3, 7, 12):  # a pass per target up to 8, a radix sort above
        col_router = ColumnKeyGroupPartitioner(["k", "n"]).router(0, p, 128, "e")
        row_router = KeyGroupPartitioner(lambda r: (r["k"], r["n"])).router(0, p, 128, "e")
        col, row = [_Rows() for _ in range(p)], [_Rows() for _ in range(p)]
        col_router.route(ColumnBatch(rb, np.arange(len(rows))), col)
        row_router.route(Batch(rows), row)
        assert [c.got for c in col] == [r.got for r in row]  # same targets, order kept


def test_null_or_missing_key_columns_are_named():
    rb = pa.RecordBatch.from_pydict({"k": ["a", None], "v": [1, 2]})
    with pytest.raises(KeyColumnError, match=r"key_by of 'e'.*key column 'k' holds 1 null"):
        ColumnKeyGroupPartitioner(["k"]).router(0, 2, 128, "e").route(
            ColumnBatch(rb), [_Rows(), _Rows()]
        )
    with pytest.raises(
        KeyColumnError, match=r"key column 'x' is not in the batch \(columns: k, v\)"
    ):
        ColumnKeyGroups(["x"], 128)(rb, "test")


# --- the wire -----------------------------------------------------------------------------------


def test_column_batches_travel_as_arrow_ipc_and_come_back_equal():
    rb = pa.RecordBatch.from_pydict({"k": ["a", "b", None], "v": [1.5, None, 3.0]})
    for stamps in (None, np.array([MIN_TS + 1, 0, 2**62], dtype=np.int64)):
        payload = columns.encode(ColumnBatch(rb, stamps), "ch")
        assert type(payload) is columns.PAYLOAD_TYPE
        back = loads(payload)
        assert type(back) is ColumnBatch and back.values.equals(rb)
        assert (
            (back.timestamps is None)
            if stamps is None
            else back.timestamps.tolist() == stamps.tolist()
        )
    clash = pa.RecordBatch.from_pydict({columns.TIMESTAMP_COLUMN: [1]})
    with pytest.raises(SerializationError, match="reserves for event timestamps"):
        columns.encode(ColumnBatch(clash, np.array([1])), "ch")


class _Pushes:
    def __init__(self):
        self.payloads: list = []

    def __call__(self, channel, seq, payload):
        import asyncio

        self.payloads.append(payload)
        f = asyncio.get_event_loop().create_future()
        f.set_result(None)
        return f


def test_sender_seals_columns_by_rows_and_bytes_in_order():
    import asyncio

    push = _Pushes()
    sender = ChannelSender(push, 0, 4, batch_size=100, monotonic=lambda: 0.0, name="ch")
    assert sender.column_batch_size == 400
    parts = []
    for start in range(0, 1000, 70):
        rb = pa.RecordBatch.from_pydict({"v": list(range(start, min(1000, start + 70)))})
        parts.append(rb)
        sender.add_columns(ColumnBatch(rb, np.asarray(rb.column(0).to_numpy())))
        sender.seal_full()
    assert sender.has_buffered() and sender.column_rows == 1000 - 2 * 400
    sender.seal()
    asyncio.run(sender.drain())
    batches = [loads(p) for p in push.payloads]
    assert [len(b) for b in batches] == [400, 400, 200]
    got = [v for b in batches for v in b.values.column(0).to_pylist()]
    assert got == list(range(1000))
    assert [t for b in batches for t in b.timestamps.tolist()] == list(range(1000))
    assert sender.records_sent == 1000 and sender.batches_sent == 3

    # large rows: about message_bytes per message, whatever the row limit
    push = _Pushes()
    sender = ChannelSender(push, 0, 4, 100, lambda: 0.0, "ch", message_bytes=2000)
    sender.add_columns(ColumnBatch(pa.RecordBatch.from_pydict({"s": ["x" * 100] * 300})))
    sender.seal()
    asyncio.run(sender.drain())
    sizes = [len(loads(p)) for p in push.payloads]
    assert sum(sizes) == 300 and max(sizes) < 100 and sender.resplit >= 1


def test_columnar_edges_take_column_routers_or_refuse():
    assert for_columns(RebalancePartitioner(), "e").name == "rebalance"
    with pytest.raises(GraphError, match="decides per record"):
        for_columns(ShufflePartitioner(), "e")
    with pytest.raises(GraphError, match="key_by\\('col'\\)"):
        for_columns(KeyGroupPartitioner(len), "e")
    router = for_columns(RebalancePartitioner(), "e").router(1, 3, 128, "e")
    sinks = [_Rows() for _ in range(3)]
    for i in range(5):
        router.route(ColumnBatch(pa.RecordBatch.from_pydict({"v": [i]})), sinks)
    assert [s.got for s in sinks] == [[{"v": 2}], [{"v": 0}, {"v": 3}], [{"v": 1}, {"v": 4}]]


# --- the plan knows each stream's shape ---------------------------------------------------------


class _ColumnsOf(Source):
    """A columnar source for plans that are built but not run."""

    columnar = True

    def create_splits(self, parallelism):
        return [0]

    def open_split(self, split, offset) -> SplitReader:
        raise NotImplementedError  # never opened: these plans are only built


def _columns_stream(env):
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    return env.from_source(_ColumnsOf(), strategy, "cols")


def test_row_operators_on_a_columnar_stream_are_refused_when_built():
    env = StreamExecutionEnvironment()
    cols = _columns_stream(env)
    assert cols.is_columnar
    for what, call in [
        ("map()", lambda: cols.map(str)),
        ("filter()", lambda: cols.filter(bool)),
        ("flat_map()", lambda: cols.flat_map(list)),
        ("process()", lambda: cols.process(lambda v, c: [v])),
        ("add_sink()", lambda: cols.add_sink(print)),
        ("join()", lambda: cols.join(cols)),
        ("shuffle()", lambda: cols.shuffle()),
        ("window_all()", lambda: cols.window_all(TumblingEventTimeWindows.of(10))),
    ]:
        with pytest.raises(
            GraphError, match=rf"{what.replace('(', '[(]').replace(')', '[)]')}.*to_rows\(\)"
        ):
            call()
    with pytest.raises(GraphError, match="key it by column name"):
        cols.key_by(lambda r: r["k"])
    keyed = cols.key_by("k")
    with pytest.raises(GraphError, match="calls a function per record"):
        keyed.reduce(lambda a, b: a)
    with pytest.raises(GraphError, match="calls a function per record"):
        keyed.window(TumblingEventTimeWindows.of(10)).reduce(lambda a, b: a)
    with pytest.raises(GraphError, match="tumbling or sliding"):
        from raystream import EventTimeSessionWindows

        keyed.window(EventTimeSessionWindows.with_gap(10)).aggregate(agg.count())
    with pytest.raises(GraphError, match="used twice"):
        keyed.window(TumblingEventTimeWindows.of(10)).aggregate(
            agg.count(), agg.sum("k").alias("count")
        )
    with pytest.raises(GraphError, match="to_rows\\(\\) converts a columnar stream"):
        cols.to_rows().to_rows()
    with pytest.raises(GraphError, match="union\\(\\) of a stream of columns and one of rows"):
        cols.union(env.from_collection([1]))
    with pytest.raises(GraphError, match="emits columns: take timestamps from a column"):
        env.from_source(
            _ColumnsOf(), WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(len)
        )


def test_a_built_plan_carries_the_shapes_and_refuses_a_mismatch():
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    late = OutputTag("late")
    windows = (
        _columns_stream(env)
        .key_by("k")
        .window(TumblingEventTimeWindows.of(10))
        .side_output_late_data(late)
        .aggregate(agg.count())
    )
    assert windows.is_columnar and windows.get_side_output(late).is_columnar
    rows = windows.to_rows()
    assert not rows.is_columnar and rows.map(str) is not None
    back = rows.to_columns()
    assert back.is_columnar
    plan = build_plan("p", with_upstream(env._transformations), env.get_config())
    text = plan.describe()
    assert "HASH(k)" in text and "ToRows" in text
    # the plan itself refuses an edge whose shapes differ (a node built around the API)
    rows._t.accepts = "rows"
    with pytest.raises(
        GraphError, match=r"'ToRows' takes rows, but 'Window\(Aggregate\)' emits columns"
    ):
        build_plan("p", with_upstream(env._transformations), env.get_config())


# --- timestamps and watermarks from a column ----------------------------------------------------


def _stamped(strategy, rb):
    op = TimestampsAndWatermarksOperator("ts", strategy)
    h = OperatorHarness(op)
    h.process_columns(rb)
    op.on_periodic(0)
    return h


def test_timestamps_from_int_float_and_timestamp_columns():
    bounded = WatermarkStrategy.for_bounded_out_of_orderness(5)
    cases = {
        "int": pa.array([10, 30, 20], pa.int32()),
        "float": pa.array([10.9, 30.2, 20.0]),
        "us": pa.array([10_000, 30_999, 20_000], pa.timestamp("us")),
        "s": pa.array([0, 1, 0], pa.timestamp("s")),
    }
    expected = {"int": [10, 30, 20], "float": [10, 30, 20], "us": [10, 30, 20], "s": [0, 1000, 0]}
    for name, arr in cases.items():
        rb = pa.RecordBatch.from_arrays([arr, pa.array([1, 2, 3])], names=["ts", "v"])
        h = _stamped(bounded.with_timestamp_column("ts"), rb)
        assert [t for _, t in h.output] == expected[name], name
        assert h.watermarks == [max(expected[name]) - 5 - 1]


def test_invalid_timestamps_fail_naming_the_column_or_go_to_the_side_output():
    rb = pa.RecordBatch.from_pydict({"ts": [1, None, 3], "v": ["a", "b", "c"]})
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    with pytest.raises(ColumnError, match=r"operator 'ts'.*timestamp column 'ts' holds 1 invalid"):
        _stamped(strategy, rb)
    tag = OutputTag("bad")
    h = _stamped(strategy.with_invalid_timestamps_to(tag), rb)
    assert [v["v"] for v, _ in h.output] == ["a", "c"]
    assert [v for v, _ in h.side_output(tag)] == [{"ts": None, "v": "b"}]
    with pytest.raises(ColumnError, match="timestamp column 'ts' is not in the batch"):
        _stamped(strategy, pa.RecordBatch.from_pydict({"time": [1]}))
    with pytest.raises(ColumnError, match="timestamp column 'ts' has type string"):
        _stamped(strategy, pa.RecordBatch.from_pydict({"ts": ["1"]}))


class _EveryTen(WatermarkGenerator):
    """Punctuated: a watermark right after every record whose timestamp is a multiple of 10."""

    def on_event(self, event, event_timestamp, output):
        if event_timestamp % 10 == 0:
            output.emit_watermark(event_timestamp)

    def on_periodic_emit(self, output):
        pass


def test_a_punctuated_generator_cuts_a_column_batch_where_it_emits():
    strategy = WatermarkStrategy.for_generator(_EveryTen).with_timestamp_column("ts")
    op = TimestampsAndWatermarksOperator("ts", strategy)
    h = OperatorHarness(op)
    h.process_columns({"ts": [3, 10, 12, 20, 21, 25]})
    assert [len(b) for b in h.column_batches()] == [2, 2, 2]
    assert h.watermarks == [10, 20]


def test_the_row_path_reads_the_same_timestamp_column():
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    op = TimestampsAndWatermarksOperator("ts", strategy)
    h = OperatorHarness(op)
    h.process([{"ts": 5}, {"ts": 7}])
    assert [t for _, t in h.output] == [5, 7]


# --- rows <-> columns ---------------------------------------------------------------------------


def test_to_columns_and_back_to_rows():
    from raystream import Row

    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": None}]
    h = OperatorHarness(ToColumnsOperator("c"))
    h.process(rows, [5, 6])
    h.process([Row(a=3, b="z")], [7])
    (first, second) = h.column_batches()
    assert first.values.schema.names == ["a", "b"] and first.timestamps.tolist() == [5, 6]
    back = OperatorHarness(ToRowsOperator("r"))
    back.operator.process_batch(first)
    assert back.output == [({"a": 1, "b": "x"}, 5), ({"a": 2, "b": None}, 6)]
    with pytest.raises(ColumnError, match="column 'a' .*cannot hold"):
        h.process([{"a": "not a number", "b": "y"}])
    with pytest.raises(ColumnError, match=r"field\(s\) \['c'\] are not columns"):
        h.process([{"a": 1, "b": "y", "c": 2}])
    schema = pa.schema([("x", pa.int64()), ("y", pa.string())])
    h = OperatorHarness(ToColumnsOperator("c", schema))
    h.process([(1, "a"), (2, "b")])
    assert h.values() == [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}]
    with pytest.raises(ColumnError, match="has 3 fields, the schema 2"):
        h.process([(1, "a", 3)])
    one = OperatorHarness(ToColumnsOperator("c", pa.schema([("v", pa.float64())])))
    one.process([1.5, 2.0])
    assert one.values() == [{"v": 1.5}, {"v": 2.0}]


# --- columnar file readers ----------------------------------------------------------------------


def test_columnar_file_readers_resume_at_an_offset_and_equal_the_row_readers(tmp_path):
    rows = [{"k": f"k{i % 7}", "ts": i, "v": i * 1.5} for i in range(2500)]
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "data.parquet", row_group_size=1000)
    (tmp_path / "csv").mkdir()
    import pyarrow.csv as pacsv

    pacsv.write_csv(table, tmp_path / "csv" / "data.csv")
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for make in (
        lambda c: FileSource.parquet(tmp_path / "data.parquet", columnar=c),
        lambda c: FileSource.csv(tmp_path / "csv", columnar=c),
        lambda c: FileSource.jsonl(tmp_path / "data.jsonl", columnar=c),
    ):
        for offset in (0, 333):
            src_rows, src_cols = make(False), make(True)
            assert src_cols.columnar and not src_rows.columnar
            got_rows: list = []
            got_cols: list = []
            for split in src_rows.create_splits(2):
                r = src_rows.open_split(split, offset)
                while (part := r.read(400)) is not None:
                    got_rows.extend(part)
                c = src_cols.open_split(split, offset)
                while (part := c.read(400)) is not None:
                    assert type(part) is ColumnBatch and len(part) <= 400
                    got_cols.extend(part.values.to_pylist())
                assert c.offset == r.offset
            assert got_cols == got_rows and got_rows
    with pytest.raises(GraphError, match="no columnar mode"):
        FileSource.for_lines(tmp_path / "data.jsonl").__class__(
            tmp_path / "data.jsonl", "lines", columnar=True
        )


# --- sources refuse a schema that changes; sinks write batches as they are ----------------------


class _Drifting(SplitReader):
    """A columnar reader whose second batch has another type in column ``v``."""

    def __init__(self):
        self.batches = [
            pa.RecordBatch.from_pydict({"k": ["a"], "v": [1]}),
            pa.RecordBatch.from_pydict({"k": ["b"], "v": ["x"]}),
        ]

    def read(self, max_records):
        return self.batches.pop(0) if self.batches else None


class _DriftingSource(Source):
    columnar = True

    def create_splits(self, parallelism):
        return [0]

    def open_split(self, split, offset):
        return _Drifting()


def test_a_columnar_source_refuses_a_schema_that_changes_mid_stream():
    from raystream.operators.sources import SourceOperator

    h = OperatorHarness(SourceOperator("drift", _DriftingSource(), [0]))
    h.operator.emit_next(10)
    assert h.values() == [{"k": "a", "v": 1}]
    with pytest.raises(
        ColumnError, match=r"operator 'drift'.*column 'v' changed type from int64 to string"
    ):
        h.operator.emit_next(10)


def test_file_sinks_write_column_batches_as_they_are(tmp_path):
    import pyarrow.csv as pacsv

    from raystream import FileSink
    from raystream.operators.sinks import SinkContext

    rows = [{"k": f"k{i}", "v": i * 0.5} for i in range(10)]
    rb = pa.RecordBatch.from_pylist(rows)
    for fmt, read in [
        ("parquet", lambda p: pq.read_table(p).to_pylist()),
        ("csv", lambda p: pacsv.read_csv(p).to_pylist()),
        ("jsonl", lambda p: [json.loads(line) for line in open(p)]),
    ]:
        sink = getattr(FileSink, fmt)(tmp_path / fmt)
        assert sink.accepts_columns
        writer = sink.create_writer(SinkContext("sink", 0, 1))
        writer.write(ColumnBatch(rb.slice(0, 4)))
        writer.write(ColumnBatch(rb.slice(4)))
        if fmt != "jsonl":
            with pytest.raises(Exception, match="column 'v' changed type"):
                writer.write(ColumnBatch(pa.RecordBatch.from_pydict({"k": ["x"], "v": ["y"]})))
        writer.flush()
        (path,) = writer.result()
        assert read(path) == rows, fmt
