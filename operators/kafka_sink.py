"""Kafka sink: records of a stream into Kafka topics, with PyFlink's builder API and its three
delivery guarantees (client: ``confluent-kafka``). Design and guarantees: ``docs/kafka_sink.md``.

- ``NONE``: records are produced asynchronously; end of input flushes the producer.
- ``AT_LEAST_ONCE``: as NONE, and every checkpoint's snapshot flushes the producer before it is
  acknowledged, so a completed checkpoint implies that its records are in Kafka.
- ``EXACTLY_ONCE`` (a two-phase-commit sink): the records of a checkpoint are serialized into
  the sink's state and produced, when the checkpoint completes, in one Kafka transaction that
  also commits a *marker* — the offset ``n`` of a consumer group that belongs to this writer —
  through ``send_offsets_to_transaction``. The data and the marker become visible together, so
  after a crash a restore reads the marker and re-produces exactly the checkpoints it does not
  cover (librdkafka cannot resume another producer's transaction).

Every delivery error fails the job with the sink, topic, partition and record in the message.
"""

from __future__ import annotations

import enum
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from raystream.errors import GraphError, TaskError, record_repr
from raystream.operators.serialization import SerializationSchema
from raystream.operators.sinks import Sink, SinkContext, SinkWriter
from raystream.operators.transactional import TwoPhaseCommitSink
from raystream.runtime.elements import Batch

__all__ = [
    "DeliveryGuarantee",
    "ExactlyOnceKafkaSink",
    "FlinkFixedPartitioner",
    "KafkaPartitioner",
    "KafkaRecordSerializationSchema",
    "KafkaRecordSerializationSchemaBuilder",
    "KafkaSink",
    "KafkaSinkBuilder",
    "KafkaSinkError",
    "KafkaSinkSettings",
    "KafkaTransaction",
    "RecordChunk",
]

#: bytes kept free below ``message.max.bytes`` for a record's framing (headers, lengths, CRC)
RECORD_OVERHEAD_BYTES = 1024
_DEFAULT_MAX_BYTES = 1_000_000
_DEFAULT_TIMEOUT_S = 30.0
#: raystream's own property (not passed to librdkafka): how long broker operations may take
TIMEOUT_PROPERTY = "raystream.kafka.timeout.ms"
_RESERVED = ("transactional.id", "bootstrap.servers", "on_delivery", "delivery.report.only.error")


class KafkaSinkError(TaskError):
    """The Kafka sink could not write a record, reach the broker, or commit a transaction."""


class DeliveryGuarantee(enum.Enum):
    """PyFlink's ``DeliveryGuarantee``."""

    NONE = "none"
    AT_LEAST_ONCE = "at-least-once"
    EXACTLY_ONCE = "exactly-once"


# --- partitioners ---------------------------------------------------------------------------------


class KafkaPartitioner(ABC):
    """Chooses the partition of each record (Flink's ``FlinkKafkaPartitioner``). Without one,
    the producer's partitioner hashes the key (and spreads records without a key)."""

    def open(self, parallel_instance_id: int, parallel_instances: int) -> None:  # noqa: B027
        """Called once per sink subtask."""

    @abstractmethod
    def partition(
        self,
        record: Any,
        key: bytes | None,
        value: bytes | None,
        target_topic: str,
        partitions: list[int],
    ) -> int:
        """The partition (one of ``partitions``) for ``record``."""


class FlinkFixedPartitioner(KafkaPartitioner):
    """Every sink subtask writes to one partition: ``partitions[subtask % len(partitions)]``."""

    def __init__(self) -> None:
        self.subtask = 0

    def open(self, parallel_instance_id: int, parallel_instances: int) -> None:
        self.subtask = parallel_instance_id

    def partition(
        self,
        record: Any,
        key: bytes | None,
        value: bytes | None,
        target_topic: str,
        partitions: list[int],
    ) -> int:
        return partitions[self.subtask % len(partitions)]


# --- record serialization -------------------------------------------------------------------------


class RecordChunk(NamedTuple):
    """The Kafka records of one batch, column by column (lists of bytes pickle fast): the topic
    of all of them or one per record; partitions (None: the producer's choice); keys (None: no
    keys); values; timestamps (None: none; a None entry: the broker's time)."""

    topic: str | list[str]
    partitions: list[int] | None
    keys: list | None
    values: list
    timestamps: list | None

    def first_topic(self) -> str:
        return self.topic if isinstance(self.topic, str) else self.topic[0]


