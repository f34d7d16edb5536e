"""File sources and sinks: text lines, JSON lines, CSV and Parquet on any ``pyarrow.fs`` filesystem.

:class:`FileSource` reads a file or every visible regular file of a directory (sorted; names
starting with ``.`` or ``_`` are skipped), local or remote (``s3://``, ``gs://``, ``hdfs://``, ...
whatever ``pyarrow.fs.FileSystem.from_uri`` understands, or an explicit ``filesystem=``). Each file
is a split; a Parquet file is one split per row group. A split is read in bounded chunks and its
position is the number of records already read from it, so a reader can be reopened at any
offset (the records before it are skipped, not re-emitted).

:class:`FileSink` writes one or more part files per sink subtask into a directory:
``part-{subtask}-{n}.{ext}``. A part file is complete once the writer is flushed (end of input).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raystream.errors import GraphError, record_repr
from raystream.operators.sinks import Sink, SinkContext, SinkWriter
from raystream.operators.sources import Boundedness, Source, SplitReader
from raystream.runtime.elements import Batch

__all__ = [
    "FileSource",
    "FileSink",
    "FileSplit",
    "FileFormatError",
    "SchemaMismatchError",
]

_SOURCE_FORMATS = ("lines", "jsonl", "csv", "parquet")
_SINK_FORMATS = ("jsonl", "csv", "parquet")

#: bytes read from a file at a time by the text readers
_READ_BUFFER = 1 << 20
#: rows per Arrow batch taken from a Parquet row group
_PARQUET_BATCH_ROWS = 8192


class FileFormatError(ValueError):
    """A file's content cannot be read as the expected format (names the file and position)."""


class SchemaMismatchError(FileFormatError):
    """A record written to a CSV/Parquet sink does not fit the schema of its part file."""


# --- filesystem helpers ---------------------------------------------------------------------------


