"""FileSource / FileSink: round trips through real jobs on a local Ray, resumable split readers,
error messages, checked against plain Python and pyarrow."""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter, namedtuple
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raystream import StreamExecutionEnvironment
from raystream.errors import GraphError, JobExecutionError
from raystream.operators.files import (
    FileFormatError,
    FileSink,
    FileSource,
    SchemaMismatchError,
)
from raystream.operators.sinks import SinkContext
from raystream.runtime.elements import Batch

ray_test = pytest.mark.usefixtures("ray_session")

Point = namedtuple("Point", ["name", "x", "y"])


@dataclass
class Reading:
    sensor: str
    value: float
    count: int


def make_env(parallelism: int = 2) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    return env


def canon(records) -> Counter:
    """A multiset of records that compares dicts by content, whatever their key order."""
    return Counter(json.dumps(r, sort_keys=True) for r in records)


def all_paths(sink_result) -> list[str]:
    return [p for per_subtask in sink_result for p in per_subtask]


def read_jsonl_files(paths) -> list:
    out = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            out.extend(json.loads(line) for line in f if line.strip())
    return out


def read_back(source: FileSource) -> list:
    """Reads a source on the driver, split by split (no job)."""
    out = []
    for split in source.create_splits(2):
        reader = source.open_split(split, None)
        out.extend(drain(reader, 100))
        reader.close()
    return out


def drain(reader, chunk: int) -> list:
    out = []
    while (got := reader.read(chunk)) is not None:
        assert got, "a file reader never answers 'nothing now'"
        assert len(got) <= chunk
        out.extend(got)
    return out


# --- round trips through jobs ---------------------------------------------------------------------


@ray_test
def test_lines_to_jsonl_round_trip(tmp_path):
    text = "alpha\r\nbeta\n\n  gamma  \nünïcode ✓\nlast line without newline"
    src = tmp_path / "in.txt"
    src.write_bytes(text.encode("utf-8"))
    expected_lines = text.replace("\r\n", "\n").split("\n")

    env = make_env(2)
    ds = env.from_source(FileSource.for_lines(str(src)), source_name="lines")
    ds.map(lambda line: {"line": line, "n": len(line)}).sink_to(
        FileSink.jsonl(str(tmp_path / "out"))
    ).name("out")
    result = env.execute("lines")
    paths = all_paths(result.get_sink_result("out"))
    assert paths and all(p.endswith(".jsonl") for p in paths)

    # read back independently ...
    expected = [{"line": s, "n": len(s)} for s in expected_lines]
    assert canon(read_jsonl_files(paths)) == canon(expected)
    # ... and with FileSource over the output directory
    assert canon(read_back(FileSource.jsonl(str(tmp_path / "out")))) == canon(expected)


@ray_test
def test_jsonl_round_trip_parallel(tmp_path):
    records = [
        {"id": i, "tags": ["a", "b"][: i % 3], "nested": {"v": i * 0.5}, "s": f"r{i}"}
        for i in range(3000)
    ]
    env = make_env(2)
    env.from_collection(records).rebalance().sink_to(FileSink.jsonl(str(tmp_path / "out"))).name(
        "sink"
    )
    per_subtask = env.execute("write").get_sink_result("sink")
    assert len(per_subtask) == 2
    for subtask, paths in enumerate(per_subtask):
        assert [p.rsplit("/", 1)[-1] for p in paths] == [f"part-{subtask}-0.jsonl"]
    assert canon(read_jsonl_files(all_paths(per_subtask))) == canon(records)

    assert canon(read_back(FileSource.jsonl(str(tmp_path / "out")))) == canon(records)


