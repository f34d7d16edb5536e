"""``Duration``, ``Instant`` and ``Time``: PyFlink's time values at the API edge.

``Duration`` is a :class:`datetime.timedelta`, so it is accepted wherever raystream takes a
duration (window sizes, out-of-orderness, idleness, TTL, checkpoint intervals), next to int
milliseconds and plain timedeltas.
"""

from __future__ import annotations

import datetime as _dt

__all__ = ["Duration", "Instant"]


class Duration(_dt.timedelta):
    """PyFlink's ``Duration``: ``Duration.of_seconds(5).to_milliseconds() == 5000``."""

    @staticmethod
    def of_nanos(nanos: int) -> Duration:
        return Duration(microseconds=nanos / 1000)

    @staticmethod
    def of_millis(millis: int) -> Duration:
        return Duration(milliseconds=millis)

    @staticmethod
    def of_seconds(seconds: int) -> Duration:
        return Duration(seconds=seconds)

    @staticmethod
    def of_minutes(minutes: int) -> Duration:
        return Duration(minutes=minutes)

    @staticmethod
    def of_hours(hours: int) -> Duration:
        return Duration(hours=hours)

    @staticmethod
    def of_days(days: int) -> Duration:
        return Duration(days=days)

    def to_milliseconds(self) -> int:
        return self // _dt.timedelta(milliseconds=1)

    def __repr__(self) -> str:
        return f"Duration.of_millis({self.to_milliseconds()})"


class Instant:
    """A point in time (seconds and nanoseconds since the epoch)."""

    __slots__ = ("seconds", "nanos")

    def __init__(self, seconds: int, nanos: int):
        self.seconds = seconds
        self.nanos = nanos

    @staticmethod
    def of_epoch_milli(epoch_milli: int) -> Instant:
        return Instant(epoch_milli // 1000, (epoch_milli % 1000) * 1_000_000)

    def to_epoch_milli(self) -> int:
        return self.seconds * 1000 + self.nanos // 1_000_000

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Instant)
            and self.seconds == other.seconds
            and self.nanos == other.nanos
        )

    def __hash__(self) -> int:
        return hash((self.seconds, self.nanos))

    def __repr__(self) -> str:
        return f"Instant({self.seconds}, {self.nanos})"
