"""Serialization schemas for connectors (PyFlink's ``pyflink.common.serialization`` and
``pyflink.datastream.formats.json`` names): a deserializer turns the bytes of a broker record
into a record; a serializer turns a record into bytes.

They are plain picklable objects with one method each, called on whole lists where the
connector can (``deserialize_many``/``serialize_many``), so a batch of 10,000 Kafka records costs
one Python loop, not 10,000 method dispatches through a wrapper.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

__all__ = [
    "ByteArraySchema",
    "DeserializationSchema",
    "JsonRowDeserializationSchema",
    "JsonRowSerializationSchema",
    "SerializationSchema",
    "SimpleStringSchema",
]


class DeserializationSchema(ABC):
    """Bytes → record. Subclasses implement :meth:`deserialize`."""

    @abstractmethod
    def deserialize(self, message: bytes) -> Any: ...

    def deserialize_many(self, messages: list[bytes]) -> list[Any]:
        deserialize = self.deserialize
        return [deserialize(m) for m in messages]


class SerializationSchema(ABC):
    """Record → bytes. Subclasses implement :meth:`serialize`."""

    @abstractmethod
    def serialize(self, element: Any) -> bytes: ...

    def serialize_many(self, elements: list[Any]) -> list[bytes]:
        serialize = self.serialize
        return [serialize(e) for e in elements]


class SimpleStringSchema(DeserializationSchema, SerializationSchema):
    """Strings as bytes in a charset (UTF-8 by default); a ``None`` value (a Kafka tombstone)
    stays ``None``."""

    def __init__(self, charset: str = "UTF-8"):
        "".encode(charset)  # an unknown charset fails here, on the driver
        self.charset = charset

    def deserialize(self, message: bytes) -> Any:
        return None if message is None else message.decode(self.charset)

    def deserialize_many(self, messages: list[bytes]) -> list[Any]:
        cs = self.charset
        return [None if m is None else m.decode(cs) for m in messages]

    def serialize(self, element: Any) -> bytes:
        return str(element).encode(self.charset)

    def serialize_many(self, elements: list[Any]) -> list[bytes]:
        cs = self.charset
        return [str(e).encode(cs) for e in elements]


class ByteArraySchema(DeserializationSchema, SerializationSchema):
    """Bytes as they are."""

    def deserialize(self, message: bytes) -> Any:
        return message

    def deserialize_many(self, messages: list[bytes]) -> list[Any]:
        return list(messages)

    def serialize(self, element: Any) -> bytes:
        return bytes(element)


class JsonRowDeserializationSchema(DeserializationSchema):
    """JSON objects → dicts (or ``Row`` s when built with a ``Types.ROW_NAMED`` type info, as
    PyFlink's ``JsonRowDeserializationSchema.builder().type_info(...).build()``).
    ``ignore_parse_errors()``: a malformed record becomes ``None`` instead of failing."""

    def __init__(self, type_info: Any = None, ignore_parse_errors: bool = False):
        self.type_info = type_info
        self.ignore_errors = ignore_parse_errors
        self._fields = _row_fields(type_info)

    class Builder:
        def __init__(self) -> None:
            self._type_info: Any = None
            self._ignore = False

        def type_info(self, type_info: Any) -> JsonRowDeserializationSchema.Builder:
            self._type_info = type_info
            return self

        def ignore_parse_errors(self) -> JsonRowDeserializationSchema.Builder:
            self._ignore = True
            return self

        def fail_on_missing_field(self) -> JsonRowDeserializationSchema.Builder:
            return self

        def build(self) -> JsonRowDeserializationSchema:
            return JsonRowDeserializationSchema(self._type_info, self._ignore)

    @staticmethod
    def builder() -> JsonRowDeserializationSchema.Builder:
        return JsonRowDeserializationSchema.Builder()

    def deserialize(self, message: bytes) -> Any:
        try:
            value = json.loads(message)
        except ValueError:
            if self.ignore_errors:
                return None
            raise
        if self._fields is None:
            return value
        from raystream.core.row import Row

        return Row(**{f: value.get(f) for f in self._fields})

    def deserialize_many(self, messages: list[bytes]) -> list[Any]:
        if self._fields is None and not self.ignore_errors:
            loads = json.loads
            return [loads(m) for m in messages]
        return [self.deserialize(m) for m in messages]


class JsonRowSerializationSchema(SerializationSchema):
    """Records → JSON (dicts, ``Row`` s with field names, lists, scalars)."""

    def __init__(self, type_info: Any = None):
        self.type_info = type_info

    class Builder:
        def __init__(self) -> None:
            self._type_info: Any = None

        def with_type_info(self, type_info: Any) -> JsonRowSerializationSchema.Builder:
            self._type_info = type_info
            return self

        def build(self) -> JsonRowSerializationSchema:
            return JsonRowSerializationSchema(self._type_info)

    @staticmethod
    def builder() -> JsonRowSerializationSchema.Builder:
        return JsonRowSerializationSchema.Builder()

    def serialize(self, element: Any) -> bytes:
        as_dict = getattr(element, "as_dict", None)
        if callable(as_dict):
            element = as_dict()
        return json.dumps(element, separators=(",", ":")).encode("utf-8")


def _row_fields(type_info: Any) -> list[str] | None:
    if type_info is None:
        return None
    names = getattr(type_info, "field_names", None)
    if callable(names):
        names = names()
    return list(names) if names else None
