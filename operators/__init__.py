"""The operator library: sources, stateless and keyed operators, process functions, sinks."""

from raystream.operators.sinks import PrintSink, Sink, SinkContext, SinkWriter
from raystream.operators.sources import (
    Boundedness,
    CollectionSource,
    NumberSequenceSource,
    Source,
    SplitReader,
)

__all__ = [
    "Boundedness",
    "CollectionSource",
    "NumberSequenceSource",
    "PrintSink",
    "Sink",
    "SinkContext",
    "SinkWriter",
    "Source",
    "SplitReader",
]