class KafkaRecordSerializationSchema:
    """Turns records into Kafka records: topic (fixed or chosen per record), key and value bytes
    (``serialize_many`` on whole batches) and an optional partitioner. Build it with
    :meth:`builder`."""

    def __init__(
        self,
        topic: str | None,
        topic_selector: Callable[[Any], str] | None,
        key_schema: SerializationSchema | None,
        value_schema: SerializationSchema,
        partitioner: KafkaPartitioner | None,
    ):
        self.topic = topic
        self.topic_selector = topic_selector
        self.key_schema = key_schema
        self.value_schema = value_schema
        self.partitioner = partitioner

    @staticmethod
    def builder() -> KafkaRecordSerializationSchemaBuilder:
        return KafkaRecordSerializationSchemaBuilder()

    def describe_topic(self) -> str:
        return repr(self.topic) if self.topic is not None else "chosen by the topic selector"

    def topics_of(self, sink: str, values: list) -> list[str]:
        if self.topic is not None:
            return [self.topic] * len(values)
        selector = self.topic_selector
        assert selector is not None
        topics = []
        v = None
        try:
            for v in values:
                t = selector(v)
                if not isinstance(t, str) or not t:
                    raise TypeError(f"the topic selector returned {t!r}, not a topic name")
                topics.append(t)
        except Exception as exc:
            raise KafkaSinkError(
                f"{sink}: the topic selector failed on record {record_repr(v)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return topics

    def bytes_of(
        self, sink: str, schema: SerializationSchema, what: str, values: list, topics: list[str]
    ) -> list:
        try:
            out = schema.serialize_many(values)
        except Exception as exc:
            for v, t in zip(values, topics):  # find the record (only after a failure)
                try:
                    schema.serialize(v)
                except Exception as inner:
                    raise KafkaSinkError(
                        f"{sink}: the {what} serializer {type(schema).__name__} failed on a "
                        f"record for topic {t!r}: {record_repr(v)}: "
                        f"{type(inner).__name__}: {inner}"
                    ) from inner
            raise KafkaSinkError(
                f"{sink}: the {what} serializer {type(schema).__name__} failed on a batch "
                f"starting with {record_repr(values[0] if values else None)} for topic "
                f"{topics[0] if topics else '?'!r}: {type(exc).__name__}: {exc}"
            ) from exc
        if len(out) != len(values):
            raise KafkaSinkError(
                f"{sink}: the {what} serializer {type(schema).__name__} returned {len(out)} "
                f"values for {len(values)} records"
            )
        return out


class KafkaRecordSerializationSchemaBuilder:
    def __init__(self) -> None:
        self._topic: str | None = None
        self._selector: Callable[[Any], str] | None = None
        self._key: SerializationSchema | None = None
        self._value: SerializationSchema | None = None
        self._partitioner: KafkaPartitioner | None = None

    def set_topic(self, topic: str) -> KafkaRecordSerializationSchemaBuilder:
        if not isinstance(topic, str) or not topic:
            raise GraphError(f"KafkaRecordSerializationSchema: topic must be a name, got {topic!r}")
        self._topic = topic
        return self

    def set_topic_selector(
        self, topic_selector: Callable[[Any], str]
    ) -> KafkaRecordSerializationSchemaBuilder:
        if not callable(topic_selector):
            raise GraphError("KafkaRecordSerializationSchema: the topic selector must be callable")
        self._selector = topic_selector
        return self

    def set_key_serialization_schema(
        self, key_serialization_schema: SerializationSchema
    ) -> KafkaRecordSerializationSchemaBuilder:
        self._key = _schema(key_serialization_schema, "key")
        return self

    def set_value_serialization_schema(
        self, value_serialization_schema: SerializationSchema
    ) -> KafkaRecordSerializationSchemaBuilder:
        self._value = _schema(value_serialization_schema, "value")
        return self

    def set_partitioner(
        self, partitioner: KafkaPartitioner
    ) -> KafkaRecordSerializationSchemaBuilder:
        if not isinstance(partitioner, KafkaPartitioner):
            raise GraphError(
                f"KafkaRecordSerializationSchema: the partitioner must be a KafkaPartitioner, got "
                f"{type(partitioner).__name__}"
            )
        self._partitioner = partitioner
        return self

    def build(self) -> KafkaRecordSerializationSchema:
        if (self._topic is None) == (self._selector is None):
            raise GraphError(
                "KafkaRecordSerializationSchema: set exactly one of set_topic(...) and "
                "set_topic_selector(...)"
            )
        if self._value is None:
            raise GraphError(
                "KafkaRecordSerializationSchema: set_value_serialization_schema(...) is required"
            )
        return KafkaRecordSerializationSchema(
            self._topic, self._selector, self._key, self._value, self._partitioner
        )


def _schema(schema: Any, what: str) -> SerializationSchema:
    if not isinstance(schema, SerializationSchema):
        raise GraphError(
            f"KafkaRecordSerializationSchema: the {what} schema must be a SerializationSchema "
            f"(e.g. SimpleStringSchema()), got {type(schema).__name__}"
        )
    return schema


# --- the sink and its builder ---------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaSinkSettings:
    bootstrap_servers: str
    serializer: KafkaRecordSerializationSchema
    guarantee: DeliveryGuarantee
    transactional_id_prefix: str | None
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def timeout_s(self) -> float:
        return float(self.properties.get(TIMEOUT_PROPERTY, _DEFAULT_TIMEOUT_S * 1000)) / 1000

    @property
    def max_record_bytes(self) -> int:
        return int(self.properties.get("message.max.bytes", _DEFAULT_MAX_BYTES))

    def producer_config(self) -> dict[str, Any]:
        conf = {k: v for k, v in self.properties.items() if k != TIMEOUT_PROPERTY}
        conf["bootstrap.servers"] = self.bootstrap_servers
        return conf


class KafkaSinkBuilder:
    def __init__(self) -> None:
        self._servers: str | None = None
        self._serializer: KafkaRecordSerializationSchema | None = None
        self._guarantee = DeliveryGuarantee.NONE
        self._prefix: str | None = None
        self._properties: dict[str, Any] = {}

    def set_bootstrap_servers(self, bootstrap_servers: str) -> KafkaSinkBuilder:
        self._servers = bootstrap_servers
        return self

    def set_record_serializer(
        self, record_serializer: KafkaRecordSerializationSchema
    ) -> KafkaSinkBuilder:
        if not isinstance(record_serializer, KafkaRecordSerializationSchema):
            raise GraphError(
                "KafkaSink: set_record_serializer expects a KafkaRecordSerializationSchema "
                "(KafkaRecordSerializationSchema.builder()...build()), got "
                f"{type(record_serializer).__name__}"
            )
        self._serializer = record_serializer
        return self

    def set_delivery_guarantee(self, delivery_guarantee: DeliveryGuarantee) -> KafkaSinkBuilder:
        if not isinstance(delivery_guarantee, DeliveryGuarantee):
            raise GraphError(f"KafkaSink: unknown delivery guarantee {delivery_guarantee!r}")
        self._guarantee = delivery_guarantee
        return self

    def set_transactional_id_prefix(self, transactional_id_prefix: str) -> KafkaSinkBuilder:
        self._prefix = transactional_id_prefix
        return self

    def set_property(self, key: str, value: Any) -> KafkaSinkBuilder:
        if key in _RESERVED:
            raise GraphError(f"KafkaSink: the property {key!r} is set by the sink itself")
        self._properties[key] = value
        return self

    def build(self) -> KafkaSink:
        if not self._servers:
            raise GraphError("KafkaSink: set_bootstrap_servers(...) is required")
        if self._serializer is None:
            raise GraphError("KafkaSink: set_record_serializer(...) is required")
        if self._guarantee is DeliveryGuarantee.EXACTLY_ONCE and not self._prefix:
            raise GraphError(
                "KafkaSink: EXACTLY_ONCE needs set_transactional_id_prefix(...), unique per job "
                "writing to the same cluster"
            )
        settings = KafkaSinkSettings(
            self._servers, self._serializer, self._guarantee, self._prefix, dict(self._properties)
        )
        try:
            from confluent_kafka import Producer

            Producer(settings.producer_config())  # unknown properties fail here, on the driver
        except Exception as exc:
            raise GraphError(f"KafkaSink: invalid producer properties: {exc}") from exc
        if self._guarantee is DeliveryGuarantee.EXACTLY_ONCE:
            return ExactlyOnceKafkaSink(settings)
        return KafkaSink(settings)


class KafkaSink(Sink):
    """Writes a stream into Kafka. Build it with :meth:`builder`, use it with
    ``stream.sink_to(sink)``.

    Example:

    >>> from raystream.operators.serialization import SimpleStringSchema
    >>> sink = (KafkaSink.builder()
    ...     .set_bootstrap_servers("localhost:9092")
    ...     .set_record_serializer(KafkaRecordSerializationSchema.builder()
    ...         .set_topic("out")
    ...         .set_value_serialization_schema(SimpleStringSchema())
    ...         .build())
    ...     .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    ...     .build())
    >>> sink.describe()
    'KafkaSink'
    """

    def __init__(self, settings: KafkaSinkSettings):
        self.settings = settings

    @staticmethod
    def builder() -> KafkaSinkBuilder:
        return KafkaSinkBuilder()

    def describe(self) -> str:
        return "KafkaSink"

    def create_writer(self, context: SinkContext) -> SinkWriter:
        return _KafkaWriter(self.settings, context)


# --- the producer side shared by every guarantee --------------------------------------------------


class _Producer:
    """A confluent-kafka producer for one sink subtask: turns batches into Kafka records and
    turns the first delivery error into a :class:`KafkaSinkError`."""

    def __init__(
        self, settings: KafkaSinkSettings, context: SinkContext, transactional_id: str | None
    ):
        from confluent_kafka import Producer

        self.settings = settings
        self.name = (
            f"KafkaSink {context.operator_name!r} (subtask {context.subtask_index}, "
            f"topic {settings.serializer.describe_topic()})"
        )
        self.context = context
        self.error: str | None = None
        conf = settings.producer_config()
        conf["on_delivery"] = self._on_delivery
        conf["delivery.report.only.error"] = True
        if transactional_id is not None:
            conf["transactional.id"] = transactional_id
        self.producer = Producer(conf)
        self._partitions: dict[str, list[int]] = {}
        partitioner = settings.serializer.partitioner
        if partitioner is not None:
            partitioner.open(context.subtask_index, context.parallelism)

    def check_reachable(self) -> None:
        """Fails fast when no broker answers (otherwise records would wait until their
        ``message.timeout.ms``)."""
        from confluent_kafka import KafkaException

        try:
            self.producer.list_topics(timeout=self.settings.timeout_s)
        except KafkaException as exc:
            raise KafkaSinkError(
                f"{self.name}: cannot reach the Kafka brokers {self.settings.bootstrap_servers!r} "
                f"within {self.settings.timeout_s:g} s ({exc.args[0]}); check "
                f"set_bootstrap_servers(...) and that the brokers run"
            ) from exc

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None and self.error is None:
            value = msg.value()
            self.error = (
                f"{self.name}: delivery of a record to topic {msg.topic()!r} partition "
                f"{msg.partition()} failed: {err.str()} ({err.name()}); record value "
                f"{record_repr(value[:200] if value else value)}"
            )

    def raise_error(self) -> None:
        if self.error is not None:
            raise KafkaSinkError(self.error)

    def serialize(self, batch: Batch) -> RecordChunk:
        """The Kafka records of ``batch``, column by column; a record too large for
        ``message.max.bytes`` fails here, naming it."""
        s = self.settings.serializer
        values = batch.values
        topics = s.topics_of(self.name, values)
        payloads = s.bytes_of(self.name, s.value_schema, "value", values, topics)
        keys = None
        if s.key_schema is not None:
            keys = s.bytes_of(self.name, s.key_schema, "key", values, topics)
        self._check_sizes(values, topics, keys, payloads)
        partitions = None
        if s.partitioner is not None:
            empty = [None] * len(values)
            partitions = [
                self._partition(s.partitioner, r, k, v, t)
                for r, k, v, t in zip(values, keys or empty, payloads, topics)
            ]
        stamps: list | None = batch.timestamps
        if stamps is not None and min(stamps, default=0) < 0:
            stamps = [ts if ts >= 0 else None for ts in stamps]  # no event time: the broker's
        topic: str | list[str] = s.topic if s.topic is not None else topics
        return RecordChunk(topic, partitions, keys, payloads, stamps)

    def _check_sizes(
        self, values: list, topics: list[str], keys: list | None, payloads: list
    ) -> None:
        limit = self.settings.max_record_bytes - RECORD_OVERHEAD_BYTES
        try:  # fast path: bytes only (None, a tombstone, has no len)
            biggest = max(map(len, payloads), default=0) + (
                max(map(len, keys), default=0) if keys is not None else 0
            )
        except TypeError:
            biggest = limit + 1
        if biggest <= limit:
            return
        for i, v in enumerate(payloads):
            size = (len(v) if v else 0) + (len(keys[i] or b"") if keys is not None else 0)
            if size > limit:
                raise KafkaSinkError(
                    f"{self.name}: a record for topic {topics[i]!r} is {size} bytes, more than "
                    f"message.max.bytes ({self.settings.max_record_bytes}) minus "
                    f"{RECORD_OVERHEAD_BYTES} for framing allows: {record_repr(values[i])}; raise "
                    f"set_property('message.max.bytes', ...) (and the topic's max.message.bytes)"
                )

    def _partition(self, partitioner: KafkaPartitioner, record: Any, k: Any, v: Any, t: str) -> int:
        parts = self._partitions.get(t)
        if parts is None:
            meta = self.producer.list_topics(t, timeout=self.settings.timeout_s).topics.get(t)
            if meta is None or meta.error is not None or not meta.partitions:
                raise KafkaSinkError(
                    f"{self.name}: cannot read the partitions of topic {t!r} for the partitioner "
                    f"({meta.error if meta is not None else 'no metadata'})"
                )
            parts = self._partitions[t] = sorted(meta.partitions)
        try:
            return partitioner.partition(record, k, v, t, parts)
        except Exception as exc:
            raise KafkaSinkError(
                f"{self.name}: the partitioner {type(partitioner).__name__} failed on record "
                f"{record_repr(record)} for topic {t!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def produce(self, chunk: RecordChunk, originals: list | None = None) -> None:
        """Hands one chunk's records to librdkafka (waiting for room when its queue is full)."""
        from confluent_kafka import KafkaException

        produce = self.producer.produce
        poll = self.producer.poll
        topic, partitions, keys, values, stamps = chunk
        single = topic if isinstance(topic, str) else None
        plain = single is not None and partitions is None and keys is None and stamps is None
        i = 0
        n = len(values)
        while i < n:
            try:
                if plain:
                    t0 = str(single)
                    for i in range(i, n):  # noqa: B020 - resumes where a full queue stopped
                        produce(t0, values[i])
                else:
                    for i in range(i, n):  # noqa: B020
                        kwargs: dict[str, Any] = {}
                        if partitions is not None:
                            kwargs["partition"] = partitions[i]
                        if stamps is not None and stamps[i] is not None:
                            kwargs["timestamp"] = stamps[i]
                        produce(
                            single or topic[i],
                            values[i],
                            keys[i] if keys is not None else None,
                            **kwargs,
                        )
                i = n
            except BufferError:  # local queue full: let deliveries drain it, then go on at i
                poll(0.05)
                self.raise_error()
            except KafkaException as exc:
                t = single or topic[i]
                part = "" if partitions is None else f" partition {partitions[i]}"
                record = originals[i] if originals is not None else values[i]
                raise KafkaSinkError(
                    f"{self.name}: cannot produce a record to topic {t!r}{part}: "
                    f"{exc.args[0].str()}; record {record_repr(record)}"
                ) from exc
        poll(0)
        self.raise_error()

    def flush(self) -> None:
        """Waits until every record is delivered or failed (each within its own
        ``message.timeout.ms``), then raises the first delivery error."""
        deadline = time.monotonic() + self.settings.timeout_s
        while self.producer.flush(1.0) > 0:
            self.raise_error()
            if time.monotonic() > deadline and self.error is None:
                self.check_reachable()
                deadline = time.monotonic() + self.settings.timeout_s
        self.raise_error()


class _KafkaWriter(SinkWriter):
    """NONE and AT_LEAST_ONCE: asynchronous produce; AT_LEAST_ONCE flushes at every snapshot."""

    def __init__(self, settings: KafkaSinkSettings, context: SinkContext):
        self.settings = settings
        self.producer = _Producer(settings, context, None)
        self.producer.check_reachable()

    def write(self, batch: Batch) -> None:
        if batch.values:
            self.producer.produce(self.producer.serialize(batch), batch.values)

    def snapshot_state(self, checkpoint_id: int) -> list | None:
        if self.settings.guarantee is DeliveryGuarantee.AT_LEAST_ONCE:
            self.producer.flush()
        else:
            self.producer.raise_error()
        return None

    def flush(self) -> None:
        self.producer.flush()


# --- exactly once ---------------------------------------------------------------------------------


@dataclass
class KafkaTransaction:
    """The records of one checkpoint of one writer, serialized, until they are committed.

    ``writer`` names the consumer group whose committed offset is this writer's commit marker;
    ``sequence`` (set by the pre-commit, 1, 2, ... per writer) is the offset that says this
    transaction is committed; the marker lives at partition 0 of ``marker_topic`` (the topic of
    the first record). ``subtask`` / ``parallelism`` tell a restore which transactional ids
    existed."""

    writer: str
    subtask: int
    parallelism: int
    chunks: list[RecordChunk] = field(default_factory=list)
    sequence: int = 0
    marker_topic: str | None = None

    def size(self) -> int:
        return sum(len(c.values) for c in self.chunks)


class ExactlyOnceKafkaSink(KafkaSink, TwoPhaseCommitSink):
    """The EXACTLY_ONCE Kafka sink (see the module docstring and ``docs/kafka_sink.md``).

    Transactional ids are ``{prefix}-{subtask}``; commit markers are the offsets of the consumer
    groups ``{prefix}-{subtask}-{random}``, one per writer (subtask and start)."""

    def __init__(self, settings: KafkaSinkSettings):
        super().__init__(settings)
        self._context: SinkContext | None = None
        self._producer: _Producer | None = None
        self._writer = ""
        self._sequence = 0
        self._group_consumer: Any = None
        self._fenced: set[int] = set()
        self._attempted: set[int] = set()  # sequences of this writer whose commit was begun

    _RUNTIME = (
        "_context",
        "_producer",
        "_writer",
        "_sequence",
        "_group_consumer",
        "_fenced",
        "_attempted",
    )

    def __getstate__(self) -> dict:
        """Producers, consumers and the writer identity belong to one subtask: not shipped."""
        return {k: v for k, v in self.__dict__.items() if k not in self._RUNTIME}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["settings"])  # type: ignore[misc]
        self.__dict__.update(state)

    def create_writer(self, context: SinkContext) -> SinkWriter:
        raise KafkaSinkError(
            f"KafkaSink {context.operator_name!r}: EXACTLY_ONCE commits a transaction per "
            f"checkpoint and needs checkpointing (env.enable_checkpointing(interval_ms)); use "
            f"AT_LEAST_ONCE or NONE without checkpoints"
        )

    def _commit_step(self, step: str, transaction: KafkaTransaction) -> None:
        """Where a commit is: ``"begin"`` (nothing of the transaction in Kafka yet),
        ``"produced"`` (records and marker sent, not committed), ``"committed"``. A no-op; tests
        override it to crash at each point."""

    def transactional_id(self, subtask: int) -> str:
        return f"{self.settings.transactional_id_prefix}-{subtask}"

    def open(self, context: SinkContext) -> None:
        self._context = context
        self._producer = _Producer(
            self.settings, context, self.transactional_id(context.subtask_index)
        )
        self._producer.check_reachable()
        self._init_transactions(self._producer, context.subtask_index)
        self._fenced = {context.subtask_index}
        self._writer = f"{self.transactional_id(context.subtask_index)}-{uuid.uuid4().hex[:12]}"
        self._sequence = 0

    def _init_transactions(self, producer: _Producer, subtask: int) -> None:
        """Registers the transactional id; the broker aborts (fences) whatever transaction an
        earlier producer with this id left open."""
        from confluent_kafka import KafkaException

        try:
            producer.producer.init_transactions(self.settings.timeout_s)
        except KafkaException as exc:
            raise KafkaSinkError(
                f"{producer.name}: init_transactions for transactional id "
                f"{self.transactional_id(subtask)!r} failed: {exc.args[0].str()}"
            ) from exc

    def _fence(self, transaction: KafkaTransaction) -> None:
        """After a scale-in, aborts what the transactional id of a subtask that no longer exists
        may have left open (each old subtask's state goes to exactly one new subtask)."""
        old = transaction.subtask
        if old in self._fenced:
            return
        self._fenced.add(old)
        ctx = self._context
        assert ctx is not None
        if old < ctx.parallelism:
            return  # that subtask exists and fences its own id in its open
        producer = _Producer(self.settings, ctx, self.transactional_id(old))
        self._init_transactions(producer, old)

    def begin_transaction(self) -> KafkaTransaction:
        ctx = self._context
        assert ctx is not None
        return KafkaTransaction(self._writer, ctx.subtask_index, ctx.parallelism)

    def write(self, transaction: KafkaTransaction, batch: Batch) -> None:
        assert self._producer is not None
        if batch.values:
            transaction.chunks.append(self._producer.serialize(batch))

    def pre_commit(self, transaction: KafkaTransaction) -> None:
        if transaction.chunks:
            self._sequence += 1
            transaction.sequence = self._sequence
            transaction.marker_topic = transaction.chunks[0].first_topic()

    def commit(self, transaction: KafkaTransaction) -> None:
        """Produces the transaction's records and its marker in one Kafka transaction, unless
        the marker says it is committed already (idempotent)."""
        if not transaction.chunks:
            return
        own = transaction.writer == self._writer
        if (not own or transaction.sequence in self._attempted) and self._is_committed(transaction):
            return  # a transaction this writer never began cannot be committed: no look-up
        if own:
            self._attempted.add(transaction.sequence)
        self._publish(transaction)

    def recover_and_commit(self, transaction: KafkaTransaction) -> None:
        self._fence(transaction)
        self.commit(transaction)

    def recover_and_abort(self, transaction: KafkaTransaction) -> None:
        self._fence(transaction)  # its records never reached Kafka: nothing else to abort

    def abort(self, transaction: KafkaTransaction) -> None:
        transaction.chunks = []

    def close(self) -> None:
        consumer, self._group_consumer = self._group_consumer, None
        if consumer is not None:
            consumer.close()
        self._producer = None

    def _consumer(self, group: str) -> Any:
        from confluent_kafka import Consumer

        return Consumer(
            {
                "bootstrap.servers": self.settings.bootstrap_servers,
                "group.id": group,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",  # the offset fetch waits for pending ones
            }
        )

    def _is_committed(self, transaction: KafkaTransaction) -> bool:
        from confluent_kafka import KafkaException, TopicPartition

        assert self._producer is not None
        consumer = self._consumer(transaction.writer)
        try:
            tp = TopicPartition(str(transaction.marker_topic), 0)
            try:
                (got,) = consumer.committed([tp], timeout=self.settings.timeout_s)
            except KafkaException as exc:
                raise KafkaSinkError(
                    f"{self._producer.name}: cannot read the commit marker (group "
                    f"{transaction.writer!r}, topic {transaction.marker_topic!r} partition 0) of "
                    f"transaction {transaction.sequence}: {exc.args[0].str()}"
                ) from exc
            if got.error is not None:
                raise KafkaSinkError(
                    f"{self._producer.name}: cannot read the commit marker (group "
                    f"{transaction.writer!r}, topic {transaction.marker_topic!r} partition 0): "
                    f"{got.error}"
                )
            return bool(got.offset >= transaction.sequence)
        finally:
            consumer.close()

    def _publish(self, transaction: KafkaTransaction) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        wrapper = self._producer
        assert wrapper is not None
        producer = wrapper.producer
        timeout = self.settings.timeout_s
        if transaction.writer == self._writer:
            if self._group_consumer is None:
                self._group_consumer = self._consumer(self._writer)
            group = self._group_consumer
        else:
            group = self._consumer(transaction.writer)
        step = "begin_transaction"
        try:
            self._commit_step("begin", transaction)
            producer.begin_transaction()
            step = "produce"
            for chunk in transaction.chunks:
                wrapper.produce(chunk)
            step = "send_offsets_to_transaction (the commit marker)"
            marker = TopicPartition(str(transaction.marker_topic), 0, transaction.sequence)
            producer.send_offsets_to_transaction([marker], group.consumer_group_metadata(), timeout)
            step = "flush"
            wrapper.flush()
            self._commit_step("produced", transaction)
            step = "commit_transaction"
            producer.commit_transaction(timeout)
            wrapper.raise_error()
        except (KafkaException, KafkaSinkError) as exc:
            detail = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
            try:
                producer.abort_transaction(timeout)
            except KafkaException:
                pass  # the error below fails the job; the restore fences the id
            raise KafkaSinkError(
                f"{wrapper.name}: {step} of the transaction holding {transaction.size()} "
                f"records (writer {transaction.writer!r}, sequence {transaction.sequence}, first "
                f"record for topic {transaction.marker_topic!r}) failed: {detail}"
            ) from exc
        finally:
            if group is not self._group_consumer:
                group.close()
        self._commit_step("committed", transaction)
