"""Kafka source on the split-source API (Flink's ``KafkaSource``), client ``confluent-kafka``.

A split is one topic partition with the offset where reading starts (and, when bounded, the
offset where it stops); its id is ``"topic-partition"``. The enumerator (in the job master)
lists the partitions of the subscribed topics, turns the starting/stopping offsets initializers
into concrete offsets for the partitions it finds at start (so a replay reads the same records),
starts partitions found later at their earliest offset, and hands each partition to the subtask
Flink would pick. Each reader (in a source task) owns one ``Consumer`` with a manual assignment
(no group subscription, no rebalancing), reads with non-blocking ``consume(n, timeout=0)`` and
groups each poll's records by partition; its snapshot is every partition it holds with the next
offset to read. A completed checkpoint commits those offsets to the consumer group (if a group
id is set), asynchronously: for monitoring only, recovery uses the checkpoint.

Built with :meth:`KafkaSource.builder` exactly as PyFlink's ``KafkaSourceBuilder``.
"""

from __future__ import annotations

import enum
import logging
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from raystream.errors import GraphError, RaystreamError, record_repr
from raystream.operators.serialization import DeserializationSchema
from raystream.operators.sources import Boundedness
from raystream.operators.split_source import (
    DiscoveringSplitEnumerator,
    ReaderContext,
    SourceReader,
    SplitEnumeratorContext,
    SplitRecords,
    SplitSource,
)

__all__ = [
    "KafkaOffsetResetStrategy",
    "KafkaOffsetsInitializer",
    "KafkaPartitionSplit",
    "KafkaRecord",
    "KafkaRecordDeserializationSchema",
    "KafkaSource",
    "KafkaSourceBuilder",
    "KafkaSourceError",
    "KafkaTopicPartition",
    "java_string_hashcode",
    "kafka_split_owner",
]

log = logging.getLogger(__name__)

#: Flink's default for unbounded sources (5 minutes); bounded sources discover once
DEFAULT_DISCOVERY_INTERVAL_MS = 300_000
#: bound on every metadata / offsets request of the enumerator (Kafka's consumer default)
DEFAULT_REQUEST_TIMEOUT_MS = 30_000

# properties of the source itself (Flink's KafkaSourceOptions and Java-client-only settings):
# never handed to librdkafka, which would refuse them
_SOURCE_PROPERTIES = {
    "partition.discovery.interval.ms",
    "client.id.prefix",
    "commit.offsets.on.checkpoint",
    "register.consumer.metrics",
    "request.timeout.ms",
    "key.deserializer",
    "value.deserializer",
}


class KafkaSourceError(RaystreamError):
    """The Kafka source cannot go on: brokers unreachable, a topic missing, a record that cannot
    be deserialized, an offset that cannot be resolved."""


# -- topic partitions and offsets ---------------------------------------------------------------


@dataclass(frozen=True, order=True)
class KafkaTopicPartition:
    """A partition of a topic (PyFlink's ``KafkaTopicPartition``)."""

    topic: str
    partition: int

    def split_id(self) -> str:
        return f"{self.topic}-{self.partition}"


class KafkaOffsetResetStrategy(enum.Enum):
    """Where to start when no committed offset exists (PyFlink's names)."""

    LATEST = "latest"
    EARLIEST = "earliest"
    NONE = "none"


class OffsetLookup(Protocol):
    """What an initializer asks the brokers (a Consumer in the enumerator; a fake in tests)."""

    def earliest(self, partitions: list[KafkaTopicPartition]) -> dict[KafkaTopicPartition, int]: ...

    def latest(self, partitions: list[KafkaTopicPartition]) -> dict[KafkaTopicPartition, int]: ...

    def committed(
        self, partitions: list[KafkaTopicPartition]
    ) -> dict[KafkaTopicPartition, int | None]: ...

    def for_timestamp(
        self, partitions: list[KafkaTopicPartition], timestamp_ms: int
    ) -> dict[KafkaTopicPartition, int | None]: ...


_EARLIEST, _LATEST, _COMMITTED, _TIMESTAMP, _OFFSETS = (
    "earliest",
    "latest",
    "committed",
    "timestamp",
    "offsets",
)


