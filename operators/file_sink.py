"""File sink: JSON lines, CSV and Parquet part files on any ``pyarrow.fs`` filesystem.

Every sink subtask writes its own part files into the output directory.

- **Without checkpoints**, part files ``part-{subtask}-{n}.{ext}`` are written in place and are
  complete once the writer is flushed (end of input); a rerun into the same directory replaces
  them.
- **With checkpoints** the sink is exactly-once (a two-phase-commit sink, SEMANTICS §6): a
  transaction is one part file, written hidden as ``.part-{subtask}-{writer}-{n}.{ext}.inprogress``
  (``FileSource`` skips hidden files). The checkpoint's barrier closes it (pre-commit: the file is
  pending), the checkpoint's completion renames it to ``part-{subtask}-{writer}-{n}.{ext}``
  (commit: the file is visible). ``{writer}`` is random per subtask and attempt, so names never
  collide across restarts. A restore commits the pending files of its checkpoint again (a no-op
  for those already renamed), deletes the file that was in progress, and the files the same
  writer began after it (pending for a checkpoint that never completed, or in progress when the
  subtask failed). What stays behind, hidden: the files of an attempt that failed before it
  completed any checkpoint, and the pending files of a job that ended (canceled, failed) before
  their checkpoint completed — a resume from its checkpoint commits or deletes them.

On a local disk the sink creates directories 0700 and part files 0600 (``private=False``: as the
process's umask makes them); a directory that exists keeps its mode.

Records are turned into bytes by one format object per part file (:class:`_PartFile`): JSON
lines, or CSV / Parquet with the schema inferred from the part's first records. The batches of
a columnar stream are written as they are (a part file's schema is its first batch's; a batch
with another schema fails naming the column).
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raystream.errors import GraphError, record_repr
from raystream.operators.files import SchemaMismatchError, _make_options, _resolve
from raystream.operators.sinks import SinkContext, SinkWriter
from raystream.operators.transactional import TwoPhaseCommitSink
from raystream.runtime.elements import Batch

__all__ = ["FileSink", "PartFileTransaction"]

_SINK_FORMATS = ("jsonl", "csv", "parquet")
_EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}
_COMPRESSION_EXT = {"gzip": "gz", "bz2": "bz2", "zstd": "zst", "lz4": "lz4", "brotli": "br"}


class FileSink(TwoPhaseCommitSink):
    """Writes the records of every sink subtask into its own part files in ``directory``. Use
    the constructors :meth:`jsonl`, :meth:`csv`, :meth:`parquet`.

    Without checkpoints the part files are ``part-{subtask}-{n}.{ext}``; with checkpoints they
    become visible as ``part-{subtask}-{writer}-{n}.{ext}`` when the checkpoint that closed them
    completes, exactly once (see the module docstring).

    ``get_sink_result(name)`` of the job returns, per subtask, the list of part file paths it
    wrote (a subtask that received no record writes no file); with checkpoints, the files it
    committed, or pre-committed for the checkpoint that ends the job, since it last started.

    Example:

    >>> import tempfile
    >>> from raystream.operators.sinks import SinkContext
    >>> out = tempfile.mkdtemp()
    >>> writer = FileSink.jsonl(out).create_writer(SinkContext("sink", 0, 1))
    >>> writer.write(Batch([{"a": 1}, {"a": 2}]))
    >>> writer.flush()
    >>> [p.rsplit("/", 1)[-1] for p in writer.result()]
    ['part-0-0.jsonl']
    """

    _formats: tuple[str, ...] = _SINK_FORMATS
    #: part file names are ``{part_prefix}-{subtask}-...-{n}{part_suffix}``
    part_prefix = "part"
    accepts_columns = True

    def __init__(
        self,
        directory: Any,
        format: str,
        *,
        filesystem: pafs.FileSystem | None = None,
        compression: str | None = None,
        options: dict[str, Any] | None = None,
        private: bool = True,
    ):
        if format not in self._formats:
            raise GraphError(
                f"FileSink: unknown format {format!r}; expected one of {self._formats}"
            )
        self.directory, self.filesystem, self.fs_path = _resolve(
            directory, filesystem, f"FileSink.{format}"
        )
        self.format = format
        self.compression = compression
        #: new directories 0700 and part files 0600 (local disks only: object stores have no
        #: modes, their bucket policies decide)
        self.private = private and isinstance(self.filesystem, pafs.LocalFileSystem)
        self.options = dict(options or {})
        ext = _EXTENSIONS.get(format, format)
        if compression is not None:
            if compression not in _COMPRESSION_EXT:
                raise GraphError(
                    f"FileSink.{format}: unknown compression {compression!r}; expected one of "
                    f"{sorted(_COMPRESSION_EXT)}"
                )
            ext += "." + _COMPRESSION_EXT[compression]
        self.extension = ext
        self.part_suffix = "." + ext
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
        # one subtask's transactions (set by ``open``, with checkpoints only)
        self._subtask = 0
        self._writer_id = ""
        self._counter = 0
        self._dir_ready = False
        self._files: dict[str, str] = {}  # name -> path of pre-committed and committed files

    @classmethod
    def jsonl(
        cls,
        directory: Any,
        *,
        compression: str | None = None,
        filesystem: pafs.FileSystem | None = None,
        private: bool = True,
    ) -> FileSink:
        """One ``json.dumps(record)`` per line (records must be JSON-serializable)."""
        return cls(
            directory, "jsonl", filesystem=filesystem, compression=compression, private=private
        )

    @classmethod
    def csv(
        cls,
        directory: Any,
        *,
        compression: str | None = None,
        filesystem: pafs.FileSystem | None = None,
        private: bool = True,
        **write_options: Any,
    ) -> FileSink:
        """Dict (or dataclass / namedtuple) records as CSV with a header; the columns and their
        types come from the first records. ``write_options`` are fields of
        ``pyarrow.csv.WriteOptions`` (``delimiter``, ``include_header``, ``quoting_style``...)."""
        return cls(
            directory,
            "csv",
            filesystem=filesystem,
            compression=compression,
            options=write_options,
            private=private,
        )

    @classmethod
    def parquet(
        cls,
        directory: Any,
        *,
        compression: str = "snappy",
        row_group_size: int = 64 * 1024,
        filesystem: pafs.FileSystem | None = None,
        private: bool = True,
    ) -> FileSink:
        """Dict (or dataclass / namedtuple) records as Parquet; the schema comes from the first
        records. Rows are buffered into row groups of ``row_group_size`` rows."""
        return cls(
            directory,
            "parquet",
            filesystem=filesystem,
            options={"compression": compression, "row_group_size": row_group_size},
            private=private,
        )

    @staticmethod
    def for_row_format(base_path: Any, encoder: Any) -> Any:
        """PyFlink's builder: ``FileSink.for_row_format(path, Encoder.simple_string_encoder())
        .with_output_file_config(...).with_rolling_policy(...).build()`` (see
        :mod:`raystream.operators.file_system`)."""
        from raystream.operators.file_system import RowFormatBuilder  # builds a FileSink subclass

        return RowFormatBuilder(base_path, encoder)

    def describe(self) -> str:
        return "FileSink"

    # -- paths -----------------------------------------------------------------------------------

    def fs_path_of(self, name: str) -> str:
        """Path inside the filesystem of the file ``name`` in the output directory."""
        return f"{self.fs_path.rstrip('/')}/{name}"

    def path_of(self, name: str) -> str:
        """Path of the file ``name`` in the output directory, as the user gave the directory."""
        return f"{self.directory.rstrip('/')}/{name}"

    def make_dir(self) -> None:
        """Creates the output directory and its missing parents (0700 if ``private``)."""
        if not self.private:
            self.filesystem.create_dir(self.fs_path, recursive=True)
            return
        missing = []
        path = self.fs_path
        while not os.path.isdir(path):
            missing.append(path)
            path = os.path.dirname(path)
        for path in reversed(missing):
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:  # another subtask made it meanwhile
                pass

    def open_file(self, fs_path: str) -> Any:
        """An output stream to the file ``fs_path``, created (or truncated) 0600 if ``private``
        before anything is written to it."""
        if self.private:
            fd = os.open(fs_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # a file of an earlier run, or a umask without 0o600
            finally:
                os.close(fd)
        return self.filesystem.open_output_stream(fs_path, compression=self.compression)

    def _new_part(self, path: str, open_stream: Callable[[], Any]) -> _PartFile:
        parts: dict[str, type[_PartFile]] = {
            "jsonl": _JsonlPart,
            "csv": _CsvPart,
            "parquet": _ParquetPart,
        }
        cls = parts[self.format]
        return cls(self, path, open_stream)

    # -- without checkpoints ---------------------------------------------------------------------

    def create_writer(self, context: SinkContext) -> SinkWriter:
        return _PartFileWriter(self, context)

    # -- with checkpoints: one transaction per part file -----------------------------------------

    def open(self, context: SinkContext) -> None:
        self._subtask = context.subtask_index
        self._writer_id = uuid.uuid4().hex[:12]
        self._counter = 0
        self._dir_ready = False
        self._files = {}

    def begin_transaction(self) -> PartFileTransaction:
        name = (
            f"{self.part_prefix}-{self._subtask}-{self._writer_id}-{self._counter}"
            f"{self.part_suffix}"
        )
        self._counter += 1
        return PartFileTransaction(name)

    def write(self, transaction: PartFileTransaction, batch: Batch) -> None:
        if not batch.values:
            return
        if transaction.part is None:
            hidden = self.fs_path_of(transaction.in_progress_name)
            transaction.part = self._new_part(
                self.path_of(transaction.name), lambda: self._open_in_progress(hidden)
            )
        transaction.part.write(batch.values)

    def _open_in_progress(self, fs_path: str) -> Any:
        if not self._dir_ready:
            self.make_dir()
            self._dir_ready = True
        return self.open_file(fs_path)

    def pre_commit(self, transaction: PartFileTransaction) -> None:
        part, transaction.part = transaction.part, None
        if part is None or not part.created:
            return  # no record: no file
        part.finish()
        transaction.written = True
        self._files[transaction.name] = self.path_of(transaction.name)

    def commit(self, transaction: PartFileTransaction) -> None:
        """Renames the pending file to its final name. Idempotent: a file already renamed is
        left alone; a different file under the final name is never overwritten."""
        if not transaction.written:
            return
        fs = self.filesystem
        final = self.fs_path_of(transaction.name)
        hidden = self.fs_path_of(transaction.in_progress_name)
        final_info, hidden_info = fs.get_file_info([final, hidden])
        missing = pafs.FileType.NotFound
        if hidden_info.type == missing:
            if final_info.type == missing:
                raise FileNotFoundError(
                    f"FileSink: cannot commit {self.path_of(transaction.name)}: neither it nor "
                    f"its pending file {transaction.in_progress_name} exists (was the output "
                    f"directory changed outside the job?)"
                )
        elif final_info.type == missing:
            fs.move(hidden, final)  # a rename locally; copy and delete on object stores
        elif final_info.size == hidden_info.size:
            fs.delete_file(hidden)  # a move that copied, then stopped before deleting
        else:
            raise FileExistsError(
                f"FileSink: cannot commit {transaction.in_progress_name}: a different file "
                f"({final_info.size} bytes, not {hidden_info.size}) already has the final name "
                f"{self.path_of(transaction.name)}; it is not overwritten"
            )
        self._files[transaction.name] = self.path_of(transaction.name)

    def recover_and_abort(self, transaction: PartFileTransaction) -> None:
        """Deletes the file of the transaction that was open at the restored checkpoint, and
        the hidden files its writer began after it: no checkpoint refers to them."""
        self.abort(transaction)
        suffix = self.part_suffix
        if not transaction.name.endswith(suffix):
            return  # not a name this sink makes
        writer, _, number = transaction.name[: len(transaction.name) - len(suffix)].rpartition("-")
        if not number.isdigit():
            return
        head, tail = f".{writer}-", f"{suffix}.inprogress"
        selector = pafs.FileSelector(self.fs_path, allow_not_found=True)
        for info in self.filesystem.get_file_info(selector):
            name = info.base_name
            if name.startswith(head) and name.endswith(tail):
                later = name[len(head) : len(name) - len(tail)]
                if later.isdigit() and int(later) > int(number):
                    self.filesystem.delete_file(info.path)

    def abort(self, transaction: PartFileTransaction) -> None:
        part, transaction.part = transaction.part, None
        if part is not None:
            part.close()
        hidden = self.fs_path_of(transaction.in_progress_name)
        if self.filesystem.get_file_info(hidden).type != pafs.FileType.NotFound:
            self.filesystem.delete_file(hidden)
        self._files.pop(transaction.name, None)

    def result(self) -> list[str]:
        return list(self._files.values())


@dataclasses.dataclass
class PartFileTransaction:
    """A transaction of a :class:`FileSink`: one part file, in progress under a hidden name until
    its commit renames it to ``name``. Only ``name`` and ``written`` go into checkpoints."""

    name: str
    #: pre-commit completed a file (a transaction without records has none)
    written: bool = False
    part: _PartFile | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def in_progress_name(self) -> str:
        return f".{self.name}.inprogress"

    def __getstate__(self) -> dict:
        return {"name": self.name, "written": self.written}

    def __setstate__(self, state: dict) -> None:
        self.name = state["name"]
        self.written = state["written"]
        self.part = None


class _PartFileWriter(SinkWriter):
    """Without checkpoints: part files written in place, opened on the first record after a
    flush; ``flush`` (end of input) completes the open one."""

    def __init__(self, sink: FileSink, context: SinkContext):
        self.sink = sink
        self.subtask = context.subtask_index
        self._counter = 0
        self._paths: list[str] = []
        self._part: _PartFile | None = None
        self._dir_created = False

    def write(self, batch: Batch) -> None:
        if not batch.values:
            return
        if self._part is None:
            name = f"{self.sink.part_prefix}-{self.subtask}-{self._counter}{self.sink.part_suffix}"
            self._part = self.sink._new_part(self.sink.path_of(name), lambda: self._open_part(name))
        self._part.write(batch.values)

    def _open_part(self, name: str) -> Any:
        if not self._dir_created:
            self.sink.make_dir()
            self._dir_created = True
        stream = self.sink.open_file(self.sink.fs_path_of(name))
        self._counter += 1
        self._paths.append(self.sink.path_of(name))
        return stream

    def flush(self) -> None:
        part, self._part = self._part, None
        if part is not None:
            part.finish()

    def close(self) -> None:
        part, self._part = self._part, None
        if part is not None:
            part.close()

    def result(self) -> list[str]:
        return list(self._paths)


# --- formats --------------------------------------------------------------------------------------


class _PartFile(ABC):
    """The format half of one part file: records in, bytes out. The file is created by
    ``open_stream`` on the first record, so a part that gets none leaves no file."""

    def __init__(self, sink: FileSink, path: str, open_stream: Callable[[], Any]):
        self.sink = sink
        self.path = path  # where the file ends up, for messages
        self._open_stream = open_stream
        self._stream: Any = None

    @property
    def created(self) -> bool:
        return self._stream is not None

    def stream(self) -> Any:
        if self._stream is None:
            self._stream = self._open_stream()
        return self._stream

    @abstractmethod
    def write(self, values: Any) -> None:
        """A batch's records: a list, or a ``pyarrow.RecordBatch`` of a columnar stream."""

    def _finish(self) -> None:  # noqa: B027 - formats without a footer have nothing to do
        """Completes the file (footer, buffered rows) before its stream is closed."""

    def finish(self) -> None:
        """Completes and closes the file (if it was created)."""
        if self._stream is None:
            return
        try:
            self._finish()
        finally:
            self.close()

    def close(self) -> None:
        """Closes the stream, complete or not."""
        stream, self._stream = self._stream, None
        if stream is not None and not stream.closed:
            stream.close()