def _resolve(
    path: Any, filesystem: pafs.FileSystem | None, what: str
) -> tuple[str, pafs.FileSystem, str]:
    """(path as the user gave it, filesystem, path inside that filesystem)."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise GraphError(f"{what}: path must be a str or os.PathLike, got {path!r}") from None
    if not isinstance(path, str) or not path:
        raise GraphError(f"{what}: path must be a non-empty string, got {path!r}")
    if filesystem is not None:
        if not isinstance(filesystem, pafs.FileSystem):
            raise GraphError(
                f"{what}: filesystem must be a pyarrow.fs.FileSystem, got {filesystem!r}"
            )
        return path, filesystem, path
    if "://" not in path:
        return path, pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    try:
        fs, fs_path = pafs.FileSystem.from_uri(path)
    except Exception as exc:
        raise GraphError(f"{what}: cannot resolve a filesystem for {path!r}: {exc}") from exc
    return path, fs, fs_path


def _is_visible(fs_path: str) -> bool:
    name = fs_path.rstrip("/").rsplit("/", 1)[-1]
    return not (name.startswith(".") or name.startswith("_"))


# --- source ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSplit:
    """One unit of source work: a whole file, or one row group of a Parquet file."""

    path: str
    format: str
    file_index: int
    size: int | None = None
    row_group: int | None = None
    num_rows: int | None = None

    def __str__(self) -> str:
        rg = f" row group {self.row_group}" if self.row_group is not None else ""
        return f"{self.path}{rg}"


class FileSource(Source):
    """Records from files: use the constructors :meth:`for_lines`, :meth:`jsonl`, :meth:`csv`
    and :meth:`parquet`.

    Records are ``str`` (lines, without the line break), the ``json.loads`` of every non-empty line
    (JSON lines), or ``dict`` rows (CSV, Parquet). Compressed text files (``.gz``, ``.bz2``, ...)
    are decompressed by their extension.
    """

    boundedness = Boundedness.BOUNDED

    def __init__(
        self,
        path: Any,
        format: str,
        *,
        filesystem: pafs.FileSystem | None = None,
        encoding: str = "utf-8",
        csv_options: dict[str, dict[str, Any]] | None = None,
        columns: Sequence[str] | None = None,
    ):
        if format not in _SOURCE_FORMATS:
            raise GraphError(
                f"FileSource: unknown format {format!r}; expected one of {_SOURCE_FORMATS}"
            )
        self.path, self.filesystem, self.fs_path = _resolve(
            path, filesystem, f"FileSource.{format}"
        )
        self.format = format
        self.encoding = encoding
        self.csv_options = csv_options or {}
        self.columns = list(columns) if columns is not None else None
        try:
            info = self.filesystem.get_file_info(self.fs_path)
        except Exception as exc:
            raise GraphError(f"FileSource: cannot access source path {self.path!r}: {exc}") from exc
        if info.type == pafs.FileType.NotFound:
            raise GraphError(f"FileSource: source path {self.path!r} does not exist")
        if info.type not in (pafs.FileType.File, pafs.FileType.Directory):
            raise GraphError(
                f"FileSource: source path {self.path!r} is neither a file nor a directory"
            )

    # -- constructors ----------------------------------------------------------------------------

    @classmethod
    def for_lines(
        cls, path: Any, encoding: str = "utf-8", *, filesystem: pafs.FileSystem | None = None
    ) -> FileSource:
        """Every line as a ``str`` without its line break (universal newlines)."""
        return cls(path, "lines", filesystem=filesystem, encoding=encoding)

    @classmethod
    def jsonl(
        cls, path: Any, *, encoding: str = "utf-8", filesystem: pafs.FileSystem | None = None
    ) -> FileSource:
        """``json.loads`` of every non-empty line; a malformed line fails naming file and line."""
        return cls(path, "jsonl", filesystem=filesystem, encoding=encoding)

    @classmethod
    def csv(
        cls, path: Any, *, filesystem: pafs.FileSystem | None = None, **read_options: Any
    ) -> FileSource:
        """Rows as dicts, parsed by ``pyarrow.csv`` (types inferred from the first block).

        Keyword options are fields of ``pyarrow.csv.ReadOptions`` (``column_names``,
        ``skip_rows``, ``block_size``, ``encoding``...), ``ParseOptions`` (``delimiter``,
        ``quote_char``...) or ``ConvertOptions`` (``column_types``, ``null_values``,
        ``include_columns``...); whole option objects may be given as ``read_options=``,
        ``parse_options=`` and ``convert_options=``.
        """
        return cls(path, "csv", filesystem=filesystem, csv_options=_split_csv_options(read_options))

    @classmethod
    def parquet(
        cls,
        path: Any,
        *,
        columns: Sequence[str] | None = None,
        filesystem: pafs.FileSystem | None = None,
    ) -> FileSource:
        """Rows as dicts (optionally only ``columns``); one split per row group."""
        return cls(path, "parquet", filesystem=filesystem, columns=columns)

    # -- Source ----------------------------------------------------------------------------------

    def describe(self) -> str:
        return f"FileSource({self.format}: {self.path})"

    def _list_files(self) -> list[pafs.FileInfo]:
        info = self.filesystem.get_file_info(self.fs_path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"source path {self.path!r} does not exist (any more)")
        if info.type == pafs.FileType.File:
            return [info]
        infos = self.filesystem.get_file_info(pafs.FileSelector(self.fs_path, recursive=False))
        files = [i for i in infos if i.type == pafs.FileType.File and _is_visible(i.path)]
        return sorted(files, key=lambda i: i.path)

    def create_splits(self, parallelism: int) -> list[FileSplit]:
        splits: list[FileSplit] = []
        for index, info in enumerate(self._list_files()):
            if self.format != "parquet":
                splits.append(FileSplit(info.path, self.format, index, size=info.size))
                continue
            try:
                with self.filesystem.open_input_file(info.path) as f:
                    meta = pq.ParquetFile(f).metadata
                    groups = [meta.row_group(rg).num_rows for rg in range(meta.num_row_groups)]
            except Exception as exc:
                raise FileFormatError(
                    f"cannot read the Parquet metadata of {info.path!r}: {exc}"
                ) from exc
            for rg, num_rows in enumerate(groups):
                splits.append(
                    FileSplit(
                        info.path, "parquet", index, size=info.size, row_group=rg, num_rows=num_rows
                    )
                )
        return splits

    def open_split(self, split: FileSplit, offset: int | None) -> SplitReader:
        offset = int(offset or 0)
        if split.format in ("lines", "jsonl"):
            return _TextReader(
                self.filesystem, split, self.encoding, split.format == "jsonl", offset
            )
        if split.format == "csv":
            return _ArrowReader(split, self._csv_batches(split), offset)
        if split.format == "parquet":
            return _ArrowReader(split, self._parquet_batches(split), offset)
        raise ValueError(f"FileSource cannot open a split of format {split.format!r}")

    # -- arrow batch producers -------------------------------------------------------------------

    def _csv_batches(self, split: FileSplit) -> Callable[[], Iterator[pa.RecordBatch]]:
        def batches() -> Iterator[pa.RecordBatch]:
            if split.size == 0:
                return
            opts = self.csv_options
            with self.filesystem.open_input_stream(split.path) as stream:
                reader = pacsv.open_csv(
                    stream,
                    read_options=_make_options(pacsv.ReadOptions, opts.get("read")),
                    parse_options=_make_options(pacsv.ParseOptions, opts.get("parse")),
                    convert_options=_make_options(pacsv.ConvertOptions, opts.get("convert")),
                )
                yield from reader

        return batches

    def _parquet_batches(self, split: FileSplit) -> Callable[[], Iterator[pa.RecordBatch]]:
        def batches() -> Iterator[pa.RecordBatch]:
            with self.filesystem.open_input_file(split.path) as f:
                pf = pq.ParquetFile(f)
                yield from pf.iter_batches(
                    batch_size=_PARQUET_BATCH_ROWS,
                    row_groups=[split.row_group],
                    columns=self.columns,
                )

        return batches


_CSV_OPTION_CLASSES = {
    "read": pacsv.ReadOptions,
    "parse": pacsv.ParseOptions,
    "convert": pacsv.ConvertOptions,
}


def _option_fields(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_") and n not in ("equals", "validate")}


def _split_csv_options(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Sorts keyword options onto pyarrow's Read/Parse/ConvertOptions (as plain dicts)."""
    out: dict[str, dict[str, Any]] = {k: {} for k in _CSV_OPTION_CLASSES}
    for kind, cls in _CSV_OPTION_CLASSES.items():
        whole = options.pop(f"{kind}_options", None)
        if whole is None:
            continue
        if not isinstance(whole, cls):
            raise GraphError(f"FileSource.csv: {kind}_options must be a pyarrow.csv.{cls.__name__}")
        out[kind].update({f: getattr(whole, f) for f in _option_fields(cls)})
    for name, value in options.items():
        for kind, cls in _CSV_OPTION_CLASSES.items():
            if name in _option_fields(cls):
                out[kind][name] = value
                break
        else:
            raise GraphError(
                f"FileSource.csv: unknown option {name!r}; expected a field of pyarrow.csv "
                f"ReadOptions, ParseOptions or ConvertOptions"
            )
    return out