@dataclass(frozen=True)
class KafkaOffsetsInitializer:
    """Where reading starts (or stops) in each partition; build one with the static methods, as
    PyFlink's ``KafkaOffsetsInitializer``. The enumerator resolves it to concrete offsets."""

    kind: str
    reset: KafkaOffsetResetStrategy = KafkaOffsetResetStrategy.NONE
    timestamp_ms: int | None = None
    offsets_map: tuple[tuple[KafkaTopicPartition, int], ...] = ()

    @staticmethod
    def earliest() -> KafkaOffsetsInitializer:
        return KafkaOffsetsInitializer(_EARLIEST)

    @staticmethod
    def latest() -> KafkaOffsetsInitializer:
        return KafkaOffsetsInitializer(_LATEST)

    @staticmethod
    def committed_offsets(
        offset_reset_strategy: KafkaOffsetResetStrategy = KafkaOffsetResetStrategy.NONE,
    ) -> KafkaOffsetsInitializer:
        """The group's committed offsets; a partition without one starts as the reset strategy
        says (``NONE``: the job fails naming the partition)."""
        if not isinstance(offset_reset_strategy, KafkaOffsetResetStrategy):
            raise GraphError(
                f"KafkaOffsetsInitializer.committed_offsets expects a KafkaOffsetResetStrategy, "
                f"got {offset_reset_strategy!r}"
            )
        return KafkaOffsetsInitializer(_COMMITTED, offset_reset_strategy)

    @staticmethod
    def timestamp(timestamp: int) -> KafkaOffsetsInitializer:
        """The first record whose timestamp is ≥ ``timestamp`` (ms); a partition without one
        starts at its end."""
        if isinstance(timestamp, bool) or not isinstance(timestamp, int):
            raise GraphError(
                f"KafkaOffsetsInitializer.timestamp expects ms as an int, got {timestamp!r}"
            )
        return KafkaOffsetsInitializer(_TIMESTAMP, timestamp_ms=timestamp)

    @staticmethod
    def offsets(
        offsets: dict[KafkaTopicPartition, int],
        offset_reset_strategy: KafkaOffsetResetStrategy = KafkaOffsetResetStrategy.EARLIEST,
    ) -> KafkaOffsetsInitializer:
        """Given offsets per partition; any other partition as the reset strategy says."""
        items = []
        for tp, off in dict(offsets).items():
            if not isinstance(tp, KafkaTopicPartition) or not isinstance(off, int):
                raise GraphError(
                    "KafkaOffsetsInitializer.offsets expects {KafkaTopicPartition: int}, got "
                    f"{tp!r}: {off!r}"
                )
            items.append((tp, off))
        return KafkaOffsetsInitializer(_OFFSETS, offset_reset_strategy, offsets_map=tuple(items))

    def resolve(
        self, partitions: list[KafkaTopicPartition], lookup: OffsetLookup
    ) -> dict[KafkaTopicPartition, int]:
        """Concrete offsets of ``partitions`` (runs in the enumerator)."""
        if not partitions:
            return {}
        if self.kind == _EARLIEST:
            return lookup.earliest(partitions)
        if self.kind == _LATEST:
            return lookup.latest(partitions)
        found: dict[KafkaTopicPartition, int | None]
        if self.kind == _TIMESTAMP:
            assert self.timestamp_ms is not None
            found = lookup.for_timestamp(partitions, self.timestamp_ms)
            out = {tp: off for tp, off in found.items() if off is not None}
            # no record at or after the timestamp: start at the end (as Flink)
            out.update(lookup.latest([tp for tp in partitions if tp not in out]))
            return out
        if self.kind == _COMMITTED:
            found = lookup.committed(partitions)
        else:
            given = dict(self.offsets_map)
            found = {tp: given.get(tp) for tp in partitions}
        out = {tp: off for tp, off in found.items() if off is not None}
        missing = [tp for tp in partitions if found.get(tp) is None]
        if missing:
            if self.reset == KafkaOffsetResetStrategy.EARLIEST:
                out.update(lookup.earliest(missing))
            elif self.reset == KafkaOffsetResetStrategy.LATEST:
                out.update(lookup.latest(missing))
            else:
                what = "committed offset" if self.kind == _COMMITTED else "given offset"
                names = ", ".join(tp.split_id() for tp in missing[:10])
                raise KafkaSourceError(
                    f"KafkaSource: no {what} for partition(s) {names} and the offset reset "
                    "strategy is NONE; commit offsets for the group first, or use "
                    "committed_offsets(KafkaOffsetResetStrategy.EARLIEST or LATEST)"
                )
        return out


