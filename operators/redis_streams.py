"""Redis Streams connectors: a split source reading stream keys, and a sink appending to streams
exactly once.

Source (:class:`RedisStreamSource`, on :mod:`raystream.operators.split_source`). One split per
stream key: given keys, or the streams matching a key pattern, found by ``SCAN ... TYPE stream``
in the job master (periodically when unbounded). A split's progress is the id of the last entry
read; the reader asks for the entries after it with one non-blocking ``XREAD COUNT`` over all its
streams per poll. Where reading starts (:class:`StartPosition`) is resolved to a concrete entry
id by the enumerator when it discovers the stream, so a replay reads exactly the same entries. A
bounded source stops each stream at its last entry id at discovery. The millisecond part of an
entry id is the record's timestamp; watermarks are generated per stream by the runtime.

Sink (:class:`RedisStreamSink`). Exactly-once (the default, with checkpointing on) is a
two-phase-commit sink: the entries of one checkpoint are kept in the sink's checkpointed state
(the transaction) and appended when the checkpoint completes, by a Lua script that runs
atomically on the server: it checks every target key, ``XADD`` s the entries, and records
``(transaction, chunk)`` as the progress of the sink writer in a hash (``marker_key``), skipping
a chunk whose marker is already there. A large transaction is cut into chunks (each atomic and
idempotent, applied in order). The writer id is random per subtask and attempt and travels with
its transactions, so a restored transaction (at any parallelism) is checked against the marker
it was written under, and a replay appends nothing twice. At-least-once appends at once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from raystream.errors import RaystreamError, record_repr
from raystream.operators.sinks import SinkContext, SinkWriter
from raystream.operators.sources import Boundedness
from raystream.operators.split_source import (
    DiscoveringSplitEnumerator,
    ReaderContext,
    SourceReader,
    SplitEnumeratorContext,
    SplitRecords,
    SplitSource,
)
from raystream.operators.transactional import TwoPhaseCommitSink
from raystream.runtime.elements import Batch

__all__ = [
    "RedisConnectorError",
    "RedisStreamSink",
    "RedisStreamSource",
    "RedisStreamSplit",
    "RedisStreamTransaction",
    "StartPosition",
]

_MAX_SEQ = 2**64 - 1


class RedisConnectorError(RaystreamError):
    """A Redis Streams connector failed: server unreachable, authentication refused, a key of
    the wrong type, a record that could not be (de)serialized."""


# --- entry ids ----------------------------------------------------------------------------------


def parse_id(entry_id: str) -> tuple[int, int]:
    """``"1700000000000-3"`` → ``(1700000000000, 3)``; a bare ``"5"`` is ``(5, 0)``."""
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        raise ValueError(f"{entry_id!r} is not a Redis stream entry id (<ms>-<seq>)") from None


def _format_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


def _before(entry_id: str) -> str:
    """The id right before ``entry_id`` (reading after it includes ``entry_id``)."""
    ms, seq = parse_id(entry_id)
    if seq > 0:
        return _format_id(ms, seq - 1)
    if ms > 0:
        return _format_id(ms - 1, _MAX_SEQ)
    return "0-0"


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _connect(url: str, timeout_s: float) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def _redis_error(connector: str, url: str, what: str, exc: Exception) -> RedisConnectorError:
    import redis

    hint = ""
    if isinstance(exc, redis.AuthenticationError):
        hint = " (authentication refused: check the user name and password in the URL)"
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        hint = " (is redis-server running and reachable at that address?)"
    return RedisConnectorError(
        f"{connector}: {what} at {_safe_url(url)} failed: {type(exc).__name__}: {exc}{hint}"
    )


# --- source -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartPosition:
    """Where a stream is read from. ``kind`` is ``earliest``, ``latest``, ``after`` or
    ``timestamp``; use the constructors."""

    kind: str
    entry_id: str = "0-0"

    @staticmethod
    def earliest() -> StartPosition:
        """Every entry of the stream (XREAD's ``0``)."""
        return StartPosition("earliest")

    @staticmethod
    def latest() -> StartPosition:
        """Only entries added after the stream is discovered (XREAD's ``$``, but resolved once to
        the stream's last id, so a replay reads the same entries)."""
        return StartPosition("latest")

    @staticmethod
    def after_id(entry_id: str) -> StartPosition:
        """Entries with an id greater than ``entry_id`` (XREAD's meaning of an id)."""
        parse_id(entry_id)
        return StartPosition("after", entry_id)

    @staticmethod
    def from_id(entry_id: str) -> StartPosition:
        """Entries with an id greater than or equal to ``entry_id``."""
        return StartPosition("after", _before(entry_id))

    @staticmethod
    def from_timestamp(timestamp_ms: int) -> StartPosition:
        """Entries added at or after ``timestamp_ms`` (by the millisecond part of their id)."""
        return StartPosition("after", _before(_format_id(max(0, timestamp_ms), 0)))

    @staticmethod
    def of(value: StartPosition | str) -> StartPosition:
        """``"0"`` → earliest, ``"$"`` → latest, another string → after that id."""
        if isinstance(value, StartPosition):
            return value
        if value in ("0", "0-0"):
            return StartPosition.earliest()
        if value == "$":
            return StartPosition.latest()
        if isinstance(value, str):
            return StartPosition.after_id(value)
        raise TypeError(f"RedisStreamSource: start must be a StartPosition or str, got {value!r}")


@dataclass(frozen=True)
class RedisStreamSplit:
    """One stream key. ``position``: id of the last entry read (entries after it come next);
    ``stop``: bounded, the last id to read (None: unbounded)."""

    stream: str
    position: str = "0-0"
    stop: str | None = None


def default_deserializer(stream: str, entry_id: str, fields: Mapping[bytes, bytes]) -> dict:
    """The entry's fields as a dict of UTF-8 strings."""
    return {k.decode("utf-8"): v.decode("utf-8") for k, v in fields.items()}


class _Enumerator(DiscoveringSplitEnumerator):
    """Lists the streams (given keys, or SCAN by pattern) and positions new ones where reading
    starts. Streams found after the first discovery start at their beginning (they were created
    while the job ran, so all of their entries are new), whatever the start position."""

    def __init__(
        self,
        source: RedisStreamSource,
        context: SplitEnumeratorContext,
        restored_state: Any | None,
        discovery_interval_ms: int | None,
    ):
        known = None
        self.initial_done = False
        if restored_state is not None:
            known = restored_state["splits"]
            self.initial_done = restored_state["initial_done"]
        super().__init__(source, context, known, discovery_interval_ms)
        self.redis_source = source
        self._client: Any = None
        #: subtask of each stream found by this enumerator: round robin in discovery order, so
        #: no subtask is left without a stream while there are at least as many streams
        self._slots: dict[str, int] = {}

    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        return {"splits": dict(self.known), "initial_done": self.initial_done}

    def owner(self, split: Any, parallelism: int) -> int:
        slot = self._slots.get(split.stream)
        if slot is None:  # a split restored from a snapshot and assigned again
            return super().owner(split, parallelism)
        return slot % parallelism

    def discovery_finished(self) -> bool:
        # bounded: streams are listed once, then every subtask hears that no more come (the
        # runtime delivers that after the assignment); an unbounded source never says so: a
        # subtask without a stream then holds event time (or goes idle with with_idleness)
        return self.redis_source.bounded

    def _on_discovered(self, splits: Any, error: BaseException | None) -> bool:
        if error is None:
            n = len(self.known)
            for split in splits:
                if split.stream not in self.known and split.stream not in self._slots:
                    self._slots[split.stream] = n
                    n += 1
        again = super()._on_discovered(splits, error)
        if error is None:
            self.initial_done = True
        return again

    def discover(self) -> list[RedisStreamSplit]:
        src = self.redis_source
        if self._client is None:
            self._client = _connect(src.url, src.timeout_s)
        try:
            if src.pattern is not None:
                names = sorted(
                    {
                        k.decode("utf-8")
                        for k in self._client.scan_iter(
                            match=src.pattern, count=1000, _type="stream"
                        )
                    }
                )
            else:
                names = list(src.streams)
            new = [n for n in names if n not in self.known]
            return self._position(new)
        except RedisConnectorError:
            raise
        except Exception as exc:
            import redis

            if not isinstance(exc, redis.RedisError):
                raise
            what = "discovering streams " + (
                f"matching {src.pattern!r}" if src.pattern is not None else f"{list(src.streams)}"
            )
            raise _redis_error("RedisStreamSource", src.url, what, exc) from exc

    def _position(self, names: list[str]) -> list[RedisStreamSplit]:
        """New splits: their start position and, bounded, their stop id, in one round trip."""
        src = self.redis_source
        if not names:
            return []
        needs_last = src.bounded or (src.start.kind == "latest" and not self.initial_done)
        last: dict[str, str] = {}
        if needs_last:
            pipe = self._client.pipeline(transaction=False)
            for n in names:
                pipe.execute_command("XINFO", "STREAM", n)
            for n, info in zip(names, pipe.execute(raise_on_error=False)):
                if isinstance(info, Exception):
                    if "no such key" in str(info).lower():
                        last[n] = "0-0"  # not created yet: everything it will get is new
                        continue
                    raise RedisConnectorError(
                        f"RedisStreamSource: cannot read stream {n!r} at {_safe_url(src.url)}: "
                        f"{info}"
                    )
                last[n] = _field(info, "last-generated-id")
        out = []
        for n in names:
            if self.initial_done or src.start.kind == "earliest":
                position = "0-0"
            elif src.start.kind == "latest":
                position = last[n]
            else:
                position = src.start.entry_id
            out.append(RedisStreamSplit(n, position, last[n] if src.bounded else None))
        return out

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _field(info: Any, name: str) -> str:
    """A field of an XINFO reply (a flat list, or a dict when the client parsed it)."""
    if isinstance(info, dict):
        value = info.get(name, info.get(name.encode()))
    else:
        items = list(info)
        keys = [k.decode() if isinstance(k, bytes) else k for k in items[0::2]]
        value = dict(zip(keys, items[1::2]))[name]
    return value.decode() if isinstance(value, bytes) else str(value)


class _Reader(SourceReader):
    def __init__(self, source: RedisStreamSource, context: ReaderContext):
        self.source = source
        self.context = context
        self.splits: dict[str, RedisStreamSplit] = {}
        self._client: Any = None

    def add_splits(self, splits: Sequence[Any]) -> None:
        for s in splits:
            self.splits[s.stream] = s

    def poll(self, max_records: int) -> list[SplitRecords]:
        if not self.splits:
            return []
        src = self.source
        if self._client is None:
            self._client = _connect(src.url, src.timeout_s)
        names = list(self.splits)
        per_stream = max(1, min(src.count, max_records // len(names)))
        try:
            reply = self._client.xread(
                {n: self.splits[n].position for n in names}, count=per_stream
            )
        except Exception as exc:
            import redis

            if not isinstance(exc, redis.RedisError):
                raise
            raise _redis_error(
                "RedisStreamSource", src.url, f"XREAD of streams {names}", exc
            ) from exc
        got: dict[str, list] = {}
        pairs = reply.items() if isinstance(reply, dict) else (reply or [])
        for key, entries in pairs:
            got[key.decode("utf-8") if isinstance(key, bytes) else key] = entries
        out = []
        for name in names:
            split = self.splits[name]
            entries = got.get(name, [])
            stop = parse_id(split.stop) if split.stop is not None else None
            # bounded: every entry up to ``stop`` existed at discovery, so a short read means
            # none is left
            finished = stop is not None and len(entries) < per_stream
            values, stamps = [], []
            deserialize = src.deserializer
            for raw_id, fields in entries:
                entry_id = raw_id.decode("ascii") if isinstance(raw_id, bytes) else raw_id
                ms, seq = parse_id(entry_id)
                if stop is not None and (ms, seq) > stop:
                    finished = True
                    break
                try:
                    values.append(deserialize(name, entry_id, fields))
                except Exception as exc:
                    raise RedisConnectorError(
                        f"RedisStreamSource: the deserializer raised {type(exc).__name__} on "
                        f"stream {name!r}, entry {entry_id} (fields {record_repr(fields)}): {exc}"
                    ) from exc
                stamps.append(ms)
                split = replace(split, position=entry_id)
            self.splits[name] = split
            if values or finished:
                out.append(SplitRecords(name, values, stamps, finished))
            if finished:
                del self.splits[name]
        return out

    def snapshot_state(self, checkpoint_id: int) -> list[Any]:
        return list(self.splits.values())

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class RedisStreamSource(SplitSource):
    """Reads Redis streams, one split per stream key (see the module docstring).

    Args:
        url: ``redis://[user:password@]host:port/db`` (or ``rediss://``, ``unix://``).
        streams: stream keys to read; or
        pattern: a key pattern (``SCAN MATCH``); streams matching it are discovered every
            ``discovery_interval_ms`` while an unbounded job runs.
        start: :class:`StartPosition`, or ``"0"`` (earliest, the default), ``"$"`` (latest) or an
            entry id (entries after it).
        bounded: stop each stream at its last entry at discovery (and discover only once).
        deserializer: ``(stream, entry_id, fields) -> record`` with ``fields`` a dict of bytes;
            default: the fields decoded as UTF-8 (:func:`default_deserializer`).
        count: at most this many entries per stream per ``XREAD``.
        timeout_s: socket timeout of every call (nothing waits longer).

    Example (a bounded read of two streams):

    >>> source = RedisStreamSource("redis://localhost:6379/0", streams=["a", "b"], bounded=True)
    >>> source.split_id(RedisStreamSplit("a"))
    'a'
    """

    def __init__(
        self,
        url: str,
        streams: Sequence[str] | None = None,
        *,
        pattern: str | None = None,
        start: StartPosition | str = "0",
        bounded: bool = False,
        deserializer: Callable[[str, str, Mapping[bytes, bytes]], Any] | None = None,
        discovery_interval_ms: int = 1000,
        count: int = 1000,
        timeout_s: float = 10.0,
    ):
        if (streams is None) == (pattern is None):
            raise ValueError("RedisStreamSource: give either streams=[...] or pattern=...")
        if isinstance(streams, str):
            streams = [streams]
        if streams is not None and not streams:
            raise ValueError("RedisStreamSource: streams=[] names no stream")
        if count < 1 or timeout_s <= 0 or discovery_interval_ms < 1:
            raise ValueError(
                "RedisStreamSource: count, timeout_s and discovery_interval_ms must be positive"
            )
        self.url = url
        self.streams = tuple(streams or ())
        self.pattern = pattern
        self.start = StartPosition.of(start)
        self.bounded = bounded
        self.deserializer = deserializer or default_deserializer
        self.count = count
        self.timeout_s = timeout_s
        periodic = pattern is not None and not bounded
        self.discovery_interval_ms: int | None = discovery_interval_ms if periodic else None
        self.boundedness = Boundedness.BOUNDED if bounded else Boundedness.CONTINUOUS_UNBOUNDED

    def create_enumerator(
        self, context: SplitEnumeratorContext, restored_state: Any | None
    ) -> _Enumerator:
        return _Enumerator(self, context, restored_state, self.discovery_interval_ms)

    def create_reader(self, context: ReaderContext) -> _Reader:
        return _Reader(self, context)

    def split_id(self, split: Any) -> str:
        return str(split.stream)

    def describe(self) -> str:
        what = f"pattern {self.pattern!r}" if self.pattern is not None else list(self.streams)
        return f"RedisStreamSource({_safe_url(self.url)}, {what})"


# --- sink ---------------------------------------------------------------------------------------

# KEYS[1]: the marker hash; KEYS[2..]: the target streams of this chunk.
# ARGV: writer id, transaction, chunk, maxlen ("" for none), "~" or "=", then per entry:
# stream index (into KEYS, 2-based), number of field/value items, the items.
# Nothing is written unless every key has the right type, so a failing chunk leaves no trace.
_APPEND_CHUNK = """
local function wrong(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then return t end
  return nil
end
local t = wrong(KEYS[1], 'hash')
if t then return redis.error_reply('marker key ' .. KEYS[1] .. ' holds a ' .. t .. ', not a hash') end
for i = 2, #KEYS do
  t = wrong(KEYS[i], 'stream')
  if t then return redis.error_reply('key ' .. KEYS[i] .. ' holds a ' .. t .. ', not a stream') end
end
local txn, chunk = tonumber(ARGV[2]), tonumber(ARGV[3])
local done = redis.call('HGET', KEYS[1], ARGV[1])
if done then
  local dt, dc = string.match(done, '^(%d+):(%d+)$')
  dt, dc = tonumber(dt), tonumber(dc)
  if dt > txn or (dt == txn and dc >= chunk) then return -1 end
end
local maxlen, how = ARGV[4], ARGV[5]
local i, n = 6, 0
while i <= #ARGV do
  local key = KEYS[tonumber(ARGV[i])]
  local items = tonumber(ARGV[i + 1])
  local args = {key}
  if maxlen ~= '' then
    args[#args + 1] = 'MAXLEN'; args[#args + 1] = how; args[#args + 1] = maxlen
  end
  args[#args + 1] = '*'
  for j = 1, items do args[#args + 1] = ARGV[i + 1 + j] end
  redis.call('XADD', unpack(args))
  n = n + 1
  i = i + 2 + items
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
return n
"""


@dataclass
class RedisStreamTransaction:
    """The entries of one checkpoint of one sink writer: ``(stream, [field, value, ...])`` with
    fields and values as bytes. ``chunks``: entry index ranges, fixed at pre-commit."""

    writer_id: str
    seq: int
    entries: list[tuple[str, list[bytes]]] = field(default_factory=list)
    chunks: list[tuple[int, int]] | None = None
    size: int = 0


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool) or value is None or isinstance(value, list | dict | tuple):
        return json.dumps(value).encode("utf-8")
    if isinstance(value, int | float):
        return repr(value).encode("ascii")
    raise TypeError(f"cannot write a {type(value).__name__} as a Redis stream field value")


def default_serializer(record: Any) -> dict:
    """A dict record's items are the entry's fields (values: str, bytes, numbers; others as
    JSON); any other record becomes one field ``value`` holding its JSON text."""
    if isinstance(record, dict):
        return record
    return {"value": json.dumps(record)}


_GUARANTEES = {"exactly-once": "exactly-once", "at-least-once": "at-least-once"}


def _guarantee(value: Any) -> str:
    name = getattr(value, "name", value)  # an enum such as DeliveryGuarantee.EXACTLY_ONCE
    key = str(name).lower().replace("_", "-")
    if key not in _GUARANTEES:
        raise ValueError(
            f"RedisStreamSink: guarantee must be 'exactly-once' or 'at-least-once', got {value!r}"
        )
    return _GUARANTEES[key]


class RedisStreamSink(TwoPhaseCommitSink):
    """Appends records to Redis streams (see the module docstring).

    Args:
        url: ``redis://[user:password@]host:port/db``.
        stream: the stream key, or a function ``record -> stream key``.
        serializer: ``record -> {field: value}`` (default :func:`default_serializer`).
        guarantee: ``"exactly-once"`` (default; needs checkpointing, else it appends at once) or
            ``"at-least-once"`` (appends at once).
        maxlen: trim each stream to about (``approximate=True``) or exactly this many entries.
        marker_key: the hash holding each writer's committed ``transaction:chunk``.
        chunk_size / chunk_bytes: a commit appends at most this many entries / bytes of fields
            per atomic step.
        timeout_s: socket timeout of every call.

    ``get_sink_result(name)`` of the job: per subtask, the number of entries it appended (at
    least once, or without checkpoints) or pre-committed (exactly once: the last transaction is
    committed after the result is taken) since it last started.
    """

    def __init__(
        self,
        url: str,
        stream: str | Callable[[Any], str],
        *,
        serializer: Callable[[Any], Mapping[Any, Any]] | None = None,
        guarantee: Any = "exactly-once",
        maxlen: int | None = None,
        approximate: bool = True,
        marker_key: str | None = None,
        chunk_size: int = 1000,
        chunk_bytes: int = 1 << 20,
        timeout_s: float = 10.0,
    ):
        if not (isinstance(stream, str) or callable(stream)):
            raise TypeError(f"RedisStreamSink: stream must be a str or a function, got {stream!r}")
        if chunk_size < 1 or chunk_bytes < 1 or (maxlen is not None and maxlen < 1):
            raise ValueError("RedisStreamSink: chunk_size, chunk_bytes and maxlen must be positive")
        self.url = url
        self.stream = stream
        self.serializer = serializer or default_serializer
        self.guarantee = _guarantee(guarantee)
        self.maxlen = maxlen
        self.approximate = approximate
        default_marker = f"raystream:sink:{stream}:committed" if isinstance(stream, str) else None
        if marker_key is None and default_marker is None and self.guarantee == "exactly-once":
            raise ValueError(
                "RedisStreamSink: give marker_key=... when the stream is chosen per record"
            )
        self.marker_key = marker_key or default_marker or "raystream:sink:committed"
        self.chunk_size = chunk_size
        self.chunk_bytes = chunk_bytes
        self.timeout_s = timeout_s
        self._client: Any = None
        self._script: Any = None
        self._writer_id = ""
        self._seq = 0
        self._uncommitted: set[tuple[str, int]] = set()
        self.appended = 0
        self.written = 0

    def describe(self) -> str:
        return f"RedisStreamSink({_safe_url(self.url)}, {self.stream!r}, {self.guarantee})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_client"] = state["_script"] = None
        return state

    # -- encoding ----------------------------------------------------------------------------------

    def encode(self, values: list) -> list[tuple[str, list[bytes]]]:
        """Records → ``(stream, [field, value, ...])``; a record that cannot be encoded raises,
        naming it."""
        out = []
        select = self.stream
        serialize = self.serializer
        for record in values:
            try:
                name = select if isinstance(select, str) else select(record)
                items: list[bytes] = []
                for k, v in serialize(record).items():
                    items.append(_to_bytes(k))
                    items.append(_to_bytes(v))
                if not items:
                    raise ValueError("the serializer returned no field (XADD needs one)")
            except Exception as exc:
                raise RedisConnectorError(
                    f"RedisStreamSink: cannot turn record {record_repr(record)} into a stream "
                    f"entry: {type(exc).__name__}: {exc}"
                ) from exc
            out.append((name, items))
        return out

    # -- Redis -------------------------------------------------------------------------------------

    def _redis(self) -> Any:
        if self._client is None:
            self._client = _connect(self.url, self.timeout_s)
            self._script = self._client.register_script(_APPEND_CHUNK)
        return self._client

    def _xadd_args(self) -> list:
        if self.maxlen is None:
            return []
        return ["MAXLEN", "~" if self.approximate else "=", self.maxlen]

    def append_now(self, entries: list[tuple[str, list[bytes]]]) -> None:
        """At-least-once: one pipelined round trip of XADDs."""
        if not entries:
            return
        client = self._redis()
        trim = self._xadd_args()
        try:
            pipe = client.pipeline(transaction=False)
            for name, items in entries:
                pipe.execute_command("XADD", name, *trim, "*", *items)
            pipe.execute()
        except Exception as exc:
            import redis

            if not isinstance(exc, redis.RedisError):
                raise
            streams = sorted({n for n, _ in entries})
            raise _redis_error("RedisStreamSink", self.url, f"XADD to {streams}", exc) from exc
        self.appended += len(entries)

    def _apply_chunk(self, txn: RedisStreamTransaction, chunk: int, lo: int, hi: int) -> int:
        keys: dict[str, int] = {}
        argv: list[Any] = [txn.writer_id, txn.seq, chunk]
        argv += [self.maxlen or "", "~" if self.approximate else "="]
        for name, items in txn.entries[lo:hi]:
            index = keys.setdefault(name, len(keys) + 2)
            argv.append(index)
            argv.append(len(items))
            argv.extend(items)
        self._redis()
        try:
            return int(self._script(keys=[self.marker_key, *keys], args=argv))
        except Exception as exc:
            import redis

            if not isinstance(exc, redis.RedisError):
                raise
            what = (
                f"appending chunk {chunk} ({hi - lo} entries to {sorted(keys)}) of transaction "
                f"{txn.seq} of writer {txn.writer_id}"
            )
            raise _redis_error("RedisStreamSink", self.url, what, exc) from exc

    # -- two-phase commit --------------------------------------------------------------------------

    def create_writer(self, context: SinkContext) -> SinkWriter:
        """Without checkpoints there is nothing to commit on: records are appended at once."""
        return _AppendWriter(self)

    def open(self, context: SinkContext) -> None:
        self._writer_id = f"{context.subtask_index}-{uuid.uuid4().hex[:12]}"
        self._seq = 0
        self._uncommitted = set()
        self.appended = 0
        self.written = 0

    def begin_transaction(self) -> RedisStreamTransaction:
        txn = RedisStreamTransaction(self._writer_id, self._seq)
        self._seq += 1
        return txn

    def write(self, transaction: RedisStreamTransaction, batch: Batch) -> None:
        entries = self.encode(batch.values)
        if self.guarantee == "at-least-once":
            self.append_now(entries)
            return
        transaction.entries.extend(entries)

    def pre_commit(self, transaction: RedisStreamTransaction) -> None:
        """Cuts the entries into chunks; the checkpoint then holds them (the transaction)."""
        self.written += len(transaction.entries)
        chunks: list[tuple[int, int]] = []
        lo = size = 0
        for i, (_, items) in enumerate(transaction.entries):
            n = sum(len(b) for b in items)
            if i > lo and (i - lo >= self.chunk_size or size + n > self.chunk_bytes):
                chunks.append((lo, i))
                lo, size = i, 0
            size += n
        if lo < len(transaction.entries):
            chunks.append((lo, len(transaction.entries)))
        transaction.chunks = chunks
        self._uncommitted.add((transaction.writer_id, transaction.seq))

    def recover_and_commit(self, transaction: RedisStreamTransaction) -> None:
        self._uncommitted.add((transaction.writer_id, transaction.seq))
        self.commit(transaction)

    def commit(self, transaction: RedisStreamTransaction) -> None:
        """Applies the chunks in order; a chunk whose marker is recorded is skipped, so a commit
        repeated after a crash (even one half way through) appends each entry once. A writer's
        marker only moves forward, so its transactions are committed in order: one whose
        predecessor failed to commit waits (raises) until the predecessor is committed."""
        older = [
            s for w, s in self._uncommitted if w == transaction.writer_id and s < transaction.seq
        ]
        if older:
            raise RedisConnectorError(
                f"RedisStreamSink: transaction {transaction.seq} of writer "
                f"{transaction.writer_id} is not committed before its predecessor "
                f"{min(older)}, whose commit failed (it is retried)"
            )
        for chunk, (lo, hi) in enumerate(transaction.chunks or []):
            added = self._apply_chunk(transaction, chunk, lo, hi)
            if added > 0:
                self.appended += added
        self._uncommitted.discard((transaction.writer_id, transaction.seq))
        transaction.entries = []
        transaction.chunks = []

    def abort(self, transaction: RedisStreamTransaction) -> None:
        self._uncommitted.discard((transaction.writer_id, transaction.seq))
        transaction.entries = []
        transaction.chunks = None

    def close(self) -> None:
        client, self._client = self._client, None
        self._script = None
        if client is not None:
            client.close()

    def result(self) -> int:
        if self.guarantee == "exactly-once" and self._writer_id:
            return self.written
        return self.appended


class _AppendWriter(SinkWriter):
    """Without checkpoints: every batch is appended when it arrives."""

    def __init__(self, sink: RedisStreamSink):
        self.sink = sink

    def write(self, batch: Batch) -> None:
        self.sink.append_now(self.sink.encode(batch.values))

    def close(self) -> None:
        self.sink.close()

    def result(self) -> int:
        return self.sink.appended
