"""Mirror of ``pyflink.datastream.connectors``: sources and sinks."""

from raystream.operators.file_sink import FileSink
from raystream.operators.files import FileSource
from raystream.operators.sinks import Sink
from raystream.operators.sources import NumberSequenceSource, Source

__all__ = ["FileSink", "FileSource", "NumberSequenceSource", "Sink", "Source"]