def java_string_hashcode(s: str) -> int:
    """Java's ``String.hashCode`` (over UTF-16 code units, 32-bit signed)."""
    h = 0
    data = s.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def kafka_split_owner(topic: str, partition: int, parallelism: int) -> int:
    """Flink's KafkaSourceEnumerator rule: a topic's partitions go round robin over the
    subtasks, starting at a subtask that depends on the topic name."""
    start = ((java_string_hashcode(topic) * 31) & 0x7FFFFFFF) % parallelism
    return (start + partition) % parallelism


@dataclass(frozen=True)
class KafkaPartitionSplit:
    """A partition with the next offset to read and, bounded, the offset where it ends."""

    topic: str
    partition: int
    offset: int
    stop: int | None = None

    @property
    def split_id(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def topic_partition(self) -> KafkaTopicPartition:
        return KafkaTopicPartition(self.topic, self.partition)


# -- records and their deserialization ----------------------------------------------------------


@dataclass
class KafkaRecord:
    """One Kafka record as a record deserializer sees it."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    #: 0 none, 1 create time, 2 log append time (confluent-kafka's TIMESTAMP_* constants)
    timestamp_type: int = 1


class KafkaRecordDeserializationSchema(ABC):
    """Whole Kafka records (key, value, headers, topic, partition, offset, timestamp) → record.
    Implement :meth:`deserialize`; override :meth:`deserialize_many` for a faster loop."""

    @abstractmethod
    def deserialize(self, record: KafkaRecord) -> Any: ...

    def deserialize_many(self, records: list[KafkaRecord]) -> list[Any]:
        deserialize = self.deserialize
        return [deserialize(r) for r in records]

    @staticmethod
    def value_only(schema: DeserializationSchema) -> KafkaRecordDeserializationSchema:
        return _ValueOnly(schema)


class _ValueOnly(KafkaRecordDeserializationSchema):
    def __init__(self, schema: DeserializationSchema):
        self.schema = schema

    def deserialize(self, record: KafkaRecord) -> Any:
        return self.schema.deserialize(record.value)  # type: ignore[arg-type]


# -- the enumerator ---------------------------------------------------------------------------


def _consumer_config(source: KafkaSource, client_id: str, group_id: str | None) -> dict[str, Any]:
    conf = {k: v for k, v in source.properties.items() if k not in _SOURCE_PROPERTIES}
    conf["bootstrap.servers"] = source.bootstrap_servers
    conf["client.id"] = client_id
    # librdkafka wants a group id even for manual assignment; a private one commits nothing
    conf["group.id"] = group_id or f"{source.client_id_prefix}-{uuid.uuid4().hex}"
    conf["enable.auto.commit"] = False
    conf["enable.auto.offset.store"] = False
    conf.setdefault("auto.offset.reset", "earliest")
    return conf


class _BrokerLookup:
    """Metadata and offsets from the brokers through one Consumer, every call bounded by the
    source's request timeout (runs in the enumerator's worker thread)."""

    def __init__(self, source: KafkaSource):
        from confluent_kafka import Consumer

        self.source = source
        self.timeout_s = source.request_timeout_ms / 1000.0
        self.consumer = Consumer(
            _consumer_config(source, f"{source.client_id_prefix}-enumerator", source.group_id)
        )

    def _fail(self, what: str, exc: BaseException) -> KafkaSourceError:
        return KafkaSourceError(
            f"KafkaSource: {what} from the Kafka brokers at {self.source.bootstrap_servers!r} "
            f"failed within {self.timeout_s:g} s (property request.timeout.ms): {exc}"
        )

    def topics(self) -> dict[str, int]:
        """``{topic: number of partitions}`` of every topic."""
        try:
            meta = self.consumer.list_topics(timeout=self.timeout_s)
        except Exception as exc:
            raise self._fail("listing topics", exc) from exc
        return {
            name: len(t.partitions)
            for name, t in meta.topics.items()
            if t.error is None or t.partitions
        }

    def _tps(self, partitions: list[KafkaTopicPartition], offset: int = 0) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [TopicPartition(tp.topic, tp.partition, offset) for tp in partitions]

    def _watermarks(self, partitions: list[KafkaTopicPartition], index: int) -> dict:
        from confluent_kafka import TopicPartition

        out = {}
        for tp in partitions:
            try:
                lo_hi = self.consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=self.timeout_s
                )
            except Exception as exc:
                raise self._fail(f"the offsets of partition {tp.split_id()}", exc) from exc
            if lo_hi is None:
                raise self._fail(f"the offsets of partition {tp.split_id()}", TimeoutError())
            out[tp] = int(lo_hi[index])
        return out

    def earliest(self, partitions: list[KafkaTopicPartition]) -> dict[KafkaTopicPartition, int]:
        return self._watermarks(partitions, 0)

    def latest(self, partitions: list[KafkaTopicPartition]) -> dict[KafkaTopicPartition, int]:
        return self._watermarks(partitions, 1)

    def committed(
        self, partitions: list[KafkaTopicPartition]
    ) -> dict[KafkaTopicPartition, int | None]:
        if self.source.group_id is None:
            raise KafkaSourceError(
                "KafkaSource: committed_offsets() needs a group id (set_group_id)"
            )
        try:
            got = self.consumer.committed(self._tps(partitions), timeout=self.timeout_s)
        except Exception as exc:
            raise self._fail("the committed offsets", exc) from exc
        return {
            KafkaTopicPartition(t.topic, t.partition): (t.offset if t.offset >= 0 else None)
            for t in got
        }

    def for_timestamp(
        self, partitions: list[KafkaTopicPartition], timestamp_ms: int
    ) -> dict[KafkaTopicPartition, int | None]:
        try:
            got = self.consumer.offsets_for_times(
                self._tps(partitions, timestamp_ms), timeout=self.timeout_s
            )
        except Exception as exc:
            raise self._fail(f"the offsets for timestamp {timestamp_ms}", exc) from exc
        return {
            KafkaTopicPartition(t.topic, t.partition): (t.offset if t.offset >= 0 else None)
            for t in got
        }

    def close(self) -> None:
        self.consumer.close()


class KafkaSourceEnumerator(DiscoveringSplitEnumerator):
    """Lists the subscribed partitions and assigns the new ones (see the module docstring).

    State: the known splits with their start offsets, and whether the initial discovery (the
    one that uses the starting offsets initializer) is done."""

    def __init__(
        self,
        source: KafkaSource,
        context: SplitEnumeratorContext,
        restored_state: Any | None,
        discovery_interval_ms: int | None,
    ):
        state = restored_state or {}
        super().__init__(source, context, state.get("splits"), discovery_interval_ms)
        self.kafka = source
        self.initial_done = bool(state.get("initial_done"))
        self._lookup: _BrokerLookup | None = None

    def owner(self, split: Any, parallelism: int) -> int:
        return kafka_split_owner(split.topic, split.partition, parallelism)

    def discovery_finished(self) -> bool:
        # bounded (or discovery off): partitions are listed once; the runtime delivers the
        # assignment before the no-more-splits signal that follows it
        return self.kafka.discover_once

    def discover(self) -> list[KafkaPartitionSplit]:
        if self.initial_done and self.kafka.discover_once:
            return []  # partitions are listed once
        if self._lookup is None:
            self._lookup = _BrokerLookup(self.kafka)
        lookup = self._lookup
        topics = lookup.topics()
        src = self.kafka
        partitions: list[KafkaTopicPartition] = []
        if src.topics is not None:
            missing = [t for t in src.topics if t not in topics]
            if missing:
                raise KafkaSourceError(
                    f"KafkaSource: topic(s) {', '.join(map(repr, missing))} do not exist on the "
                    f"Kafka brokers at {src.bootstrap_servers!r}"
                )
            names: Iterable[str] = src.topics
        elif src.topic_pattern is not None:
            regex = re.compile(src.topic_pattern)
            names = sorted(t for t in topics if not t.startswith("__") and regex.fullmatch(t))
        else:
            names = ()
        for name in names:
            partitions.extend(KafkaTopicPartition(name, p) for p in range(topics[name]))
        if src.partitions is not None:
            for tp in sorted(src.partitions):
                if tp.partition >= topics.get(tp.topic, 0):
                    raise KafkaSourceError(
                        f"KafkaSource: partition {tp.split_id()} does not exist on the Kafka "
                        f"brokers at {src.bootstrap_servers!r} (topic {tp.topic!r} has "
                        f"{topics.get(tp.topic, 0)} partitions)"
                    )
                partitions.append(tp)
        known = set(self.known)
        new = [tp for tp in partitions if tp.split_id() not in known]
        if not new:
            return []
        start_init = src.starting_offsets if not self.initial_done else _EARLIEST_INIT
        starts = start_init.resolve(new, lookup)
        stops = src.stopping_offsets.resolve(new, lookup) if src.stopping_offsets else {}
        return [
            KafkaPartitionSplit(tp.topic, tp.partition, starts[tp], stops.get(tp)) for tp in new
        ]

    def _on_discovered(self, splits: Any, error: BaseException | None) -> bool:
        again = super()._on_discovered(splits, error)
        self.initial_done = True
        return again

    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        return {"splits": dict(self.known), "initial_done": self.initial_done}

    def close(self) -> None:
        if self._lookup is not None:
            lookup, self._lookup = self._lookup, None
            try:
                lookup.close()
            except Exception as exc:  # closing only; the job's outcome stands
                log.warning("KafkaSource enumerator: closing its consumer: %s", exc)


_EARLIEST_INIT = KafkaOffsetsInitializer.earliest()
# -- the reader --------------------------------------------------------------------------------

#: errors of a partition that no retry can fix; anything else librdkafka retries by itself
_FATAL_PARTITION_ERRORS = {
    "UNKNOWN_TOPIC_OR_PART",
    "TOPIC_AUTHORIZATION_FAILED",
    "GROUP_AUTHORIZATION_FAILED",
    "_AUTO_OFFSET_RESET",
    "OFFSET_OUT_OF_RANGE",
    "_UNKNOWN_PARTITION",
    "_UNKNOWN_TOPIC",
    "SASL_AUTHENTICATION_FAILED",
    "_AUTHENTICATION",
    "_SSL",
}


class KafkaSourceReader(SourceReader):
    """Reads the partitions of one source subtask with one Consumer (manual assignment)."""

    def __init__(self, source: KafkaSource, context: ReaderContext):
        from confluent_kafka import Consumer

        self.source = source
        self.context = context
        client_id = f"{source.client_id_prefix}-{context.subtask_index}"
        self.consumer = Consumer(_consumer_config(source, client_id, source.group_id))
        self.splits: dict[str, KafkaPartitionSplit] = {}
        self.by_tp: dict[tuple[str, int], str] = {}
        self.empty: list[str] = []  # bounded splits with nothing to read: finished at once
        self.snapshots: dict[int, list[tuple[str, int, int]]] = {}
        self.commit = source.group_id is not None and source.commit_offsets_on_checkpoint

    def add_splits(self, splits: Sequence[Any]) -> None:
        from confluent_kafka import TopicPartition

        assign = []
        for s in splits:
            self.splits[s.split_id] = s
            self.by_tp[(s.topic, s.partition)] = s.split_id
            if s.stop is not None and s.offset >= s.stop:
                self.empty.append(s.split_id)
            else:
                assign.append(TopicPartition(s.topic, s.partition, s.offset))
        if assign:
            self.consumer.incremental_assign(assign)

    def _finish(self, split_id: str) -> None:
        from confluent_kafka import TopicPartition

        s = self.splits.pop(split_id)
        del self.by_tp[(s.topic, s.partition)]
        self.consumer.incremental_unassign([TopicPartition(s.topic, s.partition)])

    def poll(self, max_records: int) -> list[SplitRecords]:
        out: list[SplitRecords] = []
        for sid in self.empty:
            s = self.splits.pop(sid)
            del self.by_tp[(s.topic, s.partition)]
            out.append(SplitRecords(sid, [], [], finished=True))
        self.empty = []
        messages = self.consumer.consume(max(1, max_records), timeout=0)
        if not messages:
            return out
        groups: dict[str, list[Any]] = {}
        at_end: dict[str, int] = {}
        by_tp: dict[Any, str] = self.by_tp
        for m in messages:
            err = m.error()
            if err is not None:
                self._on_error(m, err, at_end)
                continue
            found = by_tp.get((m.topic(), m.partition()))
            if found is None:  # fetched before the partition was unassigned
                continue
            groups.setdefault(found, []).append(m)
        for sid, msgs in groups.items():
            split = self.splits[sid]
            stop = split.stop
            if stop is not None and msgs[-1].offset() >= stop:
                msgs = [m for m in msgs if m.offset() < stop]
            if msgs and msgs[0].offset() < split.offset:  # never hand out a record twice
                msgs = [m for m in msgs if m.offset() >= split.offset]
            if not msgs:
                continue
            values = self._deserialize(split, msgs)
            stamps = [m.timestamp()[1] for m in msgs]
            split = replace(split, offset=msgs[-1].offset() + 1)
            self.splits[sid] = split
            finished = stop is not None and split.offset >= stop
            out.append(SplitRecords(sid, values, stamps, finished))
            if finished:
                self._finish(sid)
        for sid, end in at_end.items():
            split = self.splits.get(sid)  # type: ignore[assignment]
            if split is not None and split.stop is not None and end >= split.stop:
                # the stop offset lies behind records the consumer skips (transaction markers)
                self.splits[sid] = replace(split, offset=max(split.offset, split.stop))
                out.append(SplitRecords(sid, [], [], finished=True))
                self._finish(sid)
        return out

    def _on_error(self, m: Any, err: Any, at_end: dict[str, int]) -> None:
        from confluent_kafka import KafkaError

        code = err.code()
        if code == KafkaError._PARTITION_EOF:
            sid = self.by_tp.get((m.topic(), m.partition()))
            if sid is not None:
                at_end[sid] = m.offset()
            return
        where = f"topic {m.topic()!r} partition {m.partition()}" if m.topic() else "the consumer"
        if err.fatal() or err.name() in _FATAL_PARTITION_ERRORS:
            raise KafkaSourceError(
                f"KafkaSource: reading {where} from the Kafka brokers at "
                f"{self.source.bootstrap_servers!r} failed: {err.name()}: {err.str()}"
            )
        log.warning("KafkaSource subtask %d: %s: %s", self.context.subtask_index, where, err.str())

    def _deserialize(self, split: KafkaPartitionSplit, msgs: list[Any]) -> list[Any]:
        schema = self.source.record_deserializer
        if schema is None:
            values = [m.value() for m in msgs]
            try:
                return self.source.value_deserializer.deserialize_many(values)
            except Exception as exc:
                one = self.source.value_deserializer.deserialize
                self._find_bad(split, [(m, m.value()) for m in msgs], exc, lambda mr: one(mr[1]))
                raise
        records = [
            KafkaRecord(
                m.topic(),
                m.partition(),
                m.offset(),
                m.timestamp()[1],
                m.key(),
                m.value(),
                m.headers() or [],
                m.timestamp()[0],
            )
            for m in msgs
        ]
        try:
            return schema.deserialize_many(records)
        except Exception as exc:
            self._find_bad(
                split, list(zip(msgs, records)), exc, lambda mr: schema.deserialize(mr[1])
            )
            raise

    def _find_bad(
        self, split: KafkaPartitionSplit, items: list[tuple[Any, Any]], exc: Exception, one: Any
    ) -> None:
        """Raises naming the first record the deserializer fails on (the batch call does not
        say which): ``items`` are ``(message, what the deserializer takes)``."""
        bad, cause = items[0][0], exc
        for item in items:
            try:
                one(item)
            except Exception as e:
                bad, cause = item[0], e
                break
        raise KafkaSourceError(
            f"KafkaSource: the deserializer raised {type(cause).__name__} on the record at "
            f"topic {split.topic!r} partition {split.partition} offset {bad.offset()}: {cause}; "
            f"key {record_repr(bad.key())}, value {record_repr(bad.value())}. To route bad "
            "records to a side output, read bytes (ByteArraySchema) and parse them in a map "
            "with set_error_policy(ErrorPolicy.dead_letter(tag))"
        ) from cause

    def snapshot_state(self, checkpoint_id: int) -> list[Any]:
        splits = list(self.splits.values())
        if self.commit:
            self.snapshots[checkpoint_id] = [(s.topic, s.partition, s.offset) for s in splits]
        return splits

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        if not self.commit:
            return
        done = [cid for cid in self.snapshots if cid <= checkpoint_id]
        if not done:
            return
        offsets = self.snapshots[max(done)]
        for cid in done:
            del self.snapshots[cid]
        if offsets:
            from confluent_kafka import TopicPartition

            tps = [TopicPartition(t, p, o) for t, p, o in offsets]
            try:
                self.consumer.commit(offsets=tps, asynchronous=True)
            except Exception as exc:  # monitoring only: the checkpoint holds the positions
                log.warning(
                    "KafkaSource: committing offsets of checkpoint %d: %s", checkpoint_id, exc
                )

    def pending_records(self) -> int | None:
        """The partitions' end offsets (as of the last fetch: the consumer's cache, no broker
        call) minus the positions read, over the held partitions whose end is known."""
        from confluent_kafka import TopicPartition

        pending, known = 0, False
        for split in self.splits.values():
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(split.topic, split.partition), cached=True
            )
            if high is None or high < 0:  # nothing fetched from it yet
                continue
            end = high if split.stop is None else min(high, split.stop)
            pending += max(0, end - split.offset)
            known = True
        return pending if known else None

    def close(self) -> None:
        self.consumer.close()


# -- the source and its builder ---------------------------------------------------------------


class KafkaSource(SplitSource):
    """Reads Kafka topics (see the module docstring); build with :meth:`builder`.

    >>> from raystream.operators.serialization import SimpleStringSchema
    >>> src = (KafkaSource.builder().set_bootstrap_servers("localhost:9092")
    ...        .set_topics("events").set_group_id("g")
    ...        .set_value_only_deserializer(SimpleStringSchema()).build())
    >>> src.split_id(KafkaPartitionSplit("events", 3, 0))
    'events-3'
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: list[str] | None,
        topic_pattern: str | None,
        partitions: frozenset[KafkaTopicPartition] | None,
        group_id: str | None,
        starting_offsets: KafkaOffsetsInitializer,
        stopping_offsets: KafkaOffsetsInitializer | None,
        bounded: bool,
        value_deserializer: Any,
        record_deserializer: KafkaRecordDeserializationSchema | None,
        properties: dict[str, Any],
        client_id_prefix: str,
    ):
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.topic_pattern = topic_pattern
        self.partitions = partitions
        self.group_id = group_id
        self.starting_offsets = starting_offsets
        self.stopping_offsets = stopping_offsets
        self.value_deserializer = value_deserializer
        self.record_deserializer = record_deserializer
        self.properties = properties
        self.client_id_prefix = client_id_prefix
        self.boundedness = Boundedness.BOUNDED if bounded else Boundedness.CONTINUOUS_UNBOUNDED
        self.request_timeout_ms = int(
            properties.get("request.timeout.ms", DEFAULT_REQUEST_TIMEOUT_MS)
        )
        self.commit_offsets_on_checkpoint = (
            str(properties.get("commit.offsets.on.checkpoint", "true")).lower() == "true"
        )
        interval = int(
            properties.get("partition.discovery.interval.ms", DEFAULT_DISCOVERY_INTERVAL_MS)
        )
        #: bounded, or discovery switched off (interval <= 0): list partitions once, then
        #: signal no-more-splits (the runtime delivers it after the assignment)
        self.discover_once = bounded or interval <= 0
        self.discovery_interval_ms = None if self.discover_once else interval

    @staticmethod
    def builder() -> KafkaSourceBuilder:
        return KafkaSourceBuilder()

    def get_boundedness(self) -> Boundedness:
        return self.boundedness

    def create_enumerator(
        self, context: SplitEnumeratorContext, restored_state: Any | None
    ) -> KafkaSourceEnumerator:
        return KafkaSourceEnumerator(self, context, restored_state, self.discovery_interval_ms)

    def create_reader(self, context: ReaderContext) -> KafkaSourceReader:
        return KafkaSourceReader(self, context)

    def split_id(self, split: Any) -> str:
        return f"{split.topic}-{split.partition}"


