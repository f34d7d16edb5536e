"""Triggers: when a window is evaluated and/or purged (SEMANTICS §2.4, §2.5, §2.7).

A trigger is a description shared by all windows; anything it remembers lives in partitioned
state (per key and window) obtained from the context, so it is snapshotted with the operator.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from raystream.core.time import Duration, to_millis
from raystream.state.descriptors import ReducingStateDescriptor, ValueStateDescriptor


class TriggerResult(enum.Enum):
    CONTINUE = (False, False)
    FIRE = (True, False)
    PURGE = (False, True)
    FIRE_AND_PURGE = (True, True)

    @property
    def is_fire(self) -> bool:
        return self.value[0]

    @property
    def is_purge(self) -> bool:
        return self.value[1]


class Trigger(ABC):
    @abstractmethod
    def on_element(self, element: Any, timestamp: int, window: Any, ctx: Any) -> TriggerResult: ...

    @abstractmethod
    def on_processing_time(self, time: int, window: Any, ctx: Any) -> TriggerResult: ...

    @abstractmethod
    def on_event_time(self, time: int, window: Any, ctx: Any) -> TriggerResult: ...

    def can_merge(self) -> bool:
        return False

    def on_merge(self, window: Any, ctx: Any) -> None:
        raise TypeError(f"{type(self).__name__} cannot be used with merging (session) windows")

    def clear(self, window: Any, ctx: Any) -> None:  # noqa: B027 - optional hook
        pass


class EventTimeTrigger(Trigger):
    """Fires once the watermark passes the window's end (and at once for late elements)."""

    def on_element(self, element: Any, timestamp: int, window: Any, ctx: Any) -> TriggerResult:
        if window.max_timestamp() <= ctx.get_current_watermark():
            return TriggerResult.FIRE
        ctx.register_event_time_timer(window.max_timestamp())
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        return TriggerResult.FIRE if time == window.max_timestamp() else TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: Any, ctx: Any) -> None:
        if window.max_timestamp() > ctx.get_current_watermark():
            ctx.register_event_time_timer(window.max_timestamp())

    def clear(self, window: Any, ctx: Any) -> None:
        ctx.delete_event_time_timer(window.max_timestamp())

    @staticmethod
    def create() -> EventTimeTrigger:
        return EventTimeTrigger()


class ProcessingTimeTrigger(Trigger):
    """Fires when the processing-time clock reaches the window's end."""

    def on_element(self, element: Any, timestamp: int, window: Any, ctx: Any) -> TriggerResult:
        ctx.register_processing_time_timer(window.max_timestamp())
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        return TriggerResult.FIRE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: Any, ctx: Any) -> None:
        if window.max_timestamp() > ctx.get_current_processing_time():
            ctx.register_processing_time_timer(window.max_timestamp())

    def clear(self, window: Any, ctx: Any) -> None:
        ctx.delete_processing_time_timer(window.max_timestamp())

    @staticmethod
    def create() -> ProcessingTimeTrigger:
        return ProcessingTimeTrigger()


class NeverTrigger(Trigger):
    """The default of global windows: never fires."""

    def on_element(self, element: Any, timestamp: int, window: Any, ctx: Any) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: Any, ctx: Any) -> None:
        pass


def _add(a: int, b: int) -> int:
    return a + b


class CountTrigger(Trigger):
    """Fires when the window has received ``count`` elements (then counts again from zero)."""

    def __init__(self, count: int):
        if count <= 0:
            raise ValueError(f"count trigger needs count > 0, got {count}")
        self.count = count
        self.state = ReducingStateDescriptor("__count_trigger__", _add)

    @staticmethod
    def of(count: int) -> CountTrigger:
        return CountTrigger(count)

    def on_element(self, element: Any, timestamp: int, window: Any, ctx: Any) -> TriggerResult:
        counter = ctx.get_partitioned_state(self.state)
        counter.add(1)
        if counter.get() >= self.count:
            counter.clear()
            return TriggerResult.FIRE
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: Any, ctx: Any) -> None:
        ctx.merge_partitioned_state(self.state)

    def clear(self, window: Any, ctx: Any) -> None:
        ctx.get_partitioned_state(self.state).clear()


class PurgingTrigger(Trigger):
    """Turns the wrapped trigger's FIRE into FIRE_AND_PURGE."""

    def __init__(self, nested: Trigger):
        self.nested = nested

    @staticmethod
    def of(nested: Trigger) -> PurgingTrigger:
        return PurgingTrigger(nested)

    @staticmethod
    def _purging(result: TriggerResult) -> TriggerResult:
        return TriggerResult.FIRE_AND_PURGE if result.is_fire else result

    def on_element(self, element: Any, timestamp: int, window: Any, ctx: Any) -> TriggerResult:
        return self._purging(self.nested.on_element(element, timestamp, window, ctx))

    def on_event_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        return self._purging(self.nested.on_event_time(time, window, ctx))

    def on_processing_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        return self._purging(self.nested.on_processing_time(time, window, ctx))

    def can_merge(self) -> bool:
        return self.nested.can_merge()

    def on_merge(self, window: Any, ctx: Any) -> None:
        self.nested.on_merge(window, ctx)

    def clear(self, window: Any, ctx: Any) -> None:
        self.nested.clear(window, ctx)


