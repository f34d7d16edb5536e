"""Mirror of ``pyflink.datastream.connectors``: sources and sinks."""

from raystream.operators.file_sink import FileSink
from raystream.operators.files import FileSource
from raystream.operators.sinks import Sink
from raystream.operators.sources import Boundedness, NumberSequenceSource, Source
from raystream.operators.split_source import (
    DiscoveringSplitEnumerator,
    ReaderContext,
    SourceReader,
    SplitEnumerator,
    SplitEnumeratorContext,
    SplitRecords,
    SplitSource,
)

__all__ = [
    "Boundedness",
    "DiscoveringSplitEnumerator",
    "FileSink",
    "FileSource",
    "NumberSequenceSource",
    "ReaderContext",
    "Sink",
    "Source",
    "SourceReader",
    "SplitEnumerator",
    "SplitEnumeratorContext",
    "SplitRecords",
    "SplitSource",
]
