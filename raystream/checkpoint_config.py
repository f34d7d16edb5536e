"""Checkpointing and restart settings of a job (SEMANTICS §5.4, §5.8).

``env.enable_checkpointing(interval)`` turns checkpoints on; ``env.get_checkpoint_config()``
returns the live :class:`CheckpointConfig`. ``env.set_restart_strategy(...)`` takes one of the
:class:`RestartStrategies`; with checkpointing on and no strategy set, the job restarts with an
exponential delay (Flink's default since 1.19), bounded here: at most
``DEFAULT_RESTART_ATTEMPTS`` (10) restarts, 1 s doubling by 1.5 up to 60 s (about two minutes of
delays in all; the count starts again after an hour without failure). Whatever the strategy, the
same user error on the same record on ``ExecutionConfig.deterministic_failure_repeats`` (3)
consecutive attempts fails the job at once.
"""

from __future__ import annotations

import enum
import os
import random
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field

from raystream.core.time import Duration, to_millis
from raystream.errors import GraphError


class CheckpointingMode(enum.Enum):
    #: multi-input tasks align barriers: every record is in exactly one checkpoint
    EXACTLY_ONCE = "exactly_once"
    #: barriers are counted, never waited for: records after a barrier on a fast channel land in
    #: the checkpoint and are processed again after a restore
    AT_LEAST_ONCE = "at_least_once"


class ExternalizedCheckpointRetention(enum.Enum):
    #: completed checkpoints are deleted when the job ends (on cancel, failure or finish)
    NO_EXTERNALIZED_CHECKPOINTS = "none"
    #: kept when the job is canceled or fails
    RETAIN_ON_CANCELLATION = "retain_on_cancellation"
    #: kept when the job fails, deleted when it is canceled
    DELETE_ON_CANCELLATION = "delete_on_cancellation"