@ray_test
def test_csv_round_trip_with_dict_namedtuple_and_dataclass_records(tmp_path):
    # floats with a fraction: CSV cannot tell 3.0 from 3, so integral floats would read back as ints
    rows = [{"name": f"n{i}", "x": i, "y": i + 0.25} for i in range(500)]
    env = make_env(2)
    env.from_collection(rows).sink_to(FileSink.csv(str(tmp_path / "dicts"))).name("dicts")
    # parallelism 1 (chained to the collection source) keeps the job small
    tuples = env.from_collection([Point(**r) for r in rows])
    tuples.sink_to(FileSink.csv(str(tmp_path / "tuples"))).name("tuples").set_parallelism(1)
    readings = [Reading(f"s{i % 7}", i + 0.5, i) for i in range(300)]
    env.from_collection(readings).sink_to(FileSink.csv(str(tmp_path / "dc"))).name(
        "dc"
    ).set_parallelism(1)
    result = env.execute("csv")

    for name in ("dicts", "tuples"):
        paths = all_paths(result.get_sink_result(name))
        assert paths and all(p.endswith(".csv") for p in paths)
        # independent reader: the csv module (all values are strings there)
        got = []
        for p in paths:
            with open(p, newline="") as f:
                got.extend(
                    {"name": r["name"], "x": int(r["x"]), "y": float(r["y"])}
                    for r in csv.DictReader(f)
                )
        assert canon(got) == canon(rows)

    assert canon(read_back(FileSource.csv(str(tmp_path / "dicts")))) == canon(rows)
    assert canon(read_back(FileSource.csv(str(tmp_path / "tuples")))) == canon(rows)
    back = read_back(FileSource.csv(str(tmp_path / "dc")))
    assert canon(back) == canon(
        [{"sensor": r.sensor, "value": r.value, "count": r.count} for r in readings]
    )


@ray_test
def test_jsonl_to_parquet_round_trip(tmp_path):
    src = tmp_path / "in.jsonl"
    records = [
        {"a": i, "b": f"v{i % 13}", "c": None if i % 5 == 0 else i * 0.25} for i in range(2000)
    ]
    src.write_text("\n".join(json.dumps(r) for r in records) + "\n")

    env = make_env(2)
    ds = env.from_source(FileSource.jsonl(str(src)), source_name="in")
    sink = FileSink.parquet(str(tmp_path / "out"), row_group_size=300)
    ds.rebalance().map(lambda r: {**r, "x": r["a"] * 2}).sink_to(sink).name("out")
    paths = all_paths(env.execute("job").get_sink_result("out"))
    assert paths and all(p.endswith(".parquet") for p in paths)

    expected = [{**r, "x": r["a"] * 2} for r in records]
    tables = [pq.read_table(p) for p in paths]
    assert canon(row for t in tables for row in t.to_pylist()) == canon(expected)
    assert all(pq.ParquetFile(p).metadata.num_row_groups > 1 for p in paths)  # 1000 rows / 300

    assert canon(read_back(FileSource.parquet(str(tmp_path / "out")))) == canon(expected)
    only_a = read_back(FileSource.parquet(str(tmp_path / "out"), columns=["a"]))
    assert sorted(r["a"] for r in only_a) == list(range(2000))
    assert all(set(r) == {"a"} for r in only_a)


