"""Execution settings of a job: parallelism, batching, channel bounds, resources of task actors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from raystream.api.runtime_mode import RuntimeExecutionMode, coerce_runtime_mode
from raystream.checkpoint_config import CheckpointConfig
from raystream.core.time import Duration, to_millis

DEFAULT_BATCH_SIZE = 16384
DEFAULT_MESSAGE_BYTES = 1 << 20
#: records a source reads per step (between two checks for checkpoint triggers and pings)
SOURCE_READ_RECORDS = 8192
#: rows per columnar channel message and per columnar source step, as a multiple of the row
#: limits (columnar rows are small and processed without per-row Python; every message costs an
#: actor call and every step a vectorized pass with fixed overhead)
COLUMN_BATCH_FACTOR = 4
DEFAULT_BUFFER_TIMEOUT_MS = 10
DEFAULT_CHANNEL_CAPACITY = 4


@dataclass
class ExecutionConfig:
    """Settings that apply to the whole job; ``env.get_config()`` returns the live object.

    Attributes:
        parallelism: default parallelism of operators that set none.
        max_parallelism: number of key groups; ``None`` derives it from the parallelism
            (128 up to parallelism 85, as Flink).
        batch_size: records per channel message before it is sent (at most; see
            ``message_bytes``). Sources read at most this many records per step (and at most
            8192).
        message_bytes: channel messages of large records hold fewer records, about this many
            bytes (judged by the bytes per record each channel pickled so far; a message that
            pickles to more than twice this is cut again before it is sent; a record larger
            than this travels alone). In-flight bytes per channel stay within about
            ``channel_capacity × message_bytes``.
        buffer_timeout_ms: a partly filled batch is sent at the latest this long after its first
            record — while its consumer keeps up. If the consumer has not yet taken the channel's
            previous message when the timeout expires, the batch keeps filling until the next
            timeout (adaptive batching: a Ray actor call costs about a millisecond of CPU, so
            under load fuller messages are cheaper and arrive no later). 0 sends whenever the
            task runs out of input.
        channel_capacity: batches in flight per channel; a full channel suspends its producer.
        auto_watermark_interval_ms: period of watermark emission at sources.
        task_num_cpus: CPUs each task actor reserves in Ray's scheduler (0 lets a job of any
            parallelism run on a laptop; operators may ask for more with ``set_resources``).
        spread_tasks: place task actors with Ray's SPREAD strategy across nodes.
        reuse_workers: run tasks on the driver's pool of warm worker actors, which are kept
            after a job or a restart and reused by the next one (no process start-up per task);
            False: every deployment creates new actors, named after the job and the subtask.
            Detached jobs never use the pool.
        runtime_mode: ``RuntimeExecutionMode.STREAMING`` (default), ``BATCH`` (bounded sources
            only: final values, one watermark at the end, no checkpoints) or ``AUTOMATIC``
            (``BATCH`` when every source is bounded); a name string works too
            (``"BATCH"``, Flink's ``execution.runtime-mode``).
    """

    parallelism: int = 1
    max_parallelism: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    message_bytes: int = DEFAULT_MESSAGE_BYTES
    buffer_timeout_ms: int = DEFAULT_BUFFER_TIMEOUT_MS
    channel_capacity: int = DEFAULT_CHANNEL_CAPACITY
    auto_watermark_interval_ms: int = 200
    task_num_cpus: float = 0.0
    #: reserve the job's resources in one Ray placement group, a bundle per slot (slot ``i``
    #: runs subtask ``i`` of every chain): "PACK", "SPREAD", "STRICT_PACK" or "STRICT_SPREAD"
    #: (``env.set_placement``). None (the default): no reservation, every task actor asks for
    #: ``task_num_cpus`` (0) on its own, so any parallelism runs on a laptop; on a cluster such
    #: a job creates no demand for the autoscaler and lands wherever Ray puts it
    placement_strategy: str | None = None
    #: the CPUs a slot reserves when its subtasks ask for none
    slot_num_cpus: float = 1.0
    #: how long a job waits for its placement group before it fails
    placement_timeout_ms: int = 300_000
    spread_tasks: bool = True
    reuse_workers: bool = True
    chaining_enabled: bool = True
    idle_poll_interval_ms: int = 5
    #: processing-time clock of every task (None: the system clock); tests inject
    #: ``raystream.testing.ManualClock``
    clock: Any = None
    #: keyed state backend of every keyed operator (None: ``HashMapStateBackend``, in memory)
    state_backend: Any = None
    #: ``gc.set_threshold`` of task actors: batches allocate many short-lived tuples, and
    #: Python's default (700) runs a collection every few hundred records (None: leave as is)
    gc_threshold: tuple[int, int, int] | None = (50_000, 20, 100)
    #: checkpoint settings (``env.enable_checkpointing`` / ``env.get_checkpoint_config()``)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    #: what happens after a failure (None: a bounded exponential delay with checkpointing, see
    #: ``checkpoint_config.default_restart_strategy``; without checkpointing no restart)
    restart_strategy: Any = None
    #: the job master pings every task this often and fails over when one does not answer
    #: within the timeout. A task answers between batches, so one batch whose user calls take
    #: longer than the timeout (say, slow inference over a whole batch) counts as hung: raise
    #: the timeout, or lower ``batch_size``, for such jobs.
    heartbeat_interval_ms: int = 5_000
    heartbeat_timeout_ms: int = 120_000
    #: the same user error on the same record (same operator, subtask, exception type and
    #: message) on this many consecutive attempts fails the job instead of restarting it
    #: again, whatever the restart strategy (a deterministic bug replays from the same
    #: checkpoint into the same error); 0 turns this off
    deterministic_failure_repeats: int = 3
    #: a detached job's job master stays this long after the job ended, so that ``list``,
    #: ``info`` and ``JobClient.attach(...).wait()`` still see its final status and result
    #: (as Flink's ``jobstore.expiration-time``); then it removes itself. The tasks of an ended
    #: job are gone at once. A job that is not detached ends with its driver.
    finished_job_retention_ms: int = 600_000
    #: how often Ray restarts a detached job's job master whose process or node died (the
    #: restarted one resumes the job from its latest completed checkpoint; without
    #: checkpointing it ends the job FAILED); once used up, the job is lost with its job master
    job_master_max_restarts: int = 10
    #: how often the job master reads the job's metrics and records them in Ray's metrics
    #: (``ray.util.metrics``: the nodes' Prometheus endpoints, the Ray dashboard), and once more
    #: when the job ended; 0 exports nothing. Ray itself sends recorded values to its metrics
    #: agent every ``metrics_report_interval_ms`` of its own (10 s by default)
    metrics_interval_ms: int = 5_000
    #: STREAMING, BATCH or AUTOMATIC (``env.set_runtime_mode``); a built plan holds the resolved
    #: mode, STREAMING or BATCH
    runtime_mode: RuntimeExecutionMode = RuntimeExecutionMode.STREAMING

    def set_runtime_mode(self, mode: RuntimeExecutionMode | str) -> ExecutionConfig:
        self.runtime_mode = coerce_runtime_mode(mode)
        return self

    def get_runtime_mode(self) -> RuntimeExecutionMode:
        return coerce_runtime_mode(self.runtime_mode)

    #: the error policy of every operator that supports one and sets none of its own
    #: (``raystream.ErrorPolicy``; None: fail)
    error_policy: Any = None

    def set_error_policy(self, policy: Any) -> ExecutionConfig:
        """Default error policy (``ErrorPolicy.fail/skip/dead_letter``) of every operator that
        supports one; ``DataStream.set_error_policy`` overrides it per operator."""
        from raystream.api.error_policy import ErrorPolicy

        if not isinstance(policy, ErrorPolicy):
            raise TypeError(f"expected an ErrorPolicy, got {policy!r}")
        self.error_policy = policy
        return self

    def set_auto_watermark_interval(self, interval: Duration) -> ExecutionConfig:
        self.auto_watermark_interval_ms = to_millis(interval, "auto watermark interval")
        return self

    def get_auto_watermark_interval(self) -> int:
        return self.auto_watermark_interval_ms

    def set_buffer_timeout(self, timeout: Duration) -> ExecutionConfig:
        self.buffer_timeout_ms = to_millis(timeout, "buffer timeout")
        return self

    def set_batch_size(self, records: int) -> ExecutionConfig:
        self.batch_size = records
        return self

    def set_channel_capacity(self, batches: int) -> ExecutionConfig:
        self.channel_capacity = batches
        return self

    def validate(self) -> None:
        from raystream.errors import GraphError

        if self.parallelism < 1:
            raise GraphError(f"parallelism must be >= 1, got {self.parallelism}")
        if self.max_parallelism is not None and not 1 <= self.max_parallelism <= 32768:
            raise GraphError(f"max parallelism must be in [1, 32768], got {self.max_parallelism}")
        if self.batch_size < 1:
            raise GraphError(f"batch size must be >= 1, got {self.batch_size}")
        if self.message_bytes < 1:
            raise GraphError(f"message size must be >= 1 byte, got {self.message_bytes}")
        if self.channel_capacity < 1:
            raise GraphError(f"channel capacity must be >= 1 batch, got {self.channel_capacity}")
        if self.deterministic_failure_repeats < 0:
            raise GraphError(
                "deterministic failure repeats must be >= 0 (0: off), got "
                f"{self.deterministic_failure_repeats}"
            )
        if self.finished_job_retention_ms < 0:
            raise GraphError(
                f"finished job retention must be >= 0 ms, got {self.finished_job_retention_ms}"
            )
        self.runtime_mode = coerce_runtime_mode(self.runtime_mode)
        if self.buffer_timeout_ms < 0:
            raise GraphError(f"buffer timeout must be >= 0 ms, got {self.buffer_timeout_ms}")
        self.checkpoint.validate()

    def copy(self) -> ExecutionConfig:
        return dataclasses.replace(self, checkpoint=dataclasses.replace(self.checkpoint))
