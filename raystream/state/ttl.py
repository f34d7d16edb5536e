"""State time-to-live: when keyed state values expire and when expired values are removed.

Follows Flink's ``StateTtlConfig`` (SEMANTICS §3.3): a value carries the time of its last write
(or read, with ``OnReadAndWrite``) and expires ``ttl`` later. List and map state expire per
element / entry. Reading an expired value always removes it (lazy cleanup); background cleanup
removes values nobody reads: incrementally (a few entries per state access, the default) and/or by
leaving expired values out of full snapshots.

raystream adds **event-time TTL** (``use_event_time()``): a value is stamped with the timestamp of
the record (or timer) being processed when it is written, never moving backwards, and expires once
the operator's current watermark reaches ``stamp + ttl``.

Example::

    ttl = (
        StateTtlConfig.new_builder(timedelta(hours=1))
        .set_update_type(StateTtlConfig.UpdateType.OnReadAndWrite)
        .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
        .build()
    )
    descriptor.enable_time_to_live(ttl)
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from raystream.core.time import MIN_TS, Duration, to_millis

__all__ = [
    "StateTtlConfig",
    "StateVisibility",
    "TtlTimeCharacteristic",
    "UpdateType",
    "SystemTtlTimeProvider",
    "TtlPolicy",
    "TtlTimeProvider",
]


class UpdateType(enum.Enum):
    """When the expiry stamp of a value is refreshed."""

    OnCreateAndWrite = "on_create_and_write"
    OnReadAndWrite = "on_read_and_write"


class StateVisibility(enum.Enum):
    """Whether a read may return a value that expired but is still stored."""

    NeverReturnExpired = "never_return_expired"
    ReturnExpiredIfNotCleanedUp = "return_expired_if_not_cleaned_up"


class TtlTimeCharacteristic(enum.Enum):
    """Which time stamps values and decides expiry."""

    ProcessingTime = "processing_time"
    EventTime = "event_time"


@dataclass(frozen=True)
class IncrementalCleanup:
    """Check ``cleanup_size`` entries per state access (and per record if ``run_per_record``)."""

    cleanup_size: int = 5
    run_per_record: bool = False


#: Flink's default background cleanup for heap state, used by both raystream backends
DEFAULT_INCREMENTAL_CLEANUP = IncrementalCleanup(5, False)


@dataclass(frozen=True)
class StateTtlConfig:
    """How keyed state expires. Build one with :meth:`new_builder`."""

    ttl_ms: int
    update_type: UpdateType = UpdateType.OnCreateAndWrite
    state_visibility: StateVisibility = StateVisibility.NeverReturnExpired
    time_characteristic: TtlTimeCharacteristic = TtlTimeCharacteristic.ProcessingTime
    cleanup_full_snapshot: bool = False
    incremental_cleanup: IncrementalCleanup | None = None
    cleanup_in_background: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.ttl_ms, bool) or not isinstance(self.ttl_ms, int) or self.ttl_ms <= 0:
            raise ValueError(
                f"state TTL must be a positive number of milliseconds, got {self.ttl_ms!r}"
            )

    @staticmethod
    def new_builder(ttl: Duration) -> StateTtlConfig.Builder:
        """Starts a config with time-to-live ``ttl`` (int milliseconds or a ``timedelta``)."""
        return StateTtlConfig.Builder(ttl)

    # -- Flink-style getters ----------------------------------------------------------------------

    def get_ttl_ms(self) -> int:
        return self.ttl_ms

    def get_update_type(self) -> UpdateType:
        return self.update_type

    def get_state_visibility(self) -> StateVisibility:
        return self.state_visibility

    def get_ttl_time_characteristic(self) -> TtlTimeCharacteristic:
        return self.time_characteristic

    def is_enabled(self) -> bool:
        return True

    def is_cleanup_in_background(self) -> bool:
        return self.cleanup_in_background

    def effective_incremental_cleanup(self) -> IncrementalCleanup | None:
        """The incremental cleanup that runs: the configured one, else the background default."""
        if self.incremental_cleanup is not None:
            return self.incremental_cleanup
        return DEFAULT_INCREMENTAL_CLEANUP if self.cleanup_in_background else None

    class Builder:
        """Fluent builder of a :class:`StateTtlConfig` (each setter returns the builder)."""

        def __init__(self, ttl: Duration):
            self._fields: dict = {"ttl_ms": _ttl_ms(ttl)}

        def set_ttl(self, ttl: Duration) -> StateTtlConfig.Builder:
            self._fields["ttl_ms"] = _ttl_ms(ttl)
            return self

        def set_update_type(self, update_type: UpdateType) -> StateTtlConfig.Builder:
            self._fields["update_type"] = UpdateType(update_type)
            return self

        def update_ttl_on_create_and_write(self) -> StateTtlConfig.Builder:
            return self.set_update_type(UpdateType.OnCreateAndWrite)

        def update_ttl_on_read_and_write(self) -> StateTtlConfig.Builder:
            return self.set_update_type(UpdateType.OnReadAndWrite)

        def set_state_visibility(self, visibility: StateVisibility) -> StateTtlConfig.Builder:
            self._fields["state_visibility"] = StateVisibility(visibility)
            return self

        def never_return_expired(self) -> StateTtlConfig.Builder:
            return self.set_state_visibility(StateVisibility.NeverReturnExpired)

        def return_expired_if_not_cleaned_up(self) -> StateTtlConfig.Builder:
            return self.set_state_visibility(StateVisibility.ReturnExpiredIfNotCleanedUp)

        def set_ttl_time_characteristic(
            self, characteristic: TtlTimeCharacteristic
        ) -> StateTtlConfig.Builder:
            self._fields["time_characteristic"] = TtlTimeCharacteristic(characteristic)
            return self

        def use_processing_time(self) -> StateTtlConfig.Builder:
            """Stamp and expire by the subtask's processing-time clock (the default)."""
            return self.set_ttl_time_characteristic(TtlTimeCharacteristic.ProcessingTime)

        def use_event_time(self) -> StateTtlConfig.Builder:
            """Stamp by record timestamps, expire by the operator's watermark (raystream only)."""
            return self.set_ttl_time_characteristic(TtlTimeCharacteristic.EventTime)

        def cleanup_full_snapshot(self) -> StateTtlConfig.Builder:
            """Leave expired values out of snapshots (they stay in the working state)."""
            self._fields["cleanup_full_snapshot"] = True
            return self

        def cleanup_incrementally(
            self, cleanup_size: int, run_per_record: bool = False
        ) -> StateTtlConfig.Builder:
            """Check ``cleanup_size`` entries of the state on every access to it, and also on
            every record (every ``set_current_key``) if ``run_per_record``."""
            if isinstance(cleanup_size, bool) or not isinstance(cleanup_size, int):
                raise TypeError(f"cleanup_size must be an int, got {cleanup_size!r}")
            if cleanup_size <= 0:
                raise ValueError(f"cleanup_size must be positive, got {cleanup_size}")
            self._fields["incremental_cleanup"] = IncrementalCleanup(
                cleanup_size, bool(run_per_record)
            )
            return self

        def disable_cleanup_in_background(self) -> StateTtlConfig.Builder:
            """No default incremental cleanup: only reads (and configured strategies) remove."""
            self._fields["cleanup_in_background"] = False
            return self

        def build(self) -> StateTtlConfig:
            return StateTtlConfig(**self._fields)

    # Flink spells the enums as nested names: StateTtlConfig.UpdateType.OnReadAndWrite. They
    # come last in the body so that the annotations above name the module-level enums.
    UpdateType = UpdateType
    StateVisibility = StateVisibility
    TtlTimeCharacteristic = TtlTimeCharacteristic