@ray_test
def test_directory_input_with_several_files(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    expected = []
    for f in range(5):
        lines = [f"file{f}-line{i}" for i in range(f * 10 + 1)]
        (d / f"part-{f}.txt").write_text("\n".join(lines) + "\n")
        expected.extend(lines)
    (d / ".hidden.txt").write_text("hidden\n")
    (d / "_SUCCESS").write_text("marker\n")
    (d / "sub").mkdir()
    (d / "sub" / "nested.txt").write_text("nested\n")

    source = FileSource.for_lines(str(d))
    splits = source.create_splits(3)
    assert [s.path.rsplit("/", 1)[-1] for s in splits] == [f"part-{f}.txt" for f in range(5)]

    env = make_env(3)
    got = env.from_source(source, source_name="dir").execute_and_collect()
    assert Counter(got) == Counter(expected)


@ray_test
def test_parquet_row_groups_split_across_parallelism_2(tmp_path):
    path = tmp_path / "data.parquet"
    n, rg = 1000, 100
    pq.write_table(
        pa.table({"k": list(range(n)), "s": [str(i) for i in range(n)]}), path, row_group_size=rg
    )

    source = FileSource.parquet(str(path))
    splits = source.create_splits(2)
    assert [s.row_group for s in splits] == list(range(n // rg))
    assert all(s.num_rows == rg for s in splits)

    env = make_env(2)
    # forward edge, chained: sink subtask i writes exactly what source subtask i read
    env.from_source(source, source_name="pq").sink_to(FileSink.jsonl(str(tmp_path / "out"))).name(
        "out"
    )
    per_subtask = env.execute("pq").get_sink_result("out")
    assert len(per_subtask) == 2
    for subtask, paths in enumerate(per_subtask):
        # split i goes to subtask i mod 2: row groups 0, 2, 4... and 1, 3, 5...
        want = [
            {"k": k, "s": str(k)}
            for g in range(subtask, n // rg, 2)
            for k in range(g * rg, (g + 1) * rg)
        ]
        assert canon(read_jsonl_files(paths)) == canon(want)


# --- resuming split readers (no Ray) --------------------------------------------------------------


def _write_inputs(tmp_path) -> dict[str, FileSource]:
    lines = [f"line {i}" if i % 4 else "" for i in range(57)]
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "a.jsonl").write_text(
        "\n".join(json.dumps({"i": i}) if i % 5 else "" for i in range(61)) + "\n"
    )
    with open(tmp_path / "a.csv", "w") as f:
        f.write("i,s\n" + "".join(f"{i},s{i}\n" for i in range(73)))
    pq.write_table(pa.table({"i": list(range(95))}), tmp_path / "a.parquet", row_group_size=40)
    return {
        "lines": FileSource.for_lines(str(tmp_path / "a.txt")),
        "jsonl": FileSource.jsonl(str(tmp_path / "a.jsonl")),
        # a tiny block size: the CSV is parsed in many blocks
        "csv": FileSource.csv(str(tmp_path / "a.csv"), block_size=64),
        "parquet": FileSource.parquet(str(tmp_path / "a.parquet")),
    }


@pytest.mark.parametrize("fmt", ["lines", "jsonl", "csv", "parquet"])
def test_split_reader_resumes_at_offset(tmp_path, fmt):
    source = _write_inputs(tmp_path)[fmt]
    for split in source.create_splits(2):
        reader = source.open_split(split, None)
        assert reader.offset == 0
        everything, offsets = [], [0]
        while (got := reader.read(7)) is not None:
            everything.extend(got)
            offsets.append(reader.offset)
        reader.close()
        assert offsets[-1] == len(everything) > 0
        for offset in [*offsets, 1, 3, len(everything) - 1]:
            r = source.open_split(split, offset)
            assert r.offset == offset
            rest = drain(r, 5)
            r.close()
            assert rest == everything[offset:], (fmt, split, offset)
        past = source.open_split(split, len(everything) + 10)
        assert past.read(5) is None
        past.close()

    if fmt == "lines":
        assert everything == [f"line {i}" if i % 4 else "" for i in range(57)]
    if fmt == "jsonl":
        assert everything == [{"i": i} for i in range(61) if i % 5]
    if fmt == "csv":
        assert everything == [{"i": i, "s": f"s{i}"} for i in range(73)]


def test_gzip_jsonl_and_csv_options(tmp_path):
    with gzip.open(tmp_path / "z.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"i": i}) + "\n" for i in range(20))
    source = FileSource.jsonl(str(tmp_path / "z.jsonl.gz"))
    (split,) = source.create_splits(1)
    assert drain(source.open_split(split, 4), 6) == [{"i": i} for i in range(4, 20)]

    (tmp_path / "semi.csv").write_text("a;b\n1;x\n2;y\n")
    source = FileSource.csv(
        str(tmp_path / "semi.csv"), delimiter=";", column_types={"a": pa.string()}
    )
    (split,) = source.create_splits(1)
    assert drain(source.open_split(split, 0), 10) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]
    with pytest.raises(GraphError, match="no_such_option"):
        FileSource.csv(str(tmp_path / "semi.csv"), no_such_option=1)


# --- sink writers (no Ray) ------------------------------------------------------------------------


def test_sink_writer_part_files_and_errors(tmp_path):
    out = tmp_path / "deep" / "out"
    writer = FileSink.jsonl(str(out)).create_writer(SinkContext("s", 3, 4))
    assert writer.result() == []
    writer.write(Batch([{"a": 1}, [1, 2], "x"]))
    with pytest.raises(TypeError, match="not JSON-serializable") as err:
        writer.write(Batch([{"a": object()}]))
    assert "'a'" in str(err.value)
    writer.flush()
    writer.write(Batch([None]))
    writer.flush()
    writer.close()
    assert [p.rsplit("/", 1)[-1] for p in writer.result()] == ["part-3-0.jsonl", "part-3-1.jsonl"]
    assert read_jsonl_files(writer.result()[:1]) == [{"a": 1}, [1, 2], "x"]

    for fmt in ("csv", "parquet"):
        writer = getattr(FileSink, fmt)(str(tmp_path / fmt)).create_writer(SinkContext("s", 0, 1))
        writer.write(Batch([{"a": 1, "b": "x"}]))
        with pytest.raises(SchemaMismatchError, match="not in the schema"):
            writer.write(Batch([{"a": 2, "b": "y", "zzz": 1}]))
        with pytest.raises(SchemaMismatchError, match="does not fit the schema") as err:
            writer.write(Batch([{"a": 3, "b": "ok"}, {"a": "not an int", "b": "z"}]))
        assert "not an int" in str(err.value)
        with pytest.raises(TypeError, match="dict, dataclass or namedtuple"):
            writer.write(Batch([42]))
        writer.write(Batch([{"a": 4}]))  # a missing field is written as null
        writer.flush()
        writer.close()
        (path,) = writer.result()
        if fmt == "parquet":
            assert pq.read_table(path).to_pylist() == [{"a": 1, "b": "x"}, {"a": 4, "b": None}]
        else:
            with open(path, newline="") as f:
                assert list(csv.reader(f)) == [["a", "b"], ["1", "x"], ["4", ""]]


# --- errors ---------------------------------------------------------------------------------------


def test_missing_path_raises_graph_error_before_running(tmp_path):
    missing = tmp_path / "does-not-exist.jsonl"
    for make in (FileSource.jsonl, FileSource.for_lines, FileSource.csv, FileSource.parquet):
        with pytest.raises(GraphError, match="does-not-exist.jsonl"):
            make(str(missing))
    env = make_env(1)
    with pytest.raises(GraphError, match="does-not-exist.jsonl"):
        env.read_text_file(str(missing))


def test_malformed_json_line_names_file_and_line_unit(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a": oops}\n{"a": 4}\n')
    source = FileSource.jsonl(str(p))
    (split,) = source.create_splits(1)
    reader = source.open_split(split, 0)
    assert reader.read(2) == [{"a": 1}, {"a": 2}]
    with pytest.raises(FileFormatError, match=r"bad\.jsonl.*line 4"):
        reader.read(2)
    reader.close()


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_undecodable_line_is_named_exactly_unit(tmp_path, newline):
    """The reader decodes ahead in 8 KB chunks; the error still names the line holding the bad
    byte (line 3000 of 5000), not the first line of its chunk."""
    lines = [f"línea {i}".encode() for i in range(1, 5001)]
    lines[2999] = b"caf\xe9"  # latin-1, not UTF-8
    data = newline.encode().join(lines)
    (tmp_path / "latin.txt").write_bytes(data)
    source = FileSource.for_lines(str(tmp_path / "latin.txt"))
    reader = source.open_split(source.create_splits(1)[0], 0)
    got = []
    with pytest.raises(FileFormatError) as err:
        while (batch := reader.read(100)) is not None:
            got.extend(batch)
    bad = data.index(b"\xe9")
    assert f"line 3000 (byte offset {bad})" in str(err.value)
    assert "latin.txt" in str(err.value)
    assert got == [f"línea {i}" for i in range(1, len(got) + 1)]  # nothing wrong came first
    reader.close()


@ray_test
def test_malformed_json_line_fails_the_job(tmp_path):
    good = "\n".join(json.dumps({"a": i}) for i in range(10))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "1-good.jsonl").write_text(good + "\n")
    (tmp_path / "in" / "2-broken.jsonl").write_text(good + "\n{not json}\n")
    env = make_env(2)
    env.from_source(FileSource.jsonl(str(tmp_path / "in")), source_name="in").map(
        lambda r: r["a"]
    ).sink_to(FileSink.jsonl(str(tmp_path / "out")))
    with pytest.raises(JobExecutionError) as err:
        env.execute("bad json")
    message = str(err.value)
    assert "2-broken.jsonl" in message
    assert "line 11" in message