@dataclass
class CheckpointConfig:
    """Attributes (Flink's defaults): ``interval_ms`` (None = off), ``mode`` (exactly-once),
    ``timeout_ms`` (10 min), ``min_pause_ms`` (0), ``max_concurrent`` (1),
    ``tolerable_failures`` (0 consecutive), ``retained`` (1 completed checkpoint),
    ``retention`` (deleted at the end), ``storage`` (a local directory, an ``lmdb://`` path, or
    a ``pyarrow.fs`` URI such as ``s3://bucket/prefix``; None: a new private temporary
    directory), ``allow_fallback_past_committed`` (False: a recovery that would have to go back
    before the newest checkpoint whose completion sinks were told of, because it is corrupt,
    fails the job instead of repeating committed output), ``state_key`` (the HMAC key that signs
    checkpoints and savepoints; None: ``RAYSTREAM_STATE_KEY`` or a generated per-user key, see
    ``raystream.checkpointing.state_key``)."""

    interval_ms: int | None = None
    mode: CheckpointingMode = CheckpointingMode.EXACTLY_ONCE
    timeout_ms: int = 10 * 60 * 1000
    min_pause_ms: int = 0
    max_concurrent: int = 1
    tolerable_failures: int = 0
    retained: int = 1
    retention: ExternalizedCheckpointRetention = (
        ExternalizedCheckpointRetention.NO_EXTERNALIZED_CHECKPOINTS
    )
    storage: str | None = None
    allow_fallback_past_committed: bool = False
    state_key: str | bytes | None = field(default=None, repr=False)

    def is_checkpointing_enabled(self) -> bool:
        return self.interval_ms is not None

    def set_checkpoint_interval(self, interval: Duration) -> CheckpointConfig:
        self.interval_ms = _positive(interval, "checkpoint interval")
        return self

    def get_checkpoint_interval(self) -> int | None:
        return self.interval_ms

    def set_checkpointing_mode(self, mode: CheckpointingMode) -> CheckpointConfig:
        if not isinstance(mode, CheckpointingMode):
            raise GraphError(f"checkpointing mode must be a CheckpointingMode, got {mode!r}")
        self.mode = mode
        return self

    def get_checkpointing_mode(self) -> CheckpointingMode:
        return self.mode

    def set_checkpoint_timeout(self, timeout: Duration) -> CheckpointConfig:
        self.timeout_ms = _positive(timeout, "checkpoint timeout")
        return self

    def set_min_pause_between_checkpoints(self, pause: Duration) -> CheckpointConfig:
        self.min_pause_ms = to_millis(pause, "min pause between checkpoints")
        if self.min_pause_ms < 0:
            raise GraphError(f"min pause between checkpoints must be >= 0, got {pause!r}")
        return self

    def set_max_concurrent_checkpoints(self, n: int) -> CheckpointConfig:
        if not isinstance(n, int) or n < 1:
            raise GraphError(f"max concurrent checkpoints must be an int >= 1, got {n!r}")
        self.max_concurrent = n
        return self

    def set_tolerable_checkpoint_failure_number(self, n: int) -> CheckpointConfig:
        if not isinstance(n, int) or n < 0:
            raise GraphError(f"tolerable checkpoint failures must be an int >= 0, got {n!r}")
        self.tolerable_failures = n
        return self

    def set_num_retained_checkpoints(self, n: int) -> CheckpointConfig:
        if not isinstance(n, int) or n < 1:
            raise GraphError(f"retained checkpoints must be an int >= 1, got {n!r}")
        self.retained = n
        return self

    def set_externalized_checkpoint_retention(
        self, retention: ExternalizedCheckpointRetention
    ) -> CheckpointConfig:
        self.retention = retention
        return self

    def set_checkpoint_storage(self, location: str) -> CheckpointConfig:
        """A local directory (a file store: ``chk-<id>/`` directories, or the LMDB store it
        already holds), ``lmdb:///dir`` (an LMDB checkpoint store), or any ``pyarrow.fs`` URI
        (``file:///dir``, ``s3://bucket/prefix``, ``gs://...``)."""
        self.storage = str(location)
        return self

    def get_checkpoint_storage(self) -> str | None:
        return self.storage

    def set_allow_fallback_past_committed(self, allow: bool) -> CheckpointConfig:
        """Whether a recovery may restore a checkpoint older than the newest one whose effects
        transactional sinks committed (when that one is corrupt), or start from empty state when
        every checkpoint written is corrupt. Either repeats output that is already visible
        downstream (duplicates in an exactly-once sink); off by default, so such a recovery
        fails the job with an error naming the corrupt checkpoints."""
        self.allow_fallback_past_committed = bool(allow)
        return self

    def set_state_key(self, key: str | bytes | None) -> CheckpointConfig:
        """The key (at least 16 bytes) whose HMAC-SHA256 signs every checkpoint and savepoint
        blob and metadata record; a restore refuses data it does not verify. None: the
        environment variable ``RAYSTREAM_STATE_KEY`` of the job master, else a key generated
        for the user (see ``raystream.checkpointing.state_key``)."""
        self.state_key = key
        return self

    def validate(self) -> None:
        if self.min_pause_ms > 0 and self.max_concurrent > 1:
            raise GraphError(
                "a min pause between checkpoints allows one checkpoint at a time: "
                f"max concurrent checkpoints is {self.max_concurrent}"
            )

    def resolved_storage(self, job_id: str) -> str:
        if self.storage is not None:
            return self.storage
        from raystream.checkpointing.default_dirs import default_root

        return os.path.join(default_root(), job_id)


def _positive(value: Duration, what: str) -> int:
    ms = to_millis(value, what)
    if ms <= 0:
        raise GraphError(f"{what} must be > 0, got {value!r}")
    return ms


# -- restart strategies ------------------------------------------------------------------------


class RestartStrategy(ABC):
    """Decides after each failure whether the job restarts and after what delay."""

    name = "restart strategy"

    @abstractmethod
    def next_delay_ms(self, now_ms: int) -> int | None:
        """Called once per failure: the delay before the restart, or None to give up."""

    def describe(self) -> str:
        return self.name


@dataclass
class NoRestart(RestartStrategy):
    name = "no restart"

    def next_delay_ms(self, now_ms: int) -> int | None:
        return None


@dataclass
class FixedDelayRestart(RestartStrategy):
    attempts: int
    delay_ms: int
    used: int = 0
    name = "fixed delay"

    def next_delay_ms(self, now_ms: int) -> int | None:
        if self.used >= self.attempts:
            return None
        self.used += 1
        return self.delay_ms

    def describe(self) -> str:
        return f"fixed delay ({self.attempts} attempts, {self.delay_ms} ms)"