def _make_options(cls: type, fields: dict[str, Any] | None) -> Any:
    opts = cls()
    for name, value in (fields or {}).items():
        setattr(opts, name, value)
    return opts


# --- readers --------------------------------------------------------------------------------------


class _TextReader(SplitReader):
    """Lines (or JSON lines) of one file, streamed; ``offset`` counts records already returned."""

    def __init__(
        self, fs: pafs.FileSystem, split: FileSplit, encoding: str, parse_json: bool, offset: int
    ):
        self.path = split.path
        self.encoding = encoding
        self.parse_json = parse_json
        self.offset = 0
        self.line_no = 0
        self._eof = False
        stream = fs.open_input_stream(split.path, buffer_size=_READ_BUFFER)
        self._text = io.TextIOWrapper(stream, encoding=encoding, newline=None)
        while self.offset < offset:  # resume: skip the records read before, without parsing them
            if self._next_line() is None:
                break
            self.offset += 1

    def _next_line(self) -> str | None:
        """The next line that makes a record (any line; a non-blank line for JSON)."""
        while True:
            try:
                line = self._text.readline()
            except UnicodeDecodeError as exc:
                raise FileFormatError(
                    f"cannot decode {self.path!r} as {self.encoding} after line {self.line_no}: {exc}"
                ) from exc
            if not line:
                self._eof = True
                return None
            self.line_no += 1
            if line.endswith("\n"):
                line = line[:-1]
            if self.parse_json and not line.strip():
                continue
            return line

    def read(self, max_records: int) -> list | None:
        out: list = []
        while len(out) < max_records and not self._eof:
            line = self._next_line()
            if line is None:
                break
            if self.parse_json:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise FileFormatError(
                        f"malformed JSON in file {self.path!r}, line {self.line_no}, column {exc.colno}: "
                        f"{exc.msg}: {record_repr(line)}"
                    ) from exc
            else:
                out.append(line)
        if not out:
            return None
        self.offset += len(out)
        return out

    def close(self) -> None:
        self._text.close()


