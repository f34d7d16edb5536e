"""Mirror of ``pyflink.datastream.formats.json``."""

from raystream.operators.serialization import (
    JsonRowDeserializationSchema,
    JsonRowSerializationSchema,
)

__all__ = ["JsonRowDeserializationSchema", "JsonRowSerializationSchema"]
