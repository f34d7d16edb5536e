"""Mirror of ``pyflink.datastream.execution_mode``."""

from raystream.api.runtime_mode import RuntimeExecutionMode

__all__ = ["RuntimeExecutionMode"]