class _ArrowReader(SplitReader):
    """Rows (as dicts) of a stream of Arrow record batches; ``offset`` counts rows returned."""

    def __init__(
        self, split: FileSplit, batches: Callable[[], Iterator[pa.RecordBatch]], offset: int
    ):
        self.split = split
        self.offset = 0
        self._batches: Iterator[pa.RecordBatch] | None = None
        self._factory = batches
        self._pending: pa.RecordBatch | None = None
        self._pos = 0
        self._done = False
        if split.num_rows is not None and offset >= split.num_rows:
            self._done, self.offset = True, offset
            return
        skipped = 0
        while skipped < offset:  # resume: drop the rows read before, without converting them
            taken = self._take(offset - skipped)
            if not taken:
                break
            skipped += sum(len(b) for b in taken)
        self.offset = skipped

    def _fetch(self) -> pa.RecordBatch | None:
        try:
            if self._batches is None:
                self._batches = self._factory()
            return next(self._batches)
        except StopIteration:
            return None
        except pa.ArrowException as exc:
            raise FileFormatError(
                f"cannot read {self.split.format} file {self.split}: {exc}"
            ) from exc

    def _take(self, n: int) -> list[pa.RecordBatch]:
        parts: list[pa.RecordBatch] = []
        got = 0
        while got < n and not self._done:
            if self._pending is None or self._pos >= len(self._pending):
                batch = self._fetch()
                if batch is None:
                    self._done = True
                    break
                self._pending, self._pos = batch, 0
                continue
            k = min(n - got, len(self._pending) - self._pos)
            parts.append(self._pending.slice(self._pos, k))
            self._pos += k
            got += k
        return parts

    def read(self, max_records: int) -> list | None:
        parts = self._take(max_records)
        if not parts:
            return None
        out: list = []
        for part in parts:
            out.extend(part.to_pylist())
        self.offset += len(out)
        return out

    def close(self) -> None:
        self._done = True
        self._pending = None
        if self._batches is not None:
            close = getattr(self._batches, "close", None)
            if close is not None:
                close()  # runs the generator's ``with`` exits: closes the file
            self._batches = None


# --- sink -----------------------------------------------------------------------------------------


_EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}
_COMPRESSION_EXT = {"gzip": "gz", "bz2": "bz2", "zstd": "zst", "lz4": "lz4", "brotli": "br"}


class FileSink(Sink):
    """Writes the records of every sink subtask into its own part files in ``directory``:
    ``part-{subtask}-{n}.{ext}``. Use the constructors :meth:`jsonl`, :meth:`csv`, :meth:`parquet`.

    ``get_sink_result(name)`` of the job returns, per subtask, the list of part file paths it
    wrote (a subtask that received no record writes no file).
    """

    def __init__(
        self,
        directory: Any,
        format: str,
        *,
        filesystem: pafs.FileSystem | None = None,
        compression: str | None = None,
        options: dict[str, Any] | None = None,
    ):
        if format not in _SINK_FORMATS:
            raise GraphError(
                f"FileSink: unknown format {format!r}; expected one of {_SINK_FORMATS}"
            )
        self.directory, self.filesystem, self.fs_path = _resolve(
            directory, filesystem, f"FileSink.{format}"
        )
        self.format = format
        self.compression = compression
        self.options = dict(options or {})
        ext = _EXTENSIONS[format]
        if compression is not None:
            if compression not in _COMPRESSION_EXT:
                raise GraphError(
                    f"FileSink.{format}: unknown compression {compression!r}; expected one of "
                    f"{sorted(_COMPRESSION_EXT)}"
                )
            ext += "." + _COMPRESSION_EXT[compression]
        self.extension = ext
        try:
            info = self.filesystem.get_file_info(self.fs_path)
        except Exception as exc:
            raise GraphError(
                f"FileSink: cannot access output directory {self.directory!r}: {exc}"
            ) from exc
        if info.type == pafs.FileType.File:
            raise GraphError(f"FileSink: output directory {self.directory!r} is an existing file")
        if format == "csv":
            _make_options(pacsv.WriteOptions, self.options)  # fail early on an unknown option
        if format == "parquet":
            rgs = self.options.get("row_group_size")
            if not isinstance(rgs, int) or rgs < 1:
                raise GraphError(
                    f"FileSink.parquet: row_group_size must be a positive int, got {rgs!r}"
                )

    @classmethod
    def jsonl(
        cls,
        directory: Any,
        *,
        compression: str | None = None,
        filesystem: pafs.FileSystem | None = None,
    ) -> FileSink:
        """One ``json.dumps(record)`` per line (records must be JSON-serializable)."""
        return cls(directory, "jsonl", filesystem=filesystem, compression=compression)

    @classmethod
    def csv(
        cls,
        directory: Any,
        *,
        compression: str | None = None,
        filesystem: pafs.FileSystem | None = None,
        **write_options: Any,
    ) -> FileSink:
        """Dict (or dataclass / namedtuple) records as CSV with a header; the columns and their
        types come from the first records. ``write_options`` are fields of
        ``pyarrow.csv.WriteOptions`` (``delimiter``, ``include_header``, ``quoting_style``...)."""
        return cls(
            directory, "csv", filesystem=filesystem, compression=compression, options=write_options
        )

    @classmethod
    def parquet(
        cls,
        directory: Any,
        *,
        compression: str = "snappy",
        row_group_size: int = 64 * 1024,
        filesystem: pafs.FileSystem | None = None,
    ) -> FileSink:
        """Dict (or dataclass / namedtuple) records as Parquet; the schema comes from the first
        records. Rows are buffered into row groups of ``row_group_size`` rows."""
        return cls(
            directory,
            "parquet",
            filesystem=filesystem,
            options={"compression": compression, "row_group_size": row_group_size},
        )

    def describe(self) -> str:
        return "FileSink"

    def create_writer(self, context: SinkContext) -> SinkWriter:
        cls = {"jsonl": _JsonlWriter, "csv": _CsvWriter, "parquet": _ParquetWriter}[self.format]
        return cls(self, context)


