"""Internal: the producer side of channels — batching, sequence numbers, credit (back-pressure).

Record path: the last operator of a chain emits a batch to an :class:`EdgeOutput`, whose router
appends the records to the :class:`ChannelSender` of each target consumer. A sender seals its
buffer into a :class:`Batch` message when it holds a full message (``batch_size`` records, or
fewer when records are large: about ``message_bytes`` judged by the bytes per record pickled so
far, one record at least), when a control message must follow the data, or when the buffer
timeout expires. A message that pickles to more than twice ``message_bytes`` (the first of a
channel, or records that grew) is cut again by the bytes per record it showed before it is sent,
so the bytes in flight on a channel stay within about ``capacity × message_bytes`` — or
``capacity`` records, when a single record is larger than that.

Adaptive batching: a Ray actor call costs in the order of a millisecond of CPU on each side
whatever it carries, so under load messages should be full. When the buffer timeout expires
while the consumer has not yet taken the channel's previous message, the buffer keeps filling
(and is checked again one timeout later): sending it now would only queue it behind that message.
A consumer that keeps up takes each message at once, and then the timeout applies as set.

Columnar streams (:class:`ColumnBatch`) are buffered as Arrow record batches and sealed the
same way — at most ``column_batch_size`` rows per message, or about ``message_bytes`` — and each
message travels as one Arrow IPC stream (:mod:`raystream.runtime.columns`): a ``pyarrow.Buffer``
argument, which Ray moves through the object store without copying it into Python objects.

Sealed messages go out as
``consumer.push(channel, seq, message)`` actor calls. Small batches separated only by
watermarks (a punctuated generator cuts batches where it emits) go out together as one bundle
(a list, in order) of at most a message's worth of records. At most ``capacity`` calls may be
unanswered per channel, and the consumer answers a push only once its task has taken the
message out of its input queue — so a slow consumer suspends its producers (credit-based flow
control), and memory per channel stays bounded.
"""

from __future__ import annotations

import io
import pickle
from collections import deque
from collections.abc import Callable
from typing import Any

import cloudpickle

from raystream.config import COLUMN_BATCH_FACTOR
from raystream.core.time import MIN_TS
from raystream.errors import SerializationError, record_repr
from raystream.graph.partitioners import Router
from raystream.operators.base import Output
from raystream.runtime import columns
from raystream.runtime.elements import Batch, ColumnBatch, Watermark, WatermarkStatus


