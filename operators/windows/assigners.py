"""Window assigners and the window types (SEMANTICS §2.1–2.3).

Windows are small immutable values: ``TimeWindow(start, end)`` is the half-open interval
``[start, end)`` with ``max_timestamp = end − 1``; ``GlobalWindow`` is the one window of
``GlobalWindows``. Window starts use floor modulo, so negative timestamps work.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, NamedTuple

from raystream.core.time import MAX_TS, Duration, to_millis


class TimeWindow(NamedTuple):
    start: int
    end: int

    def max_timestamp(self) -> int:
        return self.end - 1

    def intersects(self, other: TimeWindow) -> bool:
        return self.start <= other.end and self.end >= other.start

    def cover(self, other: TimeWindow) -> TimeWindow:
        return TimeWindow(min(self.start, other.start), max(self.end, other.end))


class GlobalWindow:
    """The single window of :class:`GlobalWindows` (never ends)."""

    _instance: GlobalWindow | None = None

    def __new__(cls) -> GlobalWindow:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def max_timestamp(self) -> int:
        return MAX_TS

    def __reduce__(self):
        return (GlobalWindow, ())

    def __repr__(self) -> str:
        return "GlobalWindow"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GlobalWindow)

    def __hash__(self) -> int:
        return 0x61E


class CountWindow(NamedTuple):
    """PyFlink's window of a count assigner, numbered by ``id``. raystream's count windows
    (``count_window``) are global windows with a count trigger, as in Flink's Java API, so
    their functions get :class:`GlobalWindow`; this type is here for annotations and for
    user assigners."""

    id: int

    def max_timestamp(self) -> int:
        return MAX_TS


class SessionWindowTimeGapExtractor(ABC):
    """The gap of a dynamic session window: ``extract(element)`` returns milliseconds (or a
    duration). See ``EventTimeSessionWindows.with_dynamic_gap``."""

    @abstractmethod
    def extract(self, element: Any) -> Any: ...


def window_start(ts: int, offset: int, size: int) -> int:
    """Start of the window of length ``size`` (shifted by ``offset``) that contains ``ts``."""
    return ts - (ts - offset) % size  # Python's % with a positive divisor is floor modulo


class WindowAssigner(ABC):
    """Puts each element into zero or more windows."""

    @abstractmethod
    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> list[Any]:
        """``timestamp`` is the event timestamp; ``now_ms`` the task's processing time."""

    @abstractmethod
    def get_default_trigger(self) -> Any: ...

    @abstractmethod
    def is_event_time(self) -> bool: ...

    def is_merging(self) -> bool:
        return False


