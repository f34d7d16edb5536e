"""Internal: event-time constants and duration conversion at the API edge."""

from __future__ import annotations

import datetime as _dt
import time as _time
from typing import Protocol, Union

MIN_TS = -(2**63)
"""No watermark yet / no timestamp."""
MAX_TS = 2**63 - 1
"""End of time: the watermark a bounded input ends with."""

Duration = Union[int, float, _dt.timedelta]


def to_millis(duration: Duration, what: str = "duration") -> int:
    """Converts a user duration (int milliseconds or a ``timedelta``) into int milliseconds."""
    if isinstance(duration, _dt.timedelta):
        return int(duration / _dt.timedelta(milliseconds=1))
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise TypeError(
            f"{what} must be int milliseconds or a datetime.timedelta, got {duration!r}"
        )
    return int(duration)


def clamp_ts(ts: int) -> int:
    """Saturates a computed timestamp into [MIN_TS, MAX_TS]."""
    if ts > MAX_TS:
        return MAX_TS
    if ts < MIN_TS:
        return MIN_TS
    return ts


class Clock(Protocol):
    """Where a task reads processing time and monotonic time from (injectable in tests)."""

    def now_ms(self) -> int: ...

    def monotonic_s(self) -> float: ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        return _time.time_ns() // 1_000_000

    def monotonic_s(self) -> float:
        return _time.monotonic()


class Time:
    """PyFlink-style durations: ``Time.seconds(5)`` is 5000 (int milliseconds)."""

    @staticmethod
    def milliseconds(n: int) -> int:
        return int(n)

    @staticmethod
    def seconds(n: float) -> int:
        return int(n * 1000)

    @staticmethod
    def minutes(n: float) -> int:
        return int(n * 60_000)

    @staticmethod
    def hours(n: float) -> int:
        return int(n * 3_600_000)

    @staticmethod
    def days(n: float) -> int:
        return int(n * 86_400_000)