class ChannelSender:
    """One channel from this subtask to one consumer subtask."""

    def __init__(
        self,
        push: Callable[[int, int, Any], Any],
        channel_index: int,
        capacity: int,
        batch_size: int,
        monotonic: Callable[[], float],
        name: str,
        message_bytes: int = 1 << 20,
        column_batch_size: int | None = None,
    ):
        self._push = push  # e.g. consumer_handle.push.remote
        self.channel_index = channel_index
        self.capacity = capacity
        self.batch_size = batch_size
        self.column_batch_size = column_batch_size or batch_size * COLUMN_BATCH_FACTOR
        self.message_bytes = message_bytes
        self._answer: Any = None  # completion of the latest push (a future)
        self._monotonic = monotonic
        self.name = name
        self.values: list = []
        self.timestamps: list | None = None
        #: buffered parts of a columnar stream, and their rows
        self.columns: list[ColumnBatch] = []
        self.column_rows = 0
        self.first_added_at = 0.0
        self.queue: deque = deque()  # sealed messages not yet pushed
        self.in_flight: deque = deque()  # refs of pushes not yet answered
        self.seq = 0
        self.records_sent = 0
        self.batches_sent = 0
        self.bytes_sent = 0
        self.blocked_s = 0.0  # time spent waiting for credit
        #: bytes and records pickled so far (sent or split again): the size estimate
        self._seen_bytes = 0
        self._seen_records = 0
        self.resplit = 0  # messages pickled too large and cut again

    # -- synchronous side: called while operators run ---------------------------------------------

    def add(self, values: list, timestamps: list | None) -> None:
        mine = self.values
        if not mine:
            self.first_added_at = self._monotonic()
        if timestamps is None:
            if self.timestamps is not None:
                self.timestamps.extend([MIN_TS] * len(values))
        else:
            if self.timestamps is None:
                self.timestamps = [MIN_TS] * len(mine)
            self.timestamps.extend(timestamps)
        mine.extend(values)

    def add_columns(self, part: ColumnBatch) -> None:
        """Buffers the rows of a columnar stream (a channel carries one shape only)."""
        n = len(part)
        if not n:
            return
        if not self.columns:
            self.first_added_at = self._monotonic()
        self.columns.append(part)
        self.column_rows += n

    def limit(self) -> int:
        """Records per message: ``batch_size``, or fewer for large records (about
        ``message_bytes`` by the bytes per record seen so far; one record at least)."""
        cap = self.column_batch_size if self.columns else self.batch_size
        if not self._seen_bytes:
            return cap
        by_bytes = self.message_bytes * self._seen_records // self._seen_bytes
        return max(1, min(cap, by_bytes))

    def consumer_busy(self) -> bool:
        """The consumer has not yet taken the latest message pushed on this channel."""
        answer = self._answer
        return answer is not None and not answer.done()

    def seal(self) -> None:
        if self.columns:
            self._seal_columns(whole_only=False)
        values = self.values
        if not values:
            return
        size = self.limit()
        stamps = self.timestamps
        for start in range(0, len(values), size):
            self.queue.append(
                Batch(
                    values[start : start + size], stamps[start : start + size] if stamps else None
                )
            )
        self.values = []
        self.timestamps = None

    def seal_full(self) -> None:
        """Seals whole batches only, keeping a partial remainder buffered."""
        if self.columns:
            self._seal_columns(whole_only=True)
            return
        values = self.values
        size = self.limit()
        if len(values) < size:
            return
        cut = len(values) - len(values) % size
        stamps = self.timestamps
        for start in range(0, cut, size):
            self.queue.append(
                Batch(
                    values[start : start + size], stamps[start : start + size] if stamps else None
                )
            )
        # the remainder keeps the original deadline: flushing it early is fine, late is not
        self.values = values[cut:]
        self.timestamps = stamps[cut:] if stamps is not None and cut < len(values) else None

    def _seal_columns(self, whole_only: bool) -> None:
        """Cuts the buffered columns into messages of ``limit()`` rows; ``whole_only`` keeps a
        partial remainder buffered (with its original deadline)."""
        size = self.limit()
        total = self.column_rows
        if whole_only and total < size:
            return
        merged = columns.concat(self.columns)
        cut = total - total % size if whole_only else total
        for start in range(0, cut, size):
            self.queue.append(merged.slice(start, min(cut, start + size)))
        if cut < total:
            self.columns, self.column_rows = [merged.slice(cut, total)], total - cut
        else:
            self.columns, self.column_rows = [], 0

    def add_control(self, message: Any) -> None:
        self.seal()
        if type(message) is Watermark and self.queue and type(self.queue[-1]) is Watermark:
            self.queue[-1] = message  # a newer watermark makes an unsent older one redundant
        else:
            self.queue.append(message)

    # -- asynchronous side: the task awaits these between batches ---------------------------------

    async def send_queued(self) -> None:
        queue = self.queue
        in_flight = self.in_flight
        while queue:
            if len(in_flight) >= self.capacity:
                t0 = self._monotonic()
                while len(in_flight) >= self.capacity:
                    await in_flight.popleft()
                self.blocked_s += self._monotonic() - t0
            message = queue.popleft()
            if type(message) is ColumnBatch:
                payload = columns.encode(message, self.name)
                n_records = len(message)
                self._seen_bytes += payload.size
                self._seen_records += n_records
                if payload.size > 2 * self.message_bytes and n_records > 1:
                    self._requeue(message, payload.size, n_records)
                    continue
                self.records_sent += n_records
                self.batches_sent += 1
                self.bytes_sent += payload.size
            elif type(message) is Batch:
                if queue and type(queue[0]) in _BUNDLED:
                    message = self._bundle(message)
                # pickled here rather than by Ray: one flat bytes argument is the cheapest
                # thing an actor call can carry, and it lets us count the bytes
                payload = _dumps(message, self.name)
                n_records = (
                    len(message.values)
                    if type(message) is Batch
                    else sum(len(p.values) for p in message if type(p) is Batch)
                )
                self._seen_bytes += len(payload)
                self._seen_records += n_records
                if len(payload) > 2 * self.message_bytes and n_records > 1:
                    # far larger than a message may be (the first message of a channel, or
                    # records that grew): cut it by the bytes per record it showed
                    self._requeue(message, len(payload), n_records)
                    continue
                if type(message) is Batch:
                    self.records_sent += len(message.values)
                    self.batches_sent += 1
                else:
                    for part in message:
                        if type(part) is Batch:
                            self.records_sent += len(part.values)
                            self.batches_sent += 1
                self.bytes_sent += len(payload)
            else:
                payload = message
            ref = self._push(self.channel_index, self.seq, payload)
            in_flight.append(ref)
            # a Ray ObjectRef tells of its completion through a future; test doubles are futures
            future = getattr(ref, "future", None)
            self._answer = future() if future is not None else ref
            self.seq += 1

    def _requeue(self, message: Batch | ColumnBatch | list, size: int, n_records: int) -> None:
        """Puts ``message`` back at the head of the queue in pieces of about
        ``message_bytes`` (a single record larger than that travels alone), order kept."""
        self.resplit += 1
        per_message = max(1, self.message_bytes * n_records // size)
        parts = message if isinstance(message, list) else [message]
        pieces: list = []
        for part in parts:
            if type(part) is ColumnBatch:
                rows = len(part)
                pieces.extend(
                    part.slice(start, min(rows, start + per_message))
                    for start in range(0, rows, per_message)
                )
                continue
            if type(part) is not Batch:
                pieces.append(part)
                continue
            values, stamps = part.values, part.timestamps
            for start in range(0, len(values), per_message):
                end = start + per_message
                pieces.append(Batch(values[start:end], stamps[start:end] if stamps else None))
        self.queue.extendleft(reversed(pieces))

    def _bundle(self, first: Batch) -> Batch | list:
        """``first`` and the small batches and watermarks queued right after it, as one push
        (a list, in order), up to one message's worth of records. Punctuated watermarks cut the
        stream into small batches; without this each would cost an actor call. A bundle ends
        with a batch, and never holds a barrier or the end of input."""
        queue = self.queue
        limit = self.limit()
        parts: list = [first]
        n = len(first.values)
        taken = 0  # parts taken up to and including the last batch
        i = 0
        while i < len(queue):
            m = queue[i]
            kind = type(m)
            if kind is Batch:
                n += len(m.values)
                if n > limit:
                    break
                parts.append(m)
                taken = len(parts)
            elif kind in _BUNDLED:
                parts.append(m)
            else:
                break
            i += 1
        if taken <= 1:
            return first
        for _ in range(taken - 1):
            queue.popleft()
        return parts[:taken]

    async def drain(self) -> None:
        """Waits until every push was answered (end of input)."""
        await self.send_queued()
        while self.in_flight:
            await self.in_flight.popleft()

    def has_buffered(self) -> bool:
        return bool(self.values or self.columns)


#: control messages a bundle may carry between its batches
_BUNDLED = (Watermark, WatermarkStatus)


def _dumps(batch: Batch | list, channel_name: str) -> bytes:
    """The message's pickle bytes, without pickle's memo ("fast" mode): every record arrives as
    its own copy (as across a Flink network channel: equal, not identical objects), and
    pickling and unpickling take ~35% / ~20% less time per small tuple. A structure that refers
    to itself makes fast mode raise; it is then pickled with the memo."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    try:
        pickler.dump(batch)
        return buffer.getvalue()
    except Exception:
        pass
    try:
        return pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    try:  # records holding lambdas or classes defined in __main__
        return cloudpickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise _serialization_error(exc, batch, channel_name) from exc


def dumps_batch(batch: Batch, channel_name: str) -> bytes:
    """A batch as the bytes a push carries; a record that cannot be pickled is named."""
    return _dumps(batch, channel_name)


def loads(payload: Any) -> Batch | ColumnBatch | list:
    """A :class:`Batch`, a :class:`ColumnBatch` (an Arrow IPC payload), or a bundle: a list of
    batches and watermarks, in channel order."""
    if type(payload) is columns.PAYLOAD_TYPE:
        return columns.decode(payload)
    return pickle.loads(payload)  # type: ignore[no-any-return]


#: the types a data message has when it reaches the consumer (anything else is a control message)
PAYLOAD_TYPES = (bytes, columns.PAYLOAD_TYPE)


def _serialization_error(exc: Exception, message: Batch | list, name: str) -> Exception:
    parts = message if isinstance(message, list) else [message]
    values = [v for p in parts if type(p) is Batch for v in p.values]
    for v in values:
        try:
            cloudpickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as inner:
            return SerializationError(
                f"record {record_repr(v)} on channel {name!r} cannot be serialized: "
                f"{type(inner).__name__}: {inner}"
            )
    return exc


class EdgeOutput(Output):
    """Output of a chain's node onto one job edge: routes records over the edge's channels."""

    def __init__(self, router: Router, senders: list[ChannelSender]):
        self.router = router
        self.senders = senders

    def emit(self, batch: Batch | ColumnBatch) -> None:
        # the plan gave a columnar edge a column router (graph/column_partitioners.py)
        self.router.route(batch, self.senders)  # type: ignore[arg-type]

    def emit_watermark(self, timestamp: int) -> None:
        wm = Watermark(timestamp)
        for s in self.senders:
            s.add_control(wm)

    def emit_watermark_status(self, idle: bool) -> None:
        status = WatermarkStatus(idle)
        for s in self.senders:
            s.add_control(status)


class Writer:
    """All channel senders of one task, with the buffer-timeout bookkeeping."""

    def __init__(
        self, senders: list[ChannelSender], buffer_timeout_s: float, monotonic: Callable[[], float]
    ):
        self.senders = senders
        self.buffer_timeout_s = buffer_timeout_s
        self._monotonic = monotonic

    def broadcast_control(self, message: Any) -> None:
        for s in self.senders:
            s.add_control(message)

    async def send_ready(self) -> None:
        """Sends full batches and queued control messages (may wait for credit)."""
        for s in self.senders:
            s.seal_full()
            if s.queue:
                await s.send_queued()

    async def flush(self, only_expired: bool = False) -> None:
        """Seals and sends buffered records: all of them, or (``only_expired``) those whose
        buffer timeout expired — unless the consumer still has the previous message (see the
        module docstring): then the buffer keeps filling until the next timeout."""
        now = self._monotonic()
        for s in self.senders:
            if s.values or s.columns:
                if not only_expired:
                    s.seal()
                elif now - s.first_added_at >= self.buffer_timeout_s:
                    if s.consumer_busy():
                        s.first_added_at = now
                    else:
                        s.seal()
            if s.queue:
                await s.send_queued()

    def next_deadline(self) -> float | None:
        """Monotonic time at which the oldest buffered record must be sent (None: nothing)."""
        pending = [s.first_added_at for s in self.senders if s.values or s.columns]
        if not pending:
            return None
        return min(pending) + self.buffer_timeout_s

    async def drain(self) -> None:
        for s in self.senders:
            s.seal()
        for s in self.senders:
            await s.drain()

    def metrics(self) -> dict[str, Any]:
        return {
            "records_sent": sum(s.records_sent for s in self.senders),
            "batches_sent": sum(s.batches_sent for s in self.senders),
            "bytes_sent": sum(s.bytes_sent for s in self.senders),
            "backpressured_s": sum(s.blocked_s for s in self.senders),
            "in_flight": sum(len(s.in_flight) for s in self.senders),
        }