class TumblingEventTimeWindows(WindowAssigner):
    def __init__(self, size_ms: int, offset_ms: int = 0):
        if size_ms <= 0:
            raise ValueError(f"tumbling window size must be > 0 ms, got {size_ms}")
        if abs(offset_ms) >= size_ms:
            raise ValueError(
                f"tumbling window offset must satisfy |offset| < size, got {offset_ms}"
            )
        self.size = size_ms
        self.offset = offset_ms

    @staticmethod
    def of(size: Duration, offset: Duration = 0) -> TumblingEventTimeWindows:
        return TumblingEventTimeWindows(
            to_millis(size, "window size"), to_millis(offset, "window offset")
        )

    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> list[Any]:
        start = window_start(timestamp, self.offset, self.size)
        return [TimeWindow(start, start + self.size)]

    def get_default_trigger(self) -> Any:
        from raystream.operators.windows.triggers import EventTimeTrigger

        return EventTimeTrigger()

    def is_event_time(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"TumblingEventTimeWindows({self.size})"


class SlidingEventTimeWindows(WindowAssigner):
    def __init__(self, size_ms: int, slide_ms: int, offset_ms: int = 0):
        if size_ms <= 0 or slide_ms <= 0:
            raise ValueError(
                f"sliding windows need size > 0 and slide > 0, got {size_ms}, {slide_ms}"
            )
        if abs(offset_ms) >= slide_ms:
            raise ValueError(
                f"sliding window offset must satisfy |offset| < slide, got {offset_ms}"
            )
        self.size = size_ms
        self.slide = slide_ms
        self.offset = offset_ms

    @staticmethod
    def of(size: Duration, slide: Duration, offset: Duration = 0) -> SlidingEventTimeWindows:
        return SlidingEventTimeWindows(
            to_millis(size, "window size"),
            to_millis(slide, "window slide"),
            to_millis(offset, "window offset"),
        )

    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> list[Any]:
        return sliding_windows(timestamp, self.size, self.slide, self.offset)

    def get_default_trigger(self) -> Any:
        from raystream.operators.windows.triggers import EventTimeTrigger

        return EventTimeTrigger()

    def is_event_time(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"SlidingEventTimeWindows({self.size}, {self.slide})"


def sliding_windows(ts: int, size: int, slide: int, offset: int) -> list[Any]:
    out = []
    start = window_start(ts, offset, slide)
    while start > ts - size:
        out.append(TimeWindow(start, start + size))
        start -= slide
    return out


class EventTimeSessionWindows(WindowAssigner):
    """Sessions closed by a gap of inactivity; a gap function makes the gap per element."""

    def __init__(self, gap_ms: int | None = None, gap_fn: Callable[[Any], Any] | None = None):
        if gap_fn is None and (gap_ms is None or gap_ms <= 0):
            raise ValueError(f"session gap must be > 0 ms, got {gap_ms}")
        self.gap = gap_ms
        self.gap_fn = gap_fn

    @staticmethod
    def with_gap(gap: Duration) -> EventTimeSessionWindows:
        return EventTimeSessionWindows(to_millis(gap, "session gap"))

    @staticmethod
    def with_dynamic_gap(extractor: Any) -> EventTimeSessionWindows:
        fn = getattr(extractor, "extract", extractor)
        if not callable(fn):
            raise TypeError(
                "with_dynamic_gap expects a SessionWindowTimeGapExtractor or a callable(element)"
            )
        return EventTimeSessionWindows(None, fn)

    def _gap(self, element: Any) -> int:
        if self.gap_fn is None:
            return self.gap  # type: ignore[return-value]
        gap = to_millis(self.gap_fn(element), "session gap")
        if gap <= 0:
            raise ValueError(f"dynamic session gap must be > 0 ms, got {gap}")
        return gap

    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> list[Any]:
        return [TimeWindow(timestamp, timestamp + self._gap(element))]

    def get_default_trigger(self) -> Any:
        from raystream.operators.windows.triggers import EventTimeTrigger

        return EventTimeTrigger()

    def is_event_time(self) -> bool:
        return True

    def is_merging(self) -> bool:
        return True


class TumblingProcessingTimeWindows(TumblingEventTimeWindows):
    @staticmethod
    def of(size: Duration, offset: Duration = 0) -> TumblingProcessingTimeWindows:
        return TumblingProcessingTimeWindows(
            to_millis(size, "window size"), to_millis(offset, "window offset")
        )

    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> list[Any]:
        return super().assign_windows(element, now_ms, now_ms)

    def get_default_trigger(self) -> Any:
        from raystream.operators.windows.triggers import ProcessingTimeTrigger

        return ProcessingTimeTrigger()

    def is_event_time(self) -> bool:
        return False


class SlidingProcessingTimeWindows(SlidingEventTimeWindows):
    @staticmethod
    def of(size: Duration, slide: Duration, offset: Duration = 0) -> SlidingProcessingTimeWindows:
        return SlidingProcessingTimeWindows(
            to_millis(size, "window size"),
            to_millis(slide, "window slide"),
            to_millis(offset, "window offset"),
        )

    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> list[Any]:
        return sliding_windows(now_ms, self.size, self.slide, self.offset)

    def get_default_trigger(self) -> Any:
        from raystream.operators.windows.triggers import ProcessingTimeTrigger

        return ProcessingTimeTrigger()

    def is_event_time(self) -> bool:
        return False


class ProcessingTimeSessionWindows(EventTimeSessionWindows):
    @staticmethod
    def with_gap(gap: Duration) -> ProcessingTimeSessionWindows:
        return ProcessingTimeSessionWindows(to_millis(gap, "session gap"))

    @staticmethod
    def with_dynamic_gap(extractor: Any) -> ProcessingTimeSessionWindows:
        fn = getattr(extractor, "extract", extractor)
        return ProcessingTimeSessionWindows(None, fn)

    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> list[Any]:
        return [TimeWindow(now_ms, now_ms + self._gap(element))]

    def get_default_trigger(self) -> Any:
        from raystream.operators.windows.triggers import ProcessingTimeTrigger

        return ProcessingTimeTrigger()

    def is_event_time(self) -> bool:
        return False


class GlobalWindows(WindowAssigner):
    """Everything of a key in one window; the default trigger never fires."""

    @staticmethod
    def create() -> GlobalWindows:
        return GlobalWindows()

    def assign_windows(self, element: Any, timestamp: int, now_ms: int) -> list[Any]:
        return [GlobalWindow()]

    def get_default_trigger(self) -> Any:
        from raystream.operators.windows.triggers import NeverTrigger

        return NeverTrigger()

    def is_event_time(self) -> bool:
        return False


def merge_windows(windows: list[TimeWindow]) -> list[tuple[TimeWindow, list[TimeWindow]]]:
    """Groups intersecting windows (sorted by start): ``[(cover, members), ...]``."""
    out: list[tuple[TimeWindow, list[TimeWindow]]] = []
    for w in sorted(windows):
        if out and out[-1][0].intersects(w):
            cover, members = out[-1]
            out[-1] = (cover.cover(w), members + [w])
        else:
            out.append((w, [w]))
    return out
