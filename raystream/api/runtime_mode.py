"""``RuntimeExecutionMode``: how a job runs (PyFlink's ``pyflink.datastream.RuntimeExecutionMode``)."""

from __future__ import annotations

import enum

__all__ = ["RuntimeExecutionMode"]


class RuntimeExecutionMode(enum.Enum):
    STREAMING = 0
    BATCH = 1
    AUTOMATIC = 2