class _PartFileWriter(SinkWriter):
    """Opens part files lazily (on the first record) and finishes the current one on flush."""

    def __init__(self, sink: FileSink, context: SinkContext):
        self.sink = sink
        self.fs = sink.filesystem
        self.subtask = context.subtask_index
        self._counter = 0
        self._paths: list[str] = []
        self._stream: Any = None
        self._dir_created = False

    # -- part files ------------------------------------------------------------------------------

    def _open_part(self) -> Any:
        if not self._dir_created:
            self.fs.create_dir(self.sink.fs_path, recursive=True)
            self._dir_created = True
        name = f"part-{self.subtask}-{self._counter}.{self.sink.extension}"
        self._counter += 1
        fs_path = f"{self.sink.fs_path.rstrip('/')}/{name}"
        self._stream = self.fs.open_output_stream(fs_path, compression=self.sink.compression)
        self._paths.append(f"{self.sink.directory.rstrip('/')}/{name}")
        return self._stream

    @property
    def current_path(self) -> str:
        return self._paths[-1] if self._paths else self.sink.directory

    def write(self, batch: Batch) -> None:
        if batch.values:
            self._write(batch.values)

    @abstractmethod
    def _write(self, values: list) -> None: ...

    def _finish(self) -> None:
        """Completes the open part file (footer, buffered rows) before its stream is closed."""

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._finish()
        finally:
            stream, self._stream = self._stream, None
            stream.close()

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and not stream.closed:
            stream.close()

    def result(self) -> list[str]:
        return list(self._paths)


class _JsonlWriter(_PartFileWriter):
    def _write(self, values: list) -> None:
        lines = []
        for v in values:
            try:
                lines.append(json.dumps(v))
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"FileSink.jsonl: record {record_repr(v)} of type {type(v).__name__} is not "
                    f"JSON-serializable: {exc}"
                ) from exc
        stream = self._stream or self._open_part()
        stream.write(("\n".join(lines) + "\n").encode("utf-8"))


def _as_row(v: Any, fmt: str) -> dict:
    if isinstance(v, dict):
        return v
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return dataclasses.asdict(v)
    if isinstance(v, tuple) and hasattr(v, "_asdict"):
        return v._asdict()
    raise TypeError(
        f"FileSink.{fmt} writes dict, dataclass or namedtuple records; got {type(v).__name__}: "
        f"{record_repr(v)}"
    )


