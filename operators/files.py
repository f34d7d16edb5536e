"""File source: text lines, JSON lines, CSV and Parquet on any ``pyarrow.fs`` filesystem.

:class:`FileSource` reads a file or every visible regular file of a directory (sorted; names
starting with ``.`` or ``_`` are skipped), local or remote (``s3://``, ``gs://``, ``hdfs://``, ...
whatever ``pyarrow.fs.FileSystem.from_uri`` understands, or an explicit ``filesystem=``). Each file
is a split; a Parquet file is one split per row group. A split is read in bounded chunks and its
position is the number of records already read from it, so a reader can be reopened at any
offset (the records before it are skipped, not re-emitted).

``columnar=True`` (CSV, JSON lines, Parquet) makes the source columnar: the Arrow record batches
the readers decode go downstream as they are, never converted to Python rows. Every batch of the
stream must have the first one's schema (a file whose inferred types differ fails naming the
column: give CSV ``column_types=``, or convert with ``to_columns(schema)``).

The path and option helpers here are shared with the sink, :class:`FileSink`, which lives in
:mod:`raystream.operators.file_sink` (and is importable from here too).
"""

from __future__ import annotations

import codecs
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from raystream.errors import GraphError, record_repr
from raystream.operators.sources import Boundedness, Source, SplitReader
from raystream.runtime.elements import ColumnBatch

__all__ = [
    "FileSource",
    "FileSplit",
    "FileFormatError",
    "SchemaMismatchError",
]

_SOURCE_FORMATS = ("lines", "jsonl", "csv", "parquet")

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
        columnar: bool = False,
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
        if columnar and format == "lines":
            raise GraphError(
                "FileSource.for_lines has no columnar mode (lines are strings); use jsonl, csv or "
                "parquet, or to_columns() after it"
            )
        #: the stream carries Arrow record batches (see the module docstring)
        self.columnar = bool(columnar)
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

    @staticmethod
    def for_record_stream_format(stream_format: Any, *paths: Any) -> Any:
        """PyFlink's builder: ``FileSource.for_record_stream_format(StreamFormat.text_line_format(),
        path).process_static_file_set().build()`` (see :mod:`raystream.operators.file_system`)."""
        from raystream.operators.file_system import FileSourceBuilder  # builds a FileSource

        return FileSourceBuilder(stream_format, paths)

    @classmethod
    def jsonl(
        cls,
        path: Any,
        *,
        encoding: str = "utf-8",
        filesystem: pafs.FileSystem | None = None,
        columnar: bool = False,
    ) -> FileSource:
        """``json.loads`` of every non-empty line; a malformed line fails naming file and line.
        ``columnar=True``: Arrow's JSON reader decodes the lines into record batches (UTF-8)."""
        return cls(path, "jsonl", filesystem=filesystem, encoding=encoding, columnar=columnar)

    @classmethod
    def csv(
        cls,
        path: Any,
        *,
        filesystem: pafs.FileSystem | None = None,
        columnar: bool = False,
        **read_options: Any,
    ) -> FileSource:
        """Rows as dicts, parsed by ``pyarrow.csv`` (types inferred from the first block).

        Keyword options are fields of ``pyarrow.csv.ReadOptions`` (``column_names``,
        ``skip_rows``, ``block_size``, ``encoding``...), ``ParseOptions`` (``delimiter``,
        ``quote_char``...) or ``ConvertOptions`` (``column_types``, ``null_values``,
        ``include_columns``...); whole option objects may be given as ``read_options=``,
        ``parse_options=`` and ``convert_options=``. ``columnar=True``: the record batches as
        they are decoded.
        """
        return cls(
            path,
            "csv",
            filesystem=filesystem,
            csv_options=_split_csv_options(read_options),
            columnar=columnar,
        )

    @classmethod
    def parquet(
        cls,
        path: Any,
        *,
        columns: Sequence[str] | None = None,
        filesystem: pafs.FileSystem | None = None,
        columnar: bool = False,
    ) -> FileSource:
        """Rows as dicts (optionally only ``columns``); one split per row group.
        ``columnar=True``: the row groups' record batches as they are."""
        return cls(path, "parquet", filesystem=filesystem, columns=columns, columnar=columnar)

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
        columnar = self.columnar
        if split.format == "jsonl" and columnar:
            return _ArrowReader(split, self._json_batches(split), offset, columnar)
        if split.format in ("lines", "jsonl"):
            return _TextReader(
                self.filesystem, split, self.encoding, split.format == "jsonl", offset
            )
        if split.format == "csv":
            return _ArrowReader(split, self._csv_batches(split), offset, columnar)
        if split.format == "parquet":
            return _ArrowReader(split, self._parquet_batches(split), offset, columnar)
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

    def _json_batches(self, split: FileSplit) -> Callable[[], Iterator[pa.RecordBatch]]:
        def batches() -> Iterator[pa.RecordBatch]:
            if split.size == 0:
                return
            with self.filesystem.open_input_stream(split.path) as stream:
                if hasattr(pajson, "open_json"):  # streaming (pyarrow >= 19)
                    yield from pajson.open_json(stream)
                else:
                    yield from pajson.read_json(stream).to_batches()

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


def _locate_decode_error(fs: pafs.FileSystem, path: str, encoding: str) -> tuple[int, int]:
    """The line (1-based, universal newlines, as the reader counts them) and the byte offset of
    the first bytes of ``path`` that do not decode as ``encoding`` (error path only)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    breaks, start, after_cr = 0, 0, False  # start: file offset of the decoder's pending bytes

    def count(text: str) -> None:
        nonlocal breaks, after_cr
        if not text:
            return
        breaks += text.count("\n") + text.count("\r") - text.count("\r\n")
        if after_cr and text.startswith("\n"):
            breaks -= 1  # a \r\n split between two blocks is one line break
        after_cr = text.endswith("\r")

    with fs.open_input_stream(path) as stream:
        while True:
            block = stream.read(1 << 16)
            pending, flag = decoder.getstate()
            data = pending + block
            try:
                count(decoder.decode(block, final=not block))
            except UnicodeDecodeError as exc:
                decoder.setstate((b"", flag))
                count(decoder.decode(data[: exc.start]))
                return breaks + 1, start + exc.start
            if not block:
                return breaks + 1, start + len(data)  # not reached for a file that fails
            start += len(data) - len(decoder.getstate()[0])


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
        self._fs = fs
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
                # the wrapper decodes ahead in chunks: the failing line is found in the bytes
                bad_line, offset = _locate_decode_error(self._fs, self.path, self.encoding)
                raise FileFormatError(
                    f"cannot decode {self.path!r} as {self.encoding}: line {bad_line} (byte offset "
                    f"{offset}): {exc.reason}"
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
    """Rows (as dicts) of a stream of Arrow record batches, or (``columnar``) the batches
    themselves; ``offset`` counts rows returned."""

    def __init__(
        self,
        split: FileSplit,
        batches: Callable[[], Iterator[pa.RecordBatch]],
        offset: int,
        columnar: bool = False,
    ):
        self.split = split
        self.columnar = columnar
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

    def read(self, max_records: int) -> list | ColumnBatch | None:
        parts = self._take(max_records)
        if not parts:
            return None
        if self.columnar:
            from raystream.runtime.columns import concat_record_batches

            batch = concat_record_batches(parts)
            self.offset += batch.num_rows
            return ColumnBatch(batch)
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


def __getattr__(name: str) -> Any:
    # the sink imports this module's helpers, so it is re-exported lazily, not at import time
    if name == "FileSink":
        from raystream.operators.file_sink import FileSink

        return FileSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
