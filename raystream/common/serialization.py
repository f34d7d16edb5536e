"""Mirror of ``pyflink.common.serialization``: the row-format ``Encoder`` and the connectors'
serialization schemas."""

from raystream.operators.file_system import Encoder
from raystream.operators.serialization import (
    ByteArraySchema,
    DeserializationSchema,
    JsonRowDeserializationSchema,
    JsonRowSerializationSchema,
    SerializationSchema,
    SimpleStringSchema,
)

__all__ = [
    "ByteArraySchema",
    "DeserializationSchema",
    "Encoder",
    "JsonRowDeserializationSchema",
    "JsonRowSerializationSchema",
    "SerializationSchema",
    "SimpleStringSchema",
]
