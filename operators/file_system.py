"""PyFlink's file connector builders over raystream's :class:`FileSource` and :class:`FileSink`.

``FileSink.for_row_format(path, Encoder.simple_string_encoder())`` builds a sink writing one
encoded line per record (``str(record)``); ``with_output_file_config`` sets the part file prefix
and suffix (``{prefix}-{subtask}-{n}{suffix}``, with checkpoints
``{prefix}-{subtask}-{writer}-{n}{suffix}``). Part files roll at every checkpoint (exactly once,
as Flink's ``OnCheckpointRollingPolicy``) and at the end of input; the size and time thresholds
of ``RollingPolicy.default_rolling_policy`` are kept but not applied (no bucket directories
either: every part file goes straight into ``base_path``).

``FileSource.for_record_stream_format(StreamFormat.text_line_format(), path)...build()`` is
``FileSource.for_lines(path)``: a bounded source of the lines of a file or directory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from raystream.api.duration import Duration
from raystream.core.time import to_millis
from raystream.errors import GraphError, record_repr
from raystream.operators.file_sink import FileSink, _PartFile
from raystream.operators.files import FileSource

__all__ = [
    "DefaultRollingPolicy",
    "Encoder",
    "FileSourceBuilder",
    "OnCheckpointRollingPolicy",
    "OutputFileConfig",
    "RollingPolicy",
    "RowFormatBuilder",
    "RowFormatFileSink",
    "StreamFormat",
]


class Encoder:
    """Turns a record into the bytes of one line of a row-format file."""

    def __init__(self, charset_name: str = "UTF-8"):
        "".encode(charset_name)  # an unknown charset fails here, on the driver
        self.charset_name = charset_name

    @staticmethod
    def simple_string_encoder(charset_name: str = "UTF-8") -> Encoder:
        """``str(record)`` and a line break, in ``charset_name``."""
        return Encoder(charset_name)

    def encode(self, values: list) -> bytes:
        return "".join([f"{v}\n" for v in values]).encode(self.charset_name)


class OutputFileConfig:
    """Part file name prefix and suffix (PyFlink's defaults: ``part`` and none)."""

    def __init__(self, part_prefix: str = "part", part_suffix: str = ""):
        for what, value in (("prefix", part_prefix), ("suffix", part_suffix)):
            if not isinstance(value, str) or "/" in value:
                raise GraphError(
                    f"OutputFileConfig: part {what} must be a str without '/', got {value!r}"
                )
        if not part_prefix or part_prefix.startswith((".", "_")):
            raise GraphError(
                f"OutputFileConfig: part prefix {part_prefix!r} must be non-empty and not start "
                "with '.' or '_' (such files are hidden from FileSource)"
            )
        self.part_prefix = part_prefix
        self.part_suffix = part_suffix

    def get_part_prefix(self) -> str:
        return self.part_prefix

    def get_part_suffix(self) -> str:
        return self.part_suffix

    @staticmethod
    def builder() -> OutputFileConfigBuilder:
        return OutputFileConfigBuilder()


class OutputFileConfigBuilder:
    def __init__(self) -> None:
        self._prefix = "part"
        self._suffix = ""

    def with_part_prefix(self, prefix: str) -> OutputFileConfigBuilder:
        self._prefix = prefix
        return self

    def with_part_suffix(self, suffix: str) -> OutputFileConfigBuilder:
        self._suffix = suffix
        return self

    def build(self) -> OutputFileConfig:
        return OutputFileConfig(self._prefix, self._suffix)


class RollingPolicy:
    """When a part file is closed and a new one begun."""

    @staticmethod
    def default_rolling_policy(
        part_size: int = 1024 * 1024 * 128,
        rollover_interval: int | Duration = 60 * 1000,
        inactivity_interval: int | Duration = 60 * 1000,
    ) -> DefaultRollingPolicy:
        return DefaultRollingPolicy(part_size, rollover_interval, inactivity_interval)

    @staticmethod
    def on_checkpoint_rolling_policy() -> OnCheckpointRollingPolicy:
        return OnCheckpointRollingPolicy()


class DefaultRollingPolicy(RollingPolicy):
    """Flink's size and time thresholds; raystream keeps them but rolls on checkpoints only."""

    def __init__(self, part_size: int, rollover_interval: Any, inactivity_interval: Any):
        if not isinstance(part_size, int) or part_size <= 0:
            raise GraphError(f"RollingPolicy: part_size must be a positive int, got {part_size!r}")
        self.part_size = part_size
        self.rollover_interval_ms = to_millis(rollover_interval, "rollover interval")
        self.inactivity_interval_ms = to_millis(inactivity_interval, "inactivity interval")


class OnCheckpointRollingPolicy(RollingPolicy):
    """A new part file after every checkpoint (what raystream's file sink does)."""


class RowFormatFileSink(FileSink):
    """A :class:`FileSink` whose part files hold one encoded line per record."""

    _formats = ("text",)

    def __init__(
        self,
        directory: Any,
        encoder: Encoder,
        output_file_config: OutputFileConfig,
        rolling_policy: RollingPolicy,
    ):
        super().__init__(directory, "text")
        self.encoder = encoder
        self.rolling_policy = rolling_policy
        self.part_prefix = output_file_config.part_prefix
        self.part_suffix = output_file_config.part_suffix

    def _new_part(self, path: str, open_stream: Callable[[], Any]) -> _PartFile:
        return _EncodedPart(self, path, open_stream)


class _EncodedPart(_PartFile):
    def write(self, values: list) -> None:
        encoder = self.sink.encoder  # type: ignore[attr-defined]
        try:
            data = encoder.encode(values)
        except UnicodeEncodeError as exc:
            bad = next((v for v in values if _unencodable(v, encoder.charset_name)), None)
            raise TypeError(
                f"FileSink.for_row_format: record {record_repr(bad)} cannot be encoded in "
                f"{encoder.charset_name}: {exc}"
            ) from exc
        self.stream().write(data)


def _unencodable(v: Any, charset: str) -> bool:
    try:
        str(v).encode(charset)
        return False
    except UnicodeEncodeError:
        return True


class RowFormatBuilder:
    """What ``FileSink.for_row_format(base_path, encoder)`` returns."""

    def __init__(self, base_path: Any, encoder: Encoder):
        if not isinstance(encoder, Encoder):
            raise GraphError(
                f"FileSink.for_row_format expects an Encoder (Encoder.simple_string_encoder()), "
                f"got {encoder!r}"
            )
        self._base_path = base_path
        self._encoder = encoder
        self._config = OutputFileConfig()
        self._policy: RollingPolicy = OnCheckpointRollingPolicy()

    def with_output_file_config(self, output_file_config: OutputFileConfig) -> RowFormatBuilder:
        if not isinstance(output_file_config, OutputFileConfig):
            raise GraphError(
                f"with_output_file_config expects an OutputFileConfig, got {output_file_config!r}"
            )
        self._config = output_file_config
        return self

    def with_rolling_policy(self, rolling_policy: RollingPolicy) -> RowFormatBuilder:
        if not isinstance(rolling_policy, RollingPolicy):
            raise GraphError(f"with_rolling_policy expects a RollingPolicy, got {rolling_policy!r}")
        self._policy = rolling_policy
        return self

    def build(self) -> RowFormatFileSink:
        return RowFormatFileSink(self._base_path, self._encoder, self._config, self._policy)


class StreamFormat:
    """How a file's bytes become records (text lines only, for now)."""

    def __init__(self, charset_name: str):
        "".encode(charset_name)
        self.charset_name = charset_name

    @staticmethod
    def text_line_format(charset_name: str = "UTF-8") -> StreamFormat:
        return StreamFormat(charset_name)


class FileSourceBuilder:
    """What ``FileSource.for_record_stream_format(format, path)`` returns."""

    def __init__(self, stream_format: StreamFormat, paths: tuple[Any, ...]):
        if not isinstance(stream_format, StreamFormat):
            raise GraphError(
                f"FileSource.for_record_stream_format expects a StreamFormat "
                f"(StreamFormat.text_line_format()), got {stream_format!r}"
            )
        if len(paths) != 1:
            raise GraphError(
                f"FileSource.for_record_stream_format: raystream reads one path (a file or a "
                f"directory), got {len(paths)}: {paths!r}"
            )
        self._format = stream_format
        self._path = paths[0]

    def process_static_file_set(self) -> FileSourceBuilder:
        """The files present now, read once (the only mode: the source is bounded)."""
        return self

    def monitor_continuously(self, discovery_interval: Any) -> FileSourceBuilder:
        raise GraphError(
            "FileSource.monitor_continuously is not supported: raystream's file source is "
            "bounded; use process_static_file_set()"
        )

    def build(self) -> FileSource:
        return FileSource.for_lines(self._path, encoding=self._format.charset_name)
