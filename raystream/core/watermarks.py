"""Watermark strategies, generators, idleness, and the per-channel watermark valve.

No Ray here. A :class:`WatermarkStrategy` is a picklable description; each source subtask (or
``assign_timestamps_and_watermarks`` subtask) builds its own generator from it. Generators see
the timestamps of whole batches (``on_events``) so the built-ins cost one ``max()`` per batch,
not a call per record. A generator that emits from ``on_event`` (punctuated) is fed record by
record by the default ``on_events``, which tells the output the index of the record being
processed: the output remembers where in the batch each watermark was emitted, and the runtime
cuts the batch there, so the watermark follows exactly the record that produced it (as in Flink).
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from raystream.core.time import MAX_TS, MIN_TS, Duration, to_millis


class WatermarkOutput:
    """Where a generator emits to; the runtime's implementation records what it is told.

    ``watermark`` is the highest watermark emitted so far (a lower one is ignored, as in Flink).
    While ``index`` is set (the default ``on_events`` sets it to the position in the batch of the
    record being processed), every watermark that advances is also recorded in ``cuts`` as
    ``(index, watermark)``: the runtime emits it right after that record.
    """

    def __init__(self) -> None:
        self.watermark: int | None = None
        self.idle = False
        self.index: int | None = None
        self.cuts: list[tuple[int, int]] = []

    def emit_watermark(self, watermark: Any) -> None:
        ts = (
            watermark
            if isinstance(watermark, int)
            else int(getattr(watermark, "timestamp", watermark))
        )
        if self.watermark is None or ts > self.watermark:
            self.watermark = ts
            if self.index is not None:
                cuts = self.cuts
                if cuts and cuts[-1][0] == self.index:
                    cuts[-1] = (self.index, ts)  # several from one event: the highest counts
                else:
                    cuts.append((self.index, ts))
        self.idle = False

    def mark_idle(self) -> None:
        self.idle = True

    def mark_active(self) -> None:
        self.idle = False


class WatermarkGenerator(ABC):
    """Generates watermarks from the events it sees and/or periodically."""

    @abstractmethod
    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None: ...

    @abstractmethod
    def on_periodic_emit(self, output: WatermarkOutput) -> None: ...

    def on_events(self, events: list, timestamps: list[int], output: WatermarkOutput) -> None:
        """A whole batch; override when it can be done without a call per record (a watermark
        emitted by an override is placed after the whole batch). This default calls
        ``on_event`` per record and marks each record's position, so a watermark emitted from
        ``on_event`` goes right after its record."""
        on_event = self.on_event
        for i, (e, t) in enumerate(zip(events, timestamps)):
            output.index = i
            on_event(e, t, output)
        output.index = None  # left set when on_event raises: the error names that record

    def on_column_events(self, batch: Any, timestamps: Any, output: WatermarkOutput) -> None:
        """A batch of a columnar stream: ``batch`` is a ``pyarrow.RecordBatch``, ``timestamps``
        an int64 numpy array. The built-in generators override it with a vectorized pass; this
        default hands the rows to :meth:`on_events` (one dict per row: a generator of its own on
        a columnar stream pays a Python conversion per record)."""
        self.on_events(batch.to_pylist(), timestamps.tolist(), output)


class BoundedOutOfOrdernessWatermarks(WatermarkGenerator):
    """Emits ``max_ts − bound − 1`` periodically (nothing before the first event)."""

    def __init__(self, bound_ms: int):
        if bound_ms < 0:
            raise ValueError(f"out-of-orderness bound must be >= 0 ms, got {bound_ms}")
        self.bound_ms = bound_ms
        self.max_ts: int | None = None

    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
        if self.max_ts is None or event_timestamp > self.max_ts:
            self.max_ts = event_timestamp

    def on_events(self, events: list, timestamps: list[int], output: WatermarkOutput) -> None:
        if timestamps:
            m = max(timestamps)
            if self.max_ts is None or m > self.max_ts:
                self.max_ts = m

    def on_column_events(self, batch: Any, timestamps: Any, output: WatermarkOutput) -> None:
        if len(timestamps):
            m = int(timestamps.max())
            if self.max_ts is None or m > self.max_ts:
                self.max_ts = m

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        if self.max_ts is not None:
            output.emit_watermark(max(MIN_TS, self.max_ts - self.bound_ms - 1))


class NoWatermarksGenerator(WatermarkGenerator):
    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
        pass

    def on_events(self, events: list, timestamps: list[int], output: WatermarkOutput) -> None:
        pass

    def on_column_events(self, batch: Any, timestamps: Any, output: WatermarkOutput) -> None:
        pass

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        pass


class IdlenessWatermarks(WatermarkGenerator):
    """Marks the output idle after ``timeout_ms`` without events (SEMANTICS §1.3)."""

    def __init__(self, inner: WatermarkGenerator, timeout_ms: int, now_ms: Callable[[], int]):
        self.inner = inner
        self.timeout_ms = timeout_ms
        self.now_ms = now_ms
        self.events_since_check = 0
        self.timer_start: int | None = None
        self.is_idle = False

    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
        self.events_since_check += 1
        if self.is_idle:
            self.is_idle = False
            output.mark_active()
        self.inner.on_event(event, event_timestamp, output)

    def on_events(self, events: list, timestamps: list[int], output: WatermarkOutput) -> None:
        if events:
            self.events_since_check += len(events)
            if self.is_idle:
                self.is_idle = False
                output.mark_active()
        self.inner.on_events(events, timestamps, output)

    def on_column_events(self, batch: Any, timestamps: Any, output: WatermarkOutput) -> None:
        if len(timestamps):
            self.events_since_check += len(timestamps)
            if self.is_idle:
                self.is_idle = False
                output.mark_active()
        self.inner.on_column_events(batch, timestamps, output)

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        if self.events_since_check:
            self.events_since_check = 0
            self.timer_start = None
        elif self.timer_start is None:
            self.timer_start = self.now_ms()
        elif self.now_ms() - self.timer_start > self.timeout_ms:
            if not self.is_idle:
                self.is_idle = True
                output.mark_idle()
            return
        if not self.is_idle:
            self.inner.on_periodic_emit(output)


class TimestampAssigner(ABC):
    @abstractmethod
    def extract_timestamp(self, value: Any, record_timestamp: int) -> int: ...


class _TwoArgumentAssigner(TimestampAssigner):
    """A callable ``(value, record_timestamp) -> int`` seen as a :class:`TimestampAssigner`
    (the runtime calls ``fn`` directly, see :meth:`WatermarkStrategy.create_extractor`)."""

    def __init__(self, fn: Callable[[Any, int], int]):
        self.fn = fn

    def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
        return self.fn(value, record_timestamp)


def _takes_record_timestamp(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is to be called as ``fn(value, record_timestamp)``: it has two required
    positional parameters (or one or none and ``*args``). Builtins without a signature take
    one argument."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = sum(1 for p in params if p.kind in positional and p.default is p.empty)
    star = any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params)
    if required > 2:
        raise TypeError(
            f"timestamp assigner {fn!r} takes {required} arguments; expected (value) or "
            "(value, record_timestamp)"
        )
    return required == 2 or (required < 2 and star)


class WatermarkStrategy:
    """How a stream gets event timestamps and watermarks (PyFlink's names)."""

    def __init__(
        self,
        generator_factory: Callable[[], WatermarkGenerator],
        timestamp_assigner: Any = None,
        idle_timeout_ms: int | None = None,
        invalid_timestamps_tag: str | None = None,
        timestamp_column: str | None = None,
    ):
        self._generator_factory = generator_factory
        self._timestamp_assigner = timestamp_assigner
        self._idle_timeout_ms = idle_timeout_ms
        self.invalid_timestamps_tag = invalid_timestamps_tag
        #: the column (or field) timestamps come from (``with_timestamp_column``)
        self.timestamp_column = timestamp_column

    def _copy(self, **changes: Any) -> WatermarkStrategy:
        args = {
            "generator_factory": self._generator_factory,
            "timestamp_assigner": self._timestamp_assigner,
            "idle_timeout_ms": self._idle_timeout_ms,
            "invalid_timestamps_tag": self.invalid_timestamps_tag,
            "timestamp_column": self.timestamp_column,
        }
        args.update(changes)
        return WatermarkStrategy(**args)

    @staticmethod
    def for_bounded_out_of_orderness(max_out_of_orderness: Duration) -> WatermarkStrategy:
        bound = to_millis(max_out_of_orderness, "max out-of-orderness")
        return WatermarkStrategy(_BoundedFactory(bound))

    @staticmethod
    def for_monotonous_timestamps() -> WatermarkStrategy:
        return WatermarkStrategy(_BoundedFactory(0))

    @staticmethod
    def no_watermarks() -> WatermarkStrategy:
        return WatermarkStrategy(NoWatermarksGenerator)

    @staticmethod
    def for_generator(generator_supplier: Callable[[], WatermarkGenerator]) -> WatermarkStrategy:
        if not callable(generator_supplier):
            raise TypeError("for_generator expects a callable returning a WatermarkGenerator")
        return WatermarkStrategy(generator_supplier)

    def with_timestamp_assigner(
        self, timestamp_assigner: TimestampAssigner | Callable[..., int]
    ) -> WatermarkStrategy:
        """``timestamp_assigner``: a :class:`TimestampAssigner`, or a callable taking ``(value)``
        or, as PyFlink's ``extract_timestamp``, ``(value, record_timestamp)``; the record
        timestamp is ``MIN_TS`` (Java's ``Long.MIN_VALUE``) for a record without one. The shape
        is decided here, once, not per record."""
        if isinstance(timestamp_assigner, TimestampAssigner):
            return self._copy(timestamp_assigner=timestamp_assigner, timestamp_column=None)
        extract = getattr(timestamp_assigner, "extract_timestamp", None)
        if callable(extract) and not isinstance(timestamp_assigner, type):
            # PyFlink's shape without our base class
            return self._copy(
                timestamp_assigner=_TwoArgumentAssigner(extract), timestamp_column=None
            )
        if not callable(timestamp_assigner) or isinstance(timestamp_assigner, type):
            raise TypeError(
                "with_timestamp_assigner expects a TimestampAssigner or a callable(value) or "
                f"callable(value, record_timestamp) returning int ms, got {timestamp_assigner!r}"
            )
        if _takes_record_timestamp(timestamp_assigner):
            return self._copy(
                timestamp_assigner=_TwoArgumentAssigner(timestamp_assigner), timestamp_column=None
            )
        return self._copy(timestamp_assigner=timestamp_assigner, timestamp_column=None)

    def with_timestamp_column(self, column: str) -> WatermarkStrategy:
        """Event timestamps from the column ``column``: int milliseconds, a float (truncated to
        whole milliseconds) or an Arrow ``timestamp`` (converted to milliseconds). On a columnar
        stream it is read vectorized, and the built-in generators take the batch's maximum in
        one pass; on a row stream it reads ``record[column]`` (dicts, ``Row`` s) or the
        attribute of that name. A null or invalid timestamp fails the job naming the operator
        and the column, or goes to ``with_invalid_timestamps_to(tag)``. Replaces a timestamp
        assigner."""
        if not isinstance(column, str) or not column:
            raise TypeError(f"with_timestamp_column expects a column name, got {column!r}")
        return self._copy(timestamp_assigner=_FieldTimestamp(column), timestamp_column=column)

    def with_idleness(self, idle_timeout: Duration) -> WatermarkStrategy:
        timeout = to_millis(idle_timeout, "idle timeout")
        if timeout <= 0:
            raise ValueError(f"idle timeout must be > 0 ms, got {timeout}")
        return self._copy(idle_timeout_ms=timeout)

    def with_invalid_timestamps_to(self, output_tag: Any) -> WatermarkStrategy:
        """Routes records whose timestamp is missing or not a number to this side output
        (raystream addition; without it such a record fails the job)."""
        tag_id = getattr(output_tag, "tag_id", None)
        if not isinstance(tag_id, str):
            raise TypeError(f"with_invalid_timestamps_to expects an OutputTag, got {output_tag!r}")
        return self._copy(invalid_timestamps_tag=tag_id)

    # -- runtime side ------------------------------------------------------------------------------

    @property
    def timestamp_assigner(self) -> Any:
        return self._timestamp_assigner

    def create_generator(self, now_ms: Callable[[], int]) -> WatermarkGenerator:
        gen = self._generator_factory()
        if not isinstance(gen, WatermarkGenerator):
            raise TypeError(
                f"the watermark generator supplier returned {type(gen).__name__}, not a WatermarkGenerator"
            )
        if self._idle_timeout_ms is not None:
            gen = IdlenessWatermarks(gen, self._idle_timeout_ms, now_ms)
        return gen

    def create_extractor(self) -> Callable[[Any, int], int] | None:
        """``extract(value, record_timestamp)``, or None to keep the records' timestamps."""
        a = self._timestamp_assigner
        if a is None:
            return None
        if isinstance(a, _TwoArgumentAssigner):
            return a.fn
        if isinstance(a, TimestampAssigner):
            return a.extract_timestamp
        return lambda value, _record_ts: a(value)

    def value_extractor(self) -> Callable[[Any], Any] | None:
        """The assigner itself when it is a plain ``callable(value)`` (no record timestamp
        needed, so the runtime can call it without a wrapper)."""
        a = self._timestamp_assigner
        return None if a is None or isinstance(a, TimestampAssigner) else a


class _FieldTimestamp:
    """The timestamp assigner of ``with_timestamp_column`` on a row stream: the record's field
    (``record[name]``) or attribute of that name."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, value: Any) -> Any:
        try:
            return value[self.name]
        except (TypeError, KeyError, IndexError):
            try:
                return getattr(value, self.name)
            except AttributeError:
                raise KeyError(
                    f"record has no field or attribute {self.name!r} (the timestamp column)"
                ) from None


class _BoundedFactory:
    def __init__(self, bound_ms: int):
        self.bound_ms = bound_ms

    def __call__(self) -> WatermarkGenerator:
        return BoundedOutOfOrdernessWatermarks(self.bound_ms)


def valid_timestamp(ts: Any) -> int | None:
    """``ts`` as int milliseconds, or None when it is not a usable event timestamp (``MIN_TS``
    and ``MAX_TS`` are reserved: the start and the end of time, not instants a record can have)."""
    t = type(ts)
    if t is int:
        return ts if MIN_TS < ts < MAX_TS else None
    if t is float:
        if math.isfinite(ts):
            i = int(ts)
            return i if MIN_TS < i < MAX_TS else None
        return None
    if isinstance(ts, int) and not isinstance(ts, bool):
        return valid_timestamp(int(ts))
    return None


# -- combining watermarks of several channels (SEMANTICS §1.4) ------------------------------------


class WatermarkValve:
    """Per-channel watermarks and idleness of one logical input → the input's watermark.

    ``on_watermark`` / ``on_idle`` / ``on_active`` return the new output watermark when it
    advances (else None); ``output_idle`` says whether every channel is idle.
    """

    def __init__(self, num_channels: int):
        self.wm = [MIN_TS] * num_channels
        self.idle = [False] * num_channels
        self.aligned = [True] * num_channels
        self.last_out = MIN_TS
        self.output_idle = False

    def on_watermark(self, channel: int, ts: int) -> int | None:
        if self.idle[channel] or ts <= self.wm[channel]:
            return None
        self.wm[channel] = ts
        if ts >= self.last_out:
            self.aligned[channel] = True
        return self._recompute()

    def _recompute(self) -> int | None:
        m = None
        for c, w in enumerate(self.wm):
            if not self.idle[c] and self.aligned[c] and (m is None or w < m):
                m = w
        if m is not None and m > self.last_out:
            self.last_out = m
            return m
        return None

    def on_idle(self, channel: int) -> int | None:
        if self.idle[channel]:
            return None
        self.idle[channel] = True
        self.aligned[channel] = False
        if not all(self.idle):
            return self._recompute()
        out = None
        if self.wm[channel] == self.last_out:
            top = max(self.wm)
            if top > self.last_out:
                self.last_out = top
                out = top
        self.output_idle = True
        return out

    def on_active(self, channel: int) -> None:
        if not self.idle[channel]:
            return
        self.idle[channel] = False
        self.aligned[channel] = self.wm[channel] >= self.last_out
        self.output_idle = False


class SplitWatermarks:
    """Combines the watermarks of a source subtask's splits (Flink's per-split watermark
    multiplexing): the output is the minimum over splits that are not idle, only increasing; it is
    idle when every split is idle or there is no split. A split that never emitted holds the
    output at ``MIN_TS`` until it emits or goes idle; a removed (finished) split leaves the
    minimum.

    ``update``/``set_idle``/``remove`` return ``(watermark or None, status change or None)``:
    the new output watermark if it advanced, and ``True``/``False`` when the output went idle /
    active.
    """

    def __init__(self) -> None:
        self.wm: dict[str, int] = {}
        self.idle: dict[str, bool] = {}
        self.last_out = MIN_TS
        self.output_idle = True

    def add(self, split_id: str) -> tuple[int | None, bool | None]:
        if split_id not in self.wm:
            self.wm[split_id] = MIN_TS
            self.idle[split_id] = False
        return self._recompute()

    def update(self, split_id: str, ts: int) -> tuple[int | None, bool | None]:
        if ts > self.wm.get(split_id, MIN_TS):
            self.wm[split_id] = ts
        self.idle[split_id] = False
        return self._recompute()

    def set_idle(self, split_id: str, idle: bool) -> tuple[int | None, bool | None]:
        if split_id in self.idle:
            self.idle[split_id] = idle
        return self._recompute()

    def remove(self, split_id: str) -> tuple[int | None, bool | None]:
        self.wm.pop(split_id, None)
        self.idle.pop(split_id, None)
        return self._recompute()

    def _recompute(self) -> tuple[int | None, bool | None]:
        active = [w for s, w in self.wm.items() if not self.idle[s]]
        change: bool | None = None
        if not active:
            if not self.output_idle:
                self.output_idle = True
                change = True
            return None, change
        if self.output_idle:
            self.output_idle = False
            change = False
        m = min(active)
        if m > self.last_out:
            self.last_out = m
            return m, change
        return None, change