class _JsonlPart(_PartFile):
    def write(self, values: Any) -> None:
        if isinstance(values, pa.RecordBatch):
            values = values.to_pylist()
        lines = []
        for v in values:
            try:
                lines.append(json.dumps(v))
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"FileSink.jsonl: record {record_repr(v)} of type {type(v).__name__} is not "
                    f"JSON-serializable: {exc}"
                ) from exc
        self.stream().write(("\n".join(lines) + "\n").encode("utf-8"))


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


class _TabularPart(_PartFile):
    """Records → Arrow tables with one schema per part file, inferred from its first records."""

    def __init__(self, sink: FileSink, path: str, open_stream: Callable[[], Any]):
        super().__init__(sink, path, open_stream)
        self.schema: pa.Schema | None = None

    def _table(self, values: Any) -> pa.Table:
        fmt = self.sink.format
        if isinstance(values, pa.RecordBatch):
            return self._columns_table(values)
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
                    f"the schema of {self.path} (fields {schema.names}, inferred from the "
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
                f"{self.path} ({_schema_str(schema)}, inferred from the first records): "
                f"{exc}{hint}"
            ) from exc

    def _columns_table(self, batch: pa.RecordBatch) -> pa.Table:
        """A batch of a columnar stream as it is; the part file's schema is its first batch's."""
        if self.schema is not None and not batch.schema.equals(self.schema):
            from raystream.operators.columnar.schema import schema_difference

            raise SchemaMismatchError(
                f"FileSink.{self.sink.format}: a batch does not fit the schema of {self.path} "
                f"({_schema_str(self.schema)}): {schema_difference(self.schema, batch.schema)}"
            )
        return pa.Table.from_batches([batch])

    def _fits(self, row: dict) -> bool:
        assert self.schema is not None
        try:
            pa.Table.from_pydict({n: [row.get(n)] for n in self.schema.names}, schema=self.schema)
            return True
        except Exception:
            return False


def _schema_str(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


class _CsvPart(_TabularPart):
    def __init__(self, sink: FileSink, path: str, open_stream: Callable[[], Any]):
        super().__init__(sink, path, open_stream)
        self._writer: pacsv.CSVWriter | None = None

    def write(self, values: Any) -> None:
        table = self._table(values)
        if self._writer is None:
            stream = self.stream()
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
            first = (
                values.slice(0, 1).to_pylist()[0]
                if isinstance(values, pa.RecordBatch)
                else values[0]
            )
            raise SchemaMismatchError(
                f"FileSink.csv: cannot write the batch starting with {record_repr(first)} to "
                f"{self.path}: {exc}"
            ) from exc

    def _finish(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def close(self) -> None:
        self._writer = None
        super().close()


class _ParquetPart(_TabularPart):
    def __init__(self, sink: FileSink, path: str, open_stream: Callable[[], Any]):
        super().__init__(sink, path, open_stream)
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self.row_group_size: int = sink.options["row_group_size"]

    def write(self, values: Any) -> None:
        table = self._table(values)
        if self._writer is None:
            stream = self.stream()
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