@dataclass
class FailureRateRestart(RestartStrategy):
    max_failures: int
    interval_ms: int
    delay_ms: int
    failures: deque = field(default_factory=deque)
    name = "failure rate"

    def next_delay_ms(self, now_ms: int) -> int | None:
        self.failures.append(now_ms)
        while self.failures and self.failures[0] <= now_ms - self.interval_ms:
            self.failures.popleft()
        if len(self.failures) > self.max_failures:
            return None
        return self.delay_ms

    def describe(self) -> str:
        return f"failure rate ({self.max_failures} per {self.interval_ms} ms)"


@dataclass
class ExponentialDelayRestart(RestartStrategy):
    initial_ms: int = 1000
    max_ms: int = 60_000
    multiplier: float = 1.5
    reset_after_ms: int = 3_600_000
    jitter: float = 0.1
    attempts: int | None = None  # None: unlimited
    current_ms: float = 0.0
    last_failure_ms: int | None = None
    used: int = 0
    seed: int | None = None
    name = "exponential delay"

    def next_delay_ms(self, now_ms: int) -> int | None:
        if (
            self.last_failure_ms is not None
            and now_ms - self.last_failure_ms >= self.reset_after_ms
        ):
            self.current_ms, self.used = 0.0, 0
        self.last_failure_ms = now_ms
        if self.attempts is not None and self.used >= self.attempts:
            return None
        self.used += 1
        if self.current_ms == 0.0:
            self.current_ms = float(self.initial_ms)
        else:
            self.current_ms = min(self.current_ms * self.multiplier, float(self.max_ms))
        rng = random.Random(self.seed if self.seed is None else self.seed + self.used)
        spread = self.current_ms * self.jitter
        return max(0, int(self.current_ms + rng.uniform(-spread, spread)))

    def describe(self) -> str:
        return f"exponential delay ({self.initial_ms} ms x{self.multiplier} up to {self.max_ms} ms)"


class RestartStrategies:
    """Factories in PyFlink's spelling (delays as ms ints or ``timedelta``/``Time``)."""

    @staticmethod
    def no_restart() -> RestartStrategy:
        return NoRestart()

    @staticmethod
    def fixed_delay_restart(
        restart_attempts: int, delay_between_attempts: Duration
    ) -> RestartStrategy:
        if not isinstance(restart_attempts, int) or restart_attempts < 0:
            raise GraphError(f"restart attempts must be an int >= 0, got {restart_attempts!r}")
        return FixedDelayRestart(
            restart_attempts, to_millis(delay_between_attempts, "restart delay")
        )

    @staticmethod
    def failure_rate_restart(
        failure_rate: int, failure_interval: Duration, delay_interval: Duration
    ) -> RestartStrategy:
        if not isinstance(failure_rate, int) or failure_rate < 1:
            raise GraphError(f"failure rate must be an int >= 1, got {failure_rate!r}")
        return FailureRateRestart(
            failure_rate,
            to_millis(failure_interval, "failure interval"),
            to_millis(delay_interval, "restart delay"),
        )

    @staticmethod
    def exponential_delay_restart(
        initial_backoff: Duration = 1000,
        max_backoff: Duration = 60_000,
        backoff_multiplier: float = 1.5,
        reset_backoff_threshold: Duration = 3_600_000,
        jitter_factor: float = 0.1,
        attempts: int | None = None,
    ) -> RestartStrategy:
        if backoff_multiplier < 1.0:
            raise GraphError(f"backoff multiplier must be >= 1, got {backoff_multiplier!r}")
        if not 0.0 <= jitter_factor <= 1.0:
            raise GraphError(f"jitter factor must be in [0, 1], got {jitter_factor!r}")
        return ExponentialDelayRestart(
            to_millis(initial_backoff, "initial backoff"),
            to_millis(max_backoff, "max backoff"),
            backoff_multiplier,
            to_millis(reset_backoff_threshold, "backoff reset threshold"),
            jitter_factor,
            attempts,
        )


#: restarts the default strategy allows (Flink's exponential delay has no bound; a job with a
#: deterministic bug then restarts forever)
DEFAULT_RESTART_ATTEMPTS = 10


def default_restart_strategy(checkpointing: bool) -> RestartStrategy:
    """With checkpointing: exponential delay, 1 s x1.5 up to 60 s, at most
    ``DEFAULT_RESTART_ATTEMPTS`` restarts per hour-long failure streak; without: no restart."""
    return (
        ExponentialDelayRestart(attempts=DEFAULT_RESTART_ATTEMPTS) if checkpointing else NoRestart()
    )
