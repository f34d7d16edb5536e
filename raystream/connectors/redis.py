"""Redis Streams connectors: :class:`RedisStreamSource` (one split per stream key, bounded or
unbounded, per-stream watermarks) and :class:`RedisStreamSink` (exactly-once appends through an
atomic server-side script, or at-least-once). See ``docs/redis.md``."""

from raystream.operators.redis_streams import (
    RedisConnectorError,
    RedisStreamSink,
    RedisStreamSource,
    RedisStreamSplit,
    RedisStreamTransaction,
    StartPosition,
    default_deserializer,
    default_serializer,
)

__all__ = [
    "RedisConnectorError",
    "RedisStreamSink",
    "RedisStreamSource",
    "RedisStreamSplit",
    "RedisStreamTransaction",
    "StartPosition",
    "default_deserializer",
    "default_serializer",
]
