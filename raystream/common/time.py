"""Mirror of ``pyflink.common.time``."""

from raystream.api.duration import Duration, Instant
from raystream.core.time import Time

__all__ = ["Duration", "Instant", "Time"]
