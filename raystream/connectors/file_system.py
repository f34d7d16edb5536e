"""Mirror of ``pyflink.datastream.connectors.file_system``."""

from raystream.operators.file_sink import FileSink
from raystream.operators.file_system import (
    FileSourceBuilder,
    OutputFileConfig,
    RollingPolicy,
    RowFormatBuilder,
    StreamFormat,
)
from raystream.operators.files import FileSource

__all__ = [
    "FileSink",
    "FileSource",
    "FileSourceBuilder",
    "OutputFileConfig",
    "RollingPolicy",
    "RowFormatBuilder",
    "StreamFormat",
]
