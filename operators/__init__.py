"""The operator library: sources, stateless and keyed operators, process functions, sinks."""

from raystream.operators.columnar.sources import ArrowSource
from raystream.operators.file_sink import FileSink
from raystream.operators.files import FileSource
from raystream.operators.raydata import RayDatasetSink, RayDatasetSource
from raystream.operators.raydata_stream import RayDataStream
from raystream.operators.sinks import PrintSink, Sink, SinkContext, SinkWriter
from raystream.operators.sources import (
    Boundedness,
    CollectionSource,
    NumberSequenceSource,
    Source,
    SplitReader,
)
from raystream.operators.transactional import TwoPhaseCommitSink

__all__ = [
    "ArrowSource",
    "Boundedness",
    "CollectionSource",
    "FileSink",
    "FileSource",
    "NumberSequenceSource",
    "PrintSink",
    "RayDataStream",
    "RayDatasetSink",
    "RayDatasetSource",
    "Sink",
    "SinkContext",
    "SinkWriter",
    "Source",
    "SplitReader",
    "TwoPhaseCommitSink",
]