def _ttl_ms(ttl: Duration) -> int:
    ms = to_millis(ttl, "state TTL")
    if ms <= 0:
        raise ValueError(f"state TTL must be positive, got {ttl!r}")
    return ms


# -- time ------------------------------------------------------------------------------------------


@runtime_checkable
class TtlTimeProvider(Protocol):
    """Where a keyed state backend reads time (supplied by the operator; a fake in tests).

    ``element_timestamp`` (optional) is the timestamp of the record or timer being processed; it
    stamps writes under event-time TTL. Without it (or when it returns None) writes are stamped
    with the current watermark.
    """

    def processing_time_ms(self) -> int: ...

    def current_watermark(self) -> int: ...


class SystemTtlTimeProvider:
    """Wall-clock processing time and no watermark (used when nobody supplies a provider)."""

    def processing_time_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def current_watermark(self) -> int:
        return MIN_TS

    def element_timestamp(self) -> int | None:
        return None


class TtlPolicy:
    """Internal: a :class:`StateTtlConfig` bound to a time provider, as state handles use it.

    A stored value expires when ``stamp <= expiry_limit()``, i.e. ``stamp + ttl <= now`` where
    ``now`` is processing time or, under event-time TTL, the current watermark.
    """

    __slots__ = (
        "config",
        "ttl_ms",
        "update_on_read",
        "return_expired",
        "event_time",
        "cleanup_full_snapshot",
        "cleanup_size",
        "cleanup_per_record",
        "_now",
        "_watermark",
        "_element_ts",
    )

    def __init__(self, config: StateTtlConfig, provider: TtlTimeProvider):
        if not isinstance(config, StateTtlConfig):
            raise TypeError(f"expected a StateTtlConfig, got {type(config).__name__}")
        self.config = config
        self.ttl_ms = config.ttl_ms
        self.update_on_read = config.update_type is UpdateType.OnReadAndWrite
        self.return_expired = config.state_visibility is StateVisibility.ReturnExpiredIfNotCleanedUp
        self.event_time = config.time_characteristic is TtlTimeCharacteristic.EventTime
        self.cleanup_full_snapshot = config.cleanup_full_snapshot
        incremental = config.effective_incremental_cleanup()
        self.cleanup_size = incremental.cleanup_size if incremental else 0
        self.cleanup_per_record = bool(incremental and incremental.run_per_record)
        self._now = provider.processing_time_ms
        self._watermark = provider.current_watermark
        self._element_ts = getattr(provider, "element_timestamp", None)

    def now(self) -> int:
        """The time expiry is measured against."""
        return self._watermark() if self.event_time else self._now()

    def expiry_limit(self) -> int:
        """Values stamped at or before this have expired."""
        return self.now() - self.ttl_ms

    def stamp(self, previous: int | None = None) -> int:
        """The stamp of a value written (or refreshed) now; ``previous`` is its live stamp."""
        if not self.event_time:
            return self._now()
        ts = self._element_ts() if self._element_ts is not None else None
        if ts is None:
            ts = self._watermark()
        return ts if previous is None or ts > previous else previous
