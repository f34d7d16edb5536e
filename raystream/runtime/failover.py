"""Internal: the failover policy — what the job master does about a failure (SEMANTICS §5.9).

Pure logic (no Ray): given a failure's root cause (already unwrapped from Ray's task error), the
attempt it ended and the time, :meth:`FailoverPolicy.on_failure` records it in the job's
:class:`~raystream.runtime.failures.FailureHistory` and returns a decision value:
:class:`Restart` (after ``delay_ms``) or :class:`Fail` (with the cause; ``reason`` says why when
the job fails although its restart strategy would have restarted it). The same user error on the
same record on ``deterministic_failure_repeats`` consecutive attempts fails the job at once;
otherwise the restart strategy decides (with checkpointing and none set: the bounded
exponential delay of :func:`~raystream.checkpoint_config.default_restart_strategy`; without
checkpointing: no restart). The job master carries the decision out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from raystream.checkpoint_config import NoRestart, RestartStrategy, default_restart_strategy
from raystream.runtime.failures import FailureEntry, FailureHistory, describe_failure


@dataclass(frozen=True, slots=True)
class Restart:
    """Redeploy the job from its latest completed checkpoint after ``delay_ms``."""

    delay_ms: int
    entry: FailureEntry


@dataclass(frozen=True, slots=True)
class Fail:
    """End the job FAILED with the failure's cause. ``reason``: why it was not restarted, when
    the restart strategy was not what decided (a deterministic failure)."""

    entry: FailureEntry
    reason: str | None = None


FailoverDecision = Union[Restart, Fail]


class FailoverPolicy:
    """The restart strategy and the failure history of one job."""

    def __init__(self, strategy: RestartStrategy, history: FailureHistory):
        self.strategy = strategy
        self.history = history
        #: restarts decided so far
        self.restarts = 0

    @classmethod
    def for_job(
        cls, strategy: RestartStrategy | None, checkpointing: bool, deterministic_repeats: int
    ) -> FailoverPolicy:
        """The job's strategy, or the default one (bounded exponential delay with
        checkpointing, no restart without)."""
        return cls(
            strategy or default_restart_strategy(checkpointing),
            FailureHistory(deterministic_repeats),
        )

    @property
    def may_restart(self) -> bool:
        """Whether any failure could lead to a restart (a BATCH job then holds its collected
        records until it finishes)."""
        return not isinstance(self.strategy, NoRestart)

    def on_failure(self, cause: BaseException, attempt: int, now_ms: int) -> FailoverDecision:
        """Records the failure and decides: restart, or fail."""
        entry = self.record(cause, attempt, now_ms)
        if self.history.is_deterministic():
            n = self.history.consecutive_repeats()
            return Fail(
                entry,
                f"the same failure on the same record on {n} consecutive attempts "
                f"({entry.summary()}): deterministic, not restarted again",
            )
        delay = self.strategy.next_delay_ms(now_ms)
        if delay is None:
            return Fail(entry)
        self.restarts += 1
        return Restart(delay, entry)

    def restarted_elsewhere(self, cause: BaseException, attempt: int, now_ms: int) -> None:
        """The job restarted without a decision here (Ray restarted the job master, whose
        restart strategy state started over with the process): recorded and counted."""
        self.record(cause, attempt, now_ms)
        self.restarts += 1

    def record(self, cause: BaseException, attempt: int, now_ms: int) -> FailureEntry:
        """Records a failure that ends the job whatever the strategy says (the job could not
        start, or a recovery could not restore without repeating committed effects)."""
        entry = describe_failure(cause, attempt, now_ms)
        self.history.add(entry)
        return entry