def _min(a: int, b: int) -> int:
    return min(a, b)


class _Continuous(Trigger):
    """Fires every ``interval`` (aligned to multiples of it) until the window ends."""

    event_time = True

    def __init__(self, interval_ms: int):
        if interval_ms <= 0:
            raise ValueError(f"continuous trigger interval must be > 0 ms, got {interval_ms}")
        self.interval = interval_ms
        self.state = ReducingStateDescriptor("__continuous_fire__", _min)

    def _register(self, t: int, ctx: Any) -> None:
        if self.event_time:
            ctx.register_event_time_timer(t)
        else:
            ctx.register_processing_time_timer(t)

    def _delete(self, t: int, ctx: Any) -> None:
        if self.event_time:
            ctx.delete_event_time_timer(t)
        else:
            ctx.delete_processing_time_timer(t)

    def _now(self, ctx: Any) -> int:
        return ctx.get_current_watermark() if self.event_time else ctx.get_current_processing_time()

    def on_element(self, element: Any, timestamp: int, window: Any, ctx: Any) -> TriggerResult:
        if self.event_time and window.max_timestamp() <= ctx.get_current_watermark():
            return TriggerResult.FIRE
        if self.event_time:
            ctx.register_event_time_timer(window.max_timestamp())
        fire = ctx.get_partitioned_state(self.state)
        if fire.get() is None:
            base = timestamp if self.event_time else ctx.get_current_processing_time()
            start = base - base % self.interval
            nxt = min(start + self.interval, window.max_timestamp())
            self._register(nxt, ctx)
            fire.add(nxt)
        return TriggerResult.CONTINUE

    def _on_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        fire = ctx.get_partitioned_state(self.state)
        if fire.get() == time:
            fire.clear()
            nxt = min(time + self.interval, window.max_timestamp())
            if nxt > time:
                fire.add(nxt)
                self._register(nxt, ctx)
            return TriggerResult.FIRE
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        if not self.event_time:
            return TriggerResult.CONTINUE
        if time == window.max_timestamp():
            return TriggerResult.FIRE
        return self._on_time(time, window, ctx)

    def on_processing_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        if self.event_time:
            return TriggerResult.CONTINUE
        return self._on_time(time, window, ctx)

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: Any, ctx: Any) -> None:
        ctx.merge_partitioned_state(self.state)
        nxt = ctx.get_partitioned_state(self.state).get()
        if nxt is not None:
            self._register(nxt, ctx)
        if self.event_time and window.max_timestamp() > ctx.get_current_watermark():
            ctx.register_event_time_timer(window.max_timestamp())

    def clear(self, window: Any, ctx: Any) -> None:
        fire = ctx.get_partitioned_state(self.state)
        t = fire.get()
        if t is not None:
            self._delete(t, ctx)
            fire.clear()


class ContinuousEventTimeTrigger(_Continuous):
    event_time = True

    @staticmethod
    def of(interval: Duration) -> ContinuousEventTimeTrigger:
        return ContinuousEventTimeTrigger(to_millis(interval, "interval"))


class ContinuousProcessingTimeTrigger(_Continuous):
    event_time = False

    @staticmethod
    def of(interval: Duration) -> ContinuousProcessingTimeTrigger:
        return ContinuousProcessingTimeTrigger(to_millis(interval, "interval"))


class DeltaTrigger(Trigger):
    """Fires when ``delta(last_fired_element, element) > threshold``."""

    def __init__(self, threshold: float, delta: Callable[[Any, Any], float]):
        self.threshold = threshold
        self.delta = getattr(delta, "get_delta", delta)
        self.state = ValueStateDescriptor("__delta_last__")

    @staticmethod
    def of(threshold: float, delta_function: Any) -> DeltaTrigger:
        return DeltaTrigger(threshold, delta_function)

    def on_element(self, element: Any, timestamp: int, window: Any, ctx: Any) -> TriggerResult:
        last = ctx.get_partitioned_state(self.state)
        previous = last.value()
        if previous is None:
            last.update(element)
            return TriggerResult.CONTINUE
        if self.delta(previous, element) > self.threshold:
            last.update(element)
            return TriggerResult.FIRE
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        return TriggerResult.CONTINUE

    def clear(self, window: Any, ctx: Any) -> None:
        ctx.get_partitioned_state(self.state).clear()