class KafkaSourceBuilder:
    """PyFlink's ``KafkaSourceBuilder``: every setter returns the builder; :meth:`build`
    checks the combination."""

    def __init__(self) -> None:
        self._bootstrap: str | None = None
        self._topics: list[str] | None = None
        self._pattern: str | None = None
        self._partitions: frozenset[KafkaTopicPartition] | None = None
        self._group_id: str | None = None
        self._starting = KafkaOffsetsInitializer.earliest()
        self._stopping: KafkaOffsetsInitializer | None = None
        self._bounded = False
        self._value: Any = None
        self._record: KafkaRecordDeserializationSchema | None = None
        self._props: dict[str, Any] = {}
        self._prefix = "raystream-kafka-source"

    def _subscribe(self, what: str) -> None:
        if sum(x is not None for x in (self._topics, self._pattern, self._partitions)):
            raise GraphError(
                f"KafkaSourceBuilder.{what}: the source already subscribes by "
                "set_topics/set_topic_pattern/set_partitions; use exactly one"
            )

    def set_bootstrap_servers(self, bootstrap_servers: str) -> KafkaSourceBuilder:
        self._bootstrap = bootstrap_servers
        return self

    def set_topics(self, *topics: str) -> KafkaSourceBuilder:
        self._subscribe("set_topics")
        names = [t for item in topics for t in ([item] if isinstance(item, str) else item)]
        if not names or not all(isinstance(t, str) and t for t in names):
            raise GraphError(f"KafkaSourceBuilder.set_topics expects topic names, got {topics!r}")
        self._topics = names
        return self

    def set_topic_pattern(self, topic_pattern: str) -> KafkaSourceBuilder:
        self._subscribe("set_topic_pattern")
        try:
            re.compile(topic_pattern)
        except (re.error, TypeError) as exc:
            raise GraphError(
                f"KafkaSourceBuilder.set_topic_pattern: bad regex {topic_pattern!r}: {exc}"
            ) from exc
        self._pattern = topic_pattern
        return self

    def set_partitions(self, partitions: Iterable[KafkaTopicPartition]) -> KafkaSourceBuilder:
        self._subscribe("set_partitions")
        parts = frozenset(partitions)
        if not parts or not all(isinstance(p, KafkaTopicPartition) for p in parts):
            raise GraphError(
                f"KafkaSourceBuilder.set_partitions expects KafkaTopicPartition s, got {partitions!r}"
            )
        self._partitions = parts
        return self

    def set_group_id(self, group_id: str) -> KafkaSourceBuilder:
        self._group_id = group_id
        return self

    def set_client_id_prefix(self, prefix: str) -> KafkaSourceBuilder:
        self._prefix = prefix
        return self

    def set_starting_offsets(self, initializer: KafkaOffsetsInitializer) -> KafkaSourceBuilder:
        self._starting = _initializer(initializer, "set_starting_offsets")
        return self

    def set_bounded(
        self, stopping_offsets_initializer: KafkaOffsetsInitializer
    ) -> KafkaSourceBuilder:
        self._stopping = _initializer(stopping_offsets_initializer, "set_bounded")
        self._bounded = True
        return self

    def set_unbounded(
        self, stopping_offsets_initializer: KafkaOffsetsInitializer
    ) -> KafkaSourceBuilder:
        self._stopping = _initializer(stopping_offsets_initializer, "set_unbounded")
        self._bounded = False
        return self

    def set_value_only_deserializer(self, deserialization_schema: Any) -> KafkaSourceBuilder:
        if not callable(getattr(deserialization_schema, "deserialize", None)):
            raise GraphError(
                "KafkaSourceBuilder.set_value_only_deserializer expects a DeserializationSchema, "
                f"got {deserialization_schema!r}"
            )
        self._value, self._record = deserialization_schema, None
        return self

    def set_deserializer(
        self, record_deserializer: KafkaRecordDeserializationSchema
    ) -> KafkaSourceBuilder:
        if not isinstance(record_deserializer, KafkaRecordDeserializationSchema):
            raise GraphError(
                "KafkaSourceBuilder.set_deserializer expects a KafkaRecordDeserializationSchema, "
                f"got {record_deserializer!r}"
            )
        self._record, self._value = record_deserializer, None
        return self

    def set_property(self, key: str, value: Any) -> KafkaSourceBuilder:
        self._props[key] = value
        return self

    def set_properties(self, props: dict[str, Any]) -> KafkaSourceBuilder:
        self._props.update(props)
        return self

    def build(self) -> KafkaSource:
        if not self._bootstrap:
            raise GraphError("KafkaSource: bootstrap servers are not set (set_bootstrap_servers)")
        if self._topics is None and self._pattern is None and self._partitions is None:
            raise GraphError(
                "KafkaSource: no topics (set_topics, set_topic_pattern or set_partitions)"
            )
        if self._value is None and self._record is None:
            raise GraphError(
                "KafkaSource: no deserializer (set_value_only_deserializer or set_deserializer)"
            )
        props = dict(self._props)
        group = self._group_id or props.get("group.id")
        for key in ("partition.discovery.interval.ms", "request.timeout.ms"):
            if key in props:
                try:
                    int(props[key])
                except (TypeError, ValueError):
                    raise GraphError(
                        f"KafkaSource: property {key} must be a number of ms, got {props[key]!r}"
                    ) from None
        props.pop("group.id", None)
        prefix = str(props.get("client.id.prefix", self._prefix))
        return KafkaSource(
            self._bootstrap,
            self._topics,
            self._pattern,
            self._partitions,
            group,
            self._starting,
            self._stopping,
            self._bounded,
            self._value,
            self._record,
            props,
            prefix,
        )


def _initializer(value: Any, what: str) -> KafkaOffsetsInitializer:
    if not isinstance(value, KafkaOffsetsInitializer):
        raise GraphError(
            f"KafkaSourceBuilder.{what} expects a KafkaOffsetsInitializer, got {value!r}"
        )
    return value
