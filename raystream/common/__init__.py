"""Mirror of ``pyflink.common``: ``from pyflink.common import X`` becomes
``from raystream.common import X`` (see docs/pyflink.md)."""

from raystream.api.duration import Duration, Instant
from raystream.api.typeinfo import TypeInformation, Types
from raystream.checkpoint_config import RestartStrategies
from raystream.config import ExecutionConfig
from raystream.core.row import Row, RowKind
from raystream.core.time import Time
from raystream.core.watermarks import TimestampAssigner, WatermarkStrategy
from raystream.operators.file_system import Encoder
from raystream.runtime.client import JobClient, JobExecutionResult, JobStatus

__all__ = [
    "Duration",
    "Encoder",
    "ExecutionConfig",
    "Instant",
    "JobClient",
    "JobExecutionResult",
    "JobStatus",
    "RestartStrategies",
    "Row",
    "RowKind",
    "Time",
    "TimestampAssigner",
    "TypeInformation",
    "Types",
    "WatermarkStrategy",
]