class _TabularWriter(_PartFileWriter):
    """Records → Arrow tables with one schema per part file, inferred from its first records."""

    def __init__(self, sink: FileSink, context: SinkContext):
        super().__init__(sink, context)
        self.schema: pa.Schema | None = None

    def _table(self, values: list) -> pa.Table:
        fmt = self.sink.format
        rows = [_as_row(v, fmt) for v in values]
        if self.schema is None:
            names: dict[str, None] = {}
            for r in rows:
                for k in r:
                    if not isinstance(k, str):
                        raise TypeError(
                            f"FileSink.{fmt}: field names must be str, got {k!r} in {record_repr(r)}"
                        )
                    names.setdefault(k, None)
            columns = {n: [r.get(n) for r in rows] for n in names}
            arrays = {}
            for n, col in columns.items():
                try:
                    arrays[n] = pa.array(col)
                except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                    raise SchemaMismatchError(
                        f"FileSink.{fmt}: cannot infer one type for field {n!r} from the first "
                        f"records: {exc}"
                    ) from exc
            return pa.table(arrays)
        schema = self.schema
        known = set(schema.names)
        for r in rows:
            extra = [k for k in r if k not in known]
            if extra:
                raise SchemaMismatchError(
                    f"FileSink.{fmt}: record {record_repr(r)} has field(s) {extra} that are not in "
                    f"the schema of {self.current_path} (fields {schema.names}, inferred from the "
                    f"first records)"
                )
        try:
            return pa.Table.from_pydict(
                {n: [r.get(n) for r in rows] for n in schema.names}, schema=schema
            )
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            bad = next((r for r in rows if not self._fits(r)), None)
            nulls = [
                f.name
                for f in schema
                if pa.types.is_null(f.type) and (bad or {}).get(f.name) is not None
            ]
            hint = (
                f"; field(s) {nulls} had only None values in the first records, so their type is null"
                if nulls
                else ""
            )
            raise SchemaMismatchError(
                f"FileSink.{fmt}: record {record_repr(bad)} does not fit the schema of "
                f"{self.current_path} ({_schema_str(schema)}, inferred from the first records): "
                f"{exc}{hint}"
            ) from exc

    def _fits(self, row: dict) -> bool:
        try:
            pa.Table.from_pydict({n: [row.get(n)] for n in self.schema.names}, schema=self.schema)
            return True
        except Exception:
            return False

    def flush(self) -> None:
        try:
            super().flush()
        finally:
            self.schema = None  # a next part file infers its own schema


def _schema_str(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


class _CsvWriter(_TabularWriter):
    def __init__(self, sink: FileSink, context: SinkContext):
        super().__init__(sink, context)
        self._writer: pacsv.CSVWriter | None = None

    def _write(self, values: list) -> None:
        table = self._table(values)
        if self._writer is None:
            stream = self._stream or self._open_part()
            self.schema = table.schema
            try:
                self._writer = pacsv.CSVWriter(
                    stream,
                    table.schema,
                    write_options=_make_options(pacsv.WriteOptions, self.sink.options),
                )
            except pa.ArrowException as exc:
                raise SchemaMismatchError(
                    f"FileSink.csv: cannot write columns ({_schema_str(table.schema)}) as CSV: {exc}"
                ) from exc
        try:
            self._writer.write_table(table)
        except pa.ArrowException as exc:
            raise SchemaMismatchError(
                f"FileSink.csv: cannot write the batch starting with {record_repr(values[0])} to "
                f"{self.current_path}: {exc}"
            ) from exc

    def _finish(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def close(self) -> None:
        self._writer = None
        super().close()


class _ParquetWriter(_TabularWriter):
    def __init__(self, sink: FileSink, context: SinkContext):
        super().__init__(sink, context)
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self.row_group_size: int = sink.options["row_group_size"]

    def _write(self, values: list) -> None:
        table = self._table(values)
        if self._writer is None:
            stream = self._stream or self._open_part()
            self.schema = table.schema
            self._writer = pq.ParquetWriter(
                stream, table.schema, compression=self.sink.options["compression"]
            )
        self._buffer.append(table)
        self._buffered += table.num_rows
        while self._buffered >= self.row_group_size:
            self._write_rows(self.row_group_size)

    def _write_rows(self, n: int) -> None:
        """Writes the first ``n`` buffered rows as one row group."""
        table = pa.concat_tables(self._buffer)
        head, rest = table.slice(0, n), table.slice(n)
        self._writer.write_table(head, row_group_size=self.row_group_size)  # type: ignore[union-attr]
        self._buffer = [rest] if rest.num_rows else []
        self._buffered = rest.num_rows

    def _finish(self) -> None:
        if self._writer is None:
            return
        if self._buffered:
            self._write_rows(self._buffered)
        writer, self._writer = self._writer, None
        writer.close()

    def close(self) -> None:
        self._writer = None
        self._buffer, self._buffered = [], 0
        super().close()
